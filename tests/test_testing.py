"""daq_runner.testing: the in-process ScriptedDaq (its faults as the real client sees them, its
model against daq-sim's answers) and the helpers the plugin ships."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import requests

from daq_runner import protocol
from daq_runner.batch import load_batch_text
from daq_runner.exceptions import (
    DaqHTTPError,
    DaqProtocolError,
    DaqTimeoutError,
    StdDaqAdminException,
    WriteOutcomeUnknown,
    WriterNeedsRestart,
)
from daq_runner.testing import (
    ScriptedDaq,
    after,
    arm_faults,
    before,
    http_error,
    lost,
    malformed,
    needs_restart,
    refused,
    slow,
    stale,
    stream_entries,
    unreachable,
    wait_until,
)

WRITE, STATUS, STOP = protocol.WRITER_WRITE_ASYNC, protocol.WRITER_STATUS, protocol.WRITER_STOP


def test_the_plugin_loads_without_the_client_or_the_scripted_daq():
    """The pytest plugin is loaded by every session: requests and the scripted DAQ come only when used."""
    code = "import sys, daq_runner.testing as t; print('requests' in sys.modules, 'daq_runner._scripted' in sys.modules, t.ScriptedDaq.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert ["False", "False", "ScriptedDaq"] == out


def test_the_plugin_names_every_public_name_of_the_scripted_daq_and_no_other():
    """daq_runner.testing re-exports the in-process names lazily from a list of its own: the two lists agree."""
    import daq_runner._scripted as scripted
    import daq_runner.testing as testing

    assert sorted(scripted.__all__) == sorted(testing._SCRIPTED)
    assert all(getattr(testing, name) is getattr(scripted, name) for name in scripted.__all__)


def test_a_batch_runs_on_the_scripted_daq_in_milliseconds_without_a_socket(scripted_daq, tmp_path, monkeypatch):
    """A whole run (writes, a config change, a stop) through the real Runner and client, no socket opened."""

    def no_network(*args, **kwargs):
        raise AssertionError("the scripted DAQ opened a socket")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    batch = load_batch_text(
        "version: 1\nsteps:\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 3}\n"
        "  - config: {bit_depth: 32}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 3}\n"
        "  - stop: {}\n",
        vars={"root": str(tmp_path)},
    )
    started = time.monotonic()
    report = scripted_daq.runner().run(batch)
    assert "passed" == report.status, report.failed_steps
    assert time.monotonic() - started < 2.0
    assert 32 == scripted_daq.config["bit_depth"] and 2 == len(scripted_daq.started)


# -- each fault as the real client sees it -------------------------------------------------------------


def _write(path) -> dict:
    return {"output_file": str(path), "n_images": 3, "run_id": 11}


@pytest.mark.parametrize(
    "fault, error, started",
    [
        (lost(handled=True), WriteOutcomeUnknown, 1),
        (lost(handled=False), WriteOutcomeUnknown, 0),
        (lost(handled=True, reset=True), WriteOutcomeUnknown, 1),
        (http_error(502), WriteOutcomeUnknown, 0),
        (http_error(500), DaqHTTPError, 0),
        (refused("Output file folder /x does not exist. Please create it first."), StdDaqAdminException, 0),
        (needs_restart(), WriterNeedsRestart, 0),
        (malformed(b"<html>gateway</html>"), DaqProtocolError, 0),
        (malformed({"status": "ok", "writer": None}), DaqProtocolError, 0),
    ],
    ids=["lost-started", "lost-not-started", "reset-started", "502", "500", "refused", "needs-restart", "not-json", "writer-null"],
)
def test_a_scripted_fault_of_a_write_is_what_the_client_raises(scripted_daq, tmp_path, fault, error, started):
    """Each fault reaches the caller through the real client as the error a real DAQ's would be; never re-sent."""
    client = scripted_daq.client()
    scripted_daq.script(WRITE, fault)
    with pytest.raises(error):
        client.start_writer_async(_write(tmp_path / "x.h5"))
    assert (1, started) == (scripted_daq.count(WRITE), len(scripted_daq.started))


def test_a_write_that_never_reached_the_daq_is_retried_by_the_client(scripted_daq, tmp_path):
    """Connection refused and HTTP 503 prove the request was not processed: the client sends it again, once started."""
    scripted_daq.script(WRITE, unreachable(), http_error(503), unreachable())
    status = scripted_daq.client(retries=3).start_writer_async(_write(tmp_path / "x.h5"))
    assert ("WRITING", 4, 1) == (status["state"], scripted_daq.count(WRITE), len(scripted_daq.started))


