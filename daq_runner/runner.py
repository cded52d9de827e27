"""The Runner: the only code with side effects on the DAQ.

It takes a validated :class:`~daq_runner.batch.Batch`, runs its steps in order with
retries, ``on_error`` and stop-on-UNKNOWN recovery, waits on Redis (or REST), and tells
consumers what happens through :class:`~daq_runner.events.Event` objects. It knows
nothing about progress bars, log formats or report files.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from . import api, events
from ._redis import connect, redact_url
from .batch import Batch, CheckStep, ConfigStep, Step, StopStep, WaitStep, WriteStep
from .client import StdDaqClient
from .exceptions import DaqRunnerError, DaqTransportError, LockHeldError, StdDaqAdminException, WriteOutcomeUnknown
from .feed import Interrupted, StatusFeed
from .lock import DaqLock
from .report import ReportRecorder, RunReport

__all__ = ["Runner", "StepFailed"]

_LOG_WAIT_S = 3.0
_READY_AFTER_STOP_S = 10.0
_VANISHED_AFTER_S = 2.0
_STOP_BUDGET_S = 5.0  # after a stop request: try this long to stop our acquisition, then exit
_DEPLOY_POLL_S = 0.05


class StepFailed(Exception):
    """A step attempt failed; the message says why (and what the DAQ said)."""


_run_ids = itertools.count()


def _new_run_id() -> int:
    # Unique per process and increasing: time in ns plus a counter against equal clocks.
    return time.time_ns() + next(_run_ids) % 1000


class Runner:
    """Runs batches against one DAQ.

    Args:
        url: base URL of the DAQ's REST API.
        redis_url: the DAQ's Redis (``None``: REST polling only).
        consumers: callables receiving every :class:`~daq_runner.events.Event`.
        client: a ready :class:`StdDaqClient` (default: one for ``url`` that rides out
            REST outages of up to ``outage_s`` seconds).
        streams: Redis stream names of the DAQ.
        poll_interval: REST polling period when Redis is not available.
        retry_delay: pause between attempts of a failed step.
        outage_s: how long every request rides out an unreachable DAQ (connection
            refused, timeouts, HTTP 502/503/504). Beyond it the DAQ counts as gone: the
            step fails and the rest of the run is skipped, whatever their ``on_error``.
        require_log: a write passes only when the DAQ's own log records it.
        lock: take the DAQ's runner lock in its Redis (see :class:`~daq_runner.lock.DaqLock`).
        lock_wait: seconds to wait for a lock held by another runner.

    Example::

        report = Runner(url="http://127.0.0.1:5000").run(load_batch("scan.yaml"))
        assert report.status == "passed"
    """

    def __init__(
        self,
        url: str = api.DEFAULT_URL,
        redis_url: Optional[str] = None,
        consumers: Iterable[events.Consumer] = (),
        *,
        client: Optional[StdDaqClient] = None,
        streams: api.StreamNames = api.StreamNames(),
        poll_interval: float = 0.05,
        retry_delay: float = 1.0,
        outage_s: float = api.DEFAULT_OUTAGE_S,
        require_log: bool = True,
        lock: bool = True,
        lock_wait: float = 0.0,
    ) -> None:
        self.url = url
        self.redis_url = redis_url
        self.consumers: List[events.Consumer] = list(consumers)
        self.stop_event = threading.Event()
        self.stop_reason: Optional[str] = None
        self.daq_lost: Optional[str] = None  # why the DAQ is considered gone for this run
        self.client = client or StdDaqClient(
            url,
            timeout=5.0,
            retries=1000,
            retry_deadline=outage_s,
            on_retry=self._on_client_retry,
            sleep=self._retry_sleep,
        )
        self.streams = streams
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.require_log = require_log
        self.use_lock = lock
        self.lock_wait = lock_wait
        self._budget = f"{outage_s:g} s" if client is None else "the client's retries"
        self.run_id = ""
        self._step: Optional[Step] = None
        self._own_acquisition: Optional[int] = None  # run_id of an acquisition we started and have not seen end
        self._last_retry_notice = 0.0

    # -- consumers -------------------------------------------------------------------

    def subscribe(self, consumer: events.Consumer) -> None:
        """Add a consumer of the run's events."""
        self.consumers.append(consumer)

    def _emit(self, kind: str, step: Optional[Step] = None, /, **data: Any) -> None:
        event = events.Event(kind, self.run_id, step.index if step else None, step.name if step else None, data)
        for consumer in self.consumers:
            consumer(event)

    def _notice(self, message: str) -> None:
        self._emit(events.NOTICE, self._step, message=message)

    def _retry_sleep(self, seconds: float) -> None:
        # The client's pause between retries: a stop request ends a DAQ outage wait at once.
        if self.stop_event.wait(seconds):
            raise Interrupted()

    def _on_client_retry(self, url: str, attempt: int, error: BaseException, sleep: float) -> None:
        # One notice per outage second is enough for people and logs.
        if time.monotonic() - self._last_retry_notice >= 1.0 or attempt == 1:
            self._last_retry_notice = time.monotonic()
            self._notice(f"DAQ request failed (attempt {attempt}): {error}; retrying")

    # -- control -----------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the run to stop: the current step is interrupted and its acquisition stopped.

        Safe to call from a signal handler or another thread.
        """
        self.stop_reason = self.stop_reason or reason
        self.stop_event.set()

    def check_reachable(self) -> dict:
        """One status request with a short retry budget; raises ``DaqTransportError`` if unreachable."""
        probe = StdDaqClient(self.url, timeout=3.0, retries=2, session=self.client.session)
        return probe.get_status()

    # -- the run ------------------------------------------------------------------------

    def run(self, batch: Batch, previous: Optional[Dict[int, dict]] = None) -> RunReport:
        """Run ``batch`` and return its :class:`RunReport`.

        Args:
            previous: report records of steps that passed in an earlier run
                (``--resume``), keyed by step index; those steps are not run again.
        """
        previous = previous or {}
        self.run_id = uuid.uuid4().hex[:12]
        recorder = ReportRecorder()
        self.consumers.insert(0, recorder)
        redis_client = connect(self.redis_url) if self.redis_url else None
        feed = StatusFeed(self.client, redis_client, self.streams, self.stop_event, self.poll_interval, self._notice)
        lock = None
        self._emit(
            events.RUN_STARTED,
            batch={"name": batch.name, "path": batch.path, "sha256": batch.sha256},
            daq={"url": redact_url(self.url), "redis": redact_url(self.redis_url)},
            n_steps=len(batch.steps),
        )
        outcome = "passed"
        try:
            if self.use_lock:
                lock = self._take_lock(redis_client, batch)
            outcome = self._run_steps(batch, feed, previous)
        except KeyboardInterrupt:
            self.request_stop("SIGINT")
            outcome = "interrupted"
        except BaseException as exc:
            outcome = "failed"
            self.stop_reason = self.stop_reason or f"runner error: {exc}"
            raise
        finally:
            try:
                # Whatever ended the run (a stop, a crash in a consumer, a bug), an
                # acquisition this runner started and did not see end is stopped.
                self._stop_own_acquisition("run interrupted" if outcome == "interrupted" else f"run ended ({outcome})")
            finally:
                if lock is not None:
                    lock.release()
                self._emit(
                    events.RUN_FINISHED,
                    status=outcome,
                    reason=self.stop_reason or self.daq_lost,
                    daq_unreachable=self.daq_lost is not None,
                )
                self.consumers.remove(recorder)
                if redis_client is not None:
                    redis_client.close()
        return recorder.report

    def _take_lock(self, redis_client: Any, batch: Batch) -> Optional[DaqLock]:
        if redis_client is None:
            self._notice("no Redis: no runner lock could be taken; another runner could drive this DAQ")
            return None
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "batch": batch.path, "run": self.run_id}
        lock = DaqLock(redis_client, holder)

        def on_held(other: dict) -> None:
            self._notice(
                f"waiting up to {self.lock_wait:g} s for the runner lock held by host {other.get('host', '?')}, "
                f"pid {other.get('pid', '?')}, batch {other.get('batch', '?')}"
            )

        try:
            lock.acquire(wait=self.lock_wait, stop_event=self.stop_event, on_held=on_held)
        except LockHeldError:
            if self.stop_event.is_set():
                return None  # told to stop while waiting: every step is skipped, nothing is sent
            raise
        except DaqRunnerError as exc:
            self._notice(f"no runner lock could be taken: {exc}")
            return None
        return lock

    def _run_steps(self, batch: Batch, feed: StatusFeed, previous: Dict[int, dict]) -> str:
        outcome = "passed"
        for position, step in enumerate(batch.steps):
            if step.index in previous:
                self._emit(events.STEP_FINISHED, step, **{**previous[step.index], "resumed": True})
                continue
            if self.stop_event.is_set():
                self._skip(batch.steps[position:], "run interrupted")
                return "interrupted"
            status = self._run_step(step, feed)
            if status == "interrupted":
                self._skip(batch.steps[position + 1 :], "run interrupted")
                return "interrupted"
            if self.daq_lost is not None:
                # Every further request would wait out the whole outage budget again.
                self._skip(batch.steps[position + 1 :], self.daq_lost)
                return "failed"
            if status == "failed":
                outcome = "failed"
                if step.on_error == "abort":
                    self._skip(batch.steps[position + 1 :], f"step {step.index} failed")
                    return outcome
        return outcome

    def _skip(self, steps: Sequence[Step], reason: str) -> None:
        for step in steps:
            self._emit(events.STEP_FINISHED, step, **self._record(step, "skipped", 0, None, None, error=f"not run: {reason}"))

    def _record(self, step: Step, status: str, attempts: int, started: Optional[float], result: Optional[dict], error: Optional[str] = None) -> dict:
        finished = time.time()
        record: Dict[str, Any] = {
            "index": step.index,
            "name": step.name,
            "kind": step.kind,
            "params": step.params,
            "tags": list(step.tags),
            "status": status,
            "attempts": attempts,
            "started_at": started,
            "finished_at": finished if started else None,
            "duration_s": round(finished - started, 6) if started else 0.0,
            "error": error,
        }
        if isinstance(step, WriteStep):
            record.update({"run_id": None, "output_file": step.output_file, "n_images": step.n_images, "acquisition": None, "daq_log": None, "daq_log_reason": None})
        record["recoveries"] = []
        record["failed_attempts"] = []
        if result:
            record.update(result)
        return record

    def _run_step(self, step: Step, feed: StatusFeed) -> str:
        self._step = step
        started = time.time()
        handler: Callable[[Step, StatusFeed, float, dict], Optional[dict]] = self._handlers[type(step)]
        result: dict = {"recoveries": []}
        error = None
        attempt = 0
        status = "failed"
        try:
            for attempt in range(1, step.retries + 2):
                self._emit(events.STEP_STARTED, step, attempt=attempt)
                deadline = time.monotonic() + step.timeout
                try:
                    handler(self, step, feed, deadline, result)
                    status, error = "passed", None
                    break
                except (StepFailed, StdDaqAdminException, DaqRunnerError) as exc:
                    error = _describe(exc)
                    # Every failed attempt stays in the report, also when a later one passes.
                    result.setdefault("failed_attempts", []).append({"attempt": attempt, "error": error, "at": time.time()})
                    if _daq_gone(exc):
                        self.daq_lost = f"DAQ unreachable beyond the retry budget ({self._budget})"
                    will_retry = attempt <= step.retries and self.daq_lost is None
                    self._emit(events.ATTEMPT_FAILED, step, attempt=attempt, error=error, will_retry=will_retry)
                    if not will_retry:
                        break
                    feed.sleep(self.retry_delay)
        except (Interrupted, KeyboardInterrupt):
            status, error = "interrupted", f"interrupted ({self.stop_reason or 'stop requested'})"
            self.request_stop(self.stop_reason or "SIGINT")
            self._stop_own_acquisition(error, result)
        finally:
            self._step = None
        self._emit(events.STEP_FINISHED, step, **self._record(step, status, attempt, started, result, error))
        return status

    # -- recovery and cleanup, written once ------------------------------------------------

    def _recover_unknown(self, step: Step, feed: StatusFeed, result: dict, reason: str) -> None:
        """Stop-on-UNKNOWN: send a stop, wait for READY, record it."""
        record = {"reason": reason, "action": "stop_writer", "at": time.time()}
        self.client.stop_writer()
        ready = feed.wait_for_status(lambda s: s.get("state") == api.WriterState.READY.value, _READY_AFTER_STOP_S)
        record["outcome"] = "READY" if ready else "still not READY"
        result.setdefault("recoveries", []).append(record)
        self._emit(events.RECOVERY, step, **record)
        if not ready:
            raise StepFailed(f"writer was UNKNOWN and did not return to READY after a stop ({reason})")

    def _stop_own_acquisition(self, reason: str, result: Optional[dict] = None) -> None:
        """Stop the acquisition this runner started, if it is still running. Never raises.

        Rides out a DAQ outage for a few seconds only: it runs when the runner has been
        told to stop. What it did is a recovery of the step (in ``result``) and an event.
        """
        run_id, self._own_acquisition = self._own_acquisition, None
        if run_id is None:
            return
        record = {"reason": reason, "action": "stop_writer", "at": time.time()}
        try:
            # Once the DAQ has failed for the whole outage budget, one more try is enough.
            budget = 0.0 if self.daq_lost else _STOP_BUDGET_S
            probe = StdDaqClient(self.url, timeout=2.0, retries=100, retry_deadline=budget, session=self.client.session)
            status = probe.get_status()
            if status.get("state") != api.WriterState.WRITING.value or api.acquisition_run_id(status) != run_id:
                return  # it ended by itself
            probe.stop_writer()
            record["outcome"] = f"stopped acquisition {run_id}"
        except Exception as exc:  # best effort: the DAQ may be gone
            record["outcome"] = f"could not stop acquisition {run_id}, it may still be running: {exc}"
            self._notice(record["outcome"])
        if result is not None:
            result.setdefault("recoveries", []).append(record)
        self._emit(events.RECOVERY, self._step, **record)

    def _ready_for_writer(self, step: Step, feed: StatusFeed, deadline: float, result: dict) -> dict:
        """Writer status once READY: recovers UNKNOWN, waits out a running acquisition."""
        status = self.client.get_status()
        if status.get("state") == api.WriterState.UNKNOWN.value:
            self._recover_unknown(step, feed, result, "writer UNKNOWN before the step")
            status = self.client.get_status()
        if status.get("state") != api.WriterState.READY.value:
            since = feed.mark()
            status = feed.wait_for_status(
                lambda s: s.get("state") in (api.WriterState.READY.value, api.WriterState.UNKNOWN.value),
                max(deadline - time.monotonic(), 0.0),
                since,
            ) or self.client.get_status()
            if status.get("state") == api.WriterState.UNKNOWN.value:
                self._recover_unknown(step, feed, result, "writer UNKNOWN before the step")
            elif status.get("state") != api.WriterState.READY.value:
                raise StepFailed(f"writer still {status.get('state')} when the step timed out (another acquisition running)")
        return status

    # -- step handlers -------------------------------------------------------------------

    def _do_write(self, step: WriteStep, feed: StatusFeed, deadline: float, result: dict) -> None:
        self._ready_for_writer(step, feed, deadline, result)
        run_id = _new_run_id()
        request = {"output_file": step.output_file, "n_images": step.n_images, "run_id": run_id}
        result.update(run_id=run_id, acquisition=None, daq_log=None, daq_log_reason=None)
        status_mark = feed.mark()
        log_mark = feed.mark(self.streams.log)
        started = time.monotonic()
        # Our run_id has shown up in the statuses read *in order* (stream or live REST).
        # Not the start's reply: the stream may still hold an older READY status published
        # between the mark and the start, which must not read as "ours has vanished".
        seen_ours = False
        try:
            self.client.start_writer_async(request)
        except WriteOutcomeUnknown as exc:
            # The reply was lost: our run_id tells whether the acquisition started.
            status = self.client.get_status()
            if api.acquisition_run_id(status) != run_id:
                if status.get("state") != api.WriterState.READY.value:
                    raise StepFailed(f"write request lost ({exc}) and the writer is {status.get('state')}") from None
                self._notice(f"write request lost ({exc}); it did not start, sending it once more")
                self.client.start_writer_async(request)
            else:
                self._notice(f"write request reply lost ({exc}); acquisition {run_id} did start")
        self._own_acquisition = run_id
        if not step.wait:
            result["acquisition"] = None
            result["daq_log_reason"] = "not waited for (wait: false)"
            self._own_acquisition = None  # it is meant to go on after this step
            return

        def ended(status: dict) -> bool:
            nonlocal seen_ours
            if status.get("state") == api.WriterState.UNKNOWN.value:
                return True
            if api.acquisition_run_id(status) == run_id:
                seen_ours = True
                return (status.get("acquisition") or {}).get("state") in ("FINISHED", "FAILED")
            # READY without our acquisition once it had started: the DAQ lost it (a restart).
            # Before we have seen it, allow for statuses published before the start took effect.
            return status.get("state") == api.WriterState.READY.value and (
                seen_ours or time.monotonic() - started > _VANISHED_AFTER_S
            )

        def progress(status: dict) -> None:
            if api.acquisition_run_id(status) == run_id:
                acquisition = status["acquisition"]
                self._emit(
                    events.PROGRESS,
                    step,
                    n_written=(acquisition.get("stats") or {}).get("n_write_completed", 0),
                    n_images=step.n_images,
                    state=acquisition.get("state"),
                )

        final = feed.wait_for_status(ended, max(deadline - time.monotonic(), 0.0), status_mark, progress)
        if final is None:
            status = self.client.get_status()
            done = ((status.get("acquisition") or {}).get("stats") or {}).get("n_write_completed", 0)
            self._stop_own_acquisition(f"step timeout ({step.timeout:g} s)", result)
            result["acquisition"] = self.client.get_status().get("acquisition")
            raise StepFailed(f"timed out after {step.timeout:g} s with {done}/{step.n_images} images written; acquisition stopped")
        self._own_acquisition = None
        acquisition = final.get("acquisition") or {}
        if final.get("state") == api.WriterState.READY.value and api.acquisition_run_id(final) != run_id:
            result["acquisition"] = acquisition or None
            raise StepFailed(f"acquisition {run_id} vanished: the writer is READY with no record of it (was the DAQ restarted?)")
        if final.get("state") == api.WriterState.UNKNOWN.value:
            result["acquisition"] = acquisition
            self._recover_unknown(step, feed, result, "writer UNKNOWN during the acquisition")
            raise StepFailed("writer went UNKNOWN during the acquisition; it was lost (writer reset to READY)")
        result["acquisition"] = acquisition
        stats = acquisition.get("stats") or {}
        message = acquisition.get("message")
        if acquisition.get("state") == api.AcquisitionState.FAILED.value:
            raise StepFailed(f"acquisition FAILED: {message}")
        if stats.get("n_write_completed") != step.n_images:
            raise StepFailed(f"acquisition ended '{message}' with {stats.get('n_write_completed')}/{step.n_images} images written")
        record, source = feed.find_log(run_id, log_mark, _LOG_WAIT_S)
        result["daq_log"] = record
        result["daq_log_reason"] = source if record is None else None
        result["daq_log_source"] = source if record is not None else None
        if record is None and self.require_log:
            raise StepFailed(f"acquisition FINISHED but the DAQ did not log it: {source}")

    def _do_config(self, step: ConfigStep, feed: StatusFeed, deadline: float, result: dict) -> None:
        before = self.client.get_deployment_status().get("config_id")
        applied = self.client.set_config(step.config)
        result["config"] = applied
        deployment = feed.watch_value(
            self.client.get_deployment_status,
            lambda d: d.get("config_id") != before and d.get("status") in ("SUCCESS", "ERROR"),
            max(deadline - time.monotonic(), 0.0),
            _DEPLOY_POLL_S,
        )
        result["deployment"] = deployment
        if deployment.get("config_id") == before or deployment.get("status") not in ("SUCCESS", "ERROR"):
            raise StepFailed(f"deployment not finished in time: {deployment.get('status')} ({deployment.get('message')})")
        if deployment.get("status") == "ERROR":
            raise StepFailed(f"deployment failed: {deployment.get('message')}")
        if step.settle:
            feed.sleep(min(step.settle, max(deadline - time.monotonic(), 0.0)))

    def _do_check(self, step: CheckStep, feed: StatusFeed, deadline: float, result: dict) -> None:
        problems: List[str] = []
        observed: Dict[str, Any] = {}
        if step.deployment:
            deployment = self.client.get_deployment_status()
            observed["deployment"] = deployment.get("status")
            if deployment.get("status") != step.deployment:
                problems.append(f"deployment is {deployment.get('status')} ({deployment.get('message')}), expected {step.deployment}")
        if step.writer:
            state = self.client.get_status().get("state")
            observed["writer"] = state
            if state != step.writer:
                problems.append(f"writer is {state}, expected {step.writer}")
        if step.config:
            config = self.client.get_config() or {}
            observed["config"] = {k: config.get(k) for k in step.config}
            for key, expected in step.config.items():
                if config.get(key) != expected:
                    problems.append(f"config {key} is {config.get(key)!r}, expected {expected!r}")
        if step.min_detector_rate is not None or step.min_writer_rate is not None:
            stats = self.client.get_stats() or {}
            detector = float(((stats.get("detector") or {}).get("images_per_second")) or 0.0)
            writer = api.writer_rate(stats)
            observed.update(detector_rate=detector, writer_rate=writer)
            if step.min_detector_rate is not None and detector < step.min_detector_rate:
                problems.append(f"detector sends {detector:g} images/s, expected at least {step.min_detector_rate:g}")
            if step.min_writer_rate is not None and writer < step.min_writer_rate:
                problems.append(f"writer writes {writer:g} images/s, expected at least {step.min_writer_rate:g}")
        result["observed"] = observed
        if problems:
            raise StepFailed("; ".join(problems))

    def _do_wait(self, step: WaitStep, feed: StatusFeed, deadline: float, result: dict) -> None:
        if step.seconds is not None:
            feed.sleep(step.seconds)
            return
        if step.state == api.WriterState.READY.value:
            status = self._ready_for_writer(step, feed, deadline, result)
        else:
            since = feed.mark()
            status = feed.wait_for_status(lambda s: s.get("state") == step.state, max(deadline - time.monotonic(), 0.0), since)
            if status is None:
                raise StepFailed(f"writer not {step.state} within {step.timeout:g} s")
        result["writer"] = status.get("state")

    def _do_stop(self, step: StopStep, feed: StatusFeed, deadline: float, result: dict) -> None:
        since = feed.mark()
        status = self.client.stop_writer()
        if status.get("state") != api.WriterState.READY.value:
            status = feed.wait_for_status(lambda s: s.get("state") == api.WriterState.READY.value, max(deadline - time.monotonic(), 0.0), since)
            if status is None:
                raise StepFailed("writer did not return to READY after the stop")
        result["acquisition"] = status.get("acquisition")

    _handlers: Dict[type, Callable[..., None]] = {
        WriteStep: _do_write,
        ConfigStep: _do_config,
        CheckStep: _do_check,
        WaitStep: _do_wait,
        StopStep: _do_stop,
    }


def _daq_gone(exc: BaseException) -> bool:
    """A transport failure that outlasted the client's whole retry budget.

    A lost write reply is not one: it is raised at once and resolved by ``run_id``.
    """
    return isinstance(exc, DaqTransportError) and not isinstance(exc, WriteOutcomeUnknown)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StdDaqAdminException):
        return f"the DAQ refused: {exc}"
    if isinstance(exc, DaqTransportError):
        return f"DAQ unreachable: {exc}"
    return str(exc)
