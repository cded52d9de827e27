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
from daq_runner.console import ConsoleView, LogEvents, QuietSummary, _Current, live_line
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
    assert named.startswith("[ 3/14] darks → dark.h5 ━")


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
    """A `waiting` event with seconds counts down; without, it counts the time waited."""
    clock = Clock()
    view = ConsoleView(console=rich_console(80), refresh_per_second=0, clock=clock)
    view(run_started(3))
    view(Event(events.STEP_STARTED, "run1", 2, "config bit_depth=16", {"attempt": 1, "kind": "config"}))
    view(Event(events.WAITING, "run1", 2, "config bit_depth=16", {"what": "settle", "seconds": 10}))
    clock.now += 3.2
    assert plain(live_line(view._current, 3, 80, clock.now)).endswith("config bit_depth=16 waiting for settle: 7 s left")
    view(Event(events.WAITING, "run1", 2, "config bit_depth=16", {"what": "deployment", "seconds": None}))
    clock.now += 12
    assert plain(live_line(view._current, 3, 80, clock.now)).endswith("waiting for deployment (12 s)")
    view(Event(events.WAITING, "run1", None, None, {"what": "lock", "seconds": 30}))  # before any step
    assert "waiting for lock: 30 s left" in plain(live_line(view._current, 3, 80, clock.now))


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


def test_the_end_line_of_a_passed_run():
    """`daq-run: passed — 14 steps (14 passed), 450 images, 3 files, 12.4 s`, and no reason line."""
    stream = io.StringIO()
    view = ConsoleView(stream, live=False)
    view(run_started(14))
    for i in range(1, 15):
        record = write_record(i, f"/nowhere/{i}.h5", n_written=150) if i <= 3 else {**write_record(i, "/x"), "kind": "check", "n_written": None}
        view(step_event(record))
    view(finished("passed", at=T0 + 12.4))
    assert stream.getvalue().endswith("daq-run: passed — 14 steps (14 passed), 450 images, 3 files, 12.4 s\n")


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


def test_quiet_summary_is_silent_on_pass_and_short_otherwise(tmp_path):
    """Nothing when every step passed; else the end line, the reason and each problem."""
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
        "daq-run: failed — 3 steps (1 passed, 1 failed, 1 skipped), 13 images, 2 files, 1 min 00 s",
        "  reason: step 2 (write 2) failed: acquisition FAILED: ERROR: detector lost",
        "  step 2 failed: write 2: acquisition FAILED: ERROR: detector lost",
    ] == loud.getvalue().splitlines()


def test_quiet_summary_bounds_the_problems_it_lists():
    """Thousands of failed steps (on_error: continue): 20 listed, the rest counted."""
    out = io.StringIO()
    summary = QuietSummary(out)
    summary(run_started(1000))
    for i in range(1, 1001):
        summary(step_event(write_record(i, "/x.h5", status="failed")))
    summary(finished("failed"))
    lines = out.getvalue().splitlines()
    assert 23 == len(lines) and "  ... and 980 more (see the report)" == lines[-1]


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
        reason = [line for line in text.splitlines() if line.startswith("  reason:")]
        assert ["  reason: step 1 (evil\\x08name\\x1b[2J) failed: step evil\\x08name\\x1b[2J broke\\x07"] == reason
