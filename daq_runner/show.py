"""``daq-run show``: a run report for people, in the terminal or as one HTML page.

``daq-run show REPORT`` prints a short summary: status and reason first, then the counts,
duration and images (beside the estimate the run started with), the failures (step, error,
attempts), the files written and the run's cleanup. ``daq-run show --html REPORT -o run.html``
writes one self-contained page (no network at view time): the summary, a timeline of the
steps, and the images/s of every write. ``daq-run show --manifest REPORT`` prints the run's
complete files as JSON lines for a catalogue (path, size, sha256, images, run id, the DAQ's
config at the time).

``daq-run show R1.json R2.json ...`` (a fleet: the same batch on every DAQ) prints one line per
run (status, DAQ, batch, duration, images, failed steps) and a verdict, and exits 1 when any
run did not pass or a report could not be read; ``--html R1.json ... -o fleet.html`` makes one
page of them.

Exit codes: :class:`~daq_runner.exit_codes.ShowExit` (an output path that must not be
replaced is bad usage; one that cannot be written on this machine, like a full disk, is a
page that could not be written).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ._digest import (
    as_dict,
    as_list,
    as_text,
    attempts_of,
    check_of,
    command_of,
    daq_of,
    digest,
    failed_steps,
    failure_groups,
    headline,
    liveness,
    recoveries_of,
    resume_hint,
    said_once,
    suspensions_of,
)
from ._streams import to_devnull
from ._text import one_line, plural, said_with_source
from .exit_codes import ShowExit
from ._tally import SUMMARY_KEYS, format_bytes, format_moment, format_seconds
from .record import CONFIRMATIONS, KEPT, WEAK_CONFIRMATIONS, StepRecord
from .daq import DRIVER

__all__ = ["main", "digest", "summary_text", "manifest", "runs_text", "Run", "read_runs", "daq_line", "resume_hint", "headline"]

MAX_LISTED = 50  # steps, failures, writes and files listed in the text summary; the rest is counted


# -- the text summary ----------------------------------------------------------------------------


def _counts(d: Dict[str, Any]) -> str:
    summary, kept = d["summary"], d["kept"]
    parts = []
    for key in (*SUMMARY_KEYS, "pending"):
        if summary.get(key):
            parts.append(f"{summary[key]} {key}" + (f" ({kept} {KEPT})" if key == "passed" and kept else ""))
    return plural(d["n_steps"], "step") + (f": {', '.join(parts)}" if parts else "")


def _source(value: Optional[str], source: Optional[str]) -> str:
    return said_with_source(value, source)


def daq_line(d: Dict[str, Any]) -> str:
    """Which DAQ the run drove, as the digest ``d`` of its report says: its URLs and where they
    came from; for the current generation its config REST too."""
    if d["generation"] != DRIVER:
        return f"DAQ {_source(d['daq_url'], d['url_source'])} · Redis {_source(d['redis'], d['redis_source'])}"
    user = f" as {d['config_user']}" if d["config_user"] else ""
    return (
        f"DAQ {_source(d['daq_url'], d['url_source'])}, the current generation (std_det_driver) · "
        f"config REST {_source(d['config_url'], d['config_url_source'])}{user} · Redis {_source(d['redis'], d['redis_source'])}"
    )


def _table(rows: List[Tuple[str, ...]], numeric: Sequence[int] = (), indent: str = "  ") -> List[str]:
    """``rows`` (the first is the header) as lines whose columns line up; ``numeric`` columns
    are right-aligned; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        cells[-1] = row[-1].rjust(widths[-1]) if len(row) - 1 in numeric else row[-1]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


_MARK = {"passed": "ok", "failed": "FAIL", "interrupted": "INT", "skipped": "skip"}


def _step_note(step: StepRecord, reason: Optional[str]) -> str:
    """What a step's line adds to its status: kept, stopped on purpose, attempts, why it did not
    run (the run's ``reason`` is said once, at the top)."""
    notes = []
    if step.resumed:
        notes.append(KEPT)
    if step.stopped_on_purpose:
        notes.append(step.stopped_on_purpose)
    if step.attempts > 1:
        notes.append(f"{step.attempts} attempts")
    if step.status.value == "skipped" and step.error and not step.resumed:
        error = as_text(step.error) or ""
        notes.append("not run (the reason above)" if reason and reason in error else error)
    return "; ".join(notes)


