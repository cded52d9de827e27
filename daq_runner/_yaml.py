"""Batch files read as YAML 1.2 (core schema), with positions and limits.

PyYAML implements YAML 1.1, whose resolver turns ``NO``/``on``/``yes`` into booleans,
``12:30`` into the sexagesimal integer 750, ``0123`` into the octal 83 and
``2024-01-01`` into a date. A batch file means what was typed, so plain scalars are
resolved here by the YAML 1.2 core schema instead:

- null: ``null``, ``Null``, ``NULL``, ``~`` and the empty value;
- booleans: ``true``, ``True``, ``TRUE``, ``false``, ``False``, ``FALSE`` only;
- integers: ``[-+]?[0-9]+`` (decimal, so ``0123`` is 123), ``0o17`` (octal), ``0x1F`` (hex);
- floats: ``1.5``, ``.5``, ``1e3``, ``-2.5E-3``, ``.inf``, ``.nan`` (the last two are
  refused: a batch file has no use for them);
- everything else, and every quoted scalar, is a string.

Protections: only the core tags (``!!str``, ``!!int``, ``!!float``, ``!!bool``,
``!!null``, ``!!map``, ``!!seq``) are allowed, no merge keys (``<<``), no duplicate keys,
at most :data:`MAX_NODES` nodes after expanding aliases (alias bombs) and
:data:`MAX_DEPTH` levels of nesting. Mappings and sequences come back as :class:`LMap`
and :class:`LList`, which remember the line and column of their keys and values.
Errors are :class:`~daq_runner.exceptions.BatchValidationError` with a hint for the
usual mistakes (a tab in the indentation, a missing space after a colon, an unclosed
quote, an unquoted ``{var}``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .exceptions import BatchValidationError

__all__ = ["LMap", "LList", "Mark", "MAX_NODES", "MAX_DEPTH", "load_yaml", "colon_hint"]

MAX_NODES = 200_000  # YAML nodes after alias expansion (alias bombs)
MAX_DEPTH = 50  # levels of nesting; a batch needs fewer than ten

Mark = Tuple[int, int]  # 1-based (line, column)

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, MAP, SEQ = (_TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq"))
_ALLOWED_TAGS = {STR, INT, FLOAT, BOOL, NULL, MAP, SEQ}

_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_DECIMAL = re.compile(r"[-+]?[0-9]+\Z")
_OCTAL = re.compile(r"0o[0-7]+\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_INFINITY = re.compile(r"[-+]?\.(?:inf|Inf|INF)\Z")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)\Z")
_MAX_DIGITS = 400  # an integer literal longer than this is no sensible batch value
# Characters that can start a YAML 1.2 core int or float; anything else is a string.
_NUMBER_START = frozenset("0123456789+-.")

# libyaml (PyYAML's C extension) parses about five times faster than the pure-Python
# parser; both give the same nodes. Without it, the Python composer below guards depth.
_USE_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))


class LMap(dict):
    """A mapping from YAML that remembers where its keys and values are.

    Attributes:
        mark: (line, column) of the mapping.
        key_marks, value_marks: (line, column) of each key and of its value.
        placeholder: for ``{name}`` written without quotes (YAML reads a one-key flow
            mapping with no value), the name; else None. Used for the hint "quote it".
    """

    mark: Mark = (1, 1)
    key_marks: Dict[Any, Mark]
    value_marks: Dict[Any, Mark]
    placeholder: Optional[str] = None


class LList(list):
    """A sequence from YAML that remembers where its items are."""

    mark: Mark = (1, 1)
    item_marks: List[Mark]


def _mark(node: Node) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _plain_scalar_tag(value: str) -> str:
    """The YAML 1.2 core schema tag of a plain (unquoted) scalar."""
    if value in _NULLS:
        return NULL
    if value in _BOOLS:
        return BOOL
    if value[0] in _NUMBER_START:
        if _DECIMAL.match(value) or _OCTAL.match(value) or _HEX.match(value):
            return INT
        if _FLOAT.match(value) or _INFINITY.match(value) or _NAN.match(value):
            return FLOAT
    return STR


class _CoreResolver(yaml.resolver.BaseResolver):
    """Resolves plain scalars by the YAML 1.2 core schema; counts nodes as they are made."""

    def __init__(self) -> None:
        super().__init__()
        self.n_nodes = 0

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        self.n_nodes += 1
        if self.n_nodes > MAX_NODES:  # stop composing early: the converter would refuse it anyway
            raise _TooLarge()
        if kind is ScalarNode:
            return _plain_scalar_tag(value) if implicit[0] else STR
        return SEQ if kind is SequenceNode else MAP


class _TooLarge(Exception):
    pass


class _TooDeep(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__()
        self.mark = mark


class _PyLoader(
    yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer, _CoreResolver
):
    """The pure-Python parser, whose recursive composer is bounded by ``max_depth``."""

    def __init__(self, text: str, max_depth: int = MAX_DEPTH) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _CoreResolver.__init__(self)
        self._depth = 0
        self._max_depth = max_depth

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


if _USE_LIBYAML:
    from yaml.cyaml import CParser

    class _CLoader(CParser, _CoreResolver):  # type: ignore[misc]
        """libyaml's parser (nesting limited to 1000 by libyaml itself) with our resolver."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            _CoreResolver.__init__(self)


