"""daq-run trusts nothing it was not told: values mean what was typed, one DAQ per run, no silent
overwrite, a resume that reproduces the run. Through the installed ``daq-run`` against daq-sim
and a real Redis.
"""

from __future__ import annotations

import json
import os

import h5py
import pytest
import requests

from daq_runner.testing import arm_faults

from .conftest import batch_file, daq_run


def report_of(path) -> dict:
    return json.loads(path.read_text())


def common(daq_sim) -> list:
    return ["--url", daq_sim.url, "--redis", daq_sim.redis_url]


def dtype_of(path) -> str:
    with h5py.File(path) as handle:
        (group,) = handle.values()
        return str(group["data"].dtype)


# -- no silent overwrite -----------------------------------------------------------------------


def test_two_steps_writing_one_file_are_refused_before_the_run(daq_sim, tmp_path):
    """A sweep that would write one file three times: exit 2 naming both steps, nothing sent."""
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - for: {bit_depth: [8, 16, 32]}\n    steps:\n"
        "      - config: {bit_depth: '{bit_depth}'}\n      - write: {output_file: '{root}/sweep.h5', n_images: 5}\n",
    )
    before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    proc = daq_run(str(path), *common(daq_sim))
    assert 2 == proc.returncode
    assert "sweep.h5" in proc.stderr and "b.yaml:6" in proc.stderr
    assert before == requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    assert not (tmp_path / "sweep.h5").exists()


def test_an_existing_file_is_refused_unless_overwrite_is_allowed(daq_sim, tmp_path):
    """An existing output file: the step fails and nothing is sent; overwrite: true or --overwrite allow it."""
    (tmp_path / "a.h5").write_bytes(b"precious data")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n")
    proc = daq_run(str(path), *common(daq_sim), "--report", str(tmp_path / "r1.json"))
    assert 1 == proc.returncode
    step = report_of(tmp_path / "r1.json")["steps"][0]
    assert "it exists" in step["error"] and "nothing was sent" in step["error"]
    assert b"precious data" == (tmp_path / "a.h5").read_bytes()
    assert requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]["acquisition"] is None
    assert 0 == daq_run(str(path), *common(daq_sim), "--overwrite", "--report", str(tmp_path / "r2.json")).returncode
    allowed = batch_file(tmp_path, "version: 1\ndefaults: {overwrite: true}\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n", "c.yaml")
    assert 0 == daq_run(str(allowed), *common(daq_sim), "--report", str(tmp_path / "r3.json")).returncode


