"""Resume's checks of a report against a batch (daq_runner.resume), from Python without a DAQ."""

from __future__ import annotations

import pytest

from daq_runner.batch import load_batch_text
from daq_runner.exceptions import ResumeError, SetupError
from daq_runner.resume import kept_steps, plan_fingerprint, previous_results

BODY = "version: 1\nname: night\nsteps:\n  - config: {bit_depth: 8}\n  - write: {output_file: /d/a.h5, n_images: 2}\n  - stop: {}\n"


def report_of(batch, statuses, *, plan=False):
    """A report of a run of ``batch`` whose steps ended with ``statuses`` (fewer: a killed run)."""
    steps = [{"index": s.index, "identity": s.identity, "status": status} for s, status in zip(batch.steps, statuses)]
    old = {"name": batch.name, "sha256": batch.sha256, "vars": {}}
    if plan:
        old["plan"] = plan_fingerprint(batch.steps)
    return {"batch": old, "steps": steps, "n_steps": len(batch.steps)}


def resume(report, batch, **kwargs):
    return previous_results(report, batch, report_path="r.json", batch_path="b.yaml", **kwargs)


def test_a_comment_or_a_timeout_is_no_change_a_step_is():
    """The file's bytes changed but its steps did not: resumed (with a note); another value or order: --force."""
    batch = load_batch_text(BODY, "b.yaml")
    report = report_of(batch, ["passed", "failed", "skipped"])
    edited = load_batch_text("# tonight\n" + BODY.replace("n_images: 2}", "n_images: 2}\n    timeout: 60"), "b.yaml")
    notes = []
    assert {batch.steps[0].identity} == set(resume(report, edited, notice=notes.append))
    assert ["b.yaml changed since r.json was written, but its steps are the same: resuming"] == notes
    changed = load_batch_text(BODY.replace("n_images: 2", "n_images: 3"), "b.yaml")
    with pytest.raises(ResumeError, match="its steps are not those of the run"):
        resume(report, changed)
    reordered = load_batch_text(BODY.replace("  - config: {bit_depth: 8}\n", "") + "  - config: {bit_depth: 8}\n", "b.yaml")
    with pytest.raises(ResumeError, match="not those of the run"):
        resume(report, reordered)
    assert resume(report, changed, force=True)


def test_a_killed_runs_report_cannot_tell_unless_it_says_what_the_batch_did():
    """A report that lists only the steps done: a changed file needs --force; with batch.plan it can tell."""
    batch = load_batch_text(BODY, "b.yaml")
    edited = load_batch_text("# tonight\n" + BODY, "b.yaml")
    with pytest.raises(ResumeError, match="does not list every step to compare with"):
        resume(report_of(batch, ["passed"]), edited)
    assert resume(report_of(batch, ["passed"], plan=True), edited)
    assert issubclass(ResumeError, SetupError)


def test_kept_steps_uses_each_passed_record_once_in_order():
    """Two identical steps, one passed: the first is kept, the second runs."""
    batch = load_batch_text("version: 1\nname: n\nsteps:\n  - stop: {}\n  - stop: {}\n  - check: {writer: READY}\n", "b.yaml")
    passed = {batch.steps[0].identity: [{"index": 1}], batch.steps[2].identity: [{"index": 3}]}
    assert [1, 3] == kept_steps(batch.steps, passed)
    assert plan_fingerprint(batch.steps) != plan_fingerprint(batch.steps[::-1])
