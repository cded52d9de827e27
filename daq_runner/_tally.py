"""What every report consumer counts, written once.

:class:`Tally` follows the event stream of one run and keeps, in memory that does not grow
with the number of steps: the run's identity (head), its status and reason, the steps by
status, the images, bytes and files written, the first notices and the last ones, the
pre-run recoveries. The JSON report, the JUnit file, the console view and the quiet summary
all count with it, so they never disagree.

Also here: :func:`iso` (the one timestamp format of reports) and :func:`step_json` (a step
record as a report holds it).
"""

from __future__ import annotations

import getpass
import math
import os
import platform
import queue
import re
import socket
import stat
import threading
from datetime import datetime, timezone
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from . import events
from ._version import __version__

__all__ = [
    "Tally",
    "StepDone",
    "Bounded",
    "iso",
    "parse_iso",
    "step_json",
    "file_entry",
    "images_written",
    "describe_counts",
    "format_seconds",
    "format_bytes",
]

SUMMARY_KEYS = events.STEP_STATUSES
PROBLEMS = ("failed", "interrupted")


def iso(ts: Any) -> Optional[str]:
    """Unix time (s) as ISO 8601 UTC with milliseconds (``2026-11-29T18:44:55.123Z``).

    A string is passed through (a record already converted, e.g. kept from an earlier
    run); anything else that is not a finite number gives ``None``.
    """
    if isinstance(ts, str):
        return ts
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return None
    try:
        moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_OFFSET = re.compile(r"([+-]\d\d)(\d\d)$")


def parse_iso(text: Any) -> Optional[float]:
    """Unix time of an ISO 8601 timestamp (``Z``, ``+01:00`` or ``+0100``); a number is kept; else ``None``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text) if math.isfinite(text) else None
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    value = _OFFSET.sub(r"\1:\2", value)  # Python 3.10 wants the colon
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _at_iso(items: Any) -> Any:
    """A list of dicts with an ``at`` (failed attempts, recoveries), ``at`` as ISO text."""
    if not isinstance(items, list):
        return items
    return [{**item, "at": iso(item.get("at"))} if isinstance(item, dict) and "at" in item else item for item in items]


def step_json(record: Dict[str, Any]) -> Dict[str, Any]:
    """A step record as reports hold it: a copy with ISO 8601 UTC times and ``run_id`` as a string.

    Records that are already in that form (kept from an earlier run) come out unchanged.
    """
    out = dict(record)
    for key in ("started_at", "finished_at"):
        if key in out:
            out[key] = iso(out[key])
    if out.get("run_id") is not None:
        out["run_id"] = str(out["run_id"])
    for key in ("failed_attempts", "recoveries"):
        if key in out:
            out[key] = _at_iso(out[key])
    for key in ("acquisition", "daq_log"):
        if isinstance(out.get(key), dict):
            out[key] = _acquisition_json(out[key])
    return out


def _acquisition_json(acquisition: Dict[str, Any]) -> Dict[str, Any]:
    """The DAQ's acquisition record as reports hold it: its ``run_id`` as a string (a nanosecond
    integer is above 2**53: a JavaScript viewer would round it) and its times as ISO 8601 UTC."""
    out = dict(acquisition)
    info, stats = out.get("info"), out.get("stats")
    if isinstance(info, dict) and isinstance(info.get("run_id"), int) and not isinstance(info.get("run_id"), bool):
        out["info"] = {**info, "run_id": str(info["run_id"])}
    if isinstance(stats, dict):
        out["stats"] = {
            k: (iso(v) if k in ("start_time", "stop_time") and isinstance(v, (int, float)) and v > 0 else v) for k, v in stats.items()
        }
    return out


def images_written(record: Dict[str, Any]) -> Optional[int]:
    """Images a write step wrote: its ``n_written``, else the acquisition's count, else
    ``n_images`` for a write that passed after waiting for its end; ``None`` when unknown."""
    for value in (record.get("n_written"), ((record.get("acquisition") or {}).get("stats") or {}).get("n_write_completed")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if record.get("status") == "passed" and record.get("acquisition") and isinstance(record.get("n_images"), int):
        return record["n_images"]
    return None


class _Sizes:
    """``os.stat`` of written files, bounded in time.

    The files are often on a network mount; a hung mount must not stop the run, so the
    stat runs in a daemon thread and is given up after ``timeout`` s (size unknown). After
    one such hang no further stat is tried in this process. The last answers are cached:
    several consumers ask for the same file in a row.
    """

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._requests: "queue.Queue[Tuple[str, queue.Queue]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._hung = False
        self._lock = threading.Lock()
        self._cache: Dict[Tuple[str, Any], Optional[int]] = {}

    def _work(self) -> None:
        while True:
            path, answer = self._requests.get()
            try:
                info = os.stat(path)
                answer.put(info.st_size if stat.S_ISREG(info.st_mode) else None)
            except (OSError, ValueError):
                answer.put(None)

    def size(self, path: str, key: Any) -> Optional[int]:
        """Size in bytes of the regular file ``path``, or ``None`` (absent, not visible here, hung)."""
        with self._lock:
            if (path, key) in self._cache:
                return self._cache[(path, key)]
            if self._hung:
                return None
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="daq-runner-stat", daemon=True)
                self._thread.start()
            answer: "queue.Queue[Optional[int]]" = queue.Queue()
            self._requests.put((path, answer))
            try:
                size = answer.get(timeout=self.timeout)
            except queue.Empty:
                self._hung = True
                return None
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[(path, key)] = size
            return size


_SIZES = _Sizes()


def file_entry(record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``files`` entry of a write step that wrote something:
    {path, step, n_images, size_bytes, run_id, complete}.

    A write that passed wrote a complete file. Every other write whose acquisition started
    left an incomplete one (``complete: false``), whatever ended it (FAILED, the step's
    timeout, a signal, an abort, a lost lock, a protocol error, a writer restart): the runner
    records ``n_written`` (possibly 0) or the acquisition's last status for every acquisition
    it started, and not for one that provably did not start (a refused write); a started one
    with no image counted is listed when its file is there. Reports of older runners, which
    lack those, list an incomplete file when images were counted.
    ``size_bytes`` comes from ``os.stat`` when the file is visible on this machine, else null.
    """
    if record.get("kind") != "write" or not isinstance(record.get("output_file"), str):
        return None
    complete = record.get("status") == "passed"
    n_images = images_written(record)
    path = record["output_file"]
    run_id = record.get("run_id")
    size = _SIZES.size(path, (run_id, record.get("finished_at")))
    if not complete and not n_images:
        # Started but no image counted: listed when the file is there (a writer that failed
        # to create it, e.g. "Cannot create output file.", left none).
        started = isinstance(record.get("n_written"), int) or isinstance(record.get("acquisition"), dict)
        if not started or size is None:
            return None
    return {
        "path": path,
        "step": record.get("index"),
        "n_images": n_images,
        "size_bytes": size,
        "run_id": None if run_id is None else str(run_id),
        "complete": complete,
    }


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


