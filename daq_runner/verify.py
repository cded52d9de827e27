"""Check the HDF5 files a Standard DAQ wrote: is every image of an acquisition there?

The DAQ saying FINISHED with every image written is not the file: a partial file, an old file
of the same name, a file of another detector after a reconfiguration all look the same from
the DAQ's log. The file is usually visible on the machine that drove the write; these checks
open it (h5py and numpy, loaded lazily: the ``verify`` extra, ``pip install 'daq-runner[verify]'``).

Layouts (:class:`Layout`), one per DAQ generation:

- ``rest_v2``: one file per acquisition; ``/<detector_name>/data`` ``(n, height, width)`` of the
  bit depth's dtype, and contiguous 1-D ``uint64`` ``image_id`` and ``status``, one value per
  image. The real writer allocates ``image_id`` and ``status`` for every image requested at
  the start and leaves the rows of images that never came at 0 (an interrupted acquisition);
- ``driver`` (the current generation, std_det_driver): one file per writer,
  ``<path>/<file_prefix><i>.h5`` for i = 0 .. W-1, the k-th image in file k mod W; each with
  ``/<detector_name>/data`` and ``/<detector_name>/metadata``, a compound of ``image_id`` and
  ``status`` (``uint64``). Datasets grow by whole chunks and are trimmed when the writer closes
  the file, except a file that received a single image, which keeps its padding: images are
  the metadata rows with a non-zero ``image_id``.

Checks (each a :class:`Check` with a one-line reason); per file: ``readable``, ``layout``,
``shape``, ``dtype``, ``metadata``, ``status``, ``mtime`` (when the caller gives the
acquisition's window), ``checksum`` (with ``CheckOptions(checksums=True)``); per acquisition: ``image_ids``
(every image present once, no gap, no repeat, across the W files together). A check that
cannot be made because an earlier one failed is left out; the earlier one says why.

Nothing about a file raises: a missing, truncated, non-HDF5 or still-open file, or a file
system that does not answer (a hung network mount: each operation is bounded by
``CheckOptions.timeout``)
is a failed ``readable`` check. What raises: :class:`VerifyExtraMissing` (h5py or numpy not
installed), ``ValueError`` for arguments of the wrong kind, and
:class:`~daq_runner._deadline.Interrupted` when the cancel event of the bound in force
(:func:`daq_runner._deadline.bounded`) is set; a bound that runs out fails the check in hand.

Example::

    expected = Expected.from_config(config, n_images=100, started=t_request, ended=t_finished)
    result = verify_rest_v2("/data/e12345/scan_001.h5", expected, CheckOptions(checksums=True))
    if not result.passed:
        print(result.reason)
    for line in manifest_lines(result, run_id=run_id, config=config):
        catalogue.write(line + "\\n")
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from . import _deadline
from ._text import one_line
from .exceptions import DaqRunnerError

__all__ = [
    "Layout",
    "Expected",
    "CheckOptions",
    "Check",
    "FileResult",
    "Verification",
    "FileDigest",
    "VerifyExtraMissing",
    "verify_rest_v2",
    "verify_driver",
    "driver_files",
    "file_digest",
    "manifest_line",
    "manifest_lines",
    "require_verify_extra",
    "ACCEPTED_STATUS",
    "CLOCK_SKEW_S",
    "FILE_TIMEOUT_S",
    "PIXEL_DTYPES",
    "VERIFY_EXTRA_HINT",
    "VERIFY_MODULES",
]

VERIFY_EXTRA_HINT = "pip install 'daq-runner[verify]'"
# The import names of the ``verify`` extra in pyproject.toml (tests/test_verify.py keeps them in step).
VERIFY_MODULES = ("h5py", "numpy")

# The writer's pixel types by bit depth (any other depth fails the acquisition before its first image).
PIXEL_DTYPES: Mapping[int, str] = {8: "uint8", 16: "uint16", 32: "uint32"}

# How far a file's modification time may lie outside the acquisition's window. The DAQ's
# writer and the file server set it by their clocks, we judge it by ours: hosts kept by NTP
# agree within milliseconds, and some file systems store whole seconds (ext3, HFS+, NFS
# servers that round), so 2 s covers both; a stale file of an earlier run is usually minutes
# old, and a retry of the same file comes at least a second after the failed attempt's end.
CLOCK_SKEW_S = 2.0

# The longest one file-system operation may take (a stat, an open, a read of 1 MiB or of a
# slice of metadata) before the file counts as unreachable: a local disk answers in
# milliseconds, a healthy network mount well under a second; a hung one never.
FILE_TIMEOUT_S = 10.0


class Layout(str, Enum):
    """The file layout of a DAQ generation."""

    REST_V2 = "rest_v2"
    DRIVER = "driver"


# Which ``status`` values mean a good image, and why:
# - rest_v2's writer stores the receiver's status as it was then: 0 good_image, 1
#   missing_packets, 2 id_missmatch. Only 0 is a complete image.
# - the driver generation's proto enum became 0 undefined, 1 good_image, 2 missing_packets,
#   3 id_missmatch in July 2024 (before that it was rest_v2's numbering); receivers that never
#   set a status leave 0. 0 and 1 are accepted; a site on a build of April to July 2024, where
#   1 meant missing packets, passes ``CheckOptions(accepted_status={0})``.
ACCEPTED_STATUS: Mapping[Layout, FrozenSet[int]] = {
    Layout.REST_V2: frozenset({0}),
    Layout.DRIVER: frozenset({0, 1}),
}
_STATUS_NAMES: Mapping[Layout, Mapping[int, str]] = {
    Layout.REST_V2: {0: "good", 1: "missing packets", 2: "image id mismatch"},
    Layout.DRIVER: {0: "not set", 1: "good", 2: "missing packets", 3: "image id mismatch"},
}

_HASH_BLOCK = 1 << 20  # bytes read at a time for sha256: memory stays flat whatever the file size
_ROWS = 1 << 20  # metadata rows read at a time (8-16 MiB), so that a slow read still shows progress
_SHOWN = 5  # image ids named in a reason, at most
_POLL_S = 0.05  # how often a wait looks at the cancel event and the bound, at most
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# The dataset that holds each layout's image ids.
_METADATA: Mapping[Layout, str] = {Layout.REST_V2: "image_id", Layout.DRIVER: "metadata"}


class VerifyExtraMissing(DaqRunnerError, ImportError):
    """h5py or numpy cannot be imported; the message says what to install."""


def require_verify_extra() -> None:
    """Import h5py and numpy, or say in one line how to install them.

    Call it before the first request of a run that will check files, so that a missing
    extra is a usage error at the start, not a failure after the acquisitions.

    Raises:
        VerifyExtraMissing: ``file checks need the verify extra: pip install
            'daq-runner[verify]' (No module named 'h5py')``.
    """
    for name in VERIFY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise VerifyExtraMissing(f"file checks need the verify extra: {VERIFY_EXTRA_HINT} ({exc})", name=name) from exc


def _h5py() -> Any:
    require_verify_extra()
    import h5py

    return h5py


def _np() -> Any:
    require_verify_extra()
    import numpy

    return numpy


# -- what the caller knows, what the checks say -------------------------------------------------


def _whole(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, not {value!r}")
    return value


def _seconds(name: str, value: Any, *, positive: bool = False, optional: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number of seconds {'>' if positive else '>='} 0, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Expected:
    """What an acquisition should have written, from what the caller knows.

    Attributes:
        detector_name: the config's ``detector_name``: the group the data is in.
        n_images: images the acquisition must hold: the ``n_images`` requested for a complete
            write (or the DAQ's ``n_write_completed``, the driver's last count, to check a
            partial file against what the DAQ said).
        image_pixel_height, image_pixel_width: image size in pixels, from the config.
        bit_depth: the config's ``bit_depth`` the write ran with (8, 16, 32: ``uint8/16/32``).
        started: ``time.time()`` when the write was requested (``None``: not checked).
        ended: ``time.time()`` when its end was seen (``None``: not checked).
    """

    detector_name: str
    n_images: int
    image_pixel_height: int
    image_pixel_width: int
    bit_depth: int
    started: Optional[float] = None
    ended: Optional[float] = None

    def __post_init__(self) -> None:
        if not isinstance(self.detector_name, str) or not self.detector_name or "/" in self.detector_name:
            raise ValueError(f"detector_name must be a non-empty name without '/', not {self.detector_name!r}")
        _whole("n_images", self.n_images, 0)
        _whole("image_pixel_height", self.image_pixel_height, 1)
        _whole("image_pixel_width", self.image_pixel_width, 1)
        _whole("bit_depth", self.bit_depth, 1)
        started = _seconds("started", self.started, optional=True)
        ended = _seconds("ended", self.ended, optional=True)
        if started is not None and ended is not None and ended < started:
            raise ValueError(f"ended ({ended}) is before started ({started})")

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], n_images: int, *, started: Optional[float] = None, ended: Optional[float] = None
    ) -> "Expected":
        """From a DAQ config (``detector_name``, ``image_pixel_height``/``width``, ``bit_depth``).

        Integer fields given as numeric strings (as the DAQ accepts them) are converted.

        Raises:
            ValueError: a field is missing or not a whole number.
        """
        values: Dict[str, Any] = {}
        for name in ("detector_name", "image_pixel_height", "image_pixel_width", "bit_depth"):
            if name not in config:
                raise ValueError(f"the config has no {name}")
            value = config[name]
            if name != "detector_name" and isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            values[name] = value
        return cls(n_images=n_images, started=started, ended=ended, **values)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Check:
    """One check: its name (``readable``, ``layout``, ``shape``, ``dtype``, ``metadata``,
    ``status``, ``mtime``, ``checksum``, ``image_ids``), whether it passed, and why (one line)."""

    name: str
    passed: bool
    reason: str

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FileResult:
    """The checks of one file.

    Attributes:
        path: the file, as given.
        checks: the checks made, in order.
        images: images found in it (``None``: not readable as the layout).
        size: its size in bytes (``None``: not found); with checksums, the bytes hashed.
        sha256: hex digest (``None`` unless checksums were asked for and read).
        mtime: its modification time, ``time.time()`` scale (``None``: not found).
    """

    path: str
    checks: Tuple[Check, ...]
    images: Optional[int] = None
    size: Optional[int] = None
    sha256: Optional[str] = None
    mtime: Optional[float] = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_json(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "passed": self.passed,
            "images": self.images,
            "size": self.size,
            "sha256": self.sha256,
            "mtime": self.mtime,
            "checks": [check.to_json() for check in self.checks],
        }


@dataclass(frozen=True)
class Verification:
    """The checks of one acquisition's files.

    Attributes:
        layout: the layout checked against.
        expected: what the acquisition should have written.
        files: one result per file (rest_v2: one; driver: W, in writer order).
        checks: the checks across the files (``image_ids``).
    """

    layout: Layout
    expected: Expected
    files: Tuple[FileResult, ...]
    checks: Tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.files) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> List[str]:
        """Every failed check as ``"<path>: <name>: <reason>"`` (``"<name>: <reason>"`` across files)."""
        found = [f"{f.path}: {c.name}: {c.reason}" for f in self.files for c in f.checks if not c.passed]
        return found + [f"{c.name}: {c.reason}" for c in self.checks if not c.passed]

    @property
    def reason(self) -> str:
        """One line: the first failure (and how many more), or what passed."""
        failures = self.failures
        if failures:
            more = len(failures) - 1
            return failures[0] + (f" (and {more} more failed check{'s' if more != 1 else ''})" if more else "")
        images = sum(f.images or 0 for f in self.files)
        return f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}, {images} images: every check passed"

    def to_json(self) -> Dict[str, Any]:
        return {
            "layout": self.layout.value,
            "passed": self.passed,
            "reason": self.reason,
            "expected": self.expected.to_json(),
            "files": [f.to_json() for f in self.files],
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass(frozen=True)
class FileDigest:
    """Size in bytes and sha256 (hex) of a file, as read."""

    path: str
    size: int
    sha256: str

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# -- reading a file, bounded -----------------------------------------------------------------------


class _Unreadable(Exception):
    """A file could not be read; the message is the reason (one line)."""


class _NoAnswer(_Unreadable):
    """The file system did not answer in time (or the bound in force ran out)."""


class _Watch:
    """What a reader thread is doing and when it last got an answer from the file system."""

    def __init__(self) -> None:
        self.doing = "looking it up"
        self.last = time.monotonic()
        self.done = threading.Event()

    def tick(self, doing: Optional[str] = None) -> None:
        if doing is not None:
            self.doing = doing
        self.last = time.monotonic()


def _bounded(work: Callable[[_Watch], Any], timeout: float) -> Any:
    """``work(watch)`` in a thread of its own; its result, or :class:`_Unreadable` when the file
    system stops answering for ``timeout`` seconds or the bound in force runs out.

    A read from a hung network mount blocks in the kernel and cannot be interrupted: the
    thread is left behind (a daemon) and the caller goes on. Raises ``Interrupted`` when the
    bound's cancel event is set.
    """
    bound = _deadline.current()
    watch = _Watch()
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work(watch)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            watch.done.set()

    threading.Thread(target=run, name="daq-runner-verify", daemon=True).start()
    while True:
        stalled = watch.last + timeout
        wait = min(_POLL_S, max(stalled - time.monotonic(), 0.0), bound.remaining())
        if watch.done.wait(wait):
            break
        bound.check()
        if bound.expired:
            raise _NoAnswer(f"not checked in time: the time bound ran out while {watch.doing}")
        if time.monotonic() >= watch.last + timeout:
            raise _NoAnswer(f"no answer from the file system within {timeout:g} s while {watch.doing} (a hung network mount?)")
    if "error" in box:
        raise box["error"]
    return box["result"]


def _os_reason(exc: OSError) -> str:
    return one_line(exc.strerror or exc)


_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


def _hdf5_reason(exc: Exception) -> str:
    """h5py's error as a reason a user can act on."""
    text = str(exc)
    truncated = _TRUNCATED.search(text)
    if truncated:
        return f"truncated HDF5 file: {truncated.group(1)} of its {truncated.group(2)} bytes are there"
    if "file signature not found" in text:
        return "not an HDF5 file"
    if isinstance(exc, BlockingIOError) or "errno = 11" in text:
        return "still open for writing elsewhere (its HDF5 file lock is held): the writer has not closed it"
    return f"unreadable as HDF5: {one_line(text)}"


