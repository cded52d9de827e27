"""The installed command-line tools: std_cli_* and daq-run, their output and exit codes."""

from __future__ import annotations

import json
import signal
import time

import pytest
import requests
import structlog

from daq_runner.sim.redis_server import free_port
from daq_runner.testing import arm_faults

from .conftest import REPO, batch_file, daq_run, run_script, script, start_daq_run, start_daq_run_until_writing


def test_std_cli_scripts_are_ours():
    """The std_cli_* entry points of this environment are daq-runner's."""
    for name in ("std_cli_get_status", "std_cli_write_stop"):
        assert "daq_runner.std_cli" in open(script(name)).read()


@pytest.mark.parametrize("how", ["--url_base", "-b", "env"])
def test_std_cli_get_status_prints_json(daq_sim, how):
    """--url_base, -b and STD_DAQ_API_URL all point the tool at the DAQ; output is indented JSON."""
    args, env = ([], {"STD_DAQ_API_URL": daq_sim.url}) if how == "env" else ([how, daq_sim.url], {})
    proc = run_script("std_cli_get_status", *args, env=env)
    assert 0 == proc.returncode, proc.stderr
    assert "READY" == json.loads(proc.stdout)["state"] and proc.stdout.startswith("{\n  ")


def test_std_cli_tools_against_the_sim(daq_sim, tmp_path):
    """Each of the nine tools works against the simulator."""
    url = ["-b", daq_sim.url]
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"bit_depth": 8}))
    # The last rest_v2 server refuses a partial config; --merge sends the whole one.
    refused = run_script("std_cli_set_config", str(config), *url)
    assert 1 == refused.returncode and "int() argument must be" in refused.stderr
    assert 8 == json.loads(run_script("std_cli_set_config", "--merge", str(config), *url).stdout)["bit_depth"]
    assert 8 == json.loads(run_script("std_cli_get_config", *url).stdout)["bit_depth"]
    assert "status" in json.loads(run_script("std_cli_get_deploy_status", *url).stdout)
    assert "detector" in json.loads(run_script("std_cli_get_stats", *url).stdout or "null") or True
    out = str(tmp_path / "w.h5")
    sync = json.loads(run_script("std_cli_write_sync", out, "3", *url).stdout)
    assert "FINISHED" == sync["acquisition"]["state"]
    logs = json.loads(run_script("std_cli_get_logs", "-n", "2", *url).stdout)
    assert isinstance(logs, list) and out == logs[0]["info"]["output_file"]
    started = json.loads(run_script("std_cli_write_async", out, "100000", *url).stdout)
    assert "WRITING" == started["state"]
    assert "READY" == json.loads(run_script("std_cli_write_stop", *url).stdout)["state"]


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["std_cli_get_status", "-b", "http://127.0.0.1:{port}"], 3, "DAQ unreachable"),
        (["std_cli_set_config", "/no/such.json", "-b", "{url}"], 2, "does not exist"),
        (["std_cli_write_async", "relative.h5", "1", "-b", "{url}"], 1, "Path must be absolute"),
        (["std_cli_write_async", "/tmp/x.h5", "0", "-b", "{url}"], 2, "must be >= 1"),
    ],
)
def test_std_cli_errors_are_one_line(daq_sim, args, code, text):
    """Errors are one line on stderr with a documented exit code, no traceback."""
    args = [a.format(port=free_port(), url=daq_sim.url) for a in args]
    proc = run_script(*args, env={"PYTHONWARNINGS": "ignore"})
    assert code == proc.returncode
    assert 1 == len(proc.stderr.strip().splitlines()), proc.stderr
    assert text in proc.stderr and "Traceback" not in proc.stderr


def test_std_cli_config_neither_json_nor_yaml(daq_sim, tmp_path):
    """A config file that is neither JSON nor YAML is a clear error with its line and column."""
    bad = tmp_path / "c.json"
    bad.write_text('{"bit_depth": 8')
    proc = run_script("std_cli_set_config", str(bad), "-b", daq_sim.url)
    assert 2 == proc.returncode and f"config file {bad}:" in proc.stderr and "invalid YAML" in proc.stderr


# -- daq-run -------------------------------------------------------------------------------


