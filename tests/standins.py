"""Small stand-in servers on 127.0.0.1 for timings and replies daq-sim cannot produce.

``DaqProxy`` forwards every request to a real daq-sim and can, per path, hold the request
before forwarding it, hold the reply after it, drop the reply, rewrite the request body, or run
a hook before forwarding. It counts what it forwarded, so a test can tell how many write
requests reached the DAQ.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import requests


class DaqProxy:
    """An HTTP proxy in front of ``upstream`` (a daq-sim base URL). Use as a context manager.

    Attributes:
        hold_request: path -> seconds to wait before forwarding.
        hold_reply: path -> seconds to wait before answering.
        drop_reply: paths whose reply is never sent (the connection is closed after forwarding).
        trickle: path -> seconds between the bytes of its reply (status line and headers too).
        replace: path -> function() -> reply body (bytes) sent instead of the DAQ's, with HTTP 200.
        rewrite: path -> function(body dict) -> body dict, applied before forwarding.
        before: path -> function() called before forwarding.
        forwarded: (method, path, body) of every request forwarded, in order.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.hold_request: Dict[str, float] = {}
        self.hold_reply: Dict[str, float] = {}
        self.drop_reply: set = set()
        self.trickle: Dict[str, float] = {}
        self.replace: Dict[str, Callable[[], bytes]] = {}
        self._closed = threading.Event()
        self.rewrite: Dict[str, Callable[[dict], dict]] = {}
        self.before: Dict[str, Callable[[], None]] = {}
        self.forwarded: List[tuple] = []
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._session = requests.Session()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, path: str) -> int:
        return sum(1 for _, p, _ in self.forwarded if p == path)

    def __enter__(self) -> "DaqProxy":
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path
                time.sleep(proxy.hold_request.get(path, 0.0))
                body: Any = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = None
                if path in proxy.rewrite and isinstance(body, dict):
                    body = proxy.rewrite[path](body)
                    raw = json.dumps(body).encode()
                if path in proxy.before:
                    proxy.before[path]()
                proxy.forwarded.append((method, path, body))
                reply = proxy._session.request(
                    method, proxy.upstream + path, data=raw or None,
                    headers={"Content-Type": "application/json"} if raw else {}, timeout=60,
                )
                if path in proxy.drop_reply:
                    self.close_connection = True
                    return
                time.sleep(proxy.hold_reply.get(path, 0.0))
                status, content = reply.status_code, reply.content
                if path in proxy.replace:
                    status, content = 200, proxy.replace[path]()
                head = (
                    f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(content)}\r\n\r\n"
                ).encode()
                if path not in proxy.trickle:
                    self.wfile.write(head + content)
                    return
                self.close_connection = True
                try:
                    for byte in head + content:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if proxy._closed.wait(proxy.trickle[path]):
                            return
                except OSError:
                    return  # the client gave up

            def do_GET(self) -> None:
                self._relay("GET")

            def do_POST(self) -> None:
                self._relay("POST")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closed.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._session.close()
