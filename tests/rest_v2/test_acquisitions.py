"""Every file written once, complete, as intended: exactly-once starts, owned background acquisitions.

Through the installed ``daq-run`` against daq-sim and a real Redis; a small proxy in front of
daq-sim (``tests/standin.py``) makes the timings daq-sim cannot: a slow acknowledgement, a
request that reaches the DAQ after the client gave up, a driver that replaces the run_id.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import h5py
import redis
import requests

from daq_runner import Runner, StdDaqClient, events
from daq_runner.batch import load_batch_text
from daq_runner.testing import arm_faults

from ..conftest import batch_file, daq_run, start_daq_run, stream_entries, wait_until, writer_state
from ..standin import DaqProxy

WRITE = "/writer/write_async"


def report_of(path) -> dict:
    return json.loads(path.read_text())


def acquisitions_of(daq_sim, output_file: str) -> set:
    """run_ids of the acquisitions of ``output_file`` the DAQ published on daq:status."""
    return {
        s["acquisition"]["info"]["run_id"]
        for s in stream_entries(daq_sim.redis_url, "daq:status")
        if (s.get("acquisition") or {}).get("info", {}).get("output_file") == output_file
    }


def test_a_slow_acknowledgement_is_not_vanished(daq_sim, tmp_path):
    """A stale READY right after the request and a start acknowledged after 3 s: one acquisition, passed."""
    out = str(tmp_path / "a.h5")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 20}\n    retries: 2\n")
    stale = json.dumps({"state": "READY", "acquisition": None})

    def stale_ready() -> None:
        # A real DAQ stores each status twice; a late copy of the idle status can follow our mark.
        client = redis.Redis.from_url(daq_sim.redis_url)
        client.xadd("daq:status", {"json": stale})
        client.close()

    with DaqProxy(daq_sim.url) as proxy:
        proxy.before[WRITE] = stale_ready
        proxy.hold_reply[WRITE] = 3.0
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
        assert 0 == proc.returncode, proc.stderr
        assert 1 == proxy.count(WRITE)
    step = report_of(tmp_path / "r.json")["steps"][0]
    assert (1, []) == (step["attempts"], step["failed_attempts"])
    assert 1 == len(acquisitions_of(daq_sim, out))


def test_a_write_that_reaches_the_daq_after_the_read_timeout_is_not_sent_again(daq_sim, tmp_path):
    """The client gives up after 1 s, the request reaches the DAQ at 2 s: followed, never re-sent."""
    out = str(tmp_path / "late.h5")
    batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: '{out}', n_images: 20}}\n    retries: 2\n")
    with DaqProxy(daq_sim.url) as proxy:
        proxy.hold_request[WRITE] = 2.0
        client = StdDaqClient(proxy.url, write_timeout=1.0, retries=3)
        report = Runner(proxy.url, daq_sim.redis_url, client=client, retry_delay=0.1).run(batch)
        assert "passed" == report.status, report.failed_steps
        assert 1 == proxy.count(WRITE)
    assert 1 == len(acquisitions_of(daq_sim, out))
    with h5py.File(out) as handle:
        (group,) = handle.values()
        assert 20 == group["data"].shape[0]


def test_a_lost_reply_of_a_write_that_started_is_followed(daq_sim, tmp_path):
    """The connection drops after the DAQ took the request: the acquisition is found and followed."""
    out = str(tmp_path / "dropped.h5")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/dropped.h5', n_images: 20}\n    retries: 2\n")
    with DaqProxy(daq_sim.url) as proxy:
        proxy.drop_reply.add(WRITE)
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
        assert 0 == proc.returncode, proc.stderr
        assert 1 == proxy.count(WRITE)
    notices = [n["message"] if isinstance(n, dict) else n for n in report_of(tmp_path / "r.json")["notices"]]
    assert any("did start" in n for n in notices)
    assert 1 == len(acquisitions_of(daq_sim, out))


def test_a_driver_that_replaces_the_run_id_is_followed_by_output_file(daq_sim, tmp_path):
    """The DAQ names our acquisition with another run_id: followed as ours, with a notice, written once."""
    out = str(tmp_path / "renamed.h5")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/renamed.h5', n_images: 20}\n    retries: 2\n")
    with DaqProxy(daq_sim.url) as proxy:
        proxy.rewrite[WRITE] = lambda body: {**body, "run_id": 424242}
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
        assert 0 == proc.returncode, proc.stderr
        assert 1 == proxy.count(WRITE)
    report = report_of(tmp_path / "r.json")
    step = report["steps"][0]
    assert ("passed", 1, "424242") == (step["status"], step["attempts"], str(step["run_id"]))
    notices = [n["message"] if isinstance(n, dict) else n for n in report["notices"]]
    assert any("reports run_id 424242 for our acquisition" in n for n in notices)
    assert {424242} == acquisitions_of(daq_sim, out)


def test_a_background_write_that_fails_fails_the_run_on_its_own_step(daq_sim, tmp_path):
    """wait: false, then the acquisition FAILS: its step records the failure and the run fails."""
    arm_faults(daq_sim, fail_next="ERROR: detector lost")
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n"
        "  - write: {output_file: '{root}/bg.h5', n_images: 200, wait: false}\n"
        "  - wait: {state: READY, timeout: 20}\n"
        "  - check: {writer: READY}\n",
    )
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode, proc.stderr
    report = report_of(tmp_path / "r.json")
    by_index = {s["index"]: s for s in report["steps"]}
    assert "failed" == by_index[1]["status"] and "acquisition FAILED: ERROR: detector lost" in by_index[1]["error"]
    assert "failed" == report["status"]
    assert sum(report["summary"].values()) == 3


def test_a_background_write_still_running_at_the_end_is_waited_for(daq_sim, tmp_path):
    """The run's last step passes while a background acquisition runs: the run waits and records it."""
    daq_sim.core.settings.frame_rate = 400
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/bg.h5', n_images: 400, wait: false}\n  - check: {deployment: SUCCESS}\n",
    )
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    by_index = {s["index"]: s for s in report_of(tmp_path / "r.json")["steps"]}
    assert "passed" == by_index[1]["status"] and 400 == by_index[1]["n_written"]
    assert by_index[1]["daq_log"] is not None
    assert "READY" == writer_state(daq_sim.url)


