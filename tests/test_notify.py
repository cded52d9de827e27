"""Notifications and the heartbeat: settings, messages, and delivery to real local servers
(HTTP servers on 127.0.0.1 that record, hang or refuse; an aiosmtpd SMTP server with login
and STARTTLS under a test CA), with their time bounds."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional

import pytest

from daq_runner import events
from daq_runner.exceptions import DaqRunnerError, NotifySettingsError
from daq_runner.exit_codes import RunExit
from daq_runner.notify import (
    DEFAULT_ON,
    OUTCOMES,
    SMTP_PASSWORD_ENV,
    Heartbeat,
    Notifier,
    NotifySettings,
    SmtpServer,
    outcome_of,
)

PASSWORD = "s3cret-pw"
ENV = {SMTP_PASSWORD_ENV: PASSWORD}


# -- real local servers -------------------------------------------------------------------------


class Recorder:
    """An HTTP server on 127.0.0.1 that records every request and answers ``status``."""

    def __init__(self, status: int = 200, headers: Optional[Dict[str, str]] = None) -> None:
        self.requests: List[Dict[str, Any]] = []
        self.status = status
        self.headers = headers or {}
        self.arrived = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with recorder.arrived:
                    recorder.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
                    recorder.arrived.notify_all()
                self.send_response(recorder.status)
                for name, value in recorder.headers.items():
                    self.send_header(name, value)
                reply = b"no_service" if recorder.status >= 400 else b"ok"
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, seconds: float = 5.0) -> List[Dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, seconds)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: List[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self._stop = True
        self.thread.join(1)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = Hanging()
    yield server
    server.close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.mails: List[Dict[str, Any]] = []
        self.logins: List[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes
        from email.policy import default

        self.mails.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "message": message_from_bytes(envelope.original_content or envelope.content, policy=default),
                "tls": session.ssl is not None,
            }
        )
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"runner" and auth_data.password == PASSWORD.encode()
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=True would leave the 535 unsent


@pytest.fixture
def smtp_plain() -> Iterator[Any]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, no TLS, no login."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    controller.box = box
    yield controller
    controller.stop()


@pytest.fixture
def test_ca(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A test CA that this process trusts (``SSL_CERT_FILE``), and a server context for 127.0.0.1."""
    import ssl

    import trustme

    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def smtp_tls(test_ca: Any) -> Iterator[Any]:
    """A real SMTP server that requires STARTTLS before anything and a login (runner / PASSWORD)."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=_free_port(),
        tls_context=test_ca,
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=box.authenticate,
    )
    controller.start()
    controller.box = box
    yield controller
    controller.stop()


# -- a run's events, as a runner emits them ------------------------------------------------------------


def feed_failed_run(notifier: Notifier, *, secret_var: str = "") -> None:
    """A three-step run: a write that passed, a write that failed after 4 images, one skipped."""
    run = "20260102T020405Z-3fa9c1"
    t0 = 1_767_319_445.0

    def emit(kind: str, step: Optional[int] = None, name: Optional[str] = None, at: float = t0, /, **data: Any) -> None:
        notifier(events.Event(kind, run, step, name, data, at))

    emit(events.RUN_STARTED, batch={"name": "smoke", "path": "batches/smoke.yaml", "sha256": "x", "vars": {"note": secret_var}},
         daq={"url": "http://daq-eiger.example.org:5000", "redis": None}, n_steps=3, host="beamline-pc", pid=4242)
    emit(events.STEP_FINISHED, 1, "short write", t0 + 2, index=1, name="short write", kind="write", status="passed",
         output_file="/nonexistent/smoke_1.h5", n_images=10, n_written=10, run_id="r1", started_at=t0, finished_at=t0 + 2)
    emit(events.NOTICE, 2, "dark", t0 + 3, message="retrying")
    emit(events.STEP_FINISHED, 2, "dark", t0 + 64, index=2, name="dark", kind="write", status="failed",
         error="acquisition FAILED: ERROR: detector lost", output_file="/nonexistent/dark_1.h5", n_images=100, n_written=4,
         run_id="r2", started_at=t0 + 2, finished_at=t0 + 64)
    emit(events.STEP_FINISHED, 3, "ready", t0 + 64, index=3, name="ready", kind="check", status="skipped", error="not run")
    emit(events.RUN_FINISHED, None, None, t0 + 65.5, status="failed", reason=None, daq_unreachable=False)


RESUME = ["daq-run", "--daq", "example-eiger", "batches/smoke.yaml", "--resume", "/data/reports/smoke r.json"]


# -- outcomes -------------------------------------------------------------------------------------


def test_every_exit_code_of_daq_run_has_an_outcome():
    """Each RunExit maps to a named outcome; signals are interrupted, the lock is busy, unknown codes are failures."""
    assert {code: outcome_of(code) for code in RunExit} == {
        RunExit.PASSED: "passed",
        RunExit.FAILED: "failure",
        RunExit.USAGE: "usage",
        RunExit.UNREACHABLE: "unreachable",
        RunExit.LOCKED: "busy",
        RunExit.SIGINT: "interrupted",
        RunExit.SIGTERM: "interrupted",
    }
    assert outcome_of(99) == "failure"
    assert DEFAULT_ON == frozenset(OUTCOMES) - {"passed"}


# -- settings -------------------------------------------------------------------------------------


def test_block_with_every_key():
    """A notify: block gives targets, outcomes, SMTP with STARTTLS and login, sender, timeout and heartbeat."""
    settings = NotifySettings.from_mapping(
        {
            "to": ["https://hooks.example.org/services/T0/B0/XYZ", "mailto:ops@example.org"],
            "on": ["failure", "busy"],
            "smtp": "smtp+starttls://runner@mail.example.org",
            "from": "daq@example.org",
            "timeout": 3,
            "heartbeat": {"url": "https://hc.example.org/ping/abc", "every": 30},
        },
        source="smoke.yaml",
        environ=ENV,
    )
    assert [str(t) for t in settings.targets] == ["https://hooks.example.org/***", "mailto:ops@example.org"]
    assert settings.rules[0].on == {"failure", "busy"}
    assert settings.smtp == SmtpServer("mail.example.org", 587, "starttls", "runner", PASSWORD)
    assert (settings.sender, settings.timeout, settings.heartbeat.every) == ("daq@example.org", 3.0, 30.0)
    assert settings.targets_for("failure") and not settings.targets_for("unreachable")


def test_on_defaults_to_every_outcome_but_a_pass_and_yaml_11_on_key_is_read():
    """Without on: every outcome but a pass is told; a YAML 1.1 reader's ``True`` key counts as on:."""
    default = NotifySettings.from_mapping({"to": "https://h.example.org/x"})
    assert [o for o in OUTCOMES if default.targets_for(o)] == ["failure", "usage", "unreachable", "busy", "interrupted"]
    yaml11 = NotifySettings.from_mapping({"to": "https://h.example.org/x", True: ["always"]})
    assert all(yaml11.targets_for(o) for o in OUTCOMES)


