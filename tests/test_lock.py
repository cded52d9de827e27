"""The runner lock means something: through the installed ``daq-run`` against daq-sim and a real Redis.

A runner paused past the expiry does not write beside the runner that took the lock over; a
stalled Redis is ridden out or ends the run with exit 4, never an unlocked run; an ACL user
without scripting rights can hold the lock; a dead holder on this host is taken over; two
quick Ctrl-C still leave a final report, a released lock and a stopped acquisition; a std_cli tool
is refused while a runner holds the lock, and forced past it, it is told in the run's report.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis

from daq_runner._deadline import Deadline, bounded
from daq_runner.exceptions import LockHeldError
from daq_runner.lock import FORCED_SUFFIX, LOCK_KEY, DaqLock
from daq_runner.sim.redis_server import RedisServer

from .conftest import batch_file, daq_run, run_script, start_daq_run, wait_until, writer_state


def lock_holder(url: str) -> dict:
    client = redis.Redis.from_url(url)
    try:
        raw = client.get(LOCK_KEY)
        return json.loads(raw) if raw else {}
    finally:
        client.close()


def report_of(path) -> dict:
    return json.loads(path.read_text())


def step_passed(path, index: int) -> bool:
    try:
        steps = report_of(path)["steps"]
    except (OSError, ValueError, KeyError):
        return False
    return any(s.get("index") == index and s.get("status") == "passed" for s in steps)


def test_a_runner_paused_past_the_expiry_stops_and_sends_nothing(daq_sim, tmp_path):
    """SIGSTOP past the lock expiry, another runner takes over: the first one exits 4 before its write."""
    first = batch_file(tmp_path, "version: 1\nname: first\nsteps:\n  - wait: {seconds: 1.5}\n  - write: {output_file: '{root}/first.h5', n_images: 5}\n", "first.yaml")
    second = batch_file(tmp_path, "version: 1\nname: second\nsteps:\n  - wait: {seconds: 4}\n  - write: {output_file: '{root}/second.h5', n_images: 5}\n", "second.yaml")
    daq = ("--url", daq_sim.url, "--redis", daq_sim.redis_url, "--lock-ttl", "1.5")
    proc_a = start_daq_run(first, *daq, "--report", str(tmp_path / "a.json"))
    wait_until(lambda: lock_holder(daq_sim.redis_url).get("pid") == proc_a.pid)
    proc_a.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)  # past the expiry: the lock is free for another runner
        proc_b = start_daq_run(second, *daq, "--report", str(tmp_path / "b.json"), "--wait-lock", "10")
        wait_until(lambda: lock_holder(daq_sim.redis_url).get("pid") == proc_b.pid)
    finally:
        proc_a.send_signal(signal.SIGCONT)
    _, err_a = proc_a.communicate(timeout=30)
    assert 4 == proc_a.returncode, err_a
    assert "runner lock lost" in err_a
    report_a = report_of(tmp_path / "a.json")
    assert "failed" == report_a["status"] and "runner lock lost" in report_a["reason"]
    assert not (tmp_path / "first.h5").exists()  # nothing was sent after the loss
    _, err_b = proc_b.communicate(timeout=30)
    assert 0 == proc_b.returncode, err_b
    assert (tmp_path / "second.h5").exists()


def test_a_stalled_redis_ends_lock_taking_with_exit_4_never_an_unlocked_run(daq_sim, tmp_path):
    """The DAQ's Redis does not answer: exit 4 within the budget, nothing sent; --no-lock runs."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n")
    with RedisServer() as stalled:
        stalled._process.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            proc = daq_run(str(path), "--url", daq_sim.url, "--redis", stalled.url, "--report", str(tmp_path / "r.json"), timeout=60)
            took = time.monotonic() - start
            assert 4 == proc.returncode, proc.stderr
            assert "could not take the runner lock" in proc.stderr and took < 20
            assert not (tmp_path / "a.h5").exists()
            assert "failed" == report_of(tmp_path / "r.json")["status"]
            proc = daq_run(str(path), "--url", daq_sim.url, "--redis", stalled.url, "--no-lock", "--report", str(tmp_path / "r2.json"), timeout=90)
            assert 0 == proc.returncode, proc.stderr
        finally:
            stalled._process.send_signal(signal.SIGCONT)


