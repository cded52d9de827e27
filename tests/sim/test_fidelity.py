"""Section 9 of the Standard DAQ reference, point by point, against daq-sim over HTTP and Redis.

Section 9 says what the real rest_v2 server (its last version, with its writer driver)
does. Each test here checks one observable point of it, in the section's order, and is
named after it, so that the reference can be checked against the simulator line by line.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import subprocess
import time
from collections import Counter

import h5py
import pytest
import redis

from daq_runner import protocol
from daq_runner.sim import DEFAULT_CONFIG, SimSettings, SimulatedDaq

from ..conftest import REPO, script, wait_until
from .conftest import entries, entry_time, faults, full_config, get, ok, post, refused, set_config, status

# -- Start-up and state ---------------------------------------------------------------------


def test_fresh_server_reports_unknown_without_acquisition(fresh_sim):
    """A freshly started server reports {"state": "UNKNOWN", "acquisition": null}, "Writer is UNKNOWN"."""
    envelope = ok(get(fresh_sim, "/writer/status"))
    assert "Writer is UNKNOWN" == envelope["message"]
    assert {"state": "UNKNOWN", "acquisition": None} == envelope["writer"]


def test_fresh_server_starts_unknown_by_default():
    """A new SimulatedDaq (no settings) comes up UNKNOWN, as the real server after its start."""
    with SimulatedDaq() as sim:
        assert {"state": "UNKNOWN", "acquisition": None} == status(sim)
        assert [] == entries(sim.redis_url, "daq:status"), "nothing is published before the status changes"


def test_write_while_unknown_is_refused_with_the_status_dict(fresh_sim, tmp_path):
    """A write in UNKNOWN: "Cannot start new acquisition while previous one is running:\\n {<the status dict>}"."""
    message = refused(post(fresh_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 1}))
    assert "Cannot start new acquisition while previous one is running:\n {'state': 'UNKNOWN', 'acquisition': None}" == message
    assert not (tmp_path / "a.h5").exists()


def test_write_while_writing_quotes_the_drivers_status_dict_as_python_prints_it(daq_sim, tmp_path):
    """A write while writing quotes the driver's own status dict: state first, then an acquisition of
    state, message, stats and info (in that order), without reports."""
    ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000, "run_id": 11}))
    message = refused(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "b.h5"), "n_images": 1}))
    prefix, quoted = message.split("\n ", 1)
    status_dict = ast.literal_eval(quoted)
    assert ("Cannot start new acquisition while previous one is running:", ["state", "acquisition"]) == (prefix, list(status_dict))
    acquisition = status_dict["acquisition"]
    assert ["state", "message", "stats", "info"] == list(acquisition)
    assert ["n_write_completed", "n_write_requested", "start_time", "stop_time"] == list(acquisition["stats"])
    assert {"output_file": str(tmp_path / "a.h5"), "n_images": 100000, "run_id": 11} == acquisition["info"]
    assert ["output_file", "n_images", "run_id"] == list(acquisition["info"])


def test_stop_on_fresh_server_answers_writing_stopped_and_gives_ready_without_acquisition(fresh_sim):
    """The stop answers "Writing stopped." and the writer becomes READY with acquisition null."""
    envelope = ok(post(fresh_sim, "/writer/stop", {}))
    assert ("Writing stopped.", {"state": "READY", "acquisition": None}) == (envelope["message"], envelope["writer"])
    assert {"state": "READY", "acquisition": None} == status(fresh_sim)


def test_write_async_and_stop_block_for_at_least_one_driver_poll(daq_sim, tmp_path):
    """write_async and stop answer only after the driver's first 0.1 s poll saw WRITING (READY)."""
    began = time.monotonic()
    started = ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000}))
    took_start = time.monotonic() - began
    began = time.monotonic()
    stopped = ok(post(daq_sim, "/writer/stop", {}))
    took_stop = time.monotonic() - began
    assert "WRITING" == started["writer"]["state"] and "READY" == stopped["writer"]["state"]
    assert 0.1 <= took_start < 1.0 and 0.1 <= took_stop < 1.0, (took_start, took_stop)


def test_images_flow_only_after_the_start_answered(daq_sim, tmp_path):
    """The driver forwards images once its poll saw WRITING: the start's reply shows none written."""
    started = ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 2}))
    acquisition = started["writer"]["acquisition"]
    assert ("WAITING_IMAGES", 0) == (acquisition["state"], acquisition["stats"]["n_write_completed"])


@pytest.mark.slow
def test_cannot_reach_writing_after_50_polls_when_n_images_overflows(daq_sim, tmp_path):
    """n_images of 2**31: after about 5 s (50 polls of 0.1 s) "Cannot reach WRITING. Writer needs to
    be restarted.", HTTP 200, and the writer is left UNKNOWN with acquisition null."""
    began = time.monotonic()
    reply = post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "big.h5"), "n_images": 2**31})
    took = time.monotonic() - began
    assert "Cannot reach WRITING. Writer needs to be restarted." == refused(reply)
    assert 5.0 <= took < 7.0, took
    assert {"state": "UNKNOWN", "acquisition": None} == status(daq_sim)


