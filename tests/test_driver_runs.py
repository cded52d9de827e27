"""daq-run on the current generation, end to end: the installed ``daq-run`` against the simulated
driver (``--sim --sim-generation driver``, or the session's simulator by its URLs). The shipped
batches, and the fault suites' kinds: a signal mid-write, the DAQ gone mid-write, a killed run
resumed, the lock in a given Redis; validation and the dry run on this generation."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, List

import h5py
import pytest
import redis

from daq_runner.det_driver_protocol import DriverState
from daq_runner.lock import LOCK_KEY, DaqLock
from daq_runner.sim.redis_server import RedisServer

from .conftest import REPO, batch_file, daq_run, start_daq_run, wait_until


def report_of(path: Path) -> dict:
    return json.loads(path.read_text())


def on(sim: Any) -> List[str]:
    return ["--url", sim.ws_url, "--config-url", sim.url]


def images_in(path: Path) -> int:
    """Images in one writer's file: its metadata rows with an image id."""
    with h5py.File(path, "r") as handle:
        (group,) = handle.values()
        return int((group["metadata"]["image_id"] != 0).sum())


def recording(sim: Any) -> bool:
    return sim.core.snapshot()[0] == DriverState.RECORDING


def test_the_demo_passes_on_a_freshly_started_simulated_driver(tmp_path):
    """daq-run --sim --sim-generation driver batches/demo.yaml: 4 writes of 2 files each, confirmed
    by their files, a few MB in a fresh folder; unlocked, and the header and the report say so."""
    proc = daq_run(
        "--sim", "--sim-generation", "driver", str(REPO / "batches" / "demo.yaml"), "--report", str(tmp_path / "demo.json"),
        "--log-format", "console", env={"TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    assert "daq-run: passed" in proc.stdout and ", no redis" in proc.stdout
    assert 'note: no Redis: no runner lock could be taken; the driver\'s own refusal of a second start ("driver is busy!") is the only guard' in proc.stdout
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sum(f.stat().st_size for f in folder.iterdir()) < 5 * 1024 * 1024
    report = report_of(tmp_path / "demo.json")
    assert ("driver", "--sim") == (report["daq"]["generation"], report["daq"]["config_url_source"])
    assert 8 == len(report["files"]) and all(f["complete"] for f in report["files"])
    writes = [s for s in report["steps"] if s["kind"] == "write"]
    assert ["files"] * 4 == [s["confirmed_by"] for s in writes]
    for entry in report["files"]:
        assert entry["n_images"] == images_in(Path(entry["path"]))


def test_smoke_is_refused_with_its_reasons_and_the_calibration_series_passes(tmp_path):
    """smoke.yaml checks what this generation lacks: exit 2, one line a step, nothing started; the
    calibration series (12 writes) passes, each write's two files complete."""
    refused = daq_run("--sim", "--sim-generation", "driver", str(REPO / "batches" / "smoke.yaml"), "--var", f"root={tmp_path}")
    assert 2 == refused.returncode
    lines = refused.stderr.splitlines()
    assert 2 == len(lines), refused.stderr
    assert "smoke.yaml:12:5: check deployment: SUCCESS needs the deployment status of a configuration" in lines[0]
    assert "smoke.yaml:16:5: check min_detector_rate needs the detector's and the writer's rates" in lines[1]
    assert [] == list(tmp_path.iterdir())
    proc = daq_run(
        "--sim", "--sim-generation", "driver", "--sim-frame-rate", "5000", str(REPO / "batches" / "calibration.yaml"),
        "--var", f"root={tmp_path}", "--var", "frames=5", "--report", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    report = report_of(tmp_path / "r.json")
    assert all(s["status"] == "passed" for s in report["steps"])
    assert 24 == len(report["files"]) and {3, 2} == {f["n_images"] for f in report["files"]}


def test_a_signal_mid_write_stops_the_acquisition_and_waits_for_idle(daq_driver_sim, tmp_path):
    """SIGTERM while the driver records: the stop is sent, the outcome awaited, exit 143, the files listed incomplete."""
    sim = daq_driver_sim
    sim.core.settings.frame_rate = 300
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 100000}\n  - check: {writer: READY}\n")
    report = tmp_path / "r.json"
    proc = start_daq_run(path, *on(sim), "--report", str(report))
    wait_until(lambda: recording(sim))
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert 143 == proc.returncode, err
    assert DriverState.IDLE == sim.core.snapshot()[0]
    final = report_of(report)
    assert ("interrupted", ["interrupted", "skipped"]) == (final["status"], [s["status"] for s in final["steps"]])
    (recovery,) = final["steps"][0]["recoveries"]
    assert recovery["outcome"].startswith("stopped acquisition") and "file_saved" in recovery["outcome"]
    assert [False, False] == [f["complete"] for f in final["files"]]
    assert [f["n_images"] for f in final["files"]] == [images_in(Path(f["path"])) for f in final["files"]]


def test_the_driver_gone_mid_write_ends_the_run_with_exit_3(daq_driver_sim, tmp_path):
    """The services go down mid-write and stay down: after --max-outage the step fails, the rest is skipped, exit 3."""
    sim = daq_driver_sim
    sim.core.settings.frame_rate = 300
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 100000}\n    retries: 3\n    on_error: continue\n"
        "  - check: {writer: READY}\n  - stop: {}\n",
    )
    report = tmp_path / "r.json"
    proc = start_daq_run(path, *on(sim), "--report", str(report), "--max-outage", "2", "--quiet")
    wait_until(lambda: recording(sim))
    sim.core.arm_faults({"restart_s": 3600})
    sim.core.restart()
    gone = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert 3 == proc.returncode, err
    assert time.monotonic() - gone < 15  # 2 s budget, a few s for the best-effort stop; not 4 attempts x 3 steps
    assert 1 == len(err.strip().splitlines()) and "DAQ unreachable" in err and sim.ws_url in err
    final = report_of(report)
    assert ("failed", True) == (final["status"], final["daq_unreachable"])
    assert ["failed", "skipped", "skipped"] == [s["status"] for s in final["steps"]]
    assert 1 == final["steps"][0]["attempts"] and sim.ws_url in final["steps"][0]["error"]