def test_an_acl_user_without_scripting_holds_the_lock(daq_sim, tmp_path):
    """The lock uses no Lua: a Redis user without @scripting takes, renews and releases it."""
    admin = redis.Redis.from_url(daq_sim.redis_url)
    admin.execute_command("ACL", "SETUSER", "runner", "on", ">s3cret-pw", "~*", "&*", "+@all", "-@scripting")
    try:
        host_port = daq_sim.redis_url.split("//", 1)[1].split("/", 1)[0]
        url = f"redis://runner:s3cret-pw@{host_port}/0"
        path = batch_file(tmp_path, "version: 1\nsteps:\n  - wait: {seconds: 1.2}\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n")
        proc = daq_run(str(path), "--url", daq_sim.url, "--redis", url, "--lock-ttl", "1.5", "--report", str(tmp_path / "r.json"), "--log-format", "json")
        assert 0 == proc.returncode, proc.stderr
        report = report_of(tmp_path / "r.json")
        assert not any("lock" in n["message"] if isinstance(n, dict) else "lock" in n for n in report["notices"])
        assert admin.get(LOCK_KEY) is None  # released
        assert "s3cret-pw" not in proc.stderr + proc.stdout + (tmp_path / "r.json").read_text()
    finally:
        admin.execute_command("ACL", "DELUSER", "runner")
        admin.close()


def test_a_dead_holder_on_this_host_is_taken_over(daq_sim, tmp_path):
    """A lock left by a process of this host that no longer runs is taken over at once, with a notice."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    client = redis.Redis.from_url(daq_sim.redis_url)
    holder = {"host": socket.gethostname(), "pid": dead.pid, "batch": "crashed.yaml", "since": "2026-01-01T00:00:00Z"}
    client.set(LOCK_KEY, json.dumps(holder), px=60_000)
    client.close()
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    start = time.monotonic()
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    assert time.monotonic() - start < 10
    notices = [n["message"] if isinstance(n, dict) else n for n in report_of(tmp_path / "r.json")["notices"]]
    assert any("no longer runs" in n and "crashed.yaml" in n for n in notices)


def test_a_live_holder_on_this_host_is_not_taken_over(daq_sim, tmp_path):
    """A lock held by a running process of this host is respected: exit 4 naming it."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    client.set(LOCK_KEY, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "batch": "other.yaml"}), px=60_000)
    client.close()
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 4 == proc.returncode and "other.yaml" in proc.stderr


def test_two_quick_ctrl_c_finalize_the_report_release_the_lock_and_stop(daq_sim, tmp_path):
    """Two SIGINTs in a row: exit 130 in seconds, report 'interrupted', lock released, writer stopped."""
    daq_sim.core.settings.frame_rate = 100
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 100000}\n  - check: {writer: READY}\n")
    report = tmp_path / "r.json"
    proc = start_daq_run(path, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))
    wait_until(lambda: writer_state(daq_sim.url) == "WRITING")
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert 130 == proc.returncode
    assert time.monotonic() - start < 5
    final = report_of(report)
    assert "interrupted" == final["status"]
    assert ["interrupted", "skipped"] == [s["status"] for s in final["steps"]]
    assert {} == lock_holder(daq_sim.redis_url)
    wait_until(lambda: writer_state(daq_sim.url) == "READY", timeout=5)


