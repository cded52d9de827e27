"""Section 10 of the Standard DAQ reference, point by point, against daq-sim's driver generation.

Section 10 says what the current generation (``std_det_driver`` over a WebSocket, the
config REST) does, as read from its public code. Each test checks one observable point of it,
in the section's order, over real sockets (a plain WebSocket client and ``requests``) and on
real HDF5 files.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, List, Optional

import h5py
import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from daq_runner.det_driver_protocol import DriverState
from daq_runner.sim.driver import DEFAULT_DRIVER_CONFIG
from daq_runner.testing import arm_faults

from ..conftest import wait_until

DETECTOR = DEFAULT_DRIVER_CONFIG["detector_name"]


def ws(sim: Any, path: str = "") -> Any:
    """A plain WebSocket client session to the simulated driver."""
    return connect(sim.ws_url + path, open_timeout=5, compression=None, ping_interval=None, close_timeout=1)


def frames(conn: Any, until: Optional[str] = None, timeout: float = 5.0) -> List[str]:
    """Raw frames until one whose status is ``until`` (inclusive), or for ``timeout`` s when ``until`` is None."""
    seen: List[str] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            if until is None:
                return seen
            other = [raw for raw in seen if raw != '{"status":"idle"}']
            pytest.fail(f"no {until!r} within {timeout} s: {len(seen)} frames, those not idle: {other[-10:]}")
        try:
            raw = conn.recv(timeout=left)
        except TimeoutError:
            continue
        seen.append(raw)
        if until is not None and json.loads(raw)["status"] == until:
            return seen


def statuses(raws: List[str]) -> List[str]:
    return [json.loads(raw)["status"] for raw in raws]


def start(conn: Any, path: Any, **fields: Any) -> None:
    conn.send(json.dumps({"command": "start", "path": str(path), **fields}))


def closed(conn: Any, timeout: float = 3.0) -> bool:
    """True when the server closed the connection (normally or not) within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            conn.recv(timeout=max(deadline - time.monotonic(), 0.001))
    except ConnectionClosed:
        return True
    except TimeoutError:
        pass
    return False


def refused(sim: Any) -> bool:
    """True while the driver's port refuses TCP connections."""
    try:
        socket.create_connection(("127.0.0.1", int(sim.ws_url.rsplit(":", 1)[1])), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def config_get(sim: Any, user: Optional[str] = "tester") -> requests.Response:
    return requests.get(sim.url + "/api/config/get", params={"user": user} if user else None, timeout=5)


def config_set(sim: Any, body: Any, user: Optional[str] = "tester") -> requests.Response:
    return requests.post(sim.url + "/api/config/set", params={"user": user} if user else None, json=body, timeout=5)


def back_idle(sim: Any, timeout: float = 10.0) -> None:
    """Wait until the driver accepts a connection again and pushes idle."""

    def idle() -> bool:
        try:
            with ws(sim) as conn:
                return "idle" in statuses(frames(conn, timeout=0.3))
        except (OSError, ConnectionClosed, InvalidHandshake):  # a server going down answers 503
            return False

    wait_until(idle, timeout=timeout)


def stored_and_back(sim: Any, config: Any) -> None:
    """Store ``config`` and wait until the services it restarts are up and idle again.

    The restart begins after the reply (as on the real DAQ): waiting for it first keeps the
    old driver's last idle push from passing for the new one's."""
    before = sim.core.generation
    assert 200 == config_set(sim, config).status_code
    wait_until(lambda: sim.core.generation > before, timeout=5)
    back_idle(sim)


@pytest.fixture
def sim(daq_driver_sim: Any) -> Any:
    """The session's persistent-build driver simulator, reset; writers give up after 0.3 s."""
    daq_driver_sim.core.settings.writer_timeout_s = 0.3
    return daq_driver_sim


@pytest.fixture
def old(daq_driver_sim_per_connection: Any) -> Any:
    """The session's per-connection (older build) driver simulator, reset."""
    return daq_driver_sim_per_connection


# -- Driver: ws://<host>:8080, any path, plain JSON text frames ---------------------------------


def test_any_path_serves_the_driver_with_json_text_frames(sim):
    """Any path is the driver; frames are JSON text, compact, keys in alphabetical order."""
    with ws(sim, "/whatever/path") as conn:
        raw = conn.recv(timeout=2)
    assert '{"status":"idle"}' == raw


# -- Requests -------------------------------------------------------------------------------------


def test_start_writes_path_prefix_and_n_image_and_ignores_start_id(sim, tmp_path):
    """start with path, file_prefix, n_image, writer_id and start_id writes <path>/<prefix><i>.h5 with n_image images."""
    with ws(sim) as conn:
        start(conn, tmp_path, file_prefix="scan_", n_image=6, writer_id=0, start_id=77)
        assert "file_saved" == statuses(frames(conn, "file_saved"))[-1]
    assert ["scan_0.h5", "scan_1.h5"] == sorted(p.name for p in tmp_path.iterdir())


def test_file_prefix_defaults_to_file_and_n_image_to_16777215(sim, tmp_path):
    """Without file_prefix the files are file<i>.h5; without n_image it records on (16777215) until a stop."""
    with ws(sim) as conn:
        start(conn, tmp_path)
        frames(conn, "recording")
        time.sleep(0.2)
        conn.send('{"command": "stop"}')
        raws = frames(conn, "file_saved")
    counts = [json.loads(r)["count"] for r in raws if '"saving_file"' in r]
    assert counts and 100 < counts[-1] < 16777215
    assert ["file0.h5", "file1.h5"] == sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "request_text",
    ['{"command": "start", "path": "/tmp", "n_image": "5"}', '{"command": "start", "path": 5}', "[1, 2]", '{"command": 7}'],
)
def test_a_wrongly_typed_request_crashes_the_driver(sim, request_text):
    """A string n_image, a non-string path, a JSON array, a non-text command: the driver crashes,
    open sessions drop, connections are refused, then it is back idle."""
    with ws(sim) as bystander, ws(sim) as conn:
        conn.send(request_text)
        assert closed(bystander) and closed(conn)
    back_idle(sim)


