"""``StdDaqClient``: a drop-in replacement for ``std_daq_client.StdDaqClient`` 1.3.5.

Same methods, parameters, return values and requests on the wire, plus what the
original lacks: a deadline on every request (for the whole reply, not only per socket
read), read timeouts that fit what the real server does, one connection-reusing
session, retries with exponential backoff and jitter on transport failures, replies
checked for shape, errors that say what happened (one line, no credentials), logs always
handed back as a list, and :meth:`StdDaqClient.update_config`, which changes a
configuration in a way every deployed server accepts and waits for its deployment.

Time bounds: every request ends within its own limit (connect timeout + read timeout)
and before the bound in force (:func:`daq_runner._deadline.current`, set by a caller with
``with bounded(Deadline(...)):``); a set cancel event of that bound ends a request in
flight within :data:`daq_runner._deadline.SLICE_S` with
:class:`~daq_runner._deadline.Interrupted`. See :mod:`daq_runner._transport`.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import operator
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import requests
import tenacity
import urllib3

from . import _deadline, _transport, protocol
from ._limits import MAX_SECONDS
from ._restart import RestartSigns, detector_rate, wait_for_signs
from ._text import clauses, quote, redact_url, userinfo_problem
from .exceptions import (
    DaqError,
    DaqHTTPError,
    DaqNotConfigured,
    DaqProtocolError,
    DaqRedisUnavailable,
    DaqTimeoutError,
    DaqTransportError,
    DeadlineExceeded,
    DeploymentError,
    StdDaqAdminException,
    WriteDeadlineExceeded,
    WriteOutcomeUnknown,
    ConfigOutcomeUnknown,
    OutcomeUnknown,
    WriterNeedsRestart,
)

__all__ = [
    "StdDaqClient",
    "ConfigUpdate",
    "DEFAULT_TIMEOUT",
    "DEFAULT_RETRIES",
    "SYNC_WRITE_TIMEOUT",
    "WRITE_TIMEOUT",
    "DEPLOY_TIMEOUT",
    "check_url",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
# The server blocks a sync write for up to 60 s before it answers; leave it room.
SYNC_WRITE_TIMEOUT = 75.0
# rest_v2 blocks write_async and stop for up to ~5 s (its driver polls the writer 50 x
# 0.1 s) and then answers "... Writer needs to be restarted.": a read timeout of 5 s would
# take that answer for a lost connection.
WRITE_TIMEOUT = 15.0
# Deployment takes milliseconds once the servers report; UNKNOWN ("Waiting for servers...") first.
DEPLOY_TIMEOUT = 30.0
_DEPLOY_POLL_S = 0.1
# Without an earlier deployment to know the servers by, SUCCESS must hold this long (seconds).
_DEPLOY_STEADY_S = 0.5
_RETRYABLE_STATUS = (502, 503, 504)
# Requests that change the DAQ and so are never re-sent once they may have reached it:
# the exception a lost reply raises, and what the message adds.
_NOT_RESENT = {
    protocol.WRITER_WRITE_ASYNC: (WriteOutcomeUnknown, "the write may have started"),
    protocol.WRITER_WRITE_SYNC: (WriteOutcomeUnknown, "the write may have started"),
    protocol.DAQ_CONFIG_SET: (ConfigOutcomeUnknown, "the config may have been stored"),
}
_FINAL_DEPLOYMENT = (protocol.DeploymentStatus.SUCCESS.value, protocol.DeploymentStatus.ERROR.value)

# What a request through requests/urllib3 can raise besides our own exceptions.
_TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)

RetryHook = Callable[[str, int, BaseException, float], None]
DeploymentHook = Callable[[protocol.Deployment], None]


def check_url(url: Any) -> str:
    """``url`` if it is an ``http://`` or ``https://`` URL with a host (and a valid port).

    Raises:
        ValueError: "not an http(s) URL: ..." (credentials in the message are ``***``).
    """
    if not isinstance(url, str):
        raise ValueError(f"not an http(s) URL: {quote(redact_url(url))}")
    if not url.strip():
        raise ValueError("the DAQ URL is empty (an http(s) URL is needed)")
    problem = userinfo_problem(url.strip())
    if problem:  # never echoed: part of a password would show
        raise ValueError(f"not a usable URL: {problem}")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"not a valid URL: {quote(redact_url(url))}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {quote(redact_url(url))}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {quote(redact_url(url))}")
    if parts.query or parts.fragment or url.strip().endswith(("?", "#")):
        # The endpoints are appended to it: /writer/status would land after the query.
        raise ValueError(f"a DAQ base URL has no query or fragment: {quote(redact_url(url))}")
    return url.strip()


# The longest time limit (a week): beyond it the socket layer overflows; nobody waits longer.
MAX_TIMEOUT_S = MAX_SECONDS


def _seconds(name: str, value: Any) -> float:
    """A time limit: a finite number > 0."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TIMEOUT_S:
        raise ValueError(f"{name} must be a number of seconds > 0 and at most {MAX_TIMEOUT_S:g}, not {value!r}")
    return seconds