def _steps_section(steps: List[StepRecord], reason: Optional[str]) -> List[str]:
    if not steps:
        return []
    shown = steps
    if len(steps) > MAX_LISTED:  # the steps that did not pass first, then the others in order
        notable = {id(s) for s in steps if s.status.value != "passed" or s.failed_attempts or s.stopped_on_purpose}
        keep = {id(s) for s in [s for s in steps if id(s) in notable][:MAX_LISTED]}
        keep |= {id(s) for s in [s for s in steps if id(s) not in keep][: MAX_LISTED - len(keep)]}
        shown = [s for s in steps if id(s) in keep]
    rows = [("", "STEP", "NAME", "TIME", "")]
    for step in sorted(shown, key=lambda s: s.index):  # a background write is recorded when it ends
        mark = "kept" if step.resumed else _MARK.get(step.status.value, step.status.value)
        took = format_seconds(step.duration_s) if step.started_at is not None and step.duration_s is not None else "-"
        rows.append((mark, str(step.index), as_text(step.name) or "", took, _step_note(step, reason)))
    lines = ["", "Steps"] + _table(rows, numeric=(1, 3))
    if len(shown) < len(steps):
        lines.append(f"  ... and {len(steps) - len(shown)} more steps that passed")
    return lines


def _failures_section(d: Dict[str, Any]) -> List[str]:
    groups = failure_groups(d["steps"])
    if not groups:
        return []
    lines = ["", "Failures"]
    for group in groups[:MAX_LISTED]:
        first = group.steps[0]
        said_above = len(group.steps) == 1 and d["reason"] is not None and as_text(first.problem) == d["reason"]
        if len(group.steps) == 1:
            attempts = plural(first.attempts, "attempt") + (", each failed the same way" if first.attempts > 1 and not said_once(first) else "")
            shown = first.started and first.images_written is not None and not said_above  # the reason says them
            written = f"; {first.images_written} of {first.n_images} images written" if shown else ""
            lines.append(f"  step {first.index} {group.status}: {as_text(first.name)} ({attempts}{written})" + (": the reason above" if said_above else ""))
        else:
            lines.append(f"  {len(group.steps)} steps {group.status} the same way:")
            for step in group.steps[:MAX_LISTED]:
                lines.append(f"    step {step.index}: {as_text(step.name)} ({plural(step.attempts, 'attempt')})")
            if len(group.steps) > MAX_LISTED:
                lines.append(f"    ... and {len(group.steps) - MAX_LISTED} more")
        if not said_above:
            lines.append(f"    {group.error}")
        for step in group.steps[:MAX_LISTED]:
            for label, error in said_once(step):
                lines.append(f"    {label}" + (f" of step {step.index}" if len(group.steps) > 1 else "") + f": {error}")
    if len(groups) > MAX_LISTED:
        lines.append(f"  ... and {len(groups) - MAX_LISTED} more")
    return lines


def _retried_section(steps: List[StepRecord]) -> List[str]:
    retried = [s for s in steps if s.status.value == "passed" and s.failed_attempts]
    if not retried:
        return []
    lines = ["", "Passed after a retry"]
    for step in retried[:MAX_LISTED]:
        lines.append(f"  step {step.index}: {as_text(step.name)} (passed on attempt {step.attempts})")
        lines += [f"    {label}: {error}" for label, error in said_once(step)]
    if len(retried) > MAX_LISTED:
        lines.append(f"  ... and {len(retried) - MAX_LISTED} more")
    return lines


def _images(step: StepRecord) -> str:
    written = step.images_written
    shown = "-" if written is None and step.started is None else ("?" if written is None else str(written))
    return shown if step.n_images is None or written == step.n_images else f"{shown}/{step.n_images}"


def _writes_section(steps: List[StepRecord]) -> List[str]:
    writes = [s for s in steps if s.kind == "write" and s.status.value != "skipped"]
    if not writes:
        return []
    rows = [("STEP", "FILE", "IMAGES", "TIME", "IMAGES/S", "BITS", "CONFIRMED BY")]
    for step in writes[:MAX_LISTED]:
        rate = step.images_per_s
        note = step.stopped_on_purpose or ("nothing started" if step.started is False else "")
        confirmed = CONFIRMATIONS.get(as_text(step.confirmed_by) or "", "")
        rows.append((
            str(step.index), os.path.basename(as_text(step.output_file) or "") or as_text(step.name) or "", _images(step),
            format_seconds(step.duration_s) if step.duration_s is not None else "?", f"{rate:,.0f}" if rate else "-",
            str(step.bit_depth) if step.bit_depth is not None else "?", "; ".join(x for x in (confirmed, note) if x) or "-",
        ))  # fmt: skip
    lines = ["", "Writes"] + _table(rows, numeric=(0, 2, 3, 4, 5))
    if len(writes) > MAX_LISTED:
        lines.append(f"  ... and {len(writes) - MAX_LISTED} more")
    return lines