@pytest.mark.parametrize(
    "block, message",
    [
        ({"too": "x"}, "smoke.yaml: notify.too: unknown key (did you mean 'to'?)"),
        ({"to": "slack"}, "smoke.yaml: notify.to: 'slack' is not a target: give an http(s):// webhook URL or mailto:ADDRESS"),
        ({"to": ["https://h/x", "ops@example.org"]}, "notify.to[1]: 'ops@example.org' is not a target: give an http(s):// webhook URL or mailto:ADDRESS (mail goes to mailto:ADDRESS)"),
        ({"to": "mailto:a@b.org,c@d.org"}, "one address per mailto: target"),
        ({"to": "mailto:a@b.org?subject=hi"}, "takes no ?subject="),
        ({"to": "ftp://h/x"}, "not a target"),
        ({"to": "https:///nohost"}, "must be an http:// or https:// URL with a host"),
        ({"to": []}, "notify.to: no target given"),
        ({"on": ["failure"]}, "notify: needs to: (the targets) or heartbeat:"),
        ({"to": "https://h/x", "on": ["failur"]}, "notify.on[0]: unknown outcome 'failur' (did you mean 'failure'?)"),
        ({"to": "https://h/x", "on": "passed"}, "(a pass is told with 'always')"),
        ({"to": "https://h/x", "on": []}, "notify.on: no outcome given"),
        ({"to": "https://h/x", "on": ["never", "busy"]}, "'never' cannot be combined"),
        ({"to": "https://h/x", "timeout": 0}, "notify.timeout: timeout must be a number of seconds from 1 to 60, not 0"),
        ({"to": "https://h/x", "timeout": True}, "notify.timeout: timeout must be a number"),
        ({"to": "https://h/x", "from": "me"}, "notify.from: from: must be one mail address"),
        ({"heartbeat": {"url": "https://h/x", "every": 0.5}}, "notify.heartbeat.every: the heartbeat's interval must be a number of seconds from 1 to 86400"),
        ({"heartbeat": {"every": 5}}, "heartbeat: needs url:"),
        ({"heartbeat": "hc-ping.com/abc"}, "notify.heartbeat: heartbeat URL 'hc-ping.com/***' must be an http:// or https:// URL"),
        ({"to": "mailto:a@b.org", "smtp": "mail.example.org:99999"}, "notify.smtp: SMTP server 'mail.example.org:99999' is not HOST[:PORT]"),
        ({"to": "mailto:a@b.org", "smtp": "smtp://runner@mail.example.org"}, "a login to mail.example.org needs TLS: use smtp+starttls://runner@mail.example.org"),
        ({"to": "mailto:a@b.org", "smtp": "imap://mail.example.org"}, "the scheme must be one of smtp://, smtp+starttls://, smtps://"),
        ("failure", "notify: must be a mapping"),
    ],
)
def test_invalid_block_is_one_line_naming_the_key(block, message):
    """Every mistake in a notify: block is one NotifySettingsError line naming the file and the key."""
    with pytest.raises(NotifySettingsError) as caught:
        NotifySettings.from_mapping(block, source="smoke.yaml", environ=ENV)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, DaqRunnerError)


