"""daq-sim over real HTTP and a real Redis, driven by the original std_daq_client 1.3.5.

What the original client sees here is what it would see on the real rest_v2 server
(section 9 of the reference, checked point by point in ``test_fidelity.py``); this module
covers the client's README calls, the files, the faults, the settings and the command.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import redis
from std_daq_client.client import StdDaqAdminException as OriginalAdminException
from std_daq_client.client import StdDaqClient as OriginalClient

from daq_runner import protocol
from daq_runner.sim.daq import DEFAULT_CONFIG

from ..conftest import script, stream_entries, wait_until
from .conftest import faults, full_config, get, ok, post, refused, set_config, status

DATA = f"/{DEFAULT_CONFIG['detector_name']}/data"


def test_original_readme_calls_see_what_the_real_server_answers(fresh_sim, tmp_path):
    """The seed README's calls, in order, on a freshly started DAQ: the partial set_config is refused
    (StdDaqAdminException, the server's int() error), a write needs a stop first, the rest works."""
    client = OriginalClient(url_base=fresh_sim.url)
    assert {"acquisition": None, "state": "UNKNOWN"} == client.get_status()
    assert DEFAULT_CONFIG["detector_name"] == client.get_config()["detector_name"]
    with pytest.raises(OriginalAdminException) as refusal:
        client.set_config(daq_config={"bit_depth": 16, "writer_user_id": 0})
    assert protocol.MESSAGE_PARTIAL_CONFIG == str(refusal.value)
    assert {} == client.get_logs(n_last_logs=5)  # rest_v2 sends a dict; the original passes it through
    assert {"detector", "writer"} == set(client.get_stats())
    assert "SUCCESS" == client.get_deployment_status()["status"]
    out = str(tmp_path / "output.h5")
    with pytest.raises(OriginalAdminException, match=protocol.MESSAGE_BUSY_PREFIX):
        client.start_writer_async({"output_file": out, "n_images": 10})
    assert "READY" == client.stop_writer()["state"]
    assert "WRITING" == client.start_writer_async({"output_file": out, "n_images": 10})["state"]
    wait_until(lambda: client.get_status()["state"] == "READY")  # the README's next call comes faster
    synced = client.start_writer_sync({"output_file": out, "n_images": 10})
    assert ("READY", "FINISHED", 10) == (synced["state"], synced["acquisition"]["state"], synced["acquisition"]["stats"]["n_write_completed"])
    assert "READY" == client.stop_writer()["state"]
    assert 3 == len(client.get_logs(n_last_logs=5)), "two writes and the stop's second record of the last"


def test_original_client_whole_config_round_trip(orig):
    """The whole config from get_config, changed and sent back, works with the original client."""
    config = orig.get_config()
    applied = orig.set_config({**config, "bit_depth": 32, "writer_user_id": 12345})
    assert {**config, "bit_depth": 32, "writer_user_id": 12345} == applied


def test_original_client_raises_runtime_error_on_422(orig):
    """The original client sees a 422 as RuntimeError, as against the real server."""
    with pytest.raises(RuntimeError):
        orig.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 0})
    with pytest.raises(RuntimeError):
        orig.set_config({**orig.get_config(), "bit_depth": "x"})


def test_status_and_config_of_a_daq_in_service(orig, daq_sim):
    """The daq_sim fixture gives a DAQ in service: READY, initial config deployed, no logs."""
    assert {"acquisition": None, "state": "READY"} == orig.get_status()
    envelope = ok(get(daq_sim, "/daq/config"))
    assert DEFAULT_CONFIG == envelope["config"] and envelope["config_id"].count("-") == 1
    deployment = orig.get_deployment_status()
    assert ("SUCCESS", {"Done"}) == (deployment["status"], set(deployment["servers"].values()))
    assert envelope["config_id"] == deployment["config_id"]
    assert deployment["stats"]["stop_time"] >= deployment["stats"]["start_time"] > 0


