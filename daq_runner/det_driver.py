"""``DetDriverClient``: the client of the current Standard DAQ generation.

Acquisitions start and stop over ``std_det_driver``'s WebSocket (``ws://<writer-host>:8080``);
the configuration goes through the config REST service (``http://<host>:5000/api/config/...``).
There is no status endpoint, no run id and no acquisition log: the client follows the
states the driver pushes and keeps its own record of each acquisition
(:class:`DriverAcquisition`: the states seen with their arrival times, the last
``saving_file`` count, the outcome), which a caller confirms with the files on disk.

Both driver builds are spoken, told apart on connect (:class:`DriverBuild`): a current
build pushes ``idle`` within about 0.1 s to every session and keeps sessions open; an
older build (April 2024 to March 2025) says nothing until a start, pushes every second
during an acquisition and closes the connection after its outcome.

Time bounds: every connect, frame read, request and wait ends within its own limit and
before the bound in force (:func:`daq_runner._deadline.current`), and within
:data:`daq_runner._deadline.SLICE_S` of that bound's cancel event
(:class:`~daq_runner._deadline.Interrupted`). A persistent session that stops pushing for
:data:`SILENCE_S` counts as dropped.

Example::

    from daq_runner import DetDriverClient

    with DetDriverClient("ws://daq-host:8080", "http://daq-host:5000") as daq:
        daq.update_config({"bit_depth": 16})               # whole config sent, services awaited
        acquisition = daq.start("/data/e12345", "scan_", n_image=100)
        daq.follow(acquisition, timeout=60)
        print(acquisition.outcome, acquisition.count)      # "file_saved" 100

The client is not thread-safe: use one per thread.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests

from . import _deadline, _transport
from ._text import clauses, quote, redact_url, userinfo_problem
from .client import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    WRITE_TIMEOUT,
    _TRANSPORT_ERRORS,
    _is_timeout,
    _never_reached_server,
    _root_cause,
    _seconds,
    _tls_mismatch,
    check_url,
)
from .det_driver_protocol import (
    ACQUISITION_STATES,
    COMMAND_STATUS,
    COMMAND_STOP,
    COMMAND_STOP_ALL,
    CONFIG_GET,
    CONFIG_SET,
    DEFAULT_CONFIG_URL,
    DEFAULT_CONFIG_USER,
    DEFAULT_FILE_PREFIX,
    DEFAULT_N_IMAGE,
    DEFAULT_WS_URL,
    OUTCOME_STATES,
    PUSH_PERIOD_S,
    REASON_INVALID_START,
    REPLY_ERROR,
    REPLY_REJECTED,
    REPLY_SUCCESS,
    STOPPABLE_STATES,
    USER_PARAM,
    began_anew,
    is_marker_answer,
    start_marker,
    DriverBuild,
    DriverMessage,
    DriverState,
    check_config,
    check_config_changes,
    encode,
    file_names,
    parse_frame,
    start_command,
)
from .exceptions import (
    ConfigOutcomeUnknown,
    DaqError,
    DaqHTTPError,
    DaqProtocolError,
    DaqTimeoutError,
    DaqTransportError,
    DeadlineExceeded,
    DeploymentError,
    DriverBusy,
    OutcomeUnknown,
    StdDaqAdminException,
    WriteDeadlineExceeded,
    WriteOutcomeUnknown,
)

__all__ = [
    "DetDriverClient",
    "DriverStatus",
    "DriverAcquisition",
    "ConfigChange",
    "DriverBuild",
    "DriverState",
    "check_ws_url",
    "DETECT_S",
    "SILENCE_S",
    "CONFIRM_S",
    "SETTLE_S",
    "RESTART_TIMEOUT",
]

log = logging.getLogger(__name__)

# A current build pushes idle within about 0.1 s of a connect: nothing for this long is an older build.
DETECT_S = 0.3
# A persistent session that hears nothing for this long is dead (half-open TCP, a hung driver).
SILENCE_S = 3.0
# After a start, the driver shows the acquisition (creating_file...) at its next push: 0.1 s
# on a current build, at once on an older one. Only idle for this long: no sign of it.
CONFIRM_S = 3.0
# Services restart after a stored config (the project's own target: under 10 s).
RESTART_TIMEOUT = 60.0
# An end seen before any state that surely followed the driver's taking of the start (a sample
# pushed late may be another acquisition's): taken for this one's only when no new
# acquisition shows within this (the driver pushes every 0.1 s and at once on a change).
SETTLE_S = 0.5
# A stop still shows a stoppable state this long after it was sent: it was lost, send it again.
_STOP_RESEND_S = 0.3
# Per-connection builds answer no pushes while idle: how often their state is asked (status).
_PROBE_S = 0.25
_MARKS = itertools.count(1)  # numbers the markers of this process's starts
# Frames kept per session between reads (10 a second: several minutes).
_MAX_QUEUED = 4096
_MAX_FRAME_BYTES = 64 * 1024

ProgressHook = Callable[[str, float], None]
StateHook = Callable[["DriverStatus"], None]


def check_ws_url(url: Any) -> str:
    """``url`` if it is a ``ws://`` or ``wss://`` URL with a host (and a valid port).

    Raises:
        ValueError: one line (credentials in it shown as ``***``).
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"not a ws:// URL: {quote(redact_url(url))!r}")
    url = url.strip()
    problem = userinfo_problem(url)
    if problem:
        raise ValueError(f"not a usable URL: {problem}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"not a valid URL: {quote(redact_url(url))}") from None
    if parts.scheme.lower() not in ("ws", "wss"):
        raise ValueError(f"not a ws:// URL (the driver's WebSocket, port 8080): {quote(redact_url(url))}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {quote(redact_url(url))}")
    return url


@dataclass(frozen=True)
class DriverStatus:
    """One state of the driver, as pushed (or answered to ``status``), with its arrival time.

    Attributes:
        state: the driver state; ``None`` only when an older build said it is busy without
            saying its state (builds before November 2024 answer ``status`` with ``rejected``).
        count: images handed to the writers (``recording``, ``saving_file``), else ``None``.
        at: arrival time, seconds since the epoch (``time.time()``).
        monotonic: arrival time on ``time.monotonic()``'s clock.
    """

    state: Optional[DriverState]
    count: Optional[int]
    at: float
    monotonic: float

    def to_dict(self) -> Dict[str, Any]:
        return {"state": self.state.value if self.state else None, "count": self.count, "at": self.at}


@dataclass
class DriverAcquisition:
    """The client's record of one acquisition: what it sent and every state it saw of it.

    Attributes:
        url: the driver's URL (credentials ``***``).
        build: the driver build it ran on.
        request: the start command sent (exactly once).
        sent_at: when it was sent (``time.time()``).
        states: the states seen of it, in order, each with the arrival time of its first
            sample (a state pushed again unchanged is not repeated; stale ``idle`` pushes
            from before the start are not part of it).
        outcome: ``"file_saved"``, ``"error"``, or ``"idle"`` (back to idle without either:
            another session took the outcome, or the services restarted); ``None`` while
            it is followed.
        ended_at: when the outcome was seen.
        reconnects: sessions opened again while following it.
        foreign: states seen after the start was sent that belong to another acquisition (one
            the driver ran before it took this start, pushed before or late): kept out of
            ``states``, ``count`` and ``outcome``.
        doubt: why its states cannot be told apart from another acquisition's (``None``: they
            can): its count and outcome are then the driver's best word only; confirm with
            the files.
    """

    url: str
    build: DriverBuild
    request: Dict[str, Any]
    sent_at: float
    states: List[DriverStatus] = field(default_factory=list)
    outcome: Optional[str] = None
    ended_at: Optional[float] = None
    reconnects: int = 0
    foreign: List[DriverStatus] = field(default_factory=list)
    doubt: Optional[str] = None
    _session: Optional["_Session"] = field(default=None, repr=False, compare=False)
    # A state pushed after the driver took the start was seen (an end before one is unsure).
    _settled: bool = field(default=True, repr=False, compare=False)
    # States heard after the driver's answer to the start's marker: the first may have been
    # sampled before the driver took the start (a session's pusher holds one sample at a
    # time), every later one was sampled after it.
    _heard: int = field(default=2, repr=False, compare=False)
    # An end seen while not settled: taken once SETTLE_S passes without a new acquisition.
    _unsure_end: Optional[_Frame] = field(default=None, repr=False, compare=False)

    @property
    def count(self) -> Optional[int]:
        """The last ``saving_file`` count: the images the writers were given (``None`` before
        ``saving_file`` was seen). Confirm it with the files."""
        for status in reversed(self.states):
            if status.state == DriverState.SAVING_FILE and status.count is not None:
                return status.count
        return None

    @property
    def last_count(self) -> Optional[int]:
        """The last count seen in any state (``recording`` or ``saving_file``)."""
        for status in reversed(self.states):
            if status.count is not None:
                return status.count
        return None

    @property
    def connected(self) -> bool:
        """Whether it is followed on an open session of its own (``False``: a session must be opened again)."""
        return self._session is not None and self._session.closed is None

    @property
    def last_state(self) -> Optional[DriverState]:
        return self.states[-1].state if self.states else None

    def files(self, n_writers: int) -> Tuple[str, ...]:
        """The files this acquisition writes with ``n_writers`` writers (``number_of_writers``)."""
        return file_names(self.request["path"], self.request["file_prefix"], n_writers)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready copy (for a report)."""
        return {
            "url": self.url,
            "build": self.build.value,
            "request": dict(self.request),
            "sent_at": self.sent_at,
            "states": [status.to_dict() for status in self.states],
            "outcome": self.outcome,
            "count": self.count,
            "last_count": self.last_count,
            "ended_at": self.ended_at,
            "reconnects": self.reconnects,
            "foreign": [status.to_dict() for status in self.foreign],
            "doubt": self.doubt,
        }


@dataclass(frozen=True)
class ConfigChange:
    """What :meth:`DetDriverClient.update_config` (or ``restart_services``) did.

    Attributes:
        config: the config in force afterwards (read back from the config REST).
        previous: the config before.
        stored: whether a config was stored (``False``: the changes were already in force).
        restart_s: seconds from storing it until the driver pushed ``idle`` again (``None``
            when nothing was stored).
        ready: the driver's state once back (``idle``), or ``None``.
    """

    config: Dict[str, Any]
    previous: Dict[str, Any]
    stored: bool
    restart_s: Optional[float]
    ready: Optional[DriverStatus]


@dataclass(frozen=True)
class _Frame:
    message: DriverMessage
    at: float
    monotonic: float

    def status(self) -> DriverStatus:
        return DriverStatus(self.message.state, self.message.count, self.at, self.monotonic)


class _SessionClosed(Exception):
    """The session's connection is closed (by the server, or dropped)."""


class _Session:
    """One WebSocket connection to the driver; a reader thread stamps each frame's arrival.

    Frames queue up (at most :data:`_MAX_QUEUED`) until read with :meth:`next`, which waits
    in slices of the bound in force.
    """

    def __init__(self, url: str, safe_url: str, connection: Any) -> None:
        self.url = url
        self.safe_url = safe_url
        self.build: DriverBuild = DriverBuild.PERSISTENT
        # Nothing heard for this long: the session is dead (None: silence is normal, as on an
        # older build before a start).
        self.silence_s: Optional[float] = None
        self._connection = connection
        self._frames: Deque[_Frame] = deque(maxlen=_MAX_QUEUED)
        self._cond = threading.Condition()
        self._closed: Optional[str] = None
        self._error: Optional[BaseException] = None
        self.last_frame_at = time.monotonic()
        # The newest state read (by next() or drain()): a reply to a command (rejected, the
        # answer to a start's marker) says nothing of the driver's state.
        self.last: Optional[_Frame] = None
        self._reader = threading.Thread(target=self._read, name="det-driver-session", daemon=True)
        self._reader.start()

    # -- the reader thread ---------------------------------------------------------------

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        reason = "the connection was closed"
        try:
            for data in self._connection:
                now, wall = time.monotonic(), time.time()
                try:
                    message = parse_frame(data, self.safe_url)
                except DaqProtocolError as exc:
                    with self._cond:
                        self._error = exc
                    self._connection.close()
                    return
                with self._cond:
                    self._frames.append(_Frame(message, wall, now))
                    self.last_frame_at = now
                    self._cond.notify_all()
            reason = _close_reason(self._connection, clean=True)
        except ConnectionClosed:
            reason = _close_reason(self._connection, clean=False)
        except Exception as exc:  # a socket error the library did not wrap
            reason = f"the connection failed: {quote(exc)}"
        finally:
            with self._cond:
                if self._closed is None:
                    self._closed = reason
                self._cond.notify_all()

    # -- reading -------------------------------------------------------------------------

    @property
    def closed(self) -> Optional[str]:
        """Why the connection closed (``None``: open)."""
        with self._cond:
            return self._closed

    def next(self, bound: _deadline.Deadline) -> Optional[_Frame]:
        """The next frame, or ``None`` when ``bound`` expired first.

        Raises:
            _SessionClosed: the connection is closed and every frame was read.
            DaqProtocolError: a malformed frame arrived (the connection is closed).
            DaqTransportError: nothing arrived for ``silence_s`` (the connection is closed).
            Interrupted: the bound's cancel event was set.
        """
        silence_s = self.silence_s
        with self._cond:
            while True:
                if self._frames:
                    frame = self._frames.popleft()
                    if frame.message.state is not None:
                        self.last = frame
                    return frame
                if self._error is not None:
                    raise self._error
                if self._closed is not None:
                    raise _SessionClosed(self._closed)
                bound.check()
                now = time.monotonic()
                if silence_s is not None and now - self.last_frame_at >= silence_s:
                    self._closed = f"no push for {silence_s:g} s (the session is dead)"
                    threading.Thread(target=self.close, daemon=True).start()
                    raise DaqTransportError(f"{self.safe_url}: {self._closed}", url=self.safe_url)
                left = bound.at - now
                if left <= 0:
                    return None
                wait = min(left, _deadline.SLICE_S)
                if silence_s is not None:
                    wait = min(wait, max(self.last_frame_at + silence_s - now, 0.001))
                self._cond.wait(wait)

    def drain(self) -> Optional[_Frame]:
        """Drop the queued frames; returns the newest state (or the last read)."""
        with self._cond:
            for frame in reversed(self._frames):
                if frame.message.state is not None:
                    self.last = frame
                    break
            self._frames.clear()
            if self._error is not None:
                raise self._error
            return self.last

    def expect_pushes(self, silence_s: float) -> None:
        """From now on, silence for ``silence_s`` means the session is dead."""
        with self._cond:
            self.silence_s = silence_s
            self.last_frame_at = time.monotonic()

    def push_back(self, frame: _Frame) -> None:
        with self._cond:
            self._frames.appendleft(frame)

    # -- writing -------------------------------------------------------------------------

    def send(self, obj: Union[Dict[str, Any], str]) -> None:
        """Send one command (a text as it is: a start's marker).

        Raises:
            DaqTransportError: the connection is closed; the command was not sent (a frame
                cut short is never taken for a command by the driver).
        """
        from websockets.exceptions import ConnectionClosed

        try:
            self._connection.send(obj if isinstance(obj, str) else encode(obj))
        except (ConnectionClosed, OSError) as exc:
            what = "the start's marker" if isinstance(obj, str) else repr(obj.get("command"))
            raise DaqTransportError(f"{self.safe_url}: cannot send {what}: {quote(exc)}", url=self.safe_url) from exc

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception:  # closing a broken connection must not fail the caller
            pass


def _close_reason(connection: Any, clean: bool) -> str:
    code = getattr(connection, "close_code", None)
    if code is None or code == 1006:
        return "the connection dropped (no close frame)"
    reason = getattr(connection, "close_reason", "") or ""
    return f"the server closed the connection (code {code}{': ' + quote(reason) if reason else ''})"


class DetDriverClient:
    """Client of ``std_det_driver`` (WebSocket) and the config REST of the current Standard DAQ.

    Args:
        ws_url: the driver's WebSocket, ``ws://<writer-host>:8080``.
        config_url: the config REST service, ``http://<host>:5000``.
        user: the user name the config REST logs (``?user=``).
        timeout: seconds for a connect (TCP and WebSocket handshake) and for each REST
            request's connect and read (a config POST reads for ``WRITE_TIMEOUT``, 15 s).
        retries: extra attempts of a REST request after a transport failure; a config POST
            only when it provably did not reach the service.
        session: a ``requests.Session`` for the config REST (the client mounts its bounded
            transport on it).
        detect_s: how long a new connection waits for a push before it is taken for an
            older (per-connection) build.

    Raises:
        ValueError: a URL that is not ws(s):// (http(s):// for ``config_url``), a timeout
            that is not a number > 0, ``retries`` not a whole number >= 0.
    """

    def __init__(
        self,
        ws_url: str = DEFAULT_WS_URL,
        config_url: str = DEFAULT_CONFIG_URL,
        *,
        user: str = DEFAULT_CONFIG_USER,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        session: Optional[requests.Session] = None,
        detect_s: float = DETECT_S,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        if not isinstance(user, str) or not user.strip():
            raise ValueError("user must be a non-empty name")
        self.ws_url = check_ws_url(ws_url)
        self.config_url = check_url(config_url).rstrip("/")
        self.user = user
        self.timeout = _seconds("timeout", timeout)
        self.retries = retries
        self.detect_s = _seconds("detect_s", detect_s)
        self.http = _transport.new_session() if session is None else _transport.bind_session(session)
        self.safe_ws_url = redact_url(self.ws_url)
        self.safe_config_url = redact_url(self.config_url)
        self.build: Optional[DriverBuild] = None
        self._session: Optional[_Session] = None

    def __repr__(self) -> str:
        return f"DetDriverClient(ws_url={self.safe_ws_url!r}, config_url={self.safe_config_url!r})"

    def close(self) -> None:
        """Close the driver session and the REST connections."""
        if self._session is not None:
            self._session.close()
            self._session = None
        self.http.close()

    def __enter__(self) -> "DetDriverClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- sessions ---------------------------------------------------------------------------

    def _open(self, bound: _deadline.Deadline) -> _Session:
        """A new connection (TCP and WebSocket handshake within ``timeout`` and the bound)."""
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        parts = urlsplit(self.ws_url)
        port = parts.port or (443 if parts.scheme.lower() == "wss" else 80)
        limit = bound.within(self.timeout)
        source = f"{self.safe_ws_url}"
        if bound.expired:
            raise DeadlineExceeded(f"{source}: not connected: the time allowed ran out", url=self.safe_ws_url)
        done = threading.Event()
        sock = None
        try:
            with _deadline.bounded(limit):
                sock = _transport._connect((parts.hostname, port), self.timeout, None, [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            # The handshake waits on the library's own timeout: a watcher cuts it at a stop request.
            threading.Thread(target=_watch_handshake, args=(sock, limit, done), daemon=True).start()
            connection = connect(
                self.ws_url,
                sock=sock,
                open_timeout=max(limit.remaining(), 0.001),
                compression=None,
                # Older builds stop reading after the first command and never answer a ping.
                ping_interval=None,
                close_timeout=_deadline.SLICE_S,
                max_size=_MAX_FRAME_BYTES,
                user_agent_header="daq-runner",
            )
            # Held as a context manager would hold it (the library warns otherwise); closed by close().
            connection = connection.__enter__()
        except _deadline.Interrupted:
            raise
        except InvalidStatus as exc:
            status = getattr(getattr(exc, "response", None), "status_code", "?")
            if status in (502, 503, 504):  # a service going down or a gateway: try again later
                raise DaqTransportError(f"{source}: the upgrade was answered HTTP {status}", url=self.safe_ws_url) from exc
            raise DaqProtocolError(f"{source}: no std_det_driver WebSocket there (HTTP {status} to the upgrade)", url=self.safe_ws_url) from exc
        except (InvalidHandshake, OSError, EOFError) as exc:
            if bound.cancelled:
                raise _deadline.Interrupted() from exc
            if bound.expired:
                raise DeadlineExceeded(f"{source}: not connected before the time allowed ran out", url=self.safe_ws_url) from exc
            if limit.expired or isinstance(exc, TimeoutError):
                raise DaqTimeoutError(f"{source}: no connection within {self.timeout:g} s", url=self.safe_ws_url) from exc
            raise DaqTransportError(f"{source}: cannot connect: {quote(_root_cause(exc))}", url=self.safe_ws_url) from exc
        finally:
            done.set()
        return _Session(self.ws_url, self.safe_ws_url, connection)

    def _connect(self, bound: _deadline.Deadline) -> _Session:
        """A new connection with its build detected: a push within ``detect_s`` is a current build."""
        session = self._open(bound)
        try:
            first = session.next(bound.within(self.detect_s))
        except _SessionClosed as closed:
            raise DaqTransportError(f"{self.safe_ws_url}: {closed} right after the connect", url=self.safe_ws_url) from None
        except BaseException:
            session.close()
            raise
        if first is None:
            if bound.expired:
                session.close()
                raise DeadlineExceeded(f"{self.safe_ws_url}: the time allowed ran out before the driver spoke", url=self.safe_ws_url)
            session.build = DriverBuild.PER_CONNECTION
        else:
            session.build = DriverBuild.PERSISTENT
            session.expect_pushes(SILENCE_S)
            session.push_back(first)
        self.build = session.build
        return session

    def _persistent(self, bound: _deadline.Deadline) -> _Session:
        """The client's open session (a current build), or a new one (any build)."""
        session = self._session
        if session is not None and session.closed is None:
            return session
        self._session = None
        session = self._connect(bound)
        if session.build == DriverBuild.PERSISTENT:
            self._session = session
        return session

    def connect(self, *, timeout: Optional[float] = None) -> DriverBuild:
        """Open a session (if none is open) and return the driver build it detected.

        Raises:
            DaqTransportError: the driver cannot be reached (its URL named).
            DaqProtocolError: what answers is not the driver's WebSocket.
        """
        with self._bounded(timeout) as bound:
            session = self._persistent(bound)
            if session is not self._session:
                session.close()  # an older build: a connection is for one command
            return session.build

    def _bounded(self, timeout: Optional[float]) -> Any:
        return _deadline.bounded(_deadline.Deadline(None if timeout is None else _seconds("timeout", timeout)))

    def _dropped(self, session: _Session, closed: BaseException, what: str) -> DaqTransportError:
        if session is self._session:
            self._session = None
        return DaqTransportError(f"{self.safe_ws_url}: {closed} {what}", url=self.safe_ws_url)

    # -- states -------------------------------------------------------------------------------

    def pushes(self, *, timeout: Optional[float] = None) -> Iterator[DriverStatus]:
        """The states the driver pushes from now on, each with its arrival time, until ``timeout``.

        Needs a current (persistent) build; states queued before the call are skipped.

        Raises:
            DaqTransportError: the session dropped (its URL named).
            DaqError: an older build, which pushes only to the session of an acquisition.
        """
        with self._bounded(timeout) as bound:
            session = self._persistent(bound)
            if session.build != DriverBuild.PERSISTENT:
                session.close()
                raise DaqError(f"{self.safe_ws_url}: this driver build pushes states only during an acquisition (follow it)", url=self.safe_ws_url)
            session.drain()
            while True:
                try:
                    frame = session.next(bound)
                except _SessionClosed as closed:
                    raise self._dropped(session, closed, "while reading its states") from None
                if frame is None:
                    return
                if frame.message.state is not None:
                    yield frame.status()

    def state(self, *, timeout: Optional[float] = None) -> DriverStatus:
        """The driver's state now: the next push (current build) or the answer to ``status``.

        Raises:
            DaqTimeoutError: no state within ``timeout`` (default: 2 s plus the connect).
        """
        return self.wait_for(lambda status: True, timeout=timeout if timeout is not None else self.timeout + 2.0)

    def wait_for(self, predicate: Callable[[DriverStatus], bool], *, timeout: float) -> DriverStatus:
        """Wait for a state that satisfies ``predicate``; returns it.

        A current build's pushes are read as they arrive (states queued before the call are
        skipped); an older build is asked with ``status`` every 0.25 s.

        Raises:
            DaqTimeoutError: none within ``timeout``; ``DeadlineExceeded`` when the caller's
                bound ended it.
            DaqTransportError: the session dropped (a restart of the services, a crash):
                its URL named. :meth:`wait_until_ready` waits a restart out.
        """
        caller = _deadline.current()
        seconds = _seconds("timeout", timeout)
        with _deadline.bounded(_deadline.Deadline(seconds)) as bound:
            last: Optional[DriverStatus] = None
            session: Optional[_Session] = None
            if self.build != DriverBuild.PER_CONNECTION:
                session = self._persistent(bound)
                session.drain()
                if session.build != DriverBuild.PERSISTENT:
                    session.close()
                    session = None
            # An older build answers no pushes: it is asked (status works on either build, see _probe).
            while True:
                if session is not None:
                    try:
                        frame = session.next(bound)
                    except _SessionClosed as closed:
                        raise self._dropped(session, closed, "while waiting for a state") from None
                    status = frame.status() if frame is not None and frame.message.state is not None else None
                else:
                    status = self._probe(bound)
                    if status is not None and not predicate(status):
                        last, status = status, None
                        bound.sleep(_PROBE_S)
                if status is not None:
                    if predicate(status):
                        return status
                    last = status
                elif bound.expired:
                    raise self._timed_out(f"no such state within {seconds:g} s (last: {_describe(last)})", caller)

    def _probe(self, bound: _deadline.Deadline) -> Optional[DriverStatus]:
        """An older build's state, asked on a connection of its own (``status``).

        Builds before November 2024 know no ``status``: one answers it as a start without a
        path (idle) or with ``rejected`` (busy, state unknown).
        """
        frame = self._one_shot(COMMAND_STATUS, bound)
        if frame is None:
            return None
        message = frame.message
        if message.status == REPLY_REJECTED:
            return DriverStatus(None, None, frame.at, frame.monotonic)
        if message.status == REPLY_ERROR and message.reason is not None:
            if _is_invalid_start(message):
                return DriverStatus(DriverState.IDLE, None, frame.at, frame.monotonic)
            raise StdDaqAdminException(f"{self.safe_ws_url}: status refused: {quote(message.reason)}", url=self.safe_ws_url)
        if message.state is None:
            raise DaqProtocolError(f"{self.safe_ws_url}: status answered {quote(message.status)!r}", url=self.safe_ws_url)
        return frame.status()

    def _one_shot(self, command: str, bound: _deadline.Deadline) -> Optional[_Frame]:
        """``command`` on a connection of its own: the one frame answering it (``None``: the bound ended first)."""
        session = self._open(bound)
        try:
            session.send({"command": command})
            return session.next(bound)
        except _SessionClosed as closed:
            raise DaqTransportError(f"{self.safe_ws_url}: {closed} before answering {command}", url=self.safe_ws_url) from None
        finally:
            session.close()

    # -- acquisitions -----------------------------------------------------------------------

    def start(
        self,
        path: str,
        file_prefix: str = DEFAULT_FILE_PREFIX,
        n_image: int = DEFAULT_N_IMAGE,
        writer_id: Optional[int] = None,
        *,
        timeout: float = 10.0,
    ) -> DriverAcquisition:
        """Start an acquisition; returns once the driver showed it (its first state).

        The start is sent **exactly once**. On a current build every session hears every
        acquisition, so a marker follows it (text the driver answers in order, after its answer
        to the start): a ``rejected`` before that answer refuses the start; an acquisition
        heard around it that ended, or that a new one followed, is another client's (kept in
        ``foreign``, never in the count or the outcome). It writes ``<path>/<file_prefix><i>.h5``, one
        file per writer (``number_of_writers``).

        Args:
            path: the folder on the DAQ (absolute; it must exist there).
            file_prefix: the files' name prefix (no ``/``).
            n_image: images to write, 1 .. 2**32 - 1.
            writer_id: the Unix uid the writers write as (used when the DAQ runs with
                ``switch_user_active``); ``None``: not sent.
            timeout: seconds for the connect, the start and its confirmation.

        Raises:
            ValueError: before anything is sent: an argument of the wrong type or range
                (a wrongly typed start can crash the driver).
            DriverBusy: ``rejected`` "driver is busy!": nothing was started.
            StdDaqAdminException: the driver refused the command (its text).
            WriteOutcomeUnknown: the start was sent, then the session dropped or no sign of
                the acquisition came within :data:`CONFIRM_S` (it may have started:
                follow the driver's states and look at the files; it is never re-sent).
                ``WriteDeadlineExceeded`` when the caller's bound ended the wait.
            DaqTransportError: the driver could not be reached; nothing was sent.
        """
        command = start_command(path, file_prefix, n_image, writer_id)
        caller = _deadline.current()
        with _deadline.bounded(_deadline.Deadline(_seconds("timeout", timeout))) as bound:
            session = self._persistent(bound)
            if session.build == DriverBuild.PERSISTENT:
                last = session.drain()
                if last is not None and last.message.state in OUTCOME_STATES:
                    # The driver turns an outcome into idle right after pushing it: the next push.
                    try:
                        session.next(bound.within(0.5))
                    except _SessionClosed as closed:
                        raise self._dropped(session, closed, "before the start was sent") from None
            before = session.last.message.state if session.last is not None else None
            session.send(command)
            acquisition = DriverAcquisition(self.safe_ws_url, session.build, command, time.time(), _session=session)
            log.debug("start sent to %s: %s", self.safe_ws_url, command)
            marker: Optional[str] = None
            if session.build == DriverBuild.PER_CONNECTION:
                # An older build pushes every second once it started: silence is a dead session.
                session.expect_pushes(SILENCE_S + 2 * PUSH_PERIOD_S[DriverBuild.PER_CONNECTION])
            else:
                # Every session hears every acquisition: the marker tells which pushes can be ours.
                marker = start_marker(f"{os.getpid()}-{next(_MARKS)}")
                acquisition._settled = False
                try:
                    session.send(marker)
                except DaqTransportError:
                    pass  # the session dropped: the reads below say so (the start may have been taken)
            sent = time.monotonic()
            confirm = bound.within(CONFIRM_S)
            pending: List[_Frame] = []  # states pushed before the driver's answer to the marker
            while True:
                unsure = acquisition._unsure_end
                try:
                    frame = session.next(confirm if unsure is None else confirm.within(max(unsure.monotonic + SETTLE_S - time.monotonic(), 0.001)))
                except _SessionClosed as closed:
                    self._forget(session)
                    raise WriteOutcomeUnknown(
                        f"{self.safe_ws_url}: {closed} after the start was sent (the acquisition may have started)",
                        url=self.safe_ws_url,
                    ) from None
                except DaqTransportError as exc:
                    self._forget(session)
                    raise WriteOutcomeUnknown(f"{exc} after the start was sent (the acquisition may have started)", url=self.safe_ws_url) from exc
                if frame is None and marker is not None and any(f.message.state != DriverState.IDLE for f in pending):
                    # No answer to the marker, but states: the start was not refused in time
                    # (a busy driver answers at once), so it was taken; whose they are is unsure.
                    acquisition.doubt = (
                        f"the driver did not answer the marker sent after the start within {CONFIRM_S:g} s, "
                        "so the states it pushed cannot be told apart from another client's acquisition"
                    )
                    self._taken(acquisition, pending, answered=False)
                    marker = None
                elif frame is None:
                    if unsure is not None:
                        self._settle(acquisition, force=confirm.expired)
                        if acquisition.outcome is not None:
                            return acquisition
                        continue
                    what = f"{self.safe_ws_url}: no sign of the acquisition {time.monotonic() - sent:.1f} s after the start was sent (it may have started)"
                    if caller.expired:
                        raise WriteDeadlineExceeded(what, url=self.safe_ws_url)
                    raise WriteOutcomeUnknown(what, url=self.safe_ws_url)
                else:
                    message = frame.message
                    if message.status == REPLY_REJECTED:
                        if session.build == DriverBuild.PER_CONNECTION:
                            session.close()
                        raise DriverBusy(
                            f"{self.safe_ws_url}: start rejected: {quote(message.reason or 'rejected')}" + (f" (state {before.value})" if before else ""),
                            url=self.safe_ws_url,
                            state=before.value if before else None,
                        )
                    if marker is not None and is_marker_answer(message, marker):
                        self._taken(acquisition, pending, answered=True)  # not refused: the driver took the start
                        marker = None
                    elif is_marker_answer(message):
                        continue  # the answer to an earlier start's marker
                    elif message.state is None:  # an error with a reason: the driver closes the connection
                        self._forget(session)
                        raise StdDaqAdminException(f"{self.safe_ws_url}: start refused: {quote(message.reason or message.status)}", url=self.safe_ws_url)
                    elif marker is not None:
                        pending.append(frame)
                        continue
                    else:
                        self._record(acquisition, frame)
                self._settle(acquisition)
                if acquisition.outcome is not None or (acquisition.states and acquisition._unsure_end is None):
                    return acquisition

    def _taken(self, acquisition: DriverAcquisition, pending: List[_Frame], answered: bool) -> None:
        """The driver took the start of ``acquisition``: it did not refuse it before answering
        the marker (``answered``), or no refusal came in time. The states pushed before that
        answer are read as any that follow (:meth:`_record`): an acquisition that ended or
        that a new one followed there was another's; none of them is sure to be this one's
        (the driver's answer and its pushes are written by different threads)."""
        acquisition._settled, acquisition._heard = False, -len(pending)
        for frame in pending:
            self._record(acquisition, frame)
        end = acquisition._unsure_end
        if end is not None:  # the time to settle it runs from the answer
            acquisition._unsure_end = _Frame(end.message, end.at, time.monotonic())
        # Without an answer nothing is ever sure: the doubt is said, the ends are taken as they come.
        acquisition._settled, acquisition._heard = (False, 0) if answered else (True, 2)

    def _forget(self, session: _Session) -> None:
        session.close()
        if session is self._session:
            self._session = None

    def _record(self, acquisition: DriverAcquisition, frame: _Frame) -> None:
        """Add a state to ``acquisition``: after its first state, idle means it ended. A state
        that cannot follow the ones seen (a lower rank, a count that fell, anything after an
        end) begins another acquisition: what came before was not this one's (``foreign``).
        An end is this one's once a state sampled after the driver took the start was seen;
        before that it is unsure (:meth:`_settle`)."""
        state = frame.message.state
        if state is None:
            return  # a reply to a command, not a state
        acquisition._heard += 1
        sure = acquisition._heard >= 2  # sampled after the driver took the start
        if state == DriverState.IDLE:
            if acquisition.states and acquisition._unsure_end is None:
                self._ended(acquisition, frame, False)
            return
        if acquisition._unsure_end is not None:
            # A new acquisition after an end that was not sure to be this one's: it was not.
            self._not_ours(acquisition)
        status = frame.status()
        last = acquisition.states[-1] if acquisition.states else None
        if last is not None and last.state is not None and (last.state, last.count) != (state, status.count) and began_anew((last.state, last.count), (state, status.count)):
            self._not_ours(acquisition)
            last = None
        if state in OUTCOME_STATES:
            acquisition.states.append(status)
            self._ended(acquisition, frame, sure)
            return
        if sure:
            acquisition._settled = True
        if last is not None and (last.state, last.count) == (state, status.count):
            return  # the same sample again (pushed every 100 ms): the first one's time is kept
        acquisition.states.append(status)

    def _not_ours(self, acquisition: DriverAcquisition) -> None:
        """The states recorded so far were another acquisition's."""
        self._foreign(acquisition, acquisition.states)
        acquisition.states.clear()
        acquisition._unsure_end = None

    @staticmethod
    def _foreign(acquisition: DriverAcquisition, seen: List[DriverStatus]) -> None:
        for status in seen:
            last = acquisition.foreign[-1] if acquisition.foreign else None
            if last is None or (last.state, last.count) != (status.state, status.count):
                acquisition.foreign.append(status)

    def _ended(self, acquisition: DriverAcquisition, frame: _Frame, sure: bool) -> None:
        """An end (an outcome, or idle after its states): its outcome where it is sure to be
        this acquisition's (``sure``: an outcome sampled after the driver took the start),
        else an unsure end, taken once no new acquisition followed (:meth:`_settle`)."""
        if acquisition._settled or sure:
            acquisition.outcome, acquisition.ended_at = frame.message.status, frame.at
        else:
            acquisition._unsure_end = frame

    def _settle(self, acquisition: DriverAcquisition, force: bool = False) -> None:
        """An unsure end that no new acquisition followed within :data:`SETTLE_S` (or at once,
        ``force``) is taken for this one's (the driver took the start: its acquisition is the
        last it showed); where another acquisition was heard around the start, its doubt is
        said: its count cannot be told apart from that one's."""
        end = acquisition._unsure_end
        if end is None or (not force and time.monotonic() - end.monotonic < SETTLE_S):
            return
        acquisition._unsure_end = None
        acquisition.outcome, acquisition.ended_at = end.message.status, end.at
        if acquisition.doubt is None and acquisition.foreign:
            acquisition.doubt = (
                f"its end ({end.message.status}) came before any state the driver surely pushed after taking the start, "
                "and another client's acquisition was heard around it, so it cannot be told apart from that one's"
            )

    def follow(
        self,
        acquisition: DriverAcquisition,
        *,
        timeout: Optional[float] = None,
        reconnect: bool = False,
        on_state: Optional[StateHook] = None,
    ) -> DriverAcquisition:
        """Follow ``acquisition`` to its end; returns it with ``outcome`` set.

        The end is ``file_saved`` or ``error``, or ``idle`` after its states were seen
        (another session took the outcome: each outcome is pushed once). Its ``count`` is
        the last ``saving_file`` count.

        Only this acquisition's states count: a state that cannot follow the ones seen
        begins another acquisition (those before go to ``foreign``), and an end seen before
        any state the driver surely pushed after taking the start is taken only when no new
        acquisition shows within :data:`SETTLE_S` (then ``doubt`` says so).

        Args:
            timeout: seconds (``None``: only the bound in force).
            reconnect: when the session drops (or ``acquisition`` has none, as one made for a
                start whose reply was lost), open a new one and go on (a current build pushes
                an outcome that no session took to the next session; an older build is asked
                with ``status``); ``acquisition.reconnects`` counts them.
            on_state: called with each new state.

        Raises:
            DaqTransportError: the session dropped and ``reconnect`` is false (its URL named).
            DaqTimeoutError: not ended within ``timeout`` (``DeadlineExceeded``: the caller's
                bound); the message names the last state and for how long it lasted.
        """
        if acquisition.outcome is not None:
            return acquisition
        caller = _deadline.current()
        with self._bounded(timeout) as bound:
            while acquisition.outcome is None:
                session = acquisition._session
                if session is None and reconnect and self.build == DriverBuild.PERSISTENT:
                    # Followed without a session of its own (a start whose reply was lost): a
                    # current build pushes its states to any session.
                    acquisition.reconnects += 1
                    acquisition._session = self._reconnect(bound)
                    continue
                if session is None:
                    frame = self._probe_frame(bound)
                else:
                    unsure = acquisition._unsure_end
                    try:
                        frame = session.next(bound if unsure is None else bound.within(max(unsure.monotonic + SETTLE_S - time.monotonic(), 0.001)))
                    except (_SessionClosed, DaqTransportError) as closed:
                        self._forget(session)
                        acquisition._session = None
                        if not reconnect:
                            raise DaqTransportError(
                                f"{self.safe_ws_url}: {closed} while following the acquisition (last state {_describe(acquisition.states[-1] if acquisition.states else None)})",
                                url=self.safe_ws_url,
                            ) from None
                        acquisition.reconnects += 1
                        acquisition._session = self._reconnect(bound)
                        continue
                if frame is None:
                    self._settle(acquisition)
                    if bound.expired and acquisition.outcome is None:
                        self._follow_timeout(acquisition, timeout, caller)
                    continue
                before = acquisition.states[-1] if acquisition.states else None
                self._record(acquisition, frame)
                self._settle(acquisition)
                if on_state is not None and acquisition.states and acquisition.states[-1] is not before:
                    on_state(acquisition.states[-1])
            if acquisition._session is not None and acquisition._session.build == DriverBuild.PER_CONNECTION:
                acquisition._session.close()
            return acquisition

    def _reconnect(self, bound: _deadline.Deadline) -> Optional[_Session]:
        """A new session to follow an acquisition on (``None``: an older build, asked with status)."""
        while True:
            try:
                session = self._persistent(bound)
            except DaqTimeoutError:
                raise
            except DaqTransportError:
                bound.sleep(_PROBE_S)  # refused while the driver restarts: the bound ends it
                if bound.expired:
                    raise
                continue
            if session.build == DriverBuild.PERSISTENT:
                return session
            session.close()
            return None

    def _probe_frame(self, bound: _deadline.Deadline) -> Optional[_Frame]:
        try:
            status = self._probe(bound)
        except DaqTransportError:
            status = None
        if status is None or status.state is None:
            bound.sleep(_PROBE_S)
            return None
        if status.state in ACQUISITION_STATES:
            bound.sleep(_PROBE_S)
        return _Frame(DriverMessage(status=status.state.value, count=status.count), status.at, status.monotonic)

    def _follow_timeout(self, acquisition: DriverAcquisition, timeout: Optional[float], caller: _deadline.Deadline) -> None:
        last = acquisition.states[-1] if acquisition.states else None
        what = "the acquisition did not end" + (f" within {timeout:g} s" if timeout is not None else "")
        if last is not None:
            what += f" (last state {_describe(last)} for {time.monotonic() - last.monotonic:.1f} s"
            if last.state in (DriverState.STOP, DriverState.RECORDING) and (last.state == DriverState.STOP or last.count == acquisition.request["n_image"]):
                what += "; the driver may be wedged: a writer did not confirm its last image, restart_services() recovers it"
            what += ")"
        raise self._timed_out(what, caller)

    def stop(self, acquisition: Optional[DriverAcquisition] = None, *, timeout: float = 10.0) -> DriverStatus:
        """Stop the acquisition under way; returns the state that confirms it.

        The stop has no reply: it is confirmed when the driver leaves the states where a stop
        acts (``creating_file``, ``waiting_for_first_image``, ``recording``). A stop during
        ``creating_file`` can be lost, so it is sent once the driver left ``creating_file``,
        and again while the driver still records 0.3 s after it. Safe to call when nothing
        runs (the driver ignores it). States seen go into ``acquisition``'s record.

        Raises:
            DaqTimeoutError: not confirmed within ``timeout`` (``DeadlineExceeded``: the
                caller's bound).
            DaqTransportError: the driver could not be reached.
        """
        caller = _deadline.current()
        seconds = _seconds("timeout", timeout)
        with _deadline.bounded(_deadline.Deadline(seconds)) as bound:
            session = acquisition._session if acquisition is not None and acquisition._session is not None else None
            if session is None or session.closed is not None:
                session = self._persistent(bound)
                if session.build != DriverBuild.PERSISTENT:
                    session.close()
                    return self._stop_all(acquisition, bound, caller, seconds)
            if session.build == DriverBuild.PER_CONNECTION:
                return self._stop_per_connection(session, acquisition, bound, caller, seconds)
            last = session.drain()
            if last is not None and acquisition is not None and session is acquisition._session:
                self._record(acquisition, last)
            sent = -1.0
            while True:
                state = last.message.state if last is not None else None
                if state is not None and state not in STOPPABLE_STATES and sent >= 0:
                    return last.status()
                if state != DriverState.CREATING_FILE and (sent < 0 or (last is not None and last.monotonic - sent >= _STOP_RESEND_S)):
                    session.send({"command": COMMAND_STOP})
                    sent = time.monotonic()
                try:
                    frame = session.next(bound)
                except _SessionClosed as closed:
                    raise self._dropped(session, closed, "while stopping") from None
                if frame is None:
                    self._stop_timeout(last, seconds, caller)
                if frame is not None and frame.message.state is not None:
                    last = frame
                    if acquisition is not None and session is acquisition._session:
                        self._record(acquisition, frame)

    def _stop_timeout(self, last: Optional[_Frame], seconds: float, caller: _deadline.Deadline) -> None:
        raise self._timed_out(f"stop not confirmed within {seconds:g} s (last state {_describe(last.status() if last else None)})", caller)

    def _timed_out(self, what: str, caller: _deadline.Deadline) -> DaqTimeoutError:
        """The error of a wait that ran out: ``DeadlineExceeded`` when the caller's bound ended it."""
        cls = DeadlineExceeded if caller.expired else DaqTimeoutError
        return cls(f"{self.safe_ws_url}: {what}", url=self.safe_ws_url)

    def _stop_per_connection(
        self, session: _Session, acquisition: Optional[DriverAcquisition], bound: _deadline.Deadline, caller: _deadline.Deadline, seconds: float
    ) -> DriverStatus:
        """An older build reads one command after a start: ``stop`` there, once it left
        ``creating_file``; if it is lost, ``stop_all`` on a connection of its own."""
        last = session.drain()
        while last is not None and last.message.state == DriverState.CREATING_FILE:
            try:
                frame = session.next(bound)
            except _SessionClosed:
                break
            if frame is None:
                self._stop_timeout(last, seconds, caller)
            last = frame
            if acquisition is not None:
                self._record(acquisition, frame)
        if last is not None and last.message.state not in STOPPABLE_STATES and last.message.state is not None:
            return last.status()
        try:
            session.send({"command": COMMAND_STOP})
        except DaqTransportError:
            return self._stop_all(acquisition, bound, caller, seconds)
        # Pushed at least every second: two periods without leaving a stoppable state is a lost stop.
        wait = bound.within(2.5 * PUSH_PERIOD_S[DriverBuild.PER_CONNECTION])
        while True:
            try:
                frame = session.next(wait)
            except _SessionClosed:
                break
            if frame is None:
                break
            if acquisition is not None:
                self._record(acquisition, frame)
            if frame.message.state is not None and frame.message.state not in STOPPABLE_STATES:
                return frame.status()
        return self._stop_all(acquisition, bound, caller, seconds)

    def _stop_all(self, acquisition: Optional[DriverAcquisition], bound: _deadline.Deadline, caller: _deadline.Deadline, seconds: float) -> DriverStatus:
        """``stop_all`` on a connection of its own (older builds from November 2024), confirmed with ``status``."""
        frame = self._one_shot(COMMAND_STOP_ALL, bound)
        if frame is None:
            self._stop_timeout(None, seconds, caller)
        message = frame.message
        if message.status == REPLY_REJECTED:
            raise StdDaqAdminException(f"{self.safe_ws_url}: this driver build knows no stop_all (before November 2024) and is busy: {quote(message.reason)}", url=self.safe_ws_url)
        if message.status != REPLY_SUCCESS and not _is_invalid_start(message):
            raise StdDaqAdminException(f"{self.safe_ws_url}: stop_all answered {quote(message.status)}: {quote(message.reason)}", url=self.safe_ws_url)
        while True:
            status = self._probe(bound)
            if status is not None and status.state is not None and status.state not in STOPPABLE_STATES:
                return status
            if bound.expired:
                self._stop_timeout(None, seconds, caller)
            bound.sleep(_PROBE_S)

    # -- the config REST -------------------------------------------------------------------------

    def get_config(self) -> Dict[str, Any]:
        """The config the DAQ services run with (``GET /api/config/get``), checked for shape.

        Raises:
            DaqHTTPError: 404 "Configuration file not found", 500 "Error decoding JSON file", ...
            DaqProtocolError: not a JSON object, or a known field of the wrong type.
            DaqTransportError: the service could not be reached (after ``retries``).
        """
        reply = self._rest("GET", CONFIG_GET)
        return check_config(reply, f"GET {self.safe_config_url}{CONFIG_GET}")

    def set_config(self, config: Dict[str, Any]) -> str:
        """Store ``config`` as it is (``POST /api/config/set``); returns the service's message.

        The service merges nothing: send the whole config (:meth:`update_config` does). A
        stored config restarts every DAQ service, the driver included. Sent once: a POST whose
        reply was lost raises :class:`ConfigOutcomeUnknown`.

        Raises:
            ValueError: ``config`` is not a JSON object (nothing sent).
            StdDaqAdminException: HTTP 400: "Detector name or detector type cannot be
                changed." or the service's schema error.
            DaqHTTPError: 404, 422, 500 (e.g. "Failed to synchronize with the secondary server").
            ConfigOutcomeUnknown: sent, its reply lost.
        """
        if not isinstance(config, dict):
            raise ValueError("a config must be an object")
        try:
            json.dumps(config, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config is not JSON: {quote(exc)}") from None
        reply = self._rest("POST", CONFIG_SET, config)
        if not isinstance(reply, dict) or not isinstance(reply.get("message"), str):
            raise DaqProtocolError(f"POST {self.safe_config_url}{CONFIG_SET} -> HTTP 200 without a message: {quote(json.dumps(reply))}", url=self.safe_config_url)
        return reply["message"]

    def _rest(self, method: str, path: str, body: Any = None) -> Any:
        """One config REST request with retries of transport failures (a POST only when it
        provably did not reach the service); the decoded JSON reply."""
        url = self.config_url + path
        safe = f"{method} {redact_url(url)}"
        outer = _deadline.current()
        attempt = 0
        while True:
            try:
                return self._rest_once(method, url, safe, body, outer)
            except DaqTransportError as exc:
                if isinstance(exc, (OutcomeUnknown, DeadlineExceeded)) or attempt >= self.retries:
                    raise
                pause = min(0.1 * 2**attempt, 2.0)
                if pause >= outer.remaining():
                    raise DeadlineExceeded(clauses(exc, "not retried: the time allowed ends before the next attempt"), url=exc.url) from exc
                log.debug("retrying %s after %s", safe, exc)
                outer.sleep(pause)
                attempt += 1

    def _rest_once(self, method: str, url: str, source: str, body: Any, outer: _deadline.Deadline) -> Any:
        safe_url = redact_url(url)
        outer.check()
        if outer.expired:
            raise DeadlineExceeded(f"{source} not sent: the time allowed ran out", url=safe_url)
        read = WRITE_TIMEOUT if method == "POST" else self.timeout
        own = _deadline.Deadline(self.timeout + read)
        try:
            with _deadline.bounded(own):
                reply = self.http.request(
                    method, url, params={USER_PARAM: self.user}, json=body, timeout=(self.timeout, read), allow_redirects=method == "GET"
                )
        except requests.exceptions.SSLError as exc:
            if _tls_mismatch(exc):
                raise DaqProtocolError(f"{source}: TLS failed: {quote(_root_cause(exc))}", url=safe_url) from exc
            raise self._rest_error(exc, method, source, safe_url, outer, own) from exc
        except _transport.ReplyTooLarge as exc:
            raise DaqProtocolError(f"{source} -> {exc}", url=safe_url) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._rest_error(exc, method, source, safe_url, outer, own) from exc
        status, content = reply.status_code, reply.content or b""
        try:
            decoded = json.loads(content) if content else None
        except (ValueError, RecursionError):
            decoded = None
        detail = decoded.get("detail") if isinstance(decoded, dict) and "detail" in decoded else None
        text = quote(detail if isinstance(detail, str) else (json.dumps(detail) if detail is not None else content)) or quote(reply.reason)
        if status == 200:
            if decoded is None:
                raise DaqProtocolError(f"{source} -> HTTP 200 but the reply is not JSON: {quote(content)!r}", url=safe_url, status_code=200, text=quote(content))
            return decoded
        message = f"{source} -> HTTP {status}: {text}"
        if status in (502, 503, 504):
            if method == "POST" and status != 503:
                raise ConfigOutcomeUnknown(f"{message} (the config may have been stored)", url=safe_url, status_code=status, text=text)
            raise DaqTransportError(message, url=safe_url, status_code=status, text=text)
        if status == 400:
            raise StdDaqAdminException(f"{source} -> refused: {text}", url=safe_url)
        raise DaqHTTPError(message, url=safe_url, status_code=status, text=text)

    def _rest_error(self, exc: BaseException, method: str, source: str, safe_url: str, outer: _deadline.Deadline, own: _deadline.Deadline) -> DaqError:
        unknown = method == "POST" and not _never_reached_server(exc)
        tail = " (the config may have been stored)" if unknown else ""
        if outer.expired:
            return DeadlineExceeded(f"{source}: no complete reply before the time allowed ran out{tail}", url=safe_url)
        if own.expired or _is_timeout(exc):
            what = f"{source} timed out{tail}"
        else:
            what = f"{source} failed: {quote(_root_cause(exc))}{tail}"
        if unknown:
            return ConfigOutcomeUnknown(what, url=safe_url)
        return (DaqTimeoutError if own.expired or _is_timeout(exc) else DaqTransportError)(what, url=safe_url)

    # -- config changes and restarts -----------------------------------------------------------------

    def update_config(self, changes: Dict[str, Any], *, timeout: float = RESTART_TIMEOUT, on_progress: Optional[ProgressHook] = None) -> ConfigChange:
        """Change config fields, store the whole config and wait for the services to come back.

        Reads the config, applies ``changes``, stores the whole document (the service merges
        nothing), waits for the restart it causes (the open session drops) and for the
        driver to accept a connection and be idle again, then reads the config back. When
        the changes are already in force nothing is stored (no restart).

        Args:
            changes: ``{field: value}`` (see :data:`~daq_runner.det_driver_protocol.CONFIG_FIELD_TYPES`).
            timeout: seconds for all of it.
            on_progress: called as ``on_progress(stage, elapsed_s)`` when the stage changes
                and about every second while waiting.

        Raises:
            ValueError: before anything is sent: ``detector_name`` or ``detector_type``
                changed, an unknown field, a wrong type, ``bit_depth`` not 8/16/32,
                ``number_of_writers`` < 1.
            StdDaqAdminException: the config REST refused it (HTTP 400).
            DeploymentError: stored but not in force: the services did not restart or come
                back within ``timeout``, the secondary server was not synchronised, or the
                config read back differs.
            ConfigOutcomeUnknown: its reply was lost and the config read back is not it.
        """
        seconds = _seconds("timeout", timeout)
        began = time.monotonic()
        with _deadline.bounded(_deadline.Deadline(seconds)) as bound:
            current = self.get_config()
            changes = check_config_changes(changes, current)
            config = copy.deepcopy(current)
            config.update(changes)
            if config == current:
                return ConfigChange(config=current, previous=current, stored=False, restart_s=None, ready=None)
            return self._store_and_wait(config, current, bound, seconds, began, on_progress)

    def restart_services(self, *, timeout: float = RESTART_TIMEOUT, on_progress: Optional[ProgressHook] = None) -> ConfigChange:
        """Store the config in force unchanged: the DAQ services restart (the only remote way
        to recover a driver wedged in ``recording``/``stop``); waits until the driver is back.

        Raises: as :meth:`update_config`.
        """
        seconds = _seconds("timeout", timeout)
        began = time.monotonic()
        with _deadline.bounded(_deadline.Deadline(seconds)) as bound:
            current = self.get_config()
            return self._store_and_wait(current, current, bound, seconds, began, on_progress)

    def _store_and_wait(
        self, config: Dict[str, Any], previous: Dict[str, Any], bound: _deadline.Deadline, seconds: float, began: float, on_progress: Optional[ProgressHook]
    ) -> ConfigChange:
        progress = _Progress(on_progress, began)
        # A session open before the store shows the restart by dropping: a driver that has not
        # restarted yet must not be taken for one that is back.
        progress("connecting to the driver to see it restart")
        try:
            watch: Optional[_Session] = self._open(bound.within(self.timeout))
        except (DaqTransportError, DaqProtocolError):
            watch = None  # down already (a crash, an earlier broken config): wait for it to come up
        if self._session is not None:
            self._forget(self._session)
        try:
            progress("storing the config")
            try:
                self.set_config(config)
            except ConfigOutcomeUnknown:
                if self.get_config() != config:
                    raise
            except DaqHTTPError as exc:
                if exc.status_code == 500 and exc.text and "secondary" in exc.text:
                    raise DeploymentError(
                        f"{self.safe_config_url}: the config was stored here and the services restart, but the secondary server was not synchronised: {exc.text}",
                        url=self.safe_config_url,
                        config=config,
                    ) from exc
                raise
            stored = time.monotonic()
            if watch is not None:
                progress("waiting for the services to stop")
                while watch.closed is None:
                    if bound.expired:
                        raise DeploymentError(
                            f"{self.safe_ws_url}: the config was stored but the driver's session did not drop within {seconds:g} s: the services did not restart",
                            url=self.safe_ws_url,
                            config=config,
                        )
                    watch.drain()
                    bound.sleep(0.02)
                    progress.tick()
        finally:
            if watch is not None:
                watch.close()
        try:
            ready = self._wait_until_ready(bound, progress)
        except (DaqTimeoutError, DeadlineExceeded) as exc:
            raise DeploymentError(f"the config was stored but {exc}", url=self.safe_ws_url, config=config) from exc
        restart_s = time.monotonic() - stored
        progress("reading the config back")
        applied = self.get_config()
        if applied != config:
            differing = sorted(k for k in set(applied) | set(config) if applied.get(k) != config.get(k))
            raise DeploymentError(f"{self.safe_config_url}: the config read back differs from the one stored in: {', '.join(differing)}", url=self.safe_config_url, config=applied)
        progress("ready")
        return ConfigChange(config=applied, previous=previous, stored=True, restart_s=restart_s, ready=ready)

    def wait_until_ready(self, *, timeout: float = RESTART_TIMEOUT, on_progress: Optional[ProgressHook] = None) -> DriverStatus:
        """Wait until the driver accepts a connection and is idle (after a restart of the services).

        Connections refused or dropped meanwhile are waited out; an outcome kept from before
        is let through (it turns into idle).

        Raises:
            DaqTimeoutError: not ready within ``timeout`` (``DeadlineExceeded``: the caller's
                bound); the message says what was seen last.
            DaqProtocolError: what answers at the URL is not the driver's WebSocket.
        """
        caller = _deadline.current()
        seconds = _seconds("timeout", timeout)
        with _deadline.bounded(_deadline.Deadline(seconds)) as bound:
            try:
                return self._wait_until_ready(bound, _Progress(on_progress, time.monotonic()))
            except DaqTimeoutError as exc:
                if caller.expired and not isinstance(exc, DeadlineExceeded):
                    raise DeadlineExceeded(str(exc), url=exc.url) from exc
                raise

    def _wait_until_ready(self, bound: _deadline.Deadline, progress: "_Progress") -> DriverStatus:
        last = "nothing yet"
        progress("waiting for the driver to accept a connection")
        while True:
            try:
                session = self._persistent(bound)
                if session.build == DriverBuild.PERSISTENT:
                    progress("connected, waiting for idle")
                    while True:
                        frame = session.next(bound)
                        if frame is None:
                            break
                        if frame.message.state == DriverState.IDLE:
                            return frame.status()
                        if frame.message.state is not None:
                            last = f"state {frame.message.state.value}"
                        progress.tick()
                else:
                    session.close()
                    status = self._probe(bound)
                    if status is not None and status.state == DriverState.IDLE:
                        return status
                    last = f"state {_describe(status)}"
                    bound.sleep(_PROBE_S)
            except _SessionClosed as closed:
                self._session = None
                last = str(closed)
            except DaqProtocolError:
                raise
            except (DaqTimeoutError, DeadlineExceeded) as exc:
                last = str(exc)
            except DaqTransportError as exc:
                self._session = None
                last = str(exc)
                progress("the driver refuses connections (the services restart)")
                bound.sleep(0.1)
            if bound.expired:
                raise DaqTimeoutError(f"{self.safe_ws_url}: the driver was not back (connected and idle) in time; last: {last}", url=self.safe_ws_url)
            progress.tick()


class _Progress:
    """Stage reports for a caller: on each new stage, and about every second while it lasts."""

    __slots__ = ("hook", "began", "stage", "reported")

    def __init__(self, hook: Optional[ProgressHook], began: float) -> None:
        self.hook = hook
        self.began = began
        self.stage = ""
        self.reported = 0.0

    def __call__(self, stage: str) -> None:
        if stage != self.stage:
            self.stage = stage
            self._report()

    def tick(self) -> None:
        if time.monotonic() - self.reported >= 1.0:
            self._report()

    def _report(self) -> None:
        self.reported = time.monotonic()
        if self.hook is not None:
            self.hook(self.stage, self.reported - self.began)


def _watch_handshake(sock: socket.socket, bound: _deadline.Deadline, done: threading.Event) -> None:
    # Shut the socket when a stop is requested during the handshake: the library's wait ends at once.
    while not done.wait(0.05):
        if bound.cancelled:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return


def _is_invalid_start(message: DriverMessage) -> bool:
    """The driver's answer to JSON that is not a start while idle (how an older build answers status)."""
    return message.status == REPLY_ERROR and (message.reason or "").startswith(REASON_INVALID_START.split("{")[0])


def _describe(status: Optional[DriverStatus]) -> str:
    if status is None:
        return "none"
    if status.state is None:
        return "busy (state not said)"
    return status.state.value + (f" count {status.count}" if status.count is not None else "")
