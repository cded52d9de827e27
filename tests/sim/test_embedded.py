"""The simulated DAQ of daq-run --sim (daq_runner.sim.embedded): its one rule about variables, its folder."""

from __future__ import annotations

from pathlib import Path

import tempfile

from daq_runner.batch import load_batch_text
from daq_runner.sim.embedded import EmbeddedSim, SimOutput, replaces_root, start_lines
from daq_runner.testing import skip_without_redis_server


def test_only_a_root_the_command_line_does_not_set_is_replaced():
    """root from the batch: replaced; root from --var, or a folder variable of another name: never."""
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
