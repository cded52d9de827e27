"""Run reports: built from the event stream, written as JSON and JUnit XML.

:class:`ReportRecorder` turns events into a :class:`RunReport`. :class:`JsonReportFile`
keeps a report file valid at every moment: it is created atomically (temp file and
rename), each finished step is added with a single write of the file's tail (so the
cost per step does not grow with the number of finished steps), and the final report
replaces it atomically again. :class:`JUnitFile` writes one testcase per executed step.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Dict, List, Optional
from xml.etree import ElementTree as ET

from . import events

__all__ = ["RunReport", "ReportRecorder", "JsonReportFile", "JUnitFile", "write_atomic", "load_report", "SUMMARY_KEYS"]

SUMMARY_KEYS = ("passed", "failed", "skipped", "interrupted")


def _iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}" + time.strftime("%z", time.localtime(ts))


class RunReport:
    """What a run did. ``status`` is ``running``, ``passed``, ``failed`` or ``interrupted``."""

    def __init__(self) -> None:
        self.batch: Dict[str, Any] = {}
        self.daq: Dict[str, Any] = {}
        self.run_id = ""
        self.status = "running"
        self.reason: Optional[str] = None
        self.daq_unreachable = False  # the run ended because the DAQ stopped answering
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.steps: List[Dict[str, Any]] = []
        self.notices: List[str] = []
        self.summary: Dict[str, int] = {key: 0 for key in SUMMARY_KEYS}

    @property
    def failed_steps(self) -> List[Dict[str, Any]]:
        return [s for s in self.steps if s["status"] in ("failed", "interrupted")]

    def head(self) -> Dict[str, Any]:
        return {
            "batch": self.batch,
            "daq": self.daq,
            "run_id": self.run_id,
            "started_at": _iso(self.started_at),
        }

    def tail(self) -> Dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "daq_unreachable": self.daq_unreachable,
            "finished_at": _iso(self.finished_at),
            "summary": dict(self.summary),
            "notices": self.notices[-50:],
        }

    def to_dict(self) -> Dict[str, Any]:
        """The JSON report as a dict."""
        return {**self.head(), "steps": [step_json(s) for s in self.steps], **self.tail()}


def step_json(record: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(record)
    out["started_at"] = _iso(record.get("started_at")) if isinstance(record.get("started_at"), (int, float)) else record.get("started_at")
    out["finished_at"] = _iso(record.get("finished_at")) if isinstance(record.get("finished_at"), (int, float)) else record.get("finished_at")
    return out


class ReportRecorder:
    """Consumer that builds the :class:`RunReport` of a run."""

    def __init__(self) -> None:
        self.report = RunReport()

    def __call__(self, event: events.Event) -> None:
        report = self.report
        if event.kind == events.RUN_STARTED:
            report.batch = event.data["batch"]
            report.daq = event.data["daq"]
            report.run_id = event.run_id
            report.started_at = event.time
        elif event.kind == events.STEP_FINISHED:
            record = event.data  # shared, not copied: every consumer sees the same record
            report.steps.append(record)
            report.summary[record["status"]] = report.summary.get(record["status"], 0) + 1
        elif event.kind == events.NOTICE:
            report.notices.append(event.data["message"])
        elif event.kind == events.RUN_FINISHED:
            report.status = event.data["status"]
            report.reason = event.data.get("reason")
            report.daq_unreachable = bool(event.data.get("daq_unreachable"))
            report.finished_at = event.time


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=None, separators=(",", ":"), default=str)


class JsonReportFile:
    """Consumer that keeps ``path`` a valid JSON report during and after the run.

    Layout: ``{head..., "steps": [ ... ], tail...}``. A finished step rewrites only the
    tail (``,<step>],<tail>}`` plus padding) with one ``pwrite``; whitespace after the
    closing brace is valid JSON, so the file parses after any write, crash or signal.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.recorder = ReportRecorder()
        self._fd: Optional[int] = None
        self._tail_at = 0
        self._tail_len = 0
        self._n_steps = 0

    def __call__(self, event: events.Event) -> None:
        self.recorder(event)
        report = self.recorder.report
        if event.kind == events.RUN_STARTED:
            head = _dumps(report.head())[:-1] + ',"steps":['
            tail = self._tail()
            write_atomic(self.path, (head + tail).encode())
            self._fd = os.open(self.path, os.O_WRONLY)
            self._tail_at = len(head.encode())
            self._tail_len = len(tail.encode())
        elif event.kind == events.STEP_FINISHED and self._fd is not None:
            chunk = ("," if self._n_steps else "") + _dumps(step_json(report.steps[-1]))
            self._n_steps += 1
            self._write_tail(chunk)
        elif event.kind == events.RUN_FINISHED:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            write_atomic(self.path, (json.dumps(report.to_dict(), indent=1, default=str) + "\n").encode())

    def _tail(self) -> str:
        return "]," + _dumps(self.recorder.report.tail())[1:] + "\n"

    def _write_tail(self, chunk: str) -> None:
        data = (chunk + self._tail()).encode()
        new_tail_len = len(data) - len(chunk.encode())
        padded = data + b" " * max(0, self._tail_len - len(data))
        os.pwrite(self._fd, padded, self._tail_at)
        self._tail_at += len(chunk.encode())
        self._tail_len = max(new_tail_len, self._tail_len - len(chunk.encode()))


class JUnitFile:
    """Consumer that writes JUnit XML at the end of the run: one testcase per executed step."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.recorder = ReportRecorder()

    def __call__(self, event: events.Event) -> None:
        self.recorder(event)
        if event.kind != events.RUN_FINISHED:
            return
        report = self.recorder.report
        name = report.batch.get("name") or "batch"
        executed = [s for s in report.steps if s["status"] != "skipped" and not s.get("resumed")]
        suite = ET.Element(
            "testsuite",
            name=name,
            tests=str(len(executed)),
            failures=str(sum(s["status"] == "failed" for s in executed)),
            errors=str(sum(s["status"] == "interrupted" for s in executed)),
            skipped="0",
            time=f"{(report.finished_at or 0) - (report.started_at or 0):.3f}",
            timestamp=_iso(report.started_at) or "",
        )
        for step in executed:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{name}.{step['kind']}",
                name=f"{step['index']:04d} {step['name']}",
                time=f"{step.get('duration_s') or 0:.3f}",
            )
            if step["status"] == "failed":
                ET.SubElement(case, "failure", message=step.get("error") or "failed").text = step.get("error")
            elif step["status"] == "interrupted":
                ET.SubElement(case, "error", message=step.get("error") or "interrupted").text = step.get("error")
            # What went wrong on the way, also for a step that passed on a retry (a flaky DAQ
            # shows in CI instead of hiding behind a green test).
            trail = [f"attempt {a['attempt']} failed: {a['error']}" for a in step.get("failed_attempts") or []]
            trail += [f"recovery ({r.get('reason')}): {r.get('action')} -> {r.get('outcome')}" for r in step.get("recoveries") or []]
            if trail:
                ET.SubElement(case, "system-out").text = "\n".join(trail)
        write_atomic(self.path, ET.tostring(ET.ElementTree(suite).getroot(), encoding="utf-8", xml_declaration=True))


def load_report(path: str) -> Dict[str, Any]:
    """Read a JSON report (for ``--resume``); raises ``ValueError`` with a clear message."""
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read report {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"report {path} is not valid JSON: {exc}") from None
    if not isinstance(report, dict) or not isinstance(report.get("steps"), list) or "batch" not in report:
        raise ValueError(f"{path} is not a daq-run report")
    return report