def test_run_id_chosen_by_server_when_absent(orig, tmp_path):
    """Without run_id the server uses the request time in nanoseconds."""
    before = time.time_ns()
    status = orig.start_writer_sync({"output_file": str(tmp_path / "a.h5"), "n_images": 1})
    assert before <= status["acquisition"]["info"]["run_id"] <= time.time_ns()


def test_hdf5_file_has_the_writers_layout(orig, daq_sim, tmp_path):
    """/<detector>/data (n, h, w) of the bit depth's dtype, one image per chunk, and contiguous
    uint64 image_id and status, one value per image; no metadata dataset."""
    set_config(daq_sim, bit_depth=32)
    out = str(tmp_path / "layout.h5")
    orig.start_writer_sync({"output_file": out, "n_images": 12})
    with h5py.File(out, "r") as f:
        group = f[f"/{DEFAULT_CONFIG['detector_name']}"]
        assert {"data", "image_id", "status"} == set(group)
        data, image_id, image_status = group["data"], group["image_id"], group["status"]
        assert ((12, 256, 256), np.uint32, (1, 256, 256)) == (data.shape, data.dtype, data.chunks)
        for dataset in (image_id, image_status):
            assert ((12,), np.uint64, None) == (dataset.shape, dataset.dtype, dataset.chunks), "contiguous"
        assert np.all(np.diff(image_id[()].astype(np.int64)) == 1) and not image_status[()].any()
        frame = data[3]
        assert frame.std() > 1 and frame.max() > frame.mean() * 5, "frames look like data: noise and a bright spot"


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_hdf5_dtype_follows_bit_depth(orig, daq_sim, tmp_path, bit_depth, dtype):
    """The data dtype is the bit depth's."""
    set_config(daq_sim, bit_depth=bit_depth)
    out = str(tmp_path / "d.h5")
    orig.start_writer_sync({"output_file": out, "n_images": 2})
    with h5py.File(out, "r") as f:
        assert dtype == f[DATA].dtype


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
        assert written == f[DATA].shape[0] == len(f[f"/{DEFAULT_CONFIG['detector_name']}/image_id"])
    logs = list(orig.get_logs(1).values())
    assert 7 == logs[0]["info"]["run_id"] and "Interrupted." == logs[0]["message"]


def test_write_refused_while_writing(orig, daq_sim, tmp_path):
    """A write while WRITING is refused with the real message, which shows the running status."""
    daq_sim.core.settings.frame_rate = 50
    orig.start_writer_async({"output_file": str(tmp_path / "a.h5"), "n_images": 1000, "run_id": 11})
    with pytest.raises(OriginalAdminException) as refusal:
        orig.start_writer_async({"output_file": str(tmp_path / "b.h5"), "n_images": 1})
    message = str(refusal.value)
    assert message.startswith(protocol.MESSAGE_BUSY_PREFIX + ":\n {'state': 'WRITING', 'acquisition': {") and "'run_id': 11" in message
    orig.stop_writer()


