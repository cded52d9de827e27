"""The rest_v2 Standard DAQ behind the DAQ seam: its REST API, its Redis streams, its writer.

Stop-on-UNKNOWN recovery is written once here (:meth:`RestV2Daq.reset_writer`), and every request
that changes the DAQ first checks the run's lock (``run.guard()``).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .. import events, protocol
from .._deadline import Deadline, current, detached
from .._redis import connect
from .._text import clauses, redact_url, secrets_in
from ..batch import ConfigStep, Step, WriteStep
from ..client import StdDaqClient
from ..daq import READY, UNKNOWN, Acquisition, Daq, Progress, RunServices
from ..exceptions import DaqNeedsRestart, DaqTransportError, StepFailed, WriterNeedsRestart
from ..record import RecoveryRecord, StepRecord
from ._acquisitions import TrackedAcquisition, Tracker
from ._config import ConfigWatch
from ._feed import StatusFeed
from ._reads import RestV2Reads
from ._timing import STOP_BUDGET_S, RestV2Timing

if TYPE_CHECKING:  # pragma: no cover
    from ..verify import CheckOptions, Expected, Verification

__all__ = ["RestV2Daq", "STOP_BUDGET_S"]

# A driver that lost track of its writer answers "Cannot reach READY" to the first stop and a
# further one resets it; one that lost an acquisition under it (its writer killed or restarted
# mid-acquisition) answers so to every stop until its REST server restarts: wedged.
_STOPS_FOR_RESET = 3
_PROBE_S = 1.5  # one look at whether the DAQ answers at all


class RestV2Daq(RestV2Reads, Daq):
    """A rest_v2 DAQ: its REST API at ``url``, its Redis at ``redis_url``.

    Args:
        url: base URL of the REST API.
        redis_url: the DAQ's Redis (``None``: REST polling only).
        client: a ready :class:`~daq_runner.client.StdDaqClient` (default: one for ``url``
            that rides out outages of up to ``outage_s`` seconds, telling the run of each).
        streams: the Redis stream names of the DAQ.
        poll_interval: REST polling period without Redis, in seconds.
        outage_s: how long every request rides out an unreachable DAQ.
        timing: the grace periods and pauses of this side (:class:`RestV2Timing`; the
            defaults fit a real DAQ, tests give smaller ones).
    """

    # generation, title, features and config_restart_s: from RestV2Reads (one place, read
    # without importing this module's Redis client when a batch is only validated).

    def __init__(
        self,
        url: str = protocol.DEFAULT_URL,
        redis_url: Optional[str] = None,
        *,
        client: Optional[StdDaqClient] = None,
        streams: protocol.StreamNames = protocol.StreamNames(),
        poll_interval: float = 0.05,
        outage_s: float = protocol.DEFAULT_OUTAGE_S,
        timing: RestV2Timing = RestV2Timing(),
    ) -> None:
        self.url = url
        self.timing = timing
        self.redis_url = redis_url
        self.streams = streams
        self.poll_interval = poll_interval
        self.outage = f"{outage_s:g} s" if client is None else "the client's retries"
        self.client = client or StdDaqClient(url, retries=1000, retry_deadline=outage_s, on_retry=self._on_client_retry)
        self.run_or_none: Optional[RunServices] = None
        self._redis: Any = None
        self._feed: Optional[StatusFeed] = None
        self._tracker: Optional[Tracker] = None
        self._rates_client: Optional[StdDaqClient] = None
        self._config: Optional[ConfigWatch] = None
        self._last_retry_notice = 0.0
        self._probe: Optional[StdDaqClient] = None  # its own client: asked from the lock's thread
        self._probe_guard = threading.Lock()

    # -- one run -------------------------------------------------------------------------------

    @property
    def run(self) -> RunServices:
        if self.run_or_none is None:
            raise RuntimeError("the DAQ serves no run: call open() first")
        return self.run_or_none

    @property
    def feed(self) -> StatusFeed:
        assert self._feed is not None, "open() first"
        return self._feed

    @property
    def config(self) -> ConfigWatch:
        """The run's configuration: known, proven before each write (:mod:`._config`)."""
        assert self._config is not None, "open() first"
        return self._config

    def open(self, run: RunServices) -> None:
        self.run_or_none = run
        self._redis = connect(self.redis_url) if self.redis_url else None
        self._tracker = Tracker(self)
        self._feed = StatusFeed(
            self.client, self._redis, self.streams, self.poll_interval, run.notice, self._tracker.observe, timing=self.timing
        )
        # A client of its own for the rates: a guard reads them from another thread while this
        # run's thread follows an acquisition with the run's client (whose retries tell the run).
        main = self.client
        self._rates_client = StdDaqClient(main.url_base, timeout=main.timeout, retries=main.retries, retry_deadline=main.retry_deadline)
        self._config = ConfigWatch(self)
        self._last_retry_notice = 0.0

    def close(self) -> None:
        rates_client, self._rates_client = self._rates_client, None
        if rates_client is not None:
            rates_client.close()
        redis_client, self._redis = self._redis, None
        self.run_or_none, self._feed, self._tracker, self._config = None, None, None, None
        if redis_client is not None:
            try:
                redis_client.close()
            except Exception:  # closing a connection to a Redis that went away
                pass

    def describe(self) -> Dict[str, Any]:
        return {"generation": self.generation, "url": redact_url(self.url), "redis": redact_url(self.redis_url)}

    def secrets(self) -> Tuple[str, ...]:
        return secrets_in(self.url, self.redis_url)

    def _on_client_retry(self, url: str, attempt: int, error: BaseException, sleep: float) -> None:
        # One notice per outage second is enough for people and logs.
        run = self.run_or_none
        if run is not None and (time.monotonic() - self._last_retry_notice >= 1.0 or attempt == 1):
            self._last_retry_notice = time.monotonic()
            run.notice(clauses(f"DAQ request failed (attempt {attempt}): {error}", "retrying"))

    def check_reachable(self) -> None:
        self.feed.status()

    def answers(self) -> bool:
        """Whether the DAQ works now, one quick look: its REST server answers a request it
        serves from its Redis. One that answers only that it cannot reach its Redis
        (:class:`DaqRedisUnavailable`) counts as down: the runner lock lives in that Redis, so
        nobody can take it meanwhile (the writer status, kept in memory, would say nothing)."""
        with self._probe_guard:
            if self._probe is None:
                self._probe = StdDaqClient(self.url, timeout=_PROBE_S, retries=0)
            try:
                with detached(Deadline(2 * _PROBE_S)):
                    self._probe.request(protocol.DAQ_CONFIG_GET)
            except DaqTransportError:  # DaqRedisUnavailable among them
                return False
            except Exception:  # an HTTP error, a garbled reply: something answers there
                return True
            return True

    def prepare(self) -> None:
        """A writer found UNKNOWN (a freshly started DAQ) is reset once, before the first step;
        the configuration in force becomes the run's starting point."""
        if self.feed.status().get("state") == UNKNOWN:
            self.reset_writer(None, None, "writer UNKNOWN before the first step (a freshly started DAQ)")
        self.config.start()

    # -- reading -----------------------------------------------------------------------------------

    def read_state(self) -> str:
        return str(self.feed.status().get("state"))

    def verify_files(self, step: WriteStep, config: Dict[str, Any], expected: "Expected", options: "CheckOptions") -> "Verification":
        from ..verify import verify_rest_v2

        return verify_rest_v2(step.output_file, expected, options)

    # -- the writer: stop-on-UNKNOWN, written once ----------------------------------------------------

    def reset_writer(self, step: Optional[Step], record: Optional[StepRecord], reason: str) -> None:
        """Send a stop until the writer is READY again and record it as a recovery.

        ``record`` is the step's record (``None``: a pre-run recovery). The configuration is
        compared again before the next write. Raises :class:`DaqNeedsRestart` when every stop
        answers "Cannot reach READY" (a wedged driver), :class:`StepFailed` when the writer
        does not return to READY otherwise.
        """
        entry: RecoveryRecord = {"reason": reason, "action": "stop_writer", "at": time.time()}
        run = self.run
        run.guard()
        cursor = self.feed.mark()
        reply: Optional[dict] = None
        refusal: Optional[Exception] = None
        self.config.writer_reset()
        for _ in range(_STOPS_FOR_RESET):
            try:
                reply = self.client.stop_writer()
                break
            except WriterNeedsRestart as exc:
                refusal = exc
        ready = reply if reply is not None and reply.get("state") == READY else None
        if ready is None and reply is not None:
            ready = self.feed.wait_for_status(lambda s: s.get("state") == READY, self.timing.ready_after_stop_s, cursor)
        if ready is not None:
            entry["outcome"] = READY
        elif reply is None:
            entry["outcome"] = f"still not READY: the DAQ answered {refusal}"
        else:
            entry["outcome"] = "still not READY"
        run.add_recovery(record, step, entry)
        if reply is None:
            raise DaqNeedsRestart(
                f"the DAQ's writer driver is wedged: {_STOPS_FOR_RESET} stops in a row answered {refusal} ({reason}); "
                "no stop can reset it: restart the DAQ's REST server, then run the rest again (daq-run --resume REPORT)"
            )
        if ready is None:
            raise StepFailed(f"the writer did not return to READY after a stop ({reason}): {entry['outcome']}")

    def wait_ready(self, step: Step, record: StepRecord, purpose: Optional[str]) -> str:
        return str(self.ready_status(step, record, purpose).get("state"))

    def ready_status(self, step: Step, record: StepRecord, purpose: Optional[str] = "the write") -> dict:
        """The writer status once READY: resets an UNKNOWN writer, waits out a running acquisition.

        The wait is bounded by the step's time left; a READY read from the stream is confirmed
        over REST (a real DAQ stores each status twice and the copies can interleave). After a
        reset the configuration is proven again before a write (:meth:`ConfigWatch.prove`).
        """
        return self._ready(step, record, purpose)[0]

    def _ready(self, step: Step, record: StepRecord, purpose: Optional[str]) -> "tuple[dict, bool]":
        """The writer status once READY, and whether an UNKNOWN writer had to be reset."""
        # The cursor is taken before each look, so that the end of the acquisition cannot slip
        # between the look and the wait.
        reset = False
        cursor = self.feed.mark()
        status = self.feed.status()
        while status.get("state") != READY:
            if status.get("state") == UNKNOWN:
                reset = True
                self.reset_writer(step, record, f"writer UNKNOWN before {purpose or 'the step'}")
            else:
                acquisition = (status.get("acquisition") or {}).get("info") or {}
                running = f"acquisition {acquisition.get('run_id')} of {acquisition.get('output_file')}"
                self.run.emit(events.WAITING, step, what=f"writer READY ({running} is running)", seconds=None)
                if self.feed.wait_for_status(lambda s: s.get("state") in (READY, UNKNOWN), since=cursor) is None:
                    raise StepFailed(
                        f"an acquisition is running ({running}) and the writer did not become READY in time"
                        + (f"; {purpose} was not started" if purpose else "")
                    )
            cursor = self.feed.mark()
            status = self.feed.status()
        return status, reset

    def wait_for_state(self, state: str, step: Step) -> bool:
        cursor = self.feed.mark()
        return self.feed.wait_for_status(lambda s: s.get("state") == state, since=cursor) is not None

    # -- changing -----------------------------------------------------------------------------------

    def configure(self, step: ConfigStep, record: StepRecord) -> None:
        run = self.run
        # Never under a running acquisition: the real server would restart the writer and lose it.
        self.ready_status(step, record, purpose="the configuration change")
        run.guard()
        run.emit(events.WAITING, step, what="deployment", seconds=current().remaining())

        def seen(deployment: dict) -> None:
            record.deployment = deployment

        applied = self.config.update(step.config, seen)
        record.deployment, record.config, record.config_id = applied.deployment, applied.config, applied.config_id
        run.established.update(step.config)
        # The step ends when the DAQ runs the new config: its services restarted and back.
        record.restart = self.config.wait_restart(step, record) or applied.restart
        if self.feed.status().get("state") == UNKNOWN:
            self.reset_writer(step, record, "writer UNKNOWN after the deployment")

    def apply_config(self, changes: Dict[str, Any], step: Step, record: StepRecord) -> None:
        self.ready_status(step, record, purpose="re-applying the configuration")
        self.config.update(changes)
        self.config.wait_restart(step, record)

    def stop_writer(self, step: Step, record: StepRecord) -> None:
        run = self.run
        # Acquisitions of this batch running in the background end here on purpose.
        for acquisition in run.acquisitions.background():
            acquisition.stopped_by = step.index
        run.guard()
        cursor = self.feed.mark()
        try:
            status = self.client.stop_writer()
        except WriterNeedsRestart as exc:
            self.reset_writer(step, record, f"the DAQ could not stop the writer: {exc}")
            status = self.feed.status()
        if status.get("state") != READY:
            status = self.feed.wait_for_status(lambda s: s.get("state") == READY, since=cursor)
            if status is None:
                raise StepFailed("writer did not return to READY after the stop")
        record.acquisition = status.get("acquisition")

    # -- acquisitions ----------------------------------------------------------------------------------

    def _tracked(self) -> Tracker:
        assert self._tracker is not None, "open() first"
        return self._tracker

    def start(self, step: WriteStep, record: StepRecord) -> Acquisition:
        return self._tracked().start(step, record)

    def follow(self, acquisition: Acquisition, record: StepRecord, progress: Optional[Progress] = None) -> None:
        assert isinstance(acquisition, TrackedAcquisition)
        self._tracked().follow(acquisition, record, progress)
        # Passed: confirmed by the DAQ's log record of it, or (its log not required) by its status.
        record.confirmed_by = "daq_log" if record.daq_log is not None else "status"

    def stop(self, acquisition: Acquisition, reason: str, deadline: Deadline) -> RecoveryRecord:
        assert isinstance(acquisition, TrackedAcquisition)
        return self._tracked().stop(acquisition, reason, deadline)  # type: ignore[return-value]

    def record_end(self, acquisition: Acquisition, record: StepRecord, log_wait: float = 0.0) -> None:
        assert isinstance(acquisition, TrackedAcquisition)
        self._tracked().record_end(acquisition, record, log_wait)

    def poll_background(self, wait: bool = False) -> List[Acquisition]:
        if wait:
            return list(self.run.acquisitions.background())
        return list(self._tracked().poll_background())
