"""Every file a run writes, checked once written: a write passes only when its file holds what it should.

The DAQ saying FINISHED with every image written is the DAQ's word, not the file (see
:mod:`daq_runner.verify` and ``docs/file-checks.md``). After a write passed the DAQ's verdict,
:meth:`FileChecks.check` opens what it wrote, in the DAQ generation's layout (through
:meth:`daq_runner.daq.Daq.verify_files`), against the configuration the write was meant to run
with: the data's shape against ``n_images``, its dtype against the bit depth, every
``image_id`` once with no gap, the ``status`` values, the file's time inside the acquisition's
window.

The configuration is the DAQ's, read once and again after the run's config steps changed it,
with the fields those steps set laid over it (``established``): a file written at a bit depth
someone else stored meanwhile fails, as it should. When a check fails, the DAQ's configuration
is read once more and the file checked again against it (with the run's fields still over it),
so that a field the run never set but someone changed is not taken for a bad file. The result goes into the step's record (``file_check``); a file that fails fails the
write, and the step's ``retries`` may write it again.

Not checked, and recorded so (``status: not_checked`` with the reason), never silently: a write
whose folder is not visible on this machine (a notice says so once per folder), a step with
``verify: off``, a run with ``--no-verify``. A missing h5py is refused at the start instead
(:meth:`FileChecks.require`): a user who left the checks on must not find "passed" on a file
that was never opened.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Set

from .exceptions import DaqRunnerError, StepFailed
from .record import MISSING, StepRecord, iso

if TYPE_CHECKING:  # pragma: no cover
    from .batch import Step, WriteStep
    from .daq import RunServices
    from .verify import Verification

__all__ = ["FileChecks", "PASSED", "FAILED", "NOT_CHECKED", "SHAPE_FIELDS"]

PASSED, FAILED, NOT_CHECKED = "passed", "failed", "not_checked"
SHAPE_FIELDS = ("bit_depth", "image_pixel_height", "image_pixel_width")
"""The configuration's fields that shape a write's file (its dtype and image size): a write's
record names them (``config``), whatever the run's config steps set."""


