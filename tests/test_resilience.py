"""Unattended runs under faults, end to end: the installed ``daq-run`` against a real daq-sim and Redis.

The DAQ is killed and restarted as a process, its REST API goes away for 30 s, signals
arrive while the DAQ does not answer, and another runner holds the lock. Each test reads
the run's JSON report and the DAQ's own state afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Optional

import h5py
import pytest
import redis
import requests

from daq_runner.lock import LOCK_KEY, DaqLock
from daq_runner.sim.redis_server import RedisServer, free_port
from daq_runner.testing import arm_faults

from .conftest import batch_file, daq_run, script, start_daq_run, start_daq_run_until_writing, wait_until, writer_state


class SimProcess:
    """``daq-sim`` as a process of its own on fixed ports, killed and restarted like a DAQ service."""

    def __init__(self, redis_url: str, frame_rate: float) -> None:
        self.redis_url = redis_url
        self.frame_rate = frame_rate
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str) -> "SimProcess":
        command = [script("daq-sim"), "--port", str(self.port), "--redis-url", self.redis_url]
        self.proc = subprocess.Popen(
            [*command, "--frame-rate", str(self.frame_rate), "--deploy-delay", "0.05", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("daq-sim ready"), line + self.proc.stderr.read()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash or a power cut."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, signum: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signum)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of its own: it outlives the DAQ process, as a deployed DAQ's Redis does."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def sim_process(redis_server: RedisServer) -> Iterator[SimProcess]:
    sim = SimProcess(redis_server.url, frame_rate=200).start()
    try:
        yield sim
    finally:
        sim.stop()


def n_images_in(path: Path) -> int:
    """Images in a file the writer wrote (its ``/<detector>/data`` dataset)."""
    with h5py.File(path, "r") as handle:
        (dataset,) = [handle[name]["data"] for name in handle if "data" in handle[name]]
        return dataset.shape[0]


def report_of(path: Path) -> dict:
    return json.loads(path.read_text())


# -- the DAQ process killed ---------------------------------------------------------------


@pytest.mark.parametrize(
    "restart_args, first_attempt",
    [
        ((), "writer went UNKNOWN during the acquisition"),  # as a deployed DAQ after a restart
        (("--start-state", "READY"), "vanished"),  # a DAQ that comes back READY without our acquisition
    ],
    ids=["back-unknown", "back-ready"],
)
def test_daq_killed_and_restarted_mid_write_the_write_is_retried(tmp_path, sim_process, restart_args, first_attempt):
    """The DAQ process dies during a write and comes back: the attempt fails, is retried, the run passes."""
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 300}\n    retries: 1\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 20}\n",
    )
    report = tmp_path / "r.json"
    proc = start_daq_run(path, "--url", sim_process.url, "--redis", sim_process.redis_url, "--report", str(report))
    wait_until(lambda: writer_state(sim_process.url) == "WRITING")
    sim_process.kill()
    time.sleep(1.0)
    sim_process.start(*restart_args)
    _, err = proc.communicate(timeout=60)
    assert 0 == proc.returncode, err
    final = report_of(report)
    first, second = final["steps"]
    assert ("passed", 2) == (first["status"], first["attempts"])
    assert [1] == [a["attempt"] for a in first["failed_attempts"]]
    assert first_attempt in first["failed_attempts"][0]["error"]
    if not restart_args:
        assert [("writer UNKNOWN during the acquisition", "READY")] == [(r["reason"], r["outcome"]) for r in first["recoveries"]]
    assert str(first["daq_log"]["info"]["run_id"]) == first["run_id"]  # run ids are strings in reports
    assert "passed" == second["status"]
    assert (300, 20) == (n_images_in(tmp_path / "a.h5"), n_images_in(tmp_path / "b.h5"))


def test_daq_gone_for_good_the_run_stops_with_exit_3(tmp_path, sim_process, redis_server):
    """The DAQ does not come back: the step fails after --max-outage, the rest is skipped, exit 3."""
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 100000}\n    retries: 3\n    on_error: continue\n"
        "  - check: {writer: READY}\n"
        "  - stop: {}\n",
    )
    report = tmp_path / "r.json"
    proc = start_daq_run(
        path, "--url", sim_process.url, "--redis", redis_server.url, "--report", str(report), "--max-outage", "3", "--quiet"
    )
    wait_until(lambda: writer_state(sim_process.url) == "WRITING")
    sim_process.kill()
    killed = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert 3 == proc.returncode, err
    assert time.monotonic() - killed < 15  # 3 s budget, a few s for the best-effort stop; not 4 attempts x 3 steps
    assert 1 == len(err.strip().splitlines()) and "DAQ unreachable" in err and sim_process.url in err
    final = report_of(report)
    assert ("failed", True) == (final["status"], final["daq_unreachable"])
    assert ["failed", "skipped", "skipped"] == [s["status"] for s in final["steps"]]
    assert 1 == final["steps"][0]["attempts"] and sim_process.url in final["steps"][0]["error"]
    assert all("DAQ unreachable beyond the retry budget (3 s)" in s["error"] for s in final["steps"][1:])
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.get(LOCK_KEY) is None  # the lock is released, the next runner need not wait
    finally:
        client.close()


# -- the REST API unavailable --------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_daq_host_gone_rest_and_redis_together_is_unreachable_not_a_lost_lock(tmp_path, sim_process, redis_server, signum):
    """The DAQ host goes down (its REST server and its Redis together) in the middle of a write,
    with a lock expiry shorter than the outage budget: exit 3 "DAQ unreachable", never exit 4
    "runner lock lost" (nobody can take a lock in a Redis that does not answer)."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 100000}\n  - stop: {}\n")
    report = tmp_path / "r.json"
    proc = start_daq_run(
        path, "--url", sim_process.url, "--redis", redis_server.url, "--report", str(report),
        "--lock-ttl", "2", "--max-outage", "5", "--quiet",
    )  # fmt: skip
    wait_until(lambda: writer_state(sim_process.url) == "WRITING")
    if signum == signal.SIGKILL:
        sim_process.kill()
    else:
        sim_process.stop()
    if signum == signal.SIGKILL:
        redis_server.kill()
    else:
        redis_server.stop()
    gone = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert 3 == proc.returncode, err
    assert time.monotonic() - gone < 15
    assert "DAQ unreachable" in err and "lock" not in err, err
    final = report_of(report)
    assert ("failed", True) == (final["status"], final["daq_unreachable"])
    assert "runner lock lost" not in final["reason"] and "DAQ unreachable" in final["reason"]
    assert any("does not answer either" in n["message"] for n in final["notices"]), final["notices"]


