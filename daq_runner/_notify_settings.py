"""Notification settings: targets, outcomes, the SMTP server and the heartbeat, parsed once.

The private half of :mod:`daq_runner.notify` (which re-exports every public name): a
``notify:`` block and the command-line flags become a :class:`NotifySettings`, every value
checked before anything is sent; a mistake is one :class:`NotifySettingsError` line naming
its source and key, never showing a credential.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

from ._text import one_line, redact_text, userinfo_problem
from .exceptions import NotifySettingsError
from .exit_codes import RunExit

__all__ = [
    "OUTCOMES",
    "ON_CHOICES",
    "DEFAULT_ON",
    "OUTCOME_OF",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_HEARTBEAT_EVERY_S",
    "SMTP_PASSWORD_ENV",
    "outcome_of",
    "shown_url",
    "Target",
    "SmtpServer",
    "HeartbeatSettings",
    "Rule",
    "NotifySettings",
    "notify_schema",
]

OUTCOMES = ("passed", "failure", "usage", "unreachable", "busy", "interrupted")
"""How a run can end, as notifications name it."""

OUTCOME_OF: Dict[int, str] = {
    RunExit.PASSED: "passed",
    RunExit.FAILED: "failure",
    RunExit.USAGE: "usage",
    RunExit.UNREACHABLE: "unreachable",
    RunExit.LOCKED: "busy",
    RunExit.SIGINT: "interrupted",
    RunExit.SIGTERM: "interrupted",
}
"""The outcome of each exit code of ``daq-run``; any other code counts as a ``failure``."""

DEFAULT_ON: FrozenSet[str] = frozenset(OUTCOMES) - {"passed"}
ON_CHOICES = (*OUTCOMES[1:], "always", "never")
"""What ``on:`` and ``--notify-on`` take: an outcome but ``passed``, ``always`` or ``never``."""

DEFAULT_TIMEOUT_S = 5.0
"""Seconds every delivery at the end of a run may take in all (targets in parallel)."""
DEFAULT_HEARTBEAT_EVERY_S = 60.0
SMTP_PASSWORD_ENV = "DAQ_RUNNER_SMTP_PASSWORD"
"""The environment variable that holds the SMTP login's password (never a flag: ``ps`` shows those)."""

_MAX_TIMEOUT_S = 60.0
_MIN_EVERY_S, _MAX_EVERY_S = 1.0, 24 * 3600.0
_MAX_TARGETS = 20
_MAX_URL = 2048
_BLOCK_KEYS = ("to", "on", "smtp", "from", "timeout", "heartbeat")
_HEARTBEAT_KEYS = ("url", "every")
_SMTP_SCHEMES = {"smtp": ("none", 25), "smtp+starttls": ("starttls", 587), "smtps": ("ssl", 465)}
# One mail address: no spaces, separators or brackets that would make it a list or a header.
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[^\s@<>()\[\],;:\"\\/?#]+")



def outcome_of(exit_code: int) -> str:
    """The outcome (one of :data:`OUTCOMES`) of a ``daq-run`` exit code."""
    return OUTCOME_OF.get(int(exit_code), "failure")


