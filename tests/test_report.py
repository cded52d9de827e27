"""Reports: what they hold, that they survive short writes and a full disk, flat memory, JUnit.

Most tests feed events directly (the vocabulary of ``daq_runner.events``); a few run today's
Runner on the real simulator.
"""

from __future__ import annotations

import gc
import json
import os
import re
import stat
import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from xml.etree import ElementTree as ET

import pytest

from daq_runner import events
from daq_runner import report as report_module
from daq_runner.batch import load_batch_text
from daq_runner.events import Event
from daq_runner.report import (
    JsonReportFile,
    JUnitFile,
    ReportRecorder,
    RunReport,
    load_report,
)
from daq_runner.runner import Runner

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


# -- synthetic runs ---------------------------------------------------------------------------


def run_started(n_steps: int, **extra: Any) -> Event:
    data = {
        "batch": {"name": "sweep µ", "path": "/b/sweep.yaml", "sha256": "ab" * 32, "vars": {"root": "/data/é"}},
        "daq": {"url": "http://daq:5000", "redis": "redis://daq:6379/0", "url_source": "--url", "redis_source": "default"},
        "n_steps": n_steps,
        "daq_runner": "9.9.9",
        "host": "beamline-pc",
        "user": "e12345",
        "pid": 4242,
        "command": ["daq-run", "sweep.yaml", "--url", "http://daq:5000"],
        "python": "3.12.1",
        **extra,
    }
    return Event(events.RUN_STARTED, "run1", data=data, time=T0)


def write_record(index: int, path: str, status: str = "passed", **extra: Any) -> Dict[str, Any]:
    record = {
        "index": index,
        "name": f"write {index}",
        "kind": "write",
        "params": {"output_file": path, "n_images": 10},
        "tags": ["sweep", "bit_depth=16"],
        "status": status,
        "attempts": 1,
        "started_at": T0 + index,
        "finished_at": T0 + index + 0.5,
        "duration_s": 0.5,
        "error": None if status == "passed" else "acquisition FAILED: ERROR: detector lost",
        "recoveries": [],
        "failed_attempts": [],
        "run_id": 1795978630763249142 + index,  # an older runner sends ints
        "output_file": path,
        "n_images": 10,
        "n_written": 10 if status == "passed" else 3,
        "acquisition": {"state": "FINISHED", "stats": {"n_write_completed": 10, "start_time": T0 + index, "stop_time": T0 + index + 0.4}},
        "daq_log": None,
        "daq_log_reason": None,
    }
    record.update(extra)
    return record


def step_event(record: Dict[str, Any]) -> Event:
    return Event(events.STEP_FINISHED, "run1", record["index"], record["name"], record, time=T0 + record["index"] + 0.5)


def skipped(index: int, reason: str = "step 2 failed") -> Dict[str, Any]:
    return {
        "index": index, "name": f"stop {index}", "kind": "stop", "params": {}, "tags": [], "status": "skipped", "attempts": 0,
        "started_at": None, "finished_at": None, "duration_s": 0.0, "error": f"not run: {reason}", "recoveries": [], "failed_attempts": [],
    }  # fmt: skip


def finished(status: str, reason: Optional[str] = None, at: float = T0 + 60) -> Event:
    return Event(events.RUN_FINISHED, "run1", data={"status": status, "reason": reason, "daq_unreachable": False}, time=at)


def a_failed_run(tmp_path: Path) -> List[Event]:
    """Pre-run recovery, a write that passed after a retry, one that failed, one skipped, notices."""
    good = tmp_path / "good.h5"
    good.write_bytes(b"x" * 1234)
    first = write_record(
        1,
        str(good),
        attempts=2,
        failed_attempts=[{"attempt": 1, "error": "acquisition FAILED: ERROR: flaky\x1b[31m \x07", "at": T0 + 1.2}],
        recoveries=[{"reason": "writer UNKNOWN before the step", "action": "stop_writer", "outcome": "READY", "at": T0 + 1.1}],
    )
    return [
        run_started(3),
        Event(events.RECOVERY, "run1", None, None, {"reason": "writer UNKNOWN at start", "action": "stop_writer", "outcome": "READY", "at": T0 + 0.5}),
        Event(events.NOTICE, "run1", None, None, {"message": "no Redis: polling REST — naïve"}, time=T0 + 0.7),
        step_event(first),
        Event(events.NOTICE, "run1", 2, "write 2", {"message": "DAQ request failed (attempt 1); retrying"}, time=T0 + 2.1),
        step_event(write_record(2, str(tmp_path / "bad.h5"), status="failed")),
        step_event(skipped(3)),
        finished("failed", None),
    ]


