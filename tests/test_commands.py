"""A program run for a batch step ends when it should, takes its children with it, and says how it went.

Real programs only (``python -c``, ``sleep``, ``sh``): one that ignores SIGTERM, one that forks
a child that ignores it too, one that leaves a process running, one that hands its output to a
process outside its group, one that prints megabytes without a newline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import tracemalloc

import pytest

from daq_runner._commands import TAIL_LINES, CommandOutcome, run_command
from daq_runner._deadline import Deadline, bounded
from daq_runner._text import MAX_QUOTE

PY = sys.executable

# A program that starts a child (both ignoring SIGTERM when asked), prints the child's pid and waits.
FORKS = """
import signal, subprocess, sys, time
ignore = sys.argv[1] == "ignore"
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time\\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if ignore else "") + "time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def wait_running(pid: int, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not running(pid):
        assert time.monotonic() < end, f"process {pid} never ran"
        time.sleep(0.01)


def test_exit_code_output_and_environment():
    """The exit code, the output (stdout and stderr merged) and the variables given are there; PATH is kept."""
    code = "import os, sys; print('out', os.environ['STEP'], os.environ['N']); print('err', file=sys.stderr, flush=True); print(bool(os.environ.get('PATH'))); sys.exit(3)"
    result = run_command([PY, "-c", code], timeout=10, env={"STEP": "move x", "N": 12})
    assert (CommandOutcome.EXITED, 3, False) == (result.outcome, result.exit_code, result.passed)
    assert ("out move x 12", "err", "True") == result.output
    assert 3 == result.output_lines
    assert result.reason.endswith("exited with status 3, expected 0")
    assert run_command([PY, "-c", "raise SystemExit(3)"], timeout=10, expect_exit=3).passed


def test_a_quick_program_passes_quickly():
    """``true`` passes, and is over in a fraction of a second."""
    result = run_command(["true"], timeout=10)
    assert result.passed and "true exited with status 0" == result.reason
    assert result.duration_s < 1.0


def test_timeout_ends_it_with_sigterm():
    """``sleep 30`` with a timeout of 0.5 s is ended by SIGTERM at 0.5 s."""
    start = time.monotonic()
    result = run_command(["sleep", 30], timeout=0.5)
    assert (CommandOutcome.TIMED_OUT, -signal.SIGTERM) == (result.outcome, result.exit_code)
    assert "sleep did not end within its timeout of 0.5 s: stopped" == result.reason
    assert 0.5 <= time.monotonic() - start < 1.5
    assert not result.passed


def test_a_program_that_ignores_sigterm_gets_sigkill_after_the_grace():
    """A program ignoring SIGTERM is killed once the grace has passed."""
    start = time.monotonic()
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    result = run_command([PY, "-c", code], timeout=0.5, grace_s=0.5)
    assert (CommandOutcome.TIMED_OUT, -signal.SIGKILL, ("ready",)) == (result.outcome, result.exit_code, result.output)
    assert 1.0 <= time.monotonic() - start < 2.5


@pytest.mark.parametrize("ignore", ["obey", "ignore"])
def test_its_children_end_with_it(ignore):
    """The child a program forked dies with it on a timeout, also when both ignore SIGTERM."""
    result = run_command([PY, "-c", FORKS, ignore], timeout=1.0, grace_s=0.3)
    child = int(result.output[0])
    assert CommandOutcome.TIMED_OUT == result.outcome
    assert not running(child)


def test_processes_it_leaves_running_are_stopped():
    """A program that exits leaving a process of its group behind: that process is stopped and the result says so."""
    start = time.monotonic()
    result = run_command(["sh", "-c", "sleep 60 & echo $!"], timeout=10, grace_s=1)
    assert result.passed, result.reason
    assert result.reason.endswith("; processes it left running were stopped")
    assert not running(int(result.output[0]))
    assert time.monotonic() - start < 1.5


def test_a_process_outside_its_group_holding_the_output_does_not_hold_the_result():
    """A process that left the group (setsid) and keeps the output open: the result comes within a second or so."""
    if not shutil.which("setsid"):
        pytest.skip("no setsid program")
    start = time.monotonic()
    result = run_command(["sh", "-c", "setsid sleep 60 & echo $!"], timeout=10)
    stray = int(result.output[0])
    try:
        assert result.passed, result.reason
        assert time.monotonic() - start < 2.0
    finally:
        os.kill(stray, signal.SIGKILL)


def test_a_program_that_closes_its_output_is_still_waited_for():
    """Closing stdout is not the end: its exit is."""
    result = run_command(["sh", "-c", "exec >&- 2>&-; sleep 0.3; exit 4"], timeout=10, expect_exit=4)
    assert result.passed and result.duration_s >= 0.3


def test_stdin_is_empty():
    """A program reading its input gets end-of-file at once instead of waiting for a terminal."""
    result = run_command([PY, "-c", "import sys; print(repr(sys.stdin.read()))"], timeout=10)
    assert ("''",) == result.output


