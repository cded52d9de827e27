"""What every report consumer counts, written once.

:class:`Tally` follows the event stream of one run and keeps, in memory that does not grow
with the number of steps: the run's identity (head), its status and reason, the steps by
status, the images, bytes and files written, the first notices and the last ones, the
pre-run recoveries. The JSON report, the JUnit file, the console view and the quiet summary
all count with it, so they never disagree. What one step did is its
:class:`~daq_runner.record.StepRecord`, which the ``step_finished`` event carries.
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
import time
from typing import Any, Dict, List, Optional

from . import events
from ._version import __version__
from .record import CleanupRecord, StepRecord, iso

__all__ = [
    "Tally",
    "Bounded",
    "describe_counts",
    "format_seconds",
    "format_bytes",
    "format_moment",
    "step_record",
    "SUMMARY_KEYS",
]

SUMMARY_KEYS = events.STEP_STATUSES


def step_record(event: events.Event) -> StepRecord:
    """The record a ``step_finished`` event carries (read back from its data when an older
    runner, or a test, sent only the data)."""
    record = getattr(event, "record", None)
    if isinstance(record, StepRecord):
        return record
    record = StepRecord.from_json(event.data if isinstance(event.data, dict) else {}, event.step)
    object.__setattr__(event, "record", record)  # once per event, whoever asks first
    return record


class Bounded:
    """The first ``first`` and the last ``last`` items appended, and how many were left out between.

    Notices can come once a second for hours (a DAQ outage); a report keeps how it began
    and how it ended.
    """

    __slots__ = ("first", "last", "_head", "_tail", "omitted")

    def __init__(self, first: int = 10, last: int = 40) -> None:
        self.first, self.last = first, last
        self._head: List[Any] = []
        self._tail: List[Any] = []
        self.omitted = 0

    def append(self, item: Any) -> None:
        if len(self._head) < self.first:
            self._head.append(item)
            return
        self._tail.append(item)
        if len(self._tail) > self.last:
            del self._tail[0]
            self.omitted += 1

    def items(self) -> List[Any]:
        return self._head + self._tail

    def __len__(self) -> int:
        return len(self._head) + len(self._tail)


def describe_counts(summary: Dict[str, int], n_steps: Optional[int] = None) -> str:
    """``14 steps (12 passed, 1 failed, 1 skipped)``: the statuses that occurred, in a fixed order."""
    total = n_steps if n_steps is not None else sum(summary.values())
    parts = [f"{summary[key]} {key}" for key in SUMMARY_KEYS if summary.get(key)]
    return f"{total} step{'s' if total != 1 else ''}" + (f" ({', '.join(parts)})" if parts else "")


class Tally:
    """Follows one run's events; everything a report says about the run as a whole.

    Call :meth:`feed` with every event. Memory does not grow with the number of steps.

    Attributes:
        run_id, batch, daq, info (version, host, user, pid, command, resume_command, python), n_steps,
        started_at / finished_at (Unix time or ``None``), status (``running`` until
        ``run_finished``), reason, daq_unreachable, summary (steps by status), images,
        bytes, n_files (over the files written), failed_attempts, notices and
        recoveries (lists, bounded), last_index (index of the last finished step);
        estimate (what the run was expected to cost, as the report holds it, or ``None``);
        cleanup (the report's ``cleanup`` section as it stands, or ``None`` for a batch
        without one).
    """

    def __init__(self) -> None:
        self.run_id = ""
        self.batch: Dict[str, Any] = {}
        self.daq: Dict[str, Any] = {}
        self.info: Dict[str, Any] = {}
        self.n_steps: Optional[int] = None
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.status = "running"
        self.reason: Optional[str] = None
        self.daq_unreachable = False
        self.summary: Dict[str, int] = {key: 0 for key in SUMMARY_KEYS}
        self.images = 0
        self.bytes = 0
        self.n_files = 0
        self.failed_attempts = 0
        self.n_finished = 0
        self.last_index: Optional[int] = None
        self.first_problem: Optional[str] = None
        self.estimate: Optional[Dict[str, Any]] = None
        self.cleanup: Optional[Dict[str, Any]] = None
        self._notices = Bounded(10, 40)
        self._recoveries = Bounded(10, 40)

    # -- following the events ----------------------------------------------------------

    def feed(self, event: events.Event) -> Optional[StepRecord]:
        """Take one event into account; for ``step_finished`` return the step's record."""
        data = event.data if isinstance(event.data, dict) else {}
        kind = event.kind
        if kind == events.RUN_STARTED:
            self._started(event, data)
        elif kind == events.STEP_FINISHED:
            return self._step_finished(event, data)
        elif kind == events.NOTICE:
            self._notices.append({"at": iso(event.time), "step": event.step, "message": str(data.get("message"))})
        elif kind == events.RECOVERY and event.step is None:
            self._recoveries.append({**data, "at": iso(data.get("at", event.time))})
        elif kind == events.CLEANUP:
            self.cleanup = dict(data)
        elif kind == events.RUN_FINISHED:
            self._finished(event, data)
        return None

    def _started(self, event: events.Event, data: Dict[str, Any]) -> None:
        self.run_id = event.run_id
        self.started_at = event.time
        self.batch = dict(data.get("batch") or {})
        self.daq = dict(data.get("daq") or {})
        n_steps = data.get("n_steps")
        self.n_steps = n_steps if isinstance(n_steps, int) else None
        self.estimate = dict(data["estimate"]) if isinstance(data.get("estimate"), dict) else None
        announced = data.get("cleanup")
        if isinstance(announced, dict):
            self.cleanup = CleanupRecord(int(announced.get("finally") or 0), bool(announced.get("restore_config"))).to_json()
        # A consumer runs in the runner's process: what an older runner does not say is known here.
        self.info = {
            "daq_runner": data.get("daq_runner") or __version__,
            "host": data.get("host") or socket.gethostname(),
            "user": data.get("user") or _user(),
            "pid": data.get("pid") or os.getpid(),
            "command": data.get("command"),
            "resume_command": data.get("resume_command"),
            "python": data.get("python") or platform.python_version(),
        }

    def _step_finished(self, event: events.Event, data: Dict[str, Any]) -> StepRecord:
        record = step_record(event)
        if record.status.value in self.summary:
            self.summary[record.status.value] += 1
        self.n_finished += 1
        self.last_index = record.index
        self.failed_attempts += len(record.failed_attempts)
        if self.first_problem is None:
            self.first_problem = record.problem
        for entry in record.file_entries():
            self.n_files += 1
            self.images += entry["n_images"] or 0
            self.bytes += entry["size_bytes"] or 0
        return record

    def _finished(self, event: events.Event, data: Dict[str, Any]) -> None:
        self.finished_at = event.time
        self.status = str(data.get("status") or "failed")
        self.daq_unreachable = bool(data.get("daq_unreachable"))
        self.reason = data.get("reason") or None
        if self.status != "passed" and not self.reason:
            self.reason = self.first_problem or f"run {self.status}"
        if self.n_steps is not None and self.n_finished < self.n_steps:
            # Steps the runner never reported (it ended early): they were not run.
            self.summary["skipped"] += self.n_steps - self.n_finished

    # -- what the report says ----------------------------------------------------------

    @property
    def notices(self) -> List[Dict[str, Any]]:
        """Notices as {at, step, message}: the first 10 and the last 40 (see ``notices_omitted``)."""
        return self._notices.items()

    @property
    def notices_omitted(self) -> int:
        return self._notices.omitted

    @property
    def recoveries(self) -> List[Dict[str, Any]]:
        """Pre-run recoveries (``recovery`` events without a step) as {reason, action, outcome, at}."""
        return self._recoveries.items()

    @property
    def pending(self) -> int:
        """Steps without a record yet (not run yet, or under way): 0 once the run has ended,
        when the steps the runner never reported count as skipped. With it the report's
        ``summary`` adds up to ``n_steps`` in every version written, also while the run goes on."""
        if self.status != "running" or self.n_steps is None:
            return 0
        return max(self.n_steps - self.n_finished, 0)

    @property
    def duration_s(self) -> Optional[float]:
        if self.started_at is None or self.finished_at is None:
            return None
        return round(self.finished_at - self.started_at, 3)

    def head(self) -> Dict[str, Any]:
        """The report's fields known when the run starts."""
        return {
            "run_id": self.run_id,
            "batch": self.batch,
            "daq": self.daq,
            **self.info,
            "n_steps": self.n_steps,
            "started_at": iso(self.started_at),
        }

    def totals(self) -> Dict[str, Any]:
        """Images and bytes written (bytes of the files whose size could be read here), files, failed attempts."""
        return {
            "steps": self.n_steps if self.n_steps is not None else self.n_finished,
            "images": self.images,
            "bytes": self.bytes,
            "files": self.n_files,
            "failed_attempts": self.failed_attempts,
        }

    def tail(self) -> Dict[str, Any]:
        """The report's fields that change during the run."""
        return {
            "status": self.status,
            "reason": self.reason,
            "daq_unreachable": self.daq_unreachable,
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "summary": {**self.summary, "pending": self.pending},
            "totals": self.totals(),
            **({"estimate": self.estimate} if self.estimate is not None else {}),
            **({"cleanup": self.cleanup} if self.cleanup is not None else {}),
            "recoveries": self.recoveries,
            "notices": self.notices,
            "notices_omitted": self.notices_omitted,
        }

    def counts_line(self) -> str:
        """``14 steps (14 passed), 450 images, 3 files, 12.4 s``."""
        text = describe_counts(self.summary, self.n_steps if self.status == "running" else None)
        text += f", {self.images} image{'s' if self.images != 1 else ''}, {self.n_files} file{'s' if self.n_files != 1 else ''}"
        if self.duration_s is not None:
            text += f", {format_seconds(self.duration_s)}"
        return text


