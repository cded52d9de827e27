"""daq-sim of the current Standard DAQ generation: ``std_det_driver``'s WebSocket, the config
REST, simulated writers and detector (``daq-sim --generation driver``).

Needs the ``sim`` extra. Modules: :mod:`.core` (state machine, writers, restarts, faults),
:mod:`.websocket` (sessions of both driver builds), :mod:`.rest` (the config REST),
:mod:`.hdf5` (a writer's file), :mod:`.server` (:class:`SimulatedDriverDaq`).
"""

from .core import DEFAULT_DRIVER_CONFIG, DriverSimSettings
from .server import SimulatedDriverDaq

__all__ = ["SimulatedDriverDaq", "DriverSimSettings", "DEFAULT_DRIVER_CONFIG"]
