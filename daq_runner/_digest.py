"""A run report of any daq-run version, normalized for people (``daq-run show`` and its page).

Reports come from any version of daq-run, finished or not (a killed run's report says
"running"), hand-edited even: :func:`digest` takes what is there and derives the rest.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ._tally import SUMMARY_KEYS
from .record import parse_iso
from ._text import one_line

__all__ = ["digest", "as_dict", "as_list", "as_text", "daq_of", "failed_steps"]


def as_dict(value: Any) -> Dict[str, Any]:
    """``value`` if it is a dict, else ``{}``."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> List[Any]:
    """``value`` if it is a list, else ``[]``."""
    return value if isinstance(value, list) else []


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def as_text(value: Any) -> Optional[str]:
    """``value`` as one printable line (``None`` stays ``None``)."""
    # Printable whatever the report holds: an ESC or BEL in a name cannot act on the terminal.
    return None if value is None else one_line(value, None)


def _written(step: Dict[str, Any]) -> Optional[int]:
    for value in (step.get("n_written"), as_dict(as_dict(step.get("acquisition")).get("stats")).get("n_write_completed")):
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
    stats = as_dict(as_dict(raw.get("acquisition")).get("stats"))
    t0, t1 = parse_iso(stats.get("start_time")), parse_iso(stats.get("stop_time"))  # ISO (or epoch, older reports)
    # The DAQ's own acquisition times when it gives them, else the step's (which include waits).
    span = (t1 - t0) if t0 is not None and t1 is not None and t1 > t0 else duration
    attempts_failed = [
        {"attempt": a.get("attempt"), "error": as_text(a.get("error")), "at": parse_iso(a.get("at"))} for a in as_list(raw.get("failed_attempts")) if isinstance(a, dict)
    ]
    recoveries = [
        {"reason": as_text(r.get("reason")), "action": as_text(r.get("action")), "outcome": as_text(r.get("outcome")), "at": parse_iso(r.get("at"))}
        for r in as_list(raw.get("recoveries"))
        if isinstance(r, dict)
    ]
    suspensions = [
        {
            "reason": as_text(x.get("reason")),
            "suspended_at": parse_iso(x.get("suspended_at")),
            "resumed_at": parse_iso(x.get("resumed_at")),
            "run_id": as_text(x.get("run_id")),
            "n_written": _int(x.get("n_written")),
        }
        for x in as_list(raw.get("suspensions"))
        if isinstance(x, dict)
    ]
    check = as_dict(raw.get("file_check"))
    command = as_dict(raw.get("command"))
    return {
        "index": _int(raw.get("index")) if _int(raw.get("index")) is not None else position,
        "name": as_text(raw.get("name")) or f"step {position}",
        "kind": as_text(raw.get("kind")) or "?",
        "status": as_text(raw.get("status")) or "?",
        "attempts": _int(raw.get("attempts")) or 0,
        "start": start,
        "end": end,
        "duration_s": duration,
        "error": as_text(raw.get("error")),
        "failed_attempts": attempts_failed,
        "recoveries": recoveries,
        "output_file": as_text(raw.get("output_file")),
        "n_images": _int(raw.get("n_images")),
        "written": written,
        "rate": written / span if written and span else None,
        "resumed": bool(raw.get("resumed")),
        "tags": [str(t) for t in as_list(raw.get("tags"))],
        "suspensions": suspensions,
        # A write's file check (None: a report of a daq-run without them).
        "check": {"status": as_text(check.get("status")) or "?", "reason": as_text(check.get("reason"))} if check else None,
        # A run step's program.
        "command": {
            "exit_code": _int(command.get("exit_code")),
            "reason": as_text(command.get("reason")),
            "output": [as_text(line) or "" for line in as_list(command.get("output"))],
            "output_lines": _int(command.get("output_lines")),
        } if command else None,
        "confirmed_by": as_text(raw.get("confirmed_by")),
    }


