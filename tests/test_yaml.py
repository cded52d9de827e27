"""Batch files read as YAML 1.2 core schema, with the protections kept (no DAQ involved)."""

from __future__ import annotations

import math
import time

import pytest

from daq_runner import BatchValidationError
from daq_runner import _yaml
from daq_runner._fields import plain
from daq_runner._yaml import MAX_NODES, load_yaml
from daq_runner.batch import load_batch_text


@pytest.fixture(params=["libyaml", "python"])
def parser(request, monkeypatch):
    """Run the test with libyaml's parser and with the pure-Python one."""
    if request.param == "libyaml" and not _yaml._USE_LIBYAML:
        pytest.skip("PyYAML without libyaml")
    monkeypatch.setattr(_yaml, "_USE_LIBYAML", request.param == "libyaml")
    return request.param


def value_of(text: str):
    return plain(load_yaml(f"v: {text}\n", "b.yaml"))["v"]


def error_of(text: str) -> str:
    with pytest.raises(BatchValidationError) as info:
        load_yaml(text, "b.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        # YAML 1.1 reads these as booleans, a sexagesimal int, an octal int, a date:
        ("NO", "NO"),
        ("no", "no"),
        ("on", "on"),
        ("Off", "Off"),
        ("yes", "yes"),
        ("y", "y"),
        ("12:30", "12:30"),
        ("0123", 123),
        ("2024-01-01", "2024-01-01"),
        ("2024-01-01 10:00:00", "2024-01-01 10:00:00"),
        ("1_000", "1_000"),
        ("0b101", "0b101"),
        ("+0x1F", "+0x1F"),
        # what YAML 1.2 core resolves
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("FALSE", False),
        ("tRUE", "tRUE"),
        ("null", None),
        ("Null", None),
        ("NULL", None),
        ("~", None),
        ("", None),
        ("nULL", "nULL"),
        ("42", 42),
        ("-7", -7),
        ("+12", 12),
        ("0o17", 15),
        ("0x1F", 31),
        ("0x1f", 31),
        ("1.5", 1.5),
        (".5", 0.5),
        ("-2.", -2.0),
        ("1e3", 1000.0),
        ("-2.5E-3", -0.0025),
        ("'0123'", "0123"),
        ('"true"', "true"),
        ("'~'", "~"),
        ("!!str 0123", "0123"),
        ("!!int 0x1F", 31),
        ("!!float 2", 2.0),
        ("!!bool TRUE", True),
        ("!!null ~", None),
    ],
)
def test_scalars_follow_the_yaml_1_2_core_schema(parser, text, expected):
    """Plain scalars mean what was typed: only the 1.2 core forms are booleans, nulls, numbers."""
    value = value_of(text)
    assert (type(expected), expected) == (type(value), value)


@pytest.mark.parametrize(
    "text, expected",
    [
        (".inf", "b.yaml:1:4: v: number '.inf' is not finite"),
        ("-.Inf", "not finite"),
        (".nan", "not finite"),
        ("1e400", "v: number '1e400' is not finite"),
        ("!!int 1.5", "value cannot be read: '1.5' is not an integer"),
        ("!!bool yes", "'yes' is not a boolean"),
        ("!!null x", "'x' is not a null"),
        ("9" * 5000, "value cannot be read"),
        ("!!timestamp 2024-01-01", "tag 'tag:yaml.org,2002:timestamp' is not allowed"),
        ("!!binary aGk=", "is not allowed"),
        ("!!python/object:builtins.dict {}", "is not allowed"),
        ("!custom x", "is not allowed"),
        ("!!map x", "cannot be put on a scalar"),
    ],
)
def test_values_that_cannot_be_read_are_refused(parser, text, expected):
    """Non-finite numbers, wrong explicit tags and non-core tags are refused with a position."""
    assert expected in error_of(f"v: {text}\n")


def test_a_batch_keeps_what_was_typed():
    """End to end: NO, 12:30 and a date stay text, 0123 is the integer 123 (YAML 1.1: False, 750, a date, 83)."""
    batch = load_batch_text(
        "version: 1\nvars: {sample: NO, at: 12:30, day: 2024-01-01}\nsteps:\n"
        "  - write: {output_file: '/d/{sample}_{day}.h5', n_images: 0123}\n"
        "    name: '{sample} at {at}'\n",
        "b.yaml",
    )
    step = batch.steps[0]
    assert ("/d/NO_2024-01-01.h5", 123, "NO at 12:30") == (step.output_file, step.n_images, step.name)
    assert {"sample": "NO", "at": "12:30", "day": "2024-01-01"} == batch.vars


def test_merge_keys_are_refused(parser):
    """'<<' merge keys are refused (a quoted '<<' is an ordinary key)."""
    assert "merge keys" in error_of("a: &a {x: 1}\nb:\n  <<: *a\n")
    assert {"<<": 1} == plain(load_yaml("'<<': 1\n", "b.yaml"))


