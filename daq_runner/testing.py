"""Pytest fixtures for testing batch files and DAQ code against a real simulated DAQ.

Installed as a pytest plugin with daq-runner (needs the ``sim`` extra to use). A test
session starts one real Redis-compatible server and one simulator; each test gets it reset::

    def test_my_scan(daq_sim, run_batch):
        report = run_batch("batches/my-scan.yaml", root=str(tmp_path))
        assert report.status == "passed"

Without a Redis-compatible server on the machine, or without the ``sim`` extra, the tests
that use these fixtures are skipped, the reason giving the command that fixes it.

Fixtures:
    daq_redis_server: the session's :class:`~daq_runner.sim.RedisServer`.
    daq_sim_session: the session's :class:`~daq_runner.sim.SimulatedDaq` (no reset).
    daq_sim: the same, reset to a clean state (no faults, initial config, READY, empty streams).
    daq_sim_fresh: the same as a freshly started real DAQ: writer UNKNOWN, no acquisition.
    run_batch: ``run_batch(path_or_yaml_text, **vars)`` runs a batch on ``daq_sim``, returns the report
        (``allow_commands=True`` lets its ``run:`` steps run programs).
    daq_driver_sim_session, daq_driver_sim: the current generation (driver WebSocket and config
        REST, no Redis), persistent build; ``daq_driver_sim`` reset (initial config, no faults).
    daq_driver_sim_per_connection_session, daq_driver_sim_per_connection: the same, older build.

Helpers:
    arm_faults(sim, **faults): arm daq-sim's faults (``POST /sim/faults``), e.g.
        ``arm_faults(daq_sim, fail_next="ERROR: detector lost")``.
    wait_until(predicate, timeout=10.0): poll until ``predicate()`` is truthy; fail the test otherwise.
    stream_entries(redis_url, stream): every entry of a Redis stream, decoded.
    skip_without_redis_server(): the server binary's path, or skip the test with the fix.
    skip_without_sim_extra(): skip the test unless the ``sim`` extra can be imported.

In process, no servers at all (decision logic in milliseconds; see :mod:`daq_runner._scripted`)::

    def test_a_lost_reply_is_never_sent_twice(scripted_daq, tmp_path):
        scripted_daq.script(protocol.WRITER_WRITE_ASYNC, lost(handled=True))
        report = scripted_daq.runner().run(load_batch_text(...))
        assert 1 == scripted_daq.count(protocol.WRITER_WRITE_ASYNC)

    scripted_daq: a fresh :class:`ScriptedDaq` (writer READY, daq-sim's config, no faults).
    ScriptedDaq: a rest_v2 DAQ modelled in this process under the real client (a ``requests``
        adapter), with a script of faults per request: :func:`lost`, :func:`refused`,
        :func:`needs_restart`, :func:`http_error`, :func:`unreachable`, :func:`malformed`,
        :func:`stale`, :func:`slow`, :func:`before`, :func:`after` (each a :class:`Fault`).
    RecordedRun: the services of a run, to drive a :class:`~daq_runner.daq.Daq` without a Runner.
    FAST_TIMING: the :class:`~daq_runner.rest_v2.RestV2Timing` a scripted DAQ's RestV2Daq uses.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

__all__ = [
    "daq_redis_server",
    "daq_sim_session",
    "daq_sim",
    "daq_sim_fresh",
    "run_batch",
    "scripted_daq",
    "arm_faults",
    "wait_until",
    "stream_entries",
    "skip_without_redis_server",
    "skip_without_sim_extra",
    "SIM_FRAME_RATE",
    "daq_driver_sim_session",
    "daq_driver_sim",
    "daq_driver_sim_per_connection_session",
    "daq_driver_sim_per_connection",
    "DRIVER_RESTART_S",
    # in process (daq_runner._scripted, imported when first used)
    "ScriptedDaq",
    "RecordedRun",
    "Fault",
    "FAST_TIMING",
    "lost",
    "refused",
    "needs_restart",
    "http_error",
    "unreachable",
    "malformed",
    "stale",
    "slow",
    "before",
    "after",
]

SIM_FRAME_RATE = 2000.0

# Names of the in-process DAQ, imported on first use: this module is a pytest plugin, loaded by
# every test session of an environment with daq-runner, and requests with the client's
# transport would add a fifth of a second to each start-up.
_SCRIPTED = frozenset(__all__[__all__.index("ScriptedDaq") :])


def __getattr__(name: str) -> Any:
    if name in _SCRIPTED:
        from . import _scripted

        return getattr(_scripted, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def arm_faults(sim: Any, **faults: Any) -> Dict[str, Any]:
    """Arm faults of a daq-sim of either generation (``POST /sim/faults``; ``sim`` has its ``url``);
    returns what is armed.

    E.g. ``writer_state="UNKNOWN"`` (a writer restart), ``fail_next="ERROR: <reason>"``,
    ``unavailable_s=N``, ``deployment="ERROR"``, ``stall_s=N``: every fault ``docs/daq-sim.md`` lists.

    Raises:
        requests.HTTPError: the simulator refused them (HTTP 422 for an unknown fault).
    """
    import requests

    reply = requests.post(sim.url + "/sim/faults", json=faults, timeout=5)
    reply.raise_for_status()
    return reply.json()["faults"]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate()`` every ``interval`` s until it returns something truthy, and return
    that; fail the calling test when ``timeout`` s pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def stream_entries(redis_url: str, stream: str) -> List[Any]:
    """Every entry of the Redis stream ``stream`` at ``redis_url``, oldest first, as decoded JSON
    (the ``json`` field each DAQ stream entry has; entries without one are left out)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(fields[b"json"]) for _, fields in client.xrange(stream) if b"json" in fields]
    finally:
        client.close()


