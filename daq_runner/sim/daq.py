"""The simulated DAQ itself: configuration, writer driver and writer, HDF5 files, Redis streams.

Everything here is independent of HTTP; :mod:`daq_runner.sim.app` puts the REST API of
the deployed rest_v2 server in front of it. As on the real server, the writer driver's
status lives in memory and everything else in the DAQ's Redis (:mod:`._store`): the
config, the deployments, the logs and the statistics are read from there on every
request, so a Redis that is down or comes back empty shows as it does on the real DAQ.

By default it behaves as section 9 of the project's Standard DAQ reference describes the
real server (PSI's ``std_daq_service`` rest_v2, its last version, with its writer
driver): it starts with the writer UNKNOWN; starts and stops block until the writer
driver, polling its writer every 0.1 s, sees WRITING (READY), and give up after 50 polls
("Cannot reach WRITING. Writer needs to be restarted."); partial configs are refused; a
config change during an acquisition loses it and wedges the driver; ``daq:status`` is
written on changes only, twice (two status loggers), and a stop to an idle writer logs
its last acquisition again. ``docs/daq-sim.md`` describes every behaviour and fault.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterator, Mapping, Optional, Tuple

import redis

from .. import protocol
from ..protocol import AcquisitionState, DeploymentStatus, WriterState
from ._store import RedisStore, StatusLoggers

__all__ = [
    "SimSettings",
    "SimulatedDaqCore",
    "SimRefusal",
    "DEFAULT_CONFIG",
    "BAD_FILES",
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
# The files the bad_file_next fault makes the writer write: one image missing (a gap in
# image_id), or datasets that end half-way; the DAQ says every image was written.
BAD_FILES = ("gap", "truncated")
# A simulator limit (frames are held in memory), not a rule of the real DAQ.
_MAX_PIXELS = 4096 * 4096
# The second status logger writes its copy this long after the first: the real server's
# two loggers store each status within a few milliseconds of each other.
_ECHO_LAG_S = 0.002
# How often an acquisition looks again while its detector sends nothing (a stall, a rate
# of 0, the services down).
_IDLE_POLL_S = 0.05
_MESSAGE_MODULE_POSITIONS_ONLY_EMPTY = (
    "Config field 'module_positions' must be {}: the rest_v2 server takes no other value back "
    '(the list form {"0": [x0, y0, x1, y1]} is HTTP 422, the object form is not JSON serializable), '
    "so every config change would fail"
)
_MESSAGE_SUBMODULE_INFO_OBJECT = (
    "Config field 'submodule_info' must be an object: the rest_v2 server refuses a list "
    "when the config is sent back (HTTP 422), so every config change would fail"
)


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
        restart_delay_s: time from a deployment's last report (SUCCESS) until the DAQ's
            services (writer, detector) restart with the new config (about 1 s on the real DAQ).
        restart_s: how long the restarted services are down (about a second on the real
            DAQ). While down: writes and stops answer "Cannot reach ..." after the driver's
            wait, the detector sends nothing, and ``daq:stat`` shows it as ``stats_while_down``
            says. ``0``: they take the new config at once and never go down (a running
            acquisition is still lost, as the first server reports).
        stats_while_down: what ``daq:stat`` shows while the services are down: ``"zeros"``
            (the real server: its statistics logger runs inside the REST server and writes
            an entry every ``heartbeat_s``, with 0 images/s while no image arrives) or
            ``"silence"`` (no entry; the first one a period after they are back).
        servers: names of the simulated DAQ servers that report deployments.
        streams: Redis stream names.
        status_interval_s: ``daq:status`` period while images are written (0.5 s).
        heartbeat_s: ``daq:stat`` period (1 s); statistics are also published at start.
        stream_maxlen: approximate length at which streams are trimmed.
        start_state: writer state at start, ``"UNKNOWN"`` (the real server, until a stop)
            or ``"READY"``.
        start_configured: ``False`` starts as a DAQ whose Redis holds no config: config null,
            "No config set yet.", writes refused, configs refused until the server restarts.
        driver_poll_s: how often the writer driver looks at its writer while a start or a
            stop waits for WRITING (READY): 0.1 s, so each start and stop takes at least
            that long. ``0``: no delay (benchmarks), the wait ends as soon as the state is reached.
        driver_timeout_s: when the driver gives up waiting (50 polls of 0.1 s on the real
            server) and answers "Cannot reach WRITING/READY. Writer needs to be restarted.".
        accept_partial_config: merge partial configs into the current one, as mid-2023
            servers did; the last server version refuses them.
        duplicate_status: store each ``daq:status`` entry twice, a few ms apart, as the real
            server's two status loggers do.
        status_interleave: the probability that the second logger's copy of a status comes
            after the next status when the two are milliseconds apart (an acquisition's last
            progress and its READY): the stream then reads READY, a stale WRITING, READY.
            0.1: the reference saw it happen, three later acquisitions on the real server
            did not; rare, but a batch of tens of writes meets it. 1 and 0 force it.
        seed: seed of the simulator's random source (``None``: a fresh one each start and reset).
    """

    frame_rate: float = 100.0
    sync_limit_s: float = 60.0
    deploy_delay_s: float = 0.2
    restart_delay_s: float = 1.0
    restart_s: float = 1.0
    stats_while_down: str = "zeros"
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
    status_interleave: float = 0.1
    seed: Optional[int] = None


