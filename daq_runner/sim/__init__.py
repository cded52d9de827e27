"""daq-sim: a simulated Standard DAQ (REST API, Redis streams, HDF5 files, fault injection), and
the current generation's driver WebSocket and config REST (:mod:`.driver`).

Needs the ``sim`` extra: ``pip install 'daq-runner[sim]'``.
"""

import logging

from .daq import DEFAULT_CONFIG, SimSettings
from .driver import DEFAULT_DRIVER_CONFIG, DriverSimSettings, SimulatedDriverDaq
from .redis_server import RedisServer
from .server import SimulatedDaq

__all__ = ["SimulatedDaq", "SimSettings", "RedisServer", "DEFAULT_CONFIG", "SimulatedDriverDaq", "DriverSimSettings", "DEFAULT_DRIVER_CONFIG"]

# A library's messages reach only the handlers its program configures: without this,
# Python's last-resort handler would print the simulator's warnings into the terminal of
# a program that embeds it (daq-run --sim). daq-sim configures logging itself.
logging.getLogger(__name__).addHandler(logging.NullHandler())
