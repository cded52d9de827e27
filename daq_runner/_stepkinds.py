"""The step kinds of a batch file: what each step is (data) and what it accepts.

Each kind is declared once, as a :class:`StepKind`: its dataclass, the fields of its
body (types, bounds, defaults, descriptions, from :mod:`._fields`), any step-level
keys of its own, and how the checked values become the step. The batch loader
validates with these declarations and ``daq-run --schema`` is generated from them,
so a rule cannot be written twice and drift. The runner dispatches on ``Step.kind``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

from . import protocol
from ._limits import MAX_SECONDS
from ._fields import (
    Argv,
    Boolean,
    Choice,
    Empty,
    Environment,
    Field,
    FreeObject,
    Integer,
    Number,
    Object,
    OrOff,
    OutputPath,
    Text,
    TextList,
)

__all__ = [
    "Step",
    "ConfigStep",
    "CheckStep",
    "WriteStep",
    "WaitStep",
    "StopStep",
    "RunStep",
    "DetectorGuard",
    "StepKind",
    "KINDS",
    "SWEEP",
    "STEP_KINDS",
    "COMMON_FIELDS",
    "CONFIG_FIELDS",
    "DEFAULTS",
    "DAQ",
    "BATCH_NAME",
    "RESTORE_CONFIG",
    "FINALLY",
    "BUILTINS",
    "ON_ERROR",
    "DEFAULT_TIMEOUT_S",
    "MAX_SECONDS",
    "MAX_RETRIES",
    "MAX_N_IMAGES",
    "WAIT_TIMEOUT_MARGIN_S",
    "VERIFY_CHOICES",
    "GUARD_FOR_S",
    "wait_timeout",
]

MAX_N_IMAGES = 10**9
MAX_RETRIES = 100
MAX_RATE = 1e9  # images per second; far above any detector
DEFAULT_TIMEOUT_S = 300.0
# A wait of N seconds without a timeout of its own gets at least N + this as its timeout (a
# timeout given on the step or in its body is a hard limit: a longer wait is refused).
WAIT_TIMEOUT_MARGIN_S = 30.0
ON_ERROR = ("abort", "continue")
SWEEP = "for"
# Variables every batch has; batch vars, sweep variables and --var may not hide them.
BUILTINS = ("date", "time", "datetime", "batch", "step", "run")
# How a write's files are checked once written: "hdf5" opens them (daq_runner.verify), "off" does not.
VERIFY_CHOICES = ("hdf5", "off")
# How long the detector's rate must hold (or stay low) for a guard, when the batch does not say:
# the DAQ's statistics come once a second, so a single low reading is never enough to stop a write.
GUARD_FOR_S = 2.0


# -- the plan: plain data ------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One expanded step of a batch (base of the step kinds).

    Attributes:
        index: 1-based position in the expanded plan.
        kind: ``config``, ``check``, ``write``, ``wait``, ``stop`` or ``run``.
        name: human name (given, or derived from the kind and parameters).
        params: the step's parameters after templating, as written in the report.
        timeout: seconds the step may take; retries: extra attempts; on_error:
            ``abort`` or ``continue``; tags: free labels; line, column: where its kind's key
            (``write:``...) is in the file.
        sweep: the sweep variables in force for this step.
        identity: a stable id of what the step does, for resuming a run: 64 hex
            digits, the sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of
            ``[kind, params, name]`` (``name`` null unless one was given) followed by
            ``#<n>``, where n counts the earlier steps of the batch with the same JSON
            (so identical steps differ). It does not depend on the step's position,
            on ``timeout``/``retries``/``on_error``/``tags``, or on the time, unless
            the params do (a ``{datetime}`` or ``{run}`` in an output file name: load
            with the same ``now`` and ``run`` to get the same identities).
    """

    index: int
    kind: str
    name: str
    params: Dict[str, Any]
    timeout: float = DEFAULT_TIMEOUT_S
    retries: int = 0
    on_error: str = "abort"
    tags: Tuple[str, ...] = ()
    line: int = 0
    column: int = 0
    sweep: Dict[str, Any] = field(default_factory=dict)
    identity: str = ""