# -- targets -------------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """``https://host:port/***``: a webhook's or a heartbeat's path and query are its secret."""
    try:
        parts = urlsplit(url if "://" in url else "//" + url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return redact_text(url)
    hidden = "/***" if (parts.path.strip("/") or parts.query) else ""
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{'***@' if '@' in parts.netloc else ''}{host}{hidden}"


@dataclass(frozen=True)
class Target:
    """Where a notification goes.

    Attributes:
        kind: ``"webhook"`` (an http(s) URL that takes a JSON POST) or ``"mail"``.
        address: the URL, credentials and all, or the mail address (without ``mailto:``).
    """

    kind: str
    address: str = field(repr=False)

    def __str__(self) -> str:
        """The target as messages show it: ``mailto:ops@example.org``, ``https://host/***``."""
        return f"mailto:{self.address}" if self.kind == "mail" else shown_url(self.address)

    def __repr__(self) -> str:
        return f"Target({self.kind!r}, {str(self)!r})"


def _fail(reason: str, source: str, key: Sequence[object] = ()) -> NotifySettingsError:
    return NotifySettingsError(reason, source, key)


def _check_http_url(url: Any, what: str, source: str, key: Sequence[object]) -> str:
    """An http(s) URL with a host, usable as it is; never echoes its credentials or path."""
    if not isinstance(url, str) or not url.strip():
        raise _fail(f"{what} must be an http(s) URL", source, key)
    url = url.strip()
    if len(url) > _MAX_URL:
        raise _fail(f"{what} is longer than {_MAX_URL} characters", source, key)
    problem = userinfo_problem(url)
    if problem:
        raise _fail(f"{what} is not usable: {problem}", source, key)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _fail(f"{what} {shown_url(url)!r} is not a valid URL", source, key) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _fail(f"{what} {one_line(shown_url(url), 80)!r} must be an http:// or https:// URL with a host", source, key)
    return url


def _parse_target(text: Any, source: str, key: Sequence[object]) -> Target:
    if not isinstance(text, str) or not text.strip():
        raise _fail("a target must be an http(s):// webhook URL or mailto:ADDRESS", source, key)
    text = text.strip()
    if text[:7].lower() == "mailto:":
        address = unquote(text[7:])
        if "?" in address:
            raise _fail(f"{one_line(text, 80)!r}: a mailto: target takes no ?subject= or other fields", source, key)
        if "," in address or ";" in address:
            raise _fail(f"{one_line(text, 80)!r}: one address per mailto: target (give several targets)", source, key)
        if not _ADDRESS.fullmatch(address):
            raise _fail(f"{one_line(text, 80)!r} is not a mail address (mailto:NAME@HOST)", source, key)
        return Target("mail", address)
    if text[:7].lower() == "http://" or text[:8].lower() == "https://":
        return Target("webhook", _check_http_url(text, "webhook URL", source, key))
    shown = one_line(redact_text(text), 60)
    hint = " (mail goes to mailto:ADDRESS)" if "@" in text and "://" not in text else ""
    raise _fail(f"{shown!r} is not a target: give an http(s):// webhook URL or mailto:ADDRESS{hint}", source, key)


# -- SMTP -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpServer:
    """The mail server notifications go through.

    Attributes:
        host, port: where it listens.
        security: ``"none"`` (plain SMTP), ``"starttls"`` (STARTTLS required: nothing is
            sent without it), ``"ssl"`` (TLS from the first byte, SMTPS).
        user: the login's user name, or ``None`` for no login.
        password: the login's password (from :data:`SMTP_PASSWORD_ENV`); never shown.
    """

    host: str
    port: int
    security: str = "none"
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)

    def __str__(self) -> str:
        scheme = next(name for name, (security, _) in _SMTP_SCHEMES.items() if security == self.security)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{self.user + '@' if self.user else ''}{host}:{self.port}"

    @classmethod
    def parse(cls, text: Any, source: str, key: Sequence[object] = (), environ: Optional[Mapping[str, str]] = None) -> "SmtpServer":
        """``[smtp://|smtp+starttls://|smtps://][USER@]HOST[:PORT]``; a bare ``HOST[:PORT]`` is plain SMTP.

        Default ports: 25, 587 (STARTTLS), 465 (SMTPS). A login's password is read from
        ``environ[SMTP_PASSWORD_ENV]``, never from the text; ``environ`` ``None`` checks
        everything else and leaves the password unset (a batch file validated on its own;
        the command line passes ``os.environ``). A login over plain SMTP to another machine
        is refused (the password would cross the network in clear).

        Raises:
            NotifySettingsError: the text is not such a server, or a password is missing.
        """
        from ._transport import is_loopback

        if not isinstance(text, str) or not text.strip():
            raise _fail("the SMTP server must be HOST[:PORT] (or smtp+starttls://USER@HOST[:PORT], smtps://...)", source, key)
        text = text.strip()
        problem = userinfo_problem(text)
        if problem:
            raise _fail(f"the SMTP server is not usable: {problem}", source, key)
        full = text if "://" in text else f"smtp://{text}"
        try:
            parts = urlsplit(full)
            port = parts.port
        except ValueError:
            raise _fail(f"SMTP server {redact_text(text)!r} is not HOST[:PORT]", source, key) from None
        scheme = parts.scheme.lower()
        if scheme not in _SMTP_SCHEMES:
            raise _fail(f"SMTP server {redact_text(text)!r}: the scheme must be one of {', '.join(s + '://' for s in _SMTP_SCHEMES)}", source, key)
        if parts.password is not None:
            raise _fail(f"the SMTP password goes in ${SMTP_PASSWORD_ENV}, not in the server's address", source, key)
        if not parts.hostname or parts.path.strip("/") or parts.query or parts.fragment:
            raise _fail(f"SMTP server {redact_text(text)!r} is not [USER@]HOST[:PORT]", source, key)
        security, default_port = _SMTP_SCHEMES[scheme]
        user = unquote(parts.username) if parts.username else None
        password = None
        if user:
            password = environ.get(SMTP_PASSWORD_ENV) or None if environ is not None else None
            if password is None and environ is not None:
                raise _fail(f"the SMTP login {user} needs its password in ${SMTP_PASSWORD_ENV}", source, key)
            if security == "none" and not is_loopback(parts.hostname):
                raise _fail(
                    f"a login to {parts.hostname} needs TLS: use smtp+starttls://{user}@{parts.netloc.rpartition('@')[2]} "
                    "or smtps:// (the password would cross the network in clear)",
                    source,
                    key,
                )
        return cls(parts.hostname, port or default_port, security, user, password)


