"""The Runner against daq-sim over real HTTP and a real Redis: semantics, faults, reports."""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import redis
import requests

from daq_runner import LockError, LockHeldError, Runner, events
from daq_runner.batch import load_batch_text
from daq_runner.lock import DaqLock
from daq_runner.report import JsonReportFile, JUnitFile
from daq_runner.testing import arm_faults

from .conftest import wait_until

WRITE = "version: 1\nsteps:\n  - write: {{output_file: '{{root}}/{name}.h5', n_images: {n}}}\n"


class Collect:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def kinds(self, kind):
        return [e for e in self.events if e.kind == kind]


def test_write_passes_with_daq_log_from_redis(run_batch, tmp_path):
    """A write passes when FINISHED with all images, confirmed by the daq:log record."""
    report = run_batch(WRITE.format(name="a", n=20))
    assert "passed" == report.status
    step = report.steps[0]
    assert ("passed", 1, 20) == (step["status"], step["attempts"], step["acquisition"]["stats"]["n_write_completed"])
    assert step["run_id"] == str(step["daq_log"]["info"]["run_id"])  # run ids are strings in reports
    assert step["daq_log_source"].startswith("redis daq:log")
    assert (tmp_path / "a.h5").exists()


def test_every_write_gets_a_unique_run_id(run_batch):
    """Each write carries its own run_id."""
    report = run_batch("version: 1\nsteps:\n  - for: {i: [1, 2, 3]}\n    steps:\n      - write: {output_file: '{root}/u{i}.h5', n_images: 1}\n")
    ids = [s["run_id"] for s in report.steps]
    assert 3 == len(set(ids))


def test_without_redis_rest_polling_and_rest_logs(daq_sim, tmp_path):
    """Without Redis the runner polls REST and confirms from /daq/logs."""
    batch = load_batch_text(WRITE.format(name="p", n=10), vars={"root": str(tmp_path)})
    report = Runner(daq_sim.url, None).run(batch)
    assert "passed" == report.status
    assert "rest /daq/logs" == report.steps[0]["daq_log_source"]
    assert any("no runner lock could be taken" in n["message"] for n in report.notices)


def test_failed_acquisition_is_retried_then_passes(run_batch, daq_sim):
    """A FAILED acquisition fails the attempt with the DAQ's message; a retry passes."""
    arm_faults(daq_sim, fail_next="ERROR: detector lost")
    collect = Collect()
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: '{root}/f.h5', n_images: 10}\n    retries: 1\n", consumers=[collect])
    assert "passed" == report.status and 2 == report.steps[0]["attempts"]
    failure = collect.kinds(events.ATTEMPT_FAILED)[0]
    assert "acquisition FAILED: ERROR: detector lost" == failure.data["error"] and failure.data["will_retry"]
    assert [(1, "acquisition FAILED: ERROR: detector lost")] == [(a["attempt"], a["error"]) for a in report.steps[0]["failed_attempts"]]


def test_failed_step_aborts_and_skips_the_rest(run_batch, daq_sim):
    """Without retries a failure fails the run; on_error abort skips what follows."""
    arm_faults(daq_sim, fail_next="ERROR: disk full")
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: '{root}/f.h5', n_images: 4}\n  - stop: {}\n")
    assert "failed" == report.status
    assert ["failed", "skipped"] == [s["status"] for s in report.steps]
    assert "ERROR: disk full" in report.steps[0]["error"]
    assert {"passed": 0, "failed": 1, "skipped": 1, "interrupted": 0} == report.summary


def test_on_error_continue_goes_on(run_batch, daq_sim):
    """on_error: continue runs the next steps; the run still fails."""
    arm_faults(daq_sim, fail_next="ERROR: x")
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: '{root}/f.h5', n_images: 4}\n    on_error: continue\n  - stop: {}\n")
    assert ("failed", ["failed", "passed"]) == (report.status, [s["status"] for s in report.steps])


def test_unknown_before_step_is_recovered_and_recorded(run_batch, daq_sim):
    """A fresh DAQ's UNKNOWN writer is reset before the first step (a pre-run recovery);
    one found UNKNOWN before a later write is reset by that step (its recovery)."""
    arm_faults(daq_sim, writer_state="UNKNOWN")
    report = run_batch(WRITE.format(name="u", n=5))
    assert "passed" == report.status
    assert [] == report.steps[0]["recoveries"]
    (pre,) = report.to_dict()["recoveries"]
    assert ("stop_writer", "READY") == (pre["action"], pre["outcome"]) and "before the first step" in pre["reason"]

    def strike(event):
        if event.kind == events.STEP_FINISHED and event.step == 1:
            arm_faults(daq_sim, writer_state="UNKNOWN")

    report = run_batch("version: 1\nsteps:\n  - check: {writer: READY}\n  - write: {output_file: '{root}/u2.h5', n_images: 5}\n", consumers=[strike])
    assert "passed" == report.status
    (recovery,) = report.steps[1]["recoveries"]
    assert ("stop_writer", "READY", "writer UNKNOWN before the write") == (recovery["action"], recovery["outcome"], recovery["reason"])


