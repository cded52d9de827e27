"""The wire protocol of the current Standard DAQ generation, written down once.

Since 2024 PSI's Standard DAQ (the ``std_detector_buffer`` project) is driven by
``std_det_driver`` over a WebSocket (port 8080, plain JSON text frames) and configured
through a separate config REST service (``/api/config/get|set?user=``). This module holds
its requests, replies, states, the map of its states to rest_v2's writer and acquisition
states, its config fields and its exact messages. The client (:mod:`daq_runner.det_driver`),
the simulator (:mod:`daq_runner.sim.driver`) and the tests import them from here.

Frames on the wire (keys in alphabetical order, as the driver's JSON library prints them)::

    -> {"command": "start", "path": "/abs/dir", "file_prefix": "scan_", "n_image": 100, "writer_id": 12345}
    -> {"command": "stop"}                      no reply: seen in the pushed states
    <- {"status":"idle"}  {"count":5,"status":"recording"}  {"count":6,"status":"saving_file"}
    <- {"reason":"driver is busy!","status":"rejected"}
    <- {"reason":"Invalid command! <raw>","status":"error"}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

from .protocol import AcquisitionState, WriterState, _json_kind, _protocol_error, nesting_depth

__all__ = [
    "DEFAULT_WS_URL",
    "DEFAULT_CONFIG_URL",
    "CONFIG_PORT",
    "DEFAULT_CONFIG_USER",
    "default_config_url",
    "DriverState",
    "DriverBuild",
    "ACQUISITION_STATES",
    "STOPPABLE_STATES",
    "OUTCOME_STATES",
    "COUNTED_STATES",
    "STATE_ORDER",
    "began_anew",
    "start_marker",
    "is_marker_answer",
    "REPLY_REJECTED",
    "REPLY_SUCCESS",
    "REPLY_ERROR",
    "REASON_BUSY",
    "REASON_INVALID",
    "REASON_INVALID_START",
    "COMMAND_START",
    "COMMAND_STOP",
    "COMMAND_STOP_ALL",
    "COMMAND_STATUS",
    "DEFAULT_FILE_PREFIX",
    "DEFAULT_N_IMAGE",
    "MAX_N_IMAGE",
    "MAX_WRITER_ID",
    "PUSH_PERIOD_S",
    "WRITER_ACK_TIMEOUT_S",
    "DriverMessage",
    "parse_frame",
    "encode",
    "start_command",
    "writer_state",
    "acquisition_state",
    "file_names",
    "CONFIG_GET",
    "CONFIG_SET",
    "USER_PARAM",
    "MESSAGE_CONFIG_UPDATED",
    "DETAIL_NOT_FOUND",
    "DETAIL_BAD_JSON",
    "DETAIL_IMMUTABLE",
    "DETAIL_SECONDARY",
    "CORE_FIELDS",
    "IMMUTABLE_FIELDS",
    "DETECTOR_TYPES",
    "BIT_DEPTHS",
    "CONFIG_FIELD_TYPES",
    "check_config",
    "check_config_changes",
    "services_config_problem",
]

DEFAULT_WS_URL = "ws://127.0.0.1:8080"
DEFAULT_CONFIG_URL = "http://127.0.0.1:5000"
CONFIG_PORT = 5000  # the config REST, deployed with the DAQ
DEFAULT_CONFIG_USER = "daq-runner"  # the user name the config REST records changes under, unless one is given


def default_config_url(ws_url: str) -> str:
    """The config REST of the driver at ``ws_url`` where nobody said otherwise: its host, port
    :data:`CONFIG_PORT` (``ws://h:8080`` -> ``http://h:5000``, ``wss://`` -> ``https://``; an
    IPv6 host keeps its brackets; credentials are not carried over)."""
    from urllib.parse import urlsplit

    parts = urlsplit(ws_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if parts.scheme.lower() == "wss" else "http"
    return f"{scheme}://{host}:{CONFIG_PORT}"


class DriverState(str, Enum):
    """The driver's states (``status`` of its pushes). ``started`` and ``file_created`` are
    in its list but never entered."""

    IDLE = "idle"
    STARTED = "started"
    CREATING_FILE = "creating_file"
    FILE_CREATED = "file_created"
    WAITING_FOR_FIRST_IMAGE = "waiting_for_first_image"
    RECORDING = "recording"
    SAVING_FILE = "saving_file"
    FILE_SAVED = "file_saved"
    STOP = "stop"
    ERROR = "error"


S = DriverState
# An acquisition is under way (the driver refuses a start with "driver is busy!").
ACQUISITION_STATES: FrozenSet[DriverState] = frozenset({S.STARTED, S.CREATING_FILE, S.FILE_CREATED, S.WAITING_FOR_FIRST_IMAGE, S.RECORDING, S.STOP, S.SAVING_FILE})
# Where a stop acts (the driver's is_recording()); elsewhere it is ignored.
STOPPABLE_STATES: FrozenSet[DriverState] = frozenset({S.CREATING_FILE, S.WAITING_FOR_FIRST_IMAGE, S.RECORDING})
# An acquisition's outcome: pushed once, then turned into idle by the session that sent it.
OUTCOME_STATES: FrozenSet[DriverState] = frozenset({S.FILE_SAVED, S.ERROR})
# Pushed with the number of images handed to the writers.
COUNTED_STATES: FrozenSet[DriverState] = frozenset({S.RECORDING, S.SAVING_FILE})
# The order of an acquisition's states: within one acquisition a state never follows one of a
# higher rank, and its count never falls. A stop has no rank: it acts in creating_file,
# waiting_for_first_image and recording, and the first image can turn it back into recording.
STATE_ORDER: Mapping[DriverState, int] = {
    S.STARTED: 1, S.CREATING_FILE: 1, S.FILE_CREATED: 1, S.WAITING_FOR_FIRST_IMAGE: 2,
    S.RECORDING: 3, S.SAVING_FILE: 5, S.FILE_SAVED: 6, S.ERROR: 6,
}  # fmt: skip


def began_anew(before: Tuple[DriverState, Optional[int]], after: Tuple[DriverState, Optional[int]]) -> bool:
    """Whether state ``after`` (with its count) cannot follow ``before`` within one acquisition:
    its rank is lower, or its count fell. ``idle`` and the outcomes end an acquisition; they
    are not compared here."""
    rank_before, rank_after = STATE_ORDER.get(before[0]), STATE_ORDER.get(after[0])
    if rank_before is not None and rank_after is not None and rank_after < rank_before:
        return True
    return before[1] is not None and after[1] is not None and after[1] < before[1]


class DriverBuild(str, Enum):
    """Which connection model a driver speaks.

    ``persistent``: builds since March 2025: sessions stay open, every session gets the
    state pushed about every 100 ms and at once on a change, also while idle.
    ``per-connection``: April 2024 to March 2025: the first message must be a start (or,
    from November 2024, ``stop_all`` / ``status``), states are pushed every 1 s and on a
    change, and the server closes the connection after ``file_saved``/``error``.
    """

    PERSISTENT = "persistent"
    PER_CONNECTION = "per-connection"


# How often each build pushes the state when nothing changes.
PUSH_PERIOD_S: Mapping[DriverBuild, float] = {DriverBuild.PERSISTENT: 0.1, DriverBuild.PER_CONNECTION: 1.0}
# The driver waits this long for each writer's answer (create, confirm last image, close).
WRITER_ACK_TIMEOUT_S = 5.0

# Replies that are not states.
REPLY_REJECTED = "rejected"
REPLY_SUCCESS = "success"  # stop_all of per-connection builds
REPLY_ERROR = "error"  # with a reason: a reply to a command; without: the pipeline failed
REASON_BUSY = "driver is busy!"
REASON_INVALID = "Invalid command! {raw}"
REASON_INVALID_START = "Invalid command! expected: start with path parameter, received: {raw}"

# Sent right after a start on a persistent session: text that is not JSON, which the driver
# answers REASON_INVALID with the text and keeps the session open. It reads a session's
# messages one after the other, so the answer comes after its answer to the start
# ("rejected", if busy): with no "rejected" before it, the driver took the start.
_START_MARKER = "daq-runner: marks the start {token} (not a command)"


def start_marker(token: str) -> str:
    """The text sent after a start (``token``: unique to that start), not JSON."""
    return _START_MARKER.format(token=token)


def is_marker_answer(message: "DriverMessage", marker: Optional[str] = None) -> bool:
    """Whether ``message`` is the driver's answer to ``marker`` (any start's marker when ``None``)."""
    reason = message.reason
    if message.status != REPLY_ERROR or reason is None:
        return False
    if marker is not None:
        return reason == REASON_INVALID.format(raw=marker)
    head, _, tail = _START_MARKER.partition("{token}")
    return reason.startswith(REASON_INVALID.format(raw=head)) and reason.endswith(tail)


COMMAND_START = "start"
COMMAND_STOP = "stop"
COMMAND_STOP_ALL = "stop_all"  # per-connection builds, November 2024 to March 2025
COMMAND_STATUS = "status"  # idem: answers the state and closes

DEFAULT_FILE_PREFIX = "file"
DEFAULT_N_IMAGE = 16777215
# count is an unsigned 32-bit integer in the driver; writer_id a signed 32-bit uid.
MAX_N_IMAGE = 2**32 - 1
MAX_WRITER_ID = 2**31 - 1
_KNOWN_STATUSES = frozenset(s.value for s in DriverState) | {REPLY_REJECTED, REPLY_SUCCESS}
_MAX_FRAME_DEPTH = 4


@dataclass(frozen=True)
class DriverMessage:
    """One frame from the driver: a pushed state, or a reply to a command.

    Attributes:
        status: the ``status`` text (a :class:`DriverState` value, ``rejected`` or ``success``).
        count: images handed to the writers (``recording``/``saving_file``), else ``None``.
        reason: the driver's text of a reply (``rejected``, ``error`` answering a command).
    """

    status: str
    count: Optional[int] = None
    reason: Optional[str] = None

    @property
    def state(self) -> Optional[DriverState]:
        """The driver state this frame pushes; ``None`` for a reply (``rejected``, an
        ``error`` with a reason, ``success``)."""
        if self.reason is not None or self.status in (REPLY_REJECTED, REPLY_SUCCESS):
            return None
        return DriverState(self.status)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"status": self.status}
        if self.count is not None:
            out["count"] = self.count
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def encode(obj: Mapping[str, Any]) -> str:
    """A frame as the driver's JSON library prints it: compact, keys in alphabetical order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_frame(data: Any, source: str) -> DriverMessage:
    """The checked message of one frame received from the driver.

    ``source`` names where it came from in messages (the driver's URL).

    Raises:
        DaqProtocolError: a binary frame, text that is not a JSON object, a ``status`` that
            is not one of the driver's, a ``count`` that is not a whole number >= 0, a
            ``reason`` that is not text.
    """
    from ._text import quote
    from .exceptions import DaqProtocolError

    if not isinstance(data, str):
        raise DaqProtocolError(f"{source}: a binary frame where the driver sends JSON text")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise DaqProtocolError(f"{source}: a frame that is not JSON: {quote(data)!r}") from None
    if nesting_depth(obj, _MAX_FRAME_DEPTH) > _MAX_FRAME_DEPTH:
        raise _protocol_error(source, "frame", "an object of scalars", obj)
    if not isinstance(obj, dict):
        raise _protocol_error(source, "frame", "an object", obj)
    status = obj.get("status")
    if not isinstance(status, str):
        raise _protocol_error(source, "frame.status", "a string", status)
    if status not in _KNOWN_STATUSES:
        raise DaqProtocolError(f"{source}: a frame with status {quote(status)!r}, not one of the driver's")
    count = obj.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise _protocol_error(source, "frame.count", "a whole number >= 0", count)
    reason = obj.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise _protocol_error(source, "frame.reason", "a string", reason)
    return DriverMessage(status=status, count=count, reason=reason)


