"""One typed record per step: built once by the Runner, serialised once, read by every consumer.

:class:`StepRecord` is what a step did: its identity, its status and error, its attempts,
recoveries and failed attempts, and what its kind found out (a write's acquisition and the
DAQ's log record of it, a config step's deployment, a check's observations). The Runner
builds it when the step starts and fills it as the step goes; the ``step_finished`` event
carries it; the console, the JSON report, the JUnit file, ``daq-run show`` and the HTML page
read it and derive nothing again: what counts as images written (:attr:`StepRecord.images_written`),
the one line that says why a step did not pass (:attr:`StepRecord.problem`) and a write's
``files`` entries (:meth:`StepRecord.file_entries`) are written here, once.

:meth:`StepRecord.to_json` is the one serialisation (the report's keys, in their order, with
ISO 8601 UTC times and run ids as strings); :meth:`StepRecord.from_json` reads a record of any
daq-run version back (``--resume``, ``daq-run show``), keeping what it does not know.

In Python the DAQ's id of a write's acquisition is :attr:`StepRecord.acquisition_id`; the
report calls it ``run_id``, as the DAQ does (the report's own ``run_id`` is the run's).
"""

from __future__ import annotations

import math
import os
import queue
import re
import stat
import threading
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Dict, Iterator, List, Optional, Tuple, TypedDict

__all__ = [
    "StepStatus",
    "StepRecord",
    "CleanupRecord",
    "RESTORE_OUTCOMES",
    "RESTORE_STEP_NAME",
    "FailedAttempt",
    "RecoveryRecord",
    "SuspensionRecord",
    "MISSING",
    "CONFIRMATIONS",
    "WEAK_CONFIRMATIONS",
    "KEPT",
    "iso",
    "parse_iso",
    "acquisition_json",
]


