"""The JSON report of a representative run, whole, against a golden copy.

A sweep of config steps and writes, a check, a write retried after a FAILED acquisition, a
write refused before sending, a writer restart with a foreign configuration (recovered), a
background write ended by a stop step, a failing write, and then a resume of that report.
Every key and its order must stay as the golden files have them; values that differ from
run to run (times, run ids, ports, paths, sizes, the count of a write stopped on purpose)
are replaced by placeholders first.

The golden files were written by the runner before its executor was re-cut; regenerate them
only for an intended change of the report, with ``DAQ_RUNNER_GOLDEN=write``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from daq_runner import events, load_batch
from daq_runner.report import JsonReportFile, load_report
from daq_runner.resume import ResumedRun, previous_results
from daq_runner.runner import Runner

GOLDEN = Path(__file__).parent / "golden"

BATCH = """\
version: 1
name: golden
vars: {root: /tmp}
defaults: {timeout: 30, retries: 0, on_error: continue}
steps:
  - name: DAQ is healthy
    check: {deployment: SUCCESS, writer: READY, config: {bit_depth: 16}}
  - config: {writer_user_id: 0, bit_depth: 16}
  - for: {bit_depth: [8, 32]}
    steps:
      - config: {bit_depth: "{bit_depth}"}
      - write: {output_file: "{root}/sweep_{bit_depth}.h5", n_images: 5}
  - name: retried write
    write: {output_file: "{root}/retried.h5", n_images: 3}
    retries: 1
  - name: refused write
    write: {output_file: "{root}/exists.h5", n_images: 2}
  - name: write after a restart
    write: {output_file: "{root}/restarted.h5", n_images: 2}
  - name: background
    write: {output_file: "{root}/background.h5", n_images: 1000000, wait: false}
  - wait: {seconds: 0.2}
  - stop: {}
  - wait: {state: READY, timeout: 10}
  - name: failing write
    write: {output_file: "{root}/failing.h5", n_images: 2}
