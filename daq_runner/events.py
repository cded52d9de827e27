"""The vocabulary shared by the Runner and its consumers: one event type, a few kinds.

The Runner emits :class:`Event` objects; consumers (console view, structured logs, JSON
report, JUnit file, your own code) are callables ``consumer(event)`` that import only
this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

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
    "RUN_FINISHED",
]

RUN_STARTED = "run_started"  # data: batch, daq, n_steps, started_at
STEP_STARTED = "step_started"  # data: attempt
PROGRESS = "progress"  # data: n_written, n_images, state
WAITING = "waiting"  # data: what, seconds (at most; null when unknown)
ATTEMPT_FAILED = "attempt_failed"  # data: attempt, error, will_retry
RECOVERY = "recovery"  # data: reason, action, outcome
NOTICE = "notice"  # data: message (Redis fallback, lock, retries of the client...)
STEP_FINISHED = "step_finished"  # data: the step's report record
RUN_FINISHED = "run_finished"  # data: status, summary, finished_at


@dataclass(frozen=True)
class Event:
    """Something that happened during a run.

    Attributes:
        kind: one of the constants of this module.
        run_id: identifies the run (for log systems following a batch).
        step: 1-based index of the step concerned, or ``None`` for run-level events.
        step_name: that step's name.
        data: kind-specific details (JSON-compatible).
        time: Unix time of the event.
    """

    kind: str
    run_id: str
    step: Optional[int] = None
    step_name: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Consumer = Callable[[Event], None]
