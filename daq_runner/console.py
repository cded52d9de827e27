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
import textwrap
import threading
import time
from typing import Any, Callable, Dict, List, Optional, TextIO

from . import events
from ._streams import to_devnull
from ._tally import Tally, format_moment, format_seconds, step_record
from ._text import clauses, one_line
from .record import KEPT, StepRecord, iso

__all__ = ["ConsoleView", "LogEvents", "QuietSummary", "end_line"]

_MARKS = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip", "interrupted": "INT "}
_STYLES = {"passed": "green", "failed": "bold red", "skipped": "dim", "interrupted": "bold yellow"}
ETA_AFTER_S = 0.5  # no estimate before the writer has been watched this long...
ETA_AFTER_IMAGES = 1  # ...and has written this many more images: a first guess is wild


BAR_DONE, BAR_TODO = "━", "·"  # characters that differ: the bar reads without colour too


def end_line(tally: Tally) -> str:
    """``daq-run: passed — 14 steps (14 passed), 450 images, 3 files, 12.4 s; ended 2026-12-08
    03:12:04 CET (02:12:04 UTC)``: the run's end in local time, with UTC beside it."""
    ended = f"; ended {format_moment(tally.finished_at)}" if tally.finished_at is not None else ""
    return f"daq-run: {tally.status} — {tally.counts_line()}{ended}"


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


def _label(name: str, file: Optional[str]) -> str:
    """A step's name for a line of the width of a terminal: a write's folder gives way to its
    file name (the folder is the same for a whole batch; the file name tells the steps apart)."""
    if not file:
        return name
    base = os.path.basename(file)
    label = name.replace(file, base) if file in name else name
    return label if base in label else f"{label} → {base}"


def _wrap(text: str, width: Optional[int], indent: str) -> List[str]:
    """``text`` as lines of at most ``width - 1`` characters, broken between words, the lines
    after the first indented by ``indent``; ``width`` None (not a terminal): one line."""
    if width is None or len(text) < width:
        return [text]
    return textwrap.wrap(text, width=max(width - 1, len(indent) + 10), subsequent_indent=indent, break_on_hyphens=False) or [text]


class _Said:
    """What the console said about one step, so that each text is said once: the errors of its
    failed attempts (with the first attempt that had each) and the texts printed."""

    __slots__ = ("errors", "printed")

    def __init__(self) -> None:
        self.errors: Dict[str, Any] = {}
        self.printed: set = set()


class _Current:
    """What the live line shows: the step under way, its progress or the runner's wait."""

    __slots__ = (
        "index", "name", "file", "attempt", "since", "n_written", "n_images", "first_seen", "waiting", "wait_s", "wait_since", "exact",
    )  # fmt: skip

    def __init__(self, index: Optional[int], name: str, file: Optional[str], attempt: int, now: float) -> None:
        self.index, self.name, self.file, self.attempt, self.since = index, name, file, attempt, now
        self.n_written: Optional[int] = None
        self.n_images: Optional[int] = None
        self.first_seen: Optional[tuple] = None  # (time, n_written) of the first progress of this attempt
        self.waiting: Optional[str] = None
        self.wait_s: Optional[float] = None
        self.wait_since = now
        self.exact = False  # the wait lasts wait_s (a settle): a countdown; else wait_s is its bound


_BATCH_ROOM = 40  # the batch's time left is shown only where the step keeps this much


