"""The exit codes of every command of daq-runner, one enum per tool, written down once.

The exit-code tables of README.md and docs/ (checked by tests), the ``--help`` epilogues and the tools themselves take them from here.
Codes that mean the same thing have the same number in every tool (2 is always bad usage, 3 a
DAQ that cannot be reached, 130 an interruption by Ctrl-C).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Dict, Optional

__all__ = ["ExitCode", "RunExit", "StdCliExit", "SimExit", "ShowExit", "SIGNAL_EXITS", "signal_exit", "RunEnding", "run_exit"]


class ExitCode(IntEnum):
    """An exit code and what it means (``meaning``: lower case, no final period)."""

    meaning: str

    def __new__(cls, value: int, meaning: str = "") -> "ExitCode":
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    @classmethod
    def describe(cls) -> str:
        """``0 every step passed; 1 ...``: for ``--help`` epilogues."""
        return "; ".join(f"{code.value} {code.meaning}" for code in cls)


class RunExit(ExitCode):
    """``daq-run``."""

    PASSED = 0, "every step passed"
    FAILED = 1, "a step failed, or the report could not be written completely"
    USAGE = 2, "invalid batch file or usage, or a report that could not be written where it would go"
    UNREACHABLE = 3, "the DAQ was unreachable before the first step or beyond --max-outage, or what answers is not a Standard DAQ"
    LOCKED = 4, "another runner holds the DAQ's lock, the lock could not be taken, or it was lost"
    SIGINT = 130, "interrupted by SIGINT (Ctrl-C)"
    SIGTERM = 143, "interrupted by SIGTERM or SIGHUP"


class StdCliExit(ExitCode):
    """The nine ``std_cli_*`` tools."""

    OK = 0, "success"
    DAQ = 1, "the DAQ refused or answered wrongly, a deployment failed, or the acquisition FAILED"
    USAGE = 2, "bad usage, a URL that is not http(s), or an unreadable or invalid config file"
    UNREACHABLE = 3, "the DAQ unreachable, not done within --timeout, or the reply to a write start or a config lost"
    LOCKED = 4, "a runner holds the DAQ's lock (the tools that write, stop or configure; --force goes ahead)"
    INTERRUPTED = 130, "interrupted"


class SimExit(ExitCode):
    """``daq-sim``."""

    STOPPED = 0, "stopped by Ctrl-C or SIGTERM"
    START_FAILED = 1, "could not start (port in use, a server that dies at start)"
    USAGE = 2, "bad usage or config file, or the sim extra or a Redis-compatible server missing"


class ShowExit(ExitCode):
    """``daq-run show``."""

    SHOWN = 0, "the report was shown (or the page written); with several reports: and every run passed"
    FAILED = 1, "the page could not be written; with several reports also: a run did not pass, or a report could not be read"
    WRITE_FAILED = 1  # the same code: FAILED
    USAGE = 2, "not a report or unreadable (one report given), or bad usage"


SIGNAL_EXITS: Dict[str, RunExit] = {"SIGINT": RunExit.SIGINT, "SIGTERM": RunExit.SIGTERM, "SIGHUP": RunExit.SIGTERM}
"""The exit of a run ended by a signal, by the signal's name (SIGHUP counts as SIGTERM)."""


def signal_exit(name: str) -> RunExit:
    """The exit code of a run ended by the signal ``name`` (an unknown name counts as SIGINT)."""
    return SIGNAL_EXITS.get(name, RunExit.SIGINT)


@dataclass(frozen=True)
class RunEnding:
    """How a run of ``daq-run`` ended, as far as its exit code is concerned.

    The Runner knows it as the run ends (:meth:`daq_runner.runner.Runner.at_end` hooks get it
    before ``run_finished``), and the command line exits with :attr:`exit_code`, so that a
    notification sent at the end names the exit the run will get.

    Attributes:
        status: ``passed``, ``failed`` or ``interrupted``.
        reason: why it did not pass (``None`` when it passed).
        daq_unreachable: the DAQ stayed unreachable (at the start or beyond the outage budget).
        lock_lost: why the runner lock was lost during the run, or ``None``.
        lock_refused: the lock could not be taken at the start (another runner holds it, or
            its Redis did not allow it): nothing was run.
        stop_reason: what asked the run to stop, first: a signal's name (``SIGTERM``) for a
            run stopped by a signal.
        report_incomplete: the report (or the JUnit file) could not be written completely.
    """

    status: str
    reason: Optional[str] = None
    daq_unreachable: bool = False
    lock_lost: Optional[str] = None
    lock_refused: bool = False
    stop_reason: Optional[str] = None
    report_incomplete: bool = False

    @property
    def exit_code(self) -> "RunExit":
        """The exit code of ``daq-run`` for this ending (:func:`run_exit`)."""
        return run_exit(self)


def run_exit(ending: RunEnding) -> RunExit:
    """The exit code of a run that ended as ``ending``, the rule written once.

    The lock first (refused at the start, or lost: 4), then a signal (130 or 143, by the
    first signal's name), then a DAQ that stayed unreachable (3); otherwise 0 for a run that
    passed with its whole report written, else 1.
    """
    if ending.lock_refused or ending.lock_lost is not None:
        return RunExit.LOCKED
    if ending.status == "interrupted":
        return signal_exit(ending.stop_reason or "SIGINT")
    if ending.daq_unreachable:
        return RunExit.UNREACHABLE
    if ending.status == "passed" and not ending.report_incomplete:
        return RunExit.PASSED
    return RunExit.FAILED