def _stat_regular(path: str) -> os.stat_result:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        raise _Unreadable("missing") from None
    except OSError as exc:
        raise _Unreadable(f"cannot be looked up: {_os_reason(exc)}") from None
    if not stat.S_ISREG(found.st_mode):
        kind = "a folder" if stat.S_ISDIR(found.st_mode) else "a pipe" if stat.S_ISFIFO(found.st_mode) else "a special file"
        raise _Unreadable(f"not a regular file: {kind}")
    return found


def _sha256(path: str, watch: _Watch) -> Tuple[int, str]:
    """Bytes and sha256 of ``path``, read in blocks of 1 MiB; ``OSError`` as it comes."""
    digest = hashlib.sha256()
    size = 0
    watch.tick("reading it for its checksum")
    with open(path, "rb", buffering=0) as f:
        while True:
            block = f.read(_HASH_BLOCK)
            watch.tick()
            if not block:
                return size, digest.hexdigest()
            size += len(block)
            digest.update(block)


def file_digest(path: Union[str, "os.PathLike[str]"], *, timeout: float = FILE_TIMEOUT_S) -> FileDigest:
    """Size and sha256 of a file, streamed (memory stays flat whatever its size).

    Args:
        path: a regular file.
        timeout: the longest one read may take (a hung network mount), in seconds.

    Raises:
        OSError: missing, not a regular file, unreadable; ``TimeoutError`` when the file system
            does not answer within ``timeout`` or the bound in force runs out. The message is
            one line naming the file.
        Interrupted: the bound's cancel event was set.
    """
    path = os.fspath(path)
    timeout = _seconds("timeout", timeout, positive=True)

    def work(watch: _Watch) -> Tuple[int, str]:
        _stat_regular(path)
        try:
            return _sha256(path, watch)
        except OSError as exc:
            raise _Unreadable(f"unreadable: {_os_reason(exc)}") from None

    try:
        size, sha256 = _bounded(work, timeout)
    except _Unreadable as exc:
        raise (TimeoutError if isinstance(exc, _NoAnswer) else OSError)(f"{path}: {exc}") from None
    return FileDigest(path, size, sha256)


