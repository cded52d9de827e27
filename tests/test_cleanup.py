"""The run's cleanup (``finally:``, ``restore_config``) and the Runner's end hooks, against a real
daq-sim and Redis: what ended the run does not matter, the lock lost does, a second signal cuts
it short, a failed restore fails the run, and the report records it beside the steps."""

from __future__ import annotations

import json
import signal
import time
from typing import Any, Callable, List, Optional

import pytest

from daq_runner import events
from daq_runner.batch import load_batch_text
from daq_runner.exceptions import LockError, LockHeldError
from daq_runner.exit_codes import RunEnding, RunExit
from daq_runner.runner import Runner

from .conftest import batch_file, daq_run, script, wait_until, writer_state
from .test_notify import recorder  # noqa: F401 - a fixture: a real HTTP server that records

SWEEP_THEN_FAIL = """
version: 1
name: sweep left at 32 bits
restore_config: true
steps:
  - config: {bit_depth: 32}
  - write: {output_file: "{root}/a.h5", n_images: 3}
  - name: fails
    check: {config: {bit_depth: 8}}
  - write: {output_file: "{root}/b.h5", n_images: 3}
finally:
  - name: tidy
    stop: {}
"""


def bit_depth(daq_sim: Any) -> int:
    return daq_sim.core.get_config()[1]["bit_depth"]


def runner_for(daq_sim: Any, *, consumers: Any = (), **options: Any) -> Runner:
    return Runner(daq_sim.url, daq_sim.redis_url, consumers, retry_delay=0.05, **options)


# -- the Runner -------------------------------------------------------------------------------


def test_finally_runs_after_a_pass_and_is_recorded_beside_the_steps(run_batch, daq_sim):
    """A passed run's finally: steps run after the plan, are in the report's cleanup, and do not count as steps."""
    seen: List[events.Event] = []
    report = run_batch(
        """
version: 1
steps:
  - write: {output_file: "{root}/a.h5", n_images: 2}
finally:
  - wait: {seconds: 0.05}
  - name: tidy
    stop: {}
""",
        consumers=[seen.append],
    )
    data = report.to_dict()
    assert (report.status, data["summary"]["passed"], data["n_steps"]) == ("passed", 1, 1)
    cleanup = data["cleanup"]
    assert (cleanup["status"], cleanup["reason"], cleanup["restore_config"]) == ("passed", None, None)
    assert [(s["index"], s["name"], s["status"]) for s in cleanup["steps"]] == [(2, "wait 0.05 s", "passed"), (3, "tidy", "passed")]
    kinds = [e.kind for e in seen]
    assert kinds.index(events.CLEANUP) > kinds.index(events.STEP_FINISHED) and kinds[-1] == events.RUN_FINISHED
    assert not [e for e in seen if e.kind == events.STEP_FINISHED and e.step > 1]  # cleanup steps are no steps of the plan
    assert list(data)[list(data).index("totals") + 1] == "cleanup"


def test_restore_config_puts_back_what_an_aborted_sweep_left(run_batch, daq_sim):
    """A run that aborts at 32 bits: the finally step runs, the 16 bits found before the first step are put back, the run still fails for its own reason."""
    assert bit_depth(daq_sim) == 16
    report = run_batch(SWEEP_THEN_FAIL)
    data = report.to_dict()
    assert report.status == "failed" and report.reason.startswith("step 3 (fails) failed: config bit_depth is 32")
    cleanup = data["cleanup"]
    assert cleanup["status"] == "passed"
    assert cleanup["restore_config"] == {"outcome": "restored", "fields": {"bit_depth": 16}, "error": None}
    assert [s["name"] for s in cleanup["steps"]] == ["tidy", "restore_config: put back bit_depth=16"]
    assert bit_depth(daq_sim) == 16
    assert any("restore_config: put back bit_depth=16" in n["message"] for n in data["notices"])


def test_restore_config_leaves_a_config_no_config_step_changed(run_batch, daq_sim):
    """Without a config step the configuration is not touched: the restore says unchanged and sends nothing."""
    before = daq_sim.core.get_config()[0]
    report = run_batch('version: 1\nrestore_config: true\nsteps:\n  - write: {output_file: "{root}/a.h5", n_images: 1}\n')
    assert report.to_dict()["cleanup"]["restore_config"]["outcome"] == "unchanged"
    assert report.status == "passed" and daq_sim.core.get_config()[0] == before  # no new config stored


