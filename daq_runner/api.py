"""The Standard DAQ's interface, written down once.

Endpoints, stream names, states and the shapes of the status, config, stats, log and
deployment objects. The client, the simulator, the runner and the tests all import
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
    "Acquisition",
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


class Acquisition(TypedDict):
    info: AcquisitionInfo
    message: str
    state: str
    stats: AcquisitionStats


class WriterStatus(TypedDict):
    acquisition: Optional[Acquisition]
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


def logs_as_list(logs: Any) -> List[Acquisition]:
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
