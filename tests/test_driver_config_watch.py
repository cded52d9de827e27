"""DriverDaq: a config someone else stores between or during the writes of a run is found before
the next write, named, and the run's values stored again; against the simulated driver, its config
REST and real HDF5 files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import requests

from daq_runner import events
from daq_runner.det_driver_protocol import CONFIG_SET

from .test_det_driver_daq import driver, run, when_recording  # noqa: F401 (driver: a fixture, both builds)


def store_as_intruder(sim: Any, **fields: Any) -> None:
    """POST the whole config with ``fields`` changed, as another user of the config REST would."""
    config = {**json.loads(Path(sim.config_path).read_text()), **fields}
    reply = requests.post(f"{sim.url}{CONFIG_SET}", params={"user": "intruder"}, json=config, timeout=5)
    assert 200 == reply.status_code, reply.text


def dtypes(tmp_path: Path, prefix: str) -> set:
    found = set()
    for path in sorted(tmp_path.glob(f"{prefix}_*.h5")):
        with h5py.File(path, "r") as handle:
            found.add(str(handle["SIM-EIGER-64K"]["data"].dtype))
    return found


def test_a_config_stored_by_someone_else_between_writes_is_named_and_the_runs_values_stored_again(driver, tmp_path):
    """bit_depth 8 stored by another user during a wait: the next write stores 16 again first (a
    recovery naming 8 instead of 16), writes uint16 files and its record says the config it ran with."""
    sim = driver

    def intrude(event: Any) -> None:
        if event.kind == events.STEP_STARTED and event.step == 3:
            store_as_intruder(sim, bit_depth=8)

    report = run(
        sim, tmp_path,
        "  - config: {bit_depth: 16}\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 4}\n"
        "  - wait: {seconds: 1.5}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 4}\n",
        consumers=[intrude],
    )  # fmt: skip
    assert "passed" == report.status, report.reason
    first, second = report.steps[1], report.steps[3]
    assert [] == first.recoveries
    (recovery,) = second.recoveries
    assert "update_config bit_depth=16" == recovery["action"] and recovery["outcome"].startswith("applied")
    assert "stored by someone else" in recovery["reason"] and "bit_depth=8 instead of 16" in recovery["reason"]
    assert any("re-applied bit_depth=16 before step 4" in n["message"] for n in report.notices)
    assert ({"uint16"}, {"uint16"}) == (dtypes(tmp_path, "a"), dtypes(tmp_path, "b"))
    assert 16 == second.config["bit_depth"] and "files" == second.confirmed_by and "passed" == second.file_check["status"]
    assert 16 == json.loads(Path(sim.config_path).read_text())["bit_depth"]


def test_a_config_stored_during_a_write_fails_the_attempt_naming_it_and_the_retry_stores_the_runs_first(daq_driver_sim, tmp_path):
    """bit_depth 8 stored mid-write (the services restart under it): the attempt fails saying so;
    the retry stores 16 again first and writes uint16 files, though the run set no bit depth itself."""
    sim = daq_driver_sim
    sim.core.settings.frame_rate = 500
    when_recording(sim, lambda: store_as_intruder(sim, bit_depth=8))
    report = run(sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 300}\n    retries: 1\n")
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    (failed,) = step.failed_attempts
    assert "was dropped by a restart of the DAQ services: someone else stored a config during it (bit_depth=8 instead of 16)" in failed["error"]
    assert ["update_config bit_depth=16"] == [r["action"] for r in step.recoveries]
    assert (2, 2, 300) == (step.attempts, sim.core.starts, step.n_written)
    assert {"uint16"} == dtypes(tmp_path, "a") and 16 == step.config["bit_depth"]


def test_a_client_that_keeps_storing_its_config_fails_the_write_after_two_re_applications(daq_driver_sim, tmp_path):
    """The intruder stores bit_depth 8 again after each re-application: two recoveries, then the
    write fails saying another client keeps storing its config; nothing was started."""
    sim = daq_driver_sim

    def again(event: Any) -> None:
        if (event.kind, event.step) == (events.STEP_STARTED, 2) or event.kind == events.RECOVERY:
            store_as_intruder(sim, bit_depth=8)

    report = run(sim, tmp_path, "  - config: {bit_depth: 16}\n  - write: {output_file: '{root}/a.h5', n_images: 4}\n", consumers=[again])
    assert "failed" == report.status
    write = report.steps[1]
    assert ["update_config bit_depth=16"] * 2 == [r["action"] for r in write.recoveries]
    assert "again after the run's values were re-applied 2 times: another client keeps storing its config" in write.error
    assert 0 == sim.core.starts and not list(tmp_path.glob("a_*.h5"))
