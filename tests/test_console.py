"""The console view (rich, on terminals), JSON log lines and the quiet summary.

Events are fed directly; the live line is checked with rich's own Console writing to a
StringIO of a fixed width, and once through a real pseudo-terminal.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import subprocess
import sys
import time
from typing import Any, List

import pytest
from rich.console import Console

from daq_runner import events
from daq_runner.console import ConsoleView, LogEvents, QuietSummary, _Current, end_line, live_line
from daq_runner.events import Event

from .conftest import batch_file, script
from .test_report import T0, a_failed_run, finished, run_started, step_event, write_record

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rich_console(width: int = 60) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None, legacy_windows=False)


def screen_lines(text: str) -> List[str]:
    """What a terminal shows line by line, control sequences removed."""
    return [line for chunk in ANSI.sub("", text).split("\n") for line in chunk.split("\r")]


def plain(pieces: list) -> str:
    return "".join(text for text, _ in pieces)


def current(name: str = "write 50 to /data/e12345/a-rather-long-folder-name/sweep_16bit.h5", **kw: Any) -> _Current:
    item = _Current(3, name, kw.pop("file", "/data/e12345/a-rather-long-folder-name/sweep_16bit.h5"), kw.pop("attempt", 1), 100.0)
    for key, value in kw.items():
        setattr(item, key, value)
    return item


# -- the live line ---------------------------------------------------------------------------


@pytest.mark.parametrize("width", [20, 40, 60, 80, 200])
def test_the_live_line_fits_the_terminal_and_renders_as_one_line(width):
    """Progress, countdown, unbounded wait, a plain step: never longer than the width minus one, one line in rich."""
    states = [
        current(n_written=20, n_images=50, first_seen=(99.0, 0)),
        current(waiting="writer READY", wait_s=10.0, wait_since=97.0),
        current(waiting="deployment", wait_s=None, wait_since=90.0, attempt=2),
        current(name="config bit_depth=16, writer_user_id=12345, detector_name=a-very-long-detector-name", file=None),
    ]
    console = rich_console(width)
    for state in states:
        pieces = live_line(state, 140, width, 100.0)
        assert len(plain(pieces)) <= width - 1, plain(pieces)
        from rich.text import Text

        text = Text(no_wrap=True, overflow="ellipsis", end="")
        for piece, style in pieces:
            text.append(piece, style=style or None)
        assert 1 == len(console.render_lines(text, console.options, pad=False))


def test_the_live_line_names_the_step_and_the_file():
    """At 60 columns the step, the end of the file name, the bar and the counts are all there."""
    line = plain(live_line(current(n_written=20, n_images=50, first_seen=(100.0, 20)), 14, 60, 100.0))
    assert line.startswith("[ 3/14] write 50 to sweep_16bit.h5 ━"), line  # the folder gives way to the file name
    assert "━" in line and line.endswith(" 20/50")
    named = plain(live_line(current(name="darks", file="/data/dark.h5", n_written=0, n_images=9), 14, 60, 100.0))
    assert named.startswith("[ 3/14] darks → dark.h5 ·")  # nothing written yet: no part of the bar is done


def test_no_eta_until_the_writer_has_been_watched_a_little():
    """The first progress gives no rate or ETA (a first estimate is wild); after 0.5 s and new images, a sensible one."""
    clock = Clock()
    view = ConsoleView(console=rich_console(80), refresh_per_second=0, clock=clock)
    view(run_started(3))
    view(Event(events.STEP_STARTED, "run1", 1, "write 100", {"attempt": 1, "kind": "write", "output_file": "/d/a.h5", "n_images": 100}))
    view(Event(events.PROGRESS, "run1", 1, "write 100", {"n_written": 40, "n_images": 100, "state": "ACQUIRING_IMAGES"}))
    assert "ETA" not in plain(live_line(view._current, 3, 80, clock.now))
    clock.now += 0.1
    view(Event(events.PROGRESS, "run1", 1, "write 100", {"n_written": 45, "n_images": 100, "state": "ACQUIRING_IMAGES"}))
    assert "ETA" not in plain(live_line(view._current, 3, 80, clock.now))  # 0.1 s: too early
    clock.now += 0.9
    view(Event(events.PROGRESS, "run1", 1, "write 100", {"n_written": 60, "n_images": 100, "state": "ACQUIRING_IMAGES"}))
    line = plain(live_line(view._current, 3, 80, clock.now))
    assert line.endswith(" 60/100 20 img/s ETA 2.0 s"), line  # 20 images in 1 s since first seen: 40 left


def test_waiting_shows_a_countdown_or_the_time_waited():
    """A wait of known length (a settle) counts down; without seconds, it counts the time waited."""
    clock = Clock()
    view = ConsoleView(console=rich_console(80), refresh_per_second=0, clock=clock)
    view(run_started(3))
    view(Event(events.STEP_STARTED, "run1", 2, "config bit_depth=16", {"attempt": 1, "kind": "config"}))
    view(Event(events.WAITING, "run1", 2, "config bit_depth=16", {"what": "settle", "seconds": 10, "exact": True}))
    clock.now += 3.2
    assert plain(live_line(view._current, 3, 80, clock.now)).endswith("config bit_depth=16 settle: 7 s left")
    view(Event(events.WAITING, "run1", 2, "config bit_depth=16", {"what": "deployment", "seconds": None}))
    clock.now += 12
    assert plain(live_line(view._current, 3, 80, clock.now)).endswith("waiting for deployment (12 s)")
    view(Event(events.STEP_STARTED, "run1", 3, "wait 2 s", {"attempt": 1, "kind": "wait"}))
    view(Event(events.WAITING, "run1", 3, "wait 2 s", {"what": "wait", "seconds": 2, "exact": True}))
    assert plain(live_line(view._current, 3, 80, clock.now)).endswith("[3/3] wait 2 s 2 s left")  # not "wait 2 s wait: 2 s left"


def test_a_wait_bounded_by_the_timeout_is_not_shown_as_a_countdown():
    """"waiting for deployment: 120 s left" read as if the deployment took 120 s: a wait whose
    seconds are only its bound (the step's time left, the lock's wait) says the time waited and
    the bound, whatever the width."""
    clock = Clock()
    view = ConsoleView(console=rich_console(80), refresh_per_second=0, clock=clock)
    view(run_started(3))
    view(Event(events.STEP_STARTED, "run1", 1, "config bit_depth=16", {"attempt": 1, "kind": "config"}))
    view(Event(events.WAITING, "run1", 1, "config bit_depth=16", {"what": "deployment", "seconds": 120.0}))
    clock.now += 3.2
    line = plain(live_line(view._current, 3, 80, clock.now))
    assert line.endswith("config bit_depth=16 waiting for deployment: 3 s, at most 117 s more"), line
    assert "s left" not in line
    narrow = plain(live_line(view._current, 3, 50, clock.now))
    assert narrow.endswith(" deployment: 3 s, ≤117 s more") and len(narrow) <= 49, narrow
    view(Event(events.WAITING, "run1", None, None, {"what": "lock", "seconds": 30}))  # before any step
    assert "waiting for lock: 0 s, at most 30 s more" in plain(live_line(view._current, 3, 80, clock.now))


def test_a_run_on_a_60_column_terminal(tmp_path):
    """The whole flow on rich's Console at 60 columns: step lines, the end line with counts and reason, nothing wider."""
    console = rich_console(60)
    clock = Clock()
    view = ConsoleView(console=console, refresh_per_second=0, clock=clock)
    run = a_failed_run(tmp_path)
    view(run[0])
    view(Event(events.STEP_STARTED, "run1", 1, "write 1", {"attempt": 1, "output_file": str(tmp_path / "good.h5"), "n_images": 10}))
    for n in (0, 4, 8):
        clock.now += 0.4
        view(Event(events.PROGRESS, "run1", 1, "write 1", {"n_written": n, "n_images": 10, "state": "ACQUIRING_IMAGES"}))
    for event in run[1:]:
        view(event)
    out = console.file.getvalue()
    lines = screen_lines(out)
    assert max(len(line) for line in lines) <= 60, [line for line in lines if len(line) > 60]
    assert any(line.startswith("[1/3] write 1 → good.h5 ━") and " 8/10" in line for line in lines), lines
    assert "daq-run: failed — 3 steps (1 passed, 1 failed, 1 skipped)," in ANSI.sub("", out)
    assert "13 images, 2 files, 1 min 00 s" in ANSI.sub("", out).replace("\n", " ")
    assert "  reason: step 2 (write 2) failed: acquisition FAILED:" in ANSI.sub("", out)
    assert view._live is None  # stopped


