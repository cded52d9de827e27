"""The DAQ's Redis as the rest_v2 server uses it: config, deployments, logs, statuses, statistics.

The real server keeps no copy of its own: GET config, the logs, the statistics and the
deployment status are read from Redis on every request, and a write reads the config's
``writer_user_id`` from there first. So does the simulator, with the same consequences:
while Redis is down those requests fail with redis-py's own message ("Error 111 connecting
to HOST:PORT. Connection refused."), and a Redis that comes back empty has no config and
no logs. The REST-path methods raise :class:`redis.RedisError`; the loggers'
:meth:`RedisStore.publish` never does.

Each entry stores UTF-8 JSON in the field ``json``, as the real server writes it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import redis

from .. import protocol
from .._redis import connect

__all__ = ["RedisStore", "StatusLoggers", "LogRecord"]

log = logging.getLogger(__name__)

_FIELD = b"json"
# How long the loggers pause after Redis failed them: a Redis that hangs would otherwise
# hold every status publication for its socket timeout.
_PUBLISH_BACKOFF_S = 1.0

# ``(stream id, acquisition, reports)`` of one ``daq:log`` entry.
LogRecord = Tuple[str, Dict[str, Any], List[Any]]


def _decode(fields: Dict[bytes, bytes]) -> Any:
    return json.loads(fields[_FIELD])


class RedisStore:
    """Reads and writes the DAQ's streams in one Redis.

    Args:
        redis_url: the DAQ's Redis.
        streams: the stream names.
        maxlen: approximate length at which the status and statistics streams are trimmed
            (the config and log streams are the DAQ's record and are never trimmed by the server;
            the simulator trims them at the same length to bound its memory).
    """

    def __init__(self, redis_url: str, streams: protocol.StreamNames, maxlen: int) -> None:
        self.streams = streams
        self.maxlen = maxlen
        self.url = redis_url
        self._redis = connect(redis_url, socket_timeout=1.0)
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._paused = False

    def close(self) -> None:
        self._redis.close()

    # -- what the REST server reads and writes (raises redis.RedisError) -------------------

    def get_config(self) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
        """``(config_id, config)`` of the newest ``daq:config`` entry; ``(None, None)`` without one."""
        newest = self._redis.xrevrange(self.streams.config, count=1)
        if not newest:
            return None, None
        entry_id, fields = newest[0]
        return entry_id.decode(), _decode(fields)

    def add_config(self, config: Dict[str, Any]) -> str:
        """Store ``config``; its entry id is the new ``config_id``."""
        return self._xadd(self.streams.config, {_FIELD: json.dumps(config)})

    def add_deployment(self, config_id: str, server_name: str, message: str) -> None:
        """A server's report on the deployment of ``config_id`` (``Deploying``, ``Done``, ``Error``)."""
        self._xadd(self.streams.deployment(config_id), {"server_name": server_name, "message": message})

    def deployment(self, config_id: str) -> List[Tuple[str, str, str]]:
        """``(entry id, server name, message)`` of every report on ``config_id``, oldest first."""
        return [
            (entry_id.decode(), fields[b"server_name"].decode(), fields[b"message"].decode())
            for entry_id, fields in self._redis.xrange(self.streams.deployment(config_id))
        ]

    def add_log(self, acquisition: Dict[str, Any]) -> str:
        """Log a finished acquisition (the driver's record of it, as it is)."""
        return self._xadd(self.streams.log, {_FIELD: json.dumps(acquisition)})

    def logs(self, n: int) -> List[LogRecord]:
        """The newest ``n`` log entries, newest first, each with its reports.

        A log's reports are the entries of the stream ``<log>:<log id>`` (validation reports
        that other services may add; an empty list when there are none).
        """
        entries = self._redis.xrevrange(self.streams.log, count=n)
        if not entries:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xrange(f"{self.streams.log}:{entry_id.decode()}")
            reports = pipe.execute()
        return [
            (entry_id.decode(), _decode(fields), [_decode(r) for _, r in entry_reports if _FIELD in r])
            for (entry_id, fields), entry_reports in zip(entries, reports)
        ]

    def last_stat(self) -> Optional[Dict[str, Any]]:
        """The newest ``daq:stat`` entry, ``None`` without one."""
        newest = self._redis.xrevrange(self.streams.stat, count=1)
        return _decode(newest[0][1]) if newest else None

    def clear(self) -> None:
        """Delete the DAQ's streams (a clean DAQ); other keys of the Redis are left alone."""
        names = self.streams
        keys = [names.status, names.config, names.log, names.stat]
        for pattern in (names.deployment("*"), f"{names.log}:*"):
            keys.extend(self._redis.scan_iter(match=pattern, count=1000))
        self._redis.delete(*keys)

    def _xadd(self, stream: str, fields: Dict[Any, Any]) -> str:
        entry_id = self._redis.xadd(stream, fields, maxlen=self.maxlen, approximate=True)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    # -- what the status and statistics loggers write (never raises) -----------------------

    def publish(self, stream: str, obj: Any) -> None:
        """Add ``obj`` to ``stream``; lost while Redis is down, as the real loggers lose it.

        After a failure the loggers pause for a second (a hanging Redis cannot hold them);
        the first failure and the recovery are logged once.
        """
        with self._lock:
            if time.monotonic() < self._paused_until:
                return
            try:
                self._xadd(stream, {_FIELD: json.dumps(obj)})
            except redis.RedisError as exc:
                if not self._paused:
                    log.warning("redis unavailable, statuses and statistics are lost meanwhile: %s", exc)
                self._paused = True
                self._paused_until = time.monotonic() + _PUBLISH_BACKOFF_S
                return
            if self._paused:
                log.warning("redis back, statuses and statistics are stored again")
                self._paused = False