def test_redis_gone_for_the_runner_alone_while_the_daq_works_loses_the_lock(tmp_path, sim_process, redis_server):
    """The runner alone loses Redis (its Redis user is switched off and its connections closed)
    for the lock's whole expiry, while the DAQ's REST server works with that Redis: the lock counts
    as lost (exit 4), the acquisition is stopped."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("ACL", "SETUSER", "runner", "on", ">runner-secret", "~*", "&*", "+@all")
    runner_url = redis_server.url.replace("redis://", "redis://runner:runner-secret@")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 100000}\n")
    report = tmp_path / "r.json"
    try:
        daq = SimpleNamespace(url=sim_process.url, redis_url=runner_url)  # the runner's own Redis user
        proc = start_daq_run_until_writing(daq, path, report, "--lock-ttl", "2", "--max-outage", "20", "--quiet")
        admin.execute_command("ACL", "SETUSER", "runner", "off")
        admin.execute_command("CLIENT", "KILL", "USER", "runner")
        _, err = proc.communicate(timeout=60)
    finally:
        admin.close()
    assert 4 == proc.returncode, err
    assert "runner lock lost" in err and "while the DAQ answers" in err, err
    assert "READY" == writer_state(sim_process.url)


def test_the_daqs_redis_killed_mid_write_is_an_outage_not_a_lost_lock(tmp_path, sim_process, redis_server):
    """The DAQ's Redis is killed during a write (its REST server then answers only "Error 111
    connecting to ..."; the lock lives in that Redis): ridden out as an outage for --max-outage,
    then exit 3 "DAQ unreachable" naming the cause, never exit 4 "runner lock lost"."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 100000}\n    retries: 1\n")
    report = tmp_path / "r.json"
    proc = start_daq_run_until_writing(sim_process, path, report, "--lock-ttl", "2", "--max-outage", "5", "--quiet")
    redis_server.kill()
    gone = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert 3 == proc.returncode, err
    assert 5 <= time.monotonic() - gone < 20, "ridden out for --max-outage"
    final = report_of(report)
    assert ("failed", True, None) == (final["status"], final["daq_unreachable"], final.get("lock_lost")), final["reason"]
    (step,) = final["steps"]
    assert "DAQ unreachable" in step["error"] and "cannot reach its own Redis" in step["error"], step["error"]
    assert "timed out" not in step["error"] and "lock" not in final["reason"], final["reason"]
    assert any("the DAQ does not answer either" in n["message"] for n in final["notices"]), final["notices"]


