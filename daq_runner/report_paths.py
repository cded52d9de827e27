"""Where a run's report and JUnit file go, and the paths they may never take.

The policy, as ``daq-run`` applies it (:func:`choose_report_paths`):

- ``--report PATH``: that file. An existing report is refused (as existing data files are)
  unless ``overwrite_report`` (``--overwrite-report``); an empty file holds no report and
  may be used (``mktemp``).
- ``--report-dir DIR``: a new name in that folder, which must exist.
- neither: a new name next to the batch file, or in the current folder for a batch read
  from a pipe or a device (``/dev/stdin``).
- New names are ``<batch stem>-<YYYYmmdd-HHMMSS>-<run>.report.json``
  (:func:`default_report_path`): unique also for runs started in the same second.
- Refused for the report and the JUnit file alike, before anything is sent: the batch file
  itself, a directory, a symbolic link, a device, pipe or socket (:class:`OutputRefused`);
  a folder that does not exist or is not writable, a read-only file
  (:class:`OutputUnwritable`) (:func:`check_output_path`); the report or JUnit file of a
  run still going on on this host (:func:`refuse_live_report`); the output file of one of
  the batch's writes; the JUnit file and the report being one file.
- The JUnit file replaces an earlier one: CI reads it at a fixed path, and it is made from
  the report, which is kept.
"""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .exceptions import OutputRefused, OutputUnwritable

__all__ = ["ReportPaths", "choose_report_paths", "check_output_path", "default_report_path", "refuse_live_report"]


@dataclass(frozen=True)
class ReportPaths:
    """Where a run's files go.

    Attributes:
        report: the JSON report (absolute path).
        junit: the JUnit XML file (absolute), or ``None``.
        chosen: whether ``report`` is a new name chosen here (no ``--report``).
    """

    report: str
    junit: Optional[str] = None
    chosen: bool = False


def choose_report_paths(
    batch: Any,
    *,
    report: Optional[str] = None,
    report_dir: Optional[str] = None,
    junit: Optional[str] = None,
    overwrite_report: bool = False,
) -> ReportPaths:
    """Where the report and the JUnit file of a run of ``batch`` go, checked as ``daq-run`` does.

    Args:
        batch: the :class:`~daq_runner.batch.Batch` (its ``path``, ``run`` and write steps).
        report: ``--report``; report_dir: ``--report-dir`` (not both); junit: ``--junit``.
        overwrite_report: whether ``report`` may replace an existing report.

    Raises:
        OutputRefused: a path that names what must not be replaced (see the module).
        OutputUnwritable: a path where the file cannot be written on this machine.
    """
    if report is not None and report_dir is not None:
        raise OutputRefused("--report and --report-dir both say where the report goes; give one of them")
    outputs = {os.path.realpath(step.output_file): step.index for step in batch.steps if getattr(step, "output_file", None)}
    if report is not None:
        path = check_output_path(report, batch_path=batch.path, what="--report")
        refuse_live_report(path, "--report")
        _refuse_outputs(path, outputs, "--report")
        if not overwrite_report and os.path.isfile(path) and os.path.getsize(path) > 0:
            raise OutputRefused(
                f"--report {report} exists: give a new path, --report-dir DIR for a new name in a folder, "
                "or --overwrite-report to replace it"
            )
        chosen = False
    else:
        folder = _report_dir(report_dir) if report_dir is not None else None
        path = default_report_path(batch.path, batch.run, folder)
        try:
            path = check_output_path(path, batch_path=batch.path, what="report")
        except (OutputRefused, OutputUnwritable) as exc:
            if folder is not None:
                raise
            # Checked before anything is sent, as a --report is: a run whose report cannot be
            # written must not change the DAQ.
            raise type(exc)(f"{exc} (the default, next to the batch file); give --report PATH or --report-dir DIR") from None
        chosen = True
    junit_path = None
    if junit is not None:
        junit_path = check_output_path(junit, batch_path=batch.path, what="--junit")
        refuse_live_report(junit_path, "--junit")
        _refuse_outputs(junit_path, outputs, "--junit")
        if os.path.realpath(junit_path) == os.path.realpath(path):
            raise OutputRefused("--junit and --report name the same file")
        if os.path.isfile(junit_path) and os.path.getsize(junit_path) > 0 and not _is_junit(junit_path):
            # CI reads JUnit at a fixed path, so an earlier JUnit file is replaced; anything
            # else there (data, a report, a mistyped path) is not.
            raise OutputRefused(f"--junit {junit} exists and is not a JUnit XML file: give a new path or an earlier JUnit file's")
    return ReportPaths(path, junit_path, chosen)


