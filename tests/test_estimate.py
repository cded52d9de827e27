"""The cost of a run before it starts (daq_runner.estimate): duration and volume from the plan and
the DAQ's own figures, the free space of the output folders, the refusal of a run that would not
fit, the estimate in the report, and the batch's time left on the live line."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from daq_runner import events
from daq_runner.batch import load_batch_text
from daq_runner.console import ConsoleView, live_line
from daq_runner.estimate import DaqFacts, Estimate, FolderNeed, estimate, facts_at, free_space
from daq_runner.events import Event
from daq_runner.exit_codes import RunExit
from daq_runner.testing import SIM_FRAME_RATE

from .conftest import REPO, batch_file, daq_run

CONFIG = {"image_pixel_height": 256, "image_pixel_width": 256, "bit_depth": 16}
FACTS = DaqFacts(CONFIG, 1000.0, 0.5)

SWEEP = """
version: 1
restore_config: true
steps:
  - config: {bit_depth: 32}
    settle: 1
  - write: {output_file: "{root}/a/one.h5", n_images: 100}
  - wait: {seconds: 2}
  - write: {output_file: "{root}/b/dark.h5", n_images: 1000, wait: false}
  - wait: {seconds: 0.3}
  - stop: {}
  - check: {writer: READY}
  - write: {output_file: "{root}/a/two.h5", n_images: 10, wait: false}
finally:
  - config: {bit_depth: 8}
  - write: {output_file: "{root}/a/last.h5", n_images: 50}
"""


def plan(tmp_path: Any, text: str = SWEEP) -> Any:
    return load_batch_text(text.replace("{root}", str(tmp_path)), str(tmp_path / "b.yaml"))


def test_the_estimate_walks_the_plan_at_the_configuration_each_write_runs_with(tmp_path):
    """Deployments, settles, waits, n/rate per write, a background write ended by a stop, another waited for at the end, the cleanup and the restore."""
    b = plan(tmp_path)
    est = estimate(b.steps, FACTS, cleanup=b.cleanup, restore_config=True, check_disks=False)
    image32, image8 = 256 * 256 * 4, 256 * 256
    assert est.images == 100 + 1000 + 10 + 50
    assert est.bytes == (100 + 1000 + 10) * image32 + 50 * image8
    # config 0.5 + 1, write 0.1, wait 2, wait 0.3 (the dark stopped), then the cleanup's config 0.5 and write 0.05,
    # the restore's deployment 0.5; the last background write (0.01 s) ends before that.
    assert est.duration_s == pytest.approx(1.5 + 0.1 + 2 + 0.3 + 0.5 + 0.05 + 0.5)
    assert est.fixed_s == pytest.approx(1.5 + 2 + 0.3 + 0.5 + 0.5)
    assert est.step_seconds == pytest.approx((1.5, 0.1, 2.0, 0.0, 0.3, 0.0, 0.0, 0.0))
    assert {f.path: f.bytes for f in est.folders} == {
        str(tmp_path / "a"): 110 * image32 + 50 * image8,
        str(tmp_path / "b"): 1000 * image32,
    }
    assert (est.rate_hz, est.rate_source, est.notes) == (1000.0, "the DAQ's statistics", ())
    kept = estimate(b.steps, FACTS, kept={1, 2}, check_disks=False)  # a resume: kept steps cost nothing, their config holds
    assert kept.images == 1010 and kept.bytes == 1010 * image32


def test_each_stored_config_counts_the_restart_of_the_services_it_brings(tmp_path):
    """The generation's usual restart after each config step and after the restore; the estimate says it counted it."""
    b = plan(tmp_path)
    plain = estimate(b.steps, FACTS, cleanup=b.cleanup, restore_config=True, check_disks=False)
    facts = DaqFacts(CONFIG, 1000.0, 0.5, restart_s=2.5)
    est = estimate(b.steps, facts, cleanup=b.cleanup, restore_config=True, check_disks=False)
    assert est.duration_s == pytest.approx(plain.duration_s + 3 * 2.5)  # two config steps and the restore
    assert est.step_seconds[0] == pytest.approx(0.5 + 2.5 + 1)
    assert "a restart of the services of about 2.5 s after each stored config" in est.lines()[0]
    assert 2.5 == est.to_json()["restart_s"]


