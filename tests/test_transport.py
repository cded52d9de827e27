"""The transport's time bounds against stand-in servers: trickles, stalls, cancels, signals, TLS, proxies.

Every test here would hang, take far longer, or reach the proxy with a plain
``requests`` session (the old transport): a 5 s read timeout is per socket read, so a
reply trickled one byte every 0.5 s takes minutes.
"""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time

import pytest
import requests

from daq_runner import _deadline, _transport
from daq_runner.client import StdDaqClient
from daq_runner.exceptions import (
    DaqProtocolError,
    DaqTimeoutError,
    DaqTransportError,
    DeadlineExceeded,
    WriteDeadlineExceeded,
    WriteOutcomeUnknown,
    WriterNeedsRestart,
)

from .standin import StandIn, blackhole_port, make_certificate, ok_envelope, reply

SLICE = _deadline.SLICE_S
STATUS_REPLY = reply(200, ok_envelope())


def trickle_all(delay: float = 0.5):
    """A handler that trickles the whole status reply, one byte every ``delay`` s."""

    def handler(conn):
        if conn.read_request() is not None:
            conn.trickle(STATUS_REPLY, delay)

    return handler


def keep_alive(conn):
    conn.serve_forever(lambda *request: STATUS_REPLY)


@pytest.fixture
def trickler():
    with StandIn(trickle_all()) as server:
        yield server


def elapsed_since(started: float) -> float:
    return time.monotonic() - started


# -- the whole reply has a deadline ------------------------------------------------------


def test_trickled_reply_ends_within_connect_plus_read_timeout(trickler):
    """A reply trickled one byte every 0.5 s ends at connect + read timeout (1 + 1 s), not minutes later."""
    client = StdDaqClient(trickler.url, timeout=1.0, retries=0)
    started = time.monotonic()
    with pytest.raises(DaqTimeoutError) as info:
        client.get_status()
    assert 1.9 <= elapsed_since(started) < 2.6
    assert not isinstance(info.value, DeadlineExceeded), "the request's own limit, not the caller's bound"
    assert "no complete reply within 2 s" in str(info.value)


def test_trickled_body_after_prompt_headers_ends_in_time():
    """Headers at once, then a body trickled byte by byte: still ends at the total deadline."""
    head_end = STATUS_REPLY.index(b"\r\n\r\n") + 4

    def handler(conn):
        if conn.read_request() is not None:
            conn.trickle(STATUS_REPLY, 0.3, start=head_end + 1)

    with StandIn(handler) as server:
        client = StdDaqClient(server.url, timeout=0.5, retries=0)
        started = time.monotonic()
        with pytest.raises(DaqTimeoutError):
            client.get_status()
        assert elapsed_since(started) < 1.5


def test_bounded_session_alone_ends_a_trickle(trickler):
    """The adapter bounds any request through the session: connect + read seconds for the whole reply."""
    session = _transport.new_session()
    started = time.monotonic()
    with pytest.raises(requests.RequestException):
        session.get(trickler.url + "/writer/status", timeout=(0.5, 0.5))
    assert elapsed_since(started) < 1.5


def test_stalled_reply_still_times_out_per_read():
    """A server that never answers ends at the read timeout, reported as such."""

    def handler(conn):
        conn.read_request()
        conn.server.closed.wait(30)

    with StandIn(handler) as server:
        client = StdDaqClient(server.url, timeout=0.5, retries=0)
        started = time.monotonic()
        with pytest.raises(DaqTimeoutError, match="timed out after 0.5 s"):
            client.get_status()
        assert 0.45 <= elapsed_since(started) < 1.0


# -- the caller's bound ---------------------------------------------------------------------


def test_callers_bound_ends_a_trickle_with_deadline_exceeded_and_no_retry(trickler):
    """Within `bounded(0.8 s)` a trickling request ends at 0.8 s with DeadlineExceeded, not retried."""
    client = StdDaqClient(trickler.url, timeout=5.0, retries=3)
    started = time.monotonic()
    with _deadline.bounded(_deadline.Deadline(0.8)):
        with pytest.raises(DeadlineExceeded) as info:
            client.get_status()
    assert 0.75 <= elapsed_since(started) < 1.2
    assert 1 == trickler.connections
    assert isinstance(info.value, DaqTimeoutError) and isinstance(info.value, RuntimeError)


