"""A write under a guard runs only while the detector delivers: against daq-sim's detector_rate fault and a real Redis.

Before the write, the detector's rate (the DAQ's statistics) must hold for ``for_s``; a rate
that stays low during the write suspends it (the acquisition stopped, its file recorded
incomplete) until the detector is back, then the same step writes the file again with a new
acquisition. A detector that does not come back fails the step within the guard's wait.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from daq_runner import events
from daq_runner._guard import DetectorHistory
from daq_runner.batch import load_batch_text
from daq_runner.exceptions import BatchValidationError
from daq_runner.record import parse_iso
from daq_runner.rest_v2 import RestV2Daq
from daq_runner.runner import Runner
from daq_runner.schema import batch_schema

from .conftest import batch_file, daq_run, start_daq_run_until_writing, stream_entries


def faults(sim, **armed):
    assert 200 == requests.post(sim.url + "/sim/faults", json=armed, timeout=5).status_code


def report_of(path) -> dict:
    return json.loads(path.read_text())


def logged(sim) -> dict:
    """The DAQ's own log of acquisitions, by run_id (as text)."""
    return {str(entry["info"]["run_id"]): entry for entry in stream_entries(sim.redis_url, "daq:log")}


GUARDED = """version: 1
steps:
  - write: {{output_file: "{{root}}/scan.h5", n_images: {n}}}
    guard: {guard}
    timeout: 60
"""


def test_a_write_whose_detector_goes_silent_is_suspended_and_written_again_with_a_new_acquisition(daq_sim, tmp_path):
    """The detector's rate dropped to 0 for 3 s in the middle of a guarded write: the run passes,
    a second acquisition wrote the file whole, and the first one is recorded incomplete with its
    times, as the DAQ's own log has it (Interrupted, part of the images)."""
    path = batch_file(tmp_path, GUARDED.format(n=8000, guard="{min_detector_rate: 500, for_s: 1}"))
    report = tmp_path / "r.json"
    proc = start_daq_run_until_writing(daq_sim, path, report)
    dropped = time.time()
    faults(daq_sim, detector_rate=0)
    time.sleep(3)
    back = time.time()
    faults(daq_sim, detector_rate=None)
    _, err = proc.communicate(timeout=60)
    assert 0 == proc.returncode, err
    data = report_of(report)
    step = data["steps"][0]
    assert ("passed", 1, []) == (step["status"], step["attempts"], step["failed_attempts"])
    [pause] = step["suspensions"]
    assert pause["complete"] is False and pause["output_file"] == str(tmp_path / "scan.h5")
    assert 0 <= pause["n_written"] < 8000 and pause["run_id"] != step["run_id"]
    assert "the detector sent 0 images/s, below the guard's 500, for " in pause["reason"]
    suspended, resumed = parse_iso(pause["suspended_at"]), parse_iso(pause["resumed_at"])
    assert dropped - 1 <= suspended <= back and back - 1 <= resumed
    log = logged(daq_sim)
    assert ("Interrupted.", pause["n_written"]) == (log[pause["run_id"]]["message"], log[pause["run_id"]]["stats"]["n_write_completed"])
    assert ("Completed.", 8000) == (log[step["run_id"]]["message"], step["n_written"])
    assert [{"path": str(tmp_path / "scan.h5"), "step": 1, "n_images": 8000, "run_id": step["run_id"], "complete": True}] == [
        {k: v for k, v in entry.items() if k != "size_bytes"} for entry in data["files"]
    ]
    assert "passed" == step["file_check"]["status"], step["file_check"]
    assert 2 == step["guard"]["waits"] and step["guard"]["waited_s"] >= 2
    notices = [n["message"] for n in data["notices"]]
    assert any(n.startswith("write suspended: the detector sent 0 images/s") for n in notices), notices


