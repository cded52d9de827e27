"""Which DAQ a run drives: its URLs, where each came from, and the checks they pass.

One DAQ per run: its URLs come together from one source, in this order (:func:`resolve_target`):

1. ``url`` / ``redis`` (``daq-run --url`` / ``--redis``);
2. ``daq``: a named DAQ from a profile file (``--daq NAME``; the file is ``profiles``
   (``--profiles``), else ``$DAQ_RUNNER_PROFILES``, else ``config/daqs.yaml``);
3. the environment: ``$STD_DAQ_API_URL`` with ``$STD_DAQ_REDIS_URL``;
4. the batch's ``daq:`` block;
5. ``http://127.0.0.1:5000``.

An explicit URL or profile is never outranked by the environment. A source that names only
the REST URL gets the Redis on the same host, port 6379, and the target says that the
address was derived, not given (:attr:`DaqTarget.redis_derived`). A Redis URL from one
source with a REST URL from another is refused. ``$STD_DAQ_REDIS_PASSWORD`` gives the Redis
password without putting it on the command line, where ``ps`` shows it.

A profile file (read as YAML 1.2, as batch files are: ``on:`` stays the key ``on``)::

    daqs:
      my-daq:
        url: http://daq-host:5000
        redis: redis://daq-host:6379/0
        notify: {to: [mailto:ops@example.org], smtp: mail.example.org}   # optional
      my-driver: {url: ws://daq-host:8080, config_url: http://daq-host:5000, config_user: e12345}
      beamline-daq: {url: http://x12-daq:5000, allow_commands: true}

A profile's ``notify:`` block (see :mod:`daq_runner.notify`) comes with the DAQ as
:attr:`DaqTarget.notify`, whichever source gave the URLs. ``allow_commands: true`` lets
batches run against that DAQ hold ``run:`` steps (programs run on this machine), as
``daq-run --allow-commands`` does (:func:`profile_allows_commands`).

The DAQ generation follows from the URL's scheme (:data:`GENERATIONS`, :func:`generation_of`):
``http(s)://`` is the rest_v2 Standard DAQ (REST API and Redis), ``ws(s)://`` the current
generation (``std_det_driver``'s WebSocket, plus its config REST, ``config_url``, default the
driver's host on port 5000, and the user name it records changes under, ``config_user``). The
current generation has no Redis: none is derived for it; one given (``--redis``) holds the
runner lock, and without one the run is unlocked. :func:`daq_class` is the
:class:`~daq_runner.daq.Daq` of each generation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Type

from .daq import DRIVER, REST_V2
from .exceptions import SetupError

if TYPE_CHECKING:  # pragma: no cover
    from .daq import Daq

__all__ = [
    "DaqTarget",
    "resolve_target",
    "generation_of",
    "daq_class",
    "profile_allows_commands",
    "GENERATIONS",
    "REST_V2",
    "DRIVER",
    "DEFAULT_PROFILES",
    "PROFILES_ENV",
    "URL_ENV",
    "REDIS_ENV",
    "REDIS_PASSWORD_ENV",
]

GENERATIONS: Mapping[str, str] = {"http": REST_V2, "https": REST_V2, "ws": DRIVER, "wss": DRIVER}
"""The DAQ generation a DAQ URL's scheme names."""