def test_lock_lost_callback_fires_when_another_runner_took_it(daq_sim):
    """Library level: renewal that finds another holder calls on_lost once and assert_held refuses."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    lost = []
    lock = DaqLock(client, {"host": "h", "pid": 1}, ttl=1.0, on_lost=lost.append)
    lock.acquire()
    try:
        client.set(LOCK_KEY, json.dumps({"host": "other", "pid": 2}), px=10_000)
        wait_until(lambda: lost, timeout=5)
        assert "taken over by another runner (host other, pid 2" in lost[0]
        with pytest.raises(Exception, match="runner lock lost"):
            lock.assert_held()
    finally:
        lock.release()
        assert b"other" in client.get(LOCK_KEY)  # another's lock is left alone
        client.delete(LOCK_KEY)
        client.close()


def test_a_paused_runner_does_not_take_back_a_lock_another_runner_used_meanwhile(daq_sim, tmp_path):
    """SIGSTOP past the expiry; meanwhile another runner takes the lock, changes the config and
    releases it: the first one, resumed, finds the lock free but must not take it back (exit 4,
    nothing sent), since it cannot know what the other runner did to the DAQ."""
    first = batch_file(
        tmp_path,
        "version: 1\nname: first\nsteps:\n  - config: {bit_depth: 8}\n  - wait: {seconds: 3}\n"
        "  - write: {output_file: '{root}/first.h5', n_images: 5}\n",
        "first.yaml",
    )
    second = batch_file(tmp_path, "version: 1\nname: second\nsteps:\n  - config: {bit_depth: 32}\n", "second.yaml")
    daq = ("--url", daq_sim.url, "--redis", daq_sim.redis_url, "--lock-ttl", "1.5")
    proc_a = start_daq_run(first, *daq, "--report", str(tmp_path / "a.json"))
    try:
        wait_until(lambda: lock_holder(daq_sim.redis_url).get("pid") == proc_a.pid)
        wait_until(lambda: step_passed(tmp_path / "a.json", 1))  # its 8-bit config deployed
        proc_a.send_signal(signal.SIGSTOP)
        time.sleep(2.0)  # past the expiry: the lock is free for another runner
        proc_b = daq_run(str(second), *daq, "--report", str(tmp_path / "b.json"), "--wait-lock", "10")
        assert 0 == proc_b.returncode, proc_b.stderr
        assert {} == lock_holder(daq_sim.redis_url)  # released: free when the first one resumes
    finally:
        proc_a.send_signal(signal.SIGCONT)
    _, err_a = proc_a.communicate(timeout=30)
    assert 4 == proc_a.returncode, err_a
    assert "runner lock lost" in err_a and "another runner took it" in err_a
    report_a = report_of(tmp_path / "a.json")
    assert "failed" == report_a["status"] and "runner lock lost" in report_a["reason"]
    assert not (tmp_path / "first.h5").exists()  # nothing was sent after the loss
    assert {} == lock_holder(daq_sim.redis_url)  # not taken back


def test_a_lock_that_expired_unrenewed_is_taken_back_only_with_proof(daq_sim):
    """Library level, a renewal that stalled past the expiry (as in a paused process): the lock is
    taken back when its epoch key still names this acquisition (nobody took it since), with a
    notice; when Redis was emptied meanwhile nothing proves that, so the lock is lost."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    try:
        for emptied in (False, True):
            lost, notices = [], []
            lock = DaqLock(client, {"host": "h", "pid": 1}, ttl=1.0, on_lost=lost.append, notify=notices.append)
            lock.acquire()
            assert lock.epoch.encode() == client.get(LOCK_KEY + ":epoch")
            lock._stop.set()  # the renewal thread stalls, as in a process paused by SIGSTOP
            lock._renewer.join(2)
            wait_until(lambda: client.get(LOCK_KEY) is None, timeout=3)  # expired
            if emptied:
                client.flushdb()  # and Redis restarted without persistence meanwhile
                with pytest.raises(Exception, match="runner lock lost: it expired, not renewed for 1.*Redis no longer shows"):
                    lock.assert_held()
                assert client.get(LOCK_KEY) is None and lost
            else:
                lock.assert_held()
                assert lock.value.encode() == client.get(LOCK_KEY) and not lost
                assert any("nobody took it meanwhile, taken back" in n for n in notices)
            lock.release()
            assert client.get(LOCK_KEY) is None
    finally:
        client.delete(LOCK_KEY, LOCK_KEY + ":epoch")
        client.close()


