"""Run a program for a batch step, bounded: ``run: {command: [...], timeout: S, expect_exit: 0, env: {...}}``.

A batch talks only to the DAQ; a motor move or a beamline script between two writes is a
program run here. Unattended, it must not outlive its step or the run:

- no shell: ``command`` is the program and its arguments, the program found on ``PATH``
  (that of the environment it gets);
- its own session and process group, stdin from ``/dev/null``; the environment is ours
  with ``env`` added;
- ended, the whole group (children it forked too), by ``SIGTERM`` and after a grace
  (:data:`TERM_GRACE_S`) ``SIGKILL``, when its ``timeout`` passes, or the bound in force
  (:func:`daq_runner._deadline.bounded`: the step's time, the run's cancel event) ends or is
  cancelled. Processes of its group still running when it exits are ended the same way;
- stdout and stderr merged; only the last :data:`TAIL_LINES` lines are kept, each at most
  :data:`~daq_runner._text.MAX_QUOTE` characters, so memory stays flat however much it
  prints; undecodable bytes replaced, control characters escaped and URL credentials masked
  (:func:`daq_runner._text.quote`), ready for a report.

Example::

    with bounded(Deadline(step_timeout, cancel=stop_event)):
        result = run_command(["move-motor", "x", "12.5"], timeout=60, env={"BEAMLINE": "X12"})
    if not result.passed:
        fail(result.reason)
"""

from __future__ import annotations

import collections
import math
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _deadline
from ._text import MAX_QUOTE, one_line, quote, redact_text

__all__ = ["CommandOutcome", "CommandResult", "run_command", "TAIL_LINES", "TERM_GRACE_S"]

# How long a program gets between SIGTERM and SIGKILL: enough to close files and release a
# device, short enough that a step's timeout stays a timeout.
TERM_GRACE_S = 2.0
# Lines of output kept (the last ones): what a report shows of a program that failed.
TAIL_LINES = 20

_POLL_S = 0.05  # how often the exit, the time and the cancel event are looked at, at most
_READ = 1 << 16
# A line longer than this is cut when it comes in (bytes): enough for any line a report shows.
_LINE_BYTES = 4 * MAX_QUOTE
_KILLED_S = 2.0  # after SIGKILL: how long the group may take to be gone
_DRAIN_S = 1.0  # after the end: how long output still held open by a stray process is read


class CommandOutcome(str, Enum):
    """How a program ended."""

    EXITED = "exited"  # on its own (exit code, or a signal it did not get from us)
    TIMED_OUT = "timed_out"  # its timeout, or the bound in force, ran out: ended by us
    CANCELLED = "cancelled"  # the cancel event of the bound in force: ended by us
    NOT_STARTED = "not_started"  # the program could not be started


@dataclass(frozen=True)
class CommandResult:
    """What a program did.

    Attributes:
        command: the program and its arguments (URL credentials masked).
        outcome: how it ended (:class:`CommandOutcome`).
        exit_code: its exit status; ``-N`` when a signal N ended it (as :mod:`subprocess`
            says); ``None`` when it did not start.
        expect_exit: the exit status that counts as success.
        duration_s: seconds from its start to its end (group ended and reaped).
        output: its last lines (stdout and stderr merged), escaped for a report.
        output_lines: how many lines it printed in all (``len(output)`` of them are kept).
        reason: one line: how it ended, and why that is a failure if it is one.
    """

    command: Tuple[str, ...]
    outcome: CommandOutcome
    exit_code: Optional[int]
    expect_exit: int
    duration_s: float
    output: Tuple[str, ...]
    output_lines: int
    reason: str

    @property
    def passed(self) -> bool:
        """It exited on its own with ``expect_exit``."""
        return self.outcome is CommandOutcome.EXITED and self.exit_code == self.expect_exit

    def to_json(self) -> Dict[str, Any]:
        return {
            "command": list(self.command),
            "outcome": self.outcome.value,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "expect_exit": self.expect_exit,
            "duration_s": round(self.duration_s, 3),
            "output": list(self.output),
            "output_lines": self.output_lines,
            "reason": self.reason,
        }


