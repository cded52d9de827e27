"""The std_cli tools: option and URL checks, config files that cannot hang or crash them, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq_runner import protocol, std_cli
from daq_runner._config_file import MAX_CONFIG_BYTES
from daq_runner.client import StdDaqClient
from daq_runner.exceptions import DaqTransportError
from daq_runner.lock import FORCED_SUFFIX, LOCK_KEY, DaqLock
from daq_runner.testing import arm_faults

from .conftest import run_script, stream_entries
from .standin import StandIn, reply

TOOLS = sorted(std_cli.TOOLS)


def run_in_process(prog: str, argv: list) -> tuple:
    """Run a tool in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = std_cli.run_tool(prog, argv)
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(proc_or_err: str) -> None:
    assert 1 == len(proc_or_err.strip().splitlines()), proc_or_err
    assert "Traceback" not in proc_or_err


# -- options and URLs --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "abc", "1e999", ""])
def test_timeout_must_be_finite_and_positive(value):
    """--timeout 0, -1, nan, inf are usage errors (exit 2, one line), not tracebacks."""
    code, _, err = run_in_process("std_cli_get_status", ["--timeout", value, "-b", "http://127.0.0.1:1"])
    assert 2 == code
    assert_one_line_error(err)
    assert "--timeout" in err


def test_timeout_nan_through_the_installed_tool():
    """The installed console script: exit 2, one line, no traceback."""
    proc = run_script("std_cli_get_status", "--timeout", "nan")
    assert 2 == proc.returncode
    assert_one_line_error(proc.stderr)


@pytest.mark.parametrize("url", ["htp://127.0.0.1:5000", "127.0.0.1:5000", "ftp://daq", "http://", "http://daq:99999", "http://[::1"])
def test_url_that_is_not_http_is_a_usage_error(url):
    """A URL that is not http(s) is exit 2 'not an http(s) URL', not exit 3 'unreachable'."""
    code, _, err = run_in_process("std_cli_get_status", ["-b", url])
    assert 2 == code, err
    assert_one_line_error(err)
    assert "URL" in err and "unreachable" not in err


def test_bad_url_from_the_environment_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("STD_DAQ_API_URL", "htp://u:secret@daq:5000")
    code, _, err = run_in_process("std_cli_get_status", [])
    assert 2 == code and "not an http(s) URL" in err and "secret" not in err


def test_unreachable_daq_message_hides_credentials():
    """Exit 3 and a one-line message with the URL's credentials as ***."""
    from daq_runner.sim.redis_server import free_port

    code, _, err = run_in_process("std_cli_get_status", ["-b", f"http://user:s3cret@127.0.0.1:{free_port()}", "--timeout", "0.5"])
    assert 3 == code
    assert_one_line_error(err)
    assert "s3cret" not in err and "http://***@127.0.0.1" in err and "Connection refused" in err


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_has_version(tool):
    """--version prints the tool's name and daq-runner's version, exit 0."""
    from daq_runner import __version__

    code, out, _ = run_in_process(tool, ["--version"])
    assert 0 == code and tool in out and __version__ in out


def test_write_sync_help_documents_exit_1_on_failed():
    code, out, _ = run_in_process("std_cli_write_sync", ["--help"])
    assert 0 == code and "Exit status 1 when the acquisition ended FAILED" in " ".join(out.split())
    assert "FAILED" in std_cli.__doc__


# -- config files ----------------------------------------------------------------------------


