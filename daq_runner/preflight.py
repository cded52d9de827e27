"""What this machine can tell about a run before it starts (``daq-run --dry-run``).

- :func:`check_writes` holds every write of a batch against this machine: its folder
  (missing here is a failure for a DAQ on this machine, a note for one elsewhere, whose
  folders need not be visible here), an existing file the write would refuse or replace, a
  symbolic link, one file under two names.
- :func:`check_commands` looks for the program of every ``run:`` step.
- :func:`daq_state` reads the DAQ's state without changing it (either generation).
- :func:`plan_lines` is the expanded plan for people: one step a line, then what it does
  (every write's output file and images, whatever the step's name), its limits, and the
  findings; with ``--resume`` which steps are kept and which run.
- :func:`run_estimate` is what the run will cost (duration, volume, the free space of its
  output folders: :mod:`daq_runner.estimate`), asking the DAQ where it answers; every run,
  the dry run and ``--validate`` make it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from ._text import plural
from .daq import DRIVER, REST_V2

__all__ = ["Finding", "check_writes", "check_commands", "plan_lines", "daq_state", "daq_is_here", "run_estimate"]


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


def _existing(step: Any, generation: str) -> Tuple[str, List[str]]:
    """What a write of ``generation`` writes, as one key (its file, or its files' folder and
    prefix, real paths), and which of its files exist here."""
    path = step.output_file
    if generation != DRIVER:
        return os.path.realpath(path), [path] if os.path.lexists(path) else []
    from .det_driver_daq import start_target

    folder, prefix = start_target(path)
    # The number of writers is the DAQ's: any <prefix><i>.h5 is one of the write's files.
    pattern = re.compile(re.escape(prefix) + r"[0-9]+\.h5")
    try:
        names = sorted(name for name in os.listdir(folder) if pattern.fullmatch(name))
    except OSError:
        names = []
    return os.path.join(os.path.realpath(folder), prefix), [os.path.join(folder, name) for name in names]


def check_writes(
    steps: Sequence[Any],
    *,
    overwrite: bool = False,
    kept: Collection[int] = (),
    resuming: bool = False,
    daq_here: bool = False,
    made_at_start: Optional[str] = None,
    generation: str = REST_V2,
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
        generation: the DAQ generation (:mod:`daq_runner.targets`): on the current one a
            write's files are ``<folder>/<prefix><i>.h5``, one per writer.
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
        key, existing = _existing(step, generation)
        links = [p for p in existing if os.path.islink(p)] or ([path] if generation != DRIVER and os.path.islink(path) else [])
        if links:
            findings.append(Finding(step.index, f"{links[0]} is a symbolic link: the write would be refused", True))
            continue
        if generation != DRIVER and os.path.isdir(path):
            findings.append(Finding(step.index, f"{path} is a folder: the write would be refused (the DAQ's writer cannot create its file there)", True))
            continue
        if key in written:
            same = f"the file step {written[key]} writes ({key})" if generation != DRIVER else f"the files step {written[key]} writes ({key}<i>.h5)"
            findings.append(Finding(step.index, f"{path} is {same}: the write would be refused", True))
            continue
        written[key] = step.index
        if existing:
            shown = existing[0] + (f" and {len(existing) - 1} more of its files" if len(existing) > 1 else "")
            verb = "exists" if len(existing) == 1 else "exist"
            if overwrite or getattr(step, "overwrite", False):
                findings.append(Finding(step.index, f"{shown} {verb} and would be overwritten (overwrite allowed)", False))
            elif resuming:
                findings.append(Finding(step.index, f"{shown} {verb}: the write replaces it only if this step left it in the run resumed", False))
            else:
                findings.append(Finding(step.index, f"{shown} {verb}: the write would be refused (overwrite: true on the step, or --overwrite)", True))
    return findings


def check_commands(steps: Sequence[Any], *, kept: Collection[int] = ()) -> List[Finding]:
    """A ``run:`` step whose program is not found (on the ``PATH`` it will get, or as the path
    given) or not executable: it would fail."""
    import shutil

    findings = []
    for step in steps:
        command = getattr(step, "command", None)
        if not command or step.index in kept:
            continue
        path = (getattr(step, "env", None) or {}).get("PATH", os.environ.get("PATH"))
        if shutil.which(command[0], path=path) is None:
            where = "" if os.sep in command[0] else " on PATH"
            findings.append(Finding(step.index, f"program {command[0]} not found{where} (or not executable): the step would fail", True))
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
        lines.append(f"nothing to run: {'the step' if len(kept) == 1 else f'all {len(kept)} steps'} passed in the report resumed")
    if report_problem is not None:
        lines.append(f"report: cannot be written: {report_problem}")
    elif report is not None:
        lines.append(f"report: {report.report}" + (" (a new name; the time and run id will differ)" if report.chosen else ""))
        if report.junit:
            lines.append(f"junit: {report.junit}")
    secrets = batch.secrets
    return [scrub(line, secrets) for line in lines] if secrets else lines


def _plan(batch: Any, target: Any, kept: Optional[Collection[int]], findings: Sequence[Finding]) -> List[str]:
    lines = [f"batch {batch.name}: {plural(len(batch.steps), 'step')}"]
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
        guard = getattr(step, "guard", None)
        if guard is not None:
            wait = f", waits at most {guard.max_wait_s:g} s" if guard.max_wait_s is not None else ""
            lines.append(f"{pad}guard: detector at least {guard.min_detector_rate:g} images/s for {guard.for_s:g} s{wait}")
        if getattr(step, "verify", None) == "off":
            lines.append(f"{pad}verify: off (its file is not checked)")
        for finding in by_step.get(step.index, ()):
            lines.append(f"{pad}{'!' if finding.fails else '-'} {finding.message}")
    failing = sum(1 for finding in findings if finding.fails)
    if failing:
        lines.append(f"{failing} step{'s' if failing != 1 else ''} would fail on this machine (marked !)")
    return lines


def daq_state(target: Any) -> Dict[str, Any]:
    """The DAQ's state as the DAQ of ``target`` (a :class:`~daq_runner.targets.DaqTarget`)
    reports it, read without changing anything (3 s a request, one retry): rest_v2
    ``{writer, deployment, config}``, the current generation ``{driver, build, config}``.

    Raises:
        DaqRunnerError: the DAQ did not answer, or not as a Standard DAQ.
    """
    if target.generation == DRIVER:
        from .det_driver import DetDriverClient
        from .det_driver_protocol import DEFAULT_CONFIG_USER

        with DetDriverClient(target.url, target.config_url, user=target.config_user or DEFAULT_CONFIG_USER, timeout=3.0, retries=1) as driver:
            status = driver.state()
            return {"driver": status.to_dict(), "build": driver.build.value if driver.build else None, "config": driver.get_config()}
    from .client import StdDaqClient

    with StdDaqClient(target.url, timeout=3.0, retries=1) as client:
        return {"writer": client.get_status(), "deployment": client.get_deployment_status(), "config": client.get_config()}


def run_estimate(
    batch: Any,
    url: Optional[str],
    *,
    assume_rate: Optional[float] = None,
    kept: Collection[int] = (),
    made_at_start: Optional[str] = None,
    restore_config: bool = False,
    cancel: Any = None,
) -> Tuple[Any, Optional[str]]:
    """What a run of ``batch`` against the DAQ at ``url`` will cost, read-only.

    Args:
        url: the DAQ's URL, or its :class:`~daq_runner.targets.DaqTarget` (``None``: it is not
            asked; durations and volumes that need it are unknown).
        assume_rate: ``--assume-rate``; kept: steps a resumed run keeps; made_at_start: the
            folder ``--sim`` makes; restore_config: the run puts the configuration back.
        cancel: an event (a signal's) that abandons the DAQ's answer at once.

    Returns:
        ``(estimate, problem)``: the :class:`~daq_runner.estimate.Estimate`, and why the DAQ
        could not be asked (``None`` when it answered), one line with credentials as ``***``.
    """
    from ._deadline import Interrupted
    from ._text import redact_url
    from .estimate import estimate, facts_at, needs
    from .exceptions import DaqRunnerError

    restore = restore_config or batch.restore_config
    writes, deployments = needs([s for s in (*batch.steps, *batch.cleanup) if s.index not in kept])
    facts = problem = None
    if url is not None and (writes or deployments):  # a plan that needs nothing of the DAQ asks nothing
        try:
            facts = facts_at(url, cancel=cancel, writes=writes, deployments=deployments)
        except Interrupted:
            problem = "the DAQ was not asked: a stop was requested first"
        except DaqRunnerError as exc:
            from ._cli import error_line

            problem = f"the DAQ at {redact_url(getattr(url, 'url', url))} did not answer: {error_line(exc)}"
    result = estimate(
        batch.steps,
        facts,
        cleanup=batch.cleanup,
        restore_config=restore,
        assume_rate=assume_rate,
        kept=kept,
        made_at_start=made_at_start,
    )
    if problem is not None:
        from dataclasses import replace

        result = replace(result, notes=(problem, *result.notes))
    return result, problem