def test_a_failed_restore_fails_a_passed_run_with_its_reason(run_batch, daq_sim):
    """The restore's deployment fails: the run that passed fails, its reason is the restore's."""

    def break_the_deployment(event: events.Event) -> None:
        if event.kind == events.CLEANUP and event.data.get("status") == "running":
            daq_sim.core.arm_faults({"deployment": "ERROR"})

    report = run_batch(
        'version: 1\nrestore_config: true\nsteps:\n  - config: {bit_depth: 32}\n', consumers=[break_the_deployment]
    )
    cleanup = report.to_dict()["cleanup"]
    assert report.status == "failed"
    assert report.reason.startswith("cleanup failed: restore_config failed: "), report.reason
    assert cleanup["status"] == "failed" and cleanup["restore_config"]["outcome"] == "failed"
    assert cleanup["restore_config"]["fields"] == {"bit_depth": 16} and cleanup["restore_config"]["error"]


def test_a_failed_finally_step_fails_a_passed_run_and_the_others_still_run(run_batch, daq_sim):
    """Every cleanup step runs whatever an earlier one did; one that failed fails a run that had passed."""
    report = run_batch(
        """
version: 1
steps:
  - wait: {seconds: 0}
finally:
  - name: wrong
    check: {writer: WRITING}
  - name: still runs
    wait: {seconds: 0}
"""
    )
    cleanup = report.to_dict()["cleanup"]
    assert [s["status"] for s in cleanup["steps"]] == ["failed", "passed"]
    assert report.status == "failed" and report.reason.startswith("cleanup failed: step 2 (wrong) failed: writer is ")


class _LosableLock:
    """A lock store of the test's (``Runner(lock=factory)``) that a consumer can take away mid-run."""

    def __init__(self, on_lost: Callable[[str], None], held_by_other: bool = False) -> None:
        self.on_lost = on_lost
        self.held_by_other = held_by_other
        self.lost = False

    def acquire(self, wait: float = 0.0, redis_budget: float = 0.0, on_held: Any = None) -> None:
        if self.held_by_other:
            raise LockHeldError("the DAQ is held by runner other-host:42")

    def assert_held(self) -> None:
        if self.lost:
            raise LockError("runner lock lost: taken over")

    def release(self) -> None:
        pass

    def lose(self) -> None:
        self.lost = True
        self.on_lost("taken over")


def test_cleanup_is_skipped_when_the_lock_was_lost_and_says_so(daq_sim, tmp_path):
    """A run that lost its lock sends nothing more: its finally and restore are skipped, with the reason, and the DAQ keeps 32 bits."""
    locks: List[_LosableLock] = []

    def factory(**kwargs: Any) -> _LosableLock:
        locks.append(_LosableLock(kwargs["on_lost"]))
        return locks[-1]

    def lose_after_step_2(event: events.Event) -> None:
        if event.kind == events.STEP_FINISHED and event.step == 2:
            locks[0].lose()

    batch = load_batch_text(SWEEP_THEN_FAIL, vars={"root": str(tmp_path)})
    report = runner_for(daq_sim, consumers=[lose_after_step_2], lock=factory).run(batch)
    cleanup = report.to_dict()["cleanup"]
    assert report.status == "failed" and report.reason == "runner lock lost: taken over"
    assert cleanup["status"] == "skipped" and "the runner lock was lost (taken over)" in cleanup["reason"]
    assert [s["status"] for s in cleanup["steps"]] == ["skipped"]
    assert cleanup["restore_config"]["outcome"] == "skipped"
    assert any(n["message"].startswith("cleanup skipped: the runner lock was lost") for n in report.notices)
    assert bit_depth(daq_sim) == 32
    assert report is not None and runner_for(daq_sim).ending is None  # a Runner that ran nothing has no ending


