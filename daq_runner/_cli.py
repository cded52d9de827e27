"""What every command-line tool of daq-runner shares."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["OneLineArgumentParser"]

# 2 is bad usage in every tool (see exit_codes).
_EXIT_USAGE = 2


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(_EXIT_USAGE)
