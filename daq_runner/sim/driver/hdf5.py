"""One writer's HDF5 file in the layout of the current generation's ``std_det_writer``.

Group ``/<detector_name>/`` with

- ``data``: ``(n, image_pixel_height, image_pixel_width)`` of the bit depth's dtype, chunked
  ``gpfs_block_size // image size`` images per chunk and grown by whole chunks;
- ``metadata``: a compound dataset of ``image_id`` (uint64) and ``status`` (uint64),
  chunked ``gpfs_block_size // 16`` rows and grown by whole chunks.

On close both are trimmed to the images written, but only when at least two were: a file
that received a single image keeps its padding (rows with ``image_id`` 0), one that received
none keeps its empty datasets. The file is created with truncation.
"""

from __future__ import annotations

from typing import Any, Mapping

import h5py
import numpy as np

from ..hdf5 import DTYPES

__all__ = ["WriterFile", "METADATA_DTYPE", "DEFAULT_GPFS_BLOCK_SIZE"]

METADATA_DTYPE = np.dtype([("image_id", np.uint64), ("status", np.uint64)])
DEFAULT_GPFS_BLOCK_SIZE = 16 * 1024 * 1024


class WriterFile:
    """The file one writer writes during one acquisition.

    Args:
        path: the file (created or truncated).
        config: the DAQ config the writer runs with.

    Raises:
        OSError: the file cannot be created (a missing folder, no permission...).
        ValueError: "Unsupported bits per pixel: <N>" (the file is left, empty).
    """

    def __init__(self, path: str, config: Mapping[str, Any]) -> None:
        self.path = path
        height, width, bit_depth = int(config["image_pixel_height"]), int(config["image_pixel_width"]), int(config["bit_depth"])
        block = int(config.get("gpfs_block_size", DEFAULT_GPFS_BLOCK_SIZE))
        self._file = h5py.File(path, "w")
        try:
            group = self._file.create_group(str(config["detector_name"]))
            self._rows = max(block // METADATA_DTYPE.itemsize, 1)
            self._meta = group.create_dataset("metadata", shape=(0,), maxshape=(None,), chunks=(self._rows,), dtype=METADATA_DTYPE)
            if bit_depth not in DTYPES:
                raise ValueError(f"Unsupported bits per pixel: {bit_depth}")
            self._images = max(block // (height * width * bit_depth // 8), 1)
            self._data = group.create_dataset(
                "data", shape=(0, height, width), maxshape=(None, height, width), chunks=(self._images, height, width), dtype=DTYPES[bit_depth]
            )
        except BaseException:
            self._file.close()
            raise
        self.index = -1  # the last image written

    @property
    def n_written(self) -> int:
        return self.index + 1

    def append(self, frames: np.ndarray, image_ids: np.ndarray) -> None:
        """Write ``frames`` (n, height, width) with their detector ``image_ids``."""
        n = len(frames)
        if n == 0:
            return
        first, last = self.index + 1, self.index + n
        if last >= self._data.shape[0]:
            self._data.resize(-(-(last + 1) // self._images) * self._images, axis=0)
        if last + 1 > self._meta.shape[0]:
            self._meta.resize(((last + 1) // self._rows + 1) * self._rows, axis=0)
        self._data[first : last + 1] = frames
        rows = np.zeros(n, dtype=METADATA_DTYPE)
        rows["image_id"] = image_ids
        self._meta[first : last + 1] = rows
        self.index = last

    def close(self) -> None:
        """Trim (when at least two images were written) and close."""
        if not self._file.id.valid:
            return
        try:
            if self.index > 0:
                self._meta.resize(self.index + 1, axis=0)
                self._data.resize(self.index + 1, axis=0)
        finally:
            self._file.close()
