"""Every file a write wrote is opened and checked: against daq-sim's bad_file_next fault and a real Redis.

A file the DAQ reports complete but that lacks an image, or ends early, fails its write with a
reason naming what is wrong, and ``retries`` write it again; ``verify: off`` and
``--no-verify`` record the file as not checked; ``--checksums`` puts size and sha256 into the
report and ``daq-run show --manifest`` prints them for a catalogue; without h5py a run that
would check files is refused before anything is sent.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
import requests

from daq_runner._filecheck import FileChecks
from daq_runner.batch import load_batch_text
from daq_runner.exceptions import StepFailed
from daq_runner.record import StepRecord

from .conftest import batch_file, daq_run, run_script, stream_entries


def faults(sim, **armed):
    assert 200 == requests.post(sim.url + "/sim/faults", json=armed, timeout=5).status_code


def report_of(path) -> dict:
    return json.loads(path.read_text())


def run(sim, tmp_path, body: str, *args: str):
    """The installed daq-run on ``sim``; returns (the process, the report)."""
    path = batch_file(tmp_path, body)
    report = tmp_path / "r.json"
    result = daq_run(str(path), "--url", sim.url, "--redis", sim.redis_url, "--report", str(report), *args)
    return result, (report_of(report) if report.exists() else None)


ONE_WRITE = """version: 1
steps:
  - write: {output_file: "{root}/scan.h5", n_images: 10}
"""


def test_a_file_with_a_gap_fails_its_write_with_the_gap_named_although_the_daq_says_complete(daq_sim, tmp_path):
    """bad_file_next: gap: the DAQ says FINISHED, 10/10 written, and logs it; the file lacks image
    id 5: the write fails with that reason, the file is listed incomplete, exit 1."""
    faults(daq_sim, bad_file_next="gap")
    result, report = run(daq_sim, tmp_path, ONE_WRITE)
    assert 1 == result.returncode, result.stderr
    step = report["steps"][0]
    path = tmp_path / "scan.h5"
    assert f"file check failed: {path}: shape: 9 images, expected 10; image_ids: 9 images, expected 10; 1 image id missing between 0 and 9: 5" == step["error"]
    assert (10, "Completed.") == (step["n_written"], step["daq_log"]["message"])  # the DAQ's word
    check = step["file_check"]
    assert ("failed", [{"name": "image_ids", "reason": "9 images, expected 10; 1 image id missing between 0 and 9: 5"}]) == (check["status"], check["failed"])
    assert [False] == [entry["complete"] for entry in report["files"]]
    assert 1 == report["summary"]["failed"]


def test_a_truncated_file_fails_and_a_retry_writes_it_again_over_its_own_bad_file(daq_sim, tmp_path):
    """bad_file_next: truncated with retries: 1: the first attempt fails its check (shape), the
    retry replaces the file its own attempt left and passes; both reasons are in the report."""
    faults(daq_sim, bad_file_next="truncated")
    result, report = run(daq_sim, tmp_path, ONE_WRITE.replace("n_images: 10}", "n_images: 10}\n    retries: 1"))
    assert 0 == result.returncode, result.stderr
    step = report["steps"][0]
    assert (2, "passed") == (step["attempts"], step["status"])
    [failed] = step["failed_attempts"]
    assert failed["error"].startswith("file check failed: "), failed
    assert "5 images, expected 10" in failed["error"], failed
    assert ("passed", "1 file, 10 images: every check passed") == (step["file_check"]["status"], step["file_check"]["reason"])
    notices = [n["message"] for n in report["notices"]]
    assert any("replacing " in n and "left by the failed attempt of this step" in n for n in notices), notices


def test_verify_off_and_no_verify_record_the_file_as_not_checked(daq_sim, tmp_path):
    """The same bad file passes the DAQ's verdict when nobody opens it: recorded as not
    checked, with why; daq-run show says so."""
    faults(daq_sim, bad_file_next="gap")
    result, report = run(daq_sim, tmp_path, ONE_WRITE.replace("n_images: 10}", "n_images: 10}\n    verify: off"))
    assert 0 == result.returncode, result.stderr
    assert {"status": "not_checked", "reason": "verify: off"} == report["steps"][0]["file_check"]
    shown = run_script("daq-run", "show", str(tmp_path / "r.json"))
    assert "file checks: 1 not checked" in shown.stdout and "\nFiles not checked\n  1 write: verify: off" in shown.stdout, shown.stdout
    (tmp_path / "r.json").unlink()
    faults(daq_sim, bad_file_next="gap")
    result, report = run(daq_sim, tmp_path, ONE_WRITE.replace("scan", "scan2"), "--no-verify")
    assert 0 == result.returncode, result.stderr
    assert "not_checked" == report["steps"][0]["file_check"]["status"]


def test_checksums_go_into_the_report_and_the_manifest_for_a_catalogue(daq_sim, tmp_path):
    """--checksums: each file's size and sha256 (of the bytes on disk) in its files entry;
    show --manifest prints one JSON line per complete file with the config it was written with."""
    body = """version: 1
steps:
  - config: {bit_depth: 8}
  - write: {output_file: "{root}/a.h5", n_images: 4}
  - write: {output_file: "{root}/b.h5", n_images: 3}
