"""Unit tests of the client's HTTP handling (``responses``), one per method and error path."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
import responses
from responses import matchers

from daq_runner import (
    DaqHTTPError,
    DaqProtocolError,
    DaqTimeoutError,
    DaqTransportError,
    StdDaqAdminException,
    ConfigOutcomeUnknown,
    StdDaqClient,
    WriteOutcomeUnknown,
    protocol,
)
from daq_runner.testing import arm_faults

from .conftest import wait_until

BASE = "http://daq.test:5000"
STATUS = {"acquisition": None, "state": "READY"}


def ok(key: str, payload: object, **extra: object) -> dict:
    return {"status": "ok", "message": "fine", key: payload, **extra}


@pytest.fixture
def client() -> StdDaqClient:
    # No sleeping between retries in unit tests.
    c = StdDaqClient(BASE, timeout=2.5, retries=2)
    return c


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pause between retries (the client pauses through the bound's sleep)."""
    import daq_runner.client

    monkeypatch.setattr(daq_runner.client, "_pause", lambda seconds: None)


@pytest.mark.parametrize(
    "method, args, endpoint, body, payload",
    [
        ("get_status", (), protocol.WRITER_STATUS, None, STATUS),
        ("get_config", (), protocol.DAQ_CONFIG_GET, None, {"bit_depth": 16}),
        ("set_config", ({"bit_depth": 8},), protocol.DAQ_CONFIG_SET, {"bit_depth": 8}, {"bit_depth": 8}),
        ("get_stats", (), protocol.DAQ_STATS, None, {"detector": {}, "writer": {}}),
        ("get_deployment_status", (), protocol.DAQ_DEPLOYMENT, None, {"status": "SUCCESS"}),
        ("start_writer_async", ({"output_file": "/tmp/a.h5", "n_images": 3},), protocol.WRITER_WRITE_ASYNC, {"output_file": "/tmp/a.h5", "n_images": 3}, STATUS),
        ("start_writer_sync", ({"output_file": "/tmp/a.h5", "n_images": 3},), protocol.WRITER_WRITE_SYNC, {"output_file": "/tmp/a.h5", "n_images": 3}, STATUS),
        ("stop_writer", (), protocol.WRITER_STOP, {}, STATUS),
    ],
)
@responses.activate
def test_method_sends_the_originals_request(client, method, args, endpoint, body, payload):
    """Each method sends the original's method, path and body, and returns the payload."""
    match = [matchers.json_params_matcher(body)] if body is not None else []
    responses.add(endpoint.method, BASE + endpoint.path, json=ok(endpoint.payload_key, payload), match=match)
    assert payload == getattr(client, method)(*args)
    assert len(responses.calls) == 1


@responses.activate
def test_get_logs_accepts_list_and_dict_newest_first(client):
    """Logs come back as a list, newest first, from the README's list or rest_v2's dict."""
    a, b = {"info": {"run_id": 1}}, {"info": {"run_id": 2}}
    responses.get(BASE + "/daq/logs/2", json=ok("logs", [b, a]))
    assert [b, a] == client.get_logs(2)
    responses.replace(responses.GET, BASE + "/daq/logs/2", json=ok("logs", {"1685000000000-0": a, "1685000000001-0": b}))
    assert [b, a] == client.get_logs(2)
    responses.replace(responses.GET, BASE + "/daq/logs/2", json=ok("logs", {"9-0": a, "10-0": b}))
    assert [b, a] == client.get_logs(2), "stream ids compare as numbers, not strings"


@responses.activate
def test_every_request_has_connect_and_read_timeout(client, monkeypatch):
    """Every request carries (connect, read) timeouts; write_sync a longer read timeout."""
    seen = []
    original = requests.Session.request

    def spy(self, method, url, **kwargs):
        seen.append((url.rsplit("/", 1)[-1], kwargs.get("timeout")))
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    responses.get(BASE + "/writer/status", json=ok("writer", STATUS))
    responses.post(BASE + "/writer/write_sync", json=ok("writer", STATUS))
    responses.post(BASE + "/writer/write_async", json=ok("writer", STATUS))
    responses.post(BASE + "/writer/stop", json=ok("writer", STATUS))
    client.get_status()
    client.start_writer_sync({"output_file": "/tmp/a.h5", "n_images": 1})
    client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1})
    client.stop_writer()
    # write_async and stop block up to ~5 s in the real server: their read timeout is write_timeout.
    assert [
        ("status", (2.5, 2.5)),
        ("write_sync", (2.5, 75.0)),
        ("write_async", (2.5, 15.0)),
        ("stop", (2.5, 15.0)),
    ] == seen


@responses.activate
def test_one_session_is_reused(client):
    """All requests of a client go through its one session."""
    responses.get(BASE + "/writer/status", json=ok("writer", STATUS))
    session = client.session
    client.get_status()
    client.get_status()
    assert client.session is session and isinstance(session, requests.Session)


@responses.activate
def test_admin_refusal_raises_stdDaqAdminException_with_server_message(client):
    """status != ok raises StdDaqAdminException with the server's message; no retry."""
    responses.post(BASE + "/writer/write_async", json={"status": "error", "message": "Cannot start new acquisition"})
    with pytest.raises(StdDaqAdminException, match="Cannot start new acquisition"):
        client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1})
    assert len(responses.calls) == 1


@responses.activate
def test_http_error_names_url_status_and_reply(client):
    """A non-200 reply is a RuntimeError naming the URL, status and reply text."""
    responses.post(BASE + "/writer/write_async", status=422, json={"detail": [{"msg": "n_images must be >= 1"}]})
    with pytest.raises(DaqHTTPError) as info:
        client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 0})
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "/writer/write_async" in message and "422" in message and "n_images must be >= 1" in message
    assert 422 == info.value.status_code


