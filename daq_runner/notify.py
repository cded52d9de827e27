"""Tell someone how a run ended: webhooks and mail, and a heartbeat for a dead-man's switch.

Settings come from a ``notify:`` block (a batch file, a DAQ profile) and from command-line
flags; each is parsed and checked before anything is sent (:class:`NotifySettingsError`,
one line)::

    notify:
      to: [https://hooks.slack.com/services/T0/B0/XYZ, mailto:ops@example.org]
      on: [failure, unreachable, busy, interrupted]   # default: every outcome but a pass
      smtp: smtp+starttls://runner@mail.example.org    # password: $DAQ_RUNNER_SMTP_PASSWORD
      from: daq-run@beamline.example.org
      timeout: 5                                       # seconds for every delivery at the end
      heartbeat: {url: https://hc-ping.com/UUID, every: 60}

Outcomes follow ``daq-run``'s exit codes (:data:`OUTCOME_OF`): ``failure`` (1, also a
report that could not be written completely), ``usage`` (2: the run did not start),
``unreachable`` (3), ``busy`` (4: the DAQ's lock), ``interrupted`` (130, 143); ``passed``
(0) is notified only with ``always``; ``never`` silences a source.

A :class:`Notifier` follows the run's events (it is a consumer, counting with the same
:class:`~daq_runner._tally.Tally` as the report) and, called once the exit code is known,
sends one message to every target whose ``on`` matches, all at once, within ``timeout``
seconds in all; the heartbeat's last ping goes out in the same budget. Whatever cannot be
delivered comes back as one line per target (for stderr and the report's notices) and
never changes the run's outcome. Webhook and heartbeat URLs are shown as
``https://host/***``: their path is their secret (a Slack token, a check's UUID).

The settings are parsed in :mod:`daq_runner._notify_settings`; every public name is here.
"""

from __future__ import annotations

import copy
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

from . import events
from ._notify_settings import (
    DEFAULT_HEARTBEAT_EVERY_S,
    DEFAULT_ON,
    DEFAULT_TIMEOUT_S,
    ON_CHOICES,
    OUTCOME_OF,
    OUTCOMES,
    SMTP_PASSWORD_ENV,
    HeartbeatSettings,
    NotifySettings,
    Rule,
    SmtpServer,
    Target,
    notify_schema,
    outcome_of,
    shown_url,
)
from ._tally import Tally, format_bytes, format_seconds, iso
from ._text import one_line, plural, redact_text, scrub
from ._version import __version__
from .exceptions import NotifySettingsError
from .exit_codes import RunExit

__all__ = [
    "OUTCOMES",
    "ON_CHOICES",
    "DEFAULT_ON",
    "OUTCOME_OF",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_HEARTBEAT_EVERY_S",
    "SMTP_PASSWORD_ENV",
    "outcome_of",
    "Target",
    "SmtpServer",
    "HeartbeatSettings",
    "Rule",
    "NotifySettings",
    "Message",
    "compose",
    "Notifier",
    "Heartbeat",
    "NotifySettingsError",
    "notify_schema",
]

_HEADLINE = {
    "passed": "passed",
    "failure": "FAILED",
    "usage": "NOT STARTED",
    "unreachable": "DAQ UNREACHABLE",
    "busy": "DAQ BUSY",
    "interrupted": "INTERRUPTED",
}
_PHONE_WIDTH = 78  # a subject a phone shows whole (the outcome first)


