"""The Runner: the only code with side effects on the DAQ.

A :class:`Runner` holds configuration: which DAQ (through the DAQ seam, :class:`~daq_runner.daq.Daq`),
who listens (consumers), the lock, the retry and outage policy. Every :meth:`Runner.run` starts
from fresh state, a :class:`RunState` made for that run alone: it takes the DAQ's runner lock,
lets the DAQ prepare (a fresh rest_v2 writer is reset), runs the steps in order (each through
the handler of its kind, :mod:`daq_runner._handlers`) with retries and ``on_error``, and tells
consumers what happens through :class:`~daq_runner.events.Event` objects; each step's
:class:`~daq_runner.record.StepRecord` is built once and carried by its ``step_finished`` event.
It knows nothing about progress bars, log formats or report files.

Whatever ends a run (the last step, ``on_error: abort``, a signal, a lost lock, a DAQ gone, an
exception in a consumer, a bug), the run ends the same way, written once in
:meth:`RunState._finish`: every acquisition it started that may still run is stopped (or, at a
normal end, waited for), every step gets exactly one record (the current one failed or
interrupted, the rest skipped, so the summary adds up), the lock is released and
``run_finished`` is emitted.
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
import threading
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from . import events, protocol
from ._deadline import Deadline, Interrupted, bounded
from ._handlers import HANDLERS
from ._redis import connect
from ._text import redact_url, scrub
from ._version import __version__
from .batch import Batch, ConfigStep, Step, WriteStep
from .client import StdDaqClient
from .daq import Acquisition, Acquisitions, Daq, RunServices
from .exceptions import (
    DaqHTTPError,
    DaqNeedsRestart,
    DaqProtocolError,
    DaqRunnerError,
    DaqTransportError,
    DeadlineExceeded,
    LockError,
    OutcomeUnknown,
    StdDaqAdminException,
    StepFailed,
)
from .lock import LOCK_TTL_S, REDIS_BUDGET_S, DaqLock, LockFactory, RunnerLock
from .record import StepRecord, StepStatus
from .report import ReportRecorder, RunReport
from .rest_v2 import STOP_BUDGET_S, RestV2Daq
from .resume import ResumedRun, plan_fingerprint

__all__ = ["Runner", "RunState", "StepFailed"]

_PRE_RUN_BUDGET_S = 30.0
_END_LOG_WAIT_S = 1.5  # for the log record of an acquisition stopped because its step did not pass

PASSED, FAILED, SKIPPED, INTERRUPTED = StepStatus.PASSED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.INTERRUPTED


class Runner:
    """Runs batches against one DAQ, one at a time; each :meth:`run` starts afresh.

    Args:
        url: base URL of the DAQ's REST API (rest_v2; ignored when ``daq`` is given).
        redis_url: the DAQ's Redis (``None``: REST polling only, no lock).
        consumers: callables receiving every :class:`~daq_runner.events.Event` of every run.
        daq: the DAQ, behind the seam (default: a :class:`~daq_runner.rest_v2.RestV2Daq` for
            ``url`` and ``redis_url``, with ``client``, ``streams``, ``poll_interval`` and
            ``outage_s``).
        client: a ready :class:`StdDaqClient` (default: one for ``url`` that rides out
            REST outages of up to ``outage_s`` seconds).
        streams: Redis stream names of the DAQ.
        poll_interval: REST polling period when Redis is not available, in seconds.
        retry_delay: pause between attempts of a failed step, in seconds.
        outage_s: how long every request rides out an unreachable DAQ (connection refused,
            timeouts, HTTP 502/503/504). Beyond it the DAQ counts as gone: the step fails and
            the rest of the run is skipped, whatever their ``on_error``.
        require_log: a write passes only when the DAQ's own log records it.
        lock: ``True``: take the DAQ's runner lock (see :class:`~daq_runner.lock.DaqLock`) in
            the Redis at ``lock_url``; ``False`` (or no Redis): run without one, and say so in a
            notice; or a :data:`~daq_runner.lock.LockFactory` for a lock store of your own.
        lock_url: the Redis of the lock (default: ``redis_url``).
        lock_wait: seconds to wait for a lock held by another runner.
        lock_ttl: expiry of the lock in seconds (renewed every third of it): how long a
            crashed runner can block the DAQ.
        overwrite: let writes replace existing files (as ``overwrite: true`` on every step).
        resumed: the default of :meth:`run`'s ``resumed``.
        context: what the caller knows about the runs, for the report: ``command`` (list of
            str), ``url_source``, ``redis_source``.
        keep_steps: the returned report keeps every step record (``False``: only the failed
            ones, for very long runs).

    Example::

        report = Runner(url="http://127.0.0.1:5000").run(load_batch("scan.yaml"))
        assert report.status == "passed"
    """

    def __init__(
        self,
        url: str = protocol.DEFAULT_URL,
        redis_url: Optional[str] = None,
        consumers: Iterable[events.Consumer] = (),
        *,
        daq: Optional[Daq] = None,
        client: Optional[StdDaqClient] = None,
        streams: protocol.StreamNames = protocol.StreamNames(),
        poll_interval: float = 0.05,
        retry_delay: float = 1.0,
        outage_s: float = protocol.DEFAULT_OUTAGE_S,
        require_log: bool = True,
        lock: Union[bool, LockFactory] = True,
        lock_url: Optional[str] = None,
        lock_wait: float = 0.0,
        lock_ttl: float = LOCK_TTL_S,
        overwrite: bool = False,
        resumed: Optional[ResumedRun] = None,
        context: Optional[Dict[str, Any]] = None,
        keep_steps: bool = True,
    ) -> None:
        self.daq: Daq = daq or RestV2Daq(url, redis_url, client=client, streams=streams, poll_interval=poll_interval, outage_s=outage_s)
        self.consumers: List[events.Consumer] = list(consumers)
        self.retry_delay = retry_delay
        self.require_log = require_log
        self.use_lock = lock
        self.lock_url = lock_url if lock_url is not None else redis_url
        self.lock_wait = lock_wait
        self.lock_ttl = lock_ttl
        self.overwrite = overwrite
        self.resumed = resumed
        self.context = dict(context or {})
        self.keep_steps = keep_steps
        self._guard = threading.Lock()
        self._active: Optional[RunState] = None
        self._last: Optional[RunState] = None
        # Requests made while no run was under way: for the next run, not lost (a signal that
        # arrives as a run begins), and never carried past it.
        self._pending_stop: Optional[str] = None
        self._pending_hurry: Optional[float] = None

    def subscribe(self, consumer: events.Consumer) -> None:
        """Add a consumer of the events of every run from now on."""
        self.consumers.append(consumer)

    # -- control -----------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the run under way to stop: the current step is interrupted and its acquisition stopped.

        Safe to call from a signal handler or another thread; a request in flight ends within
        a fraction of a second. Made while no run is under way, it stops the next run before
        its first step (and no later one).
        """
        with self._guard:
            run = self._active
            if run is None:
                self._pending_stop = self._pending_stop or reason
                return
        run.request_stop(reason)

    def hurry(self, seconds: float = 1.0) -> None:
        """A second stop request: cut the cleanup under way to ``seconds`` (one short stop)."""
        with self._guard:
            run = self._active
            if run is None:
                self._pending_stop = self._pending_stop or "stop requested"
                self._pending_hurry = min(self._pending_hurry or seconds, seconds)
                return
        run.hurry(seconds)

    # -- what the last run was ---------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The id of the run under way, or of the last one ("" before the first)."""
        run = self._active or self._last
        return run.run_id if run is not None else ""

    @property
    def lock_lost(self) -> Optional[str]:
        """Why the run under way (or the last one) lost its lock, or ``None``."""
        run = self._active or self._last
        return run.lock_lost if run is not None else None

    # -- the run ------------------------------------------------------------------------

    def run(
        self,
        batch: Batch,
        previous: Optional[Dict[str, List[dict]]] = None,
        *,
        resumed: Optional[ResumedRun] = None,
    ) -> RunReport:
        """Run ``batch`` and return its :class:`RunReport`.

        Args:
            previous: records of steps that passed in an earlier run (``--resume``), keyed by
                step identity (:attr:`Step.identity`); each list is used in order. Those steps
                are not run again; the configuration their config steps established is applied
                again before the first step that runs.
            resumed: what the earlier run's report says (:class:`~daq_runner.resume.ResumedRun`):
                a step that runs again may replace the file it left then, when nobody provably
                wrote it since (default: the Runner's ``resumed``).

        Raises:
            LockError: the lock was held by another runner or could not be taken (the report
                is complete all the same; ``daq-run`` exits 4).
            RuntimeError: a run is under way on this Runner already.
        """
        with self._guard:
            if self._active is not None:
                raise RuntimeError("this Runner is running a batch already; use one Runner per concurrent run")
            run = RunState(self, batch, previous, resumed if resumed is not None else self.resumed)
            pending, self._pending_stop = self._pending_stop, None
            hurry, self._pending_hurry = self._pending_hurry, None
            self._active = run
        if pending is not None:
            run.request_stop(pending)
        if hurry is not None:
            run.hurry(hurry)
        try:
            return run.execute()
        finally:
            with self._guard:
                self._active, self._last = None, run