class _Tail:
    """The last lines of a byte stream and how many there were, in bounded memory.

    Lines are kept as bytes (at most ``_LINE_BYTES`` each) and made text only at the end:
    a program printing millions of lines costs a split per read, not a decode per line.
    """

    def __init__(self, keep: int) -> None:
        self._raw: Deque[Tuple[bytes, bool]] = collections.deque(maxlen=keep)  # (line, was cut)
        self.count = 0
        self._partial = bytearray()
        self._cut = False

    def feed(self, data: bytes) -> None:
        pieces = data.split(b"\n")
        self._extend(pieces[0])
        if len(pieces) == 1:
            return
        self._end_line()
        complete = pieces[1:-1]
        self.count += len(complete)
        for piece in complete[-self._raw.maxlen :] if self._raw.maxlen else ():
            self._raw.append((piece[:_LINE_BYTES], len(piece) > _LINE_BYTES))
        self._extend(pieces[-1])

    def _extend(self, piece: bytes) -> None:
        room = _LINE_BYTES - len(self._partial)
        if len(piece) > room:
            piece, self._cut = piece[: max(room, 0)], True
        self._partial += piece

    def _end_line(self) -> None:
        self._raw.append((bytes(self._partial), self._cut))
        self.count += 1
        self._partial.clear()
        self._cut = False

    def close(self) -> Tuple[str, ...]:
        """The lines kept, as one-line printable text (a last line without newline included)."""
        if self._partial or self._cut:
            self._end_line()
        return tuple(self._text(raw, cut) for raw, cut in self._raw)

    @staticmethod
    def _text(raw: bytes, cut: bool) -> str:
        text = quote(raw.rstrip(b"\r").decode("utf-8", "replace"))
        if cut and not text.endswith("..."):
            text = text[: MAX_QUOTE - 3].rstrip() + "..."
        return text


def _argv(command: Sequence[Any]) -> List[str]:
    if isinstance(command, (str, bytes)) or not isinstance(command, Sequence) or not command:
        raise ValueError("command must be a list: the program and its arguments")
    argv = []
    for i, arg in enumerate(command):
        if isinstance(arg, bool) or not isinstance(arg, (str, int, float, os.PathLike)):
            raise ValueError(f"command[{i}] must be text or a number, not {type(arg).__name__}")
        text = os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg)
        if not isinstance(text, str) or "\0" in text:
            raise ValueError(f"command[{i}] must be text without NUL characters")
        argv.append(text)
    if not argv[0]:
        raise ValueError("command[0], the program, is empty")
    return argv