@dataclass
class _Facts:
    """What was read from one file (filled by the reader thread, judged by :func:`_judge_file`)."""

    path: str
    error: Optional[str] = None  # unreadable: why
    size: Optional[int] = None
    mtime: Optional[float] = None
    hashed: Optional[Tuple[int, str]] = None  # (bytes, sha256)
    hash_error: Optional[str] = None
    size_after: Optional[int] = None  # st_size once read: a file that grows or shrinks meanwhile
    groups: Tuple[str, ...] = ()
    members: Tuple[str, ...] = ()  # names in /<detector_name>
    data_shape: Optional[Tuple[int, ...]] = None
    data_dtype: Optional[str] = None
    ids: Any = None  # numpy uint64 array: rest_v2's image_id, or metadata["image_id"]
    status: Any = None
    metadata_problem: Optional[str] = None


def _open_hdf5(h5py: Any, path: str) -> Any:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        text = str(exc)
        if "unable to lock file" in text and not isinstance(exc, BlockingIOError) and "errno = 11" not in text:
            # File locking not supported here (some NFS and parallel file systems): read unlocked.
            return h5py.File(path, "r", locking=False)
        raise


def _read_rows(dataset: Any, watch: _Watch) -> Any:
    np = _np()
    parts = []
    for start in range(0, dataset.shape[0], _ROWS):
        parts.append(dataset[start : start + _ROWS])
        watch.tick()
    return np.concatenate(parts) if parts else dataset[()]


