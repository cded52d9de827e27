"""``StdDaqClient``: a drop-in replacement for ``std_daq_client.StdDaqClient`` 1.3.5.

Same methods, parameters, return values and requests on the wire, plus what the
original lacks: timeouts on every request, one connection-reusing session, retries with
exponential backoff and jitter on transport failures, errors that say what happened,
and logs always handed back as a list.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import requests
import tenacity
from requests.adapters import HTTPAdapter

from . import api
from .exceptions import (
    DaqHTTPError,
    DaqProtocolError,
    DaqTimeoutError,
    DaqTransportError,
    StdDaqAdminException,
    WriteOutcomeUnknown,
)

__all__ = ["StdDaqClient", "DEFAULT_TIMEOUT", "DEFAULT_RETRIES", "SYNC_WRITE_TIMEOUT"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
# The server blocks a sync write for up to 60 s before it answers; leave it room.
SYNC_WRITE_TIMEOUT = 75.0
_RETRYABLE_STATUS = (502, 503, 504)
_MAX_TEXT = 300

RetryHook = Callable[[str, int, BaseException, float], None]


def _never_reached_server(exc: BaseException) -> bool:
    """True when the request provably never reached the server (connect phase failed)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen = set()
    cause: Optional[BaseException] = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if type(cause).__name__ in ("NewConnectionError", "ConnectionRefusedError", "NameResolutionError"):
            return True
        reason = getattr(cause, "reason", None)
        nxt = reason if isinstance(reason, BaseException) else None
        if nxt is None and cause.args and isinstance(cause.args[0], BaseException):
            nxt = cause.args[0]
        cause = nxt or cause.__cause__ or cause.__context__
    return False


