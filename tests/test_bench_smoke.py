"""The benchmark script still runs (CI runs tests, not benchmarks: this is --quick)."""

from __future__ import annotations

import os
import subprocess
import sys

from daq_runner.testing import skip_without_redis_server

from .conftest import REPO


def test_bench_all_quick_runs(tmp_path):
    """bench/bench_all.py --quick completes and prints every section (its files under tmp_path)."""
    skip_without_redis_server()  # it starts daq-sim and a simulator of its own
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_all.py"), "--quick"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert 0 == proc.returncode, proc.stderr
    for section in ("Per-step cost", "Reaction latency", "round trip", "Start-up", "Config -> write sweep"):
        assert section in proc.stdout