def test_daq_run_passes_exit_0_with_report_and_junit(daq_sim, tmp_path):
    """A passing batch exits 0 and writes the report and JUnit file."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n")
    report, junit = tmp_path / "r.json", tmp_path / "j.xml"
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--junit", str(junit))
    assert 0 == proc.returncode, proc.stderr
    assert "passed" == json.loads(report.read_text())["status"] and junit.exists()
    *log, last = proc.stderr.splitlines()
    lines = [json.loads(line) for line in log]
    assert {"run_started", "step_finished", "run_finished", "report"} <= {line["event"] for line in lines}
    assert all("run" in line for line in lines), "JSON log lines carry the run id"
    assert last.startswith("daq-run: passed — 1 step (1 passed), 3 images, 1 file, ") and last.endswith(f"; report: {report}")


def test_daq_run_failure_exit_1_quiet_summary(daq_sim, tmp_path):
    """A failed step exits 1; --quiet prints only a short summary."""
    arm_faults(daq_sim, fail_next="ERROR: no space")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n")
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--quiet", "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode
    assert "ERROR: no space" in proc.stdout and "" == proc.stderr
    assert f"report: {tmp_path / 'r.json'}" in proc.stdout  # cron mail says where to look


def test_daq_run_quiet_prints_nothing_when_passed(daq_sim, tmp_path):
    """--quiet: no output at all when every step passed (cron mails any output)."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--quiet", "--report", str(tmp_path / "r.json"))
    assert (0, "", "") == (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    "body, text",
    [
        ("version: 1\nsteps:\n  - wirte: {}\n", "b.yaml:3:5: unknown step kind 'wirte'"),
        ("version: 1\nsteps:\n  - write: {output_file: x.h5, n_images: 1}\n", "must be an absolute path"),
        ("!!python/object/apply:os.system ['touch /tmp/pwned']\n", "is not allowed"),
    ],
)
def test_daq_run_invalid_batch_exit_2_nothing_sent(daq_sim, tmp_path, body, text):
    """An invalid batch exits 2 with one line, and nothing reaches the DAQ."""
    before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    path = batch_file(tmp_path, body)
    proc = daq_run(str(path), "--url", daq_sim.url)
    assert 2 == proc.returncode and text in proc.stderr
    assert 1 == len(proc.stderr.strip().splitlines())
    assert before == requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]


@pytest.mark.parametrize(
    "args, text",
    [
        (["--bogus"], "unrecognized arguments"),
        (["--url", "ftp://x"], "must be a http/https/ws/wss URL"),
        (["--report", "/no/such/dir/r.json"], "does not exist"),
        (["--daq", "nope"], "no DAQ named 'nope'"),
        (["--var", "1x=2"], "--var expects NAME=VALUE"),
        (["--max-outage", "0"], "--max-outage must be more than 0"),
        (["--wait-lock", "-1"], "--wait-lock must be between 0"),
        (["--wait-lock", "nan"], "--wait-lock must be between 0"),
    ],
)
def test_daq_run_usage_errors_exit_2(tmp_path, args, text):
    """Usage errors are one line and exit 2."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - stop: {}\n")
    proc = daq_run(str(path), *args, cwd=str(REPO))
    assert 2 == proc.returncode and text in proc.stderr, proc.stderr
    assert 1 == len(proc.stderr.strip().splitlines())


def test_daq_run_unreachable_exit_3(tmp_path):
    """A DAQ that cannot be reached before the first step (for --max-outage): exit 3, and a
    report and JUnit file that say so, every step skipped."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - stop: {}\n")
    started = time.monotonic()
    proc = daq_run(
        str(path), "--url", f"http://127.0.0.1:{free_port()}", "--max-outage", "2",
        "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "j.xml"),
    )
    assert 3 == proc.returncode and "DAQ unreachable" in proc.stderr
    assert time.monotonic() - started < 10
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["daq_unreachable"] and ["skipped"] == [s["status"] for s in report["steps"]]
    assert (tmp_path / "j.xml").exists()