def test_the_daqs_redis_back_within_the_outage_the_lock_is_taken_back_and_the_write_passes(tmp_path):
    """The DAQ's Redis (with persistence) is killed during a write and back 3 s later, past the
    lock's 2 s expiry: nobody took the lock meanwhile (its epoch token is still ours), so it is
    taken back with a notice and the write passes, confirmed by the DAQ's log."""
    with RedisServer(data_dir=str(tmp_path)) as server:
        sim = SimProcess(server.url, frame_rate=200).start()
        try:
            path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 1600}\n")
            report = tmp_path / "r.json"
            proc = start_daq_run_until_writing(sim, path, report, "--lock-ttl", "2", "--max-outage", "20", "--quiet")
            server.kill()
            time.sleep(3.0)  # past the lock's expiry
            server.start()
            _, err = proc.communicate(timeout=60)
        finally:
            sim.stop()
    assert 0 == proc.returncode, err
    final = report_of(report)
    assert any("nobody took it meanwhile, taken back" in n["message"] for n in final["notices"]), final["notices"]
    (step,) = final["steps"]
    assert ("passed", 1600, "daq_log") == (step["status"], step["n_written"], step["confirmed_by"])


def test_rest_outage_of_30_s_mid_batch_is_waited_out(daq_sim, tmp_path):
    """A 30 s REST outage between two writes: the run waits it out with backoff and passes."""
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 20}\n"
        "  - wait: {seconds: 1}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 20}\n"
        "  - check: {writer: READY}\n",
    )
    report = tmp_path / "r.json"
    proc = start_daq_run(path, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))
    wait_until(lambda: daq_sim.core.logs(1))
    arm_faults(daq_sim, unavailable_s=30)
    outage = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert 0 == proc.returncode, err
    assert time.monotonic() - outage >= 29  # it really had to wait
    final = report_of(report)
    assert ["passed"] * 4 == [s["status"] for s in final["steps"]]
    retries = [n for n in final["notices"] if "DAQ request failed" in n["message"] and "503" in n["message"]]
    assert 5 <= len(retries) <= 40  # backoff: noticed about once a second, not once per request
    assert 20 == n_images_in(tmp_path / "b.h5")


@pytest.mark.parametrize("outage_s, stopped", [(3, True), (60, False)], ids=["outage-shorter-than-stop-budget", "outage-longer"])
def test_sigterm_during_rest_outage_exits_within_seconds(daq_sim, tmp_path, outage_s, stopped):
    """SIGTERM while the runner rides out an outage: it stops waiting at once, tries to stop
    the acquisition for a few seconds, reports what it could do, and exits 143."""
    daq_sim.core.settings.frame_rate = 50
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/s.h5', n_images: 100000}\n")
    report = tmp_path / "r.json"
    proc = start_daq_run_until_writing(daq_sim, path, report, "--no-redis")
    try:
        arm_faults(daq_sim, unavailable_s=outage_s)
        time.sleep(1.0)  # the runner's status polls now fail and are being retried
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert 143 == proc.wait(15)
        assert time.monotonic() - signalled < 8
    finally:
        proc.kill()
    step = report_of(report)["steps"][0]
    assert "interrupted" == step["status"]
    (recovery,) = step["recoveries"]
    if stopped:
        assert recovery["outcome"].startswith("stopped acquisition")
        status = requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]
        assert ("READY", "Interrupted.") == (status["state"], status["acquisition"]["message"])
    else:
        assert "could not stop acquisition" in recovery["outcome"] and "may still be running" in recovery["outcome"]