def test_stop_has_no_reply_and_is_seen_in_the_pushed_states(sim, tmp_path):
    """A stop is answered by nothing of its own: the pushes go stop (or saving_file), then file_saved."""
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=10**6)
        frames(conn, "recording")
        # stop and saving_file last long enough to be pushed, even on a loaded machine (writers
        # that answer late, within the driver's patience for them)
        sim.core.settings.writer_timeout_s = 3.0
        arm_faults(sim, slow_writers_s=0.3)
        conn.send('{"command":"stop"}')
        after = statuses(frames(conn, "file_saved"))
    assert set(after) <= {"recording", "stop", "saving_file", "file_saved"}
    assert {"stop", "saving_file"} & set(after)


def test_stop_acts_only_where_the_driver_records(sim, tmp_path):
    """A stop while idle changes nothing: the driver stays idle and the next start runs."""
    with ws(sim) as conn:
        conn.send('{"command":"stop"}')
        assert {"idle"} == set(statuses(frames(conn, timeout=0.4)))
        start(conn, tmp_path, n_image=3)
        assert "file_saved" in statuses(frames(conn, "file_saved"))


def test_a_stop_during_creating_file_is_lost(sim, tmp_path):
    """A stop that lands during creating_file is overwritten by waiting_for_first_image: it records on."""
    sim.core.settings.writer_timeout_s = 2.0  # well above the writers' 0.3 s
    arm_faults(sim, slow_writers_s=0.3, silent_detector=True)
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=5)
        frames(conn, "creating_file")
        conn.send('{"command":"stop"}')
        frames(conn, "waiting_for_first_image", timeout=3)
        arm_faults(sim, silent_detector=False)
        assert "recording" in statuses(frames(conn, "file_saved"))


# -- Replies and pushes -----------------------------------------------------------------------------


def test_counted_states_print_count_before_status(sim, tmp_path):
    """recording and saving_file come as {"count":N,"status":...}; the others as {"status":...}."""
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=40)
        raws = frames(conn, "file_saved")
    assert '{"status":"creating_file"}' in raws or '{"status":"waiting_for_first_image"}' in raws
    assert any(r.startswith('{"count":') and r.endswith(',"status":"recording"}') for r in raws)
    assert '{"count":40,"status":"saving_file"}' in raws and raws[-1] == '{"status":"file_saved"}'


def test_a_start_while_busy_is_rejected_and_the_connection_stays_open(sim, tmp_path):
    """{"reason":"driver is busy!","status":"rejected"}; the session keeps its pushes."""
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=10**6)
        frames(conn, "recording")
        start(conn, tmp_path, file_prefix="again_")
        raws = frames(conn, "rejected")
        assert '{"reason":"driver is busy!","status":"rejected"}' == raws[-1]
        assert "recording" in statuses(frames(conn, timeout=0.3))