def test_a_guarded_write_starts_only_once_the_detector_has_delivered_for_for_s(daq_sim, tmp_path):
    """A silent detector at the start: the write waits (a countdown for the console) and starts
    only after the rate has held for for_s; nothing is sent to the writer before."""
    faults(daq_sim, detector_rate=0)
    came_back = []

    def back():
        came_back.append(time.time())
        faults(daq_sim, detector_rate=None)

    timer = threading.Timer(2.0, back)
    timer.start()
    waits = []

    def consumer(event):
        if event.kind == events.WAITING:
            waits.append(event.data)

    batch = load_batch_text(GUARDED.format(n=20, guard="{min_detector_rate: 500, for_s: 0.5, max_wait_s: 20}"), optional_vars={"root": str(tmp_path)})
    try:
        report = Runner(daq_sim.url, daq_sim.redis_url, [consumer], retry_delay=0.05).run(batch)
    finally:
        timer.cancel()
    assert "passed" == report.status, report.reason
    step = report.to_dict()["steps"][0]
    assert 1 == step["guard"]["waits"] and step["guard"]["waited_s"] >= 2.0 and "suspensions" not in step
    assert {"what": "the detector: at least 500 images/s for 0.5 s", "seconds": pytest.approx(20, abs=0.5)} == waits[0]
    [record] = logged(daq_sim).values()
    assert record["stats"]["start_time"] >= came_back[0]  # no acquisition while the detector was silent


def test_a_detector_that_never_delivers_fails_the_write_within_its_wait_and_nothing_is_written(daq_sim, tmp_path):
    """max_wait_s bounds the wait: the step fails after it, saying so, and no acquisition was started."""
    faults(daq_sim, detector_rate=0)
    path = batch_file(tmp_path, GUARDED.format(n=20, guard="{min_detector_rate: 500, for_s: 0.5, max_wait_s: 1.5}"))
    report = tmp_path / "r.json"
    started = time.monotonic()
    result = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))
    assert 1 == result.returncode, result.stderr
    assert time.monotonic() - started < 15
    step = report_of(report)["steps"][0]
    assert step["error"].startswith("the detector did not send at least 500 images/s for 0.5 s within 2 s (last reading 0 images/s); nothing was written")
    assert [] == report_of(report)["files"] and {} == logged(daq_sim)


def test_a_detector_gone_for_good_mid_write_fails_the_step_with_the_incomplete_file(daq_sim, tmp_path):
    """Suspended and never resumed: the step fails after the guard's wait, and its file is the
    abandoned acquisition's, listed incomplete with that acquisition's run_id and count."""
    path = batch_file(tmp_path, GUARDED.format(n=8000, guard="{min_detector_rate: 500, for_s: 0.5, max_wait_s: 1.5}"))
    report = tmp_path / "r.json"
    proc = start_daq_run_until_writing(daq_sim, path, report)
    faults(daq_sim, detector_rate=0)
    _, err = proc.communicate(timeout=60)
    assert 1 == proc.returncode, err
    data = report_of(report)
    step = data["steps"][0]
    [pause] = step["suspensions"]
    assert pause["resumed_at"] is None and step["run_id"] == pause["run_id"]
    assert "the write stays suspended, its file incomplete" in step["error"], step["error"]
    [entry] = data["files"]
    assert (False, pause["run_id"], pause["n_written"]) == (entry["complete"], entry["run_id"], entry["n_images"])