def test_the_end_line_of_a_passed_run(zone):
    """`daq-run: passed — 14 steps (14 passed), 450 images, 3 files, 12.4 s; ended ... UTC`, and no reason line."""
    zone("UTC")
    stream = io.StringIO()
    view = ConsoleView(stream, live=False)
    view(run_started(14))
    for i in range(1, 15):
        record = write_record(i, f"/nowhere/{i}.h5", n_written=150) if i <= 3 else {**write_record(i, "/x"), "kind": "check", "n_written": None}
        view(step_event(record))
    view(finished("passed", at=T0 + 12.4))
    assert stream.getvalue().endswith("daq-run: passed — 14 steps (14 passed), 450 images, 3 files, 12.4 s; ended 2027-01-15 08:00:12 UTC\n")


def test_the_end_line_gives_local_time_beside_utc(zone):
    """People read in the morning in their own time: the end line says when the run ended in local
    time with UTC beside it (the date of each when they differ); reports keep UTC."""
    zone("Europe/Zurich")
    stream = io.StringIO()
    view = ConsoleView(stream, live=False)
    view(run_started(0))
    view(finished("passed", at=T0 + 12.4))
    assert stream.getvalue().splitlines()[-1].endswith("; ended 2027-01-15 09:00:12 CET (08:00:12 UTC)")
    zone("America/Los_Angeles")
    assert "ended 2027-01-15 00:00:12 PST (08:00:12 UTC)" in end_line(view.tally)
    zone("Asia/Tokyo")
    late = ConsoleView(io.StringIO(), live=False)
    late(run_started(0))
    late(finished("passed", at=T0 + 15.5 * 3600))
    assert end_line(late.tally).endswith("ended 2027-01-16 08:30:00 JST (2027-01-15 23:30:00 UTC)")