def _is_junit(path: str) -> bool:
    """Whether the file at ``path`` starts as a JUnit XML file does (a ``<testsuites>`` or
    ``<testsuite>`` element first, after an optional XML declaration and comments)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<?xml"):
        text = text[text.find(b"?>") + 2 :].lstrip() if b"?>" in text else b""
    while text.startswith(b"<!--") and b"-->" in text:
        text = text[text.find(b"-->") + 3 :].lstrip()
    return text.startswith((b"<testsuites", b"<testsuite"))


def _report_dir(folder: str) -> str:
    if not folder:
        raise OutputRefused("--report-dir is empty")
    if not os.path.exists(folder):
        raise OutputUnwritable(f"--report-dir {folder} does not exist")
    if not os.path.isdir(folder):
        raise OutputRefused(f"--report-dir {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputUnwritable(f"--report-dir {folder} is not writable")
    return os.path.abspath(folder)


def _refuse_outputs(path: str, outputs: Mapping[str, int], what: str) -> None:
    """A report where a write of the batch puts its file: one of the two would be lost."""
    index = outputs.get(os.path.realpath(path))
    if index is not None:
        raise OutputRefused(f"{what} {path} is the output file of step {index} of the batch; choose another path")


def check_output_path(path: str, *, batch_path: Optional[str], what: str, protects: str = "the batch file") -> str:
    """Refuse an output path that would replace something it must not; return it made absolute.

    Allowed: a regular file (it is replaced), or a new name in an existing, writable folder.
    Every message is one line naming ``what`` (e.g. ``"report"``).

    Raises:
        OutputRefused: the file at ``batch_path`` itself (``--report batch.yaml``;
            ``protects`` names it in the message), a directory, a symbolic link, a device,
            pipe or socket (``--report /dev/null`` run as root would replace /dev/null).
        OutputUnwritable: a read-only file, a folder that does not exist or is not writable.
    """
    if not path:
        raise OutputRefused(f"{what} path is empty")
    full = os.path.abspath(path)
    if batch_path and os.path.exists(batch_path):
        try:
            same = os.path.samefile(full, batch_path)
        except OSError:
            same = os.path.realpath(full) == os.path.realpath(batch_path)
        if same:
            raise OutputRefused(f"{what} {path} is {protects} itself; choose another path")
    try:
        info = os.lstat(full)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputUnwritable(f"{what} {path}: {exc.strerror or exc}") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise OutputRefused(f"{what} {path} is a directory; give a file name")
        if stat.S_ISLNK(info.st_mode):
            raise OutputRefused(f"{what} {path} is a symbolic link; give the file's own path")
        if not stat.S_ISREG(info.st_mode):
            raise OutputRefused(f"{what} {path} is not a regular file (a device, pipe or socket); give a file name")
        if not os.access(full, os.W_OK):
            raise OutputUnwritable(f"{what} {path} is read-only")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise OutputUnwritable(f"{what} folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputUnwritable(f"{what} folder {folder} is not writable")
    if info is None:
        _probe(folder, what)
    return full


def _probe(folder: str, what: str) -> None:
    """Create and remove a file in ``folder``: the permission bits can say yes where no file can
    be made (root in /proc or /sys, a read-only mount, a full inode table), and a run whose
    report cannot be written must not start."""
    import tempfile

    try:
        handle, probe = tempfile.mkstemp(prefix=".daq-run-probe-", dir=folder)
    except OSError as exc:
        raise OutputUnwritable(f"{what} folder {folder}: no file can be created there ({exc.strerror or exc})") from None
    os.close(handle)
    try:
        os.unlink(probe)
    except OSError:
        pass


def default_report_path(batch_path: str, run_id: str, folder: Optional[str] = None) -> str:
    """``<folder>/<batch stem>-<YYYYmmdd-HHMMSS>-<run id>.report.json``, a name no file has yet.

    ``folder`` defaults to the batch file's folder; a batch that is not a regular file
    (``/dev/stdin``, a pipe) puts it in the current folder. The run id makes names unique
    also for runs started within the same second; should the name exist anyway, ``-2``,
    ``-3``... is added.
    """
    stem = os.path.splitext(os.path.basename(batch_path))[0] or "batch"
    if folder is None:
        folder = os.path.dirname(os.path.abspath(batch_path))
        if not os.path.isfile(batch_path) or os.path.abspath(batch_path).startswith(("/dev/", "/proc/")):
            # Read from a pipe or a device (/dev/stdin, <(...)): its folder is no place for a report.
            folder = os.getcwd()
    # A file name has at most 255 bytes: the stem gives way to the time and run id.
    stem = stem.encode()[:150].decode(errors="ignore") or "batch"
    # The whole run id (its random part too): runs started together never share a name.
    tag = re.sub(r"[^A-Za-z0-9_-]", "", str(run_id))[-40:] or uuid.uuid4().hex
    base = os.path.join(folder, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{tag}")
    path, n = base + ".report.json", 1
    while os.path.lexists(path):
        n += 1
        path = f"{base}-{n}.report.json"
    return path


def refuse_live_report(path: str, what: str = "--report") -> None:
    """Refuse ``path`` when it is the report of a run still going on on this host (another
    DAQ, the same cron line twice): that run's report would be lost.

    Raises:
        OutputRefused: "<what> PATH is the report of a run still going on (pid N)".
    """
    from .lock import running_here
    from .report import load_report

    if not os.path.isfile(path):
        return
    try:
        other = load_report(path)
    except ValueError:
        return  # not a report
    pid = other.get("pid")
    if other.get("status") == "running" and pid != os.getpid() and running_here(other.get("host"), pid):
        raise OutputRefused(f"{what} {path} is the report of a run still going on (pid {pid}); give another path")
