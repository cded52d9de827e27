"""The batch reference in docs/ and the step kinds' declarations say the same thing."""

from __future__ import annotations

import subprocess
import sys
from typing import Iterator, Tuple

from daq_runner._fields import Field, Number, Object, OrOff
from daq_runner._reference import BEGIN, END, reference_tables, replace_tables
from daq_runner._stepkinds import COMMON_FIELDS, CONFIG_FIELDS, DAQ, DEFAULTS, KINDS

from .conftest import REPO

PAGE = REPO / "docs" / "batch-reference.md"
REGENERATE = "python -m daq_runner._reference --write docs/batch-reference.md"


def declared_fields() -> Iterator[Tuple[str, Field]]:
    """Every field of every declaration, with a dotted name."""

    def walk(prefix: str, fields: dict) -> Iterator[Tuple[str, Field]]:
        for key, field in fields.items():
            yield prefix + key, field
            body = field.body if isinstance(field, OrOff) else field
            if isinstance(body, Object):
                yield from walk(f"{prefix}{key}.", body.fields)

    yield from walk("", COMMON_FIELDS)
    yield from walk("config.", CONFIG_FIELDS)
    yield from walk("daq.", DAQ.fields)
    yield from walk("defaults.", DEFAULTS.fields)
    for kind in KINDS.values():
        yield from walk(f"{kind.name}.", {kind.name: kind.body, **kind.extra})


def test_the_page_holds_the_tables_the_declarations_give():
    """docs/batch-reference.md's generated tables are what the declarations give today."""
    page = PAGE.read_text(encoding="utf-8")
    generated = page[page.index(BEGIN) : page.index(END) + len(END)]
    assert reference_tables() == generated, f"the batch reference is out of date: {REGENERATE}"
    assert REGENERATE in page.replace("\n", " ")  # the page says how to regenerate it


def test_every_number_says_its_unit_and_every_field_its_meaning():
    """A number without a unit, or a key without a description, cannot reach the reference."""
    for name, field in declared_fields():
        assert field.doc, f"{name} has no description"
        if isinstance(field, Number):
            assert field.unit, f"{name} has no unit"
    rates = {name: field.unit for name, field in declared_fields() if name.endswith("_rate")}
    assert rates and set(rates.values()) == {"images/s"}, rates


def test_every_declared_key_is_in_the_page():
    """Each key of each step kind has a row (min_writer_rate among them)."""
    tables = reference_tables()
    for kind in KINDS.values():
        section = tables.split(f"### `{kind.name}:`", 1)[1].split("\n### ", 1)[0]
        keys = list(getattr(kind.body, "fields", {})) if kind.body is not None else []
        if set(keys) == set(CONFIG_FIELDS):
            keys = []
        for key in [*keys, *kind.extra]:
            assert f"| `{key}` |" in section, (kind.name, key)
    assert "| `min_writer_rate` | number >= 0 | - | images/s |" in tables


def test_regenerating_replaces_only_the_tables(tmp_path):
    """--write replaces what lies between the markers and keeps the rest of the page."""
    page = tmp_path / "page.md"
    page.write_text(f"# Before\n\n{BEGIN}\nstale\n{END}\n\nAfter.\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "daq_runner._reference", "--write", str(page)], capture_output=True, text=True, timeout=60)
    assert 0 == done.returncode, done.stderr
    assert f"# Before\n\n{reference_tables()}\n\nAfter.\n" == page.read_text(encoding="utf-8")
    assert replace_tables(page.read_text(encoding="utf-8")) == page.read_text(encoding="utf-8")
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n", encoding="utf-8")
    refused = subprocess.run([sys.executable, "-m", "daq_runner._reference", "--write", str(bare)], capture_output=True, text=True, timeout=60)
    assert 2 == refused.returncode and 1 == len(refused.stderr.splitlines()) and "markers missing" in refused.stderr
