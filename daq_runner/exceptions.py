"""The exceptions of daq-runner, in one place.

Hierarchy::

    DaqRunnerError                      root of everything raised on purpose here
    ├── StdDaqAdminException            the DAQ refused the request (envelope status != "ok")
    │   ├── WriterNeedsRestart          "... Writer needs to be restarted." (writer left UNKNOWN)
    │   └── DriverBusy                  std_det_driver: "driver is busy!" (nothing started)
    ├── DaqError (RuntimeError)         the DAQ could not be talked to properly
    │   ├── DaqTransportError           connection refused or reset, HTTP 502/503/504
    │   │   ├── DaqTimeoutError         no (complete) answer within the request's own limit
    │   │   │   └── DeadlineExceeded    the caller's time bound ended the request: not retried
    │   │   │       └── WriteDeadlineExceeded   ... and it was a write start that may have begun
    │   │   ├── OutcomeUnknown          a request that changes the DAQ was sent, its reply lost
    │   │   │   ├── WriteOutcomeUnknown     ... a write start: the acquisition may have started
    │   │   │   │   └── WriteDeadlineExceeded
    │   │   │   └── ConfigOutcomeUnknown    ... a config: it may have been stored
    │   │   └── DaqRedisUnavailable     the DAQ's REST server cannot reach its own Redis ("Error 111
    │   │                               connecting to ..."): nothing was done, retried as an outage
    │   ├── DaqHTTPError                any other non-200 reply (4xx, 500), a redirect of a POST
    │   ├── DaqProtocolError            a 200 reply that is not the envelope, or a payload of
    │   │                               the wrong shape (also a Redis stream entry)
    │   ├── DeploymentError             a config change that did not deploy or did not take
    │   └── DaqNotConfigured            the DAQ has no configuration (its Redis came back empty)
    ├── BatchValidationError (ValueError)  a batch file is invalid: carries file, line, column
    ├── SetupError (ValueError)         what a run is given cannot be used: DAQ URLs, a profile
    │   ├── OutputRefused               an output path names what must not be replaced
    │   ├── OutputUnwritable            an output file cannot be written there (no such folder...)
    │   ├── ResumeError                 a report that cannot be resumed with this batch
    │   └── NotifySettingsError         a notify: block or a --notify/--smtp/--heartbeat flag is invalid
    ├── StepFailed                      a step's attempt failed: the message says why
    │   └── DaqNeedsRestart             the DAQ cannot go on until someone restarts it (a wedged
    │                                   writer driver): the run stops
    └── LockError                       the runner lock could not be taken, or was lost
        └── LockHeldError               another runner drives this DAQ

``RuntimeError`` for transport and DAQ problems and ``StdDaqAdminException`` for refusals
is what the original ``std_daq_client`` promises; code written for it keeps working.

A stop request (a signal, ``Runner.request_stop``) that ends a request or a wait raises
:class:`daq_runner.Interrupted`, which is not an error of the DAQ and so is not
in this tree. Messages never carry URL credentials (they are replaced by ``***``) and
quote reply text as one shortened line.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

__all__ = [
    "DaqRunnerError",
    "StdDaqAdminException",
    "DaqError",
    "DaqTransportError",
    "DaqTimeoutError",
    "DeadlineExceeded",
    "OutcomeUnknown",
    "WriteOutcomeUnknown",
    "WriteDeadlineExceeded",
    "ConfigOutcomeUnknown",
    "WriterNeedsRestart",
    "DriverBusy",
    "DaqHTTPError",
    "DaqProtocolError",
    "DeploymentError",
    "DaqRedisUnavailable",
    "DaqNotConfigured",
    "DaqNeedsRestart",
    "BatchValidationError",
    "SetupError",
    "OutputRefused",
    "OutputUnwritable",
    "ResumeError",
    "NotifySettingsError",
    "StepFailed",
    "LockError",
    "LockHeldError",
]


class DaqRunnerError(Exception):
    """Root of the exceptions raised by daq-runner."""


class StdDaqAdminException(DaqRunnerError):
    """The DAQ answered, but refused the request; the message is the DAQ's own (one line).

    Attributes:
        url: the URL requested (credentials replaced by ``***``), when known.
    """

    def __init__(self, message: str = "", *, url: Optional[str] = None) -> None:
        super().__init__(message)
        self.url = url


class WriterNeedsRestart(StdDaqAdminException):
    """The DAQ answered "Cannot reach WRITING|READY. Writer needs to be restarted.".

    The real rest_v2 server sends this after waiting about 5 s for its writer to start or
    stop (a file it cannot create, ``n_images`` of 2**31 or more, a config change under a
    running acquisition). The writer is left ``UNKNOWN`` with no acquisition; a stop
    request (``stop_writer``) is how the DAQ is asked to reset it.
    """


class DriverBusy(StdDaqAdminException):
    """``std_det_driver`` answered a start with ``rejected`` "driver is busy!".

    The driver was not idle (an acquisition runs, or it is wedged in ``recording``/``stop``
    until its services restart): nothing was started, so the start may be sent again once
    the driver is idle.

    Attributes:
        state: the last driver state seen before the refusal, when known.
    """

    def __init__(self, message: str = "", *, url: Optional[str] = None, state: Optional[str] = None) -> None:
        super().__init__(message, url=url)
        self.state = state


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
    """No reply, or no complete reply, within the request's own limit.

    A request's limit is its connect timeout plus its read timeout, for the whole reply
    however slowly it arrives; the read timeout also ends a reply that stalls for that long.
    """


class DeadlineExceeded(DaqTimeoutError):
    """The caller's time bound (``daq_runner._deadline.bounded``) ended the request.

    Raised instead of retrying further or sending at all once the bound has passed, so
    that a caller can tell "this step ran out of its time" from "the DAQ stayed
    unreachable for the client's whole retry budget" (a plain :class:`DaqTransportError`).
    """


class OutcomeUnknown(DaqTransportError):
    """A request that changes the DAQ reached the wire but its reply was lost (a read
    timeout, a reset connection, HTTP 502/504): the change may or may not have happened,
    so the client does not send it again. Only a request that provably never reached the
    DAQ (connection refused, HTTP 503) is retried.
    """


class WriteOutcomeUnknown(OutcomeUnknown):
    """A write start reached the wire but its reply was lost.

    The acquisition may or may not have started; the client does not send it again.
    Look at the writer status and the ``run_id`` of the request to find out.
    """


class WriteDeadlineExceeded(DeadlineExceeded, WriteOutcomeUnknown):
    """The caller's bound ended a write start after it was sent: it may have begun.

    Both a :class:`DeadlineExceeded` and a :class:`WriteOutcomeUnknown`: never re-send it
    blindly; look at the writer status and the request's ``run_id``.
    """


class ConfigOutcomeUnknown(OutcomeUnknown):
    """``POST /daq/config`` reached the wire but its reply was lost.

    The config may have been stored, and on the real server every stored config restarts
    the DAQ's services (an acquisition in progress is lost, the writer left UNKNOWN), so
    it is not sent again. A new ``config_id`` in ``GET /daq/config`` tells whether it was
    stored; :meth:`StdDaqClient.update_config` looks for it itself.
    """


class DaqRedisUnavailable(DaqTransportError):
    """The DAQ's REST server answered that it cannot reach its own Redis.

    The rest_v2 server keeps its config, deployments, logs and statistics in Redis and reads
    them on every request (a write reads the config first); while that Redis is down it
    answers HTTP 200 ``status: error`` with redis-py's message ("Error 111 connecting to
    HOST:PORT. Connection refused."). Nothing was done, so the request is retried like any
    transport failure, within the client's retry budget (a Redis restart is an outage to
    ride out, not a refusal).
    """


class DaqHTTPError(DaqError):
    """The DAQ answered with an HTTP status other than 200 that is not worth retrying."""


class DaqProtocolError(DaqError):
    """The DAQ answered 200 with something that is not its JSON envelope."""


class DeploymentError(DaqError):
    """A configuration change did not deploy: ERROR, not done in time, or not in force after.

    Attributes:
        config_id: the id of the new configuration, when the DAQ stored one.
        deployment: the last deployment status seen (``GET /daq/deployment``), if any.
        config: the configuration the DAQ reported last, if read.
    """

    def __init__(
        self,
        message: str,
        *,
        url: Optional[str] = None,
        config_id: Optional[str] = None,
        deployment: Optional[dict] = None,
        config: Optional[dict] = None,
    ) -> None:
        super().__init__(message, url=url)
        self.config_id = config_id
        self.deployment = deployment
        self.config = config


class DaqNotConfigured(DaqError):
    """The DAQ has no configuration (``GET /daq/config`` answers ``config: null``).

    A rest_v2 DAQ whose Redis came back empty is in this state: it refuses every write
    ("'NoneType' object is not subscriptable") and every config until its REST server
    restarts, which deploys its config file again.
    """


class BatchValidationError(DaqRunnerError, ValueError):
    """A batch file is invalid. ``str()`` gives ``file:line:column: message`` of the first error.

    Attributes:
        path: the batch file (or ``<string>``, or ``<command line>`` for a ``--var``).
        line, column: 1-based position of the offending key or value, when known.
        reason: the message without the position.
        errors: every error found (each a BatchValidationError; ``[self]`` for one),
            in file order, at most a screenful; ``more`` says how many were left out.
    """

    def __init__(
        self,
        reason: str,
        path: str = "<batch>",
        line: Optional[int] = None,
        column: Optional[int] = None,
        *,
        errors: Optional[Sequence["BatchValidationError"]] = None,
        more: int = 0,
    ) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        self.column = column
        self.errors: List["BatchValidationError"] = list(errors) if errors else [self]
        self.more = more
        where = path if line is None else f"{path}:{line}:{column or 1}"
        super().__init__(f"{where}: {reason}")

    @classmethod
    def from_errors(cls, errors: Sequence["BatchValidationError"], more: int = 0) -> "BatchValidationError":
        """One exception for several errors: ``str()`` and the attributes are the first's."""
        first = errors[0]
        return cls(first.reason, first.path, first.line, first.column, errors=errors, more=more)

    def lines(self) -> List[str]:
        """One line per error, then ``... and N more errors`` if some were left out."""
        lines = [str(error) for error in self.errors]
        if self.more:
            lines.append(f"... and {self.more} more error{'s' if self.more != 1 else ''}")
        return lines