def test_a_background_write_is_stopped_on_sigterm(daq_sim, tmp_path):
    """SIGTERM while a background acquisition runs: it is stopped and its step says so."""
    daq_sim.core.settings.frame_rate = 100
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/bg.h5', n_images: 100000, wait: false}\n  - wait: {seconds: 30}\n",
    )
    report = tmp_path / "r.json"
    proc = start_daq_run(path, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))
    wait_until(lambda: writer_state(daq_sim.url) == "WRITING")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert 143 == proc.returncode
    wait_until(lambda: writer_state(daq_sim.url) == "READY", timeout=5)
    by_index = {s["index"]: s for s in report_of(report)["steps"]}
    assert "interrupted" == by_index[1]["status"]
    assert any(r["outcome"].startswith("stopped acquisition") for r in by_index[1]["recoveries"])


def test_a_background_write_ended_by_the_batchs_stop_step_passes(daq_sim, tmp_path):
    """A background acquisition the batch stops on purpose passes with the images it wrote."""
    daq_sim.core.settings.frame_rate = 200
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n"
        "  - write: {output_file: '{root}/bg.h5', n_images: 100000, wait: false}\n"
        "  - wait: {seconds: 0.5}\n"
        "  - stop: {}\n",
    )
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    step = {s["index"]: s for s in report_of(tmp_path / "r.json")["steps"]}[1]
    assert ("passed", 3) == (step["status"], step["stopped_by_step"])
    assert 0 < step["n_written"] < 100000


def test_a_step_timeout_during_a_lost_write_reply_sends_nothing_more(daq_sim, tmp_path):
    """The write's reply trickles past the step's 3 s: the step fails as timed out with the
    outcome unknown, the request is not sent again, and the acquisition it did start is stopped."""
    daq_sim.core.settings.frame_rate = 100
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/t.h5', n_images: 100000}\n    timeout: 3\n    retries: 2\n")
    with DaqProxy(daq_sim.url) as proxy:
        proxy.trickle[WRITE] = 1.0
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"), timeout=60)
        assert 1 == proxy.count(WRITE)
    assert 1 == proc.returncode
    step = report_of(tmp_path / "r.json")["steps"][0]
    assert step["error"].startswith("timed out") and "may have started" in step["error"]
    assert any(r["outcome"].startswith("stopped acquisition") for r in step["recoveries"])
    wait_until(lambda: writer_state(daq_sim.url) == "READY", timeout=5)