def _read_metadata(layout: Layout, group: Any, facts: _Facts, watch: _Watch) -> None:
    """The image ids and statuses of the layout, or ``facts.metadata_problem``."""
    h5py, np = _h5py(), _np()
    watch.tick("reading its image ids")
    if layout is Layout.REST_V2:
        for name in ("image_id", "status"):
            item = group.get(name)
            if not isinstance(item, h5py.Dataset) or item.ndim != 1 or item.dtype.kind not in "ui":
                facts.metadata_problem = f"/{group.name.strip('/')}/{name} is not a 1-D integer dataset"
                return
        facts.ids = _read_rows(group["image_id"], watch).astype(np.uint64, copy=False)
        facts.status = _read_rows(group["status"], watch).astype(np.uint64, copy=False)
        return
    item = group.get("metadata")
    names = item.dtype.names if isinstance(item, h5py.Dataset) else None
    if not names or item.ndim != 1 or not {"image_id", "status"} <= set(names):
        facts.metadata_problem = f"/{group.name.strip('/')}/metadata is not a 1-D compound of image_id and status"
        return
    rows = _read_rows(item, watch)
    facts.ids = np.asarray(rows["image_id"], dtype=np.uint64)
    facts.status = np.asarray(rows["status"], dtype=np.uint64)