def test_largest_n_images_the_writer_carries_starts(daq_sim, tmp_path):
    """n_images 2**31 - 1 still fits the writer protocol and starts."""
    started = ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "big.h5"), "n_images": 2**31 - 1}))
    assert "WRITING" == started["writer"]["state"]
    ok(post(daq_sim, "/writer/stop", {}))


def test_cannot_reach_writing_when_file_cannot_be_created_on_writer_without_acquisition(quick_driver, tmp_path):
    """A file that cannot be created on a writer with no earlier acquisition: the driver waits its
    polls out, "Cannot reach WRITING. ...", writer UNKNOWN with acquisition null."""
    (tmp_path / "taken.h5").mkdir()  # a folder where the file should go: the writer cannot create it
    began = time.monotonic()
    reply = post(quick_driver, "/writer/write_async", {"output_file": str(tmp_path / "taken.h5"), "n_images": 3})
    assert protocol.MESSAGE_CANNOT_REACH_WRITING == refused(reply)
    assert time.monotonic() - began >= 0.5
    assert {"state": "UNKNOWN", "acquisition": None} == status(quick_driver)


def test_config_change_under_running_acquisition_then_stop_cannot_reach_ready(quick_driver, tmp_path):
    """After a config change restarted the writer under a running acquisition, a stop answers
    "Cannot reach READY. Writer needs to be restarted." (after the driver's polls), writer UNKNOWN, acquisition null."""
    quick_driver.core.settings.frame_rate = 200
    ok(post(quick_driver, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000, "run_id": 3}))
    set_config(quick_driver, bit_depth=8)
    began = time.monotonic()
    message = refused(post(quick_driver, "/writer/stop", {}))
    assert (protocol.MESSAGE_CANNOT_REACH_READY, True) == (message, time.monotonic() - began >= 0.5)
    assert {"state": "UNKNOWN", "acquisition": None} == status(quick_driver)


def test_a_further_stop_after_cannot_reach_ready_makes_the_writer_ready(quick_driver, tmp_path):
    """After the writer_state fault (the status a driver shows once it gave up, not what a writer
    restart does: see the wedge below) stops recover the DAQ: the stop after "Cannot reach READY"
    finds no run to wait for, answers "Writing stopped." and the writer is READY."""
    faults(quick_driver, stall_s=30)
    ok(post(quick_driver, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 10}))
    faults(quick_driver, writer_state="UNKNOWN")  # a writer restart under the acquisition
    assert protocol.MESSAGE_CANNOT_REACH_READY == refused(post(quick_driver, "/writer/stop", {}))
    envelope = ok(post(quick_driver, "/writer/stop", {}))
    assert ("Writing stopped.", {"state": "READY", "acquisition": None}) == (envelope["message"], envelope["writer"])
    ok(post(quick_driver, "/sim/reset", {}))
    assert "FINISHED" == ok(post(quick_driver, "/writer/write_sync", {"output_file": str(tmp_path / "b.h5"), "n_images": 2}))["writer"]["acquisition"]["state"]


def test_messages_are_the_real_servers(daq_sim, tmp_path):
    """Status "Writer is READY|WRITING|UNKNOWN"; write_async "Writing started."; write_sync "Writing
    finished."; stop "Writing stopped."; GET config "DAQ configured for bit_depth=<N>."; POST config
    "Setting new daq config."; stats "DAQ statistics"; logs "DAQ logs"; deployment "Deployment status"."""
    assert "Writer is READY" == ok(get(daq_sim, "/writer/status"))["message"]
    assert "Writing started." == ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000}))["message"]
    assert "Writer is WRITING" == ok(get(daq_sim, "/writer/status"))["message"]
    assert "Writing stopped." == ok(post(daq_sim, "/writer/stop", {}))["message"]
    assert "Writing finished." == ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "b.h5"), "n_images": 2}))["message"]
    assert "DAQ configured for bit_depth=16." == ok(get(daq_sim, "/daq/config"))["message"]
    assert "Setting new daq config." == ok(post(daq_sim, "/daq/config", full_config(daq_sim, bit_depth=32)))["message"]
    assert "DAQ configured for bit_depth=32." == ok(get(daq_sim, "/daq/config"))["message"]
    assert "DAQ statistics" == ok(get(daq_sim, "/daq/stats"))["message"]
    assert "DAQ logs" == ok(get(daq_sim, "/daq/logs/3"))["message"]
    assert "Deployment status" == ok(get(daq_sim, "/daq/deployment"))["message"]
    faults(daq_sim, writer_state="UNKNOWN")
    assert "Writer is UNKNOWN" == ok(get(daq_sim, "/writer/status"))["message"]


def test_get_config_before_any_config_says_no_config_set_yet():
    """GET /daq/config answers "No config set yet." (config null) before the first config."""
    with SimulatedDaq(settings=SimSettings(start_configured=False)) as sim:
        envelope = ok(get(sim, "/daq/config"))
        assert ("No config set yet.", None, None) == (envelope["message"], envelope["config"], envelope["config_id"])
        deployment = ok(get(sim, "/daq/deployment"))["deployment"]
        assert ("UNKNOWN", "No config available") == (deployment["status"], deployment["message"])


