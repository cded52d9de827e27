"""rest_v2: the configuration every write of a run runs with, proven before the write starts.

The rules (docs/batch-reference.md, "What the steps do on a real DAQ"):

- **Known.** The run knows the configuration in force: the DAQ's at its start, then each one its
  own config steps store. Before every write the newest ``daq:config`` entry (read in the same
  Redis round trip as the write's cursors, or ``GET /daq/config`` without Redis) must be it.
- **Foreign configs.** A config the run did not store (someone else's, a DAQ that came back with
  another) is applied over again where it changed a field the run set: before the write, as a
  recovery naming the foreign config's id and time. One that keeps what the run set is taken
  on (a notice says so). A run that set nothing goes on with it (a notice).
- **After a reset.** After any reset of the writer (found UNKNOWN before or during a write), the
  fields the run set are compared with the DAQ's and applied again where they differ.
- **The restart.** Every stored config restarts the DAQ's services about a second after its
  deployment reports SUCCESS, while the writer still shows READY: no write starts before they
  are back (:meth:`~daq_runner.rest_v2._feed.StatusFeed.restart_signs`). A "Cannot reach
  WRITING" within :data:`~daq_runner._restart.RESTART_WINDOW_S` of a deployment is that
  restart: the writer is reset and the write started again once (a recovery, not a retry),
  only when it provably did not start.
- **Stored during a write.** A config the run did not store, stored while one of its writes runs,
  restarts the DAQ's services under the acquisition, which loses it (and wedges the writer
  driver of a real DAQ): the write fails at once with that cause, whatever the statuses still
  say (:meth:`ConfigWatch.stored_during`); a retry then applies the run's fields again first.
- **No configuration.** A DAQ without one (its Redis came back empty) refuses every write: the
  write fails with that reason (:class:`~daq_runner.exceptions.DaqNotConfigured`).

A write's record names the config id proven before it started (``config_id``): an acquisition
that ends complete ran with it (a config stored during it restarts the services under it, which
loses it).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Protocol, Set

from .. import events, protocol
from .._deadline import current
from .._foreign_config import differing, record_reapplied, shown
from .._restart import RESTART_WINDOW_S, RestartSigns
from .._text import quote
from ..batch import Step
from ..client import MAX_TIMEOUT_S, ConfigUpdate, DeploymentHook, StdDaqClient
from ..daq import RunServices
from ..exceptions import DaqNotConfigured, StepFailed
from ..record import StepRecord, iso
from ._feed import ConfigEntry, StatusFeed, Tap, entry_time

__all__ = ["ConfigWatch", "NO_CONFIG"]

NO_CONFIG = (
    "the DAQ has no configuration (GET /daq/config: {message!r}; its Redis came back empty?): it refuses every "
    "write and config until its REST server restarts and deploys its config file"
)


class _Daq(Protocol):
    """What the watch uses of the rest_v2 DAQ it belongs to (:class:`~daq_runner.rest_v2.RestV2Daq`)."""

    client: StdDaqClient
    feed: StatusFeed
    run: RunServices

    def ready_status(self, step: Any, record: StepRecord, purpose: Optional[str] = "the write") -> dict: ...


class _Deployed:
    """A deployment whose restart of the services may not be over: ``config_id``, when it
    reported SUCCESS on the DAQ's Redis clock (``None``: unknown), and on this machine's."""

    __slots__ = ("config_id", "at", "seen")

    def __init__(self, config_id: Optional[str], at: Optional[float]) -> None:
        self.config_id = config_id
        self.at = at
        self.seen = time.monotonic()


class ConfigWatch:
    """The configuration of one run on a rest_v2 DAQ: known, proven before each write, restored.

    Attributes:
        known: the config id the run's writes run with (``None``: the DAQ has none).
        ours: the config ids this run stored.
        due: the fields the run set must be compared with the DAQ's before the next write
            (at the start, after a writer reset).
    """

    def __init__(self, daq: _Daq) -> None:
        self.daq = daq
        self.known: Optional[str] = None
        self.proven: ConfigEntry = (None, None)  # the last config a write was proven to run with
        self.ours: Set[str] = set()
        self.due = True
        self._restart: Optional[_Deployed] = None  # its restart not seen over yet
        self._window: Optional[_Deployed] = None  # the last deployment: "Cannot reach WRITING" soon after it is its restart
        self._window_used: Set[Optional[str]] = set()
        self._started = False

    @property
    def run(self) -> RunServices:
        return self.daq.run

    # -- what the DAQ has ------------------------------------------------------------------------

    def start(self) -> None:
        """Before the first step: the configuration in force is the run's starting point (and,
        with Redis, every write's mark looks at ``daq:config`` from now on)."""
        seen = self.daq.feed.watch_config()
        self.known = (seen if seen is not None else self._read())[0]
        self._started = True

    def _read(self) -> ConfigEntry:
        """The DAQ's newest config over REST: ``(config_id, config)``."""
        envelope = self.daq.client.request(protocol.DAQ_CONFIG_GET)
        return envelope.get("config_id"), envelope.get("config")

    def newest(self) -> ConfigEntry:
        """The newest config: as the write's mark read it from Redis, else over REST."""
        feed = self.daq.feed
        if not feed.config_fresh:
            return self._read()
        config_id, config = feed.config_seen
        if config_id is not None:
            config = protocol.check_stream_entry(feed.streams.config, config, feed.streams, config_id)
        return config_id, config

    # -- before a write --------------------------------------------------------------------------

    def prove(self, step: Step, record: StepRecord) -> bool:
        """Before a write: make sure the DAQ runs the run's configuration (:attr:`known`),
        restarted. Returns True when it acted (applied a config, waited for a restart): the
        caller then looks at the DAQ again before sending.

        Raises:
            DaqNotConfigured: the DAQ has no configuration.
            StepFailed: the services went down after a deployment and did not come back.
        """
        if not self._started:
            self.start()  # the DAQ could not be prepared before the first step: its config now is the start
        config_id, config = self.newest()
        if config is None:
            raise DaqNotConfigured(NO_CONFIG.format(message=protocol.MESSAGE_NO_CONFIG) + "; the write was not started")
        if config_id != self.known:
            if config_id in self.ours:
                self.known = config_id
            else:
                self._foreign(step, record, config_id, config)
                return True
        established = self.run.established
        if self.due:
            self.due = False
            changes = differing(config, established)
            if changes:
                self.apply(
                    step,
                    record,
                    changes,
                    f"the DAQ's configuration changed under the run ({shown(config, changes)}), found after its writer was reset (a DAQ restart?)",
                )
                return True
        if self._restart is not None:
            self.wait_restart(step, record)
            return True
        self.proven = (config_id, config)
        return False

    # -- during a write --------------------------------------------------------------------------

    def tap(self, config_id: Optional[str]) -> Tap:
        """A tap on ``daq:config`` from ``config_id``, the config a write started with (proven
        just before it), for the waits that follow it (``StatusFeed.wait_for_status(configs=...)``):
        a write followed later (in the background) misses no config stored since its start."""
        return Tap(self.daq.feed.streams.config, config_id)

    def stored_during(self, configs: Tap, ran_with_id: Optional[str]) -> Optional[str]:
        """Why the write followed with ``configs`` (see :meth:`tap`), started with config
        ``ran_with_id``, is lost: a config the run did not store was stored meanwhile (its
        restart of the services loses the acquisition); ``None`` when all it read were this
        run's own. Empties the tap.

        Raises:
            DaqProtocolError: the config entry has the wrong shape.
        """
        stored = [(config_id, config) for config_id, config in configs.entries if config_id not in self.ours]
        configs.entries.clear()
        if not stored:
            return None
        feed = self.daq.feed
        config_id, config = stored[-1]
        config = protocol.check_stream_entry(feed.streams.config, config, feed.streams, config_id)
        ran_with = self.proven[1] if self.proven[0] == ran_with_id else None
        others = f" (and {len(stored) - 1} more)" if len(stored) > 1 else ""
        return (
            f"config {config_id}{others} ({_changed(ran_with, config, ran_with_id)}), by someone else at "
            f"{iso(entry_time(config_id))}, stored while this write ran: the DAQ's services restart under the acquisition"
        )

    def _foreign(self, step: Step, record: StepRecord, config_id: Optional[str], config: Dict[str, Any]) -> None:
        """A config this run did not store is the newest: apply the run's fields over it where it changed them."""
        run = self.run
        what = f"the DAQ's configuration changed under the run: config {config_id} stored at {iso(entry_time(config_id)) if config_id else '?'} by someone else"
        changes = differing(config, run.established)
        self.known = config_id
        deployment = self.daq.client.get_deployment_status()
        at = _stop_time(deployment) if deployment.get("config_id") == config_id else None
        self._restart = self._window = _Deployed(config_id, at)
        if changes:
            self.apply(step, record, changes, f"{what} ({shown(config, changes)})")
            return
        if run.established:
            set_by_run = ", ".join(f"{key}={value}" for key, value in run.established.items())
            run.notice(f"{what}; it keeps what this run set ({set_by_run}): the writes go on with it", step)
        else:
            run.notice(f"{what}; this run set no configuration: its writes go on with it", step)

    def apply(self, step: Step, record: StepRecord, changes: Dict[str, Any], reason: str) -> ConfigUpdate:
        """Apply ``changes`` again (never under a running acquisition), wait for the restart,
        and record it as a recovery of ``step`` with ``reason``."""
        run = self.run
        self.daq.ready_status(step, record, "re-applying the configuration")
        applied = self.update(changes)
        record_reapplied(run, step, record, changes, reason, f"applied: config {applied.config_id}")
        self.wait_restart(step, record)
        return applied

    # -- stored configs and the restart of the services ------------------------------------------------

    def update(self, changes: Dict[str, Any], on_deployment: Optional[DeploymentHook] = None) -> ConfigUpdate:
        """Store ``changes`` (the whole config is sent) and wait for its deployment; it is the
        run's from now on. Without Redis the client waits for the restart too (over REST,
        from a baseline taken before the change); with Redis :meth:`wait_restart` does."""
        self.run.guard()
        # The step's bound ends it in any case; the client's own limit must be a number it takes.
        timeout = min(max(current().remaining(), 1e-3), MAX_TIMEOUT_S)
        applied = self.daq.client.update_config(changes, timeout=timeout, on_deployment=on_deployment, wait_restart=not self.daq.feed.using_redis)
        self.stored(applied)
        return applied

    def stored(self, applied: ConfigUpdate) -> None:
        """This run stored ``applied``: it is the run's now; its restart is waited for
        (unless the client waited for it already, ``applied.restart``)."""
        config_id = applied.config_id
        self.ours.add(config_id)  # type: ignore[arg-type]
        self.known = config_id
        deployed = _Deployed(config_id, _stop_time(applied.deployment))
        self._window = deployed
        self._restart = deployed if applied.restart is None else None

    def wait_restart(self, step: Step, record: StepRecord) -> Optional[Dict[str, Any]]:
        """Wait until the services restarted after the last deployment and are back (bounded by
        the step's time and the windows of :mod:`daq_runner._restart`); returns what was seen.

        Raises:
            StepFailed: they went down and did not come back in time.
        """
        deployed, self._restart = self._restart, None
        if deployed is None:
            return None
        left = current().remaining()
        self.run.emit(events.WAITING, step, what=f"the DAQ's services to restart with config {deployed.config_id}", seconds=left)
        signs: RestartSigns = self.daq.feed.restart_signs(deployed.at)
        if signs.down_at is not None and not signs.back:
            raise StepFailed(f"config {deployed.config_id} deployed, but {signs.describe()} (is the detector sending?)")
        if current().expired:
            raise StepFailed(f"timed out after {getattr(step, 'timeout', 0):g} s waiting for the DAQ's services to restart with config {deployed.config_id}")
        if not signs.back and signs.waited:
            self.run.notice(f"config {deployed.config_id}: {signs.describe()}; going on", step)
        return signs.outcome()

    def restart_hit(self) -> Optional[str]:
        """A write was answered "Cannot reach WRITING": when a deployment reported within the
        restart window (once per deployment), that is its restart; says which, else ``None``.
        Its restart is then waited for again before the next start."""
        deployed = self._window
        if deployed is None or deployed.config_id in self._window_used:
            return None
        since = time.monotonic() - deployed.seen
        if since > RESTART_WINDOW_S:
            return None
        self._window_used.add(deployed.config_id)
        self._restart = deployed
        return f"{since:.1f} s after config {deployed.config_id} was deployed: the DAQ's services restarting with it"

    def writer_reset(self) -> None:
        """The writer was reset (found UNKNOWN): compare the configuration before the next write."""
        self.due = True


def _stop_time(deployment: Any) -> Optional[float]:
    stats = deployment.get("stats") if isinstance(deployment, dict) else None
    value = stats.get("stop_time") if isinstance(stats, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _changed(before: Optional[dict], after: Optional[dict], before_id: Optional[str]) -> str:
    """What ``after`` changed of ``before`` (the config ``before_id``), field by field."""
    if before is None:
        return f"the write ran with config {before_id}"
    after = after or {}
    changed = [
        key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key) and protocol.config_differences(after, {key: before.get(key)})
    ]
    if not changed:
        return f"the same fields as config {before_id}, which the write ran with"
    return ", ".join(f"{key}={quote(after.get(key))} instead of {quote(before.get(key))}" for key in changed)


