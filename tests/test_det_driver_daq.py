"""DriverDaq: the current generation behind the DAQ seam, run by the Runner against the simulated
driver (both builds), its config REST and real HDF5 files; the faults of section 10 of the reference."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

from daq_runner import Runner
from daq_runner.batch import load_batch_text
from daq_runner.det_driver import DetDriverClient
from daq_runner.det_driver_daq import DriverDaq, start_target
from daq_runner.det_driver_protocol import DriverState
from daq_runner.exceptions import BatchValidationError
from daq_runner.report import RunReport

from .conftest import wait_until
from .standin import DriverRelay


def run(sim: Any, tmp_path: Path, steps: str, *, consumers: Any = (), writer_timeout_s: float = 5.0, **runner: Any) -> RunReport:
    """Run the steps (YAML under ``steps:``; ``{root}`` is ``tmp_path``) on ``sim`` (its driver at
    ``ws_url`` if given: a relay) through a Runner."""
    batch = load_batch_text("version: 1\nsteps:\n" + steps.replace("{root}", str(tmp_path)), str(tmp_path / "b.yaml"))
    daq = DriverDaq(runner.pop("ws_url", sim.ws_url), sim.url, outage_s=runner.pop("outage_s", 5.0), writer_timeout_s=writer_timeout_s)
    return Runner(daq=daq, consumers=consumers, retry_delay=0.05, **runner).run(batch)


def when_recording(sim: Any, action: Callable[[], Any]) -> threading.Thread:
    """Do ``action`` once the simulated driver records (in a thread of its own)."""

    def wait_then_act() -> None:
        wait_until(lambda: sim.core.snapshot()[0] == DriverState.RECORDING, timeout=20, interval=0.002)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def messages(report: RunReport) -> List[str]:
    return [n["message"] for n in report.notices]


@pytest.fixture(params=["persistent", "per-connection"])
def driver(request: Any) -> Any:
    """The simulated driver of either build, reset."""
    return request.getfixturevalue("daq_driver_sim" if request.param == "persistent" else "daq_driver_sim_per_connection")


def test_output_file_names_the_folder_and_the_prefix():
    """/d/scan.h5 is path /d and prefix scan_; a name without .h5 is kept whole."""
    assert ("/d", "scan_") == start_target("/d/scan.h5")
    assert ("/d/e", "run.nxs_") == start_target("/d/e/run.nxs")


def test_a_write_writes_one_file_per_writer_confirmed_by_their_metadata(driver, tmp_path):
    """One start, W = 2 files with the images round-robin, confirmed by the files' metadata, listed each in the report."""
    report = run(driver, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 5}\n")
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    assert ("files", 5, 1) == (step.confirmed_by, step.n_written, driver.core.starts)
    assert [{"path": str(tmp_path / "a_0.h5"), "n_images": 3}, {"path": str(tmp_path / "a_1.h5"), "n_images": 2}] == step.files
    assert "keeps no acquisition log: confirmed by its files" in step.daq_log_reason
    assert [(str(tmp_path / f"a_{i}.h5"), n, True) for i, n in ((0, 3), (1, 2))] == [(f["path"], f["n_images"], f["complete"]) for f in report.files]
    assert all(f["size_bytes"] > 0 and f["run_id"] == step.acquisition_id for f in report.files)
    acquisition = step.acquisition
    assert {"path": str(tmp_path), "file_prefix": "a_", "n_image": 5} == {k: acquisition["request"][k] for k in ("path", "file_prefix", "n_image")}
    assert ("file_saved", 5) == (acquisition["outcome"], acquisition["count"])
    # The driver pushes the state it finds, not each one it passed: on a loaded machine the
    # first one heard can be a later one than creating_file.
    assert acquisition["states"][0]["state"] in ("creating_file", "waiting_for_first_image", "recording")
    assert acquisition["states"][0]["at"].endswith("Z")
    assert {"generation": "driver", "url": driver.ws_url, "config_url": driver.url, "config_user": "daq-runner"}.items() <= report.daq.items()