def test_unknown_during_acquisition_fails_attempt_recovers_and_retries(run_batch, daq_sim):
    """The writer going UNKNOWN mid-acquisition: recovery, the attempt fails, the retry passes."""
    daq_sim.core.settings.frame_rate = 100
    # The stop after the restart ends in "Cannot reach READY" when the driver gives up: after
    # 0.5 s here instead of the real 5 s (what follows is the same; reset() restores it).
    daq_sim.core.settings.driver_timeout_s = 0.5

    def images_written():
        acquisition = requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]["acquisition"] or {}
        return acquisition.get("state") == "ACQUIRING_IMAGES" and acquisition["stats"]["n_write_completed"] > 0

    def strike():
        wait_until(images_written)  # the start was confirmed: the acquisition is under way
        arm_faults(daq_sim, writer_state="UNKNOWN")
        daq_sim.core.settings.frame_rate = 2000

    thread = threading.Thread(target=strike)
    thread.start()
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: '{root}/x.h5', n_images: 300}\n    retries: 1\n")
    thread.join()
    step = report.steps[0]
    assert ("passed", 2) == (step["status"], step["attempts"])
    assert any("during the acquisition" in r["reason"] for r in step["recoveries"])
    assert "writer went UNKNOWN during the acquisition" in step["failed_attempts"][0]["error"]


def test_stall_hits_timeout_and_acquisition_is_stopped(run_batch, daq_sim):
    """A stalled acquisition fails at the step timeout, and the runner stops it."""
    arm_faults(daq_sim, stall_s=30)
    start = time.monotonic()
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: '{root}/s.h5', n_images: 10}\n    timeout: 1\n")
    assert time.monotonic() - start < 8
    step = report.steps[0]
    assert "failed" == report.status and "timed out after 1 s before its 10 images were written" == step["error"]
    assert [("timed out after 1 s before its 10 images were written", "stop_writer")] == [(r["reason"], r["action"]) for r in step["recoveries"]]
    assert (0, "; 0 of 10 images written") == (step.images_written, step.problem[-len("; 0 of 10 images written") :])  # the count, once
    assert step["recoveries"][0]["outcome"].startswith("stopped acquisition")
    assert "READY" == requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]["state"]


def test_config_waits_for_deployment_and_fails_on_error(run_batch, daq_sim):
    """config passes after deployment SUCCESS; a failed deployment fails the step."""
    assert "passed" == run_batch("version: 1\nsteps:\n  - config: {bit_depth: 8}\n").status
    arm_faults(daq_sim, deployment="ERROR")
    report = run_batch("version: 1\nsteps:\n  - config: {bit_depth: 32}\n")
    assert "failed" == report.status and "Deployment failed" in report.steps[0]["error"]
    assert "ERROR" == report.steps[0]["deployment"]["status"]


def test_check_conditions(run_batch):
    """check compares deployment, writer, config values and rates; the message lists mismatches."""
    ok = run_batch("version: 1\nsteps:\n  - check: {deployment: SUCCESS, writer: READY, config: {bit_depth: 16}}\n")
    assert "passed" == ok.status
    bad = run_batch("version: 1\nsteps:\n  - check: {writer: WRITING, config: {bit_depth: 8}, min_detector_rate: 1000000}\n")
    error = bad.steps[0]["error"]
    assert "writer is READY, expected WRITING" in error and "config bit_depth is 16, expected 8" in error
    assert "expected at least 1e+06" in error


def test_refusal_is_reported_with_the_daqs_message(run_batch, tmp_path):
    """A write the DAQ refuses (missing folder) fails with the DAQ's own message."""
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: /no/such/dir/x.h5, n_images: 1}\n")
    assert "the DAQ refused: Output file folder /no/such/dir does not exist. Please create it first." == report.steps[0]["error"]


def test_no_wait_write_then_wait_and_stop(run_batch, daq_sim):
    """wait: false starts and goes on; wait state and stop behave."""
    daq_sim.core.settings.frame_rate = 100
    report = run_batch(
        "version: 1\nsteps:\n  - write: {output_file: '{root}/bg.h5', n_images: 100000, wait: false}\n"
        "  - check: {writer: WRITING}\n  - stop: {}\n  - wait: {state: READY, timeout: 5}\n"
    )
    assert ["passed"] * 4 == [s["status"] for s in report.steps]
    assert "Interrupted." == report.steps[2]["acquisition"]["message"]