def test_the_generations_say_how_long_a_stored_config_keeps_their_services(daq_sim):
    """facts_at takes the restart from the DAQ's generation (a real figure, not 0)."""
    from daq_runner.det_driver_daq import DriverDaq
    from daq_runner.rest_v2 import RestV2Daq

    assert facts_at(daq_sim.url).restart_s == RestV2Daq.config_restart_s > 1.0
    assert DriverDaq.config_restart_s > 0.5


def test_a_write_that_cannot_finish_within_its_timeout_is_a_warning_of_the_estimate(tmp_path):
    """At a known rate, the first write whose images need longer than its timeout is named with the timeout it needs;
    a background write a later stop ends, or a write a resume keeps, is not."""
    b = plan(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/bg.h5', n_images: 900000, wait: false}\n"
                       "  - stop: {}\n  - write: {output_file: '{root}/long.h5', n_images: 31000}\n")
    (warning,) = estimate(b.steps, DaqFacts(CONFIG, 100.0, 0.0), check_disks=False).warnings
    assert "step 3 (31000 images) needs about 310 s, beyond its timeout of 300 s: give it timeout: 380 or more" in warning
    assert "  ! " + warning in estimate(b.steps, DaqFacts(CONFIG, 100.0, 0.0), check_disks=False).lines()
    assert () == estimate(b.steps, DaqFacts(CONFIG, 100.0, 0.0), kept={3}, check_disks=False).warnings
    assert () == estimate(b.steps, DaqFacts(CONFIG, None, 0.0), check_disks=False).warnings  # no rate, no guess


def test_what_is_not_known_is_said_not_guessed(tmp_path):
    """No DAQ: the volume and the writes' time are unknown (the fixed part is given); --assume-rate gives the time; a silent detector is said."""
    b = plan(tmp_path, 'version: 1\nsteps:\n  - wait: {seconds: 3}\n  - write: {output_file: "{root}/x.h5", n_images: 500}\n  - wait: {state: READY}\n')
    blind = estimate(b.steps, None, check_disks=False)
    assert (blind.duration_s, blind.bytes, blind.fixed_s, blind.images) == (None, None, 3.0, 500)
    text = "\n".join(blind.lines())
    assert text.startswith("estimate: duration unknown (at least 3.0 s of settles, waits and deployments), volume unknown in 500 images")
    assert "give --assume-rate HZ" in text and "waits for a writer state count as 0 s" in text
    assumed = estimate(b.steps, DaqFacts(CONFIG, 0.0, None), assume_rate=250, check_disks=False)
    assert assumed.duration_s == pytest.approx(5.0) and assumed.rate_source == "--assume-rate"
    silent = estimate(b.steps, DaqFacts(CONFIG, 0.0, None), check_disks=False)
    assert silent.duration_s is None and any("0 images/s" in n for n in silent.notes)
    assert silent.to_json()["bytes"] == 500 * 256 * 256 * 2


def test_low_disk_is_judged_per_disk_with_the_figures():
    """Two folders on one disk add up against its free space; a disk not visible here is not judged."""
    est = Estimate(
        duration_s=1.0, fixed_s=0.0, images=1, bytes=None,
        folders=(FolderNeed("/a", 600, 1000, 1), FolderNeed("/b", 600, 1000, 1), FolderNeed("/c", 10**12, None, None), FolderNeed("/d", 5, 1000, 2)),
    )
    assert est.low_disk == ["the writes into /a, /b need 1.2 KiB (1200 bytes) but their disk has 1000 B (1000 bytes) free"]
    assert "  ! the writes into /a, /b need" in "\n".join(est.lines())


def test_the_free_space_of_a_folder_this_machine_sees(tmp_path):
    """free_space is the disk's (device, bytes free for this user); a folder not here is None."""
    device, free = free_space(str(tmp_path))
    info = os.statvfs(tmp_path)
    assert device == os.stat(tmp_path).st_dev and abs(free - info.f_bavail * info.f_frsize) < 64 * 1024 * 1024
    assert free_space(str(tmp_path / "not-here")) is None


