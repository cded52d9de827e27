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

Helpers, for tests that start servers of their own:
    skip_without_redis_server(): the server binary's path, or skip the test with the fix.
    skip_without_sim_extra(): skip the test unless the ``sim`` extra can be imported.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import pytest

__all__ = [
    "daq_redis_server",
    "daq_sim_session",
    "daq_sim",
    "daq_sim_fresh",
    "run_batch",
    "skip_without_redis_server",
    "skip_without_sim_extra",
    "SIM_FRAME_RATE",
    "daq_driver_sim_session",
    "daq_driver_sim",
    "daq_driver_sim_per_connection_session",
    "daq_driver_sim_per_connection",
    "DRIVER_RESTART_S",
]

SIM_FRAME_RATE = 2000.0


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
