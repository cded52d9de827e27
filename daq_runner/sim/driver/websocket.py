"""The simulated ``std_det_driver`` WebSocket: sessions, state pushes and commands, both builds.

As the driver's code does:

- a persistent build pushes the state to every session about every ``push_period_s`` and
  at once on a change; the session that pushes ``file_saved``/``error`` first turns it into
  ``idle``; it reads every message: ``stop`` (no reply), a start while idle, ``rejected``
  "driver is busy!" otherwise (the connection stays open); text that is not JSON is answered
  ``error`` "Invalid command! <text>" (open); JSON that is not a valid start while idle is
  answered ``error`` "Invalid command! expected: start with path parameter, received:
  <text>" and the connection is closed;
- a per-connection build reads one command: ``stop_all`` (``success``, closed),
  ``status`` (the state, closed), a start while idle (then it pushes until the outcome,
  which it sends and closes, and reads one more message: ``stop``, or anything else is
  answered ``success`` and closes), ``rejected`` and closed while busy; text that is not
  JSON is answered ``error`` and closed;
- a command whose JSON types the driver's library cannot read (a JSON value that is not an
  object, a non-text ``command``, ``path`` or ``file_prefix``, a ``n_image``/``writer_id``/
  ``start_id`` that is not a number) crashes the driver: every session drops and
  connections are refused until systemd has restarted it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any, Dict, List, Optional, Set

from ...det_driver_protocol import (
    COMMAND_START,
    COMMAND_STATUS,
    COMMAND_STOP,
    COMMAND_STOP_ALL,
    COUNTED_STATES,
    DEFAULT_FILE_PREFIX,
    DEFAULT_N_IMAGE,
    OUTCOME_STATES,
    REASON_BUSY,
    REASON_INVALID,
    REASON_INVALID_START,
    REPLY_ERROR,
    REPLY_REJECTED,
    REPLY_SUCCESS,
    DriverBuild,
    DriverState,
    encode,
)
from .core import DriverCore

__all__ = ["DriverWebSocket"]

log = logging.getLogger(__name__)


class _Crash(Exception):
    """What the driver's JSON library throws where the driver does not catch it."""


class _SimSession:
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def send(self, obj: Dict[str, Any]) -> None:
        if self.closed.is_set():
            return
        try:
            with self.lock:
                self.connection.send(encode(obj))
        except Exception:  # the peer is gone: the driver ignores a failed write
            pass

    def close(self) -> None:
        """Close normally (code 1000), as the driver's close handler does."""
        self.closed.set()
        try:
            self.connection.close()
        except Exception:
            pass

    def drop(self) -> None:
        """Drop without a close frame, as a dying process does."""
        self.closed.set()
        try:
            self.connection.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _parse(text: str) -> Any:
    """JSON as the driver's library reads it (no NaN or Infinity); ``ValueError`` when it is not."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    return json.loads(text, parse_constant=refuse)


def _command(obj: Any) -> str:
    """``value("command", "")``: throws for a non-object or a ``command`` that is not text."""
    if not isinstance(obj, dict):
        raise _Crash(f"a command that is a JSON {type(obj).__name__}, not an object")
    command = obj.get("command", "")
    if not isinstance(command, str):
        raise _Crash("a command whose 'command' is not text")
    return command


def _unsigned(obj: Dict[str, Any], key: str, default: int, bits: int) -> int:
    """``value(key, default)`` read as an integer of ``bits`` bits: numbers and booleans convert
    (floats truncate, negatives wrap), anything else throws."""
    if key not in obj:
        return default
    value = obj[key]
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, (int, float)):
        raise _Crash(f"a start whose {key} is not a number")
    return int(value) % (1 << bits)


def _start_settings(obj: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """``process_start_request``: the run's settings, ``None`` for no valid start."""
    if obj.get("command", "") != COMMAND_START or "path" not in obj:
        return None
    path, prefix = obj["path"], obj.get("file_prefix", DEFAULT_FILE_PREFIX)
    if not isinstance(path, str) or not isinstance(prefix, str):
        raise _Crash("a start whose path or file_prefix is not text")
    n_image = _unsigned(obj, "n_image", DEFAULT_N_IMAGE, 64)
    _unsigned(obj, "writer_id", 0, 32)
    _unsigned(obj, "start_id", 0, 64)
    # The services run in "/": a relative path is taken from there.
    return {"base": os.path.join("/", f"{path}/{prefix}"), "n_image": n_image}


