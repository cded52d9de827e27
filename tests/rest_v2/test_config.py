"""The configuration a write runs with is proven, not assumed; a stored config's restart is waited for.

The Runner against daq-sim with its restart on (the services go down 1 s after a deployment
reported, for 1 s, as on the real DAQ) and a real Redis; configs from outside are stored
through the REST API as another client would, from the run's own event stream, so that they
land between two given steps.
"""

from __future__ import annotations

import threading
import time

import h5py
import pytest

from daq_runner import Runner, StdDaqClient, events
from daq_runner.batch import load_batch_text
from daq_runner.testing import arm_faults

from ..conftest import wait_until

SWEEP = (
    "version: 1\nsteps:\n  - for: {bit_depth: [8, 16, 32]}\n    steps:\n"
    "      - config: {bit_depth: '{bit_depth}'}\n"
    "      - write: {output_file: '{root}/sweep_{bit_depth}.h5', n_images: 20}\n"
)


def run(daq_sim, tmp_path, text, consumers=(), redis=True, **kwargs):
    batch = load_batch_text(text, optional_vars={"root": str(tmp_path)})
    runner = Runner(daq_sim.url, daq_sim.redis_url if redis else None, list(consumers), retry_delay=0.05, **kwargs)
    return runner.run(batch)


def dtype(path) -> str:
    with h5py.File(path) as handle:
        (group,) = handle.values()
        return str(group["data"].dtype)


def outside(daq_sim, **changes):
    """Someone else stores a config (as std_cli_set_config --merge would), and it deploys."""
    return StdDaqClient(daq_sim.url).update_config(changes)


def on_step_finished(index, action):
    """A consumer that calls ``action()`` when step ``index`` has been recorded (before the next one starts)."""

    def consumer(event):
        if event.kind == events.STEP_FINISHED and event.step == index:
            action()

    return consumer


def test_a_config_then_write_sweep_passes_with_the_restart_on_without_settle_or_retries(daq_sim, tmp_path):
    """The sweep every beamline runs, on a DAQ whose services restart after each config: each config
    step ends once they are back (seen in daq:stat), each write runs at its depth, first time."""
    report = run(daq_sim, tmp_path, SWEEP)
    assert "passed" == report.status, (report.reason, [step.get("restart") for step in report.steps[0::2]])
    configs, writes = report.steps[0::2], report.steps[1::2]
    assert all(step["restart"]["seen"] and step["restart"]["sign"] == "zeros" for step in configs), [s["restart"] for s in configs]
    assert all(1 == step["attempts"] and not step["recoveries"] and not step["failed_attempts"] for step in report.steps)
    assert ["uint8", "uint16", "uint32"] == [dtype(step["output_file"]) for step in writes]
    assert [c["config_id"] for c in configs] == [w["config_id"] for w in writes], "each write names the config it ran with"


@pytest.mark.parametrize("stats_while_down", ["zeros", "silence"])
def test_the_restart_shows_as_zeros_or_as_a_silence_of_daq_stat(daq_sim, tmp_path, stats_while_down):
    """A statistics logger that writes zeros while the services are down (the real server), or one
    that goes silent with them: either way the config step ends once they are back."""
    daq_sim.core.settings.stats_while_down = stats_while_down
    daq_sim.core.settings.restart_s = 2.0  # a silence of a restart is longer than a held-up logger's (2 s at least)
    report = run(daq_sim, tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 32}\n  - write: {output_file: '{root}/a.h5', n_images: 5}\n")
    assert "passed" == report.status, report.reason
    assert (True, stats_while_down) == (report.steps[0]["restart"]["seen"], report.steps[0]["restart"]["sign"])
    assert "uint32" == dtype(tmp_path / "a.h5")


def test_without_redis_the_restart_is_waited_for_over_rest(daq_sim, tmp_path):
    """No Redis: the config step waits for the restart through GET /daq/stats (zeros, then images)."""
    report = run(daq_sim, tmp_path, SWEEP, redis=False)
    assert "passed" == report.status, report.reason
    assert all(step["restart"]["seen"] for step in report.steps[0::2])
    assert ["uint8", "uint16", "uint32"] == [dtype(step["output_file"]) for step in report.steps[1::2]]


