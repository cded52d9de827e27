"""The exceptions of daq-runner, in one place.

Hierarchy::

    DaqRunnerError                      root of everything raised on purpose here
    ├── StdDaqAdminException            the DAQ refused the request (envelope status != "ok")
    ├── DaqError (RuntimeError)         the DAQ could not be talked to properly
    │   ├── DaqTransportError           connection refused or reset, HTTP 502/503/504
    │   │   ├── DaqTimeoutError         no answer within the timeout
    │   │   └── WriteOutcomeUnknown     a write start was sent but its reply was lost
    │   ├── DaqHTTPError                any other non-200 reply (4xx, 500)
    │   └── DaqProtocolError            a 200 reply that is not the expected JSON envelope
    ├── BatchValidationError (ValueError)  a batch file is invalid: carries file, line, column
    └── LockHeldError                   another runner drives this DAQ

``RuntimeError`` for transport and DAQ problems and ``StdDaqAdminException`` for refusals
is what the original ``std_daq_client`` promises; code written for it keeps working.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "DaqRunnerError",
    "StdDaqAdminException",
    "DaqError",
    "DaqTransportError",
    "DaqTimeoutError",
    "WriteOutcomeUnknown",
    "DaqHTTPError",
    "DaqProtocolError",
    "BatchValidationError",
    "LockHeldError",
]


class DaqRunnerError(Exception):
    """Root of the exceptions raised by daq-runner."""


class StdDaqAdminException(DaqRunnerError):
    """The DAQ answered, but refused the request; the message is the DAQ's own."""


class DaqError(DaqRunnerError, RuntimeError):
    """A request to the DAQ failed.

    Attributes:
        url: the URL requested.
        status_code: the HTTP status, when a reply arrived.
        text: the reply body (shortened), when a reply arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        url: Optional[str] = None,
        status_code: Optional[int] = None,
        text: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.text = text


class DaqTransportError(DaqError):
    """The request did not get a usable reply: connection problem or a gateway error."""


class DaqTimeoutError(DaqTransportError):
    """No reply within the timeout."""


class WriteOutcomeUnknown(DaqTransportError):
    """A write start reached the wire but its reply was lost.

    The acquisition may or may not have started; the client does not send it again.
    Look at the writer status and the ``run_id`` of the request to find out.
    """


class DaqHTTPError(DaqError):
    """The DAQ answered with an HTTP status other than 200 that is not worth retrying."""


class DaqProtocolError(DaqError):
    """The DAQ answered 200 with something that is not its JSON envelope."""


class BatchValidationError(DaqRunnerError, ValueError):
    """A batch file is invalid. ``str()`` gives ``file:line:column: message``.

    Attributes:
        path: the batch file (or ``<string>``).
        line, column: 1-based position of the offending key or value, when known.
        reason: the message without the position.
    """

    def __init__(
        self, reason: str, path: str = "<batch>", line: Optional[int] = None, column: Optional[int] = None
    ) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        self.column = column
        where = path if line is None else f"{path}:{line}:{column or 1}"
        super().__init__(f"{where}: {reason}")


class LockHeldError(DaqRunnerError):
    """Another runner holds the lock of this DAQ. ``holder`` describes it."""

    def __init__(self, message: str, holder: Optional[dict] = None) -> None:
        super().__init__(message)
        self.holder = holder or {}