def _read_file(layout: Layout, path: str, detector_name: str, checksums: bool, watch: _Watch) -> _Facts:
    """Everything the checks need from ``path``, in the reader thread; never raises for the file."""
    h5py = _h5py()
    facts = _Facts(path)
    try:
        found = _stat_regular(path)
        facts.size, facts.mtime = found.st_size, found.st_mtime
        if checksums:
            try:
                facts.hashed = _sha256(path, watch)
            except OSError as exc:
                facts.hash_error = f"unreadable: {_os_reason(exc)}"
        # Open and read the first bytes without h5py: a mount that hangs then hangs here,
        # outside the HDF5 library's lock, which every other h5py user of the process needs.
        watch.tick("opening it")
        try:
            with open(path, "rb") as f:
                head = f.read(len(_HDF5_MAGIC))
        except OSError as exc:
            raise _Unreadable(f"cannot be opened: {_os_reason(exc)}") from None
        watch.tick()
        if not head:
            raise _Unreadable("empty (0 bytes): not an HDF5 file")
        try:
            handle = _open_hdf5(h5py, path)
        except OSError as exc:
            raise _Unreadable(_hdf5_reason(exc)) from None
        try:
            with handle:
                watch.tick("reading its layout")
                facts.groups = tuple(sorted(handle.keys()))
                group = handle.get(detector_name)
                if isinstance(group, h5py.Group):
                    facts.members = tuple(sorted(group.keys()))
                    data = group.get("data")
                    if isinstance(data, h5py.Dataset):
                        facts.data_shape = tuple(int(n) for n in data.shape)
                        facts.data_dtype = str(data.dtype)
                    if _METADATA[layout] in facts.members:
                        _read_metadata(layout, group, facts, watch)
        except Exception as exc:  # whatever a damaged file makes h5py raise
            raise _Unreadable(f"damaged HDF5 file: {one_line(exc)}") from None
        facts.size_after = os.stat(path).st_size
    except _Unreadable as exc:
        facts.error = str(exc)
    except OSError as exc:
        facts.error = f"unreadable: {_os_reason(exc)}"
    return facts


# -- judging what was read ---------------------------------------------------------------------------