def config_cases(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    big.write_text('{"a": "' + "x" * (MAX_CONFIG_BYTES + 10) + '"}')
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' + "[" * 100000 + "]" * 100000 + "}")
    medium = tmp_path / "medium.json"
    medium.write_text('{"a": ' + "[" * 40 + "]" * 40 + "}")
    nan = tmp_path / "nan.json"
    nan.write_text('{"bit_depth": .nan}')
    twice = tmp_path / "twice.json"
    twice.write_text('{"bit_depth": 8, "bit_depth": 16}')
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n# nothing\n")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"detector_name": "\xe9"}')
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    return [
        ("/dev/zero", "not a regular file"),
        (str(fifo), "not a regular file"),
        (str(tmp_path), "is a directory"),
        (str(big), "larger than 1024 KiB"),
        (str(deep), "nested too deeply (more than 32 levels)"),
        (str(medium), "nested too deeply (more than 32 levels)"),
        (str(nan), "number '.nan' is not finite"),
        (str(twice), "duplicate key 'bit_depth'"),
        (str(empty), "is empty"),
        (str(latin), "not UTF-8"),
        (str(lst), "must hold a mapping of config fields (a JSON object), not a list"),
        (str(tmp_path / "missing.json"), "does not exist"),
    ]


def test_bad_config_files_are_one_line_usage_errors_and_never_hang(tmp_path):
    """/dev/zero, a FIFO, a directory, 1 MiB+, deep, NaN, a key twice, empty, not UTF-8, a list: exit 2, one line, at once."""
    for path, text in config_cases(tmp_path):
        started = time.monotonic()
        code, _, err = run_in_process("std_cli_set_config", [path, "-b", "http://127.0.0.1:1"])
        assert time.monotonic() - started < 5, path
        assert 2 == code, (path, err)
        assert_one_line_error(err)
        assert text in err, (path, err)


def test_fifo_config_through_the_installed_tool_does_not_hang(tmp_path):
    fifo = tmp_path / "c.json"
    os.mkfifo(fifo)
    proc = run_script("std_cli_set_config", str(fifo), timeout=20)
    assert 2 == proc.returncode
    assert_one_line_error(proc.stderr)


# -- write_sync and set_config --merge on the simulator ------------------------------------


def test_write_sync_exits_1_when_the_acquisition_failed(daq_sim, tmp_path):
    """The acquisition ended FAILED: the status is printed, exit 1 with the DAQ's message."""
    arm_faults(daq_sim, fail_next="ERROR: disk full")
    proc = run_script("std_cli_write_sync", str(tmp_path / "f.h5"), "3", "-b", daq_sim.url)
    assert 1 == proc.returncode
    assert "FAILED" == json.loads(proc.stdout)["acquisition"]["state"]
    assert_one_line_error(proc.stderr)
    assert "FAILED" in proc.stderr and "disk full" in proc.stderr


def test_write_sync_exits_0_when_finished(daq_sim, tmp_path):
    code, out, _ = run_in_process("std_cli_write_sync", [str(tmp_path / "ok.h5"), "2", "-b", daq_sim.url])
    assert 0 == code and "FINISHED" == json.loads(out)["acquisition"]["state"]


def test_set_config_merge_on_the_simulator(daq_sim, tmp_path):
    """--merge changes only the file's fields, waits for the deployment and prints the config in force."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"bit_depth": 32}))
    before = StdDaqClient(daq_sim.url).get_config()
    code, out, err = run_in_process("std_cli_set_config", [str(config), "--merge", "-b", daq_sim.url])
    assert 0 == code, err
    assert {**before, "bit_depth": 32} == json.loads(out)
    assert "SUCCESS" == StdDaqClient(daq_sim.url).get_deployment_status()["status"]


@pytest.mark.parametrize("changes, text", [({"bitdepth": 16}, "unknown config field(s): bitdepth"), ({"bit_depth": 12}, "bit_depth must be one of 8, 16, 32")])
def test_set_config_merge_refuses_bad_fields_before_sending(daq_sim, tmp_path, changes, text):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(changes))
    before = StdDaqClient(daq_sim.url).request(__import__("daq_runner").protocol.DAQ_CONFIG_GET)["config_id"]
    code, _, err = run_in_process("std_cli_set_config", [str(config), "--merge", "-b", daq_sim.url])
    assert 2 == code and text in err
    assert before == StdDaqClient(daq_sim.url).request(__import__("daq_runner").protocol.DAQ_CONFIG_GET)["config_id"]


FULL = {
    "detector_name": "EG9M", "detector_type": "eiger", "bit_depth": 16, "image_pixel_height": 512,
    "image_pixel_width": 1024, "n_modules": 2, "start_udp_port": 50000, "writer_user_id": 0,
    "module_positions": {}, "submodule_info": {},
}
PARTIAL_REFUSAL = "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"


@pytest.fixture
def last_rest_v2():
    """A stand-in for the last rest_v2 version: it refuses partial configs and module positions,
    starts deployments UNKNOWN, and its detector's rate shows the restart after a config (0 for
    two looks, then images again)."""
    state = {"config": dict(FULL), "id": 1, "polls": 0, "stat_looks": None}

    def answer(method, target, headers, body):
        if method == "GET" and target == "/daq/config":
            return reply(200, {"status": "ok", "message": "DAQ configured", "config": state["config"], "config_id": f"{state['id']}-0"})
        if method == "POST" and target == "/daq/config":
            sent = json.loads(body)
            if set(sent) != set(FULL):
                return reply(200, {"status": "error", "message": PARTIAL_REFUSAL})
            if sent["module_positions"]:
                return reply(200, {"status": "error", "message": protocol.MESSAGE_MODULE_POSITIONS})
            state["config"], state["id"], state["polls"], state["stat_looks"] = sent, state["id"] + 1, 0, 0
            return reply(200, {"status": "ok", "message": "Setting new daq config.", "config": sent, "config_id": None})
        if method == "GET" and target == "/daq/stats":
            looks = state["stat_looks"]
            rate = 100.0 if looks is None or looks >= 2 else 0.0
            state["stat_looks"] = None if looks is None else looks + 1
            return reply(200, {"status": "ok", "message": "DAQ statistics", "stats": {
                "detector": {"bytes_per_second": rate * 8, "images_per_second": rate}, "writer": {"bytes_per_second": 0, "images_per_second": 0}}})
        if method == "GET" and target == "/daq/deployment":
            state["polls"] += 1
            status, message = ("UNKNOWN", "Waiting for servers...") if state["polls"] < 3 else ("SUCCESS", "Deployment successful")
            return reply(200, {"status": "ok", "message": "Deployment status", "deployment": {
                "config_id": f"{state['id']}-0", "status": status, "message": message, "servers": {}, "stats": {}}})
        return reply(404, {"detail": "Not Found"})

    with StandIn(lambda conn: conn.serve_forever(answer)) as server:
        yield server


def test_set_config_partial_is_refused_by_the_last_server_but_merge_works(last_rest_v2, tmp_path):
    """Drop-in set_config sends the file as given (refused there); --merge sends the whole config and succeeds."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"bit_depth": 8}))
    code, _, err = run_in_process("std_cli_set_config", [str(config), "-b", last_rest_v2.url])
    assert 1 == code and "the DAQ refused: int() argument" in err
    code, out, err = run_in_process("std_cli_set_config", [str(config), "--merge", "-b", last_rest_v2.url])
    assert 0 == code, err
    assert {**FULL, "bit_depth": 8} == json.loads(out)
    assert 4 == len([t for _, t, _, _ in last_rest_v2.requests if t == "/daq/stats"]), "before the change, down twice, back"