class SetupError(DaqRunnerError, ValueError):
    """What a run is given cannot be used: the DAQ's URLs or profile, an output path, a
    report to resume. The message is one line; ``daq-run`` exits 2 before anything is sent."""


class OutputRefused(SetupError):
    """An output path (report, JUnit file, HTML page) names what must not be replaced: the
    batch file, a directory, a symbolic link, a device, an existing report, a file the run
    refers to."""


class OutputUnwritable(SetupError):
    """An output file cannot be written at that path on this machine: its folder does not
    exist or is not writable, the file is read-only."""


class ResumeError(SetupError):
    """A report that cannot be resumed with this batch (another batch's, a changed batch,
    other variables, a step that would rewrite a kept step's file)."""


class NotifySettingsError(SetupError):
    """A notification or heartbeat setting is invalid; raised before anything is sent.

    ``str()`` is one line: ``<source>: <key>: <reason>`` (``--notify: ...`` for a flag,
    ``batch.yaml: notify.to[1]: ...`` for a block), credentials never shown.

    Attributes:
        source: where the setting came from (a flag, a batch or profile file).
        key: where in a ``notify:`` block, as a path (``("to", 1)``), so that a loader
            can point at the line; ``()`` for a flag or the block as a whole.
        reason: the message without the source and key.
    """

    def __init__(self, reason: str, source: str = "notify", key: Sequence[object] = ()) -> None:
        self.reason = reason
        self.source = source
        self.key = tuple(key)
        where = source
        if not source.startswith("--"):  # a notify: block, not a flag
            where += ": notify" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in self.key)
        super().__init__(f"{where}: {reason}")


class StepFailed(DaqRunnerError):
    """A step's attempt failed; the message says why (and what the DAQ said).

    Raised by the DAQ seam (:mod:`daq_runner.daq`) and the step handlers; the Runner records
    it as a failed attempt and retries the step as the batch allows, unless ``final`` says why
    no retry can change it (a file that must not be overwritten, a folder the DAQ does not have).
    """

    def __init__(self, message: str, *, final: Optional[str] = None) -> None:
        super().__init__(message)
        self.final = final


class DaqNeedsRestart(StepFailed):
    """The DAQ cannot go on until someone restarts it; the message says what it needs.

    A rest_v2 writer driver that lost an acquisition under it (its writer killed or
    restarted mid-acquisition) answers "Cannot reach READY. Writer needs to be restarted."
    to every stop until its REST server restarts: no stop, retry or later step can help, so
    the Runner stops the run with this reason instead of trying again and again.
    """


class LockError(DaqRunnerError):
    """The runner lock of a DAQ could not be taken (Redis did not allow it) or was lost."""


class LockHeldError(LockError):
    """Another runner holds the lock of this DAQ. ``holder`` describes it."""

    def __init__(self, message: str, holder: Optional[dict] = None) -> None:
        super().__init__(message)
        self.holder = holder or {}
