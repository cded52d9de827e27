"""Time bounds, written once: every request, retry pause and wait of daq-runner goes through them.

A :class:`Deadline` is a point in monotonic time (or none) plus an optional *cancel* event
(a stop request: a signal, ``Runner.request_stop``). ``with bounded(deadline):`` makes it the
bound of the code inside, through a context variable, so that a step's time limit reaches
every request made on its behalf without being passed down by hand:

- a request's whole reply (connect, headers, body) must arrive before the earlier of its
  own limit and the bound; the HTTP transport enforces it per socket read
  (see :mod:`daq_runner._transport`);
- a retry pause or a wait sleeps at most until the bound and raises :class:`Interrupted`
  as soon as the cancel event is set;
- a blocked socket read looks at the cancel event at least every :data:`SLICE_S` seconds,
  so a stop ends a request in flight within that time.

Bounds nest: an inner ``bounded()`` can only shorten the outer one.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

__all__ = ["Deadline", "Interrupted", "bounded", "detached", "current", "SLICE_S"]

# The longest a blocked call goes without looking at the cancel event.
SLICE_S = 0.25


class Interrupted(Exception):
    """A stop was requested (signal, ``request_stop``) while waiting or during a request."""


class Deadline:
    """A point in monotonic time by which something must be done, and a cancel event.

    Args:
        seconds: time from now; ``None`` means no time limit.
        cancel: an event that, once set, makes :meth:`check` and :meth:`sleep` raise
            :class:`Interrupted`.
        at: an absolute ``time.monotonic()`` value instead of ``seconds``.
    """

    __slots__ = ("at", "cancel")

    def __init__(self, seconds: Optional[float] = None, cancel: Optional[threading.Event] = None, *, at: Optional[float] = None) -> None:
        if at is None:
            at = math.inf if seconds is None else time.monotonic() + max(float(seconds), 0.0)
        self.at = at
        self.cancel = cancel

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}, cancel={self.cancel is not None})"

    def remaining(self) -> float:
        """Seconds left (``0.0`` once passed, ``inf`` without a limit)."""
        return max(self.at - time.monotonic(), 0.0)

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop was requested."""
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted()

    def within(self, seconds: Optional[float]) -> "Deadline":
        """The earlier of this deadline and ``seconds`` from now, with the same cancel event."""
        if seconds is None:
            return self
        return Deadline(cancel=self.cancel, at=min(self.at, time.monotonic() + max(float(seconds), 0.0)))

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, but not past the deadline; raise :class:`Interrupted` on a stop."""
        left = min(max(float(seconds), 0.0), self.remaining())
        if self.cancel is None:
            if left > 0:
                time.sleep(left)
            return
        if self.cancel.wait(left):
            raise Interrupted()


_NEVER = Deadline()
_CURRENT: "contextvars.ContextVar[Deadline]" = contextvars.ContextVar("daq_runner_bound", default=_NEVER)


def current() -> Deadline:
    """The bound in force here (a deadline that never expires when none was set)."""
    return _CURRENT.get()


@contextmanager
def bounded(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the bound of the code inside; it can only shorten an outer bound.

    The inner cancel event is used when given, else the outer one's.
    """
    outer = _CURRENT.get()
    inner = Deadline(cancel=deadline.cancel or outer.cancel, at=min(outer.at, deadline.at))
    token = _CURRENT.set(inner)
    try:
        yield inner
    finally:
        _CURRENT.reset(token)


@contextmanager
def detached(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the bound of the code inside, *replacing* the outer one.

    For cleanup that must still run once the outer bound has run out or was cancelled
    (stopping an acquisition after a step timeout or a signal), with a short budget of its own.
    """
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)