@responses.activate
def test_non_json_200_is_runtime_error(client):
    """A 200 reply that is not JSON is a RuntimeError, not a JSONDecodeError."""
    responses.get(BASE + "/writer/status", body="<html>proxy login</html>")
    with pytest.raises(DaqProtocolError, match="not JSON") as info:
        client.get_status()
    assert isinstance(info.value, RuntimeError)
    assert not isinstance(info.value, json.JSONDecodeError)


@responses.activate
def test_envelope_without_status_is_runtime_error(client):
    """A JSON reply without the envelope is a RuntimeError, not a KeyError."""
    responses.get(BASE + "/writer/status", json={"state": "READY"})
    with pytest.raises(DaqProtocolError, match="no 'status'"):
        client.get_status()


@pytest.mark.parametrize("code", [502, 503, 504])
@responses.activate
def test_gateway_errors_are_retried(client, code):
    """HTTP 502/503/504 are retried; the next good reply wins."""
    responses.get(BASE + "/writer/status", status=code, body="busy")
    responses.get(BASE + "/writer/status", json=ok("writer", STATUS))
    assert STATUS == client.get_status()
    assert 2 == len(responses.calls)


@responses.activate
def test_retries_bound_the_attempts(client):
    """retries=2 means three attempts, then the last error is raised."""
    responses.get(BASE + "/writer/status", status=503, body="down")
    with pytest.raises(DaqTransportError, match="503"):
        client.get_status()
    assert 3 == len(responses.calls)


@responses.activate
def test_zero_retries_means_one_attempt():
    """retries=0: exactly one attempt."""
    responses.get(BASE + "/writer/status", body=requests.ConnectionError("refused"))
    with pytest.raises(DaqTransportError):
        StdDaqClient(BASE, retries=0).get_status()
    assert 1 == len(responses.calls)


@responses.activate
def test_connection_errors_are_runtime_errors_and_retried(client):
    """Connection errors are retried and end as RuntimeError subclasses."""
    responses.get(BASE + "/daq/config", body=requests.ConnectionError("reset"))
    with pytest.raises(DaqTransportError) as info:
        client.get_config()
    assert isinstance(info.value, RuntimeError)
    assert 3 == len(responses.calls)


@responses.activate
def test_read_timeout_is_timeout_error(client):
    """A read timeout on a read-only request is retried, then raised as DaqTimeoutError."""
    responses.get(BASE + "/writer/status", body=requests.ReadTimeout("slow"))
    with pytest.raises(DaqTimeoutError, match="timed out"):
        client.get_status()
    assert 3 == len(responses.calls)


@responses.activate
def test_write_with_lost_reply_is_never_resent(client):
    """A write start whose reply was lost raises WriteOutcomeUnknown after one attempt."""
    responses.post(BASE + "/writer/write_async", body=requests.ReadTimeout("lost"))
    with pytest.raises(WriteOutcomeUnknown, match="may have started"):
        client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1, "run_id": 7})
    assert 1 == len(responses.calls)


@pytest.mark.parametrize("code", [502, 504])
@responses.activate
def test_write_behind_gateway_error_is_not_resent(client, code):
    """A gateway error may hide a started write: not re-sent."""
    responses.post(BASE + "/writer/write_async", status=code, body="gateway")
    with pytest.raises(WriteOutcomeUnknown):
        client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1})
    assert 1 == len(responses.calls)


@pytest.mark.parametrize("lost", [requests.ReadTimeout("lost"), requests.ConnectionError("reset by peer"), 502, 504])
@responses.activate
def test_config_with_lost_reply_is_never_resent(client, lost):
    """POST /daq/config may have been stored (and the DAQ restarted) when its reply is lost:
    sent once, ConfigOutcomeUnknown (each resend used to restart the DAQ's services again)."""
    if isinstance(lost, int):
        responses.post(BASE + "/daq/config", status=lost, body="gateway")
    else:
        responses.post(BASE + "/daq/config", body=lost)
    with pytest.raises(ConfigOutcomeUnknown, match="may have been stored|HTTP 50"):
        client.set_config(FULL)
    assert 1 == len(responses.calls)


@responses.activate
def test_config_refused_with_503_is_retried(client):
    """HTTP 503 means not processed: a config may be sent again."""
    responses.post(BASE + "/daq/config", status=503, body="unavailable")
    responses.post(BASE + "/daq/config", json=ok("config", FULL, config_id=None))
    assert FULL == client.set_config(FULL)
    assert 2 == len(responses.calls)


def test_update_config_whose_reply_was_lost_finds_it_stored_and_sends_it_once(daq_sim):
    """The DAQ stored the config but its reply was lost: update_config does not send it
    again; the new config_id, its deployment and the config read back say it took."""
    from .standin import DaqProxy

    client = StdDaqClient(daq_sim.url)
    before = client.get_config()["bit_depth"]
    wanted = 8 if before != 8 else 32
    with DaqProxy(daq_sim.url) as proxy:
        proxy.drop_reply.add("POST /daq/config")
        update = StdDaqClient(proxy.url, timeout=2).update_config({"bit_depth": wanted}, timeout=20)
        posts = [f for f in proxy.forwarded if f[:2] == ("POST", "/daq/config")]
    assert wanted == update.config["bit_depth"] == client.get_config()["bit_depth"]
    assert 1 == len(posts)
    assert "SUCCESS" == update.deployment["status"]


@responses.activate
def test_write_refused_with_503_is_retried(client):
    """HTTP 503 means not processed: a write may be sent again."""
    responses.post(BASE + "/writer/write_async", status=503, body="unavailable")
    responses.post(BASE + "/writer/write_async", json=ok("writer", STATUS))
    assert STATUS == client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1})
    assert 2 == len(responses.calls)


def test_write_to_refused_connection_is_retried_then_transport_error():
    """Connection refused: the write never reached the server, so it is retried."""
    from daq_runner.sim.redis_server import free_port

    client = StdDaqClient(f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=1)
    with pytest.raises(DaqTransportError) as info:
        client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1})
    assert not isinstance(info.value, WriteOutcomeUnknown)