@pytest.mark.parametrize("path", ["/writer/write_async", "/daq/config", "/sim/faults", "/sim/reset"])
def test_malformed_json_is_4xx(daq_sim, path):
    """Malformed JSON is a client error, never a 5xx."""
    reply = post(daq_sim, path, data=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= reply.status_code < 500


def test_stop_reads_no_body(daq_sim):
    """/writer/stop reads no body, as the real server: even a malformed one is ignored."""
    reply = post(daq_sim, "/writer/stop", data=b"{not json", headers={"content-type": "application/json"})
    assert "Writing stopped." == ok(reply)["message"]


def test_logs_only_for_finished_acquisitions_newest_first(orig, daq_sim, tmp_path):
    """FAILED acquisitions are not logged; FINISHED ones are, newest first by stream id."""
    orig.start_writer_sync({"output_file": str(tmp_path / "1.h5"), "n_images": 2, "run_id": 1})
    faults(daq_sim, fail_next="ERROR: disk full")
    failed = orig.start_writer_sync({"output_file": str(tmp_path / "2.h5"), "n_images": 4, "run_id": 2})
    assert ("FAILED", "ERROR: disk full") == (failed["acquisition"]["state"], failed["acquisition"]["message"])
    orig.start_writer_sync({"output_file": str(tmp_path / "3.h5"), "n_images": 2, "run_id": 3})
    logs = orig.get_logs(10)
    assert [3, 1] == [entry["info"]["run_id"] for entry in logs.values()]
    assert list(logs) == sorted(logs, key=lambda k: int(k.split("-")[0]), reverse=True)


def test_fault_writer_unknown_loses_the_running_acquisition(orig, quick_driver, tmp_path):
    """writer_state UNKNOWN during an acquisition is a writer restart: the acquisition is lost (kept
    as last reported, not final), writes are refused, the first stop cannot reach READY, the next one does."""
    quick_driver.core.settings.frame_rate = 50
    orig.start_writer_async({"output_file": str(tmp_path / "u.h5"), "n_images": 1000, "run_id": 4})
    assert "UNKNOWN" == faults(quick_driver, writer_state="UNKNOWN")["writer_state"]
    lost = orig.get_status()
    assert ("UNKNOWN", 4) == (lost["state"], lost["acquisition"]["info"]["run_id"])
    assert lost["acquisition"]["state"] in ("WAITING_IMAGES", "ACQUIRING_IMAGES")
    with pytest.raises(OriginalAdminException, match=protocol.MESSAGE_BUSY_PREFIX):
        orig.start_writer_async({"output_file": str(tmp_path / "v.h5"), "n_images": 1})
    with pytest.raises(OriginalAdminException, match="Cannot reach READY"):
        orig.stop_writer()
    assert {"state": "READY", "acquisition": None} == orig.stop_writer()
    assert "UNKNOWN" in [s["state"] for s in stream_entries(quick_driver.redis_url, "daq:status")]


def test_fault_writer_unknown_while_idle_is_reset_by_one_stop(orig, daq_sim, tmp_path):
    """writer_state UNKNOWN on an idle writer: one stop makes it READY again."""
    orig.start_writer_sync({"output_file": str(tmp_path / "a.h5"), "n_images": 2, "run_id": 5})
    faults(daq_sim, writer_state="UNKNOWN")
    assert "UNKNOWN" == orig.get_status()["state"]
    back = orig.stop_writer()
    assert ("READY", 5) == (back["state"], back["acquisition"]["info"]["run_id"])


def test_fault_unavailable_answers_503_except_sim(daq_sim):
    """unavailable_s: every non-/sim endpoint answers 503 for that long."""
    faults(daq_sim, unavailable_s=0.5)
    assert 503 == get(daq_sim, "/writer/status").status_code
    assert 0 < get(daq_sim, "/sim/faults").json()["faults"]["unavailable_s"] <= 0.5
    wait_until(lambda: get(daq_sim, "/writer/status").status_code == 200, timeout=3)


def test_fault_deployment_error(orig, daq_sim):
    """deployment ERROR: the last server of the next deployment reports Error ("Deployment failed")."""
    faults(daq_sim, deployment="ERROR")
    orig.set_config(full_config(daq_sim, bit_depth=8))
    deployment = wait_until(lambda: len((d := orig.get_deployment_status())["servers"]) == 2 and "Deploying" not in d["servers"].values() and d)
    assert ("ERROR", "Deployment failed", {"sim-daq-0": "Done", "sim-daq-1": "Error"}) == (
        deployment["status"], deployment["message"], deployment["servers"])
    progress = redis.Redis.from_url(daq_sim.redis_url).xrange(f"daq:config:{deployment['config_id']}")
    messages = [(f[b"server_name"].decode(), f[b"message"].decode()) for _, f in progress]
    assert [("sim-daq-0", "Deploying"), ("sim-daq-0", "Done"), ("sim-daq-1", "Deploying"), ("sim-daq-1", "Error")] == messages
    set_config(daq_sim, bit_depth=16)  # the fault is spent: the next deployment succeeds


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


def test_reset_clears_faults_and_takes_a_start_state(daq_sim):
    """POST /sim/reset clears every armed fault; the writer comes back READY, or UNKNOWN when asked."""
    faults(daq_sim, fail_next="ERROR: x", stall_s=30, deployment="ERROR")
    assert {"fail_next", "stall_s", "deployment"} <= set(get(daq_sim, "/sim/faults").json()["faults"])
    ok(post(daq_sim, "/sim/reset"))
    assert {} == get(daq_sim, "/sim/faults").json()["faults"]
    assert {"state": "READY", "acquisition": None} == status(daq_sim)
    ok(post(daq_sim, "/sim/reset", {"start_state": "UNKNOWN"}))
    assert {"state": "UNKNOWN", "acquisition": None} == status(daq_sim)
    assert 422 == post(daq_sim, "/sim/reset", {"start_state": "WRITING"}).status_code


def test_reset_restores_the_settings_the_simulator_started_with(daq_sim):
    """Settings a test changed on the session's simulator are back after the reset."""
    daq_sim.core.settings.driver_timeout_s = 0.1
    daq_sim.core.settings.accept_partial_config = True
    ok(post(daq_sim, "/sim/reset"))
    assert (5.0, False) == (daq_sim.core.settings.driver_timeout_s, daq_sim.core.settings.accept_partial_config)


def test_unknown_fault_is_422(daq_sim):
    """Unknown fault names are rejected."""
    assert 422 == post(daq_sim, "/sim/faults", {"explode": 1}).status_code


def test_stats_reflect_writing(orig, daq_sim, tmp_path):
    """Stats: detector at the frame rate, writer rate while writing."""
    daq_sim.core.settings.frame_rate = 400
    orig.start_writer_async({"output_file": str(tmp_path / "r.h5"), "n_images": 100000})
    try:
        stats = wait_until(lambda: (s := orig.get_stats()) and s["writer"]["images_per_second"] > 100 and s, timeout=5)
        assert 400 == stats["detector"]["images_per_second"]
        assert stats["writer"]["bytes_per_second"] == stats["writer"]["images_per_second"] * 256 * 256 * 2
    finally:
        orig.stop_writer()
    assert stream_entries(daq_sim.redis_url, "daq:stat")


def test_write_sync_limit(daq_sim, tmp_path):
    """After the sync limit the server answers its error while the acquisition goes on."""
    daq_sim.core.settings.sync_limit_s = 0.3
    daq_sim.core.settings.frame_rate = 20
    message = refused(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "l.h5"), "n_images": 100}))
    assert protocol.MESSAGE_SYNC_LIMIT.format(limit="0.3") == message
    assert "WRITING" == status(daq_sim)["state"]
    ok(post(daq_sim, "/writer/stop", {}))


