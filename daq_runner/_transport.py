"""The HTTP transport of the client: a whole reply within a deadline, and a stop that ends a request.

urllib3 (and so ``requests``) has no deadline for a whole reply: its read timeout bounds
each socket read, so a DAQ that sends one byte every 2 s holds a caller with a 5 s
timeout for ever (urllib3's own ``Timeout`` documentation says so: "if a server streams
one byte every fifteen seconds, a timeout of 20 seconds will not trigger"). Its ``total``
timeout is measured between reads too. This module adds the deadline once, under the
``requests`` API, by giving urllib3's connection pools a connection class whose socket
is wrapped in :class:`_BoundedSocket`:

- every socket read (``recv_into``/``recv``, the TLS ones included: the wrapper sits
  on the ``SSLSocket``) blocks at most for the earliest of the read timeout urllib3 set,
  the time left of the bound in force (:func:`daq_runner._deadline.current`) and, when
  the bound has a cancel event, :data:`~daq_runner._deadline.SLICE_S`; between slices it
  looks at the deadline and the cancel event again. A read timeout keeps its meaning
  (no byte for that long); the bound ends the reply however the bytes trickle in;
- sends are sliced the same way; the TCP connect is made non-blocking and waited for in
  slices too (DNS resolution and the TLS handshake are bounded by the connect timeout
  and the bound, but do not look at the cancel event);
- the deadline passing raises ``TimeoutError`` inside urllib3 (which turns it into its
  usual timeout errors); the cancel event raises :class:`~daq_runner._deadline.Interrupted`,
  which goes through urllib3 and ``requests`` untouched. Either way urllib3 closes that
  connection instead of returning it to the pool.

:class:`BoundedAdapter` mounts these pools on a ``requests.Session``. Its ``send`` makes
``connect timeout + read timeout`` the bound of the whole exchange (headers and body,
which it reads inside the bound unless the caller streams), on top of any outer bound,
refuses bodies over :data:`MAX_REPLY_BYTES`, and never sends a loopback DAQ through a
proxy from the environment. Keep-alive is kept: the wrapper stays with its pooled
connection, and urllib3's check for a dropped connection (``wait_for_read`` on the
socket's ``fileno``) works through it. The cost is one Python call and a clock read per
socket read: nothing next to a ~1 ms round trip.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import socket
import sys
import time
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.wait import wait_for_write

from . import _deadline

try:
    from urllib3.exceptions import NameResolutionError
except ImportError:  # urllib3 1.26 reports a failed name lookup as a NewConnectionError
    NameResolutionError = None  # type: ignore[assignment,misc]

__all__ = [
    "BoundedAdapter",
    "ReplyTooLarge",
    "MAX_REPLY_BYTES",
    "new_session",
    "bind_session",
    "is_loopback",
    "proxy_for",
    "request_limit",
]

# The largest reply body read (a DAQ reply is a few KiB; logs of many acquisitions a few MiB).
MAX_REPLY_BYTES = 64 * 1024 * 1024
_CHUNK = 64 * 1024
_INF = math.inf


class ReplyTooLarge(requests.RequestException):
    """A reply body larger than :data:`MAX_REPLY_BYTES` (the rest is not read)."""


def _deadline_passed() -> TimeoutError:
    return TimeoutError("timed out (the time allowed for the whole request ran out)")


class _BoundedSocket:
    """A socket (plain or TLS) whose reads and sends obey the bound in force.

    ``settimeout`` only records urllib3's per-operation timeout; each blocking call then
    sets the real socket's timeout to a slice (see the module docstring). Everything else
    is the wrapped socket's.
    """

    __slots__ = ("_sock", "_timeout", "_applied")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._timeout: Optional[float] = sock.gettimeout()
        self._applied: Optional[float] = self._timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def __repr__(self) -> str:
        return f"<bounded {self._sock!r}>"

    # -- what urllib3 and http.client use ------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, value: Optional[float]) -> None:
        self._timeout = value

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def recv_into(self, buffer: Any, *args: Any) -> int:
        return self._call(self._sock.recv_into, buffer, *args)

    def recv(self, *args: Any) -> bytes:
        return self._call(self._sock.recv, *args)

    def send(self, data: Any, *args: Any) -> int:
        return self._call(self._sock.send, data, *args)

    def sendall(self, data: Any, *args: Any) -> None:
        view = memoryview(data).cast("B")
        while view:
            sent = self._call(self._sock.send, view, *args)
            view = view[sent:]

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        # The standard library's makefile, built on this object so that http.client's
        # reads come through recv_into above (socket.SocketIO calls self._sock.recv_into).
        return socket.socket.makefile(self, *args, **kwargs)  # type: ignore[arg-type]

    @property
    def _io_refs(self) -> int:
        return self._refs_owner()._io_refs

    @_io_refs.setter
    def _io_refs(self, value: int) -> None:
        self._refs_owner()._io_refs = value

    def _refs_owner(self) -> Any:
        # A TLS-in-TLS transport (urllib3's SSLTransport) counts on the socket beneath it.
        sock = self._sock
        return sock if hasattr(sock, "_io_refs") else sock.socket

    def _decref_socketios(self) -> None:
        self._sock._decref_socketios()

    # -- the bound -----------------------------------------------------------------------

    def _call(self, operation: Any, *args: Any) -> Any:
        nominal = self._timeout
        if nominal == 0.0:  # non-blocking use: nothing to bound
            self._apply(0.0)
            return operation(*args)
        bound = _deadline.current()
        if bound.at == _INF and bound.cancel is None:
            self._apply(nominal)  # no bound in force: exactly urllib3's behaviour
            return operation(*args)
        now = time.monotonic()
        own_end = now + nominal if nominal is not None else _INF
        while True:
            bound.check()  # a stop request: Interrupted
            # Looked up at every slice: a bound may be shortened meanwhile (a second stop request).
            end = bound.at
            give_up = min(end, own_end)
            left = give_up - now
            if left <= 0:
                raise _deadline_passed() if give_up >= end else TimeoutError("timed out")
            self._apply(min(left, _deadline.SLICE_S))
            try:
                return operation(*args)
            except TimeoutError:
                now = time.monotonic()  # a slice ended: look at the deadline and the cancel event

    def _apply(self, value: Optional[float]) -> None:
        if value != self._applied:
            self._sock.settimeout(value)
            self._applied = value


def _connect(address: Tuple[str, int], timeout: Any, source_address: Any, socket_options: Any) -> socket.socket:
    """urllib3's ``create_connection``, with the TCP connect waited for in bounded slices.

    The socket connects non-blocking; the wait for it to become writable lasts at most
    the connect timeout and the time left of the bound, and looks at the cancel event
    every :data:`~daq_runner._deadline.SLICE_S`.
    """
    host, port = address
    if host.startswith("["):
        host = host.strip("[]")
    bound = _deadline.current()
    bound.check()
    limit = timeout if isinstance(timeout, (int, float)) else None
    own_end = time.monotonic() + limit if limit is not None else _INF
    give_up = min(bound.at, own_end)
    error: Optional[BaseException] = None
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM):
        sock = None
        try:
            sock = socket.socket(family, kind, proto)
            for option in socket_options or ():
                sock.setsockopt(*option)
            if source_address:
                sock.bind(source_address)
            sock.setblocking(False)
            code = sock.connect_ex(sockaddr)
            while code in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EINTR):
                bound.check()
                give_up = min(bound.at, own_end)  # the bound may have been shortened meanwhile
                left = give_up - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                if wait_for_write(sock, min(left, _deadline.SLICE_S)):
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code not in (0, errno.EISCONN):
                raise OSError(code, os.strerror(code))  # e.g. ConnectionRefusedError
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            # The TLS handshake that may follow takes this timeout for its whole duration.
            sock.settimeout(limit if remaining == _INF else remaining)
            return sock
        except OSError as exc:
            error = exc
            if sock is not None:
                sock.close()
            if isinstance(exc, TimeoutError) and time.monotonic() >= give_up:
                break
        except BaseException:
            if sock is not None:
                sock.close()
            raise
    if error is not None:
        raise error
    raise OSError("getaddrinfo returns an empty list")


class _BoundedMixin:
    """Connection behaviour shared by the HTTP and HTTPS connections below."""

    def _new_conn(self) -> socket.socket:
        # urllib3's HTTPConnection._new_conn, with _connect instead of create_connection.
        try:
            sock = _connect((self._dns_host, self.port), self.timeout, self.source_address, self.socket_options)  # type: ignore[attr-defined]
        except socket.gaierror as exc:
            if NameResolutionError is None:
                raise NewConnectionError(self, f"Failed to resolve {self.host!r} ({exc})") from exc  # type: ignore[arg-type,attr-defined]
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[attr-defined,arg-type]
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"  # type: ignore[attr-defined]
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc  # type: ignore[arg-type]
        sys.audit("http.client.connect", self, self.host, self.port)  # type: ignore[attr-defined]
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        if self.sock is not None and not isinstance(self.sock, _BoundedSocket):  # type: ignore[attr-defined]
            self.sock = _BoundedSocket(self.sock)  # type: ignore[attr-defined]


class _BoundedHTTPConnection(_BoundedMixin, HTTPConnection):
    pass


class _BoundedHTTPSConnection(_BoundedMixin, HTTPSConnection):
    pass


class _BoundedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _BoundedHTTPConnection


class _BoundedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _BoundedHTTPSConnection


_POOLS = {"http": _BoundedHTTPConnectionPool, "https": _BoundedHTTPSConnectionPool}


def is_loopback(host: Optional[str]) -> bool:
    """True for ``localhost`` (and ``*.localhost``), 127.0.0.0/8, ``::1`` and IPv4-mapped loopback.

    127.0.0.0/8 in any spelling the resolver accepts too (``127.1``, ``0x7f.1``,
    ``2130706433``): the C library reads them with ``inet_aton``, so they connect to loopback.
    """
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:
            return socket.inet_aton(host)[0] == 127
        except (OSError, ValueError):
            return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _host_of(url: str) -> Optional[str]:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def request_limit(timeout: Any) -> Optional[float]:
    """The time a whole exchange may take under ``requests``' ``timeout``: connect + read."""
    if timeout is None:
        return None
    if isinstance(timeout, tuple):
        parts = [t for t in timeout]
    else:
        connect, read = getattr(timeout, "connect_timeout", timeout), getattr(timeout, "read_timeout", timeout)
        parts = [connect, read]
    if any(not isinstance(p, (int, float)) for p in parts):
        return None
    return float(sum(parts))