class FileChecks:
    """How one run checks the files its writes wrote (one per run: it remembers the folders it
    told people it cannot see).

    Args:
        enabled: ``False``: nothing is checked (``daq-run --no-verify``); each write is
            recorded as not checked.
        checksums: also read each file whole for its size and sha256 (``--checksums``): they
            go into the report's ``files`` entries and the manifest.
    """

    def __init__(self, enabled: bool = True, checksums: bool = False) -> None:
        from .verify import CheckOptions

        self.enabled = enabled
        self.options = CheckOptions(checksums=checksums)
        self._told: Set[str] = set()
        self._config: Optional[Dict[str, Any]] = None  # the DAQ's, as last read
        self._at_start: Dict[int, Dict[str, Any]] = {}  # step -> what its write was meant to run with
        self._established: Optional[Dict[str, Any]] = None  # the run's fields when it was read

    def _intended(self, run: "RunServices", fresh: bool = False) -> Dict[str, Any]:
        """The configuration a write of ``run`` is meant to run with (see the module's docstring)."""
        established = dict(run.established)
        if fresh or self._config is None or self._established != established:
            self._config, self._established = dict(run.daq.read_config()), established
        return {**self._config, **established}

    def started(self, run: "RunServices", step: "WriteStep") -> Dict[str, Any]:
        """The write ``step`` is about to start: what it is meant to run with is taken now, not
        when its files are checked (a background write is checked after later config steps).

        Returns the configuration the write runs with, for its record (``config``): the fields
        that shape its file (:data:`SHAPE_FIELDS`) and those the run's config steps set. A DAQ
        whose configuration cannot be read now gives the run's fields alone (the write's own
        start says what is wrong with the DAQ)."""
        try:
            intended = self._intended(run)
        except DaqRunnerError:
            return dict(run.established)
        if self.wanted(step) and os.path.isdir(os.path.dirname(step.output_file)):
            self._at_start[step.index] = intended
        return {**{key: intended[key] for key in SHAPE_FIELDS if key in intended}, **run.established}

    def wanted(self, step: "WriteStep") -> bool:
        """Whether the files of ``step`` are to be checked (the run's and the step's say)."""
        return self.enabled and step.verify != "off"

    def require(self, steps: Iterable["Step"]) -> None:
        """Before anything is sent: refuse a run that would check files without h5py.

        Only writes whose folder this machine sees are checked (the others' files cannot be
        opened here): a batch writing into the DAQ's own disks needs no h5py.

        Raises:
            VerifyExtraMissing: some write is to be checked and h5py or numpy is missing (one
                line: how to install them, and that ``--no-verify`` runs without the checks).
        """
        import importlib.util

        from .verify import VERIFY_EXTRA_HINT, VERIFY_MODULES, VerifyExtraMissing

        if not any(
            step.kind == "write" and self.wanted(step) and os.path.isdir(os.path.dirname(step.output_file))  # type: ignore[attr-defined]
            for step in steps
        ):
            return
        # Found, not imported: importing h5py takes about 0.3 s, which the first check pays
        # anyway; a run should not pay it before it has even taken its lock.
        for name in VERIFY_MODULES:
            try:
                found = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise VerifyExtraMissing(
                    f"file checks need the verify extra: {VERIFY_EXTRA_HINT} (No module named {name!r}); "
                    "or run with --no-verify (or verify: off) to write without checking the files",
                    name=name,
                )

    def check(self, run: "RunServices", step: "WriteStep", record: StepRecord, started: Optional[float]) -> None:
        """Check what the write ``step`` (just passed by the DAQ) wrote; fill ``record.file_check``.

        ``started``: Unix time of its acquisition's start request (the file must not be older).

        Raises:
            StepFailed: a file failed a check (the reason names the file and the check).
        """
        if not self.enabled:
            record.file_check = _not_checked("files are not checked in this run (--no-verify)")
            return
        if step.verify == "off":
            record.file_check = _not_checked("verify: off")
            return
        folder = os.path.dirname(step.output_file)
        if not os.path.isdir(folder):
            record.file_check = _not_checked(f"its folder {folder} is not visible on this machine")
            if folder not in self._told:
                self._told.add(folder)
                run.notice(f"the files written to {folder} cannot be checked: the folder is not visible on this machine (recorded as not checked)", step)
            return
        # A write a stop step ended on purpose holds what the DAQ counted, not what was asked for.
        stopped = record.stopped_by_step is not MISSING and record.stopped_by_step is not None
        n_images = record.n_written if stopped and record.n_written is not None else step.n_images
        ended = time.time()
        window = (started if started is not None and started <= ended else None, ended)
        config = self._at_start.pop(step.index, None) or self._intended(run)
        verification = self._verify(run, step, record, config, n_images, window)
        if verification is not None and not verification.passed:
            again = self._intended(run, fresh=True)
            if again != config:  # the DAQ's configuration changed in a field the run never set
                config = again
                verification = self._verify(run, step, record, config, n_images, window)
        if verification is None:
            return
        record.file_check = _as_record(verification, config)
        if not verification.passed:
            raise StepFailed(f"file check failed: {record.file_check['reason']}")

    def _verify(self, run: "RunServices", step: "WriteStep", record: StepRecord, config: Dict[str, Any], n_images: int, window: Any) -> Optional["Verification"]:
        """The verification of ``step``'s files against ``config``; ``None`` (and ``record``
        says why) when they cannot be checked."""
        from .verify import Expected

        try:
            expected = Expected.from_config(config, n_images, started=window[0], ended=window[1])
        except ValueError as exc:
            record.file_check = {**_not_checked(f"the DAQ's configuration does not say what the file should hold: {exc}"), "config": config}
            run.notice(f"{step.output_file} was not checked: the DAQ's configuration does not say what it should hold ({exc})", step)
            return None
        try:
            return run.daq.verify_files(step, config, expected, self.options)
        except NotImplementedError as exc:
            record.file_check = _not_checked(str(exc))
            return None


_NAMED = 4  # failed checks a reason names; the rest are counted


def _reason(verification: "Verification") -> str:
    """One line: every failed check (a gap in the image ids is named even when the shape, which
    fails with it, comes first), or what passed."""
    failures = verification.failures
    if not failures:
        return verification.reason
    more = len(failures) - _NAMED
    return "; ".join(failures[:_NAMED]) + (f" (and {more} more failed check{'s' if more != 1 else ''})" if more > 0 else "")


def _not_checked(reason: str) -> Dict[str, Any]:
    return {"status": NOT_CHECKED, "reason": reason}


def _as_record(verification: "Verification", config: Dict[str, Any]) -> Dict[str, Any]:
    """The step record's ``file_check``: compact (the checks that passed by name only, the
    failed ones with their reasons), and the config the files were checked against."""
    names: List[str] = []
    files = []
    for result in verification.files:
        for check in result.checks:
            if check.name not in names:
                names.append(check.name)
        files.append(
            {
                "path": result.path,
                "passed": result.passed,
                "images": result.images,
                "size": result.size,
                "sha256": result.sha256,
                "modified_at": iso(result.mtime),
                "failed": [{"name": c.name, "reason": c.reason} for c in result.checks if not c.passed],
            }
        )
    names += [check.name for check in verification.checks if check.name not in names]
    return {
        "status": PASSED if verification.passed else FAILED,
        "reason": _reason(verification),
        "layout": verification.layout.value,
        "checks": names,
        "files": files,
        "failed": [{"name": c.name, "reason": c.reason} for c in verification.checks if not c.passed],
        "config": config,
    }