# -- another runner holds the lock ---------------------------------------------------------


@pytest.fixture
def other_runner(daq_sim) -> Iterator[DaqLock]:
    """The DAQ's runner lock, held by 'another runner'."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    lock = DaqLock(client, {"host": "other-pc", "pid": 4242, "batch": "night.yaml"})
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
        client.close()


def test_wait_lock_waits_for_the_other_runner_then_runs(daq_sim, tmp_path, other_runner):
    """--wait-lock: the run waits (and says for whom) until the other runner releases the DAQ."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 5}\n")
    report = tmp_path / "r.json"
    threading.Timer(1.5, other_runner.release).start()
    started = time.monotonic()
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--wait-lock", "30")
    assert 0 == proc.returncode, proc.stderr
    assert 1.4 <= time.monotonic() - started < 15
    notices = report_of(report)["notices"]
    assert any("waiting up to 30 s for the runner lock held by host other-pc, pid 4242, batch night.yaml" in n["message"] for n in notices)


def test_wait_lock_gives_up_with_exit_4_and_sends_nothing(daq_sim, tmp_path, other_runner):
    """--wait-lock that runs out: exit 4 naming the holder; the DAQ was not touched."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 5}\n")
    started = time.monotonic()
    proc = daq_run(
        str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"), "--wait-lock", "1", "--quiet"
    )
    assert 4 == proc.returncode
    assert 1 <= time.monotonic() - started < 10
    assert "other-pc" in proc.stderr and "4242" in proc.stderr and "night.yaml" in proc.stderr
    assert 1 == len(proc.stderr.strip().splitlines())
    assert requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]["acquisition"] is None
    assert not (tmp_path / "a.h5").exists()


def test_sigterm_while_waiting_for_the_lock_exits_143_and_sends_nothing(daq_sim, tmp_path, other_runner):
    """Told to stop while waiting for the lock: exit 143 at once, every step skipped, nothing sent."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 5}\n")
    report = tmp_path / "r.json"
    proc = start_daq_run(path, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report), "--wait-lock", "60")
    wait_until(report.exists)
    time.sleep(0.5)  # the report is created before the lock is tried; taking it is quick
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert 143 == proc.wait(10)
    assert time.monotonic() - signalled < 3
    final = report_of(report)
    assert ("interrupted", ["skipped"]) == (final["status"], [s["status"] for s in final["steps"]])
    assert any("waiting up to 60 s for the runner lock" in n["message"] for n in final["notices"])
    assert requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]["acquisition"] is None


# -- hostile and broken batch files, through the installed daq-run --------------------------


def _alias_bomb() -> bytes:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        previous = chr(96 + i)
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{previous}"] * 10) + "]")
    return ("\n".join(lines) + "\n").encode()