def test_the_guard_is_declared_once_and_checked_before_anything_is_sent():
    """defaults and the step's own guard:, 'off', and the rules a guard must meet, each one
    line at its place; the schema has the same key."""
    text = """version: 1
defaults: {guard: {min_detector_rate: 100}}
steps:
  - write: {output_file: /d/a.h5, n_images: 1}
  - write: {output_file: /d/b.h5, n_images: 1}
    guard: off
  - write: {output_file: /d/c.h5, n_images: 1}
    guard: {min_detector_rate: 5, for_s: 3, max_wait_s: 30}
"""
    a, b, c = load_batch_text(text).steps
    assert (100.0, 2.0, None) == (a.guard.min_detector_rate, a.guard.for_s, a.guard.max_wait_s)
    assert b.guard is None and (5.0, 3.0, 30.0) == (c.guard.min_detector_rate, c.guard.for_s, c.guard.max_wait_s)
    assert a.params == {"output_file": "/d/a.h5", "n_images": 1, "wait": True, "overwrite": False}  # not part of what it writes
    bad = """version: 1
defaults: {guard: {min_detector_rate: 100}}
steps:
  - write: {output_file: /d/a.h5, n_images: 1, wait: false}
  - write: {output_file: /d/b.h5, n_images: 1}
    guard: {min_detector_rate: 1, for_s: 400}
  - write: {output_file: /d/c.h5, n_images: 1}
    guard: {min_detector_rate: 1, for_s: 40, max_wait_s: 10}
  - write: {output_file: /d/d.h5, n_images: 1}
    guard: {min_detector_rate: 0}
  - write: {output_file: /d/e.h5, n_images: 1}
    guard: on
"""
    with pytest.raises(BatchValidationError) as caught:
        load_batch_text(bad, "b.yaml")
    assert [
        "b.yaml:4:12: the guard from defaults cannot watch a write with wait: false (it runs in the background); give this write guard: off, or let it wait",
        "b.yaml:6:12: its guard: for_s of 400 s does not fit in the step's timeout of 300 s (the detector's rate must hold that long before the write starts); raise the timeout or shorten for_s",
        "b.yaml:8:12: its guard: for_s of 40 s does not fit in its max_wait_s of 10 s",
        "b.yaml:10:32: min_detector_rate must be > 0 and <= 1e+09, not 0",
        "b.yaml:12:12: guard must be a mapping or off, not str 'on'",
    ] == caught.value.lines()
    write = next(k for k in batch_schema()["$defs"]["steps"]["items"]["oneOf"] if k["title"] == "write step")
    assert {"min_detector_rate"} == set(write["properties"]["guard"]["anyOf"][0]["required"])
    assert "guard" in batch_schema()["properties"]["defaults"]["properties"]


def test_a_daq_without_rates_refuses_a_guard_before_anything_is_sent():
    """A generation whose statistics give no detector rate cannot guard a write: refused with
    the step's place, before the DAQ is reached (here, nothing listens at its address)."""

    class NoRates(RestV2Daq):
        generation = "no-rates"
        title = "a DAQ without statistics"
        features = frozenset({"deployment", "log", "unknown_state"})

    batch = load_batch_text(GUARDED.format(n=1, guard="{min_detector_rate: 5}"), "g.yaml", optional_vars={"root": "/d"})
    seen = []
    runner = Runner(daq=NoRates("http://127.0.0.1:9"), lock=False, consumers=[seen.append])
    with pytest.raises(BatchValidationError) as caught:
        runner.run(batch)
    assert [
        "g.yaml:3:5: write guard: needs the detector's and the writer's rates, which a DAQ without statistics does not have: "
        "remove it from the batch, or run the batch on a DAQ that has it"
    ] == caught.value.lines()
    assert [] == seen


def test_the_history_of_readings_says_whether_a_rate_held_for_long_enough(monkeypatch):
    """Readings at or above the minimum spanning for_s, up to a fresh one, with no long gap: held."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    history = DetectorHistory()
    assert not history.held(10, 0)
    for rate in (50, 50, 50, 50, 50):
        history.add(rate)
        now[0] += 0.5
    assert history.held(10, 2.0) and not history.held(10, 3.0) and not history.held(60, 0)
    now[0] += 2.5  # no reading for longer than the gap: nothing is known about now
    assert not history.held(10, 0.5)
    history.add(5)
    assert not history.held(10, 0)
    history.add(50)
    assert history.held(10, 0) and not history.held(10, 0.5)