def check_output_path(output_file: str) -> None:
    """The write request's own path rules, in the real server's order; raises :class:`SimRefusal`."""
    if not output_file.startswith("/"):
        raise SimRefusal(protocol.MESSAGE_PATH_NOT_ABSOLUTE.format(output_file=output_file))
    if not protocol.OUTPUT_FILE_PATTERN.match(output_file):
        raise SimRefusal(protocol.MESSAGE_PATH_INVALID.format(output_file=output_file))


def validate_config_update(current: Optional[dict], update: Any) -> dict:
    """Check an initial config (``daq-sim --config``, ``SimulatedDaq(config=...)``).

    Merges a partial ``update`` into ``current``, converts integer strings and refuses,
    with :class:`SimRefusal`, what the simulator cannot start with, and what the real
    server could serve but never take back (``module_positions`` other than ``{}``,
    ``submodule_info`` that is not an object): every config change would fail. The REST
    API does not use this: ``POST /daq/config`` follows the real server's rules (see
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
            if value != {}:
                raise SimRefusal(_MESSAGE_MODULE_POSITIONS_ONLY_EMPTY)
        elif key == "submodule_info" and not isinstance(value, dict):
            raise SimRefusal(_MESSAGE_SUBMODULE_INFO_OBJECT)
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


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    """A Redis failure in a request: the real server answers with redis-py's message."""
    try:
        yield
    except redis.RedisError as exc:
        raise SimRefusal(str(exc)) from None


def _entry_time(entry_id: str) -> float:
    # The real server's conversion of a stream id ("1685090990182-0") to a Unix time.
    return float(entry_id.replace("-", ".")) / 1000


@dataclass
class _Job:
    """One acquisition as the writer thread runs it."""

    token: int
    n_images: int
    config: dict
    writer: Any  # hdf5.Hdf5Writer, imported lazily (h5py)
    fail_message: Optional[str]  # the fail_next fault: fail half-way with this
    go: threading.Event = field(default_factory=threading.Event)


