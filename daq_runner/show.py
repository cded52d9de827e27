"""``daq-run show``: a run report for people, in the terminal or as one HTML page.

``daq-run show REPORT`` prints a short summary: status and reason first, then the counts,
duration and images, the failures (step, error, attempts), and the files written.
``daq-run show --html REPORT -o run.html`` writes one self-contained page (no network at
view time): the summary, a timeline of the steps, and the images/s of every write.

Exit codes: :class:`~daq_runner.exit_codes.ShowExit` (an output path that must not be
replaced is bad usage; one that cannot be written on this machine, like a full disk, is a
page that could not be written).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from ._digest import as_dict, as_list, as_text, digest
from ._streams import to_devnull
from ._text import one_line
from .exit_codes import ShowExit
from ._tally import SUMMARY_KEYS, format_bytes, format_seconds
from .record import CONFIRMATIONS, WEAK_CONFIRMATIONS, iso
from .daq import DRIVER

__all__ = ["main", "digest", "summary_text", "daq_line"]

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
    weaker = [s for s in d["steps"] if s["status"] == "passed" and s["confirmed_by"] in WEAK_CONFIRMATIONS]
    if weaker:
        lines += ["", "Passed without their files or the DAQ's log confirming them"]
        for step in weaker[:MAX_LISTED]:
            lines.append(f"  step {step['index']}: {step['name']} (confirmed by {CONFIRMATIONS[step['confirmed_by']]})")
        if len(weaker) > MAX_LISTED:
            lines.append(f"  ... and {len(weaker) - MAX_LISTED} more")
    if d["files"]:
        lines += ["", "Files written"]
        for entry in d["files"][:MAX_LISTED]:
            n = entry.get("n_images")
            size = entry.get("size_bytes")
            lines.append(
                f"  {entry.get('path')}  {n if n is not None else '?'} images  {format_bytes(size) if size is not None else 'size unknown'}"
                f"  step {entry.get('step')}" + ("  INCOMPLETE (its step did not pass)" if entry.get("complete") is False else "")
            )
        if len(d["files"]) > MAX_LISTED:
            lines.append(f"  ... and {len(d['files']) - MAX_LISTED} more")
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------


def _parser() -> Any:
    from ._cli import OneLineArgumentParser

    parser = OneLineArgumentParser(
        prog="daq-run show",
        description="Show a daq-run report: a short summary, or one self-contained HTML page.",
        epilog=f"Exit codes: {ShowExit.describe()}.",
    )
    parser.add_argument("report", help="a JSON report written by daq-run")
    parser.add_argument("--html", action="store_true", help="write an HTML page instead of printing a summary")
    parser.add_argument("-o", "--output", metavar="PATH", help="where the HTML page goes (default: the report's name with .html)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``daq-run show``; returns the exit code."""
    args = _parser().parse_args(argv)
    from .exceptions import OutputUnwritable
    from .report import load_report, write_atomic
    from .report_paths import check_output_path

    try:
        report = load_report(args.report)
    except ValueError as exc:
        return _fail(str(exc), ShowExit.USAGE)
    if args.output and not args.html:
        return _fail("-o/--output goes with --html", ShowExit.USAGE)
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