def test_a_lock_value_that_is_not_a_runners_is_a_holder_not_a_wait_for_ever(daq_sim):
    """A lock key set by hand to something that is not JSON: taking the lock ends at once with
    LockHeldError quoting the value (it used to look again every 0.25 s for ever)."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    client.set(LOCK_KEY, "maintenance", px=60_000)
    try:
        start = time.monotonic()
        give_up = threading.Event()
        timer = threading.Timer(3, give_up.set)  # the old loop ended only on a stop request
        timer.start()
        try:
            with pytest.raises(LockHeldError, match="another runner drives this DAQ") as caught:
                with bounded(Deadline(cancel=give_up)):
                    DaqLock(client, {"host": "h"}).acquire(wait=0)
        finally:
            timer.cancel()
        assert time.monotonic() - start < 2
        assert {"raw": "maintenance"} == caught.value.holder
    finally:
        client.delete(LOCK_KEY)
        client.close()


# -- std_cli tools forced past the lock ------------------------------------------------------------


def forced_notices(notices: list) -> list:
    return [n for n in notices if "was used while this run held the lock" in n]


@pytest.mark.parametrize("ttl, told_while_held", [(0.9, True), (30.0, False)])
def test_a_forced_std_cli_write_stop_becomes_one_notice_of_the_runner(daq_sim, ttl, told_while_held):
    """A real DaqLock held here and the installed std_cli_write_stop --force against daq-sim: the
    lock tells it once, from its renewal thread while held, else when released (none is missed)."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    notices: list = []
    lock = DaqLock(client, {"host": "beamline-pc", "pid": 4242, "batch": "scan.yaml"}, ttl=ttl, notify=notices.append)
    lock.acquire()
    try:
        refused = run_script("std_cli_write_stop", "-b", daq_sim.url, "--redis", daq_sim.redis_url)
        assert 4 == refused.returncode and "batch scan.yaml" in refused.stderr
        forced = run_script("std_cli_write_stop", "-b", daq_sim.url, "--redis", daq_sim.redis_url, "--force")
        assert 0 == forced.returncode, forced.stderr
        if told_while_held:
            wait_until(lambda: forced_notices(notices), timeout=5)
        else:
            time.sleep(0.3)
            assert [] == forced_notices(notices)
    finally:
        lock.release()
        client.close()
    told = forced_notices(notices)
    assert 1 == len(told), notices  # the refused use left no record; the forced one is told once
    assert told[0].startswith("std_cli_write_stop was used while this run held the lock (--force by ")
    assert f"@{socket.gethostname()}, pid " in told[0] and f"std_cli_write_stop -b {daq_sim.url} --redis" in told[0]