# -- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatSettings:
    """A dead-man's switch: ``url`` + ``/start`` at the start, ``url`` every ``every`` seconds
    while the run goes on, and at the end ``url`` on a pass or ``url`` + ``/fail`` otherwise."""

    url: str = field(repr=False)
    every: float = DEFAULT_HEARTBEAT_EVERY_S

    def __str__(self) -> str:
        return shown_url(self.url)

    @classmethod
    def parse(
        cls, url: Any, every: Any, source: str, url_key: Sequence[object] = (), every_key: Sequence[object] = ()
    ) -> "HeartbeatSettings":
        """Checked settings (``every`` ``None``: the default, 60 s).

        Raises:
            NotifySettingsError: not an http(s) URL, or ``every`` not within 1 s .. 1 day.
        """
        url = _check_http_url(url, "heartbeat URL", source, url_key)
        if every is None:
            return cls(url)
        return cls(url, _seconds(every, "the heartbeat's interval", _MIN_EVERY_S, _MAX_EVERY_S, source, every_key))


@dataclass(frozen=True)
class Rule:
    """Some targets and the outcomes they are told of (one source's ``to`` and ``on``)."""

    targets: Tuple[Target, ...]
    on: FrozenSet[str]
    source: str


def _seconds(value: Any, what: str, low: float, high: float, source: str, key: Sequence[object]) -> float:
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) or not low <= number <= high:
        raise _fail(f"{what} must be a number of seconds from {low:g} to {high:g}, not {one_line(repr(value), 40)}", source, key)
    return float(number)


