"""Waiting for a rest_v2 DAQ: block on Redis streams, fall back to REST polling, never miss a transition.

With Redis, :meth:`StatusFeed.wait_for_status` blocks on ``daq:status`` with ``XREAD`` from a
:class:`Cursor` taken *before* the request that causes the transition, so a transition that
happens between the request and the wait is still seen. A real DAQ writes ``daq:status`` only
when the writer's status changes (no idle heartbeat), so a silent stream is confirmed over REST
every couple of seconds: no wait depends on a heartbeat. When Redis is absent or fails, the
feed polls ``GET /writer/status`` every ``poll_interval`` seconds and tries Redis again every
few seconds; a run never fails because Redis is unavailable.

Every wait is bounded by :func:`daq_runner._deadline.current` (a step's time limit) and by its
own ``timeout``, and raises :class:`~daq_runner._deadline.Interrupted` on a stop request.
Every status and log record read, from REST or Redis, is checked for shape first
(:mod:`daq_runner.protocol`); a malformed one raises :class:`~daq_runner.exceptions.DaqProtocolError`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Tuple

import redis

from .. import protocol
from .._deadline import SLICE_S, Deadline, Interrupted, bounded, current
from .._redis import as_text, decode_entries, last_id, newest_id
from .._restart import RestartSigns, Sample, detector_rate, wait_for_signs
from ..client import StdDaqClient
from ..exceptions import DaqError, DaqProtocolError, DeadlineExceeded
from ._timing import RestV2Timing

__all__ = ["StatusFeed", "Cursor", "Tap", "Interrupted", "ConfigEntry", "entry_time"]

ConfigEntry = Tuple[Optional[str], Any]
"""``(config_id, config)``: the newest ``daq:config`` entry (``(None, None)``: none)."""

StatusPredicate = Callable[[dict], bool]

_STAT_HISTORY_S = 10.0  # daq:stat read from this long before a deployment: the baseline and the period


def entry_time(entry_id: str) -> float:
    """The time (s, the DAQ's Redis clock) of a stream entry id ``<ms>-<seq>``."""
    try:
        return int(entry_id.split("-", 1)[0]) / 1000.0
    except ValueError:
        return 0.0


def _own_window(bound: Deadline, outer: Deadline) -> bool:
    """Whether a wait's own time window (``bound``), not its caller's bound (``outer``), is what
    a request cut short ended: the caller's time is not over, so it is no timeout of the step."""
    return bound.at < outer.at


class Cursor:
    """Where to read a stream from: the id of its newest entry when taken, ``None`` without Redis.

    Waits advance it past the entries they read, so successive waits miss nothing.
    """

    __slots__ = ("stream", "id")

    def __init__(self, stream: str, entry_id: Optional[str]) -> None:
        self.stream = stream
        self.id = entry_id

    def __repr__(self) -> str:
        return f"Cursor({self.stream!r}, {self.id!r})"


class Tap(Cursor):
    """A cursor on a second stream (the acquisition log) that status waits read along.

    A wait given a tap reads its stream in the same ``XREAD`` as the statuses and keeps the
    raw entries in :attr:`entries`, in order (not checked yet: :meth:`StatusFeed.find_log`
    checks them as if it read them itself), advancing past them. So the log record that a
    DAQ writes just before the final status is usually at hand when the end is seen, without
    another round trip.
    """

    __slots__ = ("entries",)

    def __init__(self, stream: str, entry_id: Optional[str]) -> None:
        super().__init__(stream, entry_id)
        self.entries: List[Tuple[str, Any]] = []


class StatusFeed:
    """Writer status and acquisition logs, from Redis streams when possible, from REST otherwise.

    Args:
        client: the REST client.
        redis_client: a Redis client of the DAQ, or ``None`` to poll REST only.
        streams: stream names.
        poll_interval: REST polling period in seconds.
        notify: called with a message when the feed switches between Redis and REST.
        observe: called with every writer status read, in order (the runner follows
            acquisitions that run in the background with it).
        timing: its periods (``rest_confirm_s``, ``redis_retry_s``, ``continue_s``,
            ``log_poll_s`` of :class:`~daq_runner.rest_v2.RestV2Timing`).
    """

    def __init__(
        self,
        client: StdDaqClient,
        redis_client: Optional[redis.Redis],
        streams: protocol.StreamNames = protocol.StreamNames(),
        poll_interval: float = 0.05,
        notify: Callable[[str], None] = lambda message: None,
        observe: Callable[[dict], None] = lambda status: None,
        *,
        timing: RestV2Timing = RestV2Timing(),
    ) -> None:
        self.client = client
        self.timing = timing
        self.redis = redis_client
        self.streams = streams
        self.poll_interval = poll_interval
        self.notify = notify
        self.observe = observe
        self._redis_ok = redis_client is not None
        self._retry_redis_at = 0.0
        self._continue: Optional[Tuple[Cursor, Tap, dict, float]] = None
        # daq:config, looked at with every write mark once watch_config() started it: the
        # newest entry seen, and whether the last mark_write() saw it (then it is current).
        self._watching_config = False
        self.config_seen: ConfigEntry = (None, None)
        self.config_fresh = False

    @property
    def using_redis(self) -> bool:
        return self._redis_ok

    # -- Redis health ---------------------------------------------------------------------

    def _redis_failed(self, exc: Exception) -> None:
        if self._redis_ok:
            self.notify(f"Redis unavailable ({exc}); falling back to REST polling")
        self._redis_ok = False
        self._retry_redis_at = time.monotonic() + self.timing.redis_retry_s

    def _maybe_back_to_redis(self) -> bool:
        if self.redis is None or self._redis_ok or time.monotonic() < self._retry_redis_at:
            return self._redis_ok
        try:
            self.redis.ping()
        except redis.RedisError:
            self._retry_redis_at = time.monotonic() + self.timing.redis_retry_s
            return False
        self._redis_ok = True
        self.notify("Redis is back; waiting on the status stream again")
        return True

    # -- reading ------------------------------------------------------------------------------

    def continue_from(self, cursor: Cursor, tap: Tap, status: dict) -> None:
        """Where the next :meth:`mark_write` may start instead of asking Redis: right after the
        final ``status`` of an acquisition, read from the stream at ``cursor`` (and the log
        read along up to ``tap``).

        Consecutive writes then cost no look at the streams between them: whatever the DAQ
        published since (the second copies of the last statuses, or someone else's start)
        is read by the next wait from there. Kept for ``timing.continue_s`` seconds, and only until
        the feed is used for anything else.
        """
        if cursor.id is not None and tap.id is not None:
            self._continue = (Cursor(cursor.stream, cursor.id), Tap(tap.stream, tap.id), status, time.monotonic())

    def mark(self, stream: Optional[str] = None) -> Cursor:
        """A cursor at the newest entry of ``stream`` (default: status), taken before a request."""
        self._continue = None
        stream = stream or self.streams.status
        if not self._maybe_back_to_redis():
            return Cursor(stream, None)
        try:
            return Cursor(stream, last_id(self.redis, stream))
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return Cursor(stream, None)

    def mark_write(self) -> Tuple[Cursor, Tap, Optional[dict]]:
        """Before a write request: cursors at the newest entries of the status and log streams,
        and the newest status entry itself, in one Redis round trip; or, right after an
        acquisition ended, its cursors and final status (see :meth:`continue_from`), in none.

        The status is ``None`` without Redis, on an empty stream, or when the newest entry is
        not a writer status (it is only a hint: the caller asks over REST then). It is what the
        DAQ last published, not necessarily the writer's state now (a real DAQ stores each
        status twice and the copies can interleave); the write's own reply is the confirmation.
        Either way the cursors are from before the request: no later entry can be missed.

        Once :meth:`watch_config` started it, the same round trip reads the newest ``daq:config``
        entry into :attr:`config_seen` (on the fast path, one look at it is the only round
        trip) and sets :attr:`config_fresh`.
        """
        kept, self._continue = self._continue, None
        self.config_fresh = False
        watch = self._watching_config
        if kept is not None and time.monotonic() - kept[3] < self.timing.continue_s and self._redis_ok:
            if not watch:
                return kept[0], kept[1], kept[2]
            try:
                # The one look the fast path makes: a config stored since the last acquisition
                # ended (its restart would come under the next one).
                self._saw_configs(self.redis.xrevrange(self.streams.config, count=1))
                self.config_fresh = True
                return kept[0], kept[1], kept[2]
            except redis.RedisError as exc:
                self._redis_failed(exc)
                return Cursor(self.streams.status, None), Tap(self.streams.log, None), None
        status_stream, log_stream = self.streams.status, self.streams.log
        if not self._maybe_back_to_redis():
            return Cursor(status_stream, None), Tap(log_stream, None), None
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrevrange(status_stream, count=1)
                pipe.xrevrange(log_stream, count=1)
                if watch:
                    pipe.xrevrange(self.streams.config, count=1)
                replies = pipe.execute()
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return Cursor(status_stream, None), Tap(log_stream, None), None
        newest_status, newest_log = replies[0], replies[1]
        if watch:
            self._saw_configs(replies[2])
            self.config_fresh = True
        cursors = Cursor(status_stream, newest_id(newest_status)), Tap(log_stream, newest_id(newest_log))
        newest = None
        for entry_id, obj in decode_entries(newest_status):
            try:
                newest = protocol.check_stream_entry(status_stream, obj, self.streams, entry_id)
            except DaqProtocolError:
                newest = None  # junk on the stream: no hint
        return cursors[0], cursors[1], newest

    # -- the configuration and the restart of the services ---------------------------------------

    def watch_config(self) -> Optional[ConfigEntry]:
        """Start looking at ``daq:config`` with every write mark; returns the newest entry
        (:attr:`config_seen`), or ``None`` without Redis."""
        if not self._maybe_back_to_redis():
            return None
        try:
            newest = self.redis.xrevrange(self.streams.config, count=1)
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return None
        self._watching_config = True
        self._saw_configs(newest)
        return self.config_seen

    def _saw_configs(self, newest: Any) -> None:
        """The reply of ``XREVRANGE daq:config COUNT 1`` becomes :attr:`config_seen` (empty: no config)."""
        if not newest:
            self.config_seen = (None, None)
            return
        decoded = decode_entries(newest[:1])
        self.config_seen = (as_text(newest[0][0]), decoded[0][1] if decoded else None)

    def restart_signs(self, deployed_at: Optional[float]) -> RestartSigns:
        """Wait for the DAQ's services to restart after a deployment and come back (see
        :mod:`daq_runner._restart`): bounded by the bound in force and the windows there.

        ``deployed_at`` is when the deployment reported SUCCESS on the DAQ's Redis clock
        (``deployment.stats.stop_time``). With Redis, ``daq:stat`` is read from a few seconds
        before it (a restart that already happened shows in the history) and then as it comes,
        so that a silence shows too. Without Redis (or ``deployed_at`` unknown), ``GET
        /daq/stats`` is polled from now, the first sample the baseline.
        """
        if deployed_at is not None and self._maybe_back_to_redis():
            try:
                return self._stat_signs(deployed_at)
            except redis.RedisError as exc:
                self._redis_failed(exc)
        now = time.monotonic()
        signs = RestartSigns(now, timed=False, before=[(now, detector_rate(self.client.get_stats()))])
        return wait_for_signs(signs, self._rest_stats(time.monotonic), time.monotonic)

    def _rest_stats(self, clock: Callable[[], float]) -> Callable[[float], List[Sample]]:
        def read(seconds: float) -> List[Sample]:
            self.sleep(seconds)
            return [(clock(), detector_rate(self.client.get_stats()))]

        return read

    def _stat_signs(self, deployed_at: float) -> RestartSigns:
        stream = self.streams.stat
        start = f"{max(int((deployed_at - _STAT_HISTORY_S) * 1000), 0)}-0"
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.xrange(stream, min=start, max="+", count=1000)
            (seconds, micros), history = pipe.execute()
        anchor_redis, anchor_local = float(seconds) + float(micros) / 1e6, time.monotonic()

        def now() -> float:
            return anchor_redis + (time.monotonic() - anchor_local)

        samples = [(entry_time(entry_id), detector_rate(obj)) for entry_id, obj in decode_entries(history)]
        signs = RestartSigns(deployed_at, timed=True, before=[s for s in samples if s[0] <= deployed_at])
        for at, rate in samples:
            if at > deployed_at:
                signs.add(at, rate)
        cursor = Cursor(stream, newest_id(history[-1:]) if history else start)

        def read(seconds: float) -> List[Sample]:
            try:
                entries = self._xread(cursor, seconds)
            except redis.RedisError as exc:
                # Redis gone meanwhile: the statistics over REST for the rest of the wait.
                self._redis_failed(exc)
                signs.timed = False
                return self._rest_stats(now)(seconds)
            if entries:
                cursor.id = entries[-1][0]
            return [(entry_time(entry_id), detector_rate(obj)) for entry_id, obj in entries]

        return wait_for_signs(signs, read, now)

    def status(self) -> dict:
        """The writer status now, over REST (checked for shape, passed to ``observe``)."""
        self._continue = None
        status = self.client.get_status()
        self.observe(status)
        return status

    def _xread(self, cursor: Cursor, remaining: float, *taps: Optional[Tap]) -> List[Tuple[str, Any]]:
        # Block at most one slice: a stop request is looked at between slices.
        block_ms = max(1, int(min(remaining, SLICE_S) * 1000))
        along = {tap.stream: tap for tap in taps if tap is not None and tap.id is not None}
        streams = {cursor.stream: cursor.id, **{name: tap.id for name, tap in along.items()}}
        reply = self.redis.xread(streams, count=100, block=block_ms)
        entries: List[Tuple[str, Any]] = []
        for name, items in reply or ():
            tap = along.get(as_text(name))
            if tap is None:
                entries = decode_entries(items)
                continue
            if items:
                tap.id = as_text(items[-1][0])  # past every entry read, JSON or not
            tap.entries.extend(decode_entries(items))
        return entries

    def sleep(self, seconds: float) -> None:
        """Sleep, but not past the bound; raise :class:`Interrupted` as soon as a stop is requested."""
        current().sleep(seconds)

    def wait_for_status(
        self,
        predicate: StatusPredicate,
        timeout: Optional[float] = None,
        since: Optional[Cursor] = None,
        on_status: Callable[[dict], None] = lambda status: None,
        tap: Optional[Tap] = None,
        stale: StatusPredicate = lambda status: False,
        configs: Optional[Tap] = None,
    ) -> Optional[dict]:
        """The first writer status (after ``since``) for which ``predicate`` holds.

        Returns ``None`` when ``timeout`` (or the bound in force) runs out first. Statuses are
        read in order from the stream when ``since`` has an id, else polled over REST. With
        ``tap``, its stream is read along (see :class:`Tap`). Stream entries for which
        ``stale`` holds are known late copies: observed, but not given to ``predicate``
        (statuses read over REST always are: they are the DAQ's state now).

        ``configs`` is a tap on ``daq:config`` whose id is the config id in force: a config
        stored since ends the wait at once (``None``; the caller looks at ``configs.entries``,
        ``(config_id, config)`` pairs, not checked yet). It is read along with the statuses;
        without Redis, ``GET /daq/config`` is asked every ``timing.rest_confirm_s`` and a
        new ``config_id`` is that entry.
        """
        self._continue = None
        cursor = since if since is not None else Cursor(self.streams.status, None)
        outer = current()
        with bounded(outer.within(timeout)) as bound:
            confirm_at = time.monotonic() + self.timing.rest_confirm_s if cursor.id is not None else 0.0
            try:
                while True:
                    bound.check()
                    if bound.expired:
                        return None
                    if cursor.id is not None and self._redis_ok:
                        try:
                            entries = self._xread(cursor, bound.remaining(), tap, configs)
                        except redis.RedisError as exc:
                            self._redis_failed(exc)
                            cursor.id = None
                            continue
                        for entry_id, obj in entries:
                            cursor.id = entry_id
                            status = protocol.check_stream_entry(cursor.stream, obj, self.streams, entry_id)
                            self.observe(status)
                            on_status(status)
                            if not stale(status) and predicate(status):
                                return status
                        if configs is not None and configs.entries:
                            return None
                        if time.monotonic() < confirm_at:
                            continue
                        confirm_at = time.monotonic() + self.timing.rest_confirm_s
                    elif self._maybe_back_to_redis():
                        # Redis came back: read from now on, after one REST look for what happened meanwhile.
                        cursor.id = self.mark(cursor.stream).id
                    elif configs is not None and time.monotonic() >= confirm_at:
                        # No config stream to read along: the config id over REST, now and then.
                        confirm_at = time.monotonic() + self.timing.rest_confirm_s
                        if self._config_stored(configs):
                            return None
                    status = self.status()
                    on_status(status)
                    if predicate(status):
                        return status
                    if cursor.id is None or not self._redis_ok:
                        self.sleep(min(self.poll_interval, bound.remaining()))
            except DeadlineExceeded:
                if bound.expired or _own_window(bound, outer):
                    return None
                raise

    def _config_stored(self, configs: Tap) -> bool:
        """Over REST: whether the DAQ's config id is no longer ``configs.id`` (then the config
        is the tap's new entry)."""
        envelope = self.client.request(protocol.DAQ_CONFIG_GET)
        config_id = envelope.get("config_id")
        if config_id is None or config_id == configs.id:
            return False
        configs.id = config_id
        configs.entries.append((config_id, envelope.get("config")))
        return True

    def find_log(self, match: Callable[[dict], bool], since: Optional[Cursor], timeout: float) -> Tuple[Optional[dict], str]:
        """The first acquisition log record for which ``match`` holds, as ``(record, source)``.

        Reads ``daq:log`` from ``since`` (or ``GET /daq/logs`` without Redis) for up to
        ``timeout`` seconds; a :class:`Tap`'s entries already read come first. A real DAQ may
        log one acquisition twice (a stop on an idle writer re-logs the last one): the first
        matching record is the one, never both. Returns ``(None, reason)`` when there is none.
        """
        for entry_id, obj in getattr(since, "entries", ()):
            record = protocol.check_stream_entry(since.stream, obj, self.streams, entry_id)  # type: ignore[union-attr]
            if match(record):
                return record, f"redis {since.stream} {entry_id}"  # type: ignore[union-attr]
        outer = current()
        with bounded(outer.within(timeout)) as bound:
            try:
                if since is not None and since.id is not None and self._redis_ok:
                    cursor = Cursor(since.stream, since.id)
                    try:
                        while not bound.expired:
                            bound.check()
                            for entry_id, obj in self._xread(cursor, bound.remaining()):
                                cursor.id = entry_id
                                record = protocol.check_stream_entry(cursor.stream, obj, self.streams, entry_id)
                                if match(record):
                                    return record, f"redis {cursor.stream} {entry_id}"
                    except redis.RedisError as exc:
                        self._redis_failed(exc)
                # Without Redis (or if the stream missed it): the REST logs.
                while True:
                    for record in self.client.get_logs(20):
                        if match(record):
                            return record, "rest /daq/logs"
                    if bound.expired:
                        break
                    self.sleep(min(self.timing.log_poll_s, bound.remaining()))
            except DeadlineExceeded as exc:
                if not (bound.expired or _own_window(bound, outer)):
                    raise
                if isinstance(exc.__cause__, DaqError):
                    # This look's time, not the caller's: the DAQ failed to answer within it.
                    return None, f"the DAQ's log could not be read within {timeout:g} s: {exc}"
        return None, f"no daq:log record within {timeout:g} s"