def test_key_path_points_at_the_value_for_a_loader():
    """The error's key is the path inside the block, so that a batch loader can give line and column."""
    with pytest.raises(NotifySettingsError) as caught:
        NotifySettings.from_mapping({"to": ["https://h/x", "nope"]}, source="b.yaml")
    assert (caught.value.source, caught.value.key) == ("b.yaml", ("to", 1))


def test_passwords_never_appear_in_errors():
    """A password in a target, an SMTP address or a heartbeat URL is never echoed by a refusal."""
    cases = [
        ({"to": "https://user:hunter22@h.example.org:99999/x"}, "--"),
        ({"to": "mailto:a@b.org", "smtp": "smtp+starttls://runner:hunter22@mail.example.org"}, "$DAQ_RUNNER_SMTP_PASSWORD"),
        ({"to": "https://user:hun#ter22@h.example.org/x"}, "percent-encode"),
        ({"to": "gopher://user:hunter22@h.example.org/x"}, "not a target"),
    ]
    for block, expected in cases:
        with pytest.raises(NotifySettingsError) as caught:
            NotifySettings.from_mapping(block, source="b.yaml", environ=ENV)
        assert "hunter22" not in str(caught.value) and (expected == "--" or expected in str(caught.value))


def test_smtp_login_needs_its_password_from_the_environment():
    """A login without $DAQ_RUNNER_SMTP_PASSWORD is refused (unless validated without an environment); plain SMTP with a login only on loopback."""
    with pytest.raises(NotifySettingsError, match=r"--smtp: the SMTP login runner needs its password in \$DAQ_RUNNER_SMTP_PASSWORD"):
        NotifySettings.from_args(smtp="smtps://runner@mail.example.org", environ={})
    unchecked = NotifySettings.from_mapping({"to": "mailto:a@b.org", "smtp": "smtps://runner@mail.example.org"}, source="b.yaml")
    assert (unchecked.smtp.user, unchecked.smtp.password) == ("runner", None)  # validated alone: the CLI gives the environment
    local = NotifySettings.from_args(smtp="runner@127.0.0.1:2525", environ=ENV).smtp
    assert (local.host, local.port, local.security, local.user) == ("127.0.0.1", 2525, "none", "runner")
    assert str(SmtpServer.parse("smtps://mail.example.org", "x")) == "smtps://mail.example.org:465"
    assert SmtpServer.parse("[::1]:2525", "x").host == "::1"
    assert PASSWORD not in repr(local)


def test_flags_parse_and_validate():
    """--notify (repeatable), --notify-on (repeatable, comma-separated), --smtp, --heartbeat and --heartbeat-every."""
    settings = NotifySettings.from_args(
        ["https://h.example.org/a", "mailto:ops@example.org"],
        ["failure,busy", "interrupted"],
        "mail.example.org",
        "https://hc.example.org/uuid",
        "15",
    )
    assert settings.on_override == {"failure", "busy", "interrupted"}
    assert (settings.smtp.port, settings.heartbeat.every) == (25, 15.0)
    for kwargs, message in [
        ({"notify": ["slack"]}, "--notify: 'slack' is not a target"),
        ({"notify_on": ["failure,sometimes"]}, "--notify-on: unknown outcome 'sometimes'"),
        ({"heartbeat_every": 10}, "--heartbeat-every: --heartbeat-every only goes with --heartbeat"),
        ({"heartbeat": "https://h/x", "heartbeat_every": "nan"}, "--heartbeat-every: the heartbeat's interval must be a number"),
        ({"heartbeat": "https://h/x", "heartbeat_every": 0}, "--heartbeat-every: the heartbeat's interval"),
        ({"smtp": ""}, "--smtp: the SMTP server must be HOST[:PORT]"),
        ({"notify": ["https://h/x"] * 21}, "--notify: at most 20 targets"),
    ]:
        with pytest.raises(NotifySettingsError) as caught:
            NotifySettings.from_args(**kwargs)
        assert str(caught.value).startswith(message), (kwargs, str(caught.value))