# -- no traceback for any argv ------------------------------------------------------------

WORDS = [
    "-b", "--url_base", "--timeout", "-n", "--merge", "--version", "--help", "-h", "--", "-",
    "--redis", "--force", "-v", "redis://127.0.0.1:1/0", "redis://u:p@h:99999", "http://127.0.0.1:5000", "htp://x", "http://u:p@h:1", "0", "-1", "nan", "1e309", "5", "2.5",
    "/tmp/x.h5", "relative.h5", "/dev/zero", "/dev/null", "/", "\n", "\x1b[31m", "\x00", "💥",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tool=st.sampled_from(TOOLS), argv=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=20)), max_size=6))
def test_no_traceback_for_any_argv(tool, argv):
    """Whatever the arguments, a tool ends with a documented exit code and at most one line on
    stderr (two with -v: what the look at the runner lock found, then the error)."""

    def fake_exchange(self, endpoint, body=None, read_timeout=None, **params):
        raise DaqTransportError(f"{endpoint.method} {self._safe_base}{endpoint.path} failed: unreachable in this test")

    with pytest.MonkeyPatch.context() as patch:
        # No network: the DAQ is unreachable, at once.
        patch.setattr(StdDaqClient, "_exchange", fake_exchange)
        patch.delenv("STD_DAQ_API_URL", raising=False)
        patch.delenv("STD_DAQ_REDIS_URL", raising=False)
        code, _, err = run_in_process(tool, argv)
    assert code in (0, 1, 2, 3, 4), (code, err)
    assert "Traceback" not in err
    verbose = any(arg == "-v" or (len(arg) > 3 and "--verbose".startswith(arg)) for arg in argv)
    assert len(err.strip().splitlines()) <= (2 if verbose else 1), err
    assert "\x1b" not in err and "\x00" not in err


