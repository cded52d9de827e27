"""The decision tables of ``rest_v2/_acquisitions.py``, one rule per test, in milliseconds.

The real :class:`RestV2Daq` and the real client run against a :class:`ScriptedDaq` (no socket;
Redis only where a rule is about the status stream) with graces of a few ms
(:data:`FAST_TIMING`). Each test names the rule it checks in its docstring; the end-to-end
suites (``test_acquisitions.py``, ``test_resilience.py``) check the same rules through daq-run
and daq-sim.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid

import pytest

from daq_runner import protocol
from daq_runner._deadline import Deadline, bounded
from daq_runner.batch import WriteStep
from daq_runner.exceptions import StdDaqAdminException, StepFailed
from daq_runner.record import StepRecord
from daq_runner.resume import ResumedRun, acquisition_id
from daq_runner.testing import (
    FAST_TIMING,
    RecordedRun,
    ScriptedDaq,
    after,
    before,
    http_error,
    lost,
    needs_restart,
    refused,
    stale,
)

WRITE, STATUS, STOP = protocol.WRITER_WRITE_ASYNC, protocol.WRITER_STATUS, protocol.WRITER_STOP
IDLE = {"state": "READY", "acquisition": None}


class Seam:
    """A real RestV2Daq on a ScriptedDaq, opened for a RecordedRun: the DAQ seam without a Runner."""

    def __init__(self, scripted: ScriptedDaq, folder, timing=FAST_TIMING, **run) -> None:
        self.scripted = scripted
        self.folder = folder
        self.run = RecordedRun(**run)
        self.daq = scripted.rest_v2(timing=timing)
        self.daq.open(self.run)

    @property
    def tracker(self):
        return self.daq._tracked()

    def step(self, name: str = "a.h5", n_images: int = 3, *, index: int = 1, timeout: float = 5.0, **kwargs) -> WriteStep:
        path = name if os.path.isabs(name) else str(self.folder / name)
        params = {"output_file": path, "n_images": n_images}
        return WriteStep(index=index, kind="write", name=f"write {name}", params=params, timeout=timeout, output_file=path, n_images=n_images, **kwargs)

    def start(self, step: WriteStep, record: StepRecord = None, seconds: float = None):
        record = record or StepRecord.of(step)
        with bounded(Deadline(step.timeout if seconds is None else seconds, cancel=self.run.stop_event)):
            return self.daq.start(step, record), record

    def follow(self, acq, record: StepRecord, seconds: float = 5.0) -> StepRecord:
        with bounded(Deadline(seconds, cancel=self.run.stop_event)):
            self.daq.follow(acq, record)
        return record

    def write(self, step: WriteStep, record: StepRecord = None) -> StepRecord:
        acq, record = self.start(step, record)
        return self.follow(acq, record)


@pytest.fixture
def scripted():
    with ScriptedDaq() as daq:
        yield daq


@pytest.fixture
def seam(scripted, tmp_path) -> Seam:
    return Seam(scripted, tmp_path)


@pytest.fixture
def streamed(daq_redis_server, tmp_path):
    """A ScriptedDaq that publishes its statuses and log to a real Redis, on a clock of 2 ms per image."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    streams = protocol.StreamNames(status=f"{prefix}:status", config=f"{prefix}:config", log=f"{prefix}:log", stat=f"{prefix}:stat")
    with ScriptedDaq(redis_url=daq_redis_server.url, streams=streams, tick_s=0.002) as daq:
        yield Seam(daq, tmp_path)


def paths(scripted: ScriptedDaq) -> list:
    return [f"{method} {path}" for method, path, _ in scripted.requests]


# -- Tracker.start ----------------------------------------------------------------------------------


def test_a_write_is_sent_once_and_followed_to_a_logged_end(seam):
    """The plain case: one request, followed to FINISHED with every image, confirmed by the log."""
    record = seam.write(seam.step(n_images=3))
    assert (3, "FINISHED", "rest /daq/logs") == (record.n_written, record.acquisition["state"], record.daq_log_source)
    assert 1 == seam.scripted.count(WRITE) and 1 == len(seam.scripted.started)
    assert [] == seam.run.acquisitions.running


