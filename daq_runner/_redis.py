"""Redis connections as the runner and the simulator need them: fail fast, never retry hidden.

The code reads stream entries as RESP2 lists of ``(bytes id, {b"json": bytes})``. A Redis
URL may ask for something else in its query string (``?protocol=3`` turns replies into
maps, ``?decode_responses=True`` into ``str``; redis-py lets the URL win over keyword
arguments), so :func:`connect` removes those parameters and sets them itself.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, quote as percent_encode, urlencode, urlsplit, urlunsplit

from typing import TYPE_CHECKING

from . import protocol
from ._text import check_url_shape, quote, redact_url

if TYPE_CHECKING:  # pragma: no cover
    import redis

__all__ = [
    "connect",
    "check_redis_url",
    "with_password",
    "default_redis_url",
    "redact_url",
    "decode_entries",
    "last_id",
    "newest_id",
    "as_text",
    "FORCED_URL_OPTIONS",
    "REDIS_SCHEMES",
]

REDIS_SCHEMES = ("redis", "rediss", "unix")

# Query parameters of a Redis URL that connect() overrides: the reply format the code
# reads and the time bounds it relies on.
FORCED_URL_OPTIONS = ("protocol", "decode_responses", "encoding", "encoding_errors", "socket_timeout", "socket_connect_timeout")


def _without_forced_options(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in FORCED_URL_OPTIONS]
    # Not urlunsplit: it drops the "//" of a unix:///path URL, which redis-py then refuses.
    query = f"?{urlencode(kept)}" if kept else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}{fragment}"


def connect(url: str, socket_timeout: float = 2.0) -> redis.Redis:
    """A client for ``url`` that fails at once when Redis is down (redis-py retries 3x by default).

    Replies are RESP2 and bytes whatever the URL's query string says (``protocol``,
    ``decode_responses``, ``encoding``, ``encoding_errors`` are overridden, and so are
    ``socket_timeout`` and ``socket_connect_timeout``: every wait has a bound).

    Raises:
        ValueError: ``url`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL, or has
            an invalid value in its query string.
    """
    if not isinstance(url, str):
        raise ValueError(f"not a Redis URL: {redact_url(url)!r}")
    # Imported here: redis-py (about 9 MB and 0.1 s) loads only when a Redis is used, not
    # when a batch is validated or a DAQ's URL resolved.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        _without_forced_options(url),
        protocol=2,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        **_no_client_setinfo(),
    )


def check_redis_url(url: str, what: str = "Redis URL") -> str:
    """``url`` when a client can be made from it (checked without connecting).

    Raises:
        ValueError: one line starting with ``what``: not a ``redis://``, ``rediss://`` or
            ``unix://`` URL with a host, a user name or password that would be misread, a bad
            port or query option. Credentials are never shown.
    """
    check_url_shape(url, REDIS_SCHEMES, what)
    try:
        client = connect(url)
        try:
            client.connection_pool.make_connection().disconnect()
        finally:
            client.close()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} {redact_url(url)!r} cannot be used: {quote(exc)}") from None
    return url


def with_password(url: Optional[str], password: Optional[str]) -> Optional[str]:
    """``url`` with ``password`` (``$STD_DAQ_REDIS_PASSWORD``) as its password, unless it has one,
    so that a password never needs to be on a command line (where ``ps`` shows it)."""
    if not url or not password:
        return url
    parts = urlsplit(url)
    if parts.password is not None:
        return url
    if parts.scheme == "unix":
        return url + ("&" if parts.query else "?") + "password=" + percent_encode(password, safe="")
    user = percent_encode(parts.username or "", safe="")
    netloc = f"{user}:{percent_encode(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@functools.lru_cache(maxsize=1)
def _no_client_setinfo() -> Dict[str, Any]:
    """What turns off redis-py's ``CLIENT SETINFO`` on connect (redis-py >= 5 sends two).

    They are two round trips per connection and, on recent versions, a look-up of
    redis-py's own version in the installed packages (a few ms at start-up); the runner
    does not need the server to know its library. Newer versions take ``driver_info=None``
    (and warn about ``lib_name``), 5.x to 7.x ``lib_name=None, lib_version=None``, older
    ones send nothing.
    """
    import inspect

    from redis import connection

    base = getattr(connection, "AbstractConnection", connection.Connection)
    try:
        parameters = inspect.signature(base.__init__).parameters
    except (TypeError, ValueError):
        return {}
    if "driver_info" in parameters:
        return {"driver_info": None}
    if "lib_name" in parameters:
        return {"lib_name": None, "lib_version": None}
    return {}


def default_redis_url(rest_url: str, port: int = protocol.DEFAULT_REDIS_PORT) -> str:
    """The DAQ's Redis by default: the REST URL's host on port 6379, database 0.

    IPv6 hosts keep their brackets (``http://[::1]:5000`` -> ``redis://[::1]:6379/0``);
    credentials of the REST URL are not carried over.

    Raises:
        ValueError: ``rest_url`` has no host.
    """
    try:
        host = urlsplit(rest_url).hostname
    except (ValueError, TypeError, AttributeError):
        host = None
    if not host:
        raise ValueError(f"no host in URL {redact_url(str(rest_url))!r}")
    if ":" in host:
        host = f"[{host}]"
    return f"redis://{host}:{int(port)}/0"


def as_text(value: Any) -> str:
    """A stream id or field name as text (Redis replies are bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def decode_entries(entries: List[Tuple[Any, Dict[Any, Any]]]) -> List[Tuple[str, Any]]:
    """Stream entries ``(id, {b'json': ...})`` as ``(id, object)``; entries without JSON are skipped.

    Ids and field names may be bytes or str. The objects are not checked here: use
    :func:`daq_runner.protocol.check_stream_entry` for the stream they come from.
    """
    out = []
    for entry_id, fields in entries or ():
        if not isinstance(fields, dict):
            continue
        raw = fields.get(b"json", fields.get("json"))
        if raw is None:
            continue
        try:
            out.append((as_text(entry_id), json.loads(raw)))
        except (ValueError, RecursionError):
            continue
    return out


def last_id(client: redis.Redis, stream: str) -> str:
    """Id of the newest entry of ``stream`` (``0-0`` when empty): read from there, miss nothing."""
    return newest_id(client.xrevrange(stream, count=1))


def newest_id(entries: List[Tuple[Any, Any]]) -> str:
    """Id of the first of ``entries`` (an ``XREVRANGE ... COUNT 1`` reply), ``0-0`` when there is none."""
    return as_text(entries[0][0]) if entries else "0-0"