def test_a_run_that_never_reached_its_steps_cleans_nothing(daq_sim, tmp_path):
    """Another runner holds the DAQ: nothing is sent, the cleanup is not run (the DAQ is not ours), exit 4 is known to the hooks."""
    endings: List[RunEnding] = []

    def factory(**kwargs: Any) -> _LosableLock:
        return _LosableLock(kwargs["on_lost"], held_by_other=True)

    runner = runner_for(daq_sim, lock=factory, at_end=[lambda ending: endings.append(ending)])
    config_id = daq_sim.core.get_config()[0]
    with pytest.raises(LockHeldError):
        runner.run(load_batch_text(SWEEP_THEN_FAIL, vars={"root": str(tmp_path)}))
    assert [e.exit_code for e in endings] == [RunExit.LOCKED] and endings[0].lock_refused
    assert runner.ending is endings[0]
    assert daq_sim.core.get_config()[0] == config_id


def test_end_hooks_know_the_exit_code_and_their_notices_reach_the_report(daq_sim, tmp_path):
    """A hook sees the ending before run_finished; what it returns, and a hook that raises, become notices of the report."""
    order: List[str] = []

    def hook(ending: RunEnding) -> List[str]:
        order.append("hook")
        return [f"told: exit {int(ending.exit_code)} ({ending.status})"]

    def broken(ending: RunEnding) -> None:
        raise RuntimeError("no network")

    runner = runner_for(daq_sim, consumers=[lambda e: order.append(e.kind) if e.kind == events.RUN_FINISHED else None])
    runner.at_end(hook)
    runner.at_end(broken)
    batch = load_batch_text("version: 1\nsteps:\n  - check: {writer: WRITING}\n")
    report = runner.run(batch)
    messages = [n["message"] for n in report.notices]
    assert "told: exit 1 (failed)" in messages
    assert "end hook broken failed: RuntimeError: no network" in messages
    assert order == ["hook", events.RUN_FINISHED]


def test_an_interrupted_run_ends_with_the_signals_exit_code(daq_sim):
    """A stop requested as SIGTERM: the ending's exit code is 143, as daq-run's."""
    endings: List[RunEnding] = []
    runner = runner_for(daq_sim, at_end=[endings.append])
    runner.request_stop("SIGTERM")
    runner.run(load_batch_text("version: 1\nsteps:\n  - wait: {seconds: 5}\n"))
    assert endings[0].status == "interrupted" and endings[0].exit_code == RunExit.SIGTERM


@pytest.mark.parametrize(
    "ending, code",
    [
        (RunEnding("passed"), RunExit.PASSED),
        (RunEnding("passed", report_incomplete=True), RunExit.FAILED),
        (RunEnding("failed", daq_unreachable=True), RunExit.UNREACHABLE),
        (RunEnding("interrupted", stop_reason="SIGHUP"), RunExit.SIGTERM),
        (RunEnding("interrupted", stop_reason="stop requested"), RunExit.SIGINT),
        (RunEnding("failed", daq_unreachable=True, lock_lost="taken over"), RunExit.LOCKED),
        (RunEnding("failed", lock_refused=True), RunExit.LOCKED),
    ],
)
def test_every_ending_maps_to_one_exit_code(ending, code):
    """The rule from a run's ending to its exit code, written once: the lock, then a signal, then the DAQ."""
    assert ending.exit_code == code


# -- daq-run, with signals ----------------------------------------------------------------------


LONG_WRITE = """
version: 1
name: long write
steps:
  - config: {bit_depth: 32}
  - write: {output_file: "{root}/long.h5", n_images: 200000}
finally:
  - name: tidy up
    stop: {}
  - wait: {seconds: 0.2}
"""