def test_sources_combine_targets_add_up_and_the_command_line_decides_the_rest():
    """Targets of flags, profile and batch add up (each with its on:); --notify-on, smtp, from, timeout: first source wins."""
    flags = NotifySettings.from_args(["https://cli.example.org/x"], smtp="flags.example.org", heartbeat="https://hc.example.org/1")
    profile = NotifySettings.from_mapping(
        {"to": ["mailto:beamline@example.org", "https://cli.example.org/x"], "on": ["unreachable"], "smtp": "profile.example.org", "timeout": 9},
        source="daqs.yaml",
    )
    batch = NotifySettings.from_mapping({"to": "mailto:me@example.org", "on": "always", "from": "me@example.org"}, source="b.yaml")
    combined = NotifySettings.combine(flags, profile, batch)
    assert [str(t) for t in combined.targets] == ["https://cli.example.org/***", "mailto:beamline@example.org", "mailto:me@example.org"]
    assert [str(t) for t in combined.targets_for("passed")] == ["mailto:me@example.org"]
    assert [str(t) for t in combined.targets_for("unreachable")] == [str(t) for t in combined.targets]
    assert (combined.smtp.host, combined.sender, combined.timeout) == ("flags.example.org", "me@example.org", 9.0)
    # --notify-on replaces every source's on:; "never" silences them all.
    override = NotifySettings.combine(NotifySettings.from_args(notify_on="busy"), profile, batch)
    assert [o for o in OUTCOMES if override.targets_for(o)] == ["busy"]
    silent = NotifySettings.combine(NotifySettings.from_args(notify_on=["never"]), profile, batch)
    assert not any(silent.targets_for(o) for o in OUTCOMES)


def test_combine_refuses_mail_without_a_server_and_notify_on_without_targets():
    """A mailto: target with no SMTP server from any source, and --notify-on with nothing to notify, are errors."""
    with pytest.raises(NotifySettingsError, match=r"^b.yaml: notify: mailto:me@example.org needs an SMTP server: give --smtp"):
        NotifySettings.combine(NotifySettings(), NotifySettings.from_mapping({"to": "mailto:me@example.org"}, source="b.yaml"))
    with pytest.raises(NotifySettingsError, match=r"^--notify-on: no target to notify"):
        NotifySettings.combine(NotifySettings.from_args(notify_on="always"))
    assert not NotifySettings.combine(NotifySettings(), NotifySettings.from_mapping(None))


# -- the message ----------------------------------------------------------------------------------


def test_message_of_a_failed_run_says_what_a_phone_needs_first():
    """Subject: outcome, batch, DAQ; text: exit class, reason, first failed step, images, files, duration, report, resume."""
    notifier = Notifier(NotifySettings())
    feed_failed_run(notifier)
    message = notifier.message(RunExit.FAILED, "/data/reports/smoke r.json", RESUME)
    assert message.subject == "daq-run FAILED: smoke on daq-eiger.example.org"
    assert len(message.subject) <= 78
    lines = message.text.splitlines()
    assert lines[0] == message.subject
    assert lines[1] == "exit 1: a step failed, or the report could not be written completely"
    assert "reason: step 2 (dark) failed: acquisition FAILED: ERROR: detector lost" in lines
    assert "steps: 3 steps (1 passed, 1 failed, 1 skipped), 14 images, 2 files, 1 min 06 s" in lines
    assert "written: 14 images in 2 files (0 B)" in lines
    assert "report: /data/reports/smoke r.json" in lines
    assert "continue with: daq-run --daq example-eiger batches/smoke.yaml --resume '/data/reports/smoke r.json'" in lines
    fields = message.fields
    assert (fields["outcome"], fields["exit_code"], fields["images"], fields["files"], fields["duration_s"]) == ("failure", 1, 14, 2, 65.5)
    assert fields["first_failed_step"] == "step 2 (dark) failed: acquisition FAILED: ERROR: detector lost"
    assert fields["summary"] == {"passed": 1, "failed": 1, "skipped": 1, "interrupted": 0}
    assert fields["run_id"] == "20260102T020405Z-3fa9c1" and fields["host"] == "beamline-pc"
    json.dumps(fields)  # a webhook's body


def test_message_of_a_pass_has_no_resume_and_a_run_that_never_started_uses_the_notes():
    """A pass offers no resume line; a usage error (no run_started) is named by its note and the label."""
    passed = Notifier(NotifySettings())
    passed(events.Event(events.RUN_STARTED, "r", data={"batch": {"name": "smoke"}, "daq": {"url": "http://d:5000"}, "n_steps": 0}))
    passed(events.Event(events.RUN_FINISHED, "r", data={"status": "passed"}))
    message = passed.message(RunExit.PASSED, "r.json", RESUME)
    assert message.subject == "daq-run passed: smoke on d" and "continue with" not in message.text
    assert message.fields["reason"] is None and message.fields["resume_command"] is None

    never = Notifier(NotifySettings(), label="batches/smoke.yaml")
    message = never.message(RunExit.USAGE, notes=["batches/smoke.yaml:3:5: unknown key 'stesp' (did you mean 'steps'?)"])
    assert message.subject == "daq-run NOT STARTED: batches/smoke.yaml"
    assert "reason: batches/smoke.yaml:3:5: unknown key 'stesp' (did you mean 'steps'?)" in message.text
    assert message.fields["status"] is None and message.fields["duration_s"] is None