HOSTILE = {
    "alias-bomb": (_alias_bomb(), "document too large"),
    "absurd-sweep": (
        (
            "version: 1\nsteps:\n  - for: {a: [" + ", ".join(map(str, range(1000))) + "], b: ["
            + ", ".join(map(str, range(1000))) + "]}\n    steps: [{stop: {}}]\n"
        ).encode(),
        "steps",
    ),
    "python-tag": (b"version: 1\nsteps:\n  - stop: !!python/object/apply:os.system ['touch /tmp/daq-runner-pwned']\n", "is not allowed"),
    "attribute-access": (b"version: 1\nsteps:\n  - write: {output_file: '/d/{root.__class__}.h5', n_images: 1}\n", "not a plain variable name"),
    "index-access": (b"version: 1\nsteps:\n  - write: {output_file: '/d/{root[0]}.h5', n_images: 1}\n", "not a plain variable name"),
    "dot-dot-path": (b"version: 1\nsteps:\n  - write: {output_file: '/data/../etc/x.h5', n_images: 1}\n", "'..' segments"),
    "not-utf8": (b"version: 1\nname: \xff\xfe\nsteps:\n  - stop: {}\n", "not UTF-8"),
    "binary": (bytes(range(256)) * 8, "b.yaml"),
    "empty": (b"", "batch file is empty"),
    "enormous-number": (b"version: 1\nsteps:\n  - wait: {seconds: " + b"9" * 5000 + b"}\n", "b.yaml:3"),
    "huge-n-images": (b"version: 1\nsteps:\n  - write: {output_file: /d/x.h5, n_images: 1e400}\n", "n_images"),
    "too-big-file": (b"version: 1\nsteps:\n" + b"  - stop: {}\n" * 200_000, "b.yaml"),
}


@pytest.mark.parametrize("content, text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_batch_exits_2_fast_with_one_line_and_no_side_effects(daq_sim, tmp_path, content, text):
    """Each exits 2 within a couple of seconds, says why in one line, and touches nothing:
    no request reaches the DAQ, no report is written."""
    before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    path = tmp_path / "b.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    uses_root = ["--var", "root=/data"] if b"{root" in content else []  # an unused --var is an error of its own
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, *uses_root)
    assert time.monotonic() - started < 3
    assert 2 == proc.returncode, proc.stderr
    assert 1 == len(proc.stderr.strip().splitlines()) and text in proc.stderr and "Traceback" not in proc.stderr
    assert "" == proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["b.yaml"]  # no report, no temp file
    assert before == requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    assert requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]["acquisition"] is None


# -- nothing leaks ---------------------------------------------------------------------------


