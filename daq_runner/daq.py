"""The DAQ seam: the one small interface through which the Runner reaches a DAQ.

A :class:`Daq` is one generation of the Standard DAQ as a run sees it, as an httpx transport
is one way of sending a request: the Runner and the step handlers (:mod:`daq_runner._handlers`)
know nothing else about the DAQ. Everything that belongs to a generation lives behind it: for
rest_v2 (:class:`daq_runner.rest_v2.RestV2Daq`) the writer's REST API, the Redis status feed,
run_id reconciliation, deployment status and the confirmation of every write in the DAQ's own
log. A test can put a scripted DAQ in its place (:mod:`daq_runner.testing`).

A Daq object can serve many runs, one at a time: :meth:`Daq.open` binds it to the
:class:`RunServices` of a run (its events, its lock, its record of acquisitions) and
:meth:`Daq.close` ends that; nothing of one run is left for the next.

Every method is bounded by the bound in force (:func:`daq_runner._deadline.current`: a step's
time limit, the cleanup's), raises :class:`~daq_runner.exceptions.StepFailed` when an attempt
fails for a reason the DAQ gave, and :class:`~daq_runner.exceptions.DaqRunnerError` subclasses
for transport, protocol and refusal errors (a transport error that outlasted the DAQ's outage
budget ends the run as "DAQ unreachable").
"""

from __future__ import annotations

import abc
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Tuple, Union

if TYPE_CHECKING:  # pragma: no cover
    from ._deadline import Deadline
    from .batch import Batch, ConfigStep, Step, WriteStep
    from .record import RecoveryRecord, StepRecord
    from .resume import ResumedRun
    from .verify import CheckOptions, Expected, Verification

__all__ = [
    "Daq",
    "Acquisition",
    "Acquisitions",
    "RunServices",
    "Rates",
    "Progress",
    "READY",
    "WRITING",
    "UNKNOWN",
    "FEATURES",
    "REST_V2",
    "DRIVER",
    "check_supported",
]

# The generations (Daq.generation), as reports name them: PSI's rest_v2 server with its Redis, and
# the current one (std_det_driver with its config REST).
REST_V2, DRIVER = "rest_v2", "driver"

# The writer states the Runner and a batch speak of, whatever the generation (a generation
# without them maps its own states onto these).
READY, WRITING, UNKNOWN = "READY", "WRITING", "UNKNOWN"

FEATURES: Mapping[str, str] = {
    "deployment": "the deployment status of a configuration",
    "rates": "the detector's and the writer's rates",
    "log": "an acquisition log",
    "unknown_state": "a writer state UNKNOWN",
}
"""What a batch may ask of a DAQ that not every generation has, and what it is (for messages):
the deployment status of its configuration (``check: {deployment}``), the detector's and
writer's rates (``check: {min_detector_rate}``...), an acquisition log that confirms each write,
and a writer state UNKNOWN (``check: {writer: UNKNOWN}``, ``wait: {state: UNKNOWN}``). Which
step needs which is declared with the step kinds (:attr:`daq_runner._stepkinds.StepKind.needs`);
which generation has which, by each :class:`Daq` (:attr:`Daq.features`)."""


class Rates(NamedTuple):
    """Images per second the detector sends and the writer writes."""

    detector: float
    writer: float


Progress = Callable[[int, Optional[str]], None]
"""``progress(n_written, state)``: how far an acquisition being followed has come."""


class Acquisition:
    """One acquisition this run started (or may have started), until it provably ended.

    A generation subclasses it with what it needs to follow one; the Runner uses only what is
    here.

    Attributes:
        step: the write step it belongs to.
        record: the step's record; for a ``wait: false`` write, filled when it ends.
        ended: provably not running any more (seen to end, or stopped by the runner).
        stopped_by: index of the batch's stop step that ended it on purpose.
        started: Unix time of its start request.
        deadline_at: monotonic time its step's timeout ends (a background write is followed
            up to it).
    """

    def __init__(self, step: "WriteStep") -> None:
        self.step = step
        self.record: Optional["StepRecord"] = None
        self.ended = False
        self.stopped_by: Optional[int] = None
        self.started = time.time()
        self.deadline_at = time.monotonic() + step.timeout

    @property
    def background(self) -> bool:
        """A ``wait: false`` write: followed in the background, recorded when it ends."""
        return not self.step.wait

    @property
    def acquisition_id(self) -> str:
        """The DAQ's id of this acquisition, as the report names it."""
        raise NotImplementedError

    @property
    def end_known(self) -> bool:
        """Whether its end has been seen (a background write can then be recorded)."""
        raise NotImplementedError