@pytest.mark.parametrize("value", ["3e6", "1e10", "99999999999"])
def test_a_timeout_beyond_a_week_is_a_usage_error(value):
    """--timeout larger than a week overflowed the socket layer (a traceback): exit 2, one line."""
    proc = run_script("std_cli_get_status", "--timeout", value, "-b", "http://127.0.0.1:1")
    assert 2 == proc.returncode and "at most 604800" in proc.stderr
    assert "Traceback" not in proc.stderr and 1 == len(proc.stderr.strip().splitlines())


@pytest.mark.parametrize("where", ["full", "closed"])
def test_a_result_that_cannot_be_written_is_exit_1_without_traceback(daq_sim, where):
    """stdout on a full device or closed: one line on stderr, exit 1, no traceback."""
    import subprocess

    from .conftest import script

    if where == "full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this machine")
    command = [script("std_cli_get_status"), "-b", daq_sim.url]
    if where == "full":
        with open("/dev/full", "w") as full:
            proc = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=30)
    else:
        proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=30, close_fds=True,
                              preexec_fn=lambda: os.close(1))
    assert 1 == proc.returncode and "cannot write the result" in proc.stderr and "Traceback" not in proc.stderr


# -- bounds, odd replies, odd arguments ----------------------------------------------------


def silent(conn):
    """Reads the request and never answers (a DAQ process that hangs)."""
    conn.read_request()
    time.sleep(30)


@pytest.mark.parametrize(
    "tool, args", [("std_cli_get_status", []), ("std_cli_write_stop", []), ("std_cli_write_async", ["/tmp/x.h5", "3"])]
)
def test_timeout_bounds_the_whole_command(tool, args):
    """--timeout 1 against a DAQ that never answers ends in about 1 s, exit 3, one line
    (it took 5 s for a read and 61 s for a stop: per attempt, times the retries, and not
    at all for writes)."""
    with StandIn(silent) as server:
        started = time.monotonic()
        code, _, err = run_in_process(tool, [*args, "-b", server.url, "--timeout", "1"])
        took = time.monotonic() - started
    assert 3 == code
    assert_one_line_error(err)
    assert "not done within --timeout 1 s" in err
    assert took < 2.0, took
    if tool == "std_cli_write_async":
        assert "may have started" in err  # and it was sent once
        assert 1 == len(server.requests)


def test_an_empty_url_is_a_usage_error_not_the_default_daq(monkeypatch):
    """-b "$UNSET_VARIABLE" must not fall back to $STD_DAQ_API_URL or the local default."""
    monkeypatch.setenv("STD_DAQ_API_URL", "http://127.0.0.1:1")
    code, _, err = run_in_process("std_cli_get_status", ["-b", ""])
    assert 2 == code
    assert_one_line_error(err)
    assert "URL is empty" in err


@pytest.mark.parametrize("depth", [40, 1000])
def test_a_deeply_nested_reply_is_one_line_exit_1(depth):
    """A reply nested 1,000+ levels deep used to pass json.loads and crash the printing with
    a RecursionError traceback: now any reply deeper than the limit is a protocol error."""
    config = "{" + '"x":{' * depth + "}" * depth + "}"
    body = ('{"status": "ok", "message": "x", "config": ' + config + "}").encode()

    def deep(conn):
        while conn.read_request() is not None:
            conn.send(reply(200, body))

    with StandIn(deep) as server:
        # The installed tool: a fresh process's stack is what decides whether json.loads copes.
        proc = run_script("std_cli_get_config", "-b", server.url, "--timeout", "5")
    assert 1 == proc.returncode, proc.stderr
    assert_one_line_error(proc.stderr)
    assert "nested more than 32 levels" in proc.stderr and "" == proc.stdout


# -- the runner lock ----------------------------------------------------------------------

CHANGING = {
    "std_cli_write_async": ["{root}/a.h5", "3"],
    "std_cli_write_sync": ["{root}/a.h5", "3"],
    "std_cli_write_stop": [],
    "std_cli_set_config": ["{root}/c.yaml"],
}
READ_ONLY = sorted(set(TOOLS) - set(CHANGING))
HOLDER = {"host": "beamline-pc", "pid": 4242, "batch": "/data/scan.yaml", "run": "r1"}