@responses.activate
def test_retry_deadline_stops_retrying():
    """retry_deadline bounds the retry time even with many retries left."""
    responses.get(BASE + "/writer/status", status=503, body="down")
    client = StdDaqClient(BASE, retries=50, retry_deadline=0.05)
    with pytest.raises(DaqTransportError):
        client.get_status()
    assert 1 == len(responses.calls)


@responses.activate
def test_retry_deadline_is_never_slept_past():
    """A retry whose pause would end past the deadline is not made: the budget is kept."""
    responses.get(BASE + "/writer/status", status=503, body="down")
    client = StdDaqClient(BASE, retries=50, retry_deadline=1.0)
    started = time.monotonic()
    with pytest.raises(DaqTransportError):
        client.get_status()
    # Stopping only once the deadline has passed always ends at 1 s or later (the pause
    # that crosses it is slept); stopping before such a pause ends before 1 s.
    assert time.monotonic() - started < 1.03
    assert len(responses.calls) >= 3


def test_retry_sleep_can_end_the_retries():
    """The sleep hook may raise (a stop request): retries end at once with its exception."""

    class Stopped(Exception):
        pass

    def sleep(seconds):
        raise Stopped()

    from daq_runner.sim.redis_server import free_port

    client = StdDaqClient(f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=50, sleep=sleep)
    with pytest.raises(Stopped):
        client.get_status()


@responses.activate
def test_on_retry_hook_is_called(client):
    """on_retry sees every retry with the error."""
    seen = []
    client.on_retry = lambda url, attempt, error, sleep: seen.append((attempt, type(error).__name__))
    responses.get(BASE + "/writer/status", status=503, body="down")
    responses.get(BASE + "/writer/status", json=ok("writer", STATUS))
    client.get_status()
    assert [(1, "DaqTransportError")] == seen


def test_negative_retries_refused():
    """retries < 0 is a programming error."""
    with pytest.raises(ValueError):
        StdDaqClient(BASE, retries=-1)


def test_original_readme_example_runs_unchanged(daq_sim, tmp_path):
    """The original README's client example runs with ``from daq_runner import StdDaqClient``
    and sees what the real server gives: its partial set_config is refused (the last rest_v2
    version), update_config does the same change on any server."""
    from daq_runner import StdDaqAdminException
    from daq_runner import StdDaqClient as Client

    client = Client(url_base=daq_sim.url)
    client.get_status()
    client.get_config()
    with pytest.raises(StdDaqAdminException, match="int\\(\\) argument must be"):
        client.set_config(daq_config={"bit_depth": 16, "writer_user_id": 0})
    assert 16 == client.update_config({"bit_depth": 16, "writer_user_id": 0}).config["bit_depth"]
    client.get_logs(n_last_logs=5)
    client.get_stats()
    client.get_deployment_status()
    out = str(tmp_path / "output.h5")
    client.start_writer_async({"output_file": out, "n_images": 10})
    client.stop_writer()
    status = client.start_writer_sync({"output_file": out, "n_images": 10})
    assert "FINISHED" == status["acquisition"]["state"]
    assert 10 == status["acquisition"]["stats"]["n_write_completed"]
    client.stop_writer()


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, call, text",
    [
        (protocol.WRITER_WRITE_ASYNC, lambda c: c.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1}), "Cannot reach WRITING. Writer needs to be restarted."),
        (protocol.WRITER_STOP, lambda c: c.stop_writer(), "Cannot reach READY. Writer needs to be restarted."),
    ],
)
@responses.activate
def test_restart_refusal_is_writer_needs_restart(client, endpoint, call, text):
    """The server's "Writer needs to be restarted." is WriterNeedsRestart, a refusal; not retried."""
    from daq_runner import WriterNeedsRestart

    responses.add(endpoint.method, BASE + endpoint.path, json={"status": "error", "message": text})
    with pytest.raises(WriterNeedsRestart) as info:
        call(client)
    assert isinstance(info.value, StdDaqAdminException) and not isinstance(info.value, RuntimeError)
    assert text == str(info.value)
    assert 1 == len(responses.calls)


@responses.activate
def test_refusal_text_is_one_clean_line(client):
    """A multi-line refusal with terminal escapes is quoted as one line without control characters."""
    message = "Cannot start new acquisition while previous one is running:\n {'state': 'WRITING'}\x1b[2J\x07\x00"
    responses.post(BASE + "/writer/write_async", json={"status": "error", "message": message})
    with pytest.raises(StdDaqAdminException) as info:
        client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1})
    text = str(info.value)
    assert "\n" not in text and "\x1b" not in text and "\x07" not in text and "\x00" not in text
    assert text.startswith("Cannot start new acquisition while previous one is running: {'state': 'WRITING'}")
    assert "\\x1b[2J" in text


@pytest.mark.parametrize("message", [None, "", ["a", "list"], {"an": "object"}, 42])
@responses.activate
def test_refusal_with_odd_message_is_still_a_refusal(client, message):
    """A refusal whose message is missing, empty or not a string is still a StdDaqAdminException."""
    responses.get(BASE + "/writer/status", json={"status": "error", "message": message})
    with pytest.raises(StdDaqAdminException) as info:
        client.get_status()
    assert str(info.value) and "\n" not in str(info.value)


