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
interrupted, the rest skipped, so the summary adds up), the cleanup runs (the batch's
``finally:`` steps, then ``restore_config``), the lock is released, the :meth:`Runner.at_end`
hooks are told how the run ended (their notices still reach the report) and ``run_finished``
is emitted.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import platform
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import events, protocol
from ._deadline import Deadline, Interrupted, bounded
from ._filecheck import FileChecks
from ._guard import DetectorHistory
from ._handlers import HANDLERS
from ._redis import connect
from ._text import clauses, scrub
from ._version import __version__
from .batch import DEFAULT_TIMEOUT_S, Batch, ConfigStep, Step, WriteStep
from .client import StdDaqClient
from .daq import Acquisition, Acquisitions, Daq, RunServices, check_supported
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
from .estimate import timeout_shortfall
from .exit_codes import RunEnding
from .lock import LOCK_TTL_S, REDIS_BUDGET_S, DaqLock, LockFactory, RunnerLock
from .record import RESTORE_STEP_NAME, CleanupRecord, StepRecord, StepStatus
from .report import ReportRecorder, RunReport
from .rest_v2 import STOP_BUDGET_S, RestV2Daq
from .resume import ResumedRun, plan_fingerprint
from .targets import DRIVER, generation_of

__all__ = ["Runner", "RunState", "StepFailed", "EndHook", "RunEnding"]

EndHook = Callable[[RunEnding], Optional[Iterable[str]]]
"""``hook(ending)``: told how a run ended (and so its exit code, ``ending.exit_code``) as the run
ends, after its cleanup and the lock's release, before ``run_finished``; the lines it returns
become notices of the run (they reach the report). A hook that raises becomes a notice too."""

_PRE_RUN_BUDGET_S = 30.0
_END_LOG_WAIT_S = 1.5  # for the log record of an acquisition stopped because its step did not pass

PASSED, FAILED, SKIPPED, INTERRUPTED = StepStatus.PASSED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.INTERRUPTED