def test_a_config_stored_from_outside_between_steps_is_applied_again_before_the_write(daq_sim, tmp_path):
    """Someone stores bit_depth 16 between the run's config step (8) and its write: the write
    applies 8 again first (a recovery naming the foreign config's id and time), waits for the
    restart, and writes 8-bit; its record names the config it ran with."""
    foreign = {}
    consumer = on_step_finished(1, lambda: foreign.setdefault("update", outside(daq_sim, bit_depth=16)))
    report = run(daq_sim, tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 8}\n  - write: {output_file: '{root}/a.h5', n_images: 20}\n", [consumer])
    assert "passed" == report.status, report.reason
    write = report.steps[1]
    (recovery,) = write["recoveries"]
    foreign_id = foreign["update"].config_id
    assert f"config {foreign_id} stored at " in recovery["reason"] and "by someone else (bit_depth=16 instead of 8)" in recovery["reason"]
    assert ("update_config bit_depth=8", True) == (recovery["action"], recovery["outcome"].startswith("applied: config "))
    applied_id = recovery["outcome"].split("config ", 1)[1]
    assert applied_id == write["config_id"] != foreign_id
    assert "uint8" == dtype(tmp_path / "a.h5")
    assert (1, []) == (write["attempts"], write["failed_attempts"])


def test_an_outside_config_that_keeps_the_runs_fields_is_taken_on_after_its_restart(daq_sim, tmp_path):
    """A foreign config that changes only what the run did not set: no config sent, a notice; the
    write waits for the services' restart with it (not lost under it) and names it."""
    foreign = {}
    consumer = on_step_finished(1, lambda: foreign.setdefault("update", outside(daq_sim, writer_user_id=4242)))
    report = run(daq_sim, tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 32}\n  - write: {output_file: '{root}/a.h5', n_images: 20}\n", [consumer])
    assert "passed" == report.status, report.reason
    write = report.steps[1]
    assert ([], foreign["update"].config_id) == (write["recoveries"], write["config_id"])
    assert any("by someone else; it keeps what this run set (bit_depth=32)" in n["message"] for n in report.notices)
    assert "uint32" == dtype(tmp_path / "a.h5")


def test_a_run_that_set_no_configuration_goes_on_with_an_outside_one_once_restarted(daq_sim, tmp_path):
    """Writes only, and someone stores bit_depth 32 between them: the next write waits for the
    restart (instead of being lost under it) and runs with it, a notice saying so."""
    foreign = {}
    consumer = on_step_finished(1, lambda: foreign.setdefault("update", outside(daq_sim, bit_depth=32)))
    report = run(
        daq_sim,
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 20}\n  - write: {output_file: '{root}/b.h5', n_images: 20}\n",
        [consumer],
    )
    assert "passed" == report.status, report.reason
    assert ("uint16", "uint32") == (dtype(tmp_path / "a.h5"), dtype(tmp_path / "b.h5"))
    assert foreign["update"].config_id == report.steps[1]["config_id"] != report.steps[0]["config_id"]
    assert any("this run set no configuration: its writes go on with it" in n["message"] for n in report.notices)


def test_a_writer_reset_during_a_write_gets_the_configuration_back_before_the_retry(daq_sim, tmp_path):
    """The DAQ restarts under a write with another configuration (writer UNKNOWN, bit_depth 16 stored):
    the writer is reset, and the retry applies the run's 32 first: a 32-bit file."""
    daq_sim.core.settings.frame_rate, daq_sim.core.settings.driver_timeout_s = 20, 0.5

    def restart_under_the_write(event):
        if event.kind == events.PROGRESS and event.step == 2 and not done:
            done.append(True)
            arm_faults(daq_sim, writer_state="UNKNOWN")
            outside(daq_sim, bit_depth=16)

    done: list = []
    report = run(
        daq_sim,
        tmp_path,
        "version: 1\nsteps:\n  - config: {bit_depth: 32}\n  - write: {output_file: '{root}/a.h5', n_images: 20}\n    retries: 1\n",
        [restart_under_the_write],
    )
    assert "passed" == report.status, report.reason
    write = report.steps[1]
    assert 2 == write["attempts"] and "went UNKNOWN during the acquisition" in write["failed_attempts"][0]["error"]
    assert any("update_config bit_depth=32" == r["action"] for r in write["recoveries"]), write["recoveries"]
    assert "uint32" == dtype(tmp_path / "a.h5")


