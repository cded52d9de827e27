"""The README and the pages it leads to: links that resolve, commands that parse, batches that validate."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from daq_runner import run_cli, show, std_cli
from daq_runner.batch import load_batch_text
from daq_runner.exit_codes import RunExit, ShowExit, StdCliExit
from daq_runner.sim import cli as sim_cli

from .conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "ARCHITECTURE.md", REPO / "BENCHMARKS.md", REPO / "examples" / "README.md"]
SETUP_MAIN = "pip install -e '.[sim]' && daq-run --sim batches/demo.yaml"
SETUP_TESTS = "pip install -e '.[test]' && python -m pytest -q"

_FENCE = re.compile(r"^(\s*)(```+|~~~+)(\S*)")
_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def _lines_outside_code(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) of the text that is not inside a fenced code block, inline code removed."""
    fence: Optional[str] = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(2)[:3]
                continue
            if match.group(2).startswith(fence):
                fence = None
                continue
        if fence is None and not line.startswith("    "):
            yield number, re.sub(r"`+[^`]*`+", "", line)


def code_blocks(text: str) -> List[Tuple[str, str]]:
    """(language, body) of every fenced code block, in order (an indented fence too)."""
    blocks, language, body, fence, indent = [], "", [], None, ""
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence, indent, language, body = match.group(2)[:3], match.group(1), match.group(3), []
        elif fence is not None and match and match.group(2).startswith(fence):
            blocks.append((language, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line[len(indent):] if line.startswith(indent) else line)
    return blocks


def github_anchors(text: str) -> set:
    """The #anchors GitHub gives the headings of a Markdown text (duplicates get -1, -2...)."""
    anchors, seen = set(), {}  # type: ignore[var-annotated]
    for _, line in _lines_outside_code(text.replace("`", "")):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))  # a link's text
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(page: Path) -> List[str]:
    """Every relative link of ``page`` whose file or #anchor does not exist, as 'page:line: target'."""
    text = page.read_text(encoding="utf-8")
    problems = []
    for number, line in _lines_outside_code(text):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            where = f"{page.relative_to(REPO) if page.is_relative_to(REPO) else page}:{number}: {target}"
            linked = (page.parent / path_part).resolve() if path_part else page
            if not linked.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in github_anchors(linked.read_text(encoding="utf-8")):
                problems.append(f"{where} (no such heading)")
    return problems


def readme_commands() -> List[List[str]]:
    """The commands of daq-runner's tools in the README's code blocks, as argument lists."""
    commands = []
    for language, body in code_blocks(README.read_text(encoding="utf-8")):
        if language not in ("bash", "sh", ""):
            continue
        for line in body.splitlines():
            line = re.sub(r"^(\S+\s+){5}(?=daq-run|daq-sim|std_cli_)", "", line.strip())  # a crontab line's times
            if line.startswith("#") or not line:
                continue
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv and (argv[0] in ("daq-run", "daq-sim") or argv[0].startswith("std_cli_")):
                    commands.append(argv)
    return commands


def parse_command(argv: List[str]) -> None:
    """Parse ``argv`` with the tool's own parser and option checks (no DAQ is asked)."""
    program, args = argv[0], argv[1:]
    if program == "daq-run" and args[:1] == ["show"]:
        show._parser().parse_args(args[1:])
    elif program == "daq-run":
        parsed = run_cli._parser().parse_args(args)
        run_cli._check_options(parsed)
        run_cli._notifications(parsed)
    elif program == "daq-sim":
        sim_cli._parse(args)
    else:
        std_cli._parser(program, std_cli.TOOLS[program]).parse_args(args)


def section(text: str, heading: str) -> str:
    """The text under the ``## heading`` (up to the next ## heading)."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    """Each relative link of the page names a file that exists and, with #anchor, a heading of it."""
    assert [] == broken_links(page)


def test_a_broken_link_or_anchor_is_found(tmp_path):
    """The link check finds a missing file, a missing heading and a link to a heading as GitHub names it."""
    (tmp_path / "other.md").write_text("# Other\n\n## The `--sim` option: one rule\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#the---sim-option-one-rule) [ok](other.md#twice-1) [self](#here)\n\n## Here\n\n"
        "[gone](missing.md) [no heading](other.md#nowhere) `[in code](missing.md)`\n\n```\n[in a block](missing.md)\n```\n",
        encoding="utf-8",
    )
    assert [f"{page}:5: missing.md (no such file)", f"{page}:5: other.md#nowhere (no such heading)"] == broken_links(page)


