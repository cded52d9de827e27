"""Resume: run again only the steps of a batch that did not pass in an earlier report.

The whole feature in one module, as the command line and Python use it:

- :func:`read_report` reads the report to resume (one-line :class:`ResumeError`);
- :func:`same_moment` gives the ``run`` and ``now`` the resumed run had, so that ``{run}``,
  ``{date}``, ``{time}`` and ``{datetime}`` render as they did (the same file names);
- :func:`previous_results` checks the report belongs to the batch (name, identities, what
  the batch does: :func:`plan_fingerprint`, variables) and returns the records of the steps
  that passed, keyed by identity; :func:`kept_steps` says which steps they keep;
- :class:`ResumedRun` is what the report says about the files its steps left, so that a step
  that runs again may replace its own file and nobody else's
  (:meth:`ResumedRun.left_the_file`);
- :func:`resume_command` is the command line that continues a run (for its notification).

Steps are matched by :attr:`~daq_runner.batch.Step.identity`, not by position.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ._text import quote, scrub
from .exceptions import ResumeError

__all__ = [
    "ResumeError",
    "ResumedRun",
    "read_report",
    "same_moment",
    "previous_results",
    "kept_steps",
    "plan_fingerprint",
    "acquisition_id",
    "run_ids_of",
    "resume_command",
]

# daq-run's options that name the run's own report or say how to resume one: the command that
# continues a run replaces them (value-taking ones, then flags).
_RUN_OWN = ("--resume", "--report")
_RUN_OWN_FLAGS = ("--force", "--overwrite-report")


def acquisition_id(invocation: str, step_index: int, start: int) -> int:
    """The run_id of the ``start``-th acquisition (1, 2, ...) of step ``step_index`` in the
    daq-run invocation ``invocation`` (a random id, in the report as ``batch.invocation``).

    Derived, not drawn: a resumed run can tell from the DAQ's log that a file was left by
    the run it resumes (its run_id is one of that run's for the step) and not by anyone
    else since. A positive integer below 2**62, as the DAQ's int64 run_id needs.
    """
    digest = hashlib.sha256(f"{invocation}/{step_index}/{start}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 2) or 1


def run_ids_of(invocation: str, step_index: int, starts: int) -> Iterable[int]:
    """The run_ids of the first ``starts`` acquisitions of step ``step_index`` of ``invocation``."""
    return (acquisition_id(invocation, step_index, n) for n in range(1, starts + 1))


@dataclass(frozen=True)
class ResumedRun:
    """What the report of a run being resumed says about the files its steps left.

    Attributes:
        invocation: its ``batch.invocation``; the run_ids of its acquisitions derive from
            it (``None``: a report of an older daq-run).
        started_at, finished_at: Unix times of its start and end (``finished_at`` is
            ``None`` for a run that was killed).
        run_ids: step index -> run_id of the acquisition the step's record names.
        suspensions: step index -> how often its guard suspended it (each suspension started
            one more acquisition of the step).
    """

    invocation: Optional[str] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    run_ids: Dict[int, int] = field(default_factory=dict)
    suspensions: Dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: Dict[str, Any]) -> "ResumedRun":
        """From a report as loaded (anything of the wrong type is left out)."""
        from .record import parse_iso

        batch = report.get("batch") if isinstance(report.get("batch"), dict) else {}
        invocation = batch.get("invocation") if isinstance(batch.get("invocation"), str) and batch.get("invocation") else None
        run_ids: Dict[int, int] = {}
        suspensions: Dict[int, int] = {}
        for record in report.get("steps") or ():
            if isinstance(record, dict) and isinstance(record.get("index"), int) and str(record.get("run_id") or "").isdigit():
                run_ids[record["index"]] = int(record["run_id"])
            if isinstance(record, dict) and isinstance(record.get("index"), int) and isinstance(record.get("suspensions"), list):
                suspensions[record["index"]] = len(record["suspensions"])
        return cls(invocation, parse_iso(report.get("started_at")), parse_iso(report.get("finished_at")), run_ids, suspensions)

    def acquisition_ids(self, step_index: int, retries: int) -> set:
        """The run_ids the resumed run may have given the acquisitions of that step."""
        if self.invocation is None:
            return set()
        # Each attempt, and each suspension of a guarded write, starts at most one acquisition,
        # and a lost reply at most one more.
        return set(run_ids_of(self.invocation, step_index, 2 * (retries + 1 + self.suspensions.get(step_index, 0))))

    def left_the_file(self, step_index: int, retries: int, path: str, logged: Sequence[Any], local: bool) -> bool:
        """Whether the file ``path`` of that step is provably the one it left in this run.

        Either the DAQ's newest logged acquisition of the file (``logged``: the run_ids of
        the DAQ's log records of that file, newest first) is one of this run's for the step
        (nobody wrote it since); or, the DAQ having logged none (a FAILED acquisition is not logged), this
        run's record of the step names an acquisition of its own, the run has ended, and the
        file was last changed while it ran (``local``: the file is visible here).
        """
        ours = self.acquisition_ids(step_index, retries)
        if logged:
            return logged[0] in ours
        if not local or self.run_ids.get(step_index) not in ours:
            return False
        if self.started_at is None or self.finished_at is None:
            return False
        changed = os.lstat(path).st_mtime
        return self.started_at - 1 <= changed <= self.finished_at + 1


def read_report(path: str) -> Dict[str, Any]:
    """The report ``path`` to resume; :class:`ResumeError` when it cannot be read as one."""
    from .report import load_report

    try:
        return load_report(path)
    except ValueError as exc:
        raise ResumeError(str(exc)) from None


def same_moment(report: Dict[str, Any]) -> Dict[str, Any]:
    """``run`` and ``now`` of the resumed run, for :func:`~daq_runner.batch.load_batch`.

    With them ``{run}``, ``{date}``, ``{time}`` and ``{datetime}`` render as in the run
    resumed, so its steps get the same file names and identities. Empty when the report
    does not say (an older daq-run).
    """
    old = report.get("batch") if isinstance(report.get("batch"), dict) else {}
    same: Dict[str, Any] = {}
    try:
        if isinstance(old.get("run"), str) and old["run"]:
            same["run"] = old["run"]
        if isinstance(old.get("now"), str) and old["now"]:
            same["now"] = _dt.datetime.fromisoformat(old["now"])
    except ValueError:
        return {}
    return same


def plan_fingerprint(steps: Sequence[Any]) -> str:
    """What a batch does, as one sha256 (64 hex digits): of the identities of its expanded
    steps, in order (kind, parameters after templating, given names).

    Comments, formatting, ``timeout``, ``retries``, ``on_error`` and ``tags`` do not change
    it; another step, another value, another order does. The batch's own ``sha256`` is of
    the file's bytes.
    """
    return hashlib.sha256("\n".join(step.identity for step in steps).encode()).hexdigest()


def kept_steps(steps: Sequence[Any], previous: Dict[str, List[dict]]) -> List[int]:
    """The indices of the ``steps`` that ``previous`` (:func:`previous_results`) keeps, in
    order: each passed record keeps one step of its identity, the first ones first."""
    left = {identity: len(records) for identity, records in previous.items()}
    kept = []
    for step in steps:
        if left.get(step.identity):
            left[step.identity] -= 1
            kept.append(step.index)
    return kept


def _same_plan(report: Dict[str, Any], batch: Any) -> Optional[bool]:
    """Whether the run in ``report`` had the batch's plan: by the report's
    ``batch.plan`` (:func:`plan_fingerprint`) when it has one, else by the identities of
    its step records when they cover every step; ``None`` when the report cannot tell (a
    killed run's report lists only the steps done)."""
    old_batch = report.get("batch") if isinstance(report.get("batch"), dict) else {}
    if isinstance(old_batch.get("plan"), str):
        return old_batch["plan"] == plan_fingerprint(batch.steps)
    records = {s.get("index"): s.get("identity") for s in report.get("steps") or () if isinstance(s, dict)}
    n_steps = report.get("n_steps")
    if not isinstance(n_steps, int) or set(records) != set(range(1, n_steps + 1)):
        return None
    return [records[i] for i in range(1, n_steps + 1)] == [step.identity for step in batch.steps]


def previous_results(
    report: Dict[str, Any],
    batch: Any,
    *,
    report_path: str,
    batch_path: str,
    force: bool = False,
    ignore_vars: Sequence[str] = (),
    notice: Optional[Callable[[str], None]] = None,
) -> Dict[str, List[dict]]:
    """The records of the steps that passed in ``report``, keyed by step identity, each list in order.

    Args:
        report: the report being resumed, as :func:`read_report` gives it.
        batch: the batch, loaded as for the resumed run (see :func:`same_moment`).
        report_path, batch_path: for the messages.
        force: accept a batch that does other things than the run resumed, or other variables.
        ignore_vars: variables whose values may differ (e.g. a fresh output folder).
        notice: called with one line when the batch file changed but does the same (its
            steps are those of the run resumed: a comment, formatting, a timeout).

    Raises:
        ResumeError: the report is another batch's (even with ``force``), has no step
            identities, shares no step with the batch, the batch's steps differ from the
            run's or the report cannot tell (without ``force``), its variables differ
            (without ``force``), or a step that runs again would rewrite a file a kept step wrote.
    """
    old_batch = report.get("batch") if isinstance(report.get("batch"), dict) else {}
    if old_batch.get("name") != batch.name:
        raise ResumeError(
            f"{report_path} is the report of batch {old_batch.get('name')!r}, not of {batch.name!r}: "
            "it cannot be resumed with this batch file (not even with --force)"
        )
    steps = [s for s in report.get("steps") or () if isinstance(s, dict)]
    identities = {step.identity for step in batch.steps}
    if steps and not any(isinstance(s.get("identity"), str) for s in steps):
        raise ResumeError(f"{report_path} has no step identities (written by an older daq-run): it cannot be resumed")
    if steps and not any(s.get("identity") in identities for s in steps):
        raise ResumeError(f"none of the steps in {report_path} belong to {batch_path}: it cannot be resumed with this batch")
    if old_batch.get("sha256") != batch.sha256 and not force:
        # Steps are matched by identity: a comment or a new timeout changes the bytes, not the run.
        same = _same_plan(report, batch)
        if same is None:
            raise ResumeError(
                f"{batch_path} changed since {report_path} was written, and the report does not list every step "
                "to compare with (the run was killed); use --force to resume anyway"
            )
        if not same:
            raise ResumeError(
                f"{batch_path} changed since {report_path} was written: its steps are not those of the run "
                "(another step, value or order); use --force to resume anyway"
            )
        if notice is not None:
            notice(f"{batch_path} changed since {report_path} was written, but its steps are the same: resuming")
    old_vars = old_batch.get("vars") if isinstance(old_batch.get("vars"), dict) else {}
    # The report keeps credentials in variables as ***: compare them as the report shows them.
    secrets = batch.secrets
    new_vars = scrub(dict(batch.vars), secrets) if secrets else dict(batch.vars)
    differ = sorted(
        name
        for name in set(old_vars) | set(new_vars)
        if str(old_vars.get(name)) != str(new_vars.get(name)) and name not in ignore_vars
    )
    if differ and not force:
        shown = ", ".join(f"{name}={quote(str(old_vars.get(name)))!r}" for name in differ[:5])
        raise ResumeError(
            f"{report_path} ran with other variables ({shown}): resume with the same --var values, "
            "or use --force to resume with these"
        )
    passed: Dict[str, List[dict]] = {}
    for record in steps:
        if record.get("status") == "passed" and isinstance(record.get("identity"), str):
            passed.setdefault(record["identity"], []).append(record)
    # Refuse a re-run that would rewrite a file a kept step wrote.
    kept = set(kept_steps(batch.steps, passed))
    protected = {r.get("output_file"): r.get("index") for records in passed.values() for r in records if r.get("output_file")}
    for step in batch.steps:
        if step.index not in kept and getattr(step, "output_file", None) in protected:
            raise ResumeError(
                f"step {step.index} would rewrite {step.output_file}, written by step {protected[step.output_file]} "
                "that passed in the earlier run"
            )
    return passed


def resume_command(
    argv: Sequence[str],
    report: str,
    *,
    options: Sequence[str] = (),
    cwd: Optional[str] = None,
    variables: Optional[Dict[str, str]] = None,
    program: str = "daq-run",
) -> str:
    """The command line that continues a run of ``program argv`` from its report ``report``.

    The run's arguments as they were, without what named its own report or resumed another
    (``--report``, ``--resume``, ``--force``, ``--overwrite-report``, also abbreviated or
    as ``--opt=value``), plus ``--resume REPORT``; ``variables`` are added as ``--var
    NAME=VALUE`` (``--sim``'s fresh folder, so that the files kept are found). With ``cwd``
    it starts with ``cd CWD &&``, so that relative paths (the batch, ``--profiles``) mean what
    they meant. ``options`` are every long option of the command (to resolve abbreviations);
    shell-quoted.
    """
    import shlex

    def full(word: str) -> Optional[str]:
        name = word.split("=", 1)[0]
        if name in options or not options:
            return name
        matches = [o for o in options if o.startswith(name)]
        return matches[0] if len(matches) == 1 else name

    args: List[str] = []
    skip = False
    after_dashes = False
    for word in argv:
        if skip:
            skip = False
            continue
        if not after_dashes and word == "--":
            after_dashes = True
        elif not after_dashes and word.startswith("--"):
            name = full(word)
            if name in _RUN_OWN:
                skip = "=" not in word
                continue
            if name in _RUN_OWN_FLAGS:
                continue
        args.append(word)
    for name, value in (variables or {}).items():
        args += ["--var", f"{name}={value}"]
    args += ["--resume", report]
    command = shlex.join([program, *args])
    return f"cd {shlex.quote(cwd)} && {command}" if cwd else command
