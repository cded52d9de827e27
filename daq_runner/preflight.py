"""What this machine can tell about a run before it starts (``daq-run --dry-run``).

- :func:`check_writes` holds every write of a batch against this machine: its folder
  (missing here is a failure for a DAQ on this machine, a note for one elsewhere, whose
  folders need not be visible here), an existing file the write would refuse or replace, a
  symbolic link, one file under two names.
- :func:`daq_state` reads the DAQ's state without changing it.
- :func:`plan_lines` is the expanded plan for people: one step a line, then what it does
  (every write's output file and images, whatever the step's name), its limits, and the
  findings; with ``--resume`` which steps are kept and which run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional, Sequence

__all__ = ["Finding", "check_writes", "plan_lines", "daq_state", "daq_is_here"]


@dataclass(frozen=True)
class Finding:
    """What a run would meet at one step.

    Attributes:
        step: the step's index.
        message: one line.
        fails: the step would fail (``False``: a note, e.g. a file that would be overwritten).
    """

    step: int
    message: str
    fails: bool


def daq_is_here(url: str) -> bool:
    """Whether the DAQ at ``url`` writes on this machine (a loopback address)."""
    from urllib.parse import urlsplit

    from ._transport import is_loopback

    try:
        return is_loopback(urlsplit(url).hostname)
    except ValueError:
        return False


def check_writes(
    steps: Sequence[Any],
    *,
    overwrite: bool = False,
    kept: Collection[int] = (),
    resuming: bool = False,
    daq_here: bool = False,
    made_at_start: Optional[str] = None,
) -> List[Finding]:
    """The findings of this machine about the writes among ``steps``, in step order.

    Args:
        overwrite: the run lets writes replace files (``--overwrite``).
        kept: indices of steps a resumed run keeps (they write nothing).
        resuming: the run resumes a report: an existing file may be the one a step left
            then, which it may replace (only the run can tell).
        daq_here: the DAQ writes on this machine (``--sim``, :func:`daq_is_here`): a
            folder missing here makes its writes fail.
        made_at_start: a folder the run makes at its start (``--sim``'s fresh folder):
            nothing under it is looked at.
    """
    findings: List[Finding] = []
    written: Dict[str, int] = {}
    for step in steps:
        path = getattr(step, "output_file", None)
        if not path or step.index in kept:
            continue
        folder = os.path.dirname(path)
        if made_at_start is not None and (folder == made_at_start or folder.startswith(os.path.join(made_at_start, ""))):
            continue
        if not os.path.isdir(folder):
            if daq_here:
                findings.append(Finding(step.index, f"folder {folder} does not exist on this machine, where the DAQ writes: the write would fail", True))
            else:
                findings.append(Finding(step.index, f"folder {folder} is not on this machine: it must exist on the DAQ's", False))
            continue
        if os.path.islink(path):
            findings.append(Finding(step.index, f"{path} is a symbolic link: the write would be refused", True))
            continue
        if os.path.isdir(path):
            findings.append(Finding(step.index, f"{path} is a folder: the write would be refused (the DAQ's writer cannot create its file there)", True))
            continue
        real = os.path.realpath(path)
        if real in written:
            findings.append(Finding(step.index, f"{path} is the file step {written[real]} writes ({real}): the write would be refused", True))
            continue
        written[real] = step.index
        if os.path.lexists(path):
            if overwrite or getattr(step, "overwrite", False):
                findings.append(Finding(step.index, f"{path} exists and would be overwritten (overwrite allowed)", False))
            elif resuming:
                findings.append(Finding(step.index, f"{path} exists: the write replaces it only if this step left it in the run resumed", False))
            else:
                findings.append(Finding(step.index, f"{path} exists: the write would be refused (overwrite: true on the step, or --overwrite)", True))
    return findings


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)


def plan_lines(
    batch: Any,
    *,
    target: Any = None,
    kept: Optional[Collection[int]] = None,
    findings: Sequence[Finding] = (),
    report: Any = None,
    report_problem: Optional[str] = None,
) -> List[str]:
    """The plan of ``batch`` for people.

    Args:
        target: the :class:`~daq_runner.targets.DaqTarget`, for a line saying where the URLs came from.
        kept: with ``--resume``, the indices of the steps kept (the others are marked ``run``).
        findings: from :func:`check_writes`, shown under their steps with ``!`` (fails) or ``-``.
        report: the :class:`~daq_runner.report_paths.ReportPaths` of the run, or
            ``report_problem``: why its report could not be written.

    Returns:
        lines without credentials (of the DAQ's URLs and of URLs in variables).
    """
    from ._text import scrub

    lines = _plan(batch, target, kept, findings)
    if kept is not None and len(kept) == len(batch.steps):
        lines.append(f"nothing to run: all {len(kept)} steps passed in the report resumed")
    if report_problem is not None:
        lines.append(f"report: cannot be written: {report_problem}")
    elif report is not None:
        lines.append(f"report: {report.report}" + (" (a new name; the time and run id will differ)" if report.chosen else ""))
        if report.junit:
            lines.append(f"junit: {report.junit}")
    secrets = batch.secrets
    return [scrub(line, secrets) for line in lines] if secrets else lines


def _plan(batch: Any, target: Any, kept: Optional[Collection[int]], findings: Sequence[Finding]) -> List[str]:
    lines = [f"batch {batch.name}: {len(batch.steps)} steps"]
    if target is not None:
        lines.append(target.describe())
    by_step: Dict[int, List[Finding]] = {}
    for finding in findings:
        by_step.setdefault(finding.step, []).append(finding)
    width = len(str(len(batch.steps)))
    pad = " " * (width + 4)
    for step in batch.steps:
        what = "" if kept is None else ("keep  " if step.index in kept else "run   ")
        lines.append(f"  {step.index:>{width}}. {what}{step.kind:<6} {step.name}")
        params = " ".join(f"{key}={_value(value)}" for key, value in step.params.items())
        limits = f"timeout={step.timeout:g}s retries={step.retries} on_error={step.on_error}"
        lines.append(f"{pad}{params + '  ' if params else ''}{limits}")
        for finding in by_step.get(step.index, ()):
            lines.append(f"{pad}{'!' if finding.fails else '-'} {finding.message}")
    failing = sum(1 for finding in findings if finding.fails)
    if failing:
        lines.append(f"{failing} step{'s' if failing != 1 else ''} would fail on this machine (marked !)")
    return lines


def daq_state(url: str) -> Dict[str, Any]:
    """``{writer, deployment, config}`` as the DAQ at ``url`` reports them, read without
    changing anything (3 s a request, one retry).

    Raises:
        DaqRunnerError: the DAQ did not answer, or not as a Standard DAQ.
    """
    from .client import StdDaqClient

    with StdDaqClient(url, timeout=3.0, retries=1) as client:
        return {"writer": client.get_status(), "deployment": client.get_deployment_status(), "config": client.get_config()}