@dataclass(frozen=True)
class ConfigStep(Step):
    """Apply a partial DAQ config, wait for deployment SUCCESS, then settle ``settle`` s."""

    config: Dict[str, Any] = field(default_factory=dict)
    settle: float = 0.0


@dataclass(frozen=True)
class CheckStep(Step):
    """Assert facts about the DAQ without changing it."""

    deployment: Optional[str] = None
    writer: Optional[str] = None
    config: Dict[str, Any] = field(default_factory=dict)
    min_detector_rate: Optional[float] = None
    min_writer_rate: Optional[float] = None


@dataclass(frozen=True)
class DetectorGuard:
    """Write only while the detector delivers (``guard:`` beside ``write:``, or in ``defaults:``).

    Attributes:
        min_detector_rate: images per second the DAQ's statistics must show for the detector.
        for_s: seconds the rate must stay at or above it before a write starts, and below it
            during a write before the write is suspended.
        max_wait_s: seconds one wait for the detector may take at most (``None``: as long as
            the step's timeout leaves).
    """

    min_detector_rate: float
    for_s: float = GUARD_FOR_S
    max_wait_s: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        return {"min_detector_rate": self.min_detector_rate, "for_s": self.for_s, "max_wait_s": self.max_wait_s}


@dataclass(frozen=True)
class WriteStep(Step):
    """Write ``n_images`` images to ``output_file``; with ``wait=False`` start and go on.

    ``overwrite``: whether the file may already exist. The DAQ's writer truncates an
    existing file without warning, so the runner refuses to write over one unless this
    is true. ``guard``: write only while the detector delivers (``None``: no guard).
    ``verify``: how the written files are checked (:data:`VERIFY_CHOICES`).
    """

    output_file: str = ""
    n_images: int = 1
    wait: bool = True
    overwrite: bool = False
    guard: Optional[DetectorGuard] = None
    verify: str = "hdf5"


@dataclass(frozen=True)
class WaitStep(Step):
    """Sleep ``seconds``, or wait until the writer is in ``state``."""

    seconds: Optional[float] = None
    state: Optional[str] = None


@dataclass(frozen=True)
class StopStep(Step):
    """Stop the writer (always allowed)."""


@dataclass(frozen=True)
class RunStep(Step):
    """Run a program (no shell) to drive another device: ``command`` is the program and its
    arguments, ``env`` variables added to its environment; it passes when it exits with
    ``expect_exit`` within the step's timeout. Only in a run that allows commands."""

    command: Tuple[str, ...] = ()
    expect_exit: int = 0
    env: Dict[str, str] = field(default_factory=dict)


# -- fields ----------------------------------------------------------------------------------

COMMON_FIELDS: Dict[str, Field] = {
    "name": Text(numbers=True, doc="Name of the step in logs and reports (default: derived from the step)."),
    "timeout": Number(
        0, MAX_SECONDS, exclusive_low=True, default=DEFAULT_TIMEOUT_S, unit="s",
        doc="Seconds the whole step may take, its retries and any outage included (a hard limit); an acquisition still running then is stopped.",
    ),
    "retries": Integer(0, MAX_RETRIES, default=0, unit="attempts", doc="Extra attempts when the step fails (1 s apart)."),
    "on_error": Choice(
        ON_ERROR, default="abort", doc="When the step fails for good: 'abort' skips the rest, 'continue' goes on."
    ),
    "tags": TextList(doc="Free labels, written to the report."),
}

