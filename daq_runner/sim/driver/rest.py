"""The simulated config REST service of the current generation (FastAPI), and ``/sim/*``.

As the deployed service:

- ``GET /api/config/get?user=`` answers the config file as bare JSON; 404
  ``{"detail":"Configuration file not found"}``, 500 ``{"detail":"Error decoding JSON file"}``;
- ``POST /api/config/set?user=`` with the whole config: 200 ``{"message":"Configuration
  updated and synchronized successfully"}``; 400 "Detector name or detector type cannot be
  changed." (checked first, so a document without them gets it too); 400 with the schema
  error (jsonschema's text); 404/500 as above; 500 "Internal Server Error" (plain text) for
  a body that is not a JSON object; FastAPI's 422 without ``user``. Nothing is merged: the
  document is stored as it is, and the services restart (after the reply).

``/sim/faults`` (GET, POST) and ``/sim/reset`` (POST) are the simulator's; see
:meth:`daq_runner.sim.driver.core.DriverCore.arm_faults`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from ..._version import __version__
from ...det_driver_protocol import (
    CONFIG_GET,
    CONFIG_SET,
    DETAIL_BAD_JSON,
    DETAIL_IMMUTABLE,
    DETAIL_NOT_FOUND,
    DETAIL_SECONDARY,
    IMMUTABLE_FIELDS,
    MESSAGE_CONFIG_UPDATED,
)
from .core import DriverCore

__all__ = ["create_config_app", "schema_error"]

# The service's JSON schema: the types of the fields it checks (others pass unchecked).
_SCHEMA_TYPES = (
    ("detector_name", "string"),
    ("detector_type", "string"),
    ("n_modules", "integer"),
    ("bit_depth", "integer"),
    ("image_pixel_height", "integer"),
    ("image_pixel_width", "integer"),
    ("start_udp_port", "integer"),
    ("writer_user_id", "integer"),
    ("max_number_of_forwarders_spawned", "integer"),
    ("use_all_forwarders", "boolean"),
    ("module_sync_queue_size", "integer"),
    ("module_positions", "object"),
    ("live_stream_configs", "object"),
)
_STREAM_KEY = re.compile(r"^tcp://[0-9.]+:[0-9]+$")
_STREAM_TYPES = ("batch", "periodic", "forward")


def _json_type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return isinstance(value, dict)


def _failure(message: str, validator: str, schema_path: str, schema: Any, instance_path: str, instance: Any) -> str:
    # jsonschema's ValidationError text, which the service passes on as the 400 detail.
    return f"{message}\n\nFailed validating {validator!r} in {schema_path}:\n    {schema!r}\n\nOn {instance_path}:\n    {instance!r}"


def schema_error(config: Dict[str, Any]) -> Optional[str]:
    """The service's schema check of a stored document: jsonschema's error text, or ``None``."""
    for key, kind in _SCHEMA_TYPES:
        if key in config and not _json_type_ok(config[key], kind):
            value = config[key]
            return _failure(f"{value!r} is not of type {kind!r}", "type", f"schema['properties'][{key!r}]", {"type": kind}, f"instance[{key!r}]", value)
    streams = config.get("live_stream_configs") or {}
    for address, stream in streams.items():
        where = f"instance['live_stream_configs'][{address!r}]"
        if not _STREAM_KEY.match(address):
            return _failure(
                f"Additional properties are not allowed ({address!r} was unexpected)",
                "additionalProperties",
                "schema['properties']['live_stream_configs']",
                False,
                "instance['live_stream_configs']",
                streams,
            )
        if not isinstance(stream, dict):
            return _failure(f"{stream!r} is not of type 'object'", "type", "schema['properties']['live_stream_configs']['patternProperties']", {"type": "object"}, where, stream)
        if "type" not in stream:
            return _failure("'type' is a required property", "required", "schema['properties']['live_stream_configs']['patternProperties']", ["type"], where, stream)
        if stream["type"] not in _STREAM_TYPES:
            return _failure(f"{stream['type']!r} is not one of {list(_STREAM_TYPES)!r}", "enum", "schema[...]['type']", list(_STREAM_TYPES), f"{where}['type']", stream["type"])
        extra = sorted(set(stream) - {"type", "config"})
        if extra:
            return _failure(f"Additional properties are not allowed ({extra[0]!r} was unexpected)", "additionalProperties", "schema[...]", False, where, stream)
    return None


def _detail(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _server_error() -> PlainTextResponse:
    # What the framework answers for an exception the service does not handle.
    return PlainTextResponse("Internal Server Error", status_code=500)


def create_config_app(core: DriverCore) -> FastAPI:
    """The FastAPI application of the config REST service over ``core``'s config file."""
    app = FastAPI(title="daq-sim: config REST of the current Standard DAQ generation", version=__version__)

    def read_stored() -> Any:
        try:
            with open(core.config_path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return _detail(404, DETAIL_NOT_FOUND)
        except ValueError:
            return _detail(500, DETAIL_BAD_JSON)

    @app.get(CONFIG_GET)
    def get_config(user: str) -> Any:
        return read_stored()

    @app.post(CONFIG_SET)
    async def set_config(request: Request, user: str, background: BackgroundTasks) -> Any:
        try:
            new_config = await request.json()
        except ValueError:
            return _server_error()
        existing = read_stored()
        if isinstance(existing, JSONResponse):
            return existing
        if not isinstance(new_config, dict) or not isinstance(existing, dict):
            return _server_error()
        if any(new_config.get(key) != existing.get(key) for key in IMMUTABLE_FIELDS):
            return _detail(400, DETAIL_IMMUTABLE)
        problem = schema_error(new_config)
        if problem:
            return _detail(400, problem)
        try:
            core.write_config(new_config)
        except OSError as exc:
            return _detail(500, str(exc))
        # The services restart once the new file is there, after this reply went out.
        background.add_task(core.restart)
        with core.cond:
            secondary_fails, core.secondary_fails = core.secondary_fails, False
        if secondary_fails:
            return _detail(500, DETAIL_SECONDARY)
        return {"message": MESSAGE_CONFIG_UPDATED}

    @app.get("/sim/faults")
    def get_faults() -> Dict[str, Any]:
        return {"faults": core.armed_faults()}

    @app.post("/sim/faults")
    async def post_faults(request: Request) -> Any:
        try:
            faults = await request.json()
            if not isinstance(faults, dict):
                raise ValueError("a JSON object of faults is needed")
            return {"faults": core.arm_faults(faults)}
        except ValueError as exc:
            return _detail(422, str(exc))

    @app.post("/sim/reset")
    def post_reset() -> Dict[str, Any]:
        core.reset()
        return {"faults": core.armed_faults()}

    return app