def _environment(env: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    merged = dict(os.environ)
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ValueError(f"env: {one_line(repr(name))} is not a variable name")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or "\0" in str(value):
            raise ValueError(f"env: {name} must be text or a number without NUL characters")
        merged[name] = str(value)
    return merged


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stop_group(pgid: int, proc: "subprocess.Popen[bytes]", grace: float) -> None:
    """SIGTERM to the group, SIGKILL to what is left after ``grace``; the leader reaped."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    end = time.monotonic() + grace
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # The leader is gone (or ignores TERM); its children may not be. Wait for the group to
    # empty for the rest of the grace. (The group's id cannot have been reused by then: a
    # new group of that id needs the pid, freed only just now, to come round again.)
    while proc.returncode is not None and time.monotonic() < end and _group_alive(pgid):
        time.sleep(_POLL_S / 5)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    # SIGKILL is delivered at once but a process takes a moment to die: the step ends when the
    # group is gone, so that nothing it started still runs when the next step begins.
    end = time.monotonic() + _KILLED_S
    while time.monotonic() < end and _group_alive(pgid):
        time.sleep(_POLL_S / 5)


def _group_alive(pgid: int) -> bool:
    """Does a process of group ``pgid`` still run?

    On Linux, from ``/proc``: zombies do not count (a container whose first process does not
    reap orphans keeps them forever, and they hold nothing). Elsewhere ``killpg(pgid, 0)``.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = None
    if entries is not None and os.path.exists("/proc/self/stat"):
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
            except OSError:  # gone meanwhile
                continue
            # After "pid (comm)": state, ppid, pgrp, ...
            if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed its user: it is there
        return True
    return True


def _finite_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, not {value!r}")
    return float(value)


def run_command(
    command: Sequence[Union[str, int, float, "os.PathLike[str]"]],
    *,
    timeout: float,
    expect_exit: int = 0,
    env: Optional[Mapping[str, Union[str, int, float]]] = None,
    grace_s: float = TERM_GRACE_S,
    tail_lines: int = TAIL_LINES,
) -> CommandResult:
    """Run ``command`` to its end, at most ``timeout`` seconds, and say how it went.

    Args:
        command: the program (found on ``PATH``) and its arguments; numbers become text.
        timeout: seconds it may run (finite, > 0); the bound in force may end it earlier.
        expect_exit: the exit status that counts as success (0 to 255).
        env: variables added to this process's environment for it (text or numbers).
        grace_s: seconds between SIGTERM and SIGKILL when it has to be ended.
        tail_lines: how many of its last output lines to keep.

    Returns:
        a :class:`CommandResult`; a program that cannot be started (missing, not
        executable) is ``NOT_STARTED`` with the reason, not an exception.

    Raises:
        ValueError: an argument of the wrong kind (one line saying which).
    """
    argv = _argv(command)
    timeout = _finite_positive("timeout", timeout)
    grace_s = _finite_positive("grace_s", grace_s)
    if isinstance(expect_exit, bool) or not isinstance(expect_exit, int) or not 0 <= expect_exit <= 255:
        raise ValueError(f"expect_exit must be an exit status from 0 to 255, not {expect_exit!r}")
    if isinstance(tail_lines, bool) or not isinstance(tail_lines, int) or tail_lines < 0:
        raise ValueError(f"tail_lines must be a whole number >= 0, not {tail_lines!r}")
    environment = _environment(env)
    shown = tuple(redact_text(arg) for arg in argv)
    program = one_line(shown[0])

    def result(outcome: CommandOutcome, code: Optional[int], reason: str, tail: Optional[_Tail] = None) -> CommandResult:
        lines = tail.close() if tail else ()
        return CommandResult(shown, outcome, code, expect_exit, time.monotonic() - started, lines, tail.count if tail else 0, reason)

    started = time.monotonic()
    bound = _deadline.current()
    # A run already stopping, or out of time, starts nothing.
    if bound.cancelled:
        return result(CommandOutcome.CANCELLED, None, f"cancelled before {program} was started")
    if bound.expired:
        return result(CommandOutcome.TIMED_OUT, None, f"no time left in its step to start {program}")
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError:
        return result(CommandOutcome.NOT_STARTED, None, f"could not start {program}: no such program")
    except PermissionError:
        return result(CommandOutcome.NOT_STARTED, None, f"could not start {program}: permission denied (not executable?)")
    except OSError as exc:
        return result(CommandOutcome.NOT_STARTED, None, f"could not start {program}: {one_line(exc.strerror or exc)}")

    pgid = proc.pid  # start_new_session: the program leads a group of its own
    tail = _Tail(tail_lines)
    own_end = started + timeout
    ended_by: Optional[CommandOutcome] = None
    limit = f"its timeout of {round(timeout, 3):g} s"  # a step's time left: not 0.995601 s
    with selectors.DefaultSelector() as selector:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
        open_output = True

        def read_output(wait: float) -> None:
            nonlocal open_output
            if not open_output:  # it closed its output: wait for its exit instead
                try:
                    proc.wait(max(wait, 0.0))
                except subprocess.TimeoutExpired:
                    pass
                return
            for _ in selector.select(wait):
                try:
                    data = os.read(fd, _READ)
                except BlockingIOError:
                    return
                if data:
                    tail.feed(data)
                else:
                    selector.unregister(fd)
                    open_output = False

        try:
            while proc.poll() is None:
                if bound.cancelled:
                    ended_by = CommandOutcome.CANCELLED
                    break
                now = time.monotonic()
                if now >= own_end or bound.expired:
                    ended_by = CommandOutcome.TIMED_OUT
                    if now < own_end:
                        limit = "the time bound of its step"
                    break
                read_output(min(_POLL_S, own_end - now, bound.remaining()))
            leftovers = ended_by is None and _group_alive(pgid)
            if ended_by is not None or leftovers:
                _stop_group(pgid, proc, grace_s)
            # What it printed last, also after our signals; a stray process outside its group
            # may still hold the pipe: read for a moment, not until it lets go.
            drain_end = time.monotonic() + _DRAIN_S
            while open_output and time.monotonic() < drain_end:
                read_output(min(_POLL_S, drain_end - time.monotonic()))
        finally:
            if proc.returncode is None:  # an exception here (KeyboardInterrupt): leave nothing behind
                _stop_group(pgid, proc, 0.1)
            proc.stdout.close()
    code = proc.returncode

    if ended_by is CommandOutcome.CANCELLED:
        reason = f"cancelled after {time.monotonic() - started:.1f} s: {program} was stopped"
    elif ended_by is CommandOutcome.TIMED_OUT:
        reason = f"{program} did not end within {limit}: stopped"
    else:
        if code >= 0:
            reason = f"{program} exited with status {code}" + ("" if code == expect_exit else f", expected {expect_exit}")
        else:
            reason = f"{program} was killed by {_signal_name(-code)}, expected exit status {expect_exit}"
        if leftovers:
            reason += "; processes it left running were stopped"
    return result(ended_by or CommandOutcome.EXITED, code, reason, tail)