def _started_data(step: Step, attempt: int) -> Dict[str, Any]:
    data: Dict[str, Any] = {"attempt": attempt, "kind": step.kind, "timeout": step.timeout}
    if isinstance(step, WriteStep):
        data.update(output_file=step.output_file, n_images=step.n_images)
    return data


class RunState(RunServices):
    """Everything of one run, made fresh by :meth:`Runner.run` and dropped when it ends.

    The step handlers and the DAQ seam see the run through it (:class:`~daq_runner.daq.RunServices`):
    its events, its lock, its acquisitions, the configuration its config steps established.

    Attributes:
        batch, run_id (``{run}``, the report's id), invocation (this invocation's random id).
        daq: the DAQ; lock: the runner lock, ``None`` when none is held.
        step: the step under way (``None`` between steps).
        stop_reason, daq_lost, halted, lock_lost: why the run ends early, if it does.
    """

    def __init__(self, runner: Runner, batch: Batch, previous: Optional[Dict[str, List[dict]]], resumed: Optional[ResumedRun]) -> None:
        self.batch = batch
        self.daq = runner.daq
        self.retry_delay = runner.retry_delay
        self.keep_steps = runner.keep_steps
        self.use_lock, self.lock_url, self.lock_wait, self.lock_ttl = runner.use_lock, runner.lock_url, runner.lock_wait, runner.lock_ttl
        self.context = runner.context
        self.consumers: List[events.Consumer] = list(runner.consumers)
        # RunServices
        self.invocation = uuid.uuid4().hex  # new for every invocation, a resumed one too (run_ids derive from it)
        self.overwrite = runner.overwrite
        self.require_log = runner.require_log
        self.resumed = resumed
        self.established: Dict[str, Any] = {}
        self.acquisitions = Acquisitions()
        self.stop_event = threading.Event()
        self.pre_run = []
        # the run
        self.run_id = batch.run or uuid.uuid4().hex[:12]
        # Records of the steps kept from the run resumed, used up in order as they are reported.
        self.kept: Dict[str, List[StepRecord]] = {k: [StepRecord.from_json(r) for r in v] for k, v in (previous or {}).items()}
        # Credentials in a URL given as a variable (--var note=http://user:pw@host) are as secret
        # as the DAQ's own.
        self.secrets = tuple(sorted(set(self.daq.secrets()) | set(batch.secrets), key=len, reverse=True))
        self.step: Optional[Step] = None
        self.stop_reason: Optional[str] = None
        self.daq_lost: Optional[str] = None  # why the DAQ is considered gone for this run
        self.halted: Optional[str] = None  # why the DAQ cannot go on until someone restarts it
        self.lock_lost: Optional[str] = None
        self.lock: Optional[RunnerLock] = None
        self.plan = _Progress(batch.steps)
        self._cleanup: Optional[Deadline] = None
        self._hurry_s: Optional[float] = None  # a second stop request: every cleanup gets this long

    # -- RunServices -------------------------------------------------------------------

    def emit(self, kind: str, step: Optional[Step] = None, /, **data: Any) -> None:
        name = step.name if step else None
        if self.secrets:
            data = scrub(data, self.secrets)
            name = scrub(name, self.secrets)
        event = events.Event(kind, self.run_id, step.index if step else None, name, data)
        for consumer in self.consumers:
            consumer(event)

    def emit_record(self, step: Step, record: StepRecord) -> None:
        """The step's ``step_finished``: its record, built once, credentials of variables masked.

        The run's status follows its records: the first that did not pass (a background
        write recorded long after it started too) is the run's reason for failing.
        """
        if record.status.is_problem and self.plan.first_failure is None:
            self.plan.first_failure = record.problem or f"step {step.index} {record.status}"
        shown = record.scrubbed(self.secrets)
        name = scrub(step.name, self.secrets) if self.secrets else step.name
        event = events.Event(events.STEP_FINISHED, self.run_id, step.index, name, shown.to_json(), record=shown)
        for consumer in self.consumers:
            consumer(event)

    def notice(self, message: str, step: Optional[Step] = None) -> None:
        self.emit(events.NOTICE, step or self.step, message=message)

    def guard(self) -> None:
        if self.lock is not None:
            self.lock.assert_held()

    # -- control ------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        self.stop_reason = self.stop_reason or reason
        self.stop_event.set()

    def hurry(self, seconds: float = 1.0) -> None:
        self.request_stop("stop requested")
        self._hurry_s = min(self._hurry_s or seconds, seconds)  # for cleanups still to come
        cleanup = self._cleanup
        if cleanup is not None:
            cleanup.at = min(cleanup.at, time.monotonic() + seconds)

    # -- the run --------------------------------------------------------------------------

    def execute(self) -> RunReport:
        recorder = ReportRecorder(keep_steps=self.keep_steps)
        self.consumers.insert(0, recorder)
        outcome, error = "passed", None
        opened = False
        lock_redis = None
        try:
            self.emit(events.RUN_STARTED, **self._run_started())
            self.daq.open(self)
            opened = True
            # The DAQ first: one that does not answer within the outage budget ends the run
            # here (exit 3), before any lock is taken in its Redis.
            if self._reachable() and self.use_lock:
                if self.use_lock is True and self.lock_url:
                    lock_redis = connect(self.lock_url)
                self.lock = self._take_lock(lock_redis)
            if self.daq_lost is None:
                self._prepare_daq()
            if self.daq_lost is None and self.halted is None:
                outcome = self._run_steps()
            else:
                outcome = "failed"
        except KeyboardInterrupt:
            self.request_stop("SIGINT")
            outcome = "interrupted"
        except Interrupted:
            outcome = "interrupted"
        except LockError as exc:  # held by another runner, or Redis did not allow it: exit 4
            outcome, error = "failed", exc
            self.stop_reason = str(exc)
        except BaseException as exc:
            outcome, error = "failed", exc
            self.stop_reason = self.stop_reason or f"runner error: {type(exc).__name__}: {exc}"
        finally:
            try:
                self._finish(outcome)
            finally:
                if opened:
                    self.daq.close()
                if lock_redis is not None:
                    lock_redis.close()
        if error is not None:
            # The report is complete; the caller learns what ended the run (LockError: exit 4).
            raise error
        return recorder.report

    def _run_started(self) -> Dict[str, Any]:
        batch = self.batch
        return {
            "batch": {
                "name": batch.name, "path": batch.path, "sha256": batch.sha256, "plan": plan_fingerprint(batch.steps),
                "vars": dict(batch.vars), "run": batch.run, "now": batch.now, "invocation": self.invocation,
            },
            "daq": {
                **self.daq.describe(),
                "url_source": self.context.get("url_source"),
                "redis_source": self.context.get("redis_source"),
            },
            "n_steps": len(batch.steps),
            "daq_runner": __version__,
            "host": socket.gethostname(),
            "user": _user(),
            "pid": os.getpid(),
            "command": self.context.get("command"),
            "python": platform.python_version(),
        }

    def _take_lock(self, redis_client: Any) -> Optional[RunnerLock]:
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "batch": self.batch.path, "run": self.run_id}

        def lost(reason: str) -> None:
            self.lock_lost = self.lock_lost or reason
            self.request_stop(f"runner lock lost: {reason}")

        lock: RunnerLock
        if callable(self.use_lock):  # a lock store of the caller's
            lock = self.use_lock(holder=holder, ttl=self.lock_ttl, on_lost=lost, notify=self.notice)
        elif redis_client is None:
            self.notice("no Redis: no runner lock could be taken; another runner could drive this DAQ")
            return None
        else:
            lock = DaqLock(redis_client, holder, ttl=self.lock_ttl, on_lost=lost, notify=self.notice)

        def on_held(other: dict) -> None:
            self.emit(events.WAITING, what="lock", seconds=self.lock_wait)
            self.notice(f"waiting up to {self.lock_wait:g} s for the runner lock held by {DaqLock.describe(other)}")

        with bounded(Deadline(cancel=self.stop_event)):
            lock.acquire(wait=self.lock_wait, redis_budget=REDIS_BUDGET_S, on_held=on_held)
        return lock

    def _reachable(self) -> bool:
        """One look at the DAQ, riding out an outage for the DAQ's whole budget.

        A DAQ that stays unreachable sets ``daq_lost``: every step is then skipped and
        ``daq-run`` exits 3, with a report.
        """
        with bounded(Deadline(cancel=self.stop_event)):
            try:
                self.daq.check_reachable()
            except (DaqHTTPError, DaqProtocolError) as exc:
                # Something answers, but not as a Standard DAQ: a wrong port or path, another server.
                self.daq_lost = f"no Standard DAQ REST API there: {_describe(exc)}"
                return False
            except DaqRunnerError as exc:
                if not _daq_gone(exc):
                    raise
                self.daq_lost = f"DAQ unreachable at the start, for the whole retry budget ({self.daq.outage}): {_describe(exc)}"
                return False
        return True

    def _prepare_daq(self) -> None:
        """Before the first step: the DAQ gets ready (a fresh rest_v2 writer is reset once)."""
        with bounded(Deadline(_PRE_RUN_BUDGET_S, cancel=self.stop_event)):
            try:
                self.daq.prepare()
            except (StepFailed, DaqRunnerError) as exc:
                if _daq_gone(exc):
                    self.daq_lost = f"DAQ unreachable beyond the retry budget ({self.daq.outage}): {_describe(exc)}"
                    return
                if isinstance(exc, DaqNeedsRestart):
                    self.halted = str(exc)
                    return
                self.notice(f"could not reset the writer before the first step: {_describe(exc)}")

    # -- steps ------------------------------------------------------------------------------

    def _run_steps(self) -> str:
        outcome = "passed"
        reapply: Dict[str, Any] = {}  # configuration established by kept config steps, not yet applied
        reapply_from: List[int] = []
        for step in self.batch.steps:
            settled = self._settle_background()
            if settled == "abort":
                return "failed"
            if settled == "failed":
                outcome = "failed"
            kept = self.kept.get(step.identity)
            if kept:
                self.plan.emitted(step)
                self.emit_record(step, kept.pop(0).kept(step.index, step.name))
                if isinstance(step, ConfigStep):
                    reapply.update(step.config)
                    reapply_from.append(step.index)
                continue
            if self.stop_event.is_set():
                return "interrupted"
            self.plan.current = step
            status = self._run_step(step, (reapply, reapply_from))
            if status is INTERRUPTED:
                return "interrupted"
            if self.daq_lost is not None or self.lock_lost is not None or self.halted is not None:
                return "failed"
            if status is FAILED:
                outcome = "failed"
                if step.on_error == "abort":
                    return outcome
        if self._settle_background(wait=True) == "failed":
            outcome = "failed"
        return outcome

    def _run_step(self, step: Step, reapply: Tuple[Dict[str, Any], List[int]]) -> StepStatus:
        self.step = step
        record = StepRecord.of(step)
        record.started_at = time.time()
        self.plan.record = record
        handler = HANDLERS[step.kind]
        deadline = Deadline(step.timeout, cancel=self.stop_event)
        status, error, attempt = FAILED, None, 0
        background: Optional[Acquisition] = None
        try:
            with bounded(deadline):
                for attempt in range(1, step.retries + 2):
                    self.emit(events.STEP_STARTED, step, **_started_data(step, attempt))
                    try:
                        if reapply[0]:
                            self._reapply_config(step, record, *reapply)
                        background = handler(self, step, record, attempt)
                        status, error = PASSED, None
                        break
                    except (StepFailed, DaqRunnerError) as exc:
                        timed_out = deadline.expired or isinstance(exc, DeadlineExceeded)
                        error = _describe(exc, step if timed_out else None)
                        record.failed_attempts.append({"attempt": attempt, "error": error, "at": time.time()})
                        if _daq_gone(exc) and not timed_out:
                            self.daq_lost = f"DAQ unreachable beyond the retry budget ({self.daq.outage})"
                        if isinstance(exc, DaqNeedsRestart):
                            # No retry or later step can help: the run stops with what the DAQ needs.
                            self.halted = str(exc)
                        will_retry = (
                            attempt <= step.retries
                            and self.daq_lost is None
                            and self.halted is None
                            and self.lock_lost is None
                            and not timed_out
                            and deadline.remaining() > self.retry_delay
                        )
                        self.emit(events.ATTEMPT_FAILED, step, attempt=attempt, error=error, will_retry=will_retry)
                        if not will_retry:
                            break
                        deadline.sleep(self.retry_delay)
        except (Interrupted, KeyboardInterrupt):
            self.request_stop("SIGINT")
            if self.lock_lost is not None:
                status, error = FAILED, f"runner lock lost: {self.lock_lost}"
            else:
                status, error = INTERRUPTED, f"interrupted ({self.stop_reason or 'stop requested'})"
        finally:
            self.step = None
        if status is not PASSED:
            # An acquisition this step started that may still run is stopped (its own budget,
            # outside the step's time limit).
            acquisition = self.acquisitions.of_step(step.index)
            if acquisition is not None:
                self._end_acquisition(acquisition, error or status.value, record)
        _finalize(record, status, attempt, error)
        if background is not None:
            self.plan.pending(step)
            return PASSED
        # Done with it: memory must not grow with the number of finished steps.
        self.acquisitions.forget(step.index)
        self.plan.emitted(step)
        self.emit_record(step, record)
        return status

    def _reapply_config(self, step: Step, record: StepRecord, reapply: Dict[str, Any], sources: List[int]) -> None:
        """Resume: the configuration that passed (kept) config steps established, applied again."""
        config = self.daq.read_config()
        changes = {key: value for key, value in reapply.items() if config.get(key) != value}
        if changes:
            self.daq.apply_config(changes, step, record)
            steps = ", ".join(str(i) for i in sources)
            text = ", ".join(f"{k}={v}" for k, v in changes.items())
            self.recovery(record, step, f"resume: configuration established by passed step(s) {steps}", f"update_config {text}", "applied")
            self.notice(f"re-applied the configuration {text} established by passed step(s) {steps} before step {step.index}")
        self.established.update(reapply)
        reapply.clear()
        sources.clear()

    def _end_acquisition(self, acquisition: Acquisition, reason: str, record: StepRecord) -> None:
        """An acquisition of a step that did not pass: stopped if it may still run, and what it
        left (its partial file, the images in it) recorded on the step."""
        stopped_now = not acquisition.ended
        if stopped_now:
            self._cleanup = Deadline(self._hurry_s if self._hurry_s is not None else STOP_BUDGET_S)
            try:
                # The deadline object itself: a second signal shortens it while the stop is under way.
                entry = self.daq.stop(acquisition, reason, self._cleanup)
            finally:
                self._cleanup = None
            self.add_recovery(record, acquisition.step, entry)
        # A stopped acquisition is logged FINISHED with its final count: worth a short wait.
        log_wait = (min(_END_LOG_WAIT_S, self._hurry_s) if self._hurry_s is not None else _END_LOG_WAIT_S) if stopped_now else 0.0
        self.daq.record_end(acquisition, record, log_wait)

    # -- acquisitions in the background -------------------------------------------------------

    def _settle_background(self, wait: bool = False) -> Optional[str]:
        """Record background acquisitions that ended; with ``wait``, wait for the others first.

        Returns ``"abort"`` when one failed and its step says ``on_error: abort``, ``"failed"``
        when one failed otherwise, else ``None``.
        """
        verdict = None
        for acq in self.daq.poll_background(wait):
            if wait:
                left = max(acq.deadline_at - time.monotonic(), 0.0)
                self.emit(events.WAITING, acq.step, what=f"background acquisition of {acq.step.output_file}", seconds=left)
            status = self._follow_background(acq)
            self.plan.emitted(acq.step)
            if status is not PASSED:
                verdict = "abort" if acq.step.on_error == "abort" and not wait else (verdict or "failed")
        return verdict

    def _follow_background(self, acq: Acquisition) -> StepStatus:
        """Follow a background acquisition to its end (bounded by its step's timeout), record it."""
        record = acq.record or StepRecord.of(acq.step)
        error = None
        self.step = acq.step
        try:
            with bounded(Deadline(cancel=self.stop_event, at=acq.deadline_at)):
                try:
                    self.daq.follow(acq, record)
                    status = PASSED
                except (StepFailed, DaqRunnerError) as exc:
                    status, error = FAILED, _describe(exc)
                    # The attempt that started it failed after all: recorded as a failed
                    # attempt, as for the same write with wait: true.
                    record.failed_attempts.append({"attempt": record.attempts or 1, "error": error, "at": time.time()})
        except (Interrupted, KeyboardInterrupt):
            self.request_stop("SIGINT")
            status, error = INTERRUPTED, f"interrupted ({self.stop_reason or 'stop requested'})"
        finally:
            self.step = None
        if status is not PASSED:
            self._end_acquisition(acq, error or status.value, record)
        self._finish_record(acq.step, record, status, error)
        return status

    def _finish_record(self, step: Step, record: StepRecord, status: StepStatus, error: Optional[str]) -> None:
        """A background write's record, once its acquisition ended (or the run did)."""
        finished = time.time()
        record.status, record.error, record.finished_at = status, error, finished
        if record.started_at:
            record.duration_s = round(finished - record.started_at, 6)
        record.changed()
        self.emit_record(step, record)

    # -- the end, written once ------------------------------------------------------------------

    def _finish(self, outcome: str) -> str:
        """Stop what may still run, give every step a record, release the lock, say how it ended."""
        plan = self.plan
        errors: List[BaseException] = []
        reason = self.stop_reason
        if self.lock_lost is not None:
            outcome, reason = "failed", f"runner lock lost: {self.lock_lost}"
        elif self.daq_lost is not None:
            outcome, reason = "failed", self.daq_lost
        elif self.halted is not None:
            outcome, reason = "failed", self.halted
        why = f"run {outcome}" + (f": {reason}" if reason else "")
        ended_as = INTERRUPTED if outcome == "interrupted" else FAILED
        for acq in list(self.acquisitions.running):
            # Acquisitions of the step under way, or in the background.
            record = acq.record if acq.record is not None else (plan.record if acq.step is plan.current else None)
            target = record if record is not None else StepRecord.of(acq.step)
            try:
                self._end_acquisition(acq, f"the run ended early ({why})", target)
            except BaseException as exc:  # keep finishing
                errors.append(exc)
            if record is not None and plan.is_pending(acq.step):
                try:
                    self._finish_record(acq.step, record, ended_as, f"not finished: {why}")
                    plan.emitted(acq.step)
                except BaseException as exc:
                    errors.append(exc)
        # Every step gets exactly one record: the summary always adds up.
        for step, state in plan.unrecorded():
            kept = self.kept.get(step.identity)
            if state == "current" and plan.record is not None:
                record = plan.record
                _finalize(record, ended_as, 1, f"not finished: {why}")
            elif kept:
                # Still passed in the run resumed: a resume of this report must keep it too.
                record = kept.pop(0).kept(step.index, step.name)
            else:
                record = StepRecord.of(step)
                _finalize(record, SKIPPED, 0, f"not run: {why}")
            try:
                self.emit_record(step, record)
            except BaseException as exc:
                errors.append(exc)
                break
        if self.lock is not None:
            self.lock.release()
        if outcome == "passed" and plan.first_failure is not None:
            # A step that did not pass, whenever it was recorded, never lets the run pass.
            outcome = "failed"
        if reason is None and outcome != "passed":
            reason = plan.first_failure
        try:
            self.emit(
                events.RUN_FINISHED,
                status=outcome,
                reason=reason,
                daq_unreachable=self.daq_lost is not None,
                lock_lost=self.lock_lost,
            )
        except BaseException as exc:
            errors.append(exc)
        if errors:
            raise errors[0]
        return outcome


