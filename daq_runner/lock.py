"""One runner per DAQ: a lock in the DAQ's own Redis, with an expiry renewed while the run lasts.

A crashed runner cannot renew, so its lock expires after ``ttl`` seconds and does not block the
DAQ for long; a holder that is a dead process on this host is taken over at once. A runner that
loses its lock (it expired while the runner was paused, another runner took it, Redis refused
the renewal) is told at once through ``on_lost`` and must stop: two runners never drive one DAQ.
Before every request that changes the DAQ the runner calls :meth:`DaqLock.assert_held`, which
also catches a process that was paused past the expiry before its renewal thread could notice.

A lock found gone from Redis is taken back only when no other runner can have held it since:
every acquisition also writes its own random token to a key without expiry next to the lock
(``<key>:epoch``). The token still ours proves that nobody took the lock since (a Redis that
expired it while this process was paused, or lost it in an outage); no token at all and a
renewal less than ``ttl`` ago mean Redis was emptied (restarted without persistence) under a
lock that had not expired. Anything else (another token; no token after a pause as long as
the expiry, when Redis may have been emptied after another runner's turn) is a lost lock: the
runner cannot know what was done to the DAQ meanwhile. A token, not a counter: a counter
starts again at 1 in an emptied Redis, so an equal number would prove nothing.

Only plain commands and transactions (``WATCH``/``MULTI``) are used, no Lua, so that an ACL user
without scripting rights can hold the lock (it needs its keys: ``daq-runner:lock*``). The lock
guards against two runners interleaving writes and config changes on one DAQ.

The ``std_cli_*`` tools that change the DAQ look at the lock first (:func:`look_before_use`)
and refuse while a runner holds it. Forced past it (``--force``), a tool adds a record of
its use (who, which tool and arguments, when, host and pid, and the holder it went past) to the
stream ``<key>:forced``, in one transaction with its look at the lock, so the record exists
before the lock can be seen released. The runner holding the lock reads the new records in its
renewal thread and once more after it released the lock, so that none is missed, and tells
each one naming its own acquisition (the ``epoch`` token) through ``notify``: its report then
says, e.g., "std_cli_write_stop was used while this run held the lock".
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, NamedTuple, Optional, Protocol, Sequence, Tuple

import redis

from ._deadline import Interrupted, current
from ._redis import as_text, decode_entries, newest_id
from ._text import one_line, quote, redact_text
from .exceptions import LockError, LockHeldError

__all__ = [
    "RunnerLock",
    "LockFactory",
    "DaqLock",
    "LockLook",
    "look_before_use",
    "LOCK_KEY",
    "EPOCH_SUFFIX",
    "FORCED_SUFFIX",
    "LOCK_TTL_S",
    "REDIS_BUDGET_S",
    "process_alive",
    "running_here",
]

class RunnerLock(Protocol):
    """What the Runner needs of a lock that keeps other runners off its DAQ (:class:`DaqLock` is one,
    in the DAQ's Redis; a DAQ without Redis can run with a lock store of its own, or none)."""

    def acquire(self, wait: float = 0.0, redis_budget: float = ..., on_held: Optional[Callable[[dict], None]] = None) -> None:
        """Take it, waiting up to ``wait`` s for another holder (``on_held(holder)`` once);
        raises :class:`LockHeldError` or :class:`LockError`."""

    def assert_held(self) -> None:
        """Before a request that changes the DAQ: raises :class:`LockError` unless it is still ours."""

    def release(self) -> None:
        """Give it up (only if still ours). Never raises."""


LockFactory = Callable[..., RunnerLock]
"""``factory(holder=..., ttl=..., on_lost=..., notify=...)`` -> a :class:`RunnerLock` for one run:
``holder`` says who holds it (host, pid, batch, run), ``on_lost(reason)`` must be called once
when it is lost, ``notify(message)`` tells the run something people should know."""

LOCK_KEY = "daq-runner:lock"
# The key next to the lock naming the last acquisition of it (``<key>:epoch``, no expiry).
EPOCH_SUFFIX = ":epoch"
# The stream next to the lock recording each use of a tool forced past it (``<key>:forced``).
FORCED_SUFFIX = ":forced"
# Records kept in that stream (approximately: trimming whole nodes is cheaper for Redis).
FORCED_MAXLEN = 1000
LOCK_TTL_S = 30.0
# How long taking the lock rides out a stalled or restarting Redis when no --wait-lock is given.
REDIS_BUDGET_S = 5.0
# Reading the forced-use records: entries per request, requests per look (a bound, not a need:
# a run sees a handful at most).
_FORCED_PAGE = 100
_FORCED_PAGES = 10


def process_alive(pid: Any) -> bool:
    """Whether a process of this host with that pid exists (a pid we may not signal counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def running_here(host: Any, pid: Any, since: Optional[float] = None) -> Optional[bool]:
    """Whether process ``pid`` of ``host`` still runs, as far as this machine can tell: ``True``
    or ``False`` for a process of this host, ``None`` for another host (or no pid). With
    ``since`` (Unix time the process was known to run, e.g. its run's start), a process that
    started well after it has only been given the same pid again (Linux: ``/proc``)."""
    if host != socket.gethostname() or pid is None or isinstance(pid, bool):
        return None
    if not process_alive(pid):
        return False
    started = _process_start(pid)
    return not (since is not None and started is not None and started > since + 2.0)


def _process_start(pid: Any) -> Optional[float]:
    """Unix time process ``pid`` started (Linux), else ``None``."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration, TypeError, OverflowError):
        return None


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _dead_here(holder: dict) -> bool:
    """Whether ``holder`` is a process of this host that no longer runs (its lock is void)."""
    return "pid" in holder and running_here(holder.get("host"), holder["pid"]) is False


def _after(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (``XRANGE`` with ``(`` needs Redis 6.2)."""
    ms, _, seq = entry_id.partition("-")
    try:
        return f"{int(ms)}-{int(seq or 0) + 1}"
    except ValueError:
        return "0-0"


class DaqLock:
    """The runner lock of one DAQ.

    Args:
        client: the DAQ's Redis.
        holder: who holds it (host, pid, batch, run...); stored as JSON with ``since``.
        ttl: expiry in seconds, renewed every ``ttl / 3``.
        key: the Redis key; ``key + ":epoch"`` holds the token of its last acquisition.
        on_lost: called once, from the renewal thread or from :meth:`assert_held`, with the
            reason when the lock is lost.
        notify: called with a message for things people should know (a renewal error, a
            takeover of a dead holder's lock).
        daq_reachable: ``daq_reachable()`` says whether the DAQ itself answers now (one quick
            look); when given, a Redis that does not answer for the whole expiry loses the lock
            only while the DAQ answers (see :meth:`_lose_unrenewable`).
    """

    def __init__(
        self,
        client: redis.Redis,
        holder: Dict[str, Any],
        ttl: float = LOCK_TTL_S,
        key: str = LOCK_KEY,
        on_lost: Callable[[str], None] = lambda reason: None,
        notify: Callable[[str], None] = lambda message: None,
        daq_reachable: Optional[Callable[[], bool]] = None,
    ) -> None:
        self.client = client
        self.daq_reachable = daq_reachable
        self._both_gone_told = False
        self.key = key
        self.epoch_key = key + EPOCH_SUFFIX
        self.ttl = ttl
        # This acquisition's token: in the lock's value (unique) and in the epoch key.
        self.epoch = uuid.uuid4().hex
        self.holder_info = {
            **holder, "since": _utc_now(), "epoch": self.epoch,
        }
        self.value = json.dumps(self.holder_info)
        self.on_lost = on_lost
        self.notify = notify
        self.lost: Optional[str] = None
        self._held = False
        # Monotonic time a confirmation that the lock is ours was *sent* (Redis set its expiry
        # after that): until ``_renewed_at + ttl`` it cannot have expired.
        self._renewed_at = 0.0
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None
        self._renew_error_told = False
        self.forced_key = key + FORCED_SUFFIX
        # The newest forced-use record already looked at; set while taking the lock, before any
        # record can name this acquisition.
        self._forced_seen = "0-0"
        self._forced_guard = threading.Lock()
        self._forced_error_told = False

    # -- reading ---------------------------------------------------------------------------

    def holder(self) -> Optional[dict]:
        """Who holds the lock now, or ``None``."""
        raw = self.client.get(self.key)
        return None if raw is None else self._holder_of(raw)

    @staticmethod
    def _holder_of(raw: bytes) -> dict:
        """The holder a lock value names; a value that is not ours (hand-made) as ``{"raw": ...}``,
        never ``{}`` (which would read as "changed meanwhile, look again" for ever)."""
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        return value if isinstance(value, dict) and value else {"raw": raw.decode(errors="replace")[:200]}

    @staticmethod
    def describe(holder: Optional[dict]) -> str:
        """``host H, pid P, batch B, since T`` (a value set by hand: quoted as it is)."""
        holder = holder or {}
        if "raw" in holder and "host" not in holder:
            return f"a lock value not set by a runner: '{quote(holder['raw'])}'"
        return (
            f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
            f"batch {holder.get('batch', '?')}, since {holder.get('since', '?')}"
        )

    # -- taking ------------------------------------------------------------------------------

    def _try_take(self) -> Optional[dict]:
        """Take the lock if free or held by a dead process of this host; else return the holder.

        ``{}``: it changed meanwhile, look again.
        """
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key, self.epoch_key)
                raw = pipe.get(self.key)
                dead = None
                if raw is not None:
                    holder = self._holder_of(raw)
                    if not _dead_here(holder):
                        return holder
                    dead = holder
                self._forced_seen = self._newest_forced(pipe)
                pipe.multi()
                self._take(pipe)
                pipe.execute()
            except redis.WatchError:
                return {}
        if dead is not None:
            self.notify(f"took over the runner lock of a process that no longer runs ({self.describe(dead)})")
        return None

    def _newest_forced(self, pipe: Any) -> str:
        """Id of the newest forced-use record (any record after it may name this acquisition)."""
        try:
            return newest_id(pipe.xrevrange(self.forced_key, count=1))
        except redis.ResponseError:  # not a stream, or not allowed: read from the start, never fatal
            return "0-0"

    def _take(self, pipe: Any) -> None:
        """Queue the lock and its epoch (inside ``MULTI``): every acquisition names itself."""
        pipe.set(self.key, self.value, px=int(self.ttl * 1000))
        pipe.set(self.epoch_key, self.epoch)

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
            attempt_at = time.monotonic()
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
        self._renewed_at = attempt_at
        self._renewer = threading.Thread(target=self._renew_loop, name="daq-runner-lock", daemon=True)
        self._renewer.start()

    # -- keeping ------------------------------------------------------------------------------

    def _renew(self, since: float) -> Tuple[str, str]:
        """Renew the lock if it is still ours, or take it back if provably nobody held it since.

        ``since``: seconds since the last confirmation was sent. Returns ``(outcome, why)``:
        ``"ok"``, ``"back"`` (taken back; ``why`` says why that was safe) or ``"lost"``.
        """
        for _ in range(3):  # a change between WATCH and EXEC: look again
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(self.key, self.epoch_key)
                    raw = pipe.get(self.key)
                    if raw is not None:
                        if raw.decode(errors="replace") != self.value:
                            return "lost", f"taken over by another runner ({self.describe(self._holder_of(raw))})"
                        pipe.multi()
                        pipe.pexpire(self.key, int(self.ttl * 1000))
                        pipe.execute()
                        return "ok", ""
                    raw_epoch = pipe.get(self.epoch_key)
                    epoch = None if raw_epoch is None else raw_epoch.decode(errors="replace")
                    expired = since >= self.ttl
                    unrenewed = f"expired, not renewed for {since:.1f} s (was this process paused?)"
                    if epoch is not None and epoch != self.epoch:
                        gone = f"it {unrenewed}" if expired else "it vanished from Redis"
                        return "lost", f"{gone}, and another runner took it meanwhile"
                    if epoch is None and expired:
                        return "lost", f"it {unrenewed}, and Redis no longer shows whether another runner took it meanwhile"
                    pipe.multi()
                    self._take(pipe)
                    pipe.execute()
                    if epoch is None:
                        return "back", "the runner lock vanished from an emptied Redis (restarted?) before it expired; taken back"
                    gone = unrenewed if expired else "vanished from Redis before it expired"
                    return "back", f"the runner lock {gone}; nobody took it meanwhile, taken back"
                except redis.WatchError:
                    continue
        return "lost", f"taken over by another runner ({self.describe(self.holder())})"

    def _confirm(self) -> None:
        """Renew now; mark the lock lost when it is not ours any more. Raises ``RedisError``."""
        sent = time.monotonic()
        outcome, why = self._renew(sent - self._renewed_at)
        if outcome == "lost":
            self._lose(why)
            return
        self._renewed_at = sent
        self._renew_error_told = False
        if outcome == "back":
            self.notify(why)

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
                if time.monotonic() - self._renewed_at >= self.ttl and self._lose_unrenewable(exc):
                    return
                if not self._renew_error_told:
                    self._renew_error_told = True
                    self.notify(f"runner lock renewal failed ({exc}); trying again")
                continue
            self.read_forced_uses()

    def _lose_unrenewable(self, exc: Exception) -> bool:
        """Redis has not answered for the whole expiry: the lock is lost, unless the DAQ does not
        answer either (True: lost).

        A DAQ host that goes down takes its REST server and its Redis with it: that is an
        unreachable DAQ, which the run rides out for its outage budget and then ends as such, not
        a lock lost to someone else (nobody can take a lock in a Redis that does not answer, and
        once Redis answers again the renewal finds out whether anyone did). So the lock is
        declared lost only when Redis answers and says so (see :meth:`_renew`), or when the DAQ
        answers and Redis alone does not.
        """
        if self.daq_reachable is not None and not self.daq_reachable():
            if not self._both_gone_told:
                self._both_gone_told = True
                self.notify(
                    f"the runner lock could not be renewed for {self.ttl:g} s and the DAQ does not answer either "
                    "(its host may be down): the lock is not taken for lost while the DAQ is unreachable"
                )
            return False
        reachable = " while the DAQ answers" if self.daq_reachable is not None else ""
        self._lose(f"could not renew it for {self.ttl:g} s (it expired){reachable}: Redis: {exc}")
        return True

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
                    self._lose_unrenewable(exc)
        if self.lost is not None:
            raise LockError(f"runner lock lost: {self.lost}")

    def release(self) -> None:
        """Give the lock up (only if still ours), then tell the forced uses not told yet. Never raises."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(2)
        if self._held and self.lost is None:
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
        if self._renewer is not None:
            # After the delete: a tool records its forced use in the transaction that saw our
            # lock, so every record naming this acquisition is in the stream by now.
            try:
                self.read_forced_uses()
            except Exception:  # from the caller's notify: a release must finish all the same
                pass

    # -- tools forced past the lock --------------------------------------------------------------

    def read_forced_uses(self) -> None:
        """Tell (``notify``) each std_cli tool used with ``--force`` past this lock since the last
        look. Bounded (at most ``_FORCED_PAGES`` requests); never raises: a Redis error is told once."""
        with self._forced_guard:
            try:
                for _ in range(_FORCED_PAGES):
                    entries = self.client.xrange(self.forced_key, min=_after(self._forced_seen), count=_FORCED_PAGE)
                    if entries:
                        self._forced_seen = as_text(entries[-1][0])
                    for _, record in decode_entries(entries):
                        message = _forced_use_notice(record, self.epoch)
                        if message is not None:
                            self.notify(message)
                    if len(entries) < _FORCED_PAGE:
                        break
            except (redis.RedisError, Interrupted) as exc:
                if not self._forced_error_told:
                    self._forced_error_told = True
                    self.notify(f"could not read the uses of std_cli tools forced past the runner lock: Redis: {exc}")


def _forced_use_notice(record: Any, epoch: str) -> Optional[str]:
    """The notice for a forced-use record that names the acquisition ``epoch``, else ``None``.

    Anyone can add to the stream: every field is checked and shown as one quoted line.
    """
    if not isinstance(record, dict):
        return None
    holder = record.get("holder")
    if not isinstance(holder, dict) or holder.get("epoch") != epoch:
        return None
    tool = one_line(record.get("tool") or "a std_cli tool", 60)
    argv = record.get("argv")
    command = " ".join(str(arg) for arg in argv) if isinstance(argv, list) else ""
    who = f"{one_line(record.get('user') or '?', 60)}@{one_line(record.get('host') or '?', 100)}"
    return (
        f"{tool} was used while this run held the lock (--force by {who}, pid {one_line(record.get('pid') or '?', 20)}, "
        f"at {one_line(record.get('at') or '?', 40)}: {quote(f'{tool} {command}'.strip())})"
    )


class LockLook(NamedTuple):
    """What :func:`look_before_use` found.

    Attributes:
        holder: who holds the runner lock (as :meth:`DaqLock.holder`), ``None`` when it is free.
        forced: a live runner holds it and this use went past it; the record of it is stored.
    """

    holder: Optional[dict]
    forced: bool


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name for this uid (a container): the pid and host still say who
        return "?"


def look_before_use(
    client: redis.Redis, tool: str, argv: Sequence[str], *, force: bool = False, key: str = LOCK_KEY
) -> LockLook:
    """Before a tool changes the DAQ: may it, with the runner lock as it is?

    Free, or held by a process of this host that no longer runs (``daq-run`` would take it
    over): ``LockLook(holder_or_None, False)``. Held by anyone else (a runner, or a value set by
    hand): :class:`LockHeldError`, unless ``force``; then a record of this use (``tool``,
    ``argv`` with the credentials of URLs masked, user, host, pid, time, the holder) is added to
    ``<key>:forced`` in one transaction with the look, and ``LockLook(holder, True)`` returned.

    Raises:
        LockHeldError: a runner holds the lock and ``force`` is false (``holder`` says who).
        redis.RedisError: Redis could not be asked, or refused (its client's timeouts bound it).
    """
    record = {
        "tool": tool,
        "argv": [redact_text(arg) for arg in argv],
        "user": _user(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "at": _utc_now(),
    }
    for _ in range(3):  # the lock renewed or released between the look and the record: look again
        with client.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    return LockLook(None, False)
                holder = DaqLock._holder_of(raw)
                if _dead_here(holder):
                    return LockLook(holder, False)
                if not force:
                    raise LockHeldError(f"the DAQ's runner lock is held ({DaqLock.describe(holder)})", holder)
                pipe.multi()
                pipe.xadd(key + FORCED_SUFFIX, {"json": json.dumps({**record, "holder": holder})}, maxlen=FORCED_MAXLEN, approximate=True)
                pipe.execute()
                return LockLook(holder, True)
            except redis.WatchError:
                continue
    raise redis.WatchError("the runner lock kept changing while this use was being recorded")
