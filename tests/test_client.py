"""Unit tests of the client's HTTP handling (``responses``), one per method and error path."""

from __future__ import annotations

import json
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
    StdDaqClient,
    WriteOutcomeUnknown,
    api,
)

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
    import tenacity

    monkeypatch.setattr(tenacity.nap, "sleep", lambda seconds: None)


@pytest.mark.parametrize(
    "method, args, endpoint, body, payload",
    [
        ("get_status", (), api.WRITER_STATUS, None, STATUS),
        ("get_config", (), api.DAQ_CONFIG_GET, None, {"bit_depth": 16}),
        ("set_config", ({"bit_depth": 8},), api.DAQ_CONFIG_SET, {"bit_depth": 8}, {"bit_depth": 8}),
        ("get_stats", (), api.DAQ_STATS, None, {"detector": {}, "writer": {}}),
        ("get_deployment_status", (), api.DAQ_DEPLOYMENT, None, {"status": "SUCCESS"}),
        ("start_writer_async", ({"output_file": "/tmp/a.h5", "n_images": 3},), api.WRITER_WRITE_ASYNC, {"output_file": "/tmp/a.h5", "n_images": 3}, STATUS),
        ("start_writer_sync", ({"output_file": "/tmp/a.h5", "n_images": 3},), api.WRITER_WRITE_SYNC, {"output_file": "/tmp/a.h5", "n_images": 3}, STATUS),
        ("stop_writer", (), api.WRITER_STOP, {}, STATUS),
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
    client.get_status()
    client.start_writer_sync({"output_file": "/tmp/a.h5", "n_images": 1})
    assert [("status", (2.5, 2.5)), ("write_sync", (2.5, 75.0))] == seen


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
    client = StdDaqClient(BASE, retries=50, retry_deadline=0.0)
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
    """The original README's client example works with ``from daq_runner import StdDaqClient``."""
    from daq_runner import StdDaqClient as Client

    client = Client(url_base=daq_sim.url)
    client.get_status()
    client.get_config()
    client.set_config(daq_config={"bit_depth": 16, "writer_user_id": 0})
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
