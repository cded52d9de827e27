"""The wire protocol of the rest_v2 Standard DAQ (REST API and Redis streams), written down once.

Endpoints, stream names, states, the server's messages and the shapes of the status, config,
stats, log and deployment objects. The client, the simulator, the runner and the tests all import
them from here, so that a path or a field name can never differ between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, NamedTuple, Optional, TypedDict

__all__ = [
    "DEFAULT_URL",
    "DEFAULT_REDIS_PORT",
    "DEFAULT_OUTAGE_S",
    "Endpoint",
    "WRITER_STATUS",
    "WRITER_WRITE_ASYNC",
    "WRITER_WRITE_SYNC",
    "WRITER_STOP",
    "DAQ_CONFIG_GET",
    "DAQ_CONFIG_SET",
    "DAQ_STATS",
    "DAQ_LOGS",
    "DAQ_DEPLOYMENT",
    "ENDPOINTS",
    "StreamNames",
    "WriterState",
    "AcquisitionState",
    "DeploymentStatus",
    "DETECTOR_TYPES",
    "BIT_DEPTHS",
    "CONFIG_FIELDS",
    "INTEGER_CONFIG_FIELDS",
    "OUTPUT_FILE_PATTERN",
    "MESSAGE_COMPLETED",
    "MESSAGE_INTERRUPTED",
    "WriterStatus",
    "AcquisitionRecord",
    "DaqConfig",
    "DaqStats",
    "Deployment",
    "logs_as_list",
    "writer_rate",
    "acquisition_run_id",
]

DEFAULT_URL = "http://127.0.0.1:5000"
DEFAULT_REDIS_PORT = 6379
# How long a runner rides out an unreachable DAQ: a writer service restart takes ~10-30 s.
DEFAULT_OUTAGE_S = 40.0


class Endpoint(NamedTuple):
    """One REST endpoint: HTTP method, path template and the envelope key of its payload."""

    method: str
    path: str
    payload_key: str

    def url(self, base: str, **params: Any) -> str:
        return base.rstrip("/") + self.path.format(**params)


WRITER_STATUS = Endpoint("GET", "/writer/status", "writer")
WRITER_WRITE_ASYNC = Endpoint("POST", "/writer/write_async", "writer")
WRITER_WRITE_SYNC = Endpoint("POST", "/writer/write_sync", "writer")
WRITER_STOP = Endpoint("POST", "/writer/stop", "writer")
DAQ_CONFIG_GET = Endpoint("GET", "/daq/config", "config")
DAQ_CONFIG_SET = Endpoint("POST", "/daq/config", "config")
DAQ_STATS = Endpoint("GET", "/daq/stats", "stats")
# The path template is also the FastAPI route of the simulator.
DAQ_LOGS = Endpoint("GET", "/daq/logs/{n}", "logs")
DAQ_DEPLOYMENT = Endpoint("GET", "/daq/deployment", "deployment")

ENDPOINTS = (
    WRITER_STATUS,
    WRITER_WRITE_ASYNC,
    WRITER_WRITE_SYNC,
    WRITER_STOP,
    DAQ_CONFIG_GET,
    DAQ_CONFIG_SET,
    DAQ_STATS,
    DAQ_LOGS,
    DAQ_DEPLOYMENT,
)


@dataclass(frozen=True)
class StreamNames:
    """Names of the Redis streams of one DAQ instance (configurable: deployments differ)."""

    status: str = "daq:status"
    config: str = "daq:config"
    log: str = "daq:log"
    stat: str = "daq:stat"

    def deployment(self, config_id: str) -> str:
        """Stream with the per-server deployment progress of one config change."""
        return f"{self.config}:{config_id}"


class WriterState(str, Enum):
    READY = "READY"
    WRITING = "WRITING"
    UNKNOWN = "UNKNOWN"


class AcquisitionState(str, Enum):
    WAITING_IMAGES = "WAITING_IMAGES"
    ACQUIRING_IMAGES = "ACQUIRING_IMAGES"
    WRITING = "WRITING"
    FLUSHING_IMAGES = "FLUSHING_IMAGES"
    FINISHED = "FINISHED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (AcquisitionState.FINISHED, AcquisitionState.FAILED)


class DeploymentStatus(str, Enum):
    UNKNOWN = "UNKNOWN"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"


MESSAGE_COMPLETED = "Completed."
MESSAGE_INTERRUPTED = "Interrupted."

# -- The deployed rest_v2 server's exact texts (PSI std_daq_service, its last version) -----
# Envelope messages of successful replies; ``{...}`` are str.format fields.
MESSAGE_WRITER_STATUS = "Writer is {state}"
MESSAGE_WRITING_STARTED = "Writing started."
MESSAGE_WRITING_FINISHED = "Writing finished."
MESSAGE_WRITING_STOPPED = "Writing stopped."
MESSAGE_CONFIG = "DAQ configured for bit_depth={bit_depth}."
MESSAGE_NO_CONFIG = "No config set yet."
MESSAGE_CONFIG_SET = "Setting new daq config."
MESSAGE_STATS = "DAQ statistics"
MESSAGE_LOGS = "DAQ logs"
MESSAGE_DEPLOYMENT = "Deployment status"
# Refusals (HTTP 200, ``status: error``). A write while the writer is not READY; the
# server appends the Python repr of its status dict after the newline and a space.
MESSAGE_BUSY = "Cannot start new acquisition while previous one is running:\n {status}"
MESSAGE_BUSY_PREFIX = "Cannot start new acquisition while previous one is running"
# The refusal of the real server when its writer cannot reach WRITING/READY: the writer
# driver polls its writer every 0.1 s, 50 times, for the state it asked for.
MESSAGE_NEEDS_RESTART = "Writer needs to be restarted."
MESSAGE_CANNOT_REACH_WRITING = "Cannot reach WRITING. " + MESSAGE_NEEDS_RESTART
MESSAGE_CANNOT_REACH_READY = "Cannot reach READY. " + MESSAGE_NEEDS_RESTART
# Acquisition messages of the writer (``acquisition.message``, state FAILED).
MESSAGE_CANNOT_CREATE_FILE = "ERROR: Cannot create output file."
MESSAGE_UNSUPPORTED_BIT_DEPTH = "ERROR: Unsupported bits per pixel:{bit_depth}"
# Output path checks of the write request.
MESSAGE_PATH_NOT_ABSOLUTE = 'Invalid output_file={output_file}. Path must be absolute - starts with "/".'
MESSAGE_PATH_INVALID = "Invalid output_file={output_file}. Must be a valid posix path."
MESSAGE_FOLDER_MISSING = "Output file folder {folder} does not exist. Please create it first."
# write_sync after its limit (60 s on the real server); the acquisition goes on.
MESSAGE_SYNC_LIMIT = (
    "Your acquisition is still running, just the REST call has ended. "
    "Sync acquisition limit of {limit} seconds exceeded. Use async write call for long acquisitions."
)
# POST /daq/config: a partial config (the server fills absent fields with null, then int()s them),
# and module_positions in the object form its own model declares.
MESSAGE_PARTIAL_CONFIG = "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"
MESSAGE_MODULE_POSITIONS = "Object of type ModulePositions is not JSON serializable"
# GET /daq/logs/{n} with n < 1 (redis-py's refusal, passed through).
MESSAGE_LOGS_COUNT = "XREVRANGE count must be a positive integer"
# Deployment status messages (``deployment.message``).
MESSAGE_DEPLOYMENT_NO_CONFIG = "No config available"
MESSAGE_DEPLOYMENT_WAITING = "Waiting for servers..."
MESSAGE_DEPLOYMENT_RUNNING = "Deploying on servers..."
MESSAGE_DEPLOYMENT_SUCCESS = "Deployment successful"
MESSAGE_DEPLOYMENT_FAILED = "Deployment failed"
# n_images the writer protocol carries (a 32-bit signed integer): 2**31 and more never start.
MAX_WRITER_N_IMAGES = 2**31 - 1
# A write or config while the DAQ has no config (its Redis came back empty): the server reads
# the config's writer_user_id first.
MESSAGE_NO_CONFIG_TO_READ = "'NoneType' object is not subscriptable"
# The server's answer while its own Redis is down: redis-py's message, passed through as an
# application error (HTTP 200, status: error). "Error 111 connecting to HOST:PORT. Connection
# refused.", "Timeout reading from HOST:PORT", "Redis is loading the dataset in memory", ...
REDIS_UNAVAILABLE_PATTERN = re.compile(
    r"^(Error -?\d+ (connecting to|while (reading|writing))|Error while (reading|writing)|"
    r"Timeout (connecting|reading|writing)|Connection closed by server|Redis is loading the dataset)"
)


def redis_unavailable(message: Any) -> bool:
    """Whether an error reply's ``message`` is the server's Redis connection failing (see
    :data:`REDIS_UNAVAILABLE_PATTERN`), not a refusal of the request."""
    return isinstance(message, str) and REDIS_UNAVAILABLE_PATTERN.match(message.strip()) is not None


# Refusals of a write request that the same request meets again, whatever the DAQ does meanwhile.
_FINAL_REFUSALS = (
    (MESSAGE_PATH_NOT_ABSOLUTE, "the output path is not absolute"),
    (MESSAGE_PATH_INVALID, "the output path is not one the DAQ accepts"),
    (MESSAGE_FOLDER_MISSING, "the output folder does not exist on the DAQ (create it first)"),
)


def _template_pattern(template: str) -> "re.Pattern[str]":
    """A pattern matching ``template`` with any text for its ``{placeholders}``."""
    return re.compile("".join(".*" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{\w+\})", template)) + r"\Z", re.S)


_FINAL_PATTERNS = tuple((_template_pattern(template), why) for template, why in _FINAL_REFUSALS)


def final_refusal(message: str) -> Optional[str]:
    """Why no retry can change the DAQ's refusal ``message`` of a write request (a path it will
    never accept, a folder it does not have), or ``None`` when a retry might pass."""
    for pattern, why in _FINAL_PATTERNS:
        if pattern.match(message.strip()):
            return why
    return None

__all__ += [
    "MAX_REPLY_DEPTH",
    "nesting_depth",
    "MESSAGE_WRITER_STATUS",
    "MESSAGE_WRITING_STARTED",
    "MESSAGE_WRITING_FINISHED",
    "MESSAGE_WRITING_STOPPED",
    "MESSAGE_CONFIG",
    "MESSAGE_NO_CONFIG",
    "MESSAGE_CONFIG_SET",
    "MESSAGE_STATS",
    "MESSAGE_LOGS",
    "MESSAGE_DEPLOYMENT",
    "MESSAGE_BUSY",
    "MESSAGE_BUSY_PREFIX",
    "MESSAGE_NEEDS_RESTART",
    "MESSAGE_CANNOT_REACH_WRITING",
    "MESSAGE_CANNOT_REACH_READY",
    "MESSAGE_CANNOT_CREATE_FILE",
    "MESSAGE_UNSUPPORTED_BIT_DEPTH",
    "MESSAGE_PATH_NOT_ABSOLUTE",
    "MESSAGE_PATH_INVALID",
    "MESSAGE_FOLDER_MISSING",
    "MESSAGE_SYNC_LIMIT",
    "MESSAGE_PARTIAL_CONFIG",
    "MESSAGE_MODULE_POSITIONS",
    "MESSAGE_LOGS_COUNT",
    "MESSAGE_DEPLOYMENT_NO_CONFIG",
    "MESSAGE_DEPLOYMENT_WAITING",
    "MESSAGE_DEPLOYMENT_RUNNING",
    "MESSAGE_DEPLOYMENT_SUCCESS",
    "MESSAGE_DEPLOYMENT_FAILED",
    "MESSAGE_NO_CONFIG_TO_READ",
    "REDIS_UNAVAILABLE_PATTERN",
    "redis_unavailable",
    "MAX_WRITER_N_IMAGES",
    "final_refusal",
]

DETECTOR_TYPES = ("eiger", "gigafrost", "jungfrau", "bsread")
BIT_DEPTHS = (8, 16, 32)
INTEGER_CONFIG_FIELDS = (
    "bit_depth",
    "image_pixel_height",
    "image_pixel_width",
    "n_modules",
    "start_udp_port",
    "writer_user_id",
)
CONFIG_FIELDS = (
    "detector_name",
    "detector_type",
    *INTEGER_CONFIG_FIELDS,
    "module_positions",
    "submodule_info",
)
# The real writer driver's rule for output files.
OUTPUT_FILE_PATTERN = re.compile(r"^/[a-zA-Z0-9_/-]*\..+[^/]$")


class AcquisitionInfo(TypedDict):
    n_images: int
    output_file: Optional[str]
    run_id: Optional[int]


class AcquisitionStats(TypedDict):
    n_write_completed: int
    n_write_requested: int
    start_time: Optional[float]
    stop_time: Optional[float]


class AcquisitionRecord(TypedDict):
    info: AcquisitionInfo
    message: str
    state: str
    stats: AcquisitionStats


class WriterStatus(TypedDict):
    acquisition: Optional[AcquisitionRecord]
    state: str


class DaqConfig(TypedDict, total=False):
    bit_depth: int
    detector_name: str
    detector_type: str
    image_pixel_height: int
    image_pixel_width: int
    n_modules: int
    start_udp_port: int
    writer_user_id: int
    module_positions: Dict[str, List[int]]
    submodule_info: Dict[str, Any]


class Rates(TypedDict):
    bytes_per_second: float
    images_per_second: float


class DaqStats(TypedDict):
    detector: Rates
    writer: Rates


class Deployment(TypedDict):
    config_id: Optional[str]
    status: str
    message: str
    servers: Dict[str, str]
    stats: Dict[str, Optional[float]]


def _stream_id_key(stream_id: str) -> tuple:
    ms, _, seq = str(stream_id).partition("-")
    try:
        return (int(ms), int(seq or 0))
    except ValueError:
        return (0, 0)


def logs_as_list(logs: Any) -> List[AcquisitionRecord]:
    """Acquisition logs as a list, newest first.

    The seed README documents a list (already newest first); the deployed rest_v2 server
    sends a dict keyed by ``daq:log`` stream id. Both become a list.
    """
    if logs is None:
        return []
    if isinstance(logs, dict):
        return [logs[key] for key in sorted(logs, key=_stream_id_key, reverse=True)]
    if isinstance(logs, list):
        return logs
    raise TypeError(f"logs must be a list or a dict, not {type(logs).__name__}")


def writer_rate(stats: Optional[dict], rate: str = "images_per_second") -> float:
    """The writer rate from a stats object; one server version says ``writes_per_second``."""
    writer = (stats or {}).get("writer") or {}
    if rate == "images_per_second" and rate not in writer:
        rate = "writes_per_second"
    return float(writer.get(rate) or 0.0)


def acquisition_run_id(status: Optional[dict]) -> Optional[int]:
    """The run_id of the acquisition a writer status describes, if any."""
    acquisition = (status or {}).get("acquisition") or {}
    run_id = (acquisition.get("info") or {}).get("run_id")
    try:
        return int(run_id) if run_id is not None else None
    except (TypeError, ValueError):
        return None


# -- Shape checks: every value read from REST or from a Redis stream passes one of these ------
#
# The client and the runner use them before touching a reply, so that a DAQ (or anything
# answering in its place) sending `"writer": null`, a list or a number where an object
# belongs, or a `state` that is not a string, gives one clear DaqProtocolError naming the
# endpoint or stream instead of a TypeError deep inside. They accept all that the deployed
# servers legitimately send (section 9 of the reference): config null before the first
# deployment, stats null, logs as a dict or a list, acquisition null or with null fields,
# the extra `reports` key, and any extra keys.

MAX_REPLY_DEPTH = 32  # a DAQ reply is a few levels deep; far deeper is hostile or broken


def nesting_depth(value: Any, limit: int) -> int:
    """Levels of nesting of a JSON value, counting stops once past ``limit`` (iterative: a
    hostile value cannot exhaust the stack here, nor later in ``json.dumps`` or a ``repr``).
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _protocol_error(source: str, path: str, expected: str, value: Any) -> Exception:
    from ._text import one_line, quote
    from .exceptions import DaqProtocolError

    # The path holds keys read from the wire: quoted like any reply text.
    return DaqProtocolError(one_line(f"{source}: {quote(path, 160)} must be {expected}, not {_json_kind(value)}", None))


