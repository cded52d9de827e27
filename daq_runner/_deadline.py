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
- a blocked socket read looks at the bound and the cancel event at least every
  :data:`SLICE_S` seconds, so a stop ends a request in flight within that time.

Bounds nest: an inner ``bounded()`` can only shorten the outer one. A nested bound keeps
following the bounds it was made from: shortening a deadline (``deadline.at = ...``, as a
second stop request does to a cleanup) shortens every bound made from it, also the ones a
request in flight is using.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

__all__ = ["Deadline", "Interrupted", "bounded", "detached", "current", "SLICE_S"]

# The longest a blocked call goes without looking at the bound and the cancel event.
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
        parents: deadlines this one may never outlast (it follows them when they change).
    """

    __slots__ = ("_at", "_cancel", "_parents")

    def __init__(
        self,
        seconds: Optional[float] = None,
        cancel: Optional[threading.Event] = None,
        *,
        at: Optional[float] = None,
        parents: Tuple["Deadline", ...] = (),
    ) -> None:
        if at is None:
            at = math.inf if seconds is None else time.monotonic() + max(float(seconds), 0.0)
        self._at = at
        self._cancel = cancel
        self._parents = parents

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}, cancel={self.cancel is not None})"

    @property
    def at(self) -> float:
        """The monotonic time it ends: its own, or a parent's if earlier (looked up each time)."""
        at = self._at
        for parent in self._parents:
            at = min(at, parent.at)
        return at

    @at.setter
    def at(self, value: float) -> None:
        self._at = value

    @property
    def cancel(self) -> Optional[threading.Event]:
        """Its cancel event, else the nearest parent's (``None``: nothing can cancel it)."""
        if self._cancel is not None:
            return self._cancel
        for parent in self._parents:
            event = parent.cancel
            if event is not None:
                return event
        return None

    def remaining(self) -> float:
        """Seconds left (``0.0`` once passed, ``inf`` without a limit)."""
        return max(self.at - time.monotonic(), 0.0)

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    @property
    def cancelled(self) -> bool:
        if self._cancel is not None and self._cancel.is_set():
            return True
        return any(parent.cancelled for parent in self._parents)

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop was requested."""
        if self.cancelled:
            raise Interrupted()

    def within(self, seconds: Optional[float]) -> "Deadline":
        """The earlier of this deadline and ``seconds`` from now (following this one)."""
        if seconds is None:
            return self
        return Deadline(seconds, parents=(self,))

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, but not past the deadline; raise :class:`Interrupted` on a stop."""
        end = time.monotonic() + max(float(seconds), 0.0)
        while True:
            self.check()
            left = min(end, self.at) - time.monotonic()
            if left <= 0:
                return
            event = self.cancel
            # In slices: another thread may shorten this deadline or a parent (a second stop
            # request cuts a cleanup's wait short) or cancel a parent.
            step = min(left, SLICE_S)
            if event is None:
                time.sleep(step)
            elif event.wait(step):
                raise Interrupted()


_NEVER = Deadline()
_CURRENT: "contextvars.ContextVar[Deadline]" = contextvars.ContextVar("daq_runner_bound", default=_NEVER)


def current() -> Deadline:
    """The bound in force here (a deadline that never expires when none was set)."""
    return _CURRENT.get()


@contextmanager
def bounded(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the bound of the code inside; it can only shorten an outer bound.

    Either's cancel event stops the code inside.
    """
    outer = _CURRENT.get()
    inner = deadline if outer is _NEVER else Deadline(parents=(deadline, outer))
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
