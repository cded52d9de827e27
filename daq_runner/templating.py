"""``{name}`` placeholders in batch files: substitution only, nothing evaluated.

``"{root}/scan_{n}.h5"`` is rendered with the values of ``root`` and ``n``; a string that
is exactly one placeholder (``"{bit_depth}"``) takes the value itself, keeping its type.
``{{`` and ``}}`` are literal braces. Attribute or index access, format specs and
expressions are refused, so a batch file can never run code or read objects.

Rendering is bounded while it happens: a rendered string may not exceed ``limit``
characters (:data:`MAX_RENDERED_CHARS`, 4096) and every rendered string is charged to
an optional :class:`Budget` shared by a whole batch. A string is never built past its
limit, so self-repeating variables (``b: "{a}{a}{a}{a}"``, ``c: "{b}{b}{b}{b}"``, ...)
are refused after a few kilobytes instead of taking gigabytes.
"""

from __future__ import annotations

import functools
import re
from typing import Any, List, Mapping, Optional, Set, Tuple

__all__ = [
    "TemplateError",
    "UnknownVariable",
    "UnusableVariable",
    "TooLong",
    "Budget",
    "UNUSABLE",
    "MAX_RENDERED_CHARS",
    "render",
    "placeholders",
    "lone_placeholder",
    "short",
]

MAX_RENDERED_CHARS = 4096  # characters of one rendered string

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LONE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")


class TemplateError(ValueError):
    """A template is malformed, names an unknown variable or renders too much."""


class UnknownVariable(TemplateError):
    """A placeholder names a variable that has no value. ``name`` is the variable."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class UnusableVariable(TemplateError):
    """A placeholder names a variable whose own value was refused (already reported)."""


class TooLong(TemplateError):
    """A rendered string exceeds its limit, or the batch's rendering budget is spent."""


class _Unusable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNUSABLE"


UNUSABLE: Any = _Unusable()
"""The value of a variable that could not be rendered; using it raises UnusableVariable."""


class Budget:
    """Characters that rendering may still produce, shared by everything one batch renders.

    Args:
        total: characters for the whole batch.
    """

    __slots__ = ("total", "remaining")

    def __init__(self, total: int) -> None:
        self.total = total
        self.remaining = total

    def spend(self, n: int) -> None:
        """Charge ``n`` characters; TooLong when the budget is spent."""
        self.remaining -= n
        if self.remaining < 0:
            raise TooLong(f"the batch renders more than {self.total} characters in total")


def short(text: str) -> str:
    """``text`` quoted for a message, shortened to about 60 characters."""
    return _short(text)


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:56] + "...'"


def _check_name(inner: str, text: str) -> str:
    if _NAME.match(inner):
        return inner
    if inner == "":
        raise TemplateError(f"empty placeholder '{{}}' in {_short(text)}")
    raise TemplateError(
        f"placeholder '{{{inner[:40]}}}' in {_short(text)} is not a plain variable name "
        "(no attribute or index access, format specs or expressions)"
    )


def _unbalanced(text: str) -> TemplateError:
    return TemplateError(f"unbalanced brace in {_short(text)} (write '{{{{' or '}}}}' for a literal brace)")


def lone_placeholder(text: Any) -> Optional[str]:
    """The variable name if ``text`` is exactly one placeholder (``"{n}"``), else None."""
    if isinstance(text, str) and text.startswith("{"):
        match = _LONE.match(text)
        if match:
            return match.group(1)
    return None


def placeholders(text: str) -> Set[str]:
    """The variable names a template uses; TemplateError if it is malformed."""
    names = set()
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise _unbalanced(text)
        names.add(_check_name(match.group(1), text))
    return names


def _lookup(name: str, text: str, variables: Mapping[str, Any]) -> Any:
    try:
        value = variables[name]
    except KeyError:
        raise UnknownVariable(f"unknown variable '{name}' in {_short(text)}", name) from None
    if value is UNUSABLE:
        raise UnusableVariable(f"variable '{name}' has no usable value")
    return value


def _parse(text: str) -> Tuple[Any, ...]:
    """A template as literal strings and 1-tuples ``(name,)``."""
    parts: List[Any] = []
    literal: List[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token == "{{":
            literal.append("{")
        elif token == "}}":
            literal.append("}")
        elif match.group(1) is None:
            raise _unbalanced(text)
        else:
            parts.append("".join(literal))
            literal = []
            parts.append((_check_name(match.group(1), text),))
    literal.append(text[position:])
    parts.append("".join(literal))
    return tuple(part for part in parts if part != "")


# A sweep renders the same few templates many times: remember how short ones parse.
_parse_short = functools.lru_cache(maxsize=1024)(_parse)
_SHORT = 512


def render(
    text: str, variables: Mapping[str, Any], *, limit: int = MAX_RENDERED_CHARS, budget: Optional[Budget] = None
) -> Any:
    """Substitute the placeholders of ``text``; a lone placeholder keeps the value's type.

    Args:
        text: the template.
        variables: name -> value (scalars are rendered with ``str()``).
        limit: most characters the rendered string may have.
        budget: charged with the length of every string built here (lone placeholders
            and strings without placeholders build nothing and cost nothing).

    Raises:
        UnknownVariable: a placeholder names no variable.
        UnusableVariable: a placeholder names a variable marked :data:`UNUSABLE`.
        TooLong: the result would exceed ``limit``, or the budget is spent; detected
            before the string is built.
        TemplateError: malformed placeholders, or a list or mapping inside a string.
    """
    if "{" not in text and "}" not in text:
        return text
    name = lone_placeholder(text)
    if name is not None:
        return _lookup(name, text, variables)
    pieces: List[str] = []
    length = 0
    for part in _parse_short(text) if len(text) <= _SHORT else _parse(text):
        if part.__class__ is str:
            piece = part
        else:
            name = part[0]
            value = _lookup(name, text, variables)
            if isinstance(value, str):
                piece = value
            elif isinstance(value, (dict, list, tuple)):
                raise TemplateError(f"variable '{name}' is a {type(value).__name__} and cannot be part of a string")
            else:
                try:
                    piece = str(value)
                except ValueError:  # an integer too long to print (Python limits it)
                    raise TooLong(f"variable '{name}' is too long to render") from None
        length += len(piece)
        if length > limit:
            raise TooLong(f"{_short(text)} renders to more than {limit} characters")
        pieces.append(piece)
    if budget is not None:
        budget.spend(length)
    return "".join(pieces)