def _object(value: Any, source: str, path: str, *, nullable: bool = False) -> Optional[dict]:
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise _protocol_error(source, path, "an object" + (" or null" if nullable else ""), value)
    return value


def _field(obj: dict, key: str, kinds: tuple, expected: str, source: str, path: str) -> None:
    """``obj[key]``, when present and not null, must be one of ``kinds`` (booleans are not numbers)."""
    value = obj.get(key)
    if value is None:
        return
    if isinstance(value, bool) and bool not in kinds:
        raise _protocol_error(source, f"{path}.{key}", expected, value)
    if not isinstance(value, kinds):
        raise _protocol_error(source, f"{path}.{key}", expected, value)


_NUMBER = (int, float)


def check_acquisition(value: Any, source: str, path: str = "acquisition", *, nullable: bool = True) -> Optional[AcquisitionRecord]:
    """An acquisition object (null before the first acquisition, or with null fields)."""
    acquisition = _object(value, source, path, nullable=nullable)
    if acquisition is None:
        return None
    _field(acquisition, "state", (str,), "a string", source, path)
    _field(acquisition, "message", (str,), "a string", source, path)
    info = _object(acquisition.get("info"), source, f"{path}.info", nullable=True)
    if info is not None:
        # acquisition_run_id() reads a numeric string too; some writers store one.
        _field(info, "run_id", (int, str), "an integer", source, f"{path}.info")
        _field(info, "n_images", (int,), "an integer", source, f"{path}.info")
        _field(info, "output_file", (str,), "a string", source, f"{path}.info")
    stats = _object(acquisition.get("stats"), source, f"{path}.stats", nullable=True)
    if stats is not None:
        for key in ("n_write_completed", "n_write_requested", "start_time", "stop_time"):
            _field(stats, key, _NUMBER, "a number", source, f"{path}.stats")
    return acquisition  # type: ignore[return-value]


