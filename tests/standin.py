"""Stand-in HTTP servers on 127.0.0.1 for what daq-sim cannot produce.

A trickling reply, a garbage reply, a redirect, a proxy that records what reaches it, a
connect that never completes, TLS: each test gives a handler that talks raw HTTP/1.1 on
the accepted socket. Keep-alive is the handler's choice (``serve_forever`` keeps
answering on one connection until the client closes it). ``DaqProxy`` sits in front of a
real daq-sim instead and changes the timing or the content of its replies (for daq-run
end to end). ``DriverRelay`` sits in front of daq-sim's driver WebSocket and changes the
interleaving of its frames around a start.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests

__all__ = ["StandIn", "Conn", "DaqProxy", "DriverRelay", "reply", "ok_envelope", "make_certificate", "blackhole_port"]


def reply(status: int = 200, body: Any = b"", headers: Optional[dict] = None, reason: str = "OK") -> bytes:
    """Raw HTTP/1.1 response bytes; a dict or list body is sent as JSON."""
    if not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
    head = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    head.update(headers or {})
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + bytes(body)


def ok_envelope(key: str = "writer", payload: Any = None, **extra: Any) -> dict:
    if payload is None and key == "writer":
        payload = {"state": "READY", "acquisition": None}
    return {"status": "ok", "message": "fine", key: payload, **extra}


class Conn:
    """One accepted connection: read requests, send bytes."""

    def __init__(self, sock: socket.socket, server: "StandIn") -> None:
        self.sock = sock
        self.server = server
        self._buffer = b""

    def read_request(self) -> Optional[Tuple[str, str, dict, bytes]]:
        """The next request ``(method, target, headers, body)``, or ``None`` when the client closed."""
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            rest += chunk
        body, self._buffer = rest[:length], rest[length:]
        self.server.requests.append((method, target, headers, body))
        return method, target, headers, body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, data: bytes, delay: float, start: int = 0) -> None:
        """Send ``data[start:]`` one byte every ``delay`` seconds (after ``data[:start]`` at once)."""
        if start:
            self.sock.sendall(data[:start])
        for i in range(start, len(data)):
            if self.server.closed.wait(delay):
                return
            self.sock.sendall(data[i : i + 1])

    def serve_forever(self, answer: Callable[[str, str, dict, bytes], bytes]) -> None:
        """Keep-alive: answer every request on this connection until the client closes it."""
        while True:
            request = self.read_request()
            if request is None:
                return
            self.send(answer(*request))


Handler = Callable[[Conn], None]


class StandIn:
    """A threaded raw HTTP (or HTTPS) server on 127.0.0.1; ``handler(conn)`` runs per connection."""

    def __init__(self, handler: Handler, tls: Optional[ssl.SSLContext] = None, backlog: int = 16) -> None:
        self.handler = handler
        self.tls = tls
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.port = self.listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests: List[Tuple[str, str, dict, bytes]] = []
        self.closed = threading.Event()
        self._socks: List[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="standin", daemon=True)

    def __enter__(self) -> "StandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.closed.set()
        try:
            self.listener.close()
        except OSError:
            pass
        for sock in list(self._socks):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._thread.join(timeout=2)

    def _accept(self) -> None:
        # A blocked accept() is not woken by close() from another thread: poll instead.
        self.listener.settimeout(0.05)
        while not self.closed.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            self.connections += 1
            self._socks.append(sock)
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
                self._socks.append(sock)
            self.handler(Conn(sock, self))
        except (OSError, ValueError):
            pass  # the client went away, or the test ended
        finally:
            try:
                sock.close()
            except OSError:
                pass


def make_certificate(directory: Path) -> Optional[Tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 made with the ``openssl`` tool (``None`` without it)."""
    if shutil.which("openssl") is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    proc = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        capture_output=True,
        timeout=60,
    )
    return (cert, key) if proc.returncode == 0 else None


