"""StatusFeed on a real Redis: the marks taken before a write and the log read along with the statuses."""

from __future__ import annotations

import json
import time

import pytest
import redis

from daq_runner import StdDaqClient, protocol
from daq_runner.rest_v2._feed import StatusFeed, Tap

STREAMS = protocol.StreamNames(status="t:status", config="t:config", log="t:log", stat="t:stat")


def acquisition(run_id: int, state: str) -> dict:
    return {
        "info": {"run_id": run_id, "output_file": f"/data/f_{run_id}.h5", "n_images": 1},
        "message": "Completed." if state == "FINISHED" else "",
        "state": state,
        "stats": {"n_write_completed": 1, "n_write_requested": 1, "start_time": 1.0, "stop_time": None},
        "reports": None,
    }


@pytest.fixture
def feed(daq_redis_server):
    client = redis.Redis.from_url(daq_redis_server.url)
    client.delete(STREAMS.status, STREAMS.log)
    # The REST client is never asked here: everything comes from the streams.
    yield StatusFeed(StdDaqClient("http://127.0.0.1:9"), client, STREAMS), client
    client.delete(STREAMS.status, STREAMS.log)
    client.close()


def add(client: redis.Redis, stream: str, obj) -> str:
    return client.xadd(stream, {"json": json.dumps(obj)}).decode()


def test_mark_write_gives_both_cursors_and_the_newest_status_in_one_look(feed):
    """The cursors point at the newest entries; the newest status comes along, junk gives no hint."""
    feed, client = feed
    status_id = add(client, STREAMS.status, {"state": "READY", "acquisition": acquisition(1, "FINISHED")})
    log_id = add(client, STREAMS.log, acquisition(1, "FINISHED"))
    cursor, tap, newest = feed.mark_write()
    assert (STREAMS.status, status_id) == (cursor.stream, cursor.id)
    assert (STREAMS.log, log_id, []) == (tap.stream, tap.id, tap.entries)
    assert "READY" == newest["state"]
    add(client, STREAMS.status, [1, 2])
    assert feed.mark_write()[2] is None


def test_mark_write_on_empty_streams_reads_from_the_start(feed):
    feed, _ = feed
    cursor, tap, newest = feed.mark_write()
    assert ("0-0", "0-0", None) == (cursor.id, tap.id, newest)


def test_the_log_is_read_along_with_the_statuses(feed):
    """A log record published before the final status is in the tap when the wait returns, and
    find_log takes it from there; one published after is read from the advanced cursor."""
    feed, client = feed
    cursor, tap, _ = feed.mark_write()
    add(client, STREAMS.status, {"state": "WRITING", "acquisition": acquisition(7, "ACQUIRING_IMAGES")})
    log_id = add(client, STREAMS.log, acquisition(7, "FINISHED"))
    add(client, STREAMS.status, {"state": "READY", "acquisition": acquisition(7, "FINISHED")})
    status = feed.wait_for_status(lambda s: s["state"] == "READY", timeout=2.0, since=cursor, tap=tap)
    assert "FINISHED" == status["acquisition"]["state"]
    assert [log_id] == [entry_id for entry_id, _ in tap.entries] and log_id == tap.id
    client.delete(STREAMS.log)  # gone from Redis: only the tap still has it
    record, source = feed.find_log(lambda r: r["info"]["run_id"] == 7, tap, 0.2)
    assert 7 == record["info"]["run_id"] and f"redis {STREAMS.log} {log_id}" == source
    time.sleep(0.005)  # a later millisecond: the recreated stream's id follows the tap's
    later = add(client, STREAMS.log, acquisition(8, "FINISHED"))
    record, source = feed.find_log(lambda r: r["info"]["run_id"] == 8, tap, 2.0)
    assert 8 == record["info"]["run_id"] and source.endswith(later)



def test_the_runners_redis_connections_skip_client_setinfo(daq_redis_server):
    """connect() sends no CLIENT SETINFO: two round trips and a package look-up less per connection."""
    from daq_runner._redis import connect

    client = connect(daq_redis_server.url)
    try:
        me = next(c for c in client.client_list() if c.get("id") == str(client.client_id()))
        assert ("", "") == (me.get("lib-name", ""), me.get("lib-ver", ""))
    finally:
        client.close()


def test_a_write_right_after_an_acquisition_starts_from_its_cursors(feed):
    """continue_from: the next mark_write returns the ended acquisition's cursors and final status
    without asking Redis; once only, and not after any other use of the feed or too late."""
    from daq_runner.rest_v2 import RestV2Timing
    from daq_runner.rest_v2._feed import Cursor

    feed, client = feed
    final = {"state": "READY", "acquisition": acquisition(3, "FINISHED")}
    add(client, STREAMS.status, final)
    add(client, STREAMS.status, {"state": "WRITING", "acquisition": acquisition(3, "ACQUIRING_IMAGES")})  # a late copy
    feed.continue_from(Cursor(STREAMS.status, "5-0"), Tap(STREAMS.log, "6-0"), final)
    cursor, tap, status = feed.mark_write()
    assert ("5-0", "6-0", final) == (cursor.id, tap.id, status)  # not the newest entries: from the end on
    again = feed.mark_write()  # used up: the streams are asked
    assert "WRITING" == again[2]["state"] and "5-0" != again[0].id
    feed.continue_from(Cursor(STREAMS.status, "5-0"), Tap(STREAMS.log, "6-0"), final)
    feed.mark(STREAMS.status)  # anything else the feed does in between ends it
    assert "5-0" != feed.mark_write()[0].id
    feed.timing = RestV2Timing(continue_s=0.0)
    feed.continue_from(Cursor(STREAMS.status, "5-0"), Tap(STREAMS.log, "6-0"), final)
    assert "5-0" != feed.mark_write()[0].id


def test_a_short_look_at_the_log_of_a_daq_without_its_redis_names_that_cause_not_a_timeout(tmp_path):
    """The DAQ's Redis is gone (its REST server answers only "Error 111 connecting to ..."): a
    3 s look for a log record inside a step with a minute left ends after its 3 s with the
    DAQ's cause as the reason; a DeadlineExceeded would be taken for the step's own timeout."""
    from daq_runner._deadline import Deadline, bounded
    from daq_runner.sim import SimSettings, SimulatedDaq
    from daq_runner.sim.redis_server import RedisServer

    with RedisServer() as server, SimulatedDaq(redis_url=server.url, settings=SimSettings(deploy_delay_s=0.05)) as sim:
        server.kill()
        feed = StatusFeed(StdDaqClient(sim.url, retries=1000, retry_deadline=40), None)
        began = time.monotonic()
        with bounded(Deadline(60)):
            record, reason = feed.find_log(lambda r: True, None, 3.0)
    # Within its 3 s (the client gives up before a retry that would outlast them), never the step's minute.
    assert record is None and time.monotonic() - began < 5.0
    assert reason.startswith("the DAQ's log could not be read within 3 s: ") and "cannot reach its own Redis" in reason, reason