_INT32 = (-(2**31), 2**31 - 1)
_CONFIG_DOCS = {
    "detector_name": "Unique name of the detector; also the HDF5 group of the files.",
    "detector_type": "Detector family.",
    "bit_depth": "Bits per pixel the writer stores: 8, 16 or 32.",
    "image_pixel_height": "Image height in pixels.",
    "image_pixel_width": "Image width in pixels.",
    "n_modules": "Number of detector modules.",
    "start_udp_port": "First UDP port the detector sends to.",
    "writer_user_id": "User id the writer writes files as (< 1: the service's own user).",
    "module_positions": "Module placement {\"0\": [start_x, start_y, end_x, end_y], ...}, passed on as it is.",
    "submodule_info": "Detector-specific submodule information, passed on as it is.",
}


_CONFIG_UNITS = {"bit_depth": "bits", "image_pixel_height": "pixels", "image_pixel_width": "pixels"}
_CONFIG_RANGES = {
    "image_pixel_height": (1, _INT32[1]),
    "image_pixel_width": (1, _INT32[1]),
    "n_modules": (1, _INT32[1]),
    "start_udp_port": (1, 65535),
}


def _config_field(name: str) -> Field:
    doc = _CONFIG_DOCS[name]
    if name == "bit_depth":
        return Integer(*_INT32, choices=protocol.BIT_DEPTHS, doc=doc, unit=_CONFIG_UNITS[name])
    if name in protocol.INTEGER_CONFIG_FIELDS:
        # Sizes and counts below 1, or a port outside 1-65535, are stored by a rest_v2 server
        # and only fail the next write ("Cannot reach WRITING"), without naming the value.
        low, high = _CONFIG_RANGES.get(name, _INT32)
        return Integer(low, high, doc=doc, unit=_CONFIG_UNITS.get(name, ""))
    if name == "detector_type":
        return Choice(protocol.DETECTOR_TYPES, doc=doc)
    if name == "detector_name":
        return Text(doc=doc)
    return FreeObject(doc=doc)  # module_positions, submodule_info


CONFIG_FIELDS: Dict[str, Field] = {name: _config_field(name) for name in protocol.CONFIG_FIELDS}

_WRITER_STATES = [s.value for s in protocol.WriterState]
_DEPLOYMENT_STATES = [s.value for s in protocol.DeploymentStatus]


# -- the kinds --------------------------------------------------------------------------------

Built = Tuple[str, Dict[str, Any], Dict[str, Any]]  # default name, params, dataclass attributes


@dataclass(frozen=True)
class StepKind:
    """One step kind: its dataclass, what it accepts, and how the values become the step.

    Attributes:
        name: the key that makes a step of this kind (``write: {...}``).
        cls: the Step dataclass.
        body: the Field of the value under ``name``.
        doc: description for editors.
        extra: step-level keys of this kind besides :data:`COMMON_FIELDS`.
        build: ``(body values, extra values, common options) -> (default name, params,
            dataclass attributes)``; attributes may override options (e.g. ``timeout``).
        needs: ``step -> ((feature, what the step asks), ...)``: what of
            :data:`daq_runner.daq.FEATURES` a step of this kind needs of the DAQ (a generation
            without it refuses the step at validation).
    """

    name: str
    cls: Type[Step]
    body: Field
    doc: str
    build: Callable[[Dict[str, Any], Dict[str, Any], Dict[str, Any]], Built]
    extra: Mapping[str, Field] = field(default_factory=dict)
    needs: Callable[[Any], Tuple[Tuple[str, str], ...]] = lambda step: ()

    @property
    def step_keys(self) -> Tuple[str, ...]:
        """Every key a step of this kind may have."""
        return (self.name, *COMMON_FIELDS, *self.extra)