def test_daq_run_waits_out_a_short_outage_at_the_start(daq_sim, tmp_path):
    """The DAQ answers 503 for 3 s when the run starts: it is waited out, the run passes."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    arm_faults(daq_sim, unavailable_s=3)
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr


def test_daq_run_locked_exit_4(daq_sim, tmp_path):
    """A DAQ locked by another runner: exit 4 naming the holder."""
    import redis

    from daq_runner.lock import DaqLock

    lock = DaqLock(redis.Redis.from_url(daq_sim.redis_url), {"host": "other-pc", "pid": 1, "batch": "x.yaml"})
    lock.acquire()
    try:
        path = batch_file(tmp_path, "version: 1\nsteps:\n  - stop: {}\n")
        proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
        assert 4 == proc.returncode and "other-pc" in proc.stderr
    finally:
        lock.release()


def test_daq_run_ctrl_c_while_waiting_for_the_daqs_first_answer(tmp_path):
    """Ctrl-C while daq-run still waits for the DAQ's first answer: 130 at once, a report that
    says 'interrupted' with every step skipped, no traceback."""
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        path = batch_file(tmp_path, "version: 1\nsteps:\n  - stop: {}\n")
        report = tmp_path / "r.json"
        proc = start_daq_run(path, "--url", f"http://127.0.0.1:{silent.getsockname()[1]}", "--no-redis", "--report", str(report))
        silent.settimeout(20)
        connection, _ = silent.accept()  # daq-run's first status request
        with connection:
            signalled = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
            assert time.monotonic() - signalled < 3
    assert 130 == proc.returncode and "Traceback" not in err
    final = json.loads(report.read_text())
    assert ("interrupted", ["skipped"]) == (final["status"], [s["status"] for s in final["steps"]])


def test_daq_run_unforeseen_error_is_one_line_and_stops_the_acquisition(daq_sim, tmp_path, monkeypatch, capsys):
    """A bug in a consumer mid-write: one line, exit 1, the acquisition stopped; -v re-raises."""
    from daq_runner import events, run_cli
    from daq_runner.console import LogEvents

    def broken(self, event):
        if event.kind == events.PROGRESS:
            raise KeyError("n_written")

    monkeypatch.setattr(LogEvents, "__call__", broken)
    daq_sim.core.settings.frame_rate = 50
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 100000}\n")
    args = [str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"), "--log-format", "json"]
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        assert 1 == run_cli.main(args)
        assert "daq-run: internal error: KeyError: 'n_written' (run with -v for the traceback)" == capsys.readouterr().err.strip()
        status = requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]
        assert ("READY", "Interrupted.") == (status["state"], status["acquisition"]["message"])
        with pytest.raises(KeyError):
            run_cli.main([*args, "--overwrite", "--overwrite-report", "-v"])
        assert handlers == (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    finally:
        structlog.reset_defaults()  # main() configured logging for this process
        requests.post(daq_sim.url + "/writer/stop", json={}, timeout=5)


def test_daq_run_validate_dry_run_and_schema(daq_sim, tmp_path):
    """--validate, --dry-run (reads state, changes nothing) and --schema."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 8}\n")
    assert "valid, 1 step\n" in daq_run(str(path), "--validate").stdout  # not "1 steps"
    before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    proc = daq_run(str(path), "--dry-run", "--url", daq_sim.url)
    assert 0 == proc.returncode and "config bit_depth=8" in proc.stdout and "nothing was changed" in proc.stdout
    assert before == requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    schema = json.loads(daq_run("--schema").stdout)
    assert "steps" in schema["properties"]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 143)])
def test_daq_run_signal_stops_acquisition_and_writes_report(daq_sim, tmp_path, signum, code):
    """A signal during a write stops the acquisition, writes an interrupted report, exits 130/143."""
    daq_sim.core.settings.frame_rate = 50
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/s.h5', n_images: 100000}\n  - stop: {}\n")
    report = tmp_path / "r.json"
    proc = start_daq_run_until_writing(daq_sim, path, report)
    try:
        proc.send_signal(signum)
        assert code == proc.wait(10)
    finally:
        proc.kill()
    final = json.loads(report.read_text())
    assert "interrupted" == final["status"] and ["interrupted", "skipped"] == [s["status"] for s in final["steps"]]
    status = requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]
    assert ("READY", "Interrupted.") == (status["state"], status["acquisition"]["message"])


def test_daq_run_resume_reruns_only_failed(daq_sim, tmp_path):
    """--resume re-runs what did not pass; a changed batch is refused unless forced."""
    body = "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 2}\n  - write: {output_file: '{root}/b.h5', n_images: 2}\n"
    path = batch_file(tmp_path, body)
    first = tmp_path / "first.json"
    arm_faults(daq_sim, fail_next="ERROR: x")
    common = ["--url", daq_sim.url, "--redis", daq_sim.redis_url]
    # the fault hits the first write, so step 1 fails and step 2 is skipped
    assert 1 == daq_run(str(path), *common, "--report", str(first)).returncode
    second = tmp_path / "second.json"
    assert 0 == daq_run(str(path), *common, "--resume", str(first), "--report", str(second)).returncode
    # Every step passed in the second: nothing runs, nothing is sent, and daq-run says so.
    third = tmp_path / "third.json"
    proc = daq_run(str(path), *common, "--resume", str(second), "--report", str(third))
    assert (0, f"daq-run: nothing to run: all 2 steps of {path} passed in {second} (no new report written)\n") == (proc.returncode, proc.stderr)
    assert not third.exists()
    path.write_text(path.read_text() + "  - stop: {}\n")
    proc = daq_run(str(path), *common, "--resume", str(first))
    assert 2 == proc.returncode and "changed" in proc.stderr


def test_daq_run_version_and_help_are_fast():
    """--help and --version start quickly (no heavy imports)."""
    for flag in ("--help", "--version"):
        start = time.monotonic()
        assert 0 == daq_run(flag).returncode
        assert time.monotonic() - start < 2


def test_daq_run_second_sigint_exits_at_once_report_valid(daq_sim, tmp_path):
    """A second SIGINT exits 130 at once; the report on disk is still valid JSON."""
    daq_sim.core.settings.frame_rate = 50
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - stop: {}\n  - write: {output_file: '{root}/s.h5', n_images: 100000}\n")
    report = tmp_path / "r.json"
    proc = start_daq_run_until_writing(daq_sim, path, report)
    try:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        assert 130 == proc.wait(5)
    finally:
        proc.kill()
        requests.post(daq_sim.url + "/writer/stop", json={}, timeout=5)
    assert json.loads(report.read_text())["steps"][0]["status"] == "passed"
