"""The real server's wedges and outages, and the data faults, as ``POST /sim/faults`` arms them.

Over HTTP against real simulators; the Redis outages kill, pause and restart a real
Redis-compatible server.
"""

from __future__ import annotations

import os
import signal
import time

import h5py
import numpy as np
import pytest

from daq_runner import protocol
from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq

from ..conftest import wait_until
from .conftest import entries, faults, get, ok, post, refused, status

DATA, IMAGE_ID = "SIM-EIGER-64K/data", "SIM-EIGER-64K/image_id"


# -- the driver and the REST server ------------------------------------------------------------


def test_a_wedged_driver_fails_every_start_and_stop_until_the_server_restarts(quick_driver, tmp_path):
    """wedge_driver: its commands reach no writer. A stop on a READY writer still answers after one look
    (the status says READY); a write waits the driver out (Cannot reach WRITING, UNKNOWN); from then on
    every stop answers "Cannot reach READY". restart_server clears it: UNKNOWN, no acquisition."""
    ok(post(quick_driver, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 2}))
    assert faults(quick_driver, wedge_driver=True)["wedge_driver"] is True
    assert "READY" == ok(post(quick_driver, "/writer/stop", {}))["writer"]["state"]
    assert 1 == len(ok(get(quick_driver, "/daq/logs/5"))["logs"]), "the stop reached no writer: nothing logged again"
    assert protocol.MESSAGE_CANNOT_REACH_WRITING == refused(post(quick_driver, "/writer/write_async", {"output_file": str(tmp_path / "b.h5"), "n_images": 2}))
    for _ in range(2):
        assert protocol.MESSAGE_CANNOT_REACH_READY == refused(post(quick_driver, "/writer/stop", {}))
    assert "wedge_driver" not in faults(quick_driver, restart_server=True)
    assert {"state": "UNKNOWN", "acquisition": None} == status(quick_driver)
    assert "READY" == ok(post(quick_driver, "/writer/stop", {}))["writer"]["state"]


def test_a_writer_killed_mid_acquisition_leaves_the_driver_wedged(quick_driver, tmp_path):
    """kill_writer during an acquisition: the status stays WRITING as last reported and the driver is
    wedged; on an idle writer the restart goes unnoticed."""
    assert "wedge_driver" not in faults(quick_driver, kill_writer=True)
    ok(post(quick_driver, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000}))
    assert faults(quick_driver, kill_writer=True)["wedge_driver"] is True
    assert "WRITING" == status(quick_driver)["state"]
    assert protocol.MESSAGE_CANNOT_REACH_READY == refused(post(quick_driver, "/writer/stop", {}))


def test_restart_server_during_an_acquisition_gives_a_fresh_driver(daq_sim, tmp_path):
    """restart_server: the writer is UNKNOWN without acquisition (as after a start), the file of the
    running acquisition is closed with what it has, the config stays."""
    before = ok(get(daq_sim, "/daq/config"))
    ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000}))
    wait_until(lambda: status(daq_sim)["acquisition"]["stats"]["n_write_completed"] > 0)
    faults(daq_sim, restart_server=True)
    assert {"state": "UNKNOWN", "acquisition": None} == status(daq_sim)
    assert before == ok(get(daq_sim, "/daq/config"))
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f[DATA].shape[0] == len(f[IMAGE_ID]) > 0


def test_a_dead_log_thread_logs_nothing_until_the_server_restarts(daq_sim, tmp_path):
    """kill_log_thread: later acquisitions end FINISHED but never reach daq:log or /daq/logs (nor does
    a stop's second record) until restart_server."""
    assert faults(daq_sim, kill_log_thread=True)["kill_log_thread"] is True
    done = ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 2}))
    assert "FINISHED" == done["writer"]["acquisition"]["state"]
    ok(post(daq_sim, "/writer/stop", {}))
    assert ({}, []) == (ok(get(daq_sim, "/daq/logs/5"))["logs"], entries(daq_sim.redis_url, "daq:log"))
    faults(daq_sim, restart_server=True)
    ok(post(daq_sim, "/writer/stop", {}))
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "b.h5"), "n_images": 2, "run_id": 8}))
    assert [8] == [a["info"]["run_id"] for a in ok(get(daq_sim, "/daq/logs/5"))["logs"].values()]