def check_writer_status(value: Any, source: str = "writer status", path: str = "writer") -> WriterStatus:
    """A writer status: ``{"state": str, "acquisition": object|null, ...}``."""
    status = _object(value, source, path)
    assert status is not None
    if not isinstance(status.get("state"), str):
        raise _protocol_error(source, f"{path}.state", "a string", status.get("state"))
    check_acquisition(status.get("acquisition"), source, f"{path}.acquisition")
    return status  # type: ignore[return-value]


def check_config(value: Any, source: str = "config", path: str = "config") -> Optional[DaqConfig]:
    """A DAQ configuration, or null before the first deployment. Known fields typed, null allowed."""
    config = _object(value, source, path, nullable=True)
    if config is None:
        return None
    for key in INTEGER_CONFIG_FIELDS:
        # Numeric strings are what older servers may store; the server converts them.
        _field(config, key, (int, str), "an integer", source, path)
    _field(config, "detector_name", (str,), "a string", source, path)
    _field(config, "detector_type", (str,), "a string", source, path)
    _field(config, "module_positions", (dict,), "an object", source, path)
    _field(config, "submodule_info", (dict,), "an object", source, path)
    return config  # type: ignore[return-value]


def check_config_id(value: Any, source: str = "config", path: str = "config_id") -> Optional[str]:
    """A config id (the ``daq:config`` stream id), or null."""
    if value is not None and not isinstance(value, str):
        raise _protocol_error(source, path, "a string or null", value)
    return value


