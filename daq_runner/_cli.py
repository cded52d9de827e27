"""What the command-line tools of daq-runner share: one-line usage errors, output that a
broken pipe cannot end, and the logging set-up (configured here only, never in the library)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from ._streams import to_devnull
from .exit_codes import RunExit

__all__ = ["OneLineArgumentParser", "say", "warn", "log_line", "configure_json_logging", "error_line"]

# Bad usage has one code in every tool (exit_codes): any tool's USAGE will do.
_USAGE = RunExit.USAGE


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(_USAGE)


def say(text: str) -> None:
    """Print a line on stdout; a reader that went away (``| head``) does not end the command."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        to_devnull(sys.stdout)


def warn(text: str) -> None:
    """Print a line on stderr; a broken or full stderr does not end the command."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        to_devnull(sys.stderr)


def error_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line of at most 500 characters, credentials as ``***``."""
    from ._text import redact_text

    return " ".join(redact_text(str(exc)).split())[:500]


def configure_json_logging(verbose: bool) -> None:
    """Structured JSON log lines on stderr (``-v``: debug lines too)."""
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.JSONRenderer(sort_keys=False, default=str, ensure_ascii=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        cache_logger_on_first_use=True,
    )


def _timestamp(logger: Any, method: str, event_dict: Any) -> Any:
    """Each JSON log line's ``timestamp``, in the one format of the report's times
    (``2026-11-29T18:44:55.123Z``)."""
    import time

    from .record import iso

    event_dict["timestamp"] = iso(time.time())
    return event_dict


def log_line(event: str, **fields: Any) -> None:
    """One more JSON log line (after :func:`configure_json_logging`); a broken stderr is ignored."""
    import structlog

    try:
        structlog.get_logger("daq_runner").info(event, **fields)
    except (OSError, ValueError):
        to_devnull(sys.stderr)
