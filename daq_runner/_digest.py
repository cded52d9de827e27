"""A run report of any daq-run version, read for people (``daq-run show`` and its page).

Reports come from any version of daq-run, finished or not (a killed run's report says
"running"), hand-edited even. :func:`digest` takes what is there: each step is read back as its
:class:`~daq_runner.record.StepRecord` (which says what it wrote, why it did not pass, its
images per second...), the run as a whole from the report's own fields, worked out from the
steps only where an older report lacks them. The helpers below give the parts of a record a view
lists (failed attempts, recoveries, suspensions, file check, program) as plain, printable values.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ._tally import SUMMARY_KEYS
from ._text import one_line
from .record import StepRecord, parse_iso

__all__ = [
    "digest",
    "as_dict",
    "as_list",
    "as_text",
    "daq_of",
    "failed_steps",
    "liveness",
    "headline",
    "resume_hint",
    "attempts_of",
    "recoveries_of",
    "suspensions_of",
    "check_of",
    "command_of",
    "said_once",
    "FailureGroup",
    "failure_groups",
]


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


# -- the parts of a step a view lists ------------------------------------------------------------


def attempts_of(record: StepRecord) -> List[Dict[str, Any]]:
    """The step's failed attempts as ``{attempt, error, at}`` (``at``: Unix time or ``None``)."""
    return [
        {"attempt": _int(a.get("attempt")), "error": as_text(a.get("error")) or "", "at": parse_iso(a.get("at"))}
        for a in record.failed_attempts
        if isinstance(a, dict)
    ]


def recoveries_of(record: Any) -> List[Dict[str, Any]]:
    """The recoveries of a step (its record) or of the run (the report's list) as
    ``{reason, action, outcome, at}``, printable (``at``: Unix time or ``None``)."""
    items = record.recoveries if isinstance(record, StepRecord) else as_list(record)
    return [
        {"reason": as_text(r.get("reason")), "action": as_text(r.get("action")), "outcome": as_text(r.get("outcome")), "at": parse_iso(r.get("at"))}
        for r in items
        if isinstance(r, dict)
    ]


def suspensions_of(record: StepRecord) -> List[Dict[str, Any]]:
    """A guarded write's suspensions as ``{reason, suspended_at, resumed_at, run_id, n_written}``."""
    return [
        {
            "reason": as_text(x.get("reason")),
            "suspended_at": parse_iso(x.get("suspended_at")),
            "resumed_at": parse_iso(x.get("resumed_at")),
            "run_id": as_text(x.get("run_id")),
            "n_written": _int(x.get("n_written")),
        }
        for x in as_list(record.suspensions)
        if isinstance(x, dict)
    ]


def check_of(record: StepRecord) -> Optional[Dict[str, Any]]:
    """A write's file check as ``{status, reason}``; ``None`` when the record has none."""
    check = as_dict(record.file_check)
    return {"status": as_text(check.get("status")) or "?", "reason": as_text(check.get("reason"))} if check else None


def command_of(record: StepRecord) -> Optional[Dict[str, Any]]:
    """A run step's program as ``{exit_code, reason, output, output_lines}``; ``None`` for other steps."""
    command = as_dict(record.command)
    if not command:
        return None
    return {
        "exit_code": _int(command.get("exit_code")),
        "reason": as_text(command.get("reason")),
        "output": [as_text(line) or "" for line in as_list(command.get("output"))],
        "output_lines": _int(command.get("output_lines")),
    }


def said_once(record: StepRecord) -> List[Tuple[str, str]]:
    """:meth:`StepRecord.attempts_said_once`, printable."""
    return [(label, as_text(error) or "") for label, error in record.attempts_said_once()]


class FailureGroup(NamedTuple):
    """Steps that did not pass the same way: one status, one error, the steps in order."""

    status: str
    error: str
    steps: List[StepRecord]


def failure_groups(steps: List[StepRecord]) -> List[FailureGroup]:
    """The steps that did not pass, grouped by status and error (six writes into one missing
    folder are one failure said once, with its six steps), in the order of their first step."""
    groups: Dict[Tuple[str, str], FailureGroup] = {}
    for record in steps:
        if record.status.is_problem:
            key = (record.status.value, as_text(record.error) or "no error recorded")
            groups.setdefault(key, FailureGroup(key[0], key[1], [])).steps.append(record)
    return list(groups.values())


# -- the run -----------------------------------------------------------------------------------------