def test_a_second_signal_cuts_a_hanging_stop_short(daq_sim, tmp_path):
    """The DAQ does not answer the stop: one SIGTERM gives it 5 s; a second one ends it within about 1 s."""
    daq_sim.core.settings.frame_rate = 100
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/s.h5', n_images: 100000}\n")
    report = tmp_path / "r.json"
    with DaqProxy(daq_sim.url) as proxy:
        proxy.hold_request["/writer/stop"] = 30
        proc = start_daq_run(path, "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(report))
        wait_until(lambda: writer_state(daq_sim.url) == "WRITING")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: proxy.count("/writer/stop") >= 0 and any(p == "/writer/status" for _, p, _ in proxy.forwarded[-3:]), timeout=5)
        time.sleep(0.5)
        second = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert time.monotonic() - second < 2.5
    assert 143 == proc.returncode
    final = report_of(report)
    assert "interrupted" == final["status"]
    assert any("could not stop" in r["outcome"] for r in final["steps"][0]["recoveries"])
    requests.post(daq_sim.url + "/writer/stop", json={}, timeout=15)



def test_a_stop_answered_with_http_500_is_tried_again_until_the_writer_stops(daq_sim, tmp_path):
    """The step times out and the DAQ answers the first stop with HTTP 500: the runner keeps
    trying (it used to give up at once, leaving the DAQ writing) and records the error."""
    daq_sim.core.settings.frame_rate = 100
    batch = load_batch_text(
        "version: 1\nsteps:\n  - write: {output_file: '{root}/s.h5', n_images: 3000}\n    timeout: 3\n",
        vars={"root": str(tmp_path)},
    )
    with DaqProxy(daq_sim.url) as proxy:
        proxy.fail["POST /writer/stop"] = [1, 500]
        start = time.monotonic()
        report = Runner(proxy.url, daq_sim.redis_url, lock=False).run(batch)
        took = time.monotonic() - start
        assert [("POST", "/writer/stop", 500)] == proxy.failed
        assert 1 == proxy.count("/writer/stop")  # the second stop reached the DAQ
    assert "READY" == writer_state(daq_sim.url)  # not left writing
    step = report.steps[0]
    assert "failed" == step["status"] and "timed out" in step["error"]
    (recovery,) = step["recoveries"]
    assert recovery["outcome"].startswith("stopped acquisition")
    assert 2 == recovery["attempts"] and "HTTP 500" in recovery["errors"][0]
    assert took < 3 + 5


def test_a_status_answered_with_http_500_does_not_end_the_stop(daq_sim, tmp_path):
    """Without Redis, two HTTP 500 on GET /writer/status while writing: the first fails the
    step, the second meets the stop of our acquisition, which goes on and stops it."""
    daq_sim.core.settings.frame_rate = 100
    batch = load_batch_text(
        "version: 1\nsteps:\n  - write: {output_file: '{root}/s.h5', n_images: 100000}\n",
        vars={"root": str(tmp_path)},
    )
    with DaqProxy(daq_sim.url) as proxy:

        def fail_once_writing() -> None:
            wait_until(lambda: writer_state(daq_sim.url) == "WRITING")
            proxy.fail["GET /writer/status"] = [2, 500]

        arming = threading.Thread(target=fail_once_writing, daemon=True)
        arming.start()
        try:
            report = Runner(proxy.url, None, lock=False).run(batch)
        finally:
            arming.join(15)
        assert 2 == len(proxy.failed)
    assert "READY" == writer_state(daq_sim.url)
    step = report.steps[0]
    assert "failed" == step["status"] and "HTTP 500" in step["error"]
    (recovery,) = step["recoveries"]
    assert recovery["outcome"].startswith("stopped acquisition")
    assert "GET /writer/status" in recovery["errors"][0] or "/writer/status" in recovery["errors"][0]
    assert "HTTP 500" in recovery["errors"][0]


# -- the start of a write: the stream's word first, the DAQ's reply decides ---------------------------


