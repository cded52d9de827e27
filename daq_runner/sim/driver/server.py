"""An embedded simulated current-generation DAQ: the driver's WebSocket and the config REST,
each served from a background thread."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Any, Optional

from .core import DriverCore, DriverSimSettings

__all__ = ["SimulatedDriverDaq"]


class SimulatedDriverDaq:
    """A simulated Standard DAQ of the current generation, started and stopped in-process.

    Args:
        host: address to bind both services to (loopback by default).
        port: TCP port of the config REST (0: a free one).
        ws_port: TCP port of the driver's WebSocket (0: a free one; the real one is 8080).
        config: the initial config (default :data:`~daq_runner.sim.driver.core.DEFAULT_DRIVER_CONFIG`),
            written to the config file at start and on reset.
        settings: the build, frame rate, restart time... (see :class:`DriverSimSettings`).
        config_path: the config file the services read (default: one in a private folder,
            removed at :meth:`stop`).

    ``ws_url``, ``url`` (the config REST) and ``core`` (state, faults) are there once started.

    Example::

        with SimulatedDriverDaq() as sim:
            with DetDriverClient(sim.ws_url, sim.url) as daq:
                daq.follow(daq.start(str(tmp_path), "scan_", n_image=10))
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ws_port: int = 0,
        config: Optional[dict] = None,
        settings: Optional[DriverSimSettings] = None,
        config_path: Optional[str] = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ws_port = ws_port
        self.settings = settings or DriverSimSettings()
        self._config = config
        self._config_path = config_path
        self._folder: Optional[str] = None
        self.core: Optional[DriverCore] = None
        self.websocket: Any = None
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None

    def _host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address

    @property
    def url(self) -> str:
        """Base URL of the config REST."""
        return f"http://{self._host()}:{self.port}"

    @property
    def ws_url(self) -> str:
        """URL of the driver's WebSocket."""
        return f"ws://{self._host()}:{self.ws_port}"

    @property
    def config_path(self) -> str:
        assert self.core is not None, "not started"
        return self.core.config_path

    def start(self, timeout: float = 15.0) -> "SimulatedDriverDaq":
        """Start the services; returns when both answer."""
        import uvicorn

        from .rest import create_config_app
        from .websocket import DriverWebSocket

        try:
            path = self._config_path
            if path is None:
                self._folder = tempfile.mkdtemp(prefix="daq-sim-driver-")
                path = os.path.join(self._folder, "config.json")
            self.core = DriverCore(self.settings, path, self._config)
            self.websocket = DriverWebSocket(self.core, self.host, self.ws_port)
            self.core.start()
            if not self.core.up:
                raise RuntimeError(f"the driver does not start: {self.core.down_reason}")
            self.ws_port = self.websocket.port
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            config = uvicorn.Config(create_config_app(self.core), log_config=None, log_level="warning", access_log=False, lifespan="off")
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="daq-sim-driver-rest", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + timeout
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"daq-sim config REST did not start on {self.url}")
                time.sleep(0.01)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both services and the acquisition; remove the private config folder."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self.core is not None:
            self.core.close()
        if self.websocket is not None:
            self.websocket.close()
            self.websocket = None
        self.core = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> "SimulatedDriverDaq":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