def test_a_passed_run_whose_report_was_incomplete_is_a_failure_with_that_reason():
    """Exit 1 after a run that passed: the report could not be written completely (the note says why)."""
    notifier = Notifier(NotifySettings())
    notifier(events.Event(events.RUN_STARTED, "r", data={"batch": {"name": "b"}, "daq": {}, "n_steps": 0}))
    notifier(events.Event(events.RUN_FINISHED, "r", data={"status": "passed"}))
    assert notifier.message(RunExit.FAILED).fields["reason"] == "the report could not be written completely"
    note = "report r.json: disk full; the file holds the run up to step 12"
    message = notifier.message(RunExit.FAILED, notes=[note])
    assert message.subject.startswith("daq-run FAILED") and message.fields["reason"] == note


def test_secrets_and_url_credentials_are_masked_in_every_text():
    """Credentials of URLs in the reason, the resume command and notes, and the batch's secrets, show as ***."""
    notifier = Notifier(NotifySettings(), secrets=["tok-123456"])
    feed_failed_run(notifier, secret_var="https://u:tok-123456@elog.example.org/x")
    message = notifier.message(
        RunExit.FAILED, "r.json", ["daq-run", "--var", "note=https://u:tok-123456@elog.example.org/x", "--resume", "r.json"],
        notes=["redis://:pw123456@daq:6379 refused"],
    )
    everything = message.subject + message.text + json.dumps(message.fields)
    assert "tok-123456" not in everything and "pw123456" not in everything
    assert "note=https://***@elog.example.org/x" in message.text


# -- delivery: webhooks ---------------------------------------------------------------------------


def test_webhook_gets_a_json_post_with_text_and_fields(recorder):
    """A webhook receives one JSON POST: ``text`` (Slack, Mattermost) and the facts under ``daq_run``."""
    notifier = Notifier(NotifySettings.from_args([recorder.url + "/hooks/T0/B0/XYZ"]))
    feed_failed_run(notifier)
    assert notifier.deliver(RunExit.FAILED, "r.json", RESUME) == []
    (request,) = recorder.wait_for(1)
    assert (request["method"], request["path"]) == ("POST", "/hooks/T0/B0/XYZ")
    assert request["headers"]["Content-Type"] == "application/json"
    body = json.loads(request["body"])
    assert body["text"].startswith("daq-run FAILED: smoke on daq-eiger.example.org\nexit 1: ")
    assert body["daq_run"]["outcome"] == "failure" and body["daq_run"]["report"] == "r.json"
    assert notifier.delivered == [f"{recorder.url}/***"]


def test_two_webhooks_of_one_service_each_get_theirs(recorder):
    """Two webhooks on one host (shown alike, https://host/***) are two deliveries, not one."""
    notifier = Notifier(NotifySettings.from_args([recorder.url + "/services/A", recorder.url + "/services/B"]))
    assert notifier.deliver(RunExit.FAILED) == []
    assert sorted(r["path"] for r in recorder.wait_for(2)) == ["/services/A", "/services/B"]
    assert notifier.delivered == [f"{recorder.url}/***", f"{recorder.url}/***"]


def test_only_targets_whose_on_matches_are_told(recorder):
    """A pass tells nobody by default; on: [always] tells of a pass; on: [busy] is not told of a failure."""
    busy_only = Recorder()
    try:
        settings = NotifySettings.combine(
            NotifySettings.from_mapping({"to": recorder.url + "/always", "on": "always"}, source="a"),
            NotifySettings.from_mapping({"to": busy_only.url + "/busy", "on": ["busy"]}, source="b"),
        )
        notifier = Notifier(settings)
        feed_failed_run(notifier)
        assert notifier.deliver(RunExit.PASSED) == [] and notifier.deliver(RunExit.FAILED) == []
        assert [json.loads(r["body"])["daq_run"]["outcome"] for r in recorder.wait_for(2)] == ["passed", "failure"]
        assert notifier.deliver(RunExit.LOCKED) == []
        assert len(busy_only.wait_for(1)) == 1 and len(recorder.wait_for(3)) == 3
    finally:
        busy_only.close()