def digest(report: Dict[str, Any]) -> Dict[str, Any]:
    """What ``show`` tells, from a loaded report of any daq-run version: its steps as
    :class:`StepRecord` objects, times as Unix time, counts from the steps where the report
    lacks them."""
    steps = [StepRecord.from_json(s, i) for i, s in enumerate(as_list(report.get("steps")), 1) if isinstance(s, dict)]
    n_steps = _int(report.get("n_steps")) or len(steps)
    summary = {key: 0 for key in SUMMARY_KEYS}
    stored = as_dict(report.get("summary"))
    if all(_int(stored.get(k)) is not None for k in SUMMARY_KEYS):
        summary = {k: stored[k] for k in SUMMARY_KEYS}
    else:
        for step in steps:
            summary[step.status.value] += 1
    # Steps without a record yet: a report written while the run went on (or that a killed
    # run left) says so as summary.pending; an older one is counted here.
    status = as_text(report.get("status")) or "running"
    pending = _int(stored.get("pending"))
    if pending is None or pending < 0:
        pending = max(n_steps - sum(summary.values()), 0) if status == "running" else 0
    summary["pending"] = pending
    files = [f for f in as_list(report.get("files")) if isinstance(f, dict)]
    if not files and "files" not in report:  # an older report: the files its writes' records give
        files = [entry for step in steps for entry in step.file_entries()]
    totals = as_dict(report.get("totals"))
    images = _int(totals.get("images"))
    if images is None:
        images = sum(step.images_written or 0 for step in steps if step.kind == "write")
    sizes = [_int(f.get("size_bytes")) for f in files]
    started, finished = parse_iso(report.get("started_at")), parse_iso(report.get("finished_at"))
    duration = _num(report.get("duration_s"))
    if duration is None and started is not None and finished is not None:
        duration = finished - started
    reason = as_text(report.get("reason"))
    if not reason and status != "passed":
        reason = next((as_text(step.problem) for step in steps if step.problem), None)
    notices = []
    for item in as_list(report.get("notices")):
        if isinstance(item, dict):
            notices.append({"at": parse_iso(item.get("at")), "step": _int(item.get("step")), "message": as_text(item.get("message")) or ""})
        else:
            notices.append({"at": None, "step": None, "message": as_text(item) or ""})  # older reports: plain strings
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
        "pid": _int(report.get("pid")),
        "daq_runner": as_text(report.get("daq_runner")),
        "python": as_text(report.get("python")),
        "command": [str(c) for c in as_list(report.get("command"))] or None,
        "resume_command": as_text(report.get("resume_command")),
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
        "kept": sum(1 for step in steps if step.resumed),
        "images": images,
        "bytes": sum(s for s in sizes if s is not None) if any(s is not None for s in sizes) else None,
        "sizes_unknown": sum(1 for s in sizes if s is None),
        "files": files,
        "steps": steps,
        "notices": notices,
        "notices_omitted": _int(report.get("notices_omitted")) or 0,
        "recoveries": recoveries_of(report.get("recoveries")),
        "retries": sum(len(step.failed_attempts) for step in steps),
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
        "steps": [StepRecord.from_json(s, i) for i, s in enumerate(as_list(raw.get("steps")), 1) if isinstance(s, dict)],
        "restore": {"outcome": as_text(restore.get("outcome")), "fields": as_dict(restore.get("fields")), "error": as_text(restore.get("error"))}
        if restore.get("outcome") is not None
        else None,
    }


def liveness(d: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Whether the run of an unfinished report (status ``running``) still goes on: ``{"state":
    "live" | "killed" | "elsewhere", "step": the step under way (the one after the last
    finished), "last": the last finished step's record or None}``; ``None`` for a run that ended.

    ``live``: its process (the report's host and pid) still runs on this machine; ``killed``: it
    does not (the run never finished its report); ``elsewhere``: another host, which this machine
    cannot look at.
    """
    if d["status"] != "running":
        return None
    from .lock import running_here

    here = running_here(d["host"], d["pid"], since=d["started"])
    plan = [step for step in d["steps"] if step.index <= d["n_steps"]]
    last = max(plan, key=lambda step: step.index, default=None)
    under_way = (last.index + 1 if last is not None else 1) if plan or d["n_steps"] else None
    if under_way is not None and under_way > d["n_steps"]:
        under_way = None  # every step recorded: the run was ending (cleanup, report)
    state = "elsewhere" if here is None else ("live" if here else "killed")
    return {"state": state, "step": under_way, "last": last}


def headline(d: Dict[str, Any], live: Optional[Dict[str, Any]]) -> Tuple[str, Optional[str]]:
    """The run's status as people should read it, and why: ``("FAILED", reason)``; an unfinished
    report is ``RUNNING`` (its process still runs here, with the step under way), ``KILLED`` (it
    does not) or ``RUNNING?`` (on another host, which cannot be looked at from here)."""
    if live is None:
        return d["status"].upper(), d["reason"]
    where = f"pid {d['pid']} on {d['host']}" if d["pid"] is not None else f"on {d['host'] or 'an unknown host'}"
    step = f"step {live['step']} of {d['n_steps']} under way" if live["step"] is not None else "its steps done, ending"
    if live["state"] == "live":
        return "RUNNING", f"live: {where} still runs; {step}"
    if live["state"] == "killed":
        return "KILLED", f"the run ({where}) no longer runs and never finished its report; it was at step {live['step'] or d['n_steps']} of {d['n_steps']}"
    return "RUNNING?", f"not finished: the run ({where}) goes on, or was killed (another host: not looked at from here); {step} at the report's last write"


def resume_hint(d: Dict[str, Any], path: Optional[str], live: Optional[Dict[str, Any]]) -> Optional[str]:
    """The command line that continues a run that failed, was interrupted or was killed (the
    report's ``resume_command``, written by the run; else made from its ``command``); ``None``
    for a run that passed or still goes on."""
    if d["status"] == "passed" or (live is not None and live["state"] != "killed"):
        return None
    if d["resume_command"]:
        return d["resume_command"]
    from .resume import resume_command

    report = path or "REPORT"
    if d["command"] and len(d["command"]) > 1:
        return resume_command(d["command"][1:], report) + "    # from the folder the run was started in"
    return resume_command([d["batch_path"] or "BATCH"], report)


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
    problems = [step for step in d["steps"] if step.status.is_problem]
    if problems:
        shown = ", ".join(f"{step.index} ({one_line(step.name, 40)})" for step in problems[:limit])
        return shown + (f" and {len(problems) - limit} more" if len(problems) > limit else "")
    if d["status"] != "passed":
        return one_line(d["reason"] or d["status"], 80)
    return "-"