def digest(report: Dict[str, Any]) -> Dict[str, Any]:
    """What ``show`` tells, from a loaded report of any daq-run version: times as Unix time,
    counts recomputed from the steps where the report lacks them."""
    steps = [_step(s, i) for i, s in enumerate(report.get("steps") or [], 1) if isinstance(s, dict)]
    n_steps = _int(report.get("n_steps")) or len(steps)
    summary = {key: 0 for key in SUMMARY_KEYS}
    stored = as_dict(report.get("summary"))
    if all(_int(stored.get(k)) is not None for k in SUMMARY_KEYS):
        summary = {k: stored[k] for k in SUMMARY_KEYS}
    else:
        for step in steps:
            if step["status"] in summary:
                summary[step["status"]] += 1
    # Steps without a record yet: a report written while the run went on (or that a killed
    # run left) says so as summary.pending; an older one is counted here.
    status = as_text(report.get("status")) or "running"
    pending = _int(stored.get("pending"))
    if pending is None or pending < 0:
        pending = max(n_steps - sum(summary.values()), 0) if status == "running" else 0
    summary["pending"] = pending
    files = [f for f in as_list(report.get("files")) if isinstance(f, dict)]
    if not files and "files" not in report:  # an older report: the files are those of passed writes
        files = [
            {"path": s["output_file"], "step": s["index"], "n_images": s["written"], "size_bytes": None, "run_id": None}
            for s in steps
            if s["kind"] == "write" and s["status"] == "passed" and s["output_file"]
        ]
    totals = as_dict(report.get("totals"))
    images = _int(totals.get("images"))
    if images is None:
        images = sum(s["written"] or 0 for s in steps if s["status"] != "skipped")
    sizes = [_int(f.get("size_bytes")) for f in files]
    started, finished = parse_iso(report.get("started_at")), parse_iso(report.get("finished_at"))
    duration = _num(report.get("duration_s"))
    if duration is None and started is not None and finished is not None:
        duration = finished - started
    reason = as_text(report.get("reason"))
    if not reason and status != "passed":
        first = next((s for s in steps if s["status"] in ("failed", "interrupted")), None)
        if first:
            reason = f"step {first['index']} ({first['name']}) {first['status']}: {first['error']}"
        elif status == "running":
            reason = "the report was not finished: the run was killed, or is still going"
    notices = []
    for item in as_list(report.get("notices")):
        if isinstance(item, dict):
            notices.append({"at": parse_iso(item.get("at")), "step": _int(item.get("step")), "message": as_text(item.get("message")) or ""})
        else:
            notices.append({"at": None, "step": None, "message": str(item)})  # older reports: plain strings
    batch, daq = as_dict(report.get("batch")), as_dict(report.get("daq"))
    estimate = as_dict(report.get("estimate"))
    return {
        "status": status,
        "reason": reason,
        "batch_name": as_text(batch.get("name")) or "batch",
        "batch_path": as_text(batch.get("path")),
        "vars": as_dict(batch.get("vars")),
        "run_id": as_text(report.get("run_id")),
        "host": as_text(report.get("host")),
        "user": as_text(report.get("user")),
        "daq_runner": as_text(report.get("daq_runner")),
        "python": as_text(report.get("python")),
        "command": [str(c) for c in as_list(report.get("command"))] or None,
        "daq_url": as_text(daq.get("url")),
        "url_source": as_text(daq.get("url_source")),
        "generation": as_text(daq.get("generation")) or "rest_v2",  # reports before the current generation: rest_v2
        "config_url": as_text(daq.get("config_url")),
        "config_url_source": as_text(daq.get("config_url_source")),
        "config_user": as_text(daq.get("config_user")),
        "redis": as_text(daq.get("redis")),
        "redis_source": as_text(daq.get("redis_source")),
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
        "recoveries": [r for r in as_list(report.get("recoveries")) if isinstance(r, dict)],
        "retries": sum(len(s["failed_attempts"]) for s in steps),
        "estimate": {
            "duration_s": _num(estimate.get("duration_s")),
            "bytes": _int(estimate.get("bytes")),
            "images": _int(estimate.get("images")),
        }
        if estimate
        else None,
        "cleanup": _cleanup(report.get("cleanup")),
    }


def _cleanup(raw: Any) -> Optional[Dict[str, Any]]:
    """The report's ``cleanup`` section (``finally:`` and ``restore_config``), or ``None``."""
    if not isinstance(raw, dict):
        return None
    restore = as_dict(raw.get("restore_config"))
    return {
        "status": as_text(raw.get("status")) or "?",
        "reason": as_text(raw.get("reason")),
        "steps": [_step(s, i) for i, s in enumerate(as_list(raw.get("steps")), 1) if isinstance(s, dict)],
        "restore": {"outcome": as_text(restore.get("outcome")), "fields": as_dict(restore.get("fields")), "error": as_text(restore.get("error"))}
        if restore.get("outcome") is not None
        else None,
    }


def daq_of(d: Dict[str, Any]) -> str:
    """The DAQ of a digested report as people name it: ``host:port`` of its URL."""
    from urllib.parse import urlsplit

    url = d.get("daq_url") or ""
    try:
        return urlsplit(url).netloc.rpartition("@")[2] or url or "?"
    except ValueError:
        return url or "?"


def failed_steps(d: Dict[str, Any], limit: int = 3) -> str:
    """``4 (short write), 7 (dark)``: the steps that did not pass; else why the run did not pass; ``-``."""
    problems = [s for s in d["steps"] if s["status"] in ("failed", "interrupted")]
    if problems:
        shown = ", ".join(f"{s['index']} ({one_line(s['name'], 40)})" for s in problems[:limit])
        return shown + (f" and {len(problems) - limit} more" if len(problems) > limit else "")
    if d["status"] != "passed":
        return one_line(d["reason"] or d["status"], 80)
    return "-"
