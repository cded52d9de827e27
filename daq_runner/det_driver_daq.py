"""The current Standard DAQ generation (``std_det_driver`` and its config REST) behind the DAQ seam.

:class:`DriverDaq` is the second implementation of :class:`~daq_runner.daq.Daq`: the same batch
files run here as on rest_v2, where their steps have a meaning (docs/current-generation.md,
"Each step on each generation"). It drives the DAQ through :class:`~daq_runner.det_driver.DetDriverClient` only.

What each step does here:

- ``config``: waits until the driver is idle, reads the config, merges the step's fields and
  stores the whole document (the config REST merges nothing), then waits until the services
  have restarted and the driver is idle again. ``writer_user_id`` is not stored (the services
  no longer read it): the run keeps it and sends it as ``writer_id`` with every start (a value
  below 1 sends none: the services' own user).
- ``write``: ``output_file`` ``/d/scan.h5`` is the folder ``/d`` and the prefix ``scan_``
  (:func:`start_target`): the acquisition writes ``/d/scan_0.h5`` .. ``/d/scan_<W-1>.h5``, one
  file per writer (W = ``number_of_writers``). One start per step, never sent twice while its
  outcome is unknown. It passes when the driver went back to idle after it without ``error``,
  its last count equals ``n_images``, and the files' own metadata rows add up to ``n_images``
  with no image id missing (no acquisition log exists: the files are the independent record);
  where the files are not visible on this machine, the driver's count alone confirms it and
  the record says so (:attr:`~daq_runner.record.StepRecord.confirmed_by`). Only its own
  acquisition's states count: another client's heard around the start are listed apart
  (``other_states``); where they cannot be told apart (``doubt``) the driver's count is not
  recorded and the files decide (a notice says so; unreadable files fail the write). Before the start
  the config is read once: where someone else stored values other than those the run relies
  on (its config steps' fields, the fields its files are checked against), the run's are
  stored again first (a recovery naming the foreign values); the record's ``config`` is the
  config read just before the start. A config stored during the write (the services restart
  under it) fails the attempt, naming the changed fields.
- ``stop``: the stop command, confirmed by the pushed states, then idle; ``wait`` for a state
  and ``check: {writer}`` through the state map (READY is ``idle``, WRITING any other state);
  ``check: {config}`` reads the config REST. Deployment status, rates, the DAQ's log and a
  writer state UNKNOWN do not exist here: steps that ask for them are refused at validation
  (:attr:`DriverDaq.features`).

The hazards the reference reads from the driver's code are met here: nothing a wrongly typed
start could crash the driver with is sent (:func:`~daq_runner.det_driver_protocol.start_command`);
after an acquisition that ended in ``error`` the writers may be one answer behind and keep their
files open, so the services are restarted (the config stored unchanged) before the next start;
a driver wedged in ``stop``, or in ``recording`` with every image counted, longer than its
writers may take, is recovered the same way; each restart is recorded as a recovery. A driver
that rejects every start, or fails every start also after a restart, fails the step saying what
the DAQ needs.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple, TypeVar
from urllib.parse import urlsplit

from . import events, protocol
from ._deadline import Deadline, bounded, current, detached
from ._filecheck import SHAPE_FIELDS
from ._foreign_config import differing, record_reapplied, shown
from ._text import clauses, redact_url, secrets_in
from ._transport import is_loopback
from .batch import ConfigStep, Step, WriteStep
from .daq import ALLOW_OVERWRITE, DRIVER, READY, WRITING, Acquisition, Daq, Progress, RunServices
from .det_driver import RESTART_TIMEOUT, ConfigChange, DetDriverClient, DriverAcquisition, DriverStatus
from .det_driver_protocol import (
    DEFAULT_CONFIG_USER,
    DEFAULT_WS_URL,
    WRITER_ACK_TIMEOUT_S,
    DriverBuild,
    DriverState,
    acquisition_state,
    default_config_url,
    file_names,
    start_command,
    writer_state,
)
from .exceptions import (
    DaqError,
    DaqRunnerError,
    DaqTimeoutError,
    DaqTransportError,
    DeadlineExceeded,
    DriverBusy,
    OutcomeUnknown,
    StdDaqAdminException,
    StepFailed,
    WriteDeadlineExceeded,
    WriteOutcomeUnknown,
)
from .record import MISSING, RecoveryRecord, StepRecord, iso
from .verify import FILE_TIMEOUT_S
from .resume import acquisition_id

__all__ = ["DriverDaq", "DriverWrite", "start_target", "WRITER_USER_ID"]

WRITER_USER_ID = "writer_user_id"  # kept by the run, sent as writer_id with every start

_SLICE_S = 0.5  # an acquisition is followed in slices of this: a wedge is seen between them
_WEDGE_MARGIN_S = 2.0  # beyond the time the writers have to confirm their last image
_LOST_REPLY_GRACE_S = 10.0  # after a start whose reply was lost: how long to look for it
_CLOCK_SKEW_S = 2.0  # a file's modification time may lie this far before the start
_START_TRIES = 3  # rejected starts ("driver is busy!") of one attempt before it fails
_STOP_PAUSE_S = 0.1  # between attempts to stop an acquisition, doubling up to 0.5 s
_MAX_STATES = 50  # states of one acquisition kept in its record
_START_TIMEOUT_S = 10.0
_POLL_RECONNECT_S = 1.0  # a look at a background acquisition whose session dropped: time to open one
# The driver seen idle (or ending our acquisition) this recently is taken for idle by a start: a
# current build pushes only every 0.1 s, and a start sent to a busy driver is refused anyway
# ("driver is busy!": nothing started), after which the driver is looked at again.
_FRESH_S = 0.5
_REAPPLY_TRIES = 2  # foreign configs re-applied before one start; one more fails the step

T = TypeVar("T")


_PROBE_S = 1.5  # one look at whether the driver accepts a connection
_CONFIG_LOOK_S = 3.0  # after an acquisition its services dropped: one look at the config REST


def start_target(output_file: str) -> Tuple[str, str]:
    """The folder and file prefix of a start for a batch's ``output_file``: ``/d/scan.h5`` ->
    ``("/d", "scan_")``; the files are then ``/d/scan_0.h5``, ``/d/scan_1.h5``... A name that
    does not end in ``.h5`` is kept whole (``/d/scan.nxs`` -> ``scan.nxs_``)."""
    folder, name = os.path.split(output_file)
    if name.endswith(".h5"):
        name = name[: -len(".h5")]
    return folder, name + "_"


def _left(default: float) -> float:
    """Seconds left of the bound in force, or ``default`` without one (a finite number > 0)."""
    left = current().remaining()
    return max(min(left, 1e6) if math.isfinite(left) else default, 0.001)


class DriverWrite(Acquisition):
    """One acquisition this run started (or may have started) on the driver.

    Attributes:
        number: the run's id of it (the driver has none; the report's ``run_id``).
        folder, prefix, files: where it writes (one file per writer).
        config: the config in force when it started.
        driver: the client's record of what was sent and every state seen.
        unknown: why its start's outcome is unknown (the reply was lost), else ``None``.
        lost: why it was lost (a wedge recovered by a restart), else ``None``.
    """

    def __init__(self, step: WriteStep, number: int, folder: str, prefix: str, files: Tuple[str, ...], config: Dict[str, Any]) -> None:
        super().__init__(step)
        self.number = number
        self.folder, self.prefix, self.files = folder, prefix, files
        self.config = config
        self.driver: Optional[DriverAcquisition] = None
        self.unknown: Optional[str] = None
        self.lost: Optional[str] = None

    @property
    def acquisition_id(self) -> str:
        return str(self.number)

    @property
    def end_known(self) -> bool:
        return self.lost is not None or (self.driver is not None and self.driver.outcome is not None)

    @property
    def count(self) -> Optional[int]:
        """Images the driver handed to the writers, as far as seen: the last ``saving_file``
        count, else the last count of any state (a lower bound while it records); ``None``
        where its states cannot be told apart from another acquisition's (the files decide)."""
        if self.driver is None or self.driver.doubt:
            return None
        return self.driver.count if self.driver.count is not None else self.driver.last_count

    @property
    def final_count(self) -> Optional[int]:
        """The driver's count at the end: its ``saving_file`` count; a ``recording`` count that
        reached ``n_images`` when that short state was not sampled; else unknown (``None``,
        also where its states cannot be told apart from another acquisition's)."""
        if self.driver is None or self.driver.doubt:
            return None
        if self.driver.count is not None:
            return self.driver.count
        last = self.driver.last_count
        return last if last == self.step.n_images else None

    @property
    def n_writers(self) -> int:
        return len(self.files)

    def summary(self) -> Dict[str, Any]:
        """The runner's record of it for the report: what was sent, the states seen (one entry
        per state, with the time it was first seen and its last count), the outcome, the count."""
        out: Dict[str, Any] = {"folder": self.folder, "file_prefix": self.prefix, "n_writers": self.n_writers}
        driver = self.driver
        if driver is None:
            return out
        out.update(
            build=driver.build.value,
            request=dict(driver.request),
            sent_at=iso(driver.sent_at),
            states=_states(driver.states),
            outcome=("lost" if self.lost else driver.outcome),
            ended_at=iso(driver.ended_at),
            count=self.count,
            reconnects=driver.reconnects,
        )
        if driver.foreign:
            out["other_states"] = _states(driver.foreign)  # another client's acquisition, heard around the start
        if driver.doubt:
            out["doubt"] = driver.doubt
        if self.unknown:
            out["start_reply_lost"] = self.unknown
        if self.lost:
            out["lost"] = self.lost
        return out


