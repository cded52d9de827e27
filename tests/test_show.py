"""`daq-run show`: the text summary and the HTML page, from reports of this and older versions.

The page is opened in a real headless browser when one is installed (Debian's chromium).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, List, Optional

import pytest

from daq_runner import events
from daq_runner.events import Event
from daq_runner.report import JsonReportFile, load_report
from daq_runner.show import main as show_main
from daq_runner.show import summary_text

from .conftest import batch_file, daq_run
from .test_report import T0, feed, fill, finished, run_started, small_disk, step_event, write_record  # noqa: F401 - small_disk is a fixture

# -- a night's report: ~30 steps, retries, a recovery, a failure, a skipped tail ----------------------


def night(tmp_path: Path, evil: str = "") -> Path:
    """A report of 31 steps: config and checks, an 8-depth sweep of writes, a write that passed on
    its second attempt after a recovery, one that failed twice, and three steps not run."""
    path = tmp_path / "night.report.json"
    report_file = JsonReportFile(str(path))
    report_file(run_started(31))
    report_file(Event(events.NOTICE, "run1", None, None, {"message": "no Redis lock: another runner could drive this DAQ"}, time=T0 + 0.2))
    t = T0 + 0.5
    index = 0

    def step(kind: str, name: str, seconds: float, status: str = "passed", **extra: Any) -> None:
        nonlocal t, index
        index += 1
        record = {
            "index": index, "name": name, "kind": kind, "params": {}, "tags": ["night"], "status": status,
            "attempts": extra.pop("attempts", 1), "started_at": t, "finished_at": t + seconds, "duration_s": seconds,
            "error": None, "recoveries": [], "failed_attempts": [],
        }  # fmt: skip
        record.update(extra)
        report_file(Event(events.STEP_FINISHED, "run1", index, name, record, time=t + seconds))
        t += seconds + 0.05

    def write(depth: int, n: int, seconds: float, **extra: Any) -> None:
        target = tmp_path / f"sweep_{depth}bit.h5"
        status = extra.get("status", "passed")
        if status == "passed":
            target.write_bytes(b"\0" * (n * depth * 8))
        written = extra.pop("n_written", n)
        acquisition = {"state": "FINISHED", "message": "Completed.", "stats": {"n_write_completed": written, "start_time": t + 0.1, "stop_time": t + seconds - 0.1}}
        step("write", f"write {n} to {target}", seconds, output_file=str(target), n_images=n, n_written=written,
             run_id=str(1795978630763249142 + index), acquisition=acquisition, **extra)  # fmt: skip

    step("check", "DAQ is healthy" + evil, 0.08)
    step("config", "config writer_user_id=0, bit_depth=16", 1.3)
    for depth in (8, 12, 16, 24, 32, 8, 16, 32):
        step("config", f"config bit_depth={depth}", 0.6 + depth / 40)
        step("check", f"check config bit_depth={depth}", 0.05)
        write(depth, 500, 0.4 + depth / 16)
    write(
        64, 800, 2.4, attempts=2,
        failed_attempts=[{"attempt": 1, "error": "writer went UNKNOWN during the acquisition; it was lost (writer reset to READY)", "at": t + 0.7}],
        recoveries=[{"reason": "writer UNKNOWN during the acquisition", "action": "stop_writer", "outcome": "READY", "at": t + 0.8}],
    )  # fmt: skip
    error = "acquisition FAILED: ERROR: Cannot create output file."
    write(
        128, 1000, 1.6, status="failed", attempts=2, error=error, n_written=0,
        failed_attempts=[{"attempt": 1, "error": error, "at": t + 0.6}, {"attempt": 2, "error": error, "at": t + 1.5}],
    )  # fmt: skip
    for name in ("wait 2 s", "stop", "check writer READY"):
        index += 1
        record = {"index": index, "name": name, "kind": "wait", "params": {}, "tags": [], "status": "skipped", "attempts": 0,
                  "started_at": None, "finished_at": None, "duration_s": 0.0, "error": "not run: step 28 failed", "recoveries": [], "failed_attempts": []}  # fmt: skip
        report_file(Event(events.STEP_FINISHED, "run1", index, name, record, time=t))
    report_file(finished("failed", None, at=t + 0.1))
    assert report_file.complete
    return path


# -- the text summary ------------------------------------------------------------------------------


def test_the_summary_says_status_and_reason_first_then_counts_failures_files(tmp_path, zone):
    """Status and reason on the first line; counts, times, images; failures with attempts; files written."""
    zone("UTC")
    text = summary_text(load_report(str(night(tmp_path))))
    lines = text.splitlines()
    assert lines[0] == (
        "FAILED: sweep µ — step 28 (write 1000 to " + str(tmp_path / "sweep_128bit.h5") + ") failed: acquisition FAILED: ERROR: Cannot create output file; "
        "0 of 1000 images written"
    )
    assert lines[1] == "31 steps: 27 passed, 1 failed, 3 skipped; 3 failed attempts"
    assert re.fullmatch(r"started 2027-01-15 08:00:00 UTC, finished 08:00:\d\d UTC; took \d+\.\d s", lines[2]), lines[2]
    assert re.fullmatch(r"images 4800 in 9 files, \d+\.\d KiB", lines[3]), lines[3]
    order = [text.index(h) for h in ("\nFailures\n", "\nPassed after a retry\n", "\nFiles written\n")]
    assert order == sorted(order)
    assert "  step 28 failed: write 1000 to " in text and "(2 attempts, each failed the same way): the reason above" in text
    assert "  step 27: write 800 to " in text and "attempt 1: writer went UNKNOWN" in text
    assert re.search(rf"^  {re.escape(str(tmp_path / 'sweep_8bit.h5'))} +500 +31\.2 KiB +5  -$", text, re.M), text
    assert "DAQ http://daq:5000 (from --url) · Redis redis://daq:6379/0 (from default)" in text


def test_daq_run_show_prints_it(tmp_path, capsys):
    """`daq-run show REPORT` through run_cli: exit 0, the summary on stdout."""
    from daq_runner.run_cli import main

    assert 0 == main(["show", str(night(tmp_path))])
    assert capsys.readouterr().out.startswith("FAILED: sweep µ — step 28")


def test_a_report_of_an_older_daq_run_is_shown(tmp_path, zone):
    """Local times with an offset, notices as strings, no files, totals or n_steps: still a summary and a page."""
    old = {
        "batch": {"name": "old", "path": "/b/old.yaml", "sha256": "0"}, "daq": {"url": "http://daq:5000", "redis": None},
        "run_id": "abc", "started_at": "2025-03-01T22:00:00.000+0100", "status": "failed", "reason": None, "daq_unreachable": False,
        "finished_at": "2025-03-01T22:00:10.500+0100", "summary": {"passed": 1, "failed": 1, "skipped": 0, "interrupted": 0},
        "notices": ["DAQ request failed (attempt 1): 503; retrying"],
        "steps": [
            {"index": 1, "name": "write 5 to /d/a.h5", "kind": "write", "status": "passed", "attempts": 1, "started_at": "2025-03-01T22:00:01.000+0100",
             "finished_at": "2025-03-01T22:00:02.000+0100", "duration_s": 1.0, "error": None, "output_file": "/d/a.h5", "n_images": 5, "run_id": 17,
             "acquisition": {"state": "FINISHED", "stats": {"n_write_completed": 5}}},
            {"index": 2, "name": "stop", "kind": "stop", "status": "failed", "attempts": 1, "started_at": "2025-03-01T22:00:03.000+0100",
             "finished_at": "2025-03-01T22:00:10.000+0100", "duration_s": 7.0, "error": "writer did not return to READY after the stop"},
        ],
    }  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    zone("UTC")
    text = summary_text(load_report(str(path)))
    assert text.startswith("FAILED: old — step 2 (stop) failed: writer did not return to READY after the stop\n2 steps: 1 passed, 1 failed\n")
    assert "started 2025-03-01 21:00:00 UTC, finished 21:00:10 UTC; took 10.5 s" in text
    assert "images 5 in 1 file\n" in text and re.search(r"^  /d/a\.h5 +5 +not visible here +1  -$", text, re.M), text
    assert 0 == show_main(["--html", str(path), "-o", str(tmp_path / "old.html")])
    assert "DAQ request failed (attempt 1): 503; retrying" in (tmp_path / "old.html").read_text()


def test_a_run_on_the_current_generation_shows_its_config_rest_files_per_writer_and_how_writes_were_confirmed(tmp_path):
    """The driver's URL with its config REST and user; each write's files; a write the count alone
    confirmed listed apart; the page says the same."""
    daq = {
        "generation": "driver", "url": "ws://det:8080", "config_url": "http://det:5000", "config_user": "e12345", "redis": None,
        "url_source": "--daq det", "redis_source": "none: this DAQ generation has no Redis", "config_url_source": "--daq det",
    }  # fmt: skip
    here = [{"path": str(tmp_path / "a_0.h5"), "n_images": 3}, {"path": str(tmp_path / "a_1.h5"), "n_images": 2}]
    for entry in here:
        (tmp_path / Path(entry["path"]).name).write_bytes(b"\0" * 100)
    remote = [{"path": "/remote/b_0.h5", "n_images": 2}, {"path": "/remote/b_1.h5", "n_images": 2}]
    path = tmp_path / "driver.json"
    report_file = JsonReportFile(str(path))
    report_file(run_started(2, daq=daq))
    for index, files, confirmed in ((1, here, "files"), (2, remote, "driver_count")):
        record = write_record(index, files[0]["path"].replace("_0.h5", ".h5"), files=files, confirmed_by=confirmed, n_written=sum(f["n_images"] for f in files))
        report_file(step_event(record))
    report_file(finished("passed"))
    text = summary_text(load_report(str(path)))
    assert (
        "DAQ ws://det:8080 (from --daq det), the current generation (std_det_driver) · config REST http://det:5000 (from --daq det) as e12345 · "
        "Redis none: this DAQ generation has no Redis"
    ) in text
    assert "images 9 in 4 files, 200 B" in text
    assert "Passed without their files or the DAQ's log confirming them\n  step 2: write 2 (confirmed by the driver's count alone" in text
    assert re.search(rf"^  {re.escape(str(tmp_path / 'a_1.h5'))} +2 +100 B +1  -$", text, re.M), text
    assert re.search(r"^  /remote/b_0\.h5 +2 +not visible here +2  -$", text, re.M), text
    assert 0 == show_main(["--html", str(path), "-o", str(tmp_path / "driver.html")])
    page = (tmp_path / "driver.html").read_text()
    assert "<th>Config REST</th>" in page and "the current generation (std_det_driver)" in page
    assert '<td class="muted">its files</td>' in page and '<td class="warn">the driver&#x27;s count alone' in page


def test_the_report_of_a_run_on_another_host_says_it_cannot_tell(tmp_path):
    """A report whose run never ended, written on another host: the summary says it cannot look there."""
    path = tmp_path / "r.json"
    report_file = JsonReportFile(str(path))
    report_file(run_started(4))
    text = summary_text(load_report(str(path)))
    assert text.startswith(
        "RUNNING?: sweep µ — not finished: the run (pid 4242 on beamline-pc) goes on, or was killed (another host: not looked at from here); "
        "step 1 of 4 under way at the report's last write\n4 steps: 4 pending\n"
    ), text


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "Is a directory"),
        (lambda p: p / "missing.json", "No such file"),
        (lambda p: (p / "x.yaml").write_text("version: 1\n") and p / "x.yaml", "not valid JSON"),
        (lambda p: (p / "x.json").write_text('{"a": 1}') and p / "x.json", "is not a daq-run report"),
        (lambda p: (p / "x.bin").write_bytes(b"\x89PNG\r\n\x1a\n\0\0") and p / "x.bin", "not UTF-8"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    """Not a report, unreadable, a directory: one line on stderr, exit 2, nothing on stdout."""
    for extra in ([], ["--html", "-o", str(tmp_path / "out.html")]):
        assert 2 == show_main([*extra, str(make(tmp_path))])
        captured = capsys.readouterr()
        assert "" == captured.out and 1 == len(captured.err.splitlines()) and message in captured.err, captured.err
        assert captured.err.startswith("daq-run show: ")
    assert not (tmp_path / "out.html").exists()


def test_the_installed_command_refuses_bad_input_and_bad_outputs(tmp_path):
    """Through the installed daq-run: a directory is exit 2 in one line; -o onto the report itself is refused;
    -o into a folder that does not exist is a page that could not be written (exit 1, as README says)."""
    proc = daq_run("show", str(tmp_path))
    assert (2, "") == (proc.returncode, proc.stdout) and 1 == len(proc.stderr.splitlines()) and "Traceback" not in proc.stderr
    report = night(tmp_path)
    before = report.read_bytes()
    proc = daq_run("show", "--html", str(report), "-o", str(report))
    assert 2 == proc.returncode and "is the batch file itself" not in proc.stderr and str(report) in proc.stderr
    assert before == report.read_bytes()
    proc = daq_run("show", "--html", str(report), "-o", str(tmp_path / "no" / "such" / "p.html"))
    assert 1 == proc.returncode and "does not exist" in proc.stderr  # the page could not be written
    proc = daq_run("show", str(report), "-o", str(tmp_path / "p.html"))
    assert 2 == proc.returncode and "--html" in proc.stderr


def test_a_full_disk_under_the_page_is_exit_1_and_leaves_nothing(small_disk, tmp_path, capsys):  # noqa: F811
    """The page cannot be written: one line, exit 1, no half page, no temp file."""
    report = night(tmp_path)
    fill(small_disk)
    assert 1 == show_main(["--html", str(report), "-o", str(small_disk / "p.html")])
    assert "No space left on device" in capsys.readouterr().err
    assert ["filler"] == [p.name for p in small_disk.iterdir()]


# -- the HTML page ----------------------------------------------------------------------------------


def page(tmp_path: Path, evil: str = "") -> str:
    out = tmp_path / "night.html"
    assert 0 == show_main(["--html", str(night(tmp_path, evil)), "-o", str(out)])
    return out.read_text(encoding="utf-8")


def test_the_page_is_self_contained_and_escapes_everything(tmp_path):
    """No script, no external resource (a CSP forbids fetching anything); hostile text from the report is escaped."""
    from html.parser import HTMLParser

    class Elements(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: set = set()
            self.links: list = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            self.tags.add(tag)
            self.links += [value for name, value in attrs if name in ("src", "href", "xlink:href", "action", "data") and value]

    html = page(tmp_path, evil=' <script>alert("x")</script><img src=http://evil/x.png>')
    elements = Elements()
    elements.feed(html)
    assert not elements.tags & {"script", "link", "img", "iframe", "object", "embed", "image", "use"}, elements.tags
    assert [] == elements.links
    assert "@import" not in html and "url(http" not in html and "url(//" not in html
    assert "default-src 'none'" in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_the_page_holds_summary_timeline_and_rates(tmp_path):
    """Status with symbol and word, the reason, one timeline row per step, retry and recovery marks, a legend in words, images/s per write."""
    html = page(tmp_path)
    assert '✗ FAILED</span> sweep µ</h1>' in html
    assert "step 28 (write 1000 to" in html  # the reason
    assert 31 == html.count('<text x="8" y=')  # one status symbol per timeline row
    assert 3 == html.count('stroke="#b71c1c" stroke-width="2"><title>attempt ')  # each failed attempt marked on its row
    assert "recovery (writer UNKNOWN during the acquisition): stop_writer -&gt; READY</title>" in html
    for word in ("✓ passed", "✗ failed", "■ interrupted", "– skipped", "failed attempt (retried)", "recovery"):
        assert word in html
    assert "Images per second, per write" in html and html.count('<div class="bar"') == 9  # the 9 writes that wrote images
    assert "not run: step 28 failed" in html


def find_browser() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser(args: List[str], tmp_path: Path) -> subprocess.CompletedProcess:
    executable = find_browser()
    if executable is None:
        pytest.skip("no headless browser installed (Debian: apt-get install chromium)")
    profile = tmp_path / "profile"
    command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
               f"--user-data-dir={profile}", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def test_a_real_browser_renders_the_page(tmp_path):
    """Headless chromium loads the page offline: the DOM has the badge, the timeline and the tables; a screenshot is drawn."""
    page(tmp_path)
    html = tmp_path / "night.html"
    dom = browser(["--dump-dom", html.as_uri()], tmp_path)
    assert 0 == dom.returncode, dom.stderr[-2000:]
    assert "✗ FAILED" in dom.stdout and 'class="timeline"' in dom.stdout and "Files written (9)" in dom.stdout
    shot = tmp_path / "night.png"
    proc = browser([f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", html.as_uri()], tmp_path)
    assert 0 == proc.returncode and shot.exists(), proc.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a drawn page, not a blank one


# -- end to end -------------------------------------------------------------------------------------


def test_show_on_the_report_of_a_real_run(daq_sim, tmp_path):
    """daq-run on the simulator, then `daq-run show` and `--html` on its report."""
    path = batch_file(tmp_path, "version: 1\nname: e2e\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 20}\n  - stop: {}\n")
    report = tmp_path / "r.json"
    assert 0 == daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report)).returncode
    proc = daq_run("show", str(report))
    assert 0 == proc.returncode, proc.stderr
    lines = proc.stdout.splitlines()
    assert ("PASSED: e2e", "2 steps: 2 passed") == (lines[0], lines[1])
    assert re.search(rf"^  {re.escape(str(tmp_path / 'a.h5'))} +20 +[\d.]+ [KM]iB +1  passed$", proc.stdout, re.M), proc.stdout
    proc = daq_run("show", "--html", str(report))
    assert 0 == proc.returncode and str(tmp_path / "r.html") == proc.stdout.strip()
    assert "✓ PASSED" in (tmp_path / "r.html").read_text()
    assert os.path.getsize(tmp_path / "r.html") < 200_000
    assert "a.h5" in json.dumps(load_report(str(report))["files"])


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_show_and_resume_refuse_what_is_not_a_regular_file(tmp_path, target):
    """A device or a FIFO as the report: one line and exit 2 at once (no endless read, no hang)."""
    from .conftest import batch_file, daq_run

    if target == "fifo":
        target = str(tmp_path / "pipe")
        os.mkfifo(target)
    for args in (["show", target], [str(batch_file(tmp_path, "version: 1\nsteps:\n  - stop: {}\n")), "--resume", target]):
        proc = daq_run(*args, timeout=20)
        assert 2 == proc.returncode and "not a regular file" in proc.stderr, proc.stderr


def test_show_survives_absurd_values(tmp_path):
    """Hand-made reports with huge times or strings where numbers belong: shown, or one line and exit 2."""
    from .conftest import daq_run

    report = {"batch": {"name": "odd"}, "status": "passed", "started_at": "2026-01-01T00:00:00Z", "finished_at": 1e308,
              "steps": [{"index": 1, "name": "w", "kind": "write", "status": "passed", "started_at": 0, "finished_at": 1e12}],
              "files": [{"path": "/x.h5", "size_bytes": "x"}], "duration_s": float("inf")}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(report))
    for args in (["show", str(path)], ["show", "--html", str(path), "-o", str(tmp_path / "odd.html")]):
        proc = daq_run(*args, timeout=30)
        assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 1


def test_the_page_never_replaces_a_file_the_report_refers_to_or_one_that_is_not_html(tmp_path, capsys):
    """-o naming the batch file, a written HDF5 file, the run's JUnit file, or any existing file that
    is not an HTML page: one line, exit 2, the file untouched. An earlier page is replaced."""
    batch = tmp_path / "night.yaml"
    batch.write_text("version: 1\nsteps: [{stop: {}}]\n")
    data = tmp_path / "a.h5"
    data.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    junit = tmp_path / "j.xml"
    junit.write_text("<testsuite/>")
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    path = tmp_path / "r.json"
    start = run_started(1, command=["daq-run", str(batch), "--junit", str(junit)])
    start.data["batch"] = {**start.data["batch"], "path": str(batch)}
    feed([JsonReportFile(str(path))], [start, step_event(write_record(1, str(data))), finished("passed")])
    cases = {batch: "is the report's batch file", data: "is a file the report lists", junit: "is the run's JUnit file", notes: "is not an HTML page"}
    for target, message in cases.items():
        before = target.read_bytes()
        capsys.readouterr()
        assert 2 == show_main(["--html", str(path), "-o", str(target)])
        err = capsys.readouterr().err
        assert message in err and 1 == len(err.splitlines()), err
        assert before == target.read_bytes()
    page = tmp_path / "p.html"
    assert 0 == show_main(["--html", str(path), "-o", str(page)])
    assert 0 == show_main(["--html", str(path), "-o", str(page)])  # an earlier page: replaced


# -- guards, file checks, programs ------------------------------------------------------------------


def guarded_night(tmp_path: Path) -> Path:
    """A report with a suspended write that passed, a write whose file failed its check, one not
    checked, and a program run between them."""
    path = tmp_path / "guarded.report.json"
    report_file = JsonReportFile(str(path))
    report_file(run_started(4))
    base = {"tags": [], "params": {}, "attempts": 1, "error": None, "recoveries": [], "failed_attempts": []}
    a, b, c = (str(tmp_path / f"{name}.h5") for name in ("a", "b", "c"))
    config = {"detector_name": "EIGER", "bit_depth": 16, "image_pixel_height": 2, "image_pixel_width": 2}
    records = [
        {**base, "index": 1, "name": "run caput X:M.VAL 1", "kind": "run", "status": "passed", "started_at": T0 + 1, "finished_at": T0 + 2, "duration_s": 1.0,
         "command": {"command": ["caput", "X:M.VAL", "1"], "outcome": "exited", "passed": True, "exit_code": 0, "expect_exit": 0, "duration_s": 0.9,
                     "output": ["Old : X:M.VAL 0", "New : X:M.VAL 1"], "output_lines": 2, "reason": "caput exited with status 0"}},
        {**base, "index": 2, "name": f"write 100 to {a}", "kind": "write", "status": "passed", "started_at": T0 + 2, "finished_at": T0 + 12, "duration_s": 10.0,
         "output_file": a, "n_images": 100, "n_written": 100, "run_id": "222",
         "suspensions": [{"reason": "the detector sent 0 images/s, below the guard's 50, for 2.0 s", "suspended_at": T0 + 4, "resumed_at": T0 + 8,
                          "detector_rate": 0.0, "run_id": "111", "n_written": 37, "output_file": a, "complete": False, "ended": "acquisition ended 'Interrupted.'"}],
         "file_check": {"status": "passed", "reason": "1 file, 100 images: every check passed", "files": [{"path": a, "size": 4321, "sha256": None}], "config": config}},
        {**base, "index": 3, "name": f"write 10 to {b}", "kind": "write", "status": "failed", "started_at": T0 + 12, "finished_at": T0 + 13, "duration_s": 1.0,
         "output_file": b, "n_images": 10, "n_written": 10, "run_id": "333", "error": f"file check failed: {b}: image_ids: 1 image id missing between 0 and 9: 5",
         "file_check": {"status": "failed", "reason": f"{b}: image_ids: 1 image id missing between 0 and 9: 5", "files": [], "config": config}},
        {**base, "index": 4, "name": f"write 10 to {c}", "kind": "write", "status": "passed", "started_at": T0 + 13, "finished_at": T0 + 14, "duration_s": 1.0,
         "output_file": c, "n_images": 10, "n_written": 10, "run_id": "444", "file_check": {"status": "not_checked", "reason": "verify: off"}},
    ]  # fmt: skip
    for record in records:
        report_file(Event(events.STEP_FINISHED, "run1", record["index"], record["name"], record, time=record["finished_at"]))
    report_file(finished("failed", None, at=T0 + 15))
    return path


def test_show_tells_suspensions_file_checks_and_programs(tmp_path, zone):
    """The summary counts the file checks, lists the suspended writes with their times and the
    incomplete acquisition, the writes not checked, the programs, and marks a file that failed
    its check; the page has the same in sections and suspensions on the timeline."""
    zone("UTC")
    path = guarded_night(tmp_path)
    text = summary_text(load_report(str(path)))
    assert "\nfile checks: 1 passed, 1 failed, 1 not checked\n" in text
    assert (
        "\nWrites suspended (the detector stopped delivering)\n"
        f"  step 2 passed: write 100 to {tmp_path / 'a.h5'} (1 suspension)\n"
        "    08:00:04 UTC to 08:00:08 UTC: the detector sent 0 images/s, below the guard's 50, for 2.0 s; "
        "acquisition 111 left 37 images (incomplete)\n"
    ) in text
    assert "\nFiles not checked\n  1 write: verify: off\n" in text
    assert "\nPrograms run\n  step 1 passed: run caput X:M.VAL 1: caput exited with status 0\n    | Old : X:M.VAL 0\n" in text
    assert re.search(rf"^  {re.escape(str(tmp_path / 'b.h5'))} +10 +not visible here +3  failed +INCOMPLETE \(its step did not pass\)$", text, re.M), text
    out = tmp_path / "g.html"
    assert 0 == show_main(["--html", str(path), "-o", str(out)])
    html = out.read_text(encoding="utf-8")
    assert "Writes suspended (the detector stopped delivering)</h2>" in html and 'fill="url(#hatch-suspended)"' in html
    assert "suspended: the detector sent 0 images/s, below the guard&#x27;s 50, for 2.0 s; acquisition 111 left 37 images (incomplete)</title>" in html
    assert "Programs run</h2>" in html and "New : X:M.VAL 1" in html
    assert "✗ check failed" in html and "– not checked" in html and "✓ checked" in html


def test_the_manifest_lists_the_complete_files_with_their_config(tmp_path, capsys):
    """show --manifest: one JSON line per complete file (the failed write's is left out), the
    config its check was made against, null where a file was not checked."""
    path = guarded_night(tmp_path)
    assert 0 == show_main(["--manifest", str(path)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [str(tmp_path / "a.h5"), str(tmp_path / "c.h5")] == [line["path"] for line in lines]
    assert ("222", 100, 16) == (lines[0]["run_id"], lines[0]["images"], lines[0]["config"]["bit_depth"])
    assert (None, None) == (lines[1]["config"], lines[1]["sha256"])


# -- several reports: a fleet ---------------------------------------------------------------------


def fleet(tmp_path: Path) -> List[Path]:
    """Reports of three DAQs that ran one smoke batch: one passed, one failed, one never reached its DAQ."""
    paths = []
    for name, url, status, reason, steps in (
        ("eiger", "http://daq-eiger.example.org:5000", "passed", None, [("passed", None)]),
        ("jungfrau", "http://daq-jf.example.org:5000", "failed", None, [("passed", None), ("failed", "acquisition FAILED: ERROR: detector lost")]),
        ("gone", "http://daq-gone.example.org:5000", "failed", "DAQ unreachable at the start", []),
    ):
        path = tmp_path / f"{name}.report.json"
        report_file = JsonReportFile(str(path))
        report_file(Event(events.RUN_STARTED, name, data={"batch": {"name": "smoke", "path": "batches/smoke.yaml"}, "daq": {"url": url}, "n_steps": 2}, time=T0))
        for i, (state, error) in enumerate(steps, 1):
            record = {"index": i, "name": f"write {i}", "kind": "write", "status": state, "error": error, "started_at": T0 + i, "finished_at": T0 + i + 1,
                      "duration_s": 1.0, "output_file": f"/d/{name}_{i}.h5", "n_images": 10, "n_written": 10 if state == "passed" else 4,
                      "acquisition": {"state": "FINISHED"}, "run_id": str(i)}  # fmt: skip
            report_file(Event(events.STEP_FINISHED, name, i, f"write {i}", record, time=T0 + i + 1))
        report_file(Event(events.RUN_FINISHED, name, data={"status": status, "reason": reason, "daq_unreachable": bool(reason)}, time=T0 + 65))
        paths.append(path)
    return paths


def test_several_reports_are_one_line_each_and_a_verdict(tmp_path, capsys):
    """`daq-run show R1 R2 R3`: status, DAQ, batch, duration, images, failed steps, report; exit 1 when one did not pass."""
    paths = fleet(tmp_path)
    assert show_main([str(p) for p in paths]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["STATUS", "DAQ", "BATCH", "DURATION", "IMAGES", "FAILED", "STEPS", "REPORT"]
    assert lines[1].split() == ["passed", "daq-eiger.example.org:5000", "smoke", "1", "min", "05", "s", "10", "-", str(paths[0])]
    assert lines[2].split()[:2] == ["FAILED", "daq-jf.example.org:5000"] and "14" in lines[2].split()
    assert "2 (write 2)" in lines[2] and lines[2].endswith(str(paths[1]))
    assert "DAQ unreachable at the start" in lines[3]
    assert lines[4] == "3 runs: 1 passed, 2 failed — NOT ALL PASSED"
    assert show_main([str(paths[0]), str(paths[0])]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 runs: 2 passed — all passed"


def test_a_report_that_cannot_be_read_is_a_line_of_the_fleet_not_its_end(tmp_path, capsys):
    """A DAQ whose job left no report, or a damaged one: its own line, the others shown, exit 1."""
    paths = fleet(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    assert show_main([str(paths[0]), str(tmp_path / "missing.json"), str(tmp_path / "broken.json")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("UNREADABLE") and "No such file or directory" in lines[2]
    assert lines[3].startswith("UNREADABLE") and "not valid JSON" in lines[3]
    assert lines[-1] == "3 runs: 1 passed, 2 unreadable — NOT ALL PASSED"


def test_one_page_of_several_reports(tmp_path, capsys):
    """--html R1 R2 R3 -o fleet.html: one self-contained page, a row per run with a link to its report; -o is required."""
    paths = fleet(tmp_path)
    out = tmp_path / "pages" / "fleet.html"
    out.parent.mkdir()
    assert show_main(["--html", *map(str, paths), "-o", str(out)]) == 1  # written; not every run passed
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "default-src 'none'" in page
    assert "NOT ALL PASSED" in page and "1 of 3 runs passed" in page
    assert page.count("<tr>") == 4 and 'href="../eiger.report.json"' in page and "daq-jf.example.org:5000" in page
    capsys.readouterr()
    assert show_main(["--html", *map(str, paths)]) == 2
    assert "needs -o PATH" in capsys.readouterr().err
    assert show_main(["--html", str(paths[0]), str(paths[1]), "-o", str(paths[1])]) == 2  # never over a report
    assert json.loads(paths[1].read_text())["status"] == "failed"


def test_the_summary_shows_the_estimate_and_the_cleanup(tmp_path):
    """A report with an estimate and a cleanup: both in the text summary and on the page."""
    path = tmp_path / "r.json"
    report_file = JsonReportFile(str(path))
    started = {"batch": {"name": "sweep"}, "daq": {}, "n_steps": 0, "estimate": {"duration_s": 12.5, "bytes": 2 * 1024**2, "images": 30},
               "cleanup": {"finally": 1, "restore_config": True}}  # fmt: skip
    report_file(Event(events.RUN_STARTED, "r", data=started, time=T0))
    cleanup = {"status": "failed", "reason": "restore_config failed: deployment ERROR",
               "steps": [{"index": 1, "name": "stop writer", "kind": "stop", "status": "passed"}],
               "restore_config": {"outcome": "failed", "fields": {"bit_depth": 16}, "error": "deployment ERROR"}}  # fmt: skip
    report_file(Event(events.CLEANUP, "r", data=cleanup, time=T0 + 1))
    report_file(Event(events.RUN_FINISHED, "r", data={"status": "failed", "reason": "cleanup failed: restore_config failed: deployment ERROR"}, time=T0 + 2))
    report = load_report(str(path))
    assert report["cleanup"] == cleanup and report["estimate"]["duration_s"] == 12.5
    text = summary_text(report)
    assert "estimated before the run: duration 12.5 s, volume 2.0 MiB in 30 images (at most)" in text
    assert "Cleanup: failed — restore_config failed: deployment ERROR" in text
    assert "  restore_config: failed (bit_depth=16): deployment ERROR" in text
    from daq_runner._html import render

    page = render(report)
    assert "<h2>Cleanup</h2>" in page and "estimated 12.5 s" in page


# -- everything the page has, in the text; each message once; kept, live, resumable ---------------------


def test_the_text_has_the_notices_recoveries_confirmations_and_times_of_the_page(tmp_path, zone):
    """`daq-run show` (text) lists what the page lists: notices (local time with UTC), the run's and
    the steps' recoveries (a recovery answering a failure names it, not its text again), where each
    write's confirmation came from, and its bit depth; the file columns line up."""
    zone("Europe/Zurich")
    text = summary_text(load_report(str(night(tmp_path))))
    assert "\nNotices\n  09:00:00 CET (08:00:00 UTC)  run: no Redis lock: another runner could drive this DAQ\n" in text
    assert "\nRecoveries\n  step 27: writer UNKNOWN during the acquisition -> stop_writer (READY)" in text
    assert "started 2027-01-15 09:00:00 CET (08:00:00 UTC), finished 09:00:28 CET (08:00:28 UTC)" in text
    assert "\nWrites\n  STEP  FILE             IMAGES    TIME  IMAGES/S  BITS  CONFIRMED BY\n" in text
    rows = text.split("\nFiles written\n")[1].split("\n\n")[0].splitlines()
    end = rows[0].index("IMAGES") + len("IMAGES")  # numbers are right-aligned under their heading
    assert all(row[end - 3 : end].isdigit() and row[end] == " " for row in rows[1:]), rows


def test_file_columns_line_up_whatever_the_path_lengths(tmp_path):
    """Files of paths of different lengths: images, sizes and steps start in the same column on every line."""
    path = tmp_path / "r.json"
    report_file = JsonReportFile(str(path))
    report_file(run_started(3))
    for i, name in enumerate(("a.h5", "a-much-longer-file-name.h5", "mid_name.h5"), 1):
        report_file(step_event(write_record(i, f"/data/e12345/{name}")))
    report_file(finished("passed"))
    rows = summary_text(load_report(str(path))).split("\nFiles written\n")[1].splitlines()
    assert 4 == len(rows)
    ends = {row.index(" 10 ") for row in rows[1:]}
    assert 1 == len(ends), rows
    assert 1 == len({row.index("not visible here") for row in rows[1:]}), rows


def kept_and_failed(tmp_path: Path, **head: Any) -> Path:
    """The report of a resumed run: step 1 kept from the run resumed, step 2 failed."""
    path = tmp_path / "resumed.report.json"
    report_file = JsonReportFile(str(path))
    report_file(run_started(2, **head))
    report_file(step_event({**write_record(1, "/d/kept.h5"), "resumed": True}))
    report_file(step_event(write_record(2, "/d/failed.h5", status="failed")))
    report_file(finished("failed"))
    return path


def test_kept_steps_are_named_as_kept_and_a_failed_run_says_how_to_continue(tmp_path, capsys):
    """Steps a resume kept read "kept from the run resumed" (text and page), never "resumed"; a
    failed run ends with the exact command line that continues it (the report's resume_command)."""
    resume = "cd /home/e12345 && daq-run sweep.yaml --url http://daq:5000 --resume /home/e12345/r.json"
    path = kept_and_failed(tmp_path, resume_command=resume)
    assert 0 == show_main([str(path)])
    text = capsys.readouterr().out
    assert "2 steps: 1 passed (1 kept from the run resumed), 1 failed" in text
    assert re.search(r"^  kept +1  write 1 +0\.50 s  kept from the run resumed$", text, re.M), text
    assert "resumed" not in text.replace("kept from the run resumed", "")
    assert f"To continue the run (the steps that passed are kept, the others run again):\n  {resume}\n" in text
    out = tmp_path / "p.html"
    assert 0 == show_main(["--html", str(path), "-o", str(out)])
    page = out.read_text()
    assert "1 passed (1 kept)" in page and _e(resume) in page
    assert 'font-style="italic" font-size="11">kept from the run resumed<title>' in page  # not a bar at the earlier run's time


def _e(text: str) -> str:
    from html import escape

    return escape(text, quote=True)


def test_a_report_without_a_resume_command_gets_one_from_its_command(tmp_path, capsys):
    """An older report (no resume_command): the hint is made from its `command`, with the report's path."""
    path = kept_and_failed(tmp_path)
    assert 0 == show_main([str(path)])
    text = capsys.readouterr().out
    assert f"  daq-run sweep.yaml --url http://daq:5000 --resume {path}    # from the folder the run was started in\n" in text


def test_a_live_run_is_shown_live_with_its_step_and_a_dead_one_as_killed(tmp_path):
    """The report of a run whose process still runs on this host: RUNNING, live, with the step under
    way (no resume hint: it goes on); the same report once its process is gone: KILLED, with the
    command that continues it."""
    import socket
    import subprocess
    import sys
    import time as clock

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "live.json"
        report_file = JsonReportFile(str(path))
        report_file(Event(events.RUN_STARTED, "run1", data={**run_started(5).data, "host": socket.gethostname(), "pid": child.pid}, time=clock.time() + 5))
        for i in (1, 2):
            report_file(step_event(write_record(i, f"/d/{i}.h5")))
        text = summary_text(load_report(str(path)))
        assert text.startswith(f"RUNNING: sweep µ — live: pid {child.pid} on {socket.gethostname()} still runs; step 3 of 5 under way\n"), text
        assert "To continue" not in text
    finally:
        child.kill()
        child.wait()
    text = summary_text(load_report(str(path)))
    assert text.startswith(f"KILLED: sweep µ — the run (pid {child.pid} on {socket.gethostname()}) no longer runs and never finished its report; it was at step 3 of 5\n")
    assert "To continue the run" in text
    from daq_runner._html import render

    assert "■ KILLED</span>" in render(load_report(str(path)))


def test_a_pid_given_again_to_another_process_is_not_the_run(tmp_path):
    """A pid that now names a process started after the run began (pids are reused): not the run, which is killed."""
    import os
    import socket

    path = tmp_path / "reused.json"
    report_file = JsonReportFile(str(path))
    # This test's own process started long before 2027: with a start in 2020 it is another process.
    report_file(Event(events.RUN_STARTED, "run1", data={**run_started(2).data, "host": socket.gethostname(), "pid": os.getpid()}, time=1_600_000_000.0))
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("no /proc: a process's start time is not known here")
    assert summary_text(load_report(str(path))).startswith("KILLED: ")


def failing_folder_night(tmp_path: Path) -> Path:
    """Six writes into a folder that does not exist, each refused and retried: one failure, six times."""
    path = tmp_path / "refused.json"
    report_file = JsonReportFile(str(path))
    report_file(run_started(6))
    error = "the DAQ refused: Output file folder /nonexistent does not exist. Please create it first"
    for i in range(1, 7):
        attempts = [{"attempt": a, "error": error, "at": T0 + i + a / 10} for a in (1, 2, 3)]
        record = {**write_record(i, f"/nonexistent/{i}.h5", status="failed"), "n_images": 200, "error": error, "attempts": 3,
                  "failed_attempts": attempts, "n_written": None, "acquisition": None}  # fmt: skip
        report_file(step_event(record))
    report_file(finished("failed"))
    return path


def test_one_failure_of_six_steps_is_said_once_and_refused_writes_wrote_0_images(tmp_path):
    """Six writes refused the same way, three attempts each: the text and the page say the error once
    (not six boxes each with it three times); a refused write wrote 0 images (not "?"); the page's
    FILES tile says no file was written (not "0" and "size not visible here")."""
    path = failing_folder_night(tmp_path)
    error = "the DAQ refused: Output file folder /nonexistent does not exist. Please create it first"
    text = summary_text(load_report(str(path)))
    assert 2 == text.count(error), text  # the reason (step 1's), and the six steps' one failure
    assert "\n  6 steps failed the same way:\n    step 1: write 1 (3 attempts)\n" in text
    assert re.search(r"^ +1  1\.h5 +0/200 +0\.50 s +- +\? +nothing started$", text, re.M), text
    from daq_runner._html import render

    page = render(load_report(str(path)))
    shown = re.sub(r"<title>.*?</title>", "", page, flags=re.S)  # what a reader sees without hovering
    assert 2 == shown.count(_e(error)), shown.count(_e(error))  # the reason box and the one failure box
    assert 1 == page.count('<div class="fail')
    assert ">0 / 200</td>" in page and "? / 200" not in page
    assert '<div class="k">Files</div><div class="v">0</div><div class="s">no file written</div>' in page


def test_the_timelines_ticks_say_their_unit(tmp_path):
    """Ticks of a 28 s run read +5 s, +10 s ... (a bare 0:02 reads as minutes); longer runs in min and h."""
    from daq_runner._html import _clock, render

    page = render(load_report(str(night(tmp_path))))
    ticks = re.findall(r'text-anchor="middle" fill="#656d76">([^<]+)</text>', page)
    assert ticks[:3] == ["+0 s", "+5 s", "+10 s"], ticks
    assert ["+2 min", "+1 min 30 s", "+1 h", "+2 h 30 min", "+0.5 s"] == [_clock(120, 60), _clock(90, 30), _clock(3600, 600), _clock(9000, 1800), _clock(0.5, 0.1)]


def test_after_a_timeout_the_failure_line_and_the_summary_say_one_number(run_batch, daq_sim, tmp_path):
    """A write cut short by its timeout: the images its failure line gives are the images of the
    summary, the files and the HDF5 file (the count at the timeout was said, and the DAQ's final count elsewhere)."""
    daq_sim.core.settings.frame_rate = 200
    path = tmp_path / "long.h5"
    report = run_batch(f"version: 1\nsteps:\n  - write: {{output_file: '{path}', n_images: 2000}}\n    timeout: 1\n").to_dict()
    (step,) = report["steps"]
    written = step["n_written"]
    assert 0 < written < 2000
    assert f"; {written} of 2000 images written" in report["reason"]
    counts = {int(n) for n in re.findall(r"(\d+)(?:/| of )2000", report["reason"] + " " + " ".join(a["error"] for a in step["failed_attempts"]))}
    assert {written} == counts, (report["reason"], step["failed_attempts"])
    path_json = tmp_path / "r.json"
    path_json.write_text(json.dumps(report))
    text = summary_text(load_report(str(path_json)))
    assert f"images {written} in 1 file" in text
    assert {int(n) for n in re.findall(r"(\d+)(?:/| of )2000", text)} == {written}, text


def test_a_writes_record_says_the_configuration_it_ran_with(run_batch, daq_sim, tmp_path):
    """A write's record names the configuration it ran with (bit_depth, image size), taken when it
    started: a background write keeps its 8 bits after a later config step; show lists the bit depth."""
    report = run_batch(
        "version: 1\nsteps:\n  - config: {bit_depth: 8}\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 3}\n"
        "  - write: {output_file: '{root}/bg.h5', n_images: 100000, wait: false}\n"
        "  - stop: {}\n  - config: {bit_depth: 32}\n  - write: {output_file: '{root}/b.h5', n_images: 3}\n"
    ).to_dict()
    writes = {os.path.basename(s["output_file"]): s for s in report["steps"] if s["kind"] == "write"}
    assert (8, 8, 32) == tuple(writes[name]["config"]["bit_depth"] for name in ("a.h5", "bg.h5", "b.h5"))
    assert {"bit_depth", "image_pixel_height", "image_pixel_width"} <= set(writes["a.h5"]["config"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    text = summary_text(load_report(str(path)))
    assert re.search(r"^ +2  a\.h5 +3 +\S+ s +\S+ +8  ", text, re.M) and re.search(r"^ +6  b\.h5 +3 +\S+ s +\S+ +32  ", text, re.M), text
    assert re.search(r"^ +3  bg\.h5 +\d+/100000 .* 8  the DAQ's log; stopped by step 4 after \d+ of 100000 images$", text, re.M), text
