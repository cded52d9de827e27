"""daq-run tells someone: the --notify flags, a batch's and a profile's notify: blocks, the
heartbeat, against real local HTTP and SMTP servers and a real simulator; the resume command a
message carries continues the run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Any, Dict, List

import redis

from daq_runner.exit_codes import RunExit
from daq_runner.lock import LOCK_KEY
from daq_runner.resume import resume_command

from .conftest import batch_file, daq_run
from .test_notify import Recorder, recorder, refused_url, smtp_plain  # noqa: F401 - fixtures
from .test_report import fill, small_disk  # noqa: F401 - small_disk is a fixture

FAILING = """
version: 1
name: night check
vars: {root: /tmp}
steps:
  - name: three images
    write: {output_file: "{root}/a_{run}.h5", n_images: 3}
  - name: wrong depth
    check: {config: {bit_depth: 32}}
  - name: never reached
    write: {output_file: "{root}/b_{run}.h5", n_images: 3}
"""


def bodies(server: Recorder, count: int) -> List[Dict[str, Any]]:
    return [json.loads(r["body"]) for r in server.wait_for(count) if r["method"] == "POST"]


def common(daq_sim: Any) -> List[str]:
    return ["--url", daq_sim.url, "--redis", daq_sim.redis_url]


def test_a_failing_batch_under_sim_tells_the_webhook_once_with_the_reason_and_a_resume_that_works(recorder, tmp_path):
    """`daq-run --sim --notify URL`: one JSON POST with the reason and the command that continues the run; that command resumes it."""
    path = batch_file(tmp_path, FAILING)
    env = {"TMPDIR": str(tmp_path)}  # --sim's fresh folder goes there
    result = daq_run("--sim", str(path), "--quiet", "--report-dir", str(tmp_path), "--notify", recorder.url + "/hooks/T0/B0/secret", cwd=tmp_path, env=env)
    assert result.returncode == RunExit.FAILED, result.stderr
    (body,) = bodies(recorder, 1)
    fields, text = body["daq_run"], body["text"]
    assert text.startswith("daq-run FAILED: night check on 127.0.0.1\nexit 1: ")
    assert "reason: step 2 (wrong depth) failed: config bit_depth is 16, expected 32" in text
    assert (fields["status"], fields["images"], fields["files"]) == ("failed", 3, 1)
    assert fields["summary"] == {"passed": 1, "failed": 1, "skipped": 1, "interrupted": 0}
    (report,) = tmp_path.glob("*.report.json")
    resume = fields["resume_command"]
    assert f"continue with: {resume}" in text and resume.endswith(f"--resume {report}")
    assert resume.startswith(f"cd {tmp_path} && ") and f"--var root={tmp_path}/daq-run-sim-" in resume
    notices = [n["message"] for n in json.loads(report.read_text())["notices"]]
    assert not [n for n in notices if "notification" in n]  # delivered: nothing to say

    again = subprocess.run(resume, shell=True, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert again.returncode == RunExit.FAILED, again.stderr
    (_, second) = bodies(recorder, 2)
    resumed = json.loads(open(second["daq_run"]["report"]).read())
    assert [s["status"] for s in resumed["steps"]] == ["passed", "failed", "skipped"] and resumed["steps"][0]["resumed"]


def test_an_undeliverable_notification_is_one_line_and_a_notice_and_changes_nothing(daq_sim, tmp_path, refused_url):
    """A webhook that refuses: one line on stderr, a notice in the report, and the run's exit code is its own."""
    path = batch_file(tmp_path, 'version: 1\nsteps:\n  - write: {output_file: "{root}/ok.h5", n_images: 2}\n')
    report = tmp_path / "r.json"
    result = daq_run(str(path), *common(daq_sim), "--report", str(report), "--notify", refused_url, "--notify-on", "always", "--quiet")
    assert result.returncode == RunExit.PASSED
    host = refused_url.split("/hook")[0]
    (line,) = [line for line in result.stderr.splitlines() if "notification" in line]
    assert line.startswith(f"daq-run: notification to {host}/*** failed: ")
    notices = [n["message"] for n in json.loads(report.read_text())["notices"]]
    assert any(n.startswith(f"notification to {host}/*** failed: ") for n in notices)
    assert json.loads(report.read_text())["status"] == "passed"