def test_write_waits_for_a_running_acquisition(run_batch, daq_sim):
    """A write after a no-wait write waits for READY, then runs."""
    daq_sim.core.settings.frame_rate = 1000
    report = run_batch(
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 300, wait: false}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 5}\n"
    )
    assert "passed" == report.status


def test_rest_outage_is_ridden_out(run_batch, daq_sim):
    """A short REST outage (HTTP 503) mid-batch is waited out with backoff."""
    arm_faults(daq_sim, unavailable_s=1.5)
    report = run_batch(WRITE.format(name="o", n=5))
    assert "passed" == report.status
    assert any("retrying" in n["message"] for n in report.notices)


def test_redis_dies_mid_batch_falls_back_and_returns(tmp_path):
    """Redis killed between two writes and back 2.5 s later with its data: the DAQ's REST server
    answers "Error 111 connecting to ..." meanwhile, ridden out as an outage; REST polling takes
    over, and once Redis is back the stream is used again."""
    from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq

    data = tmp_path / "redis"
    data.mkdir()
    server = RedisServer(data_dir=str(data)).start()
    restarted = {}
    with SimulatedDaq(redis_url=server.url, settings=SimSettings(frame_rate=50, heartbeat_s=0.3)) as sim:
        batch = load_batch_text(
            "version: 1\nsteps:\n  - for: {i: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}\n    steps:\n      - write: {output_file: '{root}/r{i}.h5', n_images: 20}\n",
            vars={"root": str(tmp_path)},
        )
        collect = Collect()

        def chaos(event):
            # Between two steps (in the runner's thread): no acquisition ends while Redis is
            # down, so the DAQ's log thread lives on (a Redis error ends it, as on the real server).
            if event.kind == events.STEP_FINISHED and event.step == 1:
                server.kill()
                timer = threading.Timer(2.5, lambda: restarted.setdefault("server", RedisServer(port=server.port, data_dir=str(data)).start()))
                timer.start()
                time.sleep(1.2)  # past the moment a next write may start on the last one's cursors: it looks at Redis

        runner = Runner(sim.url, server.url, [collect, chaos], require_log=False)
        report = runner.run(batch)
        wait_until(lambda: "server" in restarted)
        restarted["server"].stop()
    assert "passed" == report.status, report.to_dict()
    notices = " | ".join(n["message"] for n in report.notices)
    assert "falling back to REST polling" in notices
    assert "Redis is back; waiting on the status stream again" in notices
    assert "cannot reach its own Redis" in notices  # the REST server's "Error 111", ridden out
    assert report.steps[-1]["daq_log_source"].startswith("redis daq:log")  # back on the stream


def test_interrupt_stops_the_acquisition_and_reports(daq_sim, tmp_path):
    """request_stop during a write: acquisition stopped, step interrupted, rest skipped."""
    daq_sim.core.settings.frame_rate = 50
    batch = load_batch_text(WRITE.format(name="i", n=100000) + "  - stop: {}\n", vars={"root": str(tmp_path)})
    runner = Runner(daq_sim.url, daq_sim.redis_url)
    threading.Timer(0.5, runner.request_stop, args=("SIGTERM",)).start()
    start = time.monotonic()
    report = runner.run(batch)
    assert time.monotonic() - start < 5
    assert ("interrupted", ["interrupted", "skipped"]) == (report.status, [s["status"] for s in report.steps])
    status = requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]
    assert ("READY", "Interrupted.") == (status["state"], status["acquisition"]["message"])


@pytest.mark.parametrize("kind", ["missing folder", "existing file"])
def test_a_refusal_no_retry_can_change_is_not_retried_and_the_report_says_why(daq_sim, tmp_path, kind):
    """A folder the DAQ does not have, a file that must not be overwritten: one attempt, not
    retries: 3 of them a second apart, and the step's error says why no retry was made."""
    if kind == "missing folder":
        out, why = tmp_path / "no-such-folder" / "a.h5", "not retried: the output folder does not exist on the DAQ"
    else:
        out, why = tmp_path / "a.h5", "not retried: the file stays there whatever the DAQ does"
        out.write_bytes(b"an earlier night's file")
    batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: '{out}', n_images: 2}}\n    retries: 3\n")
    collect = Collect()
    start = time.monotonic()
    report = Runner(daq_sim.url, daq_sim.redis_url, [collect]).run(batch)
    assert time.monotonic() - start < 2.5  # not three more attempts a second apart
    (step,) = report.steps
    assert ("failed", 1, 1) == (step.status, step.attempts, len(step.failed_attempts))
    assert why in step.error and why in step.failed_attempts[0]["error"]
    assert [False] == [e.data["will_retry"] for e in collect.kinds(events.ATTEMPT_FAILED)]


