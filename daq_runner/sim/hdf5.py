"""HDF5 files in the layout of the Standard DAQ writer, and synthetic detector frames."""

from __future__ import annotations

import functools
import time

import h5py
import numpy as np

__all__ = ["Hdf5Writer", "FrameSource", "frame_source", "DTYPES"]

DTYPES = {8: np.uint8, 16: np.uint16, 32: np.uint32}
METADATA_DTYPE = np.dtype([("image_id", "<u8"), ("status", "<u8")])
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
    """Writes one acquisition: ``/<detector_name>/data`` and ``/<detector_name>/metadata``.

    Images are appended as they arrive and flushed regularly, so an interrupted
    acquisition leaves a valid file holding the images written so far.
    """

    def __init__(self, path: str, config: dict, n_images: int) -> None:
        height, width = config["image_pixel_height"], config["image_pixel_width"]
        self._file = h5py.File(path, "w")
        group = self._file.create_group(config["detector_name"])
        self._data = group.create_dataset(
            "data",
            shape=(0, height, width),
            maxshape=(None, height, width),
            chunks=(1, height, width),
            dtype=DTYPES[config["bit_depth"]],
        )
        self._metadata = group.create_dataset(
            "metadata", shape=(0,), maxshape=(None,), chunks=(max(1, min(n_images, 4096)),), dtype=METADATA_DTYPE
        )
        self._data.attrs["n_images_requested"] = n_images
        self._last_flush = time.monotonic()

    def append(self, frames: np.ndarray, first_image_id: int) -> None:
        n = len(frames)
        if n == 0:
            return
        start = self._data.shape[0]
        self._data.resize(start + n, axis=0)
        self._data[start:] = frames
        meta = np.zeros(n, dtype=METADATA_DTYPE)
        meta["image_id"] = np.arange(first_image_id, first_image_id + n, dtype=np.uint64)
        self._metadata.resize(start + n, axis=0)
        self._metadata[start:] = meta
        if time.monotonic() - self._last_flush >= _FLUSH_EVERY_S:
            self._file.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
