"""The simulated DAQ itself: configuration, writer driver and writer, HDF5 files, Redis streams.

Everything here is independent of HTTP; :mod:`daq_runner.sim.app` puts the REST API of
the deployed rest_v2 server in front of it. The in-memory state is the truth; Redis is
published to, so the REST API keeps answering when Redis goes away and publishing
resumes when it is back.

By default it behaves as section 9 of the project's Standard DAQ reference describes the
real server (PSI's ``std_daq_service`` rest_v2, its last version, with its writer
driver): it starts with the writer UNKNOWN; starts and stops block until the writer
driver, polling its writer every 0.1 s, sees WRITING (READY), and give up after 50 polls
("Cannot reach WRITING. Writer needs to be restarted."); partial configs are refused; a
config change during an acquisition loses it; ``daq:status`` is written on changes only,
twice (two status loggers), and a stop to an idle writer logs its last acquisition again.
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
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

from .. import protocol
from ..protocol import AcquisitionState, DeploymentStatus, WriterState

__all__ = [
    "SimSettings",
    "SimulatedDaqCore",
    "SimRefusal",
    "DEFAULT_CONFIG",
    "validate_config_update",
    "check_output_path",
]

log = logging.getLogger(__name__)

# 256 x 256 x 16 bit: 128 KiB per image keeps demo files small. module_positions is {}:
# through the real API only {} can be stored (the list form is HTTP 422, the object form
# is not JSON serializable), so a full config sent back unchanged must carry {}.
DEFAULT_CONFIG: Dict[str, Any] = {
    "detector_name": "SIM-EIGER-64K",
    "detector_type": "eiger",
    "bit_depth": 16,
    "image_pixel_height": 256,
    "image_pixel_width": 256,
    "n_modules": 1,
    "start_udp_port": 50000,
    "writer_user_id": 0,
    "module_positions": {},
    "submodule_info": {},
}
# A simulator limit (frames are held in memory), not a rule of the real DAQ.
_MAX_PIXELS = 4096 * 4096
# The second status logger writes its copy this long after the first: the real server's
# two loggers store each status within a few milliseconds of each other.
_ECHO_LAG_S = 0.002


class SimRefusal(Exception):
    """An application error: the REST layer answers HTTP 200 with ``status: error``."""


@dataclass
class SimSettings:
    """How the simulator behaves. The defaults are the real server's behaviour.

    Args:
        frame_rate: images per second the simulated detector sends, all the time.
        sync_limit_s: how long ``write_sync`` waits before answering with an error (60 s).
        deploy_delay_s: time until the last simulated server has reported the deployment of a config
            change (the initial config, at start and on reset, is in force at once).
        servers: names of the simulated DAQ servers that report deployments.
        streams: Redis stream names.
        status_interval_s: ``daq:status`` period while images are written (0.5 s).
        heartbeat_s: ``daq:stat`` period (1 s); statistics are also published at start.
        stream_maxlen: approximate length at which streams are trimmed.
        start_state: writer state at start, ``"UNKNOWN"`` (the real server, until a stop)
            or ``"READY"``.
        start_configured: ``False`` starts as a DAQ that was never configured: config null,
            "No config set yet.", writes refused until a full config is posted.
        driver_poll_s: how often the writer driver looks at its writer while a start or a
            stop waits for WRITING (READY): 0.1 s, so each start and stop takes at least
            that long. ``0``: no delay (benchmarks), the wait ends as soon as the state is reached.
        driver_timeout_s: when the driver gives up waiting (50 polls of 0.1 s on the real
            server) and answers "Cannot reach WRITING/READY. Writer needs to be restarted.".
        accept_partial_config: merge partial configs into the current one, as mid-2023
            servers did; the last server version refuses them.
        duplicate_status: store each ``daq:status`` entry twice, a few ms apart, as the real
            server's two status loggers do (the copies can interleave).
    """

    frame_rate: float = 100.0
    sync_limit_s: float = 60.0
    deploy_delay_s: float = 0.2
    servers: Tuple[str, ...] = ("sim-daq-0", "sim-daq-1")
    streams: protocol.StreamNames = field(default_factory=protocol.StreamNames)
    status_interval_s: float = 0.5
    heartbeat_s: float = 1.0
    stream_maxlen: int = 10_000
    start_state: Optional[str] = WriterState.UNKNOWN.value
    start_configured: bool = True
    driver_poll_s: float = 0.1
    driver_timeout_s: float = 5.0
    accept_partial_config: bool = False
    duplicate_status: bool = True


def check_output_path(output_file: str) -> None:
    """The write request's own path rules, in the real server's order; raises :class:`SimRefusal`."""
    if not output_file.startswith("/"):
        raise SimRefusal(protocol.MESSAGE_PATH_NOT_ABSOLUTE.format(output_file=output_file))
    if not protocol.OUTPUT_FILE_PATTERN.match(output_file):
        raise SimRefusal(protocol.MESSAGE_PATH_INVALID.format(output_file=output_file))


def validate_config_update(current: Optional[dict], update: Any) -> dict:
    """Check an initial config (``daq-sim --config``, ``SimulatedDaq(config=...)``).

    Merges a partial ``update`` into ``current``, converts integer strings and refuses,
    with :class:`SimRefusal`, what the simulator cannot start with. The REST API does not
    use this: ``POST /daq/config`` follows the real server's rules (see
    :meth:`SimulatedDaqCore.set_config`).
    """
    if not isinstance(update, dict):
        raise SimRefusal("Config must be a JSON object.")
    unknown = sorted(set(update) - set(protocol.CONFIG_FIELDS))
    if unknown:
        raise SimRefusal(f"Unknown config field(s): {', '.join(unknown)}.")
    merged = dict(current or {})
    for key, value in update.items():
        if key in protocol.INTEGER_CONFIG_FIELDS:
            if isinstance(value, bool):
                raise SimRefusal(f"Config field '{key}' must be an integer, not {value!r}.")
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise SimRefusal(f"Config field '{key}' must be an integer, not {value!r}.") from None
        elif key in ("detector_name", "detector_type"):
            if not isinstance(value, str) or not value:
                raise SimRefusal(f"Config field '{key}' must be a non-empty string.")
        elif key == "module_positions":
            if not isinstance(value, dict) or not all(
                isinstance(v, list) and len(v) == 4 and all(isinstance(x, int) for x in v) for v in value.values()
            ):
                raise SimRefusal("Config field 'module_positions' must map module numbers to [x0, y0, x1, y1].")
            value = {str(k): v for k, v in value.items()}
        elif key == "submodule_info" and not isinstance(value, (dict, list)):
            raise SimRefusal("Config field 'submodule_info' must be an object or a list.")
        merged[key] = value
    missing = [k for k in protocol.CONFIG_FIELDS if k not in merged and k != "submodule_info"]
    if missing:
        raise SimRefusal(f"Config is missing field(s): {', '.join(missing)}.")
    if merged["detector_type"] not in protocol.DETECTOR_TYPES:
        raise SimRefusal(
            f"Unknown detector_type '{merged['detector_type']}'; expected one of {', '.join(protocol.DETECTOR_TYPES)}."
        )
    if merged["bit_depth"] not in protocol.BIT_DEPTHS:
        raise SimRefusal(f"Unsupported bit_depth {merged['bit_depth']}; expected one of 8, 16, 32.")
    if _image_size_error(merged):
        raise SimRefusal(_image_size_error(merged))
    if merged["n_modules"] < 1:
        raise SimRefusal("n_modules must be >= 1.")
    merged.setdefault("submodule_info", {})
    return {key: merged[key] for key in protocol.CONFIG_FIELDS}


def _image_size_error(config: Mapping[str, Any]) -> Optional[str]:
    height, width = config.get("image_pixel_height"), config.get("image_pixel_width")
    if not isinstance(height, int) or not isinstance(width, int) or height < 1 or width < 1 or height * width > _MAX_PIXELS:
        return f"ERROR: Unsupported image size {height}x{width} (daq-sim holds at most {_MAX_PIXELS} pixels per image)."
    return None


class _Publisher:
    """Writes JSON entries to Redis streams; never raises, backs off for a second when Redis is down."""

    def __init__(self, redis_url: Optional[str], maxlen: int) -> None:
        self.maxlen = maxlen
        self._down_until = 0.0
        self._redis = None
        self.was_down = False
        if redis_url:
            from .._redis import connect

            self._redis = connect(redis_url, socket_timeout=1.0)

    def xadd(self, stream: str, obj: Any, fields: Optional[dict] = None) -> Optional[str]:
        if self._redis is None or time.monotonic() < self._down_until:
            return None
        import redis

        data = fields if fields is not None else {"json": json.dumps(obj)}
        try:
            entry_id = self._redis.xadd(stream, data, maxlen=self.maxlen, approximate=True)
        except redis.RedisError as exc:
            if not self.was_down:
                log.warning("redis unavailable, publishing paused: %s", exc)
            self.was_down = True
            self._down_until = time.monotonic() + 1.0
            return None
        if self.was_down:
            log.warning("redis back, publishing resumed")
            self.was_down = False
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    def history(self, stream: str, count: int) -> List[Tuple[str, Any]]:
        """The newest ``count`` entries of ``stream``, newest first (empty when Redis is down)."""
        if self._redis is None:
            return []
        import redis

        from .._redis import decode_entries

        try:
            return decode_entries(self._redis.xrevrange(stream, count=count))
        except redis.RedisError:
            return []


class _StatusEcho:
    """The real server's second status logger: stores each status again, a little later.

    Both loggers receive every status; the second writes its copy ``_ECHO_LAG_S`` after
    the first. When two statuses follow each other faster than that (the last progress
    WRITING, then READY), the stream reads READY, a stale WRITING, READY.
    """

    def __init__(self, publisher: _Publisher) -> None:
        self._publisher = publisher
        self._queue: "queue.Queue[Optional[Tuple[float, str, Any]]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="daq-sim-status-logger", daemon=True)
        self._thread.start()

    def put(self, stream: str, obj: Any) -> None:
        self._queue.put((time.monotonic() + _ECHO_LAG_S, stream, obj))

    def drain(self, timeout: float = 2.0) -> None:
        """Wait (at most ``timeout``) until every queued copy is written."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.001)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                due, stream, obj = item
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._publisher.xadd(stream, obj)
            finally:
                self._queue.task_done()