def _ids_text(ids: Sequence[int], total: Optional[int] = None) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:_SHOWN])
    total = len(ids) if total is None else total
    return shown + (f" and {total - min(len(ids), _SHOWN)} more" if total > _SHOWN else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class _Judged:
    """The checks of one file so far, and its images as the acquisition-wide check takes them."""

    def __init__(self) -> None:
        self.checks: List[Check] = []
        self.images: Optional[int] = None
        self.image_ids: Any = None  # numpy: the id of each image, or None when they cannot be told
        self.statuses: Any = None  # numpy: the status of each image, aligned with image_ids

    def add(self, name: str, passed: bool, reason: str) -> bool:
        self.checks.append(Check(name, passed, reason))
        return passed


def _layout_check(layout: Layout, facts: _Facts, expected: Expected, judged: _Judged) -> bool:
    name = expected.detector_name
    if name not in facts.groups:
        held = ", ".join(f"/{g}" for g in facts.groups[:_SHOWN]) or "nothing"
        return judged.add("layout", False, f"no group /{name}: the file holds {held}")
    if facts.data_shape is None:
        return judged.add("layout", False, f"no dataset /{name}/data")
    other = Layout.DRIVER if layout is Layout.REST_V2 else Layout.REST_V2
    members = set(facts.members)
    if _METADATA[layout] not in members:
        if _METADATA[other] in members:
            return judged.add("layout", False, f"a file of the {other.value} layout (/{name}/{_METADATA[other]}), not {layout.value}")
        return judged.add("layout", False, f"no /{name}/{_METADATA[layout]}")
    if layout is Layout.REST_V2 and "status" not in members:
        return judged.add("layout", False, f"no /{name}/status")
    if facts.metadata_problem:
        return judged.add("layout", False, facts.metadata_problem)
    detail = "data, image_id and status" if layout is Layout.REST_V2 else "data and metadata"
    return judged.add("layout", True, f"{layout.value}: /{name}/ with {detail}")


def _metadata_rest_v2(facts: _Facts, judged: _Judged) -> None:
    """rest_v2: the data's rows are the images; image_id and status need one value for each.

    The real writer allocates both for every image requested and leaves the rows of images
    that never came at 0: rows after the data's are accepted when they are 0.
    """
    np = _np()
    rows = judged.images
    n_ids, n_status = len(facts.ids), len(facts.status)
    if n_ids != n_status:
        judged.add("metadata", False, f"image_id has {n_ids} values, status {n_status}")
    elif n_ids < rows:
        judged.add("metadata", False, f"image_id and status have {n_ids} values for {_plural(rows, 'image')}")
    elif n_ids > rows and np.any(facts.ids[rows:]):
        judged.add("metadata", False, f"image_id has {n_ids} values for {_plural(rows, 'image')}, and those after them are not 0")
    else:
        unwritten = n_ids - rows
        note = f" (the {unwritten} allocated after them are 0: never written)" if unwritten else ""
        judged.add("metadata", True, f"one image_id and status per image{note}")
        judged.image_ids, judged.statuses = facts.ids[:rows], facts.status[:rows]


def _metadata_driver(facts: _Facts, judged: _Judged) -> None:
    """Driver generation: the images are the metadata rows with a non-zero image_id.

    The writer grows its datasets by whole chunks and trims them on close, except when the
    file received a single image: only such a file may keep rows of padding (image_id 0).
    """
    np = _np()
    filled = np.flatnonzero(facts.ids)
    images = judged.images = len(filled)
    judged.image_ids, judged.statuses = facts.ids[filled], facts.status[filled]
    rows, data_rows = len(facts.ids), facts.data_shape[0] if facts.data_shape else 0
    if images and int(filled[-1]) != images - 1:
        hole = int(np.flatnonzero(facts.ids[:images] == 0)[0])
        judged.add("metadata", False, f"metadata row {hole} has image_id 0 between images")
    elif data_rows < images:
        judged.add("metadata", False, f"data has {data_rows} rows for {_plural(images, 'image')} in the metadata")
    elif images >= 2 and (rows != images or data_rows != images):
        padding = max(rows, data_rows) - images
        judged.add(
            "metadata",
            False,
            f"{_plural(images, 'image')} and {padding} rows of padding: not trimmed on close "
            "(only a file of one image keeps its padding): the writer did not close it",
        )
    else:
        padding = max(rows, data_rows) - images
        note = f" and {padding} rows of padding (a file of one image keeps them)" if padding else ""
        judged.add("metadata", True, f"{_plural(images, 'image')} in the metadata{note}")


def _shape_check(facts: _Facts, expected: Expected, share: int, n_files: int, judged: _Judged) -> bool:
    shape = facts.data_shape
    if len(shape) != 3:
        return judged.add("shape", False, f"data has shape {shape}, not (images, height, width)")
    size = (expected.image_pixel_height, expected.image_pixel_width)
    if tuple(shape[1:]) != size:
        return judged.add("shape", False, f"images of {shape[1]} x {shape[2]} pixels, expected {size[0]} x {size[1]}")
    images = shape[0] if judged.images is None else judged.images
    whose = f"expected {share}" if n_files == 1 else f"round-robin gives this file {share} of {expected.n_images}"
    if images != share:
        return judged.add("shape", False, f"{_plural(images, 'image')}, {whose}")
    return judged.add("shape", True, f"{_plural(images, 'image')} of {size[0]} x {size[1]} pixels" + ("" if n_files == 1 else f" ({whose})"))


def _dtype_check(facts: _Facts, expected: Expected, judged: _Judged) -> None:
    wanted = PIXEL_DTYPES.get(expected.bit_depth)
    if wanted is None:
        judged.add("dtype", False, f"bit depth {expected.bit_depth} has no pixel type: the writer takes 8, 16 or 32")
    elif facts.data_dtype != wanted:
        judged.add("dtype", False, f"data is {facts.data_dtype}, the write ran at {expected.bit_depth} bits ({wanted})")
    else:
        judged.add("dtype", True, f"{wanted}, as {expected.bit_depth} bits")


def _status_check(layout: Layout, accepted: FrozenSet[int], judged: _Judged) -> None:
    np = _np()
    names = _STATUS_NAMES[layout]

    def named(value: int) -> str:
        return f"{value} ({names[value]})" if value in names else str(value)

    good = " or ".join(named(v) for v in sorted(accepted))
    statuses = judged.statuses
    bad = np.ones(len(statuses), dtype=bool)
    for value in accepted:  # a handful of values: faster than np.isin
        bad &= statuses != np.uint64(value)
    n_bad = int(np.count_nonzero(bad))
    if not n_bad:
        judged.add("status", True, f"every image's status is {good}" if len(statuses) else "no images")
        return
    values, counts = np.unique(statuses[bad], return_counts=True)
    kinds = ", ".join(f"{int(c)} x {named(int(v))}" for v, c in zip(values[:_SHOWN], counts[:_SHOWN]))
    ids = judged.image_ids[bad][:_SHOWN]
    judged.add("status", False, f"{n_bad} of {len(statuses)} images have a status other than {good}: {kinds}; image ids {_ids_text(ids, n_bad)}")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _mtime_check(facts: _Facts, expected: Expected, skew: float, judged: _Judged) -> None:
    if expected.started is None and expected.ended is None:
        return
    mtime = facts.mtime
    if expected.started is not None and mtime < expected.started - skew:
        judged.add("mtime", False, f"last modified {_when(mtime)}, {expected.started - mtime:.1f} s before the acquisition started: not written by it")
    elif expected.ended is not None and mtime > expected.ended + skew:
        judged.add("mtime", False, f"last modified {_when(mtime)}, {mtime - expected.ended:.1f} s after the acquisition ended: changed since")
    else:
        judged.add("mtime", True, f"last modified {_when(mtime)}, within the acquisition's window (+-{skew:g} s)")


def _checksum_check(facts: _Facts, judged: _Judged) -> None:
    if facts.hash_error:
        judged.add("checksum", False, facts.hash_error)
        return
    hashed, sha256 = facts.hashed
    if hashed != facts.size or (facts.size_after is not None and facts.size_after != facts.size):
        after = "" if facts.size_after is None else f", then {facts.size_after}"
        judged.add("checksum", False, f"the file changed while it was read ({facts.size} bytes, {hashed} read{after})")
        return
    judged.add("checksum", True, f"sha256 {sha256} of {hashed} bytes")


def _judge_file(layout: Layout, facts: _Facts, expected: Expected, share: int, n_files: int, options: "CheckOptions") -> Tuple[FileResult, _Judged]:
    judged = _Judged()
    if facts.error:
        judged.add("readable", False, facts.error)
    else:
        judged.add("readable", True, f"HDF5, {facts.size} bytes")
        if _layout_check(layout, facts, expected, judged):
            if layout is Layout.REST_V2:
                judged.images = facts.data_shape[0] if len(facts.data_shape) == 3 else None
            if judged.images is not None or layout is Layout.DRIVER:
                (_metadata_rest_v2 if layout is Layout.REST_V2 else _metadata_driver)(facts, judged)
            _shape_check(facts, expected, share, n_files, judged)
            _dtype_check(facts, expected, judged)
            if judged.statuses is not None:
                _status_check(layout, options.accepted(layout), judged)
        _mtime_check(facts, expected, options.clock_skew_s, judged)
    if facts.hashed is not None or facts.hash_error:
        _checksum_check(facts, judged)
    sha256 = facts.hashed[1] if facts.hashed else None
    size = facts.hashed[0] if facts.hashed else facts.size
    return FileResult(facts.path, tuple(judged.checks), judged.images, size, sha256, facts.mtime), judged


def _image_ids_check(id_arrays: List[Any], unread: int, expected: Expected) -> Check:
    """Every image present once: the ids of all files together, no gap, no repeat, the right count."""
    np = _np()
    ids = np.sort(np.concatenate(id_arrays)) if id_arrays else np.zeros(0, dtype=np.uint64)
    count = len(ids)
    problems = []
    if unread:
        problems.append(f"the image ids of {_plural(unread, 'file')} could not be read")
    if count != expected.n_images:
        problems.append(f"{_plural(count, 'image')}, expected {expected.n_images}")
    if count:
        # ids is sorted: a repeat equals its predecessor (np.unique would sort again).
        repeated = ids[1:] == ids[:-1]
        n_repeats = int(np.count_nonzero(repeated))
        if n_repeats:
            again = ids[1:][repeated]
            again = again[np.concatenate(([True], again[1:] != again[:-1]))]
            problems.append(f"{_plural(n_repeats, 'repeated image id')}: {_ids_text(again, len(again))}")
        unique = ids[np.concatenate(([True], ~repeated))]
        first, last = int(unique[0]), int(unique[-1])
        n_missing = (last - first + 1) - len(unique)
        if n_missing:
            steps = np.diff(unique)
            at = np.flatnonzero(steps > 1)[:_SHOWN]
            missing: List[int] = []
            for i in at:
                missing.extend(range(int(unique[i]) + 1, min(int(unique[i + 1]), int(unique[i]) + 1 + _SHOWN)))
            problems.append(f"{_plural(n_missing, 'image id')} missing between {first} and {last}: {_ids_text(missing, n_missing)}")
    if problems:
        return Check("image_ids", False, "; ".join(problems))
    if not count:
        return Check("image_ids", True, "no images, as expected")
    return Check("image_ids", True, f"{_plural(count, 'image')}, ids {int(ids[0])} to {int(ids[-1])}, none missing or repeated")


@dataclass(frozen=True)
class CheckOptions:
    """How files are checked (one value for a whole run: build it once from the command line).

    Attributes:
        checksums: also read each file whole for its size and sha256 (a ``checksum`` check).
        clock_skew_s: how far a file's modification time may lie outside
            ``expected.started .. expected.ended``, in seconds (:data:`CLOCK_SKEW_S`).
        timeout: the longest one file-system operation may take, in seconds
            (:data:`FILE_TIMEOUT_S`); a file that does not answer fails ``readable``.
        accepted_status: the ``status`` values of a good image; ``None``: the layout's
            (:data:`ACCEPTED_STATUS`: ``{0}`` for rest_v2, ``{0, 1}`` for the driver generation).

    Raises:
        ValueError: a value of the wrong kind (one line).
    """

    checksums: bool = False
    clock_skew_s: float = CLOCK_SKEW_S
    timeout: float = FILE_TIMEOUT_S
    accepted_status: Optional[FrozenSet[int]] = None

    def __post_init__(self) -> None:
        _seconds("clock_skew_s", self.clock_skew_s)
        _seconds("timeout", self.timeout, positive=True)
        if self.accepted_status is not None:
            accepted = frozenset(self.accepted_status)
            if not accepted or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**64 for v in accepted):
                raise ValueError(f"accepted_status must be whole numbers from 0 to 2**64 - 1, not {sorted(accepted, key=str)!r}")
            object.__setattr__(self, "accepted_status", accepted)

    def accepted(self, layout: Layout) -> FrozenSet[int]:
        """The status values that pass in ``layout``."""
        return ACCEPTED_STATUS[layout] if self.accepted_status is None else self.accepted_status


