"""One runner per DAQ: a lock in the DAQ's own Redis, with an expiry renewed while the run lasts.

A crashed runner cannot renew, so its lock expires after ``ttl`` seconds and does not
block the DAQ for long. The lock guards against two runners interleaving writes and
config changes on one DAQ; it does not stop people using the CLI tools meanwhile.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, Optional

import redis

from .exceptions import DaqError, LockHeldError

__all__ = ["DaqLock", "LOCK_KEY", "LOCK_TTL_S"]

LOCK_KEY = "daq-runner:lock"
LOCK_TTL_S = 30.0

# Delete only a lock that is still ours.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# Renewing also takes the lock back when it is gone: a restarted (empty) Redis, or an expiry
# during a Redis outage longer than the ttl. A lock someone else took meanwhile is left alone.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not holder then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""


class DaqLock:
    """The runner lock of one DAQ.

    Args:
        client: the DAQ's Redis.
        holder: who holds it (host, pid, batch...); stored as JSON with ``since``.
        ttl: expiry in seconds, renewed every ``ttl / 3``.
    """

    def __init__(self, client: redis.Redis, holder: Dict[str, Any], ttl: float = LOCK_TTL_S, key: str = LOCK_KEY) -> None:
        self.client = client
        self.key = key
        self.ttl = ttl
        self.value = json.dumps({**holder, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None

    def holder(self) -> Optional[dict]:
        """Who holds the lock now, or ``None``."""
        raw = self.client.get(self.key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return {"raw": raw.decode(errors="replace")}

    def acquire(
        self,
        wait: float = 0.0,
        stop_event: Optional[threading.Event] = None,
        on_held: Optional[Callable[[dict], None]] = None,
    ) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raises :class:`LockHeldError`.

        ``on_held(holder)`` is called once when the lock is found held and the call is
        going to wait; a set ``stop_event`` ends the wait at once (with the error).
        """
        deadline = time.monotonic() + wait
        told = False
        stop_event = stop_event or threading.Event()
        while True:
            try:
                if self.client.set(self.key, self.value, nx=True, px=int(self.ttl * 1000)):
                    break
                holder = self.holder() or {}
            except redis.RedisError as exc:
                raise DaqError(f"Redis: {exc}") from exc
            if time.monotonic() >= deadline or stop_event.is_set():
                raise LockHeldError(
                    "another runner drives this DAQ: "
                    f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
                    f"batch {holder.get('batch', '?')}, since {holder.get('since', '?')}",
                    holder,
                )
            if on_held is not None and not told:
                told = True
                on_held(holder)
            stop_event.wait(min(0.5, max(deadline - time.monotonic(), 0.01)))
        self._renewer = threading.Thread(target=self._renew, name="daq-runner-lock", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.client.eval(_RENEW, 1, self.key, self.value, int(self.ttl * 1000))
            except redis.RedisError:
                pass  # Redis down: nothing to renew; the run goes on

    def release(self) -> None:
        """Give the lock up (only if still ours). Never raises."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(2)
        try:
            self.client.eval(_RELEASE, 1, self.key, self.value)
        except redis.RedisError:
            pass
