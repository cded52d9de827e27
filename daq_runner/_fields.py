"""Field declarations: one object gives a value's validation and its JSON Schema.

A :class:`Field` checks one value of a batch file (after its templates are rendered)
and describes the same rule as JSON Schema (draft 2020-12) for editors, from the same
attributes (type, bounds, choices, default, description), so that the loader and
``daq-run --schema`` cannot drift apart. :class:`Object` combines fields into a mapping
with required keys, a minimum number of keys and "exactly one of" rules.

Values reach a field through a :class:`Context`, which renders templates and reports
problems. A value that is exactly one placeholder (``"{n}"``) and whose variable holds
text (``--var n=100``) is converted for typed fields: a decimal integer for integer
fields (``0123`` is 123, ``1e3`` is not an integer), a decimal number for number
fields, ``true``/``false`` for boolean fields. Anything else is an error naming the
field, the variable and the value.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from ._yaml import LMap, Mark, colon_hint

__all__ = [
    "Invalid",
    "Context",
    "Field",
    "Integer",
    "Number",
    "Boolean",
    "Choice",
    "Text",
    "OutputPath",
    "FreeObject",
    "TextList",
    "Argv",
    "Environment",
    "Empty",
    "Object",
    "OrOff",
    "LONE_PLACEHOLDER_SCHEMA",
    "HAS_PLACEHOLDER_SCHEMA",
    "type_name",
    "short",
    "plain",
    "did_you_mean",
    "unknown_key",
    "placeholder_hint",
]

_MISSING: Any = object()
_DECIMAL_INTEGER = re.compile(r"[-+]?[0-9]+\Z")
_DECIMAL_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_BOOLEAN_TEXT = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"

LONE_PLACEHOLDER_SCHEMA: Dict[str, Any] = {
    "type": "string",
    "pattern": rf"^\{{{_IDENTIFIER}\}}$",
    "description": "a lone {placeholder}: the variable's value, converted to this field's type",
}
HAS_PLACEHOLDER_SCHEMA: Dict[str, Any] = {
    "type": "string",
    "pattern": rf"\{{{_IDENTIFIER}\}}",
    "description": "text with {placeholders}, checked once rendered",
}


class Invalid(Exception):
    """One problem with one value. ``reason`` None: the problem was reported already."""

    def __init__(self, reason: Optional[str], mark: Optional[Mark] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mark = mark


class Context:
    """How fields reach their values: rendering and error reporting.

    This base renders nothing (values are taken as written); the batch loader's
    context renders templates with the batch's variables and a budget.
    """

    def render(self, raw: Any, mark: Mark) -> Tuple[Any, Optional[str]]:
        """The value of ``raw`` and, if it was a lone placeholder, the variable's name."""
        return raw, None

    def render_tree(self, raw: Any, mark: Mark) -> Any:
        """``raw`` with every string in it rendered (lists and mappings walked)."""
        return raw

    def report(self, error: Invalid) -> None:
        """Record a problem and carry on (the caller goes on with the next value)."""
        raise error


def type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return type(value).__name__


def short(value: Any) -> str:
    """A value for a message: its repr, cut to 60 characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print (Python limits it)
        return "<a number too long to show>"
    return text if len(text) <= 60 else text[:57] + "..."


def plain(value: Any) -> Any:
    """Located containers back to plain dicts and lists (for params and the report)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def did_you_mean(word: Any, candidates: Iterable[Any]) -> Optional[str]:
    hint = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1)
    return hint[0] if hint else None


def placeholder_hint(raw: Any) -> str:
    """'; YAML read {n} as a mapping: quote it: "{n}"' when ``raw`` is an unquoted {n}, else ''."""
    if isinstance(raw, LMap) and raw.placeholder:
        return f"; YAML read {{{raw.placeholder}}} as a mapping: quote it: \"{{{raw.placeholder}}}\""
    return ""


def _not_a(expected: str, value: Any, raw: Any) -> str:
    """'must be <expected>, not <value>', with a hint when YAML read an unquoted {name}."""
    hint = placeholder_hint(raw)
    if hint:
        return f"must be {expected}{hint}"
    if isinstance(value, (dict, list)) or value is None:
        return f"must be {expected}, not {type_name(value)}"
    return f"must be {expected}, not {type_name(value)} {short(value)}"