def skip_without_redis_server() -> str:
    """Path of a Redis-compatible server binary (see ``find_redis_server``).

    Skips the calling test when there is none, with the reason and the command that fixes
    it (a pytest skip: call it from a test or a fixture).
    """
    from .sim.redis_server import RedisServerNotFound, find_redis_server

    try:
        return find_redis_server()
    except RedisServerNotFound as exc:
        pytest.skip(str(exc))


def skip_without_sim_extra() -> None:
    """Skip the calling test unless the ``sim`` extra (FastAPI, uvicorn, h5py, numpy) imports."""
    from .sim._extra import SimExtraMissing, require_sim_extra

    try:
        require_sim_extra()
    except SimExtraMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def daq_redis_server() -> Iterator[Any]:
    """A real Redis-compatible server on a free loopback port for the whole session."""
    from .sim.redis_server import RedisServer

    with RedisServer(binary=skip_without_redis_server()) as server:
        yield server


@pytest.fixture(scope="session")
def daq_sim_session(daq_redis_server: Any) -> Iterator[Any]:
    """One simulated DAQ for the session, publishing to ``daq_redis_server``."""
    skip_without_sim_extra()
    from .sim import SimSettings, SimulatedDaq

    settings = SimSettings(frame_rate=SIM_FRAME_RATE, deploy_delay_s=0.05, heartbeat_s=0.5)
    with SimulatedDaq(redis_url=daq_redis_server.url, settings=settings) as sim:
        yield sim


@pytest.fixture
def daq_sim(daq_sim_session: Any) -> Any:
    """The session's simulated DAQ in a clean state: no faults, initial config, writer READY."""
    import redis

    sim = daq_sim_session
    if sim.redis_server is None and sim.redis_url:
        client = redis.Redis.from_url(sim.redis_url)
        try:
            client.flushdb()
        except redis.RedisError:
            pass
        finally:
            client.close()
    sim.core.settings.frame_rate = SIM_FRAME_RATE
    sim.core.reset()
    return sim


@pytest.fixture
def daq_sim_fresh(daq_sim: Any) -> Any:
    """The session's simulated DAQ as a freshly started real one: writer UNKNOWN, no acquisition."""
    daq_sim.core.reset(start_state="UNKNOWN")
    return daq_sim


@pytest.fixture
def run_batch(daq_sim: Any, tmp_path: Any) -> Callable[..., Any]:
    """Run a batch file (path, or YAML text) on the clean simulator; ``root`` defaults to ``tmp_path``."""
    from .batch import load_batch, load_batch_text
    from .runner import Runner

    def run(batch: str, consumers: Any = (), *, allow_commands: bool = False, **variables: Any) -> Any:
        root = {"root": str(tmp_path)}  # a default: not an error when the batch has no {root}
        if os.path.exists(batch):
            plan = load_batch(batch, vars=variables, optional_vars=root, allow_commands=allow_commands)
        else:
            plan = load_batch_text(batch, vars=variables, optional_vars=root, allow_commands=allow_commands)
        runner = Runner(daq_sim.url, daq_sim.redis_url, consumers, retry_delay=0.05)
        return runner.run(plan)

    return run


# -- The current generation (std_det_driver and its config REST): no Redis --------------------

# How long the simulated services are down after a stored config or a crash (tests: short).
DRIVER_RESTART_S = 0.3


def _driver_sim(build: str) -> Iterator[Any]:
    skip_without_sim_extra()
    from .sim.driver import DriverSimSettings, SimulatedDriverDaq

    settings = DriverSimSettings(build=build, frame_rate=SIM_FRAME_RATE, restart_s=DRIVER_RESTART_S)
    with SimulatedDriverDaq(settings=settings) as sim:
        yield sim


@pytest.fixture(scope="session")
def daq_driver_sim_session() -> Iterator[Any]:
    """One simulated current-generation DAQ (persistent driver build) for the whole session."""
    yield from _driver_sim("persistent")


@pytest.fixture
def daq_driver_sim(daq_driver_sim_session: Any) -> Any:
    """The session's current-generation DAQ reset: initial config, no faults, idle, no sessions."""
    daq_driver_sim_session.core.reset()
    return daq_driver_sim_session


@pytest.fixture(scope="session")
def daq_driver_sim_per_connection_session() -> Iterator[Any]:
    """One simulated current-generation DAQ with an older, per-connection driver build."""
    yield from _driver_sim("per-connection")


@pytest.fixture
def daq_driver_sim_per_connection(daq_driver_sim_per_connection_session: Any) -> Any:
    """The session's per-connection DAQ reset: initial config, no faults, idle, no sessions."""
    daq_driver_sim_per_connection_session.core.reset()
    return daq_driver_sim_per_connection_session


@pytest.fixture
def scripted_daq() -> Iterator[Any]:
    """A fresh in-process :class:`ScriptedDaq`: writer READY, daq-sim's config, nothing scripted."""
    from ._scripted import ScriptedDaq

    with ScriptedDaq() as daq:
        yield daq