class StepDone(NamedTuple):
    """A finished step as the report holds it, and its ``files`` entry (``None`` if it wrote none)."""

    record: Dict[str, Any]
    file: Optional[Dict[str, Any]]


_last_done: Tuple[Any, Optional[StepDone]] = (None, None)


def _step_done(event: events.Event, data: Dict[str, Any]) -> StepDone:
    """A ``step_finished`` event as reports hold it, made once per event.

    The run report, the report file, the JUnit file and the console each follow the same
    events with a :class:`Tally`: they share the record and its ``files`` entry (read-only)
    instead of each copying the record and asking for the file's size.
    """
    global _last_done
    last_event, done = _last_done
    if last_event is event and done is not None:
        return done
    record = step_json(data)
    done = StepDone(record, file_entry(record))
    _last_done = (event, done)
    return done


def describe_counts(summary: Dict[str, int], n_steps: Optional[int] = None) -> str:
    """``14 steps (12 passed, 1 failed, 1 skipped)``: the statuses that occurred, in a fixed order."""
    total = n_steps if n_steps is not None else sum(summary.values())
    parts = [f"{summary[key]} {key}" for key in SUMMARY_KEYS if summary.get(key)]
    return f"{total} step{'s' if total != 1 else ''}" + (f" ({', '.join(parts)})" if parts else "")


class Tally:
    """Follows one run's events; everything a report says about the run as a whole.

    Call :meth:`feed` with every event. Memory does not grow with the number of steps.

    Attributes:
        run_id, batch, daq, info (version, host, user, pid, command, python), n_steps,
        started_at / finished_at (Unix time or ``None``), status (``running`` until
        ``run_finished``), reason, daq_unreachable, summary (steps by status), images,
        bytes, n_files (over the files written), failed_attempts, notices and
        recoveries (lists, bounded), last_index (index of the last finished step).
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
        self._notices = Bounded(10, 40)
        self._recoveries = Bounded(10, 40)

    # -- following the events ----------------------------------------------------------

    def feed(self, event: events.Event) -> Optional[StepDone]:
        """Take one event into account; for ``step_finished`` return the step as the report holds it."""
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
        # A consumer runs in the runner's process: what an older runner does not say is known here.
        self.info = {
            "daq_runner": data.get("daq_runner") or __version__,
            "host": data.get("host") or socket.gethostname(),
            "user": data.get("user") or _user(),
            "pid": data.get("pid") or os.getpid(),
            "command": data.get("command"),
            "python": data.get("python") or platform.python_version(),
        }

    def _step_finished(self, event: events.Event, data: Dict[str, Any]) -> StepDone:
        done = _step_done(event, data)
        record, entry = done
        status = record.get("status")
        if status in self.summary:
            self.summary[status] += 1
        self.n_finished += 1
        index = record.get("index", event.step)
        self.last_index = index if isinstance(index, int) else self.last_index
        self.failed_attempts += len(record.get("failed_attempts") or [])
        if status in PROBLEMS and self.first_problem is None:
            name = record.get("name") or event.step_name
            self.first_problem = f"step {index} ({name}) {status}: {record.get('error') or 'no error recorded'}"
        if entry is not None:
            self.n_files += 1
            self.images += entry["n_images"] or 0
            self.bytes += entry["size_bytes"] or 0
        return done

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
