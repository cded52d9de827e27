"""DetDriverClient against daq-sim's driver generation (both driver builds), over real sockets.

A small stand-in WebSocket server on 127.0.0.1 is used only where the simulator cannot
produce the fault: malformed frames, a server that stalls its handshake, and the wire text
of a start.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List

import h5py
import pytest
import requests

from daq_runner import DetDriverClient, DriverBusy
from daq_runner._deadline import Deadline, Interrupted, bounded
from daq_runner.det_driver_protocol import ACQUISITION_STATES, DriverBuild, DriverState
from daq_runner.exceptions import (
    DaqHTTPError,
    DaqProtocolError,
    DaqTimeoutError,
    DaqTransportError,
    DeadlineExceeded,
    DeploymentError,
    StdDaqAdminException,
    WriteOutcomeUnknown,
)
from daq_runner.sim.driver import DEFAULT_DRIVER_CONFIG
from daq_runner.testing import arm_faults

from .conftest import wait_until

DETECTOR = DEFAULT_DRIVER_CONFIG["detector_name"]
LONG = 10**6


@pytest.fixture(params=["persistent", "per-connection"])
def sim(request: Any) -> Any:
    """The session's driver simulator of each build, reset; writers give up after 0.3 s."""
    name = "daq_driver_sim" if request.param == "persistent" else "daq_driver_sim_per_connection"
    simulator = request.getfixturevalue(name)
    simulator.core.settings.writer_timeout_s = 0.3
    return simulator


@pytest.fixture
def current(daq_driver_sim: Any) -> Any:
    """The persistent-build simulator only; writers give up after 0.3 s."""
    daq_driver_sim.core.settings.writer_timeout_s = 0.3
    return daq_driver_sim


@pytest.fixture
def client(request: Any) -> Iterator[DetDriverClient]:
    """A client of whichever simulator the test uses."""
    target = request.getfixturevalue("sim" if "sim" in request.fixturenames else "current")
    with DetDriverClient(target.ws_url, target.url, timeout=2.0, user="tester") as daq:
        yield daq


def images_in(paths: Any) -> int:
    """Images in the files, counted by metadata rows with a non-zero image_id."""
    total = 0
    for path in paths:
        with h5py.File(path) as h5:
            total += int((h5[f"{DETECTOR}/metadata"][:]["image_id"] != 0).sum())
    return total


