"""daq-runner: client, simulator and unattended batch runner for PSI's Standard DAQ."""

from ._version import __version__
from .client import StdDaqClient
from .exceptions import (
    BatchValidationError,
    DaqError,
    DaqHTTPError,
    DaqProtocolError,
    DaqRunnerError,
    DaqTimeoutError,
    DaqTransportError,
    LockHeldError,
    StdDaqAdminException,
    WriteOutcomeUnknown,
)

__all__ = [
    "__version__",
    "StdDaqClient",
    "StdDaqAdminException",
    "DaqRunnerError",
    "DaqError",
    "DaqTransportError",
    "DaqTimeoutError",
    "WriteOutcomeUnknown",
    "DaqHTTPError",
    "DaqProtocolError",
    "BatchValidationError",
    "LockHeldError",
]
