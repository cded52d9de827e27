"""Consumers for people and log systems: a terminal view, structured log lines, a quiet summary."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional, TextIO

from . import events

__all__ = ["ConsoleView", "LogEvents", "QuietSummary"]

_MARKS = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip", "interrupted": "INT "}


class ConsoleView:
    """One line per step and a live progress bar for writes (for a terminal)."""

    def __init__(self, stream: TextIO = sys.stdout, verbose: bool = False, live: Optional[bool] = None) -> None:
        self.stream = stream
        self.verbose = verbose
        self.live = stream.isatty() if live is None else live
        self.n_steps = 0
        self._bar_shown = False
        self._progress_started: Dict[int, float] = {}
        self._last_draw = 0.0

    def _print(self, text: str) -> None:
        if self._bar_shown:
            self.stream.write("\r\033[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: events.Event) -> None:
        data = event.data
        prefix = f"[{event.step:>{len(str(self.n_steps))}}/{self.n_steps}]" if event.step else ""
        if event.kind == events.RUN_STARTED:
            self.n_steps = data["n_steps"]
            daq = data["daq"]
            redis = f", redis {daq['redis']}" if daq.get("redis") else ", no redis"
            self._print(f"daq-run: {data['batch']['name']} ({self.n_steps} steps) on {daq['url']}{redis}")
        elif event.kind == events.STEP_STARTED and data["attempt"] > 1:
            self._print(f"{prefix} retry {data['attempt']}: {event.step_name}")
        elif event.kind == events.PROGRESS and self.live:
            self._draw(event, prefix)
        elif event.kind == events.ATTEMPT_FAILED:
            again = "; retrying" if data["will_retry"] else ""
            self._print(f"{prefix} attempt {data['attempt']} failed: {data['error']}{again}")
        elif event.kind == events.RECOVERY:
            self._print(f"{prefix} recovery: {data.get('reason')} -> {data.get('action')} ({data.get('outcome')})")
        elif event.kind == events.NOTICE:
            self._print(f"{prefix + ' ' if prefix else ''}note: {data['message']}")
        elif event.kind == events.STEP_FINISHED:
            if data["status"] == "skipped" and not self.verbose:
                return
            resumed = " (passed earlier)" if data.get("resumed") else ""
            line = f"{prefix} {_MARKS.get(data['status'], data['status'])} {event.step_name}{resumed}  {data.get('duration_s', 0):.2f} s"
            if data.get("error") and data["status"] != "skipped":
                line += f"\n      {data['error']}"
            self._print(line)
        elif event.kind == events.RUN_FINISHED:
            self._print(f"daq-run: {data['status']}" + (f" ({data['reason']})" if data.get("reason") else ""))

    def _draw(self, event: events.Event, prefix: str) -> None:
        now = time.monotonic()
        written, total = event.data["n_written"] or 0, event.data["n_images"]
        start = self._progress_started.setdefault(event.step, now)
        if now - self._last_draw < 0.1 and written < total:
            return
        self._last_draw = now
        elapsed = max(now - start, 1e-6)
        rate = written / elapsed
        eta = (total - written) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * written / max(total, 1))
        eta_text = f"ETA {eta:.1f} s" if eta != float("inf") else "ETA ?"
        self.stream.write(
            f"\r\033[K{prefix} [{'#' * filled}{'.' * (width - filled)}] {written}/{total} {rate:.0f} img/s {eta_text}"
        )
        self.stream.flush()
        self._bar_shown = True


class LogEvents:
    """Every event as one structlog line, with run and step ids (progress at most once a second)."""

    def __init__(self, logger: Any = None, progress_every_s: float = 1.0) -> None:
        if logger is None:
            import structlog

            logger = structlog.get_logger("daq_runner")
        self.logger = logger
        self.progress_every_s = progress_every_s
        self._last_progress = 0.0

    def __call__(self, event: events.Event) -> None:
        if event.kind == events.PROGRESS:
            now = time.monotonic()
            if now - self._last_progress < self.progress_every_s:
                return
            self._last_progress = now
        level = "info"
        if event.kind in (events.ATTEMPT_FAILED, events.RECOVERY, events.NOTICE):
            level = "warning"
        if event.kind == events.STEP_FINISHED and event.data.get("status") in ("failed", "interrupted"):
            level = "error"
        fields = {k: v for k, v in event.data.items() if k not in ("daq_log", "acquisition", "config", "deployment")}
        getattr(self.logger, level)(event.kind, run=event.run_id, step=event.step, step_name=event.step_name, **fields)


class QuietSummary:
    """Nothing when every step passed (cron mails any output); a short summary otherwise."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self._problems: List[str] = []

    def __call__(self, event: events.Event) -> None:
        if event.kind == events.STEP_FINISHED and event.data["status"] in ("failed", "interrupted"):
            self._problems.append(f"  step {event.step} {event.data['status']}: {event.step_name}: {event.data.get('error')}")
        elif event.kind == events.RUN_FINISHED and event.data["status"] != "passed":
            self.stream.write(f"daq-run: {event.data['status']}\n" + "\n".join(self._problems) + "\n")
            self.stream.flush()
