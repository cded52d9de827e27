"""The check that the test suite leaves the repository as it found it (tests/clean_repo.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from .conftest import REPO


def test_a_session_that_leaves_a_file_in_the_repository_fails(tmp_path):
    """A test writing into the checkout (as one wrote a report into the current folder) fails the
    session, naming the file; one writing under tmp_path does not."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            sys.path.insert(0, {str(REPO / "tests")!r})
            from clean_repo import CleanRepo

            def pytest_configure(config):
                config.pluginmanager.register(CleanRepo(Path(__file__).parent), "clean-repo")
            """
        )
    )
    (repo / "test_x.py").write_text(
        "import os\n\ndef test_tidy(tmp_path):\n    (tmp_path / 'r.json').write_text('{}')\n\n"
        "def test_messy():\n    if os.environ.get('MESSY'):\n        open('night.report.json', 'w').close()\n"
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:valkey", "test_x.py"]
    tidy = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=60)
    assert 0 == tidy.returncode, tidy.stdout
    messy = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=60, env={"MESSY": "1", "PATH": ""})
    assert 1 == messy.returncode and "2 passed" in messy.stdout
    assert f"the tests left new files in {repo}: night.report.json" in messy.stdout
