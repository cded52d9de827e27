"""What this machine can tell before a run (daq_runner.preflight), from Python without a DAQ."""

from __future__ import annotations

import os

from daq_runner.batch import load_batch_text
from daq_runner.preflight import Finding, check_commands, check_writes, plan_lines


def batch(tmp_path, steps: str):
    return load_batch_text(f"version: 1\nname: night\nsteps:\n{steps}".replace("{root}", str(tmp_path)), str(tmp_path / "b.yaml"))


def test_each_write_is_held_against_this_machine(tmp_path):
    """A missing folder (a failure with the DAQ here, a note for one elsewhere), an existing file, a link,
    one file under two names; kept steps and a folder made at the start are not looked at."""
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "alias")
    (tmp_path / "old.h5").write_bytes(b"x")
    os.symlink(tmp_path / "old.h5", tmp_path / "link.h5")
    b = batch(
        tmp_path,
        "  - write: {output_file: '{root}/gone/a.h5', n_images: 1}\n"
        "  - write: {output_file: '{root}/old.h5', n_images: 1}\n"
        "  - write: {output_file: '{root}/link.h5', n_images: 1}\n"
        "  - write: {output_file: '{root}/data/s.h5', n_images: 1}\n"
        "  - write: {output_file: '{root}/alias/s.h5', n_images: 1}\n"
        "  - write: {output_file: '{root}/fresh/f.h5', n_images: 1}\n",
    )
    here = check_writes(b.steps, daq_here=True, made_at_start=str(tmp_path / "fresh"))
    assert [(1, True), (2, True), (3, True), (5, True)] == [(f.step, f.fails) for f in here]
    assert "does not exist on this machine, where the DAQ writes" in here[0].message
    assert "exists: the write would be refused" in here[1].message and "symbolic link" in here[2].message
    assert f"is the file step 4 writes ({tmp_path}/data/s.h5)" in here[3].message
    elsewhere = check_writes(b.steps, overwrite=True, kept={3, 5})
    assert [(1, False), (2, False), (6, False)] == [(f.step, f.fails) for f in elsewhere]
    assert "would be overwritten" in elsewhere[1].message and "must exist on the DAQ's" in elsewhere[0].message
    resumed = check_writes(b.steps[1:2], resuming=True)
    assert ["only if this step left it in the run resumed"] == [f.message.split(": the write replaces it ")[1] for f in resumed]


def test_the_plan_shows_what_every_step_does_whatever_its_name(tmp_path):
    """A named write shows its file and images; limits, kept/run and findings follow each step."""
    b = batch(tmp_path, "  - name: darks\n    write: {output_file: '{root}/d.h5', n_images: 7, wait: false}\n    timeout: 20\n  - stop: {}\n")
    lines = plan_lines(b, kept={2}, findings=[Finding(1, "a note", False), Finding(1, "a failure", True)])
    assert [
        "batch night: 2 steps",
        "  1. run   write  darks",
        f"     output_file={tmp_path}/d.h5 n_images=7 wait=false overwrite=false  timeout=20s retries=0 on_error=abort",
        "     - a note",
        "     ! a failure",
        "  2. keep  stop   stop writer",
        "     timeout=300s retries=0 on_error=abort",
        "1 step would fail on this machine (marked !)",
    ] == lines


def test_the_plan_shows_guards_and_unchecked_files_and_finds_a_missing_program(tmp_path):
    """A write's guard and verify: off are in the plan (they are not among its params); a run:
    step whose program is not on the PATH it gets would fail, one that is there would not."""
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "move-motor"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    text = (
        "version: 1\nname: night\nsteps:\n"
        f"  - write: {{output_file: {tmp_path}/a.h5, n_images: 1}}\n    guard: {{min_detector_rate: 50, max_wait_s: 60}}\n    verify: off\n"
        f"  - run: {{command: [no-such-program-here, 1]}}\n"
        f"  - run: {{command: [move-motor, 1], env: {{PATH: {tmp_path}/bin}}}}\n"
    )
    b = load_batch_text(text, allow_commands=True)
    findings = check_commands(b.steps)
    assert [Finding(2, "program no-such-program-here not found on PATH (or not executable): the step would fail", True)] == findings
    lines = plan_lines(b, findings=findings)
    assert "     guard: detector at least 50 images/s for 2 s, waits at most 60 s" in lines
    assert "     verify: off (its file is not checked)" in lines
    assert [] == check_commands(b.steps, kept={2})


def test_the_dry_run_shows_control_characters_of_the_batch_escaped(tmp_path):
    """Names from the batch file (batch, step) reach the terminal as \\x1b escapes, never raw (a title set, a screen cleared)."""
    from .conftest import batch_file, daq_run

    path = batch_file(
        tmp_path,
        'version: 1\nname: "evil\\e]0;pwned\\a\\e[2J"\nsteps:\n  - write: {output_file: "{root}/x.h5", n_images: 1}\n    name: "bad\\e[2Jname"\n',
    )
    result = daq_run(str(path), "--dry-run", "--url", "http://127.0.0.1:9", "--no-redis")
    assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout
    assert "batch evil\\x1b]0;pwned\\x07\\x1b[2J: 1 step" in result.stdout
    assert "bad\\x1b[2Jname" in result.stdout
