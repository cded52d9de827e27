"""One handler per step kind: what each kind of step does, through the DAQ seam.

A handler is ``handler(run, step, record, attempt)``: it acts on the DAQ only through
``run.daq`` (a :class:`~daq_runner.daq.Daq`, whatever its generation), fills ``record`` (the
step's :class:`~daq_runner.record.StepRecord`) and raises
:class:`~daq_runner.exceptions.StepFailed` (or another
:class:`~daq_runner.exceptions.DaqRunnerError`) when the attempt fails. Every request and wait
inside is bounded by the step's time limit (``_deadline.current()``), set by the Runner. A write
that runs in the background returns its :class:`~daq_runner.daq.Acquisition`: the Runner records
the step when it ends.

The Runner dispatches on ``step.kind`` through :data:`HANDLERS`; it imports no handler. A new
step kind is declared in :mod:`daq_runner._stepkinds` and gets its handler here.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import events
from ._deadline import current
from ._guard import follow_guarded, wait_for_detector
from ._text import clauses, quote
from .batch import CheckStep, ConfigStep, RunStep, Step, StopStep, WaitStep, WriteStep
from .daq import READY, Acquisition, RunServices
from .exceptions import StepFailed
from .record import StepRecord, iso

__all__ = ["HANDLERS", "Handler", "generous_timeout"]

Handler = Callable[[RunServices, Any, StepRecord, int], Optional[Acquisition]]
HANDLERS: Dict[str, Handler] = {}


def _handles(kind: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[kind] = handler
        return handler

    return register


def _sleep_within(run: RunServices, step: Step, seconds: float, what: str) -> None:
    """Sleep ``seconds`` inside the step's time limit, or fail: a step's timeout is a hard limit."""
    run.emit(events.WAITING, step, what=what, seconds=seconds, exact=True)
    left = current().remaining()
    if seconds > left:
        current().sleep(left)
        raise StepFailed(f"timed out after {step.timeout:g} s: the {what} of {seconds:g} s does not fit in the step's timeout")
    current().sleep(seconds)


class _Pace:
    """How fast a write goes, from its progress: to warn while it can still be helped, and to
    say what timeout it would have needed, or that it stalled (then no timeout would do)."""

    _AFTER_S = 3.0  # a rate measured over less than this is a guess
    _STALL_S = 3.0  # no new image for this long (and for 10 images' time at its pace): stalled

    def __init__(self, step: WriteStep) -> None:
        self.step = step
        self.started = time.monotonic()
        self.first: Optional[Tuple[float, int]] = None
        self.last: Optional[Tuple[float, int]] = None
        self.moved: Optional[Tuple[float, int, float]] = None  # when the count last changed (and the wall clock then)
        self.samples: Deque[Tuple[float, int]] = collections.deque()  # the last third of the looks
        self.mid: Optional[Tuple[float, int]] = None
        self.warned = False

    def add(self, n_written: int) -> None:
        now = time.monotonic()
        if self.first is None or (self.last is not None and n_written < self.last[1]):
            self.first = (now, n_written)  # the first look, or a new acquisition (a guard wrote again)
            self.samples.clear()
        if self.moved is None or n_written != self.moved[1]:
            self.moved = (now, n_written, time.time())
        self.last = (now, n_written)
        self.samples.append(self.last)
        # The sample two thirds of the way: the pace before it and after it are compared.
        while len(self.samples) > 1 and self.samples[1][0] <= now - (now - self.first[0]) / 3:
            self.samples.popleft()
        self.mid = self.samples[0]

    def rate(self) -> Optional[float]:
        if self.first is None or self.last is None:
            return None
        span, images = self.last[0] - self.first[0], self.last[1] - self.first[1]
        return images / span if span >= self._AFTER_S and images > 0 else None

    def stalled_s(self) -> Optional[float]:
        """Seconds since the count last grew, when that is a stall (``None``: it was moving)."""
        if self.first is None or self.moved is None or self.moved[1] <= self.first[1]:
            return None  # no image written yet: nothing to compare with
        span = self.moved[0] - self.first[0]
        period = span / (self.moved[1] - self.first[1])
        idle = time.monotonic() - self.moved[0]
        return idle if idle > max(self._STALL_S, 10 * period) else None

    def slowed(self) -> Optional[Tuple[float, float]]:
        """``(rate before, rate over the last third)`` in images/s when the pace fell to less than
        half (the rate over the whole write then promises too much), else ``None``."""
        if self.first is None or self.last is None or self.mid is None:
            return None
        (t0, n0), (t1, n1), (t2, n2) = self.first, self.mid, self.last
        if t1 - t0 < self._AFTER_S or t2 - t1 < self._AFTER_S / 2 or n1 <= n0:
            return None
        before, recent = (n1 - n0) / (t1 - t0), (n2 - n1) / (t2 - t1)
        return (before, recent) if recent < before / 2 else None

    def needed_s(self) -> Optional[float]:
        """Seconds the whole step needs at the rate seen (what it took so far, and the rest), when
        that rate held: ``None`` for a write that stalled or slowed down."""
        rate = self.rate()
        if rate is None or self.last is None or self.stalled_s() is not None or self.slowed() is not None:
            return None
        return (self.last[0] - self.started) + (self.step.n_images - self.last[1]) / rate

    def advice(self) -> str:
        """What the end of the write says: the timeout it needs (a steady pace to the end), or
        that it stalled and since when, or that it slowed down; ``""`` when nothing is known."""
        stalled, slowed = self.stalled_s(), self.slowed()
        if stalled is not None and self.moved is not None:
            # No longer timeout helps a write that stopped: say since when.
            return f"it stalled at {self.moved[1]} of {self.step.n_images} images: none written since {iso(self.moved[2])} ({stalled:.0f} s)"
        if slowed is not None:
            return f"it slowed down from {slowed[0]:.3g} to {slowed[1]:.3g} images/s"
        needed = self.needed_s()
        if needed is None:
            return ""
        return f"at {self.rate():.3g} images/s it needs about {needed:.0f} s: give it timeout: {generous_timeout(needed)} or more"

    def too_slow(self) -> bool:
        """Whether, at this rate, the write ends after its timeout (said once)."""
        needed = self.needed_s()
        if self.warned or needed is None or needed <= self.step.timeout:
            return False
        self.warned = True
        return True


def generous_timeout(seconds: float) -> int:
    """A step timeout that leaves room for ``seconds`` of work: a fifth more, rounded up to 10 s."""
    return int(-(-seconds * 1.2 // 10) * 10)


@_handles("write")
def write(run: RunServices, step: WriteStep, record: StepRecord, attempt: int) -> Optional[Acquisition]:
    earlier = run.acquisitions.of_step(step.index)
    if earlier is not None and not earlier.ended:
        # Never two acquisitions for one step: the earlier attempt's may still run or have passed.
        run.notice(f"following acquisition {earlier.acquisition_id} of the earlier attempt instead of starting another", step)
        acquisition = earlier
    else:
        if step.guard is not None:
            wait_for_detector(run, step, record)
        record.config = run.file_checks.started(run, step)  # what it runs with, in its record
        acquisition = run.daq.start(step, record)
    if acquisition.background:
        record.daq_log_reason = "running in the background (wait: false)"
        return acquisition

    pace = _Pace(step)

    def progress(n_written: int, state: Optional[str]) -> None:
        pace.add(n_written)
        run.emit(events.PROGRESS, step, n_written=n_written, n_images=step.n_images, state=state)
        if pace.too_slow():
            run.notice(f"this write will not finish within its timeout of {step.timeout:g} s: {pace.advice()}", step)

    try:
        if step.guard is not None:
            acquisition = follow_guarded(run, step, record, acquisition, progress)
        else:
            run.daq.follow(acquisition, record, progress)
    except StepFailed as exc:
        advice = pace.advice()
        if current().expired and advice:
            # The timeout it would have needed, where the DAQ's pace says it.
            raise StepFailed(clauses(exc, advice), final=exc.final) from None
        raise
    run.file_checks.check(run, step, record, acquisition.started)
    return None


@_handles("config")
def config(run: RunServices, step: ConfigStep, record: StepRecord, attempt: int) -> None:
    run.daq.configure(step, record)
    if step.settle:
        _sleep_within(run, step, step.settle, "settle")


@_handles("check")
def check(run: RunServices, step: CheckStep, record: StepRecord, attempt: int) -> None:
    problems: List[str] = []
    observed: Dict[str, Any] = {}
    daq = run.daq
    if step.deployment:
        deployment = daq.read_deployment()
        observed["deployment"] = deployment.get("status")
        if deployment.get("status") != step.deployment:
            problems.append(f"deployment is {quote(deployment.get('status'))} ({quote(deployment.get('message'))}), expected {step.deployment}")
    if step.writer:
        state = daq.read_state()
        observed["writer"] = state
        if state != step.writer:
            problems.append(f"writer is {quote(state)}, expected {step.writer}")
    if step.config:
        config = daq.read_config()
        observed["config"] = {key: config.get(key) for key in step.config}
        for key, expected in step.config.items():
            if config.get(key) != expected:
                problems.append(f"config {key} is {quote(repr(config.get(key)))}, expected {expected!r}")
    if step.min_detector_rate is not None or step.min_writer_rate is not None:
        detector, writer = daq.read_rates()
        observed.update(detector_rate=detector, writer_rate=writer)
        if step.min_detector_rate is not None and detector < step.min_detector_rate:
            problems.append(f"detector sends {detector:g} images/s, expected at least {step.min_detector_rate:g}")
        if step.min_writer_rate is not None and writer < step.min_writer_rate:
            problems.append(f"writer writes {writer:g} images/s, expected at least {step.min_writer_rate:g}")
    record.observed = observed
    if problems:
        raise StepFailed("; ".join(problems))


@_handles("wait")
def wait(run: RunServices, step: WaitStep, record: StepRecord, attempt: int) -> None:
    if step.seconds is not None:
        _sleep_within(run, step, step.seconds, "wait")
        return
    if step.state == READY:
        record.writer = run.daq.wait_ready(step, record, None)
        return
    run.emit(events.WAITING, step, what=f"writer {step.state}", seconds=current().remaining())
    if not run.daq.wait_for_state(step.state, step):
        raise StepFailed(f"writer not {step.state} within {step.timeout:g} s")
    record.writer = step.state


@_handles("stop")
def stop(run: RunServices, step: StopStep, record: StepRecord, attempt: int) -> None:
    run.daq.stop_writer(step, record)


@_handles("run")
def run_program(run: RunServices, step: RunStep, record: StepRecord, attempt: int) -> None:
    from ._commands import run_command

    # Bounded by the step's time left and ended by the run's stop request (the bound in force).
    left = current().remaining()
    result = run_command(step.command, timeout=left if left < float("inf") else step.timeout, expect_exit=step.expect_exit, env=step.env)
    record.command = result.to_json()
    current().check()  # ended by the run's stop request: the step is interrupted, not failed
    if not result.passed:
        last = f"; last output: {result.output[-1]}" if result.output else ""
        raise StepFailed(f"{result.reason}{last}")