def test_running_acquisition_message_is_empty_and_state_never_flushing(daq_sim, tmp_path):
    """While an acquisition runs its message is "", its state goes WAITING_IMAGES -> ACQUIRING_IMAGES
    -> FINISHED; FLUSHING_IMAGES never appears (replies and daq:status)."""
    daq_sim.core.settings.frame_rate = 400
    seen = [ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 200}))["writer"]]
    while seen[-1]["state"] == "WRITING":
        seen.append(status(daq_sim))
    running = [s["acquisition"] for s in seen if s["state"] == "WRITING"]
    assert {""} == {a["message"] for a in running}
    assert {"WAITING_IMAGES", "ACQUIRING_IMAGES"} == {a["state"] for a in running}
    assert ("FINISHED", "Completed.") == (seen[-1]["acquisition"]["state"], seen[-1]["acquisition"]["message"])
    streamed = [s["acquisition"]["state"] for _, s in entries(daq_sim.redis_url, "daq:status") if s["acquisition"]]
    first_seen = sorted(set(streamed), key=streamed.index)
    assert ["WAITING_IMAGES", "ACQUIRING_IMAGES", "FINISHED"] == first_seen


def _acquisitions_in_replies(sim, out):
    return [
        ok(post(sim, "/writer/write_async", {"output_file": out, "n_images": 100000}))["writer"]["acquisition"],
        status(sim)["acquisition"],
        ok(post(sim, "/writer/stop", {}))["writer"]["acquisition"],
        ok(post(sim, "/writer/write_sync", {"output_file": out, "n_images": 2}))["writer"]["acquisition"],
    ]


def test_acquisitions_in_writer_replies_carry_reports_null(daq_sim, tmp_path):
    """Acquisitions in the writer replies (status, write_async, stop, write_sync) carry "reports": null,
    their fields in the reply model's order."""
    replies = _acquisitions_in_replies(daq_sim, str(tmp_path / "a.h5"))
    assert all(["state", "message", "info", "stats", "reports"] == list(a) and a["reports"] is None for a in replies), replies
    assert all(["n_images", "output_file", "run_id"] == list(a["info"]) for a in replies)


def test_acquisitions_in_logs_carry_the_list_of_their_reports(daq_sim, tmp_path):
    """Acquisitions in /daq/logs carry "reports": [] (the list of their validation reports), not null."""
    _acquisitions_in_replies(daq_sim, str(tmp_path / "a.h5"))
    logged = list(ok(get(daq_sim, "/daq/logs/5"))["logs"].values())
    assert 2 == len(logged) and all([] == a["reports"] for a in logged), logged


def test_stream_entries_carry_no_reports_key(daq_sim, tmp_path):
    """daq:status and daq:log entries are the driver's records as they are: no "reports" key."""
    _acquisitions_in_replies(daq_sim, str(tmp_path / "a.h5"))
    time.sleep(0.05)  # the second status logger's copies
    streamed = [s["acquisition"] for _, s in entries(daq_sim.redis_url, "daq:status") if s["acquisition"]]
    streamed += [a for _, a in entries(daq_sim.redis_url, "daq:log")]
    assert len(streamed) > 4 and not any("reports" in a for a in streamed)


def test_failed_acquisition_has_start_time_equal_to_stop_time(daq_sim, tmp_path):
    """On FAILED the real driver sets start_time equal to stop_time."""
    faults(daq_sim, fail_next="ERROR: disk full")
    failed = ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 4}))["writer"]["acquisition"]
    assert ("FAILED", "ERROR: disk full") == (failed["state"], failed["message"])
    assert failed["stats"]["start_time"] == failed["stats"]["stop_time"] is not None


@pytest.mark.parametrize(
    "output_file, message",
    [
        ("relative/a.h5", 'Invalid output_file=relative/a.h5. Path must be absolute - starts with "/".'),
        ("/tmp/has space.h5", "Invalid output_file=/tmp/has space.h5. Must be a valid posix path."),
        ("/tmp/no-suffix", "Invalid output_file=/tmp/no-suffix. Must be a valid posix path."),
        ("/no/such/folder/a.h5", "Output file folder /no/such/folder does not exist. Please create it first."),
    ],
)
def test_output_path_errors_are_http_200_with_the_real_texts(daq_sim, output_file, message):
    """Output path errors are HTTP 200 status error with the server's exact texts."""
    assert message == refused(post(daq_sim, "/writer/write_async", {"output_file": output_file, "n_images": 1}))


@pytest.mark.parametrize(
    "body",
    [
        {"output_file": "/tmp/a.h5", "n_images": 0},
        {"n_images": 3},
        {"output_file": "/tmp/a.h5"},
        {"output_file": "/tmp/a.h5", "n_images": "three"},
        {"output_file": ["/tmp/a.h5"], "n_images": 1},
        {"output_file": "/tmp/a.h5", "n_images": 1, "run_id": "20230526_113713.793"},
        {"output_file": "/tmp/a.h5", "n_images": 1, "run_id": None},
        b"{not json",
    ],
    ids=["n_images-0", "no-output_file", "no-n_images", "n_images-text", "output_file-list", "run_id-text", "run_id-null", "malformed-json"],
)
def test_body_validation_errors_are_http_422_with_detail(daq_sim, body):
    """Body validation errors (n_images 0, missing fields, wrong types, malformed JSON) are HTTP 422
    with FastAPI's detail list and no envelope."""
    for path in ("/writer/write_async", "/writer/write_sync"):
        if isinstance(body, bytes):
            reply = post(daq_sim, path, data=body, headers={"content-type": "application/json"})
        else:
            reply = post(daq_sim, path, body)
        assert 422 == reply.status_code, reply.text
        assert isinstance(reply.json()["detail"], list) and "status" not in reply.json()
    assert "READY" == status(daq_sim)["state"]