@pytest.mark.parametrize(
    "status, headers, expected",
    [
        (500, {}, "failed: HTTP 500: no_service"),
        (404, {}, "failed: HTTP 404: no_service"),
        (302, {"Location": "http://elsewhere.example.org/"}, "failed: HTTP 302: redirected (not followed): give the URL it moved to"),
    ],
)
def test_a_webhook_that_refuses_is_one_line_with_its_secret_masked(status, headers, expected):
    """A non-2xx answer (an error, a redirect) is one problem line; the webhook's path (its token) is not shown."""
    server = Recorder(status, headers)
    try:
        notifier = Notifier(NotifySettings.from_args([server.url.replace("http://", "http://user:pw1234@") + "/services/TOKEN42"]))
        problems = notifier.deliver(RunExit.FAILED)
        assert problems == [f"notification to http://***@{server.url[len('http://'):]}/*** {expected}"]
        assert len(server.wait_for(1)) == 1  # sent once, redirect not followed
        assert "TOKEN42" not in problems[0] and "pw1234" not in problems[0]
    finally:
        server.close()


def test_refused_and_hanging_webhooks_cost_at_most_the_budget_and_others_still_get_theirs(recorder, hanging, refused_url):
    """Targets are told in parallel: a refused one and a hung one are problems, the good one gets its message, within the timeout."""
    settings = NotifySettings.combine(
        NotifySettings.from_args([hanging.url + "/hook", refused_url, recorder.url + "/ok"]),
        NotifySettings.from_mapping({"to": "https://x.example.org/unused", "timeout": 1.5}, source="b.yaml"),
    )
    settings = NotifySettings(settings.rules[:1], timeout=1.5)
    notifier = Notifier(settings)
    started = time.monotonic()
    problems = notifier.deliver(RunExit.UNREACHABLE, "r.json")
    took = time.monotonic() - started
    assert took < 1.5 + 0.6, took
    assert len(recorder.wait_for(1)) == 1
    assert problems[0] == f"notification to {hanging.url}/*** failed: no answer within 1.5 s"
    assert problems[1].startswith(f"notification to {refused_url.rsplit('/', 1)[0]}/*** failed: [Errno ")
    assert problems[1].endswith("] Connection refused") and len(problems) == 2


def test_a_webhook_that_trickles_its_reply_is_cut_at_the_budget():
    """A server that sends one byte every 0.2 s cannot hold the end: the whole reply is bounded."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = sock.accept()
        conn.recv(65536)
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
        for byte in reply:
            if stop.is_set():
                break
            try:
                conn.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        conn.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        notifier = Notifier(NotifySettings(NotifySettings.from_args([f"http://127.0.0.1:{sock.getsockname()[1]}/h"]).rules, timeout=1.0))
        started = time.monotonic()
        problems = notifier.deliver(RunExit.FAILED)
        assert time.monotonic() - started < 1.0 + 0.6
        assert len(problems) == 1 and "no answer within 1 s" in problems[0]
    finally:
        stop.set()
        sock.close()


# -- delivery: mail -------------------------------------------------------------------------------


def test_mail_through_a_real_smtp_server(smtp_plain):
    """Plain SMTP: one mail to every mailto: target, the subject first, the text as body, auto-generated."""
    settings = NotifySettings.combine(
        NotifySettings.from_args(["mailto:ops@example.org", "mailto:me@example.org"], smtp=f"127.0.0.1:{smtp_plain.port}"),
        NotifySettings.from_mapping({"to": "mailto:OPS@example.org", "from": "daq@example.org"}, source="b.yaml"),
    )
    notifier = Notifier(settings)
    feed_failed_run(notifier)
    assert notifier.deliver(RunExit.FAILED, "r.json", RESUME) == []
    (mail,) = smtp_plain.box.mails
    assert mail["from"] == "daq@example.org" and mail["to"] == ["ops@example.org", "me@example.org"]
    message = mail["message"]
    assert message["Subject"] == "daq-run FAILED: smoke on daq-eiger.example.org"
    assert message["Auto-Submitted"] == "auto-generated"
    assert "continue with: daq-run --daq example-eiger" in message.get_content()


def test_mail_with_starttls_and_login(smtp_tls):
    """smtp+starttls:// with a login: TLS verified against the (test) CA, then the login, then the mail."""
    settings = NotifySettings.combine(
        NotifySettings.from_args(["mailto:ops@example.org"], smtp=f"smtp+starttls://runner@127.0.0.1:{smtp_tls.port}", environ=ENV)
    )
    assert Notifier(settings).deliver(RunExit.UNREACHABLE) == []
    (mail,) = smtp_tls.box.mails
    assert mail["tls"] and smtp_tls.box.logins == ["runner"]
    assert mail["message"]["Subject"] == "daq-run DAQ UNREACHABLE: daq-run"