@pytest.fixture
def held_lock(daq_sim):
    """A real DaqLock held in the simulator's Redis, as a daq-run on another host holds it."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    lock = DaqLock(client, HOLDER)
    lock.acquire()
    yield lock
    lock.release()
    client.close()


def tool_args(tool, tmp_path):
    (tmp_path / "c.yaml").write_text("bit_depth: 32\n")
    return [a.format(root=tmp_path) for a in CHANGING[tool]]


def daq_state(daq_sim):
    """What any of the four tools would change: the writer status, the config id, the DAQ's log."""
    client = StdDaqClient(daq_sim.url)
    config_id = client.request(protocol.DAQ_CONFIG_GET)["config_id"]
    return client.get_status(), config_id, len(stream_entries(daq_sim.redis_url, "daq:log"))


@pytest.mark.parametrize("tool", sorted(CHANGING))
def test_tools_that_change_the_daq_refuse_while_a_runner_holds_the_lock(daq_sim, held_lock, tmp_path, tool):
    """Exit 4 and one line naming the holder (host, pid, batch, since); nothing sent to the DAQ."""
    StdDaqClient(daq_sim.url).start_writer_sync({"output_file": str(tmp_path / "first.h5"), "n_images": 2})
    before = daq_state(daq_sim)  # a stop sent to this idle writer would log its acquisition again
    code, out, err = run_in_process(tool, [*tool_args(tool, tmp_path), "-b", daq_sim.url, "--redis", daq_sim.redis_url])
    assert 4 == code and "" == out, err
    assert_one_line_error(err)
    assert f"host beamline-pc, pid 4242, batch /data/scan.yaml, since {held_lock.holder_info['since']}" in err
    assert "--force" in err
    assert before == daq_state(daq_sim)
    assert not (tmp_path / "a.h5").exists()


@pytest.mark.parametrize("tool", READ_ONLY)
def test_read_only_tools_are_never_blocked(daq_sim, held_lock, tool):
    """The five tools that only read work while a runner holds the lock, and do not look at it."""
    code, out, err = run_in_process(tool, ["-b", daq_sim.url])
    assert 0 == code and "" == err
    json.loads(out)


def test_a_lock_value_set_by_hand_is_a_holder(daq_sim, tmp_path):
    """A lock key that is not a runner's counts as held, as daq-run treats it, and is quoted."""
    admin = redis.Redis.from_url(daq_sim.redis_url)
    admin.set(LOCK_KEY, "maintenance by bob\n\x1b[31m", px=60_000)
    try:
        code, _, err = run_in_process("std_cli_write_async", [str(tmp_path / "a.h5"), "3", "-b", daq_sim.url, "--redis", daq_sim.redis_url])
    finally:
        admin.delete(LOCK_KEY)
        admin.close()
    assert 4 == code
    assert_one_line_error(err)
    assert "the DAQ's runner lock is held (a lock value not set by a runner: 'maintenance by bob \\x1b[31m')" in err
    assert not (tmp_path / "a.h5").exists()


def test_a_dead_holder_of_this_host_does_not_block(daq_sim):
    """A lock left by a process of this host that no longer runs (daq-run takes it over): not blocked, -v says so."""
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    admin = redis.Redis.from_url(daq_sim.redis_url)
    admin.set(LOCK_KEY, json.dumps({**HOLDER, "host": socket.gethostname(), "pid": dead.pid}), px=60_000)
    try:
        code, _, err = run_in_process("std_cli_write_stop", ["-b", daq_sim.url, "--redis", daq_sim.redis_url, "-v"])
    finally:
        admin.delete(LOCK_KEY)
        admin.close()
    assert 0 == code, err
    assert "held by a process of this host that no longer runs" in err and f"pid {dead.pid}" in err