def test_a_number_for_output_file_is_taken_as_text(daq_sim):
    """The server's models are pydantic 1's: a number where text belongs is taken as text, so
    output_file 5 is the path "5" (refused as not absolute, HTTP 200), not HTTP 422."""
    message = refused(post(daq_sim, "/writer/write_async", {"output_file": 5, "n_images": 1}))
    assert 'Invalid output_file=5. Path must be absolute - starts with "/".' == message


def test_stop_to_idle_writer_logs_the_last_acquisition_again(daq_sim, tmp_path):
    """A stop sent to an idle writer re-publishes the last acquisition as FINISHED: daq:log (and
    /daq/logs) get a second, identical record of it (same run_id)."""
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 3, "run_id": 7}))
    stopped = ok(post(daq_sim, "/writer/stop", {}))["writer"]
    assert ("READY", "FINISHED", 7) == (stopped["state"], stopped["acquisition"]["state"], stopped["acquisition"]["info"]["run_id"])
    logged = [a for _, a in entries(daq_sim.redis_url, "daq:log")]
    assert 2 == len(logged) and logged[0] == logged[1] and 7 == logged[0]["info"]["run_id"]
    served = list(ok(get(daq_sim, "/daq/logs/5"))["logs"].values())
    assert [{**a, "reports": []} for a in logged] == served


# -- Configuration --------------------------------------------------------------------------------


def test_partial_config_is_refused_with_the_int_of_none_error(daq_sim):
    """POST /daq/config with only some fields: HTTP 200 error "int() argument must be a string, a
    bytes-like object or a real number, not 'NoneType'"; nothing changes."""
    before = ok(get(daq_sim, "/daq/config"))
    message = refused(post(daq_sim, "/daq/config", {"bit_depth": 16, "writer_user_id": 0}))
    assert "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'" == message
    assert before == ok(get(daq_sim, "/daq/config"))


def test_config_body_that_is_a_json_list_is_read_as_pydantic_1_reads_it(daq_sim):
    """A JSON list body goes through dict() as pydantic 1 does: [] is an empty config, refused with HTTP
    200 and the int() error (not HTTP 422); a list that is no mapping, such as [1, 2], is HTTP 422."""
    before = ok(get(daq_sim, "/daq/config"))
    assert protocol.MESSAGE_PARTIAL_CONFIG == refused(post(daq_sim, "/daq/config", []))
    assert 422 == post(daq_sim, "/daq/config", [1, 2]).status_code
    assert before == ok(get(daq_sim, "/daq/config"))
    pairs = [[key, value] for key, value in full_config(daq_sim, bit_depth=8).items()]
    assert 8 == ok(post(daq_sim, "/daq/config", pairs))["config"]["bit_depth"], "a list of pairs is a mapping"


def test_without_a_stored_config_every_config_is_refused():
    """A Redis without a config (emptied): GET config "No config set yet.", and every POST, whole or
    partial, is refused: the server compares its request model with the field names and finds none."""
    with SimulatedDaq(settings=SimSettings(start_configured=False, start_state="READY")) as sim:
        missing = ", ".join(f"missing {name}" for name in protocol.CONFIG_FIELDS)
        for body in (DEFAULT_CONFIG, {"bit_depth": 16}):
            assert f"Config errors: {missing}," == refused(post(sim, "/daq/config", body))
        assert (None, None) == (ok(get(sim, "/daq/config"))["config"], ok(get(sim, "/daq/config"))["config_id"])


def test_partial_config_is_merged_when_the_server_is_a_mid_2023_one(daq_sim):
    """With accept_partial_config (servers of mid-2023) the given fields replace the current ones."""
    daq_sim.core.settings.accept_partial_config = True
    before = full_config(daq_sim)
    applied = ok(post(daq_sim, "/daq/config", {"bit_depth": 8, "writer_user_id": "12345"}))["config"]
    assert {**before, "bit_depth": 8, "writer_user_id": 12345} == applied == ok(get(daq_sim, "/daq/config"))["config"]


def test_full_config_with_changes_merged_in_is_accepted(daq_sim):
    """Sending the whole configuration (the current one from GET with the changes merged in) works."""
    wanted = full_config(daq_sim, bit_depth=32, writer_user_id=12345)
    assert wanted == ok(post(daq_sim, "/daq/config", wanted))["config"] == ok(get(daq_sim, "/daq/config"))["config"]


