"""``daq-sim --generation driver``: the installed command, its ready line, options and exit codes."""

from __future__ import annotations

import json
import subprocess
from typing import Any, List, Tuple

import pytest

from daq_runner import DetDriverClient
from daq_runner.det_driver_protocol import DriverBuild
from daq_runner.sim.driver import DEFAULT_DRIVER_CONFIG

from ..conftest import BIN
from .test_sim import _stop as stop


def daq_sim() -> str:
    return str(BIN / "daq-sim")


def start(*args: str) -> Tuple[Any, str, str]:
    """Start the command; returns it with its ws and config URLs once it said it is ready."""
    proc = subprocess.Popen([daq_sim(), "--generation", "driver", "--port", "0", "--ws-port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("daq-sim ready ws=ws://127.0.0.1:") and " config=http://127.0.0.1:" in line, line + proc.stderr.read()
    words = dict(word.split("=", 1) for word in line.split()[2:])
    return proc, words["ws"], words["config"]


@pytest.mark.parametrize("build", ["persistent", "per-connection"])
def test_daq_sim_driver_is_ready_serves_both_faces_and_stops_on_sigterm(build, tmp_path):
    """The ready line names ws= and config=; the build is the one asked for; an acquisition runs; SIGTERM exits 0."""
    proc, ws_url, config_url = start("--protocol", build, "--frame-rate", "2000")
    try:
        with DetDriverClient(ws_url, config_url) as client:
            assert DriverBuild(build) == client.connect()
            assert DEFAULT_DRIVER_CONFIG == client.get_config()
            assert "file_saved" == client.follow(client.start(str(tmp_path), "cli_", n_image=4), timeout=10).outcome
    finally:
        assert 0 == stop(proc)


@pytest.mark.parametrize(
    "args",
    [
        ["--generation", "driver", "--redis-url", "redis://127.0.0.1:6379"],
        ["--generation", "driver", "--start-state", "READY"],
        ["--protocol", "persistent"],
        ["--restart-delay-s", "1", "--generation", "driver"],
        ["--generation", "driver", "--restart-s", "-1"],
        ["--generation", "driver", "--ws-port", "70000"],
        ["--generation", "driver", "--protocol", "websocket"],
    ],
)
def test_an_option_of_the_other_generation_or_out_of_range_is_one_line_exit_2(args: List[str]):
    """rest_v2 options with the driver generation, driver options with rest_v2, bad values: one line, exit 2."""
    proc = subprocess.run([daq_sim(), "--port", "0", *args], capture_output=True, text=True, timeout=20)
    assert 2 == proc.returncode and 1 == len(proc.stderr.strip().splitlines()), proc.stderr


def test_a_config_the_services_cannot_run_is_one_line_exit_2(tmp_path):
    """--config without a core field: the services could not start with it: one line, exit 2."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({k: v for k, v in DEFAULT_DRIVER_CONFIG.items() if k != "bit_depth"}))
    proc = subprocess.run([daq_sim(), "--generation", "driver", "--port", "0", "--ws-port", "0", "--config", str(bad)], capture_output=True, text=True, timeout=20)
    assert 2 == proc.returncode and 1 == len(proc.stderr.strip().splitlines()), proc.stderr
    assert 'missing parameter: "bit_depth"' in proc.stderr


def test_a_config_file_is_the_initial_config(tmp_path):
    """--config FILE (YAML too) is what the config REST serves and the services run with."""
    config = {**DEFAULT_DRIVER_CONFIG, "number_of_writers": 3, "bit_depth": 8}
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in config.items()))
    proc, ws_url, config_url = start("--config", str(path))
    try:
        with DetDriverClient(ws_url, config_url) as client:
            assert config == client.get_config()
    finally:
        assert 0 == stop(proc)

