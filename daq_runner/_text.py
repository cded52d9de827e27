"""Text that reaches a message: one line, no control characters, no credentials.

A DAQ's reply text (or anything else read from the wire) is quoted in error messages,
logs and reports. It may span lines ("Cannot start new acquisition while previous one
is running:\\n {...}"), hold terminal escapes or be megabytes long; :func:`quote` makes
it one short, printable line. URLs may carry ``user:password@``: :func:`redact_url` and
:func:`redact_text` replace the credentials by ``***`` and never raise.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Optional, Sequence, Tuple

__all__ = [
    "MAX_QUOTE",
    "one_line",
    "quote",
    "redact_url",
    "redact_text",
    "userinfo_problem",
    "check_url_shape",
    "secrets_in",
    "scrub",
    "clauses",
    "plural",
]

# Longest quoted reply text, in characters: enough for any DAQ message, short enough for a log line.
MAX_QUOTE = 300
_ELLIPSIS = "..."

# Line and paragraph breaks of every kind become one space.
_BREAKS = re.compile(r"[\s\u0085\u2028\u2029]+")
# Bidirectional overrides and isolates reorder what a terminal shows: escape them too.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# scheme://userinfo@ ; userinfo runs to the last "@" before the path, query, fragment or a space.
_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@]*(?:@[^\s/?#@]*)*)@")
# An authority cut off at the end of a shortened text: its "@" may be gone, mask it whole.
_TRAILING_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#]*$")


def _window(limit: int) -> int:
    """How much of a long text is looked at to show ``limit`` characters of it."""
    return limit * 4 + 256


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: Any, limit: Optional[int] = MAX_QUOTE) -> str:
    """``text`` as one printable line of at most ``limit`` characters (``None``: no limit).

    Whitespace runs (newlines, tabs, Unicode line separators) become one space; other
    control characters (ESC, BEL, NUL, DEL, C1 controls) and bidirectional overrides are
    shown as ``\\xNN`` / ``\\uNNNN`` escapes, so that they cannot act on a terminal. A
    longer text is cut and ends with ``...``. Anything that is not a string is ``str()``-ed
    first (``bytes`` are decoded as UTF-8 with replacement).
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    elif not isinstance(text, str):
        try:
            text = str(text)
        except Exception:  # a hostile __str__ must not break an error message
            text = f"<{type(text).__name__}>"
    if limit is not None:
        # A huge reply must not be scanned whole; whitespace runs collapse within this window.
        text = text[: _window(limit)]
    text = _BREAKS.sub(" ", text).strip()
    if not text.isprintable():
        text = "".join(
            _escape(c) if (c in _BIDI or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")) else c
            for c in text
        )
    elif any(c in _BIDI for c in text):
        text = "".join(_escape(c) if c in _BIDI else c for c in text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - len(_ELLIPSIS), 0)].rstrip() + _ELLIPSIS
    return text


def said_with_source(value: Optional[str], source: Optional[str]) -> str:
    """``value (from source)``; without a value, the source alone where it says why
    (``none: this DAQ generation has no Redis; ...``), else ``none (source)``."""
    if value:
        return f"{value} (from {source})" if source else value
    if source and source.startswith("none"):
        return source
    return f"none ({source})" if source else "none"