def _parse_on(values: Iterable[Any], source: str, key: Sequence[object]) -> FrozenSet[str]:
    """``on`` values (``failure``, ``always``, ...) as the set of outcomes they name."""
    chosen: set = set()
    names = []
    for i, value in enumerate(values):
        item_key = (*key, i) if key else key
        if not isinstance(value, str) or not value.strip():
            raise _fail(f"an outcome must be one of {', '.join(ON_CHOICES)}", source, item_key)
        name = value.strip().lower()
        if name not in ON_CHOICES:
            close = difflib.get_close_matches(name, ("passed", *ON_CHOICES), n=1)
            if name == "passed" or close == ["passed"]:
                hint = " (a pass is told with 'always')"
            else:
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(f"unknown outcome {one_line(value, 40)!r}{hint}; choose from {', '.join(ON_CHOICES)}", source, item_key)
        names.append(name)
        chosen |= set(OUTCOMES) if name == "always" else set() if name == "never" else {name}
    if not names:
        raise _fail(f"no outcome given; choose from {', '.join(ON_CHOICES)}", source, key)
    if "never" in names and len(set(names)) > 1:
        raise _fail("'never' cannot be combined with other outcomes", source, key)
    return frozenset(chosen)


def _as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _split_on(values: Iterable[str]) -> List[str]:
    """``--notify-on failure,busy --notify-on interrupted``: repeatable and comma-separated."""
    return [part for value in values for part in str(value).split(",")]