def _files_section(d: Dict[str, Any]) -> List[str]:
    if not d["files"]:
        return []
    checks = {s.index: check_of(s) for s in d["steps"] if check_of(s) is not None}
    rows = [("PATH", "IMAGES", "SIZE", "STEP", "CHECK", "")]
    for entry in d["files"][:MAX_LISTED]:
        n, size, step = entry.get("n_images"), entry.get("size_bytes"), entry.get("step")
        check = checks.get(step) if isinstance(step, int) else None
        notes = ["INCOMPLETE (its step did not pass)"] if entry.get("complete") is False else []  # a failed check: its step's failure says why
        rows.append((
            as_text(entry.get("path")) or "?", str(n) if n is not None else "?", format_bytes(size) if isinstance(size, int) else "not visible here",
            str(step), (check["status"].replace("_", " ") if check is not None else "-"), " ".join(notes),
        ))  # fmt: skip
    lines = ["", "Files written"] + _table(rows, numeric=(1, 2, 3))
    if len(d["files"]) > MAX_LISTED:
        lines.append(f"  ... and {len(d['files']) - MAX_LISTED} more")
    return lines


def _notices_section(d: Dict[str, Any]) -> List[str]:
    if not d["notices"]:
        return []
    lines = ["", "Notices"]
    for i, notice in enumerate(d["notices"]):  # the report keeps the first 10 and the last 40
        if i == 10 and d["notices_omitted"]:
            lines.append(f"  ... {plural(d['notices_omitted'], 'notice')} between these were left out of the report")
        where = f"step {notice['step']}" if notice["step"] is not None else "run"
        lines.append(f"  {format_moment(notice['at'], date=False) if notice['at'] is not None else '?'}  {where}: {notice['message']}")
    return lines


def _recoveries_section(d: Dict[str, Any]) -> List[str]:
    entries = [("run", r, {}) for r in d["recoveries"]]
    for step in d["steps"]:
        # A recovery made because an attempt failed names that failure, said once above.
        said = {a["error"]: f"attempt {a['attempt']}'s failure" for a in attempts_of(step)}
        said[as_text(step.error) or ""] = "its failure"
        entries += [(f"step {step.index}", r, said) for r in recoveries_of(step)]
    if not entries:
        return []
    lines = ["", "Recoveries"]
    for where, r, said in entries[:MAX_LISTED]:
        why = said.get(r["reason"] or "", r["reason"])
        lines.append(f"  {where}: {why} -> {r['action']} ({r['outcome']})")
    if len(entries) > MAX_LISTED:
        lines.append(f"  ... and {len(entries) - MAX_LISTED} more")
    return lines