def test_a_killed_run_is_resumed_and_never_replaces_files_it_cannot_prove_its_own(daq_driver_sim, tmp_path):
    """SIGKILL mid-write: the report on disk holds what passed; --resume keeps it and runs the
    rest; the killed write's files, which no record names, are replaced only with --overwrite."""
    sim = daq_driver_sim
    sim.core.settings.frame_rate = 200
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 4}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 300}\n  - check: {writer: READY}\n",
    )
    report = tmp_path / "r.json"
    proc = start_daq_run(path, *on(sim), "--report", str(report))
    wait_until(lambda: recording(sim) and report.exists() and len(report_of(report)["steps"]) == 1)
    proc.kill()
    proc.communicate(timeout=10)
    crashed = report_of(report)
    assert ("running", ["passed"], 2) == (crashed["status"], [s["status"] for s in crashed["steps"]], len(crashed["files"]))
    # The killed run's acquisition ends on its own; its outcome waits for the next session.
    wait_until(lambda: sim.core.snapshot()[0] == DriverState.FILE_SAVED, timeout=20)
    resume = ("--resume", str(report))
    refused = daq_run(str(path), *on(sim), *resume, "--report", str(tmp_path / "resumed.json"))
    assert 1 == refused.returncode, refused.stderr
    step = report_of(tmp_path / "resumed.json")["steps"][1]
    assert "nothing proves they are the ones this step left in the run resumed" in step["error"] and "nothing was sent" in step["error"]
    passed = daq_run(str(path), *on(sim), *resume, "--overwrite", "--report", str(tmp_path / "resumed2.json"))
    assert 0 == passed.returncode, passed.stderr
    steps = report_of(tmp_path / "resumed2.json")["steps"]
    assert ([True, None, None], ["passed"] * 3) == ([s.get("resumed") for s in steps], [s["status"] for s in steps])
    assert 300 == images_in(tmp_path / "b_0.h5") + images_in(tmp_path / "b_1.h5")


