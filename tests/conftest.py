"""Shared test helpers. The real simulator and Redis fixtures come from ``daq_runner.testing``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import redis

BIN = Path(sysconfig.get_path("scripts"))
REPO = Path(__file__).resolve().parent.parent


def script(name: str) -> str:
    """Path of an installed console script of this environment."""
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}"
    return str(path)


def run_script(name: str, *args: str, env: Optional[dict] = None, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run an installed console script and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([script(name), *args], capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs)


def stream_entries(url: str, stream: str) -> list:
    """All entries of a stream as decoded JSON objects."""
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(fields[b"json"]) for _, fields in client.xrange(stream) if b"json" in fields]
    finally:
        client.close()


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def python() -> str:
    return sys.executable
