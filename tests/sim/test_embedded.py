"""The simulator embedded in daq-run --sim (daq_runner.sim.embedded, daq_runner.sim.server):
its one rule about variables, its folder; quiet, and out of reach of the terminal's Ctrl-C.

A terminal sends Ctrl-C to its whole foreground process group. The embedded simulator's
Redis-compatible server is a child process: in the program's group it would stop at once,
under a program still stopping its acquisition, writing its report and releasing its lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from daq_runner.batch import load_batch_text
from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq
from daq_runner.sim.embedded import EmbeddedSim, SimOutput, replaces_root, start_lines
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
    command = [script("daq-run"), str(batch), "--sim", "--sim-frame-rate", "200", "--var", f"root={tmp_path}", "--report", str(report), "--allow-low-disk"]
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


    assert replaces_root({"root": "/data/night"}, set())
    assert not replaces_root({"root": "/data/night"}, {"root"})
    assert not replaces_root({"outdir": "/data/night"}, set())


def test_where_the_files_go_is_said_before_and_after_the_run(tmp_path, monkeypatch):
    """The replaced value and the fresh folder; folders outside it 'as the batch says'; --quiet keeps the
    replacement line; at the end the folder is named, or removed if empty, and a run that never started says nothing."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    output = SimOutput("/data/night")
    body = "version: 1\nvars: {root: x}\nsteps:\n  - write: {output_file: '%s/a.h5', n_images: 1}\n  - write: {output_file: '/data/other/b.h5', n_images: 1}\n"
    batch = load_batch_text(body % output.folder, "b.yaml")
    lines = output.announce(batch)
    assert lines == [
        f"--sim: root is {output.folder}, a fresh folder, instead of the batch's /data/night "
        "(--sim sets only a variable named root; --var root=DIR chooses the folder)",
        f"the simulated DAQ writes into {output.folder}",
        "the simulated DAQ writes into /data/other, as the batch says",
    ]
    assert lines[:1] == start_lines(batch, output, quiet=True) and [] == start_lines(batch, None, quiet=True)
    assert output.finish().startswith("the simulated DAQ wrote no files (removed the empty")
    kept = SimOutput("/x")
    kept.announce(batch)
    (Path(kept.folder) / "a.h5").write_bytes(b"")
    assert f"files written by the simulated DAQ are in {kept.folder}" == kept.finish()
    named = SimOutput("/x", create=False)
    named.announce(batch)
    assert None is named.finish()
    unsaid = SimOutput("/x")  # a run that did not start (the simulator missing): the folder goes, unsaid
    assert (None, [kept.folder]) == (unsaid.finish(), [str(p) for p in tmp_path.glob("daq-run-sim-*")])


def test_the_embedded_simulator_starts_answers_and_stops(tmp_path):
    """start() gives a target on loopback with its own Redis ('--sim' its source); stop() ends it."""
    skip_without_redis_server()
    import requests

    sim = EmbeddedSim(frame_rate=10, redis=False).start()
    try:
        target = sim.target
        assert (None, "--sim", "--no-redis") == (target.redis, target.url_source, target.redis_source)
        assert "config" in requests.get(target.url + "/daq/config", timeout=5).json()
    finally:
        sim.stop()
    sim.stop()  # again: nothing happens
