"""The std_cli tools: option and URL checks, config files that cannot hang or crash them, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daq_runner import std_cli
from daq_runner._config_file import MAX_CONFIG_BYTES
from daq_runner.client import StdDaqClient
from daq_runner.exceptions import DaqTransportError

from .conftest import run_script
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
    requests.post(daq_sim.url + "/sim/faults", json={"fail_next": "ERROR: disk full"}, timeout=5).raise_for_status()
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
    """A stand-in for the last rest_v2 version: it refuses partial configs and starts deployments UNKNOWN."""
    state = {"config": dict(FULL), "id": 1, "polls": 0}

    def answer(method, target, headers, body):
        if method == "GET" and target == "/daq/config":
            return reply(200, {"status": "ok", "message": "DAQ configured", "config": state["config"], "config_id": f"{state['id']}-0"})
        if method == "POST" and target == "/daq/config":
            sent = json.loads(body)
            if set(sent) != set(FULL):
                return reply(200, {"status": "error", "message": PARTIAL_REFUSAL})
            state["config"], state["id"], state["polls"] = sent, state["id"] + 1, 0
            return reply(200, {"status": "ok", "message": "Setting new daq config.", "config": sent, "config_id": None})
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


# -- no traceback for any argv ------------------------------------------------------------

WORDS = [
    "-b", "--url_base", "--timeout", "-n", "--merge", "--version", "--help", "-h", "--", "-",
    "http://127.0.0.1:5000", "htp://x", "http://u:p@h:1", "0", "-1", "nan", "1e309", "5", "2.5",
    "/tmp/x.h5", "relative.h5", "/dev/zero", "/dev/null", "/", "\n", "\x1b[31m", "\x00", "💥",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tool=st.sampled_from(TOOLS), argv=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=20)), max_size=6))
def test_no_traceback_for_any_argv(tool, argv):
    """Whatever the arguments, a tool ends with a documented exit code and at most one line on stderr."""

    def fake_exchange(self, endpoint, body=None, read_timeout=None, **params):
        raise DaqTransportError(f"{endpoint.method} {self._safe_base}{endpoint.path} failed: unreachable in this test")

    with pytest.MonkeyPatch.context() as patch:
        # No network: the DAQ is unreachable, at once.
        patch.setattr(StdDaqClient, "_exchange", fake_exchange)
        patch.delenv("STD_DAQ_API_URL", raising=False)
        code, _, err = run_in_process(tool, argv)
    assert code in (0, 1, 2, 3), (code, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 1, err
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


def test_set_config_reads_yaml_as_daq_sim_does(daq_sim, tmp_path):
    """A YAML config file (YAML 1.2: NO would stay text) works with --merge, as with daq-sim --config."""
    config = tmp_path / "c.yaml"
    config.write_text("# the sweep's depth\nbit_depth: 8\n")
    code, out, err = run_in_process("std_cli_set_config", [str(config), "--merge", "-b", daq_sim.url])
    assert 0 == code, err
    assert 8 == json.loads(out)["bit_depth"] == StdDaqClient(daq_sim.url).get_config()["bit_depth"]