def test_a_ready_hint_on_the_stream_sends_the_write_without_asking_first(streamed):
    """Rule: the stream's newest entry READY is enough to send the write (no status request)."""
    streamed.write(streamed.step("first.h5", 2))  # the stream's newest entry is now its READY
    before_second = len(streamed.scripted.requests)
    streamed.write(streamed.step("second.h5", 2, index=2))
    assert ["POST /writer/write_async"] == paths(streamed.scripted)[before_second:][:1]
    assert 2 == len(streamed.scripted.started)


def test_a_stale_writing_copy_of_an_acquisition_seen_to_end_is_a_ready_hint(streamed):
    """Rule: a WRITING entry of an acquisition this run saw end is a late copy: the write is sent at once."""
    record = streamed.write(streamed.step("first.h5", 2))
    streamed.scripted.publish({"state": "WRITING", "acquisition": {**record.acquisition, "state": "ACQUIRING_IMAGES"}})
    streamed.daq.feed.mark()  # no shortcut from the last acquisition's cursors: the stream's newest entry decides
    before_second = len(streamed.scripted.requests)
    streamed.write(streamed.step("second.h5", 2, index=2))
    assert ["POST /writer/write_async"] == paths(streamed.scripted)[before_second:][:1]


def test_a_write_refused_on_a_stale_ready_hint_waits_for_ready_and_is_sent_again(streamed):
    """Rule: refused because the hint was stale (someone else writes): nothing started; wait for READY, send again."""
    scripted = streamed.scripted
    scripted.paused = True  # the other acquisition publishes nothing until our first write: READY stays the newest entry
    scripted.start_other("/data/other.h5", n_images=20, run_id=7)
    scripted.publish(IDLE)  # a late copy: the stream's newest entry says READY
    scripted.script(WRITE, before(lambda d: setattr(d, "paused", False)))
    record = streamed.write(streamed.step(n_images=2))
    assert 2 == scripted.count(WRITE)  # the first refused: "Cannot start new acquisition while previous one is running"
    assert [7, acquisition_id("scripted", 1, 2)] == [run_id for run_id, _ in scripted.started]
    assert 2 == record.n_written


def test_a_write_refused_on_a_ready_hint_with_an_unknown_writer_resets_it_first(streamed):
    """Rule: hint READY, writer UNKNOWN: the refusal started nothing; the writer is reset (recorded), then the write sent."""
    streamed.scripted.restart_writer()
    streamed.scripted.publish(IDLE)
    record = streamed.write(streamed.step(n_images=2))
    assert ["writer UNKNOWN before the write"] == [r["reason"] for r in record.recoveries]
    assert (2, 1) == (streamed.scripted.count(WRITE), len(streamed.scripted.started))


def test_cannot_reach_writing_resets_the_writer_and_fails_the_attempt(seam):
    """Rule: WriterNeedsRestart on the start: the writer is reset, the attempt fails, nothing is left running."""
    seam.scripted.script(WRITE, needs_restart())
    with pytest.raises(StepFailed, match="the DAQ refused the write: Cannot reach WRITING.*the writer was reset"):
        seam.start(seam.step())
    assert "READY" == seam.scripted.status()["state"]
    assert [] == seam.run.acquisitions.running


def test_a_refusal_is_raised_and_nothing_is_left_running(seam):
    """Rule: a refusal (not on a stream hint) is the DAQ's answer: raised as it is, the acquisition ended."""
    seam.scripted.script(WRITE, refused("ERROR: the detector is not connected"))
    with pytest.raises(StdDaqAdminException, match="not connected"):
        seam.start(seam.step())
    assert ([], 1) == (seam.run.acquisitions.running, seam.scripted.count(WRITE))