class SimulatedDaqCore:
    """State and behaviour of a simulated Standard DAQ (no HTTP).

    Args:
        settings: see :class:`SimSettings`.
        redis_url: the DAQ's Redis (required): as on the real server, the config, the
            deployments, the logs and the statistics live there.
        config: initial configuration (default: a small simulated Eiger).

    Raises:
        ValueError: no ``redis_url``.
        SimRefusal: ``config`` is not one the simulator can start with.
    """

    def __init__(self, settings: Optional[SimSettings] = None, redis_url: Optional[str] = None, config: Optional[dict] = None) -> None:
        if not redis_url:
            raise ValueError("the simulated DAQ needs its Redis (redis_url): its config, logs and statistics live there")
        self.settings = settings or SimSettings()
        # reset() puts these values back (tests change settings on the session's simulator).
        self._settings_at_start = copy.copy(self.settings)
        self.streams = self.settings.streams
        self._store = RedisStore(redis_url, self.streams, self.settings.stream_maxlen)
        self._random = random.Random(self.settings.seed)
        self._loggers = StatusLoggers(self._store, _ECHO_LAG_S, lambda: self.settings.duplicate_status, self._draw_interleave)
        self._cond = threading.Condition(threading.RLock())
        # The writer driver executes one start or stop at a time (its command thread);
        # further commands wait for it.
        self._driver = threading.Lock()
        self._initial_config = validate_config_update(None, config or DEFAULT_CONFIG)
        self._closed = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        self._generation = 0  # a reset makes the deployments and restarts under way obsolete
        self._reset_state()

    # -- lifecycle ------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._writer_state = WriterState.UNKNOWN
        self._acquisition: Optional[dict] = None  # the driver's record: state, message, stats, info
        # The driver still follows a run its writer no longer knows (writer_state fault): a
        # stop cannot be confirmed and ends in "Cannot reach READY", the next one works.
        self._lost = False
        # The driver's command thread is blocked for good (a run lost under it, the
        # wedge_driver fault): no start or stop reaches the writer until the server restarts.
        self._wedged = False
        # The server's log thread ends at the first Redis error it meets (kill_log_thread).
        self._log_thread_alive = True
        self._token = 0  # identifies the acquisition a writer thread may update
        self._stop_requested = False
        self._worker: Optional[threading.Thread] = None
        self._faults: Dict[str, Any] = {}
        self._unavailable_until = 0.0
        self._stall_until = 0.0
        self._detector_rate: Optional[float] = None  # the detector_rate fault
        self._image_id = 0
        self._written: Deque[Tuple[float, int]] = deque()  # (monotonic time, images) for the writer rate
        # The DAQ's services (writer, detector, statistics): the config they run with, and
        # when they are down for a restart (monotonic times).
        self._services_config: dict = copy.deepcopy(self._initial_config)
        self._services_down_until = 0.0
        self._services_up_at = time.monotonic()
        self._config_serial = 0  # the newest stored config; older deployments stop reporting

    def start(self) -> "SimulatedDaqCore":
        """Deploy the initial config, publish the first statistics, start the 1 Hz ``daq:stat``.

        The writer comes up as the real server's does, UNKNOWN with no acquisition until
        a stop (``SimSettings.start_state`` overrides); nothing is written to
        ``daq:status`` until the writer's status changes. The acquisition logs of an
        earlier instance on the same Redis are served again.

        Raises:
            SimRefusal: the Redis cannot be reached (the real server does not start either).
        """
        with self._cond:
            self._writer_state = WriterState(self.settings.start_state or WriterState.UNKNOWN.value)
            self._services_up_at = time.monotonic()
        if self.settings.start_configured:
            # The configuration a DAQ has when it starts was deployed before: in force at
            # once, whatever deploy_delay_s (which a config change takes) says.
            self._deploy(copy.deepcopy(self._initial_config), wait=True, delay_s=0.0, restart=False)
        self._loggers.start()
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
        self._loggers.close()
        self._store.close()

    def reset(self, start_state: str = WriterState.READY.value) -> None:
        """Back to a clean DAQ (``POST /sim/reset``): no faults, no acquisition, empty streams
        (the DAQ's own; other keys of its Redis stay), the initial config freshly deployed,
        the settings the simulator started with, and the writer in ``start_state`` (READY: a
        DAQ in service; UNKNOWN: as freshly started).

        Raises:
            SimRefusal: the Redis cannot be reached.
        """
        state = WriterState(start_state)
        self._abandon_worker()
        for setting in dataclasses.fields(SimSettings):
            setattr(self.settings, setting.name, getattr(self._settings_at_start, setting.name))
        with self._cond:
            self._generation += 1
            token = self._token  # an abandoned writer thread must never match a new acquisition
            self._reset_state()
            self._token = token
            self._writer_state = state
            self._random = random.Random(self.settings.seed)
        self._loggers.drain()  # the copies of what went before, then the streams go
        with _redis_errors():
            self._store.clear()
        if self.settings.start_configured:
            self._deploy(copy.deepcopy(self._initial_config), wait=True, delay_s=0.0, restart=False)  # a clean DAQ, at once
        if state == WriterState.READY:
            # As if a stop had brought the DAQ into service; a fresh start publishes nothing.
            self._publish_status()
        self._publish_stats()
        self._loggers.drain()

    def _abandon_worker(self) -> None:
        with self._cond:
            self._token += 1
            worker = self._worker
            self._worker = None
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(10)

    # -- reading ----------------------------------------------------------------------

    @property
    def config(self) -> dict:
        """The config the DAQ's services run with (the stored one, once they have restarted with it)."""
        with self._cond:
            return copy.deepcopy(self._services_config)

    @property
    def services_down(self) -> bool:
        """The DAQ's services are down for a restart after a deployment (``restart_s``)."""
        with self._cond:
            return time.monotonic() < self._services_down_until

    def status(self) -> dict:
        """The writer driver's status, ``{"state": "READY"|"WRITING"|"UNKNOWN", "acquisition": {...} | None}``.

        The acquisition is the driver's record, ``{"state", "message", "stats", "info"}``,
        as it is published to ``daq:status`` and logged to ``daq:log``; the REST replies
        add ``reports`` (see :mod:`daq_runner.sim.app`).
        """
        with self._cond:
            return {"state": self._writer_state.value, "acquisition": copy.deepcopy(self._acquisition)}

    def logs(self, n: int) -> Dict[str, dict]:
        """The last ``n`` logged acquisitions, keyed by ``daq:log`` stream id, newest first (as rest_v2),
        each with its ``reports`` (a list).

        Raises:
            SimRefusal: ``n < 1`` (the server passes redis-py's refusal of ``XREVRANGE`` with
                such a count on), or Redis cannot be reached.
        """
        if n < 1:
            raise SimRefusal(protocol.MESSAGE_LOGS_COUNT)
        with _redis_errors():
            records = self._store.logs(n)
        return {entry_id: {**acquisition, "reports": reports} for entry_id, acquisition, reports in records}

    def stats(self) -> Optional[dict]:
        """The newest ``daq:stat`` entry (``None`` before the first); raises :class:`SimRefusal` when Redis cannot be reached."""
        with _redis_errors():
            return self._store.last_stat()

    def get_config(self) -> Tuple[Optional[str], Optional[dict]]:
        """``(config_id, config)`` as stored in Redis; ``(None, None)`` without a config.

        Raises:
            SimRefusal: Redis cannot be reached.
        """
        with _redis_errors():
            return self._store.get_config()

    def deployment(self) -> dict:
        """The deployment of the current config, as rest_v2 derives it from ``daq:config:<id>``.

        ``servers`` holds only the servers that have reported; SUCCESS means all of those
        are Done (a slower server may not have reported yet). Without a config, ``servers``
        and ``stats`` are null.

        Raises:
            SimRefusal: Redis cannot be reached.
        """
        with _redis_errors():
            config_id, _ = self._store.get_config()
            reports = self._store.deployment(config_id) if config_id is not None else []
        if config_id is None:
            return {
                "config_id": None,
                "status": DeploymentStatus.UNKNOWN.value,
                "message": protocol.MESSAGE_DEPLOYMENT_NO_CONFIG,
                "servers": None,
                "stats": None,
            }
        servers: Dict[str, str] = {}
        stop_time = 0.0
        for entry_id, server_name, message in reports:
            servers[server_name] = message  # the last report of each server
            stop_time = max(stop_time, _entry_time(entry_id))
        if not servers:
            status, message = DeploymentStatus.UNKNOWN, protocol.MESSAGE_DEPLOYMENT_WAITING
        elif all(v == "Done" for v in servers.values()):
            status, message = DeploymentStatus.SUCCESS, protocol.MESSAGE_DEPLOYMENT_SUCCESS
        elif any(v == "Error" for v in servers.values()):
            status, message = DeploymentStatus.ERROR, protocol.MESSAGE_DEPLOYMENT_FAILED
        else:
            status, message = DeploymentStatus.RUNNING, protocol.MESSAGE_DEPLOYMENT_RUNNING
        return {
            "config_id": config_id,
            "status": status.value,
            "message": message,
            "servers": servers,
            "stats": {"start_time": _entry_time(config_id), "stop_time": stop_time},
        }

    @property
    def unavailable(self) -> bool:
        return time.monotonic() < self._unavailable_until

    # -- configuration --------------------------------------------------------------------

    def set_config(self, request: Mapping[str, Any]) -> dict:
        """``POST /daq/config`` as the last rest_v2 version: store the config and deploy it.

        ``request`` holds the request model's fields; an absent field is ``None``. In the
        server's order:

        - without a stored config (a Redis that came back empty), every config is refused
          ("Config errors: missing detector_name, ..."): the server compares the request
          model with the field names and finds none;
        - absent fields are null and the integer ones are ``int()``ed, so a partial config is
          refused (:data:`protocol.MESSAGE_PARTIAL_CONFIG`) unless ``accept_partial_config``
          (mid-2023 servers: given fields replace the current ones, ``module_positions`` whole);
        - ``submodule_info`` is turned into a dict ("'NoneType' object is not iterable" when
          absent), then the config must be JSON serializable ("Object of type
          ModulePositions is not JSON serializable");
        - it is stored and deployed: not refused during an acquisition, which the restart of
          the services then loses (see :meth:`_restart_services`).

        Returns the stored config (its nulls included: the REST reply's model then refuses
        it, after it was stored). Raises :class:`SimRefusal` with the server's message.
        """
        with _redis_errors():
            _, current = self._store.get_config()
        config = self._updated_config(current, request)
        try:
            config["submodule_info"] = dict(config["submodule_info"])
        except (TypeError, ValueError) as exc:
            raise SimRefusal(str(exc)) from None
        try:
            json.dumps(config)
        except TypeError as exc:  # e.g. "Object of type ModulePositions is not JSON serializable"
            raise SimRefusal(str(exc)) from None
        self._deploy(config)
        return copy.deepcopy(config)

    def _updated_config(self, current: Optional[dict], request: Mapping[str, Any]) -> dict:
        """The config the server builds from the stored one and the request, and checks."""
        fields = protocol.CONFIG_FIELDS
        if self.settings.accept_partial_config:
            base = current or {}
            config = {key: request.get(key) if request.get(key) is not None else base.get(key) for key in fields}
            missing = [key for key in fields if config[key] is None] if current is None else []
        else:
            config = {key: request.get(key) for key in fields}
            missing = list(fields) if current is None else []
        errors = ""
        for key in fields:
            if key in missing:
                errors += f" missing {key},"
            elif key in protocol.INTEGER_CONFIG_FIELDS:
                if config[key] is None:
                    raise SimRefusal(protocol.MESSAGE_PARTIAL_CONFIG)
                try:
                    config[key] = int(config[key])
                except TypeError as exc:
                    raise SimRefusal(str(exc)) from None
                except ValueError:
                    errors += f" non-int value {key};"
        if errors:
            raise SimRefusal(f"Config errors:{errors}")
        return config

    def _deploy(self, config: dict, wait: bool = False, delay_s: Optional[float] = None, restart: bool = True) -> None:
        """Store ``config`` in Redis and deploy it to the servers, which report after ``delay_s``
        (default: ``SimSettings.deploy_delay_s``) in all; ``wait`` until they have.

        ``restart``: the services restart with it (a config change); ``False`` for the
        config a DAQ starts with, which they already run with.
        """
        with _redis_errors():
            config_id = self._store.add_config(config)
        with self._cond:
            fail = self._faults.pop("deployment", None)
            self._config_serial += 1
            serial, generation = self._config_serial, self._generation
            if not restart or self.settings.restart_s <= 0:
                self._services_config = copy.deepcopy(config)
        delay = self.settings.deploy_delay_s if delay_s is None else delay_s
        deploy = threading.Thread(
            target=self._deploy_to_servers,
            args=(config_id, serial, generation, config, fail, delay, restart),
            name="daq-sim-deploy",
            daemon=True,
        )
        deploy.start()
        if wait:
            deploy.join()

    def _deploy_to_servers(
        self, config_id: str, serial: int, generation: int, config: dict, fail: Optional[str], delay_s: float, restart: bool
    ) -> None:
        # Each server reports when it has written the new config: "Deploying", then at once
        # "Done" (or "Error"), so RUNNING is rarely seen and SUCCESS can come while a
        # slower server has not reported yet. The services restart restart_delay_s later.
        servers = self.settings.servers
        for position, name in enumerate(servers):
            if delay_s > 0 and self._closed.wait(delay_s / max(len(servers), 1)):
                return
            failed = fail is not None and position == len(servers) - 1
            for message in ("Deploying", "Error" if failed else "Done"):
                with self._cond:
                    if serial != self._config_serial or generation != self._generation:
                        return  # superseded by a newer config
                    if restart and position == 0 and message == "Deploying" and self.settings.restart_s <= 0:
                        self._restart_services(config, 0.0)
                try:
                    self._store.add_deployment(config_id, name, message)
                except redis.RedisError:
                    return  # a server that cannot reach Redis reports nothing
        if not restart or self.settings.restart_s <= 0:
            return
        if self._closed.wait(self.settings.restart_delay_s):
            return
        with self._cond:
            if generation == self._generation:
                self._restart_services(config, self.settings.restart_s)

    def _restart_services(self, config: dict, down_s: float) -> None:
        """The DAQ's services restart with ``config``, down for ``down_s`` seconds.

        The REST server does not notice: its status stays as it was. A running acquisition
        is lost (:meth:`_lose_run`). A restart while they are down keeps them down until
        ``down_s`` after the later one.
        """
        with self._cond:
            if self._writer_state == WriterState.WRITING and not self._lost and not self._wedged:
                self._lose_run()
            if down_s > 0:
                self._services_down_until = max(self._services_down_until, time.monotonic() + down_s)
                self._services_up_at = self._services_down_until
            self._services_config = copy.deepcopy(config)
            self._cond.notify_all()

    def _lose_run(self) -> None:
        # The writer restarted under a running acquisition: it no longer knows the run, the
        # driver still does. The status stays as last reported (WRITING); the driver goes on
        # forwarding the detector's images to a writer that never acknowledges them and
        # blocks once its window of 20 unacknowledged images is full (within a fraction of a
        # second): it executes no start or stop any more until the REST server restarts.
        with self._cond:
            self._token += 1
            self._wedged = True
            self._cond.notify_all()

    def _lose_acquisition(self) -> None:
        # The writer_state fault: the status says UNKNOWN at once, the acquisition stays as
        # it was last reported (never final); a stop cannot be confirmed, the next one can.
        with self._cond:
            self._token += 1
            self._lost = True
            self._writer_state = WriterState.UNKNOWN
            self._cond.notify_all()
            self._publish_status()

    def _writer_reachable(self) -> bool:
        # Does a command reach a writer that acts on it? Not while the driver is wedged or
        # the services are down (a restarted writer never receives it).
        with self._cond:
            return not self._wedged and time.monotonic() >= self._services_down_until

    def _current_detector_rate(self, now: float) -> float:
        with self._cond:
            if self._stall_until > now or now < self._services_down_until:
                return 0.0
            return float(self.settings.frame_rate if self._detector_rate is None else self._detector_rate)

    # -- faults ------------------------------------------------------------------------------

    def arm_faults(self, faults: Dict[str, Any]) -> Dict[str, Any]:
        """Arm faults (see ``POST /sim/faults`` in ``docs/daq-sim.md``); returns what is armed now.

        ``restart_server`` comes first, so that faults given with it apply to the
        restarted server.

        Raises:
            SimRefusal: ``restart_server`` while Redis cannot be reached (the real server
                does not start without it); nothing is armed then.
            ValueError: a ``bad_file_next`` that is not one of :data:`BAD_FILES`.
        """
        if faults.get("bad_file_next") is not None and faults["bad_file_next"] not in BAD_FILES:
            raise ValueError(f"bad_file_next must be one of {', '.join(BAD_FILES)}, not {faults['bad_file_next']!r}")
        if faults.get("restart_server"):
            self._restart_server()
        now = time.monotonic()
        with self._cond:
            if faults.get("unavailable_s") is not None:
                self._unavailable_until = now + float(faults["unavailable_s"])
            if faults.get("stall_s") is not None:
                self._stall_until = now + float(faults["stall_s"])
            if faults.get("fail_next") is not None:
                self._faults["fail_next"] = str(faults["fail_next"])
            if faults.get("bad_file_next") is not None:
                self._faults["bad_file_next"] = str(faults["bad_file_next"])
            if faults.get("deployment") is not None:
                self._faults["deployment"] = "ERROR"
            if "detector_rate" in faults:  # null: back to the configured rate
                rate = faults["detector_rate"]
                self._detector_rate = None if rate is None else float(rate)
            if faults.get("wedge_driver"):
                self._wedged = True
            if faults.get("kill_log_thread"):
                self._log_thread_alive = False
            if faults.get("kill_writer") and self._writer_state == WriterState.WRITING and not self._lost and not self._wedged:
                self._lose_run()  # an idle writer's restart goes unnoticed
            if faults.get("writer_state") == WriterState.UNKNOWN.value:
                # The status a driver shows after it gave up: a running acquisition is lost,
                # an idle writer is UNKNOWN; stops recover it.
                if self._writer_state == WriterState.WRITING and not self._lost:
                    self._lose_acquisition()
                else:
                    self._writer_state = WriterState.UNKNOWN
                    self._publish_status()
            self._cond.notify_all()
        return self.armed_faults()

    def armed_faults(self) -> Dict[str, Any]:
        """What is armed or in force now, in the form ``POST /sim/faults`` takes."""
        now = time.monotonic()
        with self._cond:
            armed: Dict[str, Any] = dict(self._faults)
            if self._unavailable_until > now:
                armed["unavailable_s"] = round(self._unavailable_until - now, 3)
            if self._stall_until > now:
                armed["stall_s"] = round(self._stall_until - now, 3)
            if self._detector_rate is not None:
                armed["detector_rate"] = self._detector_rate
            if self._wedged:
                armed["wedge_driver"] = True
            if not self._log_thread_alive:
                armed["kill_log_thread"] = True
            if self._writer_state == WriterState.UNKNOWN:
                armed["writer_state"] = WriterState.UNKNOWN.value
            return armed

    def _restart_server(self) -> None:
        """The REST server restarts: a new driver (UNKNOWN, no acquisition, not wedged), a new
        log thread; a Redis without config gets the initial one again (the server deploys its
        config file when Redis has none). The DAQ's services are not restarted."""
        with _redis_errors():
            config_id, _ = self._store.get_config()
        self._abandon_worker()
        with self._cond:
            self._writer_state = WriterState.UNKNOWN
            self._acquisition = None
            self._lost = self._wedged = self._stop_requested = False
            self._log_thread_alive = True
            self._cond.notify_all()
        if config_id is None:
            self._deploy(copy.deepcopy(self._initial_config), wait=True, delay_s=0.0, restart=False)

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
        real server's message when the request is refused, in the server's order:

        - Redis cannot be reached, or holds no config (the server reads ``writer_user_id``);
          a bad output path; a writer that is not READY (with the driver's status dict);
        - the start reaches no writer (the services are down, the driver is wedged), or
          ``n_images`` does not fit the writer protocol's 32-bit integer: "Cannot reach
          WRITING. ..." after ``driver_timeout_s``, the writer UNKNOWN with no acquisition;
        - the writer cannot open the run (the file cannot be created, a bit depth it does
          not support): it fails the acquisition the driver knows, the earlier one, with
          its error, which the driver's next poll passes on ("ERROR: Cannot create output
          file.", "ERROR: Unsupported bits per pixel:12"); without an earlier acquisition
          "Cannot reach WRITING. ..." after ``driver_timeout_s``.

        The driver's poll also passes on the error of an earlier FAILED acquisition when the
        writer does not start.
        """
        from .hdf5 import Hdf5Writer

        run_id = time.time_ns() if run_id is None else run_id
        with _redis_errors():
            _, stored = self._store.get_config()
        if stored is None:
            raise SimRefusal(protocol.MESSAGE_NO_CONFIG_TO_READ)
        self.check_output_file(output_file)
        with self._driver:
            with self._cond:
                if self._writer_state != WriterState.READY:
                    raise SimRefusal(protocol.MESSAGE_BUSY.format(status=repr(self.status())))
                config = copy.deepcopy(self._services_config)
            if not self._writer_reachable() or n_images > protocol.MAX_WRITER_N_IMAGES:
                # Nothing starts: the driver waits its polls out.
                self._wait_for_state(WriterState.WRITING)
                self._give_up(protocol.MESSAGE_CANNOT_REACH_WRITING)
            error = None
            if config["bit_depth"] not in protocol.BIT_DEPTHS:
                error = protocol.MESSAGE_UNSUPPORTED_BIT_DEPTH.format(bit_depth=config["bit_depth"])
            else:
                error = _image_size_error(config)
            with self._cond:
                bad_file = self._faults.get("bad_file_next")
            try:
                # The writer creates (truncates) the file first, then its datasets.
                writer = Hdf5Writer(output_file, config, None if error else config["bit_depth"], n_images=n_images, bad_file=bad_file)
            except Exception as exc:  # no permission, a folder of that name, a file held open...
                log.info("cannot create %s: %s", output_file, exc)
                error = protocol.MESSAGE_CANNOT_CREATE_FILE
            else:
                if error:
                    writer.close()
            if error:
                self._writer_fails_to_open(error)
            with self._cond:
                self._token += 1
                self._stop_requested = False
                self._lost = False
                self._writer_state = WriterState.WRITING
                self._acquisition = {
                    "state": AcquisitionState.WAITING_IMAGES.value,
                    "message": "",
                    "stats": {"n_write_completed": 0, "n_write_requested": 0, "start_time": time.time(), "stop_time": None},
                    "info": {"output_file": output_file, "n_images": n_images, "run_id": run_id},
                }
                self._faults.pop("bad_file_next", None)
                job = _Job(self._token, n_images, config, writer, self._faults.pop("fail_next", None))
                self._worker = threading.Thread(target=self._acquire, args=(job,), name="daq-sim-writer", daemon=True)
                self._worker.start()
                self._publish_status()
            try:
                if not self._wait_for_state(WriterState.WRITING):
                    self._give_up(protocol.MESSAGE_CANNOT_REACH_WRITING)
            finally:
                job.go.set()  # images flow (or the abandoned writer thread sees its token gone)
            return self.status()

    def _writer_fails_to_open(self, message: str) -> None:
        # The writer reports its error as the end of the acquisition the driver knows (the
        # earlier one), so the driver's next poll sees it FAILED and passes the message on;
        # with no earlier acquisition nothing changes and the driver waits its polls out.
        with self._cond:
            acquisition = self._acquisition
            if acquisition is not None:
                acquisition["state"] = AcquisitionState.FAILED.value
                acquisition["message"] = message
                now = time.time()
                acquisition["stats"]["stop_time"] = acquisition["stats"]["start_time"] = now
                self._publish_status()
        self._wait_for_state(WriterState.WRITING)
        self._give_up(protocol.MESSAGE_CANNOT_REACH_WRITING)

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

        The stop reaches the writer (unless the driver is wedged or the services are down):

        - WRITING: the acquisition ends FINISHED "Interrupted." with the images written so far;
        - READY: the last acquisition is published again as FINISHED and logged again;
        - UNKNOWN: READY (the acquisition, usually none, stays);
        - UNKNOWN after the writer_state fault lost a running acquisition: nothing confirms
          the stop.

        The driver then waits for READY: a writer that was READY already answers after one
        poll, whether the stop reached it or not; otherwise after ``driver_timeout_s``
        :class:`SimRefusal` "Cannot reach READY. ..." and the writer is UNKNOWN with no
        acquisition (a wedged driver answers so to every stop until the server restarts).
        """
        with self._driver:
            with self._cond:
                if not self._writer_reachable():
                    pass  # the command goes nowhere
                elif self._writer_state == WriterState.WRITING:
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
        the writer is in ``target``; False after ``driver_timeout_s``.

        Raises :class:`SimRefusal` with the acquisition's message as soon as a look finds it
        is not in ``target`` and its acquisition's message is an ``ERROR:``.
        """
        poll = self.settings.driver_poll_s
        deadline = time.monotonic() + self.settings.driver_timeout_s
        while True:
            if poll > 0:
                if self._closed.wait(poll):
                    return False
                if self._driver_sees(target):
                    return True
                if time.monotonic() >= deadline:
                    return False
                continue
            with self._cond:
                while not self._driver_sees(target):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed.is_set():
                        return False
                    self._cond.wait(remaining)
                return True

    def _driver_sees(self, target: WriterState) -> bool:
        with self._cond:
            if self._writer_state == target:
                return True
            message = (self._acquisition or {}).get("message")
            if isinstance(message, str) and message.startswith("ERROR:"):
                raise SimRefusal(message)
            return False

    def _give_up(self, message: str) -> None:
        # The driver resets its own status to UNKNOWN without acquisition (published
        # nowhere: only the writer's reports reach daq:status) and asks for a restart.
        with self._cond:
            self._token += 1
            self._lost = False
            self._writer_state = WriterState.UNKNOWN
            self._acquisition = None
            self._cond.notify_all()
        raise SimRefusal(message)

    # -- the writer ------------------------------------------------------------------------------

    def _acquire(self, job: _Job) -> None:
        from .hdf5 import frame_source

        writer = job.writer
        outcome: Optional[Tuple[AcquisitionState, str]] = None
        try:
            # The driver forwards images only once its poll saw WRITING.
            job.go.wait()
            source = frame_source(job.config)
            written = 0
            produced = 0.0  # images the detector has sent since the start (a float: any rate)
            last = last_publish = time.monotonic()
            rate = self._current_detector_rate(last)
            fail_at = job.n_images // 2 if job.fail_message else None
            while written < job.n_images:
                with self._cond:
                    if self._token != job.token:
                        return  # lost or reset; the status already says so
                    if self._stop_requested:
                        outcome = (AcquisitionState.FINISHED, protocol.MESSAGE_INTERRUPTED)
                        break
                    now = time.monotonic()
                    produced = min(float(job.n_images), produced + (now - last) * rate)
                    last, rate = now, self._current_detector_rate(now)
                    # At most 64 images per HDF5 write: bounded memory at any frame rate.
                    due = min(job.n_images, int(produced), written + 64)
                    if fail_at is not None and due > fail_at:
                        due = fail_at
                    if due <= written and fail_at != written:
                        self._cond.wait((written + 1 - produced) / rate if rate > 0 else _IDLE_POLL_S)
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
            # the second status logger's copies may interleave (WRITING, READY, WRITING, READY).
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
        # The server's log thread stores every FINISHED acquisition it hears of. It catches
        # only its receive timeout: the first Redis error ends it, and nothing is logged any
        # more until the server restarts.
        with self._cond:
            if not self._log_thread_alive:
                return
            try:
                self._store.add_log(acquisition)
            except redis.RedisError as exc:
                self._log_thread_alive = False
                log.warning("the log thread ended on a Redis error; nothing is logged until the server restarts: %s", exc)

    # -- publication ------------------------------------------------------------------------

    def _draw_interleave(self) -> bool:
        return self._random.random() < self.settings.status_interleave

    def _publish_status(self) -> None:
        # Under the state lock, so that entries reach the stream in the order of the transitions.
        with self._cond:
            self._loggers.publish(self.streams.status, self.status())

    def _publish_stats(self) -> None:
        # The statistics count the services' images: zeros while they are down (or, with
        # the "silence" model, no entry at all). The detector streams at its rate all the
        # time (idle, UNKNOWN too) unless stopped or stalled; the writer rate counts the
        # images written in the last second.
        now = time.monotonic()
        with self._cond:
            if now < self._services_down_until and self.settings.stats_while_down == "silence":
                return
            config = self._services_config
            try:
                bytes_per_image = int(config["image_pixel_height"]) * int(config["image_pixel_width"]) * int(config["bit_depth"]) // 8
            except (KeyError, TypeError, ValueError):
                bytes_per_image = 0
            while self._written and now - self._written[0][0] > 1.0:
                self._written.popleft()
            written = float(sum(n for _, n in self._written))
            detector_rate = self._current_detector_rate(now)
            stats = {
                "detector": {"bytes_per_second": detector_rate * bytes_per_image, "images_per_second": detector_rate},
                "writer": {"bytes_per_second": written * bytes_per_image, "images_per_second": written},
            }
        self._store.publish(self.streams.stat, stats)

    def _tick(self) -> None:
        # daq:stat every heartbeat_s; with the "silence" model the first entry after a
        # restart of the services comes one interval after they are back, as at start.
        last = time.monotonic()
        while True:
            with self._cond:
                silence = self.settings.stats_while_down == "silence"
                due = (max(last, self._services_up_at) if silence else last) + self.settings.heartbeat_s
            delay = due - time.monotonic()
            if delay > 0:
                if self._closed.wait(delay):
                    return
                continue
            self._publish_stats()
            # On time, or (a machine too busy to wake in time) one interval from now: no burst.
            last = due if time.monotonic() - due < self.settings.heartbeat_s else time.monotonic()