def check_deployment(value: Any, source: str = "deployment", path: str = "deployment") -> Deployment:
    """A deployment status: ``{"config_id", "status": str, "message", "servers": {...}, "stats": {...}}``."""
    deployment = _object(value, source, path)
    assert deployment is not None
    if not isinstance(deployment.get("status"), str):
        raise _protocol_error(source, f"{path}.status", "a string", deployment.get("status"))
    check_config_id(deployment.get("config_id"), source, f"{path}.config_id")
    _field(deployment, "message", (str,), "a string", source, path)
    servers = _object(deployment.get("servers"), source, f"{path}.servers", nullable=True)
    for name, state in (servers or {}).items():
        if state is not None and not isinstance(state, str):
            raise _protocol_error(source, f"{path}.servers.{name}", "a string", state)
    _object(deployment.get("stats"), source, f"{path}.stats", nullable=True)
    return deployment  # type: ignore[return-value]


def check_stats(value: Any, source: str = "stats", path: str = "stats") -> Optional[DaqStats]:
    """Throughput statistics, or null when none exist yet; rates are numbers or null."""
    stats = _object(value, source, path, nullable=True)
    if stats is None:
        return None
    for part in ("detector", "writer"):
        rates = _object(stats.get(part), source, f"{path}.{part}", nullable=True)
        for key, rate in (rates or {}).items():
            if rate is not None and (isinstance(rate, bool) or not isinstance(rate, _NUMBER)):
                raise _protocol_error(source, f"{path}.{part}.{key}", "a number", rate)
    return stats  # type: ignore[return-value]