def test_a_refusal_no_retry_can_change_fails_the_step_for_good(seam):
    """Rule: a refusal whose cause stays (a folder the DAQ does not have) is a final failure: nothing left running."""
    seam.scripted.script(WRITE, refused(protocol.MESSAGE_FOLDER_MISSING.format(folder="/x")))
    with pytest.raises(StepFailed, match="the DAQ refused: Output file folder /x does not exist") as info:
        seam.start(seam.step())
    assert info.value.final and [] == seam.run.acquisitions.running


def test_a_lost_reply_of_a_write_that_started_is_found_in_the_statuses(seam):
    """Rule: a lost reply is followed by looking for our run_id in the statuses: found, never sent again."""
    seam.scripted.script(WRITE, lost(handled=True))
    record = seam.write(seam.step())
    assert (1, 1, 3) == (seam.scripted.count(WRITE), len(seam.scripted.started), record.n_written)
    assert any("did start" in n for n in seam.run.notices)


def test_a_lost_reply_of_a_write_that_ended_unseen_is_found_in_the_log(seam):
    """Rule: not in the statuses (ended and gone), but in the DAQ's log: it started; not sent again, passed."""
    seam.scripted.script(WRITE, lost(handled=True))
    seam.scripted.at_image(1, lambda d: (d.finish(), d.vanish()))  # at the first look, nothing of it is left
    record = seam.write(seam.step())
    assert (1, 1) == (seam.scripted.count(WRITE), len(seam.scripted.started))
    assert 3 == record.n_written and record.daq_log is not None


def test_a_lost_reply_of_a_write_that_did_not_start_is_sent_once_more(seam):
    """Rule: neither in the statuses nor in the log within the grace: provably not started, sent again."""
    seam.scripted.script(WRITE, lost(handled=False))
    record = seam.write(seam.step())
    assert (2, 1, 3) == (seam.scripted.count(WRITE), len(seam.scripted.started), record.n_written)
    assert any("sending the request once more" in n for n in seam.run.notices)


def test_a_write_lost_twice_fails_without_a_third_request(seam):
    """Rule: sent at most twice: a second lost reply that never shows fails the attempt."""
    seam.scripted.script(WRITE, lost(handled=False), lost(handled=False))
    with pytest.raises(StepFailed, match="write request lost twice.*did not start"):
        seam.start(seam.step())
    assert (2, 0) == (seam.scripted.count(WRITE), len(seam.scripted.started))


def test_a_lost_reply_is_never_sent_again_when_the_step_runs_out_of_time(scripted, tmp_path):
    """Rule: the step's time ends before the grace (not provably unstarted): not sent again, the outcome stays unknown."""
    seam = Seam(scripted, tmp_path, timing=dataclasses.replace(FAST_TIMING, lost_reply_grace_s=2.0))
    scripted.script(WRITE, lost(handled=False))
    started = time.monotonic()
    with pytest.raises(StepFailed, match="timed out while the outcome of the write was unknown.*may have started"):
        seam.start(seam.step(), seconds=0.2)
    assert time.monotonic() - started < 1.5
    assert 1 == scripted.count(WRITE)
    assert 1 == len(seam.run.acquisitions.running)  # still owned: whatever ends the run stops it


def test_a_write_that_arrives_late_is_found_and_not_sent_again(seam):
    """Rule: a request still on its way when the reply was lost starts within the grace: followed, sent once."""
    seam.scripted.script(WRITE, lost(after_requests=2))
    record = seam.write(seam.step())
    assert (1, 1, 3) == (seam.scripted.count(WRITE), len(seam.scripted.started), record.n_written)


def test_a_write_that_arrives_after_the_grace_never_makes_a_second_acquisition(scripted, tmp_path):
    """Rule: sent again after the grace, and the first request arrives afterwards: refused as busy, one acquisition."""
    seam = Seam(scripted, tmp_path, timing=dataclasses.replace(FAST_TIMING, lost_reply_grace_s=0.02))
    scripted.script(WRITE, lost(after_requests=10_000))
    acq, record = seam.start(seam.step(n_images=1000))
    scripted.deliver()  # while the second one's acquisition runs: "Cannot start new acquisition..."
    scripted.finish()
    seam.follow(acq, record)
    assert (2, 1) == (scripted.count(WRITE), len(scripted.started))