DEFAULT_PROFILES = os.path.join("config", "daqs.yaml")
PROFILES_ENV = "DAQ_RUNNER_PROFILES"
URL_ENV = "STD_DAQ_API_URL"
REDIS_ENV = "STD_DAQ_REDIS_URL"
REDIS_PASSWORD_ENV = "STD_DAQ_REDIS_PASSWORD"
_MAX_PROFILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DaqTarget:
    """The DAQ of a run.

    Attributes:
        url: the DAQ's URL (rest_v2: its REST API, e.g. ``http://daq-host:5000``; the
            current generation: its driver, e.g. ``ws://daq-host:8080``).
        redis: its Redis URL, with the password of ``$STD_DAQ_REDIS_PASSWORD`` if one was
            given that way; ``None``: no Redis (rest_v2: REST is polled; no runner lock).
        url_source, redis_source: where each came from, for people (the header, the
            report's ``daq.url_source`` / ``daq.redis_source``).
        redis_derived: the Redis address was not given by anyone: it is the REST URL's host
            on port 6379.
        generation: the DAQ generation (:data:`GENERATIONS`): ``rest_v2`` or ``driver``.
        config_url, config_user: the current generation's config REST and the user name it
            records changes under (``None`` for rest_v2; ``config_user`` ``None``: the
            client's default); config_url_source: where the config URL came from.
        notify: the ``notify:`` block of the DAQ's profile (``--daq NAME``), as written;
            notify_source: where it is (``config/daqs.yaml: daqs.NAME``), for messages.
    """

    url: str
    redis: Optional[str]
    url_source: str
    redis_source: str
    redis_derived: bool = False
    generation: str = REST_V2
    config_url: Optional[str] = None
    config_user: Optional[str] = None
    config_url_source: Optional[str] = None
    notify: Optional[Dict[str, Any]] = None
    notify_source: Optional[str] = None

    def describe(self) -> str:
        """``DAQ http://h:5000 (from --url/--redis), Redis redis://h:6379/0 (from ...)`` (the
        current generation: its config REST too), credentials as ``***``."""
        from ._text import redact_url

        from ._text import said_with_source

        config = f", config REST {redact_url(self.config_url)} (from {self.config_url_source})" if self.config_url else ""
        return f"DAQ {redact_url(self.url)} (from {self.url_source}){config}, Redis {said_with_source(redact_url(self.redis), self.redis_source)}"

    @property
    def daq_class(self) -> "Type[Daq]":
        """The :class:`~daq_runner.daq.Daq` of its generation (what its steps may ask: ``features``)."""
        return daq_class(self.generation)

    def redis_hint(self) -> str:
        """How the Redis address was chosen and how to give another: for a message about a
        Redis that did not answer or refused."""
        from ._text import redact_url

        if self.redis is None:
            return ""
        if self.redis_derived:
            return (
                f"the Redis address {redact_url(self.redis)} was not given but {self.redis_source}: "
                "give the DAQ's Redis with --redis URL (or --daq NAME, $STD_DAQ_REDIS_URL, the batch's daq.redis), "
                "or run without Redis with --no-redis"
            )
        return f"Redis {redact_url(self.redis)} from {self.redis_source}; --no-lock runs without the lock, --no-redis without Redis at all"


class _Source(NamedTuple):
    name: str
    url: Optional[str]
    redis: Optional[str]
    config_url: Optional[str] = None
    config_user: Optional[str] = None
    notify: Optional[Dict[str, Any]] = None
    notify_source: Optional[str] = None

    @property
    def given(self) -> bool:
        return bool(self.url or self.redis or self.config_url or self.config_user)


def generation_of(url: str) -> str:
    """The DAQ generation a URL's scheme names (:data:`GENERATIONS`; anything else: rest_v2,
    whose client then says what is wrong with the URL)."""
    from urllib.parse import urlsplit

    try:
        return GENERATIONS.get(urlsplit(url).scheme.lower(), REST_V2)
    except (ValueError, AttributeError):
        return REST_V2


def generation_traits(generation: str) -> type:
    """A class with what ``generation`` has (``generation``, ``title``, ``features``,
    ``config_restart_s``, as :class:`~daq_runner.daq.Daq` declares them), loaded without what
    it needs to run: validating a rest_v2 batch imports no Redis client."""
    if generation == DRIVER:
        return daq_class(DRIVER)
    from .rest_v2._reads import RestV2Reads

    return RestV2Reads


def daq_class(generation: str) -> "Type[Daq]":
    """The :class:`~daq_runner.daq.Daq` of ``generation`` (imported when asked)."""
    if generation == DRIVER:
        from .det_driver_daq import DriverDaq

        return DriverDaq
    from .rest_v2 import RestV2Daq

    return RestV2Daq