class StdDaqClient:
    """REST client of the Standard DAQ admin interface.

    Args:
        url_base: base URL of the REST server, usually on port 5000.
        timeout: connect and read timeout of every request, in seconds.
        retries: extra attempts after a transport failure (connection refused or reset,
            timeout, HTTP 502/503/504); ``0`` means one attempt.
        retry_deadline: give up rather than retry past this many seconds since the first
            attempt (``None``: bounded by ``retries`` only).
        sync_timeout: read timeout of ``start_writer_sync``, which blocks server-side.
        session: a ``requests.Session`` to use instead of the client's own.
        on_retry: called as ``on_retry(url, attempt, error, sleep_s)`` before each retry.
        sleep: how to wait between retries (default ``time.sleep``); a caller that must
            react to a stop request passes a sleep that raises instead of waiting on.

    Write starts are never sent twice blindly: a write whose reply was lost raises
    :class:`~daq_runner.exceptions.WriteOutcomeUnknown` (see :meth:`start_writer_async`).
    """

    def __init__(
        self,
        url_base: str = "http://localhost:5000",
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        *,
        retry_deadline: Optional[float] = None,
        sync_timeout: float = SYNC_WRITE_TIMEOUT,
        write_timeout: float = 15.0,
        session: Optional[requests.Session] = None,
        on_retry: Optional[RetryHook] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.url_base = url_base.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.retry_deadline = retry_deadline
        self.sync_timeout = float(sync_timeout)
        self.write_timeout = float(write_timeout)
        self.on_retry = on_retry
        self.sleep = sleep
        if session is None:
            session = requests.Session()
            # Retries are ours (tenacity), not urllib3's hidden ones.
            adapter = HTTPAdapter(max_retries=0, pool_connections=2, pool_maxsize=4)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session

    def __repr__(self) -> str:
        return f"StdDaqClient(url_base={self.url_base!r})"

    def close(self) -> None:
        """Close the connections of the client's session."""
        self.session.close()

    def __enter__(self) -> "StdDaqClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------

    def _send_once(self, endpoint: api.Endpoint, url: str, body: Any, read_timeout: float, is_write: bool) -> dict:
        try:
            reply = self.session.request(
                endpoint.method, url, json=body, timeout=(self.timeout, read_timeout)
            )
        except requests.RequestException as exc:
            reached = not _never_reached_server(exc)
            timeout = isinstance(exc, requests.Timeout)
            what = f"timed out after {read_timeout if reached else self.timeout:g} s" if timeout else f"failed: {exc}"
            message = f"{endpoint.method} {url} {what}"
            if is_write and reached:
                raise WriteOutcomeUnknown(message + " (the write may have started)", url=url) from exc
            cls = DaqTimeoutError if timeout else DaqTransportError
            raise cls(message, url=url) from exc

        text = reply.text
        if reply.status_code != 200:
            short = text[:_MAX_TEXT].strip()
            message = f"{endpoint.method} {url} -> HTTP {reply.status_code}: {short or reply.reason}"
            if reply.status_code in _RETRYABLE_STATUS:
                # 503 means the request was not processed; a gateway error (502/504) may hide
                # a write that went through.
                if is_write and reply.status_code != 503:
                    raise WriteOutcomeUnknown(message, url=url, status_code=reply.status_code, text=short)
                raise DaqTransportError(message, url=url, status_code=reply.status_code, text=short)
            raise DaqHTTPError(message, url=url, status_code=reply.status_code, text=short)
        try:
            envelope = reply.json()
        except ValueError as exc:
            raise DaqProtocolError(
                f"{endpoint.method} {url} -> HTTP 200 but the reply is not JSON: {text[:_MAX_TEXT]!r}",
                url=url,
                status_code=200,
                text=text[:_MAX_TEXT],
            ) from exc
        if not isinstance(envelope, dict) or "status" not in envelope:
            raise DaqProtocolError(
                f"{endpoint.method} {url} -> HTTP 200 but the reply has no 'status': {text[:_MAX_TEXT]!r}",
                url=url,
                status_code=200,
                text=text[:_MAX_TEXT],
            )
        if envelope["status"] != "ok":
            raise StdDaqAdminException(str(envelope.get("message") or f"DAQ answered status {envelope['status']!r}"))
        if endpoint.payload_key not in envelope:
            raise DaqProtocolError(
                f"{endpoint.method} {url} -> reply has no {endpoint.payload_key!r}: {text[:_MAX_TEXT]!r}",
                url=url,
                status_code=200,
                text=text[:_MAX_TEXT],
            )
        return envelope

    def _before_sleep(self, url: str) -> Callable[[tenacity.RetryCallState], None]:
        def hook(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0.0
            log.debug("retrying %s after attempt %d: %s (sleep %.2f s)", url, state.attempt_number, exc, sleep)
            if self.on_retry is not None and exc is not None:
                self.on_retry(url, state.attempt_number, exc, sleep)

        return hook

    def request(self, endpoint: api.Endpoint, body: Any = None, *, read_timeout: Optional[float] = None, **params: Any) -> dict:
        """Send one request with retries and return the whole reply envelope.

        Raises:
            StdDaqAdminException: the DAQ refused (``status != "ok"``).
            DaqError: any other failure (a ``RuntimeError``).
        """
        url = endpoint.url(self.url_base, **params)
        is_write = endpoint in (api.WRITER_WRITE_ASYNC, api.WRITER_WRITE_SYNC)
        stop = tenacity.stop_after_attempt(self.retries + 1)
        if self.retry_deadline is not None:
            # Give up instead of sleeping past the deadline: the budget is a promise to callers.
            stop = stop | tenacity.stop_before_delay(self.retry_deadline)
        retrying = tenacity.Retrying(
            stop=stop,
            wait=tenacity.wait_exponential(multiplier=0.1, max=5.0) + tenacity.wait_random(0, 0.2),
            # WriteOutcomeUnknown is a transport error that must never be re-sent.
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, DaqTransportError) and not isinstance(e, WriteOutcomeUnknown)
            ),
            before_sleep=self._before_sleep(url),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(self._send_once, endpoint, url, body, read_timeout or self.timeout, is_write)

    def _payload(self, endpoint: api.Endpoint, body: Any = None, **kwargs: Any) -> Any:
        return self.request(endpoint, body, **kwargs)[endpoint.payload_key]

    # -- the nine methods of the original client --------------------------------------

    def get_status(self) -> dict:
        """Current writer status: ``{"state": "READY"|"WRITING"|"UNKNOWN", "acquisition": {...}}``."""
        return self._payload(api.WRITER_STATUS)

    def get_config(self) -> dict:
        """Current DAQ configuration (``None`` before the first deployment)."""
        return self._payload(api.DAQ_CONFIG_GET)

    def set_config(self, daq_config: dict) -> dict:
        """Apply a full or partial configuration; returns the configuration now in force.

        Only the given fields change (``module_positions`` is replaced whole). The DAQ
        services restart; allow about 10 s for them to stabilise.
        """
        return self._payload(api.DAQ_CONFIG_SET, daq_config)

    def get_logs(self, n_last_logs: int) -> list:
        """The last ``n_last_logs`` acquisitions that produced a file, newest first.

        Always a list, whether the server sends a list or rest_v2's dict keyed by stream id.
        """
        return api.logs_as_list(self._payload(api.DAQ_LOGS, n=int(n_last_logs)))

    def get_stats(self) -> dict:
        """Detector and writer throughput, aggregated each second (may be ``None``)."""
        return self._payload(api.DAQ_STATS)

    def get_deployment_status(self) -> dict:
        """Status of the last configuration deployment (``SUCCESS`` when all servers are done)."""
        return self._payload(api.DAQ_DEPLOYMENT)

    def start_writer_async(self, write_request: dict) -> dict:
        """Start an acquisition and return at once with the writer status.

        ``write_request`` is ``{"output_file": <absolute path>, "n_images": N, "run_id": optional int}``.

        A write start is retried only when it provably did not reach the DAQ (connection
        refused, HTTP 503). When it may have reached it (read timeout, connection reset,
        HTTP 502/504), :class:`WriteOutcomeUnknown` is raised instead of sending it again:
        set your own unique ``run_id`` and compare it with ``get_status()``'s
        ``acquisition.info.run_id`` to tell whether the acquisition started.
        """
        return self._payload(api.WRITER_WRITE_ASYNC, write_request, read_timeout=self.write_timeout)

    def start_writer_sync(self, write_request: dict) -> dict:
        """Start an acquisition and return when it has ended (the server waits up to 60 s).

        Same request and retry rules as :meth:`start_writer_async`; the read timeout is
        ``sync_timeout``.
        """
        return self._payload(api.WRITER_WRITE_SYNC, write_request, read_timeout=self.sync_timeout)

    def stop_writer(self) -> dict:
        """Stop the acquisition in progress; also resets a writer in ``UNKNOWN`` to ``READY``."""
        return self._payload(api.WRITER_STOP, {}, read_timeout=self.write_timeout)

