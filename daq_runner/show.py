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
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from ._digest import as_dict, as_list, as_text, daq_of, digest, failed_steps
from ._streams import to_devnull
from ._text import one_line
from .exit_codes import ShowExit
from ._tally import SUMMARY_KEYS, format_bytes, format_seconds
from .record import CONFIRMATIONS, WEAK_CONFIRMATIONS, iso
from .daq import DRIVER

__all__ = ["main", "digest", "summary_text", "manifest", "runs_text", "Run", "read_runs", "daq_line"]

MAX_LISTED = 50  # failures and files listed in the text summary; the rest is counted


# -- the text summary ----------------------------------------------------------------------------


def _counts(summary: Dict[str, int], n_steps: int) -> str:
    parts = [f"{summary[k]} {k}" for k in (*SUMMARY_KEYS, "pending") if summary.get(k)]
    return f"{n_steps} step{'s' if n_steps != 1 else ''}" + (f": {', '.join(parts)}" if parts else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _source(value: Optional[str], source: Optional[str]) -> str:
    return f"{value or 'none'}" + (f" (from {source})" if source else "")


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


def summary_text(report: Dict[str, Any]) -> str:
    """The short human summary of a loaded report (what ``daq-run show REPORT`` prints)."""
    d = digest(report)
    lines = [f"{d['status'].upper()}: {d['batch_name']}" + (f" — {d['reason']}" if d["reason"] else "")]
    counts = _counts(d["summary"], d["n_steps"])
    if d["retries"]:
        counts += f"; {_plural(d['retries'], 'failed attempt')}"
    lines.append(counts)
    when = ""
    if d["started"] is not None:
        when = f" ({iso(d['started'])} to {iso(d['finished']) or 'unfinished'})"
    lines.append(f"duration {format_seconds(d['duration_s']) if d['duration_s'] is not None else 'unknown'}{when}")
    size = f", {format_bytes(d['bytes'])}" if d["bytes"] is not None else ""
    lines.append(f"images {d['images']} in {_plural(len(d['files']), 'file')}{size}")
    checks = _check_counts(d["steps"])
    if checks:
        lines.append("file checks: " + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in checks.items()))
    estimate = d["estimate"]
    if estimate is not None:
        expected = format_seconds(estimate["duration_s"]) if estimate["duration_s"] is not None else "unknown"
        volume = format_bytes(estimate["bytes"]) if estimate["bytes"] is not None else "unknown"
        lines.append(f"estimated before the run: duration {expected}, volume {volume} in {estimate['images'] or 0} images (at most)")
    who = " · ".join(x for x in (d["batch_path"] and f"batch {d['batch_path']}", d["run_id"] and f"run {d['run_id']}",
                                  d["user"] and d["host"] and f"{d['user']}@{d['host']}", d["daq_runner"] and f"daq-runner {d['daq_runner']}") if x)  # fmt: skip
    if who:
        lines.append(who)
    lines.append(daq_line(d))

    problems = [s for s in d["steps"] if s["status"] in ("failed", "interrupted")]
    if problems:
        lines += ["", "Failures"]
        for step in problems[:MAX_LISTED]:
            lines.append(f"  step {step['index']} {step['status']}: {step['name']} ({_plural(step['attempts'], 'attempt')})")
            lines.append(f"    {step['error']}")
            for attempt in step["failed_attempts"]:
                if attempt["error"] != step["error"]:
                    lines.append(f"    attempt {attempt['attempt']}: {attempt['error']}")
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    retried = [s for s in d["steps"] if s["status"] == "passed" and s["failed_attempts"]]
    if retried:
        lines += ["", "Passed after a retry"]
        for step in retried[:MAX_LISTED]:
            first = step["failed_attempts"][0]
            lines.append(f"  step {step['index']}: {step['name']} (attempt {step['attempts']}; attempt {first['attempt']}: {first['error']})")
        if len(retried) > MAX_LISTED:
            lines.append(f"  ... and {len(retried) - MAX_LISTED} more")
    suspended = [s for s in d["steps"] if s["suspensions"]]
    if suspended:
        lines += ["", "Writes suspended (the detector stopped delivering)"]
        for step in suspended[:MAX_LISTED]:
            lines.append(f"  step {step['index']} {step['status']}: {step['name']} ({_plural(len(step['suspensions']), 'suspension')})")
            for x in step["suspensions"]:
                until = iso(x["resumed_at"]) or "never resumed"
                left = f"{x['n_written'] if x['n_written'] is not None else '?'} images"
                lines.append(f"    {iso(x['suspended_at']) or '?'} to {until}: {x['reason']}; acquisition {x['run_id'] or '?'} left {left} (incomplete)")
        if len(suspended) > MAX_LISTED:
            lines.append(f"  ... and {len(suspended) - MAX_LISTED} more")
    unchecked: Dict[str, int] = {}
    for step in d["steps"]:
        if step["check"] is not None and step["check"]["status"] == "not_checked" and step["status"] == "passed":
            unchecked[step["check"]["reason"] or "?"] = unchecked.get(step["check"]["reason"] or "?", 0) + 1
    if unchecked:
        lines += ["", "Files not checked"]
        lines += [f"  {_plural(n, 'write')}: {why}" for why, n in list(unchecked.items())[:MAX_LISTED]]
    programs = [s for s in d["steps"] if s["command"] is not None]
    if programs:
        lines += ["", "Programs run"]
        for step in programs[:MAX_LISTED]:
            command = step["command"]
            lines.append(f"  step {step['index']} {step['status']}: {step['name']}: {command['reason']}")
            if step["status"] != "passed" and command["output"]:
                lines += [f"    | {line}" for line in command["output"][-5:]]
        if len(programs) > MAX_LISTED:
            lines.append(f"  ... and {len(programs) - MAX_LISTED} more")
    weaker = [s for s in d["steps"] if s["status"] == "passed" and s["confirmed_by"] in WEAK_CONFIRMATIONS]
    if weaker:
        lines += ["", "Passed without their files or the DAQ's log confirming them"]
        for step in weaker[:MAX_LISTED]:
            lines.append(f"  step {step['index']}: {step['name']} (confirmed by {CONFIRMATIONS[step['confirmed_by']]})")
        if len(weaker) > MAX_LISTED:
            lines.append(f"  ... and {len(weaker) - MAX_LISTED} more")
    if d["files"]:
        checks_of = {s["index"]: s["check"] for s in d["steps"] if s["check"] is not None}
        lines += ["", "Files written"]
        for entry in d["files"][:MAX_LISTED]:
            n = entry.get("n_images")
            size = entry.get("size_bytes")
            check = checks_of.get(entry.get("step")) if isinstance(entry.get("step"), int) else None
            lines.append(
                f"  {entry.get('path')}  {n if n is not None else '?'} images  {format_bytes(size) if size is not None else 'size unknown'}"
                f"  step {entry.get('step')}" + ("  INCOMPLETE (its step did not pass)" if entry.get("complete") is False else "")
                + (f"  CHECK FAILED: {check['reason']}" if check is not None and check["status"] == "failed" else "")
            )
        if len(d["files"]) > MAX_LISTED:
            lines.append(f"  ... and {len(d['files']) - MAX_LISTED} more")
    cleanup = d["cleanup"]
    if cleanup is not None:
        lines += ["", f"Cleanup: {cleanup['status']}" + (f" — {cleanup['reason']}" if cleanup["reason"] else "")]
        for step in cleanup["steps"][:MAX_LISTED]:
            lines.append(f"  step {step['index']} {step['status']}: {step['name']}" + (f": {step['error']}" if step["error"] and step["status"] != "passed" else ""))
        restore = cleanup["restore"]
        if restore is not None:
            fields = ", ".join(f"{k}={v}" for k, v in restore["fields"].items())
            lines.append(f"  restore_config: {restore['outcome']}" + (f" ({fields})" if fields else "") + (f": {restore['error']}" if restore["error"] else ""))
    return "\n".join(lines)


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
        status = d["status"] if d["status"] == "passed" else d["status"].upper()
        duration = format_seconds(d["duration_s"]) if d["duration_s"] is not None else "?"
        rows.append((status, one_line(daq_of(d), 40), one_line(d["batch_name"], 40), duration, str(d["images"]), failed_steps(d), run.path))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 2)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-2], row[-1]]).rstrip() for row in rows]
    lines = [lines[0]] + lines[1:]
    counts: Dict[str, int] = {}
    for run in runs:
        key = run.digest["status"] if run.digest is not None else "unreadable"
        counts[key] = counts.get(key, 0) + 1
    verdict = "all passed" if all(run.passed for run in runs) else "NOT ALL PASSED"
    lines.append(f"{_plural(len(runs), 'run')}: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + f" — {verdict}")
    return "\n".join(lines)


def _check_counts(steps: List[Dict[str, Any]]) -> Dict[str, int]:
    """How the writes' files were checked: ``{"passed": 8, "not_checked": 1}`` (none: ``{}``)."""
    counts: Dict[str, int] = {}
    for step in steps:
        if step["check"] is not None:
            counts[step["check"]["status"]] = counts.get(step["check"]["status"], 0) + 1
    return counts


# -- the manifest --------------------------------------------------------------------------------


def manifest(report: Dict[str, Any]) -> List[str]:
    """The catalogue of a loaded report's complete files, one JSON line each
    (:func:`daq_runner.verify.manifest_line`: ``path, size, sha256, images, run_id, config``):
    ``sha256`` as ``--checksums`` read it (else null), ``config`` the DAQ's configuration the
    file was checked against (null for a file not checked). Incomplete files are left out."""
    from .verify import manifest_line

    steps = {s.get("index"): s for s in as_list(report.get("steps")) if isinstance(s, dict)}
    lines = []
    for entry in as_list(report.get("files")):
        if not isinstance(entry, dict) or entry.get("complete") is not True or not isinstance(entry.get("path"), str):
            continue
        check = as_dict(as_dict(steps.get(entry.get("step"))).get("file_check"))
        checked = next((f for f in as_list(check.get("files")) if isinstance(f, dict) and f.get("path") == entry["path"]), {})
        size = entry.get("size_bytes") if entry.get("size_bytes") is not None else checked.get("size")
        config = check.get("config") if isinstance(check.get("config"), dict) else None
        lines.append(
            manifest_line(
                entry["path"], size=size, sha256=entry.get("sha256") or checked.get("sha256"), images=entry.get("n_images"),
                run_id=entry.get("run_id"), config=config,
            )
        )
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
            text = summary_text(report)
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
        page = render(report)
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