def test_full_config_lacking_detector_type_is_refused_by_the_reply_model_but_stored(daq_sim):
    """A full config without detector_type: the POST answers with its reply model's refusal ("1 validation
    error for ConfigResponse ... none is not an allowed value"), but the config was stored and deployed,
    and GET config, which has no reply model, still answers, with detector_type null."""
    before = ok(get(daq_sim, "/daq/config"))["config_id"]
    config = full_config(daq_sim, bit_depth=8)
    del config["detector_type"]
    message = refused(post(daq_sim, "/daq/config", config))
    assert (
        "1 validation error for ConfigResponse\nconfig -> detector_type\n"
        "  none is not an allowed value (type=type_error.none.not_allowed)"
    ) == message
    stored = ok(get(daq_sim, "/daq/config"))
    assert ("DAQ configured for bit_depth=8.", None, 8) == (stored["message"], stored["config"]["detector_type"], stored["config"]["bit_depth"])
    assert stored["config_id"] != before
    assert "eiger" == ok(post(daq_sim, "/daq/config", {**config, "detector_type": "eiger"}))["config"]["detector_type"]


def test_integer_fields_given_as_numeric_strings_are_accepted(daq_sim):
    """Integers given as numeric strings are accepted and stored as integers."""
    stored = ok(post(daq_sim, "/daq/config", full_config(daq_sim, bit_depth="8", image_pixel_width="128", writer_user_id="0")))["config"]
    assert (8, 128, 0) == (stored["bit_depth"], stored["image_pixel_width"], stored["writer_user_id"])


def test_bit_depth_abc_is_http_422(daq_sim):
    """bit_depth "abc" fails the server's model: HTTP 422."""
    reply = post(daq_sim, "/daq/config", full_config(daq_sim, bit_depth="abc"))
    assert 422 == reply.status_code and isinstance(reply.json()["detail"], list)


def test_unknown_config_fields_are_silently_ignored(daq_sim):
    """Unknown fields are accepted and not stored."""
    stored = ok(post(daq_sim, "/daq/config", full_config(daq_sim, colour="red")))["config"]
    assert "colour" not in stored and "colour" not in ok(get(daq_sim, "/daq/config"))["config"]


def test_bit_depth_12_is_stored_and_every_later_write_is_refused(daq_sim, tmp_path):
    """bit_depth 12 is accepted and stored; every later write is refused (HTTP 200 error, no writer in the
    reply) with "ERROR: Unsupported bits per pixel:12": the writer fails as it opens the run, the earlier
    acquisition carries the error, the driver's next poll passes it on. Nothing more is logged."""
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "first.h5"), "n_images": 2, "run_id": 1}))
    assert 12 == set_config(daq_sim, bit_depth=12)["bit_depth"]
    assert "DAQ configured for bit_depth=12." == ok(get(daq_sim, "/daq/config"))["message"]
    for name in ("a.h5", "b.h5"):
        began = time.monotonic()
        reply = post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / name), "n_images": 3, "run_id": 2})
        assert ("ERROR: Unsupported bits per pixel:12", True) == (refused(reply), time.monotonic() - began < 1.5)
    after = status(daq_sim)
    assert ("READY", 1, "FAILED", "ERROR: Unsupported bits per pixel:12") == (
        after["state"], after["acquisition"]["info"]["run_id"], after["acquisition"]["state"], after["acquisition"]["message"])
    assert [1] == [a["info"]["run_id"] for a in ok(get(daq_sim, "/daq/logs/5"))["logs"].values()]


def test_bit_depth_12_on_a_writer_without_acquisition_cannot_reach_writing(quick_driver, tmp_path):
    """With no earlier acquisition to carry the writer's error, a write after bit_depth 12 waits the
    driver's polls out: "Cannot reach WRITING. ...", writer UNKNOWN."""
    set_config(quick_driver, bit_depth=12)
    reply = post(quick_driver, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 3})
    assert protocol.MESSAGE_CANNOT_REACH_WRITING == refused(reply)
    assert {"state": "UNKNOWN", "acquisition": None} == status(quick_driver)


def test_module_positions_in_the_readme_list_form_is_http_422(daq_sim):
    """module_positions as in the README ({"0": [x0, y0, x1, y1]}) fails the server's model: HTTP 422."""
    reply = post(daq_sim, "/daq/config", full_config(daq_sim, module_positions={"0": [0, 255, 255, 0]}))
    assert 422 == reply.status_code


def test_an_initial_config_with_list_form_module_positions_is_refused_at_start(tmp_path):
    """A --config with the README's list-form module_positions would be served but never taken back
    (every config change HTTP 422): daq-sim refuses it at start, one line, exit 2."""
    config = {**json.loads((REPO / "config" / "sim-eiger-1m.json").read_text()), "module_positions": {"0": [0, 1023, 1023, 512]}}
    path = tmp_path / "list-form.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([script("daq-sim"), "--port", "0", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert 2 == proc.returncode and 1 == len(proc.stderr.strip().splitlines()), proc.stderr
    assert "module_positions" in proc.stderr and "HTTP 422" in proc.stderr


def test_the_shipped_config_file_can_be_sent_back_whole(tmp_path):
    """config/sim-eiger-1m.json starts a simulator whose config, sent back whole, is stored."""
    config = json.loads((REPO / "config" / "sim-eiger-1m.json").read_text())
    with SimulatedDaq(config=config, settings=SimSettings(start_state="READY")) as sim:
        served = ok(get(sim, "/daq/config"))["config"]
        assert ok(post(sim, "/daq/config", served))["config"] == served


