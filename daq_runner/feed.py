"""Waiting for the DAQ: block on Redis streams, fall back to REST polling, never miss a transition.

With Redis, :meth:`StatusFeed.wait_for_status` blocks on ``daq:status`` with ``XREAD``
from an id taken *before* the request that causes the transition, so a transition that
happens between the request and the wait is still seen. When Redis is absent or fails,
it polls ``GET /writer/status`` every ``poll_interval`` seconds and tries Redis again
every few seconds; a run never fails because Redis is unavailable.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

import redis

from . import api
from ._redis import decode_entries, last_id
from .client import StdDaqClient

__all__ = ["StatusFeed", "Interrupted"]

StatusPredicate = Callable[[dict], bool]

_BLOCK_S = 0.25  # XREAD slice: bounds the reaction to a stop request, not to a transition
_REDIS_RETRY_S = 2.0
_REST_CONFIRM_S = 2.0  # with Redis, confirm over REST this often in case the stream is silent


class Interrupted(Exception):
    """The runner was told to stop while waiting."""


class StatusFeed:
    """Writer status and acquisition logs, from Redis streams when possible, from REST otherwise.

    Args:
        client: the REST client.
        redis_client: a Redis client of the DAQ, or ``None`` to poll REST only.
        streams: stream names.
        stop_event: set it to make every wait raise :class:`Interrupted`.
        poll_interval: REST polling period in seconds.
        notify: called with a message when the feed switches between Redis and REST.
    """

    def __init__(
        self,
        client: StdDaqClient,
        redis_client: Optional[redis.Redis],
        streams: api.StreamNames,
        stop_event: threading.Event,
        poll_interval: float = 0.05,
        notify: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.client = client
        self.redis = redis_client
        self.streams = streams
        self.stop_event = stop_event
        self.poll_interval = poll_interval
        self.notify = notify
        self._redis_ok = redis_client is not None
        self._retry_redis_at = 0.0

    @property
    def using_redis(self) -> bool:
        return self._redis_ok

    def _redis_failed(self, exc: Exception) -> None:
        if self._redis_ok:
            self.notify(f"Redis unavailable ({exc}); falling back to REST polling")
        self._redis_ok = False
        self._retry_redis_at = time.monotonic() + _REDIS_RETRY_S

    def _maybe_back_to_redis(self) -> bool:
        if self.redis is None or self._redis_ok or time.monotonic() < self._retry_redis_at:
            return self._redis_ok
        try:
            self.redis.ping()
        except redis.RedisError:
            self._retry_redis_at = time.monotonic() + _REDIS_RETRY_S
            return False
        self._redis_ok = True
        self.notify("Redis is back; waiting on the status stream again")
        return True

    def mark(self, stream: Optional[str] = None) -> Optional[str]:
        """The id to read ``stream`` (default: status) from, taken before a request; ``None`` without Redis."""
        if not self._maybe_back_to_redis():
            return None
        try:
            return last_id(self.redis, stream or self.streams.status)
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return None

    def sleep(self, seconds: float) -> None:
        """Sleep, but raise :class:`Interrupted` as soon as a stop is requested."""
        if self.stop_event.wait(max(seconds, 0.0)):
            raise Interrupted()

    def wait_for_status(
        self,
        predicate: StatusPredicate,
        timeout: float,
        since: Optional[str] = None,
        on_status: Callable[[dict], None] = lambda status: None,
    ) -> Optional[dict]:
        """The first writer status (after ``since``) for which ``predicate`` holds, or ``None`` on timeout."""
        deadline = time.monotonic() + timeout
        check_rest_at = 0.0 if since is None else time.monotonic() + _REST_CONFIRM_S
        while True:
            if self.stop_event.is_set():
                raise Interrupted()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if since is not None and self._redis_ok:
                try:
                    reply = self.redis.xread(
                        {self.streams.status: since}, count=100, block=max(1, int(min(remaining, _BLOCK_S) * 1000))
                    )
                except redis.RedisError as exc:
                    self._redis_failed(exc)
                    continue
                for entry_id, status in decode_entries(reply[0][1] if reply else []):
                    since = entry_id
                    on_status(status)
                    if predicate(status):
                        return status
                if time.monotonic() < check_rest_at:
                    continue
                check_rest_at = time.monotonic() + _REST_CONFIRM_S
            elif since is None and self._maybe_back_to_redis():
                # Redis came back: read from now on, after one REST look for what happened meanwhile.
                since = self.mark()
            status = self.client.get_status()
            on_status(status)
            if predicate(status):
                return status
            if since is None or not self._redis_ok:
                since = None
                self.sleep(min(self.poll_interval, max(deadline - time.monotonic(), 0.0)))

    def find_log(self, run_id: int, since: Optional[str], timeout: float) -> tuple:
        """The ``daq:log`` record of ``run_id`` as ``(record, source)``, or ``(None, reason)``."""
        deadline = time.monotonic() + timeout
        if since is not None and self._redis_ok:
            cursor = since
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    reply = self.redis.xread({self.streams.log: cursor}, count=100, block=max(1, int(min(remaining, _BLOCK_S) * 1000)))
                    for entry_id, record in decode_entries(reply[0][1] if reply else []):
                        cursor = entry_id
                        if api.acquisition_run_id({"acquisition": record}) == run_id:
                            return record, f"redis {self.streams.log} {entry_id}"
                    if self.stop_event.is_set():
                        raise Interrupted()
            except redis.RedisError as exc:
                self._redis_failed(exc)
        # Without Redis (or if the stream missed it): the REST logs.
        while True:
            for record in self.client.get_logs(20):
                if api.acquisition_run_id({"acquisition": record}) == run_id:
                    return record, "rest /daq/logs"
            if time.monotonic() >= deadline:
                return None, f"no daq:log record with run_id {run_id} within {timeout:g} s"
            self.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))

    def watch_value(self, read: Callable[[], Any], done: Callable[[Any], bool], timeout: float, interval: float = 0.05) -> Any:
        """Poll ``read()`` until ``done(value)``; returns the last value (check ``done`` for timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            value = read()
            if done(value) or time.monotonic() >= deadline:
                return value
            self.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