@dataclass(frozen=True)
class NotifySettings:
    """Who is told of a run's end, and how: the union of every source's rules.

    Build it with :meth:`from_mapping` (a ``notify:`` block), :meth:`from_args` (the
    command line) and :meth:`combine` (sources in precedence order). Every target is
    checked when parsed; :meth:`combine` also checks that mail has a server.

    Attributes:
        rules: each source's targets with the outcomes they are told of.
        smtp: the mail server (the first source that names one).
        sender: the ``From:`` of mails (default ``daq-run@<this host>``).
        timeout: seconds for every delivery at the end of a run, in all (default 5).
        heartbeat: the dead-man's switch, if any.
        on_override: outcomes that replace every rule's ``on`` (``--notify-on``).
    """

    rules: Tuple[Rule, ...] = ()
    smtp: Optional[SmtpServer] = None
    sender: Optional[str] = None
    timeout: Optional[float] = None
    heartbeat: Optional[HeartbeatSettings] = None
    on_override: Optional[FrozenSet[str]] = None

    def __bool__(self) -> bool:
        """False when there is nothing to send at all."""
        return bool(self.heartbeat) or any(rule.targets for rule in self.rules)

    @property
    def targets(self) -> List[Target]:
        """Every target once, in the order the sources name them."""
        return _unique(target for rule in self.rules for target in rule.targets)

    def targets_for(self, outcome: str) -> List[Target]:
        """The targets told of ``outcome`` (one of :data:`OUTCOMES`), each once."""
        return _unique(
            target
            for rule in self.rules
            if outcome in (self.on_override if self.on_override is not None else rule.on)
            for target in rule.targets
        )

    @property
    def delivery_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT_S

    # -- sources --------------------------------------------------------------------------------

    @classmethod
    def from_mapping(
        cls, block: Any, *, source: str = "notify", environ: Optional[Mapping[str, str]] = None
    ) -> "NotifySettings":
        """The settings of a ``notify:`` block (``None``: none).

        Keys: ``to`` (a target or a list: ``https://...`` webhooks, ``mailto:ADDRESS``),
        ``on`` (outcomes, default :data:`DEFAULT_ON`), ``smtp`` (see :meth:`SmtpServer.parse`),
        ``from``, ``timeout`` (1-60 s), ``heartbeat`` (a URL, or ``{url, every}``). A key
        ``true`` is taken for ``on`` (a YAML 1.1 reader turns ``on:`` into it).
        ``environ`` gives the SMTP password (:data:`SMTP_PASSWORD_ENV`; ``None``: not looked
        up, for validating a file on its own).

        Raises:
            NotifySettingsError: naming ``source`` and the key (``notify.to[1]``).
        """
        if block is None:
            return cls()
        if not isinstance(block, Mapping):
            raise _fail("notify: must be a mapping with to: (and on:, smtp:, from:, timeout:, heartbeat:)", source)
        items: Dict[str, Any] = {}
        for raw_key, value in block.items():
            name = "on" if raw_key is True else raw_key
            if name not in _BLOCK_KEYS:
                close = difflib.get_close_matches(str(name), _BLOCK_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _fail(f"unknown key{hint}; notify: takes {', '.join(_BLOCK_KEYS)}", source, (one_line(str(name), 40),))
            if name in items:
                raise _fail("'on' given twice", source, ("on",))
            items[name] = value
        if "to" not in items and "heartbeat" not in items:
            raise _fail("notify: needs to: (the targets) or heartbeat:", source)
        if "on" in items and "to" not in items:
            raise _fail("on: needs to: (the targets it applies to)", source, ("on",))
        targets = tuple(_parse_target(value, source, ("to", i) if isinstance(items["to"], list) else ("to",)) for i, value in enumerate(_as_list(items.get("to", []))))
        if "to" in items and not targets:
            raise _fail("no target given", source, ("to",))
        if len(targets) > _MAX_TARGETS:
            raise _fail(f"at most {_MAX_TARGETS} targets", source, ("to",))
        on = _parse_on(_as_list(items["on"]), source, ("on",)) if "on" in items else DEFAULT_ON
        smtp = SmtpServer.parse(items["smtp"], source, ("smtp",), environ) if "smtp" in items else None
        sender = _parse_sender(items["from"], source, ("from",)) if "from" in items else None
        timeout = _seconds(items["timeout"], "timeout", 1.0, _MAX_TIMEOUT_S, source, ("timeout",)) if "timeout" in items else None
        heartbeat = _parse_heartbeat_block(items["heartbeat"], source) if "heartbeat" in items else None
        rules = (Rule(targets, on, source),) if targets else ()
        return cls(rules, smtp, sender, timeout, heartbeat)

    @classmethod
    def from_args(
        cls,
        notify: Sequence[str] = (),
        notify_on: Union[Sequence[str], str, None] = (),
        smtp: Optional[str] = None,
        heartbeat: Optional[str] = None,
        heartbeat_every: Optional[float] = None,
        *,
        environ: Optional[Mapping[str, str]] = None,
    ) -> "NotifySettings":
        """The settings of the flags ``--notify TARGET`` (repeatable), ``--notify-on OUTCOME[,...]``
        (repeatable), ``--smtp SERVER``, ``--heartbeat URL`` and ``--heartbeat-every SECONDS``.

        ``--notify-on`` replaces ``on`` for every target, also those of a batch or profile
        (the command line has the last word, as ``--url`` does); ``--notify-on never``
        silences them all.

        Raises:
            NotifySettingsError: naming the flag.
        """
        targets = tuple(_parse_target(value, "--notify", ()) for value in notify or ())
        if len(targets) > _MAX_TARGETS:
            raise _fail(f"at most {_MAX_TARGETS} targets", "--notify")
        if isinstance(notify_on, str):
            notify_on = [notify_on]
        on_override = _parse_on(_split_on(notify_on), "--notify-on", ()) if notify_on else None
        server = SmtpServer.parse(smtp, "--smtp", (), environ) if smtp is not None else None
        if heartbeat_every is not None and heartbeat is None:
            raise _fail("--heartbeat-every only goes with --heartbeat", "--heartbeat-every")
        beat = HeartbeatSettings.parse(heartbeat, None, "--heartbeat") if heartbeat is not None else None
        if beat is not None and heartbeat_every is not None:
            every = _seconds(heartbeat_every, "the heartbeat's interval", _MIN_EVERY_S, _MAX_EVERY_S, "--heartbeat-every", ())
            beat = HeartbeatSettings(beat.url, every)
        rules = (Rule(targets, on_override if on_override is not None else DEFAULT_ON, "--notify"),) if targets else ()
        return cls(rules, server, None, None, beat, on_override)

    @classmethod
    def combine(cls, *sources: "NotifySettings") -> "NotifySettings":
        """One settings from several, given in precedence order (command line, profile, batch).

        Targets add up (each source's ``on`` applies to its own targets); ``--notify-on``,
        the SMTP server, ``from``, ``timeout`` and the heartbeat come from the first source
        that gives them.

        Raises:
            NotifySettingsError: a mail target without an SMTP server, or ``--notify-on``
                with no target anywhere.
        """
        def first(name: str) -> Any:
            return next((getattr(s, name) for s in sources if getattr(s, name) is not None), None)

        combined = cls(
            tuple(rule for s in sources for rule in s.rules),
            first("smtp"),
            first("sender"),
            first("timeout"),
            first("heartbeat"),
            first("on_override"),
        )
        mail = [t for t in combined.targets if t.kind == "mail"]
        if mail and combined.smtp is None:
            rule = next(r for r in combined.rules if mail[0] in r.targets)
            raise _fail(f"{mail[0]} needs an SMTP server: give --smtp HOST[:PORT] or smtp: in a notify: block", rule.source)
        if combined.on_override is not None and not combined.targets:
            raise _fail("no target to notify: give --notify TARGET (or to: in a notify: block)", "--notify-on")
        return combined


def _parse_sender(value: Any, source: str, key: Sequence[object]) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value.strip()):
        raise _fail(f"from: must be one mail address (NAME@HOST), not {one_line(repr(value), 60)}", source, key)
    return value.strip()