def _verify(layout: Layout, files: Sequence[str], expected: Expected, options: Optional[CheckOptions]) -> Verification:
    if not isinstance(expected, Expected):
        raise ValueError(f"expected must be an Expected, not {type(expected).__name__}")
    options = CheckOptions() if options is None else options
    if not isinstance(options, CheckOptions):
        raise ValueError(f"options must be a CheckOptions, not {type(options).__name__}")
    require_verify_extra()
    n_files = len(files)
    results: List[FileResult] = []
    id_arrays: List[Any] = []
    unread = 0
    for index, path in enumerate(files):
        # The k-th image goes to file k mod W: file i gets ceil((n - i) / W) of n.
        share = (expected.n_images - index + n_files - 1) // n_files
        try:
            facts = _bounded(lambda watch: _read_file(layout, path, expected.detector_name, options.checksums, watch), options.timeout)
        except _Unreadable as exc:
            facts = _Facts(path, error=str(exc))
        result, judged = _judge_file(layout, facts, expected, share, n_files, options)
        results.append(result)
        if judged.image_ids is None:
            unread += 1
        else:
            id_arrays.append(judged.image_ids)
    checks = (_image_ids_check(id_arrays, unread, expected),)
    return Verification(layout, expected, tuple(results), checks)


def verify_rest_v2(output_file: Union[str, "os.PathLike[str]"], expected: Expected, options: Optional[CheckOptions] = None) -> Verification:
    """Check the file of a rest_v2 acquisition (``output_file`` of the write request).

    Args:
        output_file: the file the DAQ wrote.
        expected: what it should hold (:meth:`Expected.from_config`).
        options: how to check (default :class:`CheckOptions()`: no checksums).

    Returns:
        a :class:`Verification` (never raises for the file itself).

    Raises:
        VerifyExtraMissing: h5py or numpy missing. ValueError: an argument of the wrong kind.
        Interrupted: the cancel event of the bound in force was set.
    """
    return _verify(Layout.REST_V2, [os.fspath(output_file)], expected, options)