def test_passwords_and_environment_never_reach_logs_or_reports(daq_sim, tmp_path):
    """Passwords in the DAQ's URLs are redacted in logs and report; the environment never appears.

    Once with a Redis user that has the password (the run passes), once with a Redis that
    refuses it (no runner lock: exit 4, and the message names no secret)."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n")
    rest = daq_sim.url.replace("http://", "http://operator:rest-pw-4711@")
    admin = redis.Redis.from_url(daq_sim.redis_url)
    admin.execute_command("ACL", "SETUSER", "operator", "on", ">redis-pw-4711", "~*", "&*", "+@all")
    try:
        cases = (
            ("operator", "operator:redis-pw-4711", {}, 0),
            ("nobody", "nobody:redis-pw-4711", {}, 4),
            # the password from the environment: never on the command line, where ps shows it
            ("env", "operator", {"STD_DAQ_REDIS_PASSWORD": "redis-pw-4711"}, 0),
        )
        for name, credentials, env, code in cases:
            report, junit = tmp_path / f"r-{name}.json", tmp_path / f"j-{name}.xml"
            redis_url = daq_sim.redis_url.replace("redis://", f"redis://{credentials}@")
            proc = daq_run(
                str(path), "--url", rest, "--redis", redis_url, "--report", str(report), "--junit", str(junit),
                "--log-format", "json", "-v", "--overwrite", env={"DAQ_TEST_SECRET": "env-secret-4711", **env},
            )
            assert code == proc.returncode, proc.stderr
            everything = proc.stdout + proc.stderr + report.read_text() + (junit.read_text() if junit.exists() else "")
            assert "4711" not in everything
            assert "***@" in report_of(report)["daq"]["url"] and "***@" in report_of(report)["daq"]["redis"]
            assert "DAQ_TEST_SECRET" not in everything and "PATH" not in everything
    finally:
        admin.execute_command("ACL", "DELUSER", "operator")
        admin.close()


def test_a_password_in_a_variable_never_reaches_logs_or_reports(daq_sim, tmp_path):
    """A URL with credentials given as a --var (a note, a link to an e-logbook) is masked in
    the report's vars, step names, JUnit and JSON logs (it was masked only in `command`);
    resuming with the same --var still counts as the same variables."""
    path = batch_file(
        tmp_path,
        "version: 1\nvars: {note: ''}\nsteps:\n  - check: {writer: READY}\n    name: 'check for {note}'\n"
        "  - check: {writer: WRITING}\n",
    )
    note = "note=http://elog:S3cretPW-4711@elog.example/entry"
    report, junit = tmp_path / "r.json", tmp_path / "j.xml"
    common = ("--url", daq_sim.url, "--redis", daq_sim.redis_url, "--var", note)
    proc = daq_run(str(path), *common, "--report", str(report), "--junit", str(junit), "--log-format", "json")
    assert 1 == proc.returncode, proc.stderr
    everything = proc.stdout + proc.stderr + report.read_text() + junit.read_text()
    assert "S3cretPW" not in everything
    assert "***@" in report_of(report)["batch"]["vars"]["note"]
    resumed = tmp_path / "r2.json"
    proc = daq_run(str(path), *common, "--resume", str(report), "--report", str(resumed))
    assert 1 == proc.returncode and "other variables" not in proc.stderr, proc.stderr
    assert "S3cretPW" not in resumed.read_text()


def test_a_short_password_in_a_variable_is_masked_too_and_in_the_dry_run(daq_sim, tmp_path):
    """A three-letter password was left to URL redaction, which variables and step names
    never go through; --dry-run printed even long ones."""
    path = batch_file(tmp_path, "version: 1\nvars: {note: ''}\nsteps:\n  - check: {writer: READY}\n    name: 'log to {note}'\n")
    note = "note=https://al:pw1@elog/x"
    report = tmp_path / "r.json"
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--var", note, "--report", str(report), "--log-format", "json")
    assert 0 == proc.returncode, proc.stderr
    assert "pw1" not in proc.stdout + proc.stderr + report.read_text()
    proc = daq_run(str(path), "--url", daq_sim.url, "--var", note, "--dry-run")
    assert "log to https://***@elog/x" in proc.stdout and "pw1" not in proc.stdout, proc.stdout


# -- resume never rewrites what passed ---------------------------------------------------------


def test_resume_refuses_to_rewrite_a_file_an_earlier_passed_step_wrote(daq_sim, tmp_path):
    """Even with --force, a resumed run may not overwrite data a passed step wrote."""
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n  - check: {writer: WRITING}\n"
        "  - check: {deployment: SUCCESS}\n",
    )
    first = tmp_path / "first.json"
    common = ["--url", daq_sim.url, "--redis", daq_sim.redis_url]
    assert 1 == daq_run(str(path), *common, "--report", str(first)).returncode
    written = (tmp_path / "a.h5").stat().st_mtime_ns
    # Step 2 now writes the a.h5 step 1 wrote (another step: 5 images), and step 1 another file
    # (one batch may not write a file twice).
    edited = path.read_text().replace(f"'{tmp_path}/a.h5'", f"'{tmp_path}/b.h5'")
    path.write_text(edited.replace("check: {writer: WRITING}", f"write: {{output_file: '{tmp_path}/a.h5', n_images: 5}}"))
    proc = daq_run(str(path), *common, "--resume", str(first), "--force", "--report", str(tmp_path / "second.json"))
    assert 2 == proc.returncode and "step 2 would rewrite" in proc.stderr and "step 1" in proc.stderr
    assert written == (tmp_path / "a.h5").stat().st_mtime_ns
    assert not (tmp_path / "second.json").exists()


# -- the runner itself killed -----------------------------------------------------------------


def test_runner_killed_leaves_a_valid_report_an_expiring_lock_and_can_be_resumed(daq_sim, tmp_path):
    """SIGKILL (nothing can run): the report on disk is valid JSON with what had passed, the
    lock names the dead runner and expires, and --resume re-runs only what had not passed."""
    daq_sim.core.settings.frame_rate = 100
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n"
        "  - write: {output_file: '{root}/a.h5', n_images: 5}\n"
        "  - write: {output_file: '{root}/b.h5', n_images: 150}\n"
        "  - check: {writer: READY}\n",
    )
    report = tmp_path / "r.json"
    proc = start_daq_run(path, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))

    def writing_b() -> bool:
        acquisition = requests.get(daq_sim.url + "/writer/status", timeout=5).json()["writer"]["acquisition"] or {}
        return acquisition.get("info", {}).get("output_file", "").endswith("b.h5")

    wait_until(writing_b)  # step 1 has passed and is in the report
    proc.kill()
    proc.communicate(timeout=10)
    crashed = report_of(report)
    assert ("running", ["passed"]) == (crashed["status"], [s["status"] for s in crashed["steps"]])
    client = redis.Redis.from_url(daq_sim.redis_url)
    try:
        assert proc.pid == json.loads(client.get(LOCK_KEY))["pid"]
        assert 0 < client.pttl(LOCK_KEY) <= 30_000
        client.delete(LOCK_KEY)  # as after its expiry, without waiting 30 s
    finally:
        client.close()
    resumed = tmp_path / "resumed.json"
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--resume", str(report), "--report", str(resumed))
    assert 0 == proc.returncode, proc.stderr
    steps = report_of(resumed)["steps"]
    assert [True, None, None] == [s.get("resumed") for s in steps]
    assert ["passed"] * 3 == [s["status"] for s in steps]
    assert 150 == n_images_in(tmp_path / "b.h5")


def test_resume_never_replaces_a_file_someone_else_wrote_since(daq_sim, tmp_path):
    """A runner killed before its write; another batch then writes that file; --resume of
    the first must not replace it (it did: any file newer than the resumed run's start
    counted as its own). Neither may a second resume of the same report replace the file
    the first resume wrote. Only the DAQ's log naming one of the resumed run's run_ids for
    the step proves a file is the resumed run's own."""
    daq_sim.core.settings.frame_rate = 1000
    shared = tmp_path / "shared.h5"
    first = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - wait: {seconds: 30}\n  - write: {output_file: '{root}/shared.h5', n_images: 5}\n",
        "a.yaml",
    )
    other = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/shared.h5', n_images: 7}\n", "b.yaml")
    report = tmp_path / "a.json"
    proc = start_daq_run(first, "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report))
    wait_until(lambda: report.exists() and report_of(report)["status"] == "running")
    proc.kill()
    proc.communicate(timeout=10)
    client = redis.Redis.from_url(daq_sim.redis_url)
    try:
        client.delete(LOCK_KEY)  # as after its expiry
    finally:
        client.close()
    common = ("--url", daq_sim.url, "--redis", daq_sim.redis_url)
    assert 0 == daq_run(str(other), *common, "--report", str(tmp_path / "b.json")).returncode
    assert 7 == n_images_in(shared)

    first.write_text(first.read_text().replace("seconds: 30", "seconds: 0"))  # no need to wait again
    resume = ("--resume", str(report), "--force")
    proc = daq_run(str(first), *common, *resume, "--report", str(tmp_path / "resumed.json"))
    assert 1 == proc.returncode, proc.stderr
    step = report_of(tmp_path / "resumed.json")["steps"][-1]
    assert "failed" == step["status"] and "nothing was sent" in step["error"], step
    assert 7 == n_images_in(shared), "the other batch's file was replaced"

    # With the other file gone, the resume writes it; a second resume of the same killed
    # report finds that complete file and leaves it.
    shared.unlink()
    assert 0 == daq_run(str(first), *common, *resume, "--report", str(tmp_path / "resumed2.json")).returncode
    assert 5 == n_images_in(shared)
    os.utime(shared, (1, 1))
    proc = daq_run(str(first), *common, *resume, "--report", str(tmp_path / "resumed3.json"))
    assert 1 == proc.returncode
    assert 1 == os.stat(shared).st_mtime, "the first resume's complete file was replaced"
