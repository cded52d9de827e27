"""Batch files: YAML -> validated, fully expanded plan of steps (plain data).

``load_batch(path, vars=...)`` reads a batch file (YAML 1.2 core schema: ``NO``,
``on``, ``12:30``, ``0123`` and ``2024-01-01`` mean what was typed, see
:mod:`daq_runner._yaml`), checks every key and value against the step kinds'
declarations (:mod:`daq_runner._stepkinds`), renders the templates, expands the sweeps
and returns a :class:`Batch` whose ``steps`` are :class:`Step` objects. Everything wrong
in the file is reported at once: :class:`BatchValidationError` lists each problem as
``file:line:column: reason``, before anything is sent to a DAQ. Nothing in this module
talks to a DAQ.

Variables a template may use (``{name}``), later ones hiding earlier ones:

- the built-ins ``date`` (``2026-01-02``), ``time`` (``030405``) and ``datetime``
  (``20260102_030405``), taken once, when the batch is loaded (the run's start), in
  the local time of the machine; ``batch`` (the batch name); ``run`` (unique per run,
  e.g. ``20260102T020405Z-3fa9c1``: UTC time plus a random suffix, safe in file names,
  or the ``run`` the caller gives); ``step`` (the step's 1-based index);
- the batch's ``vars`` (in order; each may use the ones before it);
- values from the caller (``--var NAME=VALUE``: always text), which replace the
  batch's ``vars`` of the same name; a caller's variable the batch neither declares
  nor uses is an error;
- sweep variables (``for: {name: [values]}``).

Limits: a file of at most :data:`MAX_FILE_BYTES` (1 MiB), :data:`MAX_NODES` (200,000)
YAML nodes after alias expansion, :data:`MAX_STEPS` (100,000) steps after expansion,
:data:`MAX_RENDERED_CHARS` (4096) characters per rendered string and
:data:`MAX_RENDERED_TOTAL` (16 Mi) characters rendered for the whole batch, both
checked while rendering, so no file can make validation take much memory or time.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import hashlib
import itertools
import json
import math
import os
import posixpath
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from . import templating
from ._fields import Context, Invalid, did_you_mean, placeholder_hint, plain, short, type_name, unknown_key
from ._stepkinds import (
    BATCH_NAME,
    BUILTINS,
    COMMON_FIELDS,
    DAQ,
    DEFAULT_TIMEOUT_S,
    DEFAULTS,
    FINALLY,
    KINDS,
    MAX_N_IMAGES,
    MAX_RETRIES,
    MAX_SECONDS,
    ON_ERROR,
    RESTORE_CONFIG,
    STEP_KINDS,
    SWEEP,
    CheckStep,
    ConfigStep,
    RunStep,
    Step,
    StepKind,
    StopStep,
    WaitStep,
    WriteStep,
    wait_timeout,
)
from ._text import secrets_in
from ._yaml import MAX_NODES, LMap, Mark, colon_hint, load_yaml
from .exceptions import BatchValidationError
from .templating import MAX_RENDERED_CHARS, Budget, TemplateError, UnknownVariable, UnusableVariable

__all__ = [
    "Batch",
    "Step",
    "ConfigStep",
    "CheckStep",
    "WriteStep",
    "WaitStep",
    "StopStep",
    "RunStep",
    "load_batch",
    "load_batch_text",
    "parse_var",
    "new_run",
    "STEP_KINDS",
    "BUILTINS",
    "MAX_STEPS",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_RENDERED_CHARS",
    "MAX_RENDERED_TOTAL",
    "MAX_ERRORS",
    "DEFAULT_TIMEOUT_S",
    "COMMAND_LINE",
    "COMMANDS_REFUSED",
]

MAX_STEPS = 100_000  # a batch expanding to more steps is refused
MAX_FILE_BYTES = 1024 * 1024
MAX_RENDERED_TOTAL = 16 * 1024 * 1024  # characters rendered for a whole batch (~168 per step at MAX_STEPS)
MAX_ERRORS = 20  # errors listed; the rest are counted ("... and N more errors")
# Steps and sweep combinations visited: bounds sweeps of sweeps whose bodies make no step.
_MAX_WORK = 10 * MAX_STEPS
_MAX_KEPT_ERRORS = 10_000
_MAX_SUGGESTION_WORK = 200_000  # names compared for did-you-mean hints of unknown variables  # distinct errors kept for sorting; beyond, only counted
COMMAND_LINE = "<command line>"  # the path of errors in --var values
# Why a run step is refused when the run does not allow commands (the batch would run programs here).
COMMANDS_REFUSED = (
    "a run step runs a program on this machine: refused unless the run allows commands "
    "(daq-run --allow-commands, or allow_commands: true in the DAQ's profile)"
)
TOP_KEYS = ("version", "name", "daq", "vars", "defaults", "steps", FINALLY, "restore_config", "notify")
_RUN = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_REFERENCE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)")  # lenient: also inside malformed placeholders

# The step kinds' limits, importable from here with the rest of the batch vocabulary.
__all__ += ["MAX_N_IMAGES", "MAX_SECONDS", "MAX_RETRIES", "ON_ERROR"]


@dataclass(frozen=True)
class Batch:
    """A validated batch: what to run, and where it came from.

    Attributes:
        name: the batch's name; path: its file; sha256: of the file's bytes.
        steps: the expanded plan.
        daq: ``url``/``redis`` from the file's ``daq:`` section.
        vars: the variables in force (built-ins excluded).
        run: the value of ``{run}`` for this load.
        now: the local time ``{date}``, ``{time}`` and ``{datetime}`` show (ISO 8601), so that
            a resumed run can render the same file names.
        cleanup: the ``finally:`` steps, run when the run ends whatever ended it; their
            indices follow those of ``steps`` (a batch of 14 steps has cleanup steps 15, ...).
        restore_config: put the DAQ configuration found before the first step back at the
            end (``restore_config: true``).
        notify: the ``notify:`` block as written (checked when loaded; see
            :class:`daq_runner.notify.NotifySettings`), ``None`` without one.
    """

    name: str
    path: str
    sha256: str
    steps: Tuple[Step, ...]
    daq: Dict[str, str] = field(default_factory=dict)
    vars: Dict[str, Any] = field(default_factory=dict)
    run: str = ""
    now: str = ""
    cleanup: Tuple[Step, ...] = ()
    restore_config: bool = False
    notify: Optional[Dict[str, Any]] = None

    @property
    def secrets(self) -> Tuple[str, ...]:
        """Credentials in URLs given as variables (``--var note=https://user:pw@elog/...``):
        as secret as the DAQ's own, masked wherever the run shows them."""
        return secrets_in(*(v for v in self.vars.values() if isinstance(v, str) and "@" in v))


def parse_var(text: str) -> Tuple[str, str]:
    """``NAME=VALUE`` from the command line -> ``(NAME, VALUE)``; VALUE is always text.

    ``sample=NO`` gives ``"NO"`` and ``n=0123`` gives ``"0123"``. Where a typed field
    takes the variable as a lone placeholder (``n_images: "{n}"``), the text is
    converted then, as a decimal integer or number (``"0123"`` -> 123).

    Raises:
        BatchValidationError: NAME is not an identifier (path ``<command line>``).
    """
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise BatchValidationError(f"--var expects NAME=VALUE with NAME an identifier, not {short(text)}", COMMAND_LINE)
    return name, value


def new_run(now: Optional[_dt.datetime] = None) -> str:
    """A fresh value for ``{run}``: UTC time and a random suffix, e.g. ``20260102T020405Z-3fa9c1``.

    Only letters, digits, ``-``: safe in file names and accepted by the DAQ in paths.
    """
    moment = (now or _dt.datetime.now()).astimezone(_dt.timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# -- errors ------------------------------------------------------------------------------------


class _Errors:
    """Every problem found, deduplicated: a sweep repeats its steps' mistakes, once per
    combination of its values, and a place of the file is reported once with a count of the
    other values that repeat it (not twelve times for a 3 x 4 sweep)."""

    def __init__(self, path: str, allow_commands: bool = False) -> None:
        self.path = path
        self.allow_commands = allow_commands
        self.found: Dict[Tuple[Any, ...], BatchValidationError] = {}
        self.command_line: List[BatchValidationError] = []
        self.uncounted = 0
        self.sweep_pass = 0  # which combination of sweep values is being expanded (the loader counts)
        self._first_pass: Dict[Tuple[int, int], int] = {}  # place -> the pass of its first error
        self._repeats: Dict[Tuple[int, int], int] = {}

    def __bool__(self) -> bool:
        return bool(self.found or self.command_line or self.uncounted)

    def add(self, reason: str, mark: Optional[Mark], *, each: bool = False) -> None:
        """Record ``reason`` at ``mark``; ``each``: listed for every sweep pass (it names the step)."""
        line, column = mark or (None, None)
        key = (line or 0, column or 0, reason)
        if key in self.found:
            return
        place = key[:2]
        first = self._first_pass.setdefault(place, self.sweep_pass)
        if first != self.sweep_pass and not each:
            # The same place with other sweep values: counted, not listed again.
            self._repeats[place] = self._repeats.get(place, 0) + 1
            return
        if len(self.found) >= _MAX_KEPT_ERRORS:
            self.uncounted += 1
            return
        self.found[key] = BatchValidationError(reason, self.path, line, column)

    def add_command_line(self, reason: str) -> None:
        self.command_line.append(BatchValidationError(reason, COMMAND_LINE))

    def exception(self) -> BatchValidationError:
        for (line, column, reason), error in list(self.found.items()):
            repeats = self._repeats.pop((line, column), 0)
            if repeats:
                more = f" (and {repeats} more like it here, with other values of the for:)"
                self.found[(line, column, reason)] = BatchValidationError(reason + more, self.path, line or None, column or None)
        ordered = [self.found[key] for key in sorted(self.found, key=lambda k: (k[0], k[1]))]
        errors = ordered + self.command_line
        return BatchValidationError.from_errors(errors[:MAX_ERRORS], len(errors[MAX_ERRORS:]) + self.uncounted)


class _Renderer(Context):
    """Renders templates with the variables in force and reports problems to ``errors``."""

    def __init__(self, errors: _Errors, budget: Budget, literal: bool = False) -> None:
        self.errors = errors
        self.budget = budget
        self.literal = literal
        self.env: Mapping[str, Any] = {}
        self.suggestions: Dict[str, str] = {}  # unknown name -> did-you-mean ("" for none)
        self.comparisons_left = _MAX_SUGGESTION_WORK
        self.loops: Dict[str, int] = {}  # sweep variable -> line of its for:

    def report(self, error: Invalid) -> None:
        if error.reason is not None:
            self.errors.add(error.reason, error.mark)

    def render(self, raw: Any, mark: Mark) -> Tuple[Any, Optional[str]]:
        if self.literal or not isinstance(raw, str) or ("{" not in raw and "}" not in raw):
            return raw, None
        try:
            return templating.render(raw, self.env, budget=self.budget), templating.lone_placeholder(raw)
        except UnusableVariable:
            raise Invalid(None) from None  # its own error was reported where it was defined
        except UnknownVariable as exc:
            raise Invalid(self.unknown(exc, raw), mark) from None
        except TemplateError as exc:
            raise Invalid(str(exc), mark) from None

    def unknown(self, exc: UnknownVariable, text: str) -> str:
        """Every variable ``text`` names that has no value here, each with what would fix it."""
        env = self.env
        try:
            named = sorted(templating.placeholders(text), key=text.index)
        except TemplateError:
            named = [exc.name]
        unknown = [name for name in named if name not in env] or [exc.name]
        listed = ", ".join(f"'{name}'" for name in unknown)
        head = f"unknown variable{'s' if len(unknown) > 1 else ''} {listed} in {templating.short(text)}"
        if len(unknown) == 1:
            maybe, fix = self._fix(unknown[0])
            return f"{head}{maybe}; {fix}"
        return head + "; " + "; ".join("'{}'{}: {}".format(name, *self._fix(name)) for name in unknown)

    def _fix(self, name: str) -> Tuple[str, str]:
        """What makes ``name`` known at this step: a did-you-mean (`` (did you mean 'x'?)`` or
        ""), and what to do (add it, or move the step into the loop it belongs to)."""
        loop = self.loops.get(name)
        if loop is not None:
            return "", (
                f"it is the variable of the for: at line {loop}, and this step is not inside that "
                "loop (indent it under that for:'s steps:)"
            )
        match = self.suggestions.get(name, "")
        if name not in self.suggestions:
            # Suggestions compare names one by one: bounded, so that thousands of unknown
            # names against thousands of variables cannot take minutes.
            env = self.env
            size = len(env) + len(env.parent) if isinstance(env, _Scope) else len(env)
            if size <= self.comparisons_left:
                self.comparisons_left -= size
                names = env.names() if isinstance(env, _Scope) else set(env)
                match = did_you_mean(name, sorted(n for n in names if env[n] is not templating.UNUSABLE)) or ""
            self.suggestions[name] = match
        return (f" (did you mean '{match}'?)" if match else ""), f"add it under vars: or pass --var {name}=VALUE"

    def render_tree(self, raw: Any, mark: Mark) -> Any:
        if isinstance(raw, str):
            return self.render(raw, mark)[0]
        if isinstance(raw, dict):
            marks = getattr(raw, "value_marks", {})
            return {k: self.render_tree(v, marks.get(k, mark)) for k, v in raw.items()}
        if isinstance(raw, list):
            marks = getattr(raw, "item_marks", None) or [mark] * len(raw)
            return [self.render_tree(v, m) for v, m in zip(raw, marks)]
        return raw


def _with(body: LMap, step: LMap, keys: List[str]) -> LMap:
    """``body`` with the ``keys`` of ``step`` added, marks and all."""
    merged = LMap(body)
    merged.mark, merged.placeholder = body.mark, body.placeholder
    merged.key_marks, merged.value_marks = dict(body.key_marks), dict(body.value_marks)
    for key in keys:
        if key not in merged:
            merged[key] = step[key]
            merged.key_marks[key], merged.value_marks[key] = step.key_marks[key], step.value_marks[key]
    return merged


def _key_mark(mapping: Any, key: Any) -> Mark:
    return getattr(mapping, "key_marks", {}).get(key, getattr(mapping, "mark", (1, 1)))


def _value_mark(mapping: Any, key: Any) -> Mark:
    return getattr(mapping, "value_marks", {}).get(key, getattr(mapping, "mark", (1, 1)))


def _mark_at(value: Any, path: Tuple[Any, ...], mark: Mark) -> Mark:
    """The mark of the value at ``path`` (keys and list positions) inside ``value``, as far as it goes."""
    for key in path:
        if isinstance(value, dict) and key in value:
            mark, value = _value_mark(value, key), value[key]
        elif isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
            marks = getattr(value, "item_marks", None)
            mark, value = (marks[key] if marks else mark), value[key]
        else:
            break
    return mark


# Sorted keys, no spaces, UTF-8: the form Step.identity hashes.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class _Scope(dict):
    """The variables of one step: its own (sweep, ``step``) over the batch's, without copying those."""

    __slots__ = ("parent",)

    def __init__(self, own: Mapping[str, Any], parent: Mapping[str, Any]) -> None:
        super().__init__(own)
        self.parent = parent

    def __missing__(self, key: str) -> Any:
        return self.parent[key]

    def names(self) -> Set[str]:
        return set(self) | set(self.parent)


def _canonical(value: Any) -> Any:
    """Mapping keys as text, so that any params serialise with sorted keys."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _references(value: Any, names: Set[str]) -> None:
    """Collect every variable name a placeholder in ``value`` (walked) mentions."""
    if isinstance(value, str):
        if "{" in value:
            names.update(_REFERENCE.findall(value))
    elif isinstance(value, dict):
        if isinstance(value, LMap) and value.placeholder:
            names.add(value.placeholder)  # an unquoted {name}: meant as a reference
        for item in value.values():
            _references(item, names)
    elif isinstance(value, list):
        for item in value:
            _references(item, names)


class _Loader:
    """One batch being loaded: its variables, defaults, steps so far and errors."""

    def __init__(self, path: str, allow_commands: bool = False) -> None:
        self.path = path
        self.allow_commands = allow_commands
        self.errors = _Errors(path)
        self.budget = Budget(MAX_RENDERED_TOTAL)
        self.ctx = _Renderer(self.errors, self.budget)
        self.variables: Dict[str, Any] = {}
        self.defaults: Dict[str, Any] = {"timeout": DEFAULT_TIMEOUT_S, "retries": 0, "on_error": "abort"}
        self.body_defaults: Dict[str, Dict[str, Any]] = {}
        self.extra_defaults: Dict[str, Dict[str, Any]] = {}  # step-level keys of a kind (a write's guard, verify)
        self.defaults_given: Tuple[str, ...] = ()  # the keys the batch's defaults: names
        self.steps: List[Step] = []
        self.count = 0  # steps met, valid or not: the index of the next one is count + 1
        self.work = 0  # steps and sweep combinations visited (bounds the expansion)
        self.overflow = False
        self.identities: Dict[bytes, int] = {}
        self.outputs: Dict[str, Tuple[int, Mark, Dict[str, Any]]] = {}
        self.in_cleanup = False  # expanding the finally: steps

    def error(self, reason: str, mark: Optional[Mark], *, each: bool = False) -> None:
        self.errors.add(reason, mark, each=each)

    # -- variables -----------------------------------------------------------------------

    def variable_name(self, name: Any, mark: Mark, what: str) -> bool:
        if not isinstance(name, str) or not name.isidentifier():
            self.error(f"{what} {short(name)} must be an identifier (letters, digits, _)", mark)
            return False
        if name in BUILTINS:
            self.error(f"{what} '{name}' would hide the built-in of that name", mark)
            return False
        return True

    def batch_vars(self, raw: Any, mark: Mark, given: Mapping[str, Any]) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.error(f"vars must be a mapping of names to values, not {type_name(raw)}{colon_hint(raw)}", mark)
            return
        for key, value in raw.items():
            value_mark = _value_mark(raw, key)
            if not self.variable_name(key, _key_mark(raw, key), "variable"):
                continue
            if key in given:
                continue  # the caller's value replaces it
            problem = self.var_value_problem(value)
            if problem:
                self.error(f"variable '{key}' {problem}{placeholder_hint(value)}", value_mark)
                self.variables[key] = templating.UNUSABLE
                continue
            self.ctx.env = self.variables
            try:
                self.variables[key] = plain(self.ctx.render_tree(value, value_mark))
            except Invalid as exc:
                if exc.reason is not None:
                    self.error(f"variable '{key}': {exc.reason}", exc.mark)
                self.variables[key] = templating.UNUSABLE

    @staticmethod
    def var_value_problem(value: Any) -> str:
        if value is None:
            return "has no value"
        if isinstance(value, dict):
            return "must be a scalar or a list of scalars, not a mapping"
        if isinstance(value, list) and any(isinstance(item, (dict, list)) or item is None for item in value):
            return "must be a scalar or a list of scalars"
        return ""

    def given_vars(self, given: Mapping[str, Any]) -> None:
        for key, value in given.items():
            if not isinstance(key, str) or not key.isidentifier():
                self.errors.add_command_line(f"--var {short(key)}: the name must be an identifier")
            elif key in BUILTINS:
                self.errors.add_command_line(f"--var {key} would hide the built-in of that name")
            elif value is None or isinstance(value, dict):
                self.errors.add_command_line(f"--var {key} must be text, a number or a list, not {type_name(value)}")
            else:
                self.variables[key] = value

    def unused_vars(self, doc: Mapping[str, Any], strict: Mapping[str, Any]) -> None:
        """A caller's variable the batch neither declares nor uses is a mistake (a typo?)."""
        referenced: Set[str] = set()
        for key in ("vars", "defaults", "steps", FINALLY):
            _references(doc.get(key), referenced)
        declared = set(doc["vars"]) if isinstance(doc.get("vars"), dict) else set()
        swept = self.sweep_names(doc.get("steps")) | self.sweep_names(doc.get(FINALLY))
        declared |= swept
        known = sorted(n for n in declared | referenced if isinstance(n, str))
        for name in strict:
            if name in swept:
                # The sweep gives it its values: a --var of that name would be ignored silently.
                self.errors.add_command_line(f"--var {name} names a sweep variable (for: {name}: [...]); the sweep sets it, not --var")
                continue
            if name in declared or name in referenced or not isinstance(name, str):
                continue
            match = did_you_mean(name, known)
            if match:
                hint = f" (did you mean '{match}'?)"
            elif known:
                hint = f"; it declares or uses: {', '.join(known[:20])}"
            else:
                hint = "; it uses no variables"
            self.errors.add_command_line(f"--var {name} is not used by the batch{hint}")

    def loop_lines(self, steps: Any) -> Dict[str, int]:
        """Every sweep variable of the file and the line of the ``for:`` that defines it."""
        lines: Dict[str, int] = {}
        pending = [steps]
        while pending:
            items = pending.pop()
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get(SWEEP), dict):
                    line = _key_mark(item, SWEEP)[0]
                    for name in item[SWEEP]:
                        if isinstance(name, str):
                            lines.setdefault(name, line)
                    pending.append(item.get("steps"))
        return lines

    def sweep_names(self, steps: Any) -> Set[str]:
        names: Set[str] = set()
        pending = [steps]
        while pending:
            items = pending.pop()
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get(SWEEP), dict):
                    names.update(k for k in item[SWEEP] if isinstance(k, str))
                    pending.append(item.get("steps"))
        return names

    # -- steps --------------------------------------------------------------------------

    def expand(self, steps: Any, mark: Mark, sweep: Dict[str, Any], key: str = "steps") -> None:
        if not isinstance(steps, list):
            self.error(f"'{key}' must be a list of steps, not {type_name(steps)}{colon_hint(steps)}", mark)
            return
        if not steps:
            self.error(f"'{key}' is empty", mark)
            return
        marks = getattr(steps, "item_marks", None) or [mark] * len(steps)
        for item, item_mark in zip(steps, marks):
            if self.overflow:
                return
            self.step(item, item_mark, sweep)

    def step(self, raw: Any, mark: Mark, sweep: Dict[str, Any]) -> None:
        self.work += 1
        if self.count >= MAX_STEPS or self.work > _MAX_WORK:
            self.error(f"the batch expands to more than {MAX_STEPS} steps", mark)
            self.overflow = True
            return
        if not isinstance(raw, dict) or not raw:
            expected = f"a mapping with one of {', '.join(STEP_KINDS)}"
            self.error(f"a step must be {expected}, not {type_name(raw)}{colon_hint(raw)}", mark)
            return
        kinds = [k for k in raw if k in STEP_KINDS]
        if not kinds:
            first = next(iter(raw))
            hint = colon_hint(first)
            if not hint:
                match = did_you_mean(first, STEP_KINDS)
                hint = f" (did you mean '{match}'?)" if match else f"; expected one of {', '.join(STEP_KINDS)}"
            self.error(f"unknown step kind '{first}'{hint}", _key_mark(raw, first))
            return
        if len(kinds) > 1:
            self.error(f"a step has one kind, this one has {' and '.join(kinds)}", _key_mark(raw, kinds[1]))
            return
        if kinds[0] == SWEEP:
            self.sweep(raw, sweep)
            return
        self.count += 1
        self.build(KINDS[kinds[0]], raw, mark, sweep, self.count)

    def build(self, kind: StepKind, raw: LMap, mark: Mark, sweep: Dict[str, Any], index: int) -> None:
        ctx = self.ctx
        scope = _Scope(sweep, self.variables)
        scope["step"] = index
        ctx.env = scope
        failed = False
        given: Dict[str, Any] = {}
        extra: Dict[str, Any] = {}
        body: Dict[str, Any] = {}
        value_marks = raw.value_marks
        # Keys of the body written beside it, not under it (indented like the step's own keys).
        fields = getattr(kind.body, "fields", {})
        misplaced = [k for k in raw if k != kind.name and k in fields and k not in COMMON_FIELDS and k not in kind.extra]
        if misplaced and raw.get(kind.name) is None:
            listed = ", ".join(misplaced)
            self.error(
                f"{kind.name}: has no value, and {listed} on the lines below it {'are its fields' if len(misplaced) > 1 else 'is its field'}: "
                f"indent {'them' if len(misplaced) > 1 else 'it'} under {kind.name}:",
                raw.key_marks[kind.name],
            )
            return
        for key, item in raw.items():
            if key in misplaced:
                failed = True
                self.error(f"'{key}' is a field of {kind.name}: indent it under {kind.name}: (it is written beside it)", raw.key_marks[key])
                continue
            if key == kind.name and misplaced and isinstance(item, LMap):
                # Checked as if they were where they belong: their one mistake is said once.
                item = _with(item, raw, misplaced)
            if key == kind.name:
                try:
                    defaults = self.body_defaults.get(key)
                    if defaults:  # only Object bodies have fields that defaults: can set
                        body = kind.body.check(key, item, value_marks[key], ctx, defaults)
                    else:
                        body = kind.body.check(key, item, value_marks[key], ctx)
                except Invalid as exc:
                    failed = True
                    ctx.report(exc)
                continue
            fld = COMMON_FIELDS.get(key) or kind.extra.get(key)
            if fld is None:
                failed = True
                self.error(unknown_key(key, kind.step_keys, f"a {kind.name} step"), raw.key_marks[key])
                continue
            try:
                (given if key in COMMON_FIELDS else extra)[key] = fld.check(key, item, value_marks[key], ctx)
            except Invalid as exc:
                failed = True
                ctx.report(exc)
        if kind.cls is RunStep and not self.allow_commands:
            self.error(COMMANDS_REFUSED, raw.key_marks[kind.name])
            failed = True
        if failed:
            return
        for key, fld in kind.extra.items():
            if key not in extra:
                given_default = self.extra_defaults.get(kind.name, {})
                extra[key] = given_default[key] if key in given_default else (fld.default if fld.has_default else None)
        options = dict(self.defaults)
        for key in ("timeout", "retries", "on_error"):
            if key in given:
                options[key] = given[key]
        if kind.name == "wait" and body.get("seconds") is not None:
            # A timeout given for a wait is a hard limit: a longer wait is a mistake, said now.
            limit = body["timeout"] if "timeout" in body else given.get("timeout")
            try:
                if limit is not None:
                    wait_timeout(body["seconds"], limit, given=True)
            except ValueError as exc:
                where = _value_mark(raw[kind.name], "timeout") if "timeout" in body else value_marks["timeout"]
                self.error(str(exc), where)
                return
        settle = extra.get("settle")
        if settle and settle >= options["timeout"]:
            # The settle comes after the configuration change and its deployment, within the
            # step's hard time limit: a settle as long as the timeout can only fail, and only
            # after the DAQ's configuration was changed. Said now, before anything is sent.
            source = "its timeout" if "timeout" in given else "the timeout from defaults" if "timeout" in self.defaults_given else "the default timeout"
            self.error(
                f"a settle of {settle:g} s does not fit in {source} of {options['timeout']:g} s "
                "(the configuration change and its deployment come first); raise the timeout or shorten the settle",
                value_marks["settle"],
            )
            return
        if kind.cls is RunStep and "timeout" in body and "timeout" in given:
            self.error("give the timeout once: in run: (the program's) or on the step, not both", value_marks["timeout"])
            return
        if extra.get("guard") and not self.guard_fits(body, extra, given, options, raw, value_marks):
            return
        if self.in_cleanup and kind.cls is WriteStep and not body["wait"]:
            # Nothing follows a cleanup step: its acquisition would outlive the run.
            self.error("a write in finally: must wait for its end (wait: false has no place in a cleanup)", _value_mark(raw, kind.name))
            return
        default_name, params, attrs = kind.build(body, extra, options)
        options.update(attrs)
        step = kind.cls(
            index=index,
            kind=kind.name,
            name=given.get("name", default_name),
            params=params,
            tags=given.get("tags", ()),
            line=_key_mark(raw, kind.name)[0],
            column=_key_mark(raw, kind.name)[1],
            sweep=dict(sweep),
            identity=self.identity(kind.name, params, given.get("name")),
            **options,
        )
        if kind.cls is WriteStep:
            self.claim_output(step, _value_mark(raw[kind.name], "output_file"))  # type: ignore[arg-type]
        self.steps.append(step)

    def guard_fits(self, body: Dict[str, Any], extra: Dict[str, Any], given: Dict[str, Any], options: Dict[str, Any], raw: LMap, value_marks: Any) -> bool:
        """A write's guard can hold: it is watched (not a ``wait: false`` write), and its
        ``for_s`` fits in its wait and in the step's timeout. Said now, before anything is sent."""
        guard = extra["guard"]
        own = "guard" in raw
        where = value_marks["guard"] if own else _value_mark(raw, "write")
        source = "its guard" if own else "the guard from defaults"
        if not body.get("wait", True):
            self.error(
                f"{source} cannot watch a write with wait: false (it runs in the background); "
                + ("remove the guard or let the write wait" if own else "give this write guard: off, or let it wait"),
                where,
            )
            return False
        for_s, max_wait = guard["for_s"], guard.get("max_wait_s")
        if max_wait is not None and for_s > max_wait:
            self.error(f"{source}: for_s of {for_s:g} s does not fit in its max_wait_s of {max_wait:g} s", where)
            return False
        if for_s >= options["timeout"]:
            self.error(
                f"{source}: for_s of {for_s:g} s does not fit in the step's timeout of {options['timeout']:g} s "
                "(the detector's rate must hold that long before the write starts); raise the timeout or shorten for_s",
                where,
            )
            return False
        return True

    def identity(self, kind: str, params: Dict[str, Any], name: Optional[str]) -> str:
        try:
            text = _CANONICAL_JSON.encode([kind, params, name])
        except (TypeError, ValueError):  # keys of mixed types in a free-form mapping
            text = _CANONICAL_JSON.encode(_canonical([kind, params, name]))
        base = text.encode("utf-8")
        digest = hashlib.sha256(base).digest()
        occurrence = self.identities.get(digest, 0)
        self.identities[digest] = occurrence + 1
        return hashlib.sha256(base + b"#" + str(occurrence).encode()).hexdigest()

    def claim_output(self, step: WriteStep, mark: Mark) -> None:
        """Two steps of one batch never write the same file: the second would destroy the first."""
        # One file under two spellings ("/d//a.h5", "/d/./a.h5") is still one file.
        key = posixpath.normpath(step.output_file)
        first = self.outputs.get(key)
        if first is None:
            self.outputs[key] = (step.index, mark, step.sweep)
            return
        index, first_mark, first_sweep = first

        def who(i: int, where: Mark, values: Dict[str, Any]) -> str:
            swept = f", {', '.join(f'{k}={v}' for k, v in values.items())}" if values else ""
            return f"step {i} ({self.path}:{where[0]}:{where[1]}{swept})"

        self.error(
            f"{who(step.index, mark, step.sweep)} writes {step.output_file!r}, as does "
            f"{who(index, first_mark, first_sweep)}: the second write would destroy the first file; "
            "give each write its own output_file (e.g. with {step} or a sweep variable)",
            mark,
            each=True,
        )

    def sweep(self, raw: LMap, sweep: Dict[str, Any]) -> None:
        for key in raw:
            if key not in (SWEEP, "steps", "name"):
                self.error(unknown_key(key, (SWEEP, "steps", "name"), "a for step"), _key_mark(raw, key))
        if "name" in raw:
            try:
                BATCH_NAME.check("name", raw["name"], _value_mark(raw, "name"), self.ctx)
            except Invalid as exc:
                self.ctx.report(exc)
        spec = raw[SWEEP]
        spec_mark = _value_mark(raw, SWEEP)
        if "steps" not in raw:
            self.error("a for step needs 'steps'", _key_mark(raw, SWEEP))
            return
        names: List[str] = []
        value_lists: List[List[Any]] = []
        usable = True
        if not isinstance(spec, dict) or not spec:
            self.error(f"'for' needs at least one variable: for: {{name: [values]}}{colon_hint(spec)}", spec_mark)
            usable = False
            spec = {}
        self.ctx.env = _Scope(sweep, self.variables)
        for name, values in spec.items():
            if not self.variable_name(name, _key_mark(spec, name), "sweep variable"):
                usable = False
                continue
            values_mark = _value_mark(spec, name)
            names.append(name)
            try:
                values = self.ctx.render_tree(spec[name], values_mark)
            except Invalid as exc:
                self.ctx.report(exc)
                usable = False
                continue
            if not isinstance(values, list) or not values:
                self.error(f"sweep variable '{name}' needs a non-empty list of values{placeholder_hint(spec[name])}", values_mark)
                usable = False
            elif any(isinstance(v, (dict, list)) or v is None for v in values):
                self.error(f"sweep values of '{name}' must be scalars (text, numbers, true/false)", values_mark)
                usable = False
            else:
                value_lists.append(values)
        if not usable:
            # Check the steps once anyway, for their own mistakes, with the sweep unusable.
            self.expand(raw["steps"], _value_mark(raw, "steps"), {**sweep, **{n: templating.UNUSABLE for n in names}})
            return
        total = math.prod(len(v) for v in value_lists)
        if total + self.count > MAX_STEPS:
            self.error(f"this sweep has {total} combinations; the batch would exceed {MAX_STEPS} steps", _key_mark(raw, SWEEP))
            self.overflow = True
            return
        steps, steps_mark = raw["steps"], _value_mark(raw, "steps")
        for combination in itertools.product(*value_lists):
            if self.overflow:
                return
            self.work += 1
            self.errors.sweep_pass += 1
            self.expand(steps, steps_mark, {**sweep, **dict(zip(names, combination))})

    def notify_block(self, doc: Any) -> Optional[Dict[str, Any]]:
        """The ``notify:`` block, checked as the command line will use it (the SMTP password
        is looked up only then); a mistake points at its line and column."""
        if "notify" not in doc:
            return None
        from .exceptions import NotifySettingsError
        from .notify import NotifySettings

        raw = doc["notify"]
        block = plain(raw)
        try:
            NotifySettings.from_mapping(block, source=self.path)
        except NotifySettingsError as exc:
            self.error(f"notify: {exc.reason}", _mark_at(raw, exc.key, _value_mark(doc, "notify")))
            return None
        return block

    # -- the whole file ----------------------------------------------------------------------

    def load(
        self,
        doc: Any,
        text_sha256: str,
        given: Mapping[str, Any],
        optional: Mapping[str, Any],
        now: _dt.datetime,
        run: str,
    ) -> Batch:
        path = self.path
        if not isinstance(doc, dict):
            raise BatchValidationError(
                f"a batch file must be a mapping (version: 1, steps: ...), not {type_name(doc)}{colon_hint(doc)}",
                path,
                *getattr(doc, "mark", (1, 1)),
            )
        for key in doc:
            if key not in TOP_KEYS:
                self.error(unknown_key(key, TOP_KEYS, "the batch"), _key_mark(doc, key))
        if "version" not in doc:
            self.error("missing 'version: 1'", doc.mark)
        elif doc["version"] != 1 or isinstance(doc["version"], bool):
            self.error(f"unsupported version {short(doc['version'])}; this daq-run reads version 1", _value_mark(doc, "version"))

        literal = _Renderer(self.errors, self.budget, literal=True)
        name = os.path.splitext(os.path.basename(path))[0]
        if "name" in doc:
            try:
                name = BATCH_NAME.check("name", doc["name"], _value_mark(doc, "name"), literal)
            except Invalid as exc:
                literal.report(exc)
        daq: Dict[str, Any] = {}
        try:
            daq = DAQ.check("daq", doc.get("daq"), _value_mark(doc, "daq"), literal)
        except Invalid as exc:
            literal.report(exc)

        if not _RUN.match(run):
            self.errors.add_command_line(f"run {short(run)} must be 1 to 64 letters, digits, '_' or '-'")
        self.variables.update(
            date=now.strftime("%Y-%m-%d"),
            time=now.strftime("%H%M%S"),
            datetime=now.strftime("%Y%m%d_%H%M%S"),
            batch=name,
            run=run,
        )
        callers = {**optional, **given}
        self.given_vars(callers)
        self.batch_vars(doc.get("vars"), _value_mark(doc, "vars"), callers)

        self.ctx.env = self.variables
        try:
            values = DEFAULTS.check("defaults", doc.get("defaults"), _value_mark(doc, "defaults"), self.ctx)
            self.defaults = {k: values[k] for k in ("timeout", "retries", "on_error")}
            given_defaults = doc.get("defaults")
            self.defaults_given = tuple(str(k) for k in given_defaults) if isinstance(given_defaults, dict) else ()
            # timeout, retries, on_error are step options; the others (overwrite) are
            # defaults for the body fields of that name (wait's own timeout is not one).
            for kind in KINDS.values():
                fields = getattr(kind.body, "fields", {})
                self.body_defaults[kind.name] = {
                    k: v for k, v in values.items() if k in fields and k not in COMMON_FIELDS
                }
                # Step-level keys (a write's guard and verify) only when defaults: names them.
                self.extra_defaults[kind.name] = {
                    k: values[k] for k in self.defaults_given if k in kind.extra and k in values
                }
        except Invalid as exc:
            self.ctx.report(exc)

        if "steps" not in doc:
            self.error("missing 'steps'", doc.mark)
        else:
            self.ctx.loops = self.loop_lines(doc["steps"])
            self.expand(doc["steps"], _value_mark(doc, "steps"), {})
        n_steps = len(self.steps)
        if FINALLY in doc:
            # Indices go on after the plan's: every step of a run, its cleanup's too, has its own.
            self.in_cleanup = True
            self.expand(doc[FINALLY], _value_mark(doc, FINALLY), {}, FINALLY)
            self.in_cleanup = False
        restore = False
        if "restore_config" in doc:
            try:
                restore = RESTORE_CONFIG.check("restore_config", doc["restore_config"], _value_mark(doc, "restore_config"), literal)
            except Invalid as exc:
                literal.report(exc)
        notify = self.notify_block(doc)
        self.unused_vars(doc, given)
        if self.errors:
            raise self.errors.exception()
        return Batch(
            name=name,
            path=path,
            sha256=text_sha256,
            steps=tuple(self.steps[:n_steps]),
            daq=dict(daq),
            vars={k: v for k, v in self.variables.items() if k not in BUILTINS},
            run=run,
            now=(now if now.tzinfo else now.astimezone()).isoformat(),  # local time, with its offset
            cleanup=tuple(self.steps[n_steps:]),
            restore_config=restore,
            notify=notify,
        )