def test_duplicate_keys_are_refused_with_position(parser):
    """A key given twice is an error at the second one."""
    assert "b.yaml:3:1: duplicate key 'a'" in error_of("a: 1\nb: 2\na: 3\n")


def test_keys_must_be_scalars(parser):
    """Null or complex keys are refused."""
    assert "mapping keys must be plain scalars" in error_of("~: 1\n")
    assert "mapping keys must be plain scalars" in error_of("? [a, b]\n: 1\n")


def test_alias_bomb_is_refused_fast(parser):
    """A billion-laughs document stops at the node limit, quickly."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        previous = chr(96 + i)
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{previous}"] * 10) + "]")
    started = time.process_time()  # CPU time: what the loader costs, however busy the machine
    assert f"more than {MAX_NODES} YAML nodes" in error_of("\n".join(lines) + "\n")
    assert time.process_time() - started < 2


@pytest.mark.parametrize("depth", [60, 1000, 100_000])
def test_deep_nesting_is_an_error_not_a_crash(parser, depth):
    """Deeply nested flow or block collections are refused (the old loader raised RecursionError)."""
    assert "nested too deeply" in error_of("[" * depth + "]" * depth)
    assert "nested too deeply" in error_of("- " * depth + "x\n")


def test_positions_of_keys_and_values():
    """Mappings and lists remember 1-based line and column of their keys, values and items."""
    doc = load_yaml("a:\n  b: [x, y]\n", "b.yaml")
    assert (1, 1) == doc.key_marks["a"]
    assert (2, 3) == doc["a"].key_marks["b"]
    assert (2, 6) == doc["a"].value_marks["b"]
    assert [(2, 7), (2, 10)] == doc["a"]["b"].item_marks


def test_an_unquoted_placeholder_is_recognised():
    """`{n}` without quotes is a one-key mapping to YAML; the loader remembers the name for its hint."""
    doc = load_yaml("a: {n}\nb: {n: 1}\nc: {'n'}\n", "b.yaml")
    assert ("n", None, None) == (doc["a"].placeholder, doc["b"].placeholder, doc["c"].placeholder)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("version: 1\nsteps:\n\t- stop: {}\n", "b.yaml:3:1: invalid YAML: found character "),
        ("version: 1\nsteps:\n\t- stop: {}\n", "a tab in the indentation: YAML indents with spaces only"),
        ("version: 1\nsteps:\n  - write:\n      output_file: /x.h5\n      n_images:5\n", "missing space after ':'? write 'n_images: 5'"),
        ("version:1\nsteps:\n  - stop: {}\n", "missing space after ':'? write 'version: 1'"),
        ("version: 1\nname: \"abc\nsteps:\n  - stop: {}\n", "b.yaml:2:7: invalid YAML: found unexpected end of stream; an unclosed quote"),
        ("version: 1\nsteps:\n  - write: {output_file: '/x.h5, n_images: 5}\n", "b.yaml:3:26: invalid YAML"),
        (
            "version: 1\nsteps:\n  - write:\n      output_file: {root}/x.h5\n      n_images: 1\n",
            'a value starting with { is read as a YAML mapping: quote it: "{root}/x.h5"',
        ),
        (
            "version: 1\nsteps:\n  - write: {output_file: {root}/x_{n}.h5, n_images: 1}\n",
            'quote it: "{root}/x_{n}.h5"',
        ),
    ],
)
def test_syntax_errors_carry_hints_for_the_usual_mistakes(parser, text, expected):
    """A tab, a missing space after a colon, an unclosed quote, an unquoted {var}: each says so."""
    assert expected in error_of(text)


def test_empty_document(parser):
    """An empty or comment-only document is 'empty'."""
    assert "batch file is empty" in error_of("# nothing\n")


def test_non_finite_numbers_never_reach_a_step():
    """NaN and infinity are refused wherever they are, as before."""
    for text in ("n: .nan", "n: [1, .inf]", "n: {a: -.INF}"):
        with pytest.raises(BatchValidationError, match="not finite"):
            load_yaml(text, "b.yaml")
    assert math.isfinite(value_of("1e308"))


def test_too_many_nodes_stop_the_parser_early():
    """A flat document over the node limit is refused while it is parsed, before it is all built."""
    text = "a: [" + ",".join(["1"] * (MAX_NODES + 10)) + "]\n"
    started = time.process_time()  # CPU time: what the loader costs, however busy the machine
    assert f"document too large: more than {MAX_NODES} YAML nodes" in error_of(text)
    assert time.process_time() - started < 3


def test_hints_stay_fast_on_huge_lines():
    """A syntax error on a 1 MiB line full of near-mistakes is reported quickly."""
    text = "a: [x'y" + ", {a}z" * 30_000 + "]]\n"  # each {a}z looks quoted: hints scan the line again and again
    started = time.process_time()  # CPU time: what the loader costs, however busy the machine
    assert "invalid YAML" in error_of(text)
    assert time.process_time() - started < 3