def start_command(
    path: Any,
    file_prefix: Any = DEFAULT_FILE_PREFIX,
    n_image: Any = DEFAULT_N_IMAGE,
    writer_id: Any = None,
) -> Dict[str, Any]:
    """A start command, checked: a wrongly typed one can crash the driver, so nothing else is sent.

    Args:
        path: the folder the writers write into: absolute, text (it must exist on the DAQ).
        file_prefix: the files are ``<path>/<file_prefix><i>.h5``: text without ``/``.
        n_image: images to write, a whole number 1 .. 2**32 - 1.
        writer_id: the Unix uid the writers write as (``None``: not sent, the driver's default 0).

    Returns:
        ``{"command": "start", "path", "file_prefix", "n_image"[, "writer_id"]}`` with
        numbers as JSON numbers.

    Raises:
        ValueError: one line saying which argument is wrong.
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"path must be a folder as text, not {_json_kind(path)}")
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute (start with '/'), not {path!r}")
    if "\x00" in path:
        raise ValueError("path must not contain a NUL character")
    if not isinstance(file_prefix, str):
        raise ValueError(f"file_prefix must be text, not {_json_kind(file_prefix)}")
    if "/" in file_prefix or "\x00" in file_prefix:
        raise ValueError(f"file_prefix must not contain '/' or NUL (it is part of a file name): {file_prefix!r}")
    if isinstance(n_image, bool) or not isinstance(n_image, int):
        raise ValueError(f"n_image must be a whole number, not {_json_kind(n_image)}")
    if not 1 <= n_image <= MAX_N_IMAGE:
        raise ValueError(f"n_image must be in 1..{MAX_N_IMAGE}, not {n_image}")
    command: Dict[str, Any] = {"command": COMMAND_START, "path": path, "file_prefix": file_prefix, "n_image": n_image}
    if writer_id is not None:
        if isinstance(writer_id, bool) or not isinstance(writer_id, int):
            raise ValueError(f"writer_id must be a whole number (a Unix uid), not {_json_kind(writer_id)}")
        if not 0 <= writer_id <= MAX_WRITER_ID:
            raise ValueError(f"writer_id must be in 0..{MAX_WRITER_ID}, not {writer_id}")
        command["writer_id"] = writer_id
    return command


def file_names(path: str, file_prefix: str, n_writers: int) -> Tuple[str, ...]:
    """The files one acquisition writes: ``<path>/<file_prefix><i>.h5`` for each writer."""
    return tuple(f"{path}/{file_prefix}{i}.h5" for i in range(n_writers))


# -- The map to rest_v2's states (one table for a tool that serves both generations) ------------
#
# The reference maps READY~idle, WAITING_IMAGES~creating_file/waiting_for_first_image,
# ACQUIRING_IMAGES~recording, FINISHED~file_saved, FAILED~error. stop and saving_file (the
# writers confirm the last image and close their files) are FLUSHING_IMAGES here: images no
# longer come, the files are not final yet.
_WRITER_STATE = {S.IDLE: WriterState.READY}
_ACQUISITION_STATE = {
    S.STARTED: AcquisitionState.WAITING_IMAGES,
    S.CREATING_FILE: AcquisitionState.WAITING_IMAGES,
    S.FILE_CREATED: AcquisitionState.WAITING_IMAGES,
    S.WAITING_FOR_FIRST_IMAGE: AcquisitionState.WAITING_IMAGES,
    S.RECORDING: AcquisitionState.ACQUIRING_IMAGES,
    S.STOP: AcquisitionState.FLUSHING_IMAGES,
    S.SAVING_FILE: AcquisitionState.FLUSHING_IMAGES,
    S.FILE_SAVED: AcquisitionState.FINISHED,
    S.ERROR: AcquisitionState.FAILED,
}


def writer_state(state: DriverState) -> WriterState:
    """rest_v2's writer state of a driver state: READY when idle, WRITING otherwise
    (an outcome is WRITING until the driver has turned it into idle)."""
    return _WRITER_STATE.get(DriverState(state), WriterState.WRITING)


def acquisition_state(state: DriverState) -> Optional[AcquisitionState]:
    """rest_v2's acquisition state of a driver state (``None`` for idle: no acquisition)."""
    return _ACQUISITION_STATE.get(DriverState(state))


