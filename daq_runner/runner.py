"""The Runner: the only code with side effects on the DAQ.

It takes a validated :class:`~daq_runner.batch.Batch`, takes the DAQ's runner lock, resets a
fresh DAQ's UNKNOWN writer, runs the steps in order (each through the handler of its kind,
:mod:`daq_runner._handlers`) with retries, ``on_error`` and stop-on-UNKNOWN recovery, and tells
consumers what happens through :class:`~daq_runner.events.Event` objects. It knows nothing about
progress bars, log formats or report files.

Whatever ends a run (the last step, ``on_error: abort``, a signal, a lost lock, a DAQ gone, an
exception in a consumer, a bug), :meth:`Runner.run` ends the same way, written once in
``_finish``: every acquisition it started that may still run is stopped (or, at a normal end,
waited for), every step gets exactly one record (the current one failed or interrupted, the
rest skipped, so the summary adds up), the lock is released and ``run_finished`` is emitted.
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
import threading
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import protocol, events
from ._acquisitions import STOP_BUDGET_S, Acquisition, Acquisitions
from ._context import UNKNOWN, RunContext, StepFailed
from ._deadline import Deadline, Interrupted, bounded
from ._redis import connect
from ._text import redact_url, scrub, secrets_in
from ._handlers import HANDLERS
from ._version import __version__
from .batch import Batch, ConfigStep, Step, WriteStep
from .client import StdDaqClient
from .exceptions import (
    DaqHTTPError,
    DaqProtocolError,
    DaqRunnerError,
    DaqTransportError,
    DeadlineExceeded,
    LockError,
    OutcomeUnknown,
    StdDaqAdminException,
)
from .feed import StatusFeed
from .lock import LOCK_TTL_S, REDIS_BUDGET_S, DaqLock
from .report import ReportRecorder, RunReport
from .resume import ResumedRun

__all__ = ["Runner", "StepFailed"]

_PRE_RUN_BUDGET_S = 30.0
_LOG_WAIT_S = 3.0
_END_LOG_WAIT_S = 1.5  # for the log record of an acquisition stopped because its step did not pass


class Runner:
    """Runs batches against one DAQ.

    Args:
        url: base URL of the DAQ's REST API.
        redis_url: the DAQ's Redis (``None``: REST polling only, no lock).
        consumers: callables receiving every :class:`~daq_runner.events.Event`.
        client: a ready :class:`StdDaqClient` (default: one for ``url`` that rides out
            REST outages of up to ``outage_s`` seconds).
        streams: Redis stream names of the DAQ.
        poll_interval: REST polling period when Redis is not available, in seconds.
        retry_delay: pause between attempts of a failed step, in seconds.
        outage_s: how long every request rides out an unreachable DAQ (connection refused,
            timeouts, HTTP 502/503/504). Beyond it the DAQ counts as gone: the step fails and
            the rest of the run is skipped, whatever their ``on_error``.
        require_log: a write passes only when the DAQ's own log records it.
        lock: take the DAQ's runner lock in its Redis (see :class:`~daq_runner.lock.DaqLock`);
            without it (``False``, or no Redis) the run says so in a notice.
        lock_wait: seconds to wait for a lock held by another runner.
        lock_ttl: expiry of the lock in seconds (renewed every third of it): how long a
            crashed runner can block the DAQ.
        overwrite: let writes replace existing files (as ``overwrite: true`` on every step).
        resumed: with ``previous`` (a resumed run), what the earlier run's report says
            (:class:`~daq_runner.resume.ResumedRun`): a step that runs again may replace
            the file it left then, when nobody provably wrote it since.
        context: what the caller knows about the run, for the report: ``command`` (list of
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
        client: Optional[StdDaqClient] = None,
        streams: protocol.StreamNames = protocol.StreamNames(),
        poll_interval: float = 0.05,
        retry_delay: float = 1.0,
        outage_s: float = protocol.DEFAULT_OUTAGE_S,
        require_log: bool = True,
        lock: bool = True,
        lock_wait: float = 0.0,
        lock_ttl: float = LOCK_TTL_S,
        overwrite: bool = False,
        resumed: Optional[ResumedRun] = None,
        context: Optional[Dict[str, Any]] = None,
        keep_steps: bool = True,
    ) -> None:
        self.url = url
        self.redis_url = redis_url
        self.consumers: List[events.Consumer] = list(consumers)
        self.stop_event = threading.Event()
        self.stop_reason: Optional[str] = None
        self.daq_lost: Optional[str] = None  # why the DAQ is considered gone for this run
        self.lock_lost: Optional[str] = None
        self.client = client or StdDaqClient(
            url, retries=1000, retry_deadline=outage_s, on_retry=self._on_client_retry
        )
        self.streams = streams
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.require_log = require_log
        self.use_lock = lock
        self.lock_wait = lock_wait
        self.lock_ttl = lock_ttl
        self.overwrite = overwrite
        self.resumed = resumed
        self.invocation = ""  # this invocation's random id, set by run()
        self._kept: Dict[str, List[dict]] = {}
        self.context = dict(context or {})
        self.keep_steps = keep_steps
        self._budget = f"{outage_s:g} s" if client is None else "the client's retries"
        self._secrets = secrets_in(url, redis_url)
        self.run_id = ""
        self._step: Optional[Step] = None
        self._last_retry_notice = 0.0
        self._cleanup: Optional[Deadline] = None
        self._hurry_s: Optional[float] = None  # a second stop request: every cleanup gets this long

    # -- consumers -------------------------------------------------------------------

    def subscribe(self, consumer: events.Consumer) -> None:
        """Add a consumer of the run's events."""
        self.consumers.append(consumer)

    def _emit(self, kind: str, step: Optional[Step] = None, /, **data: Any) -> None:
        name = step.name if step else None
        if self._secrets:
            data = scrub(data, self._secrets)
            name = scrub(name, self._secrets)
        event = events.Event(kind, self.run_id, step.index if step else None, name, data)
        for consumer in self.consumers:
            consumer(event)

    def _notice(self, message: str) -> None:
        self._emit(events.NOTICE, self._step, message=message)

    def _on_client_retry(self, url: str, attempt: int, error: BaseException, sleep: float) -> None:
        # One notice per outage second is enough for people and logs.
        if time.monotonic() - self._last_retry_notice >= 1.0 or attempt == 1:
            self._last_retry_notice = time.monotonic()
            self._notice(f"DAQ request failed (attempt {attempt}): {error}; retrying")

    # -- control -----------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the run to stop: the current step is interrupted and its acquisition stopped.

        Safe to call from a signal handler or another thread; a request in flight ends within
        a fraction of a second.
        """
        self.stop_reason = self.stop_reason or reason
        self.stop_event.set()

    def hurry(self, seconds: float = 1.0) -> None:
        """A second stop request: cut the cleanup that is running to ``seconds`` (one short stop)."""
        self.request_stop("stop requested")
        self._hurry_s = min(self._hurry_s or seconds, seconds)  # for cleanups still to come
        cleanup = self._cleanup
        if cleanup is not None:
            cleanup.at = min(cleanup.at, time.monotonic() + seconds)

    # -- the run ------------------------------------------------------------------------

    def run(self, batch: Batch, previous: Optional[Dict[str, List[dict]]] = None) -> RunReport:
        """Run ``batch`` and return its :class:`RunReport`.

        Args:
            previous: records of steps that passed in an earlier run (``--resume``), keyed by
                step identity (:attr:`Step.identity`); each list is used in order. Those steps
                are not run again; the configuration their config steps established is applied
                again before the first step that runs.
        """
        # The batch's {run} is the run's id: file names and the report say the same.
        self.run_id = batch.run or uuid.uuid4().hex[:12]
        # Unlike {run}, new for every invocation, a resumed one too: its acquisitions' run_ids
        # come from it, so a later resume can tell its files from anyone else's.
        self.invocation = uuid.uuid4().hex
        # Records of the steps kept from the run resumed, used up in order as they are reported.
        self._kept = {k: list(v) for k, v in (previous or {}).items()}
        # Credentials in a URL given as a variable (--var note=http://user:pw@host) are as secret
        # as the DAQ's own.
        self._secrets = tuple(sorted(set(self._secrets) | set(batch.secrets), key=len, reverse=True))
        recorder = ReportRecorder(keep_steps=self.keep_steps)
        self.consumers.insert(0, recorder)
        plan = _Progress(batch.steps)
        ctx: Optional[RunContext] = None
        outcome, error = "passed", None
        redis_client = None
        try:
            self._emit(events.RUN_STARTED, **self._run_started(batch))
            redis_client = connect(self.redis_url) if self.redis_url else None
            ctx = self._context(redis_client)
            # The DAQ first: one that does not answer within the outage budget ends the run
            # here (exit 3), before any lock is taken in its Redis.
            if self._reachable(ctx) and self.use_lock:
                ctx.lock = self._take_lock(ctx, redis_client, batch)
            if self.daq_lost is None:
                self._prepare_daq(ctx)
            if self.daq_lost is None:
                outcome = self._run_steps(ctx, batch, plan, self._kept)
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
                outcome = self._finish(ctx, plan, outcome)
            finally:
                self.consumers.remove(recorder)
                if redis_client is not None:
                    redis_client.close()
        if error is not None:
            # The report is complete; the caller learns what ended the run (LockError: exit 4).
            raise error
        return recorder.report

    def _run_started(self, batch: Batch) -> Dict[str, Any]:
        return {
            "batch": {
                "name": batch.name, "path": batch.path, "sha256": batch.sha256, "vars": dict(batch.vars),
                "run": batch.run, "now": batch.now, "invocation": self.invocation,
            },
            "daq": {
                "url": redact_url(self.url),
                "redis": redact_url(self.redis_url),
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

    def _context(self, redis_client: Any) -> RunContext:
        feed = StatusFeed(self.client, redis_client, self.streams, self.poll_interval, self._notice)
        ctx = RunContext(
            client=self.client,
            feed=feed,
            emit=self._emit,
            stop_event=self.stop_event,
            require_log=self.require_log,
            overwrite=self.overwrite,
            invocation=self.invocation,
            resumed=self.resumed,
        )
        ctx.acquisitions = Acquisitions(ctx)
        feed.observe = ctx.acquisitions.observe
        return ctx

    def _take_lock(self, ctx: RunContext, redis_client: Any, batch: Batch) -> Optional[DaqLock]:
        if redis_client is None:
            self._notice("no Redis: no runner lock could be taken; another runner could drive this DAQ")
            return None
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "batch": batch.path, "run": self.run_id}

        def lost(reason: str) -> None:
            self.lock_lost = self.lock_lost or reason
            self.request_stop(f"runner lock lost: {reason}")

        lock = DaqLock(redis_client, holder, ttl=self.lock_ttl, on_lost=lost, notify=self._notice)

        def on_held(other: dict) -> None:
            self._emit(events.WAITING, what="lock", seconds=self.lock_wait)
            self._notice(f"waiting up to {self.lock_wait:g} s for the runner lock held by {DaqLock.describe(other)}")

        with bounded(Deadline(cancel=self.stop_event)):
            lock.acquire(wait=self.lock_wait, redis_budget=REDIS_BUDGET_S, on_held=on_held)
        return lock

    def _reachable(self, ctx: RunContext) -> bool:
        """One look at the writer status, riding out an outage for the client's whole budget.

        A DAQ that stays unreachable sets ``daq_lost``: every step is then skipped and
        ``daq-run`` exits 3, with a report.
        """
        with bounded(Deadline(cancel=self.stop_event)):
            try:
                ctx.feed.status()
            except (DaqHTTPError, DaqProtocolError) as exc:
                # Something answers, but not as a Standard DAQ: a wrong port or path, another server.
                self.daq_lost = f"no Standard DAQ REST API there: {_describe(exc)}"
                return False
            except DaqRunnerError as exc:
                if not _daq_gone(exc):
                    raise
                self.daq_lost = f"DAQ unreachable at the start, for the whole retry budget ({self._budget}): {_describe(exc)}"
                return False
        return True

    def _prepare_daq(self, ctx: RunContext) -> None:
        """Before the first step: a writer found UNKNOWN (a freshly started DAQ) is reset once."""
        with bounded(Deadline(_PRE_RUN_BUDGET_S, cancel=self.stop_event)):
            try:
                if ctx.feed.status().get("state") == UNKNOWN:
                    ctx.reset_writer(None, None, "writer UNKNOWN before the first step (a freshly started DAQ)")
            except (StepFailed, DaqRunnerError) as exc:
                if _daq_gone(exc):
                    self.daq_lost = f"DAQ unreachable beyond the retry budget ({self._budget}): {_describe(exc)}"
                    return
                self._notice(f"could not reset the writer before the first step: {_describe(exc)}")

    # -- steps ------------------------------------------------------------------------------

    def _run_steps(self, ctx: RunContext, batch: Batch, plan: "_Progress", previous: Dict[str, List[dict]]) -> str:
        outcome = "passed"
        reapply: Dict[str, Any] = {}  # configuration established by kept config steps, not yet applied
        reapply_from: List[int] = []
        for step in batch.steps:
            if self._settle_background(ctx, plan) == "abort":
                return "failed"
            kept = previous.get(step.identity) if previous else None
            if kept:
                record = kept.pop(0)
                plan.emitted(step)
                self._emit(events.STEP_FINISHED, step, **{**record, "index": step.index, "name": step.name, "resumed": True})
                if isinstance(step, ConfigStep):
                    reapply.update(step.config)
                    reapply_from.append(step.index)
                continue
            if self.stop_event.is_set():
                return "interrupted"
            plan.current = step
            status = self._run_step(ctx, step, plan, (reapply, reapply_from))
            if status == "interrupted":
                return "interrupted"
            if self.daq_lost is not None or self.lock_lost is not None:
                return "failed"
            if status == "failed":
                outcome = "failed"
                if step.on_error == "abort":
                    return outcome
        if self._settle_background(ctx, plan, wait=True) == "failed":
            outcome = "failed"
        return outcome

    def _run_step(self, ctx: RunContext, step: Step, plan: "_Progress", reapply: Tuple[Dict[str, Any], List[int]]) -> str:
        self._step = ctx.step = step
        started = time.time()
        result: Dict[str, Any] = {"recoveries": [], "failed_attempts": []}
        plan.result, plan.started = result, started
        handler = HANDLERS[step.kind]
        deadline = Deadline(step.timeout, cancel=self.stop_event)
        status, error, attempt = "failed", None, 0
        background: Optional[Acquisition] = None
        try:
            with bounded(deadline):
                for attempt in range(1, step.retries + 2):
                    self._emit(events.STEP_STARTED, step, **_started_data(step, attempt))
                    try:
                        if reapply[0]:
                            self._reapply_config(ctx, step, result, *reapply)
                        background = handler(ctx, step, result, attempt)
                        status, error = "passed", None
                        break
                    except (StepFailed, DaqRunnerError) as exc:
                        timed_out = deadline.expired or isinstance(exc, DeadlineExceeded)
                        error = _describe(exc, step if timed_out else None)
                        result["failed_attempts"].append({"attempt": attempt, "error": error, "at": time.time()})
                        if _daq_gone(exc) and not timed_out:
                            self.daq_lost = f"DAQ unreachable beyond the retry budget ({self._budget})"
                        will_retry = (
                            attempt <= step.retries
                            and self.daq_lost is None
                            and self.lock_lost is None
                            and not timed_out
                            and deadline.remaining() > self.retry_delay
                        )
                        self._emit(events.ATTEMPT_FAILED, step, attempt=attempt, error=error, will_retry=will_retry)
                        if not will_retry:
                            break
                        deadline.sleep(self.retry_delay)
        except (Interrupted, KeyboardInterrupt):
            self.request_stop("SIGINT")
            if self.lock_lost is not None:
                status, error = "failed", f"runner lock lost: {self.lock_lost}"
            else:
                status, error = "interrupted", f"interrupted ({self.stop_reason or 'stop requested'})"
        finally:
            self._step = ctx.step = None
        if status != "passed":
            # An acquisition this step started that may still run is stopped (its own budget,
            # outside the step's time limit).
            acquisition = ctx.acquisitions.by_step.get(step.index)
            if acquisition is not None:
                self._end_acquisition(ctx, acquisition, error or status, result)
        record = _record(step, status, attempt, started, result, error)
        if background is None:
            # Done with it: memory must not grow with the number of finished steps.
            ctx.acquisitions.by_step.pop(step.index, None)
        if background is not None:
            background.record = record
            plan.pending(step)
            return "passed"
        plan.emitted(step)
        if status != "passed" and plan.first_failure is None:
            plan.first_failure = f"step {step.index} ({step.name}) {status}: {error}"
        self._emit(events.STEP_FINISHED, step, **record)
        return status

    def _reapply_config(self, ctx: RunContext, step: Step, result: dict, reapply: Dict[str, Any], sources: List[int]) -> None:
        """Resume: the configuration that passed (kept) config steps established, applied again."""
        config = ctx.client.get_config() or {}
        changes = {key: value for key, value in reapply.items() if config.get(key) != value}
        if changes:
            ctx.ready_for_writer(step, result, purpose="re-applying the configuration")
            ctx.guard()
            ctx.client.update_config(changes)
            steps = ", ".join(str(i) for i in sources)
            text = ", ".join(f"{k}={v}" for k, v in changes.items())
            record = {"reason": f"resume: configuration established by passed step(s) {steps}", "action": f"update_config {text}", "outcome": "applied", "at": time.time()}
            result["recoveries"].append(record)
            self._emit(events.RECOVERY, step, **record)
            self._notice(f"re-applied the configuration {text} established by passed step(s) {steps} before step {step.index}")
        ctx.established.update(reapply)
        reapply.clear()
        sources.clear()

    def _end_acquisition(self, ctx: RunContext, acquisition: Acquisition, reason: str, result: dict) -> None:
        """An acquisition of a step that did not pass: stopped if it may still run, and what it
        left (its partial file, the images in it) recorded on the step."""
        stopped_now = not acquisition.ended
        if stopped_now:
            self._stop(ctx, acquisition, reason, result)
        # A stopped acquisition is logged FINISHED with its final count: worth a short wait.
        log_wait = (min(_END_LOG_WAIT_S, self._hurry_s) if self._hurry_s is not None else _END_LOG_WAIT_S) if stopped_now else 0.0
        ctx.acquisitions.record_end(acquisition, result, log_wait)

    def _stop(self, ctx: RunContext, acquisition: Acquisition, reason: str, result: dict) -> None:
        self._cleanup = Deadline(self._hurry_s if self._hurry_s is not None else STOP_BUDGET_S)
        try:
            # The deadline object itself: a second signal shortens it while the stop is under way.
            record = ctx.acquisitions.stop(acquisition, reason, self._cleanup)
        finally:
            self._cleanup = None
        result["recoveries"].append(record)
        self._emit(events.RECOVERY, acquisition.step, **record)

    # -- acquisitions in the background -------------------------------------------------------

    def _settle_background(self, ctx: RunContext, plan: "_Progress", wait: bool = False) -> Optional[str]:
        """Record background acquisitions that ended; with ``wait``, wait for the others first.

        Returns ``"abort"`` when one failed and its step says ``on_error: abort``, ``"failed"``
        when one failed otherwise, else ``None``.
        """
        acquisitions = ctx.acquisitions
        verdict = None
        ended = acquisitions.background() if wait else acquisitions.poll_background()
        for acq in ended:
            if wait:
                left = max(acq.deadline_at - time.monotonic(), 0.0)
                self._emit(events.WAITING, acq.step, what=f"background acquisition of {acq.step.output_file}", seconds=left)
            status = self._follow_background(ctx, acq)
            plan.emitted(acq.step)
            if status != "passed":
                error = (acq.record or {}).get("error")
                plan.first_failure = plan.first_failure or f"step {acq.step.index} ({acq.step.name}) {status}: {error}"
                verdict = "abort" if acq.step.on_error == "abort" and not wait else (verdict or "failed")
        return verdict

    def _follow_background(self, ctx: RunContext, acq: Acquisition) -> str:
        """Follow a background acquisition to its end (bounded by its step's timeout), record it."""
        record = acq.record or {}
        error = None
        self._step = ctx.step = acq.step
        try:
            with bounded(Deadline(cancel=self.stop_event, at=acq.deadline_at)):
                try:
                    ctx.acquisitions.follow(acq, record)
                    status = "passed"
                except (StepFailed, DaqRunnerError) as exc:
                    status, error = "failed", _describe(exc)
                    # The attempt that started it failed after all: recorded as a failed
                    # attempt, as for the same write with wait: true.
                    attempts = record.setdefault("failed_attempts", [])
                    attempts.append({"attempt": record.get("attempts") or 1, "error": error, "at": time.time()})
        except (Interrupted, KeyboardInterrupt):
            self.request_stop("SIGINT")
            status, error = "interrupted", f"interrupted ({self.stop_reason or 'stop requested'})"
        finally:
            self._step = ctx.step = None
        if status != "passed":
            self._end_acquisition(ctx, acq, error or status, record)
        self._finish_record(acq.step, record, status, error)
        return status

    def _finish_record(self, step: Step, record: dict, status: str, error: Optional[str]) -> None:
        finished = time.time()
        record.update(status=status, error=error, finished_at=finished)
        if record.get("started_at"):
            record["duration_s"] = round(finished - record["started_at"], 6)
        self._emit(events.STEP_FINISHED, step, **record)

    # -- the end, written once ------------------------------------------------------------------

    def _finish(self, ctx: Optional[RunContext], plan: "_Progress", outcome: str) -> str:
        """Stop what may still run, give every step a record, release the lock, say how it ended."""
        errors: List[BaseException] = []
        reason = self.stop_reason
        if self.lock_lost is not None:
            outcome, reason = "failed", f"runner lock lost: {self.lock_lost}"
        elif self.daq_lost is not None:
            outcome, reason = "failed", self.daq_lost
        why = f"run {outcome}" + (f": {reason}" if reason else "")
        if ctx is not None:
            for acq in list(ctx.acquisitions.running):
                # Acquisitions of steps that have no record yet, or in the background.
                record = acq.record if acq.record is not None else None
                target = record if record is not None else (plan.result if acq.step is plan.current else {"recoveries": []})
                try:
                    self._end_acquisition(ctx, acq, f"the run ended early ({why})", target)
                except BaseException as exc:  # keep finishing
                    errors.append(exc)
                if record is not None and plan.is_pending(acq.step):
                    status = "interrupted" if outcome == "interrupted" else "failed"
                    try:
                        self._finish_record(acq.step, record, status, f"not finished: {why}")
                        plan.emitted(acq.step)
                    except BaseException as exc:
                        errors.append(exc)
        # Every step gets exactly one record: the summary always adds up.
        for step, state in plan.unrecorded():
            kept = self._kept.get(step.identity)
            if state == "current":
                status = "interrupted" if outcome == "interrupted" else "failed"
                record = _record(step, status, 1, plan.started, plan.result, f"not finished: {why}")
            elif kept:
                # Still passed in the run resumed: a resume of this report must keep it too.
                record = {**kept.pop(0), "index": step.index, "name": step.name, "resumed": True}
            else:
                record = _record(step, "skipped", 0, None, {}, f"not run: {why}")
            try:
                self._emit(events.STEP_FINISHED, step, **record)
            except BaseException as exc:
                errors.append(exc)
                break
        if ctx is not None and ctx.lock is not None:
            ctx.lock.release()
        if reason is None and outcome != "passed":
            reason = plan.first_failure
        try:
            self._emit(
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


class _Progress:
    """Which steps of the plan have their record: the summary must always add up."""

    def __init__(self, steps: Tuple[Step, ...]) -> None:
        self.steps = steps
        self._done = 0  # steps[:_done] are recorded or pending in the background
        self._pending: Dict[int, Step] = {}
        self.current: Optional[Step] = None
        self.result: Dict[str, Any] = {"recoveries": [], "failed_attempts": []}  # the current step's record so far
        self.started: Optional[float] = None
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


def _started_data(step: Step, attempt: int) -> Dict[str, Any]:
    data: Dict[str, Any] = {"attempt": attempt, "kind": step.kind, "timeout": step.timeout}
    if isinstance(step, WriteStep):
        data.update(output_file=step.output_file, n_images=step.n_images)
    return data


def _record(step: Step, status: str, attempts: int, started: Optional[float], result: Optional[dict], error: Optional[str] = None) -> dict:
    finished = time.time()
    record: Dict[str, Any] = {
        "index": step.index,
        "name": step.name,
        "kind": step.kind,
        "params": step.params,
        "tags": list(step.tags),
        "identity": step.identity,
        "status": status,
        "attempts": attempts,
        "started_at": started,
        "finished_at": finished if started else None,
        "duration_s": round(finished - started, 6) if started else 0.0,
        "error": error,
    }
    if isinstance(step, WriteStep):
        record.update(
            run_id=None, output_file=step.output_file, n_images=step.n_images, n_written=None, overwrite=step.overwrite,
            acquisition=None, daq_log=None, daq_log_reason=None,
        )
    record["recoveries"] = []
    record["failed_attempts"] = []
    if result:
        record.update(result)
    return record


def _daq_gone(exc: BaseException) -> bool:
    """A transport failure that outlasted the client's whole retry budget.

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