def _scalar(tag: str, value: str) -> Any:
    """The value of a scalar node with a core tag; ValueError with the reason if it has none."""
    if tag == STR:
        return value
    if tag == NULL:
        if value in _NULLS:
            return None
        raise ValueError(f"{value!r} is not a null")
    if tag == BOOL:
        if value in _BOOLS:
            return _BOOLS[value]
        raise ValueError(f"{value!r} is not a boolean (true or false)")
    if tag == INT:
        if len(value) > _MAX_DIGITS:
            raise ValueError(f"integer of {len(value)} digits")
        if _DECIMAL.match(value):
            return int(value, 10)
        if _OCTAL.match(value):
            return int(value[2:], 8)
        if _HEX.match(value):
            return int(value[2:], 16)
        raise ValueError(f"{value!r} is not an integer")
    # FLOAT
    if len(value) > _MAX_DIGITS:
        raise ValueError(f"number of {len(value)} characters")
    if _INFINITY.match(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.match(value):
        return math.nan
    if _FLOAT.match(value) or _DECIMAL.match(value):
        return float(value)
    raise ValueError(f"{value!r} is not a number")


def _is_plain(node: ScalarNode) -> bool:
    return not node.style  # None from the Python parser, "" from libyaml


def _placeholder_of(node: MappingNode) -> Optional[str]:
    """``name`` if the node is what an unquoted ``{name}`` parses to, else None."""
    if not node.flow_style or len(node.value) != 1:
        return None
    key, value = node.value[0]
    if (
        isinstance(key, ScalarNode)
        and _is_plain(key)
        and key.value.isidentifier()
        and isinstance(value, ScalarNode)
        and value.value == ""
        and value.tag == NULL
    ):
        return key.value
    return None


class _Converter:
    """Nodes to plain values, with positions, counting nodes after alias expansion."""

    def __init__(self, path: str, max_depth: int = MAX_DEPTH) -> None:
        self.path = path
        self.nodes = 0
        self.max_depth = max_depth

    def fail(self, reason: str, mark: Optional[Mark]) -> BatchValidationError:
        return BatchValidationError(reason, self.path, *(mark or (None, None)))

    def convert(self, node: Node, depth: int = 0, key: Any = None) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(f"document too large: more than {MAX_NODES} YAML nodes (after expanding aliases)", _mark(node))
        if depth > self.max_depth:
            raise self.fail(f"document nested too deeply (more than {self.max_depth} levels)", _mark(node))
        if node.tag not in _ALLOWED_TAGS:
            raise self.fail(f"YAML tag {node.tag!r} is not allowed in a batch file", _mark(node))
        if isinstance(node, MappingNode):
            if node.tag != MAP:
                raise self.fail(f"YAML tag {node.tag!r} cannot be put on a mapping", _mark(node))
            result = LMap()
            result.mark, result.key_marks, result.value_marks = _mark(node), {}, {}
            result.placeholder = _placeholder_of(node)
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.value == "<<" and _is_plain(key_node):
                    raise self.fail("YAML merge keys ('<<') are not supported in batch files", _mark(key_node))
                item_key = self.convert(key_node, depth + 1)
                if item_key is None or not isinstance(item_key, (str, int, float, bool)):
                    raise self.fail("mapping keys must be plain scalars (text or numbers)", _mark(key_node))
                if item_key in result:
                    raise self.fail(f"duplicate key '{item_key}'", _mark(key_node))
                result[item_key] = self.convert(value_node, depth + 1, item_key)
                result.key_marks[item_key] = _mark(key_node)
                result.value_marks[item_key] = _mark(value_node)
            return result
        if isinstance(node, SequenceNode):
            if node.tag != SEQ:
                raise self.fail(f"YAML tag {node.tag!r} cannot be put on a sequence", _mark(node))
            items = LList()
            items.mark, items.item_marks = _mark(node), []
            for item in node.value:
                items.append(self.convert(item, depth + 1))
                items.item_marks.append(_mark(item))
            return items
        if node.tag in (MAP, SEQ):
            raise self.fail(f"YAML tag {node.tag!r} cannot be put on a scalar", _mark(node))
        try:
            value = _scalar(node.tag, node.value)
        except ValueError as exc:
            raise self.fail(f"value cannot be read: {exc}", _mark(node)) from None
        if isinstance(value, float) and not math.isfinite(value):
            where = f"{key}: " if isinstance(key, str) else ""
            raise self.fail(f"{where}number {node.value!r} is not finite", _mark(node))
        return value


# -- hints for the usual mistakes --------------------------------------------------------

_COLON_NO_SPACE = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w-]*):(?=[^\s/:])(\S*)")
_FLOW_COLON_NO_SPACE = re.compile(r"[{,]\s*([A-Za-z_][\w-]*):(?=[^\s/:])(\S*?)(?=[,}]|$)")
_HINT_CHARS = 2000  # hints look at the start of a line only: a 1 MiB line must not cost seconds
_UNQUOTED_PLACEHOLDER = re.compile(r"(?:^|[:,\[-])\s*(\{[A-Za-z_]\w*\}(?:\{[A-Za-z_]\w*\}|[^\s,\[\]{}#])*)")