def feed(consumers: List[Any], stream: List[Event]) -> None:
    for event in stream:
        for consumer in consumers:
            consumer(event)


# -- what the report holds ---------------------------------------------------------------------


def test_report_holds_what_a_person_decides_from(tmp_path):
    """Identity, where the DAQ came from, ISO UTC times everywhere, totals, files, a derived reason, UTF-8 kept."""
    path = tmp_path / "r.json"
    recorder = ReportRecorder()
    feed([JsonReportFile(str(path)), recorder], a_failed_run(tmp_path))
    raw = path.read_bytes()
    report = json.loads(raw)
    assert "µ".encode() in raw and b"\\u00b5" not in raw  # UTF-8 kept, not escaped
    assert ("9.9.9", "beamline-pc", "e12345", 4242, "3.12.1") == tuple(report[k] for k in ("daq_runner", "host", "user", "pid", "python"))
    assert ["daq-run", "sweep.yaml", "--url", "http://daq:5000"] == report["command"]
    assert {"root": "/data/é"} == report["batch"]["vars"]
    assert ("--url", "default") == (report["daq"]["url_source"], report["daq"]["redis_source"])
    assert "2027-01-15T08:00:00.000Z" == report["started_at"]
    assert "2027-01-15T08:01:00.000Z" == report["finished_at"] and 60.0 == report["duration_s"]
    stamps = [report["started_at"], report["finished_at"], report["recoveries"][0]["at"]]
    stamps += [n["at"] for n in report["notices"]]
    for step in report["steps"][:2]:
        stamps += [step["started_at"], step["finished_at"]]
        stamps += [a["at"] for a in step["failed_attempts"]] + [r["at"] for r in step["recoveries"]]
    assert all(ISO.match(s) for s in stamps), stamps
    assert "2027-01-15T08:00:01.200Z" == report["steps"][0]["failed_attempts"][0]["at"]
    assert [str(1795978630763249142 + i) for i in (1, 2)] == [s["run_id"] for s in report["steps"][:2]]
    assert "step 2 (write 2) failed: acquisition FAILED: ERROR: detector lost; 3 of 10 images written" == report["reason"]
    assert {"passed": 1, "failed": 1, "skipped": 1, "interrupted": 0, "pending": 0} == report["summary"]
    assert {"steps": 3, "images": 13, "bytes": 1234, "files": 2, "failed_attempts": 1} == report["totals"]
    good, partial = report["files"]  # the failed write's incomplete file is on disk too: listed
    assert {"path": str(tmp_path / "good.h5"), "step": 1, "n_images": 10, "size_bytes": 1234, "run_id": "1795978630763249143", "complete": True} == good
    assert (2, 3, False) == (partial["step"], partial["n_images"], partial["complete"])
    assert [{"at": "2027-01-15T08:00:00.700Z", "step": None, "message": "no Redis: polling REST — naïve"}] == report["notices"][:1]
    assert 2 == report["notices"][1]["step"]
    assert [{"reason": "writer UNKNOWN at start", "action": "stop_writer", "outcome": "READY", "at": "2027-01-15T08:00:00.500Z"}] == report["recoveries"]
    assert report == json.loads(json.dumps(recorder.report.to_dict()))  # the file and the Python object agree


def test_the_runners_reason_wins_and_a_passed_run_has_none(tmp_path):
    """A reason given by the runner is kept; a passed run has no reason."""
    failed, passed = RunReport(), RunReport()
    for event in a_failed_run(tmp_path)[:-1] + [finished("failed", "DAQ unreachable beyond the retry budget (40 s)")]:
        failed.feed(event)
    for event in [run_started(1), step_event(write_record(1, str(tmp_path / "x.h5"))), finished("passed")]:
        passed.feed(event)
    assert "DAQ unreachable beyond the retry budget (40 s)" == failed.reason
    assert (None, "passed") == (passed.reason, passed.status)
    assert None is passed.files[0]["size_bytes"]  # not visible here