def test_a_driver_that_replaces_the_run_id_is_followed_by_output_file(seam):
    """Rule: an acquisition of our file that started after our request, under another run_id, is ours (with a notice)."""
    seam.scripted.arm(run_id=424242)
    record = seam.write(seam.step())
    assert ("424242", 3) == (record.acquisition_id, record.n_written)
    assert any("reports run_id 424242 for our acquisition" in n for n in seam.run.notices)


def test_an_acquisition_of_our_file_from_before_the_request_is_not_ours(seam):
    """Rule: the output file alone does not make an acquisition ours when it existed before our request."""
    step = seam.step(n_images=3, overwrite=True)
    seam.scripted.start_other(step.output_file, n_images=1, run_id=99)
    seam.scripted.finish()
    seam.scripted.script(WRITE, lost(handled=False))
    seam.write(step)
    assert 2 == seam.scripted.count(WRITE)  # run_id 99 of our file was there before: not taken for ours


# -- Tracker.follow --------------------------------------------------------------------------------


def test_the_final_state_read_on_the_stream_ends_the_wait(streamed):
    """Rule: FINISHED of our run_id on daq:status ends the wait; the log record read along confirms it."""
    record = streamed.write(streamed.step(n_images=3))
    assert 3 == record.n_written
    assert record.daq_log_source.startswith(f"redis {streamed.scripted.streams.log}")


def test_a_late_copy_of_the_previous_acquisitions_end_is_known_stale(streamed):
    """Rule: the second copy of the previous acquisition's READY, landing after ours started, says nothing of ours (no REST look)."""
    first = streamed.write(streamed.step("first.h5", 2))
    final = {"state": "READY", "acquisition": first.acquisition}
    streamed.scripted.script(WRITE, after(lambda d: d.publish(final)))
    before_second = len(streamed.scripted.requests)
    streamed.write(streamed.step("second.h5", 20, index=2))
    assert ["POST /writer/write_async"] == paths(streamed.scripted)[before_second:]


def test_a_stale_ready_on_the_stream_is_confirmed_over_rest_and_not_believed(streamed):
    """Rule: an end suggested by the stream is believed only when the live status confirms it."""
    streamed.scripted.at_image(1, lambda d: d.publish(IDLE))
    record = streamed.write(streamed.step(n_images=5))
    assert 5 == record.n_written


def test_a_stale_ready_over_rest_after_ours_was_seen_is_confirmed_and_not_believed(seam):
    """Rule: READY without ours after ours was seen suggests the end; the live status (ours) says it goes on."""
    seam.scripted.at_image(1, lambda d: d.script(STATUS, stale(IDLE)))
    record = seam.write(seam.step(n_images=3))
    assert 3 == record.n_written


def test_a_ready_without_ours_within_the_ack_grace_is_not_vanished(scripted, tmp_path):
    """Rule: a slow acknowledgement: READY without ours right after the reply (even confirmed) is not yet "vanished"."""
    seam = Seam(scripted, tmp_path, timing=dataclasses.replace(FAST_TIMING, ack_grace_s=5.0))
    scripted.script(WRITE, after(lambda d: d.script(STATUS, stale(IDLE), times=4)))
    record = seam.write(seam.step(n_images=2))
    assert 2 == record.n_written


def test_a_ready_without_ours_after_the_ack_grace_is_vanished(seam):
    """Rule: READY without ours, never seen, after the ack grace, nothing logged: the acquisition vanished."""
    seam.scripted.script(WRITE, after(lambda d: d.vanish()))
    with pytest.raises(StepFailed, match=r"vanished: the writer is READY with no record of it"):
        seam.write(seam.step())