class StepStatus(str, Enum):
    """How a step ended (the report's ``status`` strings)."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"

    @property
    def is_problem(self) -> bool:
        """Failed or interrupted: what makes a run fail and a summary list it."""
        return self in (StepStatus.FAILED, StepStatus.INTERRUPTED)

    def __str__(self) -> str:  # f-strings show "passed", not "StepStatus.PASSED"
        return self.value


class FailedAttempt(TypedDict):
    """One failed attempt of a step: ``attempt`` (1, 2, ...), ``error``, ``at`` (Unix time; ISO text in reports)."""

    attempt: int
    error: str
    at: Any


class RecoveryRecord(TypedDict, total=False):
    """Something the runner did to bring the DAQ back: ``reason``, ``action``, ``outcome``,
    ``at`` (Unix time; ISO text in reports); a stop of an acquisition also has ``attempts``
    and, when any failed, ``errors``."""

    reason: str
    action: str
    outcome: str
    at: Any
    attempts: int
    errors: List[str]


class SuspensionRecord(TypedDict, total=False):
    """A guarded write suspended because the detector stopped delivering: ``reason``,
    ``suspended_at`` and ``resumed_at`` (Unix times, ISO text in reports; ``resumed_at`` is
    ``None`` when no acquisition followed), ``detector_rate`` (the last rate read), and the
    acquisition it abandoned: ``run_id``, ``n_written`` (images the DAQ counted in its file),
    ``output_file``, ``complete`` (``False``: the file was left incomplete, then replaced by
    the next acquisition of the same step) and ``ended`` (how the DAQ ended it, one line)."""

    reason: str
    suspended_at: Any
    resumed_at: Any
    detector_rate: Optional[float]
    run_id: Optional[str]
    n_written: Optional[int]
    output_file: str
    complete: bool
    ended: str


class _Missing:
    """A detail a step never set: left out of its JSON (``None`` would be written as null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

CONFIRMATIONS: Dict[str, str] = {
    "daq_log": "the DAQ's log",
    "status": "the DAQ's status alone (its log not required)",
    "files": "its files",
    "driver_count": "the driver's count alone (its files are not visible on this machine)",
}
"""Where a write's confirmation came from (:attr:`StepRecord.confirmed_by`), and what that is for
people: the DAQ's own log record of it (rest_v2), its status without the log
(``--no-require-log``), its files' own metadata (the current generation, which keeps no log), or
the driver's count alone where the files cannot be read here."""
WEAK_CONFIRMATIONS = ("status", "driver_count")
"""The confirmations of a write that passed without its files or the DAQ's log saying so:
shown apart, for people to look at."""
KEPT = "kept from the run resumed"
"""What a step a ``--resume`` kept is called wherever people read it (the report's key is
``resumed: true``, which reads as "run again"): it passed in the run resumed and was not run again."""


# -- times --------------------------------------------------------------------------------------


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


def _suspensions_iso(items: Any) -> Any:
    """Suspensions of a guarded write with their times as ISO text."""
    if not isinstance(items, list):
        return items
    return [
        {**item, **{k: iso(item[k]) if item.get(k) is not None else None for k in ("suspended_at", "resumed_at") if k in item}}
        if isinstance(item, dict) else item
        for item in items
    ]


def acquisition_json(acquisition: Any) -> Any:
    """The DAQ's acquisition record as reports hold it: its ``run_id`` as a string (a nanosecond
    integer is above 2**53: a JavaScript viewer would round it) and its times as ISO 8601 UTC."""
    if not isinstance(acquisition, dict):
        return acquisition
    out = dict(acquisition)
    info, stats = out.get("info"), out.get("stats")
    if isinstance(info, dict) and _is_int(info.get("run_id")):
        out["info"] = {**info, "run_id": str(info["run_id"])}
    if isinstance(stats, dict):
        out["stats"] = {
            k: (iso(v) if k in ("start_time", "stop_time") and isinstance(v, (int, float)) and v > 0 else v) for k, v in stats.items()
        }
    return out


def _as_reported(data: Dict[str, Any]) -> Dict[str, Any]:
    """A record read back (or sent by an older runner) as reports hold it, its keys in its own
    order: ISO 8601 UTC times, run ids as strings. A record already in that form comes out the same."""
    out = dict(data)
    for key in ("started_at", "finished_at"):
        if key in out:
            out[key] = iso(out[key])
    if out.get("run_id") is not None:
        out["run_id"] = str(out["run_id"])
    for key in ("failed_attempts", "recoveries"):
        if key in out:
            out[key] = _at_iso(out[key])
    if "suspensions" in out:
        out["suspensions"] = _suspensions_iso(out["suspensions"])
    for key in ("acquisition", "daq_log"):
        if isinstance(out.get(key), dict):
            out[key] = acquisition_json(out[key])
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the record ------------------------------------------------------------------------------------

# The report's keys, in their order. Write steps have the write keys; the details come after the
# failed attempts, only when a step set them; keys of other daq-run versions are kept after them.
_BASE_KEYS = ("index", "name", "kind", "params", "tags", "identity", "status", "attempts", "started_at", "finished_at", "duration_s", "error")
_WRITE_KEYS = ("run_id", "output_file", "n_images", "n_written", "overwrite", "acquisition", "daq_log", "daq_log_reason")
_DETAIL_KEYS = (
    "observed", "writer", "deployment", "config", "config_id", "restart", "acquisition", "overwrote", "stopped_by_step", "daq_log_source",
    "guard", "suspensions", "file_check", "command", "confirmed_by", "files",
)  # fmt: skip
_SET_LATER = tuple(key for key in _DETAIL_KEYS if key != "acquisition")  # attributes that stay MISSING until set
_KNOWN = frozenset(_BASE_KEYS + _WRITE_KEYS + _DETAIL_KEYS + ("recoveries", "failed_attempts", "resumed"))


@dataclass(eq=False, slots=True)
class StepRecord:
    """What one step of a run did.

    Attributes:
        index, name, kind, params, tags, identity: the step (see
            :class:`~daq_runner.batch.Step`).
        status: how it ended; attempts: attempts made (0 for a step that did not run).
        started_at, finished_at: Unix times (``None`` for a step that did not run);
            duration_s: seconds from start to end.
        error: why it did not pass (``None`` when it passed).
        recoveries: what the runner did to bring the DAQ back during the step.
        failed_attempts: every failed attempt, also when a later one passed.
        acquisition_id: a write's acquisition, as the DAQ calls it (the report's ``run_id``).
        output_file, n_images, overwrite: a write's parameters; n_written: images the DAQ
            counted written (``None`` when unknown); acquisition: the DAQ's last status of it
            (a stop step: the acquisition it stopped); daq_log: the DAQ's log record of it;
            daq_log_reason: why there is none; daq_log_source: where it was found.
        observed: a check's observations; writer: a wait's final writer state; deployment,
            config: a config step's; config_id: the configuration a config step stored, or
            the one a write ran with (proven before its start); restart: what a config step
            saw of the DAQ's services restarting with it (``{"seen", "sign", "down_after_s",
            "back_after_s"}``); overwrote: the write replaced an existing file;
            stopped_by_step: the stop step that ended a background write on purpose.
            A write's ``config`` is the configuration it ran with (or was to run with, when
            nothing started), taken just before its start: the fields that shape its file
            (``bit_depth``, ``image_pixel_height``, ``image_pixel_width``) and those the run's
            config steps set.
        guard: a guarded write's guard (``min_detector_rate``, ``for_s``, ``max_wait_s``) and
            its waits for the detector (``waits``, ``waited_s``, ``last_rate``);
            suspensions: each time it was suspended (:class:`SuspensionRecord`).
        file_check: how its files were checked, from :mod:`daq_runner.verify`: ``status``
            (``passed``, ``failed``, ``not_checked``), ``reason`` (one line), ``files`` (each
            with ``path``, ``passed``, ``images``, ``size``, ``sha256``, ``checks``: every
            check's ``name``, ``passed``, ``reason``) and ``config`` (the DAQ's config the
            check was made against: the file's config at the time).
        command: a run step's program: ``command``, ``outcome``, ``exit_code``,
            ``expect_exit``, ``duration_s``, ``output`` (its last lines), ``output_lines``,
            ``reason`` (:meth:`daq_runner._commands.CommandResult.to_json`).
        confirmed_by: where a write that passed was confirmed (a key of :data:`CONFIRMATIONS`).
        files: the files of a write on a DAQ generation that writes several per acquisition
            (the current one: one per writer), ``[{path, n_images}]`` in writer order; unset
            when the write's file is its ``output_file``.
        resumed: kept from the run a ``--resume`` continued (not run again).
        details: keys of a record read from a report that this version does not know.
    """

    index: int
    name: str
    kind: str
    params: Dict[str, Any] = field(default_factory=dict)
    tags: List[str] = field(default_factory=list)
    identity: Optional[str] = None
    status: StepStatus = StepStatus.SKIPPED
    attempts: int = 0
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    duration_s: Optional[float] = 0.0
    error: Optional[str] = None
    # a write's
    acquisition_id: Optional[str] = None
    output_file: Optional[str] = None
    n_images: Optional[int] = None
    n_written: Optional[int] = None
    overwrite: Optional[bool] = None
    acquisition: Any = MISSING
    daq_log: Optional[Dict[str, Any]] = None
    daq_log_reason: Optional[str] = None
    recoveries: List[RecoveryRecord] = field(default_factory=list)
    failed_attempts: List[FailedAttempt] = field(default_factory=list)
    # what a kind found out: left out of the JSON until set
    observed: Any = MISSING
    writer: Any = MISSING
    deployment: Any = MISSING
    config: Any = MISSING
    config_id: Any = MISSING
    restart: Any = MISSING
    overwrote: Any = MISSING
    stopped_by_step: Any = MISSING
    daq_log_source: Any = MISSING
    guard: Any = MISSING
    suspensions: Any = MISSING
    file_check: Any = MISSING
    command: Any = MISSING
    confirmed_by: Any = MISSING
    files: Any = MISSING
    resumed: bool = False
    details: Dict[str, Any] = field(default_factory=dict)
    _json: Optional[Dict[str, Any]] = field(default=None, repr=False)
    _source: Optional[Dict[str, Any]] = field(default=None, repr=False)
    _file: Any = field(default=MISSING, repr=False)

    # -- made ----------------------------------------------------------------------------------

    @classmethod
    def of(cls, step: Any) -> "StepRecord":
        """The record of ``step`` (a :class:`~daq_runner.batch.Step`) before it runs."""
        record = cls(step.index, step.name, step.kind, step.params, list(step.tags), step.identity)
        if step.kind == "write":
            record.output_file, record.n_images, record.overwrite = step.output_file, step.n_images, step.overwrite
            record.acquisition = None
        return record

    @classmethod
    def from_json(cls, data: Dict[str, Any], position: Optional[int] = None) -> "StepRecord":
        """A record as a report of any daq-run version holds it (``position``: 1-based, for a
        record without an index). Values of the wrong type are left out; unknown keys are kept
        in :attr:`details`, and :meth:`to_json` gives ``data`` back unchanged."""
        get = data.get
        index = get("index") if _is_int(get("index")) else (position or 0)
        status = get("status")
        record = cls(
            index,
            _text(get("name")) or f"step {index}",
            _text(get("kind")) or "?",
            get("params") if isinstance(get("params"), dict) else {},
            [str(t) for t in get("tags")] if isinstance(get("tags"), list) else [],
            get("identity") if isinstance(get("identity"), str) else None,
            StepStatus(status) if isinstance(status, str) and status in _STATUSES else StepStatus.SKIPPED,
            get("attempts") if _is_int(get("attempts")) else 0,
            parse_iso(get("started_at")),
            parse_iso(get("finished_at")),
            _number(get("duration_s")),
            _text(get("error")),
        )
        if record.duration_s is None and record.started_at is not None and record.finished_at is not None:
            record.duration_s = record.finished_at - record.started_at
        run_id = get("run_id")
        record.acquisition_id = str(run_id) if isinstance(run_id, (int, str)) and not isinstance(run_id, bool) else None
        record.output_file = _text(get("output_file"))
        record.n_images = get("n_images") if _is_int(get("n_images")) else None
        record.n_written = get("n_written") if _is_int(get("n_written")) else None
        record.overwrite = get("overwrite") if isinstance(get("overwrite"), bool) else None
        record.acquisition = get("acquisition") if isinstance(get("acquisition"), dict) else (None if "acquisition" in data else MISSING)
        record.daq_log = get("daq_log") if isinstance(get("daq_log"), dict) else None
        record.daq_log_reason = _text(get("daq_log_reason"))
        record.recoveries = [r for r in get("recoveries") if isinstance(r, dict)] if isinstance(get("recoveries"), list) else []  # type: ignore[misc]
        record.failed_attempts = [a for a in get("failed_attempts") if isinstance(a, dict)] if isinstance(get("failed_attempts"), list) else []  # type: ignore[misc]
        for key in _SET_LATER:
            if key in data:
                setattr(record, key, data[key])
        record.resumed = bool(get("resumed"))
        record.details = {k: v for k, v in data.items() if k not in _KNOWN}
        record._source = data
        return record

    def kept(self, index: int, name: str) -> "StepRecord":
        """This record (read from the report being resumed) as the record of step ``index``
        of the resumed run: it passed then and is not run again."""
        kept = replace(self, index=index, name=name, resumed=True, _json=None, _file=MISSING)
        if self._source is not None:
            kept._source = {**self._source, "index": index, "name": name, "resumed": True}
        return kept

    # -- what every consumer would otherwise work out ----------------------------------------------

    @property
    def started(self) -> Optional[bool]:
        """Whether a write's acquisition started: ``True`` when the DAQ counted or showed it,
        ``False`` when the write ran and provably started nothing (refused by the DAQ or before
        sending, its step's time over before the writer was READY), ``None`` when not known (not a
        write, not run, or an acquisition the runner had to stop without ever seeing it)."""
        if self.kind != "write" or not self.attempts:
            return None
        if self.n_written is not None or isinstance(self.acquisition, dict) or self.status is StepStatus.PASSED:
            return True
        if self.acquisition is not None:  # MISSING: a report of a daq-run that did not say
            return None
        ours = self.acquisition_id
        if ours and any(isinstance(r, dict) and ours in str(r.get("outcome")) for r in self.recoveries):
            return None  # stopped in case it had started (a write start whose reply was lost)
        return False

    @property
    def images_written(self) -> Optional[int]:
        """Images a write step wrote: its ``n_written``, else the acquisition's count, else
        ``n_images`` for a write that passed after waiting for its end, ``0`` for a write that
        started nothing (:attr:`started` is ``False``); ``None`` when unknown."""
        if self.n_written is not None:
            return self.n_written
        acquisition = self.acquisition if isinstance(self.acquisition, dict) else {}
        counted = (acquisition.get("stats") or {}).get("n_write_completed") if isinstance(acquisition.get("stats"), dict) else None
        if _is_int(counted):
            return counted
        if self.status is StepStatus.PASSED and acquisition and self.n_images is not None:
            return self.n_images
        if self.started is False:
            return 0
        return None

    @property
    def images_per_s(self) -> Optional[float]:
        """Images per second of a write's acquisition: :attr:`images_written` over
        :attr:`acquisition_span_s`; ``None`` when either is unknown or zero."""
        written, span = self.images_written, self.acquisition_span_s
        return written / span if written and span else None

    @property
    def problem(self) -> Optional[str]:
        """``step 3 (write 10 to /d/a.h5) failed: <error>``: why the step did not pass, in one
        line; ``None`` for a step that passed or was skipped. A write whose acquisition started
        adds the images it wrote (``; 460 of 2000 images written``), from :attr:`images_written`:
        the one count every view shows."""
        if not self.status.is_problem:
            return None
        from ._text import clauses

        written = self.images_written
        images = f"{written} of {self.n_images} images written" if self.started and written is not None and self.n_images is not None else None
        return clauses(f"step {self.index} ({self.name}) {self.status}: {self.error or 'no error recorded'}", images)

    def attempts_said_once(self) -> List[Tuple[str, str]]:
        """What the failed attempts said, each text once: ``[("attempts 1-2", error), ...]``,
        runs of attempts that failed the same way folded into one. A step that did not pass
        leaves out the attempts that said its own error (said once, as the step's error)."""
        out: List[Tuple[str, str]] = []
        for item in self.failed_attempts:
            if not isinstance(item, dict):
                continue
            number, error = item.get("attempt"), str(item.get("error") or "")
            number = number if _is_int(number) else 0
            if out and out[-1][2] == error:
                out[-1] = (out[-1][0], number, error)
            else:
                out.append((number, number, error))
        said = [(f"attempt {a}" if a == b else f"attempts {a}-{b}", error) for a, b, error in out]
        if self.status.is_problem:
            said = [(label, error) for label, error in said if error != (self.error or "")]
        return said

    @property
    def stopped_on_purpose(self) -> Optional[str]:
        """``stopped by step 7 after 96 of 5000 images``: a background write a later ``stop``
        step ended on purpose (it passed with the images it wrote); ``None`` for any other step."""
        if self.stopped_by_step is MISSING or self.stopped_by_step is None:
            return None
        written = self.images_written
        of = f" of {self.n_images}" if self.n_images is not None else ""
        return f"stopped by step {self.stopped_by_step} after {written if written is not None else '?'}{of} images"

    @property
    def bit_depth(self) -> Optional[int]:
        """The bit depth a write ran with (:attr:`config`, taken when it started), or that a
        config step stored; ``None`` when the record does not say (a report of an older daq-run)."""
        value = self.config.get("bit_depth") if isinstance(self.config, dict) else None
        return value if _is_int(value) else None

    @property
    def acquisition_span_s(self) -> Optional[float]:
        """Seconds the DAQ's acquisition ran (its own start and stop times), else the step's duration."""
        stats = self.acquisition.get("stats") if isinstance(self.acquisition, dict) else None
        if isinstance(stats, dict):
            t0, t1 = parse_iso(stats.get("start_time")), parse_iso(stats.get("stop_time"))
            if t0 is not None and t1 is not None and t1 > t0:
                return t1 - t0
        return self.duration_s

    def file_entries(self) -> List[Dict[str, Any]]:
        """The report's ``files`` entries of a write that wrote something, one per file:
        ``{path, step, n_images, size_bytes, run_id, complete}``; ``[]`` for any other step.

        The files are the write's ``output_file``, or, on a DAQ generation that writes several
        per acquisition, each of :attr:`files` with its own images. A write that passed wrote
        complete files. Every other write whose acquisition started left incomplete ones
        (``complete: false``), whatever ended it (FAILED, the step's timeout, a signal, an abort,
        a lost lock, a protocol error, a writer restart): the runner records ``n_written``
        (possibly 0) or the acquisition's last status for every acquisition it started, and not
        for one that provably did not start (a refused write); a file of a started one with no
        image counted is listed when it is there. ``size_bytes`` comes from ``os.stat`` when the
        file is visible on this machine (bounded in time: a hung network mount gives null),
        else null. Made once, when the record is final.
        """
        if self._file is MISSING:
            self._file = self._file_entries()
        return self._file

    def file_entry(self) -> Optional[Dict[str, Any]]:
        """The first of :meth:`file_entries` (the one file of a rest_v2 write), else ``None``."""
        entries = self.file_entries()
        return entries[0] if entries else None

    def _file_entries(self) -> List[Dict[str, Any]]:
        if self.kind != "write":
            return []
        complete = self.status is StepStatus.PASSED
        key = (self.acquisition_id, self.finished_at)
        if isinstance(self.files, list):
            files = [f for f in self.files if isinstance(f, dict) and isinstance(f.get("path"), str)]
            listed = []
            for item in files:
                n_images = item["n_images"] if _is_int(item.get("n_images")) else None
                size = _SIZES.size(item["path"], key)
                if complete or n_images or size is not None:  # a started write's file that is not there: none
                    listed.append(self._entry(item["path"], n_images, size, complete))
            return listed
        if not isinstance(self.output_file, str):
            return []
        n_images = self.images_written
        size = _SIZES.size(self.output_file, key)
        if not complete and not n_images:
            # Started but no image counted: listed when the file is there (a writer that failed
            # to create it, e.g. "Cannot create output file.", left none).
            started = self.n_written is not None or isinstance(self.acquisition, dict)
            if not started or size is None:
                return []
        return [self._entry(self.output_file, n_images, size, complete)]

    def _entry(self, path: str, n_images: Optional[int], size: Optional[int], complete: bool) -> Dict[str, Any]:
        entry = {"path": path, "step": self.index, "n_images": n_images, "size_bytes": size, "run_id": self.acquisition_id, "complete": complete}
        sha256 = self.checksum_of(path)
        if sha256 is not None:  # --checksums: the file as it was checked
            entry["sha256"] = sha256
        return entry

    def checked_file(self, path: str) -> Dict[str, Any]:
        """What its file check found of ``path`` (``{path, passed, images, size, sha256, ...}``), else ``{}``."""
        check = self.file_check if isinstance(self.file_check, dict) else {}
        files = check.get("files") if isinstance(check.get("files"), list) else ()
        return next((f for f in files if isinstance(f, dict) and f.get("path") == path), {})

    def checksum_of(self, path: str) -> Optional[str]:
        """The sha256 its file check read of ``path`` (``--checksums``), else ``None``."""
        sha256 = self.checked_file(path).get("sha256")
        return sha256 if isinstance(sha256, str) else None

    # -- written once --------------------------------------------------------------------------------

    def to_json(self) -> Dict[str, Any]:
        """The record as the report holds it (keys in the report's order; ISO 8601 UTC times; run
        ids as strings). Made once: call it when the record is final (``step_finished``)."""
        if self._json is not None:
            return self._json
        if self._source is not None:
            # Kept as reported, once: no second copy of a record read back.
            self._json = self._source = _as_reported(self._source)
            return self._json
        out: Dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "params": self.params,
            "tags": list(self.tags),
            "identity": self.identity,
            "status": self.status.value,
            "attempts": self.attempts,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "error": self.error,
        }
        if self.kind == "write":
            out.update(
                run_id=self.acquisition_id,
                output_file=self.output_file,
                n_images=self.n_images,
                n_written=self.n_written,
                overwrite=self.overwrite,
                acquisition=acquisition_json(self.acquisition) if self.acquisition is not MISSING else None,
                daq_log=acquisition_json(self.daq_log),
                daq_log_reason=self.daq_log_reason,
            )
        out["recoveries"] = _at_iso(self.recoveries)
        out["failed_attempts"] = _at_iso(self.failed_attempts)
        for key in _DETAIL_KEYS:
            if key == "acquisition" and self.kind == "write":
                continue
            value = getattr(self, key)
            if value is not MISSING:
                out[key] = acquisition_json(value) if key == "acquisition" else _suspensions_iso(value) if key == "suspensions" else value
        out.update(self.details)
        if self.resumed:
            out["resumed"] = True
        self._json = out
        return out

    def changed(self) -> None:
        """The record changed after :meth:`to_json` (a background write that ended later)."""
        self._json = None
        self._file = MISSING

    def scrubbed(self, secrets: Tuple[str, ...]) -> "StepRecord":
        """A copy with ``secrets`` (credentials of URLs in variables) replaced by ``***`` in every
        text it holds; this record itself when there are none."""
        if not secrets:
            return self
        from ._text import scrub

        values = {f.name: scrub(getattr(self, f.name), secrets) for f in fields(self) if f.name not in ("status", "_json", "_file")}
        values["_json"] = scrub(self._json, secrets) if self._json is not None else None
        return replace(self, **values)

    # -- read-only mapping access, for code that reads records as the report's dicts ----------------

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The value of the report's key ``key`` (``run_id`` is :attr:`acquisition_id`)."""
        return self.to_json().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def keys(self) -> Any:
        return self.to_json().keys()


