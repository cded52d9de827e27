"""The simulated current-generation DAQ without its network faces: driver state machine,
writers, detector, config file and the restarts of the services.

It follows ``std_det_driver``'s code as section 10 of the project's Standard DAQ reference
describes it:

- ``idle`` -> ``creating_file`` (each writer creates its file and answers; the driver reads
  the answers in writer order, waits ``writer_timeout_s`` for each, and gives up at the
  first failure, leaving the other writers' answers queued: they stay one answer behind)
  -> ``waiting_for_first_image`` (no limit) -> ``recording`` (the first push can say
  ``count: 0``) -> after ``n_image`` images or a stop: every writer confirms its last image
  (a writer that does not answer leaves the driver in ``recording``/``stop`` until the
  services restart) -> ``saving_file`` -> ``file_saved`` or ``error`` -> ``idle`` (turned by
  the first session that pushes the outcome; kept when no session is connected);
- a stop acts only in ``creating_file``, ``waiting_for_first_image`` and ``recording``; one
  that lands during ``creating_file`` is overwritten by ``waiting_for_first_image``;
- the k-th image goes to writer k mod W (W = ``number_of_writers``, 0 when absent: the
  first image then crashes the driver);
- a writer keeps its file open after a failed acquisition: creating the same file again
  fails;
- the services read the config file when they start: a stored config restarts all of
  them (sessions dropped, connections refused for ``restart_s``); a config they cannot
  read keeps them down until a good one is stored; a crash restarts the driver alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ...det_driver_protocol import (
    OUTCOME_STATES,
    PUSH_PERIOD_S,
    STOPPABLE_STATES,
    WRITER_ACK_TIMEOUT_S,
    DriverBuild,
    DriverState,
    services_config_problem,
)

__all__ = ["DriverSimSettings", "DriverCore", "DEFAULT_DRIVER_CONFIG", "FAULTS"]

log = logging.getLogger(__name__)

# A small Eiger with two writers. gpfs_block_size 1 MiB (the services' default is 16 MiB):
# files grow by whole chunks of it, which keeps a simulated acquisition's files small.
DEFAULT_DRIVER_CONFIG: Dict[str, Any] = {
    "detector_name": "SIM-EIGER-64K",
    "detector_type": "eiger",
    "n_modules": 1,
    "bit_depth": 16,
    "image_pixel_height": 256,
    "image_pixel_width": 256,
    "start_udp_port": 50000,
    "module_positions": {},
    "number_of_writers": 2,
    "gpfs_block_size": 1024 * 1024,
}
# A simulator limit (frames are held in memory), not a rule of the real services.
_MAX_PIXELS = 4096 * 4096
# The driver's receive timeout on the detector's stream: a silent detector is looked at this often.
_DETECTOR_RECV_S = 1.0
# What /sim/faults arms (see DriverCore.arm_faults).
FAULTS = ("silent_writer", "slow_writers_s", "silent_detector", "drop_sessions", "drop_on_start", "restart_s", "secondary_fails")

S = DriverState


@dataclass
class DriverSimSettings:
    """How the simulated current-generation DAQ behaves.

    Args:
        build: ``"persistent"`` (builds since March 2025) or ``"per-connection"`` (April 2024
            to March 2025, modelled as its last version: ``count``, ``file_prefix``,
            ``stop_all`` and ``status`` exist).
        frame_rate: images per second the detector sends, all the time.
        restart_s: how long the services are down after a stored config or a crash.
        writer_timeout_s: how long the driver waits for each writer's answer (5 s).
        push_period_s: how often sessions get the state when it does not change (default:
            the build's, 0.1 s or 1 s).
    """

    build: str = DriverBuild.PERSISTENT.value
    frame_rate: float = 100.0
    restart_s: float = 1.0
    writer_timeout_s: float = WRITER_ACK_TIMEOUT_S
    push_period_s: Optional[float] = None

    @property
    def period_s(self) -> float:
        return self.push_period_s if self.push_period_s is not None else PUSH_PERIOD_S[DriverBuild(self.build)]


def sim_config_problem(config: Any) -> Optional[str]:
    """Why the simulated services cannot run ``config`` (the real ones' reasons, plus the
    simulator's image size limit), or ``None``."""
    problem = services_config_problem(config)
    if problem is None:
        height, width = int(config["image_pixel_height"]), int(config["image_pixel_width"])
        if height < 1 or width < 1 or height * width > _MAX_PIXELS:
            problem = f"image size {height}x{width} (daq-sim holds at most {_MAX_PIXELS} pixels per image)"
    return problem


_SUCCESS, _FAILURE = "success", "failure"


class _Writer:
    """One ``std_det_writer``: creates, writes and closes its file, answering on its own queue."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.answers: "queue.Queue[str]" = queue.Queue()
        self.file: Any = None  # hdf5.WriterFile, imported lazily (h5py)
        self.silent = False
        self.delay_s = 0.0

    def _answer(self, answer: str) -> None:
        if self.delay_s > 0:
            # A slow disk: the answer comes late (into the queue the driver has then).
            timer = threading.Timer(self.delay_s, lambda answers=self.answers: answers.put(answer))
            timer.daemon = True
            timer.start()
        else:
            self.answers.put(answer)

    def create(self, path: str, config: Dict[str, Any]) -> None:
        from .hdf5 import WriterFile

        if self.silent:
            return
        if self.file is not None and self.file.path == path:
            # HDF5 cannot truncate a file this process holds open.
            self._answer(_FAILURE)
            return
        try:
            new = WriterFile(path, config)
        except (OSError, ValueError) as exc:
            log.info("writer %d cannot create %s: %s", self.index, path, exc)
            self._answer(_FAILURE)
            return
        old, self.file = self.file, new
        if old is not None:
            old.close()
        self._answer(_SUCCESS)

    def write(self, frames: Any, image_ids: Any) -> None:
        if not self.silent and self.file is not None:
            self.file.append(frames, image_ids)

    def confirm_last_image(self) -> None:
        if not self.silent:
            self._answer(_SUCCESS)

    def close_file(self) -> None:
        if self.silent:
            return
        if self.file is not None:
            self.file.close()
            self.file = None
        self._answer(_SUCCESS)

    def shut_down(self) -> None:
        """The writer process ends (a restart of the services)."""
        if self.file is not None:
            self.file.close()
            self.file = None


class DriverCore:
    """State and behaviour of a simulated current-generation DAQ (no network).

    Args:
        settings: see :class:`DriverSimSettings`.
        config_path: the config file the services read and the config REST serves.
        initial_config: written to ``config_path`` at :meth:`start` and :meth:`reset`.

    The network faces attach through :meth:`attach`: ``go_down(abrupt)`` drops every
    session and stops accepting connections, ``go_up()`` accepts again, ``drop_sessions()``
    drops every session.
    """

    def __init__(self, settings: DriverSimSettings, config_path: str, initial_config: Optional[Dict[str, Any]] = None) -> None:
        self.settings = settings
        self._settings_at_start = copy.copy(settings)
        self.config_path = config_path
        self.initial_config = copy.deepcopy(initial_config or DEFAULT_DRIVER_CONFIG)
        problem = sim_config_problem(self.initial_config)
        if problem:
            raise ValueError(f"the initial config cannot run: {problem}")
        self.cond = threading.Condition(threading.RLock())
        self.state = S.IDLE
        self.count = 0
        self.up = False
        self.down_reason: Optional[str] = "not started"
        self.config: Dict[str, Any] = {}
        self.writers: List[_Writer] = []
        self._token = 0  # the acquisition thread that may still change the state
        self._generation = 0  # restarts: the newest one brings the services up
        self._closed = threading.Event()
        self._silent_detector = False
        self._restart_override: Optional[float] = None
        self.secondary_fails = False
        self.drop_on_start = False
        self.starts = 0  # starts taken (tests count them: a start is never sent twice)
        self._born = time.monotonic()
        self._hooks: Dict[str, Callable[..., None]] = {}

    def attach(self, go_down: Callable[[bool], None], go_up: Callable[[], None], drop_sessions: Callable[[], None]) -> None:
        self._hooks = {"go_down": go_down, "go_up": go_up, "drop_sessions": drop_sessions}

    @property
    def generation(self) -> int:
        """Counts the restarts and resets: what ran before one belongs to a dead driver."""
        with self.cond:
            return self._generation

    @property
    def build(self) -> DriverBuild:
        return DriverBuild(self.settings.build)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> "DriverCore":
        """Write the initial config and bring the services up."""
        self.write_config(self.initial_config)
        self._bring_up(self._generation)
        return self

    def close(self) -> None:
        self._closed.set()
        with self.cond:
            self._token += 1
            self._generation += 1
            self.up = False
            self.cond.notify_all()
        for writer in self.writers:
            writer.shut_down()

    def reset(self) -> None:
        """Back to a clean DAQ (``POST /sim/reset``): settings and initial config restored, no
        faults, no acquisition, fresh writers, idle; every session dropped."""
        for setting in dataclasses.fields(DriverSimSettings):
            setattr(self.settings, setting.name, getattr(self._settings_at_start, setting.name))
        with self.cond:
            self._token += 1
            self._generation += 1
            self._silent_detector = False
            self._restart_override = None
            self.secondary_fails = False
            self.drop_on_start = False
            self.starts = 0
            self.cond.notify_all()
        self.write_config(self.initial_config)
        hook = self._hooks.get("drop_sessions")
        if hook is not None:
            hook()
        with self.cond:
            writers, self.writers = self.writers, []
        for writer in writers:
            writer.shut_down()
        self._bring_up(self._generation)

    def write_config(self, config: Any) -> None:
        """Store ``config`` in the config file (as the config REST does)."""
        directory = os.path.dirname(self.config_path) or "."
        temporary = os.path.join(directory, f".{os.path.basename(self.config_path)}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=4)
        os.replace(temporary, self.config_path)

    def _read_config(self) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        try:
            with open(self.config_path, encoding="utf-8") as handle:
                config = json.load(handle)
        except (OSError, ValueError) as exc:
            return None, f"cannot read the config file: {exc}"
        problem = sim_config_problem(config)
        return (None, problem) if problem else (config, None)

    def _bring_up(self, generation: int) -> None:
        config, problem = self._read_config()
        with self.cond:
            if generation != self._generation or self._closed.is_set():
                return
            if config is None:
                # The services fail at start: the driver accepts no connection until a good config is stored.
                self.up, self.down_reason = False, problem
                log.warning("daq-sim driver services do not start: %s", problem)
                return
            if not self.writers or len(self.writers) != int(config.get("number_of_writers", 0)):
                # New writer processes (a restart of every service, a reset, another count).
                for writer in self.writers:
                    writer.shut_down()
                self.writers = [_Writer(i) for i in range(int(config.get("number_of_writers", 0)))]
            self.config = config
            self.state, self.count = S.IDLE, 0
            self.up, self.down_reason = True, None
            self.cond.notify_all()
        hook = self._hooks.get("go_up")
        if hook is not None:
            hook()

    def restart(self, *, driver_only: bool = False) -> None:
        """The services restart (a stored config; ``driver_only``: the driver crashed and
        systemd restarts it): sessions drop at once, connections are refused for
        ``restart_s``, then the services read the config file and the driver is idle."""
        with self.cond:
            self._generation += 1
            generation = self._generation
            self._token += 1
            self.up, self.down_reason = False, "restarting"
            self.state, self.count = S.IDLE, 0
            self.cond.notify_all()
            for writer in self.writers:
                # The driver's sockets go with it: answers queued for it are lost.
                writer.answers = queue.Queue()
                if not driver_only:
                    writer.shut_down()
            if not driver_only:
                self.writers = []
            delay = self._restart_override if self._restart_override is not None else self.settings.restart_s
        hook = self._hooks.get("go_down")
        if hook is not None:
            hook(True)
        threading.Thread(target=self._come_back, args=(generation, delay), name="daq-sim-driver-restart", daemon=True).start()

    def _come_back(self, generation: int, delay: float) -> None:
        if delay > 0 and self._closed.wait(delay):
            return
        self._bring_up(generation)

    def crash(self, why: str) -> None:
        """The driver process dies (``std::terminate``): open sessions drop, systemd restarts it."""
        log.warning("daq-sim driver crashes: %s", why)
        self.restart(driver_only=True)

    # -- faults --------------------------------------------------------------------------------

    def arm_faults(self, faults: Dict[str, Any]) -> Dict[str, Any]:
        """Arm faults (``POST /sim/faults``); returns what is armed.

        ``silent_writer: i`` writer i answers nothing (create, confirm, close) until the
        services restart; ``slow_writers_s: S`` every writer answers S seconds late (a slow
        disk; 0 ends it); ``silent_detector: true|false`` the detector sends nothing;
        ``drop_sessions: true`` every open session drops now (the driver goes on);
        ``drop_on_start: true`` the next start taken drops every session right after (the
        acquisition runs: its outcome is unknown to the client);
        ``restart_s: S`` restarts take S seconds (a slow restart); ``secondary_fails: true``
        the next stored config answers HTTP 500 "Failed to synchronize with the secondary
        server" (stored here all the same).

        Raises:
            ValueError: an unknown fault or value.
        """
        unknown = sorted(set(faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)} (known: {', '.join(FAULTS)})")
        with self.cond:
            if "silent_writer" in faults:
                index = faults["silent_writer"]
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.writers):
                    raise ValueError(f"silent_writer must be a writer index 0..{len(self.writers) - 1}")
                self.writers[index].silent = True
            if "slow_writers_s" in faults:
                seconds = faults["slow_writers_s"]
                if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 60:
                    raise ValueError("slow_writers_s must be a number of seconds in [0, 60]")
                for writer in self.writers:
                    writer.delay_s = float(seconds)
            if faults.get("drop_on_start"):
                self.drop_on_start = True
            if "silent_detector" in faults:
                self._silent_detector = bool(faults["silent_detector"])
            if "restart_s" in faults:
                seconds = faults["restart_s"]
                if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 3600:
                    raise ValueError("restart_s must be a number of seconds in [0, 3600]")
                self._restart_override = float(seconds)
            if faults.get("secondary_fails"):
                self.secondary_fails = True
        if faults.get("drop_sessions"):
            hook = self._hooks.get("drop_sessions")
            if hook is not None:
                hook()
        return self.armed_faults()

    def armed_faults(self) -> Dict[str, Any]:
        with self.cond:
            armed: Dict[str, Any] = {}
            silent = [writer.index for writer in self.writers if writer.silent]
            if silent:
                armed["silent_writers"] = silent
            slow = max((writer.delay_s for writer in self.writers), default=0.0)
            if slow:
                armed["slow_writers_s"] = slow
            if self.drop_on_start:
                armed["drop_on_start"] = True
            if self._silent_detector:
                armed["silent_detector"] = True
            if self._restart_override is not None:
                armed["restart_s"] = self._restart_override
            if self.secondary_fails:
                armed["secondary_fails"] = True
            return armed

    # -- the state machine -----------------------------------------------------------------------

    def snapshot(self) -> Tuple[DriverState, int]:
        with self.cond:
            return self.state, self.count

    def wait_for_change_or_timeout(self, timeout: float, current: Optional[DriverState] = None) -> Tuple[DriverState, int]:
        """The driver's ``wait_for_change_or_timeout``: the state once it differs from ``current``
        (default: the state now), or after ``timeout``."""
        with self.cond:
            current = self.state if current is None else current
            self.cond.wait_for(lambda: self.state != current or not self.up, timeout)
            return self.state, self.count

    def change_state(self, state: DriverState) -> None:
        with self.cond:
            self.state = state
            if state == S.IDLE:
                self.count = 0
            self.cond.notify_all()

    def _change(self, token: int, state: DriverState) -> bool:
        """The acquisition thread's state change; ``False`` once that thread is abandoned."""
        with self.cond:
            if token != self._token:
                return False
            self.change_state(state)
            return True

    def stop(self) -> None:
        """A stop: acts only where the driver is recording (creating_file, waiting, recording)."""
        with self.cond:
            if self.state in STOPPABLE_STATES:
                self.change_state(S.STOP)

    def start_acquisition(self, base: str, n_image: int) -> None:
        """Start an acquisition writing ``<base><i>.h5`` (the driver's ``writer_driver::start``)."""
        with self.cond:
            self._token += 1
            token = self._token
            self.starts += 1
            drop, self.drop_on_start = self.drop_on_start, False
        if drop:  # before the acquisition shows: no session hears of it
            hook = self._hooks.get("drop_sessions")
            if hook is not None:
                hook()
        threading.Thread(target=self._run, args=(token, base, n_image), name="daq-sim-driver-acquisition", daemon=True).start()

    def _run(self, token: int, base: str, n_image: int) -> None:
        try:
            if not self._change(token, S.CREATING_FILE):
                return
            with self.cond:
                writers, config = list(self.writers), copy.deepcopy(self.config)
            for writer in writers:
                writer.create(f"{base}{writer.index}.h5", config)
            if not self._acknowledged(token, writers):
                self._change(token, S.ERROR)
                return
            if not self._change(token, S.WAITING_FOR_FIRST_IMAGE):
                return
            if not self._record(token, writers, config, n_image):
                return
            for writer in writers:
                writer.confirm_last_image()
            if not self._acknowledged(token, writers):
                return  # wedged: recording or stop until the services restart
            if not self._change(token, S.SAVING_FILE):
                return
            for writer in writers:
                writer.close_file()
            self._change(token, S.FILE_SAVED if self._acknowledged(token, writers) else S.ERROR)
        except Exception:  # a simulator bug must show, not leave the driver silently stuck
            log.exception("daq-sim driver acquisition failed")
            self._change(token, S.ERROR)

    def _acknowledged(self, token: int, writers: List[_Writer]) -> bool:
        """The driver reads one answer per writer, in order, ``writer_timeout_s`` each; at the
        first failure it gives up and leaves the other answers queued."""
        created = 0
        for writer in writers:
            deadline = time.monotonic() + self.settings.writer_timeout_s
            answer = None
            while answer is None and time.monotonic() < deadline:
                with self.cond:
                    if token != self._token:
                        return False
                try:
                    answer = writer.answers.get(timeout=min(0.05, max(deadline - time.monotonic(), 0.001)))
                except queue.Empty:
                    pass
            if answer == _FAILURE:
                return False
            if answer == _SUCCESS:
                created += 1
        return created == len(writers)

    def _recording(self, token: int) -> Optional[bool]:
        with self.cond:
            if token != self._token:
                return None
            return self.state in STOPPABLE_STATES

    def _record(self, token: int, writers: List[_Writer], config: Dict[str, Any], n_image: int) -> bool:
        """Hand images to the writers until ``n_image`` or a stop; ``False``: abandoned (a restart, a crash)."""
        import numpy as np

        from ..hdf5 import frame_source

        rate = self.settings.frame_rate
        source = frame_source(config)
        sent = 0
        start: Optional[float] = None  # when the driver subscribed, shifted by what it got since
        first_id = int((time.monotonic() - self._born) * rate) + 1
        while sent < n_image:
            recording = self._recording(token)
            if recording is None:
                return False
            if not recording:
                break
            if self._silent_detector:
                start = None
                if self._closed.wait(_DETECTOR_RECV_S):
                    return False
                continue
            now = time.monotonic()
            if start is None:
                start = now - sent / rate
            due = min(n_image, int((now - start) * rate), sent + 64)
            if due <= sent:
                if self._closed.wait(min(max(start + (sent + 1) / rate - now, 0.0005), _DETECTOR_RECV_S)):
                    return False
                continue
            if not writers:
                self.crash("an image with 0 writers (number_of_writers missing): division by zero")
                return False
            if sent == 0:
                # The state changes before the first image is counted: its first push says count 0.
                if not self._change(token, S.RECORDING):
                    return False
            frames = source.frames(sent, due)
            ids = np.arange(first_id + sent, first_id + due, dtype=np.uint64)
            for writer in writers:
                picked = [k - sent for k in range(sent, due) if k % len(writers) == writer.index]
                if picked:
                    writer.write(frames[picked], ids[picked])
            sent = due
            with self.cond:
                if token != self._token:
                    return False
                self.count = sent
        return True

    def outcome_pushed(self) -> None:
        """A session pushed ``file_saved``/``error``: the driver turns it into idle."""
        with self.cond:
            if self.state in OUTCOME_STATES:
                self.change_state(S.IDLE)
