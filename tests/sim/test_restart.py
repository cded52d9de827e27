"""The restart of the DAQ's services after a deployment (``SimSettings.restart_s``), over HTTP and Redis.

On the real DAQ the deployment reports SUCCESS as soon as the deployers have written the
new config; the services (writer, detector) restart about a second later while the REST
server still shows its old status. These tests set ``restart_s`` explicitly (its default
is 1 s) and shorten the driver's wait to 0.5 s.
"""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from daq_runner import protocol
from daq_runner.sim import SimSettings

from .conftest import entries, entry_time, faults, get, ok, post, refused, set_config_deployed, status

RESTART_DELAY_S = 0.4
RESTART_S = 1.2


@pytest.fixture
def restarting(daq_sim):
    """The session's simulator with a 1.2 s restart of its services, 0.4 s after a deployment reported."""
    settings = daq_sim.core.settings
    settings.restart_delay_s, settings.restart_s, settings.driver_timeout_s = RESTART_DELAY_S, RESTART_S, 0.5
    return daq_sim


def _deployed(sim, **changes):
    """Store the full config with ``changes``, wait for SUCCESS; the (epoch) time its last server reported."""
    set_config_deployed(sim, **changes)
    return ok(get(sim, "/daq/deployment"))["deployment"]["stats"]["stop_time"]


def _sleep_until(epoch):
    time.sleep(max(0.0, epoch - time.time()))


def test_the_default_is_the_real_restart():
    """By default the services go down 1 s after a deployment reported, for 1 s, and daq:stat
    shows zeros meanwhile (the real server's statistics logger runs in the REST server)."""
    assert (1.0, 1.0, "zeros") == (SimSettings().restart_s, SimSettings().restart_delay_s, SimSettings().stats_while_down)


def test_a_write_in_the_window_waits_the_driver_out_and_leaves_the_writer_unknown(restarting, tmp_path):
    """While the services are down the REST status still says READY and daq:status gets nothing; a
    write waits the driver out, "Cannot reach WRITING. ...", and the writer stays UNKNOWN after the
    window until a stop; then writes work, with the new config."""
    done = _deployed(restarting, bit_depth=8)
    _sleep_until(done + RESTART_DELAY_S + 0.1)
    assert {"state": "READY", "acquisition": None} == status(restarting)
    published = len(entries(restarting.redis_url, "daq:status"))
    began = time.monotonic()
    reply = post(restarting, "/writer/write_async", {"output_file": str(tmp_path / "lost.h5"), "n_images": 5})
    assert (protocol.MESSAGE_CANNOT_REACH_WRITING, True) == (refused(reply), time.monotonic() - began >= 0.5)
    assert not (tmp_path / "lost.h5").exists(), "the restarted writer never received the start"
    assert published == len(entries(restarting.redis_url, "daq:status"))
    _sleep_until(done + RESTART_DELAY_S + RESTART_S + 0.1)
    assert {"state": "UNKNOWN", "acquisition": None} == status(restarting)
    assert "READY" == ok(post(restarting, "/writer/stop", {}))["writer"]["state"]
    written = ok(post(restarting, "/writer/write_sync", {"output_file": str(tmp_path / "after.h5"), "n_images": 3}))
    assert ("FINISHED", 3) == (written["writer"]["acquisition"]["state"], written["writer"]["acquisition"]["stats"]["n_write_completed"])
    with h5py.File(tmp_path / "after.h5", "r") as f:
        assert np.uint8 == f["SIM-EIGER-64K/data"].dtype


def test_a_stop_in_the_window_answers_as_the_status_allows(restarting, tmp_path):
    """A stop reaches no writer while the services are down: on a READY writer the driver's first look
    finds READY ("Writing stopped."), on an UNKNOWN one it waits out ("Cannot reach READY. ...")."""
    done = _deployed(restarting, bit_depth=8)
    _sleep_until(done + RESTART_DELAY_S + 0.1)
    assert "Writing stopped." == ok(post(restarting, "/writer/stop", {}))["message"]
    faults(restarting, writer_state="UNKNOWN")
    assert protocol.MESSAGE_CANNOT_REACH_READY == refused(post(restarting, "/writer/stop", {}))