# -- The config REST service ------------------------------------------------------------------

CONFIG_GET = "/api/config/get"
CONFIG_SET = "/api/config/set"
USER_PARAM = "user"
MESSAGE_CONFIG_UPDATED = "Configuration updated and synchronized successfully"
DETAIL_NOT_FOUND = "Configuration file not found"
DETAIL_BAD_JSON = "Error decoding JSON file"
DETAIL_IMMUTABLE = "Detector name or detector type cannot be changed."
DETAIL_SECONDARY = "Failed to synchronize with the secondary server"

# Every service refuses to start without these.
CORE_FIELDS = (
    "detector_name",
    "detector_type",
    "n_modules",
    "bit_depth",
    "image_pixel_height",
    "image_pixel_width",
    "start_udp_port",
    "module_positions",
)
IMMUTABLE_FIELDS = ("detector_name", "detector_type")
DETECTOR_TYPES = ("gigafrost", "eiger", "pco", "jungfrau-raw", "jungfrau-converted")
BIT_DEPTHS = (8, 16, 32)

# The fields the services read, and their JSON types ("integer", "string", "boolean", "object").
CONFIG_FIELD_TYPES: Mapping[str, str] = {
    "detector_name": "string",
    "detector_type": "string",
    "n_modules": "integer",
    "bit_depth": "integer",
    "image_pixel_height": "integer",
    "image_pixel_width": "integer",
    "start_udp_port": "integer",
    "module_positions": "object",
    "number_of_writers": "integer",
    "ram_buffer_gb": "integer",
    "switch_user_active": "boolean",
    "live_stream_configs": "object",
    "log_level": "string",
    "stats_collection_period": "integer",
    "gpfs_block_size": "integer",
    "max_number_of_forwarders_spawned": "integer",
    "use_all_forwarders": "boolean",
    "sender_sends_full_images": "boolean",
    "module_sync_queue_size": "integer",
    "delay_filter_timeout": "integer",
    # Still in many configs; the services no longer read it (the uid is per start: writer_id).
    "writer_user_id": "integer",
    "submodule_info": "object",
}
_KINDS = {"integer": (int,), "string": (str,), "boolean": (bool,), "object": (dict,)}