def test_the_daqs_own_figures_are_read_without_changing_it(daq_sim):
    """facts_at reads the config, the detector rate of the statistics and the last deployment's time."""
    before = daq_sim.core.get_config()[0]
    facts = facts_at(daq_sim.url)
    assert facts.config["bit_depth"] == 16 and facts.detector_rate == SIM_FRAME_RATE
    assert facts.deployment_s is not None and facts.deployment_s >= 0 and facts.problems == ()
    assert daq_sim.core.get_config()[0] == before


# -- daq-run --------------------------------------------------------------------------------------


def test_dry_run_of_the_demo_prints_the_duration_and_the_volume(tmp_path):
    """`daq-run --sim --dry-run batches/demo.yaml`: the duration at the simulator's rate and the volume of its 48 x 48 images."""
    result = daq_run("--sim", "--dry-run", str(REPO / "batches" / "demo.yaml"), "--report-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == RunExit.PASSED, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("estimate: "))
    # 3 writes of 50 at 1000 images/s, a settle of 0.2 s and a wait of 0.1 s, and 4 deployments as fast as the
    # simulator's last one (a few ms), each followed by the services' restart (2.6 s); 50 images at 8, 16 and
    # 32 bits and the 1000 darks at 32 bits, of 48 x 48 pixels: 10,022,400 bytes. The run itself takes 12-13 s.
    assert re.match(r"estimate: duration 1[01]\.[0-9] s, volume 9\.6 MiB in 1150 images \(1000 images/s from the DAQ's statistics", line), line
    assert 50 * 48 * 48 * (1 + 2 + 4) + 1000 * 48 * 48 * 4 == 10_022_400
    assert "  disk: " in result.stdout and " free" in result.stdout


def test_validate_gives_the_estimate_where_the_daq_answers(daq_sim, tmp_path):
    """--validate asks a DAQ that answers for its figures; one that does not is a note, and the batch is still valid."""
    path = batch_file(tmp_path, 'version: 1\nsteps:\n  - write: {output_file: "{root}/v.h5", n_images: 2000}\n')
    result = daq_run(str(path), "--validate", "--url", daq_sim.url)
    assert result.returncode == 0, result.stderr
    with_redis = daq_run(str(path), "--validate", "--url", daq_sim.url, "--redis", daq_sim.redis_url)  # needs no Redis, says nothing of it
    assert with_redis.returncode == 0 and with_redis.stdout == result.stdout, with_redis.stdout
    assert result.stdout.splitlines()[:3] == [
        f"{path}: valid, 1 step",
        "estimate: duration 1.0 s, volume 250.0 MiB in 2000 images (2000 images/s from the DAQ's statistics)",
        f"  disk: {tmp_path}: 250.0 MiB of " + result.stdout.splitlines()[2].split(" of ", 1)[1],
    ]
    gone = daq_run(str(path), "--validate", "--url", "http://127.0.0.1:9", "--assume-rate", "100")
    assert gone.returncode == 0, gone.stderr
    assert "estimate: duration 20.0 s, volume unknown in 2000 images (100 images/s from --assume-rate)" in gone.stdout
    assert "note: the DAQ at http://127.0.0.1:9 did not answer" in gone.stdout


def test_a_run_that_would_not_fit_refuses_to_start_unless_allowed(daq_sim, tmp_path):
    """More bytes than the output folder's disk has: exit 2 with the figures, no report, nothing sent; the dry run says so; --allow-low-disk lets it be."""
    path = batch_file(tmp_path, 'version: 1\nsteps:\n  - write: {output_file: "{root}/huge.h5", n_images: 1000000000}\n')
    config_id = daq_sim.core.get_config()[0]
    report = tmp_path / "r.json"
    result = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), check_disk=True)
    assert result.returncode == RunExit.USAGE
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("daq-run: error: ")]
    assert re.fullmatch(
        rf"daq-run: error: not enough disk space: the writes into {re.escape(str(tmp_path))} need 119.2 TiB \(131072000000000 bytes\) "
        r"but its disk has [0-9.]+ [KMGT]?i?B \([0-9]+ bytes\) free; nothing was sent to the DAQ \(--allow-low-disk runs anyway\)",
        line,
    ), line
    assert not report.exists() and daq_sim.core.get_config()[0] == config_id
    assert daq_sim.core.status()["acquisition"] is None and daq_sim.core.logs(10) == {}
    dry = daq_run(str(path), "--url", daq_sim.url, "--dry-run", check_disk=True)
    assert dry.returncode == RunExit.USAGE and "the run would refuse to start: not enough disk space" in dry.stdout
    allowed = daq_run(str(path), "--url", daq_sim.url, "--dry-run", "--allow-low-disk")
    assert allowed.returncode == RunExit.PASSED, allowed.stdout


