"""The fleet examples (GitLab CI, GitHub Actions, Ansible): valid for their engines, and the
daq-run commands they run pass daq-run's own checks with profiles that exist. The EPICS example
runs against daq-sim with a stand-in for caput."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from daq_runner._yaml import load_yaml

from .conftest import REPO, run_script

EXAMPLES = REPO / "examples"
GITLAB = EXAMPLES / "ci" / "gitlab-ci.yml"
GITHUB = EXAMPLES / "ci" / "github-workflow.yml"
PLAYBOOK = EXAMPLES / "ansible" / "smoke.yml"
INVENTORY = EXAMPLES / "ansible" / "inventory.yml"
EPICS = EXAMPLES / "epics" / "sample-scan.yaml"
# The modules a playbook of ours may use: ansible-core's own, so that no collection is needed.
BUILTIN_MODULES = {"ansible.builtin.command", "ansible.builtin.tempfile", "ansible.builtin.fetch", "ansible.builtin.file", "ansible.builtin.assert"}
TASK_KEYWORDS = {"name", "register", "changed_when", "failed_when", "loop", "when", "become", "tags", "ignore_errors"}


def load(path: Path) -> Any:
    """A YAML file as YAML 1.2 reads it (the way GitHub, GitLab and Ansible mean ``on:``)."""
    return load_yaml(path.read_text(encoding="utf-8"), str(path))


def profiles() -> Dict[str, Any]:
    return yaml.safe_load((REPO / "config" / "daqs.yaml").read_text(encoding="utf-8"))["daqs"]


def expand(text: str, values: Dict[str, str]) -> str:
    """``$NAME``, ``${NAME}``, ``${{ expr }}`` and ``{{ expr }}`` replaced from ``values``; an unknown one fails the test."""

    def sub(match: "re.Match[str]") -> str:
        name = next(g for g in match.groups() if g)
        assert name in values, f"no value for {match.group(0)} in {text!r}"
        return values[name]

    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}|\{\{\s*([\w.]+)\s*\}\}|\$\{(\w+)\}|\$(\w+)", sub, text)


def check_command(argv: List[str]) -> None:
    """The command is daq-run with a batch file; with --validate added, daq-run accepts its options and the batch."""
    assert Path(argv[0]).name == "daq-run", argv
    args = argv[1:]
    assert "--quiet" in args and "--junit" in args and "--report" in args, args
    result = run_script("daq-run", *args, "--validate", cwd=str(REPO), timeout=60)
    assert result.returncode == 0, (args, result.stderr)
    assert result.stdout.splitlines()[0].endswith("steps"), result.stdout  # then the estimate


def check_schema(path: Path, schema: str) -> None:
    result = run_script("check-jsonschema", "--builtin-schema", schema, str(path), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def matrix_profiles(names: Any) -> List[str]:
    assert isinstance(names, list) and names, names
    known = profiles()
    for name in names:
        assert name in known, f"{name} is not a DAQ of config/daqs.yaml (known: {sorted(known)})"
    return names


def test_gitlab_ci_is_valid_and_runs_daq_run_per_profile():
    """GitLab CI: its schema, one job per profile of config/daqs.yaml, daq-run --quiet --junit, JUnit and reports kept."""
    check_schema(GITLAB, "vendor.gitlab-ci")
    job = load(GITLAB)["daq-smoke"]
    (entry,) = job["parallel"]["matrix"]
    names = matrix_profiles(entry["DAQ"])
    assert job["artifacts"]["when"] == "always" and "reports/" in job["artifacts"]["paths"]
    assert job["artifacts"]["reports"]["junit"] == "reports/*.junit.xml"
    commands = [line for line in job["script"] if "daq-run" in line]
    assert len(commands) == 1
    for name in names:
        argv = shlex.split(expand(commands[0], {"DAQ": name, **job["variables"]}))
        assert argv[argv.index("--junit") + 1] == f"reports/{name}.junit.xml"
        check_command(argv)


def test_github_workflow_is_valid_and_runs_daq_run_per_profile():
    """GitHub Actions: its schema, a matrix of profiles that exist, every DAQ to its end, JUnit and reports kept."""
    check_schema(GITHUB, "vendor.github-workflows")
    workflow = load(GITHUB)
    job = workflow["jobs"]["smoke"]
    assert job["strategy"]["fail-fast"] is False
    names = matrix_profiles(job["strategy"]["matrix"]["daq"])
    steps = job["steps"]
    (run,) = [step["run"] for step in steps if "daq-run" in step.get("run", "")]
    uploads = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@")]
    junit = [step for step in steps if step.get("uses", "").startswith("mikepenz/action-junit-report@")]
    assert uploads and uploads[0]["if"] == "always()" and uploads[0]["with"]["path"] == "reports/"
    assert junit and junit[0]["if"] == "always()" and junit[0]["with"]["report_paths"] == "reports/*.junit.xml"
    (line,) = [line for line in run.splitlines() if "daq-run" in line]
    for name in names:
        values = {"DAQ": name, "SMOKE_ROOT": "/tmp", "matrix.daq": name}
        check_command([str(Path(".venv/bin/daq-run"))] + shlex.split(expand(line, values))[1:])


def test_ansible_playbook_runs_daq_run_per_host_and_fetches_its_report(tmp_path):
    """Ansible: one daq-run per DAQ host of the inventory, its report and JUnit fetched, a verdict per host."""
    (play,) = load(PLAYBOOK)
    assert play["hosts"] == "daqs"
    tasks = play["tasks"]
    for task in tasks:
        modules = [key for key in task if key not in TASK_KEYWORDS]
        assert len(modules) == 1 and modules[0] in BUILTIN_MODULES, task
        assert task.get("name"), task
    by_module = {next(k for k in task if k not in TASK_KEYWORDS): task for task in tasks}
    command = by_module["ansible.builtin.command"]
    assert command["failed_when"] is False, "a failed smoke run must still have its report fetched"
    assert [t for t in tasks].index(command) < tasks.index(by_module["ansible.builtin.fetch"]) < tasks.index(by_module["ansible.builtin.assert"])
    fetch = by_module["ansible.builtin.fetch"]
    fetched = {fetch["ansible.builtin.fetch"]["src"].replace("{{ item }}", item) for item in fetch["loop"]}
    argv = command["ansible.builtin.command"]["argv"]
    written = {argv[argv.index(flag) + 1] for flag in ("--report", "--junit")}
    assert fetched == written
    assert by_module["ansible.builtin.assert"]["ansible.builtin.assert"]["that"] == f"{command['register']}.rc == 0"
    hosts = load(INVENTORY)["daqs"]["hosts"]
    assert hosts
    for host, host_vars in hosts.items():
        (name,) = matrix_profiles([host_vars["daq_profile"]])
        values = {**play["vars"], "daq_profile": name, "daq_runner_dir": str(REPO), "workdir.path": str(tmp_path), "daq_run": "daq-run"}
        check_command([expand(arg, values) for arg in argv])


def test_the_epics_example_moves_the_stage_between_the_writes(daq_sim, tmp_path):
    """sample-scan.yaml against daq-sim, a stand-in caput on PATH recording each call: the
    shutter and stage move in the batch's order between the writes, each put waited for (-c)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    caput = bin_dir / "caput"
    caput.write_text(f"#!{sys.executable}\nimport sys\nopen({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    caput.chmod(0o755)
    report = tmp_path / "r.json"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    args = ["--url", daq_sim.url, "--redis", daq_sim.redis_url, "--var", f"root={tmp_path}", "--var", "n_images=3", "--report", str(report)]
    refused = run_script("daq-run", str(EPICS), *args, env=env)
    assert 2 == refused.returncode and "--allow-commands" in refused.stderr
    result = run_script("daq-run", str(EPICS), *args, "--allow-commands", env=env, timeout=120)
    assert 0 == result.returncode, result.stderr
    assert [
        "-c -w 10 X12SA-ES1-SHUTTER:OPEN 0",
        "-c -w 10 X12SA-ES1-SHUTTER:OPEN 1",
        "-c -w 60 X12SA-ES1-SAMPLE:TRX.VAL -20",
        "-c -w 60 X12SA-ES1-SAMPLE:TRX.VAL 0",
        "-c -w 60 X12SA-ES1-SAMPLE:TRX.VAL 2.5",
        "-c -w 60 X12SA-ES1-SAMPLE:TRX.VAL 5",
    ] == calls.read_text().splitlines()
    steps = json.loads(report.read_text())["steps"]
    assert ["run", "write", "run", "run", "write", "run", "write", "run", "write", "run", "write"] == [s["kind"] for s in steps]
    assert all(s["status"] == "passed" for s in steps)
    assert all(s["file_check"]["status"] == "passed" and s["guard"]["min_detector_rate"] == 100 for s in steps if s["kind"] == "write")


@pytest.mark.parametrize("path", [GITLAB, GITHUB, PLAYBOOK, INVENTORY, EPICS])
def test_examples_name_no_credentials(path):
    """No password or token in an example: secrets come from the engine's secret store."""
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URL with a password"
    assert "STD_DAQ_REDIS_PASSWORD:" not in text or "secrets." in text