def test_config_stores_the_whole_config_and_sends_writer_user_id_with_every_start(daq_driver_sim, tmp_path):
    """bit_depth is merged into the stored config and the services restart; writer_user_id is not
    stored but sent as writer_id; a change already in force, or writer_user_id alone, stores nothing."""
    sim = daq_driver_sim
    before = json.loads(Path(sim.config_path).read_text())
    report = run(
        sim, tmp_path,
        "  - config: {bit_depth: 8, writer_user_id: 4242}\n"
        "  - check: {config: {bit_depth: 8, writer_user_id: 4242}, writer: READY}\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 4}\n"
        "  - config: {bit_depth: 8, writer_user_id: 0}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 4}\n",
    )  # fmt: skip
    assert "passed" == report.status, report.reason
    assert {**before, "bit_depth": 8} == json.loads(Path(sim.config_path).read_text())
    config, _, first, again, second = report.steps
    assert 8 == config.config["bit_depth"] and 4242 == config.config["writer_user_id"]
    assert 4242 == first.acquisition["request"]["writer_id"] and "writer_id" not in second.acquisition["request"]
    assert 1 == sum("configuration stored" in m for m in messages(report))  # the second config stored nothing


def test_steps_this_generation_lacks_are_refused_before_anything_is_sent(daq_driver_sim, tmp_path):
    """Deployment status, rates, a writer UNKNOWN: one file:line:column line each (a sweep's step once), nothing sent, no event."""
    seen: List[Any] = []
    config_before = Path(daq_driver_sim.config_path).read_text()
    with pytest.raises(BatchValidationError) as info:
        run(
            daq_driver_sim, tmp_path,
            "  - config: {bit_depth: 8}\n"
            "  - check: {deployment: SUCCESS}\n"
            "  - for: {n: [1, 2]}\n"
            "    steps:\n"
            "      - check: {min_writer_rate: 1}\n"
            "  - wait: {state: UNKNOWN}\n",
            consumers=[seen.append],
        )  # fmt: skip
    lines = info.value.lines()
    assert 3 == len(lines), lines
    assert lines[0] == (
        f"{tmp_path / 'b.yaml'}:4:5: check deployment: SUCCESS needs the deployment status of a configuration, which the current "
        "Standard DAQ generation (std_det_driver) does not have: remove it from the batch, or run the batch on a DAQ that has it"
    )
    assert ":7:9: check min_writer_rate needs the detector's and the writer's rates" in lines[1]
    assert ":8:5: wait state: UNKNOWN needs a writer state UNKNOWN" in lines[2]
    assert ([], 0, config_before) == (seen, daq_driver_sim.core.starts, Path(daq_driver_sim.config_path).read_text())


def test_a_start_whose_reply_was_lost_is_followed_and_never_sent_again(daq_driver_sim, tmp_path):
    """Every session drops right after the start is taken: the acquisition is found again and passes; one start."""
    daq_driver_sim.core.arm_faults({"drop_on_start": True})
    report = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 300}\n")
    assert "passed" == report.status, report.reason
    assert 1 == daq_driver_sim.core.starts
    assert any("the reply to the start was lost" in m for m in messages(report)) and any(m.endswith("did start") for m in messages(report))
    assert 300 == sum(f["n_images"] for f in report.files)


def test_sessions_dropped_during_a_write_are_opened_again(daq_driver_sim, tmp_path):
    """The driver drops every session while recording: the write goes on, followed on a new session."""
    daq_driver_sim.core.settings.frame_rate = 500
    when_recording(daq_driver_sim, lambda: daq_driver_sim.core.arm_faults({"drop_sessions": True}))
    report = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 300}\n")
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    assert (1, 300) == (step.attempts, step.n_written) and step.acquisition["reconnects"] >= 1


def test_a_restart_of_the_services_during_a_write_fails_the_attempt_and_the_retry_writes_it_again(daq_driver_sim, tmp_path):
    """The services restart mid-write: back to idle without file_saved, files short; the retry replaces them."""
    daq_driver_sim.core.settings.frame_rate = 500
    when_recording(daq_driver_sim, daq_driver_sim.core.restart)
    report = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 300}\n    retries: 1\n")
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    (failed,) = step.failed_attempts
    assert "went back to idle without file_saved after its session dropped (the DAQ services restarted?)" in failed["error"]
    assert (2, 2, 300) == (step.attempts, daq_driver_sim.core.starts, step.n_written)
    assert any("left by the failed attempt of this step" in m for m in messages(report))