def start_until_writing(daq_sim: Any, path: Any, report: Any, *args: str) -> Any:
    import subprocess

    proc = subprocess.Popen(
        [script("daq-run"), str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--allow-low-disk", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: writer_state(daq_sim.url) == "WRITING" or proc.poll() is not None, timeout=20)
    assert proc.poll() is None, proc.communicate()
    return proc


def test_finally_and_restore_config_run_after_sigterm_in_the_middle_of_a_write(daq_sim, tmp_path, recorder):
    """SIGTERM while writing: the acquisition is stopped, then the finally steps and the restore run; exit 143, all in
    the report, and the webhook hears INTERRUPTED."""
    path = batch_file(tmp_path, LONG_WRITE)
    report_path = tmp_path / "r.json"
    proc = start_until_writing(daq_sim, path, report_path, "--restore-config", "--notify", recorder.url + "/hook")
    assert bit_depth(daq_sim) == 32
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == RunExit.SIGTERM, err
    report = json.loads(report_path.read_text())
    assert report["status"] == "interrupted" and report["steps"][1]["status"] == "interrupted"
    cleanup = report["cleanup"]
    assert cleanup["status"] == "passed", cleanup
    assert [s["name"] for s in cleanup["steps"]] == ["tidy up", "wait 0.2 s", "restore_config: put back bit_depth=16"]
    assert all(s["status"] == "passed" for s in cleanup["steps"])
    assert cleanup["restore_config"]["outcome"] == "restored"
    assert bit_depth(daq_sim) == 16 and writer_state(daq_sim.url) == "READY"
    (told,) = [json.loads(r["body"]) for r in recorder.wait_for(1)]
    assert told["text"].startswith("daq-run INTERRUPTED: long write on 127.0.0.1\nexit 143: ")
    assert told["daq_run"]["reason"] == "SIGTERM" and told["daq_run"]["resume_command"].endswith(f"--resume {report_path}")


def test_a_second_signal_cuts_the_cleanup_short(daq_sim, tmp_path):
    """A second SIGTERM during a long cleanup step: it ends within seconds, the rest is skipped and said so, the report is finished."""
    path = batch_file(
        tmp_path,
        """
version: 1
restore_config: true
steps:
  - config: {bit_depth: 32}
  - write: {output_file: "{root}/long.h5", n_images: 200000}
finally:
  - name: slow cleanup
    wait: {seconds: 60}
  - stop: {}
""",
    )
    report_path = tmp_path / "r.json"
    proc = start_until_writing(daq_sim, path, report_path)
    proc.send_signal(signal.SIGTERM)

    def cleanup_status() -> Optional[str]:
        try:
            return (json.loads(report_path.read_text()).get("cleanup") or {}).get("status")
        except ValueError:  # between two writes
            return None

    wait_until(lambda: cleanup_status() == "running", timeout=20)
    time.sleep(0.3)  # into the slow step
    cut_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - cut_at < 5
    assert proc.returncode == RunExit.SIGTERM, err
    report = json.loads(report_path.read_text())
    cleanup = report["cleanup"]
    assert cleanup["status"] == "failed"
    slow, stop = cleanup["steps"]
    assert slow["status"] == "failed" and slow["error"].startswith("cut short by a second stop request")
    assert stop["status"] == "skipped" and stop["error"] == "not run: cut short by a second stop request"
    assert cleanup["restore_config"]["outcome"] == "skipped"
    assert report["status"] == "interrupted" and "cleanup failed" in report["reason"]
    assert bit_depth(daq_sim) == 32  # not put back: the second signal said to stop now


def test_a_write_in_finally_must_wait_and_errors_point_at_the_line(tmp_path):
    """A finally: write with wait: false is refused with file:line:column before anything runs (exit 2)."""
    path = batch_file(
        tmp_path,
        'version: 1\nsteps:\n  - wait: {seconds: 0}\nfinally:\n  - write: {output_file: "{root}/x.h5", n_images: 1, wait: false}\n',
    )
    result = daq_run(str(path), "--validate")
    assert result.returncode == RunExit.USAGE
    assert f"{path}:5:12: a write in finally: must wait for its end" in result.stderr


def test_the_cleanup_steps_are_test_cases_of_the_junit_file(run_batch, tmp_path):
    """CI sees the cleanup: each cleanup step (the restore too) is a test case of class <batch>.finally; a failed restore is a failure."""
    import xml.etree.ElementTree as ET

    from daq_runner.report import JUnitFile

    junit = JUnitFile(str(tmp_path / "j.xml"))
    run_batch(SWEEP_THEN_FAIL, consumers=[junit])
    suite = ET.parse(tmp_path / "j.xml").getroot()
    cases = [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]
    assert cases[-2:] == [
        ("sweep left at 32 bits.finally.stop", "0005 tidy"),
        ("sweep left at 32 bits.finally.config", "0006 restore_config: put back bit_depth=16"),
    ]
    assert (suite.get("tests"), suite.get("failures")) == ("6", "1")