def test_a_write_that_cannot_finish_within_its_timeout_is_said_before_it_starts_and_when_it_ends(daq_sim, tmp_path):
    """30,000 images at 100 images/s do not fit a 60 s timeout: a notice says so before the first
    step (the detector's rate is known), another while it writes, and the timeout's error names
    the timeout the write would have needed."""
    daq_sim.core.settings.frame_rate = 100

    def rate() -> float:
        stats = requests.get(daq_sim.url + "/daq/stats", timeout=5).json()["stats"] or {}
        return (stats.get("detector") or {}).get("images_per_second") or 0

    wait_until(lambda: 0 < rate() <= 100)  # the DAQ's statistics show the new rate
    out = tmp_path / "long.h5"
    batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: '{out}', n_images: 30000}}\n    timeout: 5\n")
    report = Runner(daq_sim.url, daq_sim.redis_url).run(batch)
    notices = [n["message"] for n in report.notices]
    assert any("step 1 (30000 images) needs about 300 s, beyond its timeout of 5 s: give it timeout: 360 or more" in n for n in notices), notices
    assert any("will not finish within its timeout of 5 s" in n for n in notices), notices
    (step,) = report.steps
    assert "failed" == step.status and step.error.startswith("timed out after 5 s")
    assert "images/s it needs about" in step.error and "give it timeout:" in step.error, step.error


def test_a_write_that_stalled_says_since_when_and_advises_no_longer_timeout(daq_sim, tmp_path):
    """The detector stops sending 1 s into a write that would fit its timeout at the pace it had:
    the timeout's error says that it stalled, at how many images and since when, and advises no
    longer timeout (none would help); no notice while it writes claims it will not finish in time."""
    daq_sim.core.settings.frame_rate = 100
    stalled: list = []

    def stall(event):
        if event.kind == events.PROGRESS and event.data["n_written"] >= 100 and not stalled:
            stalled.append(time.time())
            arm_faults(daq_sim, stall_s=60)

    out = tmp_path / "stalled.h5"
    batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: '{out}', n_images: 800}}\n    timeout: 7\n")
    report = Runner(daq_sim.url, daq_sim.redis_url, [stall]).run(batch)
    (step,) = report.steps
    assert "failed" == step.status and step.error.startswith("timed out after 7 s before its 800 images were written; it stalled at "), step.error
    assert " of 800 images: none written since " in step.error and "timeout:" not in step.error, step.error
    assert not any("will not finish within its timeout" in n["message"] for n in report.notices), report.notices


def test_a_write_that_slowed_down_says_so_and_advises_no_timeout_from_its_average_pace(daq_sim, tmp_path):
    """The detector drops from 100 to 10 images/s 2 s into a write: its timeout's error says that
    it slowed down, not a timeout computed from the average pace (which the slow end belies)."""
    daq_sim.core.settings.frame_rate = 100
    slowed: list = []

    def slow_down(event):
        if event.kind == events.PROGRESS and event.data["n_written"] >= 200 and not slowed:
            slowed.append(True)
            arm_faults(daq_sim, detector_rate=10)

    out = tmp_path / "slowed.h5"
    batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: '{out}', n_images: 2000}}\n    timeout: 7\n")
    report = Runner(daq_sim.url, daq_sim.redis_url, [slow_down]).run(batch)
    (step,) = report.steps
    assert "failed" == step.status and "; it slowed down from " in step.error and "timeout:" not in step.error, step.error


def test_one_runner_runs_batch_after_batch_the_first_ended_by_request_stop(daq_sim, tmp_path):
    """A Runner holds configuration only: after a run ended by request_stop() and a second
    stop's short cleanup, the next two runs on the same Runner start afresh and pass."""
    daq_sim.core.settings.frame_rate = 50
    collect = Collect()
    runner = Runner(daq_sim.url, daq_sim.redis_url, [collect], retry_delay=0.05)
    long = load_batch_text(WRITE.format(name="long", n=100000) + "  - stop: {}\n", vars={"root": str(tmp_path)})

    def stop_twice() -> None:
        wait_until(lambda: collect.kinds(events.PROGRESS))
        runner.request_stop("SIGTERM")
        runner.hurry(0.5)

    threading.Thread(target=stop_twice, daemon=True).start()
    first = runner.run(long)
    assert ("interrupted", ["interrupted", "skipped"]) == (first.status, [s["status"] for s in first.steps])
    daq_sim.core.settings.frame_rate = 2000
    for name in ("second", "third"):
        report = runner.run(load_batch_text(WRITE.format(name=name, n=5), vars={"root": str(tmp_path)}))
        assert ("passed", ["passed"]) == (report.status, [s["status"] for s in report.steps]), report.reason
        assert report.run_id != first.run_id and (tmp_path / f"{name}.h5").exists()


