"""A rest_v2 DAQ in this process, below the client: decision logic tested in milliseconds.

:class:`ScriptedDaq` is a small model of a rest_v2 writer (its state, the acquisition, the log,
the config and its deployment) that answers the real :class:`~daq_runner.client.StdDaqClient`
through a ``requests`` transport adapter mounted on the client's session, where HTTP would
be (as httpx's ``MockTransport`` sits under an httpx client). Everything above it is the real
code: the client's envelope and shape checks, retries and error classes, and
:class:`~daq_runner.rest_v2.RestV2Daq` with its feed and its exactly-once tracker. There is no
socket and, unless a Redis URL is given, no Redis: the feed then polls REST, every few ms.

Where it models something it behaves as section 9 of the Standard DAQ reference says the
deployed server does, with :mod:`daq_runner.protocol`'s messages and shapes: a write to a
writer that is not READY is refused with the writer's status, a stop to an idle writer logs
its last acquisition again, a stop after a writer restart lost the acquisition answers
"Cannot reach READY...", partial configs are refused, a config change loses a running
acquisition. Acquisitions advance by ``images_per_read`` images on each status read (or on
the clock of ``tick_s``, or by :meth:`ScriptedDaq.advance`).

Faults come from a script: :meth:`ScriptedDaq.script` queues one answer per request of an
endpoint (a table, consumed in order), made by :func:`lost`, :func:`refused`,
:func:`needs_restart`, :func:`http_error`, :func:`unreachable`, :func:`malformed`,
:func:`stale`, :func:`slow`, :func:`before` and :func:`after`; :meth:`ScriptedDaq.arm` sets
what happens to the next acquisition (FAILED, not logged, logged twice, another run_id), and
:meth:`ScriptedDaq.at_image` runs an action (a writer restart, a vanished acquisition...) once
the acquisition under way has written that many images.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from . import _deadline, protocol
from ._transport import request_limit
from .daq import Acquisitions, RunServices
from .exceptions import LockError
from .protocol import AcquisitionState, DeploymentStatus, WriterState

__all__ = [
    "ScriptedDaq",
    "RecordedRun",
    "Fault",
    "FAST_TIMING",
    "lost",
    "refused",
    "needs_restart",
    "http_error",
    "unreachable",
    "malformed",
    "stale",
    "slow",
    "before",
    "after",
]

Action = Callable[["ScriptedDaq"], Any]
Where = Union[protocol.Endpoint, str]

_READY, _WRITING, _UNKNOWN = WriterState.READY.value, WriterState.WRITING.value, WriterState.UNKNOWN.value
_SERVER = "scripted-daq"


def _fast_timing() -> Any:
    from .rest_v2 import RestV2Timing

    # Every grace a hundred to a thousand times shorter than a real DAQ needs: a decision that
    # waits out a grace period takes milliseconds.
    return RestV2Timing(
        lost_reply_grace_s=0.05,
        ack_grace_s=0.05,
        log_wait_s=0.05,
        log_look_s=0.01,
        ready_after_stop_s=0.2,
        stop_budget_s=0.5,
        stop_pause_s=0.005,
        stop_pause_max_s=0.02,
        rest_confirm_s=0.5,
        redis_retry_s=0.05,
        continue_s=1.0,
        log_poll_s=0.005,
        background_look_s=0.005,
    )


FAST_TIMING = _fast_timing()
""":class:`~daq_runner.rest_v2.RestV2Timing` for a :class:`ScriptedDaq`: graces of 10-50 ms, pauses of a few ms
(a status stream is confirmed over REST every 0.5 s)."""


# -- the script: one answer per request --------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One scripted answer to one request (made by the functions below, queued by :meth:`ScriptedDaq.script`).

    Attributes:
        kind: ``lost``, ``refused``, ``needs_restart``, ``http``, ``unreachable``,
            ``malformed``, ``stale``, ``slow``, ``before`` or ``after``.
        handled: ``lost``: the DAQ acted on the request before its reply was lost.
        after_requests: ``lost``: the DAQ acts on it only after this many later requests (a
            request still on its way when the client gave up).
        reset: ``lost``: the connection was reset (else the read timed out).
        status: ``http``: the HTTP status.
        body: ``http``, ``malformed``: the reply body; ``refused``: the message; ``stale``:
            the status to answer (JSON; empty: the one before the last change).
        seconds: ``slow``: how long the reply takes.
        action: ``before``, ``after``: called with the :class:`ScriptedDaq`.
    """

    kind: str
    handled: bool = False
    after_requests: int = 0
    reset: bool = False
    status: int = 200
    body: bytes = b""
    seconds: float = 0.0
    action: Optional[Action] = None