def test_a_wedged_driver_is_recovered_by_restarting_its_services(daq_driver_sim, tmp_path):
    """A writer that never confirms its last image leaves the driver in recording: past the writers'
    time the services are restarted (a recovery), the attempt fails, the retry passes."""
    sim = daq_driver_sim
    sim.core.settings.writer_timeout_s = 0.5
    when_recording(sim, lambda: sim.core.arm_faults({"silent_writer": 1}))
    report = run(sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 100}\n    retries: 1\n", writer_timeout_s=0.5)
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    assert "the acquisition was lost: the driver was wedged in recording with all 100 images counted" in step.failed_attempts[0]["error"]
    (recovery,) = step.recoveries
    assert recovery["action"] == "restart_services (the config stored unchanged)" and recovery["outcome"].startswith("the driver is back and idle")


def test_after_an_error_the_services_restart_before_the_next_start(daq_driver_sim, tmp_path):
    """A writer that does not create its file ends the start in error: the writers may be one answer
    behind, so the retry restarts the services first (a recovery) and passes."""
    sim = daq_driver_sim
    sim.core.settings.writer_timeout_s = 0.5
    sim.core.arm_faults({"silent_writer": 0})
    report = run(sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 10}\n    retries: 1\n")
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    assert "the driver ended the acquisition in error while its writers created the files" in step.failed_attempts[0]["error"]
    assert [r["reason"] for r in step.recoveries] == ["the acquisition of step 1 ended in error: the writers may be one answer behind and keep its files open"]
    assert 2 == sim.core.starts


def test_a_driver_that_fails_every_start_fails_the_step_saying_what_it_needs(daq_driver_sim, tmp_path):
    """A writer that cannot create its file (a folder in its place), again after a restart: the step fails saying so."""
    (tmp_path / "a_0.h5").mkdir()
    report = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 10, overwrite: true}\n    retries: 1\n")
    (step,) = report.steps
    assert ("failed", 2) == (step.status, daq_driver_sim.core.starts)
    assert "(2 failures in a row, also after the services were restarted)" in step.error
    assert "its writers could not create them in that folder (it exists)" in step.error


def test_a_driver_busy_with_another_clients_acquisition_is_waited_for_then_the_write_is_not_started(daq_driver_sim, tmp_path):
    """Another client's acquisition waits for images for ever: the write waits to its timeout and says why; nothing is started."""
    sim = daq_driver_sim
    sim.core.arm_faults({"silent_detector": True})
    with DetDriverClient(sim.ws_url, sim.url) as other:
        other.start(str(tmp_path), "other_", 10)
        report = run(sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 10}\n    timeout: 1.5\n")
        other.stop()
    (step,) = report.steps
    assert "failed" == step.status and 1 == sim.core.starts
    assert "the driver is busy (state waiting_for_first_image" in step.error and "the write was not started" in step.error
    assert "an acquisition that gets no images waits for ever" in step.error
    assert [] == report.files


def test_a_background_write_ended_by_a_stop_step_passes_with_the_images_it_has(driver, tmp_path):
    """wait: false, then stop: its files hold what the driver counted, confirmed by them; the writer is READY after."""
    driver.core.settings.frame_rate = 500
    report = run(
        driver, tmp_path,
        "  - write: {output_file: '{root}/bg.h5', n_images: 100000, wait: false}\n"
        "  - check: {writer: WRITING}\n"
        "  - wait: {seconds: 0.3}\n"
        "  - stop: {}\n"
        "  - check: {writer: READY}\n",
    )  # fmt: skip
    assert "passed" == report.status, report.reason
    write = next(s for s in report.steps if s.kind == "write")
    assert (4, "files") == (write.stopped_by_step, write.confirmed_by)
    assert 0 < write.n_written < 100000 and write.n_written == sum(f["n_images"] for f in report.files)