def test_no_driver_delay_when_driver_poll_is_zero(daq_sim, tmp_path):
    """driver_poll_s=0 (benchmarks): starts and stops answer as soon as the state is reached."""
    daq_sim.core.settings.driver_poll_s = 0
    began = time.monotonic()
    for i in range(5):
        ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / f"{i}.h5"), "n_images": 2}))
        ok(post(daq_sim, "/writer/stop", {}))
    assert time.monotonic() - began < 0.5 * 2, "10 requests without 0.1 s polls"


def test_restart_on_the_same_redis_comes_up_unknown_with_its_logs(tmp_path):
    """As a deployed DAQ after a restart: UNKNOWN, no acquisition, earlier logs still served."""
    from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq

    with RedisServer() as server:
        with SimulatedDaq(redis_url=server.url, settings=SimSettings(frame_rate=1000)) as first:
            client = OriginalClient(first.url)
            client.stop_writer()
            client.start_writer_sync({"output_file": str(tmp_path / "a.h5"), "n_images": 3, "run_id": 7})
        with SimulatedDaq(redis_url=server.url, settings=SimSettings(frame_rate=1000)) as second:
            client = OriginalClient(second.url)
            assert {"state": "UNKNOWN", "acquisition": None} == client.get_status()
            assert [7] == [log["info"]["run_id"] for log in client.get_logs(5).values()]
            assert all([] == log["reports"] for log in client.get_logs(5).values())
            with pytest.raises(OriginalAdminException, match=protocol.MESSAGE_BUSY_PREFIX):
                client.start_writer_async({"output_file": str(tmp_path / "b.h5"), "n_images": 3})
            assert "READY" == client.stop_writer()["state"]
        with SimulatedDaq(redis_url=server.url, settings=SimSettings(start_state="READY")) as third:
            assert "READY" == OriginalClient(third.url).get_status()["state"]