# -- replies of the wrong shape ------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, reply, text",
    [
        (protocol.WRITER_STATUS, ok("writer", None), "writer must be an object, not null"),
        (protocol.WRITER_STATUS, ok("writer", []), "writer must be an object, not a list"),
        (protocol.WRITER_STATUS, ok("writer", 7), "writer must be an object, not a number"),
        (protocol.WRITER_STATUS, ok("writer", {"state": 1}), "writer.state must be a string, not a number"),
        (protocol.WRITER_STATUS, ok("writer", {"acquisition": None}), "writer.state must be a string, not null"),
        (protocol.WRITER_STATUS, ok("writer", {"state": "READY", "acquisition": "x"}), "writer.acquisition must be an object or null"),
        (protocol.WRITER_STATUS, ok("writer", {"state": "READY", "acquisition": {"state": ["FINISHED"]}}), "writer.acquisition.state must be a string"),
        (protocol.WRITER_STATUS, ok("writer", {"state": "READY", "acquisition": {"stats": {"n_write_completed": "3"}}}), "writer.acquisition.stats.n_write_completed must be a number"),
        (protocol.DAQ_CONFIG_GET, ok("config", [1, 2]), "config must be an object or null, not a list"),
        (protocol.DAQ_CONFIG_GET, ok("config", {"bit_depth": 16}, config_id=5), "config_id must be a string or null"),
        (protocol.DAQ_STATS, ok("stats", "fast"), "stats must be an object or null, not a string"),
        (protocol.DAQ_STATS, ok("stats", {"writer": {"images_per_second": "many"}}), "stats.writer.images_per_second must be a number"),
        (protocol.DAQ_DEPLOYMENT, ok("deployment", None), "deployment must be an object, not null"),
        (protocol.DAQ_DEPLOYMENT, ok("deployment", {"status": None}), "deployment.status must be a string"),
        (protocol.DAQ_DEPLOYMENT, ok("deployment", {"status": "SUCCESS", "servers": ["a"]}), "deployment.servers must be an object or null"),
    ],
)
@responses.activate
def test_reply_of_the_wrong_shape_is_a_protocol_error_naming_the_endpoint(client, endpoint, reply, text):
    """A payload of the wrong shape is one DaqProtocolError naming the request, not a TypeError later."""
    responses.add(endpoint.method, BASE + endpoint.path, json=reply)
    with pytest.raises(DaqProtocolError) as info:
        client.request(endpoint)
    message = str(info.value)
    assert text in message and f"{endpoint.method} {BASE}{endpoint.path}" in message
    assert 1 == len(message.splitlines()) and info.value.url == BASE + endpoint.path
    assert 1 == len(responses.calls), "a protocol error is not retried"


@pytest.mark.parametrize("body", ["[1, 2]", "42", "null", '"text"', "[" * 100000 + "]" * 100000])
@responses.activate
def test_non_object_json_is_a_protocol_error(client, body):
    """A JSON list, number, null or string, or JSON nested too deep, is a DaqProtocolError."""
    responses.get(BASE + "/writer/status", body=body, content_type="application/json")
    with pytest.raises(DaqProtocolError) as info:
        client.get_status()
    assert len(str(info.value)) < 600


@responses.activate
def test_logs_records_of_the_wrong_shape_are_refused(client):
    """A log record that is not an object, or logs that are a number, are protocol errors."""
    responses.get(BASE + "/daq/logs/2", json=ok("logs", {"1-0": None}))
    with pytest.raises(DaqProtocolError, match=r"logs\['1-0'\] must be an object"):
        client.get_logs(2)
    responses.replace(responses.GET, BASE + "/daq/logs/2", json=ok("logs", 3))
    with pytest.raises(DaqProtocolError, match="logs must be a list or an object"):
        client.get_logs(2)


@responses.activate
def test_what_real_servers_send_is_accepted(client):
    """Config null, stats null, acquisition null or with null fields, logs as dict with `reports`, extra keys."""
    responses.get(BASE + "/daq/config", json=ok("config", None, config_id=None))
    responses.get(BASE + "/daq/stats", json=ok("stats", None))
    acquisition = {
        "info": {"n_images": 5, "output_file": "/tmp/a.h5", "run_id": 1685000000123456789},
        "message": "",
        "state": "ACQUIRING_IMAGES",
        "stats": {"n_write_completed": 0, "n_write_requested": 2, "start_time": 1.5, "stop_time": None},
        "reports": None,
    }
    responses.get(BASE + "/writer/status", json=ok("writer", {"state": "WRITING", "acquisition": acquisition, "extra": 1}))
    responses.get(BASE + "/daq/logs/1", json=ok("logs", {"1685000000000-0": {**acquisition, "state": "FINISHED", "reports": []}}))
    responses.get(BASE + "/daq/deployment", json=ok("deployment", {
        "config_id": "1-0", "status": "UNKNOWN", "message": "Waiting for servers...", "servers": {}, "stats": {"start_time": None, "stop_time": None},
    }))
    assert client.get_config() is None and client.get_stats() is None
    assert "WRITING" == client.get_status()["state"]
    assert "FINISHED" == client.get_logs(1)[0]["state"]
    assert "UNKNOWN" == client.get_deployment_status()["status"]
    responses.replace(responses.GET, BASE + "/writer/status", json=ok("writer", {"state": "UNKNOWN", "acquisition": None}))
    assert client.get_status()["acquisition"] is None
    responses.replace(responses.GET, BASE + "/writer/status", json=ok("writer", {"state": "READY", "acquisition": {
        "info": {"n_images": None, "output_file": None, "run_id": None}, "message": None, "state": None, "stats": None}}))
    assert "READY" == client.get_status()["state"]


# -- redirects -----------------------------------------------------------------------------


@responses.activate
def test_redirected_post_is_not_followed(client):
    """A 3xx to a POST is an error naming the Location (credentials masked); nothing is re-sent."""
    responses.post(BASE + "/writer/write_async", status=307, headers={"Location": "http://u:pw@other:5000/writer/write_async"})
    responses.post("http://other:5000/writer/write_async", json=ok("writer", STATUS))
    with pytest.raises(DaqHTTPError) as info:
        client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1})
    message = str(info.value)
    assert "307" in message and "redirect to http://***@other:5000/writer/write_async" in message
    assert "pw" not in message and 1 == len(responses.calls)


@responses.activate
def test_redirected_get_is_followed(client):
    """A GET may follow a redirect (nothing changes on the DAQ)."""
    responses.get(BASE + "/writer/status", status=302, headers={"Location": BASE + "/v2/writer/status"})
    responses.get(BASE + "/v2/writer/status", json=ok("writer", STATUS))
    assert STATUS == client.get_status()


# -- credentials never shown ---------------------------------------------------------------