def test_a_ready_without_ours_after_ours_was_seen_is_vanished_at_once(scripted, tmp_path):
    """Rule: once ours was seen, a confirmed READY without it (and no log record) is the end: vanished, no grace."""
    seam = Seam(scripted, tmp_path, timing=dataclasses.replace(FAST_TIMING, ack_grace_s=60.0))
    scripted.at_image(2, lambda d: d.vanish())  # image 1 was seen
    started = time.monotonic()
    with pytest.raises(StepFailed, match="vanished"):
        seam.write(seam.step())
    assert time.monotonic() - started < 2.0


def test_unknown_during_the_acquisition_resets_the_writer_and_fails(seam):
    """Rule: UNKNOWN while ours runs is a writer restart: the acquisition is lost, the writer reset (recorded)."""
    seam.scripted.at_image(1, lambda d: d.restart_writer())
    step = seam.step()
    acq, record = seam.start(step)
    with pytest.raises(StepFailed, match="went UNKNOWN during the acquisition; it was lost"):
        seam.follow(acq, record)
    assert ["writer UNKNOWN during the acquisition"] == [r["reason"] for r in record.recoveries]
    assert "READY" == record.recoveries[0]["outcome"] == seam.scripted.status()["state"]
    assert 2 == seam.scripted.count(STOP)  # "Cannot reach READY" to the first, as a real DAQ
    assert [] == seam.run.acquisitions.running


def test_unknown_with_our_final_state_is_still_a_lost_acquisition(seam):
    """Rule: a status UNKNOWN that shows ours ended is a writer restart all the same: reset, and the attempt fails."""
    seam.scripted.at_image(3, lambda d: d.restart_writer())  # right after its end, before the end is read
    acq, record = seam.start(seam.step(n_images=3))
    with pytest.raises(StepFailed, match="went UNKNOWN during the acquisition; it was lost.*Completed"):
        seam.follow(acq, record)
    assert ["writer UNKNOWN during the acquisition"] == [r["reason"] for r in record.recoveries]
    assert "READY" == seam.scripted.status()["state"]


def test_another_acquisition_after_ours_ends_ours_as_logged(seam):
    """Rule: someone else's acquisition after ours was seen ends the wait; ours is judged by its log record."""
    seam.scripted.at_image(3, lambda d: d.start_other())
    record = seam.write(seam.step(n_images=3))
    assert (3, "rest /daq/logs") == (record.n_written, record.daq_log_source)


def test_another_acquisition_after_ours_without_a_log_record_is_vanished(seam):
    """Rule: another acquisition runs and ours is in no record: vanished (the writer is WRITING someone else's)."""
    seam.scripted.arm(unlogged=True)
    seam.scripted.at_image(3, lambda d: d.start_other())
    with pytest.raises(StepFailed, match=r"vanished: the writer is WRITING"):
        seam.write(seam.step(n_images=3))


# -- Tracker.judge -----------------------------------------------------------------------------------


def test_a_failed_acquisition_fails_with_the_daqs_message(seam):
    """Rule: FAILED fails the step with the DAQ's own message."""
    seam.scripted.arm(fail_next="ERROR: detector lost")
    with pytest.raises(StepFailed, match="acquisition FAILED: ERROR: detector lost"):
        seam.write(seam.step())


def test_a_short_count_fails(seam):
    """Rule: FINISHED with fewer images than asked (stopped by someone else) fails."""
    seam.scripted.at_image(1, lambda d: d.interrupt())
    with pytest.raises(StepFailed, match=r"acquisition ended 'Interrupted.' before its 3 images were written"):
        seam.write(seam.step())


def test_a_background_write_ended_by_a_stop_step_passes_with_its_images(seam):
    """Rule: a background acquisition the batch's stop step ends passes with the images written, stopped_by_step set."""
    step = seam.step(n_images=1000, wait=False)
    acq, record = seam.start(step)
    seam.scripted.advance(4)
    stop_step = WriteStep(index=2, kind="stop", name="stop", params={})
    with bounded(Deadline(5.0)):
        seam.daq.stop_writer(stop_step, StepRecord.of(stop_step))
    seam.follow(acq, record)
    assert (2, 4) == (record.stopped_by_step, record.n_written)