def test_the_estimate_is_in_the_report_beside_the_actual_figures(daq_sim, tmp_path):
    """A run's report holds the estimate it started with right after its totals."""
    path = batch_file(tmp_path, 'version: 1\nsteps:\n  - write: {output_file: "{root}/e.h5", n_images: 20}\n')
    report = tmp_path / "r.json"
    result = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    keys = list(data)
    assert keys[keys.index("totals") + 1] == "estimate"
    expected = data["estimate"]
    assert (expected["images"], expected["bytes"], expected["rate_hz"]) == (20, 20 * 256 * 256 * 2, SIM_FRAME_RATE)
    assert expected["duration_s"] == pytest.approx(0.01) and data["totals"]["images"] == 20
    assert expected["folders"][0]["path"] == str(tmp_path) and expected["folders"][0]["free_bytes"] > 0
    shown = daq_run("show", str(report))
    assert "estimated before the run: duration 0.01 s, volume 2.5 MiB in 20 images (at most)" in shown.stdout


# -- the live line: the whole batch ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_live_line_shows_the_batchs_time_left_from_the_estimate(tmp_path):
    """Step i of N, and the time left for the whole batch: the estimate's steps to come plus the write's own ETA."""
    b = plan(tmp_path, 'version: 1\nsteps:\n' + '  - write: {output_file: "{root}/w{step}.h5", n_images: 100}\n' * 3 + "  - wait: {seconds: 10}\n")
    est = estimate(b.steps, FACTS, check_disks=False)  # 0.1 s per write, 10 s of wait
    clock = Clock()
    view = ConsoleView(refresh_per_second=0, clock=clock, estimate=est, live=False)
    view(Event(events.RUN_STARTED, "r", data={"n_steps": 4, "batch": {"name": "b"}, "daq": {}}))
    view(Event(events.STEP_STARTED, "r", 1, "write 1", {"attempt": 1, "output_file": "/d/w1.h5", "n_images": 100}))
    left = view._pace.left(view._current, clock.now)
    assert left == pytest.approx(0.1 + 0.2 + 10)
    line = "".join(text for text, _ in live_line(view._current, 4, 100, clock.now, left))
    assert line.startswith("[1/4] write 1") and line.endswith(" · batch 10.3 s left"), line
    narrow = "".join(text for text, _ in live_line(view._current, 4, 50, clock.now, left))
    assert "batch" not in narrow and len(narrow) <= 49  # the step keeps the room


def test_without_an_estimate_the_pace_of_the_run_gives_the_time_left():
    """No frame rate known: once a step has finished, the time left is the run's pace times the steps to come."""
    clock = Clock()
    view = ConsoleView(refresh_per_second=0, clock=clock, live=False)
    view(Event(events.RUN_STARTED, "r", data={"n_steps": 5, "batch": {"name": "b"}, "daq": {}}))
    view(Event(events.STEP_STARTED, "r", 1, "one", {"attempt": 1}))
    assert view._pace.left(view._current, clock.now) is None
    clock.now += 4
    view(Event(events.STEP_FINISHED, "r", 1, "one", {"index": 1, "name": "one", "kind": "wait", "status": "passed"}))
    view(Event(events.STEP_STARTED, "r", 2, "two", {"attempt": 1}))
    assert view._pace.left(view._current, clock.now) == pytest.approx(16.0)


def test_a_cleanup_step_on_the_live_line_says_finally():
    """Cleanup steps have indices after the plan's: the live line says [finally], not [6/5]."""
    clock = Clock()
    view = ConsoleView(refresh_per_second=0, clock=clock, live=False)
    view(Event(events.RUN_STARTED, "r", data={"n_steps": 5, "batch": {"name": "b"}, "daq": {}}))
    view(Event(events.STEP_STARTED, "r", 6, "stop writer", {"attempt": 1}))
    line = "".join(text for text, _ in live_line(view._current, 5, 80, clock.now, view._pace.left(view._current, clock.now)))
    assert line.startswith("[finally] stop writer")
