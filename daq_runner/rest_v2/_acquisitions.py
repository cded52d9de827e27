"""rest_v2 acquisitions: started exactly once, followed to their provable end, confirmed, never orphaned.

The rules (docs/guarantees.md, what an unattended run can rely on):

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
- **Not lost unnoticed.** ``daq:config`` is read along while an acquisition is followed: a
  config the run did not store, while ours still writes, restarts the DAQ's services under it;
  the attempt fails at once with that cause and the acquisition is stopped
  (:meth:`~daq_runner.rest_v2._config.ConfigWatch.stored_during`).
- **Owned.** Every acquisition that may be running is registered in the run's
  :class:`~daq_runner.daq.Acquisitions` before its request is sent, so that whatever ends the
  run stops it (:meth:`Tracker.stop`); ``wait: false`` acquisitions are followed in the
  background and their end is recorded on their own step.
"""

from __future__ import annotations

import collections
import os
import time
from typing import Any, Deque, Dict, List, NoReturn, Optional, Protocol, Set

from .. import protocol
from .._deadline import Deadline, current, detached
from .._text import clauses, quote
from ..batch import WriteStep
from ..client import StdDaqClient
from ..daq import ALLOW_OVERWRITE, READY, UNKNOWN, WRITING, Acquisition, Progress, RunServices
from ..exceptions import DaqNeedsRestart, DaqNotConfigured, DaqRunnerError, StdDaqAdminException, StepFailed, WriteOutcomeUnknown, WriterNeedsRestart
from ..record import MISSING, StepRecord
from ..resume import acquisition_id, run_ids_of
from ._config import NO_CONFIG, ConfigWatch
from ._feed import Cursor, StatusFeed, Tap
from ._timing import RestV2Timing

__all__ = ["TrackedAcquisition", "Tracker"]

_FINAL = (protocol.AcquisitionState.FINISHED.value, protocol.AcquisitionState.FAILED.value)
_LOG_LOOKUP = 100  # logs searched for an earlier acquisition of a file the runner cannot see
_STOP_ERRORS_KEPT = 5  # distinct errors of one stop kept in its record
_STAYS = "the file stays there whatever the DAQ does"
_LOOKS = 8  # looks at the DAQ before one write: each that finds something to do acts on it first


class _NotReady(Exception):
    """A write sent because the status stream said READY was refused, and the writer is not READY."""


class _RestartHit(Exception):
    """A write was answered "Cannot reach WRITING" by services restarting after a deployment,
    and provably did not start: the writer was reset; start it again once they are back."""


class TrackedAcquisition(Acquisition):
    """One acquisition this runner asked a rest_v2 DAQ for, followed until it provably ended."""

    def __init__(self, step: WriteStep, run_id: int, before: Set[int]) -> None:
        super().__init__(step)
        self.requested_run_id = run_id
        self.run_id = run_id  # what the DAQ calls it (a driver may replace ours)
        self.before = before  # run_ids of acquisitions that existed before our request: never ours
        self.cursor: Optional[Cursor] = None
        self.log_cursor: Optional[Tap] = None  # the log stream, read along while following
        self.acknowledged_at: Optional[float] = None
        self.seen = False  # ours read in order (stream or live REST)
        self.last: Optional[dict] = None  # our acquisition as last seen
        self.final: Optional[dict] = None  # our acquisition once provably ended
        self.adopted_notice: Optional[str] = None
        self.config_id: Optional[str] = None  # the config it started with

    @property
    def acquisition_id(self) -> str:
        return str(self.run_id)

    @property
    def end_known(self) -> bool:
        return self.final is not None

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


class _Writer(Protocol):
    """What the tracker uses of the rest_v2 DAQ it belongs to (:class:`~daq_runner.rest_v2.RestV2Daq`)."""

    client: StdDaqClient
    feed: StatusFeed
    config: ConfigWatch
    run: RunServices
    run_or_none: Optional[RunServices]
    timing: RestV2Timing

    def reset_writer(self, step: Any, record: Optional[StepRecord], reason: str) -> None: ...

    def ready_status(self, step: Any, record: StepRecord, purpose: Optional[str] = "the write") -> dict: ...