def test_a_finished_acquisition_the_daq_did_not_log_fails(seam):
    """Rule: a write passes only when the DAQ's log confirms it (require_log)."""
    seam.scripted.arm(unlogged=True)
    with pytest.raises(StepFailed, match="acquisition FINISHED but the DAQ did not log it"):
        seam.write(seam.step())


def test_without_require_log_an_unlogged_acquisition_passes_and_says_why(scripted, tmp_path):
    """Rule: without require_log the missing record is reported, not failed."""
    seam = Seam(scripted, tmp_path, require_log=False)
    scripted.arm(unlogged=True)
    record = seam.write(seam.step())
    assert (None, 3) == (record.daq_log, record.n_written)
    assert record.daq_log_reason.startswith("no daq:log record within")


def test_an_acquisition_logged_twice_counts_once(seam):
    """Rule: a DAQ that logs one acquisition twice confirms it once (the first matching record)."""
    seam.scripted.arm(logged_twice=True)
    record = seam.write(seam.step())
    assert 2 == sum(1 for _, r in seam.scripted.logs if r["info"]["run_id"] == int(record.acquisition_id))
    assert record.daq_log["info"]["run_id"] == int(record.acquisition_id)


# -- Tracker.stop -------------------------------------------------------------------------------------


def _running(seam: Seam, n_images: int = 1000):
    """Our acquisition, WRITING with one image written; from here on only the test advances it."""
    acq, record = seam.start(seam.step(n_images=n_images))
    seam.scripted.images_per_read = 0
    seam.scripted.advance(1)
    return acq, record


def test_stop_of_an_acquisition_that_is_not_running_sends_no_stop(seam):
    """Rule: stop looks first; an acquisition that is not running is not stopped (no stop request)."""
    acq, record = seam.start(seam.step(n_images=1))
    seam.scripted.finish()
    entry = seam.daq.stop(acq, "the step timed out", Deadline(1.0))
    assert (f"acquisition {acq.run_id} was not running", 1) == (entry["outcome"], entry["attempts"])
    assert 0 == seam.scripted.count(STOP)


def test_stop_stops_our_running_acquisition(seam):
    """Rule: our acquisition WRITING is stopped with one request."""
    acq, _ = _running(seam)
    entry = seam.daq.stop(acq, "the step timed out", Deadline(1.0))
    assert (f"stopped acquisition {acq.run_id}", 1, 1) == (entry["outcome"], entry["attempts"], seam.scripted.count(STOP))
    assert "READY" == seam.scripted.status()["state"] and [] == seam.run.acquisitions.running


def test_stop_errors_are_tried_again_until_the_writer_stops(seam):
    """Rule: one HTTP 500 must not leave our acquisition running: tried again, each error kept."""
    acq, _ = _running(seam)
    seam.scripted.script(STOP, http_error(500, "Internal Server Error"))
    entry = seam.daq.stop(acq, "signal", Deadline(1.0))
    assert entry["outcome"].startswith(f"stopped acquisition {acq.run_id}")
    assert 2 == entry["attempts"] and "HTTP 500" in entry["errors"][0]
    assert "READY" == seam.scripted.status()["state"]


def test_stop_that_keeps_failing_gives_up_at_its_deadline_and_says_so(seam):
    """Rule: errors are retried until the deadline, then the record says the acquisition may still run."""
    acq, _ = _running(seam)
    seam.scripted.script(STATUS, http_error(500), times=10_000)
    started = time.monotonic()
    entry = seam.daq.stop(acq, "signal", Deadline(0.3))
    took = time.monotonic() - started
    assert entry["outcome"].startswith(f"could not stop acquisition {acq.run_id}, it may still be running")
    assert entry["attempts"] > 2 and entry["errors"][0].endswith("times)")
    assert 0.2 < took < 1.0
    assert any("could not stop" in n for n in seam.run.notices)


