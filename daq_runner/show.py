"""``daq-run show``: a run report for people, in the terminal or as one HTML page.

``daq-run show REPORT`` prints a short summary: status and reason first, then the counts,
duration and images, the failures (step, error, attempts), and the files written.
``daq-run show --html REPORT -o run.html`` writes one self-contained page (no network at
view time): the summary, a timeline of the steps, and the images/s of every write.

Exit codes: 0 shown; 2 bad input or usage (not a report, unreadable, a directory, an output
path that must not be replaced); 1 the page could not be written (e.g. disk full).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from ._text import one_line
from .exit_codes import ShowExit
from ._tally import SUMMARY_KEYS, format_bytes, format_seconds
from .record import iso, parse_iso

__all__ = ["main", "digest", "summary_text"]

MAX_LISTED = 50  # failures and files listed in the text summary; the rest is counted


# -- a report, normalized ----------------------------------------------------------------------
# Reports come from any version of daq-run, finished or not (a killed run's report says
# "running"), hand-edited even: everything below takes what is there and derives the rest.


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> Optional[str]:
    # Printable whatever the report holds: an ESC or BEL in a name cannot act on the terminal.
    return None if value is None else one_line(value, None)


def _written(step: Dict[str, Any]) -> Optional[int]:
    for value in (step.get("n_written"), _dict(_dict(step.get("acquisition")).get("stats")).get("n_write_completed")):
        if _int(value) is not None:
            return value
    if step.get("status") == "passed" and step.get("acquisition") and _int(step.get("n_images")) is not None:
        return step["n_images"]
    return None


def _step(raw: Dict[str, Any], position: int) -> Dict[str, Any]:
    start, end = parse_iso(raw.get("started_at")), parse_iso(raw.get("finished_at"))
    duration = _num(raw.get("duration_s"))
    if duration is None and start is not None and end is not None:
        duration = end - start
    written = _written(raw) if raw.get("kind") == "write" else None
    stats = _dict(_dict(raw.get("acquisition")).get("stats"))
    t0, t1 = parse_iso(stats.get("start_time")), parse_iso(stats.get("stop_time"))  # ISO (or epoch, older reports)
    # The DAQ's own acquisition times when it gives them, else the step's (which include waits).
    span = (t1 - t0) if t0 is not None and t1 is not None and t1 > t0 else duration
    attempts_failed = [
        {"attempt": a.get("attempt"), "error": _str(a.get("error")), "at": parse_iso(a.get("at"))} for a in _list(raw.get("failed_attempts")) if isinstance(a, dict)
    ]
    recoveries = [
        {"reason": _str(r.get("reason")), "action": _str(r.get("action")), "outcome": _str(r.get("outcome")), "at": parse_iso(r.get("at"))}
        for r in _list(raw.get("recoveries"))
        if isinstance(r, dict)
    ]
    return {
        "index": _int(raw.get("index")) if _int(raw.get("index")) is not None else position,
        "name": _str(raw.get("name")) or f"step {position}",
        "kind": _str(raw.get("kind")) or "?",
        "status": _str(raw.get("status")) or "?",
        "attempts": _int(raw.get("attempts")) or 0,
        "start": start,
        "end": end,
        "duration_s": duration,
        "error": _str(raw.get("error")),
        "failed_attempts": attempts_failed,
        "recoveries": recoveries,
        "output_file": _str(raw.get("output_file")),
        "n_images": _int(raw.get("n_images")),
        "written": written,
        "rate": written / span if written and span else None,
        "resumed": bool(raw.get("resumed")),
        "tags": [str(t) for t in _list(raw.get("tags"))],
    }


def digest(report: Dict[str, Any]) -> Dict[str, Any]:
    """What ``show`` tells, from a loaded report of any daq-run version: times as Unix time,
    counts recomputed from the steps where the report lacks them."""
    steps = [_step(s, i) for i, s in enumerate(report.get("steps") or [], 1) if isinstance(s, dict)]
    n_steps = _int(report.get("n_steps")) or len(steps)
    summary = {key: 0 for key in SUMMARY_KEYS}
    stored = _dict(report.get("summary"))
    if all(_int(stored.get(k)) is not None for k in SUMMARY_KEYS):
        summary = {k: stored[k] for k in SUMMARY_KEYS}
    else:
        for step in steps:
            if step["status"] in summary:
                summary[step["status"]] += 1
    # Steps without a record yet: a report written while the run went on (or that a killed
    # run left) says so as summary.pending; an older one is counted here.
    status = _str(report.get("status")) or "running"
    pending = _int(stored.get("pending"))
    if pending is None or pending < 0:
        pending = max(n_steps - sum(summary.values()), 0) if status == "running" else 0
    summary["pending"] = pending
    files = [f for f in _list(report.get("files")) if isinstance(f, dict)]
    if not files and "files" not in report:  # an older report: the files are those of passed writes
        files = [
            {"path": s["output_file"], "step": s["index"], "n_images": s["written"], "size_bytes": None, "run_id": None}
            for s in steps
            if s["kind"] == "write" and s["status"] == "passed" and s["output_file"]
        ]
    totals = _dict(report.get("totals"))
    images = _int(totals.get("images"))
    if images is None:
        images = sum(s["written"] or 0 for s in steps if s["status"] != "skipped")
    sizes = [_int(f.get("size_bytes")) for f in files]
    started, finished = parse_iso(report.get("started_at")), parse_iso(report.get("finished_at"))
    duration = _num(report.get("duration_s"))
    if duration is None and started is not None and finished is not None:
        duration = finished - started
    reason = _str(report.get("reason"))
    if not reason and status != "passed":
        first = next((s for s in steps if s["status"] in ("failed", "interrupted")), None)
        if first:
            reason = f"step {first['index']} ({first['name']}) {first['status']}: {first['error']}"
        elif status == "running":
            reason = "the report was not finished: the run was killed, or is still going"
    notices = []
    for item in _list(report.get("notices")):
        if isinstance(item, dict):
            notices.append({"at": parse_iso(item.get("at")), "step": _int(item.get("step")), "message": _str(item.get("message")) or ""})
        else:
            notices.append({"at": None, "step": None, "message": str(item)})  # older reports: plain strings
    batch, daq = _dict(report.get("batch")), _dict(report.get("daq"))
    return {
        "status": status,
        "reason": reason,
        "batch_name": _str(batch.get("name")) or "batch",
        "batch_path": _str(batch.get("path")),
        "vars": _dict(batch.get("vars")),
        "run_id": _str(report.get("run_id")),
        "host": _str(report.get("host")),
        "user": _str(report.get("user")),
        "daq_runner": _str(report.get("daq_runner")),
        "python": _str(report.get("python")),
        "command": [str(c) for c in _list(report.get("command"))] or None,
        "daq_url": _str(daq.get("url")),
        "url_source": _str(daq.get("url_source")),
        "redis": _str(daq.get("redis")),
        "redis_source": _str(daq.get("redis_source")),
        "daq_unreachable": bool(report.get("daq_unreachable")),
        "started": started,
        "finished": finished,
        "duration_s": duration,
        "n_steps": max(n_steps, len(steps)),
        "summary": summary,
        "images": images,
        "bytes": sum(s for s in sizes if s is not None) if any(s is not None for s in sizes) else None,
        "files": files,
        "steps": steps,
        "notices": notices,
        "notices_omitted": _int(report.get("notices_omitted")) or 0,
        "recoveries": [r for r in _list(report.get("recoveries")) if isinstance(r, dict)],
        "retries": sum(len(s["failed_attempts"]) for s in steps),
    }


# -- the text summary ----------------------------------------------------------------------------


def _counts(summary: Dict[str, int], n_steps: int) -> str:
    parts = [f"{summary[k]} {k}" for k in (*SUMMARY_KEYS, "pending") if summary.get(k)]
    return f"{n_steps} step{'s' if n_steps != 1 else ''}" + (f": {', '.join(parts)}" if parts else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _source(value: Optional[str], source: Optional[str]) -> str:
    return f"{value or 'none'}" + (f" (from {source})" if source else "")


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
    lines.append(f"DAQ {_source(d['daq_url'], d['url_source'])} · Redis {_source(d['redis'], d['redis_source'])}")

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
    from .report import check_output_path, load_report, write_atomic

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
            _devnull_stdout()
        return ShowExit.SHOWN
    output = args.output or (os.path.splitext(args.report)[0] + ".html")
    try:
        output = check_output_path(output, batch_path=args.report, what="HTML page", protects="the report")
        _refuse_overwrite(output, report)
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
    batch = _dict(report.get("batch"))
    if _str(batch.get("path")):
        out.append(("the report's batch file", batch["path"]))
    for entry in _list(report.get("files")):
        if isinstance(entry, dict) and _str(entry.get("path")):
            out.append(("a file the report lists", entry["path"]))
    for step in _list(report.get("steps")):
        if isinstance(step, dict) and _str(step.get("output_file")):
            out.append(("a file the report lists", step["output_file"]))
    command = [str(c) for c in _list(report.get("command"))]
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


def _devnull_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