class _LocalIds:
    """Stream-like ids for entries that could not be published (Redis down)."""

    def __init__(self) -> None:
        self._last = (0, 0)

    def next(self) -> str:
        ms = int(time.time() * 1000)
        seq = self._last[1] + 1 if ms <= self._last[0] else 0
        self._last = (max(ms, self._last[0]), seq)
        return f"{self._last[0]}-{self._last[1]}"


@dataclass
class _Job:
    """One acquisition as the writer thread runs it."""

    token: int
    n_images: int
    config: dict
    writer: Any  # hdf5.Hdf5Writer, imported lazily (h5py)
    error: Optional[str]  # the writer fails the acquisition with this before its first image
    fail_message: Optional[str]  # the fail_next fault: fail half-way with this
    go: threading.Event = field(default_factory=threading.Event)


class SimulatedDaqCore:
    """State and behaviour of a simulated Standard DAQ (no HTTP).

    Args:
        settings: see :class:`SimSettings`.
        redis_url: Redis to publish the streams to (``None``: publish nothing).
        config: initial configuration (default: a small simulated Eiger).
    """

    def __init__(self, settings: Optional[SimSettings] = None, redis_url: Optional[str] = None, config: Optional[dict] = None) -> None:
        self.settings = settings or SimSettings()
        # reset() puts these values back (tests change settings on the session's simulator).
        self._settings_at_start = copy.copy(self.settings)
        self.streams = self.settings.streams
        self._publisher = _Publisher(redis_url, self.settings.stream_maxlen)
        self._echo = _StatusEcho(self._publisher)
        self._ids = _LocalIds()
        self._cond = threading.Condition(threading.RLock())
        # The writer driver executes one start or stop at a time (its command thread);
        # further commands wait for it.
        self._driver = threading.Lock()
        self._initial_config = validate_config_update(None, config or DEFAULT_CONFIG)
        self._closed = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        self._reset_state()

    # -- lifecycle ------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.config: Optional[dict] = None
        self.config_id: Optional[str] = None
        self._deployment: Dict[str, Any] = {"servers": {}, "start_time": 0.0, "stop_time": 0.0}
        self._writer_state = WriterState.UNKNOWN
        self._acquisition: Optional[dict] = None
        # The driver still follows a run its (restarted) writer no longer knows: a stop
        # cannot be confirmed and ends in "Cannot reach READY".
        self._lost = False
        self._token = 0  # identifies the acquisition a writer thread may update
        self._stop_requested = False
        self._worker: Optional[threading.Thread] = None
        self._logs: List[Tuple[str, dict]] = []  # newest first
        self._faults: Dict[str, Any] = {}
        self._unavailable_until = 0.0
        self._stall_until = 0.0
        self._image_id = 0
        self._written: Deque[Tuple[float, int]] = deque()  # (monotonic time, images) for the writer rate
        self._stats: Optional[dict] = None

    def start(self) -> "SimulatedDaqCore":
        """Deploy the initial config, publish the first statistics, start the 1 Hz ``daq:stat``.

        The writer comes up as the real server's does, UNKNOWN with no acquisition until
        a stop (``SimSettings.start_state`` overrides); nothing is written to
        ``daq:status`` until the writer's status changes. The acquisition logs of an
        earlier instance on the same Redis are served again.
        """
        with self._cond:
            self._writer_state = WriterState(self.settings.start_state or WriterState.UNKNOWN.value)
            self._logs = [(entry_id, _with_reports(acq)) for entry_id, acq in self._publisher.history(self.streams.log, 1000)]
        if self.settings.start_configured:
            # The configuration a DAQ has when it starts was deployed before: in force at
            # once, whatever deploy_delay_s (which a config change takes) says.
            self._deploy(copy.deepcopy(self._initial_config), wait=True, delay_s=0.0)
        self._echo.start()
        self._publish_stats()
        self._ticker = threading.Thread(target=self._tick, name="daq-sim-ticker", daemon=True)
        self._ticker.start()
        return self

    def close(self) -> None:
        """Stop any acquisition and the background threads."""
        self._closed.set()
        self._abandon_worker()
        if self._ticker is not None:
            self._ticker.join(5)
        self._echo.close()
        self._publisher.close()

    def reset(self, start_state: str = WriterState.READY.value) -> None:
        """Back to a clean DAQ (``POST /sim/reset``): no faults, no acquisition, no logs, the
        initial config freshly deployed, the settings the simulator started with, and the
        writer in ``start_state`` (READY: a DAQ in service; UNKNOWN: as freshly started)."""
        state = WriterState(start_state)
        self._abandon_worker()
        for setting in dataclasses.fields(SimSettings):
            setattr(self.settings, setting.name, getattr(self._settings_at_start, setting.name))
        with self._cond:
            self._faults.clear()
            self._unavailable_until = 0.0
            self._stall_until = 0.0
            self._writer_state = state
            self._acquisition = None
            self._lost = False
            self._logs.clear()
            self._written.clear()
        if self.settings.start_configured:
            self._deploy(copy.deepcopy(self._initial_config), wait=True, delay_s=0.0)  # a clean DAQ, at once
        else:
            with self._cond:
                self.config = self.config_id = None
                self._deployment = {"servers": {}, "start_time": 0.0, "stop_time": 0.0}
        if state == WriterState.READY:
            # As if a stop had brought the DAQ into service; a fresh start publishes nothing.
            self._publish_status()
        self._publish_stats()
        self._echo.drain()

    def _abandon_worker(self) -> None:
        with self._cond:
            self._token += 1
            worker = self._worker
            self._worker = None
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(10)

    # -- reading ----------------------------------------------------------------------

    def status(self) -> dict:
        """The writer status: ``{"acquisition": {...} | None, "state": "READY"|"WRITING"|"UNKNOWN"}``."""
        with self._cond:
            return {"acquisition": copy.deepcopy(self._acquisition), "state": self._writer_state.value}

    def _status_repr(self) -> str:
        # The driver's refusal shows its status dict as Python prints it, state first.
        with self._cond:
            return repr({"state": self._writer_state.value, "acquisition": self._acquisition})

    def logs(self, n: int) -> Dict[str, dict]:
        """The last ``n`` FINISHED acquisitions, keyed by stream id, newest first (as rest_v2).

        Raises :class:`SimRefusal` for ``n < 1``: the server passes redis-py's refusal of
        ``XREVRANGE`` with such a count on.
        """
        if n < 1:
            raise SimRefusal(protocol.MESSAGE_LOGS_COUNT)
        with self._cond:
            return {entry_id: copy.deepcopy(acq) for entry_id, acq in self._logs[:n]}

    def stats(self) -> Optional[dict]:
        with self._cond:
            return copy.deepcopy(self._stats)

    def get_config(self) -> Tuple[Optional[str], Optional[dict]]:
        """``(config_id, config)``; ``(None, None)`` before the first config."""
        with self._cond:
            return self.config_id, copy.deepcopy(self.config)

    def deployment(self) -> dict:
        """The deployment of the current config, as rest_v2 derives it from ``daq:config:<id>``.

        ``servers`` holds only the servers that have reported; SUCCESS means all of those
        are Done (a slower server may not have reported yet).
        """
        with self._cond:
            dep = self._deployment
            servers = dict(dep["servers"])
            if self.config_id is None:
                status, message = DeploymentStatus.UNKNOWN, protocol.MESSAGE_DEPLOYMENT_NO_CONFIG
            elif not servers:
                status, message = DeploymentStatus.UNKNOWN, protocol.MESSAGE_DEPLOYMENT_WAITING
            elif all(v == "Done" for v in servers.values()):
                status, message = DeploymentStatus.SUCCESS, protocol.MESSAGE_DEPLOYMENT_SUCCESS
            elif any(v == "Error" for v in servers.values()):
                status, message = DeploymentStatus.ERROR, protocol.MESSAGE_DEPLOYMENT_FAILED
            else:
                status, message = DeploymentStatus.RUNNING, protocol.MESSAGE_DEPLOYMENT_RUNNING
            return {
                "config_id": self.config_id,
                "status": status.value,
                "message": message,
                "servers": servers,
                "stats": {"start_time": dep["start_time"], "stop_time": dep["stop_time"]},
            }

    @property
    def unavailable(self) -> bool:
        return time.monotonic() < self._unavailable_until

    # -- configuration --------------------------------------------------------------------

    def set_config(self, request: Mapping[str, Any]) -> dict:
        """``POST /daq/config`` as the last rest_v2 version: store the config and deploy it.

        ``request`` holds the request model's fields; an absent field is ``None``. The
        server fills absent fields with null and ``int()``s the integer ones, so a
        partial config is refused (:data:`protocol.MESSAGE_PARTIAL_CONFIG`) unless
        ``accept_partial_config`` (mid-2023 servers: given fields replace the current
        ones, ``module_positions`` whole). Other fields are stored as given, null
        included; a value that is not JSON serializable is refused as the server's
        storage refuses it. Not refused during an acquisition: the deployment restarts
        the writer, which loses the acquisition (see :meth:`_restart_writer`).

        Returns the stored config.
        """
        with self._cond:
            current = self.config or {}
        if self.settings.accept_partial_config:
            merged = {key: request.get(key) if request.get(key) is not None else current.get(key) for key in protocol.CONFIG_FIELDS}
        else:
            merged = {key: request.get(key) for key in protocol.CONFIG_FIELDS}
        for key in protocol.INTEGER_CONFIG_FIELDS:
            if merged[key] is None:
                raise SimRefusal(protocol.MESSAGE_PARTIAL_CONFIG)
            merged[key] = int(merged[key])
        try:
            json.dumps(merged)
        except TypeError as exc:  # e.g. "Object of type ModulePositions is not JSON serializable"
            raise SimRefusal(str(exc)) from None
        self._deploy(merged)
        return copy.deepcopy(merged)

    def _deploy(self, config: dict, wait: bool = False, delay_s: Optional[float] = None) -> None:
        """Store ``config`` and deploy it to the servers, which report after ``delay_s``
        (default: ``SimSettings.deploy_delay_s``) in all; ``wait`` until they have."""
        with self._cond:
            fail = self._faults.pop("deployment", None)
            self.config = config
            config_id = self._publisher.xadd(self.streams.config, config) or self._ids.next()
            self.config_id = config_id
            self._deployment = {"servers": {}, "start_time": time.time(), "stop_time": 0.0}
        delay = self.settings.deploy_delay_s if delay_s is None else delay_s
        deploy = threading.Thread(target=self._deploy_to_servers, args=(config_id, fail, delay), name="daq-sim-deploy", daemon=True)
        deploy.start()
        if wait:
            deploy.join()

    def _deploy_to_servers(self, config_id: str, fail: Optional[str], delay_s: float) -> None:
        # Each server reports when its services have restarted: "Deploying", then at once
        # "Done" (or "Error"), so RUNNING is rarely seen and SUCCESS can come while a
        # slower server has not reported yet.
        servers = self.settings.servers
        for position, name in enumerate(servers):
            if delay_s > 0 and self._closed.wait(delay_s / max(len(servers), 1)):
                return
            failed = fail is not None and position == len(servers) - 1
            for message in ("Deploying", "Error" if failed else "Done"):
                with self._cond:
                    if self.config_id != config_id:
                        return  # superseded by a newer config
                    if position == 0 and message == "Deploying":
                        self._restart_writer()
                    self._deployment["servers"][name] = message
                    self._deployment["stop_time"] = time.time()
                self._publisher.xadd(self.streams.deployment(config_id), None, {"server_name": name, "message": message})

    def _restart_writer(self) -> None:
        # The deployment restarts the DAQ services. An idle writer comes back as it was
        # (the driver does not notice); a running acquisition is lost.
        with self._cond:
            if self._writer_state == WriterState.WRITING and not self._lost:
                self._lose_acquisition()

    def _lose_acquisition(self) -> None:
        # The writer restarted under a running acquisition: it no longer knows the run,
        # the driver still does. The writer is UNKNOWN; the acquisition stays as it was
        # last reported (never final); a stop cannot be confirmed.
        with self._cond:
            self._token += 1
            self._lost = True
            self._writer_state = WriterState.UNKNOWN
            self._cond.notify_all()
            self._publish_status()

    # -- faults ------------------------------------------------------------------------------

    def arm_faults(self, faults: Dict[str, Any]) -> Dict[str, Any]:
        """Arm faults (see ``POST /sim/faults``); returns what is armed now."""
        now = time.monotonic()
        with self._cond:
            if "unavailable_s" in faults:
                self._unavailable_until = now + float(faults["unavailable_s"])
            if "stall_s" in faults:
                self._stall_until = now + float(faults["stall_s"])
            if "fail_next" in faults:
                self._faults["fail_next"] = str(faults["fail_next"])
            if "deployment" in faults:
                self._faults["deployment"] = "ERROR"
            if faults.get("writer_state") == WriterState.UNKNOWN.value:
                # A writer restart: a running acquisition is lost, an idle writer is UNKNOWN.
                if self._writer_state == WriterState.WRITING and not self._lost:
                    self._lose_acquisition()
                else:
                    self._writer_state = WriterState.UNKNOWN
                    self._publish_status()
            self._cond.notify_all()
        return self.armed_faults()

    def armed_faults(self) -> Dict[str, Any]:
        now = time.monotonic()
        with self._cond:
            armed: Dict[str, Any] = dict(self._faults)
            if self._unavailable_until > now:
                armed["unavailable_s"] = round(self._unavailable_until - now, 3)
            if self._stall_until > now:
                armed["stall_s"] = round(self._stall_until - now, 3)
            if self._writer_state == WriterState.UNKNOWN:
                armed["writer_state"] = WriterState.UNKNOWN.value
            return armed

    # -- the writer driver ---------------------------------------------------------------------

    def check_output_file(self, output_file: str) -> None:
        """The server's checks of ``output_file`` (path rules, folder exists); raises :class:`SimRefusal`."""
        check_output_path(output_file)
        folder = os.path.dirname(output_file)
        if not os.path.exists(folder):
            raise SimRefusal(protocol.MESSAGE_FOLDER_MISSING.format(folder=folder))

    def start_write(self, output_file: str, n_images: int, run_id: Optional[int] = None) -> dict:
        """Start an acquisition (``write_async``); returns the writer status once it is WRITING.

        Blocks like the real driver: at least one ``driver_poll_s``, until the writer
        reports WRITING; images flow only after that. Raises :class:`SimRefusal` with the
        real server's message when the request is refused:

        - no config yet, a bad output path, a writer that is not READY (with its status);
        - the file cannot be created: after one poll "ERROR: Cannot create output file."
          when an earlier acquisition exists (its status is rewritten to FAILED with that
          message), else "Cannot reach WRITING. ..." after ``driver_timeout_s``;
        - ``n_images`` beyond the writer protocol's 32-bit integer: "Cannot reach WRITING. ...".

        After "Cannot reach WRITING" the writer is UNKNOWN with no acquisition.
        """
        from .hdf5 import Hdf5Writer

        run_id = time.time_ns() if run_id is None else run_id
        with self._driver:
            with self._cond:
                if self.config is None:
                    # The server reads writer_user_id from a config that is not there.
                    raise SimRefusal("'NoneType' object is not subscriptable")
                config = copy.deepcopy(self.config)
            self.check_output_file(output_file)
            with self._cond:
                if self._writer_state != WriterState.READY:
                    raise SimRefusal(protocol.MESSAGE_BUSY.format(status=self._status_repr()))
                has_earlier = self._acquisition is not None
            if n_images > protocol.MAX_WRITER_N_IMAGES:
                self._wait_for_state(WriterState.WRITING)  # the writer never starts
                self._give_up(protocol.MESSAGE_CANNOT_REACH_WRITING)
            error = None
            if config["bit_depth"] not in protocol.BIT_DEPTHS:
                error = protocol.MESSAGE_UNSUPPORTED_BIT_DEPTH.format(bit_depth=config["bit_depth"])
            else:
                error = _image_size_error(config)
            try:
                writer = Hdf5Writer(output_file, config, config["bit_depth"] if error is None else None)
            except Exception as exc:  # no permission, a folder of that name, a file held open...
                log.info("cannot create %s: %s", output_file, exc)
                self._cannot_create_file(has_earlier)
            with self._cond:
                self._token += 1
                self._stop_requested = False
                self._lost = False
                self._writer_state = WriterState.WRITING
                self._acquisition = {
                    "info": {"n_images": n_images, "output_file": output_file, "run_id": run_id},
                    "message": "",
                    "state": AcquisitionState.WAITING_IMAGES.value,
                    "stats": {"n_write_completed": 0, "n_write_requested": 0, "start_time": time.time(), "stop_time": None},
                    "reports": None,
                }
                job = _Job(self._token, n_images, config, writer, error, self._faults.pop("fail_next", None))
                self._worker = threading.Thread(target=self._acquire, args=(job,), name="daq-sim-writer", daemon=True)
                self._worker.start()
                self._publish_status()
            try:
                if not self._wait_for_state(WriterState.WRITING):
                    self._give_up(protocol.MESSAGE_CANNOT_REACH_WRITING)
            finally:
                job.go.set()  # images flow (or the abandoned writer thread sees its token gone)
            return self.status()

    def _cannot_create_file(self, has_earlier: bool) -> None:
        if not has_earlier:
            # Nothing in the status changes: the driver waits for WRITING until it gives up.
            self._wait_for_state(WriterState.WRITING)
            self._give_up(protocol.MESSAGE_CANNOT_REACH_WRITING)
        # The writer's error lands on the acquisition the driver knows, the earlier one;
        # the driver's next poll sees it FAILED and passes its message on.
        self._sleep(self.settings.driver_poll_s)
        with self._cond:
            acquisition = self._acquisition
            if acquisition is not None:
                acquisition["state"] = AcquisitionState.FAILED.value
                acquisition["message"] = protocol.MESSAGE_CANNOT_CREATE_FILE
                now = time.time()
                acquisition["stats"]["stop_time"] = acquisition["stats"]["start_time"] = now
                self._publish_status()
        raise SimRefusal(protocol.MESSAGE_CANNOT_CREATE_FILE)

    def wait_while_writing(self, timeout: float) -> bool:
        """Block until the writer leaves WRITING (``write_sync``); False after ``timeout`` seconds.

        Looks every ``driver_poll_s``, as the real server's write_sync does (every 0.1 s).
        """
        poll = self.settings.driver_poll_s
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self._writer_state != WriterState.WRITING:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if poll <= 0:
                    self._cond.wait(remaining)
                    continue
            if self._closed.wait(min(poll, remaining)):
                return False

    def stop(self) -> dict:
        """``/writer/stop``: the writer status once it is READY.

        - WRITING: the acquisition ends FINISHED "Interrupted." with the images written so far;
        - READY: the last acquisition is published again as FINISHED and logged again;
        - UNKNOWN: READY (the acquisition, usually none, stays);
        - UNKNOWN after a writer restart lost a running acquisition: nothing confirms the
          stop; after ``driver_timeout_s`` :class:`SimRefusal` "Cannot reach READY. ..." and
          the writer is UNKNOWN with no acquisition, so that a further stop makes it READY.

        Blocks at least one ``driver_poll_s``, like the real driver.
        """
        with self._driver:
            with self._cond:
                if self._writer_state == WriterState.WRITING:
                    self._stop_requested = True
                    self._cond.notify_all()
                elif self._writer_state == WriterState.READY:
                    if self._acquisition is not None:
                        self._acquisition["state"] = AcquisitionState.FINISHED.value
                        self._log(self._acquisition)
                    self._publish_status()
                elif not self._lost:
                    self._writer_state = WriterState.READY
                    self._publish_status()
            if not self._wait_for_state(WriterState.READY):
                self._give_up(protocol.MESSAGE_CANNOT_REACH_READY)
            return self.status()

    def _wait_for_state(self, target: WriterState) -> bool:
        """The driver's wait: look every ``driver_poll_s`` (first look after one poll) until
        the writer is in ``target``; False after ``driver_timeout_s``."""
        poll = self.settings.driver_poll_s
        deadline = time.monotonic() + self.settings.driver_timeout_s
        while True:
            if poll > 0:
                if self._closed.wait(poll):
                    return False
                with self._cond:
                    if self._writer_state == target:
                        return True
                if time.monotonic() >= deadline:
                    return False
                continue
            with self._cond:
                while self._writer_state != target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed.is_set():
                        return False
                    self._cond.wait(remaining)
                return True

    def _give_up(self, message: str) -> None:
        # The driver resets its status to UNKNOWN without acquisition and asks for a restart.
        # What a following stop does is not in the reference, and the last driver version's
        # source was not readable; it follows the reference's start-up rule (UNKNOWN without
        # acquisition, a stop makes it READY), so that stops always recover the DAQ.
        with self._cond:
            self._token += 1
            self._lost = False
            self._writer_state = WriterState.UNKNOWN
            self._acquisition = None
            self._cond.notify_all()
            self._publish_status()
        raise SimRefusal(message)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._closed.wait(seconds)

    # -- the writer ------------------------------------------------------------------------------

    def _acquire(self, job: _Job) -> None:
        from .hdf5 import frame_source

        writer = job.writer
        outcome: Optional[Tuple[AcquisitionState, str]] = None
        try:
            # The driver forwards images only once its poll saw WRITING.
            job.go.wait()
            rate = self.settings.frame_rate
            if job.error is not None:
                # The writer fails when the first image arrives.
                with self._cond:
                    self._cond.wait(1.0 / rate)
                    if self._token != job.token:
                        return
                    outcome = (
                        (AcquisitionState.FINISHED, protocol.MESSAGE_INTERRUPTED)
                        if self._stop_requested
                        else (AcquisitionState.FAILED, job.error)
                    )
                return
            source = frame_source(job.config)
            written = 0
            last_publish = t0 = time.monotonic()
            fail_at = job.n_images // 2 if job.fail_message else None
            while written < job.n_images:
                with self._cond:
                    if self._token != job.token:
                        return  # lost or reset; the status already says so
                    if self._stop_requested:
                        outcome = (AcquisitionState.FINISHED, protocol.MESSAGE_INTERRUPTED)
                        break
                    now = time.monotonic()
                    if self._stall_until > now:
                        self._cond.wait(self._stall_until - now)
                        t0 = time.monotonic() - written / rate
                        continue
                    # At most 64 images per HDF5 write: bounded memory at any frame rate.
                    due = min(job.n_images, int((now - t0) * rate), written + 64)
                    if fail_at is not None and due > fail_at:
                        due = fail_at
                    if due <= written and fail_at != written:
                        self._cond.wait(max(t0 + (written + 1) / rate - now, 0.0))
                        continue
                if fail_at is not None and written >= fail_at:
                    outcome = (AcquisitionState.FAILED, job.fail_message or "ERROR")
                    break
                with self._cond:
                    first_id = self._image_id
                    self._image_id += due - written
                writer.append(source.frames(written, due), first_id)
                with self._cond:
                    if self._token != job.token:
                        return
                    self._written.append((time.monotonic(), due - written))
                    stats = self._acquisition["stats"]
                    stats["n_write_requested"] = stats["n_write_completed"] = due
                    first = written == 0
                    if first:
                        self._acquisition["state"] = AcquisitionState.ACQUIRING_IMAGES.value
                    written = due
                    if first or time.monotonic() - last_publish >= self.settings.status_interval_s:
                        self._publish_status()
                        last_publish = time.monotonic()
            if outcome is None:
                outcome = (AcquisitionState.FINISHED, protocol.MESSAGE_COMPLETED)
        finally:
            writer.close()
            if outcome is not None:
                self._finish(job, *outcome)

    def _finish(self, job: _Job, state: AcquisitionState, message: str) -> None:
        with self._cond:
            if self._token != job.token:
                return
            # The writer's last progress report, then its stop: published back to back, so
            # the second status logger's copies interleave (WRITING, READY, WRITING, READY).
            self._publish_status()
            acq = self._acquisition
            acq["state"] = state.value
            acq["message"] = message
            acq["stats"]["stop_time"] = time.time()
            if state == AcquisitionState.FAILED:
                acq["stats"]["start_time"] = acq["stats"]["stop_time"]  # as the real driver does
            else:
                # Only FINISHED acquisitions are logged; the log entry precedes the final status.
                self._log(acq)
            self._writer_state = WriterState.READY
            self._worker = None
            self._publish_status()
            self._cond.notify_all()

    def _log(self, acquisition: dict) -> None:
        with self._cond:
            entry_id = self._publisher.xadd(self.streams.log, acquisition) or self._ids.next()
            self._logs.insert(0, (entry_id, copy.deepcopy(acquisition)))
            del self._logs[1000:]

    # -- publication ------------------------------------------------------------------------

    def _publish_status(self) -> None:
        # Under the state lock, so that entries reach the stream in the order of the transitions.
        with self._cond:
            status = self.status()
            self._publisher.xadd(self.streams.status, status)
            if self.settings.duplicate_status:
                self._echo.put(self.streams.status, status)

    def _publish_stats(self) -> None:
        # The detector streams at its frame rate all the time (idle, UNKNOWN too), except
        # during a stall fault; the writer rate counts the images written in the last second.
        now = time.monotonic()
        with self._cond:
            config = self.config or {}
            try:
                bytes_per_image = int(config["image_pixel_height"]) * int(config["image_pixel_width"]) * int(config["bit_depth"]) // 8
            except (KeyError, TypeError, ValueError):
                bytes_per_image = 0
            while self._written and now - self._written[0][0] > 1.0:
                self._written.popleft()
            written = float(sum(n for _, n in self._written))
            detector_rate = 0.0 if self._stall_until > now else float(self.settings.frame_rate)
            self._stats = {
                "detector": {"bytes_per_second": detector_rate * bytes_per_image, "images_per_second": detector_rate},
                "writer": {"bytes_per_second": written * bytes_per_image, "images_per_second": written},
            }
            stats = copy.deepcopy(self._stats)
        self._publisher.xadd(self.streams.stat, stats)

    def _tick(self) -> None:
        while not self._closed.wait(self.settings.heartbeat_s):
            self._publish_stats()


def _with_reports(acquisition: Any) -> Any:
    # Acquisitions in every reply carry "reports" (null); older logs may lack it.
    if isinstance(acquisition, dict):
        acquisition.setdefault("reports", None)
    return acquisition