"""
    result, report = run(daq_sim, tmp_path, body, "--checksums")
    assert 0 == result.returncode, result.stderr
    for entry in report["files"]:
        data = open(entry["path"], "rb").read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size_bytes"], entry["sha256"])
    shown = run_script("daq-run", "show", "--manifest", str(tmp_path / "r.json"))
    assert 0 == shown.returncode, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [str(tmp_path / "a.h5"), str(tmp_path / "b.h5")] == [line["path"] for line in lines]
    assert ["path", "size", "sha256", "images", "run_id", "config"] == list(lines[0])
    entry = report["files"][0]
    assert (entry["size_bytes"], entry["sha256"], 4, entry["run_id"], 8) == (
        lines[0]["size"], lines[0]["sha256"], lines[0]["images"], lines[0]["run_id"], lines[0]["config"]["bit_depth"]
    )
    both = run_script("daq-run", "show", "--manifest", "--html", str(tmp_path / "r.json"))
    assert 2 == both.returncode and "contradict" in both.stderr


def test_a_background_write_is_checked_when_it_ends(daq_sim, tmp_path):
    """wait: false: the bad file is found when the acquisition's end is recorded on its step."""
    faults(daq_sim, bad_file_next="gap")
    body = """version: 1
steps:
  - write: {output_file: "{root}/bg.h5", n_images: 10, wait: false}
  - wait: {state: READY, timeout: 20}
"""
    result, report = run(daq_sim, tmp_path, body)
    assert 1 == result.returncode, result.stderr
    step = report["steps"][0]
    assert ("failed", "failed") == (step["status"], step["file_check"]["status"]) and "image id missing" in step["error"], step["error"]


def test_without_h5py_a_run_that_checks_files_is_refused_before_anything_is_sent(daq_sim, tmp_path):
    """h5py that cannot be imported: one line saying how to install it or run without the
    checks, exit 2, no report, nothing sent to the DAQ; --no-verify runs."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'h5py':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    env = {"PYTHONPATH": str(blocker)}  # every interpreter it starts: h5py cannot be found
    path = batch_file(tmp_path, ONE_WRITE)
    report = tmp_path / "r.json"
    refused = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), env=env)
    assert 2 == refused.returncode
    assert [
        "daq-run: error: file checks need the verify extra: pip install 'daq-runner[verify]' (No module named 'h5py'); "
        "or run with --no-verify (or verify: off) to write without checking the files"
    ] == refused.stderr.splitlines()
    writer = requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]
    assert not report.exists() and writer["acquisition"] is None and [] == stream_entries(daq_sim.redis_url, "daq:log")
    allowed = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--no-verify", env=env)
    assert 0 == allowed.returncode, allowed.stderr


def test_without_h5py_a_batch_writing_only_where_this_machine_cannot_look_is_not_refused():
    """Only a file this machine can open is checked: writes into the DAQ's own disks need no h5py."""
    batch = load_batch_text("version: 1\nsteps:\n  - write: {output_file: /nowhere/on/this/host/a.h5, n_images: 1}\n")
    seen = {"h5py": False}

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "h5py":
                seen["h5py"] = True
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    import sys

    hide = Hide()
    sys.meta_path.insert(0, hide)
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "h5py"}
    try:
        FileChecks().require(batch.steps)  # no VerifyExtraMissing
    finally:
        sys.meta_path.remove(hide)
        sys.modules.update(saved)
    assert not seen["h5py"]  # not even looked for


def test_a_folder_not_visible_here_is_recorded_not_checked_and_told_once(tmp_path):
    """A DAQ writing on another machine: nothing to open here; recorded as not checked with the
    folder named, and one notice per folder, not one per write (no DAQ is asked)."""
    told = []
    run_services = SimpleNamespace(notice=lambda message, step=None: told.append(message), daq=None, established={})
    batch = load_batch_text(
        "version: 1\nsteps:\n  - write: {output_file: /nowhere/x/a.h5, n_images: 1}\n  - write: {output_file: /nowhere/x/b.h5, n_images: 1}\n"
    )
    checks = FileChecks()
    for step in batch.steps:
        record = StepRecord.of(step)
        checks.check(run_services, step, record, None)
        assert {"status": "not_checked", "reason": "its folder /nowhere/x is not visible on this machine"} == record.file_check
    assert ["the files written to /nowhere/x cannot be checked: the folder is not visible on this machine (recorded as not checked)"] == told
    assert FileChecks(enabled=False).wanted(batch.steps[0]) is False


def test_a_file_that_fails_its_check_raises_with_the_verification_reason(tmp_path):
    """FileChecks.check against a DAQ seam that reports a failed verification: StepFailed with
    its one-line reason, and the record holds the compact result and the config."""
    from daq_runner.verify import Check, Expected, FileResult, Layout, Verification

    config = {"detector_name": "D", "image_pixel_height": 2, "image_pixel_width": 2, "bit_depth": 16}
    result = Verification(
        Layout.REST_V2, Expected("D", 3, 2, 2, 16), (FileResult(str(tmp_path / "a.h5"), (Check("readable", True, "ok"), Check("shape", False, "2 images, expected 3")), 2, 10),), ()
    )
    daq = SimpleNamespace(read_config=lambda: config, verify_files=lambda step, config, expected, options: result)
    run_services = SimpleNamespace(daq=daq, notice=print, established={})
    batch = load_batch_text(f"version: 1\nsteps:\n  - write: {{output_file: {tmp_path}/a.h5, n_images: 3}}\n")
    record = StepRecord.of(batch.steps[0])
    with pytest.raises(StepFailed, match=r"^file check failed: .*a\.h5: shape: 2 images, expected 3$"):
        FileChecks().check(run_services, batch.steps[0], record, None)
    assert ("failed", ["readable", "shape"], config) == (record.file_check["status"], record.file_check["checks"], record.file_check["config"])
    assert [{"name": "shape", "reason": "2 images, expected 3"}] == record.file_check["files"][0]["failed"]
