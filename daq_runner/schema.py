"""JSON Schema of batch files (version 1), for editors: ``daq-run --schema > batch.schema.json``.

Generated from the same declarations the loader validates with (the step kinds and
their fields in :mod:`daq_runner._stepkinds`), so the two cannot drift. The loader
judges a few things no schema can: values once their templates are rendered, unknown
variables, sweep sizes, and two steps writing the same file.
"""

from __future__ import annotations

from typing import Any, Dict

from ._fields import LONE_PLACEHOLDER_SCHEMA
from ._notify_settings import notify_schema
from ._stepkinds import BATCH_NAME, BUILTINS, COMMON_FIELDS, DAQ, DEFAULTS, FINALLY, KINDS, RESTORE_CONFIG, SWEEP, StepKind

__all__ = ["batch_schema"]

_IDENTIFIER = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "not": {"enum": list(BUILTINS)}}
_SCALAR = {"type": ["string", "number", "boolean"]}


def _step_schema(kind: StepKind) -> Dict[str, Any]:
    properties = {kind.name: kind.body.schema()}
    properties.update({key: field.schema() for key, field in COMMON_FIELDS.items()})
    properties.update({key: field.schema() for key, field in kind.extra.items()})
    return {
        "title": f"{kind.name} step",
        "description": kind.doc,
        "type": "object",
        "required": [kind.name],
        "properties": properties,
        "additionalProperties": False,
    }


def _sweep_schema() -> Dict[str, Any]:
    return {
        "title": "for step (sweep)",
        "description": "Run 'steps' once for every combination of the variables' values (cartesian product).",
        "type": "object",
        "required": [SWEEP, "steps"],
        "properties": {
            SWEEP: {
                "description": "Sweep variables: {name: [values]}; several names make a cartesian product.",
                "type": "object",
                "minProperties": 1,
                "propertyNames": _IDENTIFIER,
                "additionalProperties": {
                    "anyOf": [{"type": "array", "minItems": 1, "items": _SCALAR}, LONE_PLACEHOLDER_SCHEMA]
                },
            },
            "steps": {"$ref": "#/$defs/steps"},
            "name": {"type": ["string", "number"], "description": "A label for the sweep (not used by the run)."},
        },
        "additionalProperties": False,
    }


def batch_schema() -> Dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version 1 batch file, with descriptions for editors."""
    steps = {
        "description": "The steps, run in order.",
        "type": "array",
        "minItems": 1,
        "items": {"oneOf": [*(_step_schema(kind) for kind in KINDS.values()), _sweep_schema()]},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "daq-run batch file, version 1",
        "type": "object",
        "required": ["version", "steps"],
        "properties": {
            "version": {"const": 1, "description": "Always 1."},
            "name": BATCH_NAME.schema(),
            "daq": DAQ.schema(),
            "vars": {
                "description": "Template variables {name}; each may use the ones above it; --var NAME=VALUE replaces them.",
                "type": "object",
                "propertyNames": _IDENTIFIER,
                "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
            },
            "defaults": DEFAULTS.schema(),
            "steps": {"$ref": "#/$defs/steps"},
            FINALLY: {
                "allOf": [{"$ref": "#/$defs/steps"}],
                "description": "Cleanup: steps run when the run ends, whatever ended it (each under its own timeout; "
                "a write here must wait for its end).",
            },
            "restore_config": RESTORE_CONFIG.schema(),
            "notify": notify_schema(),
        },
        "additionalProperties": False,
        "$defs": {"steps": steps},
    }
