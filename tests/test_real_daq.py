"""daq-run against a DAQ that behaves like the real rest_v2 server (daq-sim's default, reference
section 9): a fresh DAQ starts UNKNOWN, partial configs are refused, write and stop answer after
the writer driver's polls, refusals leave the writer UNKNOWN, logs hold duplicates, there is no
idle heartbeat. Through the installed ``daq-run``.
"""

from __future__ import annotations

import json
import time

import requests

from daq_runner.record import parse_iso
from daq_runner.testing import arm_faults

from .conftest import REPO, batch_file, daq_run, stream_entries, writer_state
from .standin import DaqProxy


def report_of(path) -> dict:
    return json.loads(path.read_text())


def common(daq_sim) -> list:
    return ["--url", daq_sim.url, "--redis", daq_sim.redis_url]


def test_the_demo_passes_on_a_fresh_daq_and_respects_the_machine(tmp_path):
    """daq-run --sim batches/demo.yaml: a simulator that starts UNKNOWN and refuses partial configs;
    the files go to a folder named at the start and the end, a few MB in all."""
    start = time.monotonic()
    proc = daq_run("--sim", str(REPO / "batches" / "demo.yaml"), "--report", str(tmp_path / "demo.json"), "--log-format", "console", env={"TMPDIR": str(tmp_path)})
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    assert "daq-run: passed" in proc.stdout and time.monotonic() - start < 30
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert f"writes into {folder}" in proc.stderr and f"are in {folder}" in proc.stderr
    assert sum(f.stat().st_size for f in folder.iterdir()) < 5 * 1024 * 1024
    report = report_of(tmp_path / "demo.json")
    assert ["writer UNKNOWN before the first step (a freshly started DAQ)"] == [r["reason"] for r in report["recoveries"]]
    assert 4 == len(report["files"])