def test_a_second_signal_shortens_a_stop_under_way(seam):
    """Rule: the deadline given to stop may be shortened meanwhile (a second signal): it ends by the new one."""
    acq, _ = _running(seam)
    deadline = Deadline(30.0)
    seam.scripted.script(STATUS, http_error(500), times=10_000)
    second = threading.Timer(0.1, lambda: setattr(deadline, "at", time.monotonic() + 0.1))
    started = time.monotonic()
    second.start()
    entry = seam.daq.stop(acq, "signal", deadline)
    second.join()
    assert 0.15 < time.monotonic() - started < 1.0
    assert entry["outcome"].startswith("could not stop")


# -- Tracker.record_end -----------------------------------------------------------------------------------


def test_record_end_of_an_acquisition_that_never_started_records_nothing(seam):
    """Rule: a write that provably did not start left no file: nothing is recorded of it."""
    seam.scripted.script(WRITE, lost(handled=False), lost(handled=False))
    step = seam.step()
    record = StepRecord.of(step)
    with pytest.raises(StepFailed):
        seam.start(step, record)
    acq = seam.run.acquisitions.of_step(1)
    asked = len(seam.scripted.requests)
    seam.daq.record_end(acq, record, log_wait=0.05)
    assert (None, None) == (record.n_written, record.acquisition)
    assert asked == len(seam.scripted.requests)  # not even a look at the DAQ


def test_record_end_takes_the_count_from_the_log_record_of_the_stopped_acquisition(seam):
    """Rule: a stopped acquisition's images are its log record's final count ("Interrupted.")."""
    acq, record = _running(seam)
    seam.scripted.advance(6)
    seam.daq.stop(acq, "signal", Deadline(1.0))
    seam.daq.record_end(acq, record, log_wait=0.5)
    assert (7, protocol.MESSAGE_INTERRUPTED) == (record.n_written, record.daq_log["message"])


def test_record_end_without_a_log_record_takes_the_live_status_of_ours(seam):
    """Rule: no log record: the live status, when it is still ours, gives the count."""
    acq, record = _running(seam)
    seam.scripted.advance(4)
    seam.daq.record_end(acq, record, log_wait=0.0)
    assert (5, str(acq.run_id)) == (record.n_written, record.acquisition_id)


def test_record_end_falls_back_to_the_last_status_of_ours_seen(seam):
    """Rule: no log record and the DAQ no longer shows ours: the last status of ours seen gives the count."""
    acq, record = seam.start(seam.step(n_images=1000))
    with pytest.raises(StepFailed, match="timed out"):
        seam.follow(acq, record, seconds=0.05)  # seen for a while, then the step's time ran out
    seen = acq.last["stats"]["n_write_completed"]
    seam.scripted.vanish()
    seam.daq.record_end(acq, record, log_wait=0.02)
    assert 0 < seen == record.n_written == record.acquisition["stats"]["n_write_completed"]


# -- Tracker.check_overwrite ---------------------------------------------------------------------------------


def test_an_existing_file_is_refused_and_nothing_is_sent(seam):
    """Rule: no silent overwrite: an existing file is refused before anything is sent."""
    step = seam.step()
    open(step.output_file, "w").close()
    with pytest.raises(StepFailed, match="it exists and the DAQ's writer would overwrite it.*nothing was sent"):
        seam.start(step)
    assert 0 == seam.scripted.count(WRITE)


def test_an_existing_file_is_replaced_when_allowed_with_a_notice(seam):
    """Rule: overwrite: true replaces it, recorded (overwrote) and noticed."""
    step = seam.step(overwrite=True)
    open(step.output_file, "w").close()
    record = seam.write(step)
    assert record.overwrote is True and any("overwriting" in n for n in seam.run.notices)


def test_a_symbolic_link_is_never_written_through(seam):
    """Rule: a symbolic link as output file is refused, even with overwrite allowed."""
    step = seam.step("link.h5", overwrite=True)
    os.symlink(seam.folder / "elsewhere.h5", step.output_file)
    with pytest.raises(StepFailed, match="is a symbolic link"):
        seam.start(step)
    assert 0 == seam.scripted.count(WRITE)