def test_mail_problems_are_lines_not_exceptions(smtp_tls, smtp_plain):
    """A wrong or missing password, a server without STARTTLS, a refused recipient: one line each, never an exception."""
    wrong = NotifySettings.from_args(["mailto:ops@example.org"], smtp=f"smtp+starttls://runner@127.0.0.1:{smtp_tls.port}", environ={SMTP_PASSWORD_ENV: "wrong"})
    (problem,) = Notifier(wrong).deliver(RunExit.FAILED)
    assert problem.startswith("notification to mailto:ops@example.org failed: login as runner refused: SMTP 535")
    no_password = NotifySettings.from_args(["mailto:ops@example.org"], smtp=f"smtp+starttls://runner@127.0.0.1:{smtp_tls.port}")
    assert Notifier(no_password).deliver(RunExit.FAILED) == [
        "notification to mailto:ops@example.org failed: the SMTP login runner has no password: nothing was sent"
    ]
    no_tls = NotifySettings.from_args(["mailto:ops@example.org"], smtp=f"smtp+starttls://127.0.0.1:{smtp_plain.port}")
    assert Notifier(no_tls).deliver(RunExit.FAILED) == [
        "notification to mailto:ops@example.org failed: the server does not offer STARTTLS; nothing was sent"
    ]
    one_refused = NotifySettings.from_args(["mailto:ops@example.org", "mailto:nobody@example.org"], smtp=f"127.0.0.1:{smtp_plain.port}")
    assert Notifier(one_refused).deliver(RunExit.FAILED) == [
        "notification to mailto:nobody@example.org failed: SMTP 550: 5.1.1 no such user here"
    ]
    assert smtp_plain.box.mails[-1]["to"] == ["ops@example.org"]
    assert not smtp_tls.box.mails


def test_a_tls_certificate_that_does_not_verify_is_a_problem(smtp_tls, monkeypatch):
    """Without the test CA trusted, STARTTLS fails verification: nothing is sent, one line says so."""
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")
    settings = NotifySettings.from_args(["mailto:ops@example.org"], smtp=f"smtp+starttls://127.0.0.1:{smtp_tls.port}")
    (problem,) = Notifier(settings).deliver(RunExit.FAILED)
    assert "TLS failed: " in problem and "certificate" in problem
    assert not smtp_tls.box.mails


def test_a_hanging_smtp_server_is_given_up_at_the_budget(hanging):
    """An SMTP server that never greets costs the budget, not more."""
    settings = NotifySettings(
        NotifySettings.from_args(["mailto:ops@example.org"], smtp="x").rules, SmtpServer("127.0.0.1", int(hanging.url.rsplit(":", 1)[1])), timeout=1.0
    )
    started = time.monotonic()
    (problem,) = Notifier(settings).deliver(RunExit.FAILED)
    assert time.monotonic() - started < 1.0 + 0.6
    assert problem == "notification to mailto:ops@example.org failed: no answer within 1 s"


# -- heartbeat ------------------------------------------------------------------------------------


def test_heartbeat_start_periodic_and_end_pings(recorder):
    """/start at the start, the URL every interval, the URL at a pass (with a summary as body); query kept in place."""
    beat = Heartbeat(recorder.url + "/ping/uuid-1/?rid=7", every=0.2, timeout=2.0)
    beat.start()
    recorder.wait_for(3)
    assert beat.finish(0, "daq-run passed: smoke") == []
    requests = recorder.wait_for(4)
    paths = [r["path"] for r in requests]
    assert paths[0] == "/ping/uuid-1/start?rid=7"
    assert set(paths[1:-1]) == {"/ping/uuid-1/?rid=7"} and len(paths) >= 4
    assert (requests[-1]["method"], requests[-1]["path"], requests[-1]["body"]) == ("POST", "/ping/uuid-1/?rid=7", b"daq-run passed: smoke")
    time.sleep(0.5)
    assert len(recorder.requests) == len(requests)  # no ping after the last one


def test_notifier_sends_the_heartbeat_fail_ping_with_the_notifications(recorder):
    """A run that did not pass ends with URL/fail, whose body names the outcome and reason."""
    settings = NotifySettings.from_args(heartbeat=recorder.url + "/uuid")
    notifier = Notifier(settings)
    notifier.start()
    recorder.wait_for(1)
    feed_failed_run(notifier)
    assert notifier.deliver(RunExit.SIGTERM, "r.json") == []
    start, end = recorder.wait_for(2)
    assert (start["path"], end["path"]) == ("/uuid/start", "/uuid/fail")
    assert end["body"].decode().startswith("daq-run INTERRUPTED: smoke on daq-eiger.example.org\n")