def driver_files(path: Union[str, "os.PathLike[str]"], file_prefix: str, n_writers: int) -> List[str]:
    """The files of one acquisition of the driver generation: ``<path>/<file_prefix><i>.h5``, i < W.

    (A ``<file_prefix>Meta.h5`` written by the driver's metadata option is not one of them.)
    """
    _whole("n_writers", n_writers, 1)
    if not isinstance(file_prefix, str) or "/" in file_prefix:
        raise ValueError(f"file_prefix must be a file name prefix without '/', not {file_prefix!r}")
    return [os.path.join(os.fspath(path), f"{file_prefix}{i}.h5") for i in range(n_writers)]


def verify_driver(
    path: Union[str, "os.PathLike[str]"], file_prefix: str, n_writers: int, expected: Expected, options: Optional[CheckOptions] = None
) -> Verification:
    """Check the W files of one acquisition of the driver generation, together.

    Args:
        path, file_prefix: the start request's folder and prefix.
        n_writers: W, the config's ``number_of_writers``.
        expected: what the acquisition should have written; ``n_images`` over all W files
            (the requested ``n_image``, or the driver's last ``saving_file`` count).
        options: how to check (default :class:`CheckOptions()`).

    Each file must hold its round-robin share of the images; the ``image_ids`` check takes
    the ids of all files together. The result and the errors are :func:`verify_rest_v2`'s.
    """
    return _verify(Layout.DRIVER, driver_files(path, file_prefix, n_writers), expected, options)


# -- a catalogue -------------------------------------------------------------------------------------


def manifest_line(
    path: Union[str, "os.PathLike[str]"],
    *,
    size: Optional[int],
    sha256: Optional[str],
    images: Optional[int],
    run_id: Union[int, str, None],
    config: Optional[Mapping[str, Any]],
) -> str:
    """One line of JSON for a catalogue of files (JSON lines: append it with a newline).

    ``{"path", "size", "sha256", "images", "run_id", "config"}``, keys in that order; ``null``
    for what the caller does not know. ``config`` is the DAQ's config at the time of the write.

    Raises:
        ValueError: ``config`` or ``run_id`` cannot be written as JSON (e.g. NaN, an object).
    """
    entry = {
        "path": os.fspath(path),
        "size": size,
        "sha256": sha256,
        "images": images,
        "run_id": run_id,
        "config": dict(config) if config is not None else None,
    }
    try:
        return json.dumps(entry, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"manifest line for {entry['path']}: {one_line(exc)}") from None


def manifest_lines(verification: Verification, *, run_id: Union[int, str, None], config: Optional[Mapping[str, Any]]) -> List[str]:
    """:func:`manifest_line` for every file of a checked acquisition (size, sha256, images as found)."""
    return [
        manifest_line(f.path, size=f.size, sha256=f.sha256, images=f.images, run_id=run_id, config=config)
        for f in verification.files
    ]