def resolve_target(
    *,
    url: Optional[str] = None,
    redis: Optional[str] = None,
    no_redis: bool = False,
    daq: Optional[str] = None,
    profiles: Optional[str] = None,
    batch: Any = None,
    environ: Optional[Mapping[str, str]] = None,
    config_url: Optional[str] = None,
    config_user: Optional[str] = None,
) -> DaqTarget:
    """The DAQ of a run, from the sources in the order of the module docstring.

    Args:
        url, redis: given explicitly (``--url``, ``--redis``).
        no_redis: use no Redis at all (``--no-redis``).
        daq: the name of a DAQ in the profile file (``--daq``); profiles: that file.
        batch: the :class:`~daq_runner.batch.Batch`, for its ``daq:`` block.
        environ: the environment to read (``STD_DAQ_API_URL``, ``STD_DAQ_REDIS_URL``,
            ``STD_DAQ_REDIS_PASSWORD``, ``DAQ_RUNNER_PROFILES``); ``None`` reads none. The
            command line passes ``os.environ``.
        config_url, config_user: a current-generation DAQ's config REST and user name, given
            explicitly (``--config-url``, ``--config-user``): they go with ``url``.

    Raises:
        SetupError: one line: contradictory options, a profile file that cannot be read or
            has no such DAQ, URLs from two sources, a config REST for a rest_v2 DAQ, a URL
            that is not usable (credentials in messages are ``***``).
    """
    from . import protocol

    env = environ if environ is not None else {}
    if daq and url:
        raise SetupError("--daq and --url both name a DAQ; give one of them")
    if no_redis and redis:
        raise SetupError("--no-redis and --redis contradict each other")
    levels: List[_Source] = [_Source("--url/--redis", url, redis, config_url, config_user)]
    profile = None
    if daq:
        profile = _profile(profiles or env.get(PROFILES_ENV) or DEFAULT_PROFILES, daq)
        levels.append(profile)
    levels.append(_Source(f"environment ({URL_ENV}/{REDIS_ENV})", env.get(URL_ENV) or None, env.get(REDIS_ENV) or None))
    if batch is not None:
        block = batch.daq
        levels.append(_Source(f"the batch's daq: ({batch.path})", block.get("url"), block.get("redis"), block.get("config_url"), block.get("config_user")))
    top = next((level for level in levels if level.given), None)
    url_source = redis_source = "default"
    chosen_url, chosen_redis = protocol.DEFAULT_URL, None
    if top is not None and top.url:
        chosen_url, url_source = top.url, top.name
        if top.redis:
            chosen_redis, redis_source = top.redis, top.name
    elif top is not None:  # a Redis URL (or config REST) without a DAQ URL at the same level
        lower = next((level for level in levels[levels.index(top) + 1 :] if level.url), None)
        what = "Redis URL" if top.redis else "config REST"
        if lower is not None:
            raise SetupError(
                f"the {what} comes from {top.name} but the {'REST' if top.redis else 'DAQ'} URL would come from {lower.name}: "
                "give both from one source (e.g. --url and --redis) so that they belong to one DAQ"
            )
        if not top.redis:
            raise SetupError(f"a config REST (from {top.name}) goes with the URL of a current-generation DAQ's driver (ws://HOST:8080): give it too")
        chosen_redis, redis_source = top.redis, top.name
    generation = _generation(chosen_url)
    # Imported here: redis-py loads only when a DAQ is resolved (--help stays fast).
    from ._redis import check_redis_url, default_redis_url, with_password

    chosen_redis = with_password(chosen_redis, env.get(REDIS_PASSWORD_ENV))
    derived = False
    if no_redis:
        chosen_redis, redis_source = None, "--no-redis"
    elif chosen_redis is None and generation == DRIVER:
        redis_source = "none: this DAQ generation has no Redis; the run is unlocked (--redis URL puts the runner lock in one)"
    elif chosen_redis is None:
        chosen_redis = default_redis_url(chosen_url)
        redis_source = f"derived from the REST URL (its host, port {protocol.DEFAULT_REDIS_PORT})"
        derived = True
    else:
        try:
            check_redis_url(chosen_redis)
        except ValueError as exc:
            raise SetupError(str(exc)) from None
    notify = profile.notify if profile is not None else None
    source = profile.notify_source if profile is not None else None
    target = DaqTarget(chosen_url, chosen_redis, url_source, redis_source, derived, generation, notify=notify, notify_source=source)
    chosen_config = top.config_url if top is not None else None
    chosen_user = top.config_user if top is not None else None
    if generation != DRIVER:
        if chosen_config or chosen_user:
            raise SetupError(
                f"a config REST and its user go with a current-generation DAQ (ws://HOST:8080); {target.url!r} is a rest_v2 DAQ, "
                "configured through its own REST API"
            )
        return target
    return _with_config_rest(target, chosen_config, chosen_user, url_source)


