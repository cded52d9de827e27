"""The package as a whole: no import cycles, one exception tree that docs/client.md shows as the code has it."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path
from typing import Dict, List, Set, Tuple

import daq_runner
from daq_runner import exceptions

from .conftest import REPO

PACKAGE = Path(daq_runner.__file__).parent

def modules() -> Dict[str, Tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports anywhere (top level or inside a function).

    An import of a parent package does not count: every submodule's import runs it, and
    daq_runner/__init__.py imports its names lazily, by string.
    """
    known = modules()
    graph: Dict[str, Set[str]] = {}
    for name, (path, package) in known.items():
        here = name if package else name.rpartition(".")[0]
        edges: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in known}
            elif isinstance(node, ast.ImportFrom):
                base = here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in known else target)
        graph[name] = {e for e in edges if e in known and e != name and not name.startswith(e + ".")}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[Set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                other = stack.pop()
                component.add(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycles():
    """No module imports, directly or through others, a module that imports it (lazy imports count)."""
    assert [] == cycles(import_graph())


def test_the_cycle_finder_finds_a_cycle():
    """The walk sees a cycle through function-level imports (show and _html had one)."""
    assert [{"a", "b"}] == cycles({"a": {"b"}, "b": {"a", "c"}, "c": set()})
    graph = import_graph()
    assert "daq_runner.report" in graph["daq_runner.report_paths"]  # an import inside a function


def tree_of(text: str) -> List[Tuple[str, str]]:
    """(class, parent) pairs of an exception tree drawn with box characters (the root's parent is '')."""
    pairs, parents = [], {}
    for line in text.splitlines():
        match = re.match(r"^((?:[│ ] {3})*)(?:[├└]── )?([A-Z]\w+)", line)
        if not match or (line[:1] in "│ " and "── " not in line):
            continue  # a comment's second line
        depth = len(match.group(1)) // 4 + (1 if "── " in line else 0)
        parents[depth] = match.group(2)
        pairs.append((match.group(2), parents.get(depth - 1, "") if depth else ""))
    return pairs


def docstring_tree() -> str:
    return textwrap.dedent(exceptions.__doc__.split("Hierarchy::\n\n", 1)[1].split("\n\n", 1)[0])


def test_the_exception_tree_in_the_docstring_is_the_code():
    """Every exception class of daq_runner.exceptions is in its docstring's tree under each of its bases, and nothing else is."""
    classes = {
        name: cls for name, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, exceptions.DaqRunnerError) and cls.__module__ == exceptions.__name__
    }
    expected = {(name, "") if cls is exceptions.DaqRunnerError else None for name, cls in classes.items()} - {None}
    for name, cls in classes.items():
        expected |= {(name, base.__name__) for base in cls.__bases__ if base.__name__ in classes}
    assert sorted(expected) == sorted(set(tree_of(docstring_tree())))


def test_the_client_page_shows_the_exception_tree_of_the_code():
    """docs/client.md's exception tree is the one in daq_runner/exceptions.py's docstring, line for line."""
    page = (REPO / "docs" / "client.md").read_text(encoding="utf-8")
    start = page.index("```\nDaqRunnerError") + 4
    assert docstring_tree() == page[start : page.index("```", start)].rstrip("\n")
