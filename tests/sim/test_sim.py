"""daq-sim over real HTTP and a real Redis, driven by the original std_daq_client 1.3.5."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import redis
import requests
from std_daq_client.client import StdDaqAdminException as OriginalAdminException
from std_daq_client.client import StdDaqClient as OriginalClient

from daq_runner import api
from daq_runner.sim.daq import DEFAULT_CONFIG

from ..conftest import script, stream_entries, wait_until


@pytest.fixture
def orig(daq_sim):
    return OriginalClient(url_base=daq_sim.url)


def faults(sim, **armed):
    reply = requests.post(sim.url + "/sim/faults", json=armed, timeout=5)
    assert 200 == reply.status_code, reply.text
    return reply.json()["faults"]


def test_status_and_config_as_the_real_server(orig, daq_sim):
    """Status, config, stats, deployment and logs come in the real envelopes and shapes."""
    assert {"acquisition": None, "state": "READY"} == orig.get_status()
    assert DEFAULT_CONFIG["detector_name"] == orig.get_config()["detector_name"]
    envelope = requests.get(daq_sim.url + "/daq/config", timeout=5).json()
    assert envelope["status"] == "ok" and envelope["config_id"].count("-") == 1
    deployment = orig.get_deployment_status()
    assert "SUCCESS" == deployment["status"] and set(deployment["servers"].values()) == {"Done"}
    assert envelope["config_id"] == deployment["config_id"]
    assert {} == orig.get_logs(5)  # rest_v2 sends a dict; the original passes it through


def test_write_sync_runs_the_acquisition_state_machine(orig, daq_sim, tmp_path):
    """A sync write passes WAITING_IMAGES -> ACQUIRING_IMAGES -> FLUSHING_IMAGES -> FINISHED, on the stream too."""
    out = str(tmp_path / "sync.h5")
    status = orig.start_writer_sync({"output_file": out, "n_images": 20, "run_id": 42})
    acquisition = status["acquisition"]
    assert "READY" == status["state"]
    assert ("FINISHED", "Completed.") == (acquisition["state"], acquisition["message"])
    assert {"n_images": 20, "output_file": out, "run_id": 42} == acquisition["info"]
    assert 20 == acquisition["stats"]["n_write_completed"] == acquisition["stats"]["n_write_requested"]
    states = [s["acquisition"]["state"] for s in stream_entries(daq_sim.redis_url, "daq:status") if s["acquisition"]]
    order = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert ["WAITING_IMAGES", "ACQUIRING_IMAGES", "FLUSHING_IMAGES", "FINISHED"] == order
    logs = stream_entries(daq_sim.redis_url, "daq:log")
    assert [42] == [entry["info"]["run_id"] for entry in logs]


def test_run_id_chosen_by_server_when_absent(orig, tmp_path):
    """Without run_id the server uses the request time in nanoseconds."""
    before = time.time_ns()
    status = orig.start_writer_sync({"output_file": str(tmp_path / "a.h5"), "n_images": 1})
    assert before <= status["acquisition"]["info"]["run_id"] <= time.time_ns()


def test_hdf5_file_has_the_writers_layout(orig, daq_sim, tmp_path):
    """The file holds /<detector>/data (n, h, w) of the bit depth's dtype and per-image metadata."""
    orig.set_config({"bit_depth": 32})
    out = str(tmp_path / "layout.h5")
    orig.start_writer_sync({"output_file": out, "n_images": 12})
    with h5py.File(out, "r") as f:
        data = f[f"/{DEFAULT_CONFIG['detector_name']}/data"]
        meta = f[f"/{DEFAULT_CONFIG['detector_name']}/metadata"]
        assert (12, 256, 256) == data.shape and np.uint32 == data.dtype
        assert 12 == len(meta) and ("image_id", "status") == meta.dtype.names
        frame = data[3]
        assert frame.std() > 1 and frame.max() > frame.mean() * 5, "frames look like data: noise and a bright spot"
        assert np.all(np.diff(meta["image_id"].astype(np.int64)) == 1)
    assert 256 * 256 * 2 < 1024 * 1024, "default images are well under 1 MiB"


def test_async_write_and_stop_interrupts_and_logs(orig, daq_sim, tmp_path):
    """Stop interrupts: FINISHED 'Interrupted.', a valid partial file, and a log entry."""
    daq_sim.core.settings.frame_rate = 200
    out = str(tmp_path / "stop.h5")
    started = orig.start_writer_async({"output_file": out, "n_images": 100000, "run_id": 7})
    assert "WRITING" == started["state"]
    wait_until(lambda: orig.get_status()["acquisition"]["stats"]["n_write_completed"] >= 5)
    stopped = orig.stop_writer()
    acquisition = stopped["acquisition"]
    assert ("READY", "FINISHED", "Interrupted.") == (stopped["state"], acquisition["state"], acquisition["message"])
    written = acquisition["stats"]["n_write_completed"]
    assert 5 <= written < 100000
    with h5py.File(out, "r") as f:
        assert written == f[f"/{DEFAULT_CONFIG['detector_name']}/data"].shape[0]
    logs = list(orig.get_logs(1).values())
    assert 7 == logs[0]["info"]["run_id"] and "Interrupted." == logs[0]["message"]


