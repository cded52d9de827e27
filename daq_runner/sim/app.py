"""The REST API of the simulated DAQ: the deployed rest_v2 server's paths, models, envelopes and errors.

As the real server (PSI std_daq_service rest_v2, its last version, FastAPI with pydantic 1):

- request bodies are typed by the server's models: a body that fails them (``n_images:
  0``, a missing field, a wrong type, malformed JSON, ``module_positions`` in the
  README's list form) is HTTP 422 with FastAPI's ``detail`` list and no envelope. A body
  that is not a JSON object is taken as pydantic 1 takes it, through ``dict()``: ``[]``
  is an empty config (refused as partial), a list of pairs a mapping, anything else 422;
- every other error, including the output path checks that the server's model raises
  as exceptions, is HTTP 200 ``{"status": "error", "message": <exception text>}`` (the
  server's catch-all exception handler);
- replies go through the server's response models: acquisitions in writer replies carry
  ``reports: null``, in logs the list of their reports; a stored config the reply model
  refuses (``detector_type`` null) makes the POST an error although it was stored, while
  GET config, which has no reply model, serves it;
- replies carry the server's exact messages (:mod:`daq_runner.protocol`).

``/sim/*`` adds fault injection. While an ``unavailable_s`` fault is armed, every other
path answers HTTP 503.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model, field_validator, model_validator

from .. import protocol
from .._version import __version__
from .daq import BAD_FILES, SimRefusal, SimulatedDaqCore, check_output_path

__all__ = ["create_app", "WriteRequest", "ConfigRequest", "ModulePositions", "SubmoduleInfo", "FaultRequest", "ResetRequest"]


class _ServerModel(BaseModel):
    """A model of the real server, validated as pydantic 1 validates: numbers are accepted
    for text, and a value that is not an object is passed through ``dict()`` first."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _as_pydantic_1(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict):
            return value
        try:
            return dict(value)
        except (TypeError, ValueError):
            return value  # not a mapping either: the model refuses it (HTTP 422)


class WriteRequest(_ServerModel):
    """Body of ``/writer/write_async`` and ``/writer/write_sync`` (the server's model, fields in its order)."""

    n_images: int = Field(ge=1, description="Number of images to acquire")
    output_file: str = Field(description="Output file: absolute path, its folder must exist")
    run_id: int = Field(default_factory=time.time_ns, description="Run ID (default: the request time in ns)")

    @field_validator("output_file")
    @classmethod
    def _output_file(cls, output_file: str) -> str:
        # The server's validator raises a plain exception, not a validation error: it
        # escapes the model and becomes an HTTP 200 error (even when other fields also fail).
        check_output_path(output_file)
        return output_file


class ModulePositions(_ServerModel):
    """The server's model of one module's position: declared, but not JSON serializable when stored."""

    start_x: int
    start_y: int
    end_x: int
    end_y: int


class SubmoduleInfo(_ServerModel):
    """The server's model of ``submodule_info``: it declares no field, so whatever object is
    sent, ``{}`` is stored."""


# The scalar config fields and their types, from protocol (one source for client, runner and this).
_SCALAR_FIELDS = {
    name: (int if name in protocol.INTEGER_CONFIG_FIELDS else str)
    for name in sorted(protocol.CONFIG_FIELDS)
    if name not in ("module_positions", "submodule_info")
}

ConfigRequest = create_model(
    "ConfigRequest",
    __base__=_ServerModel,
    **{name: (Optional[kind], None) for name, kind in _SCALAR_FIELDS.items()},
    submodule_info=(Optional[SubmoduleInfo], None),
    module_positions=(Optional[Dict[str, ModulePositions]], None),
)
ConfigRequest.__doc__ = "Body of ``POST /daq/config``: every field optional; unknown fields are ignored."

# The fields of the config in the POST reply's model (ConfigStatus), in its order; none may
# be null. The stored config can hold nulls for the text fields and module_positions.
_CONFIG_REPLY_FIELDS = (
    "bit_depth",
    "detector_name",
    "detector_type",
    "image_pixel_height",
    "image_pixel_width",
    "n_modules",
    "start_udp_port",
    "writer_user_id",
    "submodule_info",
    "module_positions",
)


