"""Where reports go (daq_runner.report_paths): the policy from Python, without a DAQ."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from daq_runner.batch import load_batch
from daq_runner.exceptions import OutputRefused, OutputUnwritable
from daq_runner.report_paths import ReportPaths, check_output_path, choose_report_paths, default_report_path

BODY = "version: 1\nsteps:\n  - write: {output_file: '{root}/data.h5', n_images: 1}\n"


def batch_in(folder: Path, name: str = "night.yaml"):
    path = folder / name
    path.write_text(BODY.replace("{root}", str(folder)))
    return load_batch(str(path))


def test_check_output_path_refuses_what_must_not_be_replaced(tmp_path):
    """The batch file itself, a directory, a device, a pipe, a symlink: refused; a missing folder: unwritable; one line each."""
    batch = tmp_path / "batch.yaml"
    batch.write_text("version: 1\n")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.json").symlink_to(batch)
    cases = {
        str(batch): (OutputRefused, "is the batch file itself"),
        str(tmp_path / "." / "batch.yaml"): (OutputRefused, "is the batch file itself"),
        str(tmp_path): (OutputRefused, "is a directory"),
        "/dev/null": (OutputRefused, "is not a regular file"),
        str(tmp_path / "fifo"): (OutputRefused, "is not a regular file"),
        str(tmp_path / "link.json"): (OutputRefused, "is the batch file itself"),
        str(tmp_path / "no" / "r.json"): (OutputUnwritable, "folder .* does not exist"),
        "": (OutputRefused, "empty"),
    }
    for path, (kind, message) in cases.items():
        with pytest.raises(kind, match=message) as info:
            check_output_path(path, batch_path=str(batch), what="report")
        assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    other = tmp_path / "other.json"
    other.write_text("{}")
    (tmp_path / "link2.json").symlink_to(other)
    with pytest.raises(OutputRefused, match="symbolic link"):
        check_output_path(str(tmp_path / "link2.json"), batch_path=str(batch), what="report")
    assert str(other) == check_output_path(str(other), batch_path=str(batch), what="report")
    assert str(tmp_path / "new.json") == check_output_path(str(tmp_path / "new.json"), batch_path=str(batch), what="report")


def test_default_report_names_do_not_collide_within_a_second(tmp_path):
    """Two runs in the same second get two names; an existing name is never reused; all in the batch's folder."""
    batch = tmp_path / "night.yaml"
    batch.write_text("version: 1\n")  # a batch file that exists: its report goes next to it, not into the current folder
    names = {default_report_path(str(batch), uuid.uuid4().hex[:12]) for _ in range(50)}
    assert 50 == len(names) and {str(tmp_path)} == {os.path.dirname(n) for n in names}
    first = default_report_path(str(batch), "abc123")
    Path(first).write_text("{}")
    second = default_report_path(str(batch), "abc123")
    assert first != second and re.search(r"night-\d{8}-\d{6}-abc123(-2)?\.report\.json$", second)
    assert str(tmp_path / "elsewhere") == os.path.dirname(default_report_path(str(batch), "abc123", str(tmp_path / "elsewhere")))


def test_an_existing_report_is_refused_unless_overwrite_report(tmp_path):
    """--report naming an existing report: refused (as data files are); allowed with overwrite_report; an empty file (mktemp) is fine."""
    batch = batch_in(tmp_path)
    earlier = tmp_path / "r.json"
    earlier.write_text('{"batch": {}, "steps": []}')
    with pytest.raises(OutputRefused, match="--report .*r.json exists: give a new path, --report-dir DIR .* or --overwrite-report"):
        choose_report_paths(batch, report=str(earlier))
    assert str(earlier) == choose_report_paths(batch, report=str(earlier), overwrite_report=True).report
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert ReportPaths(str(empty), None, False) == choose_report_paths(batch, report=str(empty))