def check_log_record(value: Any, source: str = "logs", path: str = "log record") -> AcquisitionRecord:
    """One acquisition log record (an acquisition object, never null)."""
    record = check_acquisition(value, source, path, nullable=False)
    assert record is not None
    return record


def check_logs(value: Any, source: str = "logs", path: str = "logs") -> List[AcquisitionRecord]:
    """Acquisition logs as a list, newest first. from a list, rest_v2's dict or null."""
    if value is not None and not isinstance(value, (list, dict)):
        raise _protocol_error(source, path, "a list or an object", value)
    if isinstance(value, dict):
        for key, record in value.items():
            check_log_record(record, source, f"{path}[{key!r}]")
    for index, record in enumerate(value if isinstance(value, list) else ()):
        check_log_record(record, source, f"{path}[{index}]")
    return logs_as_list(value)


# What each endpoint's payload must look like.
_PAYLOAD_CHECKS = {
    WRITER_STATUS: check_writer_status,
    WRITER_WRITE_ASYNC: check_writer_status,
    WRITER_WRITE_SYNC: check_writer_status,
    WRITER_STOP: check_writer_status,
    DAQ_CONFIG_GET: check_config,
    DAQ_CONFIG_SET: check_config,
    DAQ_STATS: check_stats,
    DAQ_LOGS: check_logs,
    DAQ_DEPLOYMENT: check_deployment,
}