def test_reset_clears_the_wedges(daq_sim):
    """POST /sim/reset clears a wedged driver and a dead log thread too."""
    faults(daq_sim, wedge_driver=True, kill_log_thread=True)
    ok(post(daq_sim, "/sim/reset", {}))
    assert {} == ok(get(daq_sim, "/sim/faults"))["faults"]


# -- Redis behind the server ---------------------------------------------------------------------


@pytest.fixture
def own_redis():
    """A Redis-compatible server of the test's own, which it may kill, pause and restart."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_requests_that_touch_redis_answer_error_111_while_it_is_down(own_redis, tmp_path):
    """With its Redis down the server answers what touches Redis (config, stats, logs, deployment, the
    writes, which read the config first) with HTTP 200 "Error 111 connecting to HOST:PORT. Connection
    refused."; the writer status and stops still answer. A Redis back empty: "No config set yet.",
    config null, while the writer keeps its state."""
    settings = SimSettings(start_state="READY", heartbeat_s=0.2)
    with SimulatedDaq(redis_url=own_redis.url, settings=settings) as sim:
        finished = ok(post(sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 2}))["writer"]
        config = ok(get(sim, "/daq/config"))["config"]
        own_redis.kill()
        refusal = f"Error 111 connecting to 127.0.0.1:{own_redis.port}. Connection refused."
        write = {"output_file": str(tmp_path / "b.h5"), "n_images": 1}
        for method, path, body in [
            ("GET", "/daq/config", None),
            ("POST", "/daq/config", config),
            ("GET", "/daq/stats", None),
            ("GET", "/daq/logs/5", None),
            ("GET", "/daq/deployment", None),
            ("POST", "/writer/write_async", write),
            ("POST", "/writer/write_sync", write),
        ]:
            reply = get(sim, path) if method == "GET" else post(sim, path, body)
            assert refusal == refused(reply), path
        assert protocol.MESSAGE_LOGS_COUNT == refused(get(sim, "/daq/logs/0")), "checked before Redis is asked"
        assert finished == status(sim)
        assert "READY" == ok(post(sim, "/writer/stop", {}))["writer"]["state"]
        back = RedisServer(port=own_redis.port).start()
        try:
            envelope = ok(get(sim, "/daq/config"))
            assert ("No config set yet.", None, None) == (envelope["message"], envelope["config"], envelope["config_id"])
            assert ("UNKNOWN", "No config available") == tuple(ok(get(sim, "/daq/deployment"))["deployment"][k] for k in ("status", "message"))
            assert {} == ok(get(sim, "/daq/logs/5"))["logs"]
            assert finished["acquisition"]["info"] == status(sim)["acquisition"]["info"]
            assert "'NoneType' object is not subscriptable" == refused(post(sim, "/writer/write_async", write))
            wait_until(lambda: ok(get(sim, "/daq/stats"))["stats"], timeout=5)
        finally:
            back.stop()


def test_a_redis_outage_as_an_acquisition_ends_stops_the_log_thread(own_redis, tmp_path):
    """A Redis that does not answer when an acquisition ends: the log thread meets the error and ends;
    when Redis answers again, later acquisitions are not logged until the server restarts."""
    settings = SimSettings(start_state="READY", frame_rate=100)
    with SimulatedDaq(redis_url=own_redis.url, settings=settings) as sim:
        ok(post(sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 20, "run_id": 1}))
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: status(sim)["state"] == "READY", timeout=15)
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        assert faults(sim)["kill_log_thread"] is True
        time.sleep(1.1)  # the status loggers pause for a second after a failure
        ok(post(sim, "/writer/write_sync", {"output_file": str(tmp_path / "b.h5"), "n_images": 2, "run_id": 2}))
        # The log entry the thread tried to write as it ended may still land (Redis reads it on waking).
        assert 2 not in [a["info"]["run_id"] for a in ok(get(sim, "/daq/logs/5"))["logs"].values()]
        faults(sim, restart_server=True)
        ok(post(sim, "/writer/stop", {}))
        ok(post(sim, "/writer/write_sync", {"output_file": str(tmp_path / "c.h5"), "n_images": 2, "run_id": 3}))
        assert 3 == next(iter(ok(get(sim, "/daq/logs/5"))["logs"].values()))["info"]["run_id"]


# -- data faults ---------------------------------------------------------------------------------


def test_detector_rate_zero_holds_an_acquisition_and_null_resumes_it(daq_sim, tmp_path):
    """detector_rate 0 stops the images: a running acquisition waits, daq:stat shows 0 images/s;
    a rate changes it; null goes back to the configured rate and the acquisition completes."""
    daq_sim.core.settings.frame_rate = 200
    ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 150}))
    wait_until(lambda: status(daq_sim)["acquisition"]["stats"]["n_write_completed"] > 0)
    assert 0.0 == faults(daq_sim, detector_rate=0)["detector_rate"]
    held = status(daq_sim)["acquisition"]["stats"]["n_write_completed"]
    wait_until(lambda: ok(get(daq_sim, "/daq/stats"))["stats"]["detector"]["images_per_second"] == 0, timeout=3)
    time.sleep(0.3)
    assert ("WRITING", held) == (status(daq_sim)["state"], status(daq_sim)["acquisition"]["stats"]["n_write_completed"])
    faults(daq_sim, detector_rate=50)
    wait_until(lambda: ok(get(daq_sim, "/daq/stats"))["stats"]["detector"]["images_per_second"] == 50, timeout=3)
    assert "detector_rate" not in faults(daq_sim, detector_rate=None)
    final = wait_until(lambda: (s := status(daq_sim))["state"] == "READY" and s, timeout=5)
    assert ("FINISHED", 150) == (final["acquisition"]["state"], final["acquisition"]["stats"]["n_write_completed"])
    assert 200 == wait_until(lambda: (r := ok(get(daq_sim, "/daq/stats"))["stats"]["detector"]["images_per_second"]) == 200 and r, timeout=3)


@pytest.mark.parametrize("kind, kept", [("gap", [0, 1, 2, 3, 4, 6, 7, 8, 9]), ("truncated", [0, 1, 2, 3, 4])])
def test_bad_file_next_writes_a_bad_file_while_the_daq_says_all_were_written(daq_sim, tmp_path, kind, kept):
    """bad_file_next "gap": the next file lacks one image (a gap in image_id); "truncated": its datasets
    end half-way. The DAQ's status and log say every image was written; the file after is whole."""
    assert kind == faults(daq_sim, bad_file_next=kind)["bad_file_next"]
    done = ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "bad.h5"), "n_images": 10}))["writer"]
    assert ("FINISHED", 10) == (done["acquisition"]["state"], done["acquisition"]["stats"]["n_write_completed"])
    assert "bad_file_next" not in ok(get(daq_sim, "/sim/faults"))["faults"]
    with h5py.File(tmp_path / "bad.h5", "r") as f:
        ids = f[IMAGE_ID][()].astype(np.int64)
        assert (len(kept), len(kept), len(kept)) == (f[DATA].shape[0], len(ids), len(f["SIM-EIGER-64K/status"]))
        assert kept == list(ids - ids[0])
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "good.h5"), "n_images": 10}))
    with h5py.File(tmp_path / "good.h5", "r") as f:
        assert 10 == f[DATA].shape[0] and np.all(np.diff(f[IMAGE_ID][()].astype(np.int64)) == 1)


@pytest.mark.parametrize("body", [{"bad_file_next": "empty"}, {"detector_rate": -1}, {"detector_rate": "fast"}, {"wedge_driver": "yes"}])
def test_bad_fault_values_are_422(daq_sim, body):
    """Unknown bad-file kinds, negative or non-numeric rates, non-booleans: HTTP 422, nothing armed."""
    assert 422 == post(daq_sim, "/sim/faults", body).status_code
    assert {} == ok(get(daq_sim, "/sim/faults"))["faults"]