def test_transport_errors_for_any_request_then_an_answer(scripted_daq):
    """'*' scripts whatever request comes; a read whose reply was lost is retried like an outage."""
    scripted_daq.script("*", unreachable(), times=2)
    scripted_daq.script("*", lost(handled=True))
    assert "READY" == scripted_daq.client(retries=3).get_status()["state"]
    assert 4 == scripted_daq.count(STATUS)


def test_needs_restart_on_a_stop_leaves_the_writer_unknown(scripted_daq):
    """The driver's 'Cannot reach READY' leaves the writer UNKNOWN without acquisition; a further stop makes it READY."""
    client = scripted_daq.client()
    scripted_daq.script(STOP, needs_restart())
    with pytest.raises(WriterNeedsRestart, match=protocol.MESSAGE_CANNOT_REACH_READY):
        client.stop_writer()
    assert {"state": "UNKNOWN", "acquisition": None} == scripted_daq.status()
    assert "READY" == client.stop_writer()["state"]


def test_a_stale_status_answers_the_one_before_the_last_change(scripted_daq, tmp_path):
    """stale() answers the previous status (or the one given) while the writer goes on."""
    client = scripted_daq.client()
    client.start_writer_async(_write(tmp_path / "x.h5"))
    scripted_daq.script(STATUS, stale(), stale({"state": "READY", "acquisition": None}))
    assert ({"state": "READY", "acquisition": None}, "READY") == (client.get_status(), client.get_status()["state"])
    assert "WRITING" == client.get_status()["state"]


def test_a_slow_reply_is_cut_at_the_requests_own_limit(scripted_daq):
    """slow(): answered late, or a timeout when the request's limit (connect + read timeout) comes first."""
    scripted_daq.script(STATUS, slow(0.05), slow(30))
    client = scripted_daq.client(timeout=0.1, retries=0)
    assert "READY" == client.get_status()["state"]
    started = time.monotonic()
    with pytest.raises(DaqTimeoutError):
        client.get_status()
    assert time.monotonic() - started < 1.0


def test_actions_before_and_after_a_request_and_a_request_that_arrives_late(scripted_daq, tmp_path):
    """before()/after() act around the answer; lost(after_requests=n) acts n requests later."""
    client = scripted_daq.client()
    scripted_daq.script(STATUS, before(lambda d: d.restart_writer()))
    assert "UNKNOWN" == client.get_status()["state"]
    client.stop_writer()
    scripted_daq.script(WRITE, lost(after_requests=2))
    with pytest.raises(WriteOutcomeUnknown):
        client.start_writer_async(_write(tmp_path / "x.h5"))
    assert "READY" == client.get_status()["state"]
    assert "WRITING" == client.get_status()["state"]  # the write landed before this request was answered
    scripted_daq.script(STATUS, after(lambda d: d.finish()))
    assert "WRITING" == client.get_status()["state"] and "READY" == scripted_daq.status()["state"]


def test_armed_faults_go_to_the_next_acquisition_only(scripted_daq, tmp_path):
    """arm(): the next acquisition FAILS, is not logged, is logged twice or renamed; the one after is plain."""
    client = scripted_daq.client()
    scripted_daq.images_per_read = 10
    scripted_daq.arm(fail_next="ERROR: lost", run_id=77)
    client.start_writer_async(_write(tmp_path / "a.h5"))
    failed = client.get_status()["acquisition"]
    assert ("FAILED", "ERROR: lost", 77) == (failed["state"], failed["message"], failed["info"]["run_id"])
    assert failed["stats"]["start_time"] == failed["stats"]["stop_time"]
    scripted_daq.arm(logged_twice=True)
    client.start_writer_async(_write(tmp_path / "b.h5"))
    client.get_status()
    client.start_writer_async(_write(tmp_path / "c.h5"))
    client.get_status()
    assert [str(tmp_path / name) for name in ("c.h5", "b.h5", "b.h5")] == [r["info"]["output_file"] for r in client.get_logs(10)]


# -- the model against daq-sim: the same requests, the same answers --------------------------------------


def _exchange(session: requests.Session, base: str, method: str, path: str, body=None):
    reply = session.request(method, base + path, json=body, timeout=15)
    return reply.status_code, reply.json()


