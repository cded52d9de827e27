"""A configuration the run did not store, found before a write: what differs, and its re-application recorded.

Both generations keep to one rule (docs/batch-reference.md, "What the steps do on a real DAQ"):
before each write the fields the run relies on are compared with what the DAQ stores; a field
someone else changed is applied again before the write starts, as a recovery of the write's
step whose reason names the foreign values. How a generation learns of the foreign config
(rest_v2: its config id; the current generation: a GET of its config REST) is its own; the
comparison, the words and the record are these.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from . import protocol
from ._text import quote
from .batch import Step
from .daq import RunServices
from .record import StepRecord

__all__ = ["differing", "shown", "record_reapplied"]


def differing(config: Optional[Dict[str, Any]], wanted: Dict[str, Any]) -> Dict[str, Any]:
    """The fields of ``wanted`` (``{field: value}``) that ``config`` does not show (integers
    compared as numbers); ``{}`` when it shows them all."""
    return {key: value for key, value in wanted.items() if protocol.config_differences(config, {key: value})}


def shown(config: Optional[Dict[str, Any]], changes: Dict[str, Any]) -> str:
    """``bit_depth=8 instead of 16, ...``: what ``config`` holds where ``changes`` wants otherwise."""
    config = config or {}
    return ", ".join(f"{key}={quote(config.get(key))} instead of {value}" for key, value in changes.items())


def record_reapplied(run: RunServices, step: Step, record: StepRecord, changes: Dict[str, Any], reason: str, outcome: str) -> None:
    """``changes`` were applied again before ``step``: a recovery on ``record`` (action
    ``update_config <field>=<value>, ...``) and a notice, both giving ``reason``."""
    text = ", ".join(f"{key}={value}" for key, value in changes.items())
    run.recovery(record, step, reason, f"update_config {text}", outcome)
    run.notice(f"re-applied {text} before step {step.index}: {reason}", step)