def blackhole_port() -> Tuple[socket.socket, List[socket.socket]]:
    """A loopback port whose TCP connects never complete: a listener with a full backlog.

    Returns the listener and the socket filling its backlog (close both when done).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.socket()
    filler.connect(listener.getsockname())
    # Linux accepts one more connection than the backlog; fill until a connect hangs.
    fillers = [filler]
    for _ in range(4):
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(listener.getsockname())
            fillers.append(probe)
        except OSError:
            probe.close()
            break
    return listener, fillers


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met")


class DaqProxy:
    """An HTTP proxy in front of ``upstream`` (a daq-sim base URL). Use as a context manager.

    Attributes:
        hold_request: path -> seconds to wait before forwarding.
        hold_reply: path -> seconds to wait before answering.
        drop_reply: paths (or ``"METHOD /path"``) whose reply is never sent (the connection is
            closed after forwarding).
        trickle: path -> seconds between the bytes of its reply (status line and headers too).
        replace: path -> function() -> reply body (bytes) sent instead of the DAQ's, with HTTP 200.
        rewrite: path -> function(body dict) -> body dict, applied before forwarding.
        before: path -> function() called before forwarding.
        fail: ``"METHOD /path"`` -> ``[n, status]``: the next ``n`` such requests are answered
            with HTTP ``status`` (a JSON error body) and not forwarded; the count goes down.
        failed: ``(method, path, status)`` of every request answered by ``fail``, in order.
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
        self.fail: Dict[str, List[int]] = {}
        self.failed: List[tuple] = []
        self._fail_guard = threading.Lock()
        self.forwarded: List[tuple] = []
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._session = requests.Session()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, path: str) -> int:
        return sum(1 for _, p, _ in self.forwarded if p == path)

    def _take_failure(self, method: str, path: str) -> Optional[int]:
        """The status to fail this request with, if ``fail`` says so (counting it down)."""
        with self._fail_guard:
            armed = self.fail.get(f"{method} {path}")
            if not armed or armed[0] <= 0:
                return None
            armed[0] -= 1
            self.failed.append((method, path, armed[1]))
            return armed[1]

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
                failure = proxy._take_failure(method, path)
                if failure is not None:
                    content = json.dumps({"detail": "Internal Server Error"}).encode()
                    self.wfile.write(
                        f"HTTP/1.1 {failure} Error\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(content)}\r\n\r\n".encode() + content
                    )
                    return
                # A held request is dropped when the proxy closes meanwhile: forwarded later it
                # would reach the simulator during another test (a stop ending its acquisition).
                if proxy._closed.wait(proxy.hold_request.get(path, 0.0)):
                    self.close_connection = True
                    return
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
                if path in proxy.drop_reply or f"{method} {path}" in proxy.drop_reply:
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


class DriverRelay:
    """A WebSocket relay on 127.0.0.1 in front of a driver (daq-sim's): every frame passes, in
    order, except around the starts it is told to shape, where it produces an interleaving the
    real driver can produce (its answers and each session's pushes are written by different
    threads, and a session's pusher sends the sample it took, however late):

    - ``before_start``: frames pushed to the client when it sends the start, before the start
      goes on (another client's acquisition, sampled before the driver took ours);
    - ``hold_answers``: the driver's answers (frames with a ``reason``) after the start are held
      back until this many pushes passed them;
    - ``after_first``: frames sent right after the first frame the driver sends after the start
      (a sample of another acquisition its pusher took before the driver took ours);
    - ``drop_marker``: text that is not JSON after the start does not go on (no answer comes).

    ``starts``: the numbers (1-based, over all connections) of the starts shaped.
    """

    def __init__(
        self,
        upstream: str,
        *,
        starts: Tuple[int, ...] = (1,),
        before_start: Tuple[str, ...] = (),
        hold_answers: int = 0,
        after_first: Tuple[str, ...] = (),
        drop_marker: bool = False,
    ) -> None:
        self.upstream = upstream
        self.starts = starts
        self.before_start, self.hold_answers, self.after_first, self.drop_marker = before_start, hold_answers, after_first, drop_marker
        self.started = 0
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"

    def __enter__(self) -> "DriverRelay":
        from websockets.sync.server import serve

        self._server = serve(self._relay, "127.0.0.1", 0, compression=None, ping_interval=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5)

    def _relay(self, client: Any) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        send_lock = threading.Lock()
        shaping: Dict[str, Any] = {"hold": 0, "held": [], "first": False}

        def to_client(frame: str) -> None:
            with send_lock:
                client.send(frame)

        def downstream(upstream: Any) -> None:
            try:
                for frame in upstream:
                    with self._lock:
                        inject: List[str] = []
                        if shaping["first"]:
                            shaping["first"], inject = False, list(self.after_first)
                        if shaping["hold"] and '"reason"' in frame:
                            shaping["held"].append(frame)
                            continue
                        if shaping["hold"]:
                            shaping["hold"] -= 1
                            if not shaping["hold"]:
                                inject, shaping["held"] = inject + shaping["held"], []
                    to_client(frame)
                    for extra in inject:
                        to_client(extra)
            except ConnectionClosed:
                pass
            finally:
                client.close()

        with connect(self.upstream, compression=None, ping_interval=None) as upstream:
            threading.Thread(target=downstream, args=(upstream,), daemon=True).start()
            try:
                for message in client:
                    try:
                        start = json.loads(message).get("command") == "start"
                    except (ValueError, AttributeError):
                        if self.drop_marker and self.started in self.starts:
                            continue
                        start = False
                    if start:
                        with self._lock:
                            self.started += 1
                            shaped = self.started in self.starts
                            if shaped:
                                shaping.update(hold=self.hold_answers, held=[], first=bool(self.after_first))
                        if shaped:
                            for frame in self.before_start:
                                to_client(frame)
                    upstream.send(message)
            except ConnectionClosed:
                pass