class Runner:
    """Runs batches against one DAQ, one at a time; each :meth:`run` starts afresh.

    Args:
        url: the DAQ's URL (ignored when ``daq`` is given); its scheme says the generation
            (:func:`daq_runner.targets.generation_of`): ``http(s)://`` the rest_v2 REST API,
            ``ws(s)://`` the current generation's driver (``std_det_driver``).
        redis_url: the DAQ's Redis (``None``: REST polling only, no lock); the current
            generation has none of its own: a Redis given holds the runner lock.
        consumers: callables receiving every :class:`~daq_runner.events.Event` of every run.
        daq: the DAQ, behind the seam (default: for a ``ws://`` URL a
            :class:`~daq_runner.det_driver_daq.DriverDaq` with ``config_url`` and
            ``config_user``; else a :class:`~daq_runner.rest_v2.RestV2Daq` for ``url`` and
            ``redis_url``, with ``client``, ``streams`` and ``poll_interval``; both with ``outage_s``).
        config_url, config_user: the current generation's config REST (default: the
            driver's host, port 5000) and the user name it records changes under.
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
            str), ``resume_command`` (the command line that continues the run from its report),
            ``url_source``, ``redis_source``, ``config_url_source``.
        keep_steps: the returned report keeps every step record (``False``: only the failed
            ones, for very long runs).
        verify: check the files each write wrote (:mod:`daq_runner._filecheck`; a step's
            ``verify: off`` skips its own); ``False``: none is checked (``--no-verify``).
        checksums: with the checks, read each file whole for its size and sha256 (``--checksums``).
        restore_config: put the DAQ configuration found before the first step back when a run
            ends (as ``restore_config: true`` in every batch; ``daq-run --restore-config``).
        at_end: hooks told how each run ended (see :data:`EndHook` and :meth:`at_end`).

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
        verify: bool = True,
        checksums: bool = False,
        restore_config: bool = False,
        at_end: Iterable[EndHook] = (),
        config_url: Optional[str] = None,
        config_user: Optional[str] = None,
    ) -> None:
        if daq is None and generation_of(url) == DRIVER:
            from .det_driver_daq import DriverDaq

            daq = DriverDaq(url, config_url, config_user=config_user, redis_url=redis_url, outage_s=outage_s)
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
        self.verify = verify
        self.checksums = checksums
        self.restore_config = restore_config
        self.end_hooks: List[EndHook] = list(at_end)
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

    def at_end(self, hook: EndHook) -> None:
        """Tell ``hook`` how every run from now on ended, as it ends (see :data:`EndHook`).

        The hook runs in :meth:`RunState._finish`, whatever ended the run (its last step, an
        abort, a signal, a lost lock, a DAQ gone, a lock held by another runner), after the
        cleanup and the lock's release and before ``run_finished``, so that what it says (the
        lines it returns) lands in the report as notices. It is given a
        :class:`~daq_runner.exit_codes.RunEnding`, whose ``exit_code`` is the exit ``daq-run``
        gives such a run. Bound its time yourself (a notification is, by its own timeout).
        """
        self.end_hooks.append(hook)

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

    def refuse_unusable(self, batch: Batch) -> None:
        """Before anything is sent: raise what would make ``batch`` fail on this Runner's DAQ
        and machine, whatever the DAQ's state (:meth:`run` says what)."""
        check_supported(batch, self.daq)
        FileChecks(self.verify, self.checksums).require(batch.steps)

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

    @property
    def ending(self) -> Optional[RunEnding]:
        """How the last run ended (its exit code: ``ending.exit_code``), ``None`` before one ended."""
        run = self._last if self._active is None else self._active
        return run.ending if run is not None else None

    # -- the run ------------------------------------------------------------------------

    def run(
        self,
        batch: Batch,
        previous: Optional[Dict[str, List[dict]]] = None,
        *,
        resumed: Optional[ResumedRun] = None,
        estimate: Optional[Mapping[str, Any]] = None,
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
            estimate: what the run is expected to cost (:meth:`daq_runner.estimate.Estimate.to_json`),
                for the report, beside the actual figures.

        Raises:
            BatchValidationError: a step needs what this DAQ generation does not have (a guard,
                the detector's rate: :func:`~daq_runner.daq.check_supported`); nothing is sent,
                no event emitted.
            VerifyExtraMissing: files are to be checked and h5py is missing (idem).
            LockError: the lock was held by another runner or could not be taken (the report
                is complete all the same; ``daq-run`` exits 4).
            RuntimeError: a run is under way on this Runner already.
        """
        self.refuse_unusable(batch)
        with self._guard:
            if self._active is not None:
                raise RuntimeError("this Runner is running a batch already; use one Runner per concurrent run")
            run = RunState(self, batch, previous, resumed if resumed is not None else self.resumed, estimate)
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
        stop_reason, daq_lost, halted, lock_lost: why the run ends early, if it does; lock_refused:
            the lock could not be taken at the start.
        cleanup: the run's :class:`~daq_runner.record.CleanupRecord` (``None`` without one).
        ending: how it ended (:class:`~daq_runner.exit_codes.RunEnding`), once it has.
    """

    def __init__(
        self,
        runner: Runner,
        batch: Batch,
        previous: Optional[Dict[str, List[dict]]],
        resumed: Optional[ResumedRun],
        estimate: Optional[Mapping[str, Any]] = None,
    ) -> None:
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
        self.file_checks = FileChecks(runner.verify, runner.checksums)
        self.detector_history = DetectorHistory()
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
        self.estimate = dict(estimate) if estimate is not None else None
        self.end_hooks = list(runner.end_hooks)
        self.lock_refused = False  # the lock could not be taken at the start: nothing ran
        self.reached_steps = False  # the run got as far as its steps: there is something to clean up
        restore = runner.restore_config or batch.restore_config
        has_cleanup = bool(batch.cleanup) or restore
        self.cleanup = CleanupRecord(len(batch.cleanup), restore) if has_cleanup else None
        self.found_config: Optional[Dict[str, Any]] = None  # read before the first step, for restore_config
        self.found_config_error: Optional[str] = None
        self.config_touched = False  # a config step (or a resume's re-apply) may have changed the configuration
        self.ending: Optional[RunEnding] = None  # set as the run ends
        self._cleanup: Optional[Deadline] = None
        self._hurry_s: Optional[float] = None  # a second stop request: every cleanup gets this long

    # -- RunServices -------------------------------------------------------------------

    def emit(self, kind: str, step: Optional[Step] = None, /, _at: Optional[float] = None, **data: Any) -> None:
        """Send one event to every consumer; ``_at``: its time when it is not now (Unix time)."""
        name = step.name if step else None
        if self.secrets:
            data = scrub(data, self.secrets)
            name = scrub(name, self.secrets)
        event = events.Event(kind, self.run_id, step.index if step else None, name, data)
        if _at is not None:
            event = dataclasses.replace(event, time=_at)
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
            if self.daq_lost is None and self.cleanup is not None and self.cleanup.restore_config:
                self._read_found_config()
            if self.daq_lost is None and self.halted is None:
                self._warn_slow_writes()
                self.reached_steps = True
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
            self.lock_refused = self.lock is None and self.lock_lost is None
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
                **({"config_url_source": self.context["config_url_source"]} if self.context.get("config_url_source") else {}),
            },
            "n_steps": len(batch.steps),
            "daq_runner": __version__,
            "host": socket.gethostname(),
            "user": _user(),
            "pid": os.getpid(),
            "command": self.context.get("command"),
            "resume_command": self.context.get("resume_command"),
            "python": platform.python_version(),
            **({"estimate": self.estimate} if self.estimate is not None else {}),
            **({"cleanup": {"finally": self.cleanup.n_finally, "restore_config": self.cleanup.restore_config}} if self.cleanup is not None else {}),
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
            self.notice(f"no Redis: no runner lock could be taken; {self.daq.unguarded}")
            return None
        else:
            lock = DaqLock(redis_client, holder, ttl=self.lock_ttl, on_lost=lost, notify=self.notice, daq_reachable=self.daq.answers)

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
                self.daq_lost = f"DAQ unreachable at the start, for the whole retry budget ({self.daq.outage}): {exc}"
                return False
        return True

    def _prepare_daq(self) -> None:
        """Before the first step: the DAQ gets ready (a fresh rest_v2 writer is reset once)."""
        with bounded(Deadline(_PRE_RUN_BUDGET_S, cancel=self.stop_event)):
            try:
                self.daq.prepare()
            except (StepFailed, DaqRunnerError) as exc:
                if _daq_gone(exc):
                    self.daq_lost = f"DAQ unreachable beyond the retry budget ({self.daq.outage}): {exc}"
                    return
                if isinstance(exc, DaqNeedsRestart):
                    self.halted = str(exc)
                    return
                self.notice(f"could not reset the writer before the first step: {_describe(exc)}")

    def _warn_slow_writes(self) -> None:
        """Writes whose images cannot arrive within their timeout at the detector's rate now:
        said before the first step, when it can still be helped, not at 3 a.m."""
        if "rates" not in self.daq.features:
            return
        if not any(isinstance(step, WriteStep) and step.identity not in self.kept for step in self.batch.steps):
            return
        try:
            with bounded(Deadline(3.0, cancel=self.stop_event)):
                rate = self.daq.read_rates().detector
        except DaqRunnerError:
            return  # the steps will find out; a look at the rates is no reason to stop
        shortfall = timeout_shortfall(self.batch.steps, rate, skip=lambda step: step.identity in self.kept)
        if shortfall:
            self.notice(shortfall)

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

    def _run_step(self, step: Step, reapply: Tuple[Dict[str, Any], List[int]], *, cleanup: Optional[StepRecord] = None) -> StepStatus:
        """Run ``step`` with its retries; record it (a step of the plan) or fill ``cleanup`` (a
        cleanup step: not stopped by the stop request that may have ended the run, only cut
        short by a second one, and not a step of the plan)."""
        self.step = step
        record = StepRecord.of(step) if cleanup is None else cleanup
        record.started_at = time.time()
        if cleanup is None:
            self.plan.record = record
        if step.kind == "config":
            self.config_touched = True
        handler = HANDLERS[step.kind]
        if cleanup is None:
            deadline = Deadline(step.timeout, cancel=self.stop_event)
        else:
            # The stop request that ended the run must not end its cleanup; a second one cuts it
            # short (hurry() shortens the deadline in self._cleanup).
            deadline = self._cleanup = Deadline(min(step.timeout, self._hurry_s) if self._hurry_s is not None else step.timeout)
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
                        self._forced_uses_now()
                        if _daq_gone(exc) and not timed_out:
                            self.daq_lost = f"DAQ unreachable beyond the retry budget ({self.daq.outage}): {exc}"
                        final = _no_retry_changes(exc)
                        if isinstance(exc, DaqNeedsRestart):
                            # No retry or later step can help: the run stops with what the DAQ needs.
                            self.halted = str(exc)
                        will_retry = (
                            attempt <= step.retries
                            and final is None
                            and self.daq_lost is None
                            and self.halted is None
                            and self.lock_lost is None
                            and not timed_out
                            and deadline.remaining() > self.retry_delay
                        )
                        if final is not None and attempt <= step.retries:
                            # Retries were left: the report says why none was made.
                            error = record.failed_attempts[-1]["error"] = clauses(error, f"not retried: {final}")
                        self.emit(events.ATTEMPT_FAILED, step, attempt=attempt, error=error, will_retry=will_retry)
                        if not will_retry:
                            break
                        deadline.sleep(self.retry_delay)
        except (Interrupted, KeyboardInterrupt):
            if cleanup is not None:
                self.hurry(1.0)  # Ctrl-C in a cleanup (from Python): cut the rest short
            self.request_stop("SIGINT")
            if self.lock_lost is not None:
                status, error = FAILED, f"runner lock lost: {self.lock_lost}"
            else:
                status, error = INTERRUPTED, f"interrupted ({self.stop_reason or 'stop requested'})"
        finally:
            self.step = None
            if cleanup is not None:
                self._cleanup = None
        if status is not PASSED:
            # An acquisition this step started that may still run is stopped (its own budget,
            # outside the step's time limit).
            acquisition = self.acquisitions.of_step(step.index)
            if acquisition is not None:
                self._end_acquisition(acquisition, error or status.value, record)
        if cleanup is not None and self._hurry_s is not None and deadline.expired:
            # Its time was cut by a second stop request: a wait that ended early did not pass.
            status, error = FAILED, "cut short by a second stop request" + (f": {error}" if error else "")
        _finalize(record, status, attempt, error)
        if cleanup is not None:
            self.acquisitions.forget(step.index)
            return status
        if background is not None:
            self.plan.pending(step)
            return PASSED
        # Done with it: memory must not grow with the number of finished steps.
        self.acquisitions.forget(step.index)
        self.plan.emitted(step)
        self.emit_record(step, record)
        return status

    def _forced_uses_now(self) -> None:
        """A failed attempt may be someone else's doing (a std_cli tool forced past the lock
        stopped our acquisition): such uses are told now, as notices of the step they hit,
        not only at the lock's next renewal."""
        read = getattr(self.lock, "read_forced_uses", None)
        if read is not None:
            read()

    # -- the cleanup: finally: steps and restore_config -------------------------------------

    def _read_found_config(self) -> None:
        """Before the first step: the configuration ``restore_config`` puts back at the end."""
        with bounded(Deadline(_PRE_RUN_BUDGET_S, cancel=self.stop_event)):
            try:
                self.found_config = self.daq.read_config()
            except (StepFailed, DaqRunnerError, NotImplementedError) as exc:
                self.found_config_error = f"the configuration could not be read before the first step: {_describe(exc)}"
                self.notice(f"restore_config: {self.found_config_error}; it will not be restored")

    def _emit_cleanup(self) -> None:
        assert self.cleanup is not None
        data = self.cleanup.to_json()
        self.emit(events.CLEANUP, **(scrub(data, self.secrets) if self.secrets else data))

    def _clean_up(self) -> None:
        """The batch's ``finally:`` steps, then ``restore_config``: whatever ended the run, unless
        the lock was lost (nothing more may be sent) or the run never reached its steps (nothing
        to clean up; the DAQ may be another runner's). Each item under its own timeout; a second
        stop request cuts the item under way to a second and skips the rest."""
        cleanup = self.cleanup
        if cleanup is None:
            return
        why_not = None
        if self.lock_lost is not None:
            why_not = f"the runner lock was lost ({self.lock_lost}): nothing more may be sent to the DAQ"
        elif not self.reached_steps:
            why_not = "the run ended before its first step: nothing to clean up"
        if why_not is not None:
            cleanup.status, cleanup.reason = "skipped", why_not
            for step in self.batch.cleanup:
                record = StepRecord.of(step)
                _finalize(record, SKIPPED, 0, f"not run: {why_not}")
                cleanup.steps.append(record.scrubbed(self.secrets))
            if cleanup.restore_config:
                cleanup.restore = {"outcome": "skipped", "fields": {}, "error": why_not}
            if self.lock_lost is not None:
                self.notice(f"cleanup skipped: {why_not}")
            self._emit_cleanup()
            return
        cleanup.status = "running"
        self._emit_cleanup()
        problems: List[str] = []
        for step in self.batch.cleanup:
            record = StepRecord.of(step)
            if self._hurry_s is not None or self.lock_lost is not None:
                why = "cut short by a second stop request" if self.lock_lost is None else f"runner lock lost: {self.lock_lost}"
                _finalize(record, SKIPPED, 0, f"not run: {why}")
            elif self._run_step(step, ({}, []), cleanup=record) is not PASSED:
                problems.append(record.problem or f"step {step.index} ({step.name}) did not pass")
            cleanup.steps.append(record.scrubbed(self.secrets))
            self._emit_cleanup()
        if cleanup.restore_config:
            problem = self._restore()
            if problem:
                problems.append(problem)
            self._emit_cleanup()
        skipped = [r for r in cleanup.steps if r.status is SKIPPED]
        if problems:
            cleanup.status, cleanup.reason = "failed", "; ".join(problems)
        elif skipped or (cleanup.restore or {}).get("outcome") == "skipped":
            cleanup.status = "failed"
            cleanup.reason = skipped[0].error if skipped else f"restore_config: {cleanup.restore['error']}"  # type: ignore[index]
        else:
            cleanup.status = "passed"
        self._emit_cleanup()

    def _restore(self) -> Optional[str]:
        """``restore_config``: put back the fields of the configuration found before the first step
        that differ now; the problem as one line, or ``None``."""
        cleanup = self.cleanup
        assert cleanup is not None
        restore: Dict[str, Any] = {"outcome": "skipped", "fields": {}, "error": None}
        cleanup.restore = restore
        if self.found_config is None:
            restore["error"] = self.found_config_error or "the configuration was not read before the first step"
            return f"restore_config: {restore['error']}"
        if not self.config_touched:
            restore["outcome"] = "unchanged"
            return None
        if self._hurry_s is not None or self.lock_lost is not None:
            restore["error"] = "cut short by a second stop request" if self.lock_lost is None else f"runner lock lost: {self.lock_lost}"
            self.notice(f"restore_config: not tried ({restore['error']}); the DAQ keeps the configuration the run left")
            return f"restore_config: not tried ({restore['error']})"
        found = {key: value for key, value in self.found_config.items() if key in protocol.CONFIG_FIELDS}
        timeout = max([s.timeout for s in (*self.batch.steps, *self.batch.cleanup) if isinstance(s, ConfigStep)] or [DEFAULT_TIMEOUT_S])
        deadline = self._cleanup = Deadline(min(timeout, self._hurry_s) if self._hurry_s is not None else timeout)
        try:
            with bounded(deadline):
                now = self.daq.read_config()
        except (StepFailed, DaqRunnerError, Interrupted) as exc:
            restore.update(outcome="failed", error=f"the configuration could not be read: {_describe(exc)}")
            return f"restore_config failed: {restore['error']}"
        finally:
            self._cleanup = None
        changes = {key: value for key, value in found.items() if protocol.config_differences(now, {key: value})}
        if not changes:
            restore["outcome"] = "unchanged"
            return None
        text = ", ".join(f"{key}={value}" for key, value in changes.items())
        index = len(self.batch.steps) + len(self.batch.cleanup) + 1
        step = ConfigStep(
            index=index,
            kind="config",
            name=f"{RESTORE_STEP_NAME}: put back {text}",
            params={"config": changes, "settle": 0.0},
            timeout=timeout,
            config=changes,
        )
        record = StepRecord.of(step)
        status = self._run_step(step, ({}, []), cleanup=record)
        cleanup.steps.append(record.scrubbed(self.secrets))
        restore["fields"] = changes
        if status is PASSED:
            restore["outcome"] = "restored"
            self.notice(f"restore_config: put back {text}, as found before the first step")
            return None
        restore.update(outcome="failed", error=record.error)
        self.notice(f"restore_config failed: {record.error}; the DAQ may keep the configuration the run left ({text} were not put back)")
        return f"restore_config failed: {record.error}"

    def _reapply_config(self, step: Step, record: StepRecord, reapply: Dict[str, Any], sources: List[int]) -> None:
        """Resume: the configuration that passed (kept) config steps established, applied again."""
        config = self.daq.read_config()
        changes = {key: value for key, value in reapply.items() if config.get(key) != value}
        if changes:
            self.config_touched = True
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
                    self.file_checks.check(self, acq.step, record, acq.started)
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
        """Stop what may still run, give every step a record, clean up, release the lock, tell
        the end hooks and the consumers how it ended."""
        plan = self.plan
        errors: List[BaseException] = []
        outcome, reason = self._ended(outcome)
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
        try:
            self._clean_up()
        except BaseException as exc:  # keep finishing: the lock and the report come next
            errors.append(exc)
        if self.lock is not None:
            self.lock.release()
        # The cleanup may have lost the lock or the DAQ, or failed a run that had passed.
        outcome, reason = self._ended(outcome)
        if outcome == "passed" and plan.first_failure is not None:
            # A step that did not pass, whenever it was recorded, never lets the run pass.
            outcome = "failed"
        if reason is None and outcome != "passed":
            reason = plan.first_failure
        problem = self.cleanup.problem if self.cleanup is not None else None
        if problem is not None:
            outcome = "failed" if outcome == "passed" else outcome
            reason = clauses(reason, problem) if reason else problem
        ending = RunEnding(
            outcome,
            reason,
            daq_unreachable=self.daq_lost is not None,
            lock_lost=self.lock_lost,
            lock_refused=self.lock_refused,
            stop_reason=self.stop_reason,
        )
        self.ending = ending
        # The run ended here: what the end hooks take (a notification to a slow server) is not
        # the run's duration, which their messages already told.
        ended_at = time.time()
        for hook in self.end_hooks:
            try:
                for line in hook(ending) or ():
                    self.notice(str(line))
            except KeyboardInterrupt:
                break
            except Exception as exc:  # a hook's failure is a notice, never the run's outcome
                try:
                    self.notice(f"end hook {getattr(hook, '__name__', type(hook).__name__)} failed: {type(exc).__name__}: {exc}")
                except BaseException as inner:
                    errors.append(inner)
        try:
            self.emit(
                events.RUN_FINISHED,
                _at=ended_at,
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

    def _ended(self, outcome: str) -> Tuple[str, Optional[str]]:
        """The run's outcome and reason as far as stops, the lock and the DAQ decide them."""
        if self.lock_lost is not None:
            return "failed", f"runner lock lost: {self.lock_lost}"
        if self.daq_lost is not None:
            return "failed", self.daq_lost
        if self.halted is not None:
            return "failed", self.halted
        return outcome, self.stop_reason


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


def _no_retry_changes(exc: BaseException) -> Optional[str]:
    """Why no retry can change this failure (the step's retries are then not used), or ``None``."""
    if isinstance(exc, StepFailed):
        return exc.final
    if isinstance(exc, DaqHTTPError) and exc.status_code in (400, 404, 405, 413, 414, 415, 422):
        return f"the DAQ refuses this request as it is (HTTP {exc.status_code})"
    return None


def _describe(exc: BaseException, timed_out: Optional[Step] = None) -> str:
    if isinstance(exc, StdDaqAdminException):
        text = f"the DAQ refused: {exc}"
    elif isinstance(exc, DaqTransportError) and not isinstance(exc, DeadlineExceeded):
        text = f"DAQ unreachable: {exc}"
    else:
        text = str(exc)
    if timed_out is not None and "timed out" not in text and "timeout" not in text:  # said once
        text = f"timed out after {timed_out.timeout:g} s: {text}"
    return text


def _user() -> Optional[str]:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without passwd entry)
        return None