def _from_variable(what: str, expected: str, form: str, var: str, value: str, mark: Mark) -> Invalid:
    return Invalid(f"{what} must be {expected}: variable '{var}' is {short(value)}, which is not {form}", mark)


class Field:
    """One value's rule. Subclasses implement ``convert`` (validation) and ``schema``.

    Args:
        doc: description for editors (goes into the JSON Schema).
        default: the value when the key is absent (shown in the schema), if any.
        unit: the unit of a number (``s``, ``images/s``), for the batch reference in the docs.
    """

    templated = True  # a lone placeholder is allowed in place of the value (schema)

    def __init__(self, doc: str = "", default: Any = _MISSING, unit: str = "") -> None:
        self.doc = doc
        self.default = default
        self.unit = unit

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    def check(self, what: str, raw: Any, mark: Mark, ctx: Context) -> Any:
        """The valid value of ``raw`` (rendered, converted); Invalid if it is not."""
        value, var = ctx.render(raw, mark)
        return self.convert(what, value, var, raw, mark)

    def convert(self, what: str, value: Any, var: Optional[str], raw: Any, mark: Mark) -> Any:
        raise NotImplementedError

    def schema(self) -> Dict[str, Any]:
        """JSON Schema of this field (with description and default)."""
        schema = self.value_schema()
        if self.templated:
            schema = {"anyOf": [schema, LONE_PLACEHOLDER_SCHEMA]}
        if self.doc:
            schema["description"] = self.doc
        if self.has_default:
            schema["default"] = self.default
        return schema

    def value_schema(self) -> Dict[str, Any]:
        raise NotImplementedError


