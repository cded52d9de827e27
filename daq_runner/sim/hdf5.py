"""HDF5 files in the layout of the Standard DAQ writer, and synthetic detector frames.

The layout is the C++ writer's (std_detector_buffer): group ``/<detector_name>/`` with

- ``data``: ``(n, image_pixel_height, image_pixel_width)`` of the bit depth's dtype,
  chunked one image per chunk;
- ``image_id`` and ``status``: contiguous 1-D ``uint64``, one value per image.

There is no compound ``metadata`` dataset. The file is opened with truncation: an
existing file of that name is overwritten without warning, as the real writer does.

For the file checks of a runner, a writer can be told to write a bad file while it
counts every image as written (the ``bad_file_next`` fault): ``"gap"`` leaves one image
out (a gap in ``image_id``), ``"truncated"`` ends every dataset half-way.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, List, Optional

import h5py
import numpy as np

__all__ = ["Hdf5Writer", "FrameSource", "frame_source", "DTYPES"]

DTYPES = {8: np.uint8, 16: np.uint16, 32: np.uint32}
_FLUSH_EVERY_S = 0.5


class FrameSource:
    """Frames that look like detector data: a noisy pedestal, a beam spot and a diffraction ring.

    A handful of frames is drawn once; each image is one of them, shifted a little, so a
    high frame rate costs no random numbers per image.
    """

    _N_BASE = 8

    def __init__(self, config: dict, seed: int = 12345) -> None:
        height, width = config["image_pixel_height"], config["image_pixel_width"]
        self.dtype = DTYPES[config["bit_depth"]]
        top = float(np.iinfo(self.dtype).max)
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        cy, cx = height / 2.0, width / 2.0
        r = np.hypot(y - cy, x - cx)
        scale = min(top, 4000.0)
        spot = 0.8 * scale * np.exp(-(r**2) / (2 * (0.02 * max(height, width)) ** 2))
        ring = 0.2 * scale * np.exp(-((r - 0.3 * min(height, width)) ** 2) / (2 * 2.0**2))
        base = 0.01 * scale + spot + ring
        self._frames = np.stack(
            [np.clip(rng.poisson(base).astype(np.float64), 0, top).astype(self.dtype) for _ in range(self._N_BASE)]
        )

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Images ``start`` .. ``stop - 1`` as an array ``(stop - start, height, width)``."""
        return self._frames[np.arange(start, stop) % self._N_BASE]


@functools.lru_cache(maxsize=8)
def _cached_source(height: int, width: int, bit_depth: int) -> "FrameSource":
    return FrameSource({"image_pixel_height": height, "image_pixel_width": width, "bit_depth": bit_depth})


def frame_source(config: dict) -> FrameSource:
    """The frame source of a config, drawn once per image size and bit depth (drawing takes ~20 ms)."""
    return _cached_source(config["image_pixel_height"], config["image_pixel_width"], config["bit_depth"])


class Hdf5Writer:
    """Writes one acquisition into ``path`` (created, or truncated when it exists).

    Args:
        path: output file; ``OSError`` when it cannot be created (no permission, a folder...).
        config: the DAQ config (``detector_name``, ``image_pixel_height``/``width``).
        bit_depth: 8, 16 or 32; any other value (``None``) leaves the file empty: the writer
            fails such a run when it opens it, after it created the file.
        n_images: the images of the run (where a bad file's damage lies).
        bad_file: ``None``, or ``"gap"`` (the image at ``n_images // 2`` is left out, its
            image_id skipped) or ``"truncated"`` (only the first ``n_images // 2`` images
            are kept); :meth:`append` takes every image all the same.

    Images are appended as they arrive and flushed every 0.5 s, so ``data`` of an
    interrupted acquisition holds the images written so far. ``image_id`` and
    ``status`` are contiguous datasets, which HDF5 cannot grow: they are written once,
    at :meth:`close`, with one value per image written.
    """

    def __init__(self, path: str, config: dict, bit_depth: Optional[int], n_images: int = 0, bad_file: Optional[str] = None) -> None:
        if bad_file not in (None, "gap", "truncated"):
            raise ValueError(f"unknown bad_file {bad_file!r}")
        self._file = h5py.File(path, "w")
        self._ids: List[np.ndarray] = []
        self._received = 0  # images handed to append(), kept or not
        self._keep = _kept_images(n_images, bad_file)
        self._group = None
        self._data = None
        self.supported = bit_depth in DTYPES
        if not self.supported:
            return
        height, width = config["image_pixel_height"], config["image_pixel_width"]
        try:
            self._group = self._file.create_group(str(config["detector_name"]))
            self._data = self._group.create_dataset(
                "data",
                shape=(0, height, width),
                maxshape=(None, height, width),
                chunks=(1, height, width),
                dtype=DTYPES[bit_depth],
            )
        except BaseException:
            self._file.close()
            raise
        self._last_flush = time.monotonic()

    @property
    def n_written(self) -> int:
        return 0 if self._data is None else int(self._data.shape[0])

    def append(self, frames: np.ndarray, first_image_id: int) -> None:
        """Append ``frames`` (n, height, width) with the detector's image ids from ``first_image_id``."""
        n = len(frames)
        ids = np.arange(first_image_id, first_image_id + n, dtype=np.uint64)
        if self._keep is not None:
            kept = self._keep(np.arange(self._received, self._received + n))
            frames, ids = frames[kept], ids[kept]
        self._received += n
        n = len(ids)
        if n == 0 or self._data is None:
            return
        start = self._data.shape[0]
        self._data.resize(start + n, axis=0)
        self._data[start:] = frames
        self._ids.append(ids)
        if time.monotonic() - self._last_flush >= _FLUSH_EVERY_S:
            self._file.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        """Write ``image_id`` and ``status`` (contiguous, one value per image) and close the file."""
        if not self._file.id.valid:
            return
        try:
            if self._group is not None:
                ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.uint64)
                # No chunks= and no maxshape: h5py stores these contiguously, as the writer does.
                self._group.create_dataset("image_id", data=ids, dtype=np.uint64)
                self._group.create_dataset("status", data=np.zeros(len(ids), dtype=np.uint64), dtype=np.uint64)
        finally:
            self._file.close()


def _kept_images(n_images: int, bad_file: Optional[str]) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """Which of the run's image indices a bad file keeps (``None``: all of them)."""
    if bad_file == "gap":
        return lambda index: index != n_images // 2
    if bad_file == "truncated":
        return lambda index: index < n_images // 2
    return None