def check_payload(endpoint: Endpoint, envelope: dict, source: str) -> Any:
    """The checked payload of a reply envelope of ``endpoint`` (logs: as a list, newest first).

    ``source`` names the request in messages, e.g. ``"GET http://daq:5000/writer/status"``.
    The config endpoints also check the envelope's ``config_id``.

    Raises:
        DaqProtocolError: the payload (or ``config_id``) has the wrong shape.
    """
    if endpoint in (DAQ_CONFIG_GET, DAQ_CONFIG_SET):
        check_config_id(envelope.get("config_id"), source)
    return _PAYLOAD_CHECKS[endpoint](envelope.get(endpoint.payload_key), source, endpoint.payload_key)


def check_stream_entry(stream: str, value: Any, streams: StreamNames = StreamNames(), entry_id: Optional[str] = None) -> Any:
    """A decoded JSON entry of one of the DAQ's Redis streams, checked for its stream's shape.

    ``daq:status`` entries are writer statuses, ``daq:config`` configs (never null),
    ``daq:log`` acquisition records and ``daq:stat`` statistics; entries of any other
    stream must at least be objects. Returns ``value``.

    Raises:
        DaqProtocolError: naming the stream (and the entry id, when given).
    """
    source = f"Redis stream {stream!r}" + (f" entry {entry_id}" if entry_id else "")
    if nesting_depth(value, MAX_REPLY_DEPTH) > MAX_REPLY_DEPTH:
        raise _protocol_error(source, "entry", f"nested at most {MAX_REPLY_DEPTH} levels deep", value)
    if stream == streams.status:
        return check_writer_status(value, source, "entry")
    if stream == streams.log:
        return check_log_record(value, source, "entry")
    if stream == streams.stat:
        if value is None:
            raise _protocol_error(source, "entry", "an object", value)
        return check_stats(value, source, "entry")
    if stream == streams.config:
        if value is None:
            raise _protocol_error(source, "entry", "an object", value)
        return check_config(value, source, "entry")
    _object(value, source, "entry")
    return value


