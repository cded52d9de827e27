"""Bounded and unbreakable: whatever the DAQ, Redis or the file system does, daq-run ends in time
with a valid report whose summary adds up. Through the installed ``daq-run`` against daq-sim and
a real Redis; a proxy stand-in (``tests/standin.py``) trickles or replaces replies daq-sim
would not send.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import redis
import requests

from daq_runner import Runner, events
from daq_runner.batch import load_batch_text
from daq_runner.report import JsonReportFile
from daq_runner.testing import arm_faults

from .conftest import batch_file, daq_run, start_daq_run, wait_until, writer_state
from .standin import DaqProxy


def report_of(path) -> dict:
    return json.loads(path.read_text())


def adds_up(report: dict) -> bool:
    return sum(report["summary"].values()) == len(report["steps"]) == report.get("n_steps", len(report["steps"]))


def test_a_trickling_reply_ends_at_the_step_timeout(daq_sim, tmp_path):
    """A DAQ that sends its reply one byte every 2 s: the step fails at its 3 s timeout, the run goes on."""
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - check: {deployment: SUCCESS}\n    timeout: 3\n    on_error: continue\n  - check: {writer: READY}\n",
    )
    with DaqProxy(daq_sim.url) as proxy:
        proxy.trickle["/daq/deployment"] = 2.0
        started = time.monotonic()
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"), timeout=60)
        took = time.monotonic() - started
    assert 1 == proc.returncode, proc.stderr
    report = report_of(tmp_path / "r.json")
    first, second = report["steps"]
    assert "failed" == first["status"] and first["error"].startswith("timed out after 3 s")
    assert first["duration_s"] < 4.0 and took < 15
    assert "passed" == second["status"] and adds_up(report)


def test_a_trickling_reply_is_cut_at_the_outage_budget(daq_sim, tmp_path):
    """--max-outage 2 bounds every request too: a trickle ends the run as 'DAQ unreachable' (exit 3)."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {deployment: SUCCESS}\n  - check: {writer: READY}\n")
    with DaqProxy(daq_sim.url) as proxy:
        proxy.trickle["/daq/deployment"] = 2.0
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--max-outage", "2", "--report", str(tmp_path / "r.json"), timeout=60)
    assert 3 == proc.returncode, proc.stderr
    report = report_of(tmp_path / "r.json")
    assert ["failed", "skipped"] == [s["status"] for s in report["steps"]]
    assert report["steps"][0]["duration_s"] < 3.5 and report["daq_unreachable"] and adds_up(report)


def test_sigterm_during_a_trickling_request_ends_the_run_within_seconds(daq_sim, tmp_path):
    """SIGTERM while a reply trickles in: exit 143 within 5 s, report 'interrupted'."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {deployment: SUCCESS}\n  - stop: {}\n")
    report = tmp_path / "r.json"
    with DaqProxy(daq_sim.url) as proxy:
        proxy.trickle["/daq/deployment"] = 2.0
        proc = start_daq_run(path, "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(report))
        wait_until(lambda: proxy.count("/daq/deployment") >= 1)
        time.sleep(0.5)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert time.monotonic() - signalled < 5
    assert 143 == proc.returncode
    final = report_of(report)
    assert "interrupted" == final["status"] and ["interrupted", "skipped"] == [s["status"] for s in final["steps"]]


def test_a_check_during_an_outage_fails_at_its_timeout(daq_sim, tmp_path):
    """The REST API answers 503 for 30 s: a check with timeout 3 fails after about 3 s, not 22."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - wait: {seconds: 0.3}\n  - check: {deployment: SUCCESS}\n    timeout: 3\n")
    armed = []

    def outage_from_now() -> None:  # the check's first request: the outage begins
        if not armed:
            armed.append(1)
            arm_faults(daq_sim, unavailable_s=30)

    try:
        with DaqProxy(daq_sim.url) as proxy:
            proxy.before["/daq/deployment"] = outage_from_now
            proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"), timeout=60)
        assert 1 == proc.returncode, proc.stderr
        check = report_of(tmp_path / "r.json")["steps"][1]
        assert "failed" == check["status"] and check["error"].startswith("timed out after 3 s")
        assert check["duration_s"] < 4.0
    finally:
        requests.post(daq_sim.url + "/sim/reset", timeout=5)