def test_module_positions_in_the_models_object_form_is_not_json_serializable(daq_sim):
    """The object form {start_x, start_y, end_x, end_y} fails with "Object of type ModulePositions is
    not JSON serializable"; nothing is stored."""
    before = ok(get(daq_sim, "/daq/config"))
    positions = {"0": {"start_x": 0, "start_y": 255, "end_x": 255, "end_y": 0}}
    assert "Object of type ModulePositions is not JSON serializable" == refused(post(daq_sim, "/daq/config", full_config(daq_sim, module_positions=positions)))
    assert before == ok(get(daq_sim, "/daq/config"))


def test_module_positions_empty_object_is_stored(daq_sim):
    """Through this API only {} can be stored as module_positions; a full config carries it back unchanged."""
    assert {} == ok(get(daq_sim, "/daq/config"))["config"]["module_positions"]
    assert {} == ok(post(daq_sim, "/daq/config", full_config(daq_sim, module_positions={})))["config"]["module_positions"]


def test_config_change_is_not_refused_during_an_acquisition_and_loses_it(daq_sim, tmp_path):
    """A config change during an acquisition is stored; the deployment restarts the services and the
    running acquisition is lost: the writer still reports WRITING with the acquisition as last reported
    (never final, not logged), and nothing more happens to it."""
    daq_sim.core.settings.frame_rate = 200
    ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000, "run_id": 9}))
    assert 8 == set_config(daq_sim, bit_depth=8)["bit_depth"]
    assert 8 == ok(get(daq_sim, "/daq/config"))["config"]["bit_depth"]
    lost = status(daq_sim)
    assert ("WRITING", 9) == (lost["state"], lost["acquisition"]["info"]["run_id"])
    assert lost["acquisition"]["state"] not in ("FINISHED", "FAILED")
    time.sleep(0.5)
    assert lost == status(daq_sim), "nothing more happens to a lost acquisition"
    assert {} == ok(get(daq_sim, "/daq/logs/5"))["logs"]


def test_a_run_lost_under_the_driver_wedges_it_until_the_server_restarts(quick_driver, tmp_path):
    """The driver keeps forwarding the lost run's images to a writer that no longer acknowledges them
    and blocks: every stop answers "Cannot reach READY" after its wait, writes are refused, until the
    REST server restarts (restart_server fault): then UNKNOWN without acquisition, and a stop makes it READY."""
    ok(post(quick_driver, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000}))
    set_config(quick_driver, bit_depth=8)
    for _ in range(2):
        assert protocol.MESSAGE_CANNOT_REACH_READY == refused(post(quick_driver, "/writer/stop", {}))
    message = refused(post(quick_driver, "/writer/write_async", {"output_file": str(tmp_path / "b.h5"), "n_images": 1}))
    assert message.startswith(protocol.MESSAGE_BUSY_PREFIX)
    assert {"wedge_driver": True}.items() <= faults(quick_driver).items()
    assert "wedge_driver" not in faults(quick_driver, restart_server=True)
    assert {"state": "UNKNOWN", "acquisition": None} == status(quick_driver)
    assert "READY" == ok(post(quick_driver, "/writer/stop", {}))["writer"]["state"]


def test_post_config_replies_config_id_null_and_get_gives_the_new_one(daq_sim):
    """POST config replies config_id: null; GET config gives the new config_id (the daq:config entry id)."""
    before = ok(get(daq_sim, "/daq/config"))["config_id"]
    assert None is ok(post(daq_sim, "/daq/config", full_config(daq_sim, bit_depth=8)))["config_id"]
    after = ok(get(daq_sim, "/daq/config"))["config_id"]
    assert after != before and after == entries(daq_sim.redis_url, "daq:config")[-1][0]


def _reported(deployment):
    # A server reports "Deploying" and "Done" microseconds apart: skip that instant.
    servers = deployment["servers"]
    return servers and "Deploying" not in servers.values() and deployment


def test_deployment_is_unknown_waiting_for_servers_then_success(daq_sim):
    """Right after a change the deployment is UNKNOWN "Waiting for servers..." until the first server
    reports, then SUCCESS "Deployment successful"."""
    daq_sim.core.settings.deploy_delay_s = 1.2  # the first server reports after 0.6 s
    ok(post(daq_sim, "/daq/config", full_config(daq_sim, bit_depth=8)))
    first = ok(get(daq_sim, "/daq/deployment"))["deployment"]
    assert ("UNKNOWN", "Waiting for servers...", {}) == (first["status"], first["message"], first["servers"])
    done = wait_until(lambda: _reported(ok(get(daq_sim, "/daq/deployment"))["deployment"]))
    assert ("SUCCESS", "Deployment successful") == (done["status"], done["message"])