def test_one_file_named_twice_through_a_symlinked_folder_is_refused(seam):
    """Rule: two steps of a run never write one real file, whatever the path says."""
    os.symlink(seam.folder, seam.folder / "same")
    seam.write(seam.step("x.h5"))
    with pytest.raises(StepFailed, match="is the file step 1 of this run wrote"):
        seam.start(seam.step("same/x.h5", index=2, overwrite=True))


def test_a_retry_may_replace_the_file_its_own_failed_attempt_left(seam):
    """Rule: the file the step's own failed attempt left (nobody wrote it since) may be replaced."""
    seam.scripted.arm(fail_next="ERROR: boom")
    step = seam.step()
    record = StepRecord.of(step)
    with pytest.raises(StepFailed, match="FAILED"):
        seam.write(step, record)
    assert os.path.exists(step.output_file)
    seam.write(step, StepRecord.of(step))
    assert any("left by the failed attempt of this step" in n for n in seam.run.notices)


def test_a_retry_never_replaces_a_file_someone_else_wrote_since(seam):
    """Rule: someone else's acquisition of the file between the attempts (in the DAQ's log) makes it not ours."""
    step = seam.step()
    seam.scripted.at_image(1, lambda d: d.interrupt())
    with pytest.raises(StepFailed, match="before its 3 images were written"):
        seam.write(step)
    seam.scripted.start_other(step.output_file, n_images=1, run_id=5)
    seam.scripted.finish()
    with pytest.raises(StepFailed, match="it exists.*nothing was sent"):
        seam.start(step)


def test_a_resumed_step_may_replace_its_own_file_by_the_log(scripted, tmp_path):
    """Rule: under --resume, the file whose newest log record is one of the resumed run's run_ids for the step is its own."""
    resumed = ResumedRun(invocation="earlier", started_at=time.time() - 60, finished_at=time.time() - 30, run_ids={})
    seam = Seam(scripted, tmp_path, resumed=resumed)
    step = seam.step()
    scripted.start_other(step.output_file, n_images=1, run_id=acquisition_id("earlier", 1, 1))
    scripted.finish()
    seam.write(step)
    assert any("left by this step in the run being resumed" in n for n in seam.run.notices)


def test_a_resumed_step_may_replace_its_own_unlogged_file_by_its_time(scripted, tmp_path):
    """Rule: nothing logged (a FAILED acquisition): the report names the step's acquisition and the file changed while that run ran."""
    earlier = acquisition_id("earlier", 1, 1)
    resumed = ResumedRun(invocation="earlier", started_at=time.time() - 10, finished_at=time.time() + 10, run_ids={1: earlier})
    seam = Seam(scripted, tmp_path, resumed=resumed)
    step = seam.step()
    open(step.output_file, "w").close()
    seam.write(step)
    assert any("left by this step in the run being resumed" in n for n in seam.run.notices)


def test_a_resumed_step_never_replaces_a_file_changed_after_that_run(scripted, tmp_path):
    """Rule: a file last changed after the resumed run ended is someone else's: refused."""
    earlier = acquisition_id("earlier", 1, 1)
    resumed = ResumedRun(invocation="earlier", started_at=time.time() - 600, finished_at=time.time() - 300, run_ids={1: earlier})
    seam = Seam(scripted, tmp_path, resumed=resumed)
    step = seam.step()
    open(step.output_file, "w").close()
    with pytest.raises(StepFailed, match="it exists"):
        seam.start(step)


def test_a_file_the_daq_wrote_elsewhere_is_known_from_its_log(tmp_path):
    """Rule: where the DAQ's folder is not visible here, its own log of the file counts as the file existing."""
    with ScriptedDaq(files=False) as scripted:
        seam = Seam(scripted, tmp_path)
        step = seam.step("/remote/data/x.h5")
        scripted.start_other(step.output_file, n_images=1, run_id=3)
        scripted.finish()
        with pytest.raises(StepFailed, match="the DAQ's log shows an earlier acquisition of it"):
            seam.start(step)
        assert 0 == scripted.count(WRITE)
