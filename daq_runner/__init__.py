"""daq-runner: client, simulator and unattended batch runner for PSI's Standard DAQ.

Public API::

    from daq_runner import StdDaqClient, Runner, load_batch

    report = Runner(url="http://127.0.0.1:5000").run(load_batch("scan.yaml"))

Names are imported on first use, so that command-line tools start fast.
"""

from importlib import import_module
from typing import Any

from ._version import __version__

__all__ = [
    "__version__",
    # clients
    "StdDaqClient",
    "DetDriverClient",
    # exceptions
    "StdDaqAdminException",
    "DaqRunnerError",
    "DaqError",
    "DaqTransportError",
    "DaqTimeoutError",
    "DeadlineExceeded",
    "OutcomeUnknown",
    "WriteOutcomeUnknown",
    "ConfigOutcomeUnknown",
    "WriteDeadlineExceeded",
    "WriterNeedsRestart",
    "DriverBusy",
    "DaqHTTPError",
    "DaqProtocolError",
    "DeploymentError",
    "BatchValidationError",
    "StepFailed",
    "NotifySettingsError",
    "LockError",
    "LockHeldError",
    # bounds for any request and wait
    "Deadline",
    "bounded",
    "Interrupted",
    # the DAQ seam and its generations
    "Daq",
    "RestV2Daq",
    "DriverDaq",
    # batches, runner, reports
    "Batch",
    "Step",
    "ConfigStep",
    "CheckStep",
    "WriteStep",
    "WaitStep",
    "StopStep",
    "load_batch",
    "load_batch_text",
    "Runner",
    "RunReport",
    "ConsoleView",
    "StepRecord",
    "StepStatus",
    "Event",
    "JsonReportFile",
    "JUnitFile",
]

_WHERE = {
    "StdDaqClient": ".client",
    "write_file": ".writes",
    "ConsoleView": ".console",
    "DetDriverClient": ".det_driver",
    "Batch": ".batch",
    "Step": ".batch",
    "ConfigStep": ".batch",
    "CheckStep": ".batch",
    "WriteStep": ".batch",
    "WaitStep": ".batch",
    "StopStep": ".batch",
    "load_batch": ".batch",
    "load_batch_text": ".batch",
    "Runner": ".runner",
    "RunReport": ".report",
    "JsonReportFile": ".report",
    "JUnitFile": ".report",
    "Event": ".events",
    "StepRecord": ".record",
    "StepStatus": ".record",
    "Daq": ".daq",
    "Deadline": "._deadline",
    "bounded": "._deadline",
    "Interrupted": "._deadline",
    "RestV2Daq": ".rest_v2",
    "DriverDaq": ".det_driver_daq",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name], __name__), name)
    elif name in __all__:
        value = getattr(import_module(".exceptions", __name__), name)
    else:
        raise AttributeError(f"module 'daq_runner' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(__all__)