def lost(handled: bool = True, *, after_requests: int = 0, reset: bool = False) -> Fault:
    """The reply is lost (a read timeout, or a reset connection with ``reset``): for a write
    start the client raises :class:`~daq_runner.exceptions.WriteOutcomeUnknown`.

    ``handled``: the DAQ acted on it (the acquisition started) or not; ``after_requests``: it
    acts on it after that many later requests (it started late).
    """
    return Fault("lost", handled=handled and not after_requests, after_requests=after_requests, reset=reset)


def refused(message: str) -> Fault:
    """HTTP 200 ``status: error`` with ``message`` (e.g. :data:`protocol.MESSAGE_BUSY_PREFIX`); nothing changes."""
    return Fault("refused", body=message.encode())


def needs_restart() -> Fault:
    """The writer driver gave up: "Cannot reach WRITING" (a write) or "Cannot reach READY" (a
    stop), "... Writer needs to be restarted.", and the writer is left UNKNOWN without acquisition."""
    return Fault("needs_restart")


def http_error(status: int, text: str = "") -> Fault:
    """A reply with HTTP ``status`` (500, 502, 503...) and ``text``; nothing changes."""
    return Fault("http", status=status, body=text.encode())


def unreachable() -> Fault:
    """Connection refused: the request never reached the DAQ (the client may send it again)."""
    return Fault("unreachable")


def malformed(body: Any) -> Fault:
    """HTTP 200 with ``body``: bytes as they are, anything else as JSON (e.g. ``{"status": "ok", "writer": None}``)."""
    return Fault("malformed", body=body if isinstance(body, bytes) else json.dumps(body).encode())


def stale(status: Optional[dict] = None) -> Fault:
    """``GET /writer/status`` answers ``status`` (default: the status before the last change),
    as a stale copy would; the writer's own state does not move."""
    return Fault("stale", body=b"" if status is None else json.dumps(status).encode())


def slow(seconds: float) -> Fault:
    """Handled at once, answered after ``seconds``: a read timeout if the request's limit comes first."""
    return Fault("slow", seconds=seconds)


def before(action: Action) -> Fault:
    """``action(daq)`` runs, then the request is answered as usual."""
    return Fault("before", action=action)


def after(action: Action) -> Fault:
    """The request is handled as usual, then ``action(daq)`` runs before the reply goes out."""
    return Fault("after", action=action)


class _Refusal(Exception):
    """The DAQ refuses: HTTP 200 with ``status: error`` and this message."""


class _Invalid(Exception):
    """The request body fails the server's model: HTTP 422."""


class _NotFound(Exception):
    """No such endpoint: HTTP 404."""


# -- the DAQ -------------------------------------------------------------------------------------