def later(seconds: float, action: Callable[[], Any]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


@contextmanager
def standin(handler: Callable[[Any], None]) -> Iterator[str]:
    """A stand-in WebSocket server on 127.0.0.1 running ``handler(connection)``; yields its URL."""
    from websockets.sync.server import serve

    server = serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
    finally:
        server.shutdown()
        thread.join(5)


# -- connect and the build -----------------------------------------------------------------


def test_connect_detects_the_build(sim, client):
    """A current build pushes idle within the detection window; an older one says nothing."""
    began = time.monotonic()
    assert DriverBuild(sim.core.settings.build) == client.connect()
    took = time.monotonic() - began
    assert took < 0.3 if sim.core.settings.build == "persistent" else 0.3 <= took < 1.0


def test_state_is_idle_on_both_builds(sim, client):
    """state(): the next push of a current build, the answer to status of an older one."""
    status = client.state()
    assert DriverState.IDLE == status.state and abs(time.time() - status.at) < 2


def test_pushes_come_about_ten_a_second_with_arrival_times(current, client):
    """pushes(): the stream of states, each with its arrival time (wall clock and monotonic)."""
    seen = list(client.pushes(timeout=0.55))
    assert 3 <= len(seen) <= 7
    assert all(b.monotonic > a.monotonic and b.at >= a.at for a, b in zip(seen, seen[1:]))


# -- start, follow, stop ---------------------------------------------------------------------


def test_start_and_follow_to_file_saved(sim, client, tmp_path):
    """An acquisition ends file_saved with the last saving_file count = n_image, in W files."""
    acquisition = client.start(str(tmp_path), "scan_", n_image=25)
    assert acquisition.states and acquisition.states[0].state in ACQUISITION_STATES
    client.follow(acquisition, timeout=10)
    assert ("file_saved", 25) == (acquisition.outcome, acquisition.count)
    files = acquisition.files(2)
    assert all(os.path.exists(f) for f in files) and 25 == images_in(files)
    record = json.loads(json.dumps(acquisition.to_dict()))
    assert record["request"] == {"command": "start", "path": str(tmp_path), "file_prefix": "scan_", "n_image": 25}
    assert [s["at"] for s in record["states"]] == sorted(s["at"] for s in record["states"])


def test_stop_is_confirmed_by_the_pushed_states(sim, client, tmp_path):
    """stop() returns a state where the stop has acted; the acquisition then ends with fewer images."""
    acquisition = client.start(str(tmp_path), "long_", n_image=LONG)
    wait_until(lambda: sim.core.snapshot()[0] == DriverState.RECORDING, timeout=5)
    confirmed = client.stop(acquisition, timeout=5)
    assert confirmed.state in (DriverState.STOP, DriverState.SAVING_FILE, DriverState.FILE_SAVED, DriverState.IDLE)
    client.follow(acquisition, timeout=10)
    written = images_in(acquisition.files(2))
    assert "file_saved" == acquisition.outcome and 0 < acquisition.last_count <= written < LONG
    # saving_file is a sample like any push: when it was seen, its count is what the files hold.
    assert acquisition.count in (None, written)


def test_a_stop_during_creating_file_is_not_lost(sim, client, tmp_path):
    """creating_file lasts (slow writers): stop() waits it out and stops the recording that follows."""
    sim.core.settings.writer_timeout_s = 2.0  # well above the writers' 0.3 s
    arm_faults(sim, slow_writers_s=0.3, silent_detector=True)
    acquisition = client.start(str(tmp_path), "slow_", n_image=LONG)
    assert DriverState.CREATING_FILE == sim.core.snapshot()[0]
    client.stop(acquisition, timeout=5)
    arm_faults(sim, silent_detector=False)
    client.follow(acquisition, timeout=10)
    assert "file_saved" == acquisition.outcome and acquisition.last_count < LONG


def test_a_busy_driver_refuses_with_driver_busy_and_nothing_more_starts(sim, client, tmp_path):
    """A start while another acquisition runs: DriverBusy "driver is busy!"; one start taken in all."""
    first = client.start(str(tmp_path), "first_", n_image=LONG)
    with DetDriverClient(sim.ws_url, sim.url, timeout=2.0) as other:
        with pytest.raises(DriverBusy, match="driver is busy!"):
            other.start(str(tmp_path), "second_", n_image=5)
    assert 1 == sim.core.starts
    client.stop(first)
    assert "file_saved" == client.follow(first, timeout=10).outcome


# -- whose pushes: another client's acquisition around our start ---------------------------------

ANSWER = "the answer to the marker"
IDLE, CREATING, WAITING, SAVED, ERROR = ('{"status":"%s"}' % s for s in ("idle", "creating_file", "waiting_for_first_image", "file_saved", "error"))


def counted(state: str, count: int) -> str:
    return json.dumps({"count": count, "status": state}, sort_keys=True)


def scripted(after_start: List[str]) -> Callable[[Any], None]:
    """A stand-in driver: idle, then after the start and its marker exactly ``after_start``
    (``ANSWER``: where its answer to the marker goes), then silence."""

    def driver(connection: Any) -> None:
        connection.send(IDLE)
        connection.recv()  # the start
        marker = connection.recv()
        for frame in after_start:
            connection.send(json.dumps({"reason": f"Invalid command! {marker}", "status": "error"}) if frame == ANSWER else frame)
        for _ in connection:
            pass

    return driver


def test_a_refusal_behind_another_acquisitions_pushes_is_driver_busy():
    """rejected after pushes of another acquisition, before the answer to the marker: DriverBusy, none of them ours."""
    with standin(scripted([counted("recording", 5), counted("saving_file", 5), '{"reason":"driver is busy!","status":"rejected"}', ANSWER])) as url:
        with DetDriverClient(url) as daq, pytest.raises(DriverBusy, match="driver is busy!"):
            daq.start("/data", "p_", 3)


def test_another_acquisitions_end_before_the_take_is_neither_our_count_nor_our_outcome():
    """saving_file 200, file_saved, idle before the answer: another's (foreign); ours follows with its own count."""
    ours = [CREATING, WAITING, counted("recording", 3), counted("saving_file", 3), SAVED, IDLE]
    with standin(scripted([counted("saving_file", 200), SAVED, IDLE, ANSWER] + ours)) as url, DetDriverClient(url) as daq:
        acquisition = daq.follow(daq.start("/data", "p_", 3), timeout=5)
    assert ("file_saved", 3, None) == (acquisition.outcome, acquisition.count, acquisition.doubt)
    assert [(DriverState.SAVING_FILE, 200), (DriverState.FILE_SAVED, None)] == [(s.state, s.count) for s in acquisition.foreign]
    assert DriverState.CREATING_FILE == acquisition.states[0].state


def test_a_late_sample_of_another_outcome_after_the_answer_waits_for_what_follows():
    """An error as the first push after the answer may have been sampled before the take: a new acquisition that follows makes it another's."""
    ours = [CREATING, WAITING, counted("recording", 3), counted("saving_file", 3), SAVED, IDLE]
    with standin(scripted([ANSWER, ERROR] + ours)) as url, DetDriverClient(url) as daq:
        acquisition = daq.follow(daq.start("/data", "p_", 3), timeout=5)
    assert ("file_saved", 3, None) == (acquisition.outcome, acquisition.count, acquisition.doubt)
    assert [DriverState.ERROR] == [s.state for s in acquisition.foreign]


def test_an_end_nothing_surely_ours_came_before_is_taken_once_nothing_follows_it():
    """creating_file before the answer, error as the first push after it, then idle only: the end, once SETTLE_S passed (the only acquisition heard)."""
    from daq_runner.det_driver import SETTLE_S

    with standin(scripted([CREATING, ANSWER, ERROR, IDLE, IDLE])) as url, DetDriverClient(url) as daq:
        began = time.monotonic()
        acquisition = daq.follow(daq.start("/data", "p_", 3), timeout=5)
    assert ("error", None, []) == (acquisition.outcome, acquisition.doubt, acquisition.foreign)
    assert SETTLE_S <= time.monotonic() - began < SETTLE_S + 2


def test_an_unsure_end_after_another_acquisition_was_heard_is_taken_with_its_doubt():
    """Another acquisition ended before the answer, ours showed creating_file, then an error as the first push after the answer and nothing more: taken, with a doubt."""
    script = [counted("saving_file", 200), SAVED, CREATING, ANSWER, ERROR, IDLE, IDLE]
    with standin(scripted(script)) as url, DetDriverClient(url) as daq:
        acquisition = daq.follow(daq.start("/data", "p_", 3), timeout=5)
    assert ("error", [DriverState.SAVING_FILE, DriverState.FILE_SAVED]) == (acquisition.outcome, [s.state for s in acquisition.foreign])
    assert "cannot be told apart from that one's" in acquisition.doubt


def test_a_whole_acquisition_pushed_before_the_answer_is_ours_when_nothing_follows():
    """Under load the driver may answer the marker after ours was pushed to its end: one acquisition heard, nothing after it: ours, without doubt."""
    ours = [CREATING, WAITING, counted("recording", 3), counted("saving_file", 3), SAVED, IDLE]
    with standin(scripted(ours + [ANSWER, IDLE, IDLE])) as url, DetDriverClient(url) as daq:
        acquisition = daq.follow(daq.start("/data", "p_", 3), timeout=5)
    assert ("file_saved", 3, None, []) == (acquisition.outcome, acquisition.count, acquisition.doubt, acquisition.foreign)


def test_the_answer_to_the_marker_is_not_taken_for_the_drivers_state_by_a_stop():
    """A stop right after a start whose last frame read was the answer to its marker: sent only once the driver left creating_file."""
    pushed: List[str] = []
    stops: List[str] = []

    def driver(connection: Any) -> None:
        connection.send(IDLE)
        connection.recv()
        marker = connection.recv()
        for frame in (CREATING, json.dumps({"reason": f"Invalid command! {marker}", "status": "error"})):
            connection.send(frame)
        pushed.append("creating_file")

        def stops_heard() -> None:
            for message in connection:
                stops.append(pushed[-1])  # the state pushed last when the stop came
                connection.send('{"status":"stop"}')

        threading.Thread(target=stops_heard, daemon=True).start()
        for state in ("creating_file",) * 3 + ("waiting_for_first_image",) * 20:
            time.sleep(0.05)
            pushed.append(state)
            connection.send('{"status":"%s"}' % state)

    with standin(driver) as url, DetDriverClient(url) as daq:
        acquisition = daq.start("/data", "p_", 3)
        assert DriverState.STOP == daq.stop(acquisition, timeout=3).state
    assert stops and stops[0] == "waiting_for_first_image"


@pytest.mark.parametrize(
    "before, after, anew",
    [
        (("saving_file", 200), ("creating_file", None), True),
        (("recording", 200), ("recording", 3), True),
        (("saving_file", 5), ("recording", 5), True),
        (("creating_file", None), ("recording", 0), False),
        (("recording", 3), ("stop", None), False),
        (("stop", None), ("recording", 4), False),  # the first image turns a stop back into recording
        (("recording", 4), ("saving_file", 4), False),
    ],
)
def test_a_state_that_cannot_follow_within_one_acquisition_begins_another(before, after, anew):
    """began_anew: a lower rank or a count that fell; a stop has no rank."""
    from daq_runner.det_driver_protocol import began_anew

    assert anew == began_anew((DriverState(before[0]), before[1]), (DriverState(after[0]), after[1]))


@pytest.mark.parametrize(
    "args, message",
    [
        (("relative/dir",), "absolute"),
        ((5,), "path must be a folder as text"),
        (("/data", "a/b"), "file_prefix must not contain"),
        (("/data", "p_", "5"), "n_image must be a whole number"),
        (("/data", "p_", True), "n_image must be a whole number"),
        (("/data", "p_", 0), "n_image must be in"),
        (("/data", "p_", 5, "12345"), "writer_id must be a whole number"),
        (("/data", "p_", 5, -1), "writer_id must be in"),
    ],
)
def test_a_wrongly_typed_start_is_refused_before_anything_is_sent(args, message):
    """A wrongly typed start can crash the driver: ValueError, and no connection is even tried."""
    with DetDriverClient("ws://127.0.0.1:9") as daq:  # nothing listens: a connection attempt would fail otherwise
        with pytest.raises(ValueError, match=message):
            daq.start(*args)


def test_numbers_go_out_as_json_numbers_and_the_start_exactly_once(tmp_path):
    """The start on the wire: n_image and writer_id JSON numbers, sent once."""
    received: List[str] = []

    def driver(connection: Any) -> None:
        connection.send('{"status":"idle"}')
        for message in connection:
            received.append(message)
            try:
                json.loads(message)
            except ValueError:  # the marker after the start: answered as the driver answers text
                connection.send(json.dumps({"reason": f"Invalid command! {message}", "status": "error"}))
                continue
            connection.send('{"status":"creating_file"}')

    with standin(driver) as url, DetDriverClient(url) as daq:
        acquisition = daq.start("/data/e1", "p_", 7, 1234)
    assert 2 == len(received) and received[1].startswith("daq-runner: marks the start ")  # the start, then its marker
    assert {"command": "start", "path": "/data/e1", "file_prefix": "p_", "n_image": 7, "writer_id": 1234} == json.loads(received[0])
    assert (DriverState.CREATING_FILE, None, []) == (acquisition.last_state, acquisition.doubt, acquisition.foreign)


def test_an_error_reply_to_a_start_is_a_refusal_with_the_drivers_text():
    """The driver's error reply (an invalid start) and the close after it: StdDaqAdminException with its text."""
    reason = "Invalid command! expected: start with path parameter, received: {}"

    def driver(connection: Any) -> None:
        connection.send('{"status":"idle"}')
        connection.recv()
        connection.send(json.dumps({"reason": reason, "status": "error"}))
        connection.close()

    with standin(driver) as url, DetDriverClient(url) as daq:
        with pytest.raises(StdDaqAdminException, match="start refused: Invalid command! expected") as caught:
            daq.start("/data", "p_", 3)
    assert not isinstance(caught.value, DriverBusy) and url in str(caught.value)


def test_a_missing_folder_ends_in_error(sim, client, tmp_path):
    """The writers cannot create their files: the outcome is error."""
    acquisition = client.start(str(tmp_path / "missing"), "x_", n_image=3)
    assert "error" == client.follow(acquisition, timeout=5).outcome


def test_a_start_whose_session_drops_is_outcome_unknown_and_never_sent_again(sim, client, tmp_path):
    """The session drops right after the driver took the start: WriteOutcomeUnknown; it ran, sent once."""
    arm_faults(sim, drop_on_start=True)
    with pytest.raises(WriteOutcomeUnknown, match="may have started") as caught:
        client.start(str(tmp_path), "lost_", n_image=20)
    assert sim.ws_url in str(caught.value)
    wait_until(lambda: (tmp_path / "lost_0.h5").exists(), timeout=5)
    assert DriverState.IDLE == client.wait_for(lambda s: s.state == DriverState.IDLE, timeout=5).state
    assert 1 == sim.core.starts


def test_a_start_whose_reply_was_lost_is_followed_on_a_new_session(current, client, tmp_path):
    """A record of the lost start (no session of its own) followed with reconnect: a current build's
    states come on a new session, to file_saved; ``connected`` says whether a session is open."""
    from daq_runner.det_driver import DriverAcquisition
    from daq_runner.det_driver_protocol import start_command

    arm_faults(current, drop_on_start=True)
    command = start_command(str(tmp_path), "lost_", 200)
    sent = time.time()
    with pytest.raises(WriteOutcomeUnknown):
        client.start(str(tmp_path), "lost_", n_image=200)
    acquisition = DriverAcquisition(current.ws_url, DriverBuild.PERSISTENT, command, sent)
    assert not acquisition.connected
    client.follow(acquisition, timeout=10, reconnect=True)
    assert ("file_saved", 200, 1) == (acquisition.outcome, acquisition.count, acquisition.reconnects)
    assert 1 == current.core.starts


# -- sessions that drop -------------------------------------------------------------------------


def test_a_dropped_session_is_a_transport_error_naming_the_url(current, client, tmp_path):
    """follow() without reconnect: the drop is a DaqTransportError naming the driver's URL, at once."""
    acquisition = client.start(str(tmp_path), "d_", n_image=LONG)
    later(0.2, lambda: arm_faults(current, drop_sessions=True))
    began = time.monotonic()
    with pytest.raises(DaqTransportError, match=current.ws_url.replace(".", r"\.")):
        client.follow(acquisition, timeout=10)
    assert time.monotonic() - began < 1.5
    client.stop()


def test_follow_with_reconnect_gets_the_outcome_kept_for_the_next_session(current, client, tmp_path):
    """Dropped while no session is connected at the end: the reconnected session hears the kept outcome."""
    acquisition = client.start(str(tmp_path), "k_", n_image=LONG)
    wait_until(lambda: current.core.snapshot()[0] == DriverState.RECORDING, timeout=5)
    arm_faults(current, drop_sessions=True)
    current.core.stop()
    wait_until(lambda: current.core.snapshot()[0] == DriverState.FILE_SAVED, timeout=5)
    client.follow(acquisition, timeout=5, reconnect=True)
    assert ("file_saved", 1) == (acquisition.outcome, acquisition.reconnects)


def test_an_outcome_another_session_took_ends_as_idle(current, client, tmp_path):
    """Back to idle after having seen the acquisition, without its outcome: outcome "idle"."""
    acquisition = client.start(str(tmp_path), "o_", n_image=LONG)
    arm_faults(current, drop_sessions=True)
    with pytest.raises(DaqTransportError):
        client.follow(acquisition, timeout=5)
    with DetDriverClient(current.ws_url, current.url) as other:
        other.stop()
        other.wait_for(lambda s: s.state == DriverState.IDLE, timeout=5)
    client.follow(acquisition, timeout=5, reconnect=True)
    assert "idle" == acquisition.outcome


def test_an_older_build_is_followed_by_status_after_a_drop(daq_driver_sim_per_connection, tmp_path):
    """Per-connection build: after the drop, status answers until the driver is idle again."""
    sim = daq_driver_sim_per_connection
    with DetDriverClient(sim.ws_url, sim.url, timeout=2.0) as daq:
        acquisition = daq.start(str(tmp_path), "p_", n_image=LONG)
        wait_until(lambda: sim.core.snapshot()[0] == DriverState.RECORDING, timeout=5)
        arm_faults(sim, drop_sessions=True)
        later(0.5, sim.core.stop)
        daq.follow(acquisition, timeout=10, reconnect=True)
    assert acquisition.outcome in ("file_saved", "idle") and acquisition.reconnects == 1


def test_a_restart_during_a_wait_is_a_transport_error_then_ready_again(current, client):
    """A stored config restarts the services during wait_for: the drop is reported at once; wait_until_ready rides it out."""
    later(0.2, lambda: requests.post(current.url + "/api/config/set", params={"user": "t"}, json=DEFAULT_DRIVER_CONFIG, timeout=5))
    began = time.monotonic()
    with pytest.raises(DaqTransportError, match="while waiting for a state"):
        client.wait_for(lambda s: s.state == DriverState.RECORDING, timeout=10)
    assert time.monotonic() - began < 2
    assert DriverState.IDLE == client.wait_until_ready(timeout=10).state


def test_wait_until_ready_waits_out_a_slow_restart(current, client):
    """Connections refused for the restart's time: wait_until_ready returns idle once the driver is back."""
    arm_faults(current, restart_s=1.0)
    requests.post(current.url + "/api/config/set", params={"user": "t"}, json=DEFAULT_DRIVER_CONFIG, timeout=5)
    wait_until(lambda: not current.core.up, timeout=2)  # the restart follows the reply
    stages: List[str] = []
    began = time.monotonic()
    status = client.wait_until_ready(timeout=10, on_progress=lambda stage, elapsed: stages.append(stage))
    assert DriverState.IDLE == status.state and time.monotonic() - began >= 0.7
    assert any("refuses connections" in stage for stage in stages)


# -- bounds and cancellation -----------------------------------------------------------------------


def test_follow_ends_at_its_timeout_naming_the_last_state(current, client, tmp_path):
    """A long acquisition: DaqTimeoutError after the timeout, naming the last state; DeadlineExceeded under a bound."""
    acquisition = client.start(str(tmp_path), "t_", n_image=LONG)
    began = time.monotonic()
    with pytest.raises(DaqTimeoutError, match="last state recording") as caught:
        client.follow(acquisition, timeout=0.5)
    assert not isinstance(caught.value, DeadlineExceeded) and 0.5 <= time.monotonic() - began < 1.0
    with bounded(Deadline(0.3)), pytest.raises(DeadlineExceeded):
        client.follow(acquisition, timeout=5)
    client.stop(acquisition)


@pytest.mark.parametrize("what", ["follow", "wait_for"])
def test_a_cancel_ends_a_wait_within_a_fraction_of_a_second(sim, client, tmp_path, what):
    """The bound's cancel event ends follow() and wait_for() within 0.3 s (both builds)."""
    acquisition = client.start(str(tmp_path), "c_", n_image=LONG)
    cancel = threading.Event()
    later(0.3, cancel.set)
    began = time.monotonic()
    with bounded(Deadline(30, cancel=cancel)), pytest.raises(Interrupted):
        if what == "follow":
            client.follow(acquisition)
        else:
            client.wait_for(lambda s: False, timeout=30)
    assert time.monotonic() - began < 0.6
    client.stop(acquisition)


def test_a_stalled_handshake_ends_at_the_timeout_or_a_cancel():
    """A server that accepts TCP and never answers the upgrade: DaqTimeoutError at the timeout, Interrupted at a cancel."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with DetDriverClient(url, timeout=0.5) as daq:
            began = time.monotonic()
            with pytest.raises(DaqTimeoutError):
                daq.connect()
            assert time.monotonic() - began < 1.0
        cancel = threading.Event()
        later(0.2, cancel.set)
        with DetDriverClient(url, timeout=20) as daq:
            began = time.monotonic()
            with bounded(Deadline(30, cancel=cancel)), pytest.raises(Interrupted):
                daq.connect()
            assert time.monotonic() - began < 0.6
    finally:
        listener.close()


# -- shapes and errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ['{"status": 5}', "[1]", '{"status":"idle","count":-1}', '{"status":"dancing"}', "not json", b"\x00\x01", '{"count":true,"status":"recording"}'])
def test_a_malformed_frame_is_a_protocol_error_naming_the_url(frame):
    """Every frame is checked for shape: DaqProtocolError naming the URL."""

    def driver(connection: Any) -> None:
        connection.send(frame)
        for _ in connection:
            pass

    with standin(driver) as url, DetDriverClient(url) as daq:
        with pytest.raises(DaqProtocolError, match=url.replace(".", r"\.")):
            daq.state()


def test_an_http_server_is_not_taken_for_the_driver(current):
    """The config REST's port given as the WebSocket: DaqProtocolError "no std_det_driver WebSocket there"."""
    with DetDriverClient(current.url.replace("http://", "ws://")) as daq:
        with pytest.raises(DaqProtocolError, match="no std_det_driver WebSocket there"):
            daq.connect()


def test_errors_name_the_url_with_credentials_masked():
    """A refused connection: one line naming the URL, user and password shown as ***."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with DetDriverClient(f"ws://beamline:s3cret@127.0.0.1:{port}") as daq:
        with pytest.raises(DaqTransportError) as caught:
            daq.connect()
    message = str(caught.value)
    assert "s3cret" not in message and f"ws://***@127.0.0.1:{port}" in message and "\n" not in message


def test_urls_are_checked_when_given():
    """A ws URL that is not ws(s):// and a config URL that is not http(s):// are refused at once."""
    with pytest.raises(ValueError, match="not a ws://"):
        DetDriverClient("http://127.0.0.1:8080")
    with pytest.raises(ValueError, match="not an http"):
        DetDriverClient("ws://127.0.0.1:8080", "ws://127.0.0.1:5000")


# -- the config REST ---------------------------------------------------------------------------------


def test_update_config_stores_the_whole_config_and_waits_for_the_restart(sim, client):
    """update_config: GET, merge, POST the whole document, the session drops, the driver is back idle."""
    stages: List[str] = []
    change = client.update_config({"bit_depth": 8}, timeout=20, on_progress=lambda stage, elapsed: stages.append(stage))
    assert change.stored and {**DEFAULT_DRIVER_CONFIG, "bit_depth": 8} == change.config == client.get_config()
    assert DriverState.IDLE == change.ready.state and change.restart_s > 0
    assert "waiting for the services to stop" in stages and "ready" == stages[-1]
    again = client.update_config({"bit_depth": 8})
    assert (False, None) == (again.stored, again.restart_s)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"detector_name": "other"}, "cannot be changed"),
        ({"detector_type": "gigafrost"}, "cannot be changed"),
        ({"bitdepth": 16}, "unknown config field"),
        ({"bit_depth": "16"}, "must be an integer"),
        ({"bit_depth": 12}, "8, 16, 32"),
        ({"number_of_writers": 0}, "crash the driver"),
    ],
)
def test_update_config_refuses_before_sending(current, client, changes, message):
    """Immutable fields, unknown names, wrong types: ValueError, the config file untouched."""
    before = os.stat(current.config_path).st_mtime_ns
    with pytest.raises(ValueError, match=message):
        client.update_config(changes)
    assert before == os.stat(current.config_path).st_mtime_ns


