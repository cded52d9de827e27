"""Consumers for people and log systems: a terminal view, structured log lines, a quiet summary.

- :class:`ConsoleView`: one line per step; on a terminal also a live line (built on ``rich``,
  imported only then) naming the step and its file, with a progress bar, a countdown while
  the runner waits, and an ETA once it means something, and the whole run: step i of N and
  the time left for the batch (from the run's estimate, else from its pace). It fits the
  terminal's width. The run's cleanup (``finally:``, ``restore_config``) gets its lines too.
- :class:`LogEvents`: every event as one structlog line (progress at most every 10 s).
- :class:`QuietSummary`: nothing when every step passed (cron mails any output), a short
  summary with the reason otherwise.

A broken output (``EPIPE``: piped into ``head``; a closed terminal) switches the consumer
off; the run goes on.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable, List, Optional, TextIO

from . import events
from ._streams import to_devnull
from ._tally import Tally, format_seconds, step_record
from ._text import one_line

__all__ = ["ConsoleView", "LogEvents", "QuietSummary", "end_line"]

_MARKS = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip", "interrupted": "INT "}
_STYLES = {"passed": "green", "failed": "bold red", "skipped": "dim", "interrupted": "bold yellow"}
ETA_AFTER_S = 0.5  # no estimate before the writer has been watched this long...
ETA_AFTER_IMAGES = 1  # ...and has written this many more images: a first guess is wild


def end_line(tally: Tally) -> str:
    """``daq-run: passed — 14 steps (14 passed), 450 images, 3 files, 12.4 s``."""
    return f"daq-run: {tally.status} — {tally.counts_line()}"


def _clean(text: Any) -> str:
    """Any text the console prints (a name from a batch file, an error, a reason, a notice),
    printable and on one line: control characters are shown as ``\\x08`` etc., as ``daq-run
    show`` and the report's error texts do, so they cannot act on the terminal."""
    return one_line(text or "", None)


def _middle(text: str, width: int) -> str:
    """``text`` shortened to ``width`` characters with an ellipsis in the middle (file names keep their end)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    keep = width - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2) :]


class _Current:
    """What the live line shows: the step under way, its progress or the runner's wait."""

    __slots__ = ("index", "name", "file", "attempt", "since", "n_written", "n_images", "first_seen", "waiting", "wait_s", "wait_since")

    def __init__(self, index: Optional[int], name: str, file: Optional[str], attempt: int, now: float) -> None:
        self.index, self.name, self.file, self.attempt, self.since = index, name, file, attempt, now
        self.n_written: Optional[int] = None
        self.n_images: Optional[int] = None
        self.first_seen: Optional[tuple] = None  # (time, n_written) of the first progress of this attempt
        self.waiting: Optional[str] = None
        self.wait_s: Optional[float] = None
        self.wait_since = now


_BATCH_ROOM = 40  # the batch's time left is shown only where the step keeps this much


def live_line(current: Optional[_Current], n_steps: int, width: int, now: float, batch_left: Optional[float] = None) -> List[tuple]:
    """The live line as (text, style) pieces whose total length is at most ``width - 1``.

    ``[ 3/14] write 50 to sweep_16bit.h5 ━━━━━━━━━━━━ 20/50 812 img/s ETA 3.0 s`` (a write's
    folder gives way to its file name); while the runner waits, ``… waiting for writer READY:
    7 s left`` (or the time waited so far when the wait has no known bound). ``batch_left``
    (seconds) adds `` · batch 2 min 05 s left`` where the width allows it. When the width
    is short, the batch's time goes first, then the ETA, then the rate, then the label is
    shortened in the middle. A cleanup step (index beyond ``n_steps``) shows ``[finally]``.
    """
    limit = max(width - 1, 1)  # the last column would wrap on some terminals
    pieces, left = [], limit
    tail: List[tuple] = []
    if batch_left is not None and current is not None:
        text = f" · batch {format_seconds(max(batch_left, 0.0))} left"
        if limit - len(text) >= _BATCH_ROOM:
            tail, limit = [(text, "cyan")], limit - len(text)
    for text, style in _pieces(current, n_steps, limit, now) + tail:
        text = text[:left]
        left -= len(text)
        pieces.append((text, style))
    return pieces


