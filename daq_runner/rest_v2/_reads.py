"""What a rest_v2 DAQ says without being changed: its configuration, its last deployment, the
detector's and the writer's rates.

Apart from the rest of the package, which follows acquisitions on Redis streams: an estimate
(``daq-run --validate``, ``--dry-run``) reads these through :class:`RestV2Reads` without
importing a Redis client (about 9 MB and 0.1 s of every such command).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .. import protocol
from ..client import StdDaqClient
from ..daq import REST_V2, Rates

__all__ = ["RestV2Reads", "CONFIG_RESTART_S"]

CONFIG_RESTART_S = 2.6
"""Seconds a stored config usually keeps a rest_v2 DAQ's services from taking a write: they go
down about 1 s after the deployment's SUCCESS and are seen back within a statistics period of
coming up (2.6 s on daq-sim's real timings, BENCHMARKS.md)."""


class RestV2Reads:
    """The reads of a rest_v2 DAQ that change nothing, on ``client`` (a :class:`StdDaqClient`),
    and what the generation has (the class attributes of :class:`~daq_runner.daq.Daq`).

    :class:`~daq_runner.rest_v2.RestV2Daq` has both from here.

    Raises (each method): what the client raises (:class:`~daq_runner.exceptions.DaqError`).
    """

    generation = REST_V2
    title = "the rest_v2 Standard DAQ"
    features = frozenset({"deployment", "rates", "log", "unknown_state"})
    config_restart_s = CONFIG_RESTART_S
    client: StdDaqClient
    _rates_client: Optional[StdDaqClient] = None  # a run's own client for the rates (asked from a guard's thread)

    def __init__(self, client: StdDaqClient) -> None:
        self.client = client

    def read_config(self) -> Dict[str, Any]:
        """The configuration in force (``{}`` when the DAQ has none)."""
        return dict(self.client.get_config() or {})

    def read_deployment(self) -> Dict[str, Any]:
        """The last deployment's status (``config_id``, ``status``, ``servers``, ``stats``)."""
        return dict(self.client.get_deployment_status())

    def read_rates(self) -> Rates:
        """The detector's and the writer's images per second, from the DAQ's statistics."""
        stats: Any = (self._rates_client or self.client).get_stats() or {}
        detector = float(((stats.get("detector") or {}).get("images_per_second")) or 0.0)
        return Rates(detector, protocol.writer_rate(stats))