def test_write_refused_while_writing(orig, daq_sim, tmp_path):
    """A write while not READY is refused with the real message."""
    daq_sim.core.settings.frame_rate = 50
    orig.start_writer_async({"output_file": str(tmp_path / "a.h5"), "n_images": 1000})
    with pytest.raises(OriginalAdminException, match="Cannot start new acquisition"):
        orig.start_writer_async({"output_file": str(tmp_path / "b.h5"), "n_images": 1})
    orig.stop_writer()


@pytest.mark.parametrize(
    "output_file, reason",
    [("relative.h5", "absolute"), ("/tmp/has space.h5", "does not match"), ("/no/such/folder/x.h5", "does not exist")],
)
def test_output_path_rules(orig, output_file, reason):
    """Output files must be absolute, match the pattern, and their folder must exist."""
    with pytest.raises(OriginalAdminException, match=reason):
        orig.start_writer_async({"output_file": output_file, "n_images": 1})


@pytest.mark.parametrize("body", [{"output_file": "/tmp/a.h5", "n_images": 0}, {"n_images": 3}, {"output_file": "/tmp/a.h5", "n_images": "x"}])
def test_body_validation_errors_are_422(daq_sim, body):
    """Schema failures are HTTP 422 with FastAPI's detail, no envelope."""
    reply = requests.post(daq_sim.url + "/writer/write_async", json=body, timeout=5)
    assert 422 == reply.status_code and "detail" in reply.json()


@pytest.mark.parametrize("path", ["/writer/write_async", "/daq/config", "/sim/faults"])
def test_malformed_json_is_4xx(daq_sim, path):
    """Malformed JSON is a client error, never a 5xx."""
    reply = requests.post(daq_sim.url + path, data=b"{not json", headers={"content-type": "application/json"}, timeout=5)
    assert 400 <= reply.status_code < 500


def test_original_client_raises_runtime_error_on_422(orig):
    """The original client sees a 422 as RuntimeError, as against the real server."""
    with pytest.raises(RuntimeError):
        orig.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 0})


def test_partial_config_is_merged_converted_and_deployed(orig, daq_sim):
    """Partial updates merge, integer strings convert, deployment goes RUNNING -> SUCCESS."""
    daq_sim.core.settings.deploy_delay_s = 0.3
    try:
        applied = orig.set_config({"bit_depth": "8", "writer_user_id": 12345})
        assert 8 == applied["bit_depth"] and 12345 == applied["writer_user_id"]
        assert DEFAULT_CONFIG["image_pixel_width"] == applied["image_pixel_width"]
        assert "RUNNING" == orig.get_deployment_status()["status"]
        done = wait_until(lambda: (d := orig.get_deployment_status())["status"] == "SUCCESS" and d)
        assert done["stats"]["stop_time"] >= done["stats"]["start_time"]
    finally:
        daq_sim.core.settings.deploy_delay_s = 0.05
    configs = stream_entries(daq_sim.redis_url, "daq:config")
    assert 8 == configs[-1]["bit_depth"]
    progress = redis.Redis.from_url(daq_sim.redis_url).xrange(f"daq:config:{done['config_id']}")
    messages = [(f[b"server_name"].decode(), f[b"message"].decode()) for _, f in progress]
    assert ("sim-daq-0", "Deploying") in messages and ("sim-daq-0", "Done") in messages


@pytest.mark.parametrize(
    "update, reason",
    [({"detector_type": "pilatus"}, "Unknown detector_type"), ({"bit_depth": 12}, "bit_depth"), ({"bit_depth": "x"}, "integer"), ({"colour": 1}, "Unknown config field")],
)
def test_invalid_config_is_refused(orig, update, reason):
    """Invalid configs are application errors (HTTP 200, status error)."""
    with pytest.raises(OriginalAdminException, match=reason):
        orig.set_config(update)