class Tracker:
    """The rest_v2 side of one run's acquisitions: start, follow, confirm, stop.

    Which acquisitions may run, and which belongs to which step, is the run's
    (:class:`~daq_runner.daq.Acquisitions`, ``daq.run.acquisitions``); this tracker keeps what
    rest_v2 needs on top: the run_ids given per step, the files asked for, where the status
    stream was read, which acquisitions were seen to end.
    """

    def __init__(self, daq: _Writer) -> None:
        self.daq = daq
        self.timing = daq.timing
        self.files: Dict[str, int] = {}  # real path of every file this run asked for -> its step
        self._starts: Dict[int, int] = {}  # acquisitions started per step, for acquisition_id
        self._background_cursor: Optional[Cursor] = None
        self._seen_end: Deque[int] = collections.deque(maxlen=8)  # run_ids of acquisitions seen to end

    @property
    def run(self) -> RunServices:
        return self.daq.run

    # -- observing ---------------------------------------------------------------------------

    def observe(self, status: dict) -> None:
        """Every status the feed reads: notes the end of acquisitions followed in the background."""
        run = self.daq.run_or_none
        if run is None:
            return
        for acq in run.acquisitions.running:
            if isinstance(acq, TrackedAcquisition) and acq.background and acq.matches(status):
                acq.seen = True
                acq.last = status.get("acquisition")
                if (acq.last or {}).get("state") in _FINAL:
                    acq.final = acq.last

    def _note_adoption(self, acq: TrackedAcquisition) -> None:
        if acq.adopted_notice:
            self.run.notice(acq.adopted_notice, acq.step)
            acq.adopted_notice = None

    # -- starting, exactly once ----------------------------------------------------------------

    def check_overwrite(self, step: WriteStep, record: StepRecord) -> None:
        """Refuse to write over an existing file unless allowed; never write through a symlink.

        Allowed without ``overwrite``: the file this step's own failed attempt left, and, when
        resuming, the file this step left in the run being resumed (see :meth:`_left_by_resumed`).
        Anything else that exists is refused.
        """
        run = self.run
        path = step.output_file
        if os.path.islink(path):
            raise StepFailed(f"{path} is a symbolic link: the DAQ would write through it; nothing was sent", final=_STAYS)
        real = os.path.realpath(path)
        other = self.files.get(real)
        if other is not None and other != step.index:
            # The batch names it differently (a symlinked folder), but it is the same file.
            raise StepFailed(f"{path} is the file step {other} of this run wrote ({real}); nothing was sent", final=_STAYS)
        logs: Optional[List[dict]] = None
        local = os.path.isdir(os.path.dirname(path))
        if local:
            if os.path.isdir(path):
                # Not a file to overwrite: the writer cannot create its file there, whatever overwrite says.
                raise StepFailed(
                    f"{path} is a folder: the DAQ's writer cannot create its file there; nothing was sent",
                    final="the folder stays there whatever the DAQ does",
                )
            exists = os.path.lexists(path)
            where = "it exists"
        else:
            # The DAQ writes on another machine: its own log knows the files it wrote.
            logs = self._logs_of(path)
            exists = bool(logs)
            where = "the DAQ's log shows an earlier acquisition of it"
        if not exists:
            return
        earlier = run.acquisitions.of_step(step.index)
        retry = earlier is not None and earlier.step.output_file == path
        if logs is None and (retry or run.resumed is not None):
            logs = self._logs_of(path)  # one look at the DAQ's log serves both proofs
        if retry and self._left_by_earlier_attempt(step, logs or []):
            # This step's own earlier attempt left it (a failed or incomplete acquisition).
            run.notice(f"replacing {path}, left by the failed attempt of this step (acquisition {earlier.acquisition_id})", step)
            return
        if run.resumed is not None and self._left_by_resumed(step, logs or [], local):
            run.notice(f"replacing {path}, left by this step in the run being resumed", step)
            return
        if not (step.overwrite or run.overwrite):
            raise StepFailed(
                f"{path}: {where} and the DAQ's writer would overwrite it; {ALLOW_OVERWRITE}; nothing was sent",
                final=_STAYS,
            )
        record.overwrote = True
        run.notice(f"overwriting {path} ({where}; overwrite allowed)", step)

    def _logs_of(self, path: str) -> List[dict]:
        """The DAQ's log records of acquisitions of ``path`` among the last ones, newest first."""
        return [r for r in self.daq.client.get_logs(_LOG_LOOKUP) if (r.get("info") or {}).get("output_file") == path]

    def _left_by_earlier_attempt(self, step: WriteStep, logs: List[dict]) -> bool:
        """Whether nobody wrote the file of ``step`` since its failed attempt: the DAQ's
        newest logged acquisition of it (``logs``, newest first), if any, is one of this
        step's own (a FAILED one is not logged; anyone else's finished one is, e.g. a
        std_cli write between attempts)."""
        if not logs:
            return True
        mine = set(run_ids_of(self.run.invocation, step.index, self._starts.get(step.index, 0)))
        return (logs[0].get("info") or {}).get("run_id") in mine

    def _left_by_resumed(self, step: WriteStep, logs: List[dict], local: bool) -> bool:
        """Whether the file of ``step`` is provably the one this step left in the run resumed."""
        resumed = self.run.resumed
        assert resumed is not None
        logged = [(record.get("info") or {}).get("run_id") for record in logs]
        return resumed.left_the_file(step.index, step.retries, step.output_file, logged, local)

    def start(self, step: WriteStep, record: StepRecord) -> TrackedAcquisition:
        """Start the acquisition of ``step`` once; raises :class:`StepFailed` when it provably did not start.

        First the configuration is proven (:meth:`ConfigWatch.prove`: the run's, its restart
        over). The writer must be READY. When the status stream's newest entry says so, the
        write is sent at once (one Redis round trip instead of a status request): the DAQ's
        reply confirms it, and a refusal while the writer is in fact busy or UNKNOWN (the entry
        was a stale copy, or someone else's write came first) proves that nothing started, so
        the runner then waits for READY (resetting an UNKNOWN writer) and sends it again, as
        when it had asked first. Otherwise (no Redis, a busy or UNKNOWN writer) it asks over
        REST and waits before sending. Whatever was done on the way (a config applied again, a
        writer reset, a restart waited for) is followed by another look before sending.
        """
        feed, config = self.daq.feed, self.daq.config
        for _ in range(_LOOKS):
            marks = feed.mark_write()
            if config.prove(step, record):
                continue
            newest = marks[2]
            if self._says_ready(newest):
                earlier = self.run.acquisitions.of_step(step.index)
                try:
                    return self._start(step, record, newest, marks)
                except _NotReady:
                    # Not started; as if it had never been tried.
                    self.run.acquisitions.restore(step.index, earlier)
                except _RestartHit:
                    continue
            before = self.daq.ready_status(step, record, "the write")
            if config.due:
                continue  # the writer was reset: the configuration is proven again first
            try:
                return self._start(step, record, before, None)
            except _RestartHit:
                continue
        raise StepFailed(f"the DAQ kept changing under the write (configuration, writer resets) for {_LOOKS} looks; it was not started")

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

    def _start(self, step: WriteStep, record: StepRecord, before: dict, marks: Optional[tuple]) -> TrackedAcquisition:
        run, daq = self.run, self.daq
        self.check_overwrite(step, record)
        previous = protocol.acquisition_run_id(before)
        self._starts[step.index] = self._starts.get(step.index, 0) + 1
        run_id = acquisition_id(run.invocation, step.index, self._starts[step.index])
        acq = TrackedAcquisition(step, run_id, {previous} if previous is not None else set())
        acq.record = record
        self.files[os.path.realpath(step.output_file)] = step.index
        request = {"output_file": step.output_file, "n_images": step.n_images, "run_id": acq.run_id}
        record.acquisition_id, record.acquisition, record.daq_log, record.daq_log_reason = str(acq.run_id), None, None, None
        record.config_id = acq.config_id = daq.config.known  # proven just before (ConfigWatch.prove): what it runs with
        for send in (1, 2):
            # Cursors from before the request: no status of our acquisition can be missed.
            acq.cursor, acq.log_cursor, _ = marks if send == 1 and marks is not None else daq.feed.mark_write()
            run.guard()
            run.acquisitions.started(acq)  # from here on it may run: whatever ends the run stops it
            sent = time.monotonic()
            try:
                reply = daq.client.start_writer_async(request)
            except WriterNeedsRestart as exc:
                self._ended(acq)
                restart = daq.config.restart_hit()
                if restart is None:
                    daq.reset_writer(step, record, f"the DAQ could not start the write: {exc}")
                    raise StepFailed(f"the DAQ refused the write: {exc} (the writer was reset)") from None
                daq.reset_writer(step, record, f"the DAQ answered the write {exc} {restart}; started again once they are back")
                if not self._showed(acq):
                    raise _RestartHit() from None
                raise StepFailed(f"the DAQ refused the write: {exc}, but acquisition {acq.run_id} showed; not started again") from None
            except StdDaqAdminException as exc:
                self._ended(acq)
                if protocol.MESSAGE_NO_CONFIG_TO_READ in str(exc) and daq.client.get_config() is None:
                    raise DaqNotConfigured(NO_CONFIG.format(message=protocol.MESSAGE_NO_CONFIG) + f"; the DAQ refused the write: {exc}") from None
                if marks is not None and send == 1 and daq.feed.status().get("state") != READY:
                    # Sent on the stream's word and refused: the writer is busy or UNKNOWN.
                    raise _NotReady() from None
                final = protocol.final_refusal(str(exc))
                if final is not None:
                    raise StepFailed(f"the DAQ refused: {exc}", final=final) from None
                raise
            except WriteOutcomeUnknown as exc:
                # A request still on its way may arrive as late again as it has been out.
                grace = max(self.timing.lost_reply_grace_s, time.monotonic() - sent)
                if self._look_for(acq, exc, grace):
                    break
                if current().expired:
                    # Out of time before the DAQ could show it: not provably unstarted, so not
                    # sent again; the run's cleanup stops it if it did start.
                    raise StepFailed(f"timed out while the outcome of the write was unknown ({exc}); acquisition {acq.run_id} may have started") from None
                if send == 2:
                    raise StepFailed(f"write request lost twice ({exc}); acquisition {acq.run_id} did not start") from None
                run.notice(f"acquisition {acq.run_id} did not start within {grace:.0f} s; sending the request once more", step)
                continue
            acq.acknowledged_at = time.monotonic()
            if acq.matches(reply):
                acq.last = reply.get("acquisition")
            break
        self._note_adoption(acq)
        record.acquisition_id = str(acq.run_id)
        if acq.background and self._background_cursor is None and acq.cursor is not None:
            # Followed from before its request: its end cannot slip past the background look.
            self._background_cursor = Cursor(acq.cursor.stream, acq.cursor.id)
        return acq

    def _showed(self, acq: TrackedAcquisition) -> bool:
        """Whether ``acq`` showed anywhere since its request (statuses read in order, the live
        status, the DAQ's log): a start that was refused and never showed provably did not start."""
        cursor = Cursor(acq.cursor.stream, acq.cursor.id) if acq.cursor else None
        if self.daq.feed.wait_for_status(acq.matches, 0.05, cursor) is not None:
            return True
        logged, _ = self.daq.feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, 0.05)
        return logged is not None

    def _look_for(self, acq: TrackedAcquisition, exc: Exception, grace: float) -> bool:
        """After a lost reply: did our acquisition start within ``grace`` s? Statuses in order, then the log."""
        feed = self.daq.feed
        self.run.notice(f"write request reply lost ({exc}); looking for acquisition {acq.run_id} before deciding", acq.step)
        cursor = Cursor(acq.cursor.stream, acq.cursor.id) if acq.cursor else None
        found = feed.wait_for_status(acq.matches, grace, cursor)
        if found is None:
            logged, _ = feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, self.timing.log_look_s)
            if logged is None:
                return False
            acq.final = logged
        else:
            acq.last = found.get("acquisition")
        acq.acknowledged_at = time.monotonic()
        self.run.notice(f"acquisition {acq.run_id} did start", acq.step)
        return True

    # -- following ---------------------------------------------------------------------------

    def _ended(self, acq: TrackedAcquisition) -> None:
        if acq.final is not None and acq.run_id not in self._seen_end:
            self._seen_end.append(acq.run_id)  # provably over: later WRITING copies of it are stale
        self.run.acquisitions.ended(acq)

    def follow(self, acq: TrackedAcquisition, record: StepRecord, progress: Optional[Progress] = None) -> None:
        """Wait until ``acq`` provably ended; then judge it (raises :class:`StepFailed`)."""
        daq, feed = self.daq, self.daq.feed
        step = acq.step

        def on_status(status: dict) -> None:
            if progress is not None and acq.matches(status):
                state = status.get("acquisition") or {}
                n_written = (state.get("stats") or {}).get("n_write_completed")
                progress(n_written if isinstance(n_written, int) else 0, state.get("state"))

        def suggests_end(status: dict) -> bool:
            if status.get("state") == UNKNOWN:
                return True  # a writer restart: whatever the acquisition says, it is lost
            if acq.matches(status):
                acq.seen = True
                acq.last = status.get("acquisition")
                return (acq.last or {}).get("state") in _FINAL
            if status.get("state") == READY:
                grace_over = acq.acknowledged_at is not None and time.monotonic() - acq.acknowledged_at > self.timing.ack_grace_s
                return acq.seen or grace_over
            return status.get("state") == WRITING and acq.seen  # another acquisition after ours

        def stale(status: dict) -> bool:
            # The second copy of a status of an acquisition this run saw end, landing after
            # ours started (a real DAQ stores each status twice, a few ms apart): it says
            # nothing about ours. Without this, its READY would be confirmed over REST.
            return status.get("state") != UNKNOWN and protocol.acquisition_run_id(status) in self._seen_end

        configs = daq.config.tap(acq.config_id)  # a config stored meanwhile restarts the services under it
        while acq.final is None:
            status = feed.wait_for_status(suggests_end, since=acq.cursor, on_status=on_status, tap=acq.log_cursor, stale=stale, configs=configs)
            live: Optional[dict] = None
            if status is None and configs.entries:
                lost = daq.config.stored_during(configs, acq.config_id)
                if lost is None:
                    continue  # this run's own (never stored under its writes)
                live = feed.status()
                if acq.matches(live) and live.get("state") == WRITING:
                    self._lost_to_config(acq, record, lost)
                # Not ours writing: ours ended, or the DAQ itself restarted (a REST server deploys
                # its config file as it starts): the status tells, as below.
            elif status is None:
                # The images written are the record's (n_written, counted once the acquisition is
                # stopped): a count taken here would differ from it by what came after.
                raise StepFailed(f"timed out after {step.timeout:g} s before its {step.n_images} images were written")
            elif acq.is_final(status):
                acq.final = status.get("acquisition")
                if status.get("state") == READY and acq.cursor is not None and acq.log_cursor is not None:
                    # Read from the stream just now: a following write can start from here.
                    feed.continue_from(acq.cursor, acq.log_cursor, status)
                if status.get("state") == UNKNOWN:
                    # Ended by a writer restart: reset the writer now, the acquisition is lost.
                    self._ended(acq)
                    record.acquisition = acq.final
                    daq.reset_writer(step, record, "writer UNKNOWN during the acquisition")
                    raise StepFailed(
                        "the writer went UNKNOWN during the acquisition; it was lost (writer reset to READY): "
                        f"{quote(acq.final.get('message'))}"
                    )
                break
            # Believe the end only when the DAQ confirms it now.
            if live is None:
                live = feed.status()
            if live.get("state") == UNKNOWN:
                self._ended(acq)
                record.acquisition = live.get("acquisition") if acq.matches(live) else acq.last
                daq.reset_writer(step, record, "writer UNKNOWN during the acquisition")
                raise StepFailed("the writer went UNKNOWN during the acquisition; it was lost (writer reset to READY)")
            if acq.matches(live):
                acq.seen = True
                acq.last = live.get("acquisition")
                if acq.is_final(live):
                    acq.final = acq.last
                continue  # a stale copy in the stream
            logged, _ = feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, self.timing.log_look_s)
            if logged is not None:
                acq.final = logged
                break
            grace_over = acq.acknowledged_at is not None and time.monotonic() - acq.acknowledged_at > self.timing.ack_grace_s
            if acq.seen or grace_over or live.get("state") == WRITING:
                self._ended(acq)
                record.acquisition = acq.last
                raise StepFailed(
                    f"acquisition {acq.run_id} vanished: the writer is {quote(live.get('state'))} with no record of it "
                    "(was the DAQ restarted?)"
                )
        self._ended(acq)
        self._note_adoption(acq)
        self.judge(acq, record)

    def _lost_to_config(self, acq: TrackedAcquisition, record: StepRecord, lost: str) -> NoReturn:
        """``acq`` still runs, but a config stored meanwhile restarts the services under it
        (``lost`` says which): stop it now and fail the attempt with that cause (raises).

        Stopped now, usually before the restart reaches it, its file keeps what was written and
        the writer driver is not wedged. A driver wedged already stops the run
        (:class:`DaqNeedsRestart` from the writer reset: only a restart of the REST server helps).
        """
        self._ended(acq)
        try:
            self.daq.reset_writer(acq.step, record, lost)
        except DaqNeedsRestart:
            raise
        except StepFailed as exc:
            raise StepFailed(clauses(lost, str(exc))) from None
        self.record_end(acq, record, self.timing.log_wait_s)  # logged "Interrupted." with its count
        raise StepFailed(lost)

    def judge(self, acq: TrackedAcquisition, record: StepRecord) -> None:
        """Pass only a FINISHED acquisition with every image written and (if required) logged."""
        step, final = acq.step, acq.final or {}
        record.acquisition_id, record.acquisition, record.n_written = str(acq.run_id), final, acq.n_written
        message = quote(final.get("message"))  # the DAQ's text: one clean line
        if final.get("state") == protocol.AcquisitionState.FAILED.value:
            raise StepFailed(f"acquisition FAILED: {message}")
        if acq.n_written != step.n_images:
            if acq.stopped_by is not None and final.get("state") == protocol.AcquisitionState.FINISHED.value:
                record.stopped_by_step = acq.stopped_by
            else:
                raise StepFailed(f"acquisition ended '{message}' before its {step.n_images} images were written")
        logged, source = self.daq.feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, self.timing.log_wait_s)
        record.daq_log = logged
        record.daq_log_source = source if logged is not None else None
        record.daq_log_reason = None if logged is not None else source
        if logged is None and self.run.require_log:
            raise StepFailed(
                f"acquisition FINISHED but the DAQ did not log it: {source} (a rest_v2 server whose Redis failed as an "
                "acquisition ended logs nothing more until its REST server restarts; --no-require-log goes without its record)"
            )

    # -- what an acquisition that did not pass left ----------------------------------------------

    def record_end(self, acq: TrackedAcquisition, record: StepRecord, log_wait: float = 0.0) -> None:
        """Put into ``record`` (its step's) what ``acq`` left: an acquisition that ended early
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
        logged = None
        try:
            with detached(Deadline(max(log_wait, 0.0) + 1.0)):
                if log_wait > 0:
                    logged, source = self.daq.feed.find_log(lambda r: acq.is_ours(r), acq.log_cursor, log_wait)
                    if logged is not None and record.daq_log is None:
                        record.daq_log, record.daq_log_source, record.daq_log_reason = logged, source, None
                if logged is None and acq.final is None:
                    live = self.daq.client.get_status()
                    if acq.matches(live):
                        acq.last = live.get("acquisition")
        except Exception:  # a DAQ gone, Interrupted, a bug: what was seen before stays the answer
            pass
        known = logged if logged is not None else (acq.final or acq.last)
        if not isinstance(known, dict):
            return
        stats = known.get("stats") or {}
        n_written = stats.get("n_write_completed")
        if isinstance(n_written, int) and not isinstance(n_written, bool):
            record.n_written = n_written
        record.acquisition_id = str(acq.run_id)
        if record.acquisition is None or record.acquisition is MISSING:
            record.acquisition = known

    # -- background acquisitions ------------------------------------------------------------------

    def poll_background(self) -> List[TrackedAcquisition]:
        """Background acquisitions whose end is known now (a short look at what the DAQ published)."""
        waiting = [acq for acq in self.run.acquisitions.background() if isinstance(acq, TrackedAcquisition)]
        if not waiting:
            return []
        if any(acq.final is None for acq in waiting):
            # Statuses read pass through observe(), which notes the ends.
            self.daq.feed.wait_for_status(lambda status: False, self.timing.background_look_s, self._background_cursor)
        return [acq for acq in waiting if acq.final is not None]

    # -- stopping, written once ------------------------------------------------------------

    def stop(self, acq: TrackedAcquisition, reason: str, deadline: Optional[Deadline] = None) -> Dict[str, Any]:
        """Stop ``acq`` if it still runs, by ``deadline`` (default: ``timing.stop_budget_s`` from now)
        whatever the bound in force; the caller may shorten ``deadline`` meanwhile (a second
        stop request). Never raises.

        Any DAQ error (transport, HTTP 5xx, a garbled reply, a refusal) is tried again after
        a short pause (``timing.stop_pause_s``, 0.1 s, doubling to ``stop_pause_max_s``, 0.5 s)
        until the writer is seen not writing our
        ``run_id`` (READY, UNKNOWN or another acquisition) or the deadline passes: one HTTP
        500 must not leave our acquisition running. The record (one of the step's
        ``recoveries``) gives ``outcome``, ``attempts`` and, when any failed, ``errors``
        (each distinct error once, with how often it came in a row).
        """
        client = self.daq.client
        entry: Dict[str, Any] = {"reason": reason, "action": "stop_writer", "at": time.time()}
        timing = self.timing
        deadline = deadline or Deadline(timing.stop_budget_s)
        errors: List[List[Any]] = []  # [text, times in a row]
        attempt, pause, sent = 0, timing.stop_pause_s, False
        try:
            with detached(deadline):
                while True:
                    attempt += 1
                    try:
                        status = client.get_status()
                        if acq.matches(status) and status.get("state") == WRITING:
                            sent = True
                            client.stop_writer()
                            entry["outcome"] = f"stopped acquisition {acq.run_id}"
                            break
                        if acq.matches(status):
                            acq.last = status.get("acquisition")
                        if sent:
                            # A stop answered with an error may still have reached the writer.
                            entry["outcome"] = f"stopped acquisition {acq.run_id} (the writer no longer writes it)"
                        else:
                            entry["outcome"] = f"acquisition {acq.run_id} was not running"
                        break
                    except (DaqRunnerError, OSError) as exc:
                        _count_error(errors, str(exc))
                        left = deadline.remaining()
                        if left < timing.stop_pause_s:
                            entry["outcome"] = f"could not stop acquisition {acq.run_id}, it may still be running: {exc}"
                            self.run.notice(entry["outcome"], acq.step)
                            break
                        # Half of what is left at most: the next attempt gets time to be answered.
                        deadline.sleep(min(pause, left / 2))
                        pause = min(pause * 2, timing.stop_pause_max_s)
        except Exception as exc:  # the transport's own stop (Interrupted) or a bug: still recorded
            entry["outcome"] = f"could not stop acquisition {acq.run_id}, it may still be running: {exc!r}"
        entry["attempts"] = attempt
        if errors:
            entry["errors"] = [text if times == 1 else f"{text} ({times} times)" for text, times in errors]
        self._ended(acq)
        return entry


def _count_error(errors: List[List[Any]], text: str) -> None:
    """Note ``text``: the same error as the one before adds to its count (compact records)."""
    if errors and errors[-1][0] == text:
        errors[-1][1] += 1
    elif len(errors) < _STOP_ERRORS_KEPT:
        errors.append([text, 1])
    else:
        errors[-1] = ["... and later errors; the last: " + text, 1]