def _is_kind(value: Any, kind: str) -> bool:
    if kind != "boolean" and isinstance(value, bool):
        return False
    return isinstance(value, _KINDS[kind])


def check_config(value: Any, source: str = "config") -> Dict[str, Any]:
    """A config read from the config REST: a JSON object whose known fields have their types.

    Raises:
        DaqProtocolError: naming ``source`` and the field.
    """
    if not isinstance(value, dict):
        raise _protocol_error(source, "config", "an object", value)
    for key, kind in CONFIG_FIELD_TYPES.items():
        if key in value and value[key] is not None and not _is_kind(value[key], kind):
            raise _protocol_error(source, f"config.{key}", f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}", value[key])
    return value


def check_config_changes(changes: Any, current: Mapping[str, Any]) -> Dict[str, Any]:
    """Config changes checked before anything is sent; returns a copy.

    The services read only the fields of :data:`CONFIG_FIELD_TYPES`; a field name that is
    neither one of them nor in ``current`` (the config in force) is refused as a likely typo.

    Raises:
        ValueError: one line: not an object; ``detector_name`` or ``detector_type`` changed
            (the config REST refuses it); an unknown field; a value of the wrong type;
            ``bit_depth`` not 8/16/32; ``number_of_writers`` < 1 (0 crashes the driver at
            the first image); a whole number < 1 where a size or count belongs.
    """
    if not isinstance(changes, dict):
        raise ValueError(f"config changes must be an object, not {_json_kind(changes)}")
    fixed = [key for key in IMMUTABLE_FIELDS if key in changes and changes[key] != current.get(key)]
    if fixed:
        raise ValueError(f"{' and '.join(fixed)} cannot be changed (the config REST refuses it)")
    unknown = sorted(str(key) for key in changes if key not in CONFIG_FIELD_TYPES and key not in current)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)} (the services read: {', '.join(CONFIG_FIELD_TYPES)})")
    for key, value in changes.items():
        kind = CONFIG_FIELD_TYPES.get(key)
        if kind is not None and not _is_kind(value, kind):
            raise ValueError(f"config field {key} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not {_json_kind(value)}")
    if "bit_depth" in changes and changes["bit_depth"] not in BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of 8, 16, 32, not {changes['bit_depth']}")
    for key in ("number_of_writers", "n_modules", "image_pixel_height", "image_pixel_width"):
        if key in changes and changes[key] < 1:
            raise ValueError(f"{key} must be >= 1, not {changes[key]}" + (" (0 writers crash the driver at the first image)" if key == "number_of_writers" else ""))
    try:
        json.dumps(changes, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config changes are not JSON: {exc}") from None
    return json.loads(json.dumps(changes))


def services_config_problem(config: Any) -> Optional[str]:
    """Why the DAQ services would not start with ``config`` (they read every core field
    with its type), or ``None``. What the config REST stores is not checked this way:
    a partial document is stored as it is and then breaks the services."""
    if not isinstance(config, dict):
        return f"the config is {_json_kind(config)}, not an object"
    for key in CORE_FIELDS:
        if key not in config:
            return f'Detector json file is missing parameter: "{key}"'
    for key, kind in CONFIG_FIELD_TYPES.items():
        if key in config and not _is_kind(config[key], kind) and not (kind == "integer" and _integral(config[key])):
            return f"config field {key} is {_json_kind(config[key])}, not {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    for key, position in config["module_positions"].items():
        if not isinstance(position, list) or len(position) != 4:
            return f"Module position for key {key} should have 4 values"
    return None


def _integral(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value == int(value)