def test_a_run_that_never_started_still_sends_the_fail_ping(recorder):
    """A usage error (exit 2) before start(): the heartbeat's last ping is URL/fail all the same."""
    notifier = Notifier(NotifySettings.from_args(heartbeat=recorder.url + "/uuid"), label="b.yaml")
    assert notifier.deliver(RunExit.USAGE, notes=["b.yaml:1:1: not a batch"]) == []
    (request,) = recorder.wait_for(1)
    assert request["path"] == "/uuid/fail"


def test_heartbeat_problems_are_counted_and_never_fatal(refused_url):
    """Pings to a refused URL: the start's problem, one summary line of the periodic ones, and the last one's."""
    beat = Heartbeat(refused_url, every=0.1, timeout=1.0)
    beat.start()
    time.sleep(0.35)
    first, summary, last = beat.finish(1)
    assert first.startswith(f"heartbeat {refused_url.rsplit('/', 1)[0]}/*** (start) failed: [Errno ") and first.endswith("Connection refused")
    assert summary.startswith(f"heartbeat {refused_url.rsplit('/', 1)[0]}/***: ") and " pings during the run failed, the last: " in summary
    assert "(fail) failed: [Errno " in last and last.endswith("Connection refused")


def test_hanging_heartbeat_and_webhook_end_within_one_budget(hanging):
    """A hung heartbeat (its periodic ping and its last one) and a hung webhook: deliver returns within the timeout."""
    settings = NotifySettings(NotifySettings.from_args([hanging.url + "/hook"]).rules, timeout=1.0, heartbeat=NotifySettings.from_args(heartbeat=hanging.url + "/hb").heartbeat)
    notifier = Notifier(settings)
    notifier.heartbeat.every = 0.1  # a periodic ping is under way when the run ends
    started = time.monotonic()
    notifier.start()  # the start ping hangs, in the background: the run is not held
    assert time.monotonic() - started < 0.1
    time.sleep(1.3)
    started = time.monotonic()
    problems = notifier.deliver(RunExit.FAILED)
    assert time.monotonic() - started < 1.0 + 0.6
    assert f"notification to {hanging.url}/*** failed: no answer within 1 s" in problems
    assert any(p.startswith(f"heartbeat {hanging.url}/*** (fail) failed: no answer within") for p in problems), problems


# -- with a real run ------------------------------------------------------------------------------


def test_a_real_run_on_the_simulator_is_reported_as_it_ended(run_batch, recorder, tmp_path):
    """The Notifier as a consumer of a real Runner on daq-sim: images and files written, the failed step, the reason."""
    notifier = Notifier(NotifySettings.from_args([recorder.url + "/hook"]), label="inline")
    batch = """
version: 1
name: notify-demo
steps:
  - name: three images
    write: {output_file: "{root}/a.h5", n_images: 3}
  - name: wrong depth
    check: {config: {bit_depth: 32}}
  - name: never
    wait: {seconds: 0}
"""
    report = run_batch(batch, consumers=[notifier])
    assert report.status == "failed"
    assert notifier.deliver(RunExit.FAILED, str(tmp_path / "r.json")) == []
    body = json.loads(recorder.wait_for(1)[0]["body"])
    fields = body["daq_run"]
    assert (fields["images"], fields["files"], fields["status"]) == (3, 1, "failed")
    assert fields["first_failed_step"].startswith("step 2 (wrong depth) failed: ")
    assert fields["summary"] == {"passed": 1, "failed": 1, "skipped": 1, "interrupted": 0}
    assert body["text"].startswith("daq-run FAILED: notify-demo on 127.0.0.1\n")


def test_a_real_run_whose_daq_is_gone_is_reported_unreachable(recorder, refused_url):
    """A Runner against a DAQ that refuses every connection: the message says DAQ UNREACHABLE with the runner's reason."""
    from daq_runner.batch import load_batch_text
    from daq_runner.runner import Runner

    notifier = Notifier(NotifySettings.from_args([recorder.url + "/hook"]))
    daq_url = refused_url.rsplit("/", 1)[0]
    batch = load_batch_text("version: 1\nname: gone\nsteps:\n  - check: {writer: READY}\n")
    report = Runner(daq_url, None, [notifier], outage_s=0.5).run(batch)
    assert report.daq_unreachable
    assert notifier.deliver(RunExit.UNREACHABLE, "r.json", ["daq-run", "b.yaml", "--resume", "r.json"]) == []
    body = json.loads(recorder.wait_for(1)[0]["body"])
    assert body["text"].startswith("daq-run DAQ UNREACHABLE: gone on 127.0.0.1\nexit 3: ")
    assert "unreachable" in body["daq_run"]["reason"] and body["daq_run"]["resume_command"] == "daq-run b.yaml --resume r.json"
    assert body["daq_run"]["summary"] == {"passed": 0, "failed": 0, "skipped": 1, "interrupted": 0}
