"""Run reports: built from the event stream, written as JSON and JUnit XML.

- :class:`RunReport` (what ``Runner.run`` returns) is built by :class:`ReportRecorder`.
- :class:`JsonReportFile` keeps a report file valid JSON at every instant, in memory that
  does not grow with the number of steps: it is created atomically (temp file and rename),
  each finished step is appended in place with one write of the file's tail, and the end of
  the run finishes the file in place. A full disk leaves the last complete version; the
  consumer says so once on stderr, sets :attr:`JsonReportFile.error` and never raises into
  the runner.
- :class:`JUnitFile` streams test cases to a temporary file and assembles the XML at the end.
- :func:`load_report` reads a report back (``--resume``, ``daq-run show``).

Where reports go is :mod:`daq_runner.report_paths`.

The report (JSON object, keys in this order)::

    run_id, batch {name, path, sha256, plan, vars, run, now, invocation}, daq {url, redis, url_source, redis_source},
    daq_runner, host, user, pid, command, resume_command, python, n_steps, started_at,
    steps [step records], files [{path, step, n_images, size_bytes, run_id, complete}],
    status (running | passed | failed | interrupted), reason, daq_unreachable,
    finished_at, duration_s, summary {passed, failed, skipped, interrupted, pending},
    totals {steps, images, bytes, files, failed_attempts},
    estimate {duration_s, images, bytes, ...} (when the run was given one: what it was expected to cost),
    cleanup {status, reason, steps, restore_config} (when the batch has a finally: or restore_config),
    recoveries [pre-run], notices [{at, step, message}] (the first 10 and the last 40), notices_omitted

Times are ISO 8601 UTC (``2026-11-29T18:44:55.123Z``), also in failed_attempts and
recoveries; run ids are strings. Every version of the file on disk has all these keys:
while the run goes on (or after it was killed: status still ``running``) ``files`` lists the
files of the steps recorded so far and ``summary.pending`` counts the steps not recorded
yet, so ``summary`` adds up to ``n_steps`` in every version. Once the run has ended,
``pending`` is 0: steps the runner never reported count as skipped. A run that did not pass
always has a ``reason``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import re
import sys
import tempfile
import uuid
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, TextIO

from . import events
from ._tally import SUMMARY_KEYS, Tally
from .record import KEPT, StepRecord, StepStatus, iso

__all__ = [
    "RunReport",
    "ReportRecorder",
    "JsonReportFile",
    "JUnitFile",
    "write_atomic",
    "load_report",
    "SUMMARY_KEYS",
]

_CHUNK = 64 * 1024  # the file grows by at least this much at a time; files are written in pieces of about this size


# -- the run report in memory ---------------------------------------------------------------


class RunReport(Tally):
    """What a run did, for Python users (``Runner.run`` returns it).

    Everything of :class:`~daq_runner._tally.Tally` (``status``, ``reason``, ``summary``,
    ``totals()``, ``notices``, ``recoveries``, ``started_at``...), plus:

    Attributes:
        steps: the steps' :class:`~daq_runner.record.StepRecord` objects (``step.status``,
            ``step.error``...; ``step["status"]`` reads the report's key); with
            ``keep_steps=False`` only the failed and interrupted ones (memory then stays flat in
            the number of steps).
        files: the files written, [{path, step, n_images, size_bytes, run_id, complete}].
    """

    def __init__(self, keep_steps: bool = True) -> None:
        super().__init__()
        self.keep_steps = keep_steps
        self.steps: List[StepRecord] = []
        self.files: List[Dict[str, Any]] = []

    def feed(self, event: events.Event) -> Optional[StepRecord]:
        record = super().feed(event)
        if record is not None:
            if self.keep_steps or record.status.is_problem:
                self.steps.append(record)
            self.files.extend(record.file_entries())
        return record

    @property
    def failed_steps(self) -> List[StepRecord]:
        """The steps that failed or were interrupted."""
        return [s for s in self.steps if s.status.is_problem]

    def to_dict(self) -> Dict[str, Any]:
        """The JSON report as a dict (with ``keep_steps=False``, ``steps`` holds the problems only)."""
        return {**self.head(), "steps": [s.to_json() for s in self.steps], "files": list(self.files), **self.tail()}


class ReportRecorder:
    """Consumer that builds the :class:`RunReport` of a run (``keep_steps``: see :class:`RunReport`)."""

    def __init__(self, keep_steps: bool = True) -> None:
        self.report = RunReport(keep_steps=keep_steps)

    def __call__(self, event: events.Event) -> None:
        self.report.feed(event)


# -- writing files that survive ---------------------------------------------------------------


def _write_all(fd: int, data: bytes, offset: Optional[int] = None) -> None:
    """Write all of ``data`` (at ``offset``, else at the file position); a short write is continued.

    ``os.write``/``os.pwrite`` may write less than asked (a full disk, a signal): the rest is
    written by the next call, and a call that writes nothing ends in ``OSError(ENOSPC)``.
    """
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]
        if offset is not None:
            offset += n


def _create(path: str, chunks: Iterable[bytes]) -> None:
    """Create ``path`` with ``chunks`` atomically: readers see the old file or the whole new one.

    The file gets its permissions from the umask, like any file the user creates.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    Raises ``OSError``; the old file is then untouched and no temporary file is left.
    """
    _create(path, [data])


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by ``None`` (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 text kept as it is."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "replace")  # a lone surrogate (undecodable file name) becomes '?'


def _what(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "disk full"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


class JsonReportFile:
    """Consumer that keeps ``path`` a valid JSON report, with every key of a final one, during
    and after the run.

    Layout during the run (one step record, one file entry per line)::

        {<head>,"steps":[
        {step 1},
        {step 2}<spaces: room for the next steps>
        ],"files":[
        {file 1}
        ],<tail>}<spaces: room reserved ahead>

    The file is created atomically at ``run_started``. A finished step is written into the
    room after the last step, its ``files`` entry and the new tail over the old tail (two
    writes, the tail first); a notice rewrites the tail alone. Whitespace between JSON
    values is valid, so the file is valid JSON after every write, and ``files`` lists what is
    known so far. When the room for steps runs out, the ``files`` list and the tail move
    further down in one write (from a copy of the list kept in a temporary file, not in
    memory) and the room grows with the list and the report, so the cost per step does not
    grow with the number of steps. Space is reserved ahead, so an overwrite never needs new
    space: on a full disk the file keeps its last complete version. At ``run_finished`` the
    room is closed (the list and the final tail written right after the last step, in one
    write) and the padding is cut off.

    Never raises ``OSError`` into the runner: the first error is printed once on
    ``stream`` (stderr) — ``report r.json: disk full; the file holds the run up to step 12``
    — and kept in :attr:`error`; the run goes on without further writes.

    Attributes:
        path: the report file.
        error: ``None``, or the one-line description of what went wrong.
        complete: the run ended and its whole report is on disk.
    """

    _FILES_OPEN = b'\n],"files":['

    def __init__(self, path: str, *, stream: Optional[TextIO] = None) -> None:
        self.path = path
        self.error: Optional[str] = None
        self._stream = stream
        self._tally = Tally()
        self._fd: Optional[int] = None
        self._steps_end = 0  # where the next step goes
        self._files_at = 0  # where the files list opens (after the room for steps)
        self._tail_at = 0  # end of the last file entry: where the tail begins
        self._end = 0  # end of the JSON text; [end, size) holds spaces
        self._size = 0
        self._n_steps = 0  # steps on disk
        self._n_files = 0  # file entries on disk
        self._held: Optional[int] = None  # index of the last step on disk
        self._finishing = False
        self._done = False
        self._spool: Optional[IO[bytes]] = None  # the files list's entries as on disk
        self._spooled = 0

    @property
    def complete(self) -> bool:
        return self._done and self.error is None

    def __call__(self, event: events.Event) -> None:
        if self._done or (self.error is not None):
            self._tally.feed(event)
            return
        try:
            if event.kind == events.RUN_FINISHED:
                self._finish(event)
                return
            record = self._tally.feed(event)
            if event.kind == events.RUN_STARTED:
                self._start()
            elif self._fd is None:
                return
            elif record is not None:
                self._add_step(record)
            elif event.kind in (events.NOTICE, events.CLEANUP) or (event.kind == events.RECOVERY and event.step is None):
                self._write_tail(b"")
        except (OSError, ValueError, TypeError) as exc:
            self._fail(exc)

    # -- the steps ------------------------------------------------------------------------

    def _tail(self) -> bytes:
        return _encode("\n]," + _dumps(self._tally.tail())[1:] + "\n")

    def _start(self) -> None:
        head = _encode(_dumps(self._tally.head())[:-1] + ',"steps":[')
        tail = self._tail()
        _create(self.path, [head + self._FILES_OPEN + tail])
        self._fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        self._steps_end = self._files_at = len(head)
        self._tail_at = len(head) + len(self._FILES_OPEN)
        self._end = self._size = self._tail_at + len(tail)

    def _add_step(self, record: StepRecord) -> None:
        step = _encode(("," if self._n_steps else "") + "\n" + _dumps(record.to_json()))
        entries = record.file_entries()
        entry = b""
        if entries:
            entry = _encode(("," if self._n_files else "") + "\n" + ",\n".join(_dumps(e) for e in entries))
        tail = self._tail()
        fits = self._tail_at + len(entry) + len(tail) <= self._size
        if self._steps_end + len(step) <= self._files_at and fits:
            # The tail first: if it fails, the step is not on disk either, and the file holds
            # the run up to the step before, whole.
            self._write_tail(entry, tail)
            _write_all(self._fd, step, self._steps_end)  # type: ignore[arg-type]
            self._steps_end += len(step)
        else:
            self._move_files(step, entry, tail)
        if entry:
            self._keep(entry)
            self._n_files += len(entries)
        self._n_steps += 1
        self._held = record.index

    def _keep(self, entry: bytes) -> None:
        if self._spool is None:
            # On disk from the start (no copy when it grows), beside the report: a full /tmp
            # does not stop a report whose own disk has room.
            self._spool = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(self.path)))
        self._spool.write(entry)
        self._spooled += len(entry)

    def _write_tail(self, entry: bytes, tail: Optional[bytes] = None) -> None:
        """Write ``entry`` (the next file entry, or nothing) and the tail at the tail's place, in one write."""
        assert self._fd is not None
        data = entry + (self._tail() if tail is None else tail)
        end = self._tail_at + len(data)
        self._reserve(end)
        # Spaces over what is left of a longer tail: the JSON text ends at the new brace.
        _write_all(self._fd, data + b" " * max(0, self._end - end), self._tail_at)
        self._tail_at += len(entry)
        self._end = end

    def _move_files(self, step: bytes, entry: bytes, tail: bytes) -> None:
        """No room for ``step`` (or for the list's growth): write it, new room, the files list
        (with ``entry``) and the tail, in one write.

        The room grows with the files list and with the report, so that the list moves
        seldom: the cost per step stays independent of the number of steps.
        """
        assert self._fd is not None
        fixed = len(step) + len(self._FILES_OPEN) + self._spooled + len(entry) + len(tail)
        need = self._steps_end + fixed
        room = max(_CHUNK, 2 * (self._spooled + len(entry)), self._steps_end // 8)
        self._reserve(need, need + 2 * room)
        # As much room again after the tail, for the files list and the tail to grow into; on
        # a disk that is nearly full, the room shrinks (the list moves up): the space is used.
        room = min(room, (self._size - need) // 2)
        with _mapped(self._spool, self._spooled) as files:
            parts: List[Any] = [step, *_spaces(room), self._FILES_OPEN, files, entry, tail]
            end = need + room
            parts += _spaces(max(0, self._end - end))
            _writev_all(self._fd, parts, self._steps_end)
            del parts  # no view of the mapping may outlive it
        self._steps_end += len(step)
        self._files_at = self._steps_end + room
        self._tail_at = self._files_at + len(self._FILES_OPEN) + self._spooled + len(entry)
        self._end = self._tail_at + len(tail)

    def _reserve(self, end: int, want: Optional[int] = None) -> None:
        """Make the file at least ``end`` bytes long (``want`` if there is room) by appending spaces (still valid JSON)."""
        assert self._fd is not None
        target = max(end, want or 0)
        if target <= self._size:
            return
        grow = max(target - self._size, _CHUNK, self._size // 8)  # amortized: few reservations in a long run
        spaces = b" " * min(grow, _CHUNK)
        try:
            at, stop = self._size, self._size + grow
            while at < stop:  # in pieces: memory stays small however large the file
                piece = spaces[: stop - at]
                _write_all(self._fd, piece, at)
                at += len(piece)
        except OSError:
            # A generous reservation may not fit where the needed one does.
            self._size = os.fstat(self._fd).st_size
            if self._size < end:
                raise
        self._size = os.fstat(self._fd).st_size

    # -- the end ----------------------------------------------------------------------------

    def _finish(self, event: events.Event) -> None:
        self._tally.feed(event)
        if self._fd is None:  # never started (no run_started): nothing to finish
            self._done = True
            return
        self._finishing = True
        # The room for steps is closed: `...}\n],"files":[` + the list + the final tail,
        # right after the last step, in one write; spaces over the rest, then cut off.
        tail = self._tail()
        end = self._steps_end + len(self._FILES_OPEN) + self._spooled + len(tail)
        self._reserve(end)
        with _mapped(self._spool, self._spooled) as files:
            _writev_all(self._fd, [self._FILES_OPEN, files, tail, *_spaces(max(0, self._end - end))], self._steps_end)
        self._end = end
        try:
            os.ftruncate(self._fd, self._end)  # the padding is no longer needed
        except OSError:
            pass  # trailing spaces are valid JSON
        os.fsync(self._fd)
        self._close()
        _discard(self._spool)
        self._spool = None
        self._done = True

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _fail(self, exc: BaseException) -> None:
        what = _what(exc)
        if self._fd is None and not self._finishing:
            self.error = f"report {self.path}: {what}; no report was written"
        elif self._held is None:
            self.error = f"report {self.path}: {what}; the file holds the run's start, no step"
        else:
            self.error = f"report {self.path}: {what}; the file holds the run up to step {self._held}"
        if self._finishing:
            self.error += " but not its end"
        self._close()
        _discard(self._spool)
        self._spool = None
        _say(self._stream, self.error)


_SPACES = b" " * _CHUNK


def _spaces(n: int) -> List[bytes]:
    """``n`` spaces as pieces of one shared buffer (for ``os.pwritev``: no copy of their size in memory)."""
    piece = _SPACES if n <= 512 * len(_SPACES) else b" " * (n // 512 + 1)  # at most ~512 pieces
    whole, rest = divmod(n, len(piece))
    return [piece] * whole + ([piece[:rest]] if rest else [])


@contextlib.contextmanager
def _mapped(spool: Optional[IO[bytes]], length: int) -> Iterator[Any]:
    """The first ``length`` bytes of ``spool`` as a buffer mapped from the file (not copied
    into memory: the files list of a long run is megabytes)."""
    if spool is None or length == 0:
        yield b""
        return
    import mmap

    spool.flush()
    with mmap.mmap(spool.fileno(), length, access=mmap.ACCESS_READ) as view:
        with memoryview(view) as buffer:
            yield buffer


def _writev_all(fd: int, parts: List[Any], offset: int) -> None:
    """Write ``parts`` one after the other at ``offset`` in one ``pwritev`` (continued after a short write).

    One call: a reader sees the file before or after it, the same as for one ``pwrite``.
    """
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        n = os.pwritev(fd, views[:_IOV_MAX], offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


_IOV_MAX = 1024


def _discard(spool: Optional[IO[bytes]]) -> None:
    """Close a temporary file whose content is no longer wanted (its unwritten buffer may fail: a full disk)."""
    if spool is not None:
        try:
            spool.close()
        except OSError:
            pass


def _say(stream: Optional[TextIO], line: str) -> None:
    """One line on ``stream`` (stderr at call time); a broken stderr does not matter."""
    try:
        target = stream or sys.stderr
        target.write(line + "\n")
        target.flush()
    except (OSError, ValueError):
        pass


# -- JUnit ---------------------------------------------------------------------------------

# XML 1.0 allows tab, newline, carriage return and these ranges; anything else (ESC, BEL,
# NUL from a DAQ error text) makes the whole file unparsable.
_XML_FORBIDDEN = "[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


@functools.lru_cache(maxsize=1)
def _xml_forbidden() -> "re.Pattern[str]":
    # Compiled on first use: its character ranges take ~5 ms to compile, and a run without
    # --junit (most of them) never needs it.
    return re.compile(_XML_FORBIDDEN)


def xml_clean(text: Any) -> str:
    """``text`` as a string without the characters XML 1.0 forbids."""
    return _xml_forbidden().sub("", str(text))


def _xml_text(text: Any) -> str:
    return xml_clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_attr(text: Any) -> str:
    value = _xml_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return f'"{value}"'


class JUnitFile:
    """Consumer that writes JUnit XML: one testcase per step, written at the end of the run.

    Failed steps carry ``<failure>``, interrupted ones ``<error>``, skipped ones (and steps
    kept from an earlier run) ``<skipped>``; tags are ``<properties>``; failed attempts and
    recoveries are in ``<system-out>`` (a retry that passed still shows in CI). The run's
    cleanup steps (``finally:``, ``restore_config``) are test cases of class ``<batch>.finally``. Test cases
    are streamed to a temporary file during the run, so memory stays flat. Errors are
    handled as by :class:`JsonReportFile` (:attr:`error`, one line on stderr, never raised).
    """

    def __init__(self, path: str, *, stream: Optional[TextIO] = None) -> None:
        self.path = path
        self.error: Optional[str] = None
        self._stream = stream
        self._tally = Tally()
        self._cases: Optional[IO[bytes]] = None
        self._counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        self._done = False
        self._cleanup_done = False

    @property
    def complete(self) -> bool:
        return self._done and self.error is None

    def __call__(self, event: events.Event) -> None:
        try:
            record = self._tally.feed(event)
            if self.error is not None:
                return
            if record is not None:
                self._case(record)
            elif event.kind == events.CLEANUP and event.data.get("status") in ("passed", "failed", "skipped") and not self._cleanup_done:
                self._cleanup_done = True  # its end: every cleanup step once
                for raw in event.data.get("steps") or ():
                    self._case(StepRecord.from_json(raw), "finally")
            elif event.kind == events.RUN_FINISHED:
                self._write()
        except (OSError, ValueError, TypeError) as exc:
            self.error = f"JUnit file {self.path}: {_what(exc)}; it was not written"
            _discard(self._cases)
            self._cases = None
            _say(self._stream, self.error)

    def _case(self, step: StepRecord, group: str = "") -> None:
        if self._cases is None:
            self._cases = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(self.path)))
        suite = self._tally.batch.get("name") or "batch"
        label = f"{step.index:04d} {step.name}"
        classname = f"{suite}.{group}.{step.kind}" if group else f"{suite}.{step.kind}"
        parts = [f'  <testcase classname={_xml_attr(classname)} name={_xml_attr(label)} time="{_seconds(step.duration_s)}">']
        if step.tags:
            parts.append("    <properties>")
            parts += [f'      <property name="tag" value={_xml_attr(tag)}/>' for tag in step.tags]
            parts.append("    </properties>")
        error = step.error
        self._counts["tests"] += 1
        if step.status is StepStatus.FAILED:
            self._counts["failures"] += 1
            parts.append(f"    <failure message={_xml_attr(error or 'failed')}>{_xml_text(error or '')}</failure>")
        elif step.status is StepStatus.INTERRUPTED:
            self._counts["errors"] += 1
            parts.append(f"    <error message={_xml_attr(error or 'interrupted')}>{_xml_text(error or '')}</error>")
        elif step.status is StepStatus.SKIPPED or step.resumed:
            self._counts["skipped"] += 1
            why = f"{KEPT}: it passed there and was not run again" if step.resumed else (error or "not run")
            parts.append(f"    <skipped message={_xml_attr(why)}/>")
        # What went wrong on the way, also for a step that passed on a retry: each text once.
        trail = [f"{label} failed: {text}" for label, text in step.attempts_said_once()]
        trail += [f"recovery ({r.get('reason')}): {r.get('action')} -> {r.get('outcome')}" for r in step.recoveries]
        if trail:
            parts.append(f"    <system-out>{_xml_text(chr(10).join(trail))}</system-out>")
        parts.append("  </testcase>\n")
        self._cases.write(_encode("\n".join(parts)))

    def _write(self) -> None:
        tally = self._tally
        props = {
            "run_id": tally.run_id,
            "status": tally.status,
            "reason": tally.reason,
            "batch": tally.batch.get("path"),
            "batch_sha256": tally.batch.get("sha256"),
            "daq_url": tally.daq.get("url"),
            "daq_runner": tally.info.get("daq_runner"),
            "host": tally.info.get("host"),
        }
        head = ['<?xml version="1.0" encoding="utf-8"?>']
        attrs = " ".join(f"{k}={_xml_attr(v)}" for k, v in self._counts.items())
        head.append(
            f"<testsuite name={_xml_attr(tally.batch.get('name') or 'batch')} {attrs} "
            f'time="{_seconds(tally.duration_s)}" timestamp={_xml_attr(iso(tally.started_at) or "")}>'
        )
        head.append("  <properties>")
        head += [f"    <property name={_xml_attr(k)} value={_xml_attr(v)}/>" for k, v in props.items() if v is not None]
        head.append("  </properties>\n")

        def chunks() -> Iterable[bytes]:
            yield _encode("\n".join(head))
            if self._cases is not None:
                self._cases.seek(0)
                while True:
                    block = self._cases.read(_CHUNK)
                    if not block:
                        break
                    yield block
            yield b"</testsuite>\n"

        try:
            _create(self.path, chunks())
        finally:
            _discard(self._cases)
            self._cases = None
        self._done = True


def _seconds(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else "0.000"


# -- reading reports ---------------------------------------------------------------------------


MAX_REPORT_BYTES = 512 * 1024 * 1024  # a 100,000-step report is about 100 MiB


def _regular(path: str) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # open() says what is wrong (missing, no permission)


def load_report(path: str) -> Dict[str, Any]:
    """Read a JSON report (``--resume``, ``daq-run show``).

    Tolerant: any report of daq-run, finished or not (a killed run's report is valid JSON),
    old or new layout. Raises ``ValueError`` with one clear line: unreadable (missing, a
    directory, no permission), not JSON, or not a daq-run report.
    """
    # A regular file of bounded size: /dev/zero or a FIFO must not hang or fill memory.
    if os.path.isdir(path):
        raise ValueError(f"cannot read report {path}: Is a directory")
    if not _regular(path):
        raise ValueError(f"cannot read report {path}: not a regular file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read report {path}: {exc.strerror or exc}") from None
    except MemoryError:
        raise ValueError(f"report {path} is too large to read") from None
    if len(data) > MAX_REPORT_BYTES:
        raise ValueError(f"report {path} is larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB: not a daq-run report")
    try:
        report = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"report {path} is not UTF-8 text: not a daq-run report") from None
    except ValueError as exc:
        raise ValueError(f"report {path} is not valid JSON ({exc}): not a daq-run report, or cut short") from None
    except RecursionError:
        raise ValueError(f"report {path} is nested too deeply: not a daq-run report") from None
    if not isinstance(report, dict) or not isinstance(report.get("steps"), list) or not isinstance(report.get("batch"), dict):
        raise ValueError(f"{path} is not a daq-run report (no batch and steps)")
    return report
