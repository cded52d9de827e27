"""A run: step drives another device with a program: through the installed daq-run against daq-sim and a real Redis.

It makes a batch file executable code, so it is refused unless the run allows it
(``--allow-commands``, or ``allow_commands: true`` in the DAQ's profile); allowed, the program
gets its templated arguments and variables, its exit code and last lines are recorded, and it
never outlives its step's timeout or the run's signal (its children neither). The stand-in
programs are real executables on ``PATH``, as ``caput`` would be.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

from .conftest import batch_file, daq_run, start_daq_run, wait_until
from .test_commands import running as alive


def report_of(path) -> dict:
    return json.loads(path.read_text())


def program(folder: Path, name: str, body: str) -> Path:
    """An executable Python program ``name`` in ``folder`` (put on PATH by the test)."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, time, subprocess\n{body}\n")
    path.chmod(0o755)
    return path


def with_path(folder: Path) -> dict:
    return {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}


MOVE = """version: 1
vars: {motor: X12SA-ES1:MOT1.VAL}
steps:
  - run: {command: [caput, "{motor}", 12.5], timeout: 20}
  - write: {output_file: "{root}/a.h5", n_images: 2}
"""


def test_a_run_step_is_refused_unless_the_run_or_the_daqs_profile_allows_commands(daq_sim, tmp_path):
    """Without the permission: one line at the step's place, exit 2, nothing sent (no report);
    --allow-commands or a profile's allow_commands: true accept it; a profile's value must be
    true or false."""
    path = batch_file(tmp_path, MOVE)
    report = tmp_path / "r.json"
    refused = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))
    assert 2 == refused.returncode
    assert [
        f"daq-run: {path}:4:5: a run step runs a program on this machine: refused unless the run allows commands "
        "(daq-run --allow-commands, or allow_commands: true in the DAQ's profile)"
    ] == refused.stderr.splitlines()
    assert not report.exists()
    assert 0 == daq_run(str(path), "--validate", "--allow-commands").returncode
    profiles = tmp_path / "daqs.yaml"
    profiles.write_text(
        f"daqs:\n  trusted: {{url: {daq_sim.url}, allow_commands: true}}\n  plain: {{url: {daq_sim.url}}}\n"
        f"  odd: {{url: {daq_sim.url}, allow_commands: 'yes'}}\n"
    )
    assert 0 == daq_run(str(path), "--validate", "--daq", "trusted", "--profiles", str(profiles)).returncode
    assert 2 == daq_run(str(path), "--validate", "--daq", "plain", "--profiles", str(profiles)).returncode
    odd = daq_run(str(path), "--validate", "--daq", "odd", "--profiles", str(profiles))
    assert (2, [f"daq-run: error: DAQ 'odd' in {profiles}: allow_commands must be true or false, not 'yes'"]) == (odd.returncode, odd.stderr.splitlines())


def test_a_run_step_gets_its_arguments_and_environment_and_its_exit_code_and_last_lines_are_recorded(daq_sim, tmp_path):
    """A motor moved between writes of a sweep: the program sees each position and its env;
    expect_exit decides; the report keeps the exit code and the last lines, and show lists them."""
    bin_dir = tmp_path / "bin"
    program(bin_dir, "caput", "print('moved', *sys.argv[1:])\nprint('addr', os.environ['EPICS_CA_ADDR_LIST'])\nsys.exit(3)")
    path = batch_file(
        tmp_path,
        """version: 1
steps:
  - for: {position: [1.5, 2.5]}
    steps:
      - run: {command: [caput, X:M.VAL, "{position}"], expect_exit: 3, env: {EPICS_CA_ADDR_LIST: 10.0.0.1}}
      - write: {output_file: "{root}/at_{position}.h5", n_images: 2}
""",
    )
    report = tmp_path / "r.json"
    result = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--allow-commands", env=with_path(bin_dir))
    assert 0 == result.returncode, result.stderr
    runs = [s for s in report_of(report)["steps"] if s["kind"] == "run"]
    assert [["moved X:M.VAL 1.5", "addr 10.0.0.1"], ["moved X:M.VAL 2.5", "addr 10.0.0.1"]] == [s["command"]["output"] for s in runs]
    assert [(3, 3, "exited", True)] * 2 == [(s["command"]["exit_code"], s["command"]["expect_exit"], s["command"]["outcome"], s["command"]["passed"]) for s in runs]
    assert {"command": ["caput", "X:M.VAL", "1.5"], "expect_exit": 3, "env": {"EPICS_CA_ADDR_LIST": "10.0.0.1"}} == runs[0]["params"]
    shown = daq_run("show", str(report))
    assert "\nPrograms run\n  step 1 passed: run caput X:M.VAL 1.5: caput exited with status 3\n" in shown.stdout, shown.stdout


