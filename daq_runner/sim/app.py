"""The REST API of the simulated DAQ: the deployed rest_v2 server's paths, envelopes and errors.

Application errors are HTTP 200 with ``{"status": "error", "message": ...}``; request
bodies that fail validation are HTTP 422 with FastAPI's ``detail``; ``/sim/*`` adds fault
injection. While an ``unavailable_s`` fault is armed, every other path answers HTTP 503.
"""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional

from fastapi import Body, FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from .. import api
from .._version import __version__
from .daq import SimRefusal, SimulatedDaqCore

__all__ = ["create_app", "WriteRequest", "FaultRequest"]


class WriteRequest(BaseModel):
    """Body of ``/writer/write_async`` and ``/writer/write_sync``."""

    output_file: str
    n_images: int = Field(ge=1)
    run_id: Optional[int] = None


class FaultRequest(BaseModel):
    """Body of ``POST /sim/faults``: any of the faults to arm."""

    model_config = ConfigDict(extra="forbid")

    writer_state: Optional[Literal["UNKNOWN"]] = None
    fail_next: Optional[str] = Field(default=None, min_length=1)
    unavailable_s: Optional[float] = Field(default=None, ge=0, le=3600)
    deployment: Optional[Literal["ERROR"]] = None
    stall_s: Optional[float] = Field(default=None, ge=0, le=3600)


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

    def writer_reply(message: str) -> Dict[str, Any]:
        status = daq.status()
        return _ok(message or f"Writer is {status['state']}", "writer", status)

    @app.get(api.WRITER_STATUS.path)
    def writer_status() -> Dict[str, Any]:
        return writer_reply("")

    @app.post(api.WRITER_WRITE_ASYNC.path)
    def write_async(request: WriteRequest) -> Dict[str, Any]:
        try:
            daq.start_write(request.output_file, request.n_images, request.run_id)
        except SimRefusal as exc:
            return _error(str(exc))
        return writer_reply("Writing started.")

    @app.post(api.WRITER_WRITE_SYNC.path)
    def write_sync(request: WriteRequest) -> Dict[str, Any]:
        try:
            daq.start_write(request.output_file, request.n_images, request.run_id)
        except SimRefusal as exc:
            return _error(str(exc))
        limit = daq.settings.sync_limit_s
        if not daq.wait_while_writing(limit):
            return _error(
                f"Acquisition is still running after {limit:g} seconds; it goes on. "
                "Use write_async for long acquisitions."
            )
        status = daq.status()
        acquisition = status.get("acquisition") or {}
        return _ok(acquisition.get("message") or "Writing finished.", "writer", status)

    @app.post(api.WRITER_STOP.path)
    def writer_stop(_: Any = Body(default=None)) -> Dict[str, Any]:
        daq.stop()
        return writer_reply("Writer stopped.")

    @app.get(api.DAQ_CONFIG_GET.path)
    def get_config() -> Dict[str, Any]:
        return _ok("DAQ configuration", "config", daq.config, config_id=daq.config_id)

    @app.post(api.DAQ_CONFIG_SET.path)
    async def set_config(update: Dict[str, Any] = Body(...)) -> Dict[str, Any]:
        try:
            config = await run_in_threadpool(daq.set_config, update)
        except SimRefusal as exc:
            return _error(str(exc))
        return _ok("DAQ configuration changed; deploying.", "config", config, config_id=daq.config_id)

    @app.get(api.DAQ_STATS.path)
    def get_stats() -> Dict[str, Any]:
        return _ok("DAQ statistics", "stats", daq.stats())

    @app.get(api.DAQ_LOGS.path)
    def get_logs(n: int) -> Dict[str, Any]:
        return _ok(f"Last {n} acquisition logs", "logs", daq.logs(n))

    @app.get(api.DAQ_DEPLOYMENT.path)
    def get_deployment() -> Dict[str, Any]:
        deployment = daq.deployment()
        return _ok(deployment["message"], "deployment", deployment)

    @app.get("/sim/faults")
    def get_faults() -> Dict[str, Any]:
        return _ok("Armed faults", "faults", daq.armed_faults())

    @app.post("/sim/faults")
    def post_faults(request: FaultRequest) -> Dict[str, Any]:
        armed = daq.arm_faults(request.model_dump(exclude_none=True))
        return _ok("Faults armed", "faults", armed)

    @app.post("/sim/reset")
    def post_reset() -> Dict[str, Any]:
        daq.reset()
        return _ok("Simulator reset", "faults", daq.armed_faults())

    return app