@responses.activate
def test_credentials_never_appear_in_messages_urls_or_retry_notices():
    """user:password in url_base is `***` in str(), .url, repr and on_retry's url."""
    secret_base = "http://daquser:s3cret@daq.test:5000"
    seen = []
    client = StdDaqClient(secret_base, retries=1, on_retry=lambda url, attempt, error, sleep: seen.append((url, str(error))))
    responses.get(BASE + "/writer/status", status=503, body="down")
    responses.post(BASE + "/writer/write_async", json={"status": "error", "message": "no"})
    responses.get(BASE + "/daq/config", json=ok("config", []))
    errors = []
    for call in (client.get_status, lambda: client.start_writer_async({"output_file": "/a.h5", "n_images": 1}), client.get_config):
        with pytest.raises(Exception) as info:
            call()
        errors.append(info.value)
    texts = [str(e) for e in errors] + [getattr(e, "url", "") or "" for e in errors] + [repr(client)] + [u + m for u, m in seen]
    assert seen and all("s3cret" not in t and "daquser" not in t for t in texts), texts
    assert all("***@daq.test:5000" in (getattr(e, "url", "") or "") for e in errors)


# -- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["htp://daq:5000", "daq:5000", "ftp://daq", "http://", "http://daq:99999", 5000, None])
def test_url_that_is_not_http_is_refused(url):
    """url_base must be an http(s) URL with a host: a ValueError at once, not an 'unreachable' later."""
    with pytest.raises(ValueError):
        StdDaqClient(url)


@pytest.mark.parametrize("name", ["timeout", "sync_timeout", "write_timeout"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "abc", True])
def test_timeouts_must_be_finite_and_positive(name, value):
    """Every time limit is a finite number > 0."""
    with pytest.raises(ValueError, match=name):
        StdDaqClient(BASE, **{name: value})


# -- the caller's bound and the retries ---------------------------------------------------


@responses.activate
def test_retries_stop_before_a_pause_that_would_pass_the_callers_bound(monkeypatch):
    """No retry whose pause reaches the bound: DeadlineExceeded, naming the last error, well before the bound."""
    import daq_runner.client
    from daq_runner import DeadlineExceeded, _deadline

    pauses = []
    monkeypatch.setattr(daq_runner.client, "_pause", lambda s: (pauses.append(s), time.sleep(s)))
    responses.get(BASE + "/writer/status", status=503, body="down")
    client = StdDaqClient(BASE, retries=1000)
    started = time.monotonic()
    with _deadline.bounded(_deadline.Deadline(1.0)):
        with pytest.raises(DeadlineExceeded, match="503") as info:
            client.get_status()
    assert time.monotonic() - started < 1.1  # the last pause ends before the bound; one attempt follows
    assert isinstance(info.value.__cause__, DaqTransportError)
    assert len(responses.calls) == len(pauses) + 1 >= 3


@responses.activate
def test_own_retry_budget_is_not_deadline_exceeded():
    """When the client's own retries run out first, the last transport error is raised, not DeadlineExceeded."""
    from daq_runner import DeadlineExceeded, _deadline

    responses.get(BASE + "/writer/status", status=503, body="down")
    with _deadline.bounded(_deadline.Deadline(60.0)):
        with pytest.raises(DaqTransportError) as info:
            StdDaqClient(BASE, retries=2, sleep=lambda s: None).get_status()
    assert not isinstance(info.value, DeadlineExceeded)


def test_retry_pause_goes_through_the_bound(monkeypatch):
    """The default pause is the bound's sleep: it never sleeps past the bound."""
    from daq_runner import _deadline
    from daq_runner.client import _pause

    started = time.monotonic()
    with _deadline.bounded(_deadline.Deadline(0.2)):
        _pause(5.0)
    assert time.monotonic() - started < 0.5


# -- update_config (HTTP handling) -------------------------------------------------------------

FULL = {
    "detector_name": "EG9M",
    "detector_type": "eiger",
    "bit_depth": 16,
    "image_pixel_height": 512,
    "image_pixel_width": 1024,
    "n_modules": 2,
    "start_udp_port": 50000,
    "writer_user_id": 0,
    # What GET returns, carried back exactly (the real server can only store it as it is).
    "module_positions": {},
    "submodule_info": {},
}


def deployment(config_id, status, message="", servers=None):
    return ok("deployment", {"config_id": config_id, "status": status, "message": message, "servers": servers or {}, "stats": {}})


def config_reply(config, config_id):
    return ok("config", config, config_id=config_id)


