"""The simulated DAQ itself: configuration, writer state machine, HDF5 files, Redis streams.

Everything here is independent of HTTP; :mod:`daq_runner.sim.app` puts the REST API of
the deployed rest_v2 server in front of it. The in-memory state is the truth; Redis is
published to, so the REST API keeps answering when Redis goes away and publishing
resumes when it is back.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import api
from ..api import AcquisitionState, DeploymentStatus, WriterState

__all__ = ["SimSettings", "SimulatedDaqCore", "SimRefusal", "DEFAULT_CONFIG", "validate_config_update"]

log = logging.getLogger(__name__)

# 256 x 256 x 16 bit: 128 KiB per image keeps demo files small.
DEFAULT_CONFIG: Dict[str, Any] = {
    "detector_name": "SIM-EIGER-64K",
    "detector_type": "eiger",
    "bit_depth": 16,
    "image_pixel_height": 256,
    "image_pixel_width": 256,
    "n_modules": 1,
    "start_udp_port": 50000,
    "writer_user_id": 0,
    "module_positions": {"0": [0, 255, 255, 0]},
    "submodule_info": {},
}
_MAX_PIXELS = 4096 * 4096


class SimRefusal(Exception):
    """An application error: the REST layer answers HTTP 200 with ``status: error``."""


@dataclass
class SimSettings:
    """How the simulator behaves.

    Args:
        frame_rate: images per second the simulated detector sends.
        sync_limit_s: how long ``write_sync`` waits before answering with an error.
        deploy_delay_s: time each simulated server takes to deploy a config.
        servers: names of the simulated DAQ servers that report deployments.
        streams: Redis stream names.
        status_interval_s: status publication period while writing.
        heartbeat_s: status and stats publication period.
        stream_maxlen: approximate length at which streams are trimmed.
        start_state: writer state at start, ``"READY"`` or ``"UNKNOWN"``. ``None``: as a
            deployed DAQ, UNKNOWN when this is a restart (the DAQ's Redis already holds a
            writer status from an earlier instance), READY on a fresh system.
    """

    frame_rate: float = 100.0
    sync_limit_s: float = 60.0
    deploy_delay_s: float = 0.2
    servers: Tuple[str, ...] = ("sim-daq-0", "sim-daq-1")
    streams: api.StreamNames = field(default_factory=api.StreamNames)
    status_interval_s: float = 0.5
    heartbeat_s: float = 1.0
    stream_maxlen: int = 10_000
    start_state: Optional[str] = None


def validate_config_update(current: Optional[dict], update: Any) -> dict:
    """Merge a partial config into the current one, converting and checking types like rest_v2."""
    if not isinstance(update, dict):
        raise SimRefusal("Config must be a JSON object.")
    unknown = sorted(set(update) - set(api.CONFIG_FIELDS))
    if unknown:
        raise SimRefusal(f"Unknown config field(s): {', '.join(unknown)}.")
    merged = dict(current or {})
    for key, value in update.items():
        if key in api.INTEGER_CONFIG_FIELDS:
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
        elif key == "submodule_info" and not isinstance(value, dict):
            raise SimRefusal("Config field 'submodule_info' must be an object.")
        merged[key] = value
    missing = [k for k in api.CONFIG_FIELDS if k not in merged and k != "submodule_info"]
    if missing:
        raise SimRefusal(f"Config is missing field(s): {', '.join(missing)}.")
    if merged["detector_type"] not in api.DETECTOR_TYPES:
        raise SimRefusal(
            f"Unknown detector_type '{merged['detector_type']}'; expected one of {', '.join(api.DETECTOR_TYPES)}."
        )
    if merged["bit_depth"] not in api.BIT_DEPTHS:
        raise SimRefusal(f"Unsupported bit_depth {merged['bit_depth']}; expected one of 8, 16, 32.")
    height, width = merged["image_pixel_height"], merged["image_pixel_width"]
    if height < 1 or width < 1 or height * width > _MAX_PIXELS:
        raise SimRefusal(f"Image size {height}x{width} is not supported.")
    if merged["n_modules"] < 1:
        raise SimRefusal("n_modules must be >= 1.")
    merged.setdefault("submodule_info", {})
    return merged


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
        import json

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


class _LocalIds:
    """Stream-like ids for entries that could not be published (Redis down)."""

    def __init__(self) -> None:
        self._last = (0, 0)

    def next(self) -> str:
        ms = int(time.time() * 1000)
        seq = self._last[1] + 1 if ms <= self._last[0] else 0
        self._last = (max(ms, self._last[0]), seq)
        return f"{self._last[0]}-{self._last[1]}"


def _empty_status() -> dict:
    return {"acquisition": None, "state": WriterState.READY.value}


class SimulatedDaqCore:
    """State and behaviour of a simulated Standard DAQ (no HTTP).

    Args:
        settings: see :class:`SimSettings`.
        redis_url: Redis to publish the streams to (``None``: publish nothing).
        config: initial configuration (default: a small simulated Eiger).
    """

    def __init__(self, settings: Optional[SimSettings] = None, redis_url: Optional[str] = None, config: Optional[dict] = None) -> None:
        self.settings = settings or SimSettings()
        self.streams = self.settings.streams
        self._publisher = _Publisher(redis_url, self.settings.stream_maxlen)
        self._ids = _LocalIds()
        self._cond = threading.Condition(threading.RLock())
        self._initial_config = validate_config_update(None, config or DEFAULT_CONFIG)
        self._closed = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        self._reset_state()

    # -- lifecycle ------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.config: Optional[dict] = None
        self.config_id: Optional[str] = None
        self._deployment: Dict[str, Any] = {"servers": {}, "start_time": None, "stop_time": None, "messages": {}}
        self._writer_state = WriterState.READY
        self._acquisition: Optional[dict] = None
        self._token = 0  # identifies the acquisition a worker thread may update
        self._stop_requested = False
        self._worker: Optional[threading.Thread] = None
        self._logs: List[Tuple[str, dict]] = []  # newest first
        self._faults: Dict[str, Any] = {}
        self._unavailable_until = 0.0
        self._stall_until = 0.0
        self._image_id = 0
        self._writer_images: List[float] = []
        self._stats: Optional[dict] = None

    def start(self) -> "SimulatedDaqCore":
        """Deploy the initial config and start the 1 Hz status and stats publication.

        A restart (the Redis already holds an earlier instance's writer status) comes up
        as a deployed DAQ does after a writer restart: writer UNKNOWN, no acquisition,
        the acquisition logs still served from ``daq:log``.
        """
        restarted = bool(self._publisher.history(self.streams.status, 1))
        start_state = self.settings.start_state or (WriterState.UNKNOWN.value if restarted else WriterState.READY.value)
        with self._cond:
            self._writer_state = WriterState(start_state)
            self._logs = self._publisher.history(self.streams.log, 1000)
        self.set_config(self._initial_config, _wait=True)
        self._publish_status()
        self._ticker = threading.Thread(target=self._tick, name="daq-sim-ticker", daemon=True)
        self._ticker.start()
        return self

    def close(self) -> None:
        """Stop any acquisition and the background threads."""
        self._closed.set()
        self._interrupt(wait=True)
        if self._ticker is not None:
            self._ticker.join(5)
        self._publisher.close()

    def reset(self) -> None:
        """Clear faults, stop any acquisition and return to the initial config (``POST /sim/reset``)."""
        self._interrupt(wait=True)
        with self._cond:
            self._faults.clear()
            self._unavailable_until = 0.0
            self._stall_until = 0.0
            self._writer_state = WriterState.READY
            self._acquisition = None
            self._logs.clear()
        self.set_config(self._initial_config, _wait=True)
        self._publish_status()

    # -- reading ----------------------------------------------------------------------

    def status(self) -> dict:
        with self._cond:
            return {"acquisition": copy.deepcopy(self._acquisition), "state": self._writer_state.value}

    def logs(self, n: int) -> Dict[str, dict]:
        """The last ``n`` FINISHED acquisitions, keyed by stream id, newest first (as rest_v2)."""
        with self._cond:
            return {entry_id: copy.deepcopy(acq) for entry_id, acq in self._logs[: max(n, 0)]}

    def stats(self) -> Optional[dict]:
        with self._cond:
            return copy.deepcopy(self._stats)

    def deployment(self) -> dict:
        with self._cond:
            dep = self._deployment
            servers = dict(dep["servers"])
            if self.config_id is None:
                status, message = DeploymentStatus.UNKNOWN, "No config available"
            elif not servers:
                status, message = DeploymentStatus.UNKNOWN, "Waiting for servers..."
            elif any(v == "Error" for v in servers.values()):
                errors = [f"{k}: {dep['messages'].get(k, 'Error')}" for k, v in servers.items() if v == "Error"]
                status, message = DeploymentStatus.ERROR, "Deployment failed on " + "; ".join(errors)
            elif any(v == "Deploying" for v in servers.values()):
                status, message = DeploymentStatus.RUNNING, "Deployment in progress"
            else:
                status, message = DeploymentStatus.SUCCESS, "Deployment successful"
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

    def set_config(self, update: Any, _wait: bool = False) -> dict:
        """Apply a partial config and start its deployment to the simulated servers."""
        with self._cond:
            if self._writer_state == WriterState.WRITING:
                raise SimRefusal("Cannot change the config while an acquisition is running.")
            new_config = validate_config_update(self.config, update)
            fail = self._faults.pop("deployment", None)
            self.config = new_config
            config_id = self._publisher.xadd(self.streams.config, new_config) or self._ids.next()
            self.config_id = config_id
            self._deployment = {
                "servers": {name: "Deploying" for name in self.settings.servers},
                "messages": {},
                "start_time": time.time(),
                "stop_time": None,
            }
        for name in self.settings.servers:
            self._publisher.xadd(self.streams.deployment(config_id), None, {"server_name": name, "message": "Deploying"})
        deploy = threading.Thread(target=self._deploy, args=(config_id, fail), name="daq-sim-deploy", daemon=True)
        deploy.start()
        if _wait:
            deploy.join()
        return copy.deepcopy(new_config)

    def _deploy(self, config_id: str, fail: Optional[str]) -> None:
        for position, name in enumerate(self.settings.servers):
            if self._closed.wait(self.settings.deploy_delay_s / max(len(self.settings.servers), 1)):
                return
            failed = fail is not None and position == len(self.settings.servers) - 1
            outcome = "Error" if failed else "Done"
            with self._cond:
                if self.config_id != config_id:
                    return  # superseded by a newer config
                self._deployment["servers"][name] = outcome
                if failed:
                    self._deployment["messages"][name] = fail
                if all(v != "Deploying" for v in self._deployment["servers"].values()):
                    self._deployment["stop_time"] = time.time()
            message = "Done" if not failed else f"Error: {fail}"
            self._publisher.xadd(self.streams.deployment(config_id), None, {"server_name": name, "message": message})

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
                self._faults["deployment"] = "ERROR: simulated deployment failure"
            if faults.get("writer_state") == WriterState.UNKNOWN.value:
                self._go_unknown()
            self._cond.notify_all()
        self._publish_status()
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

    def _go_unknown(self) -> None:
        # As after a writer restart: the acquisition in progress is lost.
        if self._writer_state == WriterState.WRITING and self._acquisition is not None:
            self._acquisition["state"] = AcquisitionState.FAILED.value
            self._acquisition["message"] = "ERROR: writer restarted, acquisition lost."
            self._acquisition["stats"]["stop_time"] = time.time()
        self._token += 1
        self._writer_state = WriterState.UNKNOWN

    # -- writing ---------------------------------------------------------------------------

    def check_output_file(self, output_file: str) -> None:
        if not output_file.startswith("/"):
            raise SimRefusal(f"Output file '{output_file}' must be an absolute path.")
        if not api.OUTPUT_FILE_PATTERN.match(output_file):
            raise SimRefusal(f"Output file '{output_file}' does not match {api.OUTPUT_FILE_PATTERN.pattern}.")
        folder = os.path.dirname(output_file)
        if not os.path.isdir(folder):
            raise SimRefusal(f"Output folder '{folder}' does not exist.")

    def start_write(self, output_file: str, n_images: int, run_id: Optional[int]) -> dict:
        """Start an acquisition (``write_async``); returns the writer status."""
        with self._cond:
            if self._writer_state == WriterState.UNKNOWN:
                raise SimRefusal("Writer is in UNKNOWN state; call stop to reset it.")
            if self._writer_state != WriterState.READY:
                raise SimRefusal("Cannot start new acquisition while previous one is running.")
            self.check_output_file(output_file)
            if run_id is None:
                run_id = time.time_ns()
            self._token += 1
            self._stop_requested = False
            self._writer_state = WriterState.WRITING
            self._acquisition = {
                "info": {"n_images": n_images, "output_file": output_file, "run_id": run_id},
                "message": "Waiting for images.",
                "state": AcquisitionState.WAITING_IMAGES.value,
                "stats": {"n_write_completed": 0, "n_write_requested": 0, "start_time": time.time(), "stop_time": None},
            }
            job = _Job(self._token, output_file, n_images, dict(self.config or {}), self._faults.pop("fail_next", None))
            self._worker = threading.Thread(target=self._acquire, args=(job,), name="daq-sim-writer", daemon=True)
            self._publish_status()
            self._worker.start()
            return self.status()

    def wait_while_writing(self, timeout: float) -> bool:
        """Block until the writer leaves WRITING (``write_sync``); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._writer_state == WriterState.WRITING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self) -> dict:
        """Stop the acquisition in progress; resets an UNKNOWN writer to READY."""
        self._interrupt(wait=True)
        with self._cond:
            if self._writer_state == WriterState.UNKNOWN:
                self._writer_state = WriterState.READY
        self._publish_status()
        return self.status()

    def _interrupt(self, wait: bool) -> None:
        with self._cond:
            self._stop_requested = True
            worker = self._worker
            self._cond.notify_all()
        if wait and worker is not None and worker is not threading.current_thread():
            worker.join(10)

    def _acquire(self, job: "_Job") -> None:
        from .hdf5 import Hdf5Writer, frame_source

        rate = self.settings.frame_rate
        try:
            writer = Hdf5Writer(job.output_file, job.config, job.n_images)
        except Exception as exc:  # the real writer reports any file problem as FAILED
            self._finish(job, AcquisitionState.FAILED, f"ERROR: cannot create file: {exc}")
            return
        source = frame_source(job.config)
        written = 0
        last_publish = time.monotonic()
        t0 = time.monotonic()
        fail_at = job.n_images // 2 if job.fail_message else None
        outcome: Optional[Tuple[AcquisitionState, str]] = None
        try:
            while written < job.n_images:
                with self._cond:
                    if self._token != job.token:
                        return  # lost (writer went UNKNOWN); the status already says so
                    if self._stop_requested:
                        outcome = (AcquisitionState.FINISHED, api.MESSAGE_INTERRUPTED)
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
                    outcome = (AcquisitionState.FAILED, job.fail_message)
                    break
                first_id = self._image_id
                self._image_id += due - written
                writer.append(source.frames(written, due), first_id)
                with self._cond:
                    if self._token != job.token:
                        return
                    self._writer_images.extend([time.monotonic()] * (due - written))
                    stats = self._acquisition["stats"]
                    stats["n_write_requested"] = stats["n_write_completed"] = due
                    if written == 0:
                        self._acquisition["state"] = AcquisitionState.ACQUIRING_IMAGES.value
                        self._acquisition["message"] = "Acquiring images."
                        self._publish_status()
                        last_publish = time.monotonic()
                    written = due
                    if time.monotonic() - last_publish >= self.settings.status_interval_s:
                        self._publish_status()
                        last_publish = time.monotonic()
            if outcome is None:
                with self._cond:
                    if self._token != job.token:
                        return
                    self._acquisition["state"] = AcquisitionState.FLUSHING_IMAGES.value
                    self._acquisition["message"] = "Flushing images."
                    self._publish_status()
                outcome = (AcquisitionState.FINISHED, api.MESSAGE_COMPLETED)
        finally:
            writer.close()
        self._finish(job, *outcome)

    def _finish(self, job: "_Job", state: AcquisitionState, message: str) -> None:
        with self._cond:
            if self._token != job.token:
                return
            acq = self._acquisition
            acq["state"] = state.value
            acq["message"] = message
            acq["stats"]["stop_time"] = time.time()
            if state == AcquisitionState.FAILED:
                acq["stats"]["start_time"] = acq["stats"]["stop_time"]  # as the real driver does
            else:
                # Only FINISHED acquisitions are logged; the log entry precedes the final status.
                entry_id = self._publisher.xadd(self.streams.log, acq) or self._ids.next()
                self._logs.insert(0, (entry_id, copy.deepcopy(acq)))
                del self._logs[1000:]
            self._writer_state = WriterState.READY
            self._worker = None
            self._publish_status()
            self._cond.notify_all()

    # -- publication ------------------------------------------------------------------------

    def _publish_status(self) -> None:
        # Under the state lock, so that entries reach the stream in the order of the transitions.
        with self._cond:
            self._publisher.xadd(self.streams.status, self.status())

    def _tick(self) -> None:
        period = self.settings.heartbeat_s
        bytes_per_image = 0
        while not self._closed.wait(period):
            now = time.monotonic()
            with self._cond:
                config = self.config or {}
                bytes_per_image = (
                    config.get("image_pixel_height", 0) * config.get("image_pixel_width", 0) * config.get("bit_depth", 0) // 8
                )
                self._writer_images = [t for t in self._writer_images if now - t <= 1.0]
                written = len(self._writer_images)
                stalled = self._stall_until > now
                detector_rate = 0.0 if stalled or self._writer_state == WriterState.UNKNOWN else self.settings.frame_rate
                self._stats = {
                    "detector": {"bytes_per_second": detector_rate * bytes_per_image, "images_per_second": detector_rate},
                    "writer": {"bytes_per_second": float(written * bytes_per_image), "images_per_second": float(written)},
                }
                stats = copy.deepcopy(self._stats)
            self._publisher.xadd(self.streams.stat, stats)
            self._publish_status()


@dataclass
class _Job:
    token: int
    output_file: str
    n_images: int
    config: dict
    fail_message: Optional[str]