def check_config_changes(changes: Any) -> Dict[str, Any]:
    """Config changes a client may send, checked before anything is sent; returns a normalized copy.

    The real server silently ignores unknown field names and stores a ``bit_depth`` the
    writer cannot write (12 is accepted, then every acquisition fails), so both are
    refused here. Integer fields may be given as numeric strings (as the server allows);
    they come back as ``int``.

    Raises:
        ValueError: not an object, an unknown field, a value of the wrong type, or a
            ``bit_depth`` other than 8, 16 or 32.
    """
    if not isinstance(changes, dict):
        raise ValueError(f"config changes must be an object, not {_json_kind(changes)}")
    unknown = sorted(str(key) for key in changes if key not in CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)} (known: {', '.join(CONFIG_FIELDS)})")
    normalized: Dict[str, Any] = {}
    for key, value in changes.items():
        if key in INTEGER_CONFIG_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError(f"config field {key} must be an integer, not {_json_kind(value)}")
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"config field {key} must be an integer, not {value!r}") from None
        elif key in ("detector_name", "detector_type"):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"config field {key} must be a non-empty string")
        elif not isinstance(value, dict):  # module_positions, submodule_info
            raise ValueError(f"config field {key} must be an object, not {_json_kind(value)}")
        normalized[key] = value
    if "bit_depth" in normalized and normalized["bit_depth"] not in BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of 8, 16, 32, not {normalized['bit_depth']}")
    if "detector_type" in normalized and normalized["detector_type"] not in DETECTOR_TYPES:
        raise ValueError(f"detector_type must be one of {', '.join(DETECTOR_TYPES)}, not {normalized['detector_type']!r}")
    return normalized


def merge_config(current: Optional[dict], changes: Dict[str, Any]) -> Dict[str, Any]:
    """The whole configuration to send: ``current`` (as read) with ``changes`` applied.

    The last rest_v2 version refuses partial configs and mid-2023 servers merge them; the
    whole config works on both. Fields not changed go back exactly as read (above all
    ``module_positions``, which that server can only store as it already is).

    Raises:
        ValueError: no configuration is in force yet and ``changes`` lacks fields.
    """
    import copy

    if current is None:
        missing = missing_config_fields(changes)
        if missing:
            raise ValueError(f"the DAQ has no configuration yet: the first one must give every field (missing: {', '.join(missing)})")
        return dict(changes)
    merged = copy.deepcopy(current)
    merged.update(copy.deepcopy(changes))
    return merged


def missing_config_fields(config: Dict[str, Any]) -> List[str]:
    """The fields a whole configuration needs that ``config`` lacks (``submodule_info`` may be left out)."""
    return [key for key in CONFIG_FIELDS if key not in config and key != "submodule_info"]


def config_differences(config: Optional[dict], changes: Dict[str, Any]) -> List[str]:
    """The changed fields that ``config`` does not show (integers compared as numbers)."""
    config = config or {}
    differences = []
    for key, wanted in changes.items():
        have = config.get(key)
        if key in INTEGER_CONFIG_FIELDS:
            try:
                same = have is not None and not isinstance(have, bool) and int(have) == int(wanted)
            except (TypeError, ValueError):
                same = False
        else:
            same = have == wanted
        if not same:
            differences.append(f"{key} is {have!r}, not {wanted!r}")
    return differences