def format_seconds(seconds: float) -> str:
    """``0.35 s``, ``12.4 s``, ``3 min 05 s``, ``2 h 01 min``."""
    if seconds < 10:
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_moment(ts: Optional[float], date: bool = True) -> str:
    """A moment for people: ``2026-12-08 03:12:04 CET (02:12:04 UTC)``, this machine's local
    time with UTC beside it (the UTC date too when it is another day); ``2026-12-08 02:12:04
    UTC`` where local time is UTC; ``unknown`` without a time. ``date=False`` leaves the dates
    out. Reports keep UTC; this is for the people who read them in the morning."""
    if ts is None or isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return "unknown"
    try:
        local, utc = time.localtime(ts), time.gmtime(ts)
    except (OverflowError, OSError, ValueError):
        return "unknown"
    day, clock = "%Y-%m-%d ", "%H:%M:%S"
    if local.tm_gmtoff == 0:
        return time.strftime((day if date else "") + clock, utc) + " UTC"
    utc_day = day if date and local[:3] != utc[:3] else ""
    return f"{time.strftime((day if date else '') + clock + ' %Z', local)} ({time.strftime(utc_day + clock, utc)} UTC)"


def format_bytes(n: Optional[float]) -> str:
    """``512 B``, ``12.5 MiB``; ``?`` when unknown."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _user() -> Optional[str]:
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # no name for this uid (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else None
