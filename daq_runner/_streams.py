"""Standard streams that broke under a running command."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["to_devnull"]


def to_devnull(stream: Any) -> None:
    """Point the descriptor of ``stream`` (e.g. ``sys.stdout``) at /dev/null, after ``EPIPE``
    (piped into ``head``), a closed terminal or a full disk.

    Later writes, and Python's own flush at exit, then succeed silently instead of failing
    again (a second error, a traceback at exit): the command ends normally and its exit code
    still says how it went. A stream without a descriptor is left as it is.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    except OSError:
        pass
