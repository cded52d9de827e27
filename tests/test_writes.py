"""write_file: one file from Python with the runner's safety, against daq-sim and a real Redis."""

from __future__ import annotations

import h5py
import pytest

from daq_runner import BatchValidationError, LockHeldError, StdDaqClient, StepFailed, write_file
from daq_runner.lock import DaqLock


def test_one_file_written_followed_and_confirmed(daq_sim, tmp_path):
    """A write passes with its run_id, its count and the DAQ's own log record of it."""
    out = tmp_path / "a.h5"
    record = write_file(StdDaqClient(daq_sim.url), str(out), 4)
    assert ("passed", 4, "Completed.") == (record.status, record.n_written, record.daq_log["message"])
    assert str(record.daq_log["info"]["run_id"]) == record.acquisition_id
    with h5py.File(out) as f:
        assert 4 == f["/SIM-EIGER-64K/data"].shape[0]


def test_an_existing_file_is_refused_and_kept_unless_overwrite(daq_sim, tmp_path):
    """start_writer_sync would overwrite it without a word; write_file refuses, sends nothing."""
    out = tmp_path / "a.h5"
    out.write_bytes(b"last night's file")
    with pytest.raises(StepFailed, match="it exists and the DAQ's writer would overwrite it; pass overwrite=True to write_file;") as refused:
        write_file(daq_sim.url, str(out), 2)
    assert "--overwrite" not in str(refused.value) and "defaults" not in str(refused.value)  # said in the call's words
    assert b"last night's file" == out.read_bytes()
    assert "passed" == write_file(daq_sim.url, str(out), 2, overwrite=True).status


def test_a_failed_acquisition_raises_with_the_daqs_reason(daq_sim, tmp_path):
    """An acquisition that FAILED: StepFailed naming the DAQ's message."""
    daq_sim.core.arm_faults({"fail_next": "ERROR: disk gone"})
    with pytest.raises(StepFailed, match="acquisition FAILED: ERROR: disk gone"):
        write_file(daq_sim.url, str(tmp_path / "a.h5"), 2)


def test_bad_input_is_refused_before_anything_is_sent(daq_sim, tmp_path):
    """A relative path, no images: one-line validation errors in the call's words (no position in a batch file)."""
    with pytest.raises(BatchValidationError, match=r"^write_file: output_file must be an absolute path"):
        write_file(daq_sim.url, "relative/a.h5", 2)
    with pytest.raises(BatchValidationError, match=r"^write_file: n_images must be between 1 and") as refused:
        write_file(daq_sim.url, str(tmp_path / "a.h5"), 0)
    assert "<string>" not in str(refused.value)


def test_with_redis_the_runner_lock_keeps_others_off(daq_sim, tmp_path):
    """With the DAQ's Redis, the write takes the runner lock: another runner's lock is respected."""
    import redis

    client = redis.Redis.from_url(daq_sim.redis_url)
    other = DaqLock(client, {"host": "elsewhere", "pid": 1, "batch": "night.yaml"}, ttl=30)
    other.acquire()
    try:
        with pytest.raises(LockHeldError, match="night.yaml"):
            write_file(daq_sim.url, str(tmp_path / "a.h5"), 2, redis_url=daq_sim.redis_url)
    finally:
        other.release()
        client.close()
    assert "passed" == write_file(daq_sim.url, str(tmp_path / "a.h5"), 2, redis_url=daq_sim.redis_url).status