def test_logs_only_for_finished_acquisitions(orig, daq_sim, tmp_path):
    """FAILED acquisitions are not logged; FINISHED ones are, newest first by stream id."""
    orig.start_writer_sync({"output_file": str(tmp_path / "1.h5"), "n_images": 2, "run_id": 1})
    faults(daq_sim, fail_next="ERROR: disk full")
    failed = orig.start_writer_sync({"output_file": str(tmp_path / "2.h5"), "n_images": 4, "run_id": 2})
    assert ("FAILED", "ERROR: disk full") == (failed["acquisition"]["state"], failed["acquisition"]["message"])
    assert failed["acquisition"]["stats"]["start_time"] == failed["acquisition"]["stats"]["stop_time"]
    orig.start_writer_sync({"output_file": str(tmp_path / "3.h5"), "n_images": 2, "run_id": 3})
    logs = orig.get_logs(10)
    assert [3, 1] == [entry["info"]["run_id"] for entry in logs.values()]
    assert list(logs) == sorted(logs, key=lambda k: int(k.split("-")[0]), reverse=True)


def test_fault_writer_unknown_loses_acquisition_and_stop_resets(orig, daq_sim, tmp_path):
    """writer_state UNKNOWN: the running acquisition is lost, writes are refused, stop resets."""
    daq_sim.core.settings.frame_rate = 50
    orig.start_writer_async({"output_file": str(tmp_path / "u.h5"), "n_images": 1000})
    armed = faults(daq_sim, writer_state="UNKNOWN")
    assert "UNKNOWN" == armed["writer_state"]
    status = orig.get_status()
    assert "UNKNOWN" == status["state"] and "FAILED" == status["acquisition"]["state"]
    with pytest.raises(OriginalAdminException, match="UNKNOWN"):
        orig.start_writer_async({"output_file": str(tmp_path / "v.h5"), "n_images": 1})
    assert "READY" == orig.stop_writer()["state"]
    assert "UNKNOWN" in [s["state"] for s in stream_entries(daq_sim.redis_url, "daq:status")]


def test_fault_unavailable_answers_503_except_sim(daq_sim):
    """unavailable_s: every non-/sim endpoint answers 503 for that long."""
    faults(daq_sim, unavailable_s=0.5)
    assert 503 == requests.get(daq_sim.url + "/writer/status", timeout=5).status_code
    assert 0 < requests.get(daq_sim.url + "/sim/faults", timeout=5).json()["faults"]["unavailable_s"] <= 0.5
    wait_until(lambda: requests.get(daq_sim.url + "/writer/status", timeout=5).status_code == 200, timeout=3)


def test_fault_deployment_error(orig, daq_sim):
    """deployment ERROR: the next deployment fails, visible in /daq/deployment."""
    faults(daq_sim, deployment="ERROR")
    orig.set_config({"bit_depth": 8})
    deployment = wait_until(lambda: (d := orig.get_deployment_status())["status"] != "RUNNING" and d)
    assert "ERROR" == deployment["status"] and "Error" in deployment["servers"].values()
    orig.set_config({"bit_depth": 16})
    assert "SUCCESS" == wait_until(lambda: (d := orig.get_deployment_status())["status"] != "RUNNING" and d)["status"]


def test_fault_stall_stops_images_and_detector_rate(orig, daq_sim, tmp_path):
    """stall_s: no images arrive meanwhile; stats show the detector silent."""
    daq_sim.core.settings.frame_rate = 200
    faults(daq_sim, stall_s=1.2)
    orig.start_writer_async({"output_file": str(tmp_path / "s.h5"), "n_images": 10})
    time.sleep(0.7)
    assert 0 == orig.get_status()["acquisition"]["stats"]["n_write_completed"]
    assert 0 == orig.get_stats()["detector"]["images_per_second"]
    final = wait_until(lambda: (s := orig.get_status())["state"] == "READY" and s, timeout=5)
    assert 10 == final["acquisition"]["stats"]["n_write_completed"]


def test_reset_clears_faults(daq_sim):
    """POST /sim/reset clears every armed fault."""
    faults(daq_sim, fail_next="ERROR: x", stall_s=30, deployment="ERROR")
    assert {"fail_next", "stall_s", "deployment"} <= set(requests.get(daq_sim.url + "/sim/faults", timeout=5).json()["faults"])
    requests.post(daq_sim.url + "/sim/reset", timeout=5)
    assert {} == requests.get(daq_sim.url + "/sim/faults", timeout=5).json()["faults"]


def test_unknown_fault_is_422(daq_sim):
    """Unknown fault names are rejected."""
    assert 422 == requests.post(daq_sim.url + "/sim/faults", json={"explode": 1}, timeout=5).status_code


def test_stats_reflect_writing(orig, daq_sim, tmp_path):
    """Stats every second: detector at the frame rate, writer rate while writing."""
    daq_sim.core.settings.frame_rate = 400
    orig.start_writer_async({"output_file": str(tmp_path / "r.h5"), "n_images": 100000})
    try:
        stats = wait_until(lambda: (s := orig.get_stats()) and s["writer"]["images_per_second"] > 100 and s, timeout=5)
        assert 400 == stats["detector"]["images_per_second"]
        assert stats["writer"]["bytes_per_second"] == stats["writer"]["images_per_second"] * 256 * 256 * 2
    finally:
        orig.stop_writer()
    assert stream_entries(daq_sim.redis_url, "daq:stat")