def _states(seen: List[DriverStatus]) -> List[Dict[str, Any]]:
    """States for a report: one entry per state, with the time it was first seen and its last count."""
    states: List[Dict[str, Any]] = []
    for status in seen:
        name = status.state.value if status.state else None
        if states and states[-1]["state"] == name:
            states[-1]["count"] = status.count
        elif len(states) < _MAX_STATES:
            states.append({"state": name, "at": iso(status.at), "count": status.count})
    return states


class DriverDaq(Daq):
    """A current-generation Standard DAQ: its driver at ``url`` (``ws://<host>:8080``) and its
    config REST at ``config_url``.

    Args:
        url: the driver's WebSocket.
        config_url: the config REST (default: the driver's host, port 5000).
        config_user: the user name the config REST records changes under (default ``daq-runner``).
        redis_url: the Redis of the runner lock, if one was given (this generation has none of
            its own): named in the report.
        client: a ready :class:`~daq_runner.det_driver.DetDriverClient` (default: one for the URLs).
        outage_s: how long an unreachable driver or config REST is ridden out.
        writer_timeout_s: how long the driver waits for each writer's answer (5 s in its code):
            a driver in ``stop``, or in ``recording`` with every image counted, for longer than
            this times the writers (plus 2 s) is wedged.
    """

    generation = DRIVER
    title = "the current Standard DAQ generation (std_det_driver)"
    # Connections are refused while the services restart (1 s on daq-sim), then the driver is
    # looked at until it is idle.
    config_restart_s = 1.5
    features = frozenset()
    unguarded = 'the driver\'s own refusal of a second start ("driver is busy!") is the only guard'

    def __init__(
        self,
        url: str = DEFAULT_WS_URL,
        config_url: Optional[str] = None,
        *,
        config_user: Optional[str] = None,
        redis_url: Optional[str] = None,
        client: Optional[DetDriverClient] = None,
        outage_s: float = protocol.DEFAULT_OUTAGE_S,
        writer_timeout_s: float = WRITER_ACK_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.writer_timeout_s = writer_timeout_s
        self._here = is_loopback(urlsplit(url).hostname)  # the DAQ writes on this machine
        self.config_url = config_url or default_config_url(url)
        self.config_user = config_user or DEFAULT_CONFIG_USER
        self.redis_url = redis_url
        self.outage_s = outage_s
        self.outage = f"{outage_s:g} s"
        self.client = client or DetDriverClient(url, self.config_url, user=self.config_user)
        self.run_or_none: Optional[RunServices] = None
        self._starts: Dict[int, int] = {}
        self._files: Dict[str, int] = {}  # real path of every file this run asked for -> its step
        self._restart_needed: Optional[str] = None
        self._failed_starts = 0
        self._n_writers = 0
        self._unseen: Set[str] = set()
        self._unreadable: Optional[str] = None
        self._last_retry_notice = 0.0
        self._seen: Optional[Tuple[Optional[DriverState], Optional[int], float]] = None  # state, count, since
        self._seen_at = 0.0  # when the driver's state was last seen
        self._known: Optional[Dict[str, Any]] = None  # the config the run last stored or took on
        self._known_at = 0.0  # when (Unix time): a foreign one was stored after it

    # -- one run -------------------------------------------------------------------------------

    @property
    def run(self) -> RunServices:
        if self.run_or_none is None:
            raise RuntimeError("the DAQ serves no run: call open() first")
        return self.run_or_none

    def open(self, run: RunServices) -> None:
        from .verify import VerifyExtraMissing, require_verify_extra

        self.run_or_none = run
        self._starts, self._files, self._unseen = {}, {}, set()
        self._restart_needed, self._failed_starts, self._seen, self._last_retry_notice = None, 0, None, 0.0
        self._known, self._known_at = None, 0.0
        try:
            require_verify_extra()
            self._unreadable = None
        except VerifyExtraMissing as exc:
            self._unreadable = str(exc)

    def close(self) -> None:
        self.run_or_none = None
        try:
            self.client.close()
        except Exception:  # closing a session to a driver that went away
            pass

    def describe(self) -> Dict[str, Any]:
        return {
            "generation": self.generation,
            "url": redact_url(self.url),
            "config_url": redact_url(self.config_url),
            "config_user": self.config_user,
            "redis": redact_url(self.redis_url),
        }

    def secrets(self) -> Tuple[str, ...]:
        return secrets_in(self.url, self.config_url, self.redis_url)

    def _ride_out(self, action: Callable[[], T]) -> T:
        """``action()``, again after a transport failure (connection refused, a session that
        dropped) for up to the outage budget; a lost reply (:class:`OutcomeUnknown`) and the
        bound in force are never ridden out."""
        outage = _Outage(self.outage_s, self._notice_retry)
        while True:
            try:
                return action()
            except DaqTransportError as exc:
                outage.failed(exc)

    def _notice_retry(self, exc: BaseException) -> None:
        # One notice per outage second is enough for people and logs.
        run, now = self.run_or_none, time.monotonic()
        if run is not None and now - self._last_retry_notice >= 1.0:
            self._last_retry_notice = now
            run.notice(f"DAQ request failed: {exc}; retrying")

    def check_reachable(self) -> None:
        self._ride_out(lambda: self.client.connect(timeout=_left(10.0)))
        config = self._config()
        if self.run_or_none is not None and self._known is None:
            self._take_on(config)  # the run's starting point

    def answers(self) -> bool:
        """Whether the driver accepts a connection at all (a TCP connection to its port, closed at once)."""
        import socket

        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        try:
            socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=_PROBE_S).close()
        except OSError:
            return False
        return True

    def verify_files(self, step: WriteStep, config: Dict[str, Any], expected: Any, options: Any) -> Any:
        """The W files of the write's acquisition, together (:func:`daq_runner.verify.verify_driver`)."""
        from .verify import verify_driver

        folder, prefix = start_target(step.output_file)
        writers = config.get("number_of_writers")
        n_writers = writers if isinstance(writers, int) and not isinstance(writers, bool) and writers > 0 else self._n_writers
        return verify_driver(folder, prefix, n_writers, expected, options)

    def prepare(self) -> None:
        """Before the first step: what the run cannot do here is said once."""
        if self._unreadable:
            self.run.notice(f"the files cannot be read on this machine ({self._unreadable}): every write is confirmed by the driver's count alone")
        self._observe(self._ride_out(lambda: self.client.state(timeout=_left(10.0))))

    # -- reading --------------------------------------------------------------------------------

    def _config(self) -> Dict[str, Any]:
        config = self._ride_out(self.client.get_config)
        writers = config.get("number_of_writers")
        self._n_writers = writers if isinstance(writers, int) and not isinstance(writers, bool) else 0
        return config

    def read_config(self) -> Dict[str, Any]:
        """The config REST's document, with ``writer_user_id`` as the run keeps it (it is sent per start)."""
        config = dict(self._config())
        established = self.run_or_none.established if self.run_or_none is not None else {}
        if WRITER_USER_ID in established:
            config[WRITER_USER_ID] = established[WRITER_USER_ID]
        return config

    def read_state(self) -> str:
        ours = self._running()
        if ours is not None:
            self._poll(ours)
            if not ours.end_known:
                return WRITING
        return writer_state(self._state().state).value

    def _state(self) -> DriverStatus:
        status = self._ride_out(lambda: self.client.state(timeout=_left(10.0)))
        self._observe(status)
        return status

    def _observe(self, status: DriverStatus) -> None:
        """Note when the driver's state (with its count) began: a wedge is a state that lasts."""
        if self._seen is None or self._seen[:2] != (status.state, status.count):
            self._seen = (status.state, status.count, status.monotonic)
        self._seen_at = status.monotonic

    def _idle_lately(self) -> bool:
        """Whether the driver was seen idle, or ending an acquisition of ours, within :data:`_FRESH_S`."""
        return self._seen is not None and self._seen[0] == DriverState.IDLE and time.monotonic() - self._seen_at < _FRESH_S

    def _wedge_limit(self, n_writers: int) -> float:
        return self.writer_timeout_s * max(n_writers, 1) + _WEDGE_MARGIN_S

    def _wedged(self, state: Optional[DriverState], count: Optional[int], since: float, n_image: Optional[int], n_writers: int) -> Optional[str]:
        """Why the driver is wedged (``None``: it is not): in ``stop``, or in ``recording`` with
        every image counted, longer than its writers may take to confirm the last image."""
        lasted = time.monotonic() - since
        if lasted < self._wedge_limit(n_writers):
            return None
        if state == DriverState.STOP or (state == DriverState.RECORDING and n_image is not None and count == n_image):
            what = "stop" if state == DriverState.STOP else f"recording with all {count} images counted"
            return f"the driver was wedged in {what} for {lasted:.0f} s (a writer did not confirm its last image)"
        return None

    # -- the services: restarted to recover, written once ----------------------------------------

    def _restart(self, step: Optional[Step], record: Optional[StepRecord], reason: str) -> None:
        """Store the config unchanged: every service restarts (the only remote way to bring the
        writers and a wedged driver back); recorded as a recovery."""
        run = self.run
        run.guard()
        run.emit(events.WAITING, step, what="the DAQ services to restart", seconds=current().remaining())
        entry: RecoveryRecord = {"reason": reason, "action": "restart_services (the config stored unchanged)", "at": time.time()}
        try:
            change = self._ride_out(lambda: self.client.restart_services(timeout=_left(RESTART_TIMEOUT), on_progress=self._progress(step)))
        except DaqRunnerError as exc:
            entry["outcome"] = f"failed: {exc}"
            run.add_recovery(record, step, entry)
            raise StepFailed(clauses(reason, f"restarting the DAQ services to recover it failed: {exc}")) from exc
        entry["outcome"] = f"the driver is back and idle after {change.restart_s or 0.0:.1f} s"
        run.add_recovery(record, step, entry)
        self._restart_needed, self._seen = None, None

    def _progress(self, step: Optional[Step]) -> Callable[[str, float], None]:
        def progress(stage: str, elapsed: float) -> None:
            self.run.emit(events.WAITING, step, what=stage, seconds=current().remaining())

        return progress

    # -- idle, before anything is changed ---------------------------------------------------------

    def _running(self) -> Optional[DriverWrite]:
        """This run's acquisition that may still run on the driver (one at most: the driver is busy meanwhile)."""
        run = self.run_or_none
        if run is None:
            return None
        return next((a for a in run.acquisitions.running if isinstance(a, DriverWrite) and a.driver is not None and not a.end_known), None)

    def _ready(self, step: Step, record: StepRecord, purpose: Optional[str]) -> None:
        """Wait until the driver is idle (bounded by the step): an acquisition of this run is
        followed to its end first; the services are restarted where the writers need it (after
        an ``error``) or the driver is wedged."""
        ours = self._running()
        if ours is not None:
            self.run.emit(events.WAITING, step, what=f"the acquisition of step {ours.step.index} to end", seconds=current().remaining())
            self._follow_to_end(ours, step, record)
        if self._restart_needed and purpose == "the write":
            self._restart(step, record, self._restart_needed)
        if purpose == "the write" and self._idle_lately():
            return
        status = self._state()
        while status.state != DriverState.IDLE:
            assert self._seen is not None
            wedged = self._wedged(status.state, status.count, self._seen[2], None, self._n_writers)
            if wedged:
                self._restart(step, record, wedged)
                status = self._state()
                continue
            busy = f"state {status.state.value if status.state else 'busy'}" + (f" count {status.count}" if status.count is not None else "")
            if current().remaining() <= 0:
                raise StepFailed(
                    f"the driver is busy ({busy} for {time.monotonic() - self._seen[2]:.0f} s) and did not become idle in time"
                    + (f"; {purpose} was not started" if purpose else "")
                    + ("; an acquisition that gets no images waits for ever: stop it, or restart the DAQ's services" if status.state == DriverState.WAITING_FOR_FIRST_IMAGE else "")
                )
            self.run.emit(events.WAITING, step, what=f"the driver to be idle ({busy}: another client's acquisition)", seconds=current().remaining())
            before = status
            try:
                status = self.client.wait_for(lambda s: (s.state, s.count) != (before.state, before.count), timeout=min(_left(1.0), 1.0))
            except DaqTimeoutError:
                continue  # no change for a second (or the bound ran out): look again
            except DaqTransportError:  # the session dropped: the services restart
                status = self._ride_out(lambda: self.client.wait_until_ready(timeout=_left(RESTART_TIMEOUT)))
            self._observe(status)

    def wait_ready(self, step: Step, record: StepRecord, purpose: Optional[str]) -> str:
        self._ready(step, record, purpose)
        return READY

    def wait_for_state(self, state: str, step: Step) -> bool:
        if state == READY:  # (a wait step waits for READY with wait_ready, which records its recoveries)
            try:
                self._ready(step, StepRecord.of(step), None)
            except StepFailed:
                return False
            return True
        ours = self._running()
        if ours is not None and not ours.end_known:
            return True
        outage = _Outage(self.outage_s, self._notice_retry)
        while True:
            try:
                self._observe(self.client.wait_for(lambda s: s.state != DriverState.IDLE, timeout=_left(60.0)))
                return True
            except DaqTimeoutError:
                if current().remaining() <= 0:
                    return False
            except DaqTransportError as exc:
                outage.failed(exc)

    # -- changing --------------------------------------------------------------------------------

    def configure(self, step: ConfigStep, record: StepRecord) -> None:
        self._ready(step, record, "the configuration change")
        record.config = self._store(step, step.config)
        self.run.established.update(step.config)

    def apply_config(self, changes: Dict[str, Any], step: Step, record: StepRecord) -> None:
        self._ready(step, record, "re-applying the configuration")
        self._store(step, changes)

    def _store(self, step: Step, fields: Dict[str, Any]) -> Dict[str, Any]:
        """Merge ``fields`` into the config and store it whole, waiting for the services; returns
        the config as the run sees it (``writer_user_id`` is the run's, never stored)."""
        changes = {key: value for key, value in fields.items() if key != WRITER_USER_ID}
        if changes:
            applied = self._update(step, changes)
            if applied.stored:
                self.run.notice(f"configuration stored; the DAQ services were back and idle after {applied.restart_s or 0.0:.1f} s", step)
        config = self.read_config()
        self._take_on(config)
        if WRITER_USER_ID in fields:
            config[WRITER_USER_ID] = fields[WRITER_USER_ID]
        return config

    def _update(self, step: Step, changes: Dict[str, Any]) -> ConfigChange:
        """Store the config with ``changes`` merged (nothing when they are in force), waiting
        for the services to come back; the driver must be idle.

        Raises:
            StepFailed: refused before sending (a name or type change, a wrong type).
            DaqRunnerError: the config REST refused it, or the services did not come back.
        """
        self.run.guard()
        try:
            applied = self._ride_out(lambda: self.client.update_config(changes, timeout=_left(RESTART_TIMEOUT), on_progress=self._progress(step)))
        except ValueError as exc:
            raise StepFailed(f"configuration not sent: {exc}") from None
        self._seen = None
        if applied.stored:
            self._restart_needed = None  # every service restarted with the stored config
        return applied

    # -- the configuration each write runs with ----------------------------------------------------

    def _take_on(self, config: Dict[str, Any]) -> None:
        """``config`` is the run's from now on (stored by it, found at its start, or shown
        unchanged before a write where the run relies on it)."""
        self._known, self._known_at = dict(config), time.time()

    def _relied_on(self) -> Dict[str, Any]:
        """The fields every write relies on: those the run's config steps set (but
        ``writer_user_id``, sent with each start) and those its files are checked against
        (their shape: :data:`~daq_runner._filecheck.SHAPE_FIELDS`, as the run last knew them)."""
        known = self._known or {}
        wanted = {key: known[key] for key in SHAPE_FIELDS if key in known}
        wanted.update((key, value) for key, value in self.run.established.items() if key != WRITER_USER_ID)
        return wanted

    def _foreign(self, step: WriteStep, record: StepRecord, config: Dict[str, Any], reapplied: int) -> bool:
        """Before a start, with ``config`` just read: where someone else stored a config that
        changed a field the run relies on, the run's values are stored again (the services
        restart; a recovery of ``step`` naming the foreign values) and True is returned (the
        caller looks at the driver and the config again); else False.

        Raises:
            StepFailed: changed again after :data:`_REAPPLY_TRIES` re-applications before one
                start (another client keeps changing it), or the re-application failed.
        """
        if self._known is None:
            self._take_on(config)  # the DAQ could not be read before the first step: its config now is the start
            return False
        changes = differing(config, self._relied_on())
        if not changes:
            self._take_on(config)
            return False
        what = (
            f"the DAQ's configuration changed under the run: stored by someone else after {iso(self._known_at)} "
            f"({shown(config, changes)}; the config REST records no author)"
        )
        if reapplied >= _REAPPLY_TRIES:
            raise StepFailed(f"{what}, again after the run's values were re-applied {reapplied} times: another client keeps storing its config; the write was not started")
        applied = self._update(step, changes)
        self._take_on(applied.config)
        outcome = f"applied: the DAQ services were back and idle after {applied.restart_s or 0.0:.1f} s" if applied.stored else "in force already"
        record_reapplied(self.run, step, record, changes, what, outcome)
        return True

    def _ran_with(self, config: Dict[str, Any]) -> Dict[str, Any]:
        """A write's record of the config it runs with (``config``, read just before its start):
        the fields that shape its files and those the run's config steps set."""
        established = self.run.established
        ran = {key: config[key] for key in SHAPE_FIELDS if key in config}
        ran.update((key, established[key] if key == WRITER_USER_ID else config.get(key)) for key in established)
        return ran

    def _stored_during(self, acq: DriverWrite) -> Optional[str]:
        """Why the services dropped ``acq``: a config stored while it ran (one bounded look at
        the config REST, compared with the config it started with), else ``None``."""
        try:
            with bounded(Deadline(_CONFIG_LOOK_S)):
                now = self.client.get_config()
        except DaqRunnerError:
            return None
        was = acq.config
        changed = {key: was.get(key) for key in sorted(set(was) | set(now), key=str) if now.get(key) != was.get(key)}
        if not changed:
            return None
        return f"was dropped by a restart of the DAQ services: someone else stored a config during it ({shown(now, changed)})"

    def stop_writer(self, step: Step, record: StepRecord) -> None:
        run = self.run
        for acquisition in run.acquisitions.background():
            acquisition.stopped_by = step.index  # ended here on purpose
        ours = self._running()
        run.guard()
        if ours is not None:
            self._ride_out(lambda: self.client.stop(ours.driver, timeout=_left(_START_TIMEOUT_S)))
            self._follow_to_end(ours, step, record)
            record.acquisition = ours.summary()
        else:
            status = self._ride_out(lambda: self.client.stop(timeout=_left(_START_TIMEOUT_S)))
            record.acquisition = {"state": status.state.value if status.state else None, "count": status.count}
        self._ready(step, record, None)

    # -- acquisitions ------------------------------------------------------------------------------

    def start(self, step: WriteStep, record: StepRecord) -> Acquisition:
        run = self.run
        rejected: List[str] = []
        reapplied = 0
        while True:
            self._ready(step, record, "the write")
            config = self._config()
            if self._foreign(step, record, config, reapplied):
                reapplied += 1
                continue
            if self._n_writers < 1:
                raise StepFailed(
                    "the DAQ's config sets no number_of_writers (0 writers): its driver would crash at the first image; "
                    "set number_of_writers in the config (its config REST); nothing was sent"
                )
            folder, prefix = start_target(step.output_file)
            files = file_names(folder, prefix, self._n_writers)
            established = run.established.get(WRITER_USER_ID)
            writer_id = established if isinstance(established, int) and not isinstance(established, bool) and established >= 1 else None
            try:
                command = start_command(folder, prefix, step.n_images, writer_id)
            except ValueError as exc:  # never sent: a wrongly typed start can crash the driver
                raise StepFailed(f"start not sent: {exc}") from None
            self._check_files(step, record, files)
            self._starts[step.index] = self._starts.get(step.index, 0) + 1
            acq = DriverWrite(step, acquisition_id(run.invocation, step.index, self._starts[step.index]), folder, prefix, files, config)
            acq.record = record
            for path in files:
                self._files[os.path.realpath(path)] = step.index
            record.acquisition_id, record.acquisition = acq.acquisition_id, None
            earlier = run.acquisitions.of_step(step.index)
            record.files = [{"path": path, "n_images": None} for path in files]
            record.config = self._ran_with(config)
            run.guard()
            run.acquisitions.started(acq)  # from here on it may run: whatever ends the run stops it
            sent_at = time.time()
            try:
                acq.driver = self.client.start(folder, prefix, step.n_images, writer_id, timeout=_left(_START_TIMEOUT_S))
            except DriverBusy as exc:
                self._not_started(acq, earlier)
                self._seen = None  # not idle after all: looked at again
                rejected.append(str(exc))
                if len(rejected) >= _START_TRIES:
                    raise StepFailed(
                        f"the driver rejected the start {len(rejected)} times although it was idle just before ({exc}): "
                        "another client keeps starting acquisitions on it, or it is wedged (restart its services); nothing was started"
                    ) from None
                run.notice(f"the driver rejected the start ({exc}): another acquisition began first; waiting for idle again", step)
                continue
            except StdDaqAdminException as exc:
                self._not_started(acq, earlier)
                raise StepFailed(f"the driver refused the start: {exc}; nothing was started") from None
            except WriteOutcomeUnknown as exc:
                acq.driver = DriverAcquisition(self.client.safe_ws_url, self.client.build or DriverBuild.PERSISTENT, command, sent_at)
                acq.unknown = str(exc)
                run.notice(f"the reply to the start was lost ({exc}): following the driver to see whether acquisition {acq.number} started; it is not sent again", step)
                if isinstance(exc, WriteDeadlineExceeded):
                    raise StepFailed(f"timed out while the outcome of the start was unknown ({exc}); acquisition {acq.number} may have started") from None
            except DaqTransportError:
                self._not_started(acq, earlier)  # not sent: the driver could not be reached
                raise
            self._seen = None  # busy with it now
            record.acquisition = acq.summary()
            return acq

    def _not_started(self, acq: DriverWrite, earlier: Optional[Acquisition]) -> None:
        """``acq`` provably did not start: as if it had never been tried."""
        if acq.record is not None:
            acq.record.files = MISSING
        self.run.acquisitions.ended(acq)
        self.run.acquisitions.restore(acq.step.index, earlier)

    def _check_files(self, step: WriteStep, record: StepRecord, files: Tuple[str, ...]) -> None:
        """Refuse to write over existing files unless allowed; never write through a symlink;
        refuse a folder missing on this machine when the DAQ is here (its start would end in
        ``error`` and leave the writers behind).

        Allowed without ``overwrite``: the files this step's own failed attempt left (not older
        than that attempt), and, when resuming, the files this step left in the run resumed.
        """
        run = self.run
        folder = os.path.dirname(files[0])
        if not os.path.isdir(folder):
            if self._here:
                raise StepFailed(f"folder {folder} does not exist on this machine, where the DAQ writes: its writers could not create the files; nothing was sent")
            if folder not in self._unseen:
                self._unseen.add(folder)
                run.notice(
                    f"{folder} is not visible on this machine: daq-run cannot see whether files there would be overwritten, "
                    "and the writes there are confirmed by the driver's count alone",
                    step,
                )
            return
        links = [path for path in files if os.path.islink(path)]
        if links:
            raise StepFailed(f"{links[0]} is a symbolic link: the DAQ would write through it; nothing was sent")
        for path in files:
            other = self._files.get(os.path.realpath(path))
            if other is not None and other != step.index:
                raise StepFailed(f"{path} is a file step {other} of this run wrote ({os.path.realpath(path)}); nothing was sent")
        existing = [path for path in files if os.path.lexists(path)]
        if not existing:
            return
        earlier = run.acquisitions.of_step(step.index)
        if isinstance(earlier, DriverWrite) and earlier.files == files and earlier.driver is not None:
            since = earlier.driver.sent_at - _CLOCK_SKEW_S
            if all(os.lstat(path).st_mtime >= since for path in existing):
                run.notice(f"replacing {', '.join(existing)}, left by the failed attempt of this step (acquisition {earlier.number})", step)
                return
        resumed = run.resumed
        if resumed is not None and all(resumed.left_the_file(step.index, step.retries, path, [], True) for path in existing):
            run.notice(f"replacing {', '.join(existing)}, left by this step in the run being resumed", step)
            return
        shown = existing[0] + (f" and {len(existing) - 1} more of this write's files" if len(existing) > 1 else "")
        if not (step.overwrite or run.overwrite):
            unproven = (
                " (nothing proves they are the ones this step left in the run resumed: the report does not name its acquisition, "
                "and this DAQ generation keeps no log)" if resumed is not None else ""
            )
            raise StepFailed(
                f"{shown} exist{unproven}: the DAQ's writers would overwrite them; {ALLOW_OVERWRITE}; nothing was sent"
            )
        record.overwrote = True
        run.notice(f"overwriting {shown} (overwrite allowed)", step)

    def follow(self, acquisition: Acquisition, record: StepRecord, progress: Optional[Progress] = None) -> None:
        assert isinstance(acquisition, DriverWrite)
        acq = acquisition
        step = acq.step
        if not acq.end_known:
            self._follow_to_end(acq, step, record, progress)
        self.run.acquisitions.ended(acq)
        self._judge(acq, record)

    def _follow_to_end(self, acq: DriverWrite, step: Step, record: StepRecord, progress: Optional[Progress] = None) -> None:
        """Read the driver's states of ``acq`` until its outcome, bounded by the bound in force;
        a wedge is recovered (the acquisition is then lost), a dropped session opened again."""
        assert acq.driver is not None
        client = self.client
        n_image = acq.step.n_images

        def on_state(status: DriverStatus) -> None:
            if progress is not None and status.state is not None:
                mapped = acquisition_state(status.state)
                progress(status.count or 0, mapped.value if mapped else None)

        if acq.unknown and not acq.driver.states:
            self._look_for(acq, on_state)
        outage = _Outage(self.outage_s, self._notice_retry)
        while not acq.end_known:
            try:
                client.follow(acq.driver, timeout=min(_left(_SLICE_S), _SLICE_S), reconnect=True, on_state=on_state)
                outage.over()
                if acq.driver.outcome is not None:  # the driver is idle once it pushed the outcome (or was already)
                    self._observe(DriverStatus(DriverState.IDLE, None, time.time(), time.monotonic()))
            except DaqTimeoutError:
                if current().remaining() <= 0:
                    last = acq.driver.states[-1] if acq.driver.states else None
                    # The images are the record's (n_written, counted once the acquisition ended).
                    where = f"last state {last.state.value if last and last.state else 'none'}"
                    whose = "" if acq.step is step else f" waiting for the acquisition of step {acq.step.index} to end,"
                    raise StepFailed(f"timed out after {step.timeout:g} s{whose} before {n_image} images were counted ({where})") from None
                outage.over()  # a slice without an end: look for a wedge
            except DaqTransportError as exc:
                outage.failed(exc)  # the driver does not take a session: ridden out for the outage budget
            last = acq.driver.states[-1] if acq.driver.states else None
            if last is not None and not acq.end_known:
                wedged = self._wedged(last.state, last.count, last.monotonic, n_image, acq.n_writers)
                if wedged:
                    acq.lost = clauses(wedged, "the DAQ services were restarted to recover it")
                    self._restart(step, record, wedged)

    def _look_for(self, acq: DriverWrite, on_state: Callable[[DriverStatus], None]) -> None:
        """After a start whose reply was lost: did it start? Its states within a grace period,
        else its files written since; with neither it did not start (and is not sent again)."""
        assert acq.driver is not None
        grace_end = time.monotonic() + _LOST_REPLY_GRACE_S
        while not acq.driver.states and time.monotonic() < grace_end:
            try:
                self.client.follow(acq.driver, timeout=min(_SLICE_S, max(grace_end - time.monotonic(), 0.01)), reconnect=True, on_state=on_state)
            except DeadlineExceeded:
                if current().remaining() <= 0:
                    raise StepFailed(f"timed out while looking for acquisition {acq.number}, whose start's reply was lost") from None
            except DaqTimeoutError:
                pass
            except DaqTransportError:
                current().sleep(0.1)
        if acq.driver.states:
            self.run.notice(f"acquisition {acq.number} did start", acq.step)
            return
        since = acq.driver.sent_at - _CLOCK_SKEW_S
        if any(os.path.exists(path) and os.path.getmtime(path) >= since for path in acq.files):
            # It ran and ended unseen (its outcome went to another session): the files decide.
            acq.driver.outcome, acq.driver.ended_at = DriverState.IDLE.value, time.time()
            self.run.notice(f"acquisition {acq.number} did start and has ended: its files were written", acq.step)
            return
        self.run.acquisitions.ended(acq)
        raise StepFailed(
            f"the reply to the start was lost and the driver showed no sign of acquisition {acq.number} "
            f"within {_LOST_REPLY_GRACE_S:g} s (idle, no file written): it did not start"
        )

    # -- judging: the driver's states and the files -----------------------------------------------

    def _read_files(self, acq: DriverWrite, n_images: Optional[int], timeout: float = FILE_TIMEOUT_S) -> "_FilesSeen":
        """What the files of ``acq`` say about ``n_images`` (``None``: as many as they hold, for
        an acquisition stopped on purpose whose final count was not seen); ``timeout`` bounds
        each file-system operation (a hung mount)."""
        unread = [None] * acq.n_writers
        if not os.path.isdir(acq.folder):
            return _FilesSeen(unread, f"{acq.folder} is not visible on this machine")
        if self._unreadable:
            return _FilesSeen(unread, self._unreadable)
        from .verify import CheckOptions, Expected, verify_driver

        options = CheckOptions(timeout=timeout)
        try:
            result = verify_driver(acq.folder, acq.prefix, acq.n_writers, Expected.from_config(acq.config, n_images or 0), options)
            if n_images is None:
                found = sum(f.images or 0 for f in result.files)
                result = verify_driver(acq.folder, acq.prefix, acq.n_writers, Expected.from_config(acq.config, found), options)
        except ValueError as exc:
            return _FilesSeen(unread, f"the config does not describe the files: {exc}")
        per_file = [f.images for f in result.files]
        # What the files say about the images: each readable, its metadata sound, every image
        # id there once (the other checks are the file checks' own: docs/file-checks.md).
        problems = [f"{f.path}: {c.name}: {c.reason}" for f in result.files for c in f.checks if c.name in ("readable", "layout", "metadata") and not c.passed]
        problems += [f"{c.name}: {c.reason}" for c in result.checks if not c.passed]
        return _FilesSeen(per_file, None, "; ".join(problems) or None)

    def _judge(self, acq: DriverWrite, record: StepRecord) -> None:
        """Pass only an acquisition that went back to idle without ``error``, whose final count
        is ``n_images`` (fewer when a stop step ended it on purpose) and whose files hold them
        (the count alone where they cannot be read here)."""
        step, driver = acq.step, acq.driver
        assert driver is not None
        record.acquisition_id, record.acquisition = acq.acquisition_id, acq.summary()
        record.daq_log = None
        if acq.lost:
            self._record_files(acq, record, None)
            raise StepFailed(f"the acquisition was lost: {acq.lost}")
        if driver.outcome == DriverState.ERROR.value:
            self._record_files(acq, record, None)
            self._failed(acq)
        self._failed_starts = 0
        on_purpose = acq.stopped_by is not None
        final = acq.final_count
        wanted = final if on_purpose else step.n_images
        seen = self._read_files(acq, wanted)
        self._record_files(acq, record, seen.per_file)
        if driver.doubt:
            # Its states may be another client's acquisition's: its own files decide.
            self.run.notice(f"acquisition {acq.number}: {driver.doubt}; its files ({acq.folder}/{acq.prefix}<i>.h5) decide", step)
        if driver.outcome == DriverState.FILE_SAVED.value:
            ended = "ended file_saved"
        elif driver.reconnects:
            ended = self._stored_during(acq) or "went back to idle without file_saved after its session dropped (the DAQ services restarted?)"
        else:
            ended = "went back to idle without file_saved (another client's session took its outcome)"
        counted = (
            "its count not told apart from another client's acquisition"
            if driver.doubt
            else f"{final if final is not None else acq.count}/{step.n_images} images counted by the driver"
        )
        if final is not None and final != wanted:
            raise StepFailed(f"the acquisition {ended} with {counted}")
        if seen.unreadable is None:
            if seen.problem:
                raise StepFailed(f"the acquisition {ended} with {counted}, but its files do not confirm {wanted if wanted is not None else 'its'} images: {seen.problem}")
            record.confirmed_by = "files"
            record.daq_log_reason = "this DAQ generation keeps no acquisition log: confirmed by its files" + (
                " (the driver's states could not be told apart from another client's acquisition)" if driver.doubt else ""
            )
        elif driver.doubt:
            raise StepFailed(f"the acquisition {ended}, {counted}, and its files cannot be read here ({seen.unreadable}): it cannot be confirmed")
        elif final is None:
            raise StepFailed(
                f"the acquisition {ended} without its final count (saving_file was not seen; last count {acq.count}), "
                f"and its files cannot be read here ({seen.unreadable}): it cannot be confirmed"
            )
        else:
            record.confirmed_by = "driver_count"
            record.daq_log_reason = f"this DAQ generation keeps no acquisition log, and its files cannot be read here ({seen.unreadable}): confirmed by the driver's count alone"
        if on_purpose:
            record.stopped_by_step = acq.stopped_by

    def _failed(self, acq: DriverWrite) -> None:
        """An acquisition that ended in ``error``: the writers may be one answer behind and keep
        their files open, so the services restart before the next start. Raises :class:`StepFailed`."""
        self._failed_starts += 1
        began = not any(s.state in (DriverState.WAITING_FOR_FIRST_IMAGE, DriverState.RECORDING) for s in acq.driver.states) if acq.driver else True
        self._restart_needed = f"the acquisition of step {acq.step.index} ended in error: the writers may be one answer behind and keep its files open"
        if began and os.path.isdir(acq.folder):
            what = f"while its writers created the files {acq.folder}/{acq.prefix}<i>.h5"
            needs = "its writers could not create them in that folder (it exists): see the writers' journal (a writer that does not answer, permissions for the writer_id)"
        elif began:
            what = f"while its writers created the files {acq.folder}/{acq.prefix}<i>.h5"
            needs = f"the folder {acq.folder} must exist on the DAQ and its writers must be able to create files there"
        else:
            what = "while its writers wrote or closed the files"
            needs = "look at the DAQ's writers (their journal): a full disk, a file system that went away"
        again = f" ({self._failed_starts} failures in a row, also after the services were restarted)" if self._failed_starts > 1 else ""
        raise StepFailed(f"the driver ended the acquisition in error {what}{again}: {needs}; the DAQ services are restarted before the next start")

    def _record_files(self, acq: DriverWrite, record: StepRecord, per_file: Optional[List[Optional[int]]]) -> None:
        """The write's files in its record: the images each holds as read, else its round-robin
        share of the driver's count (the k-th image goes to writer k mod W); and the images
        written (``n_written``), their sum: one number in the step, its files, the totals and
        ``daq-run show`` (``None`` where neither the files nor the driver say any)."""
        count, writers = acq.count, acq.n_writers
        shares = [None if count is None else (count - i + writers - 1) // writers for i in range(writers)]
        images = [read if read is not None else share for read, share in zip(per_file or [None] * writers, shares)]
        record.files = [{"path": path, "n_images": n} for path, n in zip(acq.files, images)]
        known = [n for n in images if n is not None]
        record.n_written = sum(known) if known else None

    # -- what an acquisition that did not pass left ---------------------------------------------------

    def record_end(self, acquisition: Acquisition, record: StepRecord, log_wait: float = 0.0) -> None:
        assert isinstance(acquisition, DriverWrite)
        acq = acquisition
        if acq.driver is None or (acq.unknown and not acq.driver.states):
            return  # never sent, or no sign that it started
        try:
            # While the run ends: a file system that does not answer must not hold it up.
            seen = self._read_files(acq, acq.count or 0, timeout=1.0 + log_wait)
            self._record_files(acq, record, seen.per_file)
            if record.n_written is None:
                record.n_written = 0  # it started (states were seen), and neither its files nor the driver say more
            record.acquisition_id, record.acquisition = acq.acquisition_id, acq.summary()
        except Exception:  # a file system gone, Interrupted, a bug: what was seen stays the answer
            pass

    def poll_background(self, wait: bool = False) -> List[Acquisition]:
        waiting = [acq for acq in self.run.acquisitions.background() if isinstance(acq, DriverWrite)]
        if wait:
            return list(waiting)
        for acq in waiting:
            self._poll(acq)
        return [acq for acq in waiting if acq.end_known]

    def _poll(self, acq: DriverWrite) -> None:
        """A short look at ``acq``'s states (recorded in it); a session that dropped is opened again."""
        if acq.driver is None or acq.end_known:
            return
        try:
            self.client.follow(acq.driver, timeout=0.02 if acq.driver.connected else _POLL_RECONNECT_S, reconnect=True)
        except DaqError:
            pass

    # -- stopping, written once ---------------------------------------------------------------------

    def stop(self, acquisition: Acquisition, reason: str, deadline: Deadline) -> RecoveryRecord:
        """Stop ``acquisition`` if it still runs and wait for the driver's outcome, by
        ``deadline``; any error is tried again after a short pause. Never raises."""
        assert isinstance(acquisition, DriverWrite)
        acq = acquisition
        entry: Dict[str, Any] = {"reason": reason, "action": "stop", "at": time.time()}
        errors: List[str] = []
        attempt, pause = 0, _STOP_PAUSE_S
        try:
            with detached(deadline):
                while True:
                    attempt += 1
                    try:
                        if acq.driver is None or acq.end_known:
                            entry["outcome"] = f"acquisition {acq.number} was not running"
                            break
                        self.client.follow(acq.driver, timeout=0.02, reconnect=True)
                    except (DaqTimeoutError, DaqTransportError):
                        pass  # read what is there; the stop below sees the rest
                    try:
                        if acq.end_known:
                            entry["outcome"] = f"acquisition {acq.number} was not running"
                            break
                        self.client.stop(acq.driver, timeout=max(deadline.remaining(), 0.01))
                        try:
                            self.client.follow(acq.driver, timeout=max(deadline.remaining(), 0.01), reconnect=True)
                            entry["outcome"] = f"stopped acquisition {acq.number} ({acq.driver.outcome}, {acq.count or 0} images counted)"
                        except (DaqRunnerError, OSError):
                            entry["outcome"] = f"stopped acquisition {acq.number} (its end was not seen)"
                        break
                    except (DaqRunnerError, OSError) as exc:
                        if not errors or errors[-1] != str(exc):
                            errors.append(str(exc))
                        if deadline.remaining() < _STOP_PAUSE_S:
                            entry["outcome"] = f"could not stop acquisition {acq.number}, it may still be running: {exc}"
                            self.run.notice(entry["outcome"], acq.step)
                            break
                        deadline.sleep(min(pause, deadline.remaining() / 2))
                        pause = min(pause * 2, 0.5)
        except Exception as exc:  # the transport's own stop (Interrupted) or a bug: still recorded
            entry["outcome"] = f"could not stop acquisition {acq.number}, it may still be running: {exc!r}"
        entry["attempts"] = attempt
        if errors:
            entry["errors"] = errors[:5]
        self.run.acquisitions.ended(acq)
        return entry  # type: ignore[return-value]


class _FilesSeen(NamedTuple):
    """What the files of an acquisition said: the images in each (``None`` where not read), why
    they could not be read here, or why they do not confirm the images."""

    per_file: List[Optional[int]]
    unreadable: Optional[str]
    problem: Optional[str] = None


class _Outage:
    """Transport failures in a row (a driver that takes no session, a config REST that does not
    answer): each is told to ``notify`` and ridden out with a growing pause, for ``budget`` s in
    all; then the last one is raised (the Runner takes the DAQ for gone). A lost reply and the
    bound in force are raised at once."""

    __slots__ = ("budget", "notify", "began", "pause")

    def __init__(self, budget: float, notify: Callable[[BaseException], None]) -> None:
        self.budget = budget
        self.notify = notify
        self.began: Optional[float] = None
        self.pause = 0.1

    def failed(self, exc: DaqTransportError) -> None:
        if isinstance(exc, (OutcomeUnknown, DeadlineExceeded)):
            raise exc
        now = time.monotonic()
        self.began = now if self.began is None else self.began
        if now - self.began >= self.budget:
            raise exc
        self.notify(exc)
        current().sleep(min(self.pause, self.budget - (now - self.began)))
        self.pause = min(self.pause * 2, 2.0)

    def over(self) -> None:
        self.began, self.pause = None, 0.1