def live_line(current: Optional[_Current], n_steps: int, width: int, now: float, batch_left: Optional[float] = None) -> List[tuple]:
    """The live line as (text, style) pieces whose total length is at most ``width - 1``.

    ``[ 3/14] write 50 to sweep_16bit.h5 ━━━━━━━━━━······ 20/50 812 img/s ETA 3.0 s`` (a write's
    folder gives way to its file name; the bar's done and remaining parts are different
    characters, so it reads without colour); while the runner waits, ``… settle: 7 s left``
    for a wait of known length, ``… waiting for deployment: 3 s, at most 117 s more`` for one
    whose bound is the step's time left, or the time waited so far without a bound. ``batch_left``
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
    label = _label(current.name, current.file)
    if current.attempt > 1:
        label += f" (attempt {current.attempt})"
    if current.waiting is not None:
        waited = now - current.wait_since
        what = current.waiting
        if current.wait_s is not None and current.exact:
            left = max(current.wait_s - waited, 0.0)
            tails = [f" {what}: {left:.0f} s left", f" {left:.0f} s left"]
            if what in label:  # "wait 2 s wait: 1 s left": the step's name says what it waits for
                tails = tails[1:]
        elif current.wait_s is not None:
            # A bound (the step's time left), not how long it takes: said as one.
            left = max(current.wait_s - waited, 0.0)
            tails = [f" waiting for {what}: {waited:.0f} s, at most {left:.0f} s more", f" {what}: {waited:.0f} s, ≤{left:.0f} s more",
                     f" {waited:.0f} s, ≤{left:.0f} s more"]  # fmt: skip
        else:
            tails = [f" waiting for {what} ({waited:.0f} s)", f" {what} ({waited:.0f} s)", f" ({waited:.0f} s)"]
        # The longest that leaves the label some room; the what goes last.
        tail = next((t for t in tails if limit - len(prefix) - len(t) >= 12), tails[-1])
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
        bar = [(" ", ""), (BAR_DONE * done, "green"), (BAR_TODO * (bar_width - done), "grey37")] if bar_width else []
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
        self._said: Dict[Optional[int], _Said] = {}  # per step under way: what was said of it
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
        prefix = self._prefix(event.step)
        if kind == events.RUN_STARTED:
            self.n_steps = data.get("n_steps") or 0
            self._pace.start(self.n_steps, self.clock())
            daq = data.get("daq") or {}
            redis = f", redis {daq['redis']}" if daq.get("redis") else ", no redis"
            name = _clean((data.get("batch") or {}).get("name"))
            if self.live and self._live is None:
                with self._lock:
                    self._guard(self._start_live)
            steps = f"{self.n_steps} step{'s' if self.n_steps != 1 else ''}"
            self._say("", f"daq-run: {name} ({steps}) on {_clean(daq.get('url'))}{_clean(redis)}", "bold")
            return
        if kind == events.STEP_STARTED:
            attempt = data.get("attempt") or 1
            with self._lock:
                output_file = data.get("output_file")
                self._current = _Current(event.step, _clean(event.step_name), _clean(output_file) if output_file else None, attempt, self.clock())
            # A retry is said once, by the failed attempt's line ("...; retrying"); the live line shows the attempt.
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
            what, seconds, exact = _clean(data.get("what") or "the DAQ"), data.get("seconds"), bool(data.get("exact"))
            if self._current is not None and self._current.index == event.step:
                with self._lock:
                    self._current.waiting, self._current.wait_s, self._current.wait_since = what, seconds, self.clock()
                    self._current.exact = exact
            elif self.live:
                with self._lock:
                    self._current = _Current(event.step, "run", None, 1, self.clock())
                    self._current.waiting, self._current.wait_s, self._current.exact = what, seconds, exact
            if not self.live and self.verbose:
                if isinstance(seconds, (int, float)) and exact:
                    text = f"{what}: {seconds:g} s"
                else:
                    bound = f"up to {seconds:g} s" if isinstance(seconds, (int, float)) else "(no bound known)"
                    text = f"waiting for {what} {bound}"
                self._say(prefix, text)
        elif kind == events.ATTEMPT_FAILED:
            self._attempt_failed(event, data, prefix)
        elif kind == events.RECOVERY:
            said = self._said.get(event.step) if event.step is not None else None
            reason = _clean(data.get("reason"))
            if said is not None and reason in said.errors:
                # The failure it answers is said once: by its attempt's line, or by the step's line below.
                text = f"recovery after attempt {said.errors[reason]} failed: {_clean(data.get('action'))} ({_clean(data.get('outcome'))})"
            else:
                text = f"recovery: {reason} -> {_clean(data.get('action'))} ({_clean(data.get('outcome'))})"
            self._say(prefix, text, "yellow")
        elif kind == events.NOTICE:
            message = _clean(data.get("message"))
            said = self._said_about(event.step) if event.step is not None else None  # kept per step under way only
            if said is None or message not in said.printed:  # the same notice twice in a step is said once
                if said is not None:
                    said.printed.add(message)
                self._say(prefix, f"note: {message}", "cyan")
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
            self._say("", end_line(self.tally), style)
            if self.tally.reason:
                self._say("", f"  reason: {_clean(self.tally.reason)}", indent="    ")
            return
        self._refresh()

    # -- what is said, once ---------------------------------------------------------------------

    def _prefix(self, index: Optional[int]) -> str:
        if not index:
            return ""
        if self.n_steps and index > self.n_steps:
            return "[finally]"
        return f"[{index:>{len(str(self.n_steps))}}/{self.n_steps}]"

    def _said_about(self, index: Optional[int]) -> _Said:
        said = self._said.get(index)
        if said is None:
            said = self._said[index] = _Said()
        return said

    def _width(self) -> Optional[int]:
        """The terminal's width, when lines are drawn on one (else lines are not broken)."""
        console = self._console
        return console.width if console is not None and self.live else None

    def _say(self, prefix: str, text: str, style: str = "", indent: Optional[str] = None) -> None:
        """One line (``prefix text``); on a terminal broken between words to fit its width,
        the continuation indented past the prefix."""
        line = f"{prefix} {text}" if prefix else text
        for piece in _wrap(line, self._width(), indent if indent is not None else " " * (len(prefix) + 1 if prefix else 2)):
            self._print(piece, style)

    def _attempt_failed(self, event: events.Event, data: dict, prefix: str) -> None:
        """A failed attempt that will be retried, said once; the last one is said by the step's line."""
        said = self._said_about(event.step)
        error, attempt = _clean(data.get("error")), data.get("attempt")
        said.errors.setdefault(error, attempt)
        if not data.get("will_retry"):
            return
        if error in said.printed:
            self._say(prefix, f"attempt {_clean(attempt)} failed the same way; retrying", "red")
        else:
            said.printed.add(error)
            self._say(prefix, clauses(f"attempt {_clean(attempt)} failed: {error}", "retrying"), "red")

    def _finished_lines(self, prefix: str, record: StepRecord, said: Optional[_Said]) -> None:
        """A finished step: its status, name, time and what it did that a bare "ok" would hide
        (kept, stopped on purpose, attempts, images); then its error, unless said already."""
        status = record.status.value
        style = _STYLES.get(status, "")
        head = f"{prefix} {_MARKS.get(status, status)} " if prefix else f"{_MARKS.get(status, status)} "
        took = f"  {format_seconds(record.duration_s or 0.0)}" if record.started_at is not None or record.duration_s else ""
        notes = []
        if record.resumed:
            notes.append(KEPT)
        if record.attempts > 1:
            notes.append(f"{record.attempts} attempts")
        if record.stopped_on_purpose:
            notes.append(record.stopped_on_purpose)
        error = _clean(record.error)
        said_before = bool(record.error) and said is not None and error in said.printed
        if said_before and record.status.is_problem:
            notes.append(f"failed as attempt {said.errors.get(error, 1)} did")  # type: ignore[union-attr]
        written = record.images_written
        if record.status.is_problem and record.started and written is not None and record.n_images is not None:
            notes.append(f"{written} of {record.n_images} images written")
        name = _clean(record.name)
        noted = f"  ({'; '.join(notes)})" if notes else ""
        width = self._width()
        line = head + name + took
        if width is not None and len(line) >= width:  # fit the line: the file name stays, the folder goes
            room = max(width - 1 - len(head) - len(took), 8)
            line = head + _middle(_label(name, _clean(record.output_file) if record.output_file else None), room) + took
        indent = " " * 6
        if width is None or len(line + noted) < width:
            line, noted = line + noted, ""
        self._print(line, style)
        if noted:
            self._say("", indent + "; ".join(notes), style, indent=indent + "  ")
        if record.error and status != "skipped" and not said_before:
            self._say("", indent + error, style, indent=indent + "  ")

    def _cleanup_lines(self, data: dict) -> None:
        """Each cleanup step once it ended, then the cleanup's end (``cleanup: passed``)."""
        steps = [s for s in data.get("steps") or () if isinstance(s, dict)]
        for raw in steps[self._cleanup_shown :]:
            record = StepRecord.from_json(raw)
            self._finished_lines("[finally]", record, self._said.pop(record.index, None))
        self._cleanup_shown = len(steps)
        status = data.get("status")
        restore = data.get("restore_config") if isinstance(data.get("restore_config"), dict) else {}
        if status in ("passed", "failed", "skipped"):
            with self._lock:
                self._current = None
            outcome = f"; restore_config: {_clean(restore.get('outcome'))}" if restore.get("outcome") else ""
            reason = f": {_clean(data.get('reason'))}" if data.get("reason") else ""
            self._say("", f"cleanup {status}{reason}{outcome}", "green" if status == "passed" else "bold red" if status == "failed" else "dim")

    def _step_line(self, event: events.Event, prefix: str) -> None:
        record = step_record(event)
        said = self._said.pop(event.step, None)
        with self._lock:
            if self._current is not None and self._current.index == event.step:
                self._current = None
        if record.status.value == "skipped" and not self.verbose and not record.resumed:
            return
        self._finished_lines(prefix, record, said)


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
        fields = {k: _loggable(k, v) for k, v in data.items() if k not in ("daq_log", "acquisition", "config", "deployment", "step", "run", "step_name")}
        getattr(self.logger, level)(event.kind, run=event.run_id, step=event.step, step_name=event.step_name, **fields)