def test_text_that_is_not_json_is_an_error_and_the_connection_stays_open(sim):
    """{"reason":"Invalid command! <raw text>","status":"error"}; pushes go on."""
    with ws(sim) as conn:
        conn.send("hello driver")
        raws = frames(conn, "error")
        assert '{"reason":"Invalid command! hello driver","status":"error"}' == raws[-1]
        assert "idle" in statuses(frames(conn, timeout=0.3))


def test_json_that_is_not_a_valid_start_while_idle_is_an_error_and_closes(sim):
    """"Invalid command! expected: start with path parameter, received: <raw>", then the server closes."""
    with ws(sim) as conn:
        conn.send('{"command":"start"}')
        raws = frames(conn, "error")
        expected = {"reason": 'Invalid command! expected: start with path parameter, received: {"command":"start"}', "status": "error"}
        assert expected == json.loads(raws[-1])
        assert closed(conn)


# -- State machine ------------------------------------------------------------------------------------


def test_states_go_idle_creating_waiting_recording_saving_file_saved_idle(sim, tmp_path):
    """The pushes of one acquisition follow the state machine; started and file_created never show."""
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=20)
        seen = statuses(frames(conn, "file_saved")) + statuses(frames(conn, "idle"))
    order = ["idle", "creating_file", "waiting_for_first_image", "recording", "saving_file", "file_saved", "idle"]
    collapsed = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert all(s in order for s in collapsed) and "started" not in seen and "file_created" not in seen
    assert [order.index(s) for s in collapsed[:-1]] == sorted(order.index(s) for s in collapsed[:-1])
    assert collapsed[-2:] == ["file_saved", "idle"]


def test_a_writer_that_does_not_answer_within_its_limit_is_an_error(sim, tmp_path):
    """A writer that does not answer its create within the limit (5 s; 0.3 s here): error, then idle."""
    arm_faults(sim, silent_writer=1)
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=3)
        began = time.monotonic()
        assert ["creating_file", "error"] == [s for s in statuses(frames(conn, "error")) if s != "idle"][-2:]
        assert time.monotonic() - began >= 0.25
        assert "idle" in statuses(frames(conn, "idle"))


def test_waiting_for_first_image_has_no_time_limit(sim, tmp_path):
    """With a detector that sends nothing the driver waits on; a stop ends it (saving_file, file_saved)."""
    arm_faults(sim, silent_detector=True)
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=3)
        frames(conn, "waiting_for_first_image")
        assert {"waiting_for_first_image"} == set(statuses(frames(conn, timeout=1.5)))
        conn.send('{"command":"stop"}')
        assert statuses(frames(conn, "file_saved"))[-1] == "file_saved"


# -- Connection model (current builds) ------------------------------------------------------------------


def test_a_new_session_hears_idle_within_about_a_tenth_of_a_second_and_every_100_ms(sim):
    """Pushes about every 100 ms, also while idle: the first within 0.2 s, about ten a second."""
    with ws(sim) as conn:
        began = time.monotonic()
        conn.recv(timeout=2)
        first = time.monotonic() - began
        n = len(frames(conn, timeout=1.0))
    assert first < 0.2 and 6 <= n <= 12, (first, n)


def test_a_change_is_pushed_at_once(sim, tmp_path):
    """A change does not wait for the next 100 ms tick: creating_file arrives within a few ms of the start."""
    # Writers that answer late hold creating_file long enough for a loaded machine's push
    # thread to see it (the driver pushes the state it finds, not every state it passed).
    sim.core.settings.writer_timeout_s = 3.0  # late writers, not failed ones
    arm_faults(sim, slow_writers_s=0.3)
    with ws(sim) as conn:
        frames(conn, "idle")
        began = time.monotonic()
        start(conn, tmp_path, n_image=3)
        frames(conn, "creating_file")
    assert time.monotonic() - began < 0.09


def test_an_outcome_is_pushed_once_then_idle(sim, tmp_path):
    """file_saved reaches the sessions once in all: it is turned into idle by the session that pushes it first."""
    with ws(sim) as one, ws(sim) as two:
        start(one, tmp_path, n_image=5)
        seen = statuses(frames(one, timeout=1.0))
        other = statuses(frames(two, timeout=0.2))
    assert seen.count("file_saved") <= 1 and other.count("file_saved") <= 1
    assert 1 <= seen.count("file_saved") + other.count("file_saved")
    assert "idle" == seen[-1] == other[-1]