def test_a_stop_requested_between_runs_stops_only_the_next_run(daq_sim, tmp_path):
    """request_stop() while no run is under way is not lost (a signal as a run begins): it
    ends the next run before its first step, and not the one after."""
    runner = Runner(daq_sim.url, daq_sim.redis_url)
    runner.request_stop("SIGINT")
    stopped = runner.run(load_batch_text(WRITE.format(name="a", n=2), vars={"root": str(tmp_path)}))
    assert ("interrupted", ["skipped"]) == (stopped.status, [s["status"] for s in stopped.steps])
    assert not (tmp_path / "a.h5").exists()
    assert "passed" == runner.run(load_batch_text(WRITE.format(name="b", n=2), vars={"root": str(tmp_path)})).status


class MemoryLock:
    """A lock store of a test's own (what a DAQ without Redis could use)."""

    calls: list = []
    lose = False

    def __init__(self, holder, ttl, on_lost, notify):
        self.on_lost = on_lost
        MemoryLock.calls.append(("made", holder["run"]))

    def acquire(self, wait=0.0, redis_budget=0.0, on_held=None):
        MemoryLock.calls.append("acquire")

    def assert_held(self):
        MemoryLock.calls.append("held")
        if MemoryLock.lose:
            self.on_lost("taken by the test")
            raise LockError("runner lock lost: taken by the test")

    def release(self):
        MemoryLock.calls.append("release")


def test_the_lock_is_a_collaborator_a_run_can_bring_its_own(daq_sim, tmp_path):
    """lock= a factory: the Runner takes that lock, checks it before every change to the DAQ,
    releases it at the end, and a lock it loses ends the run as a lost lock."""
    MemoryLock.calls, MemoryLock.lose = [], False
    batch = load_batch_text(WRITE.format(name="m", n=2), vars={"root": str(tmp_path)})
    report = Runner(daq_sim.url, None, lock=MemoryLock).run(batch)
    assert "passed" == report.status, report.reason
    assert [("made", report.run_id), "acquire"] == MemoryLock.calls[:2] and "held" in MemoryLock.calls
    assert "release" == MemoryLock.calls[-1]
    MemoryLock.calls, MemoryLock.lose = [], True
    lost = Runner(daq_sim.url, None, lock=MemoryLock).run(load_batch_text(WRITE.format(name="n", n=2), vars={"root": str(tmp_path)}))
    assert "failed" == lost.status and "runner lock lost: taken by the test" == lost.reason
    assert not (tmp_path / "n.h5").exists()


def test_a_crashing_consumer_ends_the_run_and_the_acquisition_is_stopped(daq_sim, tmp_path):
    """Whatever ends a run (here a consumer that raises, e.g. a full disk), the acquisition
    the runner started is stopped and the lock released."""
    daq_sim.core.settings.frame_rate = 50

    def disk_full(event):
        if event.kind == events.PROGRESS:
            raise OSError(28, "No space left on device")

    batch = load_batch_text(WRITE.format(name="c", n=100000), vars={"root": str(tmp_path)})
    with pytest.raises(OSError, match="No space left"):
        Runner(daq_sim.url, daq_sim.redis_url, [disk_full]).run(batch)
    status = requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]
    assert ("READY", "Interrupted.") == (status["state"], status["acquisition"]["message"])
    assert redis.Redis.from_url(daq_sim.redis_url).get("daq-runner:lock") is None


def test_json_report_is_valid_at_every_step_and_final(daq_sim, tmp_path):
    """The report file parses after every step and holds the full report at the end."""
    path = tmp_path / "report.json"
    snapshots = []

    def snapshot(event):
        if event.kind == events.STEP_FINISHED:
            snapshots.append(json.loads(path.read_text()))

    batch = load_batch_text(
        "version: 1\nname: r\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n  - stop: {}\n  - check: {writer: READY}\n",
        vars={"root": str(tmp_path)},
    )
    report = Runner(daq_sim.url, daq_sim.redis_url, [JsonReportFile(str(path)), snapshot]).run(batch)
    assert [1, 2, 3] == [len(s["steps"]) for s in snapshots]
    assert all("running" == s["status"] for s in snapshots)
    final = json.loads(path.read_text())
    assert final == json.loads(json.dumps(report.to_dict(), default=str))
    assert {"batch", "daq", "status", "started_at", "finished_at", "steps", "summary"} <= set(final)
    assert {"name", "path", "sha256", "plan", "vars", "run", "now", "invocation"} == set(final["batch"])
    step = final["steps"][0]
    for key in ("index", "name", "kind", "params", "status", "attempts", "started_at", "finished_at", "duration_s", "error", "run_id", "output_file", "n_images", "acquisition", "daq_log"):
        assert key in step