def test_openapi_document(daq_sim):
    """The REST API documents itself."""
    paths = get(daq_sim, "/openapi.json").json()["paths"]
    assert {e.path for e in protocol.ENDPOINTS} <= set(paths)


def _start_daq_sim(*args):
    proc = subprocess.Popen([script("daq-sim"), "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "rest=http://127.0.0.1:" in line and "redis=redis://127.0.0.1:" in line, line + proc.stderr.read()
    return proc, line.split("rest=")[1].split()[0]


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_daq_sim_command_starts_unknown_and_stops_on_sigterm():
    """daq-sim --port 0 prints rest= and redis= when ready, starts UNKNOWN and exits 0 on SIGTERM."""
    proc, rest = _start_daq_sim("--frame-rate", "500")
    try:
        assert {"state": "UNKNOWN", "acquisition": None} == OriginalClient(rest).get_status()
    finally:
        assert 0 == _stop(proc)


def test_daq_sim_command_options(tmp_path):
    """--start-state READY, --driver-poll-s 0 and --accept-partial-config reach the simulator."""
    proc, rest = _start_daq_sim("--start-state", "READY", "--driver-poll-s", "0", "--accept-partial-config")
    try:
        client = OriginalClient(rest)
        assert "READY" == client.get_status()["state"]
        assert 8 == client.set_config({"bit_depth": 8})["bit_depth"]
        began = time.monotonic()
        client.stop_writer()
        assert time.monotonic() - began < 0.09
    finally:
        assert 0 == _stop(proc)


@pytest.mark.parametrize(
    "args",
    [
        ["--driver-poll-s", "-1"],
        ["--driver-poll-s", "x"],
        ["--start-state", "WRITING"],
        ["--deploy-delay", "inf"],  # accepted once, then a traceback and a deployment waiting for ever
        ["--deploy-delay", "1e300"],
        ["--deploy-delay", "-1"],
        ["--sync-limit", "nan"],
        ["--sync-limit", "0"],
        ["--restart-s", "-1"],
        ["--restart-delay-s", "nan"],
    ],
)
def test_daq_sim_bad_option_is_one_line(args):
    """A bad option is one line on stderr and exit 2."""
    proc = subprocess.run([script("daq-sim"), "--port", "0", *args], capture_output=True, text=True, timeout=20)
    assert 2 == proc.returncode and 1 == len(proc.stderr.strip().splitlines()), proc.stderr


def test_daq_sim_defaults_are_the_settings_defaults():
    """Every default of the command line is SimSettings' own (restart_s 1, restart_delay_s 1 among them)."""
    from daq_runner.sim import SimSettings
    from daq_runner.sim.cli import _parse, _settings

    assert SimSettings() == _settings(_parse([]))
    assert (1.0, 1.0) == (SimSettings().restart_s, SimSettings().restart_delay_s)


def test_daq_sim_restart_options_reach_the_simulator():
    """--restart-s and --restart-delay-s set the settings of the same names."""
    from daq_runner.sim.cli import _parse, _settings

    settings = _settings(_parse(["--restart-s", "1.5", "--restart-delay-s", "0.25"]))
    assert (1.5, 0.25) == (settings.restart_s, settings.restart_delay_s)


def test_daq_sim_bad_config_file_is_one_line(tmp_path):
    """A bad --config is one line and exit 2."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bit_depth": 12}))
    proc = subprocess.run([script("daq-sim"), "--port", "0", "--config", str(bad)], capture_output=True, text=True, timeout=20)
    assert 2 == proc.returncode
    assert 1 == len(proc.stderr.strip().splitlines()) and "bit_depth" in proc.stderr


@pytest.mark.parametrize(
    "content, text",
    [
        ("[" * 100_000, "nested too deeply"),  # was a RecursionError traceback, exit 1
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg")), "too large"),
        ("bit_depth: [1, 2\n", "config file"),
        ("\x00\xff\xfe", "config file"),
    ],
)
def test_daq_sim_hostile_config_file_is_one_line_exit_2(tmp_path, content, text):
    """Read as batch files are (size, nesting and alias limits): one line, exit 2, at once
    (an alias bomb used to take gigabytes, then exit 1 with an empty reason)."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content.encode("latin-1"))
    proc = subprocess.run([script("daq-sim"), "--port", "0", "--config", str(bad)], capture_output=True, text=True, timeout=20)
    assert 2 == proc.returncode, proc.stderr
    assert 1 == len(proc.stderr.strip().splitlines()) and text in proc.stderr and "Traceback" not in proc.stderr


def test_daq_sim_config_file_values_mean_what_was_typed(tmp_path):
    """YAML 1.2 as in batch files: detector_name NO stays the text NO (YAML 1.1 made it false)."""
    from daq_runner._config_file import load_config_file

    path = tmp_path / "c.yaml"
    path.write_text("detector_name: NO\nbit_depth: 16\n")
    assert {"detector_name": "NO", "bit_depth": 16} == load_config_file(str(path))


def test_a_never_configured_daq_is_configured_by_restarting_its_server(tmp_path):
    """A DAQ whose Redis holds no config refuses configs and writes; a restart of its REST server
    (restart_server) deploys its config file, as the real server does when Redis has none."""
    from daq_runner.sim import SimSettings, SimulatedDaq

    with SimulatedDaq(settings=SimSettings(start_configured=False, start_state="READY")) as sim:
        assert refused(post(sim, "/daq/config", DEFAULT_CONFIG)).startswith("Config errors: missing detector_name,")
        assert "'NoneType' object is not subscriptable" == refused(post(sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 1}))
        faults(sim, restart_server=True)
        assert DEFAULT_CONFIG == ok(get(sim, "/daq/config"))["config"]
        assert "SUCCESS" == ok(get(sim, "/daq/deployment"))["deployment"]["status"]
        ok(post(sim, "/writer/stop", {}))
        assert "WRITING" == ok(post(sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 1}))["writer"]["state"]


def test_daq_sim_with_a_long_deploy_delay_is_ready_at_once_with_its_config_deployed():
    """--deploy-delay 60: ready within seconds (about 60 s after start before), the initial config
    deployed (SUCCESS); a config change then waits for its servers as the real server shows."""
    began = time.monotonic()
    proc, rest = _start_daq_sim("--deploy-delay", "60", "--start-state", "READY")
    try:
        assert time.monotonic() - began < 20
        client = OriginalClient(rest)
        assert "SUCCESS" == client.get_deployment_status()["status"]
        config = client.get_config()
        client.set_config({**config, "bit_depth": 8 if config["bit_depth"] != 8 else 16})
        deployment = client.get_deployment_status()
        assert ("UNKNOWN", protocol.MESSAGE_DEPLOYMENT_WAITING) == (deployment["status"], deployment["message"])
    finally:
        assert 0 == _stop(proc)