class DriverWebSocket:
    """The driver's WebSocket server over ``core`` on ``host:port`` (0: a free port).

    Goes down (every session dropped, connections refused) and up again as ``core``'s
    services restart.
    """

    def __init__(self, core: DriverCore, host: str = "127.0.0.1", port: int = 0) -> None:
        self.core = core
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None
        self._sessions: Set[_SimSession] = set()
        self._lock = threading.Lock()
        self._shutdowns: List[threading.Thread] = []
        core.attach(self.go_down, self.go_up, self.drop_sessions)

    # -- life cycle ----------------------------------------------------------------------------

    def go_up(self) -> None:
        """Accept connections (idempotent)."""
        from websockets.sync.server import serve

        with self._lock:
            if self._server is not None:
                return
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind((self.host, self.port))
                sock.listen(64)
            except OSError:
                sock.close()
                raise
            self.port = sock.getsockname()[1]
            self._server = serve(self._handle, sock=sock, compression=None, ping_interval=None, max_size=1024 * 1024, server_header=None)
            self._thread = threading.Thread(target=self._server.serve_forever, name="daq-sim-driver-ws", daemon=True)
            self._thread.start()

    def go_down(self, abrupt: bool = True) -> None:
        """Drop every session and stop accepting connections (refused until :meth:`go_up`)."""
        with self._lock:
            server, self._server, self._thread = self._server, None, None
        if server is not None:
            # Refused at once, before the sessions drop; the library's shutdown, which waits
            # for the handlers to end, runs aside (this may run in a handler: a crash).
            server.socket.close()
        self.drop_sessions(abrupt)
        if server is not None:
            self._shutdowns.append(threading.Thread(target=server.shutdown, name="daq-sim-driver-ws-down", daemon=True))
            self._shutdowns[-1].start()

    def drop_sessions(self, abrupt: bool = True) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.drop() if abrupt else session.close()

    def close(self) -> None:
        self.go_down()
        for thread in self._shutdowns:
            thread.join(5)

    # -- sessions ----------------------------------------------------------------------------------

    def _handle(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        session = _SimSession(connection)
        with self._lock:
            self._sessions.add(session)
        try:
            if self.core.build == DriverBuild.PERSISTENT:
                self._persistent(session)
            else:
                self._per_connection(session)
        except ConnectionClosed:
            pass
        except _Crash as crash:
            self.core.crash(str(crash))
        finally:
            session.closed.set()
            with self._lock:
                self._sessions.discard(session)

    def _pusher(self, session: _SimSession, last_one: bool) -> None:
        """Start the driver's monitor thread of one session; it waits for a change from the
        state now (taken here, before anything the caller does next)."""
        current = self.core.snapshot()[0]
        threading.Thread(target=self._push, args=(session, last_one, current), name="daq-sim-driver-push", daemon=True).start()

    def _push(self, session: _SimSession, last_one: bool, current: DriverState) -> None:
        """The driver's monitor thread of one session.

        A persistent build's ends with its connection (an outcome then stays for the next
        session); a per-connection build's runs on to the outcome, sent or not, and turns it
        into idle.
        """
        core, period = self.core, self.core.settings.period_s
        generation = core.generation
        while last_one or not session.closed.is_set():
            state, count = core.wait_for_change_or_timeout(period, current)
            current = state
            if not core.up or core.generation != generation or (session.closed.is_set() and not last_one):
                return  # the driver restarted (or the simulator was reset): this thread died with it
            if state in OUTCOME_STATES:
                session.send({"status": state.value})
                core.outcome_pushed()
                if last_one:
                    session.close()
                    return
            elif state in COUNTED_STATES:
                session.send({"count": count, "status": state.value})
            else:
                session.send({"status": state.value})

    def _persistent(self, session: _SimSession) -> None:
        self._pusher(session, False)
        for data in session.connection:
            text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
            try:
                obj = _parse(text)
            except ValueError:
                session.send({"reason": REASON_INVALID.format(raw=text), "status": REPLY_ERROR})
                continue
            command = _command(obj)
            if command == COMMAND_STOP:
                self.core.stop()
            elif self.core.snapshot()[0] == DriverState.IDLE:
                if not self._start(session, obj, text):
                    return
            else:
                session.send({"reason": REASON_BUSY, "status": REPLY_REJECTED})

    def _start(self, session: _SimSession, obj: Dict[str, Any], text: str, monitor: bool = False) -> bool:
        """A start while idle; ``False`` when it was invalid (answered, connection closed).
        ``monitor``: a per-connection build starts the session's pushes first."""
        settings = _start_settings(obj)
        if settings is None:
            session.send({"reason": REASON_INVALID_START.format(raw=text), "status": REPLY_ERROR})
            session.close()
            return False
        if monitor:
            self._pusher(session, True)
        self.core.start_acquisition(settings["base"], settings["n_image"])
        return True

    def _per_connection(self, session: _SimSession) -> None:
        connection = session.connection
        text = _text(connection.recv())
        try:
            obj = _parse(text)
        except ValueError:
            session.send({"reason": REASON_INVALID.format(raw=text), "status": REPLY_ERROR})
            session.close()
            return
        command = _command(obj)
        if command == COMMAND_STOP_ALL:
            self.core.stop()
            session.send({"status": REPLY_SUCCESS})
            session.close()
            return
        if command == COMMAND_STATUS:
            session.send({"status": self.core.snapshot()[0].value})
            session.close()
            return
        if self.core.snapshot()[0] != DriverState.IDLE:
            session.send({"reason": REASON_BUSY, "status": REPLY_REJECTED})
            session.close()
            return
        if not self._start(session, obj, text, monitor=True):
            return
        # listen_for_stop: one more message, read without a guard.
        text = _text(connection.recv())
        try:
            command = _command(_parse(text))
        except ValueError:
            raise _Crash("an unparsable message after a start") from None
        if command == COMMAND_STOP:
            self.core.change_state(DriverState.STOP)  # whatever the state: this build does not look
        else:
            session.send({"status": REPLY_SUCCESS})
            session.close()
            return
        for _ in connection:  # nothing more is read as a command; wait for the close
            pass


def _text(data: Any) -> str:
    return data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")

