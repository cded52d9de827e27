"""One handler per step kind: what each kind of step does to the DAQ.

A handler is ``handler(ctx, step, result, attempt)``: it acts through the
:class:`~daq_runner._context.RunContext`, fills ``result`` (the step's report record) and raises
:class:`~daq_runner._context.StepFailed` (or a :class:`~daq_runner.exceptions.DaqRunnerError`)
when the attempt fails. Every request and wait inside is bounded by the step's time limit
(``_deadline.current()``), set by the Runner. A write that runs in the background returns its
:class:`~daq_runner._acquisitions.Acquisition`: the Runner records the step when it ends.

The Runner only dispatches on ``step.kind`` through :data:`HANDLERS`; it imports no handler.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from . import protocol, events
from ._acquisitions import Acquisition
from ._context import READY, UNKNOWN, RunContext, StepFailed
from ._deadline import current
from ._text import quote
from .batch import CheckStep, ConfigStep, Step, StopStep, WaitStep, WriteStep
from .exceptions import WriterNeedsRestart

__all__ = ["HANDLERS", "Handler"]

Handler = Callable[[RunContext, Any, dict, int], Optional[Acquisition]]
HANDLERS: Dict[str, Handler] = {}


def _handles(kind: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[kind] = handler
        return handler

    return register


def _sleep_within(ctx: RunContext, step: Step, seconds: float, what: str) -> None:
    """Sleep ``seconds`` inside the step's time limit, or fail: a step's timeout is a hard limit."""
    ctx.emit(events.WAITING, step, what=what, seconds=seconds)
    left = current().remaining()
    if seconds > left:
        current().sleep(left)
        raise StepFailed(f"timed out after {step.timeout:g} s: the {what} of {seconds:g} s does not fit in the step's timeout")
    current().sleep(seconds)


@_handles("write")
def write(ctx: RunContext, step: WriteStep, result: dict, attempt: int) -> Optional[Acquisition]:
    acquisitions = ctx.acquisitions
    earlier = acquisitions.by_step.get(step.index)
    if earlier is not None and not earlier.ended:
        # Never two acquisitions for one step: the earlier attempt's may still run or have passed.
        ctx.notice(f"following acquisition {earlier.run_id} of the earlier attempt instead of starting another", step)
        acquisition = earlier
    else:
        acquisition = acquisitions.start(step, result)
    if acquisition.background:
        result["daq_log_reason"] = "running in the background (wait: false)"
        return acquisition

    def progress(status: dict) -> None:
        if acquisition.matches(status):
            acq = status.get("acquisition") or {}
            n_written = (acq.get("stats") or {}).get("n_write_completed")
            ctx.emit(events.PROGRESS, step, n_written=n_written if isinstance(n_written, int) else 0, n_images=step.n_images, state=acq.get("state"))

    acquisitions.follow(acquisition, result, progress)
    return None


@_handles("config")
def config(ctx: RunContext, step: ConfigStep, result: dict, attempt: int) -> None:
    # Never under a running acquisition: the real server would restart the writer and lose it.
    ctx.ready_for_writer(step, result, purpose="the configuration change")
    ctx.guard()
    ctx.emit(events.WAITING, step, what="deployment", seconds=current().remaining())

    def seen(deployment: dict) -> None:
        result["deployment"] = deployment

    applied = ctx.client.update_config(step.config, timeout=current().remaining(), on_deployment=seen)
    result.update(config=applied.config, config_id=applied.config_id, deployment=applied.deployment)
    ctx.established.update(step.config)
    if ctx.feed.status().get("state") == UNKNOWN:
        ctx.reset_writer(step, result, "writer UNKNOWN after the deployment")
    if step.settle:
        _sleep_within(ctx, step, step.settle, "settle")


@_handles("check")
def check(ctx: RunContext, step: CheckStep, result: dict, attempt: int) -> None:
    problems: List[str] = []
    observed: Dict[str, Any] = {}
    client = ctx.client
    if step.deployment:
        deployment = client.get_deployment_status()
        observed["deployment"] = deployment.get("status")
        if deployment.get("status") != step.deployment:
            problems.append(f"deployment is {quote(deployment.get('status'))} ({quote(deployment.get('message'))}), expected {step.deployment}")
    if step.writer:
        state = ctx.feed.status().get("state")
        observed["writer"] = state
        if state != step.writer:
            problems.append(f"writer is {quote(state)}, expected {step.writer}")
    if step.config:
        config = client.get_config() or {}
        observed["config"] = {key: config.get(key) for key in step.config}
        for key, expected in step.config.items():
            if config.get(key) != expected:
                problems.append(f"config {key} is {quote(repr(config.get(key)))}, expected {expected!r}")
    if step.min_detector_rate is not None or step.min_writer_rate is not None:
        stats = client.get_stats() or {}
        detector = float(((stats.get("detector") or {}).get("images_per_second")) or 0.0)
        writer = protocol.writer_rate(stats)
        observed.update(detector_rate=detector, writer_rate=writer)
        if step.min_detector_rate is not None and detector < step.min_detector_rate:
            problems.append(f"detector sends {detector:g} images/s, expected at least {step.min_detector_rate:g}")
        if step.min_writer_rate is not None and writer < step.min_writer_rate:
            problems.append(f"writer writes {writer:g} images/s, expected at least {step.min_writer_rate:g}")
    result["observed"] = observed
    if problems:
        raise StepFailed("; ".join(problems))


@_handles("wait")
def wait(ctx: RunContext, step: WaitStep, result: dict, attempt: int) -> None:
    if step.seconds is not None:
        _sleep_within(ctx, step, step.seconds, "wait")
        return
    if step.state == READY:
        status = ctx.ready_for_writer(step, result, purpose=None)
    else:
        ctx.emit(events.WAITING, step, what=f"writer {step.state}", seconds=current().remaining())
        cursor = ctx.feed.mark()
        status = ctx.feed.wait_for_status(lambda s: s.get("state") == step.state, since=cursor)
        if status is None:
            raise StepFailed(f"writer not {step.state} within {step.timeout:g} s")
    result["writer"] = status.get("state")


@_handles("stop")
def stop(ctx: RunContext, step: StopStep, result: dict, attempt: int) -> None:
    # Acquisitions of this batch running in the background end here on purpose.
    ctx.acquisitions.mark_stopped_by(step.index)
    ctx.guard()
    cursor = ctx.feed.mark()
    try:
        status = ctx.client.stop_writer()
    except WriterNeedsRestart as exc:
        ctx.reset_writer(step, result, f"the DAQ could not stop the writer: {exc}")
        status = ctx.feed.status()
    if status.get("state") != READY:
        status = ctx.feed.wait_for_status(lambda s: s.get("state") == READY, since=cursor)
        if status is None:
            raise StepFailed("writer did not return to READY after the stop")
    result["acquisition"] = status.get("acquisition")