def _config_reply_error(config: Dict[str, Any]) -> Optional[str]:
    """The reply model's refusal of a stored config, worded as pydantic 1 words it; None when it fits."""
    nulls = [name for name in _CONFIG_REPLY_FIELDS if config.get(name) is None]
    if not nulls:
        return None
    lines = [f"{len(nulls)} validation error{'' if len(nulls) == 1 else 's'} for ConfigResponse"]
    for name in nulls:
        lines += [f"config -> {name}", "  none is not an allowed value (type=type_error.none.not_allowed)"]
    return "\n".join(lines)


def _acquisition_reply(acquisition: Optional[Dict[str, Any]], reports: Optional[List[Any]] = None) -> Optional[Dict[str, Any]]:
    """An acquisition as the server's reply model has it: its fields in the model's order, and ``reports``."""
    if acquisition is None:
        return None
    info, stats = acquisition.get("info") or {}, acquisition.get("stats") or {}
    return {
        "state": acquisition.get("state"),
        "message": acquisition.get("message"),
        "info": {key: info.get(key) for key in ("n_images", "output_file", "run_id")},
        "stats": {key: stats.get(key) for key in ("n_write_completed", "n_write_requested", "start_time", "stop_time")},
        "reports": reports,
    }


def _writer_reply(status: Dict[str, Any]) -> Dict[str, Any]:
    return {"state": status["state"], "acquisition": _acquisition_reply(status["acquisition"])}


class FaultRequest(BaseModel):
    """Body of ``POST /sim/faults``: any of the faults to arm (``docs/daq-sim.md`` describes each)."""

    model_config = ConfigDict(extra="forbid")

    writer_state: Optional[Literal["UNKNOWN"]] = None
    fail_next: Optional[str] = Field(default=None, min_length=1)
    unavailable_s: Optional[float] = Field(default=None, ge=0, le=3600)
    deployment: Optional[Literal["ERROR"]] = None
    stall_s: Optional[float] = Field(default=None, ge=0, le=3600)
    restart_server: Optional[StrictBool] = None
    wedge_driver: Optional[StrictBool] = None
    kill_writer: Optional[StrictBool] = None
    kill_log_thread: Optional[StrictBool] = None
    detector_rate: Optional[float] = Field(default=None, ge=0, le=100_000, allow_inf_nan=False)
    bad_file_next: Optional[Literal[BAD_FILES]] = None  # type: ignore[valid-type]


class ResetRequest(BaseModel):
    """Body of ``POST /sim/reset`` (optional): the writer state to come back in."""

    model_config = ConfigDict(extra="forbid")

    start_state: Literal["READY", "UNKNOWN"] = "READY"


def _ok(message: str, key: str, payload: Any, **extra: Any) -> Dict[str, Any]:
    return {"status": "ok", "message": message, key: payload, **extra}


def _error(message: str) -> Dict[str, Any]:
    return {"status": "error", "message": message}