def test_without_a_terminal_rich_is_not_imported():
    """The plain view (cron, pipes) never loads rich: start-up stays fast."""
    code = (
        "import io, sys\n"
        "from daq_runner.console import ConsoleView\n"
        "from daq_runner.events import Event\n"
        "v = ConsoleView(io.StringIO())\n"
        "v(Event('run_started', 'r', data={'batch': {'name': 'b'}, 'daq': {'url': 'u'}, 'n_steps': 0}))\n"
        "v(Event('run_finished', 'r', data={'status': 'passed'}))\n"
        "print('rich' in sys.modules)\n"
    )
    assert "False" == subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout.strip()


def test_a_broken_output_switches_the_view_off_and_the_run_goes_on():
    """EPIPE on write: no exception reaches the runner; the view is off from then on."""

    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    view = ConsoleView(Broken(), live=False)
    view(run_started(1))
    assert view.off
    view(step_event(write_record(1, "/x.h5")))
    view(finished("passed"))
    assert "passed" == view.tally.status


def test_daq_run_piped_into_head_finishes_its_run(daq_sim, tmp_path):
    """`daq-run ... | head -1`: the console loses its reader, the run still passes and the report is complete."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n" + "".join(f"  - write: {{output_file: '{{root}}/p{i}.h5', n_images: 20}}\n" for i in range(3)))
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [script("daq-run"), str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--log-format", "console"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    _, err = proc.communicate(timeout=60)
    assert first.startswith(b"daq-run: ")
    assert 0 == proc.returncode, err
    assert b"Traceback" not in err and b"Broken pipe" not in err
    assert "passed" == json.loads(report.read_text())["status"]


def test_daq_run_on_a_real_pseudo_terminal(daq_sim, tmp_path):
    """daq-run on a 60-column pty: rich draws the live line, the end line says it all, nothing is wider than 60."""
    import fcntl
    import pty
    import struct
    import termios

    daq_sim.core.settings.frame_rate = 100  # slow enough for the live line to be drawn
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/t.h5', n_images: 100}\n  - stop: {}\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [script("daq-run"), str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json")],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    assert 0 == proc.wait(10)
    out = b"".join(chunks).decode("utf-8", "replace")
    lines = [line for line in screen_lines(out) if not line.startswith("report: ")]  # the CLI's own last line
    assert max(len(line) for line in lines) <= 60, [line for line in lines if len(line) > 60]
    assert any("write 100 to" in line and "━" in line and "/100" in line for line in lines), lines
    assert "daq-run: passed — 2 steps (2 passed), 100 images, 1 file," in ANSI.sub("", out)


# -- log lines and the quiet summary ---------------------------------------------------------


class Logger:
    def __init__(self) -> None:
        self.lines: List[tuple] = []

    def __getattr__(self, level: str) -> Any:
        return lambda kind, **fields: self.lines.append((level, kind, fields))


def test_log_lines_give_progress_at_most_every_10_s():
    """100 progress events over 25 s: three progress lines (at 0, 10 and 20 s); other events all logged."""
    clock, logger = Clock(), Logger()
    log = LogEvents(logger, clock=clock)
    log(run_started(1))
    for i in range(100):
        log(Event(events.PROGRESS, "run1", 1, "w", {"n_written": i, "n_images": 100, "state": "ACQUIRING_IMAGES"}))
        clock.now += 0.25
    log(Event(events.WAITING, "run1", 1, "w", {"what": "writer READY", "seconds": 5}))
    log(finished("failed", "step 1 failed"))
    kinds = [kind for _, kind, _ in logger.lines]
    assert ["run_started", "progress", "progress", "progress", "waiting", "run_finished"] == kinds
    assert [0, 40, 80] == [f["n_written"] for _, k, f in logger.lines if k == "progress"]
    assert ("error", "step 1 failed") == (logger.lines[-1][0], logger.lines[-1][2]["reason"])


def test_quiet_summary_is_silent_on_pass_and_short_otherwise(tmp_path, zone):
    """Nothing when every step passed; else the end line and each problem, said once (the reason
    was the first problem, printed a second time)."""
    zone("UTC")
    quiet = io.StringIO()
    summary = QuietSummary(quiet)
    for event in [run_started(1), step_event(write_record(1, "/x.h5")), finished("passed")]:
        summary(event)
    assert "" == quiet.getvalue()
    loud = io.StringIO()
    summary = QuietSummary(loud)
    for event in a_failed_run(tmp_path):
        summary(event)
    assert [
        "daq-run: failed — 3 steps (1 passed, 1 failed, 1 skipped), 13 images, 2 files, 1 min 00 s; ended 2027-01-15 08:01:00 UTC",
        "  step 2 (write 2) failed: acquisition FAILED: ERROR: detector lost; 3 of 10 images written",
    ] == loud.getvalue().splitlines()
    other = io.StringIO()  # a reason that is not a step's (a lost lock): said, then the steps
    summary = QuietSummary(other)
    for event in a_failed_run(tmp_path)[:-1] + [finished("failed", "runner lock lost: taken over")]:
        summary(event)
    assert ["  reason: runner lock lost: taken over", "  step 2 (write 2) failed: acquisition FAILED: ERROR: detector lost; 3 of 10 images written"] == (
        other.getvalue().splitlines()[1:]
    )


def test_quiet_summary_bounds_the_problems_it_lists():
    """Thousands of failed steps (on_error: continue): 20 listed, the rest counted."""
    out = io.StringIO()
    summary = QuietSummary(out)
    summary(run_started(1000))
    for i in range(1, 1001):
        summary(step_event(write_record(i, "/x.h5", status="failed")))
    summary(finished("failed"))
    lines = out.getvalue().splitlines()
    assert 22 == len(lines) and "  ... and 980 more (see the report)" == lines[-1]  # the reason is the first of them


def test_console_lines_without_a_terminal(tmp_path):
    """The plain view (not a terminal): the same lines, no control sequences; waits listed with -v."""
    stream = io.StringIO()
    view = ConsoleView(stream, verbose=True)
    run = a_failed_run(tmp_path)
    view(run[0])
    view(Event(events.WAITING, "run1", 1, "write 1", {"what": "writer READY", "seconds": 10}))
    for event in run[1:]:
        view(event)
    text = stream.getvalue()
    assert "\x1b" not in text
    assert "[1/3] waiting for writer READY up to 10 s" in text and "[3/3] skip stop 3" in text
    assert "note: no Redis: polling REST — naïve" in text


def test_control_characters_are_escaped_on_every_console_line():
    """A step name with a raw backspace: the reason line, the error line, notices, recoveries and
    the quiet summary all show it as ``\\x08`` (as ``daq-run show`` does), never raw."""
    name = "evil\x08name\x1b[2J"
    record = {**write_record(1, "/x.h5", status="failed"), "name": name, "error": f"step {name} broke\x07"}
    run = [
        run_started(1),
        Event(events.NOTICE, "run1", 1, name, {"message": f"note about {name}"}),
        Event(events.RECOVERY, "run1", 1, name, {"reason": name, "action": "stop_writer", "outcome": "READY"}),
        Event(events.ATTEMPT_FAILED, "run1", 1, name, {"attempt": 1, "error": f"{name}", "will_retry": False}),
        Event(events.STEP_FINISHED, "run1", 1, name, record, time=T0 + 1),
        finished("failed"),
    ]
    for consumer_of in (lambda s: ConsoleView(s, verbose=True), QuietSummary):
        stream = io.StringIO()
        consumer = consumer_of(stream)
        for event in run:
            consumer(event)
        text = stream.getvalue()
        assert not any(c in text for c in "\x08\x1b\x07"), text
        said = [line.strip() for line in text.splitlines() if "step 1 (evil" in line]
        assert ["step 1 (evil\\x08name\\x1b[2J) failed: step evil\\x08name\\x1b[2J broke\\x07; 3 of 10 images written"] == [
            line.replace("reason: ", "") for line in said
        ]


# -- every message said once, lines that fit, a bar that reads without colour ----------------------


def failing_step(error: str = "config bit_depth is 16, expected 8") -> List[Event]:
    """A step whose three attempts fail the same way; a recovery answers the last failure."""
    name = "check config={bit_depth: 8}"
    stream = [run_started(1)]
    for attempt in (1, 2, 3):
        stream.append(Event(events.STEP_STARTED, "run1", 1, name, {"attempt": attempt, "kind": "check"}))
        stream.append(Event(events.ATTEMPT_FAILED, "run1", 1, name, {"attempt": attempt, "error": error, "will_retry": attempt < 3}))
    stream.append(Event(events.RECOVERY, "run1", 1, name, {"reason": error, "action": "stop_writer", "outcome": "stopped acquisition 7"}))
    record = {**write_record(1, "/x.h5", status="failed"), "kind": "check", "name": name, "error": error, "attempts": 3, "n_written": None}
    record.pop("acquisition")
    return stream + [Event(events.STEP_FINISHED, "run1", 1, name, record, time=T0 + 3), finished("failed", "runner lock lost: taken over")]


@pytest.mark.parametrize("live", [False, True])
def test_a_failure_is_said_once_per_step(live):
    """Three attempts failing the same way, a recovery after the last, the step's end: the error
    is printed once (it was printed for the attempt, the retry, the recovery and the step's end)."""
    error = "config bit_depth is 16, expected 8"
    console = rich_console(120) if live else None
    stream = io.StringIO()
    view = ConsoleView(console=console, refresh_per_second=0) if live else ConsoleView(stream, live=False)
    for event in failing_step(error):
        view(event)
    text = ANSI.sub("", console.file.getvalue()) if live else stream.getvalue()
    assert 1 == text.count(error), text
    assert "attempt 2 failed the same way; retrying" in text and "retry 2" not in text
    assert "recovery after attempt 1 failed: stop_writer (stopped acquisition 7)" in text
    assert "FAIL check config={bit_depth: 8}  3.00 s  (3 attempts; failed as attempt 1 did)" in text or "(3 attempts; failed as attempt 1 did)" in text


def test_a_last_failure_not_said_before_is_said_by_the_steps_line():
    """A step that fails at once: its error is said by the step's line, after the recovery it caused."""
    error = "timed out after 3 s before its 2000 images were written"
    stream = io.StringIO()
    view = ConsoleView(stream, live=False)
    view(run_started(1))
    view(Event(events.ATTEMPT_FAILED, "run1", 1, "write 2000", {"attempt": 1, "error": error, "will_retry": False}))
    view(Event(events.RECOVERY, "run1", 1, "write 2000", {"reason": error, "action": "stop_writer", "outcome": "stopped acquisition 9"}))
    view(step_event({**write_record(1, "/d/t.h5", status="failed"), "name": "write 2000", "error": error, "n_images": 2000, "n_written": 588}))
    lines = stream.getvalue().splitlines()
    assert 1 == stream.getvalue().count(error)
    assert ["[1/1] recovery after attempt 1 failed: stop_writer (stopped acquisition 9)", "[1/1] FAIL write 2000  0.50 s  (588 of 2000 images written)", f"      {error}"] == lines[1:]


def test_the_progress_bar_reads_without_colour():
    """NO_COLOR, a screenshot, a mail: the done and remaining parts of the bar are different characters."""
    line = plain(live_line(current(n_written=20, n_images=50, first_seen=(100.0, 20)), 14, 60, 100.0))
    bar = line[line.index(" ━") + 1 : line.rindex(" 20/50")]
    done, rest = bar.count("━"), bar.count("·")
    assert done and rest and done + rest == len(bar) and bar == "━" * done + "·" * rest, bar
    assert round(done / len(bar), 1) == 0.4
    full = plain(live_line(current(n_written=50, n_images=50, first_seen=(100.0, 50)), 14, 60, 100.0))
    assert "·" not in full and "━" in full


def test_finished_lines_fit_a_50_column_terminal():
    """On 50 columns a step's line keeps its file name and fits (the folder gives way); its error
    and the reason break between words, never inside one."""
    console = rich_console(50)
    view = ConsoleView(console=console, refresh_per_second=0)
    folder = "/sls/X12SA/data/e12345/raw/2026-12-07/a-rather-long-run-folder"
    error = "the DAQ refused: Output file folder /nonexistent/folder does not exist. Please create it first"
    view(run_started(1))
    view(step_event({**write_record(1, f"{folder}/timeout_0042.h5", status="failed"), "name": f"write 2000 to {folder}/timeout_0042.h5", "error": error}))
    view(finished("failed", f"step 1 failed: {error}"))
    lines = screen_lines(console.file.getvalue())
    assert max(len(line) for line in lines) <= 49, [line for line in lines if len(line) > 49]
    assert any(line.startswith("[1/1] FAIL write 2000 to timeout_0042.h5") for line in lines), lines
    words = set(" ".join(lines).split())
    assert {"/nonexistent/folder", "exist.", "first", "Output"} <= words, lines


def test_a_background_write_stopped_on_purpose_says_so_with_its_images():
    """A `wait: false` write ended by a later stop step passed: its line says it was stopped on purpose, with its images."""
    stream = io.StringIO()
    view = ConsoleView(stream, live=False)
    view(run_started(7))
    view(step_event({**write_record(5, "/d/dark.h5"), "name": "darks", "n_images": 5000, "n_written": 96, "stopped_by_step": 7}))
    assert "[5/7] ok   darks  0.50 s  (stopped by step 7 after 96 of 5000 images)" in stream.getvalue()


def test_kept_steps_are_named_as_kept_and_one_step_is_a_step():
    """A step a resume kept is "kept from the run resumed" (never a bare "resumed"); a one-step batch has "1 step"."""
    stream = io.StringIO()
    view = ConsoleView(stream, live=False)
    view(run_started(1))
    view(step_event({**write_record(1, "/d/a.h5"), "resumed": True}))
    text = stream.getvalue()
    assert "(1 step) on " in text and "(1 steps)" not in text
    assert "[1/1] ok   write 1  0.50 s  (kept from the run resumed)" in text


def test_log_lines_have_one_time_format_and_no_14_digit_seconds():
    """JSON log lines: `at` values as the report's ISO text (not epoch), seconds to the millisecond."""
    logger = Logger()
    log = LogEvents(logger)
    log(Event(events.RECOVERY, "run1", 1, "w", {"reason": "r", "action": "stop_writer", "outcome": "READY", "at": 1796610364.83259}))
    log(Event(events.WAITING, "run1", 1, "w", {"what": "deployment", "seconds": 19.991564605999883}))
    (_, _, recovery), (_, _, waiting) = logger.lines
    assert "2026-12-07T02:26:04.832Z" == recovery["at"]
    assert 19.992 == waiting["seconds"]


def test_the_json_log_lines_timestamp_is_the_reports_format(tmp_path):
    """daq-run's JSON log lines carry `timestamp` as the report's times are written (milliseconds, Z)."""
    code = (
        "import sys\n"
        "from daq_runner._cli import configure_json_logging, log_line\n"
        "configure_json_logging(False)\n"
        "log_line('report', path='r.json')\n"
    )
    line = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stderr)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"]), line