def summary_text(report: Dict[str, Any], path: Optional[str] = None) -> str:
    """The human summary of a loaded report (what ``daq-run show REPORT`` prints): the status
    and reason, counts, times (local and UTC), images and files, where the run came from, how
    to continue it, then every step, the failures (each said once), the writes, the files, the
    notices, recoveries, programs and the cleanup: what the HTML page shows. ``path``: where
    the report was read from (for the command that continues it)."""
    d = digest(report)
    live = liveness(d)
    status, reason = headline(d, live)
    lines = [f"{status}: {d['batch_name']}" + (f" — {reason}" if reason else "")]
    counts = _counts(d)
    if d["retries"]:
        counts += f"; {plural(d['retries'], 'failed attempt')}"
    lines.append(counts)
    took = format_seconds(d["duration_s"]) if d["duration_s"] is not None else "unknown"
    when = f"started {format_moment(d['started'])}" if d["started"] is not None else "start unknown"
    if d["finished"] is not None:
        same_day = d["started"] is not None and _day(d["started"]) == _day(d["finished"])
        when += f", finished {format_moment(d['finished'], date=not same_day)}; took {took}"
    else:
        when += ", not finished"
    lines.append(when)
    size = f", {format_bytes(d['bytes'])}" if d["bytes"] is not None else ""
    unseen = f" ({d['sizes_unknown']} not visible here)" if d["bytes"] is not None and d["sizes_unknown"] else ""
    lines.append(f"images {d['images']} in {plural(len(d['files']), 'file')}{size}{unseen}")
    checks = _check_counts(d["steps"])
    if checks:
        lines.append("file checks: " + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in checks.items()))
    estimate = d["estimate"]
    if estimate is not None:
        expected = format_seconds(estimate["duration_s"]) if estimate["duration_s"] is not None else "unknown"
        volume = format_bytes(estimate["bytes"]) if estimate["bytes"] is not None else "unknown"
        lines.append(f"estimated before the run: duration {expected}, volume {volume} in {plural(estimate['images'] or 0, 'image')} (at most)")
    who = " · ".join(x for x in (d["batch_path"] and f"batch {d['batch_path']}", d["run_id"] and f"run {d['run_id']}",
                                  d["user"] and d["host"] and f"{d['user']}@{d['host']}", d["daq_runner"] and f"daq-runner {d['daq_runner']}",
                                  d["python"] and f"Python {d['python']}") if x)  # fmt: skip
    if who:
        lines.append(who)
    if d["vars"]:
        lines.append("variables: " + ", ".join(f"{as_text(k)}={as_text(v)}" for k, v in d["vars"].items()))
    if d["command"]:
        lines.append("command: " + " ".join(as_text(c) or "" for c in d["command"]))
    lines.append(daq_line(d))
    hint = resume_hint(d, path, live)
    if hint:
        lines += ["", "To continue the run (the steps that passed are kept, the others run again):", f"  {hint}"]

    lines += _steps_section(d["steps"], reason)
    lines += _failures_section(d)
    lines += _retried_section(d["steps"])
    suspended = [s for s in d["steps"] if suspensions_of(s)]
    if suspended:
        lines += ["", "Writes suspended (the detector stopped delivering)"]
        for step in suspended[:MAX_LISTED]:
            pauses = suspensions_of(step)
            lines.append(f"  step {step.index} {step.status}: {as_text(step.name)} ({plural(len(pauses), 'suspension')})")
            for x in pauses:
                until = format_moment(x["resumed_at"], date=False) if x["resumed_at"] is not None else "never resumed"
                left = plural(x["n_written"], "image") if x["n_written"] is not None else "? images"
                since = format_moment(x["suspended_at"], date=False) if x["suspended_at"] is not None else "?"
                lines.append(f"    {since} to {until}: {x['reason']}; acquisition {x['run_id'] or '?'} left {left} (incomplete)")
        if len(suspended) > MAX_LISTED:
            lines.append(f"  ... and {len(suspended) - MAX_LISTED} more")
    lines += _writes_section(d["steps"])
    unchecked: Dict[str, int] = {}
    for step in d["steps"]:
        check = check_of(step)
        if check is not None and check["status"] == "not_checked" and step.status.value == "passed":
            unchecked[check["reason"] or "?"] = unchecked.get(check["reason"] or "?", 0) + 1
    if unchecked:
        lines += ["", "Files not checked"]
        lines += [f"  {plural(n, 'write')}: {why}" for why, n in list(unchecked.items())[:MAX_LISTED]]
    programs = [(s, command_of(s)) for s in d["steps"] if command_of(s) is not None]
    if programs:
        lines += ["", "Programs run"]
        for step, command in programs[:MAX_LISTED]:
            lines.append(f"  step {step.index} {step.status}: {as_text(step.name)}: {command['reason']}")
            lines += [f"    | {line}" for line in command["output"][-5:]]
        if len(programs) > MAX_LISTED:
            lines.append(f"  ... and {len(programs) - MAX_LISTED} more")
    weaker = [s for s in d["steps"] if s.status.value == "passed" and s.confirmed_by in WEAK_CONFIRMATIONS]
    if weaker:
        lines += ["", "Passed without their files or the DAQ's log confirming them"]
        for step in weaker[:MAX_LISTED]:
            lines.append(f"  step {step.index}: {as_text(step.name)} (confirmed by {CONFIRMATIONS[step.confirmed_by]})")
        if len(weaker) > MAX_LISTED:
            lines.append(f"  ... and {len(weaker) - MAX_LISTED} more")
    lines += _files_section(d)
    lines += _notices_section(d)
    lines += _recoveries_section(d)
    cleanup = d["cleanup"]
    if cleanup is not None:
        lines += ["", f"Cleanup: {cleanup['status']}" + (f" — {cleanup['reason']}" if cleanup["reason"] else "")]
        for step in cleanup["steps"][:MAX_LISTED]:
            error = as_text(step.error)
            lines.append(f"  step {step.index} {step.status}: {as_text(step.name)}" + (f": {error}" if error and step.status.value != "passed" else ""))
        restore = cleanup["restore"]
        if restore is not None:
            fields = ", ".join(f"{as_text(k)}={as_text(v)}" for k, v in restore["fields"].items())
            lines.append(f"  restore_config: {restore['outcome']}" + (f" ({fields})" if fields else "") + (f": {restore['error']}" if restore["error"] else ""))
    return "\n".join(lines)