def printable(text: str) -> str:
    """``text`` with its control characters (newlines too), bidirectional overrides and other
    non-printable characters shown as ``\\xNN`` / ``\\uNNNN`` escapes, its spacing kept: a line
    made of names from a batch file cannot act on a terminal (clear it, set its title)."""
    if text.isprintable() and not any(c in _BIDI for c in text):
        return text
    return "".join(_escape(c) if (c in _BIDI or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")) else c for c in text)


# A URL-like word whose "@" comes after characters a user name or password should have
# percent-encoded ("#", "?", "/"): everything from "://" to its last "@" is masked.
_LOOSE_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s@]*)@(?=[^\s@]*(?:\s|$))")
# Passwords in a query string (a Redis URL's ?password=...).
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|pass)=)(?P<value>[^&#\s]*)", re.IGNORECASE)


def redact_text(text: Any) -> str:
    """``text`` with the credentials of every ``scheme://user:password@`` in it replaced by
    ``***``, and the value of every ``password=`` query parameter too."""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:
            return f"<{type(text).__name__}>"
    if "@" in text:
        text = _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", text)
        text = _LOOSE_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m.group('key')}***", text)
    return text


def userinfo_problem(url: str) -> Optional[str]:
    """Why ``url`` cannot be used without showing its credentials, or ``None``.

    A user name or password with a space, a control character, or an unencoded ``#``, ``?``
    or ``/`` makes the URL parse differently from what was meant (part of the password
    becomes the host or the path): such a URL is refused and never echoed.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it contains spaces or control characters (percent-encode them in a user name or password)"
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        if rest.rfind("@") > authority_end:
            return "its user name or password holds '/', '?' or '#' (percent-encode them, e.g. %23 for '#')"
        if "\\" in rest[: rest.rfind("@")]:
            return "its user name or password holds a backslash (percent-encode it as %5C)"
    return None


def check_url_shape(url: str, schemes: Sequence[str], what: str) -> str:
    """``url`` when it is a URL of one of ``schemes`` with a host (``unix`` needs none) and a
    valid port; checked as text, nothing is connected to.

    Raises:
        ValueError: one line starting with ``what``; the credentials are never shown.
    """
    from urllib.parse import urlsplit

    problem = userinfo_problem(url)
    if problem:  # never echoed: part of a password would show
        raise ValueError(f"{what} is not usable: {problem}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{what} {redact_url(url)!r} is not a valid URL") from None
    if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "unix"):
        raise ValueError(f"{what} {redact_url(url)!r} must be a {'/'.join(schemes)} URL with a host")
    return url


def redact_url(url: Any) -> Any:
    """``url`` with any user name and password replaced by ``***``; never raises.

    ``None`` and ``""`` come back unchanged; anything else comes back as a string (an
    unparsable URL is redacted as text: whatever sits between ``://`` and ``@`` is masked).
    """
    if url is None or url == "":
        return url
    return redact_text(url)


def quote(text: Any, limit: Optional[int] = MAX_QUOTE) -> str:
    """Text read from the wire, ready to quote in a message: redacted, one line, shortened."""
    if limit is not None:
        # Only the start is shown: do not scan megabytes. Credentials that straddle the cut
        # lose their "@", so a URL authority left open at the end is masked whole.
        window = _window(limit)
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text[: window * 4]).decode("utf-8", "replace")
        if isinstance(text, str) and len(text) > window:
            text = _TRAILING_AUTHORITY.sub(lambda m: f"{m.group('scheme')}***", text[:window])
    return one_line(redact_text(text), limit)


def secrets_in(*urls: Optional[str]) -> Tuple[str, ...]:
    """The user names and passwords in ``urls`` (also ``?password=``): replaced by ``***`` in
    every event, wherever they appear. Text shorter than 4 characters is left to the URL
    redaction (:func:`redact_text`): masking every "u" of a message hides nothing."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    found = set()
    for url in urls:
        if not url:
            continue
        try:
            parts = urlsplit(url)
            values = [parts.password, parts.username]
            values += [v for k, v in parse_qsl(parts.query) if k.lower() in ("password", "passwd", "pwd", "pass")]
        except ValueError:
            continue
        for value in values:
            if value:
                found.update({value, unquote(value)})
        if parts.password:
            # "user:password" as a whole is specific enough to mask however short each part
            # (a three-letter password would otherwise only be masked where a URL shows it).
            pair = f"{parts.username or ''}:{parts.password}"
            found.update({pair, unquote(pair)})
    return tuple(sorted((s for s in found if len(s) >= 4), key=len, reverse=True))


def scrub(value: Any, secrets: Tuple[str, ...]) -> Any:
    """``value`` (text, or dicts and lists of it) with every one of ``secrets`` replaced by ``***``."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


def clauses(*parts: Any, sep: str = "; ") -> str:
    """``parts`` joined into one sentence: ``"Please create it first; not retried: ..."``, not
    ``"first.; not retried"``. A part's closing full stop (a DAQ's message often has one) is left
    out before the next; an ellipsis stays; empty parts are skipped."""
    texts = [str(part) for part in parts if part is not None and str(part) != ""]
    trimmed = [t[:-1] if t.endswith(".") and not t.endswith("..") else t for t in texts[:-1]]
    return sep.join(trimmed + texts[-1:])


def plural(n: Any, word: str, words: Optional[str] = None) -> str:
    """``1 step``, ``3 steps``, ``0 steps`` (``words``: an irregular plural)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"
