"""Batch files: YAML -> validated, fully expanded plan of steps (plain data).

``load_batch(path, vars=...)`` reads a batch file, checks every key and value, renders
the templates, expands the sweeps and returns a :class:`Batch` whose ``steps`` are
:class:`Step` objects. Anything wrong raises :class:`BatchValidationError` with the file,
line and column of the offending key or value, before anything is sent to a DAQ.
Nothing in this module talks to a DAQ.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from . import api
from .exceptions import BatchValidationError
from .templating import TemplateError, render

__all__ = [
    "Batch",
    "Step",
    "ConfigStep",
    "CheckStep",
    "WriteStep",
    "WaitStep",
    "StopStep",
    "load_batch",
    "load_batch_text",
    "parse_var",
    "STEP_KINDS",
    "MAX_STEPS",
    "MAX_FILE_BYTES",
    "DEFAULT_TIMEOUT_S",
]

MAX_STEPS = 100_000  # a batch expanding to more steps is refused
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 200_000  # YAML nodes after alias expansion (alias bombs)
MAX_N_IMAGES = 10**9
MAX_SECONDS = 7 * 24 * 3600.0
MAX_RETRIES = 100
DEFAULT_TIMEOUT_S = 300.0
STEP_KINDS = ("config", "check", "write", "wait", "stop", "for")
COMMON_KEYS = ("name", "timeout", "retries", "on_error", "tags")
ON_ERROR = ("abort", "continue")
BUILTINS = ("date", "time", "datetime", "batch", "step")

Mark = Tuple[int, int]


# -- the plan: plain data ---------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One expanded step of a batch (base of the step kinds).

    Attributes:
        index: 1-based position in the expanded plan.
        kind: ``config``, ``check``, ``write``, ``wait`` or ``stop``.
        name: human name (given, or derived from the kind and parameters).
        params: the step's parameters after templating, as written in the report.
        timeout: seconds the step may take; retries: extra attempts; on_error:
            ``abort`` or ``continue``; tags: free labels; line: where it is in the file.
        sweep: the sweep variables in force for this step.
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
    sweep: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigStep(Step):
    """Apply a partial DAQ config, wait for deployment SUCCESS, then settle."""

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
class WriteStep(Step):
    """Write ``n_images`` images to ``output_file``; with ``wait=False`` start and go on."""

    output_file: str = ""
    n_images: int = 1
    wait: bool = True


@dataclass(frozen=True)
class WaitStep(Step):
    """Sleep ``seconds``, or wait until the writer is in ``state``."""

    seconds: Optional[float] = None
    state: Optional[str] = None


@dataclass(frozen=True)
class StopStep(Step):
    """Stop the writer (always allowed)."""


@dataclass(frozen=True)
class Batch:
    """A validated batch: what to run, and where it came from."""

    name: str
    path: str
    sha256: str
    steps: Tuple[Step, ...]
    daq: Dict[str, str] = field(default_factory=dict)
    vars: Dict[str, Any] = field(default_factory=dict)


# -- YAML with positions --------------------------------------------------------------------


class LMap(dict):
    """A mapping from YAML that remembers where its keys and values are."""

    mark: Mark = (1, 1)
    key_marks: Dict[Any, Mark]
    value_marks: Dict[Any, Mark]


class LList(list):
    """A sequence from YAML that remembers where its items are."""

    mark: Mark = (1, 1)
    item_marks: List[Mark]


_STD_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}


def _mark(node: yaml.Node) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.nodes = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, reason: str, mark: Optional[Mark]) -> BatchValidationError:
        return BatchValidationError(reason, self.path, *(mark or (None, None)))

    def convert(self, node: yaml.Node, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(f"document too large: more than {MAX_NODES} YAML nodes (after expanding aliases)", _mark(node))
        if depth > 50:
            raise self.fail("document nested too deeply", _mark(node))
        if node.tag not in _STD_TAGS:
            raise self.fail(f"YAML tag {node.tag!r} is not allowed in a batch file", _mark(node))
        if isinstance(node, yaml.MappingNode):
            result = LMap()
            result.mark, result.key_marks, result.value_marks = _mark(node), {}, {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.fail("YAML merge keys ('<<') are not supported in batch files", _mark(key_node))
                key = self.convert(key_node, depth + 1)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    raise self.fail("mapping keys must be plain scalars", _mark(key_node))
                if key in result:
                    raise self.fail(f"duplicate key '{key}'", _mark(key_node))
                result[key] = self.convert(value_node, depth + 1)
                result.key_marks[key] = _mark(key_node)
                result.value_marks[key] = _mark(value_node)
            return result
        if isinstance(node, yaml.SequenceNode):
            result_list = LList()
            result_list.mark, result_list.item_marks = _mark(node), []
            for item in node.value:
                result_list.append(self.convert(item, depth + 1))
                result_list.item_marks.append(_mark(item))
            return result_list
        try:
            value = self.constructor.construct_object(node)
        except ValueError as exc:  # e.g. integers too long to convert
            raise self.fail(f"value cannot be read: {exc}", _mark(node)) from None
        except yaml.YAMLError as exc:
            raise self.fail(f"value cannot be read: {str(exc).splitlines()[0]}", _mark(node)) from None
        if isinstance(value, (_dt.date, _dt.datetime)):
            value = value.isoformat()
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(f"number {node.value!r} is not finite", _mark(node))
        return value


def _parse_yaml(text: str, path: str) -> Any:
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise BatchValidationError(f"invalid YAML: {exc.problem or exc.context or 'syntax error'}", path, *where) from None
    except yaml.YAMLError as exc:
        raise BatchValidationError(f"invalid YAML: {str(exc).splitlines()[0]}", path) from None
    if node is None:
        raise BatchValidationError("batch file is empty", path)
    return _Converter(path).convert(node)


# -- validation -----------------------------------------------------------------------------


class _Checker:
    """Validates one part of the document; errors point at a key or a value."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, reason: str, mark: Optional[Mark]) -> BatchValidationError:
        return BatchValidationError(reason, self.path, *(mark or (None, None)))

    @staticmethod
    def key_mark(mapping: Any, key: Any) -> Mark:
        return getattr(mapping, "key_marks", {}).get(key, getattr(mapping, "mark", (1, 1)))

    @staticmethod
    def value_mark(mapping: Any, key: Any) -> Mark:
        return getattr(mapping, "value_marks", {}).get(key, getattr(mapping, "mark", (1, 1)))

    def mapping(self, value: Any, what: str, mark: Mark) -> LMap:
        if value is None:
            value = LMap()
            value.mark, value.key_marks, value.value_marks = mark, {}, {}
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be a mapping, not {_type_name(value)}", mark)
        return value

    def unknown_keys(self, mapping: Mapping, allowed: Sequence[str], what: str) -> None:
        for key in mapping:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else f"; expected one of {', '.join(allowed)}"
                raise self.fail(f"unknown key '{key}' in {what}{extra}", self.key_mark(mapping, key))

    def number(self, value: Any, what: str, mark: Mark, low: float = 0.0, high: float = MAX_SECONDS, strict_low: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{what} must be a number, not {_type_name(value)} {value!r}", mark)
        if value < low or (strict_low and value == low) or value > high:
            bound = f"> {low:g}" if strict_low else f">= {low:g}"
            raise self.fail(f"{what} must be {bound} and <= {high:g}, not {value!r}", mark)
        return float(value)

    def integer(self, value: Any, what: str, mark: Mark, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{what} must be an integer, not {_type_name(value)} {_short(value)}", mark)
        if not low <= value <= high:
            raise self.fail(f"{what} must be between {low} and {high}, not {_short(value)}", mark)
        return value

    def choice(self, value: Any, what: str, mark: Mark, choices: Sequence[str]) -> str:
        if value not in choices:
            raise self.fail(f"{what} must be one of {', '.join(map(str, choices))}, not {_short(value)}", mark)
        return value


def _type_name(value: Any) -> str:
    return {LMap: "a mapping", LList: "a list", dict: "a mapping", list: "a list", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> Any:
    """Located containers back to plain dicts and lists (for params and the report)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def parse_var(text: str) -> Tuple[str, Any]:
    """``NAME=VALUE`` from the command line; VALUE is read as a YAML scalar (``10`` is an int)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise BatchValidationError(f"--var expects NAME=VALUE with NAME an identifier, not {text!r}", "<command line>")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) or value is None or isinstance(value, (_dt.date, _dt.datetime)):
        value = raw
    if isinstance(value, float) and not math.isfinite(value):
        value = raw
    return name, value


class _Expander(_Checker):
    """Renders templates and expands sweeps into concrete steps."""

    def __init__(self, path: str, variables: Dict[str, Any], defaults: Dict[str, Any]) -> None:
        super().__init__(path)
        self.variables = variables
        self.defaults = defaults
        self.steps: List[Step] = []

    def render(self, value: Any, env: Mapping[str, Any], mark: Mark) -> Any:
        if isinstance(value, str):
            try:
                return render(value, env)
            except TemplateError as exc:
                raise self.fail(str(exc), mark) from None
        if isinstance(value, dict):
            return {
                k: self.render(v, env, self.value_mark(value, k)) for k, v in value.items()
            }
        if isinstance(value, list):
            marks = getattr(value, "item_marks", None) or [mark] * len(value)
            return [self.render(v, env, m) for v, m in zip(value, marks)]
        return value

    def expand(self, steps: Any, mark: Mark, sweep: Dict[str, Any]) -> None:
        if not isinstance(steps, list):
            raise self.fail(f"'steps' must be a list of steps, not {_type_name(steps)}", mark)
        if not steps:
            raise self.fail("'steps' is empty", mark)
        for item, item_mark in zip(steps, steps.item_marks):
            self.step(item, item_mark, sweep)

    def step(self, raw: Any, mark: Mark, sweep: Dict[str, Any]) -> None:
        if not isinstance(raw, dict) or not raw:
            raise self.fail(f"a step must be a mapping with one of {', '.join(STEP_KINDS)}, not {_type_name(raw)}", mark)
        kinds = [k for k in raw if k in STEP_KINDS]
        if not kinds:
            first = next(iter(raw))
            hint = difflib.get_close_matches(str(first), STEP_KINDS, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else f"; expected one of {', '.join(STEP_KINDS)}"
            raise self.fail(f"unknown step kind '{first}'{extra}", self.key_mark(raw, first))
        if len(kinds) > 1:
            raise self.fail(f"a step has one kind, this one has {' and '.join(kinds)}", self.key_mark(raw, kinds[1]))
        kind = kinds[0]
        if kind == "for":
            self.sweep(raw, sweep)
            return
        allowed = (kind, *COMMON_KEYS) + (("settle",) if kind == "config" else ())
        self.unknown_keys(raw, allowed, f"a {kind} step")
        if len(self.steps) >= MAX_STEPS:
            raise self.fail(f"the batch expands to more than {MAX_STEPS} steps", mark)
        index = len(self.steps) + 1
        env = {**self.variables, **sweep, "step": index}
        rendered = {k: self.render(v, env, self.value_mark(raw, k)) for k, v in raw.items()}
        self.steps.append(self.build(kind, raw, rendered, index, mark, sweep))

    def sweep(self, raw: LMap, sweep: Dict[str, Any]) -> None:
        self.unknown_keys(raw, ("for", "steps", "name"), "a for step")
        spec = self.mapping(raw["for"], "'for'", self.value_mark(raw, "for"))
        if not spec:
            raise self.fail("'for' needs at least one variable: for: {name: [values]}", self.value_mark(raw, "for"))
        if "steps" not in raw:
            raise self.fail("a for step needs 'steps'", self.key_mark(raw, "for"))
        names, value_lists = [], []
        env = {**self.variables, **sweep}
        for name, values in spec.items():
            key_mark = self.key_mark(spec, name)
            if not isinstance(name, str) or not name.isidentifier():
                raise self.fail(f"sweep variable {name!r} must be an identifier", key_mark)
            if name in BUILTINS:
                raise self.fail(f"sweep variable '{name}' would hide the built-in of that name", key_mark)
            values = self.render(values, env, self.value_mark(spec, name))
            if not isinstance(values, list) or not values:
                raise self.fail(f"sweep variable '{name}' needs a non-empty list of values", self.value_mark(spec, name))
            for value in values:
                if isinstance(value, (dict, list)):
                    raise self.fail(f"sweep values of '{name}' must be scalars", self.value_mark(spec, name))
            names.append(name)
            value_lists.append(values)
        total = math.prod(len(v) for v in value_lists)
        if total * 1 + len(self.steps) > MAX_STEPS:
            raise self.fail(
                f"this sweep has {total} combinations; the batch would exceed {MAX_STEPS} steps",
                self.key_mark(raw, "for"),
            )
        for combination in itertools.product(*value_lists):
            self.expand(raw["steps"], self.value_mark(raw, "steps"), {**sweep, **dict(zip(names, combination))})

    def build(self, kind: str, raw: LMap, values: Dict[str, Any], index: int, mark: Mark, sweep: Dict[str, Any]) -> Step:
        vm = lambda key: self.value_mark(raw, key)  # noqa: E731
        options = dict(self.defaults)
        if "timeout" in values:
            options["timeout"] = self.number(values["timeout"], "timeout", vm("timeout"), strict_low=True)
        if "retries" in values:
            options["retries"] = self.integer(values["retries"], "retries", vm("retries"), 0, MAX_RETRIES)
        if "on_error" in values:
            options["on_error"] = self.choice(values["on_error"], "on_error", vm("on_error"), ON_ERROR)
        tags: Tuple[str, ...] = ()
        if "tags" in values:
            if not isinstance(values["tags"], list) or not all(isinstance(t, (str, int)) for t in values["tags"]):
                raise self.fail("tags must be a list of strings", vm("tags"))
            tags = tuple(str(t) for t in values["tags"])
        body = values[kind]
        body_mark = vm(kind)
        raw_body = raw[kind]
        common = dict(index=index, kind=kind, tags=tags, line=mark[0], sweep=dict(sweep), **options)

        if kind == "config":
            body = self.mapping(body, "config", body_mark)
            if not body:
                raise self.fail("config needs at least one field to change", body_mark)
            config = self.config_fields(body, raw_body, "config")
            settle = self.number(values["settle"], "settle", vm("settle")) if "settle" in values else 0.0
            name = "config " + ", ".join(f"{k}={v}" for k, v in config.items())
            params = {"config": config, "settle": settle}
            return ConfigStep(name=self.name(values, name, vm), params=params, config=config, settle=settle, **common)

        if kind == "check":
            body = self.mapping(body, "check", body_mark)
            self.unknown_keys(raw_body, ("deployment", "writer", "config", "min_detector_rate", "min_writer_rate"), "check")
            if not body:
                raise self.fail("check needs at least one condition", body_mark)
            km = lambda key: self.value_mark(raw_body, key)  # noqa: E731
            deployment = (
                self.choice(body["deployment"], "deployment", km("deployment"), [s.value for s in api.DeploymentStatus])
                if "deployment" in body
                else None
            )
            writer = (
                self.choice(body["writer"], "writer", km("writer"), [s.value for s in api.WriterState]) if "writer" in body else None
            )
            config = {}
            if "config" in body:
                config = self.config_fields(self.mapping(body["config"], "check config", km("config")), raw_body["config"], "check config")
            rates = {}
            for key in ("min_detector_rate", "min_writer_rate"):
                if key in body:
                    rates[key] = self.number(body[key], key, km(key), high=1e9)
            params = _plain(body)
            name = "check " + ", ".join(f"{k}={v}" for k, v in params.items())
            return CheckStep(
                name=self.name(values, name, vm), params=params, deployment=deployment, writer=writer, config=config, **rates, **common
            )

        if kind == "write":
            body = self.mapping(body, "write", body_mark)
            self.unknown_keys(raw_body, ("output_file", "n_images", "wait"), "write")
            km = lambda key: self.value_mark(raw_body, key)  # noqa: E731
            for required in ("output_file", "n_images"):
                if required not in body:
                    raise self.fail(f"write needs '{required}'", body_mark)
            output_file = self.output_file(body["output_file"], km("output_file"))
            n_images = self.integer(body["n_images"], "n_images", km("n_images"), 1, MAX_N_IMAGES)
            wait = body.get("wait", True)
            if not isinstance(wait, bool):
                raise self.fail(f"wait must be true or false, not {_short(wait)}", km("wait"))
            params = {"output_file": output_file, "n_images": n_images, "wait": wait}
            name = f"write {n_images} to {output_file}" + ("" if wait else " (no wait)")
            return WriteStep(
                name=self.name(values, name, vm), params=params, output_file=output_file, n_images=n_images, wait=wait, **common
            )

        if kind == "wait":
            body = self.mapping(body, "wait", body_mark)
            self.unknown_keys(raw_body, ("seconds", "state", "timeout"), "wait")
            km = lambda key: self.value_mark(raw_body, key)  # noqa: E731
            if ("seconds" in body) == ("state" in body):
                raise self.fail("wait needs exactly one of 'seconds' or 'state'", body_mark)
            seconds = self.number(body["seconds"], "seconds", km("seconds")) if "seconds" in body else None
            state = (
                self.choice(body["state"], "state", km("state"), [s.value for s in api.WriterState]) if "state" in body else None
            )
            if "timeout" in body:
                common["timeout"] = self.number(body["timeout"], "timeout", km("timeout"), strict_low=True)
            if seconds is not None and seconds >= common["timeout"]:
                common["timeout"] = seconds + 30.0
            params = _plain(body)
            name = f"wait {seconds:g} s" if seconds is not None else f"wait for writer {state}"
            return WaitStep(name=self.name(values, name, vm), params=params, seconds=seconds, state=state, **common)

        # stop
        if body not in (None, {}) and not (isinstance(body, dict) and not body):
            raise self.fail("stop takes no parameters: write 'stop: {}'", body_mark)
        return StopStep(name=self.name(values, "stop writer", vm), params={}, **common)

    def name(self, values: Dict[str, Any], default: str, vm: Any) -> str:
        if "name" not in values:
            return default
        if not isinstance(values["name"], (str, int, float)) or isinstance(values["name"], bool):
            raise self.fail("name must be a string", vm("name"))
        return str(values["name"])

    def config_fields(self, body: Dict[str, Any], raw_body: Any, what: str) -> Dict[str, Any]:
        km = lambda key: self.value_mark(raw_body, key)  # noqa: E731
        self.unknown_keys(raw_body, api.CONFIG_FIELDS, what)
        config = {}
        for key, value in body.items():
            if key in api.INTEGER_CONFIG_FIELDS:
                value = self.integer(value, key, km(key), -(2**31), 2**31 - 1)
            if key == "bit_depth":
                value = self.choice(value, "bit_depth", km(key), api.BIT_DEPTHS)
            if key == "detector_type":
                value = self.choice(value, "detector_type", km(key), api.DETECTOR_TYPES)
            if key == "detector_name" and not isinstance(value, str):
                raise self.fail("detector_name must be a string", km(key))
            config[key] = _plain(value)
        return config

    def output_file(self, value: Any, mark: Mark) -> str:
        if not isinstance(value, str):
            raise self.fail(f"output_file must be a string, not {_type_name(value)}", mark)
        if not value.startswith("/"):
            raise self.fail(f"output_file must be an absolute path, not {value!r}", mark)
        if ".." in value.split("/"):
            raise self.fail(f"output_file must not contain '..' segments: {value!r}", mark)
        if not api.OUTPUT_FILE_PATTERN.match(value):
            raise self.fail(
                f"output_file {value!r} is not accepted by the DAQ (letters, digits, _ - / and an extension)", mark
            )
        return value


def load_batch_text(
    text: str,
    path: str = "<string>",
    vars: Optional[Mapping[str, Any]] = None,
    now: Optional[_dt.datetime] = None,
    sha256: Optional[str] = None,
) -> Batch:
    """Validate and expand a batch given as text (see :func:`load_batch`)."""
    doc = _parse_yaml(text, path)
    check = _Checker(path)
    top = check.mapping(doc, "a batch file", getattr(doc, "mark", (1, 1)))
    check.unknown_keys(top, ("version", "name", "daq", "vars", "defaults", "steps"), "the batch")
    if "version" not in top:
        raise check.fail("missing 'version: 1'", top.mark)
    if top["version"] != 1 or isinstance(top["version"], bool):
        raise check.fail(f"unsupported version {_short(top['version'])}; this daq-run reads version 1", check.value_mark(top, "version"))
    name = top.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str):
        raise check.fail("name must be a string", check.value_mark(top, "name"))

    daq = check.mapping(top.get("daq"), "daq", check.value_mark(top, "daq"))
    check.unknown_keys(daq, ("url", "redis"), "daq")
    for key in daq:
        if not isinstance(daq[key], str) or not daq[key]:
            raise check.fail(f"daq.{key} must be a URL string", check.value_mark(daq, key))

    now = now or _dt.datetime.now()
    variables: Dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d"),
        "time": now.strftime("%H%M%S"),
        "datetime": now.strftime("%Y%m%d_%H%M%S"),
        "batch": name,
    }
    batch_vars = check.mapping(top.get("vars"), "vars", check.value_mark(top, "vars"))
    for key, value in batch_vars.items():
        mark = check.value_mark(batch_vars, key)
        if not isinstance(key, str) or not key.isidentifier():
            raise check.fail(f"variable name {key!r} must be an identifier", check.key_mark(batch_vars, key))
        if key in BUILTINS:
            raise check.fail(f"variable '{key}' would hide the built-in of that name", check.key_mark(batch_vars, key))
        if isinstance(value, dict):
            raise check.fail(f"variable '{key}' must be a scalar or a list", mark)
        if vars and key in vars:
            continue
        variables[key] = _Expander(path, variables, {}).render(value, variables, mark)
        variables[key] = _plain(variables[key])
    for key, value in (vars or {}).items():
        if key in BUILTINS:
            raise BatchValidationError(f"--var {key} would hide the built-in of that name", "<command line>")
        variables[key] = value

    defaults_raw = check.mapping(top.get("defaults"), "defaults", check.value_mark(top, "defaults"))
    check.unknown_keys(defaults_raw, ("timeout", "retries", "on_error"), "defaults")
    defaults: Dict[str, Any] = {"timeout": DEFAULT_TIMEOUT_S, "retries": 0, "on_error": "abort"}
    if "timeout" in defaults_raw:
        defaults["timeout"] = check.number(defaults_raw["timeout"], "timeout", check.value_mark(defaults_raw, "timeout"), strict_low=True)
    if "retries" in defaults_raw:
        defaults["retries"] = check.integer(defaults_raw["retries"], "retries", check.value_mark(defaults_raw, "retries"), 0, MAX_RETRIES)
    if "on_error" in defaults_raw:
        defaults["on_error"] = check.choice(defaults_raw["on_error"], "on_error", check.value_mark(defaults_raw, "on_error"), ON_ERROR)

    if "steps" not in top:
        raise check.fail("missing 'steps'", top.mark)
    expander = _Expander(path, variables, defaults)
    expander.expand(top["steps"], check.value_mark(top, "steps"), {})
    return Batch(
        name=name,
        path=path,
        sha256=sha256 or hashlib.sha256(text.encode("utf-8")).hexdigest(),
        steps=tuple(expander.steps),
        daq=dict(daq),
        vars={k: v for k, v in variables.items() if k not in BUILTINS},
    )


def load_batch(path: "os.PathLike[str] | str", vars: Optional[Mapping[str, Any]] = None, now: Optional[_dt.datetime] = None) -> Batch:
    """Read, validate and expand a batch file.

    Args:
        path: the YAML batch file.
        vars: values for template variables; they override the file's ``vars``.
        now: the time the built-ins ``date``/``time``/``datetime`` are taken from.

    Raises:
        BatchValidationError: anything wrong, with file, line and column.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BatchValidationError(f"cannot read batch file: {exc.strerror or exc}", path) from None
    if len(data) > MAX_FILE_BYTES:
        raise BatchValidationError(f"batch file is larger than {MAX_FILE_BYTES} bytes", path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise BatchValidationError(f"batch file is not UTF-8 (byte 0x{data[exc.start]:02x})", path, line, column) from None
    if not text.strip():
        raise BatchValidationError("batch file is empty", path)
    return load_batch_text(text, path, vars, now, hashlib.sha256(data).hexdigest())