class ScriptedDaq:
    """A rest_v2 DAQ in this process, for the real client and the real :class:`RestV2Daq`.

    Args:
        state: the writer's state at the start: ``READY``, or ``UNKNOWN`` as a freshly started DAQ.
        config: the configuration in force (default: daq-sim's); ``None`` entries are kept.
        images_per_read: images each acquisition advances per ``GET /writer/status``
            (``0``: only :meth:`advance` and ``tick_s`` move it).
        tick_s: advance one image every ``tick_s`` seconds on a clock of its own (a thread),
            for tests that wait on Redis streams rather than read statuses.
        files: the DAQ's folders are visible here: a write needs its folder to exist and
            writes a real HDF5 file (truncating an existing one) in the writer's layout, with
            daq-sim's writer (the ``sim`` extra), so that daq-run's file checks pass.
            ``False``: a DAQ on another machine (no folder check, no file).
        redis_url: a Redis to publish ``daq:status`` and ``daq:log`` to, as a real DAQ does
            (``None``: no streams; the runner polls REST).
        streams: the stream names (tests sharing one Redis give each DAQ its own).
        url: the base URL the client is made for (nothing listens there).
        retry_pause_s: the longest pause between the client's retries (the real backoff
            starts at 0.1 s).
        detector_rate: images per second the detector sends (``GET /daq/stats``, and
            ``daq:stat`` with Redis). A stored config restarts the services as on a real DAQ:
            the first statistics read after it (REST), or the entries after the deployment
            (Redis), show the detector stopped, then back. ``0``: a detector that sends
            nothing, where no restart can show (a config change then waits out its window).

    Attributes:
        paused: while true, the clock of ``tick_s`` stands still.
        requests: every request received, as ``(method, path, body)``, faulted ones included.
        started: every acquisition the writer started, as ``(run_id, output_file)``.
        logs: the acquisition log, ``(entry_id, record)`` newest first.

    Raises:
        ValueError: ``state`` is not READY or UNKNOWN, ``images_per_read`` not a whole number >= 0.

    Example::

        daq = ScriptedDaq()
        daq.script(protocol.WRITER_WRITE_ASYNC, lost(handled=True))
        report = daq.runner().run(load_batch_text(...))
        assert 1 == daq.count(protocol.WRITER_WRITE_ASYNC)
    """

    def __init__(
        self,
        *,
        state: str = _READY,
        config: Optional[Dict[str, Any]] = None,
        images_per_read: int = 1,
        tick_s: Optional[float] = None,
        files: bool = True,
        redis_url: Optional[str] = None,
        streams: protocol.StreamNames = protocol.StreamNames(),
        url: str = "http://scripted-daq.localhost:5000",
        retry_pause_s: float = 0.001,
        detector_rate: float = 100.0,
    ) -> None:
        from .sim.daq import DEFAULT_CONFIG

        if state not in (_READY, _UNKNOWN):
            raise ValueError(f"a scripted DAQ starts READY or UNKNOWN, not {state!r}")
        if isinstance(images_per_read, bool) or not isinstance(images_per_read, int) or images_per_read < 0:
            raise ValueError(f"images_per_read must be a whole number >= 0, not {images_per_read!r}")
        self.url = url.rstrip("/")
        self.images_per_read = images_per_read
        self.files = files
        self.redis_url = redis_url
        self.streams = streams
        self.retry_pause_s = retry_pause_s
        if isinstance(detector_rate, bool) or not isinstance(detector_rate, (int, float)) or not detector_rate >= 0:
            raise ValueError(f"detector_rate must be images per second >= 0, not {detector_rate!r}")
        self.detector_rate = float(detector_rate)
        self._restarting_reads = 0  # statistics reads still to show the services down after a stored config
        self._stat_ms = 0  # the newest daq:stat id it stamped itself (ms)
        self.paused = False
        self.requests: List[Tuple[str, str, Any]] = []
        self.started: List[Tuple[int, str]] = []
        self.logs: List[Tuple[str, dict]] = []
        self.config: Dict[str, Any] = copy.deepcopy(DEFAULT_CONFIG if config is None else config)
        self.config_id = "1-0"
        self._deployment = self._deployed(self.config_id, DeploymentStatus.SUCCESS)
        self._lock = threading.RLock()
        self._state = state
        self._acquisition: Optional[dict] = None
        self._lost = False  # the writer restarted under the acquisition: a stop cannot be confirmed
        self._published = {"state": state, "acquisition": None}
        self._previous = self._published
        self._script: Dict[str, Deque[Fault]] = {}
        self._late: List[List[Any]] = []  # [requests to go, method, path, body]
        self._armed: Dict[str, Any] = {}
        self._fate: Dict[str, Any] = {}  # what was armed for the acquisition under way
        self._hooks: List[Tuple[int, Action]] = []
        self._file: Any = None  # the HDF5 writer of the acquisition under way
        self._image_id = 1
        self._ids = 0
        self._redis: Any = None
        if redis_url is not None:
            from ._redis import connect

            self._redis = connect(redis_url)
            # A real DAQ keeps every stored config in daq:config, its entry id the config_id.
            self.config_id = self._store_config(self.config)
            self._deployment = self._deployed(self.config_id, DeploymentStatus.SUCCESS)
        self._adapter = _Adapter(self)
        self._closed = threading.Event()
        self._clock: Optional[threading.Thread] = None
        if tick_s is not None:
            self._clock = threading.Thread(target=self._tick, args=(tick_s,), name="scripted-daq-clock", daemon=True)
            self._clock.start()

    def close(self) -> None:
        """Stop the clock, close a file being written, let go of Redis."""
        self._closed.set()
        if self._clock is not None:
            self._clock.join(1.0)
        with self._lock:
            self._close_file()
        if self._redis is not None:
            self._redis.close()

    def __enter__(self) -> "ScriptedDaq":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- clients on top of it ---------------------------------------------------------------

    def attach(self, client: Any) -> Any:
        """Make ``client`` (a :class:`StdDaqClient` for :attr:`url`) talk to this DAQ; returns it.

        Mounts the DAQ's adapter on the client's session for :attr:`url` and shortens its
        pauses between retries to at most ``retry_pause_s`` (the retries themselves, and
        what is retried, stay the client's).
        """
        client.session.mount(self.url + "/", self._adapter)
        client.sleep = self._retry_pause
        return client

    def client(self, **kwargs: Any) -> Any:
        """A real :class:`~daq_runner.client.StdDaqClient` on this DAQ (``kwargs`` as its own)."""
        from .client import StdDaqClient

        return self.attach(StdDaqClient(self.url, **kwargs))

    def rest_v2(self, **kwargs: Any) -> Any:
        """A real :class:`~daq_runner.rest_v2.RestV2Daq` on this DAQ: REST polled every 2 ms,
        :data:`FAST_TIMING`, and its Redis when it has one (``kwargs`` as RestV2Daq's own).

        Every client it holds talks to this DAQ: the run's, and those it makes of its own
        later (for the rates, for a look at whether the DAQ answers)."""
        from .client import StdDaqClient
        from .rest_v2 import RestV2Daq

        scripted = self

        class _Routed(RestV2Daq):
            def __setattr__(self, name: str, value: Any) -> None:
                if isinstance(value, StdDaqClient):
                    scripted.attach(value)
                super().__setattr__(name, value)

        kwargs.setdefault("poll_interval", 0.002)
        kwargs.setdefault("timing", FAST_TIMING)
        kwargs.setdefault("outage_s", 5.0)
        kwargs.setdefault("streams", self.streams)
        return _Routed(self.url, self.redis_url, **kwargs)

    def runner(self, consumers: Any = (), **kwargs: Any) -> Any:
        """A real :class:`~daq_runner.Runner` on :meth:`rest_v2` (no lock, no pause between attempts)."""
        from .runner import Runner

        kwargs.setdefault("retry_delay", 0.0)
        kwargs.setdefault("lock", False)
        return Runner(consumers=consumers, daq=self.rest_v2(), **kwargs)

    def _retry_pause(self, seconds: float) -> None:
        _deadline.current().sleep(min(seconds, self.retry_pause_s))

    # -- scripting ------------------------------------------------------------------------------

    def script(self, where: Where, *faults: Fault, times: int = 1) -> "ScriptedDaq":
        """Answer the next requests to ``where`` with ``faults``, in order, each ``times`` times.

        ``where`` is an endpoint of :mod:`daq_runner.protocol`, ``"METHOD /path"``, or ``"*"``
        (any request that has nothing scripted of its own). Requests beyond the script are
        answered by the model. Returns the DAQ, so that calls chain.
        """
        queue = self._script.setdefault(_key(where), deque())
        for fault in faults:
            queue.extend([fault] * times)
        return self

    def arm(
        self,
        *,
        fail_next: Optional[str] = None,
        unlogged: bool = False,
        logged_twice: bool = False,
        run_id: Optional[int] = None,
        deployment: Optional[str] = None,
    ) -> "ScriptedDaq":
        """What happens to the next acquisition (or config), once.

        Args:
            fail_next: it ends FAILED with this message at its first image (not logged).
            unlogged: it ends FINISHED but its log record is missing.
            logged_twice: its log record is there twice (a real DAQ's stop to an idle writer
                does that too).
            run_id: the writer driver names it with this run_id instead of the client's.
            deployment: ``"ERROR"``: the next config's deployment fails.
        """
        armed = {"fail_next": fail_next, "unlogged": unlogged, "logged_twice": logged_twice, "run_id": run_id, "deployment": deployment}
        with self._lock:
            self._armed.update({key: value for key, value in armed.items() if value not in (None, False)})
        return self

    def at_image(self, n_images: int, action: Action) -> "ScriptedDaq":
        """Run ``action(daq)`` once, when the acquisition under way has written ``n_images`` images."""
        with self._lock:
            self._hooks.append((n_images, action))
        return self

    def count(self, where: Where) -> int:
        """How many requests to ``where`` (as in :meth:`script`) were received."""
        key = _key(where)
        return sum(1 for method, path, _ in self.requests if _matches(key, method, path))

    # -- the model: what the writer does -----------------------------------------------------------

    def status(self) -> dict:
        """The writer status now (a copy)."""
        with self._lock:
            return {"state": self._state, "acquisition": copy.deepcopy(self._acquisition)}

    def advance(self, images: int = 1) -> None:
        """The acquisition under way writes ``images`` more images (ending FINISHED at ``n_images``)."""
        with self._lock:
            acq = self._acquisition
            if self._state != _WRITING or acq is None or self._lost or images <= 0:
                return
            failure = self._fate.pop("fail_next", None)
            if failure is not None:
                self._end(AcquisitionState.FAILED, failure)
                return
            stats = acq["stats"]
            before = stats["n_write_completed"]
            written = min(before + images, acq["info"]["n_images"])
            self._write_images(before, written)
            stats["n_write_completed"] = stats["n_write_requested"] = written
            acq["state"] = AcquisitionState.ACQUIRING_IMAGES.value
            if written >= acq["info"]["n_images"]:
                self._end(AcquisitionState.FINISHED, protocol.MESSAGE_COMPLETED)
            else:
                self._changed()
            for hook in [hook for hook in self._hooks if written >= hook[0]]:
                self._hooks.remove(hook)
                hook[1](self)

    def finish(self) -> None:
        """The acquisition under way completes now, every image written."""
        with self._lock:
            if self._acquisition is not None and self._state == _WRITING:
                self.advance(self._acquisition["info"]["n_images"])

    def interrupt(self) -> None:
        """Someone stops the acquisition under way: FINISHED "Interrupted." with the images so far."""
        with self._lock:
            if self._state == _WRITING and not self._lost:
                self._end(AcquisitionState.FINISHED, protocol.MESSAGE_INTERRUPTED)

    def fail(self, message: str = "ERROR: scripted failure") -> None:
        """The acquisition under way ends FAILED with ``message`` (not logged)."""
        with self._lock:
            if self._state == _WRITING and not self._lost:
                self._end(AcquisitionState.FAILED, message)

    def restart_writer(self) -> None:
        """The writer restarts: UNKNOWN; an acquisition under way is lost (never final, a stop
        cannot be confirmed until a second one)."""
        with self._lock:
            self._lost = self._state == _WRITING
            self._state = _UNKNOWN
            self._changed()

    def vanish(self) -> None:
        """The DAQ comes back READY without the acquisition (restarted; nothing of it left)."""
        with self._lock:
            self._close_file()
            self._state, self._acquisition, self._lost = _READY, None, False
            self._changed()

    def start_other(self, output_file: str = "/data/other.h5", n_images: int = 10, run_id: int = 1) -> None:
        """Someone else's acquisition starts now (whatever the writer was doing), creating its file
        as any write does."""
        with self._lock:
            self._start(output_file, n_images, run_id)

    def deliver(self) -> None:
        """Requests still on their way (:func:`lost` with ``after_requests``) arrive now; their
        replies go nowhere."""
        with self._lock:
            late, self._late = self._late, []
            for _, method, path, body in late:
                self._reply(method, path, body)

    def publish(self, status: dict) -> None:
        """Add ``status`` to the status stream (a late copy, as a real DAQ's second logger writes)."""
        if self._redis is not None:
            self._redis.xadd(self.streams.status, {"json": json.dumps(status)})

    def _tick(self, seconds: float) -> None:
        while not self._closed.wait(seconds):
            if not self.paused:
                self.advance(1)

    def _changed(self) -> None:
        status = self.status()
        if status != self._published:
            self._previous, self._published = self._published, status
            self.publish(status)

    def _start(self, output_file: str, n_images: int, run_id: int, fate: Optional[Dict[str, Any]] = None) -> None:
        self._state, self._lost, self._fate = _WRITING, False, dict(fate or {})
        self.started.append((run_id, output_file))
        self._close_file()
        if self.files and os.path.isdir(os.path.dirname(output_file)):
            from .sim.hdf5 import Hdf5Writer

            # The writer opens its file with truncation.
            self._file = Hdf5Writer(output_file, self.config, self.config.get("bit_depth"), n_images)
        self._acquisition = {
            "info": {"n_images": n_images, "output_file": output_file, "run_id": run_id},
            "message": "",
            "state": AcquisitionState.WAITING_IMAGES.value,
            "stats": {"n_write_completed": 0, "n_write_requested": 0, "start_time": time.time(), "stop_time": None},
            "reports": None,
        }
        self._changed()

    def _write_images(self, first: int, stop: int) -> None:
        if self._file is not None and stop > first:
            from .sim.hdf5 import frame_source

            self._file.append(frame_source(self.config).frames(first, stop), self._image_id)
            self._image_id += stop - first

    def _close_file(self) -> None:
        writer, self._file = self._file, None
        if writer is not None:
            writer.close()

    def _end(self, state: AcquisitionState, message: str) -> None:
        acq = self._acquisition
        assert acq is not None
        self._close_file()
        acq["state"], acq["message"] = state.value, message
        acq["stats"]["stop_time"] = time.time()
        if state == AcquisitionState.FAILED:
            acq["stats"]["start_time"] = acq["stats"]["stop_time"]  # as the real driver does
        else:
            self._log(acq, self._fate)  # the log record comes before the final status
        self._state = _READY
        self._changed()

    def _log(self, acquisition: dict, fate: Optional[Dict[str, Any]] = None) -> None:
        fate = fate or {}
        if fate.get("unlogged"):
            return
        for _ in range(2 if fate.get("logged_twice") else 1):
            record = copy.deepcopy(acquisition)
            if self._redis is not None:
                entry_id = self._redis.xadd(self.streams.log, {"json": json.dumps(record)}).decode()
            else:
                self._ids += 1
                entry_id = f"{int(time.time() * 1000)}-{self._ids}"
            self.logs.insert(0, (entry_id, record))

    @staticmethod
    def _deployed(config_id: str, status: DeploymentStatus) -> dict:
        message = protocol.MESSAGE_DEPLOYMENT_SUCCESS if status == DeploymentStatus.SUCCESS else protocol.MESSAGE_DEPLOYMENT_FAILED
        server = "Done" if status == DeploymentStatus.SUCCESS else "Error"
        now = time.time()
        return {"config_id": config_id, "status": status.value, "message": message, "servers": {_SERVER: server}, "stats": {"start_time": now, "stop_time": now}}

    # -- the REST API -----------------------------------------------------------------------------

    def _write(self, body: Any) -> dict:
        from .sim.daq import SimRefusal, check_output_path

        if not isinstance(body, dict) or not isinstance(body.get("output_file"), str):
            raise _Invalid("output_file: field required")
        n_images, run_id = body.get("n_images"), body.get("run_id")
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
            raise _Invalid("n_images: ensure this value is greater than or equal to 1")
        output_file = body["output_file"]
        try:
            check_output_path(output_file)
        except SimRefusal as exc:
            raise _Refusal(str(exc)) from None
        folder = os.path.dirname(output_file)
        if self.files and not os.path.isdir(folder):
            raise _Refusal(protocol.MESSAGE_FOLDER_MISSING.format(folder=folder))
        if self._state != _READY:
            shown = repr({"state": self._state, "acquisition": self._acquisition})
            raise _Refusal(protocol.MESSAGE_BUSY.format(status=shown))
        if n_images > protocol.MAX_WRITER_N_IMAGES:
            self._give_up()
            raise _Refusal(protocol.MESSAGE_CANNOT_REACH_WRITING)
        fate = {key: self._armed.pop(key) for key in ("fail_next", "unlogged", "logged_twice", "run_id") if key in self._armed}
        replaced = fate.pop("run_id", None)
        self._start(output_file, n_images, replaced if replaced is not None else (run_id if run_id is not None else time.time_ns()), fate)
        return self.status()

    def _stop(self) -> dict:
        if self._state == _WRITING:
            self._end(AcquisitionState.FINISHED, protocol.MESSAGE_INTERRUPTED)
        elif self._state == _READY:
            if self._acquisition is not None:
                # An idle writer publishes its last acquisition again, and it is logged again.
                self._acquisition["state"] = AcquisitionState.FINISHED.value
                self._log(self._acquisition)
            self.publish(self.status())
        elif self._lost:
            self._give_up()
            raise _Refusal(protocol.MESSAGE_CANNOT_REACH_READY)
        else:
            self._state = _READY
            self._changed()
        return self.status()

    def _give_up(self) -> None:
        # The writer driver resets its status to UNKNOWN without acquisition; a stop makes it READY.
        self._close_file()
        self._state, self._acquisition, self._lost = _UNKNOWN, None, False
        self._changed()

    def _set_config(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise _Invalid("body: value is not a valid dict")
        config = {key: body.get(key) for key in protocol.CONFIG_FIELDS}
        for key in protocol.INTEGER_CONFIG_FIELDS:
            if config[key] is None:
                raise _Refusal(protocol.MESSAGE_PARTIAL_CONFIG)
            config[key] = int(config[key])
        if self._state == _WRITING:
            self.restart_writer()  # the deployment restarts the writer under the acquisition
        self.config = config
        self._ids += 1
        self.config_id = self._store_config(config) if self._redis is not None else f"{int(time.time() * 1000)}-{self._ids}"
        failed = self._armed.pop("deployment", None) == DeploymentStatus.ERROR.value
        self._restart_services(failed)
        return {"status": "ok", "message": protocol.MESSAGE_CONFIG_SET, "config": copy.deepcopy(config), "config_id": None}

    def _store_config(self, config: Dict[str, Any]) -> str:
        entry_id = self._redis.xadd(self.streams.config, {"json": json.dumps(config)})
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def _restart_services(self, failed: bool) -> None:
        """The deployment, and the restart of the services it brings, as the statistics show it."""
        if self._redis is not None and self.detector_rate > 0 and not failed:
            # The detector before the change (the baseline), then zeros and images again,
            # stamped after the deployment's SUCCESS (ids of their own: the same millisecond
            # would count as before it).
            self._redis.xadd(self.streams.stat, {"json": json.dumps(self._stats(self.detector_rate))})
        self._deployment = self._deployed(self.config_id, DeploymentStatus.ERROR if failed else DeploymentStatus.SUCCESS)
        if failed or self.detector_rate <= 0:
            return
        self._restarting_reads = 1
        if self._redis is not None:
            after = max(int(self._deployment["stats"]["stop_time"] * 1000) + 2, self._stat_ms + 1)
            self._stat_ms = after + 1
            for offset, rate in ((0, 0.0), (1, self.detector_rate)):
                self._redis.xadd(self.streams.stat, {"json": json.dumps(self._stats(rate))}, id=f"{after + offset}-0")

    @staticmethod
    def _stats(detector_rate: float) -> dict:
        return {"detector": {"bytes_per_second": 0.0, "images_per_second": detector_rate}, "writer": {"bytes_per_second": 0.0, "images_per_second": 0.0}}

    def _answer(self, method: str, path: str, body: Any) -> dict:
        """The envelope the model answers ``method path`` with; raises :class:`_Refusal` or :class:`_Invalid`."""
        ok = {"status": "ok"}
        if (method, path) == ("GET", protocol.WRITER_STATUS.path):
            if self._clock is None:
                self.advance(self.images_per_read)
            return {**ok, "message": protocol.MESSAGE_WRITER_STATUS.format(state=self._state), "writer": self.status()}
        if (method, path) == ("POST", protocol.WRITER_WRITE_ASYNC.path):
            return {**ok, "message": protocol.MESSAGE_WRITING_STARTED, "writer": self._write(body)}
        if (method, path) == ("POST", protocol.WRITER_STOP.path):
            return {**ok, "message": protocol.MESSAGE_WRITING_STOPPED, "writer": self._stop()}
        if (method, path) == ("GET", protocol.DAQ_CONFIG_GET.path):
            message = protocol.MESSAGE_CONFIG.format(bit_depth=self.config.get("bit_depth"))
            return {**ok, "message": message, "config": copy.deepcopy(self.config), "config_id": self.config_id}
        if (method, path) == ("POST", protocol.DAQ_CONFIG_SET.path):
            return self._set_config(body)
        if (method, path) == ("GET", protocol.DAQ_DEPLOYMENT.path):
            return {**ok, "message": protocol.MESSAGE_DEPLOYMENT, "deployment": copy.deepcopy(self._deployment)}
        if (method, path) == ("GET", protocol.DAQ_STATS.path):
            rate = self.detector_rate if self._restarting_reads == 0 else 0.0
            self._restarting_reads = max(self._restarting_reads - 1, 0)
            return {**ok, "message": protocol.MESSAGE_STATS, "stats": self._stats(rate)}
        logs_prefix = protocol.DAQ_LOGS.path.split("{")[0]
        if method == "GET" and path.startswith(logs_prefix) and path[len(logs_prefix):].lstrip("-").isdigit():
            n = int(path[len(logs_prefix):])
            if n < 1:
                raise _Refusal(protocol.MESSAGE_LOGS_COUNT)
            return {**ok, "message": protocol.MESSAGE_LOGS, "logs": {entry_id: copy.deepcopy(r) for entry_id, r in self.logs[:n]}}
        raise _NotFound()

    # -- one request: the script first, then the model ---------------------------------------------

    def _exchange(self, method: str, path: str, body: Any) -> Tuple[int, bytes]:
        """The HTTP status and body of the reply to one request; raises what the transport would."""
        with self._lock:
            self.requests.append((method, path, body))
            self._arrive_late()
            fault = self._next_fault(method, path)
            kind = fault.kind if fault is not None else None
            if kind == "unreachable":
                raise requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused (scripted)"))
            if kind == "lost":
                assert fault is not None
                if fault.after_requests:
                    self._late.append([fault.after_requests, method, path, body])
                elif fault.handled:
                    self._reply(method, path, body)
                if fault.reset:
                    raise requests.exceptions.ConnectionError(ConnectionResetError(104, "Connection reset by peer (scripted)"))
                raise requests.exceptions.ReadTimeout("read timed out (scripted: the reply was lost)")
            if kind in ("http", "malformed"):
                assert fault is not None
                return fault.status, fault.body
            if kind == "refused":
                assert fault is not None
                return 200, _json({"status": "error", "message": fault.body.decode()})
            if kind == "needs_restart":
                self._give_up()
                target = _WRITING if path == protocol.WRITER_WRITE_ASYNC.path else _READY
                message = protocol.MESSAGE_CANNOT_REACH_WRITING if target == _WRITING else protocol.MESSAGE_CANNOT_REACH_READY
                return 200, _json({"status": "error", "message": message})
            if kind == "stale" and (method, path) == ("GET", protocol.WRITER_STATUS.path):
                assert fault is not None
                previous = json.loads(fault.body) if fault.body else copy.deepcopy(self._previous)
                return 200, _json({"status": "ok", "message": protocol.MESSAGE_WRITER_STATUS.format(state=previous["state"]), "writer": previous})
            if kind == "before":
                assert fault is not None and fault.action is not None
                fault.action(self)
            reply = self._reply(method, path, body)
            if kind == "after":
                assert fault is not None and fault.action is not None
                fault.action(self)
        if kind == "slow":
            assert fault is not None
            # Outside the lock: the DAQ goes on meanwhile (its clock, other requests).
            bound = _deadline.current()
            bound.sleep(fault.seconds)
            if bound.expired:
                raise requests.exceptions.ReadTimeout("read timed out (scripted: a slow reply)")
        return reply

    def _reply(self, method: str, path: str, body: Any) -> Tuple[int, bytes]:
        try:
            return 200, _json(self._answer(method, path, body))
        except _Refusal as exc:
            return 200, _json({"status": "error", "message": str(exc)})
        except _Invalid as exc:
            return 422, _json({"detail": [{"msg": str(exc)}]})
        except _NotFound:
            return 404, _json({"detail": "Not Found"})

    def _next_fault(self, method: str, path: str) -> Optional[Fault]:
        for key, queue in self._script.items():
            if queue and key != "*" and _matches(key, method, path):
                return queue.popleft()
        anywhere = self._script.get("*")
        return anywhere.popleft() if anywhere else None

    def _arrive_late(self) -> None:
        # Requests still on their way arrive (their replies go nowhere: the client gave up).
        for late in list(self._late):
            late[0] -= 1
            if late[0] <= 0:
                self._late.remove(late)
                self._reply(*late[1:])


def _key(where: Where) -> str:
    """``"METHOD /path"`` of an endpoint (a templated path up to its first field: ``GET /daq/logs/``)."""
    return where if isinstance(where, str) else f"{where.method} {where.path.split('{')[0]}"


def _matches(key: str, method: str, path: str) -> bool:
    if key == "*":
        return True
    want_method, _, want_path = key.partition(" ")
    return method == want_method and (path == want_path or (want_path.endswith("/") and path.startswith(want_path)))


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


class _Adapter(BaseAdapter):
    """The ``requests`` transport of a :class:`ScriptedDaq`: a request becomes a call, its answer a reply.

    Bounded like the real transport: the request's own limit (connect + read timeout) and the
    bound in force apply to a slow reply, and a stop request interrupts it.
    """

    def __init__(self, daq: ScriptedDaq) -> None:
        super().__init__()
        self.daq = daq

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        raw = request.body or b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        with _deadline.bounded(_deadline.Deadline(request_limit(timeout))) as bound:
            bound.check()
            status, content = self.daq._exchange(request.method or "GET", urlsplit(request.url or "").path, body)
        response = requests.Response()
        response.status_code = status
        response._content = content  # noqa: SLF001 - what requests' own adapters fill
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json", "Content-Length": str(len(content))})
        response.encoding = "utf-8"
        response.reason = http.client.responses.get(status, "")
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


# -- a run without a Runner -------------------------------------------------------------------


class RecordedRun(RunServices):
    """The services of one run, for driving a :class:`~daq_runner.daq.Daq` without a Runner.

    What the DAQ tells the run is kept: :attr:`events` as ``(kind, step index, data)``,
    :attr:`notices` as text, and the recoveries on the records they are made on (before
    the first step: :attr:`pre_run`). Setting :attr:`lock_lost` makes :meth:`guard` raise
    :class:`~daq_runner.exceptions.LockError`, as a run that lost its lock.

    Args:
        invocation: the invocation id run_ids derive from.
        overwrite, require_log, resumed, established: as the run's (see
            :class:`~daq_runner.daq.RunServices`).
    """

    def __init__(
        self,
        *,
        invocation: str = "scripted",
        overwrite: bool = False,
        require_log: bool = True,
        resumed: Any = None,
        established: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.invocation = invocation
        self.overwrite = overwrite
        self.require_log = require_log
        self.resumed = resumed
        self.established = dict(established or {})
        self.acquisitions = Acquisitions()
        self.stop_event = threading.Event()
        self.pre_run = []
        self.events: List[Tuple[str, Optional[int], Dict[str, Any]]] = []
        self.notices: List[str] = []
        self.lock_lost: Optional[str] = None

    def emit(self, kind: str, step: Any = None, /, **data: Any) -> None:
        self.events.append((kind, getattr(step, "index", None), data))

    def notice(self, message: str, step: Any = None) -> None:
        self.notices.append(message)

    def guard(self) -> None:
        if self.lock_lost is not None:
            raise LockError(self.lock_lost)