def test_deployment_success_lists_only_the_servers_that_reported(daq_sim):
    """SUCCESS means every server that has reported so far is Done: a slower server may be missing."""
    daq_sim.core.settings.deploy_delay_s = 2.0  # one server reports after 1 s, the other after 2 s
    ok(post(daq_sim, "/daq/config", full_config(daq_sim, bit_depth=8)))
    partial = wait_until(lambda: _reported(ok(get(daq_sim, "/daq/deployment"))["deployment"]), interval=0.01)
    assert ("SUCCESS", {"sim-daq-0": "Done"}) == (partial["status"], partial["servers"])
    # The second server's "Deploying" and "Done" come microseconds apart: skip that instant too.
    full = wait_until(lambda: len((d := ok(get(daq_sim, "/daq/deployment"))["deployment"])["servers"]) == 2 and _reported(d))
    assert ("SUCCESS", {"sim-daq-0": "Done", "sim-daq-1": "Done"}) == (full["status"], full["servers"])


def test_file_that_cannot_be_created_after_an_earlier_acquisition_is_refused_and_rewrites_it(daq_sim, tmp_path):
    """With an earlier acquisition, a file that cannot be created is refused within about 0.1 s with
    "ERROR: Cannot create output file."; the earlier acquisition's status is rewritten to FAILED with
    that message, its daq:log record stays FINISHED."""
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 2, "run_id": 1}))
    (tmp_path / "taken.h5").mkdir()
    began = time.monotonic()
    message = refused(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "taken.h5"), "n_images": 2, "run_id": 2}))
    took = time.monotonic() - began
    assert ("ERROR: Cannot create output file.", True) == (message, 0.1 <= took < 1.5), took
    after = status(daq_sim)
    acquisition = after["acquisition"]
    assert ("READY", 1, "FAILED", "ERROR: Cannot create output file.") == (
        after["state"], acquisition["info"]["run_id"], acquisition["state"], acquisition["message"])
    assert acquisition["stats"]["start_time"] == acquisition["stats"]["stop_time"]
    assert [(1, "FINISHED")] == [(a["info"]["run_id"], a["state"]) for _, a in entries(daq_sim.redis_url, "daq:log")]


# -- Logs and streams -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, -5])
def test_logs_of_zero_or_negative_count_are_an_error(daq_sim, n):
    """GET /daq/logs/0 or a negative n: HTTP 200 error "XREVRANGE count must be a positive integer"."""
    assert "XREVRANGE count must be a positive integer" == refused(get(daq_sim, f"/daq/logs/{n}"))


def _distinct(stream_entries):
    """Each distinct status once, with the time of its first copy, in order."""
    seen, out = set(), []
    for entry_id, obj in stream_entries:
        key = json.dumps(obj, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((entry_time(entry_id), obj))
    return out


def test_status_stream_is_written_on_changes_and_every_half_second_while_images_are_written(daq_sim, tmp_path):
    """daq:status gets the start, the stop and a progress status about every 0.5 s while images are written."""
    daq_sim.core.settings.frame_rate = 500
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 1000, "run_id": 5}))
    statuses = [(t, s) for t, s in _distinct(entries(daq_sim.redis_url, "daq:status")) if s["acquisition"]]
    states = [(s["state"], s["acquisition"]["state"]) for _, s in statuses]
    assert ("WRITING", "WAITING_IMAGES") == states[0] and ("READY", "FINISHED") == states[-1]
    progress = [t for t, s in statuses if s["acquisition"]["state"] == "ACQUIRING_IMAGES"]
    gaps = [b - a for a, b in zip(progress, progress[1:])][:-1]  # the writer's last report comes with the stop
    assert len(gaps) >= 2 and all(0.45 <= gap <= 1.0 for gap in gaps), gaps