def test_a_failing_program_fails_its_step_with_its_last_line_and_is_retried(daq_sim, tmp_path):
    """A non-zero exit fails the attempt ("exited with status 1, expected 0; last output: ..."),
    retries run it again, and on_error decides as for any step."""
    bin_dir = tmp_path / "bin"
    program(bin_dir, "caput", "print('line 1')\nprint('Channel connect timed out: X:M.VAL not found', file=sys.stderr)\nsys.exit(1)")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - run: {command: [caput, X:M.VAL, 1]}\n    retries: 1\n")
    report = tmp_path / "r.json"
    result = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--allow-commands", env=with_path(bin_dir))
    assert 1 == result.returncode, result.stderr
    step = report_of(report)["steps"][0]
    error = "caput exited with status 1, expected 0; last output: Channel connect timed out: X:M.VAL not found"
    assert (2, error, [error, error]) == (step["attempts"], step["error"], [a["error"] for a in step["failed_attempts"]])
    assert ["line 1", "Channel connect timed out: X:M.VAL not found"] == step["command"]["output"]


def test_a_program_that_does_not_end_is_stopped_at_the_steps_timeout_with_the_processes_it_started(daq_sim, tmp_path):
    """timeout: 1 for a program that hangs and has forked a child: the step fails after about a
    second (plus the grace between SIGTERM and SIGKILL), and neither process is left."""
    bin_dir = tmp_path / "bin"
    pids = tmp_path / "pids"
    program(
        bin_dir, "hang",
        f"child = subprocess.Popen(['sleep', '600'])\nopen({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)",
    )
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - run: {command: [hang], timeout: 1}\n")
    report = tmp_path / "r.json"
    started = time.monotonic()
    result = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--allow-commands", env=with_path(bin_dir))
    took = time.monotonic() - started
    assert 1 == result.returncode, result.stderr
    assert took < 10, took
    step = report_of(report)["steps"][0]
    # The time limit said once, in seconds people read (the step's time left, not "0.995601 s").
    assert re.fullmatch(r"hang did not end within its timeout of (1|0\.\d{1,3}) s: stopped", step["error"]), step["error"]
    assert "timed_out" == step["command"]["outcome"]
    assert not any(alive(int(pid)) for pid in pids.read_text().split())


def test_a_signal_ends_the_program_under_way_and_the_run(daq_sim, tmp_path):
    """SIGTERM while a run: step's program runs: the program (and its group) is ended, the step
    is interrupted, the rest skipped, exit 143, with a report."""
    bin_dir = tmp_path / "bin"
    pid_file = tmp_path / "pid"
    program(bin_dir, "wait-beam", f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - run: {command: [wait-beam]}\n  - write: {output_file: \"{root}/a.h5\", n_images: 1}\n")
    report = tmp_path / "r.json"
    old_path = os.environ["PATH"]
    os.environ["PATH"] = with_path(bin_dir)["PATH"]
    try:
        proc = start_daq_run(path, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--allow-commands")
    finally:
        os.environ["PATH"] = old_path
    wait_until(lambda: pid_file.exists() and pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert 143 == proc.returncode, err
    steps = report_of(report)["steps"]
    assert ["interrupted", "skipped"] == [s["status"] for s in steps]
    assert "cancelled" == steps[0]["command"]["outcome"]
    assert not alive(int(pid_file.read_text()))


def test_a_run_steps_identity_is_what_it_runs_not_its_limit():
    """--resume matches steps by identity: another timeout keeps a run step's (as for any step's),
    another argument or variable does not."""
    from daq_runner.batch import load_batch_text

    def identity(body: str) -> str:
        return load_batch_text(f"version: 1\nsteps:\n  - run: {body}\n", allow_commands=True).steps[0].identity

    base = identity("{command: [caput, X:M.VAL, 1], timeout: 30}")
    assert base == identity("{command: [caput, X:M.VAL, 1], timeout: 90}") == identity("{command: [caput, X:M.VAL, 1]}")
    assert base != identity("{command: [caput, X:M.VAL, 2], timeout: 30}")
    assert base != identity("{command: [caput, X:M.VAL, 1], env: {A: 1}}")