def test_an_outcome_with_no_session_connected_is_kept_for_the_next_session(sim, tmp_path):
    """The session that started it is gone when it ends: the next session hears file_saved once, then idle."""
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=50)
        frames(conn, "recording")
    wait_until(lambda: sim.core.snapshot()[0] == DriverState.FILE_SAVED, timeout=5)
    with ws(sim) as conn:
        seen = statuses(frames(conn, timeout=0.5))
    assert "file_saved" == seen[0] and {"idle"} == set(seen[1:])


# -- Older builds: one connection per acquisition --------------------------------------------------------


def test_older_build_says_nothing_until_a_start(old):
    """An older build pushes nothing to a new connection: no frame in 0.5 s."""
    with ws(old) as conn:
        assert [] == frames(conn, timeout=0.5)


def test_older_build_pushes_every_second_and_closes_after_the_outcome(old, tmp_path):
    """After a start: states at least every second and on change; file_saved; the server closes."""
    old.core.settings.frame_rate = 5.0
    with ws(old) as conn:
        start(conn, tmp_path, n_image=8)
        raws = frames(conn, "file_saved", timeout=8)
        assert closed(conn)
    assert raws[-1] == '{"status":"file_saved"}' and any('"count"' in r for r in raws)


def test_older_build_rejects_a_busy_start_and_closes(old, tmp_path):
    """A start while busy: rejected "driver is busy!", then closed."""
    with ws(old) as first:
        start(first, tmp_path, n_image=10**6)
        frames(first, "recording", timeout=3)
        with ws(old) as second:
            start(second, tmp_path, file_prefix="b_")
            assert '{"reason":"driver is busy!","status":"rejected"}' == second.recv(timeout=2)
            assert closed(second)


def test_older_build_stop_all_and_status_are_one_shot(old, tmp_path):
    """status answers the state and closes; stop_all stops, answers success and closes."""
    with ws(old) as first:
        start(first, tmp_path, n_image=10**6)
        frames(first, "recording", timeout=3)
        with ws(old) as probe:
            probe.send('{"command":"status"}')
            assert '{"status":"recording"}' == probe.recv(timeout=2) and closed(probe)
        with ws(old) as stopper:
            stopper.send('{"command":"stop_all"}')
            assert '{"status":"success"}' == stopper.recv(timeout=2) and closed(stopper)
        assert "file_saved" == statuses(frames(first, "file_saved", timeout=5))[-1]


# -- Files ------------------------------------------------------------------------------------------------