def test_status_stream_has_no_idle_heartbeat(daq_sim):
    """Nothing is written to daq:status while the writer is idle."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    try:
        last = client.xrevrange("daq:status", count=1)
        since = last[0][0] if last else "0-0"
        assert [] == client.xread({"daq:status": since}, block=1500)
    finally:
        client.close()


def test_each_status_is_stored_twice_and_the_copies_can_interleave(daq_sim, tmp_path):
    """Each status is stored twice within a few ms (two loggers), and the copies can interleave: READY,
    then a stale WRITING, then READY again within a millisecond or so (status_interleave 1 forces it)."""
    daq_sim.core.settings.status_interleave = 1.0
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 10}))
    time.sleep(0.05)
    stream = entries(daq_sim.redis_url, "daq:status")
    copies = Counter(json.dumps(s, sort_keys=True) for _, s in stream)
    assert all(n % 2 == 0 for n in copies.values()), copies
    states = [s["state"] for _, s in stream]
    first_ready = states.index("READY", states.index("WRITING"))
    assert "WRITING" in states[first_ready:] and "READY" == states[-1], states
    stale = states.index("WRITING", first_ready)
    assert stream[first_ready][1] == stream[-1][1], "the second READY is a copy of the first"
    assert stream[stale][1] in [s for _, s in stream[:first_ready]], "the WRITING after READY is an older status"
    assert entry_time(stream[-1][0]) - entry_time(stream[first_ready][0]) < 0.05


def test_copies_do_not_interleave_when_the_probability_is_zero(daq_sim, tmp_path):
    """status_interleave 0: each status twice, in order (WRITING, WRITING, READY, READY at the end): the
    real server showed no stale WRITING in three observed acquisitions."""
    daq_sim.core.settings.status_interleave = 0.0
    for name in ("a.h5", "b.h5", "c.h5"):
        ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / name), "n_images": 10}))
    time.sleep(0.05)
    states = [s["state"] for _, s in entries(daq_sim.redis_url, "daq:status")]
    runs = [(state, len(list(group))) for state, group in itertools.groupby(states)]
    assert ["READY", "WRITING"] * 3 + ["READY"] == [state for state, _ in runs], runs
    assert all(n % 2 == 0 for _, n in runs), runs


def test_the_default_probability_of_interleaved_copies_is_a_tenth_and_a_seed_repeats_it(tmp_path):
    """By default one acquisition end in ten leaves a stale copy; with a seed the same acquisitions do,
    run after run (a reset draws anew from the seed)."""
    assert 0.1 == SimSettings().status_interleave
    settings = SimSettings(frame_rate=100, seed=4, status_interleave=0.5, driver_poll_s=0.01, start_state="READY")
    with SimulatedDaq(settings=settings) as sim:

        def pattern():
            ok(post(sim, "/sim/reset", {}))
            stale = []
            for i in range(8):
                ok(post(sim, "/writer/write_sync", {"output_file": str(tmp_path / f"{i}.h5"), "n_images": 2}))
                time.sleep(0.02)
                states = [s["state"] for _, s in entries(sim.redis_url, "daq:status")]
                stale.append(states[-2:] == ["WRITING", "READY"])
            return stale

        first = pattern()
        assert first == pattern() and len(set(first)) == 2, first


def test_single_status_logger_when_duplicates_are_turned_off(daq_sim, tmp_path):
    """SimSettings.duplicate_status=False stores each status once (no interleaving copies)."""
    daq_sim.core.settings.duplicate_status = False
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 10}))
    time.sleep(0.05)
    states = [s["state"] for _, s in entries(daq_sim.redis_url, "daq:status")]
    ready_again = states.index("READY", states.index("WRITING"))
    assert ["READY"] == states[ready_again:], states


def test_stat_stream_every_second_also_idle_and_at_once_after_start():
    """daq:stat is written every second, also while idle, and is there at once after the start
    (so /daq/stats is never null)."""
    with SimulatedDaq(settings=SimSettings(frame_rate=100)) as sim:
        assert len(entries(sim.redis_url, "daq:stat")) >= 1
        assert ok(get(sim, "/daq/stats"))["stats"] is not None
        time.sleep(2.3)
        stats = entries(sim.redis_url, "daq:stat")
        assert 3 <= len(stats) <= 4, len(stats)
        gaps = [entry_time(b) - entry_time(a) for (a, _), (b, _) in zip(stats, stats[1:])]
        assert all(0.9 <= gap <= 1.5 for gap in gaps), gaps


def test_log_stream_only_gets_finished_acquisitions(daq_sim, tmp_path):
    """daq:log gets FINISHED acquisitions (completed or interrupted); failed ones are not logged."""
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 2, "run_id": 1}))
    faults(daq_sim, fail_next="ERROR: disk full")
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "b.h5"), "n_images": 4, "run_id": 2}))
    ok(post(daq_sim, "/writer/write_async", {"output_file": str(tmp_path / "c.h5"), "n_images": 100000, "run_id": 3}))
    ok(post(daq_sim, "/writer/stop", {}))
    logged = [(a["info"]["run_id"], a["state"], a["message"]) for _, a in entries(daq_sim.redis_url, "daq:log")]
    assert [(1, "FINISHED", "Completed."), (3, "FINISHED", "Interrupted.")] == logged


# -- Beyond section 9: the simulated detector and its files --------------------------------------


def test_detector_streams_at_its_frame_rate_while_idle_and_unknown(fresh_sim):
    """The simulated detector streams all the time: /daq/stats and daq:stat show images_per_second
    = frame rate while idle, also with the writer UNKNOWN."""
    assert "UNKNOWN" == status(fresh_sim)["state"]
    stats = wait_until(lambda: (s := ok(get(fresh_sim, "/daq/stats"))["stats"]) and s)
    assert (2000.0, 0.0) == (stats["detector"]["images_per_second"], stats["writer"]["images_per_second"])
    streamed = wait_until(lambda: entries(fresh_sim.redis_url, "daq:stat"))
    assert 2000.0 == streamed[-1][1]["detector"]["images_per_second"]


def test_an_existing_file_is_overwritten(daq_sim, tmp_path):
    """The writer opens the file with truncation: an existing file of that name is overwritten."""
    out = tmp_path / "same.h5"
    out.write_bytes(b"not hdf5 at all" * 1000)
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(out), "n_images": 3}))
    with h5py.File(out, "r") as f:
        assert 3 == f["SIM-EIGER-64K/data"].shape[0]
    three_images = os.path.getsize(out)
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(out), "n_images": 2}))
    with h5py.File(out, "r") as f:
        assert 2 == f["SIM-EIGER-64K/data"].shape[0] and 2 == len(f["SIM-EIGER-64K/image_id"])
    assert os.path.getsize(out) < three_images, "truncated, not appended to"


def test_writes_refused_before_any_config(tmp_path):
    """Without a config the server cannot read writer_user_id: writes are refused (HTTP 200 error)."""
    with SimulatedDaq(settings=SimSettings(start_configured=False, start_state="READY")) as sim:
        message = refused(post(sim, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 1}))
        assert "'NoneType' object is not subscriptable" == message