def test_daq_stat_shows_zeros_while_the_services_are_down_and_images_after(restarting):
    """The real server's statistics logger runs in the REST server: daq:stat goes on every interval,
    with 0 images/s of the detector while the services are down, and images again after."""
    interval = restarting.core.settings.heartbeat_s
    done = _deployed(restarting, bit_depth=8)
    down, back = done + RESTART_DELAY_S, done + RESTART_DELAY_S + RESTART_S
    _sleep_until(back + 2 * interval + 0.2)
    stats = [(entry_time(entry_id), stat["detector"]["images_per_second"]) for entry_id, stat in entries(restarting.redis_url, "daq:stat")]
    times = [t for t, _ in stats if t > done]
    assert all(interval - 0.1 <= b - a <= interval + 0.25 for a, b in zip(times, times[1:])), times
    assert all(rate == 0 for t, rate in stats if down + 0.02 < t < back - 0.02), stats
    assert any(rate == 0 for t, rate in stats if down < t < back), "at least one entry while down"
    assert all(rate > 0 for t, rate in stats if t < down - 0.02 or t > back + 0.02), stats


def test_daq_stat_is_silent_while_the_services_are_down_and_resumes_one_interval_after(restarting):
    """With stats_while_down "silence" (a logger that restarts with the services): no daq:stat entry
    while they are down; the first comes one stats interval after they are back, then one every
    interval, as at start."""
    restarting.core.settings.stats_while_down = "silence"
    interval = restarting.core.settings.heartbeat_s
    done = _deployed(restarting, bit_depth=8)
    down, back = done + RESTART_DELAY_S, done + RESTART_DELAY_S + RESTART_S
    _sleep_until(back + 3 * interval + 0.2)
    times = [entry_time(entry_id) for entry_id, _ in entries(restarting.redis_url, "daq:stat")]
    assert [] == [t for t in times if down + 0.02 < t < back], times
    after = [t for t in times if t >= back]
    assert interval - 0.1 <= after[0] - back <= interval + 0.25, (after[0] - back, interval)
    assert all(interval - 0.1 <= b - a <= interval + 0.25 for a, b in zip(after, after[1:])), after
    assert any(t < down for t in times), "entries came before the window"


def test_an_acquisition_running_when_the_services_go_down_is_lost_and_wedges_the_driver(restarting, tmp_path):
    """An acquisition running when the services go down is lost the real way: the status stays WRITING
    as last reported, every stop answers "Cannot reach READY" until the REST server restarts."""
    restarting.core.settings.frame_rate = 200
    done = _deployed(restarting, bit_depth=8)
    ok(post(restarting, "/writer/write_async", {"output_file": str(tmp_path / "a.h5"), "n_images": 100000, "run_id": 4}))
    _sleep_until(done + RESTART_DELAY_S + 0.2)
    lost = status(restarting)
    assert ("WRITING", 4) == (lost["state"], lost["acquisition"]["info"]["run_id"])
    time.sleep(0.3)
    assert lost == status(restarting)
    _sleep_until(done + RESTART_DELAY_S + RESTART_S + 0.1)
    for _ in range(2):
        assert protocol.MESSAGE_CANNOT_REACH_READY == refused(post(restarting, "/writer/stop", {}))
    faults(restarting, restart_server=True)
    assert "READY" == ok(post(restarting, "/writer/stop", {}))["writer"]["state"]
    assert {} == ok(get(restarting, "/daq/logs/5"))["logs"], "the lost acquisition was never logged"


def test_a_config_stored_while_a_restart_is_pending_restarts_the_services_again(restarting, tmp_path):
    """A second config stored before the first one's restart: both restart the services, the second
    keeps them down until RESTART_S after its own restart, and they come back with its config."""
    restarting.core.settings.stats_while_down = "silence"
    interval = restarting.core.settings.heartbeat_s
    done = _deployed(restarting, bit_depth=8)
    time.sleep(RESTART_DELAY_S / 2)
    second = _deployed(restarting, bit_depth=32)
    assert second < done + RESTART_DELAY_S, "stored while the first restart was pending"
    back = second + RESTART_DELAY_S + RESTART_S
    _sleep_until(back + interval + 0.3)
    times = [entry_time(entry_id) for entry_id, _ in entries(restarting.redis_url, "daq:stat")]
    assert [] == [t for t in times if done + RESTART_DELAY_S + 0.02 < t < back], "down from the first restart to the end of the second"
    assert interval - 0.1 <= min(t for t in times if t >= back) - back <= interval + 0.25
    ok(post(restarting, "/writer/write_sync", {"output_file": str(tmp_path / "b.h5"), "n_images": 2}))
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert np.uint32 == f["SIM-EIGER-64K/data"].dtype


def test_without_a_window_the_services_run_the_new_config_at_once(daq_sim, tmp_path):
    """restart_s 0: a write right after SUCCESS works and uses the new config."""
    daq_sim.core.settings.restart_s = 0.0
    _deployed(daq_sim, bit_depth=32)
    ok(post(daq_sim, "/writer/write_sync", {"output_file": str(tmp_path / "a.h5"), "n_images": 2}))
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert np.uint32 == f["SIM-EIGER-64K/data"].dtype