def test_files_that_cannot_be_read_here_leave_the_drivers_count_alone(daq_driver_sim, tmp_path, monkeypatch):
    """Without the verify extra (a run with --no-verify, as where the files are not visible): confirmed
    by the count alone, and the report says so."""
    from daq_runner import verify

    def missing() -> None:
        raise verify.VerifyExtraMissing("file checks need the verify extra: pip install 'daq-runner[verify]' (No module named 'h5py')")

    monkeypatch.setattr(verify, "require_verify_extra", missing)
    report = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 7}\n", verify=False)
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    assert ("driver_count", 7) == (step.confirmed_by, step.n_written)
    assert "confirmed by the driver's count alone" in step.daq_log_reason
    assert [4, 3] == [f["n_images"] for f in report.files]  # the round-robin shares of the count
    assert any("every write is confirmed by the driver's count alone" in m for m in messages(report))


def test_existing_files_are_refused_unless_overwrite_is_allowed(daq_driver_sim, tmp_path):
    """One of the write's files exists: nothing is sent; with overwrite: true it is replaced, with a notice."""
    (tmp_path / "a_1.h5").write_bytes(b"precious")
    refused = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 4}\n")
    (step,) = refused.steps
    assert "failed" == step.status and 0 == daq_driver_sim.core.starts
    assert f"{tmp_path / 'a_1.h5'} exist: the DAQ's writers would overwrite them" in step.error and "nothing was sent" in step.error
    assert b"precious" == (tmp_path / "a_1.h5").read_bytes()
    allowed = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 4, overwrite: true}\n")
    assert "passed" == allowed.status and allowed.steps[0].overwrote
    assert any(m.startswith(f"overwriting {tmp_path / 'a_1.h5'}") for m in messages(allowed))


def test_a_stop_of_the_run_stops_the_acquisition_and_waits_for_the_outcome(daq_driver_sim, tmp_path):
    """request_stop mid-write (what a signal does): the stop is sent, the driver's outcome awaited, the files listed incomplete."""
    sim = daq_driver_sim
    sim.core.settings.frame_rate = 500
    runner_box: List[Runner] = []

    def run_it() -> RunReport:
        batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: '{tmp_path}/a.h5', n_images: 100000}}\n", "b.yaml")
        runner_box.append(Runner(daq=DriverDaq(sim.ws_url, sim.url), retry_delay=0.05))
        return runner_box[0].run(batch)

    when_recording(sim, lambda: (time.sleep(0.2), runner_box[0].request_stop("SIGTERM")))
    report = run_it()
    assert "interrupted" == report.status
    (step,) = report.steps
    (recovery,) = step.recoveries
    assert recovery["outcome"].startswith(f"stopped acquisition {step.acquisition_id} (file_saved, ")
    assert DriverState.IDLE == sim.core.snapshot()[0]
    assert [False, False] == [f["complete"] for f in report.files] and 0 < step.n_written < 100000


def test_a_resumed_run_applies_again_the_configuration_its_kept_config_steps_established(daq_driver_sim, tmp_path):
    """A run whose write failed after its config step passed; the DAQ's config then changes; the
    resume keeps the config step, stores its bit_depth again before the write (a recovery), and the files are 8-bit."""
    import h5py

    from daq_runner.resume import ResumedRun, previous_results

    sim = daq_driver_sim
    steps = "  - config: {bit_depth: 8}\n  - write: {output_file: '{root}/a.h5', n_images: 4}\n"
    (tmp_path / "a_0.h5").write_bytes(b"in the way")
    first = run(sim, tmp_path, steps).to_dict()
    assert ["passed", "failed"] == [s["status"] for s in first["steps"]]
    (tmp_path / "a_0.h5").unlink()
    sim.core.reset()  # back to the initial config: 16 bits
    batch = load_batch_text("version: 1\nsteps:\n" + steps.replace("{root}", str(tmp_path)), str(tmp_path / "b.yaml"))
    previous = previous_results(first, batch, report_path="first.json", batch_path="b.yaml", force=True)
    daq = DriverDaq(sim.ws_url, sim.url)
    report = Runner(daq=daq, retry_delay=0.05, resumed=ResumedRun.from_report(first)).run(batch, previous)
    assert "passed" == report.status, report.reason
    kept, write = report.steps
    assert kept.resumed and [r["action"] for r in write.recoveries] == ["update_config bit_depth=8"]
    with h5py.File(tmp_path / "a_0.h5", "r") as handle:
        assert "uint8" == str(handle["SIM-EIGER-64K"]["data"].dtype)