def test_summary_adds_up_to_the_number_of_steps_when_the_runner_stopped_early():
    """Steps the runner never reported (it ended early) count as skipped: the summary adds up."""
    report = RunReport()
    for event in [run_started(5), step_event(skipped(1, "run interrupted")), finished("interrupted", "SIGTERM")]:
        report.feed(event)
    assert 5 == sum(report.summary.values()) and 5 == report.summary["skipped"]


def test_an_interrupted_run_without_a_reason_gets_one_from_its_step():
    """No reason from the runner: the first interrupted step's error is the reason."""
    record = {**skipped(1), "status": "interrupted", "error": "interrupted (SIGINT)", "name": "write a"}
    report = RunReport()
    for event in [run_started(1), step_event(record), finished("interrupted")]:
        report.feed(event)
    assert "step 1 (write a) interrupted: interrupted (SIGINT)" == report.reason


def test_an_old_runners_events_are_enough(tmp_path):
    """run_started with only batch, daq and n_steps (an older runner): the report still has every field."""
    path = tmp_path / "r.json"
    start = Event(events.RUN_STARTED, "r", data={"batch": {"name": "b", "path": "/b.yaml", "sha256": "0"}, "daq": {"url": "u", "redis": None}, "n_steps": 1})
    record = {"index": 1, "name": "stop", "kind": "stop", "params": {}, "status": "passed", "attempts": 1, "started_at": T0, "finished_at": T0 + 1, "duration_s": 1.0, "error": None}
    feed([JsonReportFile(str(path))], [start, Event(events.STEP_FINISHED, "r", 1, "stop", record), finished("passed")])
    report = load_report(str(path))
    assert report["host"] and report["daq_runner"] and report["pid"] == os.getpid() and report["command"] is None
    assert "passed" == report["status"] and [] == report["files"]


def test_notices_keep_the_first_and_the_last():
    """An outage of hours gives thousands of notices: the first 10 and the last 40 are kept, the rest counted."""
    report = RunReport()
    report.feed(run_started(0))
    for i in range(1000):
        report.feed(Event(events.NOTICE, "run1", None, None, {"message": f"n{i}"}, time=T0 + i))
    messages = [n["message"] for n in report.notices]
    assert [f"n{i}" for i in range(10)] + [f"n{i}" for i in range(960, 1000)] == messages
    assert 950 == report.tail()["notices_omitted"]


def test_keep_steps_false_keeps_only_the_problems(tmp_path):
    """RunReport(keep_steps=False): summary, totals and files complete; steps only the failed ones."""
    report = RunReport(keep_steps=False)
    for event in a_failed_run(tmp_path):
        report.feed(event)
    assert [2] == [s["index"] for s in report.steps] == [s["index"] for s in report.failed_steps]
    assert (3, 2) == (sum(report.summary.values()), len(report.files))


# -- the file survives ---------------------------------------------------------------------------


def test_the_file_is_valid_json_after_every_event_and_ends_without_padding(tmp_path):
    """Parsed after every event (notices included): running until the end, the final file has no padding."""
    path = tmp_path / "r.json"
    report_file = JsonReportFile(str(path))
    seen = []
    for event in a_failed_run(tmp_path):
        report_file(event)
        seen.append((json.loads(path.read_text())["status"], len(json.loads(path.read_text())["notices"])))
    assert ["running"] * 7 + ["failed"] == [s for s, _ in seen]
    assert [0, 0, 1, 1, 2, 2, 2, 2] == [n for _, n in seen]  # a notice is on disk at once
    assert path.read_bytes().endswith(b"}\n") and report_file.complete and report_file.error is None


def test_the_file_has_the_users_umask_permissions(tmp_path):
    """The report is created 0666 & ~umask like any file the user makes (mkstemp gave 0600)."""
    old = os.umask(0o022)
    try:
        feed([JsonReportFile(str(tmp_path / "r.json")), JUnitFile(str(tmp_path / "j.xml"))], a_failed_run(tmp_path))
    finally:
        os.umask(old)
    assert 0o644 == stat.S_IMODE((tmp_path / "r.json").stat().st_mode)
    assert 0o644 == stat.S_IMODE((tmp_path / "j.xml").stat().st_mode)