def test_one_file_per_writer_images_round_robin_with_data_and_metadata(sim, tmp_path):
    """W files <prefix><i>.h5; image k goes to writer k mod W; /<detector>/data and the metadata
    compound of image_id and status, trimmed to the images written."""
    with ws(sim) as conn:
        start(conn, tmp_path, file_prefix="rr_", n_image=9)
        frames(conn, "file_saved")
    ids = []
    for i, n in ((0, 5), (1, 4)):
        with h5py.File(tmp_path / f"rr_{i}.h5") as h5:
            data, meta = h5[f"{DETECTOR}/data"], h5[f"{DETECTOR}/metadata"]
            assert ((n, 256, 256), "uint16") == (data.shape, str(data.dtype))
            assert ("image_id", "status") == meta.dtype.names and n == meta.shape[0]
            ids.append(list(meta["image_id"]))
    merged = [ids[k % 2][k // 2] for k in range(9)]
    assert merged == list(range(merged[0], merged[0] + 9)) and merged[0] > 0


def test_a_file_with_a_single_image_keeps_its_padding(sim, tmp_path):
    """Datasets grow by whole chunks and are trimmed only past one image: count by non-zero image_id."""
    with ws(sim) as conn:
        start(conn, tmp_path, file_prefix="one_", n_image=3)
        frames(conn, "file_saved")
    with h5py.File(tmp_path / "one_1.h5") as h5:
        meta = h5[f"{DETECTOR}/metadata"][:]
        assert h5[f"{DETECTOR}/data"].shape[0] > 1 and len(meta) > 1
        assert 1 == int((meta["image_id"] != 0).sum())


def test_a_missing_folder_ends_in_error(sim, tmp_path):
    """path must exist: the writers cannot create their files, creating_file -> error -> idle, no file."""
    with ws(sim) as conn:
        start(conn, tmp_path / "missing", n_image=3)
        assert "error" == statuses(frames(conn, "error"))[-1]
        assert "idle" == statuses(frames(conn, "idle"))[-1]
    assert not (tmp_path / "missing").exists()


# -- Hazards ----------------------------------------------------------------------------------------------


def test_after_a_failed_start_the_writers_stay_one_answer_behind(sim, tmp_path):
    """A missing folder with two writers leaves writer 1's failure queued: the next, valid start fails too."""
    with ws(sim) as conn:
        start(conn, tmp_path / "missing", n_image=3)
        frames(conn, "error")
        frames(conn, "idle")
        start(conn, tmp_path, file_prefix="next_", n_image=3)
        assert "error" == [s for s in statuses(frames(conn, "error")) if s != "idle"][-1]


def test_a_file_name_cannot_be_reused_after_a_failure(sim, tmp_path):
    """A writer keeps its file open after a failed acquisition: the same folder and prefix fails
    again for that reason alone, another prefix works."""
    arm_faults(sim, silent_writer=1)
    with ws(sim) as conn:
        start(conn, tmp_path, file_prefix="keep_", n_image=3)
        frames(conn, "error")
        sim.core.writers[1].silent = False  # writer 1 answers again; writer 0 holds keep_0.h5 open
        frames(conn, "idle")
        start(conn, tmp_path, file_prefix="keep_", n_image=3)
        assert "error" == [s for s in statuses(frames(conn, "error")) if s != "idle"][-1]
        frames(conn, "idle")
        start(conn, tmp_path, file_prefix="other_", n_image=3)
        assert "file_saved" == statuses(frames(conn, "file_saved"))[-1]


def test_a_writer_failing_to_confirm_wedges_the_driver_until_a_config_is_stored(sim, tmp_path):
    """No answer to the last image's confirmation: the driver stays in stop, rejects every start;
    storing the (unchanged) config restarts the services and it is idle again."""
    with ws(sim) as conn:
        start(conn, tmp_path, file_prefix="w_", n_image=10**6)
        frames(conn, "recording")
        arm_faults(sim, silent_writer=0)
        conn.send('{"command":"stop"}')
        frames(conn, "stop")
        assert {"stop"} == set(statuses(frames(conn, timeout=1.0)))
        start(conn, tmp_path, file_prefix="w2_")
        assert "rejected" == statuses(frames(conn, "rejected"))[-1]
        assert 200 == config_set(sim, config_get(sim).json()).status_code
        assert closed(conn)
    back_idle(sim)


def test_the_first_recording_push_can_say_count_zero(sim, tmp_path):
    """The state changes before the first image is counted: a session can see {"count":0,"status":"recording"}."""
    sim.core.settings.frame_rate = 20.0
    firsts = []
    with ws(sim) as conn:
        for attempt in range(5):
            start(conn, tmp_path, file_prefix=f"c{attempt}_", n_image=2)
            firsts.append(frames(conn, "recording")[-1])
            frames(conn, "file_saved")
            frames(conn, "idle")
            if firsts[-1] == '{"count":0,"status":"recording"}':
                break
    assert '{"count":0,"status":"recording"}' in firsts


def test_a_config_without_number_of_writers_crashes_the_driver_at_the_first_image(sim, tmp_path):
    """number_of_writers absent means 0 writers: the start runs, the first image crashes the driver."""
    config = {k: v for k, v in config_get(sim).json().items() if k != "number_of_writers"}
    stored_and_back(sim, config)
    with ws(sim) as conn:
        start(conn, tmp_path, n_image=3)
        assert closed(conn)
    back_idle(sim)


# -- Config REST -----------------------------------------------------------------------------------------


def test_get_config_is_the_bare_config(sim):
    """GET /api/config/get?user=<name>: the whole config, no envelope."""
    reply = config_get(sim)
    assert (200, DEFAULT_DRIVER_CONFIG) == (reply.status_code, reply.json())


def test_get_config_404_and_500(sim):
    """404 {"detail":"Configuration file not found"}; 500 {"detail":"Error decoding JSON file"}."""
    path = sim.config_path
    with open(path, "w") as handle:
        handle.write("{not json")
    assert (500, {"detail": "Error decoding JSON file"}) == (config_get(sim).status_code, config_get(sim).json())
    import os

    os.remove(path)
    assert (404, {"detail": "Configuration file not found"}) == (config_get(sim).status_code, config_get(sim).json())
    assert 404 == config_set(sim, DEFAULT_DRIVER_CONFIG).status_code


def test_set_config_stores_the_whole_config(sim):
    """200 {"message":"Configuration updated and synchronized successfully"}; GET shows it as sent."""
    config = {**DEFAULT_DRIVER_CONFIG, "bit_depth": 8, "log_level": "debug"}
    reply = config_set(sim, config)
    assert (200, {"message": "Configuration updated and synchronized successfully"}) == (reply.status_code, reply.json())
    assert config == config_get(sim).json()


def test_detector_name_or_type_cannot_be_changed(sim):
    """400 {"detail":"Detector name or detector type cannot be changed."}, also for a document without them."""
    for body in ({**DEFAULT_DRIVER_CONFIG, "detector_type": "gigafrost"}, {"bit_depth": 8}):
        reply = config_set(sim, body)
        assert (400, {"detail": "Detector name or detector type cannot be changed."}) == (reply.status_code, reply.json())
    assert DEFAULT_DRIVER_CONFIG == config_get(sim).json()


def test_a_schema_error_is_400_with_its_text(sim):
    """A field of the wrong type: 400 with the schema error."""
    reply = config_set(sim, {**DEFAULT_DRIVER_CONFIG, "bit_depth": "abc"})
    assert 400 == reply.status_code and reply.json()["detail"].startswith("'abc' is not of type 'integer'")


def test_a_secondary_server_that_fails_is_500_but_the_config_is_stored(sim):
    """500 {"detail":"Failed to synchronize with the secondary server"}; stored here all the same."""
    arm_faults(sim, secondary_fails=True)
    config = {**DEFAULT_DRIVER_CONFIG, "bit_depth": 32}
    reply = config_set(sim, config)
    assert (500, {"detail": "Failed to synchronize with the secondary server"}) == (reply.status_code, reply.json())
    assert config == config_get(sim).json()


def test_without_user_fastapi_answers_422(sim):
    """No ?user=: FastAPI's 422 with its detail list."""
    for reply in (config_get(sim, user=None), config_set(sim, DEFAULT_DRIVER_CONFIG, user=None)):
        assert 422 == reply.status_code and isinstance(reply.json()["detail"], list)


def test_a_partial_document_is_stored_and_breaks_the_services(sim):
    """Nothing is merged: a document without a core field is stored as it is; the services do not come back."""
    partial = {k: v for k, v in DEFAULT_DRIVER_CONFIG.items() if k != "bit_depth"}
    assert 200 == config_set(sim, partial).status_code
    assert partial == config_get(sim).json()
    time.sleep(3 * sim.core.settings.restart_s)
    assert refused(sim)
    assert 200 == config_set(sim, DEFAULT_DRIVER_CONFIG).status_code
    back_idle(sim)


def test_a_stored_config_restarts_the_services(sim):
    """Open sessions drop, connections are refused meanwhile, then the driver accepts and pushes idle."""
    with ws(sim) as conn:
        frames(conn, "idle")
        assert 200 == config_set(sim, DEFAULT_DRIVER_CONFIG).status_code
        assert closed(conn, timeout=2)
    assert refused(sim)
    back_idle(sim)


def test_a_slow_restart_keeps_connections_refused_for_its_time(sim):
    """The restart_s fault: the services need that long to come back."""
    arm_faults(sim, restart_s=1.0)
    began = time.monotonic()
    assert 200 == config_set(sim, DEFAULT_DRIVER_CONFIG).status_code
    wait_until(lambda: refused(sim), timeout=2)
    back_idle(sim)
    assert time.monotonic() - began >= 1.0


def test_the_stored_config_decides_the_number_of_writers(sim, tmp_path):
    """number_of_writers of the config the services restarted with: three writers write three files."""
    assert 200 == config_set(sim, {**DEFAULT_DRIVER_CONFIG, "number_of_writers": 3}).status_code
    back_idle(sim)
    with ws(sim) as conn:
        start(conn, tmp_path, file_prefix="three_", n_image=6)
        frames(conn, "file_saved")
    assert ["three_0.h5", "three_1.h5", "three_2.h5"] == sorted(p.name for p in tmp_path.iterdir())
