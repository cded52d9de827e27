"""Templates: substitution only, bounded while rendering (no DAQ involved)."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from daq_runner import BatchValidationError
from daq_runner.batch import MAX_RENDERED_TOTAL, load_batch_text
from daq_runner.templating import (
    MAX_RENDERED_CHARS,
    UNUSABLE,
    Budget,
    TemplateError,
    TooLong,
    UnknownVariable,
    UnusableVariable,
    lone_placeholder,
    placeholders,
    render,
)


def test_render_substitutes_and_keeps_types_of_lone_placeholders():
    """A lone placeholder is the value itself; otherwise values are rendered as text."""
    values = {"a": 16, "b": "x", "c": [1, 2], "t": True}
    assert 16 == render("{a}", values)
    assert [1, 2] == render("{c}", values)
    assert "16-x-True" == render("{a}-{b}-{t}", values)
    assert "{a}" == render("{{a}}", values)
    assert "x{b}y" == render("{b}{{b}}y", values)
    assert "plain" == render("plain", values)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{a", "unbalanced brace"),
        ("a}", "unbalanced brace"),
        ("{}", "empty placeholder"),
        ("{a.__class__}", "not a plain variable name"),
        ("{a[0]}", "not a plain variable name"),
        ("{a:>10}", "not a plain variable name"),
        ("x{c}", "is a list and cannot be part of a string"),
    ],
)
def test_malformed_templates_are_refused(text, expected):
    """No attribute or index access, format specs or expressions; no lists inside strings."""
    with pytest.raises(TemplateError, match=expected.replace("[", r"\[")):
        render(text, {"a": 1, "c": [1]})


def test_unknown_and_unusable_variables():
    """An unknown name says which; a variable marked UNUSABLE (its own error reported) says so."""
    with pytest.raises(UnknownVariable) as info:
        render("/d/{nope}.h5", {})
    assert "nope" == info.value.name
    with pytest.raises(UnusableVariable):
        render("/d/{bad}.h5", {"bad": UNUSABLE})
    with pytest.raises(UnusableVariable):
        render("{bad}", {"bad": UNUSABLE})


def test_placeholders_and_lone_placeholder():
    """The names a template uses; whether it is exactly one placeholder."""
    assert {"root", "n"} == placeholders("{root}/x_{n}_{{lit}}.h5")
    assert "n" == lone_placeholder("{n}")
    assert [None, None, None] == [lone_placeholder(t) for t in ("{n}x", "{{n}}", 5)]


def test_a_rendered_string_is_bounded_before_it_is_built():
    """A string that would exceed the limit is refused, and memory never holds it."""
    big = "x" * 1_000_000
    assert MAX_RENDERED_CHARS == len(render("{a}" * 4, {"a": "y" * (MAX_RENDERED_CHARS // 4)}))
    tracemalloc.start()
    try:
        with pytest.raises(TooLong, match=f"renders to more than {MAX_RENDERED_CHARS} characters"):
            render("{a}{a}{a}{a}{a}{a}{a}{a}{a}{a}", {"a": big})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200_000  # the 10 MB result was never built
    with pytest.raises(TooLong):
        render("/d/{a}.h5", {"a": "y" * MAX_RENDERED_CHARS})
    assert 7 == len(render("{a}", {"a": "y" * 7}, limit=3))  # a lone placeholder builds nothing


def test_the_budget_is_shared_and_charged_while_rendering():
    """Every built string is charged; the call that overspends raises TooLong."""
    budget = Budget(10)
    assert "ab-ab" == render("{a}-{a}", {"a": "ab"}, budget=budget)
    assert 5 == budget.remaining
    assert "ab" == render("{a}", {"a": "ab"}, budget=budget)  # nothing built
    assert "no template" == render("no template", {}, budget=budget)
    assert 5 == budget.remaining
    with pytest.raises(TooLong, match="more than 10 characters in total"):
        render("{a}{a}{a}", {"a": "ab"}, budget=budget)


def test_self_repeating_variables_are_refused_in_little_memory_and_time():
    """The 462-byte batch that took 1.1 GB: refused after a few kB, in well under a second."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = ["version: 1", "vars:", "  a: x"]
    for previous, name in zip(names, names[1:12]):
        lines.append(f'  {name}: "' + ("{" + previous + "}") * 8 + '"')
    lines += ["steps:", "  - write: {output_file: '/d/{l}.h5', n_images: 1}"]
    text = "\n".join(lines) + "\n"
    assert len(text) < 600
    tracemalloc.start()
    started = time.process_time()  # CPU time: what the loader costs, however busy the machine
    try:
        with pytest.raises(BatchValidationError) as info:
            load_batch_text(text, "b.yaml")
        elapsed = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 50 * 1024 * 1024
    assert f"b.yaml:8:6: variable 'f': '{{e}}{{e}}{{e}}{{e}}{{e}}{{e}}{{e}}{{e}}' renders to more than {MAX_RENDERED_CHARS} characters" == str(info.value)
    assert 1 == len(info.value.errors)  # the variables built on it are not reported again


def test_the_whole_batch_has_a_rendering_budget():
    """Many steps rendering long strings stop at the batch budget, not at the memory's end."""
    per_step = 4000
    n = MAX_RENDERED_TOTAL // per_step + 100
    text = (
        "version: 1\nvars: {p: " + "p" * (per_step - 20) + "}\nsteps:\n"
        f"  - for: {{i: [{', '.join(map(str, range(n)))}]}}\n"
        "    steps:\n      - name: '{p}{i}'\n        stop: {}\n"
    )
    started = time.process_time()  # CPU time: what the loader costs, however busy the machine
    with pytest.raises(BatchValidationError, match=f"renders more than {MAX_RENDERED_TOTAL} characters in total"):
        load_batch_text(text, "b.yaml")
    assert time.process_time() - started < 10