def test_status_published_at_least_once_a_second(daq_sim):
    """daq:status gets a heartbeat even when nothing happens."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    last = client.xrevrange("daq:status", count=1)
    since = last[0][0] if last else "0-0"
    reply = client.xread({"daq:status": since}, block=1500)
    assert reply, "no status entry within 1.5 s"
    assert b"json" in reply[0][1][0][1]


def test_write_sync_limit(daq_sim, tmp_path):
    """After the sync limit the server answers status error while the acquisition goes on."""
    daq_sim.core.settings.sync_limit_s = 0.3
    daq_sim.core.settings.frame_rate = 20
    try:
        reply = requests.post(daq_sim.url + "/writer/write_sync", json={"output_file": str(tmp_path / "l.h5"), "n_images": 100}, timeout=5).json()
        assert "error" == reply["status"] and "still running" in reply["message"]
        assert "WRITING" == requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]["state"]
    finally:
        daq_sim.core.settings.sync_limit_s = 60
        requests.post(daq_sim.url + "/writer/stop", json={}, timeout=5)


def test_redis_outage_keeps_rest_alive_and_publishing_resumes(tmp_path):
    """With its Redis gone the REST API answers; publishing resumes when Redis is back."""
    from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq

    server = RedisServer().start()
    try:
        with SimulatedDaq(redis_url=server.url, settings=SimSettings(frame_rate=1000, heartbeat_s=0.2)) as sim:
            client = OriginalClient(sim.url)
            server.kill()
            status = client.start_writer_sync({"output_file": str(tmp_path / "o.h5"), "n_images": 5})
            assert "FINISHED" == status["acquisition"]["state"]
            restarted = RedisServer(port=server.port).start()
            try:
                wait_until(lambda: stream_entries(restarted.url, "daq:status"), timeout=5)
            finally:
                restarted.stop()
    finally:
        server.stop()


def test_restart_on_the_same_redis_comes_up_unknown_with_its_logs(tmp_path):
    """As a deployed DAQ after a writer restart: UNKNOWN, no acquisition, earlier logs still served."""
    from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq

    with RedisServer() as server:
        with SimulatedDaq(redis_url=server.url, settings=SimSettings(frame_rate=1000)) as first:
            assert "READY" == OriginalClient(first.url).get_status()["state"]  # a fresh system
            OriginalClient(first.url).start_writer_sync({"output_file": str(tmp_path / "a.h5"), "n_images": 3, "run_id": 7})
        with SimulatedDaq(redis_url=server.url, settings=SimSettings(frame_rate=1000)) as second:
            client = OriginalClient(second.url)
            assert {"state": "UNKNOWN", "acquisition": None} == client.get_status()
            assert "UNKNOWN" == stream_entries(server.url, "daq:status")[-1]["state"]
            assert [7] == [log["info"]["run_id"] for log in client.get_logs(5).values()]
            with pytest.raises(OriginalAdminException, match="UNKNOWN"):
                client.start_writer_async({"output_file": str(tmp_path / "b.h5"), "n_images": 3})
            assert "READY" == client.stop_writer()["state"]
        with SimulatedDaq(redis_url=server.url, settings=SimSettings(start_state="READY")) as third:
            assert "READY" == OriginalClient(third.url).get_status()["state"]


def test_openapi_document(daq_sim):
    """The REST API documents itself."""
    paths = requests.get(daq_sim.url + "/openapi.json", timeout=5).json()["paths"]
    assert {e.path for e in api.ENDPOINTS} <= set(paths)


def test_daq_sim_command_prints_ready_line_and_stops_on_sigterm(tmp_path):
    """daq-sim --port 0 prints rest= and redis= when ready and exits 0 on SIGTERM."""
    proc = subprocess.Popen([script("daq-sim"), "--port", "0", "--frame-rate", "500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "rest=http://127.0.0.1:" in line and "redis=redis://127.0.0.1:" in line
        rest = line.split("rest=")[1].split()[0]
        assert "READY" == OriginalClient(rest).get_status()["state"]
        proc.send_signal(signal.SIGTERM)
        assert 0 == proc.wait(10)
    finally:
        proc.kill()
        proc.wait()


def test_daq_sim_bad_config_file_is_one_line(tmp_path):
    """A bad --config is one line and exit 2."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bit_depth": 12}))
    proc = subprocess.run([script("daq-sim"), "--port", "0", "--config", str(bad)], capture_output=True, text=True, timeout=20)
    assert 2 == proc.returncode
    assert 1 == len(proc.stderr.strip().splitlines()) and "bit_depth" in proc.stderr