def test_forced_uses_of_other_acquisitions_and_junk_are_not_told(daq_sim):
    """Records naming another acquisition of the lock, records that are not JSON objects, and fields
    with control characters: only this acquisition's use is told, as one clean line."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    stream = LOCK_KEY + FORCED_SUFFIX
    other = {"tool": "std_cli_write_sync", "holder": {"epoch": "an-earlier-run"}, "user": "x", "host": "h", "pid": 1, "at": "t"}
    client.xadd(stream, {"json": json.dumps(other)})
    notices: list = []
    lock = DaqLock(client, {"host": "h", "pid": 1}, ttl=30, notify=notices.append)
    lock.acquire()
    try:
        for junk in (b"not json", b"[1, 2]", b"null", json.dumps({**other, "holder": "x"}).encode()):
            client.xadd(stream, {"json": junk})
        client.xadd(stream, {"other-field": b"1"})
        ours = {"tool": "std_cli_set_config\x1b[2J", "argv": ["c.yaml", "-b", "http://u:pw@daq:5000\nX"],
                "user": "bob", "host": "pc\n2", "pid": 7, "at": "2026-01-01T00:00:00Z", "holder": {"epoch": lock.epoch}}
        client.xadd(stream, {"json": json.dumps(ours)})
    finally:
        lock.release()
    client.close()
    assert 1 == len(notices), notices
    assert "std_cli_set_config\\x1b[2J was used while this run held the lock (--force by bob@pc 2, pid 7" in notices[0]
    assert "http://***@daq:5000 X" in notices[0] and "pw" not in notices[0] and "\n" not in notices[0]


def test_a_forced_use_stream_that_cannot_be_read_is_never_fatal(daq_sim):
    """The record stream's key holds something else: the lock is taken, renewed and released as
    ever, and the problem is told once."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    client.set(LOCK_KEY + FORCED_SUFFIX, "not a stream")
    notices: list = []
    lock = DaqLock(client, {"host": "h", "pid": 1}, ttl=0.6, notify=notices.append)
    try:
        lock.acquire()
        time.sleep(0.7)  # three renewals, each with a look at the records
        lock.assert_held()
        lock.release()
        assert client.get(LOCK_KEY) is None
    finally:
        client.delete(LOCK_KEY, LOCK_KEY + FORCED_SUFFIX)
        client.close()
    told = [n for n in notices if "could not read the uses of std_cli tools forced past the runner lock" in n]
    assert 1 == len(told) and "WRONGTYPE" in told[0], notices


def test_daq_run_reports_a_forced_std_cli_tool_as_a_notice(daq_sim, tmp_path):
    """Through the installed daq-run: std_cli_write_stop is refused while the run holds the lock;
    forced, it goes ahead and the run's report says so (the run ended by Ctrl-C, whenever the
    tools are done: the lock is read once more as it is released)."""
    path = batch_file(tmp_path, "version: 1\nname: held\nsteps:\n  - wait: {seconds: 60}\n", "held.yaml")
    report = tmp_path / "r.json"
    proc = start_daq_run(path, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))
    try:
        wait_until(lambda: lock_holder(daq_sim.redis_url).get("pid") == proc.pid)
        refused = run_script("std_cli_write_stop", "-b", daq_sim.url, "--redis", daq_sim.redis_url)
        assert 4 == refused.returncode and f"pid {proc.pid}, batch {path}" in refused.stderr
        forced = run_script("std_cli_write_stop", "-b", daq_sim.url, "--redis", daq_sim.redis_url, "--force")
        assert 0 == forced.returncode, forced.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert 130 == proc.returncode, err
    notices = [n["message"] for n in report_of(report)["notices"]]
    assert 1 == sum("std_cli_write_stop was used while this run held the lock" in n for n in notices), notices


def test_a_forced_write_stop_that_ends_a_write_is_told_on_the_step_it_hit(daq_sim, tmp_path):
    """std_cli_write_stop refused while daq-run writes (the holder named); forced, it stops the
    write: the step fails, and the report's notice of the forced use names that step, told when
    the attempt failed, not only when the lock is next renewed or released."""
    path = batch_file(tmp_path, "version: 1\nname: held\nsteps:\n  - write: {output_file: \"%s/a.h5\", n_images: 1000000}\n" % tmp_path, "held.yaml")
    report = tmp_path / "r.json"
    proc = start_daq_run(path, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--lock-ttl", "300")
    try:
        wait_until(lambda: writer_state(daq_sim.url) == "WRITING")
        refused = run_script("std_cli_write_stop", "-b", daq_sim.url, "--redis", daq_sim.redis_url)
        assert 4 == refused.returncode and f"pid {proc.pid}, batch {path}" in refused.stderr, refused.stderr
        forced = run_script("std_cli_write_stop", "-b", daq_sim.url, "--redis", daq_sim.redis_url, "--force")
        assert 0 == forced.returncode, forced.stderr
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 1 == proc.returncode, err
    data = report_of(report)
    assert "failed" == data["steps"][0]["status"]
    told = [n for n in data["notices"] if "std_cli_write_stop was used while this run held the lock" in n["message"]]
    assert 1 == len(told) and 1 == told[0]["step"], data["notices"]
