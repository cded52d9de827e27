"""The file checks find what the DAQ's word hides: real HDF5 files, good and with the defects users meet.

Files come from daq-sim's own writer (and a real daq-sim acquisition), and from h5py written
the way each generation's writer does it, with one defect each: a gap, a repeat, a truncated
file, a wrong dtype or shape, padding rows, a file of the other generation, a stale file, a
file still open, a file system that does not answer (a write lease held by another process
blocks every open as a hung mount does).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import h5py
import numpy as np
import pytest

from daq_runner._deadline import Deadline, Interrupted, bounded
from daq_runner.sim.daq import DEFAULT_CONFIG
from daq_runner.sim.hdf5 import Hdf5Writer, frame_source
from daq_runner.verify import (
    CheckOptions,
    VERIFY_EXTRA_HINT,
    VERIFY_MODULES,
    Expected,
    Layout,
    driver_files,
    file_digest,
    manifest_line,
    manifest_lines,
    verify_driver,
    verify_rest_v2,
)

from .test_packaging import run_hidden, sim_extra

CONFIG = {**DEFAULT_CONFIG, "image_pixel_height": 16, "image_pixel_width": 32}
NAME = CONFIG["detector_name"]
SHAPE = (16, 32)


def expected(n_images: int, **kwargs) -> Expected:
    return Expected.from_config(CONFIG, n_images, **kwargs)


def failed(verification) -> dict:
    """The failed checks as {name: reason} (file checks and acquisition checks together)."""
    found = {c.name: c.reason for f in verification.files for c in f.checks if not c.passed}
    found.update({c.name: c.reason for c in verification.checks if not c.passed})
    return found


def reasons(verification) -> dict:
    found = {c.name: c.reason for f in verification.files for c in f.checks}
    found.update({c.name: c.reason for c in verification.checks})
    return found


def sim_file(path: Path, n_images: int, first_id: int = 0, bit_depth: int = 16) -> Path:
    """A file written by daq-sim's writer."""
    config = {**CONFIG, "bit_depth": bit_depth}
    writer = Hdf5Writer(str(path), config, bit_depth)
    writer.append(frame_source(config).frames(0, n_images), first_id)
    writer.close()
    return path


def rest_v2_file(path: Path, ids: Sequence[int], status: Optional[Sequence[int]] = None, *, rows: Optional[int] = None, dtype: str = "uint16", shape=SHAPE) -> Path:
    """A rest_v2 file by h5py: ``rows`` images (default one per id), contiguous image_id and status."""
    rows = len(ids) if rows is None else rows
    with h5py.File(path, "w") as f:
        group = f.create_group(NAME)
        group.create_dataset("data", data=np.ones((rows, *shape), dtype=dtype), chunks=(1, *shape))
        group.create_dataset("image_id", data=np.asarray(ids, dtype=np.uint64))
        group.create_dataset("status", data=np.asarray(status if status is not None else [0] * len(ids), dtype=np.uint64))
    return path


META = np.dtype([("image_id", "<u8"), ("status", "<u8")])


