"""One runner per DAQ: a lock in the DAQ's own Redis, with an expiry renewed while the run lasts.

A crashed runner cannot renew, so its lock expires after ``ttl`` seconds and does not block the
DAQ for long; a holder that is a dead process on this host is taken over at once. A runner that
loses its lock (it expired while the runner was paused, another runner took it, Redis refused
the renewal) is told at once through ``on_lost`` and must stop: two runners never drive one DAQ.
Before every request that changes the DAQ the runner calls :meth:`DaqLock.assert_held`, which
also catches a process that was paused past the expiry before its renewal thread could notice.

Only plain commands and transactions (``WATCH``/``MULTI``) are used, no Lua, so that an ACL user
without scripting rights can hold the lock. The lock guards against two runners interleaving
writes and config changes on one DAQ; it does not stop people using the CLI tools meanwhile.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any, Callable, Dict, Optional

import redis

from ._deadline import Interrupted, current
from .exceptions import LockError, LockHeldError

__all__ = ["DaqLock", "LOCK_KEY", "LOCK_TTL_S", "REDIS_BUDGET_S"]

LOCK_KEY = "daq-runner:lock"
LOCK_TTL_S = 30.0
# How long taking the lock rides out a stalled or restarting Redis when no --wait-lock is given.
REDIS_BUDGET_S = 5.0


def _alive(pid: Any) -> bool:
    """Whether a process of this host with that pid exists (a pid we may not signal counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


class DaqLock:
    """The runner lock of one DAQ.

    Args:
        client: the DAQ's Redis.
        holder: who holds it (host, pid, batch, run...); stored as JSON with ``since``.
        ttl: expiry in seconds, renewed every ``ttl / 3``.
        key: the Redis key.
        on_lost: called once, from the renewal thread or from :meth:`assert_held`, with the
            reason when the lock is lost.
        notify: called with a message for things people should know (a renewal error, a
            takeover of a dead holder's lock).
    """

    def __init__(
        self,
        client: redis.Redis,
        holder: Dict[str, Any],
        ttl: float = LOCK_TTL_S,
        key: str = LOCK_KEY,
        on_lost: Callable[[str], None] = lambda reason: None,
        notify: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.client = client
        self.key = key
        self.ttl = ttl
        self.holder_info = {**holder, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.value = json.dumps(self.holder_info)
        self.on_lost = on_lost
        self.notify = notify
        self.lost: Optional[str] = None
        self._held = False
        self._renewed_at = 0.0  # monotonic time of the last confirmation that the lock is ours
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None
        self._renew_error_told = False

    # -- reading ---------------------------------------------------------------------------

    def holder(self) -> Optional[dict]:
        """Who holds the lock now, or ``None``."""
        raw = self.client.get(self.key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        return value if isinstance(value, dict) else {"raw": raw.decode(errors="replace")[:200]}

    @staticmethod
    def describe(holder: Optional[dict]) -> str:
        holder = holder or {}
        return (
            f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
            f"batch {holder.get('batch', '?')}, since {holder.get('since', '?')}"
        )

    # -- taking ------------------------------------------------------------------------------

    def _try_take(self) -> Optional[dict]:
        """Take the lock if free or held by a dead process of this host; else return the holder."""
        if self.client.set(self.key, self.value, nx=True, px=int(self.ttl * 1000)):
            return None
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key)
                raw = pipe.get(self.key)
                if raw is None:
                    pipe.reset()
                    return {} if not self.client.set(self.key, self.value, nx=True, px=int(self.ttl * 1000)) else None
                holder = self._parse(raw)
                if holder.get("host") == socket.gethostname() and "pid" in holder and not _alive(holder["pid"]):
                    pipe.multi()
                    pipe.set(self.key, self.value, px=int(self.ttl * 1000))
                    pipe.execute()
                    self.notify(f"took over the runner lock of a process that no longer runs ({self.describe(holder)})")
                    return None
                return holder
            except redis.WatchError:
                return {}  # changed meanwhile: look again

    @staticmethod
    def _parse(raw: bytes) -> dict:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        return value if isinstance(value, dict) else {}

    def acquire(
        self,
        wait: float = 0.0,
        redis_budget: float = REDIS_BUDGET_S,
        on_held: Optional[Callable[[dict], None]] = None,
    ) -> None:
        """Take the lock, waiting up to ``wait`` seconds for another runner to release it.

        A Redis that stalls or refuses is ridden out for the longer of ``wait`` and
        ``redis_budget`` seconds. The bound in force (``_deadline.current()``) also ends the
        wait, and a stop request raises :class:`~daq_runner._deadline.Interrupted`.

        Raises:
            LockHeldError: another runner holds the lock (``holder`` says who).
            LockError: the lock could not be taken because Redis did not allow it.
        """
        bound = current()
        started = time.monotonic()
        told = False
        redis_error: Optional[Exception] = None
        while True:
            bound.check()
            try:
                holder = self._try_take()
                redis_error = None
            except redis.RedisError as exc:
                holder, redis_error = None, exc
                if time.monotonic() - started >= max(wait, redis_budget) or bound.expired:
                    raise LockError(f"could not take the runner lock: Redis: {exc}") from exc
                if not told:
                    told = True
                    self.notify(f"Redis does not answer the runner lock request ({exc}); trying again")
            if holder is None and redis_error is None:
                break
            if holder:
                if time.monotonic() - started >= wait or bound.expired:
                    raise LockHeldError(f"another runner drives this DAQ: {self.describe(holder)}", holder)
                if on_held is not None and not told:
                    told = True
                    on_held(holder)
            bound.sleep(0.25)
        self._held = True
        self._renewed_at = time.monotonic()
        self._renewer = threading.Thread(target=self._renew_loop, name="daq-runner-lock", daemon=True)
        self._renewer.start()

    # -- keeping ------------------------------------------------------------------------------

    def _extend(self) -> str:
        """Extend the lock if it is still ours: ``"ok"``, ``"taken"`` (by someone else) or ``"gone"``."""
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key)
                raw = pipe.get(self.key)
                if raw is None:
                    return "gone"
                if raw.decode(errors="replace") != self.value:
                    return "taken"
                pipe.multi()
                pipe.pexpire(self.key, int(self.ttl * 1000))
                pipe.execute()
                return "ok"
            except redis.WatchError:
                return "taken"

    def _confirm(self) -> None:
        """Renew now; mark the lock lost when it is not ours any more. Raises ``RedisError``."""
        outcome = self._extend()
        if outcome == "gone":
            # An emptied (restarted) Redis, or an expiry during a Redis outage: take it back if free.
            if self.client.set(self.key, self.value, nx=True, px=int(self.ttl * 1000)):
                outcome = "ok"
            else:
                outcome = "taken"
        if outcome == "ok":
            self._renewed_at = time.monotonic()
            self._renew_error_told = False
            return
        holder = None
        try:
            holder = self.holder()
        except redis.RedisError:
            pass
        self._lose(f"taken over by another runner ({self.describe(holder)})")

    def _lose(self, reason: str) -> None:
        with self._guard:
            if self.lost is not None:
                return
            self.lost = reason
        self.on_lost(reason)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if self.lost is not None:
                return
            try:
                self._confirm()
            except redis.RedisError as exc:
                if time.monotonic() - self._renewed_at >= self.ttl:
                    self._lose(f"could not renew it for {self.ttl:g} s (it expired): Redis: {exc}")
                    return
                if not self._renew_error_told:
                    self._renew_error_told = True
                    self.notify(f"runner lock renewal failed ({exc}); trying again")

    def assert_held(self) -> None:
        """Before a request that changes the DAQ: raise :class:`LockError` unless the lock is ours.

        Asks Redis only when the last confirmation is older than a third of the expiry (a process
        paused past it must not send anything before it knows).
        """
        if self.lost is None and time.monotonic() - self._renewed_at > self.ttl / 3:
            try:
                self._confirm()
            except redis.RedisError as exc:
                if time.monotonic() - self._renewed_at >= self.ttl:
                    self._lose(f"could not renew it for {self.ttl:g} s (it expired): Redis: {exc}")
        if self.lost is not None:
            raise LockError(f"runner lock lost: {self.lost}")

    def release(self) -> None:
        """Give the lock up (only if still ours). Never raises."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(2)
        if not self._held or self.lost is not None:
            return
        self._held = False
        try:
            with self.client.pipeline() as pipe:
                pipe.watch(self.key)
                if pipe.get(self.key) == self.value.encode():
                    pipe.multi()
                    pipe.delete(self.key)
                    pipe.execute()
        except (redis.RedisError, Interrupted):
            pass