def test_callers_bound_on_a_write_start_is_also_write_outcome_unknown(trickler):
    """A write start ended by the caller's bound may have begun: WriteDeadlineExceeded, both kinds."""
    client = StdDaqClient(trickler.url, timeout=5.0, retries=3)
    with _deadline.bounded(_deadline.Deadline(0.5)):
        with pytest.raises(WriteDeadlineExceeded) as info:
            client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1, "run_id": 3})
    assert isinstance(info.value, WriteOutcomeUnknown) and isinstance(info.value, DeadlineExceeded)
    assert "may have started" in str(info.value)
    assert 1 == len(trickler.requests)


def test_expired_bound_sends_nothing(trickler):
    """A request whose bound has already passed is not sent at all."""
    client = StdDaqClient(trickler.url, timeout=5.0, retries=3)
    with _deadline.bounded(_deadline.Deadline(0.0)):
        with pytest.raises(DeadlineExceeded, match="not sent"):
            client.get_status()
    time.sleep(0.05)
    assert 0 == trickler.connections


def test_callers_bound_ends_a_hanging_connect():
    """A TCP connect that never completes ends at the caller's bound, not at the 5 s connect timeout."""
    listener, fillers = blackhole_port()
    try:
        client = StdDaqClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=5.0, retries=3)
        started = time.monotonic()
        with _deadline.bounded(_deadline.Deadline(0.5)):
            with pytest.raises(DeadlineExceeded):
                client.get_status()
        assert elapsed_since(started) < 0.9
    finally:
        for sock in (listener, *fillers):
            sock.close()


# -- a stop request (cancel event) ----------------------------------------------------------


def cancel_after(seconds: float) -> threading.Event:
    event = threading.Event()
    timer = threading.Timer(seconds, event.set)
    timer.daemon = True
    timer.start()
    return event


def test_cancel_from_another_thread_ends_a_trickling_request(trickler):
    """A cancel event set from another thread ends a trickling request within SLICE_S."""
    client = StdDaqClient(trickler.url, timeout=5.0, retries=3)
    event = cancel_after(0.3)
    started = time.monotonic()
    with _deadline.bounded(_deadline.Deadline(None, event)):
        with pytest.raises(_deadline.Interrupted):
            client.get_status()
    assert elapsed_since(started) < 0.3 + 0.5  # ended within 0.5 s of the stop
    assert 1 == trickler.connections, "an interrupted request is not retried"


def test_cancel_ends_a_hanging_connect():
    """A cancel event ends a TCP connect that never completes within SLICE_S."""
    listener, fillers = blackhole_port()
    try:
        client = StdDaqClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=5.0, retries=0)
        event = cancel_after(0.3)
        started = time.monotonic()
        with _deadline.bounded(_deadline.Deadline(None, event)):
            with pytest.raises(_deadline.Interrupted):
                client.get_status()
        assert elapsed_since(started) < 0.3 + 0.5  # ended within 0.5 s of the stop
    finally:
        for sock in (listener, *fillers):
            sock.close()


def test_cancel_ends_a_retry_pause():
    """The pause between retries is the bound's sleep: a stop ends it at once."""
    listener = StandIn(lambda conn: conn.read_request() and conn.send(reply(503, b"busy")))
    with listener:
        client = StdDaqClient(listener.url, timeout=1.0, retries=50)
        event = cancel_after(0.5)
        started = time.monotonic()
        with _deadline.bounded(_deadline.Deadline(None, event)):
            with pytest.raises(_deadline.Interrupted):
                client.get_status()
        assert elapsed_since(started) < 0.5 + 0.2


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
def test_signal_handler_setting_the_cancel_event_ends_the_request(trickler):
    """A signal whose handler sets the cancel event (as daq-run's does) ends a blocked read."""
    event = threading.Event()
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: event.set())
    try:
        client = StdDaqClient(trickler.url, timeout=5.0, retries=3)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        started = time.monotonic()
        with _deadline.bounded(_deadline.Deadline(None, event)):
            with pytest.raises(_deadline.Interrupted):
                client.get_status()
        assert elapsed_since(started) < 0.3 + 0.5  # ended within 0.5 s of the stop
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def trickle_first_then_keep_alive():
    """A stand-in handler: the first connection's reply trickles (a byte every 0.5 s), later ones answer at once."""
    calls = []

    def handler(conn):
        calls.append(1)
        if len(calls) == 1:
            if conn.read_request() is not None:
                conn.trickle(STATUS_REPLY, 0.5)
        else:
            keep_alive(conn)

    return handler


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
def test_signal_raising_in_a_request_leaves_the_client_usable():
    """KeyboardInterrupt from a signal ends a request at once; the next request gets a fresh connection."""
    handler = trickle_first_then_keep_alive()

    def interrupt(signum, frame):
        raise KeyboardInterrupt()

    with StandIn(handler) as server:
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            client = StdDaqClient(server.url, timeout=5.0, retries=0)
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                client.get_status()
            assert elapsed_since(started) < 0.6
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert "READY" == client.get_status()["state"]
        assert 2 == server.connections