def _with_config_rest(target: DaqTarget, config_url: Optional[str], config_user: Optional[str], source: str) -> DaqTarget:
    """``target`` (a current-generation DAQ) with its config REST: given, or its driver's host on port 5000."""
    from dataclasses import replace

    from .client import check_url
    from .det_driver_protocol import CONFIG_PORT, default_config_url

    config_source = source
    if not config_url:
        config_url, config_source = default_config_url(target.url), f"derived from the driver's URL (its host, port {CONFIG_PORT})"
    _check_url(config_url, ("http", "https"), "config REST URL")
    try:
        check_url(config_url)
    except ValueError as exc:
        raise SetupError(f"config REST URL: {exc}") from None
    if config_user is not None and not (isinstance(config_user, str) and config_user.strip()):
        raise SetupError("the config REST's user name must not be empty")
    return replace(target, config_url=config_url, config_user=config_user, config_url_source=config_source)


def _generation(url: str) -> str:
    """The generation of the DAQ at ``url``, once the URL is checked."""
    generation = generation_of(url)
    if generation == DRIVER:
        from .det_driver import check_ws_url

        try:
            check_ws_url(url)
        except ValueError as exc:
            raise SetupError(f"DAQ URL: {exc}") from None
        return generation
    _check_url(url, tuple(GENERATIONS), "DAQ URL")
    from .client import check_url

    try:
        check_url(url)  # the client's own rules too (no query or fragment: endpoints are appended)
    except ValueError as exc:
        raise SetupError(f"DAQ URL: {exc}") from None
    return generation


def profile_allows_commands(*, daq: Optional[str], profiles: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether the profile of the DAQ named ``daq`` (``--daq NAME``; the profile file as for
    :func:`resolve_target`) allows ``run:`` steps: its ``allow_commands: true``. ``False``
    without ``daq``.

    Raises:
        SetupError: the profile file cannot be read, has no such DAQ, or its
            ``allow_commands`` is not true or false.
    """
    if not daq:
        return False
    env = environ if environ is not None else {}
    path = profiles or env.get(PROFILES_ENV) or DEFAULT_PROFILES
    allowed = _profile_entry(path, daq).get("allow_commands", False)
    if not isinstance(allowed, bool):
        raise SetupError(f"DAQ {daq!r} in {path}: allow_commands must be true or false, not {allowed!r}")
    return allowed


def _profile(path: str, name: str) -> _Source:
    entry = _profile_entry(path, name)
    if not isinstance(entry.get("url"), str):
        raise SetupError(f"DAQ {name!r} in {path} has no url")

    def text(key: str) -> Optional[str]:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise SetupError(f"DAQ {name!r} in {path}: {key} must be text")
        return value

    notify = entry.get("notify")
    where = f"{path}: daqs.{name}"
    if notify is not None:
        from .notify import NotifySettings

        NotifySettings.from_mapping(notify, source=where)  # checked now; the password is looked up by the run
    return _Source(
        f"--daq {name} ({path})", entry["url"], text("redis"), text("config_url"), text("config_user"),
        notify, where if notify is not None else None,
    )  # fmt: skip


def _profile_entry(path: str, name: str) -> Dict[str, Any]:
    from ._fields import plain
    from ._yaml import load_yaml
    from .exceptions import BatchValidationError

    # YAML 1.2, as batch files: a notify: block's on: stays a key, NO and 0123 stay what was typed.
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(_MAX_PROFILE_BYTES)
        profiles = plain(load_yaml(text, path)) if text.strip() else {}
    except OSError as exc:
        raise SetupError(f"cannot read profile file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SetupError(f"profile file {path} is not UTF-8 text") from None
    except BatchValidationError as exc:  # file:line:column: reason
        raise SetupError(f"profile file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    daqs = profiles.get("daqs") if isinstance(profiles, dict) else None
    if not isinstance(daqs, dict) or name not in daqs or not isinstance(daqs[name], dict):
        known = ", ".join(sorted(map(str, daqs))) if isinstance(daqs, dict) else "none"
        raise SetupError(f"no DAQ named {name!r} in {path} (known: {known})")
    return daqs[name]


def _check_url(url: str, schemes: Sequence[str], what: str) -> str:
    from ._text import check_url_shape

    try:
        return check_url_shape(url, schemes, what)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
