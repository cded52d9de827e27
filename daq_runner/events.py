"""The vocabulary shared by the Runner and its consumers: one event type, a few kinds.

The Runner emits :class:`Event` objects; consumers (console view, structured logs, JSON
report, JUnit file, your own code) are callables ``consumer(event)`` that import only
this module. ``event.time`` is Unix time (s), ``event.step`` the 1-based step index
(``None`` for run-level events) and ``event.step_name`` that step's name.

The data of each kind (keys marked * may be missing: consumers must not need them, an
older Runner does not send them):

``run_started``
    ``batch`` {name, path, sha256, vars*}; ``daq`` {url, redis, url_source*,
    redis_source*} (credentials already removed); ``n_steps``; ``daq_runner``* (version);
    ``host``*, ``user``*, ``pid``*; ``command``* (list of str, or null when not run from
    the command line); ``resume_command``* (the command line that continues the run from its
    report, or null); ``python``* (version); ``estimate``* (what the run was expected to
    cost: :meth:`daq_runner.estimate.Estimate.to_json`); ``cleanup``* ({finally: number of
    cleanup steps, restore_config: bool}, when the batch has a cleanup).
``step_started``
    ``attempt`` (1, 2, ...); ``kind``*; ``timeout``* (s); writes also ``output_file``*,
    ``n_images``*.
``progress``
    ``n_written``, ``n_images``, ``state`` (the acquisition's state).
``waiting``
    ``what`` ("settle", "wait", "deployment", "writer READY", "lock", "retry", ...);
    ``seconds``: how long at most, or null when unknown; ``exact``* (true): the wait lasts
    ``seconds`` (a settle, a ``wait: {seconds}``), otherwise ``seconds`` is only its bound
    (the step's time left), not how long it takes.
``attempt_failed``
    ``attempt``, ``error``, ``will_retry``.
``recovery``
    ``reason``, ``action``, ``outcome``, ``at``* (Unix time). With ``step`` None it is a
    pre-run recovery (e.g. a fresh DAQ's UNKNOWN writer reset before the first step).
``notice``
    ``message`` (the event's ``time`` and ``step`` are the notice's).
``step_finished``
    ``event.record`` is the step's :class:`~daq_runner.record.StepRecord` (typed: its
    ``status``, ``error``, ``images_written``, ``problem``...); ``data`` is the same record
    as the report holds it (:meth:`~daq_runner.record.StepRecord.to_json`: ISO 8601 UTC
    times, run ids as strings), for consumers that want plain JSON.
``cleanup``
    the run's cleanup as it stands (the report's ``cleanup`` section,
    :meth:`daq_runner.record.CleanupRecord.to_json`), once it begins and after each of its
    steps; ``event.step`` is None. Cleanup steps send ``step_started``, ``progress``,
    ``waiting``, ``attempt_failed``, ``recovery`` and ``notice`` events with their own
    indices (after the plan's), but no ``step_finished``: they are not steps of the plan.
``run_finished``
    ``status`` (passed, failed, interrupted), ``reason`` (null when passed),
    ``daq_unreachable``, ``lock_lost`` (why the runner lock was lost, or null).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from .record import StepRecord, StepStatus

__all__ = [
    "Event",
    "Consumer",
    "RUN_STARTED",
    "STEP_STARTED",
    "PROGRESS",
    "WAITING",
    "ATTEMPT_FAILED",
    "RECOVERY",
    "NOTICE",
    "STEP_FINISHED",
    "CLEANUP",
    "RUN_FINISHED",
    "STEP_STATUSES",
]

RUN_STARTED = "run_started"  # data: batch, daq, n_steps, daq_runner, host, user, pid, command, python
STEP_STARTED = "step_started"  # data: attempt, kind, timeout, output_file, n_images
PROGRESS = "progress"  # data: n_written, n_images, state
WAITING = "waiting"  # data: what, seconds (at most; null when unknown), exact
ATTEMPT_FAILED = "attempt_failed"  # data: attempt, error, will_retry
RECOVERY = "recovery"  # data: reason, action, outcome, at
NOTICE = "notice"  # data: message (Redis fallback, lock, retries of the client...)
STEP_FINISHED = "step_finished"  # record: the step's StepRecord; data: its JSON
CLEANUP = "cleanup"  # data: the report's cleanup section so far
RUN_FINISHED = "run_finished"  # data: status, reason, daq_unreachable, lock_lost

STEP_STATUSES = tuple(status.value for status in StepStatus)
"""What a step can end as (:class:`~daq_runner.record.StepStatus`'s values, in the report's order)."""


@dataclass(frozen=True)
class Event:
    """Something that happened during a run.

    Attributes:
        kind: one of the constants of this module.
        run_id: identifies the run (for log systems following a batch).
        step: 1-based index of the step concerned, or ``None`` for run-level events.
        step_name: that step's name.
        data: kind-specific details (JSON-compatible), see the module's docstring.
        time: Unix time of the event.
        record: for ``step_finished``, the step's record.
    """

    kind: str
    run_id: str
    step: Optional[int] = None
    step_name: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    record: Optional[StepRecord] = None


Consumer = Callable[[Event], None]