def driver_file(path: Path, ids: Sequence[int], status: int = 1, *, trim: bool = True, records_per_chunk: int = 8, images_per_chunk: int = 4, dtype: str = "uint16") -> None:
    """One writer's file as the driver generation's writer makes it: metadata grown by whole
    chunks of records, data by chunks of images, both trimmed on close unless it got one image."""
    with h5py.File(path, "w") as f:
        group = f.create_group(NAME)
        meta = group.create_dataset("metadata", shape=(0,), maxshape=(None,), chunks=(records_per_chunk,), dtype=META)
        data = group.create_dataset("data", shape=(0, *SHAPE), maxshape=(None, *SHAPE), chunks=(images_per_chunk, *SHAPE), dtype=dtype)
        for index, image_id in enumerate(ids):
            if index + 1 > meta.shape[0]:
                meta.resize(((index + 1) // records_per_chunk + 1) * records_per_chunk, axis=0)
            meta[index] = (image_id, status)
            if index >= data.shape[0]:
                data.resize(index + images_per_chunk, axis=0)
            data[index] = np.full(SHAPE, 7, dtype=dtype)
        if trim and len(ids) >= 2:
            meta.resize(len(ids), axis=0)
            data.resize(len(ids), axis=0)


def driver_acquisition(folder: Path, ids: Sequence[int], n_writers: int, prefix: str = "scan_", **kwargs) -> None:
    """The files of one acquisition: the k-th image in file k mod W."""
    for i, path in enumerate(driver_files(folder, prefix, n_writers)):
        driver_file(Path(path), list(ids)[i::n_writers], **kwargs)


# -- rest_v2 -----------------------------------------------------------------------------------------


def test_a_file_of_daq_sims_writer_passes_every_check(tmp_path):
    """daq-sim's writer's file, inside its window, with checksums: every check passes, each says why."""
    started = time.time()
    path = sim_file(tmp_path / "scan.h5", 10, first_id=100)
    result = verify_rest_v2(path, expected(10, started=started, ended=time.time()), CheckOptions(checksums=True))
    assert result.passed, result.failures
    assert ["readable", "layout", "metadata", "shape", "dtype", "status", "mtime", "checksum"] == [c.name for c in result.files[0].checks]
    assert "10 images, ids 100 to 109, none missing or repeated" == result.checks[0].reason
    assert "10 images of 16 x 32 pixels" == reasons(result)["shape"]
    assert (10, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size) == (result.files[0].images, result.files[0].sha256, result.files[0].size)
    assert "1 file, 10 images: every check passed" == result.reason
    assert json.loads(json.dumps(result.to_json()))["files"][0]["checks"][0] == {"name": "readable", "passed": True, "reason": f"HDF5, {path.stat().st_size} bytes"}


def test_a_real_daq_sim_acquisition_and_an_interrupted_one(daq_sim, tmp_path):
    """A daq-sim write passes; a stopped one is a partial file: it fails against n_images and passes against what the DAQ wrote."""
    from daq_runner import StdDaqClient

    client = StdDaqClient(url_base=daq_sim.url)
    config = client.get_config()
    started = time.time()
    client.start_writer_sync({"output_file": str(tmp_path / "full.h5"), "n_images": 20})
    result = verify_rest_v2(tmp_path / "full.h5", Expected.from_config(config, 20, started=started, ended=time.time()))
    assert result.passed, result.failures

    daq_sim.core.settings.frame_rate = 50.0
    client.start_writer_async({"output_file": str(tmp_path / "cut.h5"), "n_images": 1000})
    time.sleep(0.3)
    acquisition = client.stop_writer()["acquisition"]
    written = acquisition["stats"]["n_write_completed"]
    assert "Interrupted." == acquisition["message"] and 0 < written < 1000
    partial = verify_rest_v2(tmp_path / "cut.h5", Expected.from_config(config, 1000))
    assert f"{written} images, expected 1000" == failed(partial)["shape"]
    assert verify_rest_v2(tmp_path / "cut.h5", Expected.from_config(config, written)).passed


def test_a_gap_in_the_image_ids(tmp_path):
    """An image missing from the ids (the count still right): the missing id is named."""
    result = verify_rest_v2(rest_v2_file(tmp_path / "gap.h5", [10, 11, 12, 14, 15, 16]), expected(6))
    assert {"image_ids": "1 image id missing between 10 and 16: 13"} == failed(result)


def test_a_repeated_image_id(tmp_path):
    """An id twice, another missing: both named."""
    result = verify_rest_v2(rest_v2_file(tmp_path / "repeat.h5", [0, 1, 2, 2, 4]), expected(5))
    assert {"image_ids": "1 repeated image id: 2; 1 image id missing between 0 and 4: 3"} == failed(result)


def test_many_missing_ids_are_counted_and_a_few_named(tmp_path):
    """Two gaps, 30 ids missing: the count and the first five."""
    ids = list(range(0, 10)) + list(range(30, 40)) + list(range(50, 60))
    result = verify_rest_v2(rest_v2_file(tmp_path / "gaps.h5", ids), expected(30))
    assert "30 images, expected 30" not in failed(result)["image_ids"]
    assert "30 image ids missing between 0 and 59: 10, 11, 12, 13, 14 and 25 more" == failed(result)["image_ids"]


def test_a_truncated_file(tmp_path):
    """A file cut short (a copy interrupted, a full disk): readable fails with how much is there."""
    whole = sim_file(tmp_path / "whole.h5", 10).read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(whole[: len(whole) // 2])
    result = verify_rest_v2(cut, expected(10))
    assert f"truncated HDF5 file: {len(whole) // 2} of its {len(whole)} bytes are there" == failed(result)["readable"]
    assert not result.passed and result.files[0].images is None


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "missing"),
        (lambda p: p.write_bytes(b""), "empty (0 bytes): not an HDF5 file"),
        (lambda p: p.write_text("a log file, not images\n" * 100), "not an HDF5 file"),
        (lambda p: p.mkdir(), "not a regular file: a folder"),
        (lambda p: os.mkfifo(p), "not a regular file: a pipe"),
    ],
    ids=["missing", "empty", "text", "folder", "fifo"],
)
def test_what_is_not_an_hdf5_file_is_a_failed_check(tmp_path, make, reason):
    """Missing, empty, not HDF5, a folder, a pipe (never opened: it would block): one reason, no exception."""
    path = tmp_path / "out.h5"
    make(path)
    result = verify_rest_v2(path, expected(10))
    assert reason == failed(result)["readable"]
    assert result.reason.startswith(f"{path}: readable: {reason}")


def test_a_wrong_dtype(tmp_path):
    """A file at 8 bits where the write ran at 16 (a config changed under the batch): dtype fails."""
    result = verify_rest_v2(sim_file(tmp_path / "b8.h5", 5, bit_depth=8), expected(5))
    assert {"dtype": "data is uint8, the write ran at 16 bits (uint16)"} == failed(result)


def test_a_bit_depth_the_writer_does_not_take(tmp_path):
    """bit_depth 12 (stored by the real server, every acquisition then fails): the dtype check says why."""
    result = verify_rest_v2(sim_file(tmp_path / "f.h5", 5), Expected.from_config({**CONFIG, "bit_depth": 12}, 5))
    assert "bit depth 12 has no pixel type: the writer takes 8, 16 or 32" == failed(result)["dtype"]


def test_a_wrong_shape(tmp_path):
    """Fewer images than expected, images of another size, data that is not a stack of images."""
    assert "10 images, expected 12" == failed(verify_rest_v2(sim_file(tmp_path / "a.h5", 10), expected(12)))["shape"]
    other_size = rest_v2_file(tmp_path / "b.h5", range(4), shape=(32, 32))
    assert "images of 32 x 32 pixels, expected 16 x 32" == failed(verify_rest_v2(other_size, expected(4)))["shape"]
    flat = tmp_path / "c.h5"
    with h5py.File(flat, "w") as f:
        f[f"{NAME}/data"] = np.zeros((4, 512), dtype=np.uint16)
        f[f"{NAME}/image_id"] = np.arange(4, dtype=np.uint64)
        f[f"{NAME}/status"] = np.zeros(4, dtype=np.uint64)
    assert "data has shape (4, 512), not (images, height, width)" == failed(verify_rest_v2(flat, expected(4)))["shape"]


def test_rows_the_real_writer_allocated_but_never_wrote(tmp_path):
    """rest_v2's writer allocates image_id and status for every image requested: 0 after the images written is fine, anything else not."""
    unwritten = rest_v2_file(tmp_path / "a.h5", [5, 6, 7, 0, 0], rows=3)
    result = verify_rest_v2(unwritten, expected(3))
    assert result.passed, result.failures
    assert "one image_id and status per image (the 2 allocated after them are 0: never written)" == reasons(result)["metadata"]
    assert "3 images, expected 5" == failed(verify_rest_v2(unwritten, expected(5)))["shape"]
    garbage = rest_v2_file(tmp_path / "b.h5", [5, 6, 7, 9, 0], rows=3)
    assert "image_id has 5 values for 3 images, and those after them are not 0" == failed(verify_rest_v2(garbage, expected(3)))["metadata"]


def test_fewer_image_ids_than_images(tmp_path):
    """image_id shorter than the data: the metadata check fails and the ids cannot be judged."""
    result = verify_rest_v2(rest_v2_file(tmp_path / "a.h5", [0, 1, 2], rows=4), expected(4))
    assert "image_id and status have 3 values for 4 images" == failed(result)["metadata"]
    assert "the image ids of 1 file could not be read; 0 images, expected 4" == failed(result)["image_ids"]


def test_image_status_other_than_good(tmp_path):
    """Images with missing packets (status 1 in rest_v2) fail the status check, named; accepted_status can allow them."""
    path = rest_v2_file(tmp_path / "s.h5", range(100, 106), [0, 1, 0, 1, 2, 0])
    result = verify_rest_v2(path, expected(6))
    assert {"status": "3 of 6 images have a status other than 0 (good): 2 x 1 (missing packets), 1 x 2 (image id mismatch); image ids 101, 103, 104"} == failed(result)
    assert verify_rest_v2(path, expected(6), CheckOptions(accepted_status={0, 1, 2})).passed


def test_a_file_of_the_driver_generation_is_not_rest_v2(tmp_path):
    """A driver-generation file checked as rest_v2 (and the other way round): the layout check names the generation."""
    driver_file(tmp_path / "d.h5", [1, 2, 3])
    assert {"layout": f"a file of the driver layout (/{NAME}/metadata), not rest_v2"} == {
        k: v for k, v in failed(verify_rest_v2(tmp_path / "d.h5", expected(3))).items() if k != "image_ids"
    }
    sim_file(tmp_path / "r0.h5", 3)
    driver = verify_driver(tmp_path, "r", 1, expected(3))
    assert f"a file of the rest_v2 layout (/{NAME}/image_id), not driver" == failed(driver)["layout"]


def test_a_file_of_another_detector(tmp_path):
    """The detector was reconfigured: the group of the expected detector is not there, the one found is named."""
    path = sim_file(tmp_path / "a.h5", 3)
    result = verify_rest_v2(path, Expected.from_config({**CONFIG, "detector_name": "JF-4M"}, 3))
    assert f"no group /JF-4M: the file holds /{NAME}" == failed(result)["layout"]


def test_metadata_of_the_wrong_kind(tmp_path):
    """image_id that is not a 1-D integer dataset: a layout failure, not an exception."""
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f[f"{NAME}/data"] = np.zeros((2, *SHAPE), dtype=np.uint16)
        f[f"{NAME}/image_id"] = np.array(["a", "b"], dtype="S1")
        f[f"{NAME}/status"] = np.zeros(2, dtype=np.uint64)
    assert f"/{NAME}/image_id is not a 1-D integer dataset" == failed(verify_rest_v2(path, expected(2)))["layout"]


def test_the_modification_time_against_the_acquisitions_window(tmp_path):
    """A file older than its acquisition (a stale file: nothing was written) or changed after it fails; 1 s of skew passes."""
    path = sim_file(tmp_path / "a.h5", 3)
    start, end = time.time(), time.time() + 10
    os.utime(path, (start - 60, start - 60))
    assert failed(verify_rest_v2(path, expected(3, started=start, ended=end)))["mtime"].endswith(", 60.0 s before the acquisition started: not written by it")
    os.utime(path, (end + 30, end + 30))
    assert failed(verify_rest_v2(path, expected(3, started=start, ended=end)))["mtime"].endswith(", 30.0 s after the acquisition ended: changed since")
    os.utime(path, (start - 1, start - 1))
    assert verify_rest_v2(path, expected(3, started=start, ended=end)).passed
    assert not verify_rest_v2(path, expected(3, started=start, ended=end), CheckOptions(clock_skew_s=0.5)).passed
    assert "mtime" not in reasons(verify_rest_v2(path, expected(3)))


def test_a_file_still_open_for_writing(tmp_path):
    """A file another process still holds open for writing (a writer that never closed it): readable fails, saying so."""
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        pytest.skip("HDF5 file locking is off in this environment")
    path = sim_file(tmp_path / "open.h5", 3)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import h5py, sys, time\nf = h5py.File({str(path)!r}, 'a')\nprint('open', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "open\n" == holder.stdout.readline()
        result = verify_rest_v2(path, expected(3))
        assert "still open for writing elsewhere (its HDF5 file lock is held): the writer has not closed it" == failed(result)["readable"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# -- a file system that does not answer ----------------------------------------------------------------


@contextmanager
def hung(path: Path) -> Iterator[None]:
    """Every open of ``path`` blocks while this lasts, as on a hung mount: another process holds a write lease on it."""
    code = (
        "import fcntl, os, signal, sys, time\n"
        "signal.signal(signal.SIGIO, signal.SIG_IGN)\n"
        f"fd = os.open({str(path)!r}, os.O_RDONLY)\n"
        "try:\n    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)\n"
        "except OSError as exc:\n    print('no lease', exc, flush=True)\n    sys.exit(0)\n"
        "print('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        if line != "held\n":
            pytest.skip(f"this file system gives no write leases: {line.strip()}")
        yield
    finally:
        holder.kill()  # the lease ends: the blocked open returns and its thread ends
        holder.wait()
        holder.stdout.close()


def test_a_file_system_that_does_not_answer_is_a_failed_check_in_bounded_time(tmp_path):
    """An open that blocks: the check fails after its timeout, and meanwhile another file is checked as usual."""
    path = sim_file(tmp_path / "hung.h5", 3)
    other = sim_file(tmp_path / "other.h5", 3)
    with hung(path):
        start = time.monotonic()
        result = verify_rest_v2(path, expected(3), CheckOptions(timeout=0.5))
        assert time.monotonic() - start < 2.0
        assert "no answer from the file system within 0.5 s while opening it (a hung network mount?)" == failed(result)["readable"]
        # The stuck reader holds no lock that other checks need.
        assert verify_rest_v2(other, expected(3), CheckOptions(timeout=5)).passed
        with pytest.raises(TimeoutError, match=r"hung.h5: no answer from the file system within 0.5 s while reading it for its checksum"):
            file_digest(path, timeout=0.5)


def test_the_bound_in_force_limits_and_cancels_a_check(tmp_path):
    """The step's time running out fails the check in hand; its cancel event raises Interrupted within a fraction of a second."""
    path = sim_file(tmp_path / "hung.h5", 3)
    with hung(path):
        with bounded(Deadline(0.3)):
            result = verify_rest_v2(path, expected(3), CheckOptions(timeout=30))
        assert "not checked in time: the time bound ran out while opening it" == failed(result)["readable"]
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        start = time.monotonic()
        with bounded(Deadline(cancel=cancel)), pytest.raises(Interrupted):
            verify_rest_v2(path, expected(3), CheckOptions(timeout=30))
        assert time.monotonic() - start < 0.6


# -- the driver generation -------------------------------------------------------------------------------


def test_an_acquisition_of_three_writers_passes(tmp_path):
    """10 images round-robin over 3 files (4, 3, 3), chunks trimmed on close: every check passes."""
    driver_acquisition(tmp_path, range(1000, 1010), 3)
    result = verify_driver(tmp_path, "scan_", 3, expected(10), CheckOptions(checksums=True))
    assert result.passed, result.failures
    assert [4, 3, 3] == [f.images for f in result.files]
    first = {c.name: c.reason for c in result.files[0].checks}
    assert "4 images of 16 x 32 pixels (round-robin gives this file 4 of 10)" == first["shape"]
    assert "every image's status is 0 (not set) or 1 (good)" == first["status"]
    assert "10 images, ids 1000 to 1009, none missing or repeated" == result.checks[0].reason


def test_a_file_of_one_image_keeps_its_padding(tmp_path):
    """4 images over 3 writers: two files got one image and keep a chunk of padding; that is fine and said."""
    driver_acquisition(tmp_path, [7, 8, 9, 10], 3)
    result = verify_driver(tmp_path, "scan_", 3, expected(4))
    assert result.passed, result.failures
    assert [2, 1, 1] == [f.images for f in result.files]
    metadata = [c.reason for c in result.files[1].checks if c.name == "metadata"]
    assert ["1 image in the metadata and 7 rows of padding (a file of one image keeps them)"] == metadata


def test_padding_in_a_file_of_several_images_means_it_was_not_closed(tmp_path):
    """A file of 3 images that still has its padding was never trimmed: the writer did not close it."""
    driver_acquisition(tmp_path, range(1, 7), 2, trim=False)
    result = verify_driver(tmp_path, "scan_", 2, expected(6))
    assert result.files[0].images == 3
    assert "3 images and 5 rows of padding: not trimmed on close (only a file of one image keeps its padding): the writer did not close it" == failed(result)["metadata"]


def test_an_image_lost_by_one_writer(tmp_path):
    """Writer 1 lost an image: its share is short and the acquisition's ids name the missing one."""
    ids = list(range(1, 11))
    driver_acquisition(tmp_path, ids, 2)
    driver_file(tmp_path / "scan_1.h5", [2, 4, 8, 10])
    result = verify_driver(tmp_path, "scan_", 2, expected(10))
    assert "4 images, round-robin gives this file 5 of 10" == failed(result)["shape"]
    assert "9 images, expected 10; 1 image id missing between 1 and 10: 6" == failed(result)["image_ids"]


def test_an_image_in_two_writers_files(tmp_path):
    """The same image id in file 0 and file 2: a repeat across the files of one acquisition."""
    driver_acquisition(tmp_path, range(1, 7), 3)
    driver_file(tmp_path / "scan_2.h5", [1, 6])
    result = verify_driver(tmp_path, "scan_", 3, expected(6))
    assert "1 repeated image id: 1; 1 image id missing between 1 and 6: 3" == failed(result)["image_ids"]


def test_a_writer_file_that_is_missing(tmp_path):
    """One writer never created its file: it is missing, and the acquisition's ids say a file could not be read."""
    driver_acquisition(tmp_path, range(1, 7), 2)
    (tmp_path / "scan_1.h5").unlink()
    result = verify_driver(tmp_path, "scan_", 2, expected(6))
    assert "missing" == failed(result)["readable"]
    assert "the image ids of 1 file could not be read; 3 images, expected 6; 2 image ids missing between 1 and 5: 2, 4" == failed(result)["image_ids"]


def test_a_hole_in_a_writers_metadata(tmp_path):
    """A zero image_id between images is not padding."""
    driver_file(tmp_path / "scan_0.h5", [1, 0, 3], trim=True)
    result = verify_driver(tmp_path, "scan_", 1, expected(3))
    assert "metadata row 1 has image_id 0 between images" == failed(result)["metadata"]


def test_driver_status_missing_packets(tmp_path):
    """Status 2 (missing packets) in the driver generation fails; a build that numbered good images 0 can say {0}."""
    driver_acquisition(tmp_path, range(1, 5), 2, status=2)
    result = verify_driver(tmp_path, "scan_", 2, expected(4))
    assert [
        f"{tmp_path / 'scan_0.h5'}: status: 2 of 2 images have a status other than 0 (not set) or 1 (good): 2 x 2 (missing packets); image ids 1, 3",
        f"{tmp_path / 'scan_1.h5'}: status: 2 of 2 images have a status other than 0 (not set) or 1 (good): 2 x 2 (missing packets); image ids 2, 4",
    ] == result.failures
    driver_acquisition(tmp_path, range(1, 5), 2, status=1)
    assert not verify_driver(tmp_path, "scan_", 2, expected(4), CheckOptions(accepted_status={0})).passed


def test_driver_files_are_named_as_the_writers_name_them(tmp_path):
    """<path>/<prefix><i>.h5 for i < W."""
    assert [str(tmp_path / "scan_0.h5"), str(tmp_path / "scan_1.h5")] == driver_files(tmp_path, "scan_", 2)
    with pytest.raises(ValueError, match="n_writers must be a whole number >= 1"):
        driver_files(tmp_path, "scan_", 0)


# -- checksums and the catalogue --------------------------------------------------------------------------


def test_checksums_are_streamed_in_flat_memory(tmp_path):
    """sha256 of a 32 MB file, read with little more than one block of memory."""
    path = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(32):
            f.write(block)
    tracemalloc.start()
    try:
        digest = file_digest(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (32 << 20, hashlib.sha256(block * 32).hexdigest()) == (digest.size, digest.sha256)
    assert peak < 3 << 20, peak
    assert {"path": str(path), "size": 32 << 20, "sha256": digest.sha256} == digest.to_json()
    with pytest.raises(OSError, match="nothing.bin: missing"):
        file_digest(tmp_path / "nothing.bin")


def test_manifest_lines_for_a_catalogue(tmp_path):
    """One JSON line per file: path, size, sha256, images, run id, config; keys in that order."""
    path = sim_file(tmp_path / "a.h5", 4)
    result = verify_rest_v2(path, expected(4), CheckOptions(checksums=True))
    (line,) = manifest_lines(result, run_id=1712345678, config=CONFIG)
    assert "\n" not in line
    entry = json.loads(line)
    assert ["path", "size", "sha256", "images", "run_id", "config"] == list(entry)
    assert (str(path), path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(), 4, 1712345678, CONFIG) == tuple(entry.values())
    assert {"path": "/x.h5", "size": None, "sha256": None, "images": None, "run_id": "r-1", "config": None} == json.loads(
        manifest_line("/x.h5", size=None, sha256=None, images=None, run_id="r-1", config=None)
    )
    with pytest.raises(ValueError, match="manifest line for /x.h5"):
        manifest_line("/x.h5", size=1, sha256=None, images=1, run_id=1, config={"gain": float("nan")})


# -- the caller's side ---------------------------------------------------------------------------------


def test_expected_from_a_config():
    """Numeric strings are taken as the DAQ takes them; a missing field or a bad count is one line."""
    assert 512 == Expected.from_config({**CONFIG, "image_pixel_width": "512"}, 1).image_pixel_width
    with pytest.raises(ValueError, match="^the config has no bit_depth$"):
        Expected.from_config({k: v for k, v in CONFIG.items() if k != "bit_depth"}, 1)
    with pytest.raises(ValueError, match="n_images must be a whole number >= 0"):
        expected(-1)
    with pytest.raises(ValueError, match="is before started"):
        expected(1, started=10.0, ended=5.0)
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        CheckOptions(timeout=0)
    for bad in ({-1}, {2**64}, {"0"}, set()):
        with pytest.raises(ValueError, match="accepted_status must be whole numbers from 0 to 2"):
            CheckOptions(accepted_status=bad)
    assert Layout.REST_V2 == verify_rest_v2("/nonexistent.h5", expected(1)).layout


def test_without_h5py_a_check_says_how_to_install_it(tmp_path):
    """Without h5py: the module imports, checksums work, a file check raises one line naming the install command."""
    (tmp_path / "f.bin").write_bytes(b"abc")
    code = (
        "from daq_runner.verify import Expected, VerifyExtraMissing, file_digest, verify_rest_v2\n"
        "print(file_digest('f.bin').sha256)\n"
        "try:\n    verify_rest_v2('f.bin', Expected('d', 1, 2, 2, 16))\n"
        "except VerifyExtraMissing as exc:\n    print(exc)\n"
    )
    proc = run_hidden(code, ["h5py"], tmp_path)
    assert 0 == proc.returncode, proc.stderr
    assert [hashlib.sha256(b"abc").hexdigest(), f"file checks need the verify extra: {VERIFY_EXTRA_HINT} (No module named 'h5py')"] == proc.stdout.splitlines()


def test_verify_modules_match_the_verify_extra_which_the_sim_extra_pulls():
    """VERIFY_MODULES lists exactly the verify extra's packages, and the sim extra brings them."""
    assert set(VERIFY_MODULES) == {r.name for r in sim_extra("3.12", extra="verify")}
    assert set(VERIFY_MODULES) <= {r.name for r in sim_extra("3.12")}
