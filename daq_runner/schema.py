"""JSON Schema of batch files (version 1), for editors: ``daq-run --schema > batch.schema.json``.

The loader in :mod:`daq_runner.batch` is the authority (it also checks templates, paths
and sweep sizes); this schema describes the same shape so editors can complete and check.
"""

from __future__ import annotations

from typing import Any, Dict

from . import api
from .batch import ON_ERROR

__all__ = ["batch_schema"]


def batch_schema() -> Dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version 1 batch file."""
    number = {"type": "number", "minimum": 0}
    templ = {"type": "string", "pattern": r"^\{[A-Za-z_][A-Za-z0-9_]*\}$"}
    integer_or_var = {"anyOf": [{"type": "integer"}, templ]}
    config_props: Dict[str, Any] = {k: integer_or_var for k in api.INTEGER_CONFIG_FIELDS}
    config_props.update(
        bit_depth={"anyOf": [{"enum": list(api.BIT_DEPTHS)}, templ]},
        detector_type={"enum": list(api.DETECTOR_TYPES)},
        detector_name={"type": "string"},
        module_positions={"type": "object"},
        submodule_info={"type": "object"},
    )
    config = {"type": "object", "properties": config_props, "additionalProperties": False, "minProperties": 1}
    common = {
        "name": {"type": "string"},
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "retries": {"type": "integer", "minimum": 0, "maximum": 100},
        "on_error": {"enum": list(ON_ERROR)},
        "tags": {"type": "array", "items": {"type": "string"}},
    }

    def step(kind: str, body: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
        return {
            "type": "object",
            "required": [kind],
            "properties": {kind: body, **common, **extra},
            "additionalProperties": False,
        }

    states = [s.value for s in api.WriterState]
    steps = {
        "type": "array",
        "minItems": 1,
        "items": {
            "oneOf": [
                step("config", config, settle=number),
                step(
                    "check",
                    {
                        "type": "object",
                        "properties": {
                            "deployment": {"enum": [s.value for s in api.DeploymentStatus]},
                            "writer": {"enum": states},
                            "config": config,
                            "min_detector_rate": number,
                            "min_writer_rate": number,
                        },
                        "additionalProperties": False,
                        "minProperties": 1,
                    },
                ),
                step(
                    "write",
                    {
                        "type": "object",
                        "required": ["output_file", "n_images"],
                        "properties": {
                            "output_file": {"type": "string", "description": "absolute path; {name} placeholders allowed"},
                            "n_images": {"anyOf": [{"type": "integer", "minimum": 1}, templ]},
                            "wait": {"type": "boolean", "default": True},
                        },
                        "additionalProperties": False,
                    },
                ),
                step(
                    "wait",
                    {
                        "type": "object",
                        "properties": {"seconds": number, "state": {"enum": states}, "timeout": number},
                        "additionalProperties": False,
                    },
                ),
                step("stop", {"type": ["object", "null"], "maxProperties": 0}),
                {
                    "type": "object",
                    "required": ["for", "steps"],
                    "properties": {
                        "for": {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}, "minProperties": 1},
                        "steps": {"$ref": "#/$defs/steps"},
                        "name": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            ]
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "daq-run batch file, version 1",
        "type": "object",
        "required": ["version", "steps"],
        "properties": {
            "version": {"const": 1},
            "name": {"type": "string"},
            "daq": {
                "type": "object",
                "properties": {"url": {"type": "string"}, "redis": {"type": "string"}},
                "additionalProperties": False,
            },
            "vars": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "array"]}},
            "defaults": {
                "type": "object",
                "properties": {k: common[k] for k in ("timeout", "retries", "on_error")},
                "additionalProperties": False,
            },
            "steps": {"$ref": "#/$defs/steps"},
        },
        "additionalProperties": False,
        "$defs": {"steps": steps},
    }
