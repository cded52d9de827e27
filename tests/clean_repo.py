"""A pytest plugin that fails the session when the tests leave new files in the repository.

Tests write only under pytest's temporary folders: a report written into the current folder,
or a cache in the working tree, would end up in a user's checkout (or a commit).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Set

import pytest

# Not files of a test: git's own, Python's bytecode, the install's metadata, pytest's cache.
SKIPPED_DIRS = {".git", "__pycache__", ".pytest_cache"}


def files_under(root: Path) -> Set[str]:
    """Paths (relative to ``root``) of every file under it, but for :data:`SKIPPED_DIRS` and ``*.egg-info``."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        found.update(os.path.relpath(os.path.join(folder, name), root) for name in files)
    return found


class CleanRepo:
    """Register with ``config.pluginmanager.register(CleanRepo(root))``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.before: Optional[Set[str]] = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.before = files_under(self.root)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: Any) -> None:
        if self.before is None:
            return
        new = sorted(files_under(self.root) - self.before)
        if new:
            shown = ", ".join(new[:10]) + (f" and {len(new) - 10} more" if len(new) > 10 else "")
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            message = f"the tests left new files in {self.root}: {shown} (tests write only under pytest's temporary folders)"
            if reporter is not None:
                reporter.write_line(message, red=True)
            else:
                print(message)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