def words(value: Any) -> str:
    """``value`` as a batch file says it (YAML flow style), for step names: ``{bit_depth: 8}``,
    ``[8, 16]``, ``true``, ``10`` (not ``{'bit_depth': 8}``, ``True`` or ``10.0``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {words(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(words(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _build_config(body: Dict[str, Any], extra: Dict[str, Any], options: Dict[str, Any]) -> Built:
    settle = extra["settle"]
    name = "config " + ", ".join(f"{k}={words(v)}" for k, v in body.items())
    return name, {"config": body, "settle": settle}, {"config": body, "settle": settle}


def _build_check(body: Dict[str, Any], extra: Dict[str, Any], options: Dict[str, Any]) -> Built:
    name = "check " + ", ".join(f"{k}={words(v)}" for k, v in body.items())
    return name, dict(body), dict(body)


def _build_write(body: Dict[str, Any], extra: Dict[str, Any], options: Dict[str, Any]) -> Built:
    name = f"write {body['n_images']} to {body['output_file']}" + ("" if body["wait"] else " (no wait)")
    # The guard and the file check watch the write; they do not change what it writes, so they
    # are not among its params (its identity): a resumed run may add or change them.
    guard = DetectorGuard(**extra["guard"]) if extra.get("guard") else None
    return name, dict(body), {**body, "guard": guard, "verify": extra["verify"]}


def _build_run(body: Dict[str, Any], extra: Dict[str, Any], options: Dict[str, Any]) -> Built:
    command = body["command"]
    name = "run " + " ".join(command)
    params = {"command": list(command), "expect_exit": body["expect_exit"]}
    if body.get("env"):
        params["env"] = dict(body["env"])
    attrs: Dict[str, Any] = {"command": command, "expect_exit": body["expect_exit"], "env": dict(body.get("env") or {})}
    if "timeout" in body:  # a limit, not what the step does: not among its params (its identity), as for any step
        attrs["timeout"] = body["timeout"]
    return name, params, attrs


def wait_timeout(seconds: float, timeout: float, *, given: bool) -> float:
    """The timeout of a ``wait: {seconds: N}`` step, in seconds (the rule, stated once).

    Args:
        seconds: how long the step sleeps.
        timeout: the timeout given for the step (in its body or on the step: ``given``),
            or the default one (from ``defaults:``, or 300 s).

    Returns:
        ``timeout``, or ``seconds + 30`` when the sleep would not end before it.

    Raises:
        ValueError: ``given`` and the sleep is longer than that timeout, a hard limit
            (one line: "a wait of N s does not fit in its timeout of T s").
    """
    if given and seconds > timeout:
        raise ValueError(f"a wait of {seconds:g} s does not fit in its timeout of {timeout:g} s")
    return timeout if seconds < timeout else seconds + WAIT_TIMEOUT_MARGIN_S


def _build_wait(body: Dict[str, Any], extra: Dict[str, Any], options: Dict[str, Any]) -> Built:
    seconds, state = body.get("seconds"), body.get("state")
    timeout = body.get("timeout", options["timeout"])
    if seconds is not None:
        timeout = wait_timeout(seconds, timeout, given=False)  # checked when the step was read
    name = f"wait {seconds:g} s" if seconds is not None else f"wait for writer {state}"
    return name, dict(body), {"seconds": seconds, "state": state, "timeout": timeout}


def _needs_check(step: CheckStep) -> Tuple[Tuple[str, str], ...]:
    needs = []
    if step.deployment is not None:
        needs.append(("deployment", f"deployment: {step.deployment}"))
    for key in ("min_detector_rate", "min_writer_rate"):
        if getattr(step, key) is not None:
            needs.append(("rates", key))
    if step.writer == protocol.WriterState.UNKNOWN.value:
        needs.append(("unknown_state", f"writer: {step.writer}"))
    return tuple(needs)


def _needs_write(step: WriteStep) -> Tuple[Tuple[str, str], ...]:
    return (("rates", "guard:"),) if step.guard is not None else ()


def _needs_wait(step: WaitStep) -> Tuple[Tuple[str, str], ...]:
    return (("unknown_state", f"state: {step.state}"),) if step.state == protocol.WriterState.UNKNOWN.value else ()


def _build_stop(body: Dict[str, Any], extra: Dict[str, Any], options: Dict[str, Any]) -> Built:
    return "stop writer", {}, {}


_CONFIG_BODY = Object(
    CONFIG_FIELDS, min_fields=1, empty_message="config needs at least one field to change",
    doc="DAQ configuration fields to change.",
)
_CHECK_CONFIG = Object(
    CONFIG_FIELDS, min_fields=1, empty_message="check config needs at least one field", label="check config",
    doc="Configuration fields the DAQ must have (compared one by one).",
)

GUARD = OrOff(
    Object(
        {
            "min_detector_rate": Number(
                0, MAX_RATE, exclusive_low=True, unit="images/s",
                doc="Images per second the detector must send (from the DAQ's statistics).",
            ),
            "for_s": Number(
                0, MAX_SECONDS, default=GUARD_FOR_S, unit="s",
                doc="Seconds the rate must stay at or above the minimum before the write starts, and below it during the write before the write is suspended.",
            ),
            "max_wait_s": Number(
                0, MAX_SECONDS, exclusive_low=True, unit="s",
                doc="Seconds one wait for the detector may take at most (default: what the step's timeout leaves).",
            ),
        },
        required=("min_detector_rate",),
        label="guard",
        doc="Write only while the detector delivers.",
    ),
    doc="Write only while the detector delivers: wait for the rate before the write, suspend and write again when it drops during it; 'off' turns off a guard from defaults.",
)
VERIFY = Choice(
    VERIFY_CHOICES, default="hdf5",
    doc="How the written file is checked: 'hdf5' opens it (shape, dtype, image ids, status, time) when its folder is visible here; 'off' does not.",
)

CONFIG = StepKind(
    name="config",
    cls=ConfigStep,
    doc="Change the DAQ configuration (the fields given), wait for deployment SUCCESS, then settle.",
    body=_CONFIG_BODY,
    extra={
        "settle": Number(
            0, MAX_SECONDS, default=0.0, unit="s",
            doc="Seconds to let the DAQ services stabilise afterwards; shorter than the step's timeout (the change and its deployment come first).",
        )
    },
    build=_build_config,
)
CHECK = StepKind(
    name="check",
    cls=CheckStep,
    doc="Assert facts about the DAQ without changing it; the step fails if one does not hold.",
    body=Object(
        {
            "deployment": Choice(_DEPLOYMENT_STATES, doc="The deployment status the DAQ must report."),
            "writer": Choice(_WRITER_STATES, doc="The state the writer must be in."),
            "config": _CHECK_CONFIG,
            "min_detector_rate": Number(
                0, MAX_RATE, unit="images/s", doc="Images per second the detector must at least send (from the DAQ's statistics)."
            ),
            "min_writer_rate": Number(
                0, MAX_RATE, unit="images/s", doc="Images per second the writer must at least write (from the DAQ's statistics)."
            ),
        },
        min_fields=1,
        empty_message="check needs at least one condition",
        doc="Conditions, all of which must hold.",
    ),
    build=_build_check,
    needs=_needs_check,
)
WRITE = StepKind(
    name="write",
    cls=WriteStep,
    doc="Write n_images images to output_file and wait until the DAQ has written and logged them.",
    body=Object(
        {
            "output_file": OutputPath(
                protocol.OUTPUT_FILE_PATTERN,
                doc="Absolute path of the HDF5 file on the DAQ; its folder must exist. {name} placeholders allowed.",
            ),
            "n_images": Integer(1, MAX_N_IMAGES, unit="images", doc="Number of images to write."),
            "wait": Boolean(default=True, doc="false: start the acquisition and go on to the next step."),
            "overwrite": Boolean(
                default=False,
                doc="Whether the file may already exist (the DAQ overwrites it without warning). "
                "Default from defaults.overwrite.",
            ),
        },
        required=("output_file", "n_images"),
        doc="What to write.",
    ),
    extra={"guard": GUARD, "verify": VERIFY},
    build=_build_write,
    needs=_needs_write,
)
WAIT = StepKind(
    name="wait",
    cls=WaitStep,
    doc="Sleep a number of seconds, or wait until the writer reaches a state.",
    body=Object(
        {
            "seconds": Number(
                0, MAX_SECONDS, unit="s", doc="Seconds to sleep; no longer than a timeout given for the step (without one, the timeout is at least seconds + 30)."
            ),
            "state": Choice(_WRITER_STATES, doc="Writer state to wait for."),
            "timeout": Number(0, MAX_SECONDS, exclusive_low=True, unit="s", doc="Seconds to wait at most (the step's timeout, a hard limit)."),
        },
        exactly_one=("seconds", "state"),
        doc="Either seconds or state (with an optional timeout).",
    ),
    build=_build_wait,
    needs=_needs_wait,
)
STOP = StepKind(
    name="stop",
    cls=StopStep,
    doc="Stop the writer (always allowed; resets a writer in UNKNOWN).",
    body=Empty("stop: {}", doc="No parameters: write 'stop: {}'."),
    build=_build_stop,
)

RUN = StepKind(
    name="run",
    cls=RunStep,
    doc="Run a program (no shell) to drive another device, e.g. move a motor; "
    "refused unless the run allows commands (daq-run --allow-commands, or allow_commands: true in the DAQ's profile).",
    body=Object(
        {
            "command": Argv(doc="The program and its arguments, e.g. [caput, X12SA-ES1:MOT1.VAL, \"{position}\"]; {name} placeholders allowed."),
            "timeout": Number(0, MAX_SECONDS, exclusive_low=True, unit="s", doc="Seconds the program may run (the step's timeout, a hard limit)."),
            "expect_exit": Integer(0, 255, default=0, doc="The exit status that counts as success."),
            "env": Environment(doc="Variables added to the program's environment."),
        },
        required=("command",),
        doc="What to run.",
    ),
    build=_build_run,
)

KINDS: Dict[str, StepKind] = {kind.name: kind for kind in (CONFIG, CHECK, WRITE, WAIT, STOP, RUN)}
STEP_KINDS = (*KINDS, SWEEP)

# -- the rest of a batch file ----------------------------------------------------------------

BATCH_NAME = Text(numbers=True, doc="Name of the batch, in logs and reports and as {batch} (default: the file name).")
DAQ = Object(
    {
        "url": Text(
            min_length=1,
            doc="URL of the DAQ; its scheme says the generation: http://daq-host:5000 (rest_v2's REST API) "
            "or ws://daq-host:8080 (the current generation's std_det_driver).",
        ),
        "redis": Text(min_length=1, doc="Redis URL of the DAQ, e.g. redis://daq-host:6379 (the current generation: where the runner lock lives)."),
        "config_url": Text(min_length=1, doc="The config REST of a ws:// DAQ, e.g. http://daq-host:5000 (default: the driver's host, port 5000)."),
        "config_user": Text(min_length=1, doc="The user name the config REST of a ws:// DAQ records changes under (default daq-runner)."),
    },
    doc="Where the DAQ is (command line and environment take precedence).",
)
DEFAULTS = Object(
    {
        "timeout": COMMON_FIELDS["timeout"],
        "retries": COMMON_FIELDS["retries"],
        "on_error": COMMON_FIELDS["on_error"],
        "overwrite": WRITE.body.fields["overwrite"],  # type: ignore[attr-defined]
        "guard": GUARD,
        "verify": VERIFY,
    },
    doc="Values for every step that does not set its own.",
)
RESTORE_CONFIG = Boolean(
    default=False,
    doc="true: read the whole DAQ configuration before the first step and put it back when the run ends, "
    "whatever ended it, if a config step changed it (a failed restore fails the run).",
)
FINALLY = "finally"
"""The batch key of the cleanup: steps that run when the run ends, whatever ended it."""