def test_the_runner_lock_lives_in_a_redis_given_for_this_generation(daq_driver_sim, tmp_path):
    """--redis URL: another runner's lock there makes the run exit 4 before anything is sent; free, the run takes it and passes."""
    sim = daq_driver_sim
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 4}\n")
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        other = DaqLock(client, {"host": "other-pc", "pid": 4242, "batch": "night.yaml"})
        other.acquire()
        held = daq_run(str(path), *on(sim), "--redis", server.url, "--report", str(tmp_path / "held.json"))
        assert 4 == held.returncode and "host other-pc, pid 4242, batch night.yaml" in held.stderr, held.stderr
        assert 0 == sim.core.starts
        other.release()
        proc = daq_run(str(path), *on(sim), "--redis", server.url, "--report", str(tmp_path / "r.json"))
        assert 0 == proc.returncode, proc.stderr
        final = report_of(tmp_path / "r.json")
        assert server.url in final["daq"]["redis"] and not any("no runner lock" in n["message"] for n in final["notices"])
        assert client.get(LOCK_KEY) is None
        client.close()


def test_validate_and_the_dry_run_speak_this_generation(daq_driver_sim, tmp_path):
    """--validate refuses what the generation lacks (the batch's daq: names it); --dry-run shows
    the config REST, the driver's state and config, and finds an existing file of a write."""
    sim = daq_driver_sim
    lacking = batch_file(tmp_path, f"version: 1\ndaq: {{url: '{sim.ws_url}'}}\nsteps:\n  - check: {{min_writer_rate: 5}}\n", "lacking.yaml")
    refused = daq_run(str(lacking), "--validate")
    assert 2 == refused.returncode and f"{lacking}:4:5: check min_writer_rate needs the detector's and the writer's rates" in refused.stderr
    (tmp_path / "a_1.h5").write_bytes(b"x")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 4}\n")
    proc = daq_run(str(path), *on(sim), "--config-user", "e12345", "--dry-run")
    assert 1 == proc.returncode, proc.stderr
    assert f"DAQ {sim.ws_url} (from --url/--redis), config REST {sim.url} (from --url/--redis), Redis none: this DAQ generation has no Redis" in proc.stdout
    assert f"! {tmp_path / 'a_1.h5'} exists: the write would be refused" in proc.stdout
    state, _ = json.JSONDecoder().raw_decode(proc.stdout.split("DAQ state (nothing was changed):\n", 1)[1])  # the estimate follows
    assert ("idle", "persistent", "SIM-EIGER-64K") == (state["driver"]["state"], state["build"], state["config"]["detector_name"])
    assert 0 == sim.core.starts


@pytest.mark.parametrize(
    "args, text",
    [
        (["--url", "http://h:5000", "--config-url", "http://h:5001"], "a config REST and its user go with a current-generation DAQ"),
        (["--url", "ws://h:8080", "--config-url", "ftp://h"], "config REST URL 'ftp://h' must be a http/https URL"),
        (["--sim-generation", "driver"], "--sim-generation only goes with --sim"),
        (["--sim", "--config-user", "me"], "do not combine it with --url, --redis, --daq, --config-url or --config-user"),
    ],
)
def test_options_of_this_generation_that_do_not_fit_are_one_line_and_exit_2(tmp_path, args, text):
    """A config REST for a rest_v2 DAQ, a config URL that is not http(s), --sim-generation without --sim: exit 2, one line."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - stop: {}\n")
    proc = daq_run(str(path), *args)
    assert 2 == proc.returncode and 1 == len(proc.stderr.splitlines()) and text in proc.stderr, proc.stderr