class Integer(Field):
    """An integer in ``[low, high]``, or one of ``choices``.

    An integral float (``16.0``) counts as an integer, as in JSON Schema.
    """

    def __init__(
        self,
        low: int,
        high: int,
        *,
        choices: Optional[Sequence[int]] = None,
        doc: str = "",
        default: Any = _MISSING,
        unit: str = "",
    ) -> None:
        super().__init__(doc, default, unit)
        self.low, self.high, self.choices = low, high, tuple(choices) if choices else None

    def convert(self, what: str, value: Any, var: Optional[str], raw: Any, mark: Mark) -> int:
        if var is not None and isinstance(value, str):
            if not _DECIMAL_INTEGER.match(value) or len(value) > 30:
                raise _from_variable(what, "an integer", "a decimal integer", var, value, mark)
            value = int(value, 10)
        elif isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
            value = int(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{what} {_not_a('an integer', value, raw)}", mark)
        if self.choices is not None:
            if value not in self.choices:
                raise Invalid(f"{what} must be one of {', '.join(map(str, self.choices))}, not {short(value)}", mark)
        elif not self.low <= value <= self.high:
            raise Invalid(f"{what} must be between {self.low} and {self.high}, not {short(value)}", mark)
        return value

    def value_schema(self) -> Dict[str, Any]:
        if self.choices is not None:
            return {"enum": list(self.choices)}
        return {"type": "integer", "minimum": self.low, "maximum": self.high}


class Number(Field):
    """A finite number in ``[low, high]`` (``(low, high]`` with ``exclusive_low``); a float."""

    def __init__(
        self,
        low: float,
        high: float,
        *,
        exclusive_low: bool = False,
        doc: str = "",
        default: Any = _MISSING,
        unit: str = "",
    ) -> None:
        super().__init__(doc, default, unit)
        self.low, self.high, self.exclusive_low = low, high, exclusive_low

    def convert(self, what: str, value: Any, var: Optional[str], raw: Any, mark: Mark) -> float:
        if var is not None and isinstance(value, str):
            if not _DECIMAL_NUMBER.match(value) or len(value) > 60:
                raise _from_variable(what, "a number", "a decimal number", var, value, mark)
            value = float(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"{what} {_not_a('a number', value, raw)}", mark)
        if not math.isfinite(value) or value < self.low or (self.exclusive_low and value == self.low) or value > self.high:
            bound = f"> {self.low:g}" if self.exclusive_low else f">= {self.low:g}"
            raise Invalid(f"{what} must be {bound} and <= {self.high:g}, not {short(value)}", mark)
        return float(value)

    def value_schema(self) -> Dict[str, Any]:
        bound = "exclusiveMinimum" if self.exclusive_low else "minimum"
        return {"type": "number", bound: self.low, "maximum": self.high}


class Boolean(Field):
    """``true`` or ``false``."""

    def convert(self, what: str, value: Any, var: Optional[str], raw: Any, mark: Mark) -> bool:
        if var is not None and isinstance(value, str):
            if value not in _BOOLEAN_TEXT:
                raise _from_variable(what, "true or false", "true or false", var, value, mark)
            return _BOOLEAN_TEXT[value]
        if not isinstance(value, bool):
            raise Invalid(f"{what} {_not_a('true or false', value, raw)}", mark)
        return value

    def value_schema(self) -> Dict[str, Any]:
        return {"type": "boolean"}


class Choice(Field):
    """One of a fixed set of words (states, modes, detector types)."""

    def __init__(self, choices: Sequence[str], *, doc: str = "", default: Any = _MISSING) -> None:
        super().__init__(doc, default)
        self.choices = tuple(choices)

    def convert(self, what: str, value: Any, var: Optional[str], raw: Any, mark: Mark) -> str:
        if value not in self.choices or not isinstance(value, str):
            if isinstance(raw, LMap) and raw.placeholder:
                raise Invalid(f"{what} {_not_a('one of ' + ', '.join(self.choices), value, raw)}", mark)
            raise Invalid(f"{what} must be one of {', '.join(self.choices)}, not {short(value)}", mark)
        return value

    def schema(self) -> Dict[str, Any]:
        schema: Dict[str, Any] = {"anyOf": [{"enum": list(self.choices)}, HAS_PLACEHOLDER_SCHEMA]}
        if self.doc:
            schema["description"] = self.doc
        if self.has_default:
            schema["default"] = self.default
        return schema


class Text(Field):
    """A string (with ``numbers``: a number too, taken as its text)."""

    templated = False  # any string may hold placeholders

    def __init__(self, *, numbers: bool = False, min_length: int = 0, doc: str = "", default: Any = _MISSING) -> None:
        super().__init__(doc, default)
        self.numbers, self.min_length = numbers, min_length

    def convert(self, what: str, value: Any, var: Optional[str], raw: Any, mark: Mark) -> str:
        if self.numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise Invalid(f"{what} {_not_a('a string', value, raw)}", mark)
        if len(value) < self.min_length:
            raise Invalid(f"{what} must not be empty", mark)
        return value

    def value_schema(self) -> Dict[str, Any]:
        schema: Dict[str, Any] = {"type": ["string", "number"] if self.numbers else "string"}
        if self.min_length:
            schema["minLength"] = self.min_length
        return schema


class OutputPath(Field):
    """An absolute file path without ``..`` that the DAQ's writer accepts (``pattern``)."""

    templated = False

    def __init__(self, pattern: "re.Pattern[str]", *, doc: str = "") -> None:
        super().__init__(doc)
        self.pattern = pattern

    def convert(self, what: str, value: Any, var: Optional[str], raw: Any, mark: Mark) -> str:
        if not isinstance(value, str):
            raise Invalid(f"{what} {_not_a('a string', value, raw)}", mark)
        if not value.startswith("/"):
            raise Invalid(f"{what} must be an absolute path, not {short(value)}", mark)
        if ".." in value.split("/"):
            raise Invalid(f"{what} must not contain '..' segments: {short(value)}", mark)
        if not self.pattern.match(value):
            raise Invalid(f"{what} {short(value)} is not accepted by the DAQ (letters, digits, _ - / and an extension)", mark)
        return value

    def value_schema(self) -> Dict[str, Any]:
        return {
            "type": "string",
            # Either what the DAQ accepts, or a template the loader checks once rendered.
            "anyOf": [
                {"pattern": self.pattern.pattern},
                {"pattern": rf"^\{{{_IDENTIFIER}\}}"},
                {"pattern": rf"^/.*\{{{_IDENTIFIER}\}}"},
            ],
            "not": {"pattern": r"(^|/)\.\.(/|$)"},
        }


class FreeObject(Field):
    """A mapping passed on as it is (templates in its strings rendered)."""

    templated = False

    def check(self, what: str, raw: Any, mark: Mark, ctx: Context) -> Any:
        if not isinstance(raw, dict):
            raise Invalid(f"{what} {_not_a('a mapping', raw, raw)}", mark)
        return plain(ctx.render_tree(raw, mark))

    def value_schema(self) -> Dict[str, Any]:
        return {"type": "object"}


class TextList(Field):
    """A list of strings (numbers are taken as their text)."""

    templated = False

    def check(self, what: str, raw: Any, mark: Mark, ctx: Context) -> Tuple[str, ...]:
        if not isinstance(raw, list):
            raise Invalid(f"{what} {_not_a('a list of strings', raw, raw)}", mark)
        values = ctx.render_tree(raw, mark)
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise Invalid(f"{what} must be a list of strings, not one with {type_name(item)} {short(item)}", mark)
        return tuple(str(item) for item in values)

    def value_schema(self) -> Dict[str, Any]:
        return {"type": "array", "items": {"type": ["string", "number"]}}


class Argv(Field):
    """A program and its arguments: a non-empty list of text (numbers become their text), each
    without NUL characters, the first (the program) not empty. No shell ever reads it."""

    templated = False

    def check(self, what: str, raw: Any, mark: Mark, ctx: Context) -> Tuple[str, ...]:
        if isinstance(raw, list) and not raw:
            raise Invalid(f"{what} must name the program: [PROGRAM, ARG, ...]", mark)
        if not isinstance(raw, list):
            raise Invalid(f"{what} {_not_a('a list: [PROGRAM, ARG, ...] (no shell reads it)', raw, raw)}", mark)
        values = ctx.render_tree(raw, mark)
        argv = []
        for i, item in enumerate(values):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise Invalid(f"{what}[{i}] must be text or a number, not {type_name(item)} {short(item)}", mark)
            text = str(item)
            if "\0" in text:
                raise Invalid(f"{what}[{i}] must not contain NUL characters", mark)
            argv.append(text)
        if not argv[0]:
            raise Invalid(f"{what}[0], the program, must not be empty", mark)
        return tuple(argv)

    def value_schema(self) -> Dict[str, Any]:
        return {"type": "array", "minItems": 1, "items": {"type": ["string", "number"]}}


_ENV_NAME = re.compile(rf"{_IDENTIFIER}\Z")


class Environment(Field):
    """Environment variables for a program: ``{NAME: value}``, names as in a shell, values text
    or numbers (taken as their text), without NUL characters."""

    templated = False

    def check(self, what: str, raw: Any, mark: Mark, ctx: Context) -> Dict[str, str]:
        if not isinstance(raw, dict):
            raise Invalid(f"{what} {_not_a('a mapping of names to values', raw, raw)}", mark)
        key_marks = getattr(raw, "key_marks", {})
        values = ctx.render_tree(raw, mark)
        env: Dict[str, str] = {}
        for name, value in values.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise Invalid(f"{what}: {short(name)} is not a variable name (letters, digits, _)", key_marks.get(name, mark))
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise Invalid(f"{what}.{name} must be text or a number, not {type_name(value)}", mark)
            if "\0" in str(value):
                raise Invalid(f"{what}.{name} must not contain NUL characters", mark)
            env[name] = str(value)
        return env

    def value_schema(self) -> Dict[str, Any]:
        return {"type": "object", "propertyNames": {"pattern": rf"^{_IDENTIFIER}$"}, "additionalProperties": {"type": ["string", "number"]}}


class Empty(Field):
    """Nothing: ``{}`` or no value (``stop: {}``)."""

    templated = False

    def __init__(self, usage: str, *, doc: str = "") -> None:
        super().__init__(doc)
        self.usage = usage

    def check(self, what: str, raw: Any, mark: Mark, ctx: Context) -> Dict[str, Any]:
        if raw is None or (isinstance(raw, dict) and not raw):
            return {}
        raise Invalid(f"{what} takes no parameters: write '{self.usage}'", mark)

    def value_schema(self) -> Dict[str, Any]:
        return {"type": ["object", "null"], "maxProperties": 0}


class Object(Field):
    """A mapping of declared fields.

    Args:
        fields: key -> Field.
        required: keys that must be present.
        min_fields: at least this many keys (with ``empty_message`` when fewer).
        exactly_one: a group of keys of which exactly one must be present.
        label: how messages name the mapping (default: its key).
    """

    templated = False

    def __init__(
        self,
        fields: Mapping[str, Field],
        *,
        required: Sequence[str] = (),
        min_fields: int = 0,
        empty_message: str = "",
        exactly_one: Sequence[str] = (),
        label: str = "",
        doc: str = "",
    ) -> None:
        super().__init__(doc)
        self.label = label
        self.fields = dict(fields)
        self.required = tuple(required)
        self.min_fields = min_fields
        self.empty_message = empty_message
        self.exactly_one = tuple(exactly_one)

    def check(
        self, what: str, raw: Any, mark: Mark, ctx: Context, defaults: Optional[Mapping[str, Any]] = None
    ) -> Dict[str, Any]:
        """The checked values of the keys present, then of the others ``defaults`` or the
        declarations give a default.

        Every problem is reported to ``ctx``; Invalid(None) at the end if there was one.
        """
        what = self.label or what
        if raw is None:
            raw = LMap()
            raw.mark, raw.key_marks, raw.value_marks = mark, {}, {}
        if not isinstance(raw, dict):
            raise Invalid(f"{what} {_not_a('a mapping', raw, raw)}{colon_hint(raw)}", mark)
        key_marks = getattr(raw, "key_marks", {})
        value_marks = getattr(raw, "value_marks", {})
        failed = False
        values: Dict[str, Any] = {}
        for key, item in raw.items():
            field = self.fields.get(key) if isinstance(key, str) else None
            if field is None:
                failed = True
                ctx.report(Invalid(unknown_key(key, self.fields, what), key_marks.get(key, mark)))
                continue
            try:
                values[key] = field.check(key, item, value_marks.get(key, mark), ctx)
            except Invalid as exc:
                failed = True
                if exc.reason is not None:
                    ctx.report(exc if exc.mark else Invalid(exc.reason, value_marks.get(key, mark)))
        for key in self.required:
            # 'n_images:5' (no space) is reported as an unknown key with a hint instead.
            if key not in raw and not any(isinstance(k, str) and k.startswith(key + ":") for k in raw):
                failed = True
                ctx.report(Invalid(f"{what} needs '{key}'", mark))
        if self.exactly_one and sum(key in raw for key in self.exactly_one) != 1:
            failed = True
            ctx.report(Invalid(f"{what} needs exactly one of {' or '.join(repr(k) for k in self.exactly_one)}", mark))
        if len(raw) < self.min_fields:
            failed = True
            ctx.report(Invalid(self.empty_message or f"{what} needs at least {self.min_fields} key(s)", mark))
        if failed:
            raise Invalid(None)
        defaults = defaults or {}
        for key, field in self.fields.items():  # the keys as written, then the defaults
            if key not in values:
                if key in defaults:
                    values[key] = defaults[key]
                elif field.has_default:
                    values[key] = field.default
        return values

    def properties_schema(self) -> Dict[str, Any]:
        return {key: field.schema() for key, field in self.fields.items()}

    def value_schema(self) -> Dict[str, Any]:
        schema: Dict[str, Any] = {
            "type": "object",
            "properties": self.properties_schema(),
            "additionalProperties": False,
        }
        if self.required:
            schema["required"] = list(self.required)
        if self.min_fields:
            schema["minProperties"] = self.min_fields
        if self.exactly_one:
            schema["oneOf"] = [{"required": [key]} for key in self.exactly_one]
        return schema


class OrOff(Field):
    """A mapping of declared fields (an :class:`Object`), or the word ``off`` (``None``): a
    setting from ``defaults:`` that one step turns off (``guard: off``)."""

    templated = False

    def __init__(self, body: "Object", *, doc: str = "") -> None:
        super().__init__(doc)
        self.body = body

    def check(self, what: str, raw: Any, mark: Mark, ctx: Context) -> Optional[Dict[str, Any]]:
        value, _ = ctx.render(raw, mark) if isinstance(raw, str) else (raw, None)
        if value == "off":
            return None
        if not isinstance(raw, dict):
            raise Invalid(f"{what} {_not_a('a mapping or off', value, raw)}{colon_hint(raw)}", mark)
        return self.body.check(what, raw, mark, ctx)

    def value_schema(self) -> Dict[str, Any]:
        return {"anyOf": [self.body.value_schema(), {"const": "off"}]}


def unknown_key(key: Any, allowed: Iterable[Any], what: str) -> str:
    """The message for a key that is not allowed, with a did-you-mean or the choices."""
    allowed = list(allowed)
    hint = colon_hint(key)
    if hint:
        return f"unknown key '{key}' in {what}{hint}"
    match = did_you_mean(key, allowed)
    extra = f" (did you mean '{match}'?)" if match else f"; expected one of {', '.join(map(str, allowed))}"
    return f"unknown key '{key}' in {what}{extra}"