def test_short_writes_are_continued(tmp_path, monkeypatch):
    """os.write/os.pwrite that write at most 7 bytes a call: the report is still whole and valid."""
    real_write, real_pwrite = os.write, os.pwrite
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: real_pwrite(fd, bytes(data[:7]), offset))
    path, junit = tmp_path / "r.json", tmp_path / "j.xml"
    feed([JsonReportFile(str(path)), JUnitFile(str(junit))], a_failed_run(tmp_path))
    monkeypatch.undo()
    assert 3 == len(load_report(str(path))["steps"]) and "failed" == load_report(str(path))["status"]
    assert "3" == ET.parse(junit).getroot().get("tests")


def can_mount() -> Optional[str]:
    """Why a tmpfs cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that really fills up."""
    why = can_mount()
    if why:
        pytest.skip(why)
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the disk of ``folder`` to the last byte."""
    with open(folder / "filler", "ab", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 512)
        except OSError:
            pass


def big_steps(tmp_path: Path, n: int) -> List[Event]:
    return [step_event(write_record(i, str(tmp_path / f"f{i}.h5"), params={"blob": "x" * 3000})) for i in range(1, n + 1)]


def test_a_full_disk_keeps_the_last_complete_report_and_the_run_goes_on(small_disk, tmp_path):
    """The disk fills mid-run: no exception, one line on stderr naming the last step on disk,
    the file parses and holds exactly those steps, error is set; later events are harmless."""
    import io

    err = io.StringIO()
    path = small_disk / "r.json"
    report_file = JsonReportFile(str(path), stream=err)
    report_file(run_started(100))
    for event in big_steps(tmp_path, 100) + [finished("passed")]:
        report_file(event)  # never raises
    message = err.getvalue()
    assert 1 == len(message.splitlines()), message
    match = re.fullmatch(rf"report {re.escape(str(path))}: disk full; the file holds the run up to step (\d+)\n", message)
    assert match, message
    on_disk = load_report(str(path))
    assert [i + 1 for i in range(int(match.group(1)))] == [s["index"] for s in on_disk["steps"]]
    assert 5 < int(match.group(1)) < 25  # it used the space there was
    assert "running" == on_disk["status"]
    assert report_file.error == message.strip() and not report_file.complete


def test_a_disk_that_fills_before_the_end_keeps_every_step(small_disk, tmp_path, monkeypatch):
    """The disk fills just before the run ends (the files list does not fit): the file keeps
    all steps (status running) and says its end is missing."""
    import io

    monkeypatch.setattr(report_module, "_CHUNK", 512)  # reserve little ahead, so the end needs new space
    err = io.StringIO()
    path = small_disk / "r.json"
    report_file = JsonReportFile(str(path), stream=err)
    long_paths = [step_event(write_record(i, "/data/" + "d" * 3000 + f"/f{i}.h5")) for i in (1, 2, 3)]
    feed([report_file], [run_started(3)] + long_paths)
    fill(small_disk)
    report_file(finished("passed"))
    assert err.getvalue().endswith("disk full; the file holds the run up to step 3 but not its end\n"), err.getvalue()
    assert ([1, 2, 3], "running") == ([s["index"] for s in load_report(str(path))["steps"]], load_report(str(path))["status"])


def test_a_full_disk_at_the_start_writes_no_report_and_leaves_no_temp_file(small_disk, tmp_path):
    """No space for even the first version: one line, nothing left behind, the run is not disturbed."""
    import io

    fill(small_disk)
    err = io.StringIO()
    report_file = JsonReportFile(str(small_disk / "r.json"), stream=err)
    feed([report_file], [run_started(3)] + big_steps(tmp_path, 3) + [finished("passed")])
    assert f"report {small_disk / 'r.json'}: disk full; no report was written\n" == err.getvalue()
    assert ["filler"] == sorted(p.name for p in small_disk.iterdir())


def test_a_full_disk_does_not_stop_a_real_run(small_disk, daq_sim, tmp_path, monkeypatch):
    """Today's Runner on the simulator; the disk under the report fills after the first step:
    the run passes, error says why, the file is still valid."""
    import io

    monkeypatch.setattr(report_module, "_CHUNK", 512)

    def fill_after_first_step(event):
        if event.kind == events.STEP_FINISHED and event.step == 1:
            fill(small_disk)

    err = io.StringIO()
    report_file = JsonReportFile(str(small_disk / "r.json"), stream=err)
    batch = load_batch_text(
        "version: 1\nsteps:\n  - stop: {}\n  - for: {i: [1, 2, 3]}\n    steps: [{write: {output_file: '{root}/a{i}.h5', n_images: 3}}]\n",
        vars={"root": str(tmp_path)},
    )
    result = Runner(daq_sim.url, daq_sim.redis_url, [report_file, fill_after_first_step], retry_delay=0.05).run(batch)
    assert "passed" == result.status
    match = re.search(r"disk full; the file holds the run up to step (\d)$", report_file.error or "")
    assert match and int(match.group(1)) < 4, report_file.error  # tmpfs pages leave some room after the filling
    assert 1 == err.getvalue().count("\n")
    assert list(range(1, int(match.group(1)) + 1)) == [s["index"] for s in load_report(str(small_disk / "r.json"))["steps"]]


def test_a_full_disk_under_the_junit_file_is_one_line_and_leaves_nothing(small_disk, tmp_path):
    """JUnit on a full disk: one line, error set, no half file, no temp file, no exception."""
    import io

    err = io.StringIO()
    junit = JUnitFile(str(small_disk / "j.xml"), stream=err)
    fill(small_disk)
    feed([junit], a_failed_run(tmp_path))
    assert f"JUnit file {small_disk / 'j.xml'}: disk full; it was not written\n" == err.getvalue()
    assert junit.error and not junit.complete
    assert ["filler"] == [p.name for p in small_disk.iterdir()]


# -- JUnit -------------------------------------------------------------------------------------


def test_junit_strips_what_xml_forbids_has_skipped_steps_and_tags(tmp_path):
    """ESC and BEL in a DAQ error no longer make the file unparsable; skipped steps and tags are there."""
    path = tmp_path / "j.xml"
    stream = a_failed_run(tmp_path)
    stream[5] = step_event(write_record(2, str(tmp_path / "bad.h5"), status="failed", error="ERROR: \x1b[31mlost\x07 <disk> & \"more\""))
    feed([JUnitFile(str(path))], stream)
    suite = ET.parse(path).getroot()
    assert ("3", "1", "0", "1") == tuple(suite.get(k) for k in ("tests", "failures", "errors", "skipped"))
    cases = suite.findall("testcase")
    assert 'ERROR: [31mlost <disk> & "more"' == cases[1].find("failure").get("message")
    assert "not run: step 2 failed" == cases[2].find("skipped").get("message")
    assert ["sweep", "bit_depth=16"] == [p.get("value") for p in cases[0].findall("properties/property[@name='tag']")]
    assert "attempt 1 failed: acquisition FAILED: ERROR: flaky[31m " in cases[0].find("system-out").text
    props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert ("run1", "failed", "/b/sweep.yaml") == (props["run_id"], props["status"], props["batch"])
    assert "2027-01-15T08:00:00.000Z" == suite.get("timestamp")


def test_junit_counts_a_resumed_step_as_skipped(tmp_path):
    """A step kept from an earlier run was not run now: skipped, saying so."""
    path = tmp_path / "j.xml"
    record = {**write_record(1, str(tmp_path / "a.h5")), "resumed": True, "started_at": "2027-01-15T07:00:00.000Z"}
    feed([JUnitFile(str(path))], [run_started(1), step_event(record), finished("passed")])
    case = ET.parse(path).getroot().find("testcase")
    assert "kept from the run resumed: it passed there and was not run again" == case.find("skipped").get("message")


def test_junit_says_a_failure_once(tmp_path):
    """Three attempts that failed alike: the failure says the error, the output does not repeat it per attempt."""
    path = tmp_path / "j.xml"
    error = "acquisition FAILED: ERROR: detector lost"
    attempts = [{"attempt": a, "error": error, "at": T0 + a} for a in (1, 2, 3)]
    record = {**write_record(1, str(tmp_path / "a.h5"), status="failed"), "attempts": 3, "failed_attempts": attempts}
    feed([JUnitFile(str(path))], [run_started(1), step_event(record), finished("failed")])
    case = ET.parse(path).getroot().find("testcase")
    assert error == case.find("failure").text
    assert error not in (case.findtext("system-out") or "")


# -- memory --------------------------------------------------------------------------------------


def peak_bytes(n_steps: int, consumers: List[Any], writes: bool) -> int:
    """Peak traced memory of ``consumers`` over a synthetic run of ``n_steps`` steps: write steps
    that passed (each a file entry) or passed checks; every 100th step a check that failed."""
    start = run_started(n_steps)
    gc.collect()
    tracemalloc.start()
    try:
        for consumer in consumers:
            consumer(start)
        for i in range(1, n_steps + 1):
            if i % 100 and writes:
                record = write_record(i, f"/nowhere/f{i}.h5")
            else:
                record = {**skipped(i), "kind": "check", "status": "passed" if i % 100 else "failed", "error": None if i % 100 else "writer UNKNOWN"}
            event = step_event(record)
            for consumer in consumers:
                consumer(event)
            del record, event
        for consumer in consumers:
            consumer(finished("failed"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_of_the_report_consumers_is_flat_in_the_number_of_steps(tmp_path):
    """20,000 steps cost the JSON and JUnit files what 2,000 do (records and file entries are not
    kept in memory); RunReport(keep_steps=False) grows only by the failed steps it keeps."""

    def files(n: int) -> int:
        folder = tmp_path / f"m{n}"
        folder.mkdir()
        return peak_bytes(n, [JsonReportFile(str(folder / "r.json")), JUnitFile(str(folder / "j.xml"))], writes=True)

    small, large = files(2_000), files(20_000)
    assert large < small + 256 * 1024, (small, large)
    small, large = peak_bytes(2_000, [ReportRecorder(keep_steps=False)], False), peak_bytes(20_000, [ReportRecorder(keep_steps=False)], False)
    assert large < small + 180 * 2_000, (small, large)  # 180 more failed steps kept, ~1 kB each
    report = load_report(str(tmp_path / "m20000" / "r.json"))
    assert (20_000, 19_800, 200) == (len(report["steps"]), len(report["files"]), report["summary"]["failed"])
    assert "20000" == ET.parse(tmp_path / "m20000" / "j.xml").getroot().get("tests")


# -- reading reports back ------------------------------------------------------------------------


def test_load_report_says_clearly_what_is_wrong(tmp_path):
    """Missing, a directory, not JSON, cut short, not a report: one-line ValueError each."""
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    cases = {
        tmp_path / "missing.json": "cannot read report .*No such file",
        tmp_path: "cannot read report .*Is a directory",
        tmp_path / "bad.json": "not valid JSON",
        tmp_path / "list.json": "not a daq-run report",
        tmp_path / "bin.json": "not UTF-8",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            load_report(str(path))
        assert "\n" not in str(info.value)


# -- end to end ----------------------------------------------------------------------------------


def test_a_real_run_lists_its_files_with_their_sizes(run_batch, daq_sim, tmp_path):
    """Today's Runner on the simulator: files with the size on disk, images counted, the file equals the Python report."""
    path = tmp_path / "r.json"
    report = run_batch(
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 4}\n  - write: {output_file: '{root}/b.h5', n_images: 6}\n",
        consumers=[JsonReportFile(str(path))],
    )
    on_disk = load_report(str(path))
    assert on_disk == json.loads(json.dumps(report.to_dict()))
    assert [(str(tmp_path / n), c, os.path.getsize(tmp_path / n)) for n, c in (("a.h5", 4), ("b.h5", 6))] == [
        (f["path"], f["n_images"], f["size_bytes"]) for f in on_disk["files"]
    ]
    assert (10, 2) == (on_disk["totals"]["images"], on_disk["totals"]["files"])
    assert all(isinstance(s["run_id"], str) for s in on_disk["steps"])
    assert all(ISO.match(s["started_at"]) for s in on_disk["steps"])
    assert time.time() - 60 < report.started_at < time.time()


