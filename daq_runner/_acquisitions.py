"""Acquisitions the runner started: started exactly once, followed to their provable end, never orphaned.

The rules (README "What an unattended run can rely on"):

- **No silent overwrite.** An existing output file is refused before anything is sent, unless
  the step or the run allows overwriting; a symbolic link is never written through.
- **Exactly once.** A write request is sent again only when the DAQ provably did not start it:
  neither our ``run_id`` nor our output file showed up in the statuses read in order from
  before the request, nor in the DAQ's log, within a grace period counted from when the reply
  was lost. A DAQ driver that replaces our ``run_id`` is followed by output file (an
  acquisition of our file that started after our request), with a notice. A later attempt of a
  step follows the earlier attempt's acquisition while that one may still run or have passed.
- **A provable end.** A status that suggests the end (UNKNOWN, READY without ours, another
  acquisition) is confirmed over REST before it is believed: a real DAQ stores each status
  twice and the copies can interleave. A slow acknowledgement is not "vanished": the grace
  period counts from the start's reply.
- **Owned.** Every acquisition that may be running is stopped by :meth:`Acquisitions.stop_all`
  whatever ends the run; ``wait: false`` acquisitions are followed in the background and their
  end is recorded on their own step.
"""

from __future__ import annotations

import collections
import os
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from . import protocol
from ._context import READY, UNKNOWN, WRITING, RunContext, StepFailed
from ._deadline import Deadline, current, detached
from .batch import WriteStep
from .exceptions import DaqRunnerError, StdDaqAdminException, WriteOutcomeUnknown, WriterNeedsRestart
from ._text import quote
from .resume import acquisition_id, run_ids_of
from .feed import Cursor, Tap

__all__ = ["Acquisition", "Acquisitions", "STOP_BUDGET_S"]

_FINAL = (protocol.AcquisitionState.FINISHED.value, protocol.AcquisitionState.FAILED.value)
_LOST_REPLY_GRACE_S = 10.0  # the real server answers a write within ~5 s of its own polling
_ACK_GRACE_S = 5.0  # after the start's reply: how long a READY writer without ours is not yet "vanished"
_LOG_WAIT_S = 3.0
_LOG_LOOKUP = 100  # logs searched for an earlier acquisition of a file the runner cannot see
STOP_BUDGET_S = 5.0  # how long a stop of our acquisition is tried once the run must end
_STOP_PAUSE_S = 0.1  # between attempts to stop it, doubling up to _STOP_PAUSE_MAX_S
_STOP_PAUSE_MAX_S = 0.5
_STOP_ERRORS_KEPT = 5  # distinct errors of one stop kept in its record

class _NotReady(Exception):
    """A write sent because the status stream said READY was refused, and the writer is not READY."""


class Acquisition:
    """One acquisition this runner asked for, followed until it provably ended."""

    def __init__(self, step: WriteStep, run_id: int, before: Set[int]) -> None:
        self.step = step
        self.requested_run_id = run_id
        self.run_id = run_id  # what the DAQ calls it (a driver may replace ours)
        self.before = before  # run_ids of acquisitions that existed before our request: never ours
        self.cursor: Optional[Cursor] = None
        self.log_cursor: Optional[Tap] = None  # the log stream, read along while following
        self.acknowledged_at: Optional[float] = None
        self.seen = False  # ours read in order (stream or live REST)
        self.last: Optional[dict] = None  # our acquisition as last seen
        self.final: Optional[dict] = None  # our acquisition once provably ended
        self.ended = False
        self.stopped_by: Optional[int] = None  # index of the batch's stop step that ended it
        self.record: Optional[dict] = None  # the step record, for an acquisition in the background
        self.started = time.time()
        self.deadline_at = time.monotonic() + step.timeout
        self.adopted_notice: Optional[str] = None

    @property
    def background(self) -> bool:
        return not self.step.wait

    @property
    def n_written(self) -> int:
        stats = (self.final or self.last or {}).get("stats") or {}
        value = stats.get("n_write_completed")
        return value if isinstance(value, int) else 0

    def matches(self, status: dict) -> bool:
        """Whether ``status`` describes this acquisition (by run_id, or by output file)."""
        acquisition = status.get("acquisition") or {}
        return self.is_ours(acquisition)

    def is_ours(self, acquisition: dict) -> bool:
        run_id = protocol.acquisition_run_id({"acquisition": acquisition})
        if run_id is None:
            return False
        if run_id == self.run_id:
            return True
        info = acquisition.get("info") or {}
        if info.get("output_file") == self.step.output_file and run_id not in self.before:
            # Our file, in an acquisition that started after our request: a driver that replaces
            # the client's run_id. Follow it as ours.
            self.adopted_notice = (
                f"the DAQ reports run_id {run_id} for our acquisition of {self.step.output_file} "
                f"(we asked for {self.requested_run_id}); following it as ours"
            )
            self.run_id = run_id
            return True
        return False

    def is_final(self, status: dict) -> bool:
        return self.matches(status) and (status.get("acquisition") or {}).get("state") in _FINAL