class _Unavailable:
    """ASGI middleware: HTTP 503 on every non-/sim path while the outage fault is armed."""

    def __init__(self, app: Any, daq: SimulatedDaqCore) -> None:
        self.app = app
        self.daq = daq

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.daq.unavailable and not scope["path"].startswith("/sim"):
            body = b'{"detail":"Service Unavailable"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def create_app(daq: SimulatedDaqCore) -> FastAPI:
    """The FastAPI application serving ``daq``."""
    app = FastAPI(title="daq-sim: simulated Standard DAQ", version=__version__)
    app.add_middleware(_Unavailable, daq=daq)

    @app.exception_handler(SimRefusal)
    def refused(_: Request, exc: SimRefusal) -> JSONResponse:
        return JSONResponse(_error(str(exc)), status_code=200)

    @app.exception_handler(Exception)
    def failed(_: Request, exc: Exception) -> JSONResponse:
        # The real server answers any exception this way. Starlette re-raises it after the
        # reply, so uvicorn still logs the traceback (here it would be a simulator bug).
        return JSONResponse(_error(str(exc)), status_code=200)

    def writer_reply(message: str, status: Dict[str, Any]) -> Dict[str, Any]:
        return _ok(message, "writer", _writer_reply(status))

    @app.get(protocol.WRITER_STATUS.path)
    def writer_status() -> Dict[str, Any]:
        status = daq.status()
        return writer_reply(protocol.MESSAGE_WRITER_STATUS.format(state=status["state"]), status)

    @app.post(protocol.WRITER_WRITE_ASYNC.path)
    def write_async(request: WriteRequest) -> Dict[str, Any]:
        return writer_reply(protocol.MESSAGE_WRITING_STARTED, daq.start_write(request.output_file, request.n_images, request.run_id))

    @app.post(protocol.WRITER_WRITE_SYNC.path)
    def write_sync(request: WriteRequest) -> Dict[str, Any]:
        daq.start_write(request.output_file, request.n_images, request.run_id)
        limit = daq.settings.sync_limit_s
        if not daq.wait_while_writing(limit):
            return _error(protocol.MESSAGE_SYNC_LIMIT.format(limit=f"{limit:g}"))
        return writer_reply(protocol.MESSAGE_WRITING_FINISHED, daq.status())

    @app.post(protocol.WRITER_STOP.path)
    def writer_stop() -> Dict[str, Any]:
        # The server reads no body: whatever is sent (the original client sends {}) is ignored.
        return writer_reply(protocol.MESSAGE_WRITING_STOPPED, daq.stop())

    @app.get(protocol.DAQ_CONFIG_GET.path)
    def get_config() -> Dict[str, Any]:
        # No reply model: whatever is stored is served, nulls included.
        config_id, config = daq.get_config()
        if config_id is None:
            return _ok(protocol.MESSAGE_NO_CONFIG, "config", config, config_id=config_id)
        return _ok(protocol.MESSAGE_CONFIG.format(bit_depth=config.get("bit_depth")), "config", config, config_id=config_id)

    @app.post(protocol.DAQ_CONFIG_SET.path)
    def set_config(request: ConfigRequest) -> Dict[str, Any]:
        # Field by field, not model_dump(): the server stores the model's values as they are,
        # ModulePositions objects included (which then fail to serialize).
        fields = {name: getattr(request, name) for name in ConfigRequest.model_fields}
        config = daq.set_config(fields)
        refusal = _config_reply_error(config)  # stored and deployed all the same
        if refusal:
            return _error(refusal)
        # The reply model has a config_id the server does not fill in: GET /daq/config gives it.
        return _ok(protocol.MESSAGE_CONFIG_SET, "config", config, config_id=None)

    @app.get(protocol.DAQ_STATS.path)
    def get_stats() -> Dict[str, Any]:
        return _ok(protocol.MESSAGE_STATS, "stats", daq.stats())

    @app.get(protocol.DAQ_LOGS.path)
    def get_logs(n: int) -> Dict[str, Any]:
        logs = {entry_id: _acquisition_reply(record, record.get("reports")) for entry_id, record in daq.logs(n).items()}
        return _ok(protocol.MESSAGE_LOGS, "logs", logs)

    @app.get(protocol.DAQ_DEPLOYMENT.path)
    def get_deployment() -> Dict[str, Any]:
        return _ok(protocol.MESSAGE_DEPLOYMENT, "deployment", daq.deployment())

    @app.get("/sim/faults")
    def get_faults() -> Dict[str, Any]:
        return _ok("Armed faults", "faults", daq.armed_faults())

    @app.post("/sim/faults")
    def post_faults(request: FaultRequest) -> Dict[str, Any]:
        # exclude_unset: "detector_rate": null is a request of its own (back to the configured rate).
        armed = daq.arm_faults(request.model_dump(exclude_unset=True))
        return _ok("Faults armed", "faults", armed)

    @app.post("/sim/reset")
    def post_reset(request: Optional[ResetRequest] = None) -> Dict[str, Any]:
        daq.reset(start_state=(request or ResetRequest()).start_state)
        return _ok("Simulator reset", "faults", daq.armed_faults())

    return app