def junit_of_failing_first_write(run_batch, daq_sim, tmp_path, body: str, error: str):
    """Run ``body`` with the next acquisition failing with ``error``; the JUnit XML's root."""
    path = tmp_path / "junit.xml"
    arm_faults(daq_sim, fail_next=error)
    run_batch(body, consumers=[JUnitFile(str(path))])
    return ET.parse(path).getroot()


def test_junit_has_one_testcase_per_executed_step(run_batch, daq_sim, tmp_path):
    """JUnit XML: one testcase per step (the skipped one too), failures with the error."""
    body = "version: 1\nsteps:\n  - stop: {}\n  - write: {output_file: '{root}/j.h5', n_images: 2}\n  - stop: {}\n"
    suite = junit_of_failing_first_write(run_batch, daq_sim, tmp_path, body, "ERROR: boom")
    assert ("3", "1", "1") == (suite.get("tests"), suite.get("failures"), suite.get("skipped"))
    assert "ERROR: boom" in suite.find("testcase/failure").get("message")


def test_junit_shows_the_failed_attempts_of_a_step_that_passed_on_retry(run_batch, daq_sim, tmp_path):
    """A retry that passed is still visible in CI: the testcase's system-out lists the failure."""
    body = "version: 1\nsteps:\n  - write: {output_file: '{root}/j.h5', n_images: 2}\n    retries: 1\n"
    suite = junit_of_failing_first_write(run_batch, daq_sim, tmp_path, body, "ERROR: flaky")
    assert ("1", "0") == (suite.get("tests"), suite.get("failures"))
    assert "attempt 1 failed: acquisition FAILED: ERROR: flaky" == suite.find("testcase/system-out").text


def test_credentials_are_redacted_in_report(daq_sim, tmp_path):
    """Passwords in URLs never reach the report."""
    url = daq_sim.redis_url.replace("redis://", "redis://:s3cret@")
    batch = load_batch_text("version: 1\nsteps:\n  - stop: {}\n", vars={})
    report = Runner(daq_sim.url, url, lock=False).run(batch)
    text = json.dumps(report.to_dict())
    assert "s3cret" not in text and "***@" in report.daq["redis"]


def test_second_runner_is_refused_by_the_lock(daq_sim):
    """A second runner on the same DAQ gets LockHeldError naming the holder."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    holder = DaqLock(client, {"host": "beamline-pc", "pid": 4242, "batch": "night.yaml"})
    holder.acquire()
    try:
        batch = load_batch_text("version: 1\nsteps:\n  - stop: {}\n")
        with pytest.raises(LockHeldError, match="host beamline-pc, pid 4242, batch night.yaml"):
            Runner(daq_sim.url, daq_sim.redis_url).run(batch)
    finally:
        holder.release()
    assert "passed" == Runner(daq_sim.url, daq_sim.redis_url).run(batch).status
    assert client.get("daq-runner:lock") is None, "the lock is released after the run"


def test_lock_expires_when_not_renewed(daq_sim):
    """A crashed runner's lock expires after its ttl."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    client.set("daq-runner:lock", json.dumps({"host": "dead"}), px=300)
    batch = load_batch_text("version: 1\nsteps:\n  - stop: {}\n")
    assert "passed" == Runner(daq_sim.url, daq_sim.redis_url, lock_wait=3).run(batch).status


