"""What a run will cost before it starts: its duration, its data volume, and whether the disks
it writes to will hold it (``daq-run --dry-run``, ``--validate``, and every run).

- :func:`read_facts` asks the DAQ, without changing anything, what the estimate needs: its
  configuration (image size, bit depth), the detector's frame rate from its statistics, and
  how long its last deployment took.
- :func:`estimate` walks the plan with those facts: each write takes ``n_images / rate``
  seconds and ``n_images x image_pixel_height x image_pixel_width x bit_depth / 8`` bytes at
  the configuration it will run with (the config steps before it applied); a config step takes
  the last deployment's time plus its ``settle``; a ``wait: {seconds}`` its seconds; a
  ``wait: false`` write runs beside the next steps until a ``stop`` step ends it or the run
  waits for it at the end. The ``finally:`` steps and a restore of the configuration count too.
- The free space of every output folder this machine sees (:func:`free_space`, bounded in
  time: a hung network mount gives "unknown") is set against the bytes written there, per
  disk: :attr:`Estimate.low_disk` says where the run would not fit.

What is not known is said (:attr:`Estimate.notes`), never guessed: a detector that sends no
images and no ``--assume-rate`` leave the writes' time unknown; a configuration without an
image size leaves the volume unknown. Waits for a writer state and the DAQ's own latencies
are not counted.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

__all__ = ["DaqFacts", "FolderNeed", "Estimate", "needs", "read_facts", "facts_at", "estimate", "free_space", "image_bytes", "timeout_shortfall"]

_STAT_TIMEOUT_S = 2.0  # a folder whose disk does not answer within this is "unknown"
_READ_BUDGET_S = 5.0  # reading the DAQ's facts, in all


@dataclass(frozen=True)
class DaqFacts:
    """What the DAQ says, read without changing it.

    Attributes:
        config: its configuration now (``None``: not known).
        detector_rate: images per second the detector sends now, from the DAQ's statistics
            (``None``: not known).
        deployment_s: seconds its last deployment took (``None``: not known).
        problems: what could not be read, one line each.
        restart_s: seconds a stored config usually keeps its services from taking a write (its
            generation's :attr:`~daq_runner.daq.Daq.config_restart_s`; ``None``: not known).
    """

    config: Optional[Dict[str, Any]] = None
    detector_rate: Optional[float] = None
    deployment_s: Optional[float] = None
    problems: Tuple[str, ...] = ()
    restart_s: Optional[float] = None


def needs(steps: Sequence[Any]) -> Tuple[bool, bool]:
    """What an estimate of ``steps`` needs to ask the DAQ: ``(writes, deployments)``: its
    configuration and frame rate when there are writes, its deployment time when there are
    config steps (a restore is one more only then). Nothing is asked for a plan that needs neither."""
    kinds = {step.kind for step in steps}
    return "write" in kinds, "config" in kinds


def read_facts(daq: Any, *, writes: bool = True, deployments: bool = True) -> DaqFacts:
    """:class:`DaqFacts` of ``daq`` (a :class:`~daq_runner.daq.Daq`, through the seam: a
    generation without statistics or deployments leaves those unknown). ``writes``: read the
    configuration and the frame rate; ``deployments``: the last deployment's time.

    Raises:
        DaqRunnerError: the DAQ does not answer, or not as a Standard DAQ (its configuration
            could not be read).
    """
    config = daq.read_config() if writes else None
    problems: List[str] = []
    rate = deployment = None
    if writes:
        try:
            rate = float(daq.read_rates().detector)
        except NotImplementedError:
            problems.append(f"the DAQ ({daq.generation}) reports no frame rate")
        except Exception as exc:  # statistics are optional to the estimate, never fatal
            problems.append(f"the DAQ's statistics could not be read: {_one_line(exc)}")
    if deployments:
        try:
            deployment = _deployment_seconds(daq.read_deployment())
        except NotImplementedError:
            pass  # a generation without deployment status: counted as 0
        except Exception as exc:
            problems.append(f"the DAQ's deployment status could not be read: {_one_line(exc)}")
    restart = getattr(daq, "config_restart_s", None) if deployments else None
    return DaqFacts(config or None, rate, deployment, tuple(problems), restart)


def facts_at(
    url: Any, seconds: float = _READ_BUDGET_S, cancel: Optional[threading.Event] = None, *, writes: bool = True, deployments: bool = True
) -> DaqFacts:
    """:func:`read_facts` of the DAQ at ``url`` (a URL, or a :class:`~daq_runner.targets.DaqTarget`,
    which names a current-generation DAQ's config REST too), within ``seconds`` in all (3 s a
    request, one retry; a name that does not resolve in time counts as no answer).

    Raises:
        DaqRunnerError: the DAQ did not answer in time, or not as a Standard DAQ.
        Interrupted: ``cancel`` was set (a signal) before the DAQ answered.
    """
    import time

    from ._deadline import Deadline, Interrupted, bounded
    from .client import StdDaqClient
    from .exceptions import DaqTimeoutError
    from .daq import DRIVER
    from .rest_v2._reads import RestV2Reads
    from .targets import generation_of

    answer: "queue.Queue[Tuple[Optional[DaqFacts], Optional[BaseException]]]" = queue.Queue()

    target = url
    url = getattr(target, "url", target)

    def work() -> None:
        try:
            if generation_of(url) == DRIVER:
                from .det_driver_daq import DriverDaq

                daq = DriverDaq(url, getattr(target, "config_url", None), config_user=getattr(target, "config_user", None), outage_s=3.0)
                try:
                    with bounded(Deadline(seconds, cancel=cancel)):
                        answer.put((read_facts(daq, writes=writes, deployments=deployments), None))
                finally:
                    daq.close()
                return
            with StdDaqClient(url, timeout=3.0, retries=1) as client, bounded(Deadline(seconds, cancel=cancel)):
                answer.put((read_facts(RestV2Reads(client), writes=writes, deployments=deployments), None))
        except BaseException as exc:  # handed to the caller
            answer.put((None, exc))

    # In a thread: a host name whose resolution hangs must not hold the command.
    threading.Thread(target=work, name="daq-run-estimate", daemon=True).start()
    end = time.monotonic() + seconds + 1.0
    while True:
        try:
            facts, error = answer.get(timeout=0.1)
            break
        except queue.Empty:
            if cancel is not None and cancel.is_set():
                raise Interrupted() from None
            if time.monotonic() > end:
                raise DaqTimeoutError(f"the DAQ at {_shown(url)} did not answer within {seconds:g} s") from None
    if error is not None:
        raise error
    assert facts is not None
    return facts


def _deployment_seconds(deployment: Any) -> Optional[float]:
    stats = deployment.get("stats") if isinstance(deployment, dict) else None
    if not isinstance(stats, dict):
        return None
    start, stop = stats.get("start_time"), stats.get("stop_time")
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in (start, stop)) or stop < start:
        return None
    return float(stop - start)


def image_bytes(config: Optional[Dict[str, Any]]) -> Optional[int]:
    """Bytes of one image at ``config``: ``image_pixel_height x image_pixel_width x bit_depth / 8``
    (``None`` when one of them is missing or not a positive integer)."""
    values = []
    for key in ("image_pixel_height", "image_pixel_width", "bit_depth"):
        value = (config or {}).get(key)
        try:
            number = int(value)  # the DAQ may give numeric strings
        except (TypeError, ValueError):
            return None
        if isinstance(value, bool) or number <= 0:
            return None
        values.append(number)
    height, width, depth = values
    return height * width * depth // 8


# -- free space --------------------------------------------------------------------------------


def free_space(path: str, timeout: float = _STAT_TIMEOUT_S) -> Optional[Tuple[int, int]]:
    """``(device, free bytes for this user)`` of the disk holding ``path``, or ``None`` (not
    there, not readable, or no answer within ``timeout`` s: a hung network mount)."""
    answer: "queue.Queue[Optional[Tuple[int, int]]]" = queue.Queue()

    def work() -> None:
        try:
            if not os.path.isdir(path):
                answer.put(None)
                return
            info = os.statvfs(path)
            answer.put((os.stat(path).st_dev, info.f_bavail * info.f_frsize))
        except (OSError, ValueError, AttributeError):  # AttributeError: no statvfs (Windows)
            answer.put(None)

    threading.Thread(target=work, name="daq-run-statvfs", daemon=True).start()
    try:
        return answer.get(timeout=timeout)
    except queue.Empty:
        return None


@dataclass(frozen=True)
class FolderNeed:
    """One output folder: what the run writes there, and what its disk has.

    Attributes:
        path: the folder; bytes: the run's writes into it (``None``: unknown);
        free_bytes: free space of its disk for this user (``None``: not visible here, or no
        answer); device: the disk (folders on one disk share its free space).
    """

    path: str
    bytes: Optional[int]
    free_bytes: Optional[int] = None
    device: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "free_bytes": self.free_bytes}


# -- the estimate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """What a run is expected to cost.

    Attributes:
        duration_s: seconds from the first step to the end (``None``: unknown, see ``notes``);
            fixed_s: the part that does not depend on the frame rate (settles, waits,
            deployments).
        images: images the writes ask for; bytes: their volume (``None``: unknown).
        rate_hz: the detector's frame rate used, and rate_source where it came from
            (``the DAQ's statistics``, ``--assume-rate``).
        deployment_s: seconds a config step's deployment is expected to take; restart_s: the
            restart of the services each stored config brings, after it.
        step_seconds: expected seconds of each step of the plan, in order (for the ETA of the
            whole batch; a ``wait: false`` write counts 0 and the wait for it at the end
            ``tail_s``).
        folders: every output folder with the bytes written there and its free space.
        notes: what is not known or not counted, one line each.
        warnings: what will go wrong as planned (a write that cannot finish within its
            timeout at the detector's rate), one line each.
    """

    duration_s: Optional[float]
    fixed_s: float
    images: int
    bytes: Optional[int]
    rate_hz: Optional[float] = None
    rate_source: Optional[str] = None
    deployment_s: Optional[float] = None
    restart_s: Optional[float] = None
    step_seconds: Tuple[float, ...] = ()
    tail_s: float = 0.0
    folders: Tuple[FolderNeed, ...] = ()
    notes: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()

    @property
    def low_disk(self) -> List[str]:
        """Where the writes would not fit: one line per disk whose free space is less than the
        bytes the run writes to its folders (empty: every visible disk holds it)."""
        from ._tally import format_bytes

        by_disk: Dict[int, List[FolderNeed]] = {}
        for need in self.folders:
            if need.device is not None and need.free_bytes is not None and need.bytes:
                by_disk.setdefault(need.device, []).append(need)
        problems = []
        for needs in by_disk.values():
            total = sum(n.bytes or 0 for n in needs)
            free = needs[0].free_bytes or 0
            if total > free:
                where = ", ".join(n.path for n in needs)
                problems.append(
                    f"the writes into {where} need {format_bytes(total)} ({total} bytes) "
                    f"but {'its' if len(needs) == 1 else 'their'} disk has {format_bytes(free)} ({free} bytes) free"
                )
        return problems

    def to_json(self) -> Dict[str, Any]:
        """The report's ``estimate``: ``{duration_s, fixed_s, images, bytes, rate_hz, rate_source,
        deployment_s, restart_s, folders: [{path, bytes, free_bytes}], notes, warnings}``."""
        return {
            "duration_s": _round(self.duration_s),
            "fixed_s": _round(self.fixed_s),
            "images": self.images,
            "bytes": self.bytes,
            "rate_hz": self.rate_hz,
            "rate_source": self.rate_source,
            "deployment_s": _round(self.deployment_s),
            "restart_s": _round(self.restart_s),
            "folders": [need.to_json() for need in self.folders],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }

    def lines(self) -> List[str]:
        """The estimate for people: the duration and the volume first, then each folder's disk
        and the notes."""
        from ._tally import format_bytes, format_seconds

        if self.duration_s is not None:
            duration = format_seconds(self.duration_s)
        elif self.fixed_s:
            duration = f"unknown (at least {format_seconds(self.fixed_s)} of settles, waits and deployments)"
        else:
            duration = "unknown"
        volume = format_bytes(self.bytes) if self.bytes is not None else "unknown"
        how = []
        if self.rate_hz is not None:
            how.append(f"{self.rate_hz:g} images/s from {self.rate_source}")
        if self.deployment_s is not None:
            how.append(f"deployments of {format_seconds(self.deployment_s)}, as the DAQ's last one")
        if self.restart_s:
            how.append(f"a restart of the services of about {format_seconds(self.restart_s)} after each stored config")
        lines = [
            f"estimate: duration {duration}, volume {volume} in {self.images} image{'s' if self.images != 1 else ''}"
            + (f" ({'; '.join(how)})" if how else "")
        ]
        for need in self.folders:
            free = f"{format_bytes(need.free_bytes)} free" if need.free_bytes is not None else "free space not visible on this machine"
            if need.bytes is None:
                lines.append(f"  disk: {need.path}: {free}; the volume written there is unknown")
            else:
                lines.append(f"  disk: {need.path}: {format_bytes(need.bytes)} of {free}" if need.free_bytes is not None else f"  disk: {need.path}: {format_bytes(need.bytes)}; {free}")
        lines += [f"  ! {problem}" for problem in (*self.low_disk, *self.warnings)]
        lines += [f"  note: {note}" for note in self.notes]
        return lines


def _round(value: Optional[float]) -> Optional[float]:
    return round(value, 3) if value is not None else None


def estimate(
    steps: Sequence[Any],
    facts: Optional[DaqFacts] = None,
    *,
    cleanup: Sequence[Any] = (),
    restore_config: bool = False,
    assume_rate: Optional[float] = None,
    kept: Collection[int] = (),
    made_at_start: Optional[str] = None,
    check_disks: bool = True,
) -> Estimate:
    """The :class:`Estimate` of a plan.

    Args:
        steps: the plan's steps (:class:`~daq_runner.batch.Step`); cleanup: its ``finally:``
            steps; restore_config: the configuration is put back at the end (one deployment
            more when a config step runs).
        facts: what the DAQ said (:func:`read_facts`; ``None``: nothing, the DAQ was not asked
            or did not answer).
        assume_rate: images per second to use instead of the DAQ's statistics (``--assume-rate``).
        kept: indices of steps a resumed run keeps (they cost nothing).
        made_at_start: a folder the run makes at its start (``--sim``'s fresh folder): its
            parent's disk is the one it writes to.
        check_disks: look up the free space of the output folders (``False``: not at all).
    """
    facts = facts or DaqFacts()
    notes: List[str] = []
    if facts.config is None and any(step.kind == "write" for step in (*steps, *cleanup)):
        notes.append("the DAQ's configuration is not known: the volume of writes at an image size no config step sets is unknown")
    rate, source = (assume_rate, "--assume-rate") if assume_rate is not None else (facts.detector_rate, "the DAQ's statistics")
    if rate is not None and rate <= 0:
        notes.append("the detector sends no images now (0 images/s in the DAQ's statistics): give --assume-rate HZ for the writes' time")
        rate = None
    config: Dict[str, Any] = dict(facts.config or {})
    deploy = facts.deployment_s
    restart = facts.restart_s or 0.0
    t = fixed = 0.0
    rate_needed = deploy_unknown = state_waits = volume_unknown = False
    images = 0
    volume: Optional[int] = 0
    background: List[float] = []  # when each wait: false acquisition would end
    per_step: List[float] = []
    shared: Dict[float, float] = {}  # one object per distinct duration: a sweep of 100,000 like writes holds a handful
    by_folder: Dict[str, Optional[int]] = {}
    config_ran = False
    n_plan = len(steps)
    for position, step in enumerate((*steps, *cleanup)):
        before = t
        if step.index in kept:
            if position < n_plan:
                per_step.append(0.0)
            if step.kind == "config":
                config.update(getattr(step, "config", {}) or {})
            continue
        kind = step.kind
        if kind == "config":
            config.update(step.config)
            config_ran = True
            t += (deploy or 0.0) + restart + step.settle
            fixed += (deploy or 0.0) + restart + step.settle
            deploy_unknown = deploy_unknown or deploy is None
        elif kind == "write":
            n = step.n_images
            images += n
            size = image_bytes(config)
            folder = os.path.dirname(step.output_file)
            if size is None:
                volume_unknown = True
                by_folder[folder] = None
            else:
                if by_folder.get(folder, 0) is not None:
                    by_folder[folder] = (by_folder.get(folder) or 0) + n * size
                if volume is not None:
                    volume += n * size
            seconds = n / rate if rate else 0.0
            rate_needed = rate_needed or not rate
            if step.wait:
                t += seconds
            else:
                background.append(t + seconds)
        elif kind == "wait":
            if step.seconds is not None:
                t += step.seconds
                fixed += step.seconds
            else:
                state_waits = True
        elif kind == "stop":
            background = []  # a stop step ends what runs in the background now
        if position < n_plan:
            per_step.append(shared.setdefault(round(t - before, 6), round(t - before, 6)))
    if restore_config and config_ran:
        t += (deploy or 0.0) + restart
        fixed += (deploy or 0.0) + restart
    tail = max([end - t for end in background] + [0.0])
    if volume_unknown:
        if facts.config is not None:  # else said above
            notes.append("the image size or bit depth is not known for some writes: their volume is unknown")
        volume = None
    if rate_needed and images:
        if rate is None and not any("0 images/s" in n for n in notes):
            notes.append("the detector's frame rate is not known: give --assume-rate HZ for the writes' time")
    if deploy_unknown:
        notes.append("the DAQ's deployment time is not known: config steps count their settle only")
    if state_waits:
        notes.append("waits for a writer state count as 0 s")
    notes += list(facts.problems)
    folders = tuple(_folder_need(path, need, made_at_start, check_disks) for path, need in by_folder.items())
    invisible = [f.path for f in folders if f.free_bytes is None]
    if invisible and check_disks:
        shown = ", ".join(invisible[:3]) + (f" and {len(invisible) - 3} more" if len(invisible) > 3 else "")
        notes.append(f"free space not checked where this machine does not see the folder: {shown}")
    duration = None if (rate_needed and images and rate is None) else t + tail
    shortfall = timeout_shortfall(steps, rate, skip=lambda step: step.index in kept) if rate else None
    return Estimate(
        duration_s=duration,
        fixed_s=fixed,
        images=images,
        bytes=volume,
        rate_hz=rate,
        rate_source=source if rate is not None else None,
        deployment_s=deploy,
        restart_s=facts.restart_s,
        step_seconds=tuple(per_step),
        tail_s=tail,
        folders=folders,
        notes=tuple(notes),
        warnings=(shortfall,) if shortfall else (),
    )


def timeout_shortfall(steps: Sequence[Any], rate: float, skip: Callable[[Any], bool] = lambda step: False) -> Optional[str]:
    """One line when a write of ``steps`` cannot receive its images within its timeout at
    ``rate`` images per second (the first such write named, with the timeout it needs), else
    ``None``. A ``wait: false`` write that a later stop step ends is not meant to finish and
    does not count; nor do steps ``skip`` says (those a resumed run keeps)."""
    from ._handlers import generous_timeout

    if not rate or rate <= 0:
        return None
    stops = [step.index for step in steps if step.kind == "stop"]
    slow = [
        step
        for step in steps
        if step.kind == "write" and not skip(step)
        and (step.wait or not any(index > step.index for index in stops))
        and step.n_images / rate > step.timeout
    ]  # fmt: skip
    if not slow:
        return None
    first, need = slow[0], slow[0].n_images / rate
    more = f"; {len(slow) - 1} more write(s) too" if len(slow) > 1 else ""
    return (
        f"at the detector's {rate:g} images/s now, step {first.index} ({first.n_images} images) needs about "
        f"{need:.0f} s, beyond its timeout of {first.timeout:g} s: give it timeout: {generous_timeout(need)} or more{more}"
    )


def _folder_need(path: str, need: Optional[int], made_at_start: Optional[str], check: bool) -> FolderNeed:
    if not check:
        return FolderNeed(path, need)
    where = path
    if made_at_start is not None:
        inside = os.path.abspath(path) == made_at_start or os.path.abspath(path).startswith(os.path.join(made_at_start, ""))
        if inside and not os.path.isdir(made_at_start):
            where = os.path.dirname(made_at_start)  # made at the start (not yet, in a dry run), on its parent's disk
    space = free_space(where)
    if space is None:
        return FolderNeed(path, need)
    return FolderNeed(path, need, space[1], space[0])


def _one_line(exc: BaseException) -> str:
    from ._text import one_line, redact_text

    return one_line(redact_text(str(exc)), 200)


def _shown(url: str) -> str:
    from ._text import redact_url

    return str(redact_url(url))