def _hint(daq_sim, status: dict) -> None:
    """Add ``status`` to daq:status, as a late second copy of a real DAQ's status would be."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    client.xadd("daq:status", {"json": json.dumps(status)})
    client.close()


def test_writes_start_on_the_streams_word_without_a_status_request(daq_sim, tmp_path):
    """With Redis, a write after one that ended is sent at once: no GET /writer/status per write."""
    batch = load_batch_text(
        "version: 1\nsteps:\n  - for: {i: [1, 2, 3, 4]}\n    steps:\n"
        f"      - write: {{output_file: '{tmp_path}/w_{{i}}.h5', n_images: 2}}\n"
    )
    with DaqProxy(daq_sim.url) as proxy:
        # verify=False: the file checks read the DAQ's config once per run, which is not what this counts.
        report = Runner(proxy.url, daq_sim.redis_url, lock=False, verify=False).run(batch)
        paths = [path for method, path, _ in proxy.forwarded]
    assert "passed" == report.status, report.failed_steps
    writes = [i for i, path in enumerate(paths) if path == WRITE]
    assert 4 == len(writes)
    # Between the first write and the end: writes only (each status request would cost a round trip).
    assert [WRITE] * 4 == paths[writes[0] :]
    for i in (1, 2, 3, 4):
        with h5py.File(tmp_path / f"w_{i}.h5") as f:
            assert 2 == f["/SIM-EIGER-64K/data"].shape[0]


def test_a_stale_ready_on_the_stream_while_another_acquisition_runs_waits_for_it(daq_sim, tmp_path):
    """The stream's newest entry says READY but someone else's acquisition runs: the refused write
    started nothing; the runner waits for READY and writes once."""
    settings = daq_sim.core.settings
    interval, settings.status_interval_s, settings.frame_rate = settings.status_interval_s, 60.0, 100
    try:
        other = str(tmp_path / "other.h5")
        StdDaqClient(daq_sim.url).start_writer_async({"output_file": other, "n_images": 60})  # 0.6 s
        wait_until(lambda: any(
            (s.get("acquisition") or {}).get("state") == "ACQUIRING_IMAGES" for s in stream_entries(daq_sim.redis_url, "daq:status")
        ))
        _hint(daq_sim, {"state": "READY", "acquisition": None})  # the newest entry until the other one ends
        ours = str(tmp_path / "ours.h5")
        batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: '{ours}', n_images: 5}}\n")
        with DaqProxy(daq_sim.url) as proxy:
            report = Runner(proxy.url, daq_sim.redis_url, lock=False).run(batch)
            sent = proxy.count(WRITE)
    finally:
        settings.status_interval_s = interval
    assert "passed" == report.status, report.failed_steps
    assert 2 == sent  # the first refused ("Cannot start new acquisition while previous one is running")
    assert 1 == len(acquisitions_of(daq_sim, ours))
    with h5py.File(other) as f:
        assert 60 == f["/SIM-EIGER-64K/data"].shape[0]  # the other acquisition was not disturbed
    with h5py.File(ours) as f:
        assert 5 == f["/SIM-EIGER-64K/data"].shape[0]


def test_a_stale_ready_on_the_stream_with_an_unknown_writer_resets_it_first(daq_sim, tmp_path):
    """The stream says READY, the writer is UNKNOWN (a restarted DAQ publishes nothing): the write is
    refused, the writer reset (recorded), the write sent again and passed."""
    arm_faults(daq_sim, writer_state="UNKNOWN")
    _hint(daq_sim, {"state": "READY", "acquisition": None})
    out = str(tmp_path / "a.h5")
    batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: '{out}', n_images: 3}}\n")
    runner = Runner(daq_sim.url, daq_sim.redis_url, lock=False)
    runner.daq.prepare = lambda: None  # let the write step meet the UNKNOWN writer
    report = runner.run(batch)
    assert "passed" == report.status, report.failed_steps
    step = report.steps[0]
    assert ["writer UNKNOWN before the write"] == [r["reason"] for r in step["recoveries"]]
    assert 1 == len(acquisitions_of(daq_sim, out))


def test_consecutive_writes_look_at_the_streams_once(daq_sim, tmp_path):
    """Each write follows its acquisition from where the previous one ended: the streams' newest
    entries are asked for once, before the first write, not before every write."""
    import threading

    batch = load_batch_text(
        "version: 1\nsteps:\n  - for: {i: [1, 2, 3, 4, 5]}\n    steps:\n"
        f"      - write: {{output_file: '{tmp_path}/w_{{i}}.h5', n_images: 1}}\n"
    )
    # Every command the Redis gets, as MONITOR sees it: the DAQ's own server reads its config
    # from there on every write (as the real one does), so only the status and log streams count.
    seen: list = []
    monitor = redis.Redis.from_url(daq_sim.redis_url).monitor()
    monitor.__enter__()

    def listen() -> None:
        try:
            while True:
                seen.append(monitor.next_command()["command"])
        except Exception:  # the connection closed at the end of the test
            pass

    threading.Thread(target=listen, daemon=True).start()
    try:
        report = Runner(daq_sim.url, daq_sim.redis_url, lock=False).run(batch)
        time.sleep(0.2)  # the last commands reach the monitor
    finally:
        monitor.connection.disconnect()
    looks = [c for c in seen if c.upper().startswith("XREVRANGE") and c.split()[1] in ("daq:status", "daq:log")]
    assert "passed" == report.status, report.failed_steps
    assert all(s["daq_log"] and s["daq_log_source"].startswith("redis daq:log") for s in report.steps)
    assert len(looks) <= 2, looks  # status and log, once (before: both before every write)


def test_a_late_copy_of_the_previous_acquisition_is_not_taken_for_the_end_of_ours(daq_sim, tmp_path):
    """The second copy of the previous acquisition's READY lands after ours started (a real DAQ
    stores each status twice): it is known stale, so it costs no confirmation over REST."""
    import threading

    first, second = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    batch = load_batch_text(
        f"version: 1\nsteps:\n  - write: {{output_file: '{first}', n_images: 1}}\n  - write: {{output_file: '{second}', n_images: 1}}\n"
    )

    def late_copy() -> None:
        # Once ours is WRITING, the previous acquisition's final status once more.
        entries = wait_until(lambda: [s for s in stream_entries(daq_sim.redis_url, "daq:status")
                                      if (s.get("acquisition") or {}).get("info", {}).get("output_file") == second])
        final = [s for s in stream_entries(daq_sim.redis_url, "daq:status")
                 if (s.get("acquisition") or {}).get("info", {}).get("output_file") == first and s["state"] == "READY"][-1]
        assert entries
        client = redis.Redis.from_url(daq_sim.redis_url)
        client.xadd("daq:status", {"json": json.dumps(final)})
        client.close()

    copier = threading.Thread(target=late_copy)
    with DaqProxy(daq_sim.url) as proxy:
        proxy.before[WRITE] = lambda: proxy.count(WRITE) == 1 and copier.start()  # before the second write
        proxy.hold_reply[WRITE] = 0.3
        report = Runner(proxy.url, daq_sim.redis_url, lock=False, verify=False).run(batch)  # (as above)
        copier.join(10)
        paths = [path for _, path, _ in proxy.forwarded]
    assert "passed" == report.status, report.failed_steps
    assert [WRITE, WRITE] == paths[paths.index(WRITE):]  # no GET /writer/status to confirm an end


def test_a_retry_never_replaces_a_file_someone_else_wrote_after_the_failed_attempt(run_batch, daq_sim, tmp_path):
    """Attempt 1 FAILED; before attempt 2 another client wrote the file completely: the
    retry must refuse it (it replaced it, as 'left by the failed attempt of this step')."""
    import h5py

    from daq_runner import StdDaqClient

    path = tmp_path / "x.h5"
    arm_faults(daq_sim, fail_next="ERROR: boom")

    def someone_else_writes(event):
        if event.kind == events.ATTEMPT_FAILED:
            StdDaqClient(daq_sim.url).start_writer_sync({"output_file": str(path), "n_images": 3})

    report = run_batch(
        "version: 1\nsteps:\n  - write: {output_file: '{root}/x.h5', n_images: 20}\n    retries: 1\n", [someone_else_writes]
    )
    step = report.steps[0]
    assert "failed" == step["status"] and "nothing was sent" in step["error"], step
    with h5py.File(path) as handle:
        (group,) = handle.values()
        assert 3 == group["data"].shape[0]
