"""What the step handlers of one run share: the DAQ, the feed, the lock, and writer recovery.

A :class:`RunContext` lives for one :meth:`Runner.run <daq_runner.runner.Runner.run>`. The
handlers (:mod:`daq_runner._handlers`) and the acquisition tracker
(:mod:`daq_runner._acquisitions`) reach the DAQ only through it, so that every request that
changes the DAQ first checks the runner lock (:meth:`RunContext.guard`), and stop-on-UNKNOWN
recovery is written once (:meth:`RunContext.reset_writer`).
"""

from __future__ import annotations

import threading
import uuid
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from . import protocol, events
from ._deadline import current
from ._text import quote
from .batch import Step
from .client import StdDaqClient
from .exceptions import WriterNeedsRestart
from .feed import StatusFeed
from .lock import DaqLock
from .resume import ResumedRun

if TYPE_CHECKING:  # pragma: no cover
    from ._acquisitions import Acquisitions

__all__ = ["RunContext", "StepFailed", "READY", "UNKNOWN", "WRITING"]

READY, WRITING, UNKNOWN = (s.value for s in (protocol.WriterState.READY, protocol.WriterState.WRITING, protocol.WriterState.UNKNOWN))
_READY_AFTER_STOP_S = 10.0
# The real server answers "Cannot reach READY" to the first stop after a config change
# restarted the writer under an acquisition; a further stop resets it.
_STOPS_FOR_RESET = 3


class StepFailed(Exception):
    """A step attempt failed; the message says why (and what the DAQ said)."""


Emit = Callable[..., None]


@dataclass
class RunContext:
    """The DAQ as the handlers of one run see it.

    Attributes:
        client: REST client (rides out outages up to the run's budget).
        feed: status and log waits.
        emit: ``emit(kind, step, **data)`` sends an event to the consumers.
        stop_event: set when the run must stop (signal, lost lock).
        require_log: a write passes only when the DAQ logged it.
        overwrite: ``--overwrite``: writes may replace existing files.
        invocation: this daq-run invocation's random id; the run_ids of its acquisitions
            are derived from it (:func:`daq_runner.resume.acquisition_id`).
        resumed: when resuming, what the report of the run resumed says (see
            :class:`ResumedRun`): which files its steps left, that may be replaced.
        lock: the runner lock, ``None`` when none is held.
        established: the configuration fields this run's config steps set (and a resume
            applied again): what every later write is meant to run with.
        pre_run: recoveries done before the first step.
    """

    client: StdDaqClient
    feed: StatusFeed
    emit: Emit
    stop_event: threading.Event
    require_log: bool = True
    overwrite: bool = False
    invocation: str = field(default_factory=lambda: uuid.uuid4().hex)
    resumed: Optional["ResumedRun"] = None
    lock: Optional[DaqLock] = None
    pre_run: List[dict] = field(default_factory=list)
    established: Dict[str, Any] = field(default_factory=dict)
    acquisitions: "Acquisitions" = field(init=False)
    step: Optional[Step] = None

    def notice(self, message: str, step: Optional[Step] = None) -> None:
        self.emit(events.NOTICE, step or self.step, message=message)

    def guard(self) -> None:
        """Before any request that changes the DAQ: the runner lock must still be ours."""
        if self.lock is not None:
            self.lock.assert_held()

    # -- stop-on-UNKNOWN, written once -------------------------------------------------------

    def reset_writer(self, step: Optional[Step], result: Optional[dict], reason: str) -> None:
        """Send a stop until the writer is READY again and record it as a recovery.

        ``result`` is the step's record (``None``: a pre-run recovery). Raises
        :class:`StepFailed` when the writer does not return to READY.
        """
        record: Dict[str, Any] = {"reason": reason, "action": "stop_writer", "at": time.time()}
        self.guard()
        cursor = self.feed.mark()
        reply: Optional[dict] = None
        refusal: Optional[Exception] = None
        for _ in range(_STOPS_FOR_RESET):
            try:
                reply = self.client.stop_writer()
                break
            except WriterNeedsRestart as exc:
                refusal = exc
        ready = reply if reply is not None and reply.get("state") == READY else None
        if ready is None and reply is not None:
            ready = self.feed.wait_for_status(lambda s: s.get("state") == READY, _READY_AFTER_STOP_S, cursor)
        if ready is not None:
            record["outcome"] = READY
        elif reply is None:
            record["outcome"] = f"still not READY: the DAQ answered {refusal}"
        else:
            record["outcome"] = "still not READY"
        (self.pre_run if result is None else result.setdefault("recoveries", [])).append(record)
        self.emit(events.RECOVERY, step, **record)
        if ready is None:
            raise StepFailed(f"the writer did not return to READY after a stop ({reason}): {record['outcome']}")

    def ready_for_writer(self, step: Step, result: dict, purpose: Optional[str] = "the write") -> dict:
        """The writer status once READY: resets an UNKNOWN writer, waits out a running acquisition.

        The wait is bounded by the step's time left; a READY read from the stream is confirmed
        over REST (a real DAQ stores each status twice and the copies can interleave).
        """
        while True:
            status, reset = self._ready(step, result, purpose)
            # A writer found UNKNOWN may mean a DAQ restart, which may have brought back another
            # configuration: a write runs with the one this run set, or not at all.
            if not (reset and purpose == "the write" and self.established and self._restore_config(step, result)):
                return status

    def _restore_config(self, step: Step, result: dict) -> bool:
        """Apply again the fields of :attr:`established` the DAQ no longer shows; True if any."""
        config = self.client.get_config() or {}
        changes = {key: value for key, value in self.established.items() if protocol.config_differences(config, {key: value})}
        if not changes:
            return False
        shown = ", ".join(f"{key}={quote(config.get(key))} instead of {value}" for key, value in changes.items())
        self.guard()
        self.client.update_config(changes, timeout=current().remaining())
        text = ", ".join(f"{key}={value}" for key, value in changes.items())
        record = {
            "reason": f"the DAQ's configuration changed under the run ({shown}) while its writer was UNKNOWN (a DAQ restart?)",
            "action": f"update_config {text}",
            "outcome": "applied",
            "at": time.time(),
        }
        result.setdefault("recoveries", []).append(record)
        self.emit(events.RECOVERY, step, **record)
        self.notice(f"re-applied {text} before step {step.index}: the DAQ showed {shown} after its writer was found UNKNOWN", step)
        return True

    def _ready(self, step: Step, result: dict, purpose: Optional[str]) -> "tuple[dict, bool]":
        """The writer status once READY, and whether an UNKNOWN writer had to be reset."""
        # The cursor is taken before each look, so that the end of the acquisition cannot slip
        # between the look and the wait.
        reset = False
        cursor = self.feed.mark()
        status = self.feed.status()
        while status.get("state") != READY:
            if status.get("state") == UNKNOWN:
                reset = True
                self.reset_writer(step, result, f"writer UNKNOWN before {purpose or 'the step'}")
            else:
                acquisition = (status.get("acquisition") or {}).get("info") or {}
                running = f"acquisition {acquisition.get('run_id')} of {acquisition.get('output_file')}"
                self.emit(events.WAITING, step, what=f"writer READY ({running} is running)", seconds=None)
                if self.feed.wait_for_status(lambda s: s.get("state") in (READY, UNKNOWN), since=cursor) is None:
                    raise StepFailed(
                        f"an acquisition is running ({running}) and the writer did not become READY in time"
                        + (f"; {purpose} was not started" if purpose else "")
                    )
            cursor = self.feed.mark()
            status = self.feed.status()
        return status, reset
