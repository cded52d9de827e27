"""Helpers for the simulator's tests: the original client, REST shortcuts, a freshly started DAQ.

Every test runs against the session's real daq-sim over HTTP and its real Redis (the
``daq_sim`` fixture of :mod:`daq_runner.testing` resets it to READY and restores its
settings); tests that need other start-up settings start a ``SimulatedDaq`` of their own.
"""

from __future__ import annotations

import json
from typing import Any, List, Tuple

import pytest
import redis
import requests
from std_daq_client.client import StdDaqClient as OriginalClient

# Longer than any reply of the simulator (a driver gives up after 5 s).
HTTP_TIMEOUT = 15


@pytest.fixture
def orig(daq_sim: Any) -> OriginalClient:
    """The original std_daq_client 1.3.5 pointed at the clean session simulator."""
    return OriginalClient(url_base=daq_sim.url)


@pytest.fixture
def fresh_sim(daq_sim_fresh: Any) -> Any:
    """The session's simulator as a freshly started real server: writer UNKNOWN, no acquisition."""
    return daq_sim_fresh


@pytest.fixture
def quick_driver(daq_sim: Any) -> Any:
    """The session's simulator whose writer driver gives up after 0.5 s instead of 5 s."""
    daq_sim.core.settings.driver_timeout_s = 0.5
    return daq_sim


def post(sim: Any, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
    return requests.post(sim.url + path, json=body, timeout=HTTP_TIMEOUT, **kwargs)


def get(sim: Any, path: str) -> requests.Response:
    return requests.get(sim.url + path, timeout=HTTP_TIMEOUT)


def ok(reply: requests.Response) -> dict:
    """The envelope of an HTTP 200 ``status: ok`` reply (fails the test otherwise)."""
    assert 200 == reply.status_code, reply.text
    envelope = reply.json()
    assert "ok" == envelope["status"], envelope
    return envelope


def refused(reply: requests.Response) -> str:
    """The message of an HTTP 200 ``status: error`` reply (fails the test otherwise)."""
    assert 200 == reply.status_code, reply.text
    envelope = reply.json()
    assert {"status", "message"} == set(envelope) and "error" == envelope["status"], envelope
    return envelope["message"]


def faults(sim: Any, **armed: Any) -> dict:
    """Arm faults (``POST /sim/faults``); what is armed now."""
    from daq_runner.testing import arm_faults

    return arm_faults(sim, **armed)


def status(sim: Any) -> dict:
    return ok(get(sim, "/writer/status"))["writer"]


def full_config(sim: Any, **changes: Any) -> dict:
    """The current config from GET with ``changes`` merged in: what every server version accepts."""
    return {**ok(get(sim, "/daq/config"))["config"], **changes}


def set_config(sim: Any, **changes: Any) -> dict:
    """POST the full config with ``changes``, wait until every server reported Done and the
    DAQ's services restarted with it (read from the simulator's state: a test of what the DAQ
    does after a config, not of how a client finds out).

    The restart loses an acquisition started before it.
    """
    deployed = set_config_deployed(sim, **changes)
    from ..conftest import wait_until

    wait_until(lambda: sim.core.config == deployed and not sim.core.services_down)
    return deployed


def set_config_deployed(sim: Any, **changes: Any) -> dict:
    """POST the full config with ``changes`` and wait until every server reported Done (the
    services restart ``restart_delay_s`` later)."""
    from ..conftest import wait_until

    config = ok(post(sim, "/daq/config", full_config(sim, **changes)))["config"]
    servers = set(sim.core.settings.servers)
    wait_until(lambda: (d := ok(get(sim, "/daq/deployment"))["deployment"])["status"] == "SUCCESS" and set(d["servers"]) == servers)
    return config


def entries(url: str, stream: str) -> List[Tuple[str, Any]]:
    """All entries of a stream as ``(id, decoded JSON)``, oldest first."""
    client = redis.Redis.from_url(url)
    try:
        return [(i.decode(), json.loads(f[b"json"])) for i, f in client.xrange(stream) if b"json" in f]
    finally:
        client.close()


def entry_time(entry_id: str) -> float:
    """The time (s) of a stream entry id ``<ms>-<seq>``."""
    return int(entry_id.split("-")[0]) / 1000.0