def _shape(status_code: int, envelope: dict, folder: str) -> tuple:
    """What must agree: HTTP status, envelope keys, status, message (paths and the busy status dict
    left out), the writer's state and the final acquisition's state and message."""
    if "detail" in envelope:
        return status_code, "detail"
    message = str(envelope.get("message", "")).replace(folder, "<folder>").split("\n")[0]
    writer = envelope.get("writer") or {}
    acquisition = writer.get("acquisition") or {}
    final = (acquisition.get("state"), acquisition.get("message")) if acquisition.get("state") in ("FINISHED", "FAILED") else None
    return status_code, tuple(sorted(envelope)), envelope["status"], message, writer.get("state"), final, tuple(sorted(acquisition))


def test_the_scripted_model_answers_as_daq_sim_does(daq_sim, scripted_daq, tmp_path):
    """Section 9 where the model has it: messages, refusals, 422, the stop that re-logs, partial configs, logs as a dict."""
    def sequence(folder: str) -> list:
        return [
            ("GET", "/writer/status", None),
            ("POST", "/writer/write_async", {"output_file": f"{folder}/x.h5", "n_images": 100000, "run_id": 5}),
            ("POST", "/writer/write_async", {"output_file": f"{folder}/y.h5", "n_images": 1, "run_id": 6}),
            ("POST", "/writer/stop", {}),
            ("POST", "/writer/stop", {}),
            ("GET", "/daq/logs/0", None),
            ("POST", "/daq/config", {"bit_depth": 16}),
            ("POST", "/writer/write_async", {"output_file": f"{folder}/z.h5", "n_images": 0}),
            ("POST", "/writer/write_async", {"output_file": "relative/z.h5", "n_images": 1}),
            ("POST", "/writer/write_async", {"output_file": f"{folder}/missing/z.h5", "n_images": 1}),
            ("GET", "/daq/config", None),
            ("GET", "/daq/deployment", None),
        ]

    scripted_daq.images_per_read = 0
    sim_session, scripted_session = requests.Session(), scripted_daq.client().session
    folders = [tmp_path / "sim", tmp_path / "scripted"]  # each writes its own files
    for folder in folders:
        folder.mkdir()
    for sim_request, scripted_request in zip(sequence(str(folders[0])), sequence(str(folders[1]))):
        sim = _shape(*_exchange(sim_session, daq_sim.url, *sim_request), str(folders[0]))
        scripted = _shape(*_exchange(scripted_session, scripted_daq.url, *scripted_request), str(folders[1]))
        assert sim == scripted, sim_request[:2]
    sim_logs = _exchange(sim_session, daq_sim.url, "GET", "/daq/logs/5")[1]["logs"]
    scripted_logs = _exchange(scripted_session, scripted_daq.url, "GET", "/daq/logs/5")[1]["logs"]
    assert isinstance(sim_logs, dict) and isinstance(scripted_logs, dict)
    run_ids = [[record["info"]["run_id"] for record in logs.values()] for logs in (sim_logs, scripted_logs)]
    assert [5, 5] == run_ids[0] == run_ids[1]  # the stop to an idle writer logged it again


def test_a_fresh_scripted_daq_starts_unknown_as_a_real_one(daq_sim_fresh, tmp_path):
    """state="UNKNOWN": a write is refused with the writer's status until a stop, as a freshly started DAQ."""
    with ScriptedDaq(state="UNKNOWN") as scripted:
        client = scripted.client()
        with pytest.raises(StdDaqAdminException, match=protocol.MESSAGE_BUSY_PREFIX):
            client.start_writer_async(_write(tmp_path / "x.h5"))
        assert ("READY", None) == (client.stop_writer()["state"], client.get_status()["acquisition"])
    reply = requests.post(daq_sim_fresh.url + WRITE.path, json=_write(tmp_path / "x.h5"), timeout=15).json()
    assert reply["message"].startswith(protocol.MESSAGE_BUSY_PREFIX)


def test_a_config_change_during_an_acquisition_loses_it_as_on_a_real_daq(scripted_daq, tmp_path):
    """The model stores the config, the writer restarts: UNKNOWN, and the next stop cannot reach READY."""
    client = scripted_daq.client()
    client.start_writer_async(_write(tmp_path / "x.h5"))
    client.set_config({**client.get_config(), "bit_depth": 32})
    assert "UNKNOWN" == client.get_status()["state"]
    with pytest.raises(WriterNeedsRestart):
        client.stop_writer()
    assert "READY" == client.stop_writer()["state"]