def _loggable(key: str, value: Any) -> Any:
    """A value of an event as log lines show it: times (``at``, ``..._at``) as the report's ISO
    8601 UTC text, other seconds and rates to the millisecond (not 14 digits)."""
    if isinstance(value, float):
        if key == "at" or key.endswith("_at"):
            return iso(value)
        return round(value, 3)
    if isinstance(value, int) and not isinstance(value, bool) and (key == "at" or key.endswith("_at")):
        return iso(value)
    return value


class QuietSummary:
    """Nothing when every step passed (cron mails any output); a short summary otherwise, each
    failure said once (the reason is not repeated when it is the first failure)::

        daq-run: failed — 3 steps (1 passed, 1 failed, 1 skipped), 13 images, 1 file, 60.0 s; ended ...
          step 2 (write 2) failed: acquisition FAILED: ERROR: detector lost; 3 of 10 images written
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
                self._problems.append(_clean(record.problem))
            else:
                self._more += 1
        elif event.kind == events.RUN_FINISHED and self.tally.status != "passed":
            reason = _clean(self.tally.reason)
            lines = [end_line(self.tally)] + ([] if reason in self._problems else [f"  reason: {reason}"])
            lines += [f"  {problem}" for problem in self._problems]
            if self._more:
                lines.append(f"  ... and {self._more} more (see the report)")
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                to_devnull(self.stream)