class Acquisitions:
    """The acquisitions of one run: which may still run (so that whatever ends the run stops
    them), which belongs to which step (never two for one step), which run in the background."""

    def __init__(self) -> None:
        self.running: List[Acquisition] = []
        self._by_step: Dict[int, Acquisition] = {}

    def started(self, acquisition: Acquisition) -> None:
        """``acquisition`` may run from now on (its request is about to be sent)."""
        self._by_step[acquisition.step.index] = acquisition
        if acquisition not in self.running:
            self.running.append(acquisition)

    def ended(self, acquisition: Acquisition) -> None:
        """``acquisition`` provably does not run any more."""
        acquisition.ended = True
        if acquisition in self.running:
            self.running.remove(acquisition)

    def of_step(self, index: int) -> Optional[Acquisition]:
        """The latest acquisition of step ``index`` in this run, if any."""
        return self._by_step.get(index)

    def restore(self, index: int, acquisition: Optional[Acquisition]) -> None:
        """Make ``acquisition`` (or none) the latest of step ``index`` again (a start that provably did not happen)."""
        if acquisition is None:
            self._by_step.pop(index, None)
        else:
            self._by_step[index] = acquisition

    def forget(self, index: int) -> None:
        """Done with step ``index``: memory must not grow with the number of finished steps."""
        self._by_step.pop(index, None)

    def background(self) -> List[Acquisition]:
        """The ``wait: false`` acquisitions that may still run."""
        return [acquisition for acquisition in self.running if acquisition.background]


ALLOW_OVERWRITE = "set overwrite: true on the step (or in defaults), or run with --overwrite"
"""How a batch allows a write to replace an existing file, for the refusal's message (each
generation's; :func:`daq_runner.writes.write_file` says it in its own words)."""


class RunServices(abc.ABC):
    """What a :class:`Daq` may use of the run it serves (the Runner's per-run state).

    Attributes:
        invocation: this daq-run invocation's random id (run_ids derive from it, see
            :func:`daq_runner.resume.acquisition_id`).
        overwrite: writes may replace existing files (``--overwrite``).
        require_log: a write passes only when the DAQ's own record confirms it.
        resumed: what the report of a run being resumed says about the files it left.
        established: the configuration fields this run's config steps set (and a resume
            applied again): what every later write is meant to run with.
        acquisitions: the run's acquisitions.
        stop_event: set when the run must stop (a signal, a lost lock).
        pre_run: recoveries made before the first step.
        daq: the DAQ the run drives (the step handlers reach it through the run).
    """

    invocation: str
    overwrite: bool
    require_log: bool
    resumed: Optional["ResumedRun"]
    established: Dict[str, Any]
    acquisitions: Acquisitions
    stop_event: threading.Event
    pre_run: List["RecoveryRecord"]
    daq: "Daq"

    # Typed loosely: the modules that define them use this one.
    file_checks: Any
    """How this run checks the files its writes wrote (a :class:`daq_runner._filecheck.FileChecks`)."""
    detector_history: Any
    """The detector's rates its guards read (a :class:`daq_runner._guard.DetectorHistory`)."""

    @abc.abstractmethod
    def emit(self, kind: str, step: Optional["Step"] = None, /, **data: Any) -> None:
        """Send an event of ``kind`` (:mod:`daq_runner.events`) to the run's consumers."""

    @abc.abstractmethod
    def notice(self, message: str, step: Optional["Step"] = None) -> None:
        """Something people should know (a notice in the report), for ``step`` or the current one."""

    @abc.abstractmethod
    def guard(self) -> None:
        """Before any request that changes the DAQ: raises :class:`~daq_runner.exceptions.LockError`
        unless the run still holds its lock."""

    def recovery(self, record: Optional["StepRecord"], step: Optional["Step"], reason: str, action: str, outcome: str, at: Optional[float] = None) -> "RecoveryRecord":
        """Record a recovery (on ``record``, or before the first step when ``None``) and tell the consumers."""
        entry: "RecoveryRecord" = {"reason": reason, "action": action, "outcome": outcome, "at": time.time() if at is None else at}
        self.add_recovery(record, step, entry)
        return entry

    def add_recovery(self, record: Optional["StepRecord"], step: Optional["Step"], entry: "RecoveryRecord") -> None:
        """Record the recovery ``entry`` as it is (see :meth:`recovery`)."""
        (self.pre_run if record is None else record.recoveries).append(entry)
        from . import events

        self.emit(events.RECOVERY, step, **entry)