def test_a_start_another_client_beat_is_rejected_then_sent_once_the_driver_is_idle(daq_driver_sim, tmp_path):
    """Right after our write, another client starts first: our start is refused ("driver is busy!"),
    nothing of ours started; the write waits for idle and starts once."""
    sim = daq_driver_sim
    other = DetDriverClient(sim.ws_url, sim.url)

    def start_the_other(event: Any) -> None:
        if event.kind == "step_finished" and event.step == 1:  # in the Runner's thread, before step 2 begins
            other.start(str(tmp_path), "other_", 200)

    try:
        report = run(
            sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 2}\n  - write: {output_file: '{root}/b.h5', n_images: 2}\n",
            consumers=[start_the_other],
        )  # fmt: skip
    finally:
        other.close()
    assert "passed" == report.status, report.reason
    assert 3 == sim.core.starts  # ours, the other's, ours again: the refused one started nothing
    assert any(m.startswith('the driver rejected the start') and "driver is busy!" in m for m in messages(report))
    assert 2 == sum(f["n_images"] for f in report.files if "/b_" in f["path"])


def test_a_refusal_that_comes_after_another_clients_pushes_is_still_a_refusal(daq_driver_sim, tmp_path, monkeypatch):
    """Our start reaches a driver busy with another client's 2000 images and its "driver is busy!"
    comes after three pushes of that acquisition (answers and pushes are written by different
    threads): none is taken for ours; the write waits for idle, starts again, counts its own 2."""
    from daq_runner import det_driver_daq

    sim = daq_driver_sim
    monkeypatch.setattr(det_driver_daq, "_FRESH_S", 60.0)  # our start goes out at once after write 1
    other = DetDriverClient(sim.ws_url, sim.url)

    def start_the_other(event: Any) -> None:
        if event.kind == "step_finished" and event.step == 1:
            other.start(str(tmp_path), "other_", 2000)

    try:
        with DriverRelay(sim.ws_url, starts=(2,), hold_answers=3) as relay:
            report = run(
                sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 2}\n  - write: {output_file: '{root}/b.h5', n_images: 2}\n",
                consumers=[start_the_other], ws_url=relay.url,
            )  # fmt: skip
    finally:
        other.close()
    assert "passed" == report.status, report.reason
    assert (3, 3) == (sim.core.starts, relay.started)  # the other's went around the relay; the refused one started nothing
    assert any(m.startswith("the driver rejected the start") for m in messages(report))
    second = report.steps[1]
    # The other client's session may take our outcome (each is pushed once); a count is a sample.
    assert second.acquisition["outcome"] in ("file_saved", "idle") and 2 == second.n_written
    assert (second.acquisition["count"] or 0) <= 2
    assert "other_states" not in second.acquisition  # the refused start's states were never ours


def test_another_clients_end_pushed_between_our_start_and_its_take_is_not_ours(daq_driver_sim, tmp_path):
    """Another client's acquisition ends (recording and saving_file 200, file_saved, idle) after
    our start was sent, before the driver took it: neither its count nor its outcome is our
    write's; the write is followed to its own end and counts its own 2 images."""
    other = ('{"count":200,"status":"recording"}', '{"count":200,"status":"saving_file"}', '{"status":"file_saved"}', '{"status":"idle"}')
    with DriverRelay(daq_driver_sim.ws_url, before_start=other) as relay:
        report = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 2}\n", ws_url=relay.url)
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    acquisition = step.acquisition
    assert ("file_saved", 2, "files") == (acquisition["outcome"], step.n_written, step.confirmed_by)
    # A sample of ours (the first recording push can say 0), or none where under load ours too
    # was pushed before the driver answered the marker (then the files decide): never the 200.
    assert acquisition["count"] in (None, 0, 1, 2)
    assert [("recording", 200), ("saving_file", 200), ("file_saved", None)] == [(s["state"], s["count"]) for s in acquisition["other_states"]][:3]
    assert all((s["count"] or 0) <= 2 for s in acquisition["states"])


def test_a_late_sample_of_another_clients_outcome_is_not_our_end(daq_driver_sim, tmp_path):
    """Another client's file_saved, sampled before the driver took our start and pushed right
    after the first frame that follows it: not our end; our 1000 images are followed to theirs."""
    with DriverRelay(daq_driver_sim.ws_url, after_first=('{"status":"file_saved"}',)) as relay:
        report = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 1000}\n", ws_url=relay.url)
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    assert ("file_saved", 1000) == (step.acquisition["outcome"], step.n_written) and (step.acquisition["count"] or 0) <= 1000
    assert ("file_saved", None) == (step.acquisition["other_states"][-1]["state"], step.acquisition["other_states"][-1]["count"])