class BoundedAdapter(HTTPAdapter):
    """A ``requests`` transport adapter whose requests end by their deadline or on a stop.

    Each ``send`` is bounded by ``connect + read`` timeout (and by the bound in force),
    reads a non-streamed body inside that bound (at most :data:`MAX_REPLY_BYTES`), and
    sends requests to loopback hosts directly, whatever proxy the environment names.
    urllib3 retries are off (``max_retries=0``): retrying is the caller's decision.
    """

    def __init__(self, pool_connections: int = 2, pool_maxsize: int = 4) -> None:
        super().__init__(pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            # The connection to an HTTP(S) proxy is bounded the same way.
            manager.pool_classes_by_scheme = _POOLS
        return manager

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> requests.Response:
        if is_loopback(_host_of(request.url or "")):
            proxies = {}
        with _deadline.bounded(_deadline.Deadline(request_limit(timeout))):
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
            if not stream:
                _read_body(response)
        return response


def _read_body(response: requests.Response) -> None:
    """Read the whole body now (inside the bound), at most :data:`MAX_REPLY_BYTES`."""
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise ReplyTooLarge(f"reply body larger than {MAX_REPLY_BYTES // (1024 * 1024)} MiB", response=response)
            chunks.append(chunk)
    except BaseException:
        response.close()
        raise
    # What Response.content does, so that requests' own `r.content` finds the body read.
    response._content = b"".join(chunks)  # noqa: SLF001
    response._content_consumed = True  # noqa: SLF001


class _Session(requests.Session):
    """A ``requests.Session`` that reads the environment once per DAQ host, not per request.

    ``requests`` looks at every proxy variable (``*_proxy``, ``NO_PROXY``) and the CA bundle
    variables on every request, which scans the whole environment twice: about a tenth of
    a millisecond, an eighth of a status round trip to a DAQ on the same machine. Here
    the result for one origin and one set of arguments is kept (as ``httpx`` reads the
    environment once per client): variables changed after the session's first request to
    a host are not seen by that session.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: Dict[Tuple[Any, ...], Dict[str, Any]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Dict[str, Any]:
        try:
            parts = urlsplit(url)
            key = (
                parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), stream, verify, _frozen(cert),
                self.trust_env, tuple(sorted(self.proxies.items())), self.stream, self.verify, _frozen(self.cert),
            )
            hash(key)
        except (TypeError, ValueError, AttributeError):  # an unusual argument: no caching
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings = self._environment.get(key)
        if settings is None:
            if len(self._environment) >= 16:
                self._environment.clear()
            settings = self._environment[key] = super().merge_environment_settings(url, dict(proxies or {}), stream, verify, cert)
        return {**settings, "proxies": dict(settings["proxies"])}


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def new_session() -> requests.Session:
    """A ``requests.Session`` with :class:`BoundedAdapter` on ``http://`` and ``https://``
    that reads the environment once per DAQ host (see :class:`_Session`)."""
    return bind_session(_Session())


def bind_session(session: requests.Session) -> requests.Session:
    """Mount :class:`BoundedAdapter` on ``session`` unless it already has it; returns ``session``."""
    for prefix in ("http://", "https://"):
        if not isinstance(session.adapters.get(prefix), BoundedAdapter):
            session.mount(prefix, BoundedAdapter())
    return session


def proxy_for(session: requests.Session, url: str) -> Optional[str]:
    """The proxy a request to ``url`` through ``session`` goes through, if any (loopback: never)."""
    if is_loopback(_host_of(url)):
        return None
    try:
        settings = session.merge_environment_settings(url, {}, None, None, None)
        return select_proxy(url, settings.get("proxies") or {})
    except Exception:  # naming a proxy in a message must not fail the message
        return None