class StatusLoggers:
    """The real server's two status loggers: each writes every status to ``daq:status``.

    The first writes a status at once (:meth:`publish`, called in the order of the
    transitions); the second writes its copy ``lag_s`` later, from a thread of its own.
    When the next status comes before the second copy of the previous one is written (the
    last progress status and the READY of an acquisition's end are milliseconds apart),
    ``interleave()`` decides: True leaves the older copy to come after the newer status
    (the stream then reads READY, a stale WRITING, READY), False writes it first.

    Args:
        store: where to write.
        lag_s: how much later the second logger writes its copy.
        second: asked for each status: ``False`` while the second logger is off (each status
            stored once).
        interleave: asked once per status: may the copies still pending come after it?
    """

    def __init__(self, store: RedisStore, lag_s: float, second: Callable[[], bool], interleave: Callable[[], bool]) -> None:
        self._store = store
        self._lag_s = lag_s
        self._second = second
        self._interleave = interleave
        self._cond = threading.Condition()
        self._pending: List[Tuple[float, str, Any]] = []  # (due, stream, status), oldest first
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="daq-sim-status-logger", daemon=True)
        self._thread.start()

    def publish(self, stream: str, status: Any) -> None:
        """Both loggers receive ``status``: the first writes it now, the second later."""
        with self._cond:
            # One draw per status, whether a copy is pending or not: with a seeded source the
            # same statuses interleave whatever the timing.
            if not self._interleave():
                self._write_pending(len(self._pending))
            self._store.publish(stream, status)
            if self._second():
                self._pending.append((time.monotonic() + self._lag_s, stream, status))
                self._cond.notify_all()

    def drain(self) -> None:
        """Write every pending copy now."""
        with self._cond:
            self._write_pending(len(self._pending))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._write_pending(len(self._pending))
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _write_pending(self, count: int) -> None:
        for _, stream, status in self._pending[:count]:
            self._store.publish(stream, status)
        del self._pending[:count]

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._pending:
                    self._cond.wait()
                    continue
                delay = self._pending[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                self._write_pending(1)