def test_the_consumers_of_one_event_share_its_step_record(tmp_path):
    """The run report, the report file and the console follow the same events: a finished step
    is put in the report's form once (one copy, one look at the file's size), not once each."""
    from daq_runner._tally import Tally

    out = tmp_path / "a.h5"
    out.write_bytes(b"x" * 1234)
    record = {
        "index": 1, "name": "w", "kind": "write", "status": "passed", "started_at": 1.0, "finished_at": 2.0,
        "run_id": 7, "output_file": str(out), "n_images": 1, "n_written": 1, "acquisition": {"state": "FINISHED"},
        "recoveries": [], "failed_attempts": [],
    }
    event = Event(events.STEP_FINISHED, "r", 1, "w", record)
    first, second = Tally().feed(event), report_module.RunReport().feed(event)
    assert first is second and first.file_entry() is second.file_entry()
    assert 1234 == first.file_entry()["size_bytes"] and "7" == first["run_id"]
    again = Tally().feed(Event(events.STEP_FINISHED, "r", 1, "w", dict(record)))
    assert again is not first and again.to_json() == first.to_json()  # another event: its own


# -- partial files: every file a write started is listed ------------------------------------------


def _h5_images(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        group = next(iter(f.values()))
        return int(group["image_id"].shape[0])


def _partial(report: Dict[str, Any], path: Path) -> Dict[str, Any]:
    (entry,) = [f for f in report["files"] if f["path"] == str(path)]
    assert entry["complete"] is False and entry["size_bytes"] == os.path.getsize(path) > 0
    return entry


@pytest.mark.parametrize("wait", [True, False])
def test_a_write_its_timeout_ends_leaves_a_listed_partial_file(run_batch, daq_sim, tmp_path, wait):
    """A write cut short by its step's timeout (waited for, or in the background): its partial file
    is in ``files`` and in the totals, ``n_written`` is the DAQ's final count (not null), and the
    failed attempt is recorded either way."""
    daq_sim.core.settings.frame_rate = 200
    path = tmp_path / "long.h5"
    report = run_batch(
        f"version: 1\nsteps:\n  - write: {{output_file: '{path}', n_images: 3000, wait: {str(wait).lower()}}}\n    timeout: 1.5\n"
    ).to_dict()
    (step,) = report["steps"]
    assert "failed" == step["status"] and "timed out" in step["error"]
    assert isinstance(step["n_written"], int) and 0 < step["n_written"] < 3000
    entry = _partial(report, path)
    assert step["n_written"] == entry["n_images"] == report["totals"]["images"] == _h5_images(path)
    assert (1, entry["size_bytes"]) == (report["totals"]["files"], report["totals"]["bytes"])
    assert 1 == len(step["failed_attempts"]) == report["totals"]["failed_attempts"]


def test_a_background_write_an_abort_ends_leaves_a_listed_partial_file(run_batch, daq_sim, tmp_path):
    """A ``wait: false`` write still running when a later step aborts the run: stopped, and its
    partial file listed with the images in it."""
    daq_sim.core.settings.frame_rate = 200
    path = tmp_path / "bg.h5"
    report = run_batch(
        f"version: 1\nsteps:\n  - write: {{output_file: '{path}', n_images: 100000, wait: false}}\n"
        "  - wait: {seconds: 0.5}\n  - check: {writer: READY}\n"
    ).to_dict()
    steps = sorted(report["steps"], key=lambda s: s["index"])  # the background write is recorded last
    assert ["failed", "passed", "failed"] == [s["status"] for s in steps]
    step = steps[0]
    assert isinstance(step["n_written"], int) and step["n_written"] > 0
    entry = _partial(report, path)
    assert step["n_written"] == entry["n_images"] == report["totals"]["images"] == _h5_images(path)


def test_a_write_sigint_ends_leaves_a_listed_partial_file(daq_sim, tmp_path):
    """SIGINT during a long write: the report on disk lists the partial file with the images the
    DAQ wrote before the stop (as many as the HDF5 file holds)."""
    import signal

    from .conftest import batch_file, start_daq_run_until_writing

    daq_sim.core.settings.frame_rate = 200
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/s.h5', n_images: 100000}\n")
    report_path = tmp_path / "r.json"
    proc = start_daq_run_until_writing(daq_sim, path, report_path)
    try:
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert 130 == proc.wait(15)
    finally:
        proc.kill()
    report = load_report(str(report_path))
    (step,) = report["steps"]
    assert "interrupted" == step["status"] and isinstance(step["n_written"], int) and step["n_written"] > 0
    entry = _partial(report, tmp_path / "s.h5")
    assert step["n_written"] == entry["n_images"] == report["totals"]["images"] == _h5_images(tmp_path / "s.h5")


def test_a_refused_write_lists_no_file(run_batch, daq_sim, tmp_path):
    """A write the DAQ refused (no such folder) started nothing: no file listed."""
    report = run_batch("version: 1\nsteps:\n  - write: {output_file: /no/such/dir/x.h5, n_images: 1}\n").to_dict()
    assert ([], None) == (report["files"], report["steps"][0]["n_written"])


# -- every version on disk is a whole report ----------------------------------------------------------


def test_every_version_on_disk_has_the_keys_of_a_final_one_and_adds_up(tmp_path, monkeypatch):
    """Parsed after every event of a long run (the room for steps kept small, so the files list
    moves many times): the keys of the final report, a summary (with ``pending``) that adds up to
    ``n_steps``, and ``files`` listing exactly the files of the steps on disk so far."""
    monkeypatch.setattr(report_module, "_CHUNK", 512)
    path = tmp_path / "r.json"
    n = 120
    stream = [run_started(n)]
    for i in range(1, n + 1):
        if i % 3:
            stream.append(step_event(write_record(i, str(tmp_path / f"f{i}.h5"), status="passed" if i % 7 else "failed")))
        else:
            stream.append(step_event({**skipped(i), "kind": "check", "status": "passed", "error": None}))
        if i % 10 == 0:
            stream.append(Event(events.NOTICE, "run1", i, None, {"message": f"note {i} " + "n" * 300}, time=T0 + i))
    stream.append(finished("failed"))
    report_file = JsonReportFile(str(path))
    versions = []
    for event in stream:
        report_file(event)
        versions.append(json.loads(path.read_text()))
    final = versions[-1]
    assert report_file.complete and path.read_bytes().endswith(b"}\n")
    for version in versions:
        assert list(final) == list(version)
        assert list(final["summary"]) == list(version["summary"])
        assert n == sum(version["summary"].values())
        on_disk = {s["output_file"] for s in version["steps"] if s["kind"] == "write"}
        assert on_disk == {f["path"] for f in version["files"]}
        assert len(version["files"]) == version["totals"]["files"]
    assert ("running", n) == (versions[0]["status"], versions[0]["summary"]["pending"])
    assert 0 == final["summary"]["pending"] and n - n // 3 == len(final["files"])


def test_a_killed_runs_report_is_whole_and_show_counts_the_pending_steps(daq_sim, tmp_path):
    """SIGKILL during the second of three writes: the report on disk has every key of a final one,
    lists the first file, its summary adds up (1 passed, 2 pending) and ``daq-run show`` says so."""
    import signal

    from .conftest import batch_file, daq_run, start_daq_run_until_writing

    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 100000}\n  - stop: {}\n",
    )
    report_path = tmp_path / "r.json"
    daq_sim.core.settings.frame_rate = 50
    proc = start_daq_run_until_writing(daq_sim, path, report_path)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and '"index":1' not in report_path.read_text():
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        requests_stop(daq_sim)
    report = load_report(str(report_path))
    assert "running" == report["status"]
    assert {"passed": 1, "failed": 0, "skipped": 0, "interrupted": 0, "pending": 2} == report["summary"]
    assert [str(tmp_path / "a.h5")] == [f["path"] for f in report["files"]]
    assert {"files", "totals", "summary", "reason", "finished_at", "notices"} <= set(report)
    shown = daq_run("show", str(report_path))
    assert 0 == shown.returncode and "3 steps: 1 passed, 2 pending" in shown.stdout, shown.stdout


def requests_stop(daq_sim: Any) -> None:
    import requests

    requests.post(daq_sim.url + "/writer/stop", json={}, timeout=10)