def _finalize(record: StepRecord, status: StepStatus, attempts: int, error: Optional[str]) -> None:
    """The step's record at its end: how it ended, after how many attempts, when, why."""
    finished = time.time()
    record.status, record.attempts, record.error = status, attempts, error
    record.finished_at = finished if record.started_at else None
    record.duration_s = round(finished - record.started_at, 6) if record.started_at else 0.0


class _Progress:
    """Which steps of the plan have their record: the summary must always add up."""

    def __init__(self, steps: Tuple[Step, ...]) -> None:
        self.steps = steps
        self._done = 0  # steps[:_done] are recorded or pending in the background
        self._pending: Dict[int, Step] = {}
        self.current: Optional[Step] = None
        self.record: Optional[StepRecord] = None  # the current step's record so far
        self.first_failure: Optional[str] = None

    def emitted(self, step: Step) -> None:
        self._pending.pop(step.index, None)
        self._advance(step)

    def pending(self, step: Step) -> None:
        self._pending[step.index] = step
        self._advance(step)

    def is_pending(self, step: Step) -> bool:
        return step.index in self._pending

    def _advance(self, step: Step) -> None:
        if self._done < len(self.steps) and self.steps[self._done].index == step.index:
            self._done += 1
            if self.current is step:
                self.current = None

    def unrecorded(self) -> List[Tuple[Step, str]]:
        rest = list(self._pending.values())
        out = [(s, "skipped") for s in rest]
        for step in self.steps[self._done :]:
            out.append((step, "current" if step is self.current else "skipped"))
        self._pending.clear()
        return out


def _daq_gone(exc: BaseException) -> bool:
    """A transport failure that outlasted the DAQ's whole outage budget.

    A lost write reply is not one (it is resolved by ``run_id``), and neither is a request
    the step's own time limit cut short.
    """
    return isinstance(exc, DaqTransportError) and not isinstance(exc, (OutcomeUnknown, DeadlineExceeded))


def _describe(exc: BaseException, timed_out: Optional[Step] = None) -> str:
    if isinstance(exc, StdDaqAdminException):
        text = f"the DAQ refused: {exc}"
    elif isinstance(exc, DaqTransportError) and not isinstance(exc, DeadlineExceeded):
        text = f"DAQ unreachable: {exc}"
    else:
        text = str(exc)
    if timed_out is not None and not text.startswith("timed out"):
        text = f"timed out after {timed_out.timeout:g} s: {text}"
    return text


def _user() -> Optional[str]:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without passwd entry)
        return None
