"""Redis connections as the runner and the simulator need them: fail fast, never retry hidden."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["connect", "redact_url", "decode_entries", "last_id"]


def connect(url: str, socket_timeout: float = 2.0) -> redis.Redis:
    """A client for ``url`` that fails at once when Redis is down (redis-py retries 3x by default)."""
    return redis.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def redact_url(url: Optional[str]) -> Optional[str]:
    """``url`` with any user name and password replaced by ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def decode_entries(entries: List[Tuple[bytes, Dict[bytes, bytes]]]) -> List[Tuple[str, Any]]:
    """Stream entries ``(id, {b'json': ...})`` as ``(id, object)``; entries without JSON are skipped."""
    out = []
    for entry_id, fields in entries:
        raw = fields.get(b"json")
        if raw is None:
            continue
        try:
            out.append((entry_id.decode(), json.loads(raw)))
        except ValueError:
            continue
    return out


def last_id(client: redis.Redis, stream: str) -> str:
    """Id of the newest entry of ``stream`` (``0-0`` when empty): read from there, miss nothing."""
    newest = client.xrevrange(stream, count=1)
    return newest[0][0].decode() if newest else "0-0"