def _pieces(current: Optional[_Current], n_steps: int, limit: int, now: float) -> List[tuple]:
    if current is None:
        return [("", "")]
    if current.index is None:
        prefix = ""
    elif n_steps and current.index > n_steps:
        prefix = "[finally] "
    else:
        prefix = f"[{current.index:>{len(str(n_steps))}}/{n_steps}] "
    label = current.name
    if current.file:
        base = os.path.basename(current.file)
        # The folder is the same for a whole batch; the file name is what tells the steps apart.
        label = label.replace(current.file, base) if current.file in label else label
        if base not in label:
            label += f" → {base}"
    if current.attempt > 1:
        label += f" (attempt {current.attempt})"
    if current.waiting is not None:
        waited = now - current.wait_since
        if current.wait_s is not None:
            left = max(current.wait_s - waited, 0.0)
            tail, short = f" waiting for {current.waiting}: {left:.0f} s left", f" {left:.0f} s left"
        else:
            tail, short = f" waiting for {current.waiting} ({waited:.0f} s)", f" ({waited:.0f} s)"
        if limit - len(prefix) - len(tail) < 12:
            tail = short
        tail = tail[: max(limit - len(prefix), 0)]
        return [(prefix, "bold"), (_middle(label, max(limit - len(prefix) - len(tail), 0)), ""), (tail, "yellow")]
    if current.n_images:
        written = current.n_written or 0
        counts = f" {written}/{current.n_images}"
        extras = []
        if current.first_seen is not None:
            t0, n0 = current.first_seen
            elapsed = now - t0
            if elapsed >= ETA_AFTER_S and written - n0 >= ETA_AFTER_IMAGES:
                rate = (written - n0) / elapsed
                extras.append(f" {_rate(rate)} img/s")
                extras.append(f" ETA {format_seconds(max(current.n_images - written, 0) / rate)}")
        pieces = [counts] + extras
        while pieces and len(prefix) + len("".join(pieces)) + 10 + 8 > limit:
            pieces.pop()  # ETA first, then the rate, then the counts give way to the label and bar
        tail = "".join(pieces)
        room = limit - len(prefix) - len(tail)
        bar_width = max(min(30, room // 3), 5) if room >= 13 else 0
        label_room = room - bar_width - (1 if bar_width else 0)
        label_text = _middle(label, max(label_room, 0))
        bar_width += label_room - len(label_text)  # a short label leaves more bar
        done = int(bar_width * min(written / current.n_images, 1.0))
        bar = [(" ", ""), ("━" * done, "green"), ("━" * (bar_width - done), "grey37")] if bar_width else []
        return [(prefix, "bold"), (label_text, "")] + bar + [(tail, "")]
    elapsed = f" {format_seconds(now - current.since)}"
    room = limit - len(prefix) - len(elapsed)
    return [(prefix, "bold"), (_middle(label, max(room, 1)), ""), (elapsed, "dim")]


def _rate(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 10_000 else f"{rate:.0f}"


class ConsoleView:
    """One line per step, and on a terminal a live line for the step under way.

    Args:
        stream: where to write (default: standard output at the time of creation).
        verbose: also list skipped steps and each wait.
        live: draw the live line (default: when ``stream`` is a terminal). Only then is
            ``rich`` imported.
        console: a ready ``rich.console.Console`` to draw on (implies ``live``; tests use one
            writing to a ``StringIO`` with a fixed width).
        refresh_per_second: how often the live line is redrawn between events (countdowns,
            elapsed time); ``0`` redraws only on events.
        clock: monotonic time source (tests).
        estimate: the run's :class:`~daq_runner.estimate.Estimate`, for the time left of the
            whole batch (without one, or without a frame rate, the run's pace gives it once a
            step has finished).
    """

    def __init__(
        self,
        stream: Optional[TextIO] = None,
        verbose: bool = False,
        live: Optional[bool] = None,
        *,
        console: Any = None,
        refresh_per_second: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
        estimate: Any = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._pace = _BatchPace(estimate)
        self._cleanup_shown = 0
        self.verbose = verbose
        self.clock = clock
        self.refresh_per_second = refresh_per_second
        self.off = False  # set once the output broke; the run goes on without this view
        self.tally = Tally()
        self.n_steps = 0
        self._console = console
        if live is None:
            live = console is not None or _isatty(self.stream)
        self.live = live
        self._live: Any = None
        self._current: Optional[_Current] = None
        self._lock = threading.RLock()
        self._ticker: Optional[threading.Thread] = None
        self._stop_ticker = threading.Event()

    # -- output, guarded ----------------------------------------------------------------------

    def _guard(self, action: Callable[[], None]) -> None:
        if self.off:
            return
        try:
            action()
        except (OSError, ValueError):  # EPIPE, EIO, a closed stream: this view ends, not the run
            self.off = True
            self._stop_ticker.set()
            to_devnull(self._console.file if self._console is not None else self.stream)

    def _print(self, text: str, style: str = "") -> None:
        def emit() -> None:
            if self._console is not None:
                from rich.text import Text

                self._console.print(Text(text, style=style))
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

        with self._lock:
            self._guard(emit)

    def _refresh(self) -> None:
        with self._lock:
            if self._live is not None:
                self._guard(self._live.refresh)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        if self._console is None:
            self._console = Console(file=self.stream, highlight=False, soft_wrap=False)
        view = self

        class _Line:
            def __rich__(self) -> Any:
                from rich.text import Text

                text = Text(no_wrap=True, overflow="ellipsis", end="")
                now = view.clock()
                left = view._pace.left(view._current, now)
                for piece, style in live_line(view._current, view.n_steps, view._console.width, now, left):
                    text.append(piece, style=style or None)
                return text

        self._live = Live(_Line(), console=self._console, auto_refresh=False, transient=True, redirect_stdout=False, redirect_stderr=False)
        self._guard(self._live.start)
        if self.refresh_per_second > 0:
            self._ticker = threading.Thread(target=self._tick, name="daq-run-console", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop_ticker.wait(1.0 / self.refresh_per_second):
            self._refresh()

    def _stop_live(self) -> None:
        self._stop_ticker.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1.0)
        with self._lock:
            if self._live is not None:
                live, self._live = self._live, None
                self._guard(live.stop)

    # -- events ---------------------------------------------------------------------------------

    def __call__(self, event: events.Event) -> None:
        self.tally.feed(event)
        if self.off:
            return
        data = event.data if isinstance(event.data, dict) else {}
        kind = event.kind
        prefix = f"[{event.step:>{len(str(self.n_steps))}}/{self.n_steps}]" if event.step else ""
        if kind == events.RUN_STARTED:
            self.n_steps = data.get("n_steps") or 0
            self._pace.start(self.n_steps, self.clock())
            daq = data.get("daq") or {}
            redis = f", redis {daq['redis']}" if daq.get("redis") else ", no redis"
            name = _clean((data.get("batch") or {}).get("name"))
            if self.live and self._live is None:
                with self._lock:
                    self._guard(self._start_live)
            self._print(f"daq-run: {name} ({self.n_steps} steps) on {_clean(daq.get('url'))}{_clean(redis)}", "bold")
            return
        if kind == events.STEP_STARTED:
            attempt = data.get("attempt") or 1
            with self._lock:
                output_file = data.get("output_file")
                self._current = _Current(event.step, _clean(event.step_name), _clean(output_file) if output_file else None, attempt, self.clock())
            if attempt > 1:
                self._print(f"{prefix} retry {attempt}: {_clean(event.step_name)}", "yellow")
        elif kind == events.PROGRESS:
            current = self._current
            if current is not None:
                with self._lock:
                    now = self.clock()
                    current.waiting = None
                    current.n_written, current.n_images = data.get("n_written") or 0, data.get("n_images")
                    if current.first_seen is None:
                        current.first_seen = (now, current.n_written)
        elif kind == events.WAITING:
            what, seconds = _clean(data.get("what") or "the DAQ"), data.get("seconds")
            if self._current is not None and self._current.index == event.step:
                with self._lock:
                    self._current.waiting, self._current.wait_s, self._current.wait_since = what, seconds, self.clock()
            elif self.live:
                with self._lock:
                    self._current = _Current(event.step, "run", None, 1, self.clock())
                    self._current.waiting, self._current.wait_s = what, seconds
            if not self.live and self.verbose:
                bound = f"up to {seconds:g} s" if isinstance(seconds, (int, float)) else "(no bound known)"
                self._print(f"{prefix + ' ' if prefix else ''}waiting for {what} {bound}")
        elif kind == events.ATTEMPT_FAILED:
            again = "; retrying" if data.get("will_retry") else ""
            self._print(f"{prefix} attempt {_clean(data.get('attempt'))} failed: {_clean(data.get('error'))}{again}", "red")
        elif kind == events.RECOVERY:
            self._print(
                f"{prefix + ' ' if prefix else ''}recovery: {_clean(data.get('reason'))} -> {_clean(data.get('action'))} ({_clean(data.get('outcome'))})",
                "yellow",
            )
        elif kind == events.NOTICE:
            self._print(f"{prefix + ' ' if prefix else ''}note: {_clean(data.get('message'))}", "cyan")
        elif kind == events.STEP_FINISHED:
            self._pace.finished(event.step, self.clock())
            self._step_line(event, prefix)
        elif kind == events.CLEANUP:
            self._cleanup_lines(data)
        elif kind == events.RUN_FINISHED:
            with self._lock:
                self._current = None
            self._stop_live()
            style = "bold green" if self.tally.status == "passed" else "bold red"
            self._print(end_line(self.tally), style)
            if self.tally.reason:
                self._print(f"  reason: {_clean(self.tally.reason)}")
            return
        self._refresh()

    def _cleanup_lines(self, data: dict) -> None:
        """Each cleanup step once it ended, then the cleanup's end (``cleanup: passed``)."""
        from .record import StepRecord

        steps = [s for s in data.get("steps") or () if isinstance(s, dict)]
        for raw in steps[self._cleanup_shown :]:
            record = StepRecord.from_json(raw)
            status = record.status.value
            self._print(f"[finally] {_MARKS.get(status, status)} {_clean(record.name)}  {format_seconds(record.duration_s or 0.0)}", _STYLES.get(status, ""))
            if record.error and status != "passed":
                self._print(f"      {_clean(record.error)}", _STYLES.get(status, ""))
        self._cleanup_shown = len(steps)
        status = data.get("status")
        restore = data.get("restore_config") if isinstance(data.get("restore_config"), dict) else {}
        if status in ("passed", "failed", "skipped"):
            with self._lock:
                self._current = None
            outcome = f"; restore_config: {_clean(restore.get('outcome'))}" if restore.get("outcome") else ""
            reason = f": {_clean(data.get('reason'))}" if data.get("reason") else ""
            self._print(f"cleanup {status}{reason}{outcome}", "green" if status == "passed" else "bold red" if status == "failed" else "dim")

    def _step_line(self, event: events.Event, prefix: str) -> None:
        record = step_record(event)
        status = record.status.value
        with self._lock:
            if self._current is not None and self._current.index == event.step:
                self._current = None
        if status == "skipped" and not self.verbose:
            return
        resumed = " (passed earlier)" if record.resumed else ""
        line = f"{prefix} {_MARKS.get(status, status)} {_clean(record.name)}{resumed}  {format_seconds(record.duration_s or 0.0)}"
        self._print(line, _STYLES.get(status, ""))
        if record.error and status != "skipped":
            self._print(f"      {_clean(record.error)}", _STYLES.get(status, ""))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class _BatchPace:
    """The time left for the whole batch: the estimate's seconds of the steps not finished yet
    (corrected by how the run keeps up with its estimate), else the run's own pace so far."""

    def __init__(self, estimate: Any) -> None:
        seconds = list(getattr(estimate, "step_seconds", ()) or ())
        self.known = estimate is not None and getattr(estimate, "duration_s", None) is not None and bool(seconds)
        self.tail = float(getattr(estimate, "tail_s", 0.0) or 0.0) if self.known else 0.0
        # after[i]: expected seconds of steps i+1 .. N (1-based step i), in one pass: flat per step.
        self.after: List[float] = [0.0] * (len(seconds) + 1)
        for i in range(len(seconds) - 1, -1, -1):
            self.after[i] = self.after[i + 1] + seconds[i]
        self.seconds = seconds
        self.n_steps = 0
        self.started: Optional[float] = None
        self.done = 0  # steps of the plan finished
        self.last: Optional[int] = None  # index of the last finished step

    def start(self, n_steps: int, now: float) -> None:
        self.n_steps, self.started = n_steps, now

    def finished(self, index: Optional[int], now: float) -> None:
        if index is not None and index <= self.n_steps:
            self.done += 1
            self.last = index if self.last is None else max(self.last, index)

    def left(self, current: Optional[_Current], now: float) -> Optional[float]:
        if self.started is None or current is None or current.index is None or current.index > self.n_steps:
            return None
        elapsed = now - self.started
        index = current.index
        if self.known and len(self.seconds) >= index:
            expected_done = self.after[0] - self.after[index - 1]  # steps before this one
            pace = 1.0
            if expected_done >= 1.0 and self.done:
                pace = min(max((now - self.started - (now - current.since)) / expected_done, 0.5), 10.0)
            this = max(self.seconds[index - 1] - (now - current.since), 0.0)
            if current.n_images and current.first_seen is not None and current.n_written:
                t0, n0 = current.first_seen
                if now - t0 >= ETA_AFTER_S and current.n_written > n0:
                    this = max(current.n_images - current.n_written, 0) / ((current.n_written - n0) / (now - t0))
            return this + (self.after[index] + self.tail) * pace
        if self.done and self.n_steps:
            return elapsed / self.done * max(self.n_steps - self.done, 0)
        return None


class LogEvents:
    """Every event as one structlog line, with run and step ids.

    Progress lines come at most every ``progress_every_s`` seconds (default 10): enough to
    follow a long acquisition in a log system without flooding it.
    """

    def __init__(
        self,
        logger: Any = None,
        progress_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        stream: Optional[TextIO] = None,
    ) -> None:
        if logger is None:
            import structlog

            logger = structlog.get_logger("daq_runner")
        self.logger = logger
        self.progress_every_s = progress_every_s
        self.clock = clock
        self.stream = stream if stream is not None else sys.stderr  # where the lines go, to switch off
        self.off = False
        self._last_progress: Optional[float] = None

    def __call__(self, event: events.Event) -> None:
        if self.off:
            return
        try:
            self._log(event)
        except (OSError, ValueError):
            # A closed pipe (``2>&1 | head``) or a full disk under the log: the log stops, the run
            # goes on (the report is the record).
            self.off = True
            to_devnull(self.stream)

    def _log(self, event: events.Event) -> None:
        if event.kind == events.PROGRESS:
            now = self.clock()
            if self._last_progress is not None and now - self._last_progress < self.progress_every_s:
                return
            self._last_progress = now
        level = "info"
        if event.kind in (events.ATTEMPT_FAILED, events.RECOVERY, events.NOTICE):
            level = "warning"
        data = event.data if isinstance(event.data, dict) else {}
        if event.kind == events.STEP_FINISHED and data.get("status") in ("failed", "interrupted"):
            level = "error"
        if event.kind == events.RUN_FINISHED and data.get("status") != "passed":
            level = "error"
        if event.kind == events.CLEANUP and data.get("status") in ("failed", "skipped"):
            level = "error" if data.get("status") == "failed" else "warning"
        if event.kind == events.STEP_FINISHED:
            data = step_record(event).to_json()  # ISO 8601 UTC times and string run ids, as in the report
        fields = {k: v for k, v in data.items() if k not in ("daq_log", "acquisition", "config", "deployment", "step", "run", "step_name")}
        getattr(self.logger, level)(event.kind, run=event.run_id, step=event.step, step_name=event.step_name, **fields)


class QuietSummary:
    """Nothing when every step passed (cron mails any output); a short summary otherwise::

        daq-run: failed — 3 steps (1 passed, 1 failed, 1 skipped), 13 images, 1 file, 60.0 s
          reason: step 2 (write 2) failed: acquisition FAILED: ERROR: detector lost
          step 2 failed: write 2: acquisition FAILED: ERROR: detector lost
    """

    MAX_PROBLEMS = 20

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tally = Tally()
        self._problems: List[str] = []
        self._more = 0

    def __call__(self, event: events.Event) -> None:
        record = self.tally.feed(event)
        if record is not None and record.status.is_problem:
            if len(self._problems) < self.MAX_PROBLEMS:
                self._problems.append(f"  step {record.index} {record.status}: {_clean(record.name)}: {_clean(record.error)}")
            else:
                self._more += 1
        elif event.kind == events.RUN_FINISHED and self.tally.status != "passed":
            lines = [end_line(self.tally), f"  reason: {_clean(self.tally.reason)}"] + self._problems
            if self._more:
                lines.append(f"  ... and {self._more} more (see the report)")
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                to_devnull(self.stream)
