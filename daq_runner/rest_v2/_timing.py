"""How long the rest_v2 side waits, and for what: every grace period and pause, in one place.

The defaults fit a real DAQ (section 9 of the reference: its writer driver answers a write or
a stop within about 5 s of its own polling; it writes ``daq:status`` only on changes). A test
gives :class:`~daq_runner.rest_v2.RestV2Daq` smaller values (``RestV2Daq(..., timing=...)``) so
that, against an in-process DAQ (:class:`daq_runner.testing.ScriptedDaq`), "provably not
started" takes milliseconds instead of ten seconds; the rules stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RestV2Timing", "STOP_BUDGET_S"]

STOP_BUDGET_S = 5.0
"""How long a stop of our acquisition is tried once the run must end (the Runner's cleanup too)."""


@dataclass(frozen=True)
class RestV2Timing:
    """The rest_v2 waits, in seconds; the defaults are what a real DAQ needs.

    Attributes:
        lost_reply_grace_s: after a write's reply was lost, how long its acquisition is looked
            for before it counts as not started (at least as long again as the request was
            out); the real server answers a write within about 5 s of its own polling.
        ack_grace_s: after the start's reply, how long a READY writer without ours is not yet
            "vanished" (a slow acknowledgement).
        log_wait_s: how long the log record of an acquisition that ended FINISHED is waited for.
        log_look_s: the short look in the log when a status suggests that ours ended unseen
            (after a lost reply, or a READY without ours).
        ready_after_stop_s: how long a reset writer has to show READY after the stop.
        stop_budget_s: how long :meth:`Tracker.stop` tries when given no deadline.
        stop_pause_s, stop_pause_max_s: the pause between attempts to stop, doubling from the
            first to the second.
        rest_confirm_s: with Redis, a silent status stream is confirmed over REST this often
            (a real DAQ publishes no idle heartbeat).
        redis_retry_s: after Redis failed, how long the feed polls REST before trying it again.
        continue_s: how long after an acquisition's end the next write may start from its
            cursors without looking at the streams.
        log_poll_s: the REST polling period of the acquisition log (without Redis).
        background_look_s: how long a look for the end of background acquisitions lasts.
    """

    lost_reply_grace_s: float = 10.0
    ack_grace_s: float = 5.0
    log_wait_s: float = 3.0
    log_look_s: float = 0.5
    ready_after_stop_s: float = 10.0
    stop_budget_s: float = STOP_BUDGET_S
    stop_pause_s: float = 0.1
    stop_pause_max_s: float = 0.5
    rest_confirm_s: float = 2.0
    redis_retry_s: float = 2.0
    continue_s: float = 1.0
    log_poll_s: float = 0.1
    background_look_s: float = 0.02

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"RestV2Timing.{name} must be a number of seconds >= 0, not {value!r}")