def _in_chain(exc: BaseException, names: Tuple[str, ...]) -> bool:
    """True when ``exc`` or one of its explicit causes is of a class named in ``names``.

    Explicit causes are ``__cause__``, urllib3's ``reason`` and requests' ``args[0]``; not
    ``__context__``, which may be any exception being handled at the time: deciding that
    a write never reached the DAQ (so that it may be sent again) needs proof.
    """
    seen = set()
    stack = [exc]
    while stack:
        cause = stack.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if type(cause).__name__ in names:
            return True
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
        if cause.args and isinstance(cause.args[0], BaseException):
            stack.append(cause.args[0])
        if cause.__cause__ is not None:
            stack.append(cause.__cause__)
    return False


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of a transport failure, for a message: "[Errno 111] Connection refused".

    requests and urllib3 wrap it in several layers ("HTTPConnectionPool(...): Max retries
    exceeded ... (Caused by NewConnectionError(...))") that say nothing more.
    """
    seen, cause = set(), exc
    while id(cause) not in seen:
        seen.add(id(cause))
        reason = getattr(cause, "reason", None)
        first = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        inner = cause.__cause__ or (reason if isinstance(reason, BaseException) else None) or first or cause.__context__
        if inner is None:
            break
        cause = inner
    text = str(cause) or type(cause).__name__
    if type(cause).__name__ == "gaierror":
        text = f"cannot resolve the host name: {text}"
    return text


def _never_reached_server(exc: BaseException) -> bool:
    """True when the request provably never reached the server (connect phase failed)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    return _in_chain(exc, ("NewConnectionError", "ConnectionRefusedError", "NameResolutionError", "ConnectTimeoutError"))


def _tls_mismatch(exc: BaseException) -> bool:
    """A TLS failure that no retry mends: a certificate that does not verify, or a server
    that does not speak TLS at all (``https://`` given for a plain-HTTP DAQ)."""
    if _in_chain(exc, ("SSLCertVerificationError",)):
        return True
    return isinstance(exc, requests.exceptions.SSLError) and "WRONG_VERSION_NUMBER" in _root_cause(exc).upper()


def _is_timeout(exc: BaseException) -> bool:
    # requests reports a read timeout during the body as a ConnectionError; look inside.
    return isinstance(exc, requests.Timeout) or _in_chain(exc, ("ReadTimeoutError", "ConnectTimeoutError", "TimeoutError"))


@dataclass(frozen=True)
class ConfigUpdate:
    """What :meth:`StdDaqClient.update_config` applied.

    Attributes:
        config: the whole configuration in force afterwards (``GET /daq/config``).
        config_id: its id (the ``daq:config`` stream id).
        deployment: the final deployment status (``status`` ``SUCCESS``).
        restart: with ``wait_restart``, what was seen of the services' restart, in seconds
            after the deployment's SUCCESS: ``{"seen": bool, "sign": "zeros"|"silence"|None,
            "down_after_s", "back_after_s"}``; else ``None``.
    """

    config: protocol.DaqConfig
    config_id: Optional[str]
    deployment: protocol.Deployment
    restart: Optional[dict] = None

    def to_dict(self) -> dict:
        return asdict(self)


class _StopAtBound:
    """tenacity stop condition: no retry whose pause would reach the bound in force."""

    __slots__ = ("bound", "hit")

    def __init__(self, bound: _deadline.Deadline) -> None:
        self.bound = bound
        self.hit = False

    def __call__(self, state: tenacity.RetryCallState) -> bool:
        if state.upcoming_sleep >= self.bound.remaining():
            self.hit = True
        return self.hit


def _pause(seconds: float) -> None:
    # Sleep between retries: never past the bound in force, and a stop request ends it.
    _deadline.current().sleep(seconds)


class StdDaqClient:
    """REST client of the Standard DAQ admin interface.

    Args:
        url_base: base URL of the REST server, usually on port 5000 (``http://`` or
            ``https://``; credentials in it never appear in messages).
        timeout: connect timeout of every request, and read timeout of the reads
            (``get_*``, ``set_config``), in seconds.
        retries: extra attempts after a transport failure (connection refused or reset,
            timeout, HTTP 502/503/504); ``0`` means one attempt.
        retry_deadline: give up rather than retry past this many seconds since the first
            attempt (``None``: bounded by ``retries`` only).
        sync_timeout: read timeout of ``start_writer_sync``, which blocks server-side
            (the real server answers after at most 60 s).
        write_timeout: read timeout of ``start_writer_async`` and ``stop_writer``: the
            real server blocks these for up to ~5 s before it answers, also to refuse
            with "Writer needs to be restarted." (default 15 s).
        session: a ``requests.Session`` to use instead of the client's own; the client
            mounts its transport adapter (:class:`daq_runner._transport.BoundedAdapter`)
            on its ``http://`` and ``https://`` prefixes, which the deadlines need.
        on_retry: called as ``on_retry(url, attempt, error, sleep_s)`` before each retry
            (``url`` without credentials).
        sleep: how to wait between retries (default: the bound in force's ``sleep``,
            which never sleeps past the bound and raises ``Interrupted`` on a stop).

    Every request has a whole-reply deadline of connect timeout + read timeout, and ends
    before the caller's bound (``daq_runner._deadline.bounded``); retries are not made when
    their pause would reach that bound. When the caller's bound ends a request,
    :class:`~daq_runner.exceptions.DeadlineExceeded` is raised; when the client's own
    budget (``retries``, ``retry_deadline``) runs out, the last transport error.

    Write starts are never sent twice blindly: a write whose reply was lost raises
    :class:`~daq_runner.exceptions.WriteOutcomeUnknown` (see :meth:`start_writer_async`).

    Raises:
        ValueError: ``url_base`` is not an http(s) URL, a timeout or ``retry_deadline``
            is not a finite number > 0, or ``retries`` is not a whole number >= 0.
    """

    def __init__(
        self,
        url_base: str = "http://localhost:5000",
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        *,
        retry_deadline: Optional[float] = None,
        sync_timeout: float = SYNC_WRITE_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        session: Optional[requests.Session] = None,
        on_retry: Optional[RetryHook] = None,
        sleep: Optional[Callable[[float], None]] = None,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        self.url_base = check_url(url_base).rstrip("/")
        self.timeout = _seconds("timeout", timeout)
        self.retries = retries
        self.retry_deadline = None if retry_deadline is None else _seconds("retry_deadline", retry_deadline)
        self.sync_timeout = _seconds("sync_timeout", sync_timeout)
        self.write_timeout = _seconds("write_timeout", write_timeout)
        self.on_retry = on_retry
        self.sleep = sleep or _pause
        self.session = _transport.new_session() if session is None else _transport.bind_session(session)
        self._safe_base = redact_url(self.url_base)

    def __repr__(self) -> str:
        return f"StdDaqClient(url_base={self._safe_base!r})"

    def close(self) -> None:
        """Close the connections of the client's session."""
        self.session.close()

    def __enter__(self) -> "StdDaqClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------

    def read_timeout(self, endpoint: protocol.Endpoint) -> float:
        """The read timeout of ``endpoint``: ``sync_timeout``, ``write_timeout`` or ``timeout``."""
        if endpoint == protocol.WRITER_WRITE_SYNC:
            return self.sync_timeout
        if endpoint in (protocol.WRITER_WRITE_ASYNC, protocol.WRITER_STOP):
            return self.write_timeout
        return self.timeout

    def _via(self, url: str) -> str:
        proxy = _transport.proxy_for(self.session, url)
        return f" (via proxy {redact_url(proxy)})" if proxy else ""

    def _send_once(
        self,
        endpoint: protocol.Endpoint,
        url: str,
        body: Any,
        read_timeout: float,
        outer: _deadline.Deadline,
        budget_at: float = math.inf,
    ) -> Tuple[dict, Any]:
        safe_url = redact_url(url)
        source = f"{endpoint.method} {safe_url}"
        outer.check()
        if outer.expired:
            raise DeadlineExceeded(f"{source} not sent: the time allowed ran out", url=safe_url)
        # The request's own limit, and no attempt outlives the retry budget (retry_deadline).
        own = _deadline.Deadline(at=min(time.monotonic() + self.timeout + read_timeout, budget_at))
        try:
            with _deadline.bounded(own):
                reply = self.session.request(
                    endpoint.method,
                    url,
                    json=body,
                    timeout=(self.timeout, read_timeout),
                    # A redirected POST would be re-sent (or turned into a GET): never follow it.
                    allow_redirects=endpoint.method == "GET",
                )
        except _transport.ReplyTooLarge as exc:
            raise DaqProtocolError(f"{source} -> {exc}", url=safe_url) from exc
        except requests.TooManyRedirects as exc:
            raise DaqHTTPError(f"{source} -> too many redirects", url=safe_url) from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema) as exc:
            raise DaqError(f"{source}: invalid URL: {quote(exc)}", url=safe_url) from exc
        except requests.exceptions.ContentDecodingError as exc:
            raise DaqProtocolError(f"{source} -> a reply that cannot be decoded: {quote(exc)}", url=safe_url) from exc
        except requests.exceptions.SSLError as exc:
            if _tls_mismatch(exc):
                # Not an outage: retrying for the whole budget would only delay the same answer.
                raise DaqProtocolError(f"{source}: TLS failed: {quote(_root_cause(exc))}", url=safe_url) from exc
            raise self._transport_error(exc, endpoint, source, url, outer, own, read_timeout) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_error(exc, endpoint, source, url, outer, own, read_timeout) from exc
        return self._envelope(endpoint, reply, source, safe_url)

    def _transport_error(
        self,
        exc: BaseException,
        endpoint: protocol.Endpoint,
        source: str,
        url: str,
        outer: _deadline.Deadline,
        own: _deadline.Deadline,
        read_timeout: float,
    ) -> DaqError:
        safe_url = redact_url(url)
        reached = not _never_reached_server(exc)
        unknown = _NOT_RESENT.get(endpoint) if reached else None
        via = self._via(url)
        if outer.expired:
            what = f"{source}: no complete reply before the time allowed ran out{via}"
            if unknown is not None:
                what += f" ({unknown[1]})"
                if unknown[0] is WriteOutcomeUnknown:
                    return WriteDeadlineExceeded(what, url=safe_url)
            return DeadlineExceeded(what, url=safe_url)
        if own.expired:
            what = f"{source}: no complete reply within {min(self.timeout + read_timeout, self.retry_deadline or math.inf):g} s{via}"
            cls: type = DaqTimeoutError
        elif _is_timeout(exc):
            seconds = read_timeout if reached else self.timeout
            what = f"{source} timed out after {seconds:g} s{via}"
            cls = DaqTimeoutError
        else:
            what = f"{source} failed{via}: {quote(_root_cause(exc))}"
            cls = DaqTransportError
        if unknown is not None:
            return unknown[0](f"{what} ({unknown[1]})", url=safe_url)
        return cls(what, url=safe_url)

    def _envelope(self, endpoint: protocol.Endpoint, reply: requests.Response, source: str, safe_url: str) -> Tuple[dict, Any]:
        """The checked envelope and payload of a reply, or the error it means."""
        content = reply.content or b""
        status = reply.status_code
        if endpoint.method != "GET" and 300 <= status < 400:
            location = quote(redact_url(reply.headers.get("Location", "")))
            raise DaqHTTPError(
                f"{source} -> HTTP {status} redirect to {location or '(no Location)'}: not followed for a POST",
                url=safe_url,
                status_code=status,
                text=quote(content),
            )
        if status != 200:
            short = quote(content)
            # A gateway error may be the proxy's own: name the proxy the request went through.
            message = f"{source} -> HTTP {status}{self._via(reply.url or '')}: {short or quote(reply.reason)}"
            if status in _RETRYABLE_STATUS:
                # 503 means the request was not processed; a gateway error (502/504) may hide
                # a write that went through.
                if endpoint in _NOT_RESENT and status != 503:
                    raise _NOT_RESENT[endpoint][0](message, url=safe_url, status_code=status, text=short)
                raise DaqTransportError(message, url=safe_url, status_code=status, text=short)
            raise DaqHTTPError(message, url=safe_url, status_code=status, text=short)
        try:
            envelope = json.loads(content)
        except RecursionError as exc:
            raise DaqProtocolError(
                f"{source} -> HTTP 200 but the reply is nested more than {protocol.MAX_REPLY_DEPTH} levels deep",
                url=safe_url,
                status_code=200,
            ) from exc
        except ValueError as exc:
            raise DaqProtocolError(
                f"{source} -> HTTP 200 but the reply is not JSON: {quote(content)!r}",
                url=safe_url,
                status_code=200,
                text=quote(content),
            ) from exc
        if protocol.nesting_depth(envelope, protocol.MAX_REPLY_DEPTH) > protocol.MAX_REPLY_DEPTH:
            raise DaqProtocolError(
                f"{source} -> HTTP 200 but the reply is nested more than {protocol.MAX_REPLY_DEPTH} levels deep",
                url=safe_url,
                status_code=200,
            )
        if not isinstance(envelope, dict) or "status" not in envelope:
            what = "has no 'status'" if isinstance(envelope, dict) else f"is {protocol._json_kind(envelope)}, not the JSON envelope"
            raise DaqProtocolError(
                f"{source} -> HTTP 200 but the reply {what}: {quote(content)!r}",
                url=safe_url,
                status_code=200,
                text=quote(content),
            )
        if envelope["status"] != "ok":
            message = envelope.get("message")
            text = quote(message) if message not in (None, "") else f"DAQ answered status {quote(envelope['status'])!r}"
            if protocol.redis_unavailable(message):
                # Not a refusal: the server failed before doing anything. Ridden out as an outage.
                raise DaqRedisUnavailable(f"{source} -> the DAQ cannot reach its own Redis: {text}", url=safe_url, status_code=200, text=text)
            if isinstance(message, str) and protocol.MESSAGE_NEEDS_RESTART in message:
                raise WriterNeedsRestart(text, url=safe_url)
            raise StdDaqAdminException(text, url=safe_url)
        if endpoint.payload_key not in envelope:
            raise DaqProtocolError(
                f"{source} -> reply has no {endpoint.payload_key!r}: {quote(content)!r}",
                url=safe_url,
                status_code=200,
                text=quote(content),
            )
        try:
            payload = protocol.check_payload(endpoint, envelope, source)
        except DaqProtocolError as exc:
            exc.url, exc.status_code = safe_url, 200
            raise
        return envelope, payload

    def _before_sleep(self, safe_url: str, seen: List[BaseException]) -> Callable[[tenacity.RetryCallState], None]:
        def hook(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None:
                seen.append(exc)
            sleep = state.next_action.sleep if state.next_action else 0.0
            log.debug("retrying %s after attempt %d: %s (sleep %.2f s)", safe_url, state.attempt_number, exc, sleep)
            if self.on_retry is not None and exc is not None:
                self.on_retry(safe_url, state.attempt_number, exc, sleep)

        return hook

    def _exchange(self, endpoint: protocol.Endpoint, body: Any = None, read_timeout: Optional[float] = None, **params: Any) -> Tuple[dict, Any]:
        """One request with retries: the reply envelope and its checked payload."""
        url = endpoint.url(self.url_base, **params)
        if body is not None:
            try:
                # requests would report this as a failed request (a write: "may have started").
                json.dumps(body, allow_nan=False)
            except (TypeError, ValueError, RecursionError) as exc:
                raise ValueError(f"request body of {endpoint.method} {endpoint.path} is not JSON: {quote(exc)}") from None
        outer = _deadline.current()
        at_bound = _StopAtBound(outer)
        seen: List[BaseException] = []  # the errors of the attempts before the last
        stops: list = [tenacity.stop_after_attempt(self.retries + 1)]
        if self.retry_deadline is not None:
            # Give up instead of sleeping past the deadline: the budget is a promise to callers.
            stops.append(tenacity.stop_before_delay(self.retry_deadline))
        stops.append(at_bound)  # last: the client's own budget, when spent, wins
        retrying = tenacity.Retrying(
            stop=tenacity.stop_any(*stops),
            wait=tenacity.wait_exponential(multiplier=0.1, max=5.0) + tenacity.wait_random(0, 0.2),
            # OutcomeUnknown must never be re-sent; DeadlineExceeded is the caller's end.
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, DaqTransportError) and not isinstance(e, (OutcomeUnknown, DeadlineExceeded))
            ),
            before_sleep=self._before_sleep(redact_url(url), seen),
            sleep=self.sleep,
            reraise=True,
        )
        budget_at = time.monotonic() + self.retry_deadline if self.retry_deadline is not None else math.inf
        try:
            return retrying(self._send_once, endpoint, url, body, read_timeout or self.read_timeout(endpoint), outer, budget_at)
        except DaqTransportError as exc:
            if at_bound.hit and not isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(
                    clauses(exc, "not retried: the time allowed ends before the next attempt"), url=exc.url
                ) from exc
            if type(exc) is DaqTimeoutError and seen and str(seen[-1]) != str(exc):
                # The retry budget cut the last attempt short: what the DAQ said before is the news.
                raise DaqTimeoutError(clauses(exc, f"the attempt before: {seen[-1]}"), url=exc.url) from exc
            raise

    def request(self, endpoint: protocol.Endpoint, body: Any = None, *, read_timeout: Optional[float] = None, **params: Any) -> dict:
        """Send one request with retries and return the whole reply envelope (payload checked).

        ``read_timeout`` defaults to :meth:`read_timeout` of ``endpoint``.

        Raises:
            ValueError: ``body`` cannot be sent as JSON (NaN, Infinity, a set...): nothing sent.
            StdDaqAdminException: the DAQ refused (``status != "ok"``);
                :class:`WriterNeedsRestart` for "... Writer needs to be restarted.".
            DeadlineExceeded: the caller's bound ended the request.
            DaqError: any other failure (a ``RuntimeError``).
            Interrupted: the bound's cancel event was set.
        """
        return self._exchange(endpoint, body, read_timeout, **params)[0]

    def _payload(self, endpoint: protocol.Endpoint, body: Any = None, **params: Any) -> Any:
        return self._exchange(endpoint, body, None, **params)[1]

    # -- the nine methods of the original client --------------------------------------

    def get_status(self) -> protocol.WriterStatus:
        """Current writer status: ``{"state": "READY"|"WRITING"|"UNKNOWN", "acquisition": {...}|None}``."""
        return self._payload(protocol.WRITER_STATUS)

    def get_config(self) -> Optional[protocol.DaqConfig]:
        """Current DAQ configuration (``None`` before the first deployment)."""
        return self._payload(protocol.DAQ_CONFIG_GET)

    def set_config(self, daq_config: Mapping[str, Any]) -> Optional[protocol.DaqConfig]:
        """Send ``daq_config`` as it is (the original's request); returns the configuration now in force.

        Servers of mid-2023 merge a partial config into the current one; the last rest_v2
        version refuses partial configs ("int() argument must be a string, a bytes-like
        object or a real number, not 'NoneType'"). :meth:`update_config` works on both and
        waits for the deployment. The DAQ services restart; allow about 10 s for them to
        stabilise.

        Sent once: a config whose reply was lost (a read timeout, a reset connection, HTTP
        502/504) may have been stored, and every stored config restarts the DAQ's services,
        so it raises :class:`ConfigOutcomeUnknown` instead of sending it again. Only a
        request that provably never reached the DAQ (connection refused, HTTP 503) is retried.
        """
        return self._payload(protocol.DAQ_CONFIG_SET, daq_config)

    def get_logs(self, n_last_logs: int) -> List[protocol.AcquisitionRecord]:
        """The last ``n_last_logs`` acquisitions that produced a file, newest first.

        Always a list, whether the server sends a list or rest_v2's dict keyed by stream id.

        Raises:
            ValueError: before anything is sent, ``n_last_logs`` is not a whole number >= 1
                (the real server refuses 0 and answers a non-number with HTTP 422).
        """
        try:
            # "5" too: the original put the value in the URL as it was.
            n = int(n_last_logs) if isinstance(n_last_logs, str) and n_last_logs.strip().isdecimal() else operator.index(n_last_logs)
        except TypeError:
            n = None
        if isinstance(n_last_logs, bool) or n is None or n < 1:
            raise ValueError(f"n_last_logs must be a whole number >= 1, not {quote(repr(n_last_logs))}")
        return self._payload(protocol.DAQ_LOGS, n=n)

    def get_stats(self) -> Optional[protocol.DaqStats]:
        """Detector and writer throughput, aggregated each second (may be ``None``)."""
        return self._payload(protocol.DAQ_STATS)

    def get_deployment_status(self) -> protocol.Deployment:
        """Status of the last configuration deployment (``SUCCESS`` when all servers are done)."""
        return self._payload(protocol.DAQ_DEPLOYMENT)

    def start_writer_async(self, write_request: Mapping[str, Any]) -> protocol.WriterStatus:
        """Start an acquisition; returns the writer status once the writer is WRITING.

        ``write_request`` is ``{"output_file": <absolute path>, "n_images": N, "run_id": optional int}``.
        The real server answers within about 5 s; the read timeout is ``write_timeout``.

        A write start is retried only when it provably did not reach the DAQ (connection
        refused, HTTP 503). When it may have reached it (read timeout, connection reset,
        HTTP 502/504), :class:`WriteOutcomeUnknown` is raised instead of sending it again:
        set your own unique ``run_id`` and compare it with ``get_status()``'s
        ``acquisition.info.run_id`` to tell whether the acquisition started.

        Raises:
            WriterNeedsRestart: the writer did not reach WRITING within the server's ~5 s
                ("Cannot reach WRITING. Writer needs to be restarted."); it is UNKNOWN now.
        """
        return self._payload(protocol.WRITER_WRITE_ASYNC, write_request)

    def start_writer_sync(self, write_request: Mapping[str, Any]) -> protocol.WriterStatus:
        """Start an acquisition and return when it has ended (the server waits up to 60 s).

        Same request and retry rules as :meth:`start_writer_async`; the read timeout is
        ``sync_timeout``.
        """
        return self._payload(protocol.WRITER_WRITE_SYNC, write_request)

    def stop_writer(self) -> protocol.WriterStatus:
        """Stop the acquisition in progress; also resets a writer in ``UNKNOWN`` to ``READY``.

        The real server answers within about 5 s; the read timeout is ``write_timeout``.

        Raises:
            WriterNeedsRestart: "Cannot reach READY. Writer needs to be restarted."
        """
        return self._payload(protocol.WRITER_STOP, {})

    # -- beyond the original ------------------------------------------------------------

    def update_config(
        self,
        changes: Mapping[str, Any],
        *,
        timeout: float = DEPLOY_TIMEOUT,
        on_deployment: Optional[DeploymentHook] = None,
        wait_restart: bool = False,
    ) -> ConfigUpdate:
        """Change some configuration fields, wait for the deployment, check that it took.

        Reads the current config (``GET /daq/config``), applies ``changes`` to it and sends
        the WHOLE config (the last rest_v2 version refuses partial configs, mid-2023 servers
        merge them; the whole config works on both; fields not changed, ``module_positions``
        above all, go back exactly as read). Then it reads the new ``config_id`` (the
        POST reply has ``config_id: null`` on the real server), polls
        ``GET /daq/deployment`` every 0.1 s until that config's deployment is ``SUCCESS`` or
        ``ERROR`` (it is ``UNKNOWN`` "Waiting for servers..." first; ``RUNNING`` may never
        be seen), and reads the config again to check that it shows the changes.

        SUCCESS is not the end on a real rest_v2 DAQ: its services (writer, detector
        receivers) restart with the new config about a second later, while the writer
        status still says READY. A write sent before they are back is answered after 5 s
        with "Cannot reach WRITING. Writer needs to be restarted."; one that starts just
        before they go down is lost under it; one that ends before ran with the old config.
        ``wait_restart=True`` returns only once the services are back: it reads
        ``GET /daq/stats`` every 0.25 s from before the change (the detector's images per
        second drop to 0 while they are down and come back after) and gives up waiting
        when no sign can show (the detector sent no images before the change) or none
        showed within 5 s of SUCCESS (see :mod:`daq_runner._restart`).

        Args:
            changes: ``{field: value}``; fields of :data:`daq_runner.protocol.CONFIG_FIELDS`.
            timeout: seconds for all of it (also bounded by the bound in force).
            on_deployment: called with each deployment status of the new config seen
                (a dict as :meth:`get_deployment_status` returns), once per change.
            wait_restart: also wait until the services restarted with the new config and
                are back (``ConfigUpdate.restart`` says what was seen).

        Returns:
            :class:`ConfigUpdate` ``(config, config_id, deployment, restart)``.

        Raises:
            ValueError: before anything is sent: unknown field names, ``bit_depth`` other
                than 8/16/32, wrong value types.
            DaqNotConfigured: the DAQ has no configuration and ``changes`` is not a whole
                one (nothing sent: a rest_v2 DAQ in that state refuses every config until
                its REST server restarts).
            StdDaqAdminException: the DAQ refused the config.
            DeploymentError: the deployment ended in ERROR, was not done within
                ``timeout``, was superseded by another config, the config read back
                does not show the changes, or (``wait_restart``) the services went down and
                did not come back within ``timeout``.
            DeadlineExceeded: the caller's bound ended it.
            DaqError: the DAQ could not be talked to.
        """
        changes = protocol.check_config_changes(changes)
        timeout = _seconds("timeout", timeout)
        caller = _deadline.current()
        progress = _ConfigProgress()
        with _deadline.bounded(_deadline.Deadline(timeout)) as bound:
            try:
                return self._update_config(changes, bound, progress, on_deployment, wait_restart)
            except DeadlineExceeded as exc:
                if caller.expired:
                    raise
                raise progress.error(f"config change not done within {timeout:g} s", self._config_url(), exc) from exc

    def _config_url(self) -> str:
        return redact_url(protocol.DAQ_CONFIG_GET.url(self.url_base))

    def _update_config(
        self,
        changes: dict,
        bound: _deadline.Deadline,
        progress: "_ConfigProgress",
        on_deployment: Optional[DeploymentHook],
        wait_restart: bool = False,
    ) -> ConfigUpdate:
        progress.stage = "reading the current config"
        envelope, current = self._exchange(protocol.DAQ_CONFIG_GET)
        old_id = envelope.get("config_id")
        if current is None and protocol.missing_config_fields(changes):
            raise DaqNotConfigured(
                f"the DAQ has no configuration ({protocol.MESSAGE_NO_CONFIG!r}): a change of "
                f"{', '.join(sorted(changes))} cannot be applied; a rest_v2 DAQ refuses every config and write "
                "in that state (its Redis came back empty?) until its REST server restarts and deploys its config file",
                url=self._config_url(),
            )
        config = protocol.merge_config(current, changes)
        # The detector's rate before the change: the services' restart shows as its drop to 0.
        before = [(time.monotonic(), detector_rate(self.get_stats()))] if wait_restart else []
        # The servers that took part in the last deployment: SUCCESS only counts once each of
        # them reported again (the real server says SUCCESS as soon as the servers that have
        # reported so far are done, while a slower one may still fail).
        servers = set((self.get_deployment_status().get("servers") or {}).keys())

        progress.stage = "sending the config (it may have been stored)"
        try:
            envelope, _ = self._exchange(protocol.DAQ_CONFIG_SET, config)
            new_id = envelope.get("config_id")  # null on the real server; some versions give it
            progress.stage = "waiting for the new config_id"
        except ConfigOutcomeUnknown as exc:
            # Never sent twice (each stored config restarts the DAQ): a new config_id says
            # it was stored, and the check at the end that it shows the changes.
            new_id = None
            progress.stage = f"waiting for a new config_id after the reply to the config was lost: {exc}"

        while new_id is None or new_id == old_id:
            envelope, _ = self._exchange(protocol.DAQ_CONFIG_GET)
            new_id = envelope.get("config_id")
            if new_id is None or new_id == old_id:
                bound.sleep(_DEPLOY_POLL_S)
        progress.config_id = new_id

        progress.stage = f"waiting for the deployment of config {new_id}"
        seen = None
        steady_since: Optional[float] = None
        deployed_at: Optional[float] = None  # when SUCCESS was first seen
        while True:
            deployment = self.get_deployment_status()
            deployed_id = deployment.get("config_id")
            if deployed_id == new_id:
                progress.deployment = deployment
                key = (deployment.get("status"), deployment.get("message"), json.dumps(deployment.get("servers"), sort_keys=True))
                if key != seen:
                    seen, steady_since = key, time.monotonic()
                    if on_deployment is not None:
                        on_deployment(deployment)
                status = deployment.get("status")
                if status == protocol.DeploymentStatus.ERROR.value:
                    break
                if status == protocol.DeploymentStatus.SUCCESS.value:
                    deployed_at = deployed_at or time.monotonic()
                    reported = set((deployment.get("servers") or {}).keys())
                    if servers and servers <= reported:
                        break
                    if not servers and time.monotonic() - steady_since >= _DEPLOY_STEADY_S:
                        break  # no earlier deployment to compare with: SUCCESS that holds
                    waiting = sorted(servers - reported)
                    progress.stage = f"waiting for the deployment of config {new_id} on " + (
                        ", ".join(waiting) if waiting else "every server (SUCCESS must hold)"
                    )
            elif deployed_id is not None and protocol._stream_id_key(deployed_id) > protocol._stream_id_key(new_id):
                progress.deployment = deployment
                raise progress.error(f"config {new_id} was superseded by config {deployed_id} before its deployment ended", self._config_url())
            bound.sleep(_DEPLOY_POLL_S)
        if deployment.get("status") == protocol.DeploymentStatus.ERROR.value:
            raise progress.error(f"deployment of config {new_id} failed: {quote(deployment.get('message'))}", self._config_url())

        progress.stage = "checking the config in force"
        envelope, applied = self._exchange(protocol.DAQ_CONFIG_GET)
        progress.config = applied
        differences = protocol.config_differences(applied, changes)
        if differences:
            raise progress.error(
                f"config {new_id} deployed, but the DAQ does not show the change: {quote('; '.join(differences))}",
                self._config_url(),
            )
        restart = None
        if wait_restart:
            progress.stage = f"waiting for the DAQ's services to restart with config {new_id}"
            signs = self._wait_for_restart(RestartSigns(deployed_at or time.monotonic(), timed=False, before=before), bound)
            restart = signs.outcome()
            if bound.expired or (signs.down_at is not None and not signs.back):
                raise progress.error(
                    f"config {new_id} deployed, but {signs.describe()} within the time allowed", self._config_url()
                )
        return ConfigUpdate(config=applied or {}, config_id=envelope.get("config_id") or new_id, deployment=deployment, restart=restart)

    def _wait_for_restart(self, signs: RestartSigns, bound: _deadline.Deadline) -> RestartSigns:
        """Poll ``GET /daq/stats`` until ``signs`` show the services back (or cannot show more)."""

        def read(seconds: float) -> List[Tuple[float, float]]:
            bound.sleep(seconds)
            return [(time.monotonic(), detector_rate(self.get_stats()))]

        return wait_for_signs(signs, read, time.monotonic)


class _ConfigProgress:
    """How far an :meth:`StdDaqClient.update_config` got, for its error message and attributes."""

    __slots__ = ("stage", "config_id", "deployment", "config")

    def __init__(self) -> None:
        self.stage = "starting"
        self.config_id: Optional[str] = None
        self.deployment: Optional[dict] = None
        self.config: Optional[dict] = None

    def error(self, message: str, url: str, cause: Optional[BaseException] = None) -> DeploymentError:
        if cause is not None:
            message = f"{message} ({self.stage}"
            if self.deployment is not None:
                message += f"; last deployment status {self.deployment.get('status')}: {quote(self.deployment.get('message'))}"
            message += ")"
        return DeploymentError(message, url=url, config_id=self.config_id, deployment=self.deployment, config=self.config)