def test_a_wait_step_keeps_its_timeout(daq_sim, tmp_path):
    """wait: {seconds: 10} with timeout 1 does not run 10 s: refused before the run, or failed at 1 s."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - wait: {seconds: 10}\n    timeout: 1\n")
    started = time.monotonic()
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert time.monotonic() - started < 6
    if proc.returncode == 2:
        assert "timeout" in proc.stderr
    else:
        assert 1 == proc.returncode and report_of(tmp_path / "r.json")["steps"][0]["error"].startswith("timed out after 1 s")


@pytest.mark.parametrize("junk", [None, [1, 2], "text", 42], ids=["null", "list", "string", "number"])
def test_a_malformed_status_on_the_stream_fails_the_step_and_the_run_goes_on(daq_sim, tmp_path, junk):
    """Junk JSON on daq:status: the write fails with a protocol error naming the stream, its
    acquisition is stopped, and on_error: continue goes on."""
    daq_sim.core.settings.frame_rate = 100
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 1000}\n    on_error: continue\n"
        "  - check: {writer: READY}\n",
    )

    def junk_on_the_stream() -> None:
        client = redis.Redis.from_url(daq_sim.redis_url)
        client.xadd("daq:status", {"json": json.dumps(junk)})
        client.close()

    with DaqProxy(daq_sim.url) as proxy:
        proxy.before["/writer/write_async"] = junk_on_the_stream
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode, proc.stderr
    report = report_of(tmp_path / "r.json")
    write, check = report["steps"]
    assert "failed" == write["status"] and "daq:status" in write["error"] and "\n" not in write["error"]
    assert any(r["outcome"].startswith("stopped acquisition") for r in write["recoveries"])
    assert "passed" == check["status"] and adds_up(report)


def test_a_writer_null_from_rest_fails_the_step_naming_the_endpoint(daq_sim, tmp_path):
    """``"writer": null`` from GET /writer/status: a one-line protocol error, the run goes on."""
    path = batch_file(
        tmp_path,
        "version: 1\nsteps:\n  - wait: {seconds: 0.1}\n  - check: {writer: READY}\n    on_error: continue\n  - check: {deployment: SUCCESS}\n",
    )
    calls = []

    def null_after_start() -> bytes:
        calls.append(1)
        writer = None if len(calls) > 2 else {"state": "READY", "acquisition": None}
        return json.dumps({"status": "ok", "message": "Writer is READY", "writer": writer}).encode()

    with DaqProxy(daq_sim.url) as proxy:
        proxy.replace["/writer/status"] = null_after_start
        proc = daq_run(str(path), "--url", proxy.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode, proc.stderr
    report = report_of(tmp_path / "r.json")
    assert ["passed", "failed", "passed"] == [s["status"] for s in report["steps"]]
    assert "/writer/status" in report["steps"][1]["error"] and "null" in report["steps"][1]["error"]


@pytest.mark.parametrize("query", ["protocol=3", "decode_responses=True", "protocol=3&decode_responses=True&encoding=latin-1"])
def test_redis_url_options_cannot_break_the_run(daq_sim, tmp_path, query):
    """A Redis URL asking for RESP3 or str replies: the runner reads what it needs anyway."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 5}\n")
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", f"{daq_sim.redis_url}?{query}", "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr
    assert report_of(tmp_path / "r.json")["steps"][0]["daq_log_source"].startswith("redis")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_an_ipv6_daq_url_works_and_derives_its_redis_url(tmp_path):
    """--url http://[::1]:PORT: REST over IPv6, and the default Redis URL keeps the brackets."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    plan = daq_run(str(path), "--dry-run", "--url", "http://[::1]:1")
    assert "redis://[::1]:6379" in plan.stdout and "Traceback" not in plan.stderr
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    from daq_runner.sim import SimSettings, SimulatedDaq

    with SimulatedDaq(host="::1", settings=SimSettings(start_state="READY")) as sim:
        assert sim.url.startswith("http://[::1]:")
        proc = daq_run(str(path), "--url", sim.url, "--redis", sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 0 == proc.returncode, proc.stderr


def test_an_environment_proxy_never_sees_loopback_daq_traffic(daq_sim, tmp_path):
    """HTTP_PROXY/ALL_PROXY set: a DAQ on 127.0.0.1 is still reached directly."""
    seen = []
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(5)
    trap.settimeout(0.2)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = trap.accept()
            except OSError:
                continue
            seen.append(conn.recv(1000))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{trap.getsockname()[1]}"
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 3}\n")
    try:
        proc = daq_run(
            str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"),
            env={"HTTP_PROXY": proxy, "http_proxy": proxy, "ALL_PROXY": proxy, "NO_PROXY": "", "no_proxy": ""},
        )
    finally:
        done.set()
        thread.join(2)
        trap.close()
    assert 0 == proc.returncode, proc.stderr
    assert [] == seen


@pytest.mark.parametrize("target", ["batch", "devnull", "directory", "same-as-junit"])
def test_report_paths_that_would_destroy_something_are_refused(daq_sim, tmp_path, target):
    """--report onto the batch file, /dev/null, a directory, or the JUnit file: exit 2, nothing sent."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 8}\n")
    text = path.read_text()
    report = {"batch": str(path), "devnull": "/dev/null", "directory": str(tmp_path), "same-as-junit": str(tmp_path / "x.xml")}[target]
    before = requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", report, "--junit", str(tmp_path / "x.xml"))
    assert 2 == proc.returncode and 1 == len(proc.stderr.strip().splitlines()), proc.stderr
    assert text == path.read_text()
    assert before == requests.get(daq_sim.url + "/daq/config", timeout=5).json()["config_id"]
    assert not (tmp_path / "x.xml").exists()


