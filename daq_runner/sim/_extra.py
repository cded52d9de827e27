"""Is the ``sim`` extra installed? One clear line instead of "No module named 'uvicorn'".

The simulator imports its heavy modules lazily (uvicorn and FastAPI at start, h5py and
numpy at the first write), so without this check a client-only install would fail late,
or even report itself ready and fail at the first write.
"""

from __future__ import annotations

import importlib

from ..exceptions import DaqRunnerError

__all__ = ["SIM_EXTRA_HINT", "SIM_MODULES", "SimExtraMissing", "require_sim_extra"]

SIM_EXTRA_HINT = "pip install 'daq-runner[sim]'"

# The import names of the ``sim`` extra's Python packages in pyproject.toml (its server
# binary is found by redis_server.find_redis_server). tests/test_packaging.py keeps the
# two lists in step.
SIM_MODULES = ("fastapi", "uvicorn", "h5py", "numpy")


class SimExtraMissing(DaqRunnerError, ImportError):
    """A module of the ``sim`` extra cannot be imported; the message says what to install."""


def require_sim_extra() -> None:
    """Import the ``sim`` extra's modules (they are needed right after anyway).

    Raises:
        SimExtraMissing: one of them is missing or broken; the message names it and gives
            ``pip install 'daq-runner[sim]'``.
    """
    for name in SIM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SimExtraMissing(f"the simulator needs the sim extra: {SIM_EXTRA_HINT} ({exc})", name=name) from exc
