"""An embedded simulated DAQ: REST server in a background thread, with its own Redis if needed."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

from .daq import SimSettings, SimulatedDaqCore
from .redis_server import RedisServer

__all__ = ["SimulatedDaq"]


class SimulatedDaq:
    """A complete simulated Standard DAQ, started and stopped in-process.

    Args:
        host: address to bind the REST API to (loopback by default).
        port: TCP port of the REST API (0: a free one).
        redis_url: Redis to publish to; ``None`` starts a private ``redis-server``.
        config: initial DAQ configuration (default: a small simulated Eiger).
        settings: frame rate, timings, stream names (see :class:`SimSettings`).
        log_output: let the REST server's warnings and errors reach logging (``daq-sim``
            does). ``False`` (the default, embedded in another program such as
            ``daq-run --sim``): uvicorn logs only what is critical, and the simulator's own
            messages reach only handlers the program configured (none: nothing is shown).

    It behaves as the real rest_v2 server by default: the writer starts UNKNOWN (send a
    stop, or ``SimSettings(start_state="READY")``), starts and stops take at least one
    0.1 s driver poll, partial configs are refused (see :class:`SimSettings`).

    Example::

        with SimulatedDaq() as sim:
            client = StdDaqClient(sim.url)
            client.stop_writer()          # UNKNOWN -> READY, as on a freshly started server
            client.get_status()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        redis_url: Optional[str] = None,
        config: Optional[dict] = None,
        settings: Optional[SimSettings] = None,
        log_output: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.settings = settings or SimSettings()
        self._config = config
        self._log_output = log_output
        self._redis_url = redis_url
        self.redis_server: Optional[RedisServer] = None
        self.core: Optional[SimulatedDaqCore] = None
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{host}:{self.port}"

    @property
    def redis_url(self) -> Optional[str]:
        return self._redis_url

    def start(self, timeout: float = 15.0) -> "SimulatedDaq":
        """Start Redis (if needed), the simulator and its REST server; returns when it answers."""
        import uvicorn

        from .app import create_app

        try:
            if self._redis_url is None:
                self.redis_server = RedisServer().start()
                self._redis_url = self.redis_server.url
            self.core = SimulatedDaqCore(self.settings, self._redis_url, self._config).start()
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted connections inherit it: without it a keep-alive client waits 40 ms per reply
            # (the reply goes out in two writes, Nagle meets delayed ACK).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            # log_config=None: uvicorn configures no handlers of its own, it only sets its levels.
            log_level = "warning" if self._log_output else "critical"
            config = uvicorn.Config(create_app(self.core), log_config=None, log_level=log_level, access_log=False, lifespan="off")
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="daq-sim-http", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + timeout
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"daq-sim REST server did not start on {self.url}")
                time.sleep(0.01)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the REST server, the simulator and the private Redis (if any)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self.core is not None:
            self.core.close()
            self.core = None
        if self.redis_server is not None:
            self.redis_server.stop()
            self.redis_server = None
            self._redis_url = None

    def __enter__(self) -> "SimulatedDaq":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