def test_cannot_reach_writing_in_the_restart_window_is_the_restart(daq_sim, tmp_path, monkeypatch):
    """Where the restart cannot be seen (no Redis, a statistics logger that goes silent: GET
    /daq/stats repeats its last entry), the write may land while the services are down: "Cannot
    reach WRITING" then is that restart; the writer is reset and the write started again once, as
    a recovery, not a retry: one acquisition, at the new depth."""
    import daq_runner._restart

    monkeypatch.setattr(daq_runner._restart, "SIGN_WINDOW_S", 1.5)
    settings = daq_sim.core.settings
    settings.stats_while_down, settings.restart_delay_s, settings.restart_s, settings.driver_timeout_s = "silence", 1.0, 2.0, 1.0
    report = run(daq_sim, tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 8}\n  - write: {output_file: '{root}/a.h5', n_images: 20}\n", redis=False)
    assert "passed" == report.status, report.reason
    write = report.steps[1]
    assert (1, []) == (write["attempts"], write["failed_attempts"])
    assert any("Cannot reach WRITING" in r["reason"] and "restarting with it" in r["reason"] for r in write["recoveries"]), write["recoveries"]
    assert "uint8" == dtype(tmp_path / "a.h5")
    logs = StdDaqClient(daq_sim.url).get_logs(10)
    assert 1 == len([r for r in logs if r["info"]["output_file"] == str(tmp_path / "a.h5")])


def test_a_config_step_fails_when_the_services_do_not_come_back(daq_sim, tmp_path, monkeypatch):
    """The services go down after the deployment and the detector's images do not come back: the
    config step fails saying so (bounded), instead of letting writes run into a DAQ that is not there."""
    import daq_runner._restart

    monkeypatch.setattr(daq_runner._restart, "BACK_WINDOW_S", 2.0)

    def stop_the_detector(event):
        if event.kind == events.WAITING and "restart" in event.data.get("what", ""):
            arm_faults(daq_sim, detector_rate=0)

    began = time.monotonic()
    report = run(daq_sim, tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 8}\n", [stop_the_detector])
    assert "failed" == report.status and time.monotonic() - began < 10
    assert "were not seen back" in report.steps[0]["error"] and "is the detector sending?" in report.steps[0]["error"]
    wait_until(lambda: not daq_sim.core.services_down)


LONG_WRITE = "version: 1\nsteps:\n  - config: {bit_depth: 8}\n  - write: {output_file: '{root}/a.h5', n_images: 3000}\n    timeout: 30\n    retries: RETRIES\n"


def store_during_the_write(daq_sim, foreign, in_thread=True):
    """A consumer that stores bit_depth 16 from outside once the write (step 2) has written images:
    from a thread (as another person would), or from the run's own thread (the run then reads
    on only once the config is deployed)."""

    def consumer(event):
        if event.kind == events.PROGRESS and event.step == 2 and event.data["n_written"] > 0 and not foreign:
            foreign["at"] = time.monotonic()
            if in_thread:
                foreign["thread"] = threading.Thread(target=lambda: foreign.setdefault("update", outside(daq_sim, bit_depth=16)), daemon=True)
                foreign["thread"].start()
            else:
                foreign["update"] = outside(daq_sim, bit_depth=16)

    return consumer


def test_a_config_stored_during_a_write_fails_it_at_once_naming_the_config_and_the_stop_keeps_its_file(daq_sim, tmp_path):
    """Someone stores bit_depth 16 while a 30 s write runs: the attempt fails at once (not after its
    timeout, with no advice of a longer one) naming the config, what it changed and why the write is
    lost; the acquisition is stopped before the restart reaches it, so its file keeps what was written."""
    daq_sim.core.settings.frame_rate = 100
    foreign: dict = {}
    report = run(daq_sim, tmp_path, LONG_WRITE.replace("RETRIES", "0"), [store_during_the_write(daq_sim, foreign)])
    foreign["thread"].join(10)
    assert "failed" == report.status
    assert time.monotonic() - foreign["at"] < 5, "failed at once, not at the step's timeout"
    write = report.steps[1]
    config_id = foreign["update"].config_id
    assert write["error"].startswith(f"config {config_id} (bit_depth=16 instead of 8), by someone else at "), write["error"]
    assert write["error"].endswith("stored while this write ran: the DAQ's services restart under the acquisition"), write["error"]
    assert "timeout" not in write["error"]
    (stop,) = [r for r in write["recoveries"] if r["action"] == "stop_writer"]
    assert ("READY", write["error"]) == (stop["outcome"], stop["reason"])
    assert 0 < write["n_written"] < 3000 and write["acquisition"]["message"] == "Interrupted."
    with h5py.File(tmp_path / "a.h5") as handle:
        (group,) = handle.values()
        assert write["n_written"] == group["data"].shape[0]


