"""The simulator embedded in another program: quiet, and out of reach of the terminal's Ctrl-C.

A terminal sends Ctrl-C to its whole foreground process group. The embedded simulator's
Redis-compatible server is a child process: in the program's group it would stop at once,
under a program still stopping its acquisition, writing its report and releasing its lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import requests

from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq
from daq_runner.testing import skip_without_redis_server

from ..conftest import batch_file, script, wait_until
from .conftest import ok, post

BATCH = """\
version: 1
name: interrupted
vars: {root: /tmp}
steps:
  - write: {output_file: "{root}/long.h5", n_images: 1000000}
"""


def test_ctrl_c_on_a_terminal_ends_daq_run_sim_cleanly(tmp_path):
    """SIGINT to the whole process group of daq-run --sim, as a terminal sends it: exit 130, the report
    written (interrupted), and no Redis fallback or simulator lines: the embedded Redis never saw it."""
    skip_without_redis_server()
    batch = batch_file(tmp_path, BATCH)
    report = tmp_path / "run.report.json"
    command = [script("daq-run"), str(batch), "--sim", "--sim-frame-rate", "200", "--var", f"root={tmp_path}", "--report", str(report)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: (tmp_path / "long.h5").exists() or proc.poll() is not None, timeout=30)
        time.sleep(0.5)  # the write under way
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert 130 == proc.returncode, err
    lowered = err.lower()
    assert "falling back" not in lowered and "redis unavailable" not in lowered and "daq-sim" not in lowered, err
    assert "Traceback" not in err + out
    written = json.loads(report.read_text())
    assert ("interrupted", "interrupted") == (written["status"], written["steps"][0]["status"]), written
    assert not written["steps"][0]["recoveries"] or "could not stop" not in json.dumps(written["steps"][0]["recoveries"])


def test_an_embedded_simulator_prints_nothing_when_its_redis_goes_away(capfd, tmp_path):
    """Embedded (the default), the simulator's warnings reach only handlers the program configured:
    a Redis that goes away leaves the program's stderr clean."""
    with RedisServer() as server:
        with SimulatedDaq(redis_url=server.url, settings=SimSettings(start_state="READY")) as sim:
            capfd.readouterr()
            server.kill()
            ok(post(sim, "/writer/stop", {}))  # publishes: Redis refuses
            time.sleep(0.1)
    assert "" == capfd.readouterr().err


def test_daq_sim_says_when_its_redis_goes_away(tmp_path):
    """daq-sim itself (not embedded) shows the simulator's warning on stderr, one line."""
    with RedisServer() as server:
        proc = subprocess.Popen(
            [script("daq-sim"), "--port", "0", "--redis-url", server.url, "--start-state", "READY"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            rest = line.split("rest=")[1].split()[0]
            server.kill()
            requests.post(rest + "/writer/stop", json={}, timeout=15)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
    assert 0 == proc.returncode
    assert any(line.startswith("daq-sim: redis unavailable") for line in err.splitlines()), err
