"""The simulated DAQ of ``daq-run --sim``: its life cycle and where its files go.

- :class:`EmbeddedSim` starts a simulator with a small detector (48 x 48 pixels, so that the
  demo writes a few MB): the rest_v2 DAQ with its own Redis-compatible server, or the current
  generation (``--sim-generation driver``: the driver's WebSocket and the config REST, two
  writers, no Redis); and stops it.
- :class:`SimOutput` is a fresh folder for the run's files, named at the start and the end,
  removed when it stayed empty.
- The one rule about variables (:func:`replaces_root`): a batch variable named ``root`` that
  the command line does not set becomes the fresh folder, and daq-run says so; every other
  variable keeps its value, so a batch that names its folder otherwise writes where it says,
  and daq-run says that too (:func:`start_lines`).

Imported only with ``--sim``: the simulator's modules stay out of ``--help`` and real runs.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, List, Mapping, Optional

from ..exceptions import DaqRunnerError, SetupError
from ..targets import DRIVER, REST_V2, DaqTarget

__all__ = ["EmbeddedSim", "SimOutput", "SimStartError", "replaces_root", "start_lines", "ROOT_VAR", "IMAGE_SIZE", "FRAME_RATE", "DRIVER_BLOCK_BYTES", "DRIVER_RESTART_S"]

ROOT_VAR = "root"
"""The batch variable ``--sim`` points at its fresh folder (the output folder of the shipped batches)."""
IMAGE_SIZE = 48  # pixels a side: the demo writes a few MB
FRAME_RATE = 1000.0  # images per second by default
DRIVER_BLOCK_BYTES = 64 * 1024  # the simulated writers' files grow by chunks of this (gpfs_block_size)
DRIVER_RESTART_S = 0.5  # how long the simulated services are down after a stored config
_PREFIX = "daq-run-sim-"
_LISTED = 3  # folders named in a line; the rest are counted


class SimStartError(DaqRunnerError, RuntimeError):
    """The simulator did not start (``daq-run`` exits 3, as for a DAQ it cannot reach)."""


class EmbeddedSim:
    """A simulated DAQ for one run, in this process.

    Args:
        frame_rate: images per second its detector sends (default :data:`FRAME_RATE`).
        redis: whether the run uses its Redis (``False``: ``--no-redis``; the simulator
            still has one for itself).
        generation: ``rest_v2`` (the default) or ``driver`` (the current generation: no Redis;
            its services restart in :data:`DRIVER_RESTART_S` after a stored config).

    Raises (from :meth:`start`):
        SetupError: the ``sim`` extra or a Redis-compatible server is missing: a set-up
            problem of this machine with a one-command fix (the message gives it).
        SimStartError: anything else that kept it from starting.
    """

    def __init__(self, frame_rate: Optional[float] = None, redis: bool = True, generation: str = REST_V2) -> None:
        self.frame_rate = frame_rate or FRAME_RATE
        self.use_redis = redis
        self.generation = generation
        self._sim: Any = None

    def start(self) -> "EmbeddedSim":
        from ._extra import SimExtraMissing, require_sim_extra

        try:
            require_sim_extra()
        except SimExtraMissing as exc:
            raise SetupError(f"--sim: {exc}") from None
        from . import DEFAULT_CONFIG, DEFAULT_DRIVER_CONFIG, DriverSimSettings, SimSettings, SimulatedDaq, SimulatedDriverDaq
        from .redis_server import RedisServerNotFound

        size = {"image_pixel_height": IMAGE_SIZE, "image_pixel_width": IMAGE_SIZE}
        try:
            if self.generation == DRIVER:
                config = {**DEFAULT_DRIVER_CONFIG, **size, "gpfs_block_size": DRIVER_BLOCK_BYTES}
                settings = DriverSimSettings(frame_rate=self.frame_rate, restart_s=DRIVER_RESTART_S)
                self._sim = SimulatedDriverDaq(config=config, settings=settings).start()
            else:
                self._sim = SimulatedDaq(config={**DEFAULT_CONFIG, **size}, settings=SimSettings(frame_rate=self.frame_rate)).start()
        except RedisServerNotFound as exc:
            raise SetupError(f"--sim: {exc}") from None
        except Exception as exc:
            raise SimStartError(f"cannot start the simulator: {exc}") from None
        return self

    @property
    def target(self) -> DaqTarget:
        """The DAQ the run drives (after :meth:`start`)."""
        if self._sim is None:
            raise RuntimeError("the simulator is not started")
        if self.generation == DRIVER:
            unlocked = "--sim: the simulated driver has no Redis; the run is unlocked"
            return DaqTarget(self._sim.ws_url, None, "--sim", unlocked, generation=DRIVER, config_url=self._sim.url, config_url_source="--sim")
        redis = self._sim.redis_url if self.use_redis else None
        return DaqTarget(self._sim.url, redis, "--sim", "--sim" if self.use_redis else "--no-redis")

    def stop(self) -> None:
        """Stop the simulator and its Redis (nothing happens when it is not running)."""
        if self._sim is not None:
            self._sim.stop()
            self._sim = None

    def __enter__(self) -> "EmbeddedSim":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def replaces_root(batch_vars: Mapping[str, Any], given: Mapping[str, Any]) -> bool:
    """Whether ``--sim`` sets the batch's ``root`` to a fresh folder: the batch declares
    ``root`` and the command line does not set it (``given``: the ``--var`` values). No
    other variable is ever replaced."""
    return ROOT_VAR in batch_vars and ROOT_VAR not in given


def start_lines(batch: Any, output: Optional["SimOutput"] = None, *, quiet: bool = False) -> List[str]:
    """What to tell before a ``--sim`` run: the variable set to the fresh folder ``output``,
    and every folder the batch's writes go to (not with ``quiet``: a replaced variable is
    told even then)."""
    lines = []
    if output is not None:
        lines.append(
            f"--sim: {output.var} is {output.folder}, a fresh folder, instead of the batch's {output.replaced!s} "
            f"(--sim sets only a variable named {ROOT_VAR}; --var {ROOT_VAR}=DIR chooses the folder)"
        )
    if quiet:
        return lines
    folders = sorted({os.path.dirname(step.output_file) for step in batch.steps if getattr(step, "output_file", None)})
    others = [f for f in folders if output is None or not output.holds(f)]
    if output is not None and len(others) < len(folders):
        lines.append(f"the simulated DAQ writes into {output.folder}")
    if others:
        shown = ", ".join(others[:_LISTED]) + (f" and {len(others) - _LISTED} more" if len(others) > _LISTED else "")
        lines.append(f"the simulated DAQ writes into {shown}, as the batch says")
    return lines


class SimOutput:
    """A fresh folder for the files of a ``--sim`` run, the value of the batch's ``root``.

    Args:
        replaced: the batch's own value of ``root``.
        create: make it now (``False``, for ``--dry-run``: only name where it would be).

    Attributes:
        folder: its absolute path; var: the variable it is the value of (:data:`ROOT_VAR`).
    """

    def __init__(self, replaced: Any, create: bool = True) -> None:
        self.var, self.replaced, self.created, self.announced = ROOT_VAR, replaced, create, False
        folder = tempfile.mkdtemp(prefix=_PREFIX) if create else os.path.join(tempfile.gettempdir(), _PREFIX + "NEW")
        self.folder = os.path.abspath(folder)

    def holds(self, path: str) -> bool:
        """Whether ``path`` is the folder or inside it."""
        path = os.path.abspath(path)
        return path == self.folder or path.startswith(os.path.join(self.folder, ""))

    def announce(self, batch: Any, *, quiet: bool = False) -> List[str]:
        """What to tell before the run (:func:`start_lines`); :meth:`finish` then tells the end."""
        self.announced = True
        return start_lines(batch, self, quiet=quiet)

    def finish(self) -> Optional[str]:
        """Remove the folder if it stayed empty; what to tell after the run: ``None`` for a
        folder that was only named, or not announced (a run that did not start)."""
        if not self.announced:
            self.discard()
            return None
        if not self.created:
            return None
        try:
            os.rmdir(self.folder)  # only an empty folder goes
        except OSError:
            return f"files written by the simulated DAQ are in {self.folder}"
        return f"the simulated DAQ wrote no files (removed the empty {self.folder})"

    def discard(self) -> None:
        """Remove the folder if it is empty, saying nothing (a run that did not start);
        :meth:`finish` then has nothing to tell."""
        if self.created:
            self.created = False
            try:
                os.rmdir(self.folder)
            except OSError:
                pass