def test_a_retry_after_a_config_stored_during_the_write_applies_the_runs_config_first(daq_sim, tmp_path):
    """The same with retries: 1: the retry applies the run's bit_depth 8 over the foreign config
    (a recovery naming it), waits for the restart, and writes every image at 8 bits."""
    daq_sim.core.settings.frame_rate = 1000
    foreign: dict = {}
    report = run(daq_sim, tmp_path, LONG_WRITE.replace("RETRIES", "1"), [store_during_the_write(daq_sim, foreign)])
    foreign["thread"].join(10)
    assert "passed" == report.status, report.reason
    write = report.steps[1]
    config_id = foreign["update"].config_id
    assert 2 == write["attempts"] and f"config {config_id} (bit_depth=16 instead of 8)" in write["failed_attempts"][0]["error"]
    (reapplied,) = [r for r in write["recoveries"] if r["action"] == "update_config bit_depth=8"]
    assert f"config {config_id} stored at " in reapplied["reason"]
    assert (3000, "uint8") == (write["n_written"], dtype(tmp_path / "a.h5"))
    assert write["config_id"] not in (config_id, report.steps[0]["config_id"])


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "rest"])
def test_a_config_that_wedged_the_writer_driver_under_the_write_stops_the_run_with_what_the_daq_needs(daq_sim, tmp_path, redis):
    """The restart came before the runner could stop the write (the writer driver is wedged: every
    stop answers "Cannot reach READY"): the run stops at once, naming the config that caused it and
    the restart of the DAQ's REST server it needs; without Redis the config id over REST tells."""
    settings = daq_sim.core.settings
    settings.frame_rate, settings.restart_s, settings.driver_timeout_s = 100, 0.0, 0.3  # restarted as it deploys
    foreign: dict = {}
    began = time.monotonic()
    report = run(daq_sim, tmp_path, LONG_WRITE.replace("RETRIES", "2"), [store_during_the_write(daq_sim, foreign, in_thread=False)], redis=redis)
    assert "failed" == report.status and time.monotonic() - began < 15
    write = report.steps[1]
    config_id = foreign["update"].config_id
    assert 1 == write["attempts"], write["failed_attempts"]
    assert write["error"].startswith("the DAQ's writer driver is wedged: 3 stops in a row answered Cannot reach READY"), write["error"]
    assert f"(config {config_id} (bit_depth=16 instead of 8), by someone else at " in write["error"]
    assert "restart the DAQ's REST server" in write["error"] and "timeout" not in write["error"]


def test_a_config_stored_during_a_background_write_is_its_cause_when_the_run_settles_it(daq_sim, tmp_path):
    """A write with wait: false, and someone stores bit_depth 16 while it runs and the batch goes
    on: when the run settles it, its record names that config as the cause at once (read from
    the config it started with), instead of waiting out its step's timeout for a lost acquisition."""
    settings = daq_sim.core.settings
    settings.frame_rate, settings.driver_timeout_s = 100, 0.3
    foreign: dict = {}

    def consumer(event):
        if event.kind == events.STEP_STARTED and event.step == 3 and not foreign:
            foreign["update"] = outside(daq_sim, bit_depth=16)

    text = (
        "version: 1\nsteps:\n  - config: {bit_depth: 8}\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 3000, wait: false}\n    timeout: 30\n"
        "  - wait: {seconds: 1}\n"
    )
    began = time.monotonic()
    report = run(daq_sim, tmp_path, text, [consumer])
    assert "failed" == report.status and time.monotonic() - began < 15
    (write,) = [step for step in report.steps if step["kind"] == "write"]
    assert f"config {foreign['update'].config_id} (bit_depth=16 instead of 8)" in write["error"], write["error"]
    assert "stored while this write ran: the DAQ's services restart under the acquisition" in write["error"]