def test_control_characters_in_a_daq_error_keep_junit_and_report_readable(daq_sim, tmp_path):
    """An ESC or BEL in a DAQ message: the JUnit file parses, the report is valid, messages are one line."""
    arm_faults(daq_sim, fail_next="ERROR: \x1b[31mdisk\x07 gone\nsecond line\x00")
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - write: {output_file: '{root}/a.h5', n_images: 10}\n")
    proc = daq_run(str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "j.xml"))
    assert 1 == proc.returncode
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert "disk" in suite.find("testcase/failure").get("message")
    error = report_of(tmp_path / "r.json")["steps"][0]["error"]
    assert "disk" in error and "\x1b" not in error and "\x07" not in error and "\n" not in error


def test_an_unexpected_error_still_gives_every_step_a_record(daq_sim, tmp_path):
    """A consumer that raises mid-run (a bug): the report has the current step failed and the rest
    skipped, and its summary adds up."""
    path = tmp_path / "r.json"

    def broken(event: events.Event) -> None:
        if event.kind == events.STEP_STARTED and event.step == 2:
            raise RuntimeError("consumer bug")

    batch = load_batch_text(
        "version: 1\nsteps:\n  - check: {writer: READY}\n  - check: {writer: READY}\n  - check: {deployment: SUCCESS}\n"
    )
    with pytest.raises(RuntimeError, match="consumer bug"):
        Runner(daq_sim.url, daq_sim.redis_url, [JsonReportFile(str(path)), broken]).run(batch)
    report = report_of(path)
    assert ["passed", "failed", "skipped"] == [s["status"] for s in report["steps"]]
    assert "consumer bug" in report["steps"][1]["error"] and "failed" == report["status"]
    assert adds_up(report) and "consumer bug" in report["reason"]
    assert "READY" == writer_state(daq_sim.url)


