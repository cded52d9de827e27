"""Sending a notification: an HTTP request or a mail, each bounded, several at once.

What :mod:`daq_runner.notify` needs from the network, and nothing else. Every function
here either returns or raises :class:`DeliveryFailed` with one line saying why (no
credentials, no traceback); none of them outlives the time it is given:

- :func:`http_request` goes through the client's bounded transport
  (:func:`daq_runner._transport.new_session`), so the whole reply, however it trickles in,
  ends by the deadline; a loopback target is never reached through a proxy;
- :func:`send_mail` speaks SMTP with ``smtplib``; the socket's timeout is set to the time
  left before every command;
- :func:`run_all` runs jobs in daemon threads and waits for them until a shared deadline:
  what has not finished by then is given up (a hung DNS lookup, a TLS handshake that
  stalls), and the process is never held by it.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from ._text import one_line, quote

__all__ = ["DeliveryFailed", "http_request", "send_mail", "run_all", "GRACE_S"]

# How long run_all waits past the shared deadline for a job that is just returning.
GRACE_S = 0.25
# The longest reply text quoted in a problem line.
_QUOTED = 120


class DeliveryFailed(Exception):
    """A notification or ping could not be delivered; ``str()`` is one line saying why."""


def http_request(
    method: str,
    url: str,
    *,
    seconds: float,
    json_body: Any = None,
    text: Optional[str] = None,
    user_agent: str = "daq-run",
    cancel: Optional[threading.Event] = None,
) -> int:
    """Send one request to ``url`` and return the HTTP status (2xx).

    The whole exchange (connect, TLS, request, reply) ends within ``seconds``, or within
    0.25 s of ``cancel`` being set. Redirects are not followed (a webhook that moved is
    named, not chased with a GET). Raises :class:`DeliveryFailed` on any other outcome.
    """
    import requests

    from . import _deadline
    from ._transport import new_session
    from .client import _is_timeout, _root_cause

    session = new_session()
    headers = {"User-Agent": user_agent}
    data = None
    if text is not None:
        data = text.encode("utf-8")
        headers["Content-Type"] = "text/plain; charset=utf-8"
    try:
        with _deadline.bounded(_deadline.Deadline(seconds, cancel=cancel)):
            response = session.request(
                method, url, json=json_body, data=data, headers=headers, timeout=(seconds, seconds), allow_redirects=False
            )
    except _deadline.Interrupted:
        raise DeliveryFailed("stopped before an answer came") from None
    except (requests.RequestException, OSError, ValueError) as exc:
        if _is_timeout(exc):
            raise DeliveryFailed(f"no answer within {seconds:g} s") from None
        raise DeliveryFailed(quote(_root_cause(exc), _QUOTED)) from None
    finally:
        session.close()
    status = response.status_code
    if 200 <= status < 300:
        return status
    if 300 <= status < 400:
        raise DeliveryFailed(f"HTTP {status}: redirected (not followed): give the URL it moved to")
    body = quote(response.text, _QUOTED) if response.content else ""
    raise DeliveryFailed(f"HTTP {status}" + (f": {body}" if body else ""))


def send_mail(
    server: Any,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    *,
    seconds: float,
) -> Dict[str, str]:
    """Send one plain-text mail to ``recipients`` through ``server`` within about ``seconds``.

    ``server`` has ``host``, ``port``, ``security`` (``"none"``, ``"starttls"``, ``"ssl"``),
    ``user`` and ``password``. TLS certificates are verified against the system's CAs
    (``SSL_CERT_FILE`` names another bundle). Returns the recipients the server refused,
    each with its reason (the others got the mail); raises :class:`DeliveryFailed` when
    nobody did.
    """
    end = time.monotonic() + seconds

    def left() -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise DeliveryFailed(f"no answer within {seconds:g} s")
        return remaining

    message = EmailMessage()
    message["Subject"] = one_line(subject, 200)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    message.set_content(body)
    context = ssl.create_default_context()
    smtp: Optional[smtplib.SMTP] = None
    try:
        if server.security == "ssl":
            smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=left(), context=context)
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=left())
        _command(smtp, left, smtp.ehlo_or_helo_if_needed)
        if server.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise DeliveryFailed("the server does not offer STARTTLS; nothing was sent")
            _command(smtp, left, smtp.starttls, context=context)
            _command(smtp, left, smtp.ehlo)
        if server.user:
            if not server.password:
                raise DeliveryFailed(f"the SMTP login {server.user} has no password: nothing was sent")
            _command(smtp, left, smtp.login, server.user, server.password)
        refused = _command(smtp, left, smtp.send_message, message, from_addr=sender, to_addrs=list(recipients))
    except DeliveryFailed:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(f"login as {server.user} refused: {_smtp_reply(exc.smtp_code, exc.smtp_error)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryFailed("every recipient refused: " + _refusals(exc.recipients)) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(_smtp_reply(exc.smtp_code, exc.smtp_error)) from None
    except ssl.SSLError as exc:
        raise DeliveryFailed(f"TLS failed: {quote(getattr(exc, 'verify_message', None) or exc.reason or exc, _QUOTED)}") from None
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            raise DeliveryFailed(f"no answer within {seconds:g} s") from None
        raise DeliveryFailed(quote(getattr(exc, "strerror", None) or exc or type(exc).__name__, _QUOTED)) from None
    finally:
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass
    return {str(address): _smtp_reply(*reply) for address, reply in (refused or {}).items()}


def _command(smtp: smtplib.SMTP, left: Callable[[], float], call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One SMTP exchange with the socket's timeout set to the time left."""
    if smtp.sock is not None:
        smtp.sock.settimeout(left())
    return call(*args, **kwargs)


def _smtp_reply(code: Any, text: Any) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"SMTP {code}: {quote(text, _QUOTED)}"


def _refusals(recipients: Mapping[Any, Any]) -> str:
    return "; ".join(f"{address}: {_smtp_reply(*reply)}" for address, reply in recipients.items())


def run_all(jobs: Mapping[str, Callable[[], Optional[str]]], seconds: float) -> Dict[str, Optional[str]]:
    """Run every job in a daemon thread of its own; wait until all are done or ``seconds`` pass.

    A job returns ``None`` (delivered) or a problem line, or raises :class:`DeliveryFailed`.
    Returns each job's outcome by name; a job still running at the deadline gets
    ``no answer within N s (given up)`` and is left to end on its own.
    """
    results: Dict[str, Optional[str]] = {}
    lock = threading.Lock()

    def work(name: str, job: Callable[[], Optional[str]]) -> None:
        try:
            outcome = job()
        except DeliveryFailed as exc:
            outcome = str(exc)
        except Exception as exc:  # a bug must cost one notification, not the run's end
            outcome = f"{type(exc).__name__}: {quote(exc, _QUOTED)}"
        with lock:
            results.setdefault(name, outcome)

    threads = [threading.Thread(target=work, args=item, name=f"daq-run-notify {i}", daemon=True) for i, item in enumerate(jobs.items())]
    for thread in threads:
        thread.start()
    end = time.monotonic() + seconds + GRACE_S
    for thread in threads:
        thread.join(max(end - time.monotonic(), 0.0))
    with lock:
        for name in jobs:
            results.setdefault(name, f"no answer within {seconds:g} s (given up)")
        return {name: results[name] for name in jobs}
