"""Write only while the detector delivers: a write step's ``guard: {min_detector_rate, for_s, max_wait_s}``.

A write whose detector went silent (beam loss, a dead detector) either waits for images until
its timeout or, having lost the stream half-way, is judged on what the DAQ says. A guarded write
instead:

- **before it starts**, waits until the detector's rate, as the DAQ's statistics give it
  (:meth:`daq_runner.daq.Daq.read_rates`), has stayed at or above ``min_detector_rate`` for
  ``for_s`` seconds; the wait is bounded by ``max_wait_s`` and the step's time limit, and the
  console counts it down. Readings taken during the run's earlier guarded writes count
  (:class:`DetectorHistory`), so consecutive writes under a delivering detector do not wait;
- **while it runs**, has the rate read every :data:`SAMPLE_S` seconds in a thread of its own;
  once it has stayed below the minimum for ``for_s`` seconds, the acquisition is stopped, its
  file recorded incomplete with the reason (a suspension, with its times, in the step's record:
  :class:`~daq_runner.record.SuspensionRecord`), the guard is waited for again, and the write
  starts again with a new acquisition of the same step, under the rules of every write: a new
  run_id, and the abandoned file replaced only because the DAQ's log shows it is this step's own.

A suspension is not a failed attempt: the step passes when a later acquisition writes the file
whole. It fails when the detector does not come back within a wait (``max_wait_s``) or the
step's time runs out; its file is then the incomplete one.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Deque, Dict, Optional, Tuple

from . import events
from ._deadline import Deadline, Interrupted, bounded, current
from .batch import WriteStep
from .daq import Acquisition, Progress, RunServices
from .exceptions import DeadlineExceeded, StepFailed
from .record import MISSING, StepRecord, SuspensionRecord

__all__ = ["DetectorHistory", "wait_for_detector", "follow_guarded", "SAMPLE_S"]

SAMPLE_S = 0.5  # how often the detector's rate is read (a DAQ publishes its statistics once a second)
_GAP_S = 2.0  # readings further apart than this say nothing about the time between them
_READ_S = 3.0  # the longest one reading may take in the watching thread (a DAQ outage: no reading)
_KEPT = 1200  # readings remembered (10 minutes at SAMPLE_S): a guard's for_s beyond that waits afresh
_END_S = 10.0  # after stopping an abandoned acquisition: how long its end may take to be seen
_END_LOG_S = 1.5  # ... and its record in the DAQ's log (its final count)


class DetectorHistory:
    """The detector's rates read during one run, newest last, shared by its guards (thread-safe)."""

    def __init__(self) -> None:
        self._readings: Deque[Tuple[float, float]] = collections.deque(maxlen=_KEPT)
        self._lock = threading.Lock()

    def add(self, rate: float) -> None:
        """A reading (images per second) taken now."""
        with self._lock:
            self._readings.append((time.monotonic(), rate))

    def held(self, minimum: float, for_s: float) -> bool:
        """Whether the readings show the rate at or above ``minimum`` for the last ``for_s``
        seconds, up to a fresh reading, with no gap longer than :data:`_GAP_S` between them."""
        now = time.monotonic()
        with self._lock:
            readings = list(self._readings)
        later = now
        for at, rate in reversed(readings):
            if rate < minimum or later - at > _GAP_S:
                return False
            if now - at >= for_s:
                return True
            later = at
        return False


def _summary(record: StepRecord, step: WriteStep) -> Dict[str, Any]:
    """The step record's ``guard``: the guard in force and its waits so far."""
    if record.guard is MISSING or not isinstance(record.guard, dict):
        assert step.guard is not None
        record.guard = {**step.guard.to_json(), "waits": 0, "waited_s": 0.0, "last_rate": None}
    return record.guard


def _want(step: WriteStep) -> str:
    guard = step.guard
    assert guard is not None
    return f"at least {guard.min_detector_rate:g} images/s for {guard.for_s:g} s"


def wait_for_detector(run: RunServices, step: WriteStep, record: StepRecord, *, then: str = "nothing was written") -> None:
    """Wait until the detector has delivered as ``step``'s guard asks (bounded by its
    ``max_wait_s`` and the step's time limit); recorded in ``record.guard``.

    ``then``: what the failure means for the step's file, for the message.

    Raises:
        StepFailed: the detector did not deliver in time (its last reading named).
    """
    guard = step.guard
    assert guard is not None
    summary = _summary(record, step)
    history: DetectorHistory = run.detector_history
    bound = current().within(guard.max_wait_s)
    began = time.monotonic()
    last: Optional[float] = None
    told = False
    try:
        with bounded(bound):
            while not bound.expired:
                last = run.daq.read_rates().detector
                history.add(last)
                if history.held(guard.min_detector_rate, guard.for_s):
                    return
                if not told:  # said only when there is something to wait for (a countdown on the console)
                    told = True
                    left = bound.remaining()
                    run.emit(events.WAITING, step, what=f"the detector: {_want(step)}", seconds=left if left != float("inf") else None)
                bound.sleep(SAMPLE_S)
    except DeadlineExceeded:
        if not bound.expired:
            raise
    finally:
        summary["waits"] += 1
        summary["waited_s"] = round(summary["waited_s"] + time.monotonic() - began, 3)
        summary["last_rate"] = last
    seen = f"last reading {last:g} images/s" if last is not None else "no reading of its rate"
    raise StepFailed(f"the detector did not send {_want(step)} within {time.monotonic() - began:.0f} s ({seen}); {then}")