def test_a_profile_and_a_batch_tell_their_own_targets_and_on_stays_a_key(daq_sim, tmp_path):
    """The profile's block (YAML 1.2: `on:` is the key on) tells of a pass; the batch's, by default, does not."""
    ops, team = Recorder(), Recorder()
    try:
        profiles = tmp_path / "daqs.yaml"
        profiles.write_text(
            f"daqs:\n  sim:\n    url: {daq_sim.url}\n    redis: {daq_sim.redis_url}\n"
            f"    notify:\n      to: [{ops.url}/ops]\n      on: [always]\n"
        )
        path = batch_file(tmp_path, f'version: 1\nnotify: {{to: ["{team.url}/team"]}}\nsteps:\n  - wait: {{seconds: 0}}\n')
        result = daq_run(str(path), "--daq", "sim", "--profiles", str(profiles), "--report", str(tmp_path / "r.json"), "--quiet")
        assert result.returncode == RunExit.PASSED, result.stderr
        (body,) = bodies(ops, 1)
        assert body["daq_run"]["outcome"] == "passed" and body["text"].startswith("daq-run passed: b on 127.0.0.1")
        assert team.requests == []
    finally:
        ops.close()
        team.close()


def test_mail_through_a_real_smtp_server_from_the_command_line(daq_sim, tmp_path, smtp_plain):
    """--notify mailto: with --smtp HOST:PORT: one mail, the outcome in its subject, the reason and the report in its body."""
    path = batch_file(tmp_path, FAILING)
    report = tmp_path / "r.json"
    result = daq_run(
        str(path), *common(daq_sim), "--var", f"root={tmp_path}", "--report", str(report), "--quiet",
        "--notify", "mailto:beamline@example.org", "--smtp", f"127.0.0.1:{smtp_plain.port}",
    )
    assert result.returncode == RunExit.FAILED, result.stderr
    (mail,) = smtp_plain.box.mails
    message = mail["message"]
    assert mail["to"] == ["beamline@example.org"] and message["Subject"] == "daq-run FAILED: night check on 127.0.0.1"
    body = message.get_content()
    assert "reason: step 2 (wrong depth) failed" in body and f"report: {report}" in body and "--resume" in body