def test_a_symlink_is_never_written_through(daq_sim, tmp_path):
    """An output file that is a symbolic link is refused, even with --overwrite."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    os.symlink(target, tmp_path / "a.h5")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n")
    proc = daq_run(str(path), *common(daq_sim), "--overwrite", "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode
    assert "symbolic link" in report_of(tmp_path / "r.json")["steps"][0]["error"]
    assert "keep me" == target.read_text()


# -- values mean what was typed ---------------------------------------------------------------------


def test_var_values_are_text_in_file_names_and_numbers_where_a_number_is_needed(daq_sim, tmp_path):
    """--var sample=NO and run=0123 stay as typed in the file name; n=007 gives 7 images."""
    path = batch_file(
        tmp_path,
        "version: 1\nvars: {sample: x, run_no: '1', n: 1}\nsteps:\n"
        "  - write: {output_file: '{root}/{sample}_{run_no}.h5', n_images: '{n}'}\n",
    )
    proc = daq_run(str(path), *common(daq_sim), "--var", "sample=NO", "--var", "run_no=0123", "--var", "n=007", "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    step = report_of(tmp_path / "r.json")["steps"][0]
    assert (str(tmp_path / "NO_0123.h5"), 7) == (step["output_file"], step["n_written"])


def test_a_mistyped_var_is_an_error_with_a_suggestion(daq_sim, tmp_path):
    """--var rot=... for a batch that uses {root}: exit 2, 'did you mean root', nothing written."""
    path = batch_file(tmp_path, "version: 1\nvars: {root: /tmp}\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 1}\n")
    proc = daq_run(str(path), *common(daq_sim), "--var", f"rot={tmp_path}")
    assert 2 == proc.returncode and "rot" in proc.stderr and "root" in proc.stderr
    assert not (tmp_path / "a.h5").exists()


# -- one DAQ per run --------------------------------------------------------------------------------


def test_rest_and_redis_come_from_one_source(daq_sim, tmp_path):
    """A Redis URL from the environment and a REST URL from the batch: refused; --url wins over the
    environment; the report says where each came from."""
    body = f"version: 1\ndaq: {{url: '{daq_sim.url}'}}\nsteps:\n  - check: {{writer: READY}}\n"
    path = batch_file(tmp_path, body)
    proc = daq_run(str(path), env={"STD_DAQ_REDIS_URL": daq_sim.redis_url, "STD_DAQ_API_URL": ""})
    assert 2 == proc.returncode and "Redis URL comes from environment" in proc.stderr and "batch" in proc.stderr
    proc = daq_run(
        str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"),
        env={"STD_DAQ_API_URL": "http://127.0.0.1:1", "STD_DAQ_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert 0 == proc.returncode, proc.stderr
    daq = report_of(tmp_path / "r.json")["daq"]
    assert ("--url/--redis", "--url/--redis") == (daq["url_source"], daq["redis_source"])


def test_a_named_daq_is_not_outranked_by_the_environment(daq_sim, tmp_path):
    """--daq NAME gives both URLs, whatever STD_DAQ_API_URL says."""
    profiles = tmp_path / "daqs.yaml"
    profiles.write_text(f"daqs:\n  sim:\n    url: {daq_sim.url}\n    redis: {daq_sim.redis_url}\n")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    proc = daq_run(
        str(path), "--daq", "sim", "--profiles", str(profiles), "--report", str(tmp_path / "r.json"),
        env={"STD_DAQ_API_URL": "http://127.0.0.1:1", "STD_DAQ_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert 0 == proc.returncode, proc.stderr
    assert report_of(tmp_path / "r.json")["daq"]["url_source"].startswith("--daq sim")


# -- resume that reproduces the run --------------------------------------------------------------


SWEEP = (
    "version: 1\nname: sweep\nsteps:\n  - for: {bit_depth: [8, 16, 32]}\n    steps:\n"
    "      - config: {bit_depth: '{bit_depth}'}\n"
    "      - write: {output_file: '{root}/sweep_{datetime}_{bit_depth}.h5', n_images: 5}\n        on_error: continue\n"
)


def test_resume_applies_the_configuration_the_kept_steps_established(daq_sim, tmp_path):
    """The 8-bit write failed, the 32-bit one passed last: on resume the 8-bit write runs at 8 bits."""
    path = batch_file(tmp_path, SWEEP)
    arm_faults(daq_sim, fail_next="ERROR: detector hiccup")
    first = tmp_path / "first.json"
    assert 1 == daq_run(str(path), *common(daq_sim), "--report", str(first)).returncode
    assert ["passed", "failed", "passed", "passed", "passed", "passed"] == [s["status"] for s in report_of(first)["steps"]]
    second = tmp_path / "second.json"
    proc = daq_run(str(path), *common(daq_sim), "--resume", str(first), "--report", str(second))
    assert 0 == proc.returncode, proc.stderr
    steps = report_of(second)["steps"]
    rerun = steps[1]
    assert not rerun.get("resumed") and all(s.get("resumed") for i, s in enumerate(steps) if i != 1)
    assert any("bit_depth=8" in r["action"] for r in rerun["recoveries"])
    assert "uint8" == dtype_of(rerun["output_file"])  # written at the depth its sweep step set
    assert rerun["output_file"] == report_of(first)["steps"][1]["output_file"]  # same {datetime}


def test_resume_with_another_batchs_report_is_refused_even_with_force(daq_sim, tmp_path):
    """A report of another batch cannot be resumed, --force or not."""
    other = batch_file(tmp_path, "version: 1\nname: other\nsteps:\n  - check: {writer: READY}\n", "other.yaml")
    report = tmp_path / "other.json"
    assert 0 == daq_run(str(other), *common(daq_sim), "--report", str(report)).returncode
    path = batch_file(tmp_path, "version: 1\nname: mine\nsteps:\n  - check: {writer: READY}\n", "mine.yaml")
    proc = daq_run(str(path), *common(daq_sim), "--resume", str(report), "--force")
    assert 2 == proc.returncode and "not of 'mine'" in proc.stderr


def test_dry_run_resume_lists_what_would_run_and_what_is_kept(daq_sim, tmp_path):
    """--dry-run --resume: 'keep' for passed steps, 'run' for the others; nothing changes."""
    path = batch_file(tmp_path, "version: 1\nname: d\nsteps:\n  - check: {writer: READY}\n  - check: {writer: WRITING}\n")
    first = tmp_path / "first.json"
    assert 1 == daq_run(str(path), *common(daq_sim), "--report", str(first)).returncode
    proc = daq_run(str(path), *common(daq_sim), "--resume", str(first), "--dry-run")
    assert 0 == proc.returncode, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "check writer" in line]
    assert ["keep" in lines[0], "run" in lines[1]] == [True, True]


@pytest.mark.parametrize(
    "args, text",
    [
        (["--force"], "--force only goes with --resume"),
        (["--no-redis", "--redis", "redis://h/0"], "contradict"),
        (["--quiet", "--log-format", "json"], "contradict"),
        (["--validate", "--dry-run"], "not allowed with"),
        (["--lock-ttl", "0"], "--lock-ttl"),
        (["--sim", "--url", "http://h:1"], "--sim"),
    ],
)
def test_conflicting_options_are_refused(tmp_path, args, text):
    """Options that contradict each other: one line, exit 2."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    proc = daq_run(str(path), *args)
    assert 2 == proc.returncode and text in proc.stderr and 1 == len(proc.stderr.strip().splitlines())