def _parse_heartbeat_block(value: Any, source: str) -> HeartbeatSettings:
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in _HEARTBEAT_KEYS]
        if unknown:
            raise _fail(f"unknown key {one_line(str(unknown[0]), 40)!r}; heartbeat: takes url, every", source, ("heartbeat",))
        if "url" not in value:
            raise _fail("heartbeat: needs url:", source, ("heartbeat",))
        return HeartbeatSettings.parse(value["url"], value.get("every"), source, ("heartbeat", "url"), ("heartbeat", "every"))
    return HeartbeatSettings.parse(value, None, source, ("heartbeat",))


def _unique(targets: Iterable[Target]) -> List[Target]:
    seen: Dict[Tuple[str, str], Target] = {}
    for target in targets:
        seen.setdefault((target.kind, target.address.lower() if target.kind == "mail" else target.address), target)
    return list(seen.values())


def notify_schema() -> Dict[str, Any]:
    """The JSON Schema of a ``notify:`` block (batch files, profiles), for editors: written
    from the same names the parser checks against."""
    target = {
        "type": "string",
        "pattern": "^(https?://|mailto:)",
        "description": "An http(s):// webhook (JSON POST; 'text' suits Slack and Mattermost) or mailto:ADDRESS.",
    }
    outcome = {"enum": list(ON_CHOICES)}
    return {
        "description": "Who is told how the run ended (see docs/notifications.md).",
        "type": "object",
        "properties": {
            "to": {"anyOf": [target, {"type": "array", "items": target, "minItems": 1, "maxItems": _MAX_TARGETS}]},
            "on": {
                "anyOf": [outcome, {"type": "array", "items": outcome, "minItems": 1}],
                "description": "When: every outcome but a pass by default; 'always' includes a pass, 'never' silences.",
            },
            "smtp": {"type": "string", "description": "HOST[:PORT], smtp+starttls://[USER@]HOST[:PORT] or smtps://... (password: $%s)." % SMTP_PASSWORD_ENV},
            "from": {"type": "string", "description": "The sender of mails (default daq-run@<this host>)."},
            "timeout": {"type": "number", "minimum": 1, "maximum": _MAX_TIMEOUT_S, "description": "Seconds for every delivery at the end, in all."},
            "heartbeat": {
                "anyOf": [
                    {"type": "string", "pattern": "^https?://"},
                    {
                        "type": "object",
                        "required": ["url"],
                        "properties": {
                            "url": {"type": "string", "pattern": "^https?://"},
                            "every": {"type": "number", "minimum": _MIN_EVERY_S, "maximum": _MAX_EVERY_S},
                        },
                        "additionalProperties": False,
                    },
                ],
                "description": "A dead-man's switch: URL/start, URL every 'every' seconds, URL or URL/fail at the end.",
            },
        },
        "additionalProperties": False,
    }
