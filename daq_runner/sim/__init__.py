"""daq-sim: a simulated Standard DAQ (REST API, Redis streams, HDF5 files, fault injection).

Needs the ``sim`` extra: ``pip install 'daq-runner[sim]'``.
"""

from .daq import DEFAULT_CONFIG, SimSettings
from .redis_server import RedisServer
from .server import SimulatedDaq

__all__ = ["SimulatedDaq", "SimSettings", "RedisServer", "DEFAULT_CONFIG"]