def test_lock_is_taken_back_after_a_redis_restart(daq_sim):
    """Redis restarted empty while a runner holds the lock: the next renewal takes it back;
    a lock another runner took meanwhile is left alone."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    lock = DaqLock(client, {"host": "here"}, ttl=0.6)
    lock.acquire()
    try:
        client.flushdb()  # what a restarted Redis without persistence holds
        wait_until(lambda: client.get("daq-runner:lock") == lock.value.encode(), timeout=3)
        client.set("daq-runner:lock", json.dumps({"host": "other"}))
        time.sleep(0.5)  # at least one renewal
        assert json.loads(client.get("daq-runner:lock")) == {"host": "other"}
    finally:
        lock.release()
        client.delete("daq-runner:lock")


def test_resume_skips_passed_steps(daq_sim, tmp_path):
    """Steps passed earlier are kept, not run again."""
    batch = load_batch_text(WRITE.format(name="r1", n=2) + "  - stop: {}\n", vars={"root": str(tmp_path)})
    first = Runner(daq_sim.url, daq_sim.redis_url).run(batch)
    previous = {s["identity"]: [s] for s in first.to_dict()["steps"] if s["status"] == "passed" and s["index"] == 1}
    collect = Collect()
    second = Runner(daq_sim.url, daq_sim.redis_url, [collect]).run(batch, previous)
    assert "passed" == second.status and second.steps[0]["resumed"]
    assert [2] == [e.step for e in collect.kinds(events.STEP_STARTED)]


def test_rest_outage_longer_than_the_budget_fails_the_step_clearly(daq_sim, tmp_path):
    """An outage beyond the retry budget fails the step naming the URL and HTTP 503."""
    batch = load_batch_text("version: 1\nsteps:\n  - check: {writer: READY}\n")
    arm_faults(daq_sim, unavailable_s=3)
    report = Runner(daq_sim.url, daq_sim.redis_url, outage_s=0.5, lock=False).run(batch)
    error = report.steps[0]["error"]
    assert "failed" == report.status and "DAQ unreachable" in error and "/writer/status" in error and "503" in error
    requests.post(daq_sim.url + "/sim/reset", timeout=5)


def test_a_status_published_between_mark_and_start_is_not_a_vanished_acquisition(tmp_path):
    """The stream may hold a READY status of the previous acquisition after the runner's
    mark (a heartbeat); it must not read as 'our acquisition vanished'."""
    from daq_runner.sim import SimSettings, SimulatedDaq

    # The driver looks for WRITING every 10 ms instead of 100 ms: the late copies land 2 ms after
    # each end, before the next reply either way, and the 60 writes take half as long.
    settings = SimSettings(frame_rate=20000, heartbeat_s=0.002, driver_poll_s=0.01)
    with SimulatedDaq(settings=settings) as sim:
        batch = load_batch_text(
            "version: 1\nsteps:\n  - for: {i: [" + ", ".join(map(str, range(60))) + "]}\n"
            "    steps: [{write: {output_file: '{root}/h{i}.h5', n_images: 1}}]\n",
            vars={"root": str(tmp_path)},
        )
        report = Runner(sim.url, sim.redis_url, lock=False).run(batch)
    assert "passed" == report.status, report.failed_steps[:1]


def test_a_daq_restart_between_config_and_write_gets_the_configuration_back(run_batch, daq_sim, tmp_path):
    """The DAQ restarts (writer UNKNOWN) with another configuration between the config step
    and the write: the write runs at the depth the run set, the re-applied config recorded
    (it passed, with a 16-bit file for a 32-bit step)."""
    import h5py

    from daq_runner import StdDaqClient

    def restart_with_another_config(event):
        if event.kind == events.STEP_STARTED and event.data.get("kind") == "wait":
            StdDaqClient(daq_sim.url).update_config({"bit_depth": 16})
            arm_faults(daq_sim, writer_state="UNKNOWN")

    report = run_batch(
        "version: 1\nsteps:\n  - config: {bit_depth: 32}\n  - wait: {seconds: 0.1}\n"
        "  - write: {output_file: '{root}/w.h5', n_images: 3}\n",
        [restart_with_another_config],
    )
    assert "passed" == report.status, report.to_dict()
    write = report.steps[-1]
    assert any("configuration changed under the run" in r["reason"] and "bit_depth=32" in r["action"] for r in write["recoveries"])
    with h5py.File(tmp_path / "w.h5") as handle:
        (group,) = handle.values()
        assert "uint32" == str(group["data"].dtype)


# -- the run's status follows its steps ---------------------------------------------------------

BACKGROUND = (
    "version: 1\nsteps:\n  - write: {output_file: '{root}/bg.h5', n_images: 60, wait: false}\n    on_error: continue\n"
    "  - wait: {seconds: 0.3}\n  - wait: {state: READY, timeout: 20}\n  - wait: {seconds: 0.1}\n"
)


@pytest.mark.parametrize(
    "fault, error",
    [
        ("stop", "acquisition ended 'Interrupted.' before its"),
        ("fail", "acquisition FAILED: ERROR: detector lost"),
        ("unknown", "vanished: the writer is READY with no record of it"),  # the wait step reset the writer first
    ],
)
def test_a_background_write_that_fails_after_its_step_was_left_fails_the_run(run_batch, daq_sim, fault, error):
    """A wait: false write ended by a stop from outside, FAILED, or lost to a writer restart is
    recorded failed on its own step, long after the run went on: the run ends failed with that
    reason, whatever its on_error (continue here), never passed with failed: 1."""
    daq_sim.core.settings.frame_rate, daq_sim.core.settings.driver_timeout_s = 40, 0.5
    if fault == "fail":
        arm_faults(daq_sim, fail_next="ERROR: detector lost")

    def from_outside(event):
        if event.kind == events.STEP_STARTED and event.step == 2:
            if fault == "stop":
                requests.post(daq_sim.url + "/writer/stop", json={}, timeout=15).raise_for_status()
            elif fault == "unknown":
                arm_faults(daq_sim, writer_state="UNKNOWN")

    report = run_batch(BACKGROUND, [from_outside])
    (background,) = [step for step in report.steps if step["index"] == 1]
    assert ("failed", True) == (background["status"], error in background["error"]), background["error"]
    assert ("failed", 1) == (report.status, report.to_dict()["summary"]["failed"])
    assert report.reason and error in report.reason


def test_a_background_write_that_fails_at_the_end_of_the_run_fails_it(run_batch, daq_sim):
    """The background write is the last thing that runs and fails while the run waits for it at
    its end: the run is failed."""
    daq_sim.core.settings.frame_rate = 40
    arm_faults(daq_sim, fail_next="ERROR: detector lost")
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: '{root}/bg.h5', n_images: 60, wait: false}\n    on_error: continue\n")
    assert ("failed", "failed") == (report.status, report.steps[0]["status"])
    assert "acquisition FAILED: ERROR: detector lost" in report.reason


# -- the DAQ's own Redis: down, or back without its data ----------------------------------------


def test_a_daq_back_without_config_fails_the_steps_with_a_reason_and_follows_on_error(tmp_path):
    """The DAQ's Redis killed and restarted empty between two steps: the DAQ has no configuration
    and refuses every write and config. Each step fails saying so and what the DAQ needs (no
    internal error), on_error: continue goes on, the run ends failed with that reason."""
    from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq

    server = RedisServer().start()
    servers = [server]
    with SimulatedDaq(redis_url=server.url, settings=SimSettings(start_state="READY", heartbeat_s=0.3)) as sim:

        def empty_redis(event):
            if event.kind == events.STEP_FINISHED and event.step == 1:
                server.kill()
                servers.append(RedisServer(port=server.port).start())

        batch = load_batch_text(
            "version: 1\ndefaults: {on_error: continue}\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 5}\n"
            "  - write: {output_file: '{root}/b.h5', n_images: 5}\n  - config: {bit_depth: 8}\n  - write: {output_file: '{root}/c.h5', n_images: 5}\n",
            vars={"root": str(tmp_path)},
        )
        report = Runner(sim.url, server.url, [empty_redis], retry_delay=0.05, lock=False).run(batch)
    for each in servers:
        each.stop()
    assert ["passed", "failed", "failed", "failed"] == [s["status"] for s in report.steps]
    for step in report.steps[1:]:
        assert "the DAQ has no configuration" in step["error"] and "until its REST server restarts" in step["error"], step["error"]
    assert "failed" == report.status and "the DAQ has no configuration" in report.reason
    assert "runner error" not in report.reason


# -- a wedged writer driver ---------------------------------------------------------------------------


def test_a_wedged_driver_stops_the_run_with_what_the_daq_needs(run_batch, daq_sim):
    """The writer killed mid-acquisition wedges the driver ("Cannot reach READY" to every stop until
    the REST server restarts): the runner notices, stops the run saying what the DAQ needs (no more
    retries, the rest skipped), within a bounded time."""
    daq_sim.core.settings.frame_rate, daq_sim.core.settings.driver_timeout_s = 20, 0.5

    def kill_the_writer(event):
        if event.kind == events.PROGRESS and event.step == 1 and not killed:
            killed.append(True)
            arm_faults(daq_sim, kill_writer=True)

    killed: list = []
    began = time.monotonic()
    report = run_batch(
        "version: 1\ndefaults: {on_error: continue}\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 100}\n    timeout: 3\n    retries: 3\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 5}\n  - stop: {}\n",
        [kill_the_writer],
    )
    assert time.monotonic() - began < 15
    # The first write times out (its acquisition never ends) and its stop is refused; the next
    # step's reset finds every stop refused: the run stops there.
    assert ["failed", "failed", "skipped"] == [s["status"] for s in report.steps]
    assert (1, 1) == (report.steps[0]["attempts"], report.steps[1]["attempts"])
    assert "wedged" in report.reason and "restart the DAQ's REST server" in report.reason
    assert "restart the DAQ's REST server" in report.steps[2]["error"]


def test_a_folder_at_the_output_path_is_refused_as_a_folder(run_batch, tmp_path):
    """A write whose output_file is an existing folder fails saying it is a folder, even with
    overwrite: true (no file could be written there); nothing is sent, and its retries are not
    used (no retry can change it)."""
    (tmp_path / "x.h5").mkdir()
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: '{root}/x.h5', n_images: 2, overwrite: true}\n    retries: 2\n")
    assert "failed" == report.status
    assert report.steps[0]["error"].startswith(f"{tmp_path / 'x.h5'} is a folder: the DAQ's writer cannot create its file there; nothing was sent")
    assert "not retried: the folder stays there whatever the DAQ does" in report.steps[0]["error"]
    assert 1 == report.steps[0]["attempts"]