def test_default_report_names_never_collide(daq_sim, tmp_path):
    """Runs of one batch started together each get a report of their own (no overwrite)."""
    import subprocess

    from .conftest import script

    path = batch_file(tmp_path, "version: 1\nsteps:\n  - wait: {seconds: 0.2}\n")
    procs = [
        subprocess.Popen([script("daq-run"), str(path), "--url", daq_sim.url, "--no-redis", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    assert [0] * 4 == [p.wait(60) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    reports = sorted(tmp_path.glob("b-*.report.json"))
    assert 4 == len(reports) and 4 == len({json.loads(r.read_text())["run_id"] for r in reports})


def test_one_file_under_two_names_is_written_once(daq_sim, tmp_path):
    """'/d//a.h5' and '/d/./a.h5' are refused before the run; a symlinked folder at the write,
    even with --overwrite (the second write would destroy the first)."""
    path = batch_file(
        tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}//a.h5', n_images: 2}\n  - write: {output_file: '{root}/./a.h5', n_images: 3}\n"
    )
    assert 2 == daq_run(str(path), "--validate").returncode
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/data/s.h5', n_images: 2}\n  - write: {output_file: '{root}/link/s.h5', n_images: 3}\n",
        "c.yaml",
    )
    proc = daq_run(str(path), *common(daq_sim), "--overwrite", "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode
    first, second = report_of(tmp_path / "r.json")["steps"]
    assert "passed" == first["status"] and "the file step 1 of this run wrote" in second["error"]
    with h5py.File(tmp_path / "data" / "s.h5") as handle:
        (group,) = handle.values()
        assert 2 == group["data"].shape[0]  # the first write's file, untouched


def test_a_var_that_names_a_sweep_variable_is_refused(tmp_path):
    """--var bit_depth=8 on a batch that sweeps bit_depth would be ignored silently: exit 2."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - for: {bit_depth: [8, 16]}\n    steps:\n      - config: {bit_depth: '{bit_depth}'}\n")
    proc = daq_run(str(path), "--validate", "--var", "bit_depth=8")
    assert 2 == proc.returncode and "--var bit_depth names a sweep variable" in proc.stderr


# -- the installed command's exit ----------------------------------------------------------------


def test_the_command_exits_with_mains_code_after_flushing_without_tearing_down(monkeypatch, capsys):
    """script() (the installed daq-run) flushes stdout and stderr, then ends the process with
    os._exit(main's code): the interpreter's teardown of every module cost ~40 ms per run."""
    import io
    import sys

    from daq_runner import run_cli

    out, err = io.StringIO(), io.StringIO()
    flushed = []
    out.flush = lambda: flushed.append("out")  # type: ignore[method-assign]
    err.flush = lambda: flushed.append("err")  # type: ignore[method-assign]
    exits = []
    monkeypatch.setattr(run_cli, "main", lambda: 3)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(run_cli.os, "_exit", exits.append)
    run_cli.script()
    assert (["out", "err"], [3]) == (flushed, exits)


def test_the_command_delivers_everything_it_printed_and_its_exit_code(daq_sim, tmp_path):
    """Through the installed command: a long output down a pipe is complete, and every exit code
    still reaches the caller (0 passed, 2 invalid batch)."""
    import subprocess

    from .conftest import script

    proc = subprocess.run([script("daq-run"), "--schema"], capture_output=True, text=True, timeout=60)
    assert 0 == proc.returncode and "steps" in json.loads(proc.stdout)["properties"]
    bad = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: relative.h5, n_images: 1}\n", "bad.yaml")
    proc = daq_run(str(bad), *common(daq_sim))
    assert 2 == proc.returncode and "absolute" in proc.stderr
    good = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 2}\n")
    proc = daq_run(str(good), *common(daq_sim), "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    assert "passed" == report_of(tmp_path / "r.json")["status"]


# -- checked before anything is sent ----------------------------------------------------------


def test_resume_with_other_variables_needs_force(daq_sim, tmp_path):
    """--resume without the --var values of the run resumed would run another experiment
    under its name (it did, silently): refused, exit 2, unless --force."""
    path = batch_file(
        tmp_path,
        "version: 1\nvars: {n: '2'}\nsteps:\n  - write: {output_file: '{root}/v{n}.h5', n_images: '{n}'}\n  - check: {writer: WRITING}\n",
    )
    first = tmp_path / "first.json"
    assert 1 == daq_run(str(path), *common(daq_sim), "--var", "n=3", "--report", str(first)).returncode
    proc = daq_run(str(path), *common(daq_sim), "--resume", str(first))
    assert 2 == proc.returncode and "ran with other variables (n='3')" in proc.stderr, proc.stderr
    assert 1 == len(proc.stderr.strip().splitlines())
    assert not (tmp_path / "v2.h5").exists()
    proc = daq_run(str(path), *common(daq_sim), "--resume", str(first), "--var", "n=3")
    assert 1 == proc.returncode and "ran with other variables" not in proc.stderr  # same vars: resumes


def test_a_default_report_path_that_cannot_be_written_is_refused_before_the_run(daq_sim, tmp_path):
    """Without --report the report goes next to the batch file; when it cannot be written
    there, nothing may be sent (the batch used to run and then say 'no report was written')."""
    from .test_report import can_mount

    why = can_mount()
    if why:
        pytest.skip(why)
    folder = tmp_path / "ro"
    folder.mkdir()
    path = batch_file(folder, "version: 1\nsteps:\n  - config: {bit_depth: 8}\n")
    import subprocess

    if subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only bind mount here")
    try:
        before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
        proc = daq_run(str(path), *common(daq_sim))
        assert 2 == proc.returncode, proc.stderr
        assert "give --report PATH" in proc.stderr and 1 == len(proc.stderr.strip().splitlines())
        assert before == requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_batch_with_a_long_name_or_from_stdin_gets_a_report(daq_sim, tmp_path):
    """A 230-character batch name (the report name was too long: the run went ahead and
    wrote none), and a batch read from /dev/stdin (its report went to /dev)."""
    body = "version: 1\nsteps:\n  - check: {writer: READY}\n"
    path = batch_file(tmp_path, body, "x" * 230 + ".yaml")
    proc = daq_run(str(path), *common(daq_sim), "--quiet")
    assert 0 == proc.returncode, proc.stderr
    assert 1 == len(list(tmp_path.glob("x*.report.json")))
    proc = daq_run("/dev/stdin", *common(daq_sim), "--quiet", input=body, cwd=str(tmp_path))
    assert 0 == proc.returncode, proc.stderr
    assert 1 == len(list(tmp_path.glob("stdin-*.report.json")))


def test_a_url_that_is_not_a_standard_daq_is_exit_3_with_a_report(tmp_path):
    """An HTTP server that is not a DAQ (a wrong port or path): one line, exit 3, a report
    (it was 'internal error', exit 1); a URL with a query is exit 2 before anything."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        report = tmp_path / "r.json"
        proc = daq_run(str(path), "--url", url, "--no-redis", "--report", str(report))
        assert 3 == proc.returncode, proc.stderr
        assert "no Standard DAQ REST API" in proc.stderr and "internal error" not in proc.stderr
        assert report_of(report)["daq_unreachable"] is True
        proc = daq_run(str(path), "--url", url + "/?x=1", "--no-redis")
        assert 2 == proc.returncode and "no query or fragment" in proc.stderr
    finally:
        server.shutdown()


def test_report_of_a_run_still_going_is_refused(daq_sim, tmp_path):
    """Two runs given one --report (the same cron line twice, two DAQs), or the second's
    --junit naming the first's report: refused before anything is sent; the first one's
    report was silently lost."""
    from .conftest import start_daq_run, wait_until

    path = batch_file(tmp_path, "version: 1\nsteps:\n  - wait: {seconds: 20}\n")
    report = tmp_path / "shared.json"
    first = start_daq_run(path, *common(daq_sim), "--report", str(report), "--no-lock")
    try:
        wait_until(lambda: report.exists() and report_of(report)["status"] == "running")
        proc = daq_run(str(path), *common(daq_sim), "--report", str(report), "--no-lock")
        assert 2 == proc.returncode and f"is the report of a run still going on (pid {first.pid})" in proc.stderr
        junit = daq_run(str(path), *common(daq_sim), "--junit", str(report), "--report", str(tmp_path / "o.json"), "--no-lock")
        assert 2 == junit.returncode and f"--junit {report} is the report of a run still going on" in junit.stderr
        assert first.pid == report_of(report)["pid"]
    finally:
        first.kill()
        first.communicate(timeout=10)
    # Its runner dead, the report may be replaced (or resumed).
    quick = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n", "quick.yaml")
    assert 0 == daq_run(str(quick), *common(daq_sim), "--report", str(report), "--overwrite-report").returncode


def test_a_resume_that_ends_before_its_first_step_keeps_what_passed(daq_sim, tmp_path):
    """A resumed run that cannot start (the DAQ locked by another runner: exit 4) still
    records the kept steps as passed, so that resuming its report does not run them again
    (they were 'skipped', and with --resume R --report R they were lost for good)."""
    import socket

    import redis

    from daq_runner.lock import LOCK_KEY

    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/k1.h5', n_images: 3}\n  - check: {writer: WRITING}\n",
    )
    report = tmp_path / "r.json"
    assert 1 == daq_run(str(path), *common(daq_sim), "--report", str(report)).returncode
    client = redis.Redis.from_url(daq_sim.redis_url)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "batch": "other.yaml", "run": "x", "since": "now"}
    client.set(LOCK_KEY, json.dumps(holder), px=20_000)
    try:
        proc = daq_run(str(path), *common(daq_sim), "--resume", str(report), "--report", str(report), "--overwrite-report")
        assert 4 == proc.returncode, proc.stderr
    finally:
        client.delete(LOCK_KEY)
        client.close()
    assert ["passed", "skipped"] == [s["status"] for s in report_of(report)["steps"]]
    proc = daq_run(str(path), *common(daq_sim), "--resume", str(report), "--report", str(tmp_path / "r2.json"))
    assert 1 == proc.returncode and "exists" not in proc.stderr, proc.stderr  # step 1 kept, not re-run
    assert [True, None] == [s.get("resumed") for s in report_of(tmp_path / "r2.json")["steps"]]


# -- a new user's first night -------------------------------------------------------------------


def test_sim_never_replaces_a_batch_variable_silently(tmp_path):
    """--sim: a batch's root becomes a fresh folder and daq-run says so, naming the batch's own folder
    (even with --quiet); a batch that names its folder otherwise writes where it says, and daq-run says
    that too (the first went to the simulator's folder unsaid, the second into the real folder unsaid)."""
    night, tmp = tmp_path / "night", tmp_path / "tmp"
    night.mkdir()
    tmp.mkdir()
    write = "steps:\n  - write: {output_file: '{%s}/a.h5', n_images: 2}\n"  # batch_file() would fill in {root}
    path = tmp_path / "b.yaml"
    path.write_text(f"version: 1\nvars: {{root: '{night}'}}\n" + write % "root")
    proc = daq_run("--sim", str(path), "--quiet", "--report", str(tmp_path / "r.json"), env={"TMPDIR": str(tmp)})
    assert 0 == proc.returncode, proc.stderr
    (fresh,) = tmp.iterdir()
    assert [f"daq-run: --sim: root is {fresh}, a fresh folder, instead of the batch's {night} "
            "(--sim sets only a variable named root; --var root=DIR chooses the folder)"] == proc.stderr.splitlines()
    assert (fresh / "a.h5").exists() and not (night / "a.h5").exists()
    other = tmp_path / "other.yaml"
    other.write_text(f"version: 1\nvars: {{outdir: '{night}'}}\n" + write % "outdir")
    proc = daq_run("--sim", str(other), "--report", str(tmp_path / "r2.json"), "--log-format", "json", env={"TMPDIR": str(tmp)})
    assert 0 == proc.returncode, proc.stderr
    assert f"daq-run: the simulated DAQ writes into {night}, as the batch says" == proc.stderr.splitlines()[0]
    assert (night / "a.h5").exists() and [fresh] == list(tmp.iterdir())


def test_dry_run_shows_every_write_and_checks_this_machine(daq_sim, tmp_path):
    """--dry-run: a named write shows its file and images; a folder missing on this machine (the DAQ is here),
    an existing file without overwrite and a report path that cannot be written are said, exit 1 or 2."""
    (tmp_path / "old.h5").write_bytes(b"data")
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - name: darks\n    write: {output_file: '{root}/d.h5', n_images: 7}\n"
        "  - write: {output_file: '{root}/nope/x.h5', n_images: 1}\n  - write: {output_file: '{root}/old.h5', n_images: 1}\n",
    )
    before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    proc = daq_run(str(path), *common(daq_sim), "--dry-run")
    assert 1 == proc.returncode, proc.stderr
    out = proc.stdout
    assert "1. write  darks" in out and f"output_file={tmp_path}/d.h5 n_images=7 wait=true overwrite=false" in out
    assert f"! folder {tmp_path}/nope does not exist on this machine, where the DAQ writes: the write would fail" in out
    assert f"! {tmp_path}/old.h5 exists: the write would be refused" in out
    assert "2 steps would fail on this machine (marked !)" in out and f"report: {tmp_path}/b-" in out
    assert "nothing was changed" in out
    proc = daq_run(str(path), *common(daq_sim), "--dry-run", "--overwrite", "--report", str(tmp_path / "no" / "r.json"))
    assert 2 == proc.returncode and f"report: cannot be written: --report folder {tmp_path}/no does not exist" in proc.stdout
    assert f"- {tmp_path}/old.h5 exists and would be overwritten (overwrite allowed)" in proc.stdout
    assert before == requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    assert ["b.yaml", "old.h5"] == sorted(p.name for p in tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize("name", ["smoke.yaml", "demo.yaml", "calibration.yaml"])
def test_shipped_batches_name_the_files_of_each_run_apart(name, tmp_path):
    """Two runs of a shipped batch started in the same second name different files (smoke.yaml's
    {datetime} gave the second run a false failure: its file existed)."""
    import datetime

    from daq_runner.batch import load_batch

    from .conftest import REPO

    now = datetime.datetime.now()
    files = [
        {s.output_file for s in load_batch(REPO / "batches" / name, vars={"root": str(tmp_path)}, now=now).steps if s.kind == "write"}
        for _ in range(2)
    ]
    assert files[0] and not files[0] & files[1]


def test_report_dir_keeps_reports_out_of_the_batch_folder(daq_sim, tmp_path):
    """--report-dir DIR: each run's report gets a new name in DIR, none next to the batch (a cron job
    filled the batch's folder, inside the installed package)."""
    batches, reports = tmp_path / "batches", tmp_path / "reports"
    batches.mkdir()
    reports.mkdir()
    path = batch_file(batches, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    for _ in range(2):
        proc = daq_run(str(path), *common(daq_sim), "--quiet", "--report-dir", str(reports))
        assert (0, "", "") == (proc.returncode, proc.stdout, proc.stderr)
    assert 2 == len(list(reports.glob("b-*.report.json"))) and ["b.yaml"] == [p.name for p in batches.iterdir()]


def test_an_existing_report_is_not_replaced(daq_sim, tmp_path):
    """--report naming an existing report: exit 2 before anything is sent, the file untouched;
    --overwrite-report replaces it."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 8}\n")
    earlier = tmp_path / "r.json"
    earlier.write_text('{"batch": {"name": "last night"}, "steps": []}')
    before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    proc = daq_run(str(path), *common(daq_sim), "--report", str(earlier))
    assert 2 == proc.returncode and f"--report {earlier} exists" in proc.stderr and 1 == len(proc.stderr.splitlines())
    assert "last night" in earlier.read_text()
    assert before == requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    assert 0 == daq_run(str(path), *common(daq_sim), "--report", str(earlier), "--overwrite-report").returncode
    assert "passed" == report_of(earlier)["status"]


def test_a_guessed_redis_that_does_not_answer_says_it_was_guessed(daq_sim, tmp_path):
    """--url without --redis: nothing answers at the REST host's port 6379, exit 4 saying the address was
    derived, not given, and how to give it; --quiet still says where the report is."""
    import socket

    guard = socket.socket()  # holds 127.0.0.1:6379 without listening: a connection there is refused
    try:
        guard.bind(("127.0.0.1", 6379))
    except OSError:
        guard.close()
        pytest.skip("something uses 127.0.0.1:6379 on this machine")
    try:
        path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
        report = tmp_path / "r.json"
        proc = daq_run(str(path), "--url", daq_sim.url, "--quiet", "--report", str(report))
    finally:
        guard.close()
    assert 4 == proc.returncode, proc.stderr
    assert ("the Redis address redis://127.0.0.1:6379/0 was not given but derived from the REST URL (its host, port 6379): "
            "give the DAQ's Redis with --redis URL") in proc.stderr
    assert "--no-redis" in proc.stderr and proc.stdout.endswith(f"  report: {report}\n")
    assert "failed" == report_of(report)["status"]


def test_resume_compares_what_the_batch_does_not_its_bytes(daq_sim, tmp_path):
    """A comment added to the batch: --resume goes ahead without --force (a note says the file changed);
    a changed value still needs --force."""
    body = "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 2}\n  - check: {writer: WRITING}\n"
    path = batch_file(tmp_path, body)
    first = tmp_path / "first.json"
    assert 1 == daq_run(str(path), *common(daq_sim), "--report", str(first)).returncode
    path.write_text("# checked after the write\n" + path.read_text().replace("WRITING}", "WRITING}  # fails on purpose"))
    proc = daq_run(str(path), *common(daq_sim), "--resume", str(first), "--report", str(tmp_path / "second.json"))
    assert 1 == proc.returncode and "but its steps are the same: resuming" in proc.stderr, proc.stderr
    assert [True, None] == [s.get("resumed") for s in report_of(tmp_path / "second.json")["steps"]]
    path.write_text(path.read_text().replace("WRITING", "READY"))
    proc = daq_run(str(path), *common(daq_sim), "--resume", str(first))
    assert 2 == proc.returncode and "its steps are not those of the run" in proc.stderr