def load_batch_text(
    text: str,
    path: str = "<string>",
    vars: Optional[Mapping[str, Any]] = None,
    now: Optional[_dt.datetime] = None,
    sha256: Optional[str] = None,
    *,
    run: Optional[str] = None,
    optional_vars: Optional[Mapping[str, Any]] = None,
    allow_commands: bool = False,
) -> Batch:
    """Validate and expand a batch given as text (see :func:`load_batch`)."""
    now = now or _dt.datetime.now()
    with _collector_paused():
        doc = load_yaml(text, path)
        return _Loader(path, allow_commands).load(
            doc,
            sha256 or hashlib.sha256(text.encode("utf-8")).hexdigest(),
            dict(vars or {}),
            dict(optional_vars or {}),
            now,
            run if run is not None else new_run(now),
        )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch loads.

    Loading makes up to a few hundred thousand small objects (nodes, marks, steps) that
    all live until the end and form no cycles; the collector would scan them again and
    again, which took more than half the time of a large file. The limits above bound
    what is allocated meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_batch(
    path: "os.PathLike[str] | str",
    vars: Optional[Mapping[str, Any]] = None,
    now: Optional[_dt.datetime] = None,
    *,
    run: Optional[str] = None,
    optional_vars: Optional[Mapping[str, Any]] = None,
    allow_commands: bool = False,
) -> Batch:
    """Read, validate and expand a batch file.

    Args:
        path: the YAML batch file (at most 1 MiB, UTF-8).
        vars: values for template variables (``--var``); they replace the file's
            ``vars`` of the same name. One the batch neither declares under ``vars:``
            nor uses in a template is an error (a typo, most likely).
        now: the moment ``{date}``, ``{time}`` and ``{datetime}`` show, in local time
            (default: now, i.e. when the batch is loaded, which is the run's start).
        run: the value of ``{run}``: 1 to 64 letters, digits, ``_``, ``-`` (default:
            :func:`new_run`, the UTC time and a random suffix). Pass the same value
            again (with ``now``) to get the same file names, e.g. when resuming.
        optional_vars: like ``vars`` (they replace the file's ``vars`` of the same
            name) but ``vars`` win over them, and one the batch does not use is no
            error, e.g. a test fixture's default ``root``.
        allow_commands: ``run:`` steps (programs run on this machine) are allowed; without
            it each one is an error (:data:`COMMANDS_REFUSED`): a batch file is data
            unless the run says it may be code.

    Returns:
        the :class:`Batch`.

    Raises:
        BatchValidationError: everything wrong at once: ``errors`` lists each problem
            (``file:line:column: reason``, ``<command line>: ...`` for ``vars``), at
            most :data:`MAX_ERRORS`, and ``more`` counts the others; ``str()`` is
            the first.
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
    return load_batch_text(
        text, path, vars, now, hashlib.sha256(data).hexdigest(), run=run, optional_vars=optional_vars, allow_commands=allow_commands
    )