def test_states_that_cannot_be_told_apart_leave_the_count_to_the_files_and_the_step_says_so(daq_driver_sim, tmp_path):
    """No answer to the marker after the start (whose pushes are ours is unsure): the driver's
    count is not recorded as ours; the files (our file_prefix) decide, and the step says so."""
    from daq_runner.det_driver import CONFIRM_S

    sim = daq_driver_sim
    sim.core.arm_faults({"silent_detector": True})

    def images_once_the_start_is_taken() -> None:
        wait_until(lambda: relay.started == 1, timeout=20, interval=0.01)
        time.sleep(CONFIRM_S + 0.3)
        sim.core.arm_faults({"silent_detector": False})

    with DriverRelay(sim.ws_url, drop_marker=True) as relay:
        thread = threading.Thread(target=images_once_the_start_is_taken, daemon=True)
        thread.start()
        report = run(sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 4}\n", ws_url=relay.url)
        thread.join(10)
    assert "passed" == report.status, report.reason
    (step,) = report.steps
    assert ("files", 4, None) == (step.confirmed_by, step.n_written, step.acquisition["count"])
    assert "told apart from another client's acquisition" in step.acquisition["doubt"]
    assert "could not be told apart" in step.daq_log_reason
    assert any("its files (" in m and "decide" in m for m in messages(report))


def test_a_write_whose_images_never_come_ends_at_its_timeout_and_is_stopped(daq_driver_sim, tmp_path):
    """A detector that sends nothing: the write fails at its timeout naming the last state, the acquisition is stopped."""
    daq_driver_sim.core.arm_faults({"silent_detector": True})
    began = time.monotonic()
    report = run(daq_driver_sim, tmp_path, "  - write: {output_file: '{root}/a.h5', n_images: 10}\n    timeout: 1\n")
    (step,) = report.steps
    assert "timed out after 1 s before 10 images were counted (last state waiting_for_first_image)" == step.error
    assert step.problem.endswith("; 0 of 10 images written")  # the count, once: the record's
    assert step.recoveries[0]["outcome"].startswith(f"stopped acquisition {step.acquisition_id}")
    assert DriverState.IDLE == daq_driver_sim.core.snapshot()[0] and time.monotonic() - began < 8


def test_a_driver_killed_mid_write_leaves_one_count_in_the_step_its_files_the_totals_and_show(tmp_path):
    """daq-sim SIGKILLed mid-write (its files left unreadable, the run ends DAQ unreachable): the
    step's n_written is the images its files list, the totals' images, and what show says."""
    import re
    import signal
    import subprocess

    from .conftest import batch_file, run_script, script, start_daq_run

    sim = subprocess.Popen(
        [script("daq-sim"), "--generation", "driver", "--port", "0", "--ws-port", "0", "--frame-rate", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        words = dict(word.split("=", 1) for word in sim.stdout.readline().split()[2:])
        path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 2000}\n")
        report = tmp_path / "r.json"
        proc = start_daq_run(path, "--url", words["ws"], "--config-url", words["config"], "--report", str(report), "--max-outage", "1", "--quiet")
        with DetDriverClient(words["ws"], words["config"]) as client:
            client.wait_for(lambda s: (s.count or 0) > 100, timeout=20)
        sim.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        sim.kill()
        sim.wait()
        sim.stdout.close()
        sim.stderr.close()
    assert 3 == proc.returncode, err
    final = json.loads(report.read_text())
    (step,) = final["steps"]
    listed = sum(f["n_images"] for f in final["files"])
    # The run's own session may have heard a lower count than the client above before the kill
    # (a loaded machine): what matters is one number, not 0, everywhere.
    assert 0 < step["n_written"] == listed == final["totals"]["images"] < 2000
    shown = run_script("daq-run", "show", str(report))
    assert f"{step['n_written']} of 2000 images written" in shown.stdout, shown.stdout
    assert not re.search(r"\b0 of 2000 images written", shown.stdout)
