"""``{name}`` placeholders in batch files: substitution only, nothing evaluated.

``"{root}/scan_{n}.h5"`` is rendered with the values of ``root`` and ``n``; a string that
is exactly one placeholder (``"{bit_depth}"``) takes the value itself, keeping its type.
``{{`` and ``}}`` are literal braces. Attribute or index access, format specs and
expressions are refused, so a batch file can never run code or read objects.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Set

__all__ = ["TemplateError", "render", "placeholders"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class TemplateError(ValueError):
    """A template is malformed or names an unknown variable."""


def _check_name(inner: str, text: str) -> str:
    if _NAME.match(inner):
        return inner
    if inner == "":
        raise TemplateError(f"empty placeholder '{{}}' in {text!r}")
    raise TemplateError(
        f"placeholder '{{{inner}}}' in {text!r} is not a plain variable name "
        "(no attribute or index access, format specs or expressions)"
    )


def placeholders(text: str) -> Set[str]:
    """The variable names a template uses."""
    names = set()
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise TemplateError(f"unbalanced brace in {text!r} (write '{{{{' or '}}}}' for a literal brace)")
        names.add(_check_name(match.group(1), text))
    return names


def render(text: str, variables: Mapping[str, Any]) -> Any:
    """Substitute the placeholders of ``text``; a lone placeholder keeps the value's type."""
    if "{" not in text and "}" not in text:
        return text
    whole = re.fullmatch(r"\{([^{}]*)\}", text)
    if whole:
        name = _check_name(whole.group(1), text)
        if name not in variables:
            raise TemplateError(f"unknown variable '{name}' in {text!r}")
        return variables[name]

    def substitute(match: "re.Match[str]") -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        if match.group(1) is None:
            raise TemplateError(f"unbalanced brace in {text!r} (write '{{{{' or '}}}}' for a literal brace)")
        name = _check_name(match.group(1), text)
        if name not in variables:
            raise TemplateError(f"unknown variable '{name}' in {text!r}")
        value = variables[name]
        if isinstance(value, (dict, list)):
            raise TemplateError(f"variable '{name}' is a {type(value).__name__} and cannot be part of a string")
        return str(value)

    return _TOKEN.sub(substitute, text)