def test_the_readmes_commands_parse_with_the_tools_own_parsers():
    """Every daq-run, daq-sim and std_cli command the README shows is accepted by its parser."""
    commands = readme_commands()
    assert {"daq-run"} <= {argv[0] for argv in commands} and any(argv[1:2] == ["show"] for argv in commands)
    for argv in commands:
        try:
            parse_command(argv)
        except SystemExit as exc:  # argparse's one line is on stderr
            pytest.fail(f"{shlex.join(argv)}: rejected by its parser (exit {exc.code})")


def test_a_command_the_tools_reject_is_found():
    """The command check fails on an option that does not exist and on options that contradict."""
    for argv in (["daq-run", "--sim", "--no-such-option", "b.yaml"], ["daq-run", "show", "--pdf", "r.json"], ["std_cli_get_logs", "-n"]):
        with pytest.raises(SystemExit):
            parse_command(argv)
    with pytest.raises(Exception, match="--quiet and --log-format"):
        parse_command(["daq-run", "--quiet", "--log-format", "json", "b.yaml"])


@pytest.mark.parametrize("page", [README, REPO / "docs" / "batch-reference.md"], ids=lambda page: str(page.relative_to(REPO)))
def test_the_batch_files_shown_validate(page):
    """Each batch file a page shows (a YAML block with version: 1) loads without a mistake (commands allowed, as the page says)."""
    batches = [body for language, body in code_blocks(page.read_text(encoding="utf-8")) if language == "yaml" and body.startswith("version: 1")]
    assert batches
    for body in batches:
        batch = load_batch_text(body, f"{page.name}.yaml", allow_commands=True)
        assert batch.steps


def test_the_readme_shows_the_two_set_up_commands_as_ci_runs_them():
    """The README's set-up section has the main job and the test command, and .ci/run runs that test command."""
    setup = section(README.read_text(encoding="utf-8"), "Set up: two commands")
    assert [("bash", SETUP_MAIN), ("bash", SETUP_TESTS)] == code_blocks(setup)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    install, test = SETUP_TESTS.split(" && ")
    assert "-m pip install --quiet --disable-pip-version-check " + install.split("pip install ", 1)[1] in ci
    lines = ci.splitlines()
    marker = next(i for i, line in enumerate(lines) if "README's test command, exactly" in line)
    assert test == lines[marker + 1].strip()


def test_the_synopsis_of_daq_run_has_every_option_and_no_other():
    """docs/running.md's synopsis of daq-run names each of its options (but --help, --version, --verbose) and none it lacks."""
    page = (REPO / "docs" / "running.md").read_text(encoding="utf-8")
    (synopsis,) = [body for _, body in code_blocks(section(page, "The command line"))]
    run_lines = "\n".join(line for line in synopsis.splitlines() if "daq-run show" not in line)
    shown = set(re.findall(r"--[a-z][a-z0-9-]*", run_lines))
    assert set(run_cli._long_options()) - {"--help", "--version", "--verbose"} == shown
    shown_show = set(re.findall(r"--[a-z][a-z0-9-]*", synopsis)) - shown
    assert shown_show <= {o for action in show._parser()._actions for o in action.option_strings}


def exit_table(page: Path, heading: str) -> Dict[int, str]:
    """{code: meaning} of the exit-code table under ``heading`` (## or ###) of ``page``."""
    text = page.read_text(encoding="utf-8")
    under = re.split(rf"^#{{2,3}} {re.escape(heading)}\n", text, maxsplit=1, flags=re.M)[1]
    under = re.split(r"^#{2,3} ", under, maxsplit=1, flags=re.M)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+?) \|", under, flags=re.M)}


@pytest.mark.parametrize(
    "page, heading, enum",
    [
        (README, "Exit codes of daq-run", RunExit),
        (REPO / "docs" / "running.md", "Exit codes", RunExit),
        (REPO / "docs" / "report.md", "Exit codes of daq-run show", ShowExit),
        (REPO / "docs" / "client.md", "Exit codes of the std_cli tools", StdCliExit),
    ],
    ids=["README", "running", "show", "std_cli"],
)
def test_the_exit_code_tables_are_the_enums(page, heading, enum):
    """Each exit-code table of the docs is its tool's enum in daq_runner/exit_codes.py, code for code, meaning for meaning."""
    assert {code.value: code.meaning for code in enum} == exit_table(page, heading)


def test_the_readme_is_a_first_read():
    """About 150 lines, in the order a newcomer needs them."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 170
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert [
        "Set up: two commands",
        "Your first batch",
        "Reading the report",
        "A cron recipe",
        "Exit codes of daq-run",
        "Where to go next",
    ] == headings
    assert ["--quiet", "--report-dir", "--notify", "--heartbeat"] == [option for option in ("--quiet", "--report-dir", "--notify", "--heartbeat") if option in section(text, "A cron recipe")]
    first_batch = section(text, "Your first batch")
    for step in ("--dry-run", "daq-run show", "--resume", "--sim"):
        assert step in first_batch, step