def colon_hint(text: Any) -> str:
    """A hint when ``text`` looks like ``key:value`` written without the space YAML needs."""
    if not isinstance(text, str):
        return ""
    text = text[:_HINT_CHARS]
    match = _COLON_NO_SPACE.match(text) or _FLOW_COLON_NO_SPACE.search(text)
    if not match:
        return ""
    return f" (missing space after ':'? write '{match.group(1)}: {match.group(2)}')"


def _outside_quotes(line: str, position: int) -> bool:
    before = line[:position]
    return before.count('"') % 2 == 0 and before.count("'") % 2 == 0


def _syntax_hint(problem: str, context: str, lines: List[str], line_numbers: List[int]) -> str:
    indents = [re.match(r"[ \t]*", lines[n - 1]).group(0) for n in line_numbers if 1 <= n <= len(lines)]  # type: ignore[union-attr]
    if "\\t" in problem or "\t" in problem or any("\t" in indent for indent in indents):
        return "; a tab in the indentation: YAML indents with spaces only"
    if "quoted scalar" in context:
        return "; an unclosed quote: the string that starts here has no closing quote"
    for number in line_numbers:
        if not 1 <= number <= len(lines):
            continue
        line = lines[number - 1]
        for match in _UNQUOTED_PLACEHOLDER.finditer(line):
            if _outside_quotes(line, match.start(1)):
                value = match.group(1)
                return f'; a value starting with {{ is read as a YAML mapping: quote it: "{value}"'
    for number in line_numbers:
        if 1 <= number <= len(lines):
            hint = colon_hint(lines[number - 1])
            if hint:
                return "; " + hint.strip(" ()")
    return ""