class Acquisitions:
    """The acquisitions of one run: start, follow, confirm, stop."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.running: List[Acquisition] = []  # started, or possibly started, and not seen to end
        self.by_step: Dict[int, Acquisition] = {}
        self.files: Dict[str, int] = {}  # real path of every file this run asked for -> its step
        self._starts: Dict[int, int] = {}  # acquisitions started per step, for acquisition_id
        self._background_cursor: Optional[Cursor] = None
        self._seen_end: Deque[int] = collections.deque(maxlen=8)  # run_ids of acquisitions seen to end

    # -- observing ---------------------------------------------------------------------------

    def observe(self, status: dict) -> None:
        """Every status the feed reads: notes the end of acquisitions followed in the background."""
        for acq in self.running:
            if acq.background and acq.matches(status):
                acq.seen = True
                acq.last = status.get("acquisition")
                if (acq.last or {}).get("state") in _FINAL:
                    acq.final = acq.last

    def _note_adoption(self, acq: Acquisition) -> None:
        if acq.adopted_notice:
            self.ctx.notice(acq.adopted_notice, acq.step)
            acq.adopted_notice = None

    # -- starting, exactly once ----------------------------------------------------------------

    def check_overwrite(self, step: WriteStep, result: dict) -> None:
        """Refuse to write over an existing file unless allowed; never write through a symlink.

        Allowed without ``overwrite``: the file this step's own failed attempt left, and, when
        resuming, the file this step left in the run being resumed (see :meth:`_left_by_resumed`).
        Anything else that exists is refused.
        """
        path = step.output_file
        if os.path.islink(path):
            raise StepFailed(f"{path} is a symbolic link: the DAQ would write through it; nothing was sent")
        real = os.path.realpath(path)
        other = self.files.get(real)
        if other is not None and other != step.index:
            # The batch names it differently (a symlinked folder), but it is the same file.
            raise StepFailed(f"{path} is the file step {other} of this run wrote ({real}); nothing was sent")
        logs: Optional[List[dict]] = None
        local = os.path.isdir(os.path.dirname(path))
        if local:
            exists = os.path.lexists(path)
            where = "it exists"
        else:
            # The DAQ writes on another machine: its own log knows the files it wrote.
            logs = self._logs_of(path)
            exists = bool(logs)
            where = "the DAQ's log shows an earlier acquisition of it"
        if not exists:
            return
        earlier = self.by_step.get(step.index)
        retry = earlier is not None and earlier.step.output_file == path
        if logs is None and (retry or self.ctx.resumed is not None):
            logs = self._logs_of(path)  # one look at the DAQ's log serves both proofs
        if retry and self._left_by_earlier_attempt(step, logs or []):
            # This step's own earlier attempt left it (a failed or incomplete acquisition).
            self.ctx.notice(f"replacing {path}, left by the failed attempt of this step (acquisition {earlier.run_id})", step)
            return
        if self.ctx.resumed is not None and self._left_by_resumed(step, logs or [], local):
            self.ctx.notice(f"replacing {path}, left by this step in the run being resumed", step)
            return
        if not (step.overwrite or self.ctx.overwrite):
            raise StepFailed(
                f"{path}: {where} and the DAQ's writer would overwrite it; set overwrite: true on the step "
                "(or in defaults), or run with --overwrite; nothing was sent"
            )
        result["overwrote"] = True
        self.ctx.notice(f"overwriting {path} ({where}; overwrite allowed)", step)

    def _logs_of(self, path: str) -> List[dict]:
        """The DAQ's log records of acquisitions of ``path`` among the last ones, newest first."""
        return [r for r in self.ctx.client.get_logs(_LOG_LOOKUP) if (r.get("info") or {}).get("output_file") == path]

    def _left_by_earlier_attempt(self, step: WriteStep, logs: List[dict]) -> bool:
        """Whether nobody wrote the file of ``step`` since its failed attempt: the DAQ's
        newest logged acquisition of it (``logs``, newest first), if any, is one of this
        step's own (a FAILED one is not logged; anyone else's finished one is, e.g. a
        std_cli write between attempts)."""
        if not logs:
            return True
        mine = set(run_ids_of(self.ctx.invocation, step.index, self._starts.get(step.index, 0)))
        return (logs[0].get("info") or {}).get("run_id") in mine

    def _left_by_resumed(self, step: WriteStep, logs: List[dict], local: bool) -> bool:
        """Whether the file of ``step`` is provably the one this step left in the run resumed."""
        resumed = self.ctx.resumed
        assert resumed is not None
        logged = [(record.get("info") or {}).get("run_id") for record in logs]
        return resumed.left_the_file(step.index, step.retries, step.output_file, logged, local)

    def start(self, step: WriteStep, result: dict) -> Acquisition:
        """Start the acquisition of ``step`` once; raises :class:`StepFailed` when it provably did not start.

        The writer must be READY. When the status stream's newest entry says so, the write
        is sent at once (one Redis round trip instead of a status request): the DAQ's reply
        confirms it, and a refusal while the writer is in fact busy or UNKNOWN (the entry
        was a stale copy, or someone else's write came first) proves that nothing started,
        so the runner then waits for READY (resetting an UNKNOWN writer) and sends it again,
        as when it had asked first. Otherwise (no Redis, a busy or UNKNOWN writer) it asks
        over REST and waits before sending.
        """
        ctx = self.ctx
        marks = ctx.feed.mark_write()
        newest = marks[2]
        if self._says_ready(newest):
            earlier = self.by_step.get(step.index)
            try:
                return self._start(step, result, newest, marks)
            except _NotReady:
                # Not started; as if it had never been tried.
                if earlier is None:
                    self.by_step.pop(step.index, None)
                else:
                    self.by_step[step.index] = earlier
        before = ctx.ready_for_writer(step, result)
        return self._start(step, result, before, None)

    def _says_ready(self, status: Optional[dict]) -> bool:
        """Whether the newest status entry suggests a READY writer.

        READY does; so does a WRITING copy of an acquisition this run saw end: a real DAQ
        stores each status twice and the second copies of an acquisition's last statuses
        (a stale WRITING, then READY) land a few ms after its end, just when the next write
        begins. Only a hint: the write's reply decides (see :meth:`start`).
        """
        if status is None:
            return False
        state = status.get("state")
        if state == READY:
            return True
        return state == WRITING and protocol.acquisition_run_id(status) in self._seen_end

    def _start(self, step: WriteStep, result: dict, before: dict, marks: Optional[tuple]) -> Acquisition:
        ctx = self.ctx
        self.check_overwrite(step, result)
        previous = protocol.acquisition_run_id(before)
        self._starts[step.index] = self._starts.get(step.index, 0) + 1
        run_id = acquisition_id(ctx.invocation, step.index, self._starts[step.index])
        acq = Acquisition(step, run_id, {previous} if previous is not None else set())
        self.by_step[step.index] = acq
        self.files[os.path.realpath(step.output_file)] = step.index
        request = {"output_file": step.output_file, "n_images": step.n_images, "run_id": acq.run_id}
        result.update(run_id=str(acq.run_id), acquisition=None, daq_log=None, daq_log_reason=None)
        for send in (1, 2):
            # Cursors from before the request: no status of our acquisition can be missed.
            acq.cursor, acq.log_cursor, _ = marks if send == 1 and marks is not None else ctx.feed.mark_write()
            ctx.guard()
            if acq not in self.running:
                self.running.append(acq)  # from here on it may run: whatever ends the run stops it
            sent = time.monotonic()
            try:
                reply = ctx.client.start_writer_async(request)
            except WriterNeedsRestart as exc:
                self._ended(acq)
                ctx.reset_writer(step, result, f"the DAQ could not start the write: {exc}")
                raise StepFailed(f"the DAQ refused the write: {exc} (the writer was reset)") from None
            except StdDaqAdminException:
                self._ended(acq)
                if marks is not None and send == 1 and ctx.feed.status().get("state") != READY:
                    # Sent on the stream's word and refused: the writer is busy or UNKNOWN.
                    raise _NotReady() from None
                raise
            except WriteOutcomeUnknown as exc:
                # A request still on its way may arrive as late again as it has been out.
                grace = max(_LOST_REPLY_GRACE_S, time.monotonic() - sent)
                if self._look_for(acq, exc, grace):
                    break
                if current().expired:
                    # Out of time before the DAQ could show it: not provably unstarted, so not
                    # sent again; the run's cleanup stops it if it did start.
                    raise StepFailed(f"timed out while the outcome of the write was unknown ({exc}); acquisition {acq.run_id} may have started") from None
                if send == 2:
                    raise StepFailed(f"write request lost twice ({exc}); acquisition {acq.run_id} did not start") from None
                ctx.notice(f"acquisition {acq.run_id} did not start within {grace:.0f} s; sending the request once more", step)
                continue
            acq.acknowledged_at = time.monotonic()
            if acq.matches(reply):
                acq.last = reply.get("acquisition")
            break
        self._note_adoption(acq)
        result["run_id"] = str(acq.run_id)
        if acq.background and self._background_cursor is None and acq.cursor is not None:
            # Followed from before its request: its end cannot slip past the background look.
            self._background_cursor = Cursor(acq.cursor.stream, acq.cursor.id)
        return acq

    def _look_for(self, acq: Acquisition, exc: Exception, grace: float) -> bool:
        """After a lost reply: did our acquisition start within ``grace`` s? Statuses in order, then the log."""
        ctx = self.ctx
        ctx.notice(f"write request reply lost ({exc}); looking for acquisition {acq.run_id} before deciding", acq.step)
        cursor = Cursor(acq.cursor.stream, acq.cursor.id) if acq.cursor else None
        found = ctx.feed.wait_for_status(acq.matches, grace, cursor)
        if found is None:
            record, _ = ctx.feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, 0.5)
            if record is None:
                return False
            acq.final = record
        else:
            acq.last = found.get("acquisition")
        acq.acknowledged_at = time.monotonic()
        ctx.notice(f"acquisition {acq.run_id} did start", acq.step)
        return True

    # -- following ---------------------------------------------------------------------------

    def _ended(self, acq: Acquisition) -> None:
        acq.ended = True
        if acq.final is not None and acq.run_id not in self._seen_end:
            self._seen_end.append(acq.run_id)  # provably over: later WRITING copies of it are stale
        if acq in self.running:
            self.running.remove(acq)

    def follow(self, acq: Acquisition, result: dict, on_status: Callable[[dict], None] = lambda s: None) -> None:
        """Wait until ``acq`` provably ended; then judge it (raises :class:`StepFailed`)."""
        ctx = self.ctx
        step = acq.step

        def suggests_end(status: dict) -> bool:
            if status.get("state") == UNKNOWN:
                return True  # a writer restart: whatever the acquisition says, it is lost
            if acq.matches(status):
                acq.seen = True
                acq.last = status.get("acquisition")
                return (acq.last or {}).get("state") in _FINAL
            if status.get("state") == READY:
                grace_over = acq.acknowledged_at is not None and time.monotonic() - acq.acknowledged_at > _ACK_GRACE_S
                return acq.seen or grace_over
            return status.get("state") == WRITING and acq.seen  # another acquisition after ours

        def stale(status: dict) -> bool:
            # The second copy of a status of an acquisition this run saw end, landing after
            # ours started (a real DAQ stores each status twice, a few ms apart): it says
            # nothing about ours. Without this, its READY would be confirmed over REST.
            return status.get("state") != UNKNOWN and protocol.acquisition_run_id(status) in self._seen_end

        while acq.final is None:
            status = ctx.feed.wait_for_status(
                suggests_end, since=acq.cursor, on_status=on_status, tap=acq.log_cursor, stale=stale
            )
            if status is None:
                raise StepFailed(
                    f"timed out after {step.timeout:g} s with {acq.n_written}/{step.n_images} images written"
                )
            if acq.is_final(status):
                acq.final = status.get("acquisition")
                if status.get("state") == READY and acq.cursor is not None and acq.log_cursor is not None:
                    # Read from the stream just now: a following write can start from here.
                    ctx.feed.resume_at(acq.cursor, acq.log_cursor, status)
                if status.get("state") == UNKNOWN:
                    # Ended by a writer restart: reset the writer now, the acquisition is lost.
                    self._ended(acq)
                    result["acquisition"] = acq.final
                    ctx.reset_writer(step, result, "writer UNKNOWN during the acquisition")
                    raise StepFailed(
                        "the writer went UNKNOWN during the acquisition; it was lost (writer reset to READY): "
                        f"{quote(acq.final.get('message'))}"
                    )
                break
            # Believe the end only when the DAQ confirms it now.
            live = ctx.feed.status()
            if live.get("state") == UNKNOWN:
                self._ended(acq)
                result["acquisition"] = live.get("acquisition") if acq.matches(live) else acq.last
                ctx.reset_writer(step, result, "writer UNKNOWN during the acquisition")
                raise StepFailed("the writer went UNKNOWN during the acquisition; it was lost (writer reset to READY)")
            if acq.matches(live):
                acq.seen = True
                acq.last = live.get("acquisition")
                if acq.is_final(live):
                    acq.final = acq.last
                continue  # a stale copy in the stream
            record, _ = ctx.feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, 0.5)
            if record is not None:
                acq.final = record
                break
            grace_over = acq.acknowledged_at is not None and time.monotonic() - acq.acknowledged_at > _ACK_GRACE_S
            if acq.seen or grace_over or live.get("state") == WRITING:
                self._ended(acq)
                result["acquisition"] = acq.last
                raise StepFailed(
                    f"acquisition {acq.run_id} vanished: the writer is {quote(live.get('state'))} with no record of it "
                    "(was the DAQ restarted?)"
                )
        self._ended(acq)
        self._note_adoption(acq)
        self.judge(acq, result)

    def judge(self, acq: Acquisition, result: dict) -> None:
        """Pass only a FINISHED acquisition with every image written and (if required) logged."""
        step, final = acq.step, acq.final or {}
        result.update(run_id=str(acq.run_id), acquisition=final, n_written=acq.n_written)
        message = quote(final.get("message"))  # the DAQ's text: one clean line
        if final.get("state") == protocol.AcquisitionState.FAILED.value:
            raise StepFailed(f"acquisition FAILED: {message}")
        if acq.n_written != step.n_images:
            if acq.stopped_by is not None and final.get("state") == protocol.AcquisitionState.FINISHED.value:
                result["stopped_by_step"] = acq.stopped_by
            else:
                raise StepFailed(f"acquisition ended '{message}' with {acq.n_written}/{step.n_images} images written")
        record, source = self.ctx.feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, _LOG_WAIT_S)
        result["daq_log"] = record
        result["daq_log_source"] = source if record is not None else None
        result["daq_log_reason"] = None if record is not None else source
        if record is None and self.ctx.require_log:
            raise StepFailed(f"acquisition FINISHED but the DAQ did not log it: {source}")

    # -- what an acquisition that did not pass left ----------------------------------------------

    def record_end(self, acq: Acquisition, result: dict, log_wait: float = 0.0) -> None:
        """Put into ``result`` (its step record) what ``acq`` left: an acquisition that ended early
        or was abandoned (step timeout, signal, abort, lost lock, a protocol error, a writer
        restart) has written a partial file, and the report lists it and counts its images.

        ``n_written`` comes from the DAQ's log record of ``acq`` (looked for up to ``log_wait``
        s: an acquisition the runner stopped just now is logged FINISHED "Interrupted." with
        its final count), else from a look at the live status when it is still ours, else from
        the last status of ``acq`` seen (by run_id); ``acquisition`` is the last status of it
        known. Nothing is set when ``acq`` was never seen (it provably did not start, or
        nothing of it is known). Never raises: this runs while a run ends.
        """
        if acq.final is None and acq.acknowledged_at is None and not acq.seen and acq.last is None:
            return  # never started (refused, or the reply was lost and it never showed)
        record = None
        try:
            with detached(Deadline(max(log_wait, 0.0) + 1.0)):
                if log_wait > 0:
                    record, source = self.ctx.feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, log_wait)
                    if record is not None and result.get("daq_log") is None:
                        result.update(daq_log=record, daq_log_source=source, daq_log_reason=None)
                if record is None and acq.final is None:
                    live = self.ctx.client.get_status()
                    if acq.matches(live):
                        acq.last = live.get("acquisition")
        except Exception:  # a DAQ gone, Interrupted, a bug: what was seen before stays the answer
            pass
        known = record if record is not None else (acq.final or acq.last)
        if not isinstance(known, dict):
            return
        stats = known.get("stats") or {}
        n_written = stats.get("n_write_completed")
        if isinstance(n_written, int) and not isinstance(n_written, bool):
            result["n_written"] = n_written
        result["run_id"] = str(acq.run_id)
        if result.get("acquisition") is None:
            result["acquisition"] = known

    # -- background acquisitions ------------------------------------------------------------------

    def background(self) -> List[Acquisition]:
        return [acq for acq in self.running if acq.background]

    def poll_background(self) -> List[Acquisition]:
        """Background acquisitions whose end is known now (a short look at what the DAQ published)."""
        waiting = self.background()
        if not waiting:
            return []
        if any(acq.final is None for acq in waiting):
            # Statuses read pass through observe(), which notes the ends.
            self.ctx.feed.wait_for_status(lambda status: False, 0.02, self._background_cursor)
        return [acq for acq in waiting if acq.final is not None]

    def mark_stopped_by(self, step_index: int) -> None:
        """A stop step is about to stop the writer: acquisitions it ends were ended on purpose."""
        for acq in self.background():
            acq.stopped_by = step_index

    # -- stopping, written once ------------------------------------------------------------

    def stop(self, acq: Acquisition, reason: str, deadline: Optional[Deadline] = None) -> Dict[str, Any]:
        """Stop ``acq`` if it still runs, by ``deadline`` (default: :data:`STOP_BUDGET_S` from now)
        whatever the bound in force; the caller may shorten ``deadline`` meanwhile (a second
        stop request). Never raises.

        Any DAQ error (transport, HTTP 5xx, a garbled reply, a refusal) is tried again after
        a short pause (0.1 s doubling to 0.5 s) until the writer is seen not writing our
        ``run_id`` (READY, UNKNOWN or another acquisition) or the deadline passes: one HTTP
        500 must not leave our acquisition running. The record (one of the step's
        ``recoveries``) gives ``outcome``, ``attempts`` and, when any failed, ``errors``
        (each distinct error once, with how often it came in a row).
        """
        record: Dict[str, Any] = {"reason": reason, "action": "stop_writer", "at": time.time()}
        deadline = deadline or Deadline(STOP_BUDGET_S)
        errors: List[List[Any]] = []  # [text, times in a row]
        attempt, pause, sent = 0, _STOP_PAUSE_S, False
        try:
            with detached(deadline):
                while True:
                    attempt += 1
                    try:
                        status = self.ctx.client.get_status()
                        if acq.matches(status) and status.get("state") == WRITING:
                            sent = True
                            self.ctx.client.stop_writer()
                            record["outcome"] = f"stopped acquisition {acq.run_id}"
                            break
                        if acq.matches(status):
                            acq.last = status.get("acquisition")
                        if sent:
                            # A stop answered with an error may still have reached the writer.
                            record["outcome"] = f"stopped acquisition {acq.run_id} (the writer no longer writes it)"
                        else:
                            record["outcome"] = f"acquisition {acq.run_id} was not running"
                        break
                    except (DaqRunnerError, OSError) as exc:
                        _count_error(errors, str(exc))
                        left = deadline.remaining()
                        if left < _STOP_PAUSE_S:
                            record["outcome"] = f"could not stop acquisition {acq.run_id}, it may still be running: {exc}"
                            self.ctx.notice(record["outcome"], acq.step)
                            break
                        # Half of what is left at most: the next attempt gets time to be answered.
                        deadline.sleep(min(pause, left / 2))
                        pause = min(pause * 2, _STOP_PAUSE_MAX_S)
        except Exception as exc:  # the transport's own stop (Interrupted) or a bug: still recorded
            record["outcome"] = f"could not stop acquisition {acq.run_id}, it may still be running: {exc!r}"
        record["attempts"] = attempt
        if errors:
            record["errors"] = [text if times == 1 else f"{text} ({times} times)" for text, times in errors]
        self._ended(acq)
        return record


def _count_error(errors: List[List[Any]], text: str) -> None:
    """Note ``text``: the same error as the one before adds to its count (compact records)."""
    if errors and errors[-1][0] == text:
        errors[-1][1] += 1
    elif len(errors) < _STOP_ERRORS_KEPT:
        errors.append([text, 1])
    else:
        errors[-1] = ["... and later errors; the last: " + text, 1]
