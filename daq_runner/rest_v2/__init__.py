"""The rest_v2 Standard DAQ (PSI's ``std_daq_service`` REST server with its Redis streams)
behind the DAQ seam (:mod:`daq_runner.daq`).

:class:`RestV2Daq` is what the Runner uses by default. What belongs to this generation lives
here: the status feed on ``daq:status`` (REST polling without Redis), run_id reconciliation
and the exactly-once start of a write, the confirmation of each write in ``daq:log``, the
deployment status of a config change and the restart of the DAQ's services after it, the
configuration every write runs with (proven before it starts), the fast start path of
consecutive writes.
"""

from ._daq import RestV2Daq
from ._timing import STOP_BUDGET_S, RestV2Timing

__all__ = ["RestV2Daq", "RestV2Timing", "STOP_BUDGET_S"]