class Daq(abc.ABC):
    """One generation of the Standard DAQ, as the Runner sees it.

    Class attributes:
        generation: its name in reports (``rest_v2``, ``driver``).
        title: what it is, for people (``the rest_v2 Standard DAQ``).
        features: what of :data:`FEATURES` it has; a batch step that needs another is refused
            at validation, before anything is sent (:func:`check_supported`).
        unguarded: what keeps another client off the DAQ when the run holds no runner lock.
        config_restart_s: seconds a stored config usually keeps the DAQ's services from taking a
            write (the restart the config step waits for), as the estimate counts it.
    """

    generation: ClassVar[str] = ""
    title: ClassVar[str] = ""
    features: ClassVar[FrozenSet[str]] = frozenset()
    config_restart_s: ClassVar[float] = 0.0
    unguarded: ClassVar[str] = "another runner could drive this DAQ"
    outage: str = "the client's retries"
    """How long requests ride out an unreachable DAQ, for messages (``40 s``)."""

    # -- one run ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def open(self, run: RunServices) -> None:
        """Serve the run ``run`` (connect what needs connecting); nothing is sent to the DAQ yet."""

    @abc.abstractmethod
    def close(self) -> None:
        """The run is over: let go of what :meth:`open` took. Never raises."""

    @abc.abstractmethod
    def describe(self) -> Dict[str, Any]:
        """Where the DAQ is, for the report's ``daq`` block (``url``, ...; credentials removed)."""

    def secrets(self) -> Tuple[str, ...]:
        """Credentials in its URLs: replaced by ``***`` wherever the run shows text."""
        return ()

    @abc.abstractmethod
    def check_reachable(self) -> None:
        """One look at the DAQ, riding out an outage for its whole budget.

        Raises :class:`~daq_runner.exceptions.DaqTransportError` when it stays unreachable, and
        :class:`~daq_runner.exceptions.DaqHTTPError` or
        :class:`~daq_runner.exceptions.DaqProtocolError` when what answers is not this DAQ.
        """

    def prepare(self) -> None:
        """Before the first step (a fresh rest_v2 writer is reset, as a recovery of the run)."""

    @abc.abstractmethod
    def answers(self) -> bool:
        """Whether the DAQ answers at all right now: one quick look (a second or two), no
        retries, any thread, outside the run's bounds. Something answering wrongly counts; a
        server that answers only that it cannot reach its own storage (the Redis that also
        holds the runner lock) does not."""

    # -- reading --------------------------------------------------------------------------------

    @abc.abstractmethod
    def read_state(self) -> str:
        """The writer's state now: :data:`READY`, :data:`WRITING` or :data:`UNKNOWN`."""

    @abc.abstractmethod
    def read_config(self) -> Dict[str, Any]:
        """The DAQ's configuration now (empty when it has none)."""

    def read_deployment(self) -> Dict[str, Any]:
        """The deployment status of the current configuration (``status``, ``message``, ...)."""
        raise NotImplementedError(f"{self.generation} has no deployment status")

    def read_rates(self) -> Rates:
        """The detector's and the writer's images per second now, as the DAQ's statistics say.

        Safe to call from another thread of the run while the run's own thread follows an
        acquisition (a write's guard samples the detector's rate that way), bounded by the
        bound in force in the calling thread; it tells the run nothing (no notices) from there.
        """
        raise NotImplementedError(f"{self.generation} reports no rates")

    # -- changing ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def configure(self, step: "ConfigStep", record: "StepRecord") -> None:
        """A config step: never under a running acquisition; apply ``step.config``, wait until
        the DAQ runs with it, and fill ``record`` (``deployment``, ``config``, ``config_id``)."""

    @abc.abstractmethod
    def apply_config(self, changes: Dict[str, Any], step: "Step", record: "StepRecord") -> None:
        """Apply ``changes`` (fields the DAQ no longer shows) before ``step``, waiting for an idle
        writer first (a resumed run re-applying what its kept config steps established)."""

    @abc.abstractmethod
    def wait_ready(self, step: "Step", record: "StepRecord", purpose: Optional[str]) -> str:
        """Wait until the writer takes a write (resetting one that needs it, recorded on ``record``);
        returns the state. ``purpose`` names what waits, for messages (``None``: a wait step)."""

    @abc.abstractmethod
    def wait_for_state(self, state: str, step: "Step") -> bool:
        """Wait until the writer is in ``state``; ``False`` when the bound in force ran out first."""

    @abc.abstractmethod
    def stop_writer(self, step: "Step", record: "StepRecord") -> None:
        """A stop step: stop whatever the writer does (background writes of this run it ends were
        ended on purpose) and wait until it is READY; ``record.acquisition`` is what it stopped."""

    @abc.abstractmethod
    def start(self, step: "WriteStep", record: "StepRecord") -> Acquisition:
        """Start the acquisition of ``step`` exactly once (raises when it provably did not start;
        one whose outcome stayed unknown is never sent again) and register it in the run's
        :class:`Acquisitions` before its request is sent."""

    @abc.abstractmethod
    def follow(self, acquisition: Acquisition, record: "StepRecord", progress: Optional[Progress] = None) -> None:
        """Wait until ``acquisition`` provably ended, then judge it: it passes only when complete
        and confirmed (by the DAQ's log where the generation has one); raises
        :class:`~daq_runner.exceptions.StepFailed` otherwise."""

    @abc.abstractmethod
    def stop(self, acquisition: Acquisition, reason: str, deadline: "Deadline") -> "RecoveryRecord":
        """Stop ``acquisition`` if it still runs, by ``deadline`` whatever bound is in force (a
        second signal may shorten ``deadline`` meanwhile). Never raises: the returned record
        says what happened."""

    @abc.abstractmethod
    def record_end(self, acquisition: Acquisition, record: "StepRecord", log_wait: float = 0.0) -> None:
        """Put into ``record`` what an acquisition that did not pass left (its partial file, the
        images in it), looking up to ``log_wait`` s for the DAQ's own record. Never raises."""

    def verify_files(self, step: "WriteStep", config: Dict[str, Any], expected: "Expected", options: "CheckOptions") -> "Verification":
        """Open and check the files the acquisition of ``step`` wrote, in this generation's
        layout (:mod:`daq_runner.verify`), against ``expected`` (made from ``config``, the
        configuration the write was meant to run with: a generation may need more of it, such
        as its number of writers). Called only when the files' folder is visible on this
        machine. Never raises for a file; :class:`~daq_runner.verify.VerifyExtraMissing`
        without h5py, ``Interrupted`` on a stop request."""
        raise NotImplementedError(f"{self.generation}: no file checks")

    @abc.abstractmethod
    def poll_background(self, wait: bool = False) -> List[Acquisition]:
        """The background acquisitions whose end is known now (a short look), or, with ``wait``,
        all of them (each is then followed by the Runner)."""


def check_supported(batch: "Batch", daq: Union[Daq, type]) -> None:
    """Refuse a batch with a step that needs what the DAQ generation of ``daq`` (a :class:`Daq`
    or its class) does not have, before anything is sent.

    Raises:
        BatchValidationError: one ``file:line: reason`` per step (a step repeated by a sweep
            once), naming what the step asks and what the generation lacks.
    """
    from ._stepkinds import KINDS
    from .batch import MAX_ERRORS
    from .exceptions import BatchValidationError

    errors: Dict[Tuple[int, str], BatchValidationError] = {}
    for step in batch.steps:
        for feature, asked in KINDS[step.kind].needs(step):
            if feature in daq.features:
                continue
            reason = (
                f"{step.kind} {asked} needs {FEATURES[feature]}, which {daq.title} does not have: "
                "remove it from the batch, or run the batch on a DAQ that has it"
            )
            errors.setdefault((step.line, reason), BatchValidationError(reason, batch.path, step.line, step.column))
    if errors:
        found = list(errors.values())
        raise BatchValidationError.from_errors(found[:MAX_ERRORS], len(found[MAX_ERRORS:]))
