"""daq-run --schema and the loader agree: both come from the step kinds' declarations."""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Dict, Iterator, List, Sequence

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq_runner import BatchValidationError, protocol
from daq_runner._stepkinds import COMMON_FIELDS, KINDS
from daq_runner._yaml import load_yaml
from daq_runner.batch import load_batch_text
from daq_runner.schema import batch_schema

from .conftest import REPO

SCHEMA = batch_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
# Variables the tests' batch texts use; optional, so texts that do not use them still load.
TEST_VARS = {"root": "/data", "n": "3", "x": "a", "name": "a", "i": "1"}


def as_json(text: str) -> Any:
    """The batch text as the JSON instance an editor checks (keys as text, as JSON has them)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(load_yaml(text, "b.yaml"))


def schema_errors(text: str) -> List[str]:
    return [error.message for error in VALIDATOR.iter_errors(as_json(text))]


def loads(text: str) -> bool:
    try:
        # run: steps allowed: the permission is the run's, not the file's (no schema can say it)
        load_batch_text(text, "b.yaml", optional_vars=TEST_VARS, allow_commands=True)
    except BatchValidationError:
        return False
    return True


def test_schema_is_a_valid_draft_2020_12_schema():
    """The generated schema passes the metaschema."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert "https://json-schema.org/draft/2020-12/schema" == SCHEMA["$schema"]


def test_cli_prints_the_generated_schema(capsys):
    """daq-run --schema prints batch_schema()."""
    from daq_runner.run_cli import main

    assert 0 == main(["--schema"])
    assert SCHEMA == json.loads(capsys.readouterr().out)


def test_schema_is_derived_from_the_declarations():
    """Every step kind, common key and DAQ config field appears in the schema, with a description."""
    kinds = SCHEMA["$defs"]["steps"]["items"]["oneOf"]
    assert [*KINDS, "for"] == [k["required"][0] for k in kinds]
    config = kinds[0]["properties"]["config"]["properties"]
    assert list(protocol.CONFIG_FIELDS) == list(config)
    for kind in kinds:
        assert kind["description"]
        for key, prop in kind["properties"].items():
            if key != "steps":
                assert prop.get("description"), (kind["title"], key)
        body = kind["properties"][kind["required"][0]]
        for key, prop in body.get("properties", {}).items():
            assert prop.get("description"), (kind["title"], key)
    assert set(COMMON_FIELDS) <= set(kinds[2]["properties"])
    write = kinds[2]["properties"]["write"]["properties"]
    assert (True, False) == (write["wait"]["default"], write["overwrite"]["default"])