def test_report_dir_gives_unique_names_in_that_folder(tmp_path):
    """--report-dir DIR: a new name of the usual form in DIR, never next to the batch; DIR must exist and be a folder."""
    batch = batch_in(tmp_path)
    folder = tmp_path / "reports"
    folder.mkdir()
    paths = {choose_report_paths(batch, report_dir=str(folder)).report for _ in range(3)}
    assert 1 == len(paths)  # nothing written yet: the same free name
    (path,) = paths
    assert str(folder) == os.path.dirname(path) and re.search(r"night-\d{8}-\d{6}-.+\.report\.json$", path)
    Path(path).write_text("{}")
    assert path != choose_report_paths(batch, report_dir=str(folder)).report
    with pytest.raises(OutputUnwritable, match="does not exist"):
        choose_report_paths(batch, report_dir=str(tmp_path / "none"))
    with pytest.raises(OutputRefused, match="is not a directory"):
        choose_report_paths(batch, report_dir=str(tmp_path / "night.yaml"))
    with pytest.raises(OutputRefused, match="both"):
        choose_report_paths(batch, report=str(tmp_path / "r.json"), report_dir=str(folder))


def test_a_report_is_never_a_file_the_batch_writes_nor_the_junit_file(tmp_path):
    """--report or --junit naming a write's output file, or one file for both: refused before the run."""
    batch = batch_in(tmp_path)
    with pytest.raises(OutputRefused, match="is the output file of step 1"):
        choose_report_paths(batch, report=str(tmp_path / "data.h5"))
    with pytest.raises(OutputRefused, match="--junit .* is the output file of step 1"):
        choose_report_paths(batch, report=str(tmp_path / "r.json"), junit=str(tmp_path / "data.h5"))
    with pytest.raises(OutputRefused, match="the same file"):
        choose_report_paths(batch, report=str(tmp_path / "r.json"), junit=str(tmp_path / "r.json"))
    junit = tmp_path / "j.xml"
    junit.write_text("<testsuites/>")  # an earlier JUnit file: CI reads it at a fixed path
    assert str(junit) == choose_report_paths(batch, junit=str(junit)).junit


def test_junit_replaces_only_an_earlier_junit_file(tmp_path):
    """--junit on an existing file that is not JUnit XML (data, a report, any text) is refused; ours and an empty file are not."""
    batch = batch_in(tmp_path)
    for name, content in (("precious.h5", b"\x89HDF\r\n\x1a\n" + bytes(100)), ("old.report.json", b'{"status": "passed"}'), ("notes.txt", b"x")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(OutputRefused, match=f"--junit .*{name} exists and is not a JUnit XML file"):
            choose_report_paths(batch, junit=str(tmp_path / name))
        assert content == (tmp_path / name).read_bytes()
    ours = tmp_path / "ours.xml"
    ours.write_text('<?xml version="1.0" encoding="utf-8"?>\n<!-- daq-run -->\n<testsuites name="x">\n</testsuites>\n')
    (tmp_path / "empty.xml").write_text("")
    assert str(ours) == choose_report_paths(batch, junit=str(ours)).junit
    assert str(tmp_path / "empty.xml") == choose_report_paths(batch, junit=str(tmp_path / "empty.xml")).junit


def test_a_default_report_that_cannot_be_written_says_how_to_give_one(tmp_path):
    """The default next to the batch, in a read-only folder: one line naming --report and --report-dir."""
    folder = tmp_path / "ro"
    folder.mkdir()
    batch = batch_in(folder)
    if subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only bind mount here")
    try:
        with pytest.raises(OutputUnwritable, match=r"not writable \(the default, next to the batch file\); give --report PATH or --report-dir DIR"):
            choose_report_paths(batch)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_folder_where_no_file_can_be_created_is_refused_before_the_run():
    """/proc says writable to root, but no file can be made there: refused at the check, not after the run."""
    with pytest.raises(OutputUnwritable, match="/proc"):
        check_output_path("/proc/daq-run-report.json", batch_path=None, what="--report")


def test_the_check_leaves_no_file_behind(tmp_path):
    """The folder's probe file is gone after the check."""
    assert str(tmp_path / "r.json") == check_output_path(str(tmp_path / "r.json"), batch_path=None, what="--report")
    assert [] == list(tmp_path.iterdir())