def test_daq_sims_ready_line_hides_the_redis_password(daq_sim):
    """daq-sim on a Redis URL with a password: the ready line shows ``***``, never the password."""
    import subprocess

    from .conftest import script

    admin = redis.Redis.from_url(daq_sim.redis_url)
    admin.execute_command("ACL", "SETUSER", "simuser", "on", ">sim-pw-4711", "~*", "&*", "+@all")
    url = daq_sim.redis_url.replace("redis://", "redis://simuser:sim-pw-4711@")
    proc = subprocess.Popen([script("daq-sim"), "--port", "0", "--redis-url", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("daq-sim ready") and "***@" in line and "4711" not in line, line + proc.stderr.read()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        admin.execute_command("ACL", "DELUSER", "simuser")
        admin.close()


@pytest.mark.parametrize(
    "rest, redis_url, code",
    [
        ("{url}", "{redis}?password=Qz9-secret", 4),  # a password in the query: refused by Redis, exit 4
        ("http://usr:Ab#Qz9-secret@127.0.0.1:1", "{redis}", 2),  # unencoded '#': refused, never echoed
        ("http://usr:Ab Qz9-secret@127.0.0.1:1", "{redis}", 2),  # a space
        ("http://usr:Ab/Qz9-secret@127.0.0.1:1", "{redis}", 2),  # a slash
    ],
    ids=["query-password", "hash", "space", "slash"],
)
def test_credentials_never_show_whatever_their_form(daq_sim, tmp_path, rest, redis_url, code):
    """Passwords in a query string or with characters that break URL parsing never reach the
    terminal, the report or the log."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: READY}\n")
    report = tmp_path / "r.json"
    proc = daq_run(
        str(path), "--url", rest.format(url=daq_sim.url), "--redis", redis_url.format(redis=daq_sim.redis_url),
        "--report", str(report), "--log-format", "json",
    )
    assert code == proc.returncode, proc.stderr
    everything = proc.stdout + proc.stderr + (report.read_text() if report.exists() else "")
    assert "Qz9-secret" not in everything and "Qz9" not in everything


def test_a_short_user_name_does_not_mangle_messages(daq_sim, tmp_path):
    """The user name 'u' is masked in URLs, not in every word that holds a 'u'."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - check: {writer: WRITING}\n")
    rest = daq_sim.url.replace("http://", "http://u:pw-long-enough@")
    proc = daq_run(str(path), "--url", rest, "--redis", daq_sim.redis_url, "--report", str(tmp_path / "r.json"))
    assert 1 == proc.returncode
    report = json.loads((tmp_path / "r.json").read_text())
    assert "writer is READY, expected WRITING" == report["steps"][0]["error"]
    assert "pw-long-enough" not in (tmp_path / "r.json").read_text() and "http://***@" in report["daq"]["url"]


def test_a_closed_stderr_or_stdout_does_not_end_the_run(daq_sim, tmp_path):
    """JSON log lines into a pipe whose reader left (``2>&1 | head -1``), or onto a full device:
    the log stops, the run goes on and passes, the report is complete."""
    import subprocess

    from .conftest import script

    path = batch_file(tmp_path, "version: 1\nsteps:\n" + "".join(f"  - write: {{output_file: '{{root}}/f{i}.h5', n_images: 3}}\n" for i in range(4)))
    report = tmp_path / "r.json"
    command = f"{script('daq-run')} {path} --url {daq_sim.url} --redis {daq_sim.redis_url} --report {report} 2>&1 | head -1; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    final = json.loads(report.read_text())
    assert "passed" == final["status"] and 4 == len(final["steps"])
    if os.path.exists("/dev/full"):
        report2 = tmp_path / "r2.json"
        with open("/dev/full", "w") as full:
            proc = subprocess.run(
                [script("daq-run"), str(path), "--url", daq_sim.url, "--redis", daq_sim.redis_url, "--report", str(report2), "--overwrite"],
                stdout=full, stderr=full, timeout=60,
            )
        assert 0 == proc.returncode
        assert "passed" == json.loads(report2.read_text())["status"]