def test_force_goes_ahead_and_records_who_what_when_with_credentials_masked(daq_sim, held_lock, tmp_path):
    """--force: the write happens, one line says so, and the stream next to the lock holds the
    tool, its arguments (URL credentials as ***), user, host, pid, time and the holder."""
    admin = redis.Redis.from_url(daq_sim.redis_url)
    admin.execute_command("ACL", "SETUSER", "forcer", "on", ">redis-pw-1", "~*", "&*", "+@all")
    try:
        host_port = daq_sim.redis_url.split("//", 1)[1].split("/", 1)[0]
        rest = daq_sim.url.replace("http://", "http://alice:rest-pw-2@")
        args = [str(tmp_path / "a.h5"), "3", "-b", rest, "--redis", f"redis://forcer:redis-pw-1@{host_port}/0", "--force"]
        code, out, err = run_in_process("std_cli_write_sync", args)
        assert 0 == code, err
        assert "FINISHED" == json.loads(out)["acquisition"]["state"]
        assert_one_line_error(err)
        assert "--force: going ahead although a runner holds this DAQ's lock (host beamline-pc, pid 4242" in err
        entries = admin.xrange(LOCK_KEY + FORCED_SUFFIX)
    finally:
        admin.execute_command("ACL", "DELUSER", "forcer")
        admin.close()
    assert 1 == len(entries)
    raw = entries[0][1][b"json"].decode()
    assert "rest-pw-2" not in raw and "redis-pw-1" not in raw and "rest-pw-2" not in err
    record = json.loads(raw)
    assert "std_cli_write_sync" == record["tool"]
    assert [str(tmp_path / "a.h5"), "3", "-b", daq_sim.url.replace("http://", "http://***@"),
            "--redis", f"redis://***@{host_port}/0", "--force"] == record["argv"]
    assert socket.gethostname() == record["host"] and os.getpid() == record["pid"] and record["user"]
    assert record["at"].endswith("Z") and held_lock.epoch == record["holder"]["epoch"]


def test_a_redis_that_cannot_be_reached_does_not_block(daq_sim):
    """Nothing listens at --redis: the stop is sent, silently; -v says why the lock was not looked at."""
    from daq_runner.sim.redis_server import free_port

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    code, _, err = run_in_process("std_cli_write_stop", ["-b", daq_sim.url, "--redis", nowhere])
    assert 0 == code and "" == err
    code, _, err = run_in_process("std_cli_write_stop", ["-b", daq_sim.url, "--redis", nowhere, "-v"])
    assert 0 == code
    assert_one_line_error(err)
    assert f"the runner lock was not looked at: Redis {nowhere} cannot be reached" in err


def test_a_stalled_redis_costs_about_a_second_and_does_not_block(daq_sim):
    """A Redis that accepts and never answers (SIGSTOP): the look gives up after about 1 s."""
    import signal

    from daq_runner.sim.redis_server import RedisServer

    with RedisServer() as stalled:
        stalled._process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            code, _, err = run_in_process("std_cli_write_stop", ["-b", daq_sim.url, "--redis", stalled.url, "-v"])
            took = time.monotonic() - started
        finally:
            stalled._process.send_signal(signal.SIGCONT)
    assert 0 == code and "cannot be reached" in err and "Timeout" in err
    assert 0.9 < took < 3.0, took


def test_the_redis_password_comes_from_the_environment(daq_sim, held_lock, monkeypatch):
    """$STD_DAQ_REDIS_PASSWORD is the password of a --redis URL without one; a wrong one is a
    warning (the look was refused), never shown, and does not block."""
    admin = redis.Redis.from_url(daq_sim.redis_url)
    admin.execute_command("ACL", "SETUSER", "locker", "on", ">right-pw-3", "~daq-runner:lock*", "&*", "+@all")
    try:
        host_port = daq_sim.redis_url.split("//", 1)[1].split("/", 1)[0]
        args = ["-b", daq_sim.url, "--redis", f"redis://locker@{host_port}/0"]
        monkeypatch.setenv("STD_DAQ_REDIS_PASSWORD", "right-pw-3")
        code, _, err = run_in_process("std_cli_write_stop", args)
        assert 4 == code and "host beamline-pc" in err
        monkeypatch.setenv("STD_DAQ_REDIS_PASSWORD", "wrong-pw-4")
        code, _, err = run_in_process("std_cli_write_stop", args)
        assert 0 == code
        assert_one_line_error(err)
        assert "warning: the runner lock was not looked at" in err and "refused" in err and "STD_DAQ_REDIS_PASSWORD" in err
        assert "wrong-pw-4" not in err
    finally:
        admin.execute_command("ACL", "DELUSER", "locker")
        admin.close()


def test_the_redis_url_pairs_with_the_rest_url_as_in_daq_run(daq_sim, held_lock, monkeypatch):
    """$STD_DAQ_REDIS_URL goes with $STD_DAQ_API_URL; with -b the Redis is the REST host's port 6379."""
    monkeypatch.setenv("STD_DAQ_API_URL", daq_sim.url)
    monkeypatch.setenv("STD_DAQ_REDIS_URL", daq_sim.redis_url)
    code, _, err = run_in_process("std_cli_write_stop", [])
    assert 4 == code and "host beamline-pc" in err
    code, _, err = run_in_process("std_cli_write_stop", ["-b", daq_sim.url, "-v"])
    assert "Redis redis://127.0.0.1:6379/0" in err  # not the environment's: it belongs to another DAQ