@pytest.mark.parametrize("path", sorted((REPO / "batches").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_batches_validate_under_the_schema(path):
    """Every example in batches/ passes the loader and the schema."""
    text = path.read_text()
    assert loads(text)
    assert [] == schema_errors(text)


def _module_strings(tree: ast.Module) -> Dict[str, str]:
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _fold(node.value, names)
            if value is not None:
                names[node.targets[0].id] = value
    return names


def _fold(node: ast.AST, names: Dict[str, str]) -> Any:
    """The text of a string expression made of literals, module constants and '+', else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _fold(node.left, names), _fold(node.right, names)
        return left + right if left is not None and right is not None else None
    return None


def batch_texts_in_tests() -> Iterator[str]:
    """Every batch text written out in the test files (literals and their concatenations)."""
    seen = set()
    for path in sorted((REPO / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = _module_strings(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Constant, ast.BinOp)):
                text = _fold(node, names)
                if isinstance(text, str) and text.startswith("version: 1\n") and text not in seen:
                    seen.add(text)
                    yield text


def test_every_valid_batch_text_in_the_tests_validates_under_the_schema():
    """Whatever the loader accepts in the test suite, the schema accepts too."""
    valid = [text for text in batch_texts_in_tests() if loads(text)]
    assert len(valid) >= 40  # the scan finds the suite's batches
    failures = {text: schema_errors(text) for text in valid if schema_errors(text)}
    assert {} == failures


# One batch per rule: the loader and the schema both refuse it.
HEAD = "version: 1\nsteps:\n"
INVALID = {
    "unknown top-level key": HEAD + "  - stop: {}\ncolour: red\n",
    "missing version": "steps:\n  - stop: {}\n",
    "version 2": "version: 2\nsteps:\n  - stop: {}\n",
    "version true": "version: true\nsteps:\n  - stop: {}\n",
    "missing steps": "version: 1\n",
    "empty steps": "version: 1\nsteps: []\n",
    "a step that is text": HEAD + "  - stop\n",
    "unknown step kind": HEAD + "  - wirte: {}\n",
    "two kinds in one step": HEAD + "  - stop: {}\n    wait: {seconds: 1}\n",
    "unknown step key": HEAD + "  - stop: {}\n    colour: red\n",
    "n_images 0": HEAD + "  - write: {output_file: /d/a.h5, n_images: 0}\n",
    "n_images as text": HEAD + "  - write: {output_file: /d/a.h5, n_images: '5'}\n",
    "n_images too large": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1000000001}\n",
    "write without n_images": HEAD + "  - write: {output_file: /d/a.h5}\n",
    "relative path": HEAD + "  - write: {output_file: rel.h5, n_images: 1}\n",
    "path with ..": HEAD + "  - write: {output_file: /d/../a.h5, n_images: 1}\n",
    "path the DAQ refuses": HEAD + "  - write: {output_file: '/d/a b.h5', n_images: 1}\n",
    "unknown write key": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1, colour: red}\n",
    "wait not boolean": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1, wait: 'no'}\n",
    "overwrite not boolean": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1, overwrite: 1}\n",
    "bad bit_depth": HEAD + "  - config: {bit_depth: 12}\n",
    "unknown config field": HEAD + "  - config: {colour: red}\n",
    "empty config": HEAD + "  - config: {}\n",
    "bad detector_type": HEAD + "  - config: {detector_type: pilatus}\n",
    "integer config field as text": HEAD + "  - config: {n_modules: two}\n",
    "module_positions not an object": HEAD + "  - config: {module_positions: [1, 2]}\n",
    "negative settle": HEAD + "  - config: {bit_depth: 8}\n    settle: -1\n",
    "settle on a stop": HEAD + "  - stop: {}\n    settle: 1\n",
    "stop with params": HEAD + "  - stop: {a: 1}\n",
    "wait with seconds and state": HEAD + "  - wait: {seconds: 1, state: READY}\n",
    "wait with neither": HEAD + "  - wait: {}\n",
    "wait for a state that does not exist": HEAD + "  - wait: {state: BUSY}\n",
    "wait timeout 0": HEAD + "  - wait: {state: READY, timeout: 0}\n",
    "empty check": HEAD + "  - check: {}\n",
    "unknown check key": HEAD + "  - check: {writer: READY, colour: red}\n",
    "check writer BUSY": HEAD + "  - check: {writer: BUSY}\n",
    "check deployment bad": HEAD + "  - check: {deployment: DONE}\n",
    "check config empty": HEAD + "  - check: {config: {}}\n",
    "negative rate": HEAD + "  - check: {min_detector_rate: -1}\n",
    "timeout 0": HEAD + "  - stop: {}\n    timeout: 0\n",
    "timeout too long": HEAD + "  - stop: {}\n    timeout: 1e9\n",
    "retries -1": HEAD + "  - stop: {}\n    retries: -1\n",
    "retries 1.5": HEAD + "  - stop: {}\n    retries: 1.5\n",
    "on_error ignore": HEAD + "  - stop: {}\n    on_error: ignore\n",
    "tags not a list": HEAD + "  - stop: {}\n    tags: a\n",
    "step name true": HEAD + "  - stop: {}\n    name: true\n",
    "batch name a list": "version: 1\nname: [a]\nsteps:\n  - stop: {}\n",
    "unknown daq key": "version: 1\ndaq: {rest: x}\nsteps:\n  - stop: {}\n",
    "empty daq url": "version: 1\ndaq: {url: ''}\nsteps:\n  - stop: {}\n",
    "defaults unknown key": "version: 1\ndefaults: {settle: 1}\nsteps:\n  - stop: {}\n",
    "defaults retries too many": "version: 1\ndefaults: {retries: 101}\nsteps:\n  - stop: {}\n",
    "variable name not an identifier": "version: 1\nvars: {a-b: 1}\nsteps:\n  - stop: {}\n",
    "variable hiding a built-in": "version: 1\nvars: {date: x}\nsteps:\n  - stop: {}\n",
    "variable with a mapping": "version: 1\nvars: {a: {b: 1}}\nsteps:\n  - stop: {}\n",
    "variable with no value": "version: 1\nvars: {a: }\nsteps:\n  - stop: {}\n",
    "sweep without variables": HEAD + "  - for: {}\n    steps: [{stop: {}}]\n",
    "sweep over no values": HEAD + "  - for: {a: []}\n    steps: [{stop: {}}]\n",
    "sweep over mappings": HEAD + "  - for: {a: [{b: 1}]}\n    steps: [{stop: {}}]\n",
    "sweep variable hiding a built-in": HEAD + "  - for: {step: [1]}\n    steps: [{stop: {}}]\n",
    "sweep without steps": HEAD + "  - for: {a: [1]}\n",
    "sweep with an unknown key": HEAD + "  - for: {a: [1]}\n    steps: [{stop: {}}]\n    tags: [x]\n",
    "sweep with empty steps": HEAD + "  - for: {a: [1]}\n    steps: []\n",
    "guard not a mapping": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1}\n    guard: on\n",
    "guard without its rate": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1}\n    guard: {for_s: 1}\n",
    "guard rate 0": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1}\n    guard: {min_detector_rate: 0}\n",
    "guard unknown key": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1}\n    guard: {min_detector_rate: 1, beam: true}\n",
    "guard on a config step": HEAD + "  - config: {bit_depth: 8}\n    guard: {min_detector_rate: 1}\n",
    "verify yes": HEAD + "  - write: {output_file: /d/a.h5, n_images: 1}\n    verify: 'yes'\n",
    "defaults verify yes": "version: 1\ndefaults: {verify: 'yes'}\nsteps:\n  - stop: {}\n",
    "run without command": HEAD + "  - run: {timeout: 1}\n",
    "run command as text": HEAD + "  - run: {command: ls -l}\n",
    "run command empty": HEAD + "  - run: {command: []}\n",
    "run command with a mapping": HEAD + "  - run: {command: [ls, {a: 1}]}\n",
    "run expect_exit 256": HEAD + "  - run: {command: [ls], expect_exit: 256}\n",
    "run env name with a space": HEAD + "  - run: {command: [ls], env: {'A B': 1}}\n",
    "run env value a list": HEAD + "  - run: {command: [ls], env: {A: [1]}}\n",
}


@pytest.mark.parametrize("text", list(INVALID.values()), ids=list(INVALID))
def test_invalid_batches_fail_the_loader_and_the_schema_alike(text):
    """Each rule is enforced by both."""
    assert not loads(text)
    assert schema_errors(text), "the schema accepts what the loader refuses"


# What only the loader can judge: the schema accepts these on purpose.
LOADER_ONLY = {
    "unknown variable": (HEAD + "  - write: {output_file: '/d/{nope}.h5', n_images: 1}\n", "templates: which variables exist"),
    "placeholder value of the wrong type": (
        "version: 1\nvars: {count: many}\nsteps:\n  - write: {output_file: /d/a.h5, n_images: '{count}'}\n",
        "templates: a placeholder's value is known once rendered",
    ),
    "bit_depth from a variable": (
        "version: 1\nvars: {b: 12}\nsteps:\n  - config: {bit_depth: '{b}'}\n",
        "templates: a placeholder's value is known once rendered",
    ),
    "relative path once rendered": (
        "version: 1\nvars: {d: data}\nsteps:\n  - write: {output_file: '{d}/a.h5', n_images: 1}\n",
        "templates: a path is known once rendered",
    ),
    "state from a variable": (
        "version: 1\nvars: {s: BUSY}\nsteps:\n  - check: {writer: '{s}'}\n",
        "templates: a placeholder's value is known once rendered",
    ),
    "variable used before it is defined": (
        "version: 1\nvars: {a: '{b}', b: x}\nsteps:\n  - stop: {}\n",
        "templates: the order of vars",
    ),
    "self-repeating variables": (
        "version: 1\nvars: {a: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx, b: '{a}{a}{a}{a}{a}{a}{a}{a}',"
        " c: '{b}{b}{b}{b}{b}{b}{b}{b}'}\nsteps:\n  - stop: {}\n",
        "templates: rendered sizes",
    ),
    "sweep too large": (
        HEAD + "  - for: {a: [" + ", ".join(map(str, range(400))) + "], b: [" + ", ".join(map(str, range(400))) + "]}\n"
        "    steps: [{stop: {}}]\n",
        "sweep sizes: the number of combinations",
    ),
    "two steps writing one file": (
        HEAD + "  - write: {output_file: /d/a.h5, n_images: 1}\n  - write: {output_file: /d/a.h5, n_images: 2}\n",
        "duplicate files: a relation between steps",
    ),
    "a wait longer than its own timeout": (
        HEAD + "  - wait: {seconds: 10}\n    timeout: 2\n",
        "comparing two numbers of one step: JSON Schema cannot",
    ),
    "a wait longer than the timeout in its body": (
        HEAD + "  - wait: {seconds: 10, timeout: 2}\n",
        "comparing two numbers of one step: JSON Schema cannot",
    ),
    "a settle longer than its step's timeout": (
        HEAD + "  - config: {bit_depth: 16}\n    settle: 10\n    timeout: 3\n",
        "comparing two numbers of one step: JSON Schema cannot",
    ),
    "a guard on a write that does not wait": (
        HEAD + "  - write: {output_file: /d/a.h5, n_images: 1, wait: false}\n    guard: {min_detector_rate: 1}\n",
        "a relation of two keys of one step",
    ),
    "a guard's for_s longer than the step's timeout": (
        HEAD + "  - write: {output_file: /d/a.h5, n_images: 1}\n    guard: {min_detector_rate: 1, for_s: 10}\n    timeout: 5\n",
        "comparing two numbers of one step: JSON Schema cannot",
    ),
    "a run step with two timeouts": (
        HEAD + "  - run: {command: [ls], timeout: 5}\n    timeout: 5\n",
        "a relation of two keys of one step",
    ),
    "one file in every combination of a sweep": (
        HEAD + "  - for: {a: [1, 2]}\n    steps:\n      - write: {output_file: /d/a.h5, n_images: 1}\n",
        "duplicate files: after sweep expansion",
    ),
}


@pytest.mark.parametrize("text, reason", list(LOADER_ONLY.values()), ids=list(LOADER_ONLY))
def test_what_only_the_loader_can_judge(text, reason):
    """Templates, sweep sizes and duplicate files: the schema accepts them, the loader refuses them."""
    assert [] == schema_errors(text), reason
    assert not loads(text)


# -- the loader never accepts what the schema refuses ---------------------------------------

def _has_template(value: Any) -> bool:
    return re.search(r"\{[A-Za-z_]", json.dumps(value)) is not None


def batch_documents(templates: bool) -> Any:
    """Batch-shaped documents: mostly valid values (edge cases included), sometimes invalid ones.

    With ``templates`` False no value holds a placeholder and there are no sweeps.
    """

    def pool(valid: List[Any], invalid: Sequence[Any] = ()) -> Any:
        values = [v for v in valid * 4 + list(invalid) if templates or not _has_template(v)]
        return st.sampled_from(values)

    bad = [None, "", [], {}, "x", -1, True]
    options = {
        "name": pool(["darks", 5, 1.5, "{x} {step}"], [True, None, ["a"]]),
        "timeout": pool([1, 0.5, 300, 604800, "{n}"], [0, -1, "5", 1e9]),
        "retries": pool([0, 2, 2.0, 100, "{n}"], [1.5, 101, "2"]),
        "on_error": pool(["abort", "continue", "{mode}"], ["ignore"]),
        "tags": pool([[], ["a", 1, 1.5], ["{x}"]], ["a", [None], [["a"]]]),
    }
    config = {
        "bit_depth": pool([8, 16, 32, 16.0, "{b}"], [12, "16"]),
        "detector_type": pool(["eiger", "jungfrau", "{x}"], ["pilatus"]),
        "detector_name": pool(["det", "{x}_det"], [5]),
        "n_modules": pool([1, -5, 2**31 - 1, "{n}"], [2**31, 1.5]),
        "writer_user_id": pool([0, -1], ["me"]),
        "module_positions": pool([{}, {"0": [0, 0, 1, 1]}], [[1, 2]]),
        "submodule_info": pool([{}, {"a": "{x}"}], ["x"]),
    }
    files = ["/d/a_{step}.h5", "{root}/x_{step}.h5", "/d/{x}_{step}.h5"] if templates else ["/d/a.h5", "/d/b.h5", "/d/c-1.h5"]
    timeout = pool([1, 10.5], [0])
    bodies = {
        "write": st.fixed_dictionaries(
            {
                "output_file": pool(files, ["rel.h5", "/d/../a.h5", "/d/a b.h5", 5]),
                "n_images": pool([1, 10, 1.0, 10**9, "{n}"], [0, "5", 1.5, 10**9 + 1]),
            },
            optional={"wait": pool([True, False], bad), "overwrite": pool([True, False], bad)},
        ),
        "config": st.fixed_dictionaries({}, optional=config),
        "check": st.fixed_dictionaries(
            {},
            optional={
                "writer": pool(["READY", "WRITING", "UNKNOWN", "{state}"], ["BUSY"]),
                "deployment": pool(["SUCCESS", "ERROR"], ["DONE"]),
                "min_detector_rate": pool([0, 1.5, "{n}"], [-1, "1"]),
                "min_writer_rate": pool([10], [1e10]),
                "config": st.fixed_dictionaries({}, optional=config),
            },
        ),
        "wait": st.one_of(
            st.fixed_dictionaries({"seconds": pool([0, 0.5, 2, "{n}"], [-1, "1"])}, optional={"timeout": timeout}),
            st.fixed_dictionaries({"state": pool(["READY", "WRITING"], ["BUSY"])}, optional={"timeout": timeout}),
            pool([{}, {"seconds": 1, "state": "READY"}]),
        ),
        "stop": pool([None, {}], [{"a": 1}]),
    }
    steps = st.one_of(
        *[
            st.builds(
                lambda body, common, extra, kind=kind: {kind: body, **common, **extra},
                strategy,
                st.fixed_dictionaries({}, optional=options),
                st.fixed_dictionaries({}, optional={"settle": pool([0, 1.5], [-1])} if kind == "config" else {}),
            )
            for kind, strategy in bodies.items()
        ]
    )
    if templates:
        sweeps = st.builds(
            lambda values, inner: {"for": {"i": values}, "steps": inner},
            pool([[1, 2], ["a"], [1.5, True], "{list}"], [[], [None], "x"]),
            st.lists(steps, min_size=1, max_size=2),
        )
        steps = st.one_of(steps, sweeps)
    variables = {
        "n": pool([3, "3"]),
        "x": pool(["a"]),
        "root": pool(["/r"]),
        "b": pool([16]),
        "mode": pool(["continue"]),
        "state": pool(["READY"]),
        "list": pool([[1, 2]]),
    }
    return st.fixed_dictionaries(
        {
            "version": pool([1, 1.0], [2, "1", True]),
            "vars": st.fixed_dictionaries(variables if templates else {}, optional={"bad": pool([1], [None, {"a": 1}])}),
            "steps": st.lists(steps, min_size=1, max_size=4),
        },
        optional={
            "defaults": st.fixed_dictionaries(
                {},
                optional={
                    "timeout": pool([10]),
                    "retries": pool([1]),
                    "on_error": pool(["continue"]),
                    "overwrite": pool([True], ["no"]),
                },
            ),
            "name": pool(["night", 2024], [True]),
            "daq": st.fixed_dictionaries({}, optional={"url": pool(["http://h:5000"], [""]), "redis": pool(["redis://h"], [5])}),
        },
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_documents(templates=True))
def test_what_the_loader_accepts_the_schema_accepts(document):
    """For any batch-shaped document (JSON is YAML), a batch the loader accepts is valid under the schema."""
    text = json.dumps(document)
    try:
        load_batch_text(text, "fuzz.yaml")
    except BatchValidationError:
        return
    assert [] == schema_errors(text)


def _settle_longer_than_its_timeout(step: dict, defaults: dict) -> bool:
    if not isinstance(step, dict) or "config" not in step:
        return False
    numbers = [step.get("settle"), step.get("timeout", defaults.get("timeout", 300))]
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
        return False
    return 0 < numbers[0] and numbers[0] >= numbers[1]


def _wait_longer_than_its_timeout(step: dict) -> bool:
    wait = step.get("wait") if isinstance(step, dict) else None
    if not isinstance(wait, dict):
        return False
    numbers = [wait.get("seconds"), wait.get("timeout", step.get("timeout"))]
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
        return False
    return numbers[0] > numbers[1]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_documents(templates=False))
def test_without_templates_the_loader_and_the_schema_agree(document):
    """Without templates and sweeps, the loader and the schema accept exactly the same batches
    (duplicate output files aside: only the loader sees across steps)."""
    files = [s["write"].get("output_file") for s in document["steps"] if isinstance(s.get("write"), dict)]
    if len(files) != len(set(map(str, files))):
        return
    if any(_wait_longer_than_its_timeout(s) for s in document["steps"]):
        return  # a relation of two numbers: the loader's (LOADER_ONLY)
    if any(_settle_longer_than_its_timeout(s, document.get("defaults") or {}) for s in document["steps"]):
        return  # likewise
    text = json.dumps(document)
    assert loads(text) == (not schema_errors(text)), schema_errors(text)


def test_json_in_and_yaml_out_agree():
    """The schema instance of a batch is what the loader read: YAML 1.2 types, keys as text."""
    assert {"version": 1, "vars": {"s": "NO", "n": 123}, "steps": [{"stop": None}]} == as_json(
        "version: 1\nvars: {s: NO, n: 0123}\nsteps:\n  - stop:\n"
    )