_INDENTATION_PROBLEMS = ("not allowed in this context", "did not find expected", "expected <block end>")


def _indentation_hint(lines: List[str], line_numbers: List[int]) -> str:
    """Two neighbouring lines that start one to three columns apart: a slip of the indentation
    (``steps:`` indented by one space, a list item not under the one above it)."""
    for number in line_numbers:
        if not 1 <= number <= len(lines) or not lines[number - 1].strip():
            continue
        line = lines[number - 1]
        column = len(line) - len(line.lstrip(" "))
        for above in range(number - 1, 0, -1):
            other = lines[above - 1]
            if not other.strip() or other.lstrip().startswith("#"):
                continue
            other_column = len(other) - len(other.lstrip(" "))
            if other.lstrip().startswith("- ") and not line.lstrip().startswith("-"):
                # A key under a list item lines up with the item's first key, after "- ".
                keys = other_column + 2
                if 0 < abs(column - keys) <= 3:
                    return (
                        f"; line {number} starts in column {column + 1}, but the keys of the item on line {above} "
                        f"start in column {keys + 1}: indent it to line up with them (YAML reads the indentation)"
                    )
            if 0 < abs(column - other_column) <= 3:
                return (
                    f"; line {number} starts in column {column + 1} and line {above} above it in column "
                    f"{other_column + 1}: lines of one level start in the same column (YAML reads the indentation)"
                )
            break
    return ""


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, path: str, max_depth: int) -> BatchValidationError:
    problem = exc.problem or ""
    context = exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    if "quoted scalar" in context and exc.context_mark is not None:
        mark = exc.context_mark  # point at the opening quote, not at the end of the file
    if "maximum nesting depth" in problem:
        where = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return BatchValidationError(f"document nested too deeply (more than {max_depth} levels)", path, *where)
    lines = [line[:_HINT_CHARS] for line in text.split("\n")]
    numbers: List[int] = []
    for candidate in (exc.problem_mark, exc.context_mark):
        if candidate is not None:
            numbers += [candidate.line + 1, candidate.line]  # the line, and the one before it
    hint = _syntax_hint(problem, context, lines, numbers)
    if not hint and any(text in problem or text in context for text in _INDENTATION_PROBLEMS):
        hint = _indentation_hint(lines, sorted(set(numbers), reverse=True))
    reason = f"invalid YAML: {problem or context or 'syntax error'}{hint}"
    where = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return BatchValidationError(reason, path, *where)


def load_yaml(text: str, path: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one YAML document into plain values with positions (see the module docstring).

    ``max_depth``: levels of nesting allowed (a DAQ config file allows fewer than a batch).

    Raises:
        BatchValidationError: syntax errors (with a hint), forbidden tags, merge keys,
            duplicate keys, too many nodes, too deep, non-finite numbers.
    """
    loader = _CLoader(text) if _USE_LIBYAML else _PyLoader(text, max_depth)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, path, max_depth) from None
    except yaml.YAMLError as exc:
        raise BatchValidationError(f"invalid YAML: {str(exc).splitlines()[0]}", path) from None
    except _TooLarge:
        raise BatchValidationError(f"document too large: more than {MAX_NODES} YAML nodes", path) from None
    except _TooDeep as exc:
        raise BatchValidationError(
            f"document nested too deeply (more than {max_depth} levels)", path, exc.mark.line + 1, exc.mark.column + 1
        ) from None
    finally:
        loader.dispose()
    if node is None:
        raise BatchValidationError("batch file is empty", path)
    return _Converter(path, max_depth).convert(node)