_STATUSES = {s.value for s in StepStatus}


# -- the run's cleanup ---------------------------------------------------------------------------

RESTORE_OUTCOMES = ("restored", "unchanged", "failed", "skipped")
"""How ``restore_config`` ended: the configuration found before the first step was put back,
was still in force (nothing to put back), could not be put back, or was not tried (the
lock lost, the run ended before its first step, the configuration could not be read at the
start, a second stop request)."""


@dataclass(eq=False)
class CleanupRecord:
    """The run's cleanup, the report's ``cleanup`` section: what the batch's ``finally:`` steps
    and ``restore_config`` did when the run ended.

    The section is in the report from the run's start (``status: pending``) when the batch has
    a cleanup; each cleanup step's record is the same :class:`StepRecord` as a step's (indices
    after the plan's). Built by the Runner, serialised by :meth:`to_json` (``daq-run show``
    reads the section as the report holds it).

    Attributes:
        status: ``pending`` (not begun), ``running``, ``passed`` (every cleanup step passed and
            the configuration is as found), ``failed`` or ``skipped`` (nothing was tried).
        reason: why it did not pass, or why it was skipped or cut short.
        steps: the records of the cleanup steps, in order (a restore of the configuration is
            the last, a config step).
        restore: what ``restore_config`` did: ``{"outcome": one of RESTORE_OUTCOMES,
            "fields": {field: value put back}, "error": why it failed or was skipped}``;
            ``None`` when the run did not ask for it.
        n_finally: the batch's ``finally:`` steps; restore_config: whether the run asked for it.
    """

    n_finally: int = 0
    restore_config: bool = False
    status: str = "pending"
    reason: Optional[str] = None
    steps: List[StepRecord] = field(default_factory=list)
    restore: Optional[Dict[str, Any]] = None

    @property
    def problem(self) -> Optional[str]:
        """One line saying why the cleanup did not pass (``None`` when it passed, or has not ended)."""
        if self.status != "failed":
            return None
        return f"cleanup failed: {self.reason}" if self.reason else "cleanup failed"

    def to_json(self) -> Dict[str, Any]:
        """``{status, reason, steps: [step records], restore_config: {outcome, fields, error} | null}``."""
        return {
            "status": self.status,
            "reason": self.reason,
            "steps": [record.to_json() for record in self.steps],
            "restore_config": dict(self.restore) if self.restore is not None else ({"outcome": None} if self.restore_config else None),
        }


RESTORE_STEP_NAME = "restore_config"
"""The name of the config step that puts the configuration back begins with this."""


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else (None if value is None else str(value))


def _number(value: Any) -> Optional[float]:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


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
