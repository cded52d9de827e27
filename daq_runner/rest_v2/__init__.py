"""The rest_v2 Standard DAQ (PSI's ``std_daq_service`` REST server with its Redis streams)
behind the DAQ seam (:mod:`daq_runner.daq`).

:class:`RestV2Daq` is what the Runner uses by default. What belongs to this generation lives
here: the status feed on ``daq:status`` (REST polling without Redis), run_id reconciliation
and the exactly-once start of a write, the confirmation of each write in ``daq:log``, the
deployment status of a config change and the restart of the DAQ's services after it, the
configuration every write runs with (proven before it starts), the fast start path of
consecutive writes.
"""

from typing import TYPE_CHECKING, Any

from ._timing import STOP_BUDGET_S, RestV2Timing

if TYPE_CHECKING:  # pragma: no cover
    from ._daq import RestV2Daq

__all__ = ["RestV2Daq", "RestV2Timing", "STOP_BUDGET_S"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: it brings the Redis client, which what only reads the DAQ
    # (the estimate of --validate and --dry-run, through ._reads) does without.
    if name == "RestV2Daq":
        from ._daq import RestV2Daq

        return RestV2Daq
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