def _day(ts: float) -> Any:
    import time

    try:
        return time.localtime(ts)[:3]
    except (OverflowError, OSError, ValueError):
        return None


# -- several runs (a fleet) ----------------------------------------------------------------------


class Run(NamedTuple):
    """One report of several: its path, and its digest (:func:`digest`) or why it could not be read."""

    path: str
    digest: Optional[Dict[str, Any]]
    problem: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.digest is not None and self.digest["status"] == "passed"


def read_runs(paths: Sequence[str]) -> List[Run]:
    """Every report of ``paths``, in order; one that cannot be read or shown is a :class:`Run`
    with its problem (a DAQ whose job left no report must not vanish from the verdict)."""
    from .report import load_report

    runs = []
    for path in paths:
        try:
            runs.append(Run(path, digest(load_report(path))))
        except ValueError as exc:
            runs.append(Run(path, None, one_line(str(exc), 300)))
        except Exception as exc:  # odd values in a hand-made or damaged report
            runs.append(Run(path, None, f"{path} cannot be shown: {type(exc).__name__}: {one_line(exc, 200)}"))
    return runs


def runs_text(runs: Sequence[Run]) -> str:
    """One line per run (status, DAQ, batch, duration, images, failed steps, report) and a verdict."""
    rows = [("STATUS", "DAQ", "BATCH", "DURATION", "IMAGES", "FAILED STEPS", "REPORT")]
    for run in runs:
        d = run.digest
        if d is None:
            rows.append(("UNREADABLE", "?", "?", "?", "?", run.problem or "", run.path))
            continue
        status = d["status"] if d["status"] == "passed" else headline(d, liveness(d))[0]
        duration = format_seconds(d["duration_s"]) if d["duration_s"] is not None else "?"
        rows.append((status, one_line(daq_of(d), 40), one_line(d["batch_name"], 40), duration, str(d["images"]), one_line(failed_steps(d), 80), run.path))
    lines = _table(rows, numeric=(3, 4), indent="")
    counts: Dict[str, int] = {}
    for run in runs:
        key = run.digest["status"] if run.digest is not None else "unreadable"
        counts[key] = counts.get(key, 0) + 1
    verdict = "all passed" if all(run.passed for run in runs) else "NOT ALL PASSED"
    lines.append(f"{plural(len(runs), 'run')}: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + f" — {verdict}")
    return "\n".join(lines)


def _check_counts(steps: List[StepRecord]) -> Dict[str, int]:
    """How the writes' files were checked: ``{"passed": 8, "not_checked": 1}`` (none: ``{}``)."""
    counts: Dict[str, int] = {}
    for step in steps:
        check = check_of(step)
        if check is not None:
            counts[check["status"]] = counts.get(check["status"], 0) + 1
    return counts


# -- the manifest --------------------------------------------------------------------------------


def manifest(report: Dict[str, Any]) -> List[str]:
    """The catalogue of a loaded report's complete files, one JSON line each
    (:func:`daq_runner.verify.manifest_line`: ``path, size, sha256, images, run_id, config``):
    ``sha256`` as ``--checksums`` read it (else null), ``config`` the DAQ's configuration the
    file was checked against (null for a file not checked). Incomplete files are left out."""
    from .verify import manifest_line

    records = {r.index: r for r in (StepRecord.from_json(s, i) for i, s in enumerate(as_list(report.get("steps")), 1) if isinstance(s, dict))}
    lines = []
    for entry in as_list(report.get("files")):
        if not isinstance(entry, dict) or entry.get("complete") is not True or not isinstance(entry.get("path"), str):
            continue
        record = records.get(entry.get("step"))
        check = as_dict(record.file_check) if record is not None else {}
        checked = record.checked_file(entry["path"]) if record is not None else {}
        size = entry.get("size_bytes") if entry.get("size_bytes") is not None else checked.get("size")
        config = check.get("config") if isinstance(check.get("config"), dict) else None
        sha256 = entry.get("sha256") or (record.checksum_of(entry["path"]) if record is not None else None)
        lines.append(manifest_line(entry["path"], size=size, sha256=sha256, images=entry.get("n_images"), run_id=entry.get("run_id"), config=config))
    return lines


# -- the command ---------------------------------------------------------------------------------


def _parser() -> Any:
    from ._cli import OneLineArgumentParser

    parser = OneLineArgumentParser(
        prog="daq-run show",
        description="Show a daq-run report: a short summary, or one self-contained HTML page.",
        epilog=f"Exit codes: {ShowExit.describe()}.",
    )
    parser.add_argument("report", nargs="+", help="a JSON report written by daq-run; several: one line per run and a verdict")
    parser.add_argument("--html", action="store_true", help="write an HTML page instead of printing a summary")
    parser.add_argument(
        "--manifest", action="store_true",
        help="print the complete files as JSON lines for a catalogue: path, size, sha256, images, run_id, config",
    )
    parser.add_argument("-o", "--output", metavar="PATH", help="where the HTML page goes (default: the report's name with .html)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``daq-run show``; returns the exit code."""
    args = _parser().parse_args(argv)
    from .exceptions import OutputUnwritable
    from .report import load_report, write_atomic
    from .report_paths import check_output_path

    if len(args.report) > 1:
        return _several(args)
    args.report = args.report[0]
    try:
        report = load_report(args.report)
    except ValueError as exc:
        return _fail(str(exc), ShowExit.USAGE)
    if args.output and not args.html:
        return _fail("-o/--output goes with --html", ShowExit.USAGE)
    if args.manifest and args.html:
        return _fail("--manifest and --html contradict each other", ShowExit.USAGE)
    if args.manifest:
        try:
            text = "\n".join(manifest(report))
        except Exception as exc:  # odd values in a hand-made or damaged report: one line, exit 2
            return _fail(f"{args.report} cannot be shown: {type(exc).__name__}: {one_line(exc)}", ShowExit.USAGE)
        try:
            if text:
                print(text)
        except BrokenPipeError:
            to_devnull(sys.stdout)
        return ShowExit.SHOWN
    if not args.html:
        try:
            text = summary_text(report, os.path.abspath(args.report))
        except Exception as exc:  # odd values in a hand-made or damaged report: one line, exit 2
            return _fail(f"{args.report} cannot be shown: {type(exc).__name__}: {one_line(exc)}", ShowExit.USAGE)
        try:
            print(text)
        except BrokenPipeError:  # piped into head: fine
            to_devnull(sys.stdout)
        return ShowExit.SHOWN
    output = args.output or (os.path.splitext(args.report)[0] + ".html")
    try:
        output = check_output_path(output, batch_path=args.report, what="HTML page", protects="the report")
        _refuse_overwrite(output, report)
    except OutputUnwritable as exc:  # no such folder, not writable: as a full disk would
        return _fail(str(exc), ShowExit.WRITE_FAILED)
    except ValueError as exc:
        return _fail(str(exc), ShowExit.USAGE)
    from ._html import render

    try:
        page = render(report, os.path.abspath(args.report))
    except Exception as exc:  # odd values in a hand-made or damaged report: one line, exit 2
        return _fail(f"{args.report} cannot be shown: {type(exc).__name__}: {one_line(exc)}", ShowExit.USAGE)
    try:
        write_atomic(output, page.encode("utf-8", "replace"))
    except OSError as exc:
        return _fail(f"cannot write {output}: {exc.strerror or exc}", ShowExit.WRITE_FAILED)
    print(output)
    return ShowExit.SHOWN


def _several(args: Any) -> int:
    """``daq-run show R1.json R2.json ...``: a line per run, or one page of them (``--html -o``)."""
    from .exceptions import OutputUnwritable
    from .report import load_report, write_atomic
    from .report_paths import check_output_path

    if args.output and not args.html:
        return _fail("-o/--output goes with --html", ShowExit.USAGE)
    if args.manifest and args.html:
        return _fail("--manifest and --html contradict each other", ShowExit.USAGE)
    if args.manifest:  # one catalogue of every run's complete files
        lines: List[str] = []
        for path in args.report:
            try:
                lines += manifest(load_report(path))
            except Exception as exc:  # unreadable, not a report, odd values: one line, exit 2
                return _fail(f"{path} cannot be shown: {type(exc).__name__}: {one_line(exc)}", ShowExit.USAGE)
        try:
            if lines:
                print("\n".join(lines))
        except BrokenPipeError:
            to_devnull(sys.stdout)
        return ShowExit.SHOWN
    if args.html and not args.output:
        return _fail("the page of several reports needs -o PATH", ShowExit.USAGE)
    runs = read_runs(args.report)
    verdict = ShowExit.SHOWN if all(run.passed for run in runs) else ShowExit.FAILED
    if not args.html:
        try:
            print(runs_text(runs))
        except BrokenPipeError:
            to_devnull(sys.stdout)
        return verdict
    output = args.output
    try:
        output = check_output_path(output, batch_path=args.report[0], what="HTML page", protects="a report")
        for path in args.report:
            if os.path.exists(path) and os.path.exists(output) and os.path.samefile(path, output):
                raise ValueError(f"HTML page {output} is the report {path}; choose another path")
        for run in runs:
            if run.digest is not None:
                _refuse_overwrite(output, load_report(run.path))
        if os.path.exists(output) and not _is_html(output):
            raise ValueError(f"HTML page {output} exists and is not an HTML page; choose another path or remove it first")
    except OutputUnwritable as exc:
        return _fail(str(exc), ShowExit.WRITE_FAILED)
    except ValueError as exc:
        return _fail(str(exc), ShowExit.USAGE)
    from ._html import render_runs

    try:
        write_atomic(output, render_runs(runs, os.path.dirname(os.path.abspath(output))).encode("utf-8", "replace"))
    except OSError as exc:
        return _fail(f"cannot write {output}: {exc.strerror or exc}", ShowExit.WRITE_FAILED)
    print(output)
    return verdict


def _referred(report: Dict[str, Any]) -> List[tuple]:
    """(what, path) of every file ``report`` refers to: its batch file, the files its writes
    wrote (also as steps name them), and the ``--report``/``--junit`` files of its command."""
    out: List[tuple] = []
    batch = as_dict(report.get("batch"))
    if as_text(batch.get("path")):
        out.append(("the report's batch file", batch["path"]))
    for entry in as_list(report.get("files")):
        if isinstance(entry, dict) and as_text(entry.get("path")):
            out.append(("a file the report lists", entry["path"]))
    for step in as_list(report.get("steps")):
        if isinstance(step, dict) and as_text(step.get("output_file")):
            out.append(("a file the report lists", step["output_file"]))
    command = [str(c) for c in as_list(report.get("command"))]
    for i, word in enumerate(command):
        for option, what in (("--junit", "the run's JUnit file"), ("--report", "the run's report")):
            if word == option and i + 1 < len(command):
                out.append((what, command[i + 1]))
            elif word.startswith(option + "="):
                out.append((what, word[len(option) + 1 :]))
    return out


def _is_html(path: str) -> bool:
    """Whether the file at ``path`` is an HTML page: it begins (after blanks) with ``<!DOCTYPE html`` or ``<html``."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    except OSError:
        return False
    return start.startswith((b"<!doctype html", b"<html"))


def _refuse_overwrite(output: str, report: Dict[str, Any]) -> None:
    """Refuse an HTML page path that names a file the report refers to (its batch file, a file
    its writes wrote, its run's report or JUnit file) or an existing file that is not an HTML
    page: a page must never replace data. Raises ``ValueError`` (one line)."""
    real = os.path.realpath(output)
    exists = os.path.exists(output)
    for what, path in _referred(report):
        try:
            same = os.path.samefile(output, path) if exists and os.path.exists(path) else real == os.path.realpath(path)
        except (OSError, ValueError):
            same = False
        if same:
            raise ValueError(f"HTML page {output} is {what} ({one_line(path)}); choose another path")
    if exists and not _is_html(output):
        raise ValueError(f"HTML page {output} exists and is not an HTML page; choose another path or remove it first")


def _fail(message: str, code: int) -> int:
    print(f"daq-run show: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