@responses.activate
def test_update_config_sends_the_whole_config_and_waits_for_the_new_deployment(client):
    """GET, merge, POST the whole config, find the new config_id, follow its deployment, check the result."""
    changed = {**FULL, "bit_depth": 32}
    responses.get(BASE + "/daq/config", json=config_reply(FULL, "100-0"))
    responses.post(BASE + "/daq/config", json=ok("config", changed, config_id=None), match=[matchers.json_params_matcher(changed)])
    responses.get(BASE + "/daq/config", json=config_reply(changed, "200-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("100-0", "SUCCESS"))  # not ours yet
    responses.get(BASE + "/daq/deployment", json=deployment("200-0", "UNKNOWN", "Waiting for servers..."))
    responses.get(BASE + "/daq/deployment", json=deployment("200-0", "UNKNOWN", "Waiting for servers..."))
    responses.get(BASE + "/daq/deployment", json=deployment("200-0", "SUCCESS", "Deployment successful", {"daq-1": "Done"}))
    seen = []
    applied = client.update_config({"bit_depth": "32"}, on_deployment=lambda d: seen.append(d["status"]))
    assert ["UNKNOWN", "SUCCESS"] == seen, "once per status change"
    assert "200-0" == applied.config_id and changed == applied.config and "SUCCESS" == applied.deployment["status"]
    posted = [c for c in responses.calls if c.request.method == "POST"]
    assert 1 == len(posted) and changed == json.loads(posted[0].request.body)


@pytest.mark.parametrize(
    "changes, text",
    [
        ({"bit_depth": 12}, "bit_depth must be one of 8, 16, 32"),
        ({"bitdepth": 16}, "unknown config field(s): bitdepth"),
        ({"bit_depth": True}, "must be an integer"),
        ({"n_modules": "two"}, "must be an integer"),
        ({"detector_type": "camera"}, "detector_type must be one of"),
        ({"module_positions": [[0, 0, 1, 1]]}, "module_positions must be an object"),
        ([("bit_depth", 16)], "must be an object"),
    ],
)
@responses.activate
def test_update_config_refuses_bad_changes_before_sending_anything(client, changes, text):
    """Unknown fields and unwritable bit depths (which the real server silently accepts) are refused up front."""
    with pytest.raises(ValueError) as info:
        client.update_config(changes)
    assert text in str(info.value)
    assert 0 == len(responses.calls)


@responses.activate
def test_update_config_without_a_config_in_force_needs_a_whole_config(client):
    """Without a config in force there is nothing to merge into: a partial change is refused as the
    DAQ's state (DaqNotConfigured, a DaqError: a runner fails the step, never with an internal
    error), saying what the DAQ needs; nothing POSTed."""
    from daq_runner.exceptions import DaqError, DaqNotConfigured

    responses.get(BASE + "/daq/config", json=config_reply(None, None))
    with pytest.raises(DaqNotConfigured, match="has no configuration .* until its REST server restarts") as info:
        client.update_config({"bit_depth": 8})
    assert isinstance(info.value, DaqError) and not isinstance(info.value, ValueError)
    assert ["GET"] == [c.request.method for c in responses.calls]


@responses.activate
def test_update_config_deployment_error_is_a_deployment_error(client):
    """A deployment that ends in ERROR raises DeploymentError with the DAQ's message and the status."""
    from daq_runner import DeploymentError

    responses.get(BASE + "/daq/config", json=config_reply(FULL, "1-0"))
    responses.post(BASE + "/daq/config", json=ok("config", FULL))
    responses.get(BASE + "/daq/config", json=config_reply(FULL, "2-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("2-0", "ERROR", "Deployment failed on daq-1: boom\n", {"daq-1": "Error"}))
    with pytest.raises(DeploymentError, match="deployment of config 2-0 failed: Deployment failed on daq-1: boom") as info:
        client.update_config({"bit_depth": 16})
    assert "ERROR" == info.value.deployment["status"] and "2-0" == info.value.config_id
    assert isinstance(info.value, RuntimeError)


@responses.activate
def test_update_config_that_did_not_take_is_a_deployment_error(client):
    """SUCCESS but the config read back lacks the change: DeploymentError naming the field."""
    from daq_runner import DeploymentError

    responses.get(BASE + "/daq/config", json=config_reply(FULL, "1-0"))
    responses.post(BASE + "/daq/config", json=ok("config", None))
    responses.get(BASE + "/daq/config", json=config_reply(FULL, "2-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("2-0", "SUCCESS"))
    with pytest.raises(DeploymentError, match="does not show the change: bit_depth is 16, not 8"):
        client.update_config({"bit_depth": 8})


@responses.activate
def test_update_config_not_deployed_in_time_is_a_deployment_error(client):
    """A deployment stuck in UNKNOWN ends at `timeout` with DeploymentError and the last status."""
    from daq_runner import DeadlineExceeded, DeploymentError

    responses.get(BASE + "/daq/config", json=config_reply(FULL, "1-0"))
    responses.post(BASE + "/daq/config", json=ok("config", None))
    responses.get(BASE + "/daq/config", json=config_reply({**FULL, "bit_depth": 8}, "2-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("2-0", "UNKNOWN", "Waiting for servers..."))
    started = time.monotonic()
    with pytest.raises(DeploymentError) as info:
        client.update_config({"bit_depth": 8}, timeout=0.5)
    assert time.monotonic() - started < 1.0
    message = str(info.value)
    assert "not done within 0.5 s" in message and "last deployment status UNKNOWN: Waiting for servers..." in message
    assert not isinstance(info.value, DeadlineExceeded)


@responses.activate
def test_update_config_ended_by_the_callers_bound_is_deadline_exceeded(client):
    """When the caller's bound (not update_config's timeout) ends it, DeadlineExceeded."""
    from daq_runner import DeadlineExceeded, _deadline

    responses.get(BASE + "/daq/config", json=config_reply(FULL, "1-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("1-0", "SUCCESS"))
    responses.post(BASE + "/daq/config", json=ok("config", None))
    responses.get(BASE + "/daq/config", json=config_reply(FULL, "1-0"))  # the new id never shows
    with _deadline.bounded(_deadline.Deadline(0.4)):
        with pytest.raises(DeadlineExceeded):
            client.update_config({"bit_depth": 8}, timeout=30)


@responses.activate
def test_update_config_superseded_by_another_config(client):
    """Another config stored after ours ends the wait: DeploymentError, not a wait to the timeout."""
    from daq_runner import DeploymentError

    responses.get(BASE + "/daq/config", json=config_reply(FULL, "1-0"))
    responses.post(BASE + "/daq/config", json=ok("config", None))
    responses.get(BASE + "/daq/config", json=config_reply(FULL, "2-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("3-0", "RUNNING"))
    with pytest.raises(DeploymentError, match="superseded by config 3-0"):
        client.update_config({"bit_depth": 8})


@responses.activate
def test_update_config_refused_by_the_daq(client):
    """The real last rest_v2 refusal text of a config is a StdDaqAdminException."""
    text = "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"
    responses.get(BASE + "/daq/config", json=config_reply(FULL, "1-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("1-0", "SUCCESS"))
    responses.post(BASE + "/daq/config", json={"status": "error", "message": text})
    with pytest.raises(StdDaqAdminException, match="int\\(\\) argument"):
        client.update_config({"bit_depth": 8})


@responses.activate
def test_update_config_waits_for_every_server_of_the_last_deployment(client):
    """SUCCESS while one of the two servers has reported is not the end (the real server says
    SUCCESS for the servers that have reported so far): the second one's Error fails it."""
    from daq_runner import DeploymentError

    changed = {**FULL, "bit_depth": 8}
    two = {"daq-0": "Done", "daq-1": "Done"}
    responses.get(BASE + "/daq/config", json=config_reply(FULL, "1-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("1-0", "SUCCESS", "Deployment successful", two))
    responses.post(BASE + "/daq/config", json=ok("config", changed, config_id=None))
    responses.get(BASE + "/daq/config", json=config_reply(changed, "2-0"))
    responses.get(BASE + "/daq/deployment", json=deployment("2-0", "SUCCESS", "Deployment successful", {"daq-0": "Done"}))
    responses.get(BASE + "/daq/deployment", json=deployment("2-0", "SUCCESS", "Deployment successful", {"daq-0": "Done"}))
    responses.get(BASE + "/daq/deployment", json=deployment("2-0", "ERROR", "Deployment failed", {"daq-0": "Done", "daq-1": "Error"}))
    with pytest.raises(DeploymentError, match="failed"):
        client.update_config({"bit_depth": 8})


# -- update_config on the real simulator -----------------------------------------------------


def test_update_config_on_the_simulator(daq_sim):
    """Against daq-sim: the change is deployed, read back, and module_positions is untouched."""
    client = StdDaqClient(daq_sim.url)
    before = client.get_config()
    seen = []
    applied = client.update_config({"bit_depth": 8, "writer_user_id": "12345"}, timeout=10, on_deployment=seen.append)
    assert 8 == applied.config["bit_depth"] and 12345 == applied.config["writer_user_id"]
    assert before["module_positions"] == applied.config["module_positions"]
    assert "SUCCESS" == applied.deployment["status"] and applied.config_id == applied.deployment["config_id"]
    assert seen and "SUCCESS" == seen[-1]["status"]
    assert applied.config == client.get_config()
    assert applied.config_id == client.request(protocol.DAQ_CONFIG_GET)["config_id"]


def test_update_config_deployment_error_on_the_simulator(daq_sim):
    """daq-sim's deployment fault: update_config raises DeploymentError with the ERROR status."""
    from daq_runner import DeploymentError

    arm_faults(daq_sim, deployment="ERROR")
    with pytest.raises(DeploymentError) as info:
        StdDaqClient(daq_sim.url).update_config({"bit_depth": 32}, timeout=10)
    assert "ERROR" == info.value.deployment["status"]


def test_update_config_wait_restart_returns_once_the_services_are_back(daq_sim, tmp_path):
    """wait_restart: update_config returns only once the DAQ's services restarted with the new
    config and are back (the detector's rate in GET /daq/stats dropped to 0 and came back), so a
    write right after runs with it."""
    client = StdDaqClient(daq_sim.url, sleep=time.sleep)
    applied = client.update_config({"bit_depth": 8}, timeout=20, wait_restart=True)
    assert (True, "zeros") == (applied.restart["seen"], applied.restart["sign"]), applied.restart
    assert applied.restart["down_after_s"] < applied.restart["back_after_s"]
    assert (8, False) == (daq_sim.core.config["bit_depth"], daq_sim.core.services_down)
    reply = client.start_writer_sync({"output_file": str(tmp_path / "a.h5"), "n_images": 2})
    assert "FINISHED" == reply["acquisition"]["state"]
    import h5py

    with h5py.File(tmp_path / "a.h5") as handle:
        (group,) = handle.values()
        assert "uint8" == str(group["data"].dtype)


def test_update_config_returns_at_success_before_the_restart(daq_sim, tmp_path):
    """Without wait_restart update_config returns at SUCCESS, while the services still run the old
    config: a short write sent then is written at the old bit depth (why the runner waits)."""
    client = StdDaqClient(daq_sim.url, sleep=time.sleep)
    applied = client.update_config({"bit_depth": 8}, timeout=20)
    assert None is applied.restart
    client.start_writer_sync({"output_file": str(tmp_path / "a.h5"), "n_images": 2})
    import h5py

    with h5py.File(tmp_path / "a.h5") as handle:
        (group,) = handle.values()
        assert "uint16" == str(group["data"].dtype)


def test_update_config_wait_restart_without_a_sign_waits_the_window_out(daq_sim, monkeypatch):
    """A detector that sends nothing cannot show the restart: wait_restart waits out the window in
    which it begins (shortened here) and says it saw nothing; by then the services are back."""
    import daq_runner._restart

    monkeypatch.setattr(daq_runner._restart, "SIGN_WINDOW_S", 2.5)
    requests.post(daq_sim.url + "/sim/faults", json={"detector_rate": 0}, timeout=5).raise_for_status()
    client = StdDaqClient(daq_sim.url, sleep=time.sleep)
    wait_until(lambda: client.get_stats()["detector"]["images_per_second"] == 0)
    began = time.monotonic()
    applied = client.update_config({"bit_depth": 32}, timeout=20, wait_restart=True)
    assert time.monotonic() - began >= 2.5
    assert {"seen": False, "sign": None, "down_after_s": None, "back_after_s": None} == applied.restart
    assert (32, False) == (daq_sim.core.config["bit_depth"], daq_sim.core.services_down)


# -- the DAQ's own Redis down: its REST server answers "Error 111 connecting to ..." ------------


@pytest.fixture
def sim_own_redis(tmp_path):
    """A simulator on a Redis of its own that keeps its data on disk: kill() it, start() it again."""
    from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq
    from daq_runner.testing import skip_without_redis_server

    skip_without_redis_server()
    data = tmp_path / "redis"
    data.mkdir()
    servers = [RedisServer(data_dir=str(data)).start()]

    def restart_after(seconds):
        timer = threading.Timer(seconds, lambda: servers.append(RedisServer(port=servers[0].port, data_dir=str(data)).start()))
        timer.start()
        return timer

    with SimulatedDaq(redis_url=servers[0].url, settings=SimSettings(start_state="READY", frame_rate=500, heartbeat_s=0.3)) as sim:
        sim.kill_redis, sim.restart_redis_after = servers[0].kill, restart_after
        yield sim
    for server in servers:
        server.stop()


def test_the_daqs_redis_down_is_an_outage_ridden_out_not_a_refusal(sim_own_redis, tmp_path):
    """While the DAQ's Redis is down its REST server answers HTTP 200 "Error 111 connecting to ...":
    an outage (DaqRedisUnavailable, a transport error), retried like one; a write sent meanwhile
    starts once, as soon as Redis is back (with its data: the config is there)."""
    from daq_runner.exceptions import DaqRedisUnavailable

    retries = []
    client = StdDaqClient(sim_own_redis.url, retries=1000, retry_deadline=20, sleep=time.sleep, on_retry=lambda url, attempt, error, pause: retries.append(error))
    sim_own_redis.kill_redis()
    sim_own_redis.restart_redis_after(1.5)
    began = time.monotonic()
    reply = client.start_writer_async({"output_file": str(tmp_path / "a.h5"), "n_images": 5, "run_id": 7})
    assert time.monotonic() - began >= 1.0 and 7 == reply["acquisition"]["info"]["run_id"]
    assert retries and all(isinstance(e, DaqRedisUnavailable) for e in retries)
    assert "the DAQ cannot reach its own Redis: Error 111 connecting to" in str(retries[0])
    while client.get_status()["state"] == "WRITING":
        time.sleep(0.05)
    assert ("FINISHED", 5) == (client.get_status()["acquisition"]["state"], client.get_status()["acquisition"]["stats"]["n_write_completed"])
    assert 16 == client.get_config()["bit_depth"]


def test_the_daqs_redis_down_beyond_the_retry_budget_is_a_transport_error(sim_own_redis):
    """A DAQ whose Redis stays down beyond the client's budget: DaqRedisUnavailable, a
    DaqTransportError (daq-run: the DAQ unreachable), saying that the REST server cannot reach it."""
    from daq_runner.exceptions import DaqRedisUnavailable

    sim_own_redis.kill_redis()
    client = StdDaqClient(sim_own_redis.url, retries=1000, retry_deadline=1.0, sleep=time.sleep)
    with pytest.raises(DaqRedisUnavailable, match=r"GET .*/daq/config -> the DAQ cannot reach its own Redis: Error 111") as info:
        client.get_config()
    assert isinstance(info.value, DaqTransportError)
    assert "READY" == client.get_status()["state"], "the writer status does not need Redis"


@pytest.mark.parametrize("body", [{"output_file": "/tmp/a.h5", "n_images": float("nan")}, {"output_file": {1, 2}, "n_images": 1}])
@responses.activate
def test_body_that_is_not_json_is_refused_before_sending(client, body):
    """NaN or a set in a write request is a ValueError, not a 'write may have started'."""
    responses.post(BASE + "/writer/write_async", json=ok("writer", STATUS))
    with pytest.raises(ValueError, match="not JSON"):
        client.start_writer_async(body)
    assert 0 == len(responses.calls)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry_deadline": -1},
        {"retry_deadline": 0},
        {"retry_deadline": float("nan")},
        {"retry_deadline": "x"},
        {"retries": "3"},
        {"retries": None},
        {"retries": 1.5},
        {"retries": True},
    ],
)
def test_bad_retry_settings_are_refused_when_the_client_is_made(kwargs):
    """Checked in the constructor, as ValueError (they used to fail at the first request,
    be ignored (nan) or be rounded (1.5))."""
    with pytest.raises(ValueError, match="retr"):
        StdDaqClient(BASE, **kwargs)


@pytest.mark.parametrize("n", ["abc", None, 0, -1, 1.5, True, "0"])
@responses.activate
def test_get_logs_refuses_a_bad_count_before_sending(client, n):
    with pytest.raises(ValueError, match="n_last_logs must be a whole number >= 1"):
        client.get_logs(n)
    assert 0 == len(responses.calls)


@responses.activate
def test_get_logs_takes_a_count_as_text_as_the_original_did(client):
    responses.get(BASE + "/daq/logs/3", json=ok("logs", {}))
    assert [] == client.get_logs("3")


@responses.activate
def test_a_deeply_nested_reply_is_a_protocol_error(client):
    deep = {"x": 1}
    for _ in range(40):
        deep = {"x": deep}
    responses.get(BASE + "/daq/config", json=ok("config", deep))
    with pytest.raises(DaqProtocolError, match="nested more than 32 levels"):
        client.get_config()


def test_public_methods_are_annotated_with_the_protocol_shapes():
    """Every public method's annotations resolve (typing.get_type_hints), and the replies are typed by
    the protocol's TypedDicts, so an editor completes ``status["acquisition"]["info"]``."""
    import inspect
    import typing

    from daq_runner.client import ConfigUpdate

    public = [member for name, member in inspect.getmembers(StdDaqClient, inspect.isfunction) if not name.startswith("_")]
    assert len(public) >= 12
    hints = {member.__name__: typing.get_type_hints(member) for member in public}
    assert all("return" in hint for hint in hints.values()), hints
    returns = {name: hint["return"] for name, hint in hints.items()}
    status = protocol.WriterStatus
    assert {
        "get_status": status,
        "start_writer_async": status,
        "start_writer_sync": status,
        "stop_writer": status,
        "get_config": typing.Optional[protocol.DaqConfig],
        "set_config": typing.Optional[protocol.DaqConfig],
        "get_logs": typing.List[protocol.AcquisitionRecord],
        "get_stats": typing.Optional[protocol.DaqStats],
        "get_deployment_status": protocol.Deployment,
        "update_config": ConfigUpdate,
    }.items() <= returns.items()
    assert {"config": protocol.DaqConfig, "config_id": typing.Optional[str], "deployment": protocol.Deployment, "restart": typing.Optional[dict]} == typing.get_type_hints(ConfigUpdate)
    assert protocol.AcquisitionInfo == typing.get_type_hints(typing.get_type_hints(status)["acquisition"].__args__[0])["info"]