def test_megabytes_of_output_keep_memory_flat():
    """50 MB of output (a 10 MB line without a newline among them): the last lines, short and escaped, in little memory."""
    code = (
        "import sys; out = sys.stdout.buffer\n"
        "out.write(b'x' * 10_000_000 + b'\\n')\n"
        "for i in range(400_000): out.write(b'line %d of a long listing......................................................\\n' % i)\n"
        "out.write(b'y' * 5_000_000 + b'\\n')\n"
        "out.write(b'bad \\xff\\xfe bytes \\x1b[31mred\\x07 https://user:secret@elog/x\\n')\n"
        "out.write(b'no newline at the end')\n"
    )
    tracemalloc.start()
    try:
        result = run_command([PY, "-c", code], timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.passed, result.reason
    assert 400_004 == result.output_lines
    assert TAIL_LINES == len(result.output)
    assert all(len(line) <= MAX_QUOTE for line in result.output)
    assert result.output[-3].startswith("yyyy") and result.output[-3].endswith("...")
    assert "bad \ufffd\ufffd bytes \\x1b[31mred\\x07 https://***@elog/x" == result.output[-2]
    assert "no newline at the end" == result.output[-1]
    assert peak < 4_000_000, peak


def test_the_bound_in_force_cancels_it():
    """The cancel event of the bound in force ends the program (and its child) within a fraction of a second."""
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with bounded(Deadline(cancel=cancel)):
        result = run_command([PY, "-c", FORKS, "obey"], timeout=30, grace_s=0.5)
    assert CommandOutcome.CANCELLED == result.outcome
    assert result.reason.startswith("cancelled after 0.")
    assert time.monotonic() - start < 1.0
    assert not running(int(result.output[0]))


def test_the_bound_in_force_shortens_its_timeout():
    """A step with 0.3 s left ends a program whose own timeout is 30 s after 0.3 s, and says it was the step's bound."""
    with bounded(Deadline(0.3)):
        result = run_command(["sleep", 30], timeout=30)
    assert CommandOutcome.TIMED_OUT == result.outcome
    assert "sleep did not end within the time bound of its step: stopped" == result.reason
    assert result.duration_s < 1.0


def test_a_cancelled_run_starts_nothing(tmp_path):
    """With the cancel event already set, the program is never started."""
    cancel = threading.Event()
    cancel.set()
    marker = tmp_path / "ran"
    with bounded(Deadline(cancel=cancel)):
        result = run_command(["touch", marker], timeout=10)
    assert (CommandOutcome.CANCELLED, None) == (result.outcome, result.exit_code)
    assert not marker.exists()


def test_a_program_that_cannot_start_is_one_line(tmp_path):
    """A missing program or a file that is not executable: NOT_STARTED, one line, no exception."""
    missing = run_command(["no-such-program-here", "x"], timeout=10)
    assert (CommandOutcome.NOT_STARTED, None) == (missing.outcome, missing.exit_code)
    assert "could not start no-such-program-here: no such program" == missing.reason
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    denied = run_command([script], timeout=10)
    assert CommandOutcome.NOT_STARTED == denied.outcome
    assert denied.reason.endswith(": permission denied (not executable?)")


def test_a_signal_it_did_not_get_from_us_is_named():
    """A program that kills itself is EXITED with the signal's name."""
    result = run_command([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], timeout=10)
    assert (CommandOutcome.EXITED, -signal.SIGSEGV) == (result.outcome, result.exit_code)
    assert result.reason.endswith(" was killed by SIGSEGV, expected exit status 0")


def test_credentials_in_the_command_are_masked_and_the_result_is_json():
    """URL credentials in the arguments do not reach the result; to_json() is plain JSON."""
    result = run_command([PY, "-c", "pass", "https://user:secret@elog.example/entry"], timeout=10)
    text = json.dumps(result.to_json())
    assert "secret" not in text
    assert "https://***@elog.example/entry" == result.command[-1]
    assert {"command", "outcome", "passed", "exit_code", "expect_exit", "duration_s", "output", "output_lines", "reason"} == set(result.to_json())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"command": []}, "command must be a list"),
        ({"command": "sleep 1"}, "command must be a list"),
        ({"command": ["sleep", None]}, "command[1] must be text or a number, not NoneType"),
        ({"command": ["sleep", True]}, "command[1] must be text or a number, not bool"),
        ({"command": ["sleep", "a\0b"]}, "command[1] must be text without NUL"),
        ({"command": [""]}, "command[0], the program, is empty"),
        ({"timeout": 0}, "timeout must be a finite number of seconds > 0"),
        ({"timeout": float("inf")}, "timeout must be a finite number of seconds > 0"),
        ({"expect_exit": 256}, "expect_exit must be an exit status from 0 to 255"),
        ({"env": {"A=B": "1"}}, "is not a variable name"),
        ({"env": {"A": None}}, "env: A must be text or a number"),
    ],
)
def test_bad_arguments_are_one_line_before_anything_runs(kwargs, message):
    """Arguments of the wrong kind: ValueError with one line, nothing started."""
    arguments = {"command": ["true"], "timeout": 10, **kwargs}
    with pytest.raises(ValueError) as caught:
        run_command(arguments.pop("command"), **arguments)
    assert message in str(caught.value) and "\n" not in str(caught.value)