# -- keep-alive ------------------------------------------------------------------------------


def test_keep_alive_connection_is_reused():
    """Twenty requests of one client travel on one TCP connection."""
    with StandIn(keep_alive) as server:
        client = StdDaqClient(server.url, retries=0)
        for _ in range(20):
            client.get_status()
        assert 1 == server.connections
        with _deadline.bounded(_deadline.Deadline(5.0, threading.Event())):
            client.get_status()  # a bound with a cancel event: sliced reads, same connection
        assert 1 == server.connections


def test_connection_closed_by_the_server_is_replaced_not_an_error():
    """A keep-alive connection the server closed while idle is noticed and replaced (no retry needed)."""

    def one_then_close(conn):
        if conn.read_request() is not None:
            conn.send(STATUS_REPLY)  # keep-alive reply, then the server drops the connection
        time.sleep(0.05)

    with StandIn(one_then_close) as server:
        client = StdDaqClient(server.url, retries=0)
        client.get_status()
        time.sleep(0.2)
        client.get_status()
        assert 2 == server.connections


# -- write and stop read timeouts fit the server ------------------------------------------


@pytest.mark.parametrize(
    "method, args, text",
    [
        ("start_writer_async", ({"output_file": "/tmp/a.h5", "n_images": 1},), "Cannot reach WRITING. Writer needs to be restarted."),
        ("stop_writer", (), "Cannot reach READY. Writer needs to be restarted."),
    ],
)
def test_slow_restart_refusal_is_the_daqs_refusal(method, args, text):
    """write_async and stop read for write_timeout, so the server's late refusal arrives as a refusal.

    The real server answers these after up to ~5 s; here it answers after 1 s to a client
    whose `timeout` is 0.5 s: the refusal, not a lost reply (WriteOutcomeUnknown).
    """

    def handler(conn):
        if conn.read_request() is not None:
            time.sleep(1.0)
            conn.send(reply(200, {"status": "error", "message": text}))

    with StandIn(handler) as server:
        client = StdDaqClient(server.url, timeout=0.5, retries=0)
        with pytest.raises(WriterNeedsRestart) as info:
            getattr(client, method)(*args)
        assert text == str(info.value)
        assert not isinstance(info.value, RuntimeError)


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    made = make_certificate(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("the openssl tool is needed to make a test certificate")
    return made


def tls_context(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    return context


@pytest.fixture(autouse=True)
def no_ca_bundle_override(monkeypatch):
    # requests prefers $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE over session.verify.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def tls_client(server, certificate, **kwargs) -> StdDaqClient:
    client = StdDaqClient(server.url, **kwargs)
    client.session.verify = str(certificate[0])
    return client


def test_tls_trickle_ends_within_its_deadline(certificate):
    """Through TLS too: a trickled reply ends at connect + read timeout."""
    with StandIn(trickle_all(), tls=tls_context(certificate)) as server:
        client = tls_client(server, certificate, timeout=1.0, retries=0)
        started = time.monotonic()
        with pytest.raises(DaqTimeoutError):
            client.get_status()
        assert elapsed_since(started) < 2.6


def test_tls_cancel_ends_a_trickling_request(certificate):
    """Through TLS too: a cancel event ends a trickling request within SLICE_S."""
    with StandIn(trickle_all(), tls=tls_context(certificate)) as server:
        client = tls_client(server, certificate, timeout=5.0, retries=0)
        event = cancel_after(0.5)
        started = time.monotonic()
        with _deadline.bounded(_deadline.Deadline(None, event)):
            with pytest.raises(_deadline.Interrupted):
                client.get_status()
        assert elapsed_since(started) < 0.5 + 0.5


def test_tls_keep_alive_is_reused(certificate):
    """Through TLS, requests share one connection, also with sliced reads."""
    with StandIn(keep_alive, tls=tls_context(certificate)) as server:
        client = tls_client(server, certificate, retries=0)
        for _ in range(5):
            client.get_status()
        with _deadline.bounded(_deadline.Deadline(5.0, threading.Event())):
            for _ in range(5):
                assert "READY" == client.get_status()["state"]
        assert 1 == server.connections


# -- proxies ------------------------------------------------------------------------------


@pytest.fixture
def recording_proxy(monkeypatch):
    """An HTTP proxy that records what reaches it and answers 502; named in every proxy variable."""

    def handler(conn):
        if conn.read_request() is not None:
            conn.send(reply(502, b"proxy: no route", reason="Bad Gateway"))

    with StandIn(handler) as proxy:
        proxy_url = f"http://proxyuser:proxysecret@127.0.0.1:{proxy.port}"
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        yield proxy


def test_loopback_daq_never_goes_through_an_environment_proxy(recording_proxy, daq_sim):
    """With HTTP_PROXY/ALL_PROXY set, requests to a loopback DAQ go direct: the proxy sees nothing."""
    port = daq_sim.url.rsplit(":", 1)[1]
    for url in (daq_sim.url, f"http://localhost:{port}", f"http://127.1:{port}", f"http://2130706433:{port}"):
        client = StdDaqClient(url, retries=0)
        assert "READY" == client.get_status()["state"]
        client.get_config()
    assert [] == recording_proxy.requests


def test_a_proxy_that_is_used_is_named_without_its_password(recording_proxy):
    """A non-loopback DAQ goes through the proxy; the error names the proxy, credentials masked."""
    client = StdDaqClient("http://daq.invalid:5000", timeout=2.0, retries=0)
    with pytest.raises(DaqTransportError) as info:
        client.get_status()
    message = str(info.value)
    assert f"via proxy http://***@127.0.0.1:{recording_proxy.port}" in message
    assert "proxysecret" not in message and "proxyuser" not in message
    assert "http://daq.invalid:5000/writer/status" == recording_proxy.requests[0][1]


def test_the_environment_is_read_once_per_host(recording_proxy, daq_sim, monkeypatch):
    """Proxy variables are read on a client's first request to a host, not on every request
    (each read scans the whole environment twice); the loopback DAQ still goes direct."""
    import requests.sessions

    reads = []
    real = requests.sessions.get_environ_proxies

    def counted(url, no_proxy=None):
        reads.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    client = StdDaqClient(daq_sim.url, retries=0)
    for _ in range(5):
        assert "READY" == client.get_status()["state"]
    client.get_config()
    assert 1 == len(reads)
    assert [] == recording_proxy.requests


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("daq.localhost", True),
        ("::ffff:127.0.0.1", True),
        ("127.1", True),  # the resolver's short forms: connect to loopback all the same
        ("0x7f.1", True),
        ("2130706433", True),
        ("10.1", False),
        ("1", False),
        ("10.0.0.1", False),
        ("daq-host", False),
        ("128.0.0.1", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host, loopback):
    """Loopback hosts: localhost, 127.0.0.0/8, ::1 and IPv4-mapped 127.x."""
    assert loopback == _transport.is_loopback(host)


# -- size and cost -----------------------------------------------------------------------


def test_reply_larger_than_the_limit_is_refused(monkeypatch):
    """A reply body over MAX_REPLY_BYTES is not read into memory: a protocol error."""
    from daq_runner.exceptions import DaqProtocolError

    monkeypatch.setattr(_transport, "MAX_REPLY_BYTES", 1000)
    big = reply(200, {"status": "ok", "message": "x" * 5000, "writer": {"state": "READY"}})
    with StandIn(lambda conn: conn.read_request() and conn.send(big)) as server:
        with pytest.raises(DaqProtocolError, match="larger than"):
            StdDaqClient(server.url, retries=0).get_status()


def test_bounded_transport_answers_like_plain_requests(daq_sim):
    """Same replies as a plain session on the real simulator, with and without a bound in force."""
    plain = requests.Session().get(daq_sim.url + "/daq/config", timeout=5).json()
    client = StdDaqClient(daq_sim.url)
    assert plain == client.request(__import__("daq_runner").protocol.DAQ_CONFIG_GET)
    with _deadline.bounded(_deadline.Deadline(5.0, threading.Event())):
        assert plain["config"] == client.get_config()
    assert json.loads(json.dumps(client.get_status()))["state"] == "READY"


# -- any reply is survivable ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, kind",
    [
        (b"garbage\r\n\r\n", "DaqTransportError"),
        # urllib3 2 reports the short body as a broken connection; 1.26 hands it over (not JSON).
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"status\"", "DaqError"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz", "DaqProtocolError"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "DaqTransportError"),
        (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100000 + b"\r\n\r\n", "DaqTransportError"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\xff\xfe\x00\x01", "DaqProtocolError"),
        (b"HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n", "DaqHTTPError"),
    ],
)
def test_garbage_replies_are_daq_errors(raw, kind):
    """Not HTTP, a short body, bad gzip, bad chunks, a huge header, binary JSON, a strange status: DaqError subclasses."""
    from daq_runner import exceptions

    with StandIn(lambda conn: conn.read_request() and conn.send(raw)) as server:
        with pytest.raises(getattr(exceptions, kind)) as info:
            StdDaqClient(server.url, timeout=1.0, retries=0).get_status()
    assert 1 == len(str(info.value).splitlines())


def test_any_reply_bytes_end_in_a_daq_error_or_a_result():
    """Random bytes as a reply: the client returns or raises a daq-runner exception, within its limit."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from daq_runner.exceptions import DaqRunnerError

    pieces = st.sampled_from([
        b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 503 x\r\n", b"Content-Length: 3\r\n", b"Content-Length: 99999\r\n",
        b"Transfer-Encoding: chunked\r\n", b"Content-Encoding: deflate\r\n", b"\r\n", b'{"status": "ok", "writer": ',
        b'{"state": "READY"}}', b"null", b"[]", b"0\r\n\r\n", b"\x00\xff", b"Location: http://u:p@x/\r\n",
    ])
    replies: list = []

    def handler(conn):
        if conn.read_request() is not None and replies:
            conn.send(replies.pop())

    with StandIn(handler) as server:
        client = StdDaqClient(server.url, timeout=0.5, retries=0)

        @settings(max_examples=150, deadline=None)
        @given(st.lists(st.one_of(pieces, st.binary(max_size=30)), max_size=8))
        def one(parts):
            replies[:] = [b"".join(parts)]
            started = time.monotonic()
            try:
                client.get_status()
            except DaqRunnerError as exc:
                assert 1 == len(str(exc).splitlines()) and "\x00" not in str(exc)
            assert time.monotonic() - started < 1.5

        one()


def test_bounds_are_per_thread_on_a_shared_client():
    """Two threads share one client: one is bounded and cancelled, the other is not disturbed."""
    handler = trickle_first_then_keep_alive()

    with StandIn(handler) as server:
        client = StdDaqClient(server.url, timeout=5.0, retries=0)
        outcome = {}
        event = threading.Event()

        def bounded_thread():
            with _deadline.bounded(_deadline.Deadline(None, event)):
                try:
                    client.get_status()
                except _deadline.Interrupted:
                    outcome["a"] = "interrupted"

        a = threading.Thread(target=bounded_thread)
        a.start()
        time.sleep(0.2)
        states = [client.get_status()["state"] for _ in range(5)]  # the main thread, no bound
        event.set()
        a.join(timeout=2)
        assert "interrupted" == outcome.get("a") and ["READY"] * 5 == states


# -- write starts: re-sent only when they provably never left ------------------------------


def test_write_whose_connect_hangs_is_retried_not_unknown():
    """A connect that times out never reached the DAQ: the write may be sent again."""
    listener, fillers = blackhole_port()
    try:
        client = StdDaqClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3, retries=1, sleep=lambda s: None)
        with pytest.raises(DaqTimeoutError) as info:
            client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1})
        assert not isinstance(info.value, WriteOutcomeUnknown)
    finally:
        for sock in (listener, *fillers):
            sock.close()


def test_write_whose_connection_drops_after_sending_is_unknown():
    """The DAQ read the write and closed the connection without a reply: WriteOutcomeUnknown, sent once."""
    with StandIn(lambda conn: conn.read_request()) as server:
        client = StdDaqClient(server.url, retries=3)
        with pytest.raises(WriteOutcomeUnknown, match="Remote end closed connection"):
            client.start_writer_async({"output_file": "/tmp/a.h5", "n_images": 1, "run_id": 9})
        assert 1 == len(server.requests)


def test_https_to_a_plain_http_daq_is_one_protocol_error_not_an_outage():
    """https:// given for a DAQ that speaks plain HTTP: a TLS failure no retry mends, so it
    is not ridden out as an outage (daq-run waited its whole outage budget, 40 s)."""
    import http.server

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    # A real HTTP server: it answers the TLS hello with "400 Bad request" in plain text.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = StdDaqClient(f"https://127.0.0.1:{server.server_address[1]}", retries=5)
        started = time.monotonic()
        with pytest.raises(DaqProtocolError, match="TLS failed: .*WRONG_VERSION_NUMBER"):
            client.get_status()
        assert time.monotonic() - started < 1.0
    finally:
        server.shutdown()


def test_a_certificate_that_does_not_verify_is_not_retried(certificate):
    with StandIn(keep_alive, tls=tls_context(certificate)) as server:
        client = StdDaqClient(server.url, retries=5)
        client.session.verify = True  # the system's CAs: ours is self-signed
        started = time.monotonic()
        with pytest.raises(DaqProtocolError, match="TLS failed: .*certificate verify failed"):
            client.get_status()
        assert time.monotonic() - started < 1.0
        assert 1 == server.connections
