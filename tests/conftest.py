"""Shared test helpers. The real simulator and Redis fixtures come from ``daq_runner.testing``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Optional, Tuple

import pytest

from daq_runner.sim.redis_server import RedisServerNotFound
from daq_runner.testing import arm_faults, skip_without_redis_server, stream_entries, wait_until  # noqa: F401 - shared with the tests

from .clean_repo import CleanRepo

BIN = Path(sysconfig.get_path("scripts"))
REPO = Path(__file__).resolve().parent.parent


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Give the commands the tests start Python's usual Ctrl-C (KeyboardInterrupt), and fail
    a session that leaves new files in the repository (see ``clean_repo``).

    A shell without job control starts a background command with SIGINT ignored, its
    children inherit that, and Python then installs no KeyboardInterrupt handler: tests that
    send SIGINT to daq-run would see it ignored (as with ``cmd &`` in a CI script). A
    handler, unlike "ignored", is reset to the default in every child that is started.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.pluginmanager.register(CleanRepo(REPO), "daq-runner-clean-repo")
    # Hypothesis keeps its examples and caches in .hypothesis/ of the current folder, from the
    # moment the tests are collected: under pytest's temporary folder instead.
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(config._tmp_path_factory.mktemp("hypothesis"))  # the session's own (tmp_path_factory)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    """A fixture that starts a Redis-compatible server on a machine without one: skipped, with the fix."""
    try:
        return (yield)
    except RedisServerNotFound as exc:
        pytest.skip(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A test that starts a Redis-compatible server on a machine without one: skipped, with the fix."""
    try:
        return (yield)
    except RedisServerNotFound as exc:
        pytest.skip(str(exc))


def script(name: str) -> str:
    """Path of an installed console script of this environment.

    ``daq-sim`` starts a Redis-compatible server (its own, or the test's): without one on
    the machine, the test is skipped.
    """
    if name == "daq-sim":
        skip_without_redis_server()
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}"
    return str(path)


def run_script(name: str, *args: str, env: Optional[dict] = None, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run an installed console script and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([script(name), *args], capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs)


def batch_file(tmp_path: Path, body: str, name: str = "b.yaml") -> Path:
    """Write a batch file into ``tmp_path``; ``{root}`` in ``body`` becomes ``tmp_path``."""
    path = tmp_path / name
    path.write_text(body.replace("{root}", str(tmp_path)))
    return path


def _room(args: Tuple[str, ...], check_disk: bool) -> Tuple[str, ...]:
    """``args`` of a run, with ``--allow-low-disk`` unless the test checks the disk: a test's "long"
    write (a million images, stopped after a moment) would be refused on a disk with less free
    space than its images would take (the estimate counts them all)."""
    if check_disk or not args or args[0] == "show" or any(a in ("--schema", "--version", "--help", "-h", "--validate") for a in args):
        return args
    return (*args, "--allow-low-disk")


def daq_run(*args: str, check_disk: bool = False, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run the installed ``daq-run`` to its end (with ``--sim``: skipped on a machine without a
    Redis-compatible server; ``check_disk``: without ``--allow-low-disk``)."""
    if "--sim" in args:
        skip_without_redis_server()
    return run_script("daq-run", *_room(args, check_disk), **kwargs)


def writer_state(url: str) -> Optional[str]:
    """The writer state over REST, ``None`` while the DAQ does not answer."""
    import requests

    try:
        return requests.get(url + "/writer/status", timeout=2).json()["writer"]["state"]
    except (requests.RequestException, ValueError, KeyError):
        return None


def start_daq_run(path: Path, *args: str) -> subprocess.Popen:
    """Start the installed ``daq-run`` in the background (``--allow-low-disk``: see :func:`daq_run`)."""
    return subprocess.Popen([script("daq-run"), str(path), *_room(args, False)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_daq_run_until_writing(daq_sim: Any, path: Path, report: Path, *args: str) -> subprocess.Popen:
    """Start ``daq-run`` on ``daq_sim`` in the background and return once the DAQ is writing."""
    redis = () if "--no-redis" in args else ("--redis", daq_sim.redis_url)
    proc = start_daq_run(path, "--url", daq_sim.url, *redis, "--report", str(report), *args)
    wait_until(lambda: writer_state(daq_sim.url) == "WRITING")
    return proc


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def zone(monkeypatch):
    """Sets this process's local time zone (``zone("Europe/Zurich")``); put back after the test."""
    import time

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()
