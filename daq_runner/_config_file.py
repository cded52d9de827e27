"""DAQ config files, JSON or YAML, read by one set of rules (``std_cli_set_config``, ``daq-sim --config``).

A config file is a regular file of at most :data:`MAX_CONFIG_BYTES`, UTF-8 text (a byte order
mark is allowed) holding one mapping of config fields. It is read as batch files are: YAML 1.2
(core schema), of which JSON is a subset, so ``{"bit_depth": 16}`` and ``bit_depth: 16`` mean
the same, ``NO`` stays text, duplicate keys, tags, merge keys, alias bombs and non-finite
numbers (``.nan``, ``1e999``) are refused, and nesting is limited to :data:`MAX_CONFIG_DEPTH`
levels (a DAQ reply deeper than that is refused by the client too).

Opening never blocks: a FIFO, a device (``/dev/zero``) or a directory is refused before anything
is read. Light on purpose (no simulator, no HTTP): ``daq-sim --help`` and the std_cli tools
import it.
"""

from __future__ import annotations

import json
import os
import stat

from . import protocol
from ._text import quote
from ._yaml import load_yaml
from .exceptions import BatchValidationError

__all__ = ["load_config_file", "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH"]

# A DAQ config is a few hundred bytes, three levels deep.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = protocol.MAX_REPLY_DEPTH


def load_config_file(path: str) -> dict:
    """The config mapping in ``path`` as plain dicts, lists and JSON scalars.

    Raises:
        ValueError: one line naming the file and what is wrong with it (missing, not a regular
            file, too large, not UTF-8, invalid JSON or YAML with line and column, not a
            mapping, nested too deeply).
    """
    shown = repr(quote(path))
    data = _read_bounded(path, shown)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {shown} is not UTF-8 text: {quote(exc)}") from None
    if not text.strip():
        raise ValueError(f"config file {shown} is empty")
    try:
        config = load_yaml(text, quote(path), max_depth=MAX_CONFIG_DEPTH)
    except BatchValidationError as exc:  # file:line:column: reason
        raise ValueError(f"config file {quote(str(exc).splitlines()[0], limit=None)}") from None
    if not isinstance(config, dict):
        raise ValueError(f"config file {shown} must hold a mapping of config fields (a JSON object), not {protocol._json_kind(config)}")
    return json.loads(json.dumps(config))  # plain dicts and lists, keys as text


def _read_bounded(path: str, shown: str) -> bytes:
    """At most ``MAX_CONFIG_BYTES`` of the regular file ``path``."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ValueError(f"config file {shown} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"config file {shown} is a directory") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read config file {shown}: {quote(getattr(exc, 'strerror', None) or exc)}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ValueError(f"config file {shown} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"config file {shown} is not a regular file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"config file {shown} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read config file {shown}: {quote(exc.strerror or exc)}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:  # it grew while being read
        raise ValueError(f"config file {shown} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    return data