def test_a_refusal_of_the_config_rest_is_an_admin_exception(current, client):
    """HTTP 400 (the service's schema) is StdDaqAdminException with its text."""
    with pytest.raises(StdDaqAdminException, match="Additional properties are not allowed"):
        client.update_config({"live_stream_configs": {"not-an-address": {"type": "periodic"}}})


def test_a_missing_config_file_is_an_http_error(current, client):
    """HTTP 404 "Configuration file not found": DaqHTTPError with the status and the detail."""
    os.remove(current.config_path)
    with pytest.raises(DaqHTTPError, match="Configuration file not found") as caught:
        client.get_config()
    assert 404 == caught.value.status_code


def test_a_secondary_server_that_fails_is_a_deployment_error(current, client):
    """HTTP 500 "Failed to synchronize with the secondary server": DeploymentError saying it was stored here."""
    arm_faults(current, secondary_fails=True)
    with pytest.raises(DeploymentError, match="secondary server was not synchronised"):
        client.update_config({"bit_depth": 32})
    assert 32 == client.get_config()["bit_depth"]


def test_restart_services_recovers_a_wedged_driver(current, client, tmp_path):
    """A writer that does not confirm its last image wedges the driver in stop: follow says so,
    starts are refused, restart_services brings it back and a start works."""
    acquisition = client.start(str(tmp_path), "w_", n_image=LONG)
    wait_until(lambda: current.core.snapshot()[0] == DriverState.RECORDING, timeout=5)
    arm_faults(current, silent_writer=0)
    client.stop(acquisition)
    with pytest.raises(DaqTimeoutError, match="wedged"):
        client.follow(acquisition, timeout=1.0)
    with pytest.raises(DriverBusy):
        client.start(str(tmp_path), "w2_", n_image=3)
    change = client.restart_services(timeout=20)
    assert change.stored and DriverState.IDLE == change.ready.state
    assert "file_saved" == client.follow(client.start(str(tmp_path), "w3_", n_image=3), timeout=5).outcome