class _Trip:
    """What the watching thread found: the detector below the guard's minimum for ``for_s``."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.rate: Optional[float] = None


class _Watch(threading.Thread):
    """Reads the detector's rate every :data:`SAMPLE_S` while a guarded write runs; sets the
    trip once it has stayed below the minimum for ``for_s`` seconds. Reads only: the run's own
    thread stops the acquisition."""

    def __init__(self, run: RunServices, step: WriteStep, trip: _Trip) -> None:
        super().__init__(name="daq-runner-guard", daemon=True)
        self.run_services = run
        self.step = step
        self.trip = trip
        self.done = threading.Event()

    def run(self) -> None:
        guard = self.step.guard
        assert guard is not None
        history: DetectorHistory = self.run_services.detector_history
        below_since: Optional[float] = None
        while not self.done.wait(SAMPLE_S):
            try:
                with bounded(Deadline(_READ_S, cancel=self.done)):
                    rate = self.run_services.daq.read_rates().detector
            except Exception:  # a DAQ outage, a garbled reply, the end of the write: no reading this time
                continue
            history.add(rate)
            now = time.monotonic()
            if rate >= guard.min_detector_rate:
                below_since = None
                continue
            below_since = now if below_since is None else below_since
            if now - below_since >= guard.for_s:
                self.trip.rate = rate
                self.trip.reason = (
                    f"the detector sent {rate:g} images/s, below the guard's {guard.min_detector_rate:g}, "
                    f"for {now - below_since:.1f} s"
                )
                self.trip.event.set()
                return


def _follow_watched(run: RunServices, step: WriteStep, record: StepRecord, acquisition: Acquisition, progress: Optional[Progress]) -> Optional[_Trip]:
    """Follow ``acquisition`` to its end while the detector is watched: ``None`` when it ended
    (judged by the DAQ seam, which raises as usual), the trip when the detector stopped first."""
    trip = _Trip()
    watch = _Watch(run, step, trip)
    watch.start()
    try:
        with bounded(Deadline(cancel=trip.event)):
            run.daq.follow(acquisition, record, progress)
        return None
    except Interrupted:
        if trip.event.is_set() and not run.stop_event.is_set():
            return trip
        raise
    finally:
        watch.done.set()
        watch.join(_READ_S + 1.0)


def follow_guarded(run: RunServices, step: WriteStep, record: StepRecord, acquisition: Acquisition, progress: Optional[Progress] = None) -> Acquisition:
    """Follow the guarded write ``step`` to its end: each time the detector stops delivering,
    suspend it (stop the acquisition, record its incomplete file), wait for the detector and
    start a new acquisition. Returns the acquisition that wrote the file.

    Raises:
        StepFailed: an acquisition failed as any write does, or the detector did not come back
            within a wait; the step's file is then the last acquisition's.
    """
    while True:
        trip = _follow_watched(run, step, record, acquisition, progress)
        if trip is None:
            return acquisition
        suspension = _suspend(run, step, record, acquisition, trip)
        if suspension is None:  # it had written every image before the stop reached it
            return acquisition
        wait_for_detector(
            run, step, record,
            then=f"the write stays suspended, its file incomplete ({suspension.get('n_written')}/{step.n_images} images, acquisition {suspension.get('run_id')})",
        )
        suspension["resumed_at"] = time.time()
        run.notice(f"the detector delivers again: writing {step.output_file} again with a new acquisition", step)
        acquisition = run.daq.start(step, record)


def _suspend(run: RunServices, step: WriteStep, record: StepRecord, acquisition: Acquisition, trip: _Trip) -> Optional[SuspensionRecord]:
    """Stop the acquisition the detector abandoned and record the suspension on ``record``;
    ``None`` when the acquisition turns out to have written every image before the stop."""
    from .rest_v2 import STOP_BUDGET_S  # the stop budget of every acquisition the runner ends

    suspended_at = time.time()
    run.notice(f"write suspended: {trip.reason}; stopping acquisition {acquisition.acquisition_id}", step)
    stopped = run.daq.stop(acquisition, f"guard: {trip.reason}", Deadline(STOP_BUDGET_S))
    # Judged as any acquisition: one that ended complete before the stop reached it passes.
    ended = StepRecord.of(step)
    end_bound = current().within(_END_S)
    try:
        with bounded(end_bound):
            run.daq.follow(acquisition, ended)
    except StepFailed as exc:
        if end_bound.expired and not current().expired:
            raise StepFailed(
                f"the detector stopped delivering ({trip.reason}) and acquisition {acquisition.acquisition_id} "
                f"did not end after a stop: {stopped.get('outcome')}"
            ) from None
        why = str(exc)
    else:
        for key in ("acquisition_id", "acquisition", "n_written", "daq_log", "daq_log_reason", "daq_log_source"):
            setattr(record, key, getattr(ended, key))
        run.notice(f"acquisition {acquisition.acquisition_id} had written every image before the stop: the write passed", step)
        return None
    run.daq.record_end(acquisition, ended, _END_LOG_S)
    suspension: SuspensionRecord = {
        "reason": trip.reason,
        "suspended_at": suspended_at,
        "resumed_at": None,
        "detector_rate": trip.rate,
        "run_id": ended.acquisition_id or acquisition.acquisition_id,
        "n_written": ended.n_written,
        "output_file": step.output_file,
        "complete": False,
        "ended": why,
    }
    if record.suspensions is MISSING or not isinstance(record.suspensions, list):
        record.suspensions = []
    record.suspensions.append(suspension)
    return suspension