def test_a_scripted_daq_publishes_to_redis_as_a_real_one(daq_redis_server, tmp_path):
    """With a Redis, every status change goes to the status stream and each log record to the log stream."""
    streams = protocol.StreamNames(status="sd:status", config="sd:config", log="sd:log", stat="sd:stat")
    with ScriptedDaq(redis_url=daq_redis_server.url, streams=streams, images_per_read=2) as scripted:
        client = scripted.client()
        client.start_writer_async(_write(tmp_path / "x.h5"))
        client.get_status()
        client.get_status()
    states = [(s["state"], s["acquisition"]["state"]) for s in stream_entries(daq_redis_server.url, "sd:status")]
    assert [("WRITING", "WAITING_IMAGES"), ("WRITING", "ACQUIRING_IMAGES"), ("READY", "FINISHED")] == states
    assert [11] == [r["info"]["run_id"] for r in stream_entries(daq_redis_server.url, "sd:log")]


@pytest.mark.parametrize("with_redis", [False, True], ids=["rest", "redis"])
def test_a_stored_config_restarts_the_scripted_daqs_services_as_the_statistics_show(with_redis, daq_redis_server, tmp_path):
    """The config step sees the restart (the detector stopping, then back) in well under a second, over REST or daq:stat."""
    streams = protocol.StreamNames(status="sr:status", config="sr:config", log="sr:log", stat=f"sr:stat:{with_redis}")
    batch = load_batch_text("version: 1\nsteps:\n  - config: {bit_depth: 32}\n  - config: {bit_depth: 8}\n")
    with ScriptedDaq(redis_url=daq_redis_server.url if with_redis else None, streams=streams) as scripted:
        started = time.monotonic()
        report = scripted.runner().run(batch)
    assert "passed" == report.status, report.failed_steps
    assert time.monotonic() - started < 3.0
    restarts = [step["restart"] for step in report.to_dict()["steps"]]
    assert [True, True] == [restart["seen"] for restart in restarts]
    assert {"zeros"} == {restart["sign"] for restart in restarts}


def test_a_scripted_detector_that_sends_nothing_shows_no_restart(tmp_path):
    """detector_rate=0: the statistics cannot show the restart (a real DAQ's idle detector); a bad rate is refused."""
    with ScriptedDaq(detector_rate=0) as scripted:
        assert 0.0 == scripted.client().get_stats()["detector"]["images_per_second"]
    with pytest.raises(ValueError, match="detector_rate"):
        ScriptedDaq(detector_rate=-1)


# -- the helpers --------------------------------------------------------------------------------------------


def test_arm_faults_arms_daq_sims_faults_and_refuses_unknown_ones(daq_sim):
    """arm_faults posts to /sim/faults and returns what is armed; an unknown fault is an HTTP error."""
    assert "ERROR: x" == arm_faults(daq_sim, fail_next="ERROR: x")["fail_next"]
    with pytest.raises(requests.HTTPError):
        arm_faults(daq_sim, explode=1)


def test_wait_until_returns_the_value_or_fails_the_test_in_time():
    """wait_until gives back the first truthy value, and fails the test once its time is up."""
    values = iter([0, None, 7])
    assert 7 == wait_until(lambda: next(values), timeout=1.0, interval=0.001)
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="not met within 0.05 s"):
        wait_until(lambda: False, timeout=0.05, interval=0.01)
    assert time.monotonic() - started < 1.0


def test_the_testing_pages_scripted_daq_example_runs(tmp_path, monkeypatch):
    """docs/testing.md's example of the scripted DAQ, as printed, passes on a batch of one write."""
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text(encoding="utf-8")
    section = page.split("## Testing your own batch files", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    (example,) = [block for block in blocks if "scripted_daq" in block]
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / "my-scan.yaml").write_text("version: 1\nsteps:\n  - write: {output_file: '{root}/scan.h5', n_images: 3}\n")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "docs/testing.md", "exec"), namespace)
    (test,) = [value for name, value in namespace.items() if name.startswith("test_")]
    with ScriptedDaq() as daq:
        test(daq, tmp_path)
    assert (tmp_path / "scan.h5").exists()