def test_a_batch_that_does_not_load_tells_the_flags_targets_it_did_not_start(recorder, tmp_path):
    """An invalid batch: exit 2, and the --notify target hears NOT STARTED with the first error."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - wirte: {}\n")
    result = daq_run(str(path), "--notify", recorder.url + "/hook")
    assert result.returncode == RunExit.USAGE
    (body,) = bodies(recorder, 1)
    assert body["daq_run"]["outcome"] == "usage" and body["text"].startswith("daq-run NOT STARTED: ")
    assert f"invalid batch file: {path}:3:5: unknown step kind 'wirte'" in body["daq_run"]["reason"]


def test_a_busy_daq_is_told_busy_and_the_heartbeat_fails(daq_sim, tmp_path, recorder):
    """Another runner holds the lock: exit 4, the message says DAQ BUSY, the heartbeat pinged /start then /fail."""
    client = redis.Redis.from_url(daq_sim.redis_url)
    client.set(LOCK_KEY, "held by hand")
    try:
        path = batch_file(tmp_path, "version: 1\nsteps:\n  - stop: {}\n")
        result = daq_run(
            str(path), *common(daq_sim), "--report", str(tmp_path / "r.json"), "--quiet",
            "--notify", recorder.url + "/hook", "--heartbeat", recorder.url + "/hc/uuid",
        )
    finally:
        client.delete(LOCK_KEY)
        client.close()
    assert result.returncode == RunExit.LOCKED, result.stderr
    requests = recorder.wait_for(3)
    paths = sorted((r["method"], r["path"]) for r in requests)
    assert paths == [("GET", "/hc/uuid/start"), ("POST", "/hc/uuid/fail"), ("POST", "/hook")]
    (body,) = [json.loads(r["body"]) for r in requests if r["path"] == "/hook"]
    assert body["text"].startswith("daq-run DAQ BUSY: b on 127.0.0.1\nexit 4: ")


def test_notification_settings_are_checked_before_anything_is_sent(daq_sim, tmp_path):
    """A mail target without a server, a bad target in the batch: one line, exit 2, the DAQ untouched."""
    path = batch_file(tmp_path, "version: 1\nsteps:\n  - config: {bit_depth: 32}\n")
    config_id = daq_sim.core.get_config()[0]
    no_server = daq_run(str(path), *common(daq_sim), "--notify", "mailto:ops@example.org")
    assert no_server.returncode == RunExit.USAGE
    assert no_server.stderr.strip() == "daq-run: error: --notify: mailto:ops@example.org needs an SMTP server: give --smtp HOST[:PORT] or smtp: in a notify: block"
    bad = batch_file(tmp_path, "version: 1\nnotify:\n  to: [ops@example.org]\nsteps:\n  - config: {bit_depth: 32}\n", "bad.yaml")
    refused = daq_run(str(bad), *common(daq_sim))
    assert refused.returncode == RunExit.USAGE
    assert f"{bad}:3:8: notify: 'ops@example.org' is not a target" in refused.stderr
    assert daq_sim.core.get_config()[0] == config_id


def test_the_resume_command_is_the_run_as_it_was_with_its_own_report_replaced():
    """--report, --resume, --force and --overwrite-report go (also abbreviated or with =), the rest stays, quoted."""
    options = ["--report", "--report-dir", "--resume", "--force", "--overwrite-report", "--var", "--daq"]
    argv = ["b c.yaml", "--daq", "x", "--report", "old.json", "--res=older.json", "--force", "--overwrite-report", "--report-dir", "d", "--var", "a=1"]
    command = resume_command(argv, "new r.json", options=options, cwd="/w d", variables={"root": "/tmp/f"})
    assert command == "cd '/w d' && daq-run 'b c.yaml' --daq x --report-dir d --var a=1 --var root=/tmp/f --resume 'new r.json'"
    assert shlex.split(command.split(" && ", 1)[1])[-2:] == ["--resume", "new r.json"]


def test_a_full_disk_under_the_report_is_told_as_a_failure_with_its_reason(daq_sim, tmp_path, recorder, small_disk):  # noqa: F811
    """The steps pass but the report's disk is full: exit 1, and the message says the report could not be written."""
    fill(small_disk)
    path = batch_file(tmp_path, 'version: 1\nsteps:\n  - write: {output_file: "{root}/a.h5", n_images: 2}\n')
    report = small_disk / "r.json"
    result = daq_run(str(path), *common(daq_sim), "--report", str(report), "--quiet", "--notify", recorder.url + "/hook")
    assert result.returncode == RunExit.FAILED, result.stderr
    (body,) = bodies(recorder, 1)
    assert body["daq_run"]["outcome"] == "failure" and body["daq_run"]["status"] == "passed"
    assert body["daq_run"]["reason"] == f"report {report}: disk full; no report was written"
    # The line that says where the report is says it is not complete (the run's status alone reads "passed").
    assert f"  report: {report} (NOT complete: report {report}: disk full; no report was written)" in result.stdout + result.stderr


def test_a_slow_notification_is_not_counted_in_the_runs_duration(daq_sim, tmp_path):
    """A webhook that never answers holds the command for its timeout, not the report's duration_s (the message told the run's)."""
    import time

    from .test_notify import Hanging

    hanging = Hanging()
    try:
        path = batch_file(
            tmp_path,
            "version: 1\nnotify: {to: ['" + hanging.url + "/hook'], on: [always], timeout: 2}\nsteps:\n  - check: {writer: READY}\n",
        )
        report = tmp_path / "r.json"
        began = time.monotonic()
        result = daq_run(str(path), *common(daq_sim), "--report", str(report), "--quiet")
        took = time.monotonic() - began
    finally:
        hanging.close()
    assert result.returncode == RunExit.PASSED, result.stderr
    assert took >= 2.0
    assert json.loads(report.read_text())["duration_s"] < 1.5