def test_smoke_passes_on_a_fresh_simulator_at_the_first_attempt(tmp_path):
    """smoke.yaml under --sim: the detector streams while idle, so its rate check passes at once."""
    proc = daq_run("--sim", str(REPO / "batches" / "smoke.yaml"), "--var", f"root={tmp_path}", "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    steps = report_of(tmp_path / "r.json")["steps"]
    assert all(s["status"] == "passed" and s["attempts"] == 1 for s in steps)


def test_the_calibration_series_passes_on_a_fresh_simulator(tmp_path):
    """calibration.yaml under --sim with few frames: 12 files, each confirmed by the DAQ's log."""
    proc = daq_run(
        "--sim", "--sim-frame-rate", "5000", str(REPO / "batches" / "calibration.yaml"),
        "--var", f"root={tmp_path}", "--var", "frames=5", "--report", str(tmp_path / "r.json"),
    )
    assert 0 == proc.returncode, proc.stderr
    report = report_of(tmp_path / "r.json")
    assert 12 == len(report["files"]) and all(s["status"] == "passed" for s in report["steps"])


def test_a_config_step_waits_for_a_running_acquisition_then_changes_the_config(daq_sim, tmp_path):
    """A config step while a background acquisition runs: it waits for READY, never changes the
    configuration under it (the real server would restart the writer and lose the acquisition)."""
    daq_sim.core.settings.frame_rate = 400
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/bg.h5', n_images: 400, wait: false}\n"
        "  - config: {bit_depth: 8}\n    timeout: 20\n  - check: {config: {bit_depth: 8}}\n",
    )
    proc = daq_run(str(path), *common(daq_sim), "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    steps = {s["index"]: s for s in report_of(tmp_path / "r.json")["steps"]}
    assert 400 == steps[1]["n_written"]  # not lost to a writer restart
    assert "passed" == steps[2]["status"] and 8 == steps[2]["config"]["bit_depth"]
    config_ms = int(steps[2]["config_id"].split("-")[0])  # the daq:config entry: when it was stored
    stopped = parse_iso(steps[1]["acquisition"]["stats"]["stop_time"])  # ISO 8601 UTC in reports
    assert config_ms >= stopped * 1000 - 1  # after the acquisition ended


def test_a_config_step_fails_when_an_acquisition_keeps_running(daq_sim, tmp_path):
    """The acquisition outlasts the config step's timeout: the step fails saying so, config unchanged."""
    daq_sim.core.settings.frame_rate = 100
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/bg.h5', n_images: 100000, wait: false}\n"
        "  - config: {bit_depth: 8}\n    timeout: 1\n",
    )
    before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()
    proc = daq_run(str(path), *common(daq_sim), "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode
    steps = {s["index"]: s for s in report_of(tmp_path / "r.json")["steps"]}
    assert "an acquisition is running" in steps[2]["error"] and "was not started" in steps[2]["error"]
    after = requests.get(daq_sim.url + "/daq/config", timeout=5).json()
    assert (before["config_id"], 16) == (after["config_id"], after["config"]["bit_depth"])
    assert "READY" == writer_state(daq_sim.url)  # the background acquisition was stopped at the end


def test_a_writer_left_unknown_by_a_deployment_is_recovered_before_the_next_write(daq_sim, tmp_path):
    """The deployment leaves the writer UNKNOWN: the config step resets it (a recovery) and the write passes."""
    calls = []

    def restart_writer_on_post() -> None:
        calls.append(1)
        if len(calls) == 2:  # GET config, then the POST: the services restart
            arm_faults(daq_sim, writer_state="UNKNOWN")

    path = batch_file(tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 32}\n  - write: {output_file: '{root}/a.h5', n_images: 5}\n")
    with DaqProxy(daq_sim.url) as proxy:
        proxy.before["/daq/config"] = restart_writer_on_post
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    config, write = report_of(tmp_path / "r.json")["steps"]
    assert [("writer UNKNOWN after the deployment", "READY")] == [(r["reason"], r["outcome"]) for r in config["recoveries"]]
    assert "passed" == write["status"] and [] == write["recoveries"]


def test_cannot_reach_writing_is_a_refusal_with_recovery_not_a_lost_request(daq_sim, tmp_path):
    """A file the writer cannot create on a fresh writer: after the driver's wait the DAQ answers
    'Cannot reach WRITING. Writer needs to be restarted.'; the step fails with that reason, the
    writer is reset (stop-on-UNKNOWN), and nothing says 'write request lost'."""
    daq_sim.core.settings.driver_timeout_s = 0.5
    (tmp_path / "plain").write_text("")  # a file where the file's folder should be: it cannot be created
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/plain/blocked.h5', n_images: 5, overwrite: true}\n")
    proc = daq_run(str(path), *common(daq_sim), "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode
    report = report_of(tmp_path / "r.json")
    (step,) = report["steps"]
    assert "Cannot reach WRITING. Writer needs to be restarted." in step["error"]
    assert "lost" not in step["error"] and not any("lost" in n["message"] for n in report["notices"])
    assert any(r["outcome"] == "READY" for r in step["recoveries"])
    assert "READY" == writer_state(daq_sim.url)


def test_duplicate_log_records_never_count_twice(daq_sim, tmp_path):
    """A stop on an idle writer re-logs the last acquisition: each write still matches one record."""
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 5}\n  - stop: {}\n  - stop: {}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 7}\n",
    )
    for redis_args, name in ((["--redis", daq_sim.redis_url], "r1"), (["--no-redis"], "r2")):
        for f in ("a.h5", "b.h5"):
            (tmp_path / f).unlink(missing_ok=True)
        proc = daq_run(str(path), "--url", daq_sim.url, *redis_args, "--report", str(tmp_path / f"{name}.json"))
        assert 0 == proc.returncode, proc.stderr
        report = report_of(tmp_path / f"{name}.json")
        assert 12 == report["totals"]["images"]
        assert [str(tmp_path / "a.h5"), str(tmp_path / "b.h5")] == [f["path"] for f in report["files"]]
        write_a, write_b = report["steps"][0], report["steps"][3]
        assert write_a["daq_log"]["info"]["run_id"] == write_a["run_id"]  # strings in reports
        assert write_b["daq_log"]["info"]["run_id"] == write_b["run_id"]
    logged = [e["info"]["output_file"] for e in stream_entries(daq_sim.redis_url, "daq:log")]
    assert logged.count(str(tmp_path / "a.h5")) >= 3  # the DAQ did log duplicates


def test_a_deployment_that_fails_on_a_slower_server_fails_the_config_step(daq_sim, tmp_path):
    """The real server says SUCCESS once the servers that reported so far are done: the config step
    waits for every server of the last deployment, so a later Error fails it."""
    daq_sim.core.settings.deploy_delay_s = 0.6  # the second server reports well after the first
    arm_faults(daq_sim, deployment="ERROR")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 8}\n  - check: {deployment: SUCCESS}\n")
    proc = daq_run(str(path), *common(daq_sim), "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode
    config = report_of(tmp_path / "r.json")["steps"][0]
    assert "failed" == config["status"] and "failed" in config["error"] and "ERROR" == config["deployment"]["status"]