# -- the message ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """What every target is told.

    Attributes:
        subject: one line, the outcome first (``daq-run FAILED: smoke on daq-host``).
        text: the subject, then one line per fact (a mail's body, a webhook's ``text``).
        fields: the same facts as JSON values (a webhook's ``daq_run`` object).
    """

    subject: str
    text: str
    fields: Dict[str, Any]


def _host_of(url: Any) -> Optional[str]:
    try:
        return urlsplit(url).hostname if isinstance(url, str) else None
    except ValueError:
        return None


def compose(
    tally: Tally,
    exit_code: int,
    report_path: Optional[str] = None,
    resume_command: Union[Sequence[str], str, None] = None,
    *,
    notes: Sequence[str] = (),
    label: Optional[str] = None,
    secrets: Tuple[str, ...] = (),
    now: Optional[float] = None,
) -> Message:
    """The message of a run that ended with ``exit_code``, from what ``tally`` followed.

    ``notes`` are facts the caller knows and the events do not (the report's write error,
    a usage error); the first is the reason when the run itself gave none. ``label`` names
    the run when no ``run_started`` came (e.g. the batch file). Credentials of URLs and
    ``secrets`` are masked in every text.
    """
    outcome = outcome_of(exit_code)
    meaning = RunExit(exit_code).meaning if exit_code in OUTCOME_OF else "an exit code daq-run does not document"
    started = tally.started_at is not None
    notes = [n for n in (one_line(n, 500) for n in notes) if n]
    reason: Optional[str] = None
    if outcome != "passed":
        if started and tally.status not in ("passed", "running") and tally.reason:
            reason = tally.reason
        elif notes:
            reason = notes[0]
        elif started and tally.status == "passed" and outcome == "failure":
            reason = "the report could not be written completely"
        else:
            reason = tally.reason or meaning
    name = tally.batch.get("name") or label or "daq-run"
    daq_host = _host_of(tally.daq.get("url"))
    subject = f"daq-run {_HEADLINE[outcome]}: {name}" + (f" on {daq_host}" if daq_host else "")
    if started:
        end = tally.finished_at if tally.finished_at is not None else (now if now is not None else time.time())
        duration: Optional[float] = round(max(end - tally.started_at, 0.0), 3)
    else:
        duration = None
    if isinstance(resume_command, (list, tuple)):
        resume_text: Optional[str] = shlex.join(str(part) for part in resume_command)
    else:
        resume_text = resume_command or None
    if outcome == "passed":
        resume_text = None
    summary = {**tally.summary} if started else None
    fields: Dict[str, Any] = {
        "outcome": outcome,
        "exit_code": int(exit_code),
        "exit_meaning": meaning,
        "status": tally.status if started else None,
        "reason": reason,
        "first_failed_step": tally.first_problem,
        "batch": name,
        "batch_path": tally.batch.get("path"),
        "run_id": tally.run_id or None,
        "daq": tally.daq.get("url"),
        "host": tally.info.get("host") or socket.gethostname(),
        "steps": tally.n_steps,
        "summary": summary,
        "images": tally.images,
        "files": tally.n_files,
        "bytes": tally.bytes,
        "started_at": iso(tally.started_at),
        "finished_at": iso(tally.finished_at),
        "duration_s": duration,
        "report": report_path,
        "resume_command": resume_text,
        "notes": notes,
        "daq_runner": __version__,
    }
    lines = [subject, f"exit {int(exit_code)}: {meaning}"]
    if reason:
        lines.append(f"reason: {reason}")
    if tally.first_problem and tally.first_problem != reason:
        lines.append(f"first failed step: {tally.first_problem}")
    if started:
        lines.append(f"steps: {tally.counts_line() if tally.finished_at is not None else _counts_so_far(tally)}")
        lines.append(
            f"written: {tally.images} image{'s' if tally.images != 1 else ''} in {tally.n_files} file{'s' if tally.n_files != 1 else ''}"
            f" ({format_bytes(tally.bytes)})"
        )
        lines.append(f"duration: {format_seconds(duration or 0.0)} (started {iso(tally.started_at)})")
    lines += [f"note: {n}" for n in notes if n != reason]
    if report_path:
        lines.append(f"report: {report_path}")
    if resume_text:
        lines.append(f"continue with: {resume_text}")
    where = [f"run {tally.run_id}" if tally.run_id else "", f"DAQ {tally.daq.get('url')}" if tally.daq.get("url") else "", f"host {fields['host']}"]
    lines.append(", ".join(w for w in where if w))
    clean = _masker(secrets)
    lines = [one_line(clean(line), None if line.startswith("continue with: ") else 1000) for line in lines]
    return Message(one_line(clean(subject), _PHONE_WIDTH), "\n".join(lines), clean(fields))


def _counts_so_far(tally: Tally) -> str:
    done = sum(tally.summary.values())
    return f"{done} of {plural(tally.n_steps, 'step')} recorded, " + ", ".join(f"{n} {k}" for k, n in tally.summary.items() if n)


def _masker(secrets: Tuple[str, ...]) -> Callable[[Any], Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(scrub(value, secrets) if secrets else value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean


# -- delivery -------------------------------------------------------------------------------------


def _with_path(url: str, suffix: str) -> str:
    """``url`` with ``/suffix`` added to its path, before any query (``.../UUID/fail?x=1``)."""
    if not suffix:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + suffix, parts.query, parts.fragment))


class Heartbeat:
    """Pings for a dead-man's switch (the healthchecks.io convention), never fatal.

    :meth:`start` starts a daemon thread that pings ``url/start``, then ``url`` every
    ``every`` seconds; :meth:`finish` stops it and pings ``url`` (a pass) or ``url/fail``,
    with a one-line summary as the body. A runner or host that dies sends nothing more, and
    the service raises the alarm. Every ping is bounded by ``timeout`` seconds; failures are
    counted and come back from :meth:`finish` as one line.

    Args:
        url: the check's ping URL (http or https).
        every: seconds between pings while the run goes on.
        timeout: seconds one ping may take.
    """

    def __init__(self, url: str, every: float = DEFAULT_HEARTBEAT_EVERY_S, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.every = every
        self.timeout = timeout
        self.pings = 0  # periodic pings sent, and how many of them failed
        self.failed = 0
        self._last_error: Optional[str] = None
        self._start_problem: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return shown_url(self.url)

    def start(self) -> None:
        """Start pinging in a daemon thread: ``url/start`` at once, then ``url`` every ``every`` s.

        Returns at once: a monitoring service that is down must not delay the run.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="daq-run-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        problem = self._ping("start", None, self.timeout, cancel=self._stop)
        with self._lock:
            self._start_problem = problem if not self._stop.is_set() else None
        while not self._stop.wait(self.every):
            problem = self._ping("", None, min(self.timeout, self.every), cancel=self._stop)
            with self._lock:
                self.pings += 1
                if problem is not None and not self._stop.is_set():
                    self.failed += 1
                    self._last_error = problem

    def _ping(self, suffix: str, body: Optional[str], seconds: float, cancel: Optional[threading.Event] = None) -> Optional[str]:
        """One ping of ``url/suffix`` (GET, or POST with ``body``); its problem as one line, or ``None``."""
        from ._delivery import DeliveryFailed, http_request

        method = "POST" if body is not None else "GET"
        try:
            http_request(method, _with_path(self.url, suffix), seconds=seconds, text=body, user_agent=f"daq-run/{__version__}", cancel=cancel)
        except DeliveryFailed as exc:
            return f"heartbeat {self} ({suffix or 'ping'}) failed: {exc}"
        except Exception as exc:  # never fatal, and never a traceback from the thread
            return f"heartbeat {self} ({suffix or 'ping'}) failed: {type(exc).__name__}: {one_line(redact_text(exc), 120)}"
        return None

    def finish(self, exit_code: int, body: Optional[str] = None, seconds: Optional[float] = None) -> List[str]:
        """Stop the periodic pings and send the last one: ``url`` when ``exit_code`` is 0, else
        ``url/fail``; ``body`` (text) goes with it. Within ``seconds`` (default ``timeout``) in all.

        Returns one line per problem: the start ping's, a summary of the periodic pings that
        failed, and the last ping's.
        """
        budget = self.timeout if seconds is None else seconds
        end = time.monotonic() + budget
        self._stop.set()
        if self._thread is not None:
            # A ping under way is cancelled (within 0.25 s): the last word must arrive last.
            self._thread.join(min(0.5, budget / 2))
        problems = []
        with self._lock:
            if self._start_problem:
                problems.append(self._start_problem)
            if self.failed:
                problems.append(f"heartbeat {self}: {self.failed} of {self.pings} pings during the run failed, the last: {self._last_error}")
        problem = self._ping("" if exit_code == 0 else "fail", body if body is not None else "", max(end - time.monotonic(), 0.1))
        if problem:
            problems.append(problem)
        return problems


class Notifier:
    """Event consumer that tells the settings' targets how the run ended.

    Subscribe it to the runner (``runner.subscribe(notifier)``), call :meth:`start` when the
    run begins (the heartbeat's first ping), and :meth:`deliver` once the exit code is known.

    Args:
        settings: who is told, and how (:class:`NotifySettings`).
        label: names the run when it never started (the batch file's path).
        secrets: text to mask in messages besides URL credentials (``Batch.secrets``).
        hostname: for the default sender ``daq-run@<hostname>``.

    Attributes:
        tally: what the run's events said so far.
        delivered: the targets (as shown) told by the last :meth:`deliver`.
    """

    def __init__(
        self,
        settings: NotifySettings,
        *,
        label: Optional[str] = None,
        secrets: Iterable[str] = (),
        hostname: Optional[str] = None,
    ) -> None:
        self.settings = settings
        self.label = label
        self.secrets = tuple(sorted(set(secrets), key=len, reverse=True))
        self.hostname = hostname or socket.gethostname()
        self.tally = Tally()
        self.delivered: List[str] = []
        beat = settings.heartbeat
        self.heartbeat = Heartbeat(beat.url, beat.every, timeout=settings.delivery_timeout) if beat is not None else None

    def __call__(self, event: events.Event) -> None:
        self.tally.feed(event)

    def start(self) -> None:
        """Start the heartbeat (``url/start``, then periodic pings) in the background; nothing without one."""
        if self.heartbeat is not None:
            self.heartbeat.start()

    def message(
        self,
        exit_code: int,
        report_path: Optional[str] = None,
        resume_command: Union[Sequence[str], str, None] = None,
        *,
        notes: Sequence[str] = (),
        ending: Any = None,
    ) -> Message:
        """The message :meth:`deliver` would send (see :func:`compose`)."""
        tally = self._tally_at(ending)
        return compose(tally, exit_code, report_path, resume_command, notes=notes, label=self.label, secrets=self.secrets)

    def _tally_at(self, ending: Any) -> Tally:
        """The tally as the run ends: ``ending`` (a :class:`~daq_runner.exit_codes.RunEnding`,
        told by the Runner's end hook before ``run_finished``) gives its status and reason."""
        if ending is None or self.tally.finished_at is not None or self.tally.started_at is None:
            return self.tally
        tally = copy.copy(self.tally)
        tally.summary = dict(self.tally.summary)  # the real run_finished still comes to self.tally
        tally.feed(
            events.Event(
                events.RUN_FINISHED,
                tally.run_id,
                data={"status": ending.status, "reason": ending.reason, "daq_unreachable": ending.daq_unreachable, "lock_lost": ending.lock_lost},
            )
        )
        return tally

    def deliver(
        self,
        exit_code: int,
        report_path: Optional[str] = None,
        resume_command: Union[Sequence[str], str, None] = None,
        *,
        notes: Sequence[str] = (),
        ending: Any = None,
    ) -> List[str]:
        """Tell every target whose ``on`` matches ``exit_code``, and send the heartbeat's last ping.

        All at once, within the settings' ``timeout`` (default 5 s) in all, whatever the
        targets do (refuse, hang, trickle). ``resume_command`` (a list of arguments or a
        string) is shown when the run did not pass. ``ending`` (a
        :class:`~daq_runner.exit_codes.RunEnding`) gives the status and reason of a run that
        is ending, when this is called before its ``run_finished`` (a Runner's end hook).
        Never raises for a delivery.

        Returns:
            One line per problem (``notification to mailto:ops@x failed: SMTP 550: ...``),
            credentials masked: for stderr and the report's notices. Empty: all delivered.
        """
        from ._delivery import run_all

        outcome = outcome_of(exit_code)
        targets = self.settings.targets_for(outcome)
        budget = self.settings.delivery_timeout
        message = self.message(exit_code, report_path, resume_command, notes=notes, ending=ending)
        # Keyed by position: two webhooks of one service show alike (https://hooks.slack.com/***).
        jobs: Dict[str, Callable[[], Optional[str]]] = {}
        shown: Dict[str, str] = {}
        for target in targets:
            if target.kind == "webhook":
                key = str(len(jobs))
                jobs[key], shown[key] = self._webhook_job(target, message, budget), f"notification to {target}"
        mail = [t for t in targets if t.kind == "mail"]
        if mail:
            key = str(len(jobs))
            jobs[key], shown[key] = self._mail_job(mail, message, budget), f"notification to {', '.join(map(str, mail))}"
        heartbeat = self.heartbeat
        if heartbeat is not None:
            summary = message.subject + ("\n" + message.fields["reason"] if message.fields.get("reason") else "")
            jobs["heartbeat"], shown["heartbeat"] = (lambda: "\n".join(heartbeat.finish(exit_code, summary, budget)) or None), f"heartbeat {heartbeat}"
        results = run_all(jobs, budget)
        problems: List[str] = []
        self.delivered = []
        for key, problem in results.items():
            if problem is None:
                if key != "heartbeat":
                    self.delivered.append(shown[key][len("notification to "):])
                continue
            # A job's own lines already name their target (a refused recipient, a heartbeat ping).
            own = ("notification to ", "heartbeat ")
            problems += [line if line.startswith(own) else f"{shown[key]} failed: {line}" for line in problem.splitlines()]
        clean = _masker(self.secrets)
        return [one_line(clean(p), 500) for p in problems]

    def _webhook_job(self, target: Target, message: Message, budget: float) -> Callable[[], Optional[str]]:
        from ._delivery import http_request

        payload = {"text": message.text, "daq_run": message.fields}

        def send() -> None:
            http_request("POST", target.address, seconds=budget, json_body=payload, user_agent=f"daq-run/{__version__}")

        return send  # type: ignore[return-value]

    def _mail_job(self, targets: List[Target], message: Message, budget: float) -> Callable[[], Optional[str]]:
        from ._delivery import send_mail

        server = self.settings.smtp
        sender = self.settings.sender or f"daq-run@{self.hostname}"

        def send() -> Optional[str]:
            refused = send_mail(server, sender, [t.address for t in targets], message.subject, message.text, seconds=budget)
            lines = [f"notification to mailto:{address} failed: {why}" for address, why in refused.items()]
            return "\n".join(lines) or None

        return send