"""


class _Faults:
    """Arms the simulator's faults as steps start (consumers run in the runner's thread)."""

    def __init__(self, core: Any, plan: Dict[str, Any]) -> None:
        self.core = core
        self.plan = dict(plan)

    def __call__(self, event: events.Event) -> None:
        if event.kind == events.STEP_STARTED and event.data.get("attempt") == 1:
            action = self.plan.pop(event.step_name, None)
            if action is not None:
                action(self.core)


def _restart_with_foreign_config(core: Any) -> None:
    # Someone stored bit_depth 16, and the writer restarted: the run's 32 must come back.
    core.set_config({**core.config, "bit_depth": 16})
    core.wait_for_deployment(5.0) if hasattr(core, "wait_for_deployment") else _wait_deployed(core)
    core.arm_faults({"writer_state": "UNKNOWN"})


def _wait_deployed(core: Any) -> None:
    import time

    end = time.monotonic() + 5
    while core.deployment().get("status") != "SUCCESS" and time.monotonic() < end:
        time.sleep(0.01)


class _Normalizer:
    """Placeholders for what differs from run to run; the same value gets the same placeholder."""

    _ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    _ISO_IN_TEXT = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\b")
    _LONG_ID = re.compile(r"(?<![\w-])\d{12,}(?![\w])")
    _ENTRY_ID = re.compile(r"\b\d{13}-\d+\b")

    def __init__(self, root: str, url: str, redis_url: str) -> None:
        self.root, self.url, self.redis_url = root, url, redis_url
        self.ids: Dict[str, str] = {}
        self.entries: Dict[str, str] = {}
        self.identities: Dict[str, str] = {}

    def _id(self, match: "re.Match[str]") -> str:
        return self.ids.setdefault(match.group(0), f"<acq{len(self.ids) + 1}>")

    def _entry(self, match: "re.Match[str]") -> str:
        return self.entries.setdefault(match.group(0), f"<entry{len(self.entries) + 1}>")

    def text(self, value: str) -> str:
        if self._ISO.match(value):
            return "<time>"
        value = value.replace(self.root, "<root>").replace(self.url, "<url>").replace(self.redis_url, "<redis>")
        value = self._ISO_IN_TEXT.sub("<time>", value)
        value = self._ENTRY_ID.sub(self._entry, value)
        return self._LONG_ID.sub(self._id, value)

    def value(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.value(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, key) for v in value]
        if key in ("duration_s", "size_bytes", "size", "bytes", "pid", "start_time", "stop_time", "down_after_s", "back_after_s") and isinstance(value, (int, float)):
            return f"<{key}>"
        if key == "identity" and isinstance(value, str):
            # A hash of the step's parameters, which hold the test's folder.
            return self.identities.setdefault(value, f"<identity{len(self.identities) + 1}>")
        if key == "run_id" and isinstance(value, int):
            return self.text(str(value))
        if isinstance(value, str):
            return self.text(value)
        return value


_HEAD = ("run_id", "daq_runner", "host", "user", "python", "started_at", "finished_at")


def _normalize(report: Dict[str, Any], root: str, url: str, redis_url: str) -> Dict[str, Any]:
    norm = _Normalizer(root, url, redis_url)
    out = norm.value(report)
    for key in _HEAD:
        if out.get(key) is not None:
            out[key] = f"<{key}>"
    out["batch"] = {**out["batch"], "sha256": "<sha256>", "plan": "<plan>", "run": "<run>", "invocation": "<invocation>", "now": "<now>"}
    out["command"] = "<command>"
    background = [s for s in out["steps"] if s.get("name") == "background"]
    for step in background + [s for s in out["steps"] if s.get("kind") == "stop"]:
        # Stopped on purpose after 0.2 s: how many images it wrote varies.
        _counts_vary(step)
    for entry in out["files"]:
        if entry.get("path", "").endswith("background.h5"):
            entry["n_images"] = "<n>"
    out["totals"]["images"] = "<n>"
    return out


def _counts_vary(value: Any) -> None:
    if isinstance(value, dict):
        for key in list(value):
            if key in ("n_written", "n_write_completed", "n_write_requested", "images"):
                value[key] = "<n>"
            elif key == "file_check" and isinstance(value[key], dict):
                value[key]["reason"] = re.sub(r"\d+ images", "<n> images", value[key]["reason"])
                _counts_vary(value[key])
            else:
                _counts_vary(value[key])
    elif isinstance(value, list):
        for item in value:
            _counts_vary(item)


def _run(daq_sim: Any, batch: Any, report_path: Path, faults: Dict[str, Any], previous: Any = None, resumed: Any = None) -> Dict[str, Any]:
    runner = Runner(
        daq_sim.url,
        daq_sim.redis_url,
        [_Faults(daq_sim.core, faults), JsonReportFile(str(report_path))],
        retry_delay=0.05,
        resumed=resumed,
        context={"command": ["daq-run", "golden.yaml"], "url_source": "--url/--redis", "redis_source": "--url/--redis"},
        keep_steps=False,
    )
    runner.run(batch, previous)
    return load_report(str(report_path))


def _compare(name: str, actual: Dict[str, Any]) -> None:
    path = GOLDEN / name
    text = json.dumps(actual, indent=1, ensure_ascii=False) + "\n"
    if os.environ.get("DAQ_RUNNER_GOLDEN") == "write":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    expected = path.read_text()
    # Whole reports, keys in order: a list of lines shows where they differ.
    assert text.splitlines() == expected.splitlines()


@pytest.mark.slow
def test_report_of_a_representative_run_and_its_resume_is_unchanged(daq_sim: Any, tmp_path: Path) -> None:
    """The JSON report (every key, its order and its value) of a run and of its resume."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "exists.h5").write_bytes(b"not written by this run")
    batch_path = tmp_path / "golden.yaml"
    batch_path.write_text(BATCH)
    batch = load_batch(str(batch_path), vars={"root": str(root)})
    faults = {
        "retried write": lambda core: core.arm_faults({"fail_next": "ERROR: simulated failure"}),
        "write after a restart": _restart_with_foreign_config,
        "failing write": lambda core: core.arm_faults({"fail_next": "ERROR: simulated failure"}),
    }
    first = _run(daq_sim, batch, tmp_path / "first.json", faults)
    assert first["status"] == "failed"
    _compare("first-run.json", _normalize(first, str(tmp_path), daq_sim.url, daq_sim.redis_url))

    (root / "exists.h5").unlink()
    daq_sim.core.reset()  # back at bit_depth 16: the resume applies the kept steps' 32 again
    again = load_batch(str(batch_path), vars={"root": str(root)}, run=first["batch"]["run"])
    previous = previous_results(first, again, report_path=str(tmp_path / "first.json"), batch_path=str(batch_path))
    second = _run(daq_sim, again, tmp_path / "second.json", {}, previous, ResumedRun.from_report(first))
    assert second["status"] == "passed", second["reason"]
    _compare("resumed-run.json", _normalize(second, str(tmp_path), daq_sim.url, daq_sim.redis_url))