@pytest.mark.parametrize(
    "redis_url, text",
    [
        ("http://127.0.0.1:6379", "must be a redis/rediss/unix URL with a host"),
        ("redis://127.0.0.1:99999/0", "is not a valid URL"),
        ("redis://u:pa ss@127.0.0.1/0", "is not usable"),
        ("redis://127.0.0.1/0?health_check_interval=abc", "cannot be used"),
    ],
)
def test_a_bad_redis_url_is_a_usage_error_before_anything_is_sent(redis_url, text):
    """--redis that no client can use: exit 2, one line, the password never shown (not exit 3 for the DAQ)."""
    code, _, err = run_in_process("std_cli_write_stop", ["-b", "http://127.0.0.1:1", "--redis", redis_url])
    assert 2 == code, err
    assert_one_line_error(err)
    assert text in err and "pa ss" not in err


# -- refusals that have a way out ------------------------------------------------------------


def test_a_partial_config_refused_by_the_daq_points_to_merge(daq_sim, tmp_path):
    """daq-sim refuses partial configs as the last rest_v2 does: the same line says what --merge does."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"bit_depth": 8}))
    code, _, err = run_in_process("std_cli_set_config", [str(config), "-b", daq_sim.url])
    assert 1 == code
    assert_one_line_error(err)
    assert f"the DAQ refused: {protocol.MESSAGE_PARTIAL_CONFIG}; this DAQ refuses partial configs: --merge sends the current config" in err


def test_a_write_to_an_unknown_writer_points_to_write_stop(daq_sim_fresh, tmp_path):
    """A freshly started DAQ refuses writes until a stop: the same line says which tool makes it READY."""
    code, _, err = run_in_process("std_cli_write_async", [str(tmp_path / "a.h5"), "3", "-b", daq_sim_fresh.url])
    assert 1 == code
    assert_one_line_error(err)
    assert protocol.MESSAGE_BUSY_PREFIX in err and "std_cli_write_stop makes it READY" in err


def test_set_config_reads_yaml_as_daq_sim_does(daq_sim, tmp_path):
    """A YAML config file (YAML 1.2: NO would stay text) works with --merge, as with daq-sim --config."""
    config = tmp_path / "c.yaml"
    config.write_text("# the sweep's depth\nbit_depth: 8\n")
    code, out, err = run_in_process("std_cli_set_config", [str(config), "--merge", "-b", daq_sim.url])
    assert 0 == code, err
    assert 8 == json.loads(out)["bit_depth"] == StdDaqClient(daq_sim.url).get_config()["bit_depth"]


def test_a_writer_left_unknown_points_to_write_stop_which_mends_it(daq_sim, tmp_path, monkeypatch):
    """'Cannot reach WRITING. Writer needs to be restarted.' (n_images beyond the writer's integer):
    the line says std_cli_write_stop makes it READY, and it does."""
    monkeypatch.setattr(daq_sim.core.settings, "driver_timeout_s", 0.3)  # the real driver gives up after 5 s
    code, _, err = run_in_process("std_cli_write_async", [str(tmp_path / "a.h5"), str(2**31), "-b", daq_sim.url])
    assert 1 == code
    assert_one_line_error(err)
    assert protocol.MESSAGE_CANNOT_REACH_WRITING in err and "the writer is UNKNOWN now: std_cli_write_stop makes it READY" in err
    code, out, err = run_in_process("std_cli_write_stop", ["-b", daq_sim.url])
    assert 0 == code, err
    assert "READY" == json.loads(out)["state"]


def test_module_positions_refused_by_the_last_server_says_what_it_can_store(last_rest_v2, tmp_path):
    """The last rest_v2 cannot serialise module positions (daq-sim does not reproduce it: a stand-in
    server does): the line says that only {} can be stored."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**FULL, "module_positions": {"0": [0, 0, 1023, 511]}}))
    code, _, err = run_in_process("std_cli_set_config", [str(config), "-b", last_rest_v2.url])
    assert 1 == code
    assert_one_line_error(err)
    assert protocol.MESSAGE_MODULE_POSITIONS in err and "this DAQ can store only module_positions: {}" in err
