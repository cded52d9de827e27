"""Randomized fault rounds: a config-then-write batch against daq-sim while faults hit it.

Each round (one seed) draws a sweep of config and write steps (some ``wait: false``, retries
0 or 1, ``on_error`` continue or abort) and one to three faults, each at a drawn moment (a
step starting, an acquisition under way, a step recorded): a config stored from outside, a
stop from outside, the writer killed mid-acquisition (a wedged driver), the REST server
restarted, a writer left UNKNOWN, the DAQ's Redis killed and back with or without its data,
a FAILED acquisition, a stalled detector, a REST outage. Then the invariants of the verdict:

- the run ends in a documented way: passed, or failed with a reason (never an internal
  error), and ``passed`` only when every step passed;
- the summary adds up to the steps;
- every passed write's file is complete, has the dtype of the config its record names, and
  that config has the bit depth the run's last passed config step set;
- every passed write's file comes from one acquisition, the one its record names, and no step
  started more acquisitions than its attempts and restart recoveries allow;
- nothing of the run is left running (unless the driver is wedged, and then the run failed);
- the runner lock is gone (unless the DAQ's Redis was down as the run released it: then it
  is this run's, and expires within its time to live).

``DAQ_RUNNER_FAULT_ROUNDS=N`` runs N rounds (default 24, about two minutes on two cores);
``DAQ_RUNNER_FAULT_SEED=S`` starts at seed S. A seed fixes the batch, the faults and their
moments, not the timing of the DAQ's threads; a failure names its seed, the batch and the
faults applied, so that the round can be run again alone.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import h5py
import pytest
import redis
import requests

from daq_runner import Runner, StdDaqClient, events
from daq_runner.batch import load_batch_text
from daq_runner.lock import LOCK_KEY, LOCK_TTL_S
from daq_runner.resume import run_ids_of

from .conftest import stream_entries, wait_until

ROUNDS = int(os.environ.get("DAQ_RUNNER_FAULT_ROUNDS", "24"))
FIRST_SEED = int(os.environ.get("DAQ_RUNNER_FAULT_SEED", "1"))
DTYPES = {8: "uint8", 16: "uint16", 32: "uint32"}
INITIAL_BIT_DEPTH = 16


class Daq:
    """One simulator for all rounds, on a Redis of its own that rounds kill and start again."""

    def __init__(self, root: Path) -> None:
        from daq_runner.sim import RedisServer, SimSettings, SimulatedDaq
        from daq_runner.testing import skip_without_redis_server

        skip_without_redis_server()
        self.root = root
        self.generation = 0
        self.redis = RedisServer(data_dir=self._data_dir()).start()
        self.pending: Optional[threading.Timer] = None
        self.lost_history = False  # the streams of this round are not whole (Redis down or emptied)
        settings = SimSettings(
            start_state="READY", frame_rate=200, heartbeat_s=0.3, deploy_delay_s=0.05,
            restart_delay_s=0.3, restart_s=0.4, driver_timeout_s=0.5,
        )
        self.sim = SimulatedDaq(redis_url=self.redis.url, settings=settings).start()

    def _data_dir(self) -> str:
        self.generation += 1
        path = self.root / f"redis{self.generation}"
        path.mkdir()
        return str(path)

    def kill_redis(self, back_after: float, keep_data: bool) -> None:
        self.lost_history = True
        port, data = self.redis.port, (self.redis.data_dir if keep_data else self._data_dir())
        self.redis.kill()

        def start() -> None:
            from daq_runner.sim import RedisServer

            self.redis = RedisServer(port=port, data_dir=data).start()

        self.pending = threading.Timer(back_after, start)
        self.pending.start()

    def settle(self) -> None:
        """Redis up again (a restart pending is waited for), the simulator clean for the next round."""
        if self.pending is not None:
            self.pending.join()
            self.pending = None
        wait_until(lambda: self.redis.running)
        wait_until(self._resettable, timeout=20)
        # A lock a round could not release (its Redis down just then) would expire; the next
        # daq-run process would take it over at once (its holder's process ended). Rounds share
        # one process, so it goes now.
        client = redis.Redis.from_url(self.sim.redis_url)
        try:
            client.delete(LOCK_KEY)
        finally:
            client.close()
        self.lost_history = False

    def _resettable(self) -> bool:
        try:
            self.sim.core.reset()
            return True
        except Exception:  # Redis not answering yet
            return False

    def close(self) -> None:
        if self.pending is not None:
            self.pending.join()
        self.sim.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def daq(tmp_path_factory) -> Any:
    daq = Daq(tmp_path_factory.mktemp("fault-rounds"))
    yield daq
    daq.close()


def _faults(daq: Daq, **armed: Any) -> None:
    requests.post(daq.sim.url + "/sim/faults", json=armed, timeout=15)


def _outside_config(daq: Daq, rng: random.Random) -> None:
    StdDaqClient(daq.sim.url, retries=0).update_config({"bit_depth": rng.choice([8, 16, 32])}, timeout=5)


FAULTS: Dict[str, Callable[[Daq, random.Random], None]] = {
    "outside config": _outside_config,
    "outside stop": lambda daq, rng: requests.post(daq.sim.url + "/writer/stop", json={}, timeout=15),
    "kill writer": lambda daq, rng: _faults(daq, kill_writer=True),
    "restart server": lambda daq, rng: _faults(daq, restart_server=True),
    "writer unknown": lambda daq, rng: _faults(daq, writer_state="UNKNOWN"),
    "redis back with its data": lambda daq, rng: daq.kill_redis(rng.uniform(0.3, 2.0), keep_data=True),
    "redis back empty": lambda daq, rng: daq.kill_redis(rng.uniform(0.3, 2.0), keep_data=False),
    "failed acquisition": lambda daq, rng: _faults(daq, fail_next="ERROR: detector lost"),
    "stalled detector": lambda daq, rng: _faults(daq, stall_s=rng.uniform(0.3, 1.5)),
    "rest outage": lambda daq, rng: _faults(daq, unavailable_s=rng.uniform(0.3, 1.5)),
}
TRIGGERS = (events.STEP_STARTED, events.PROGRESS, events.STEP_FINISHED)


def _batch(rng: random.Random, root: str) -> str:
    lines = [
        "version: 1",
        f"defaults: {{timeout: 8, retries: {rng.randint(0, 1)}, on_error: {rng.choice(['continue', 'abort'])}}}",
        "steps:",
    ]
    for point in range(rng.randint(2, 4)):
        lines.append(f"  - config: {{bit_depth: {rng.choice([8, 16, 32])}}}")
        background = rng.random() < 0.2
        lines.append(f"  - write: {{output_file: '{root}/w{point}.h5', n_images: {rng.randint(5, 60)}{', wait: false' if background else ''}}}")
        if background:
            lines.append("  - wait: {state: READY, timeout: 8}")
    return "\n".join(lines) + "\n"


class _Chaos:
    """A consumer that injects each planned fault once, at its event (in the runner's thread, so
    that "between two steps" means it)."""

    def __init__(self, daq: Daq, rng: random.Random, plan: List[Tuple[str, int, str]]) -> None:
        self.daq, self.rng, self.plan, self.done = daq, rng, list(plan), []

    def __call__(self, event: events.Event) -> None:
        for planned in list(self.plan):
            kind, step, fault = planned
            if event.kind == kind and event.step == step:
                self.plan.remove(planned)
                try:
                    FAULTS[fault](self.daq, self.rng)
                except Exception as exc:  # a fault the DAQ's state refused (Redis down...): noted
                    fault += f" (not applied: {type(exc).__name__})"
                self.done.append(f"{fault} at {kind} of step {step}")


def _dtype(path: str) -> Tuple[str, int]:
    with h5py.File(path) as handle:
        (group,) = handle.values()
        return str(group["data"].dtype), int(group["data"].shape[0])


def _check(daq: Daq, report: Any, batch: Any, chaos: _Chaos, configs: Dict[str, dict], statuses: List[dict]) -> List[str]:
    """The invariants of one round; the list of what does not hold."""
    problems: List[str] = []
    data = report.to_dict()
    steps = sorted(data["steps"], key=lambda s: s["index"])
    summary = data["summary"]
    if data["status"] not in ("passed", "failed") or (data["status"] == "failed") != bool(data.get("reason")):
        problems.append(f"status {data['status']!r} with reason {data.get('reason')!r}")
    if "runner error" in (data.get("reason") or ""):
        problems.append(f"internal error: {data['reason']}")
    if (data["status"] == "passed") != all(s["status"] == "passed" for s in steps):
        problems.append(f"status {data['status']} but steps {[s['status'] for s in steps]}")
    counted = sum(summary[k] for k in ("passed", "failed", "skipped", "interrupted", "pending"))
    if counted != len(batch.steps) or summary["pending"] or len(steps) != len(batch.steps):
        problems.append(f"summary {summary} for {len(batch.steps)} steps ({len(steps)} records)")
    invocation = data["batch"]["invocation"]
    set_by_run: Optional[int] = None
    for step in steps:
        if step["kind"] == "config" and step["status"] == "passed":
            set_by_run = step["params"]["config"]["bit_depth"]
        if step["kind"] != "write":
            continue
        if step["status"] == "passed":
            dtype, n = _dtype(step["output_file"])
            named = configs.get(step.get("config_id") or "")
            if n != step["n_images"]:
                problems.append(f"step {step['index']}: {n} images in the file, {step['n_images']} asked")
            if named is None:
                if not daq.lost_history:
                    problems.append(f"step {step['index']}: passed naming config {step.get('config_id')!r}, not in daq:config")
            elif DTYPES[named["bit_depth"]] != dtype:
                problems.append(f"step {step['index']}: {dtype} file, its config {step['config_id']} says {named['bit_depth']}")
            if named is not None and set_by_run is not None and named["bit_depth"] != set_by_run:
                problems.append(f"step {step['index']}: ran with bit_depth {named['bit_depth']}, the run set {set_by_run}")
            if (step.get("daq_log") or {}).get("info", {}).get("run_id") not in (None, step["run_id"]):
                problems.append(f"step {step['index']}: logged {step['daq_log']['info']['run_id']}, recorded {step['run_id']}")
        if not daq.lost_history:
            seen = {s["acquisition"]["info"]["run_id"] for s in statuses if ((s.get("acquisition") or {}).get("info") or {}).get("output_file") == step["output_file"]}
            ours = set(run_ids_of(invocation, step["index"], 2 * (step["attempts"] + 2)))
            allowed = step["attempts"] + sum("started again" in r.get("reason", "") for r in step["recoveries"])
            if seen - ours or len(seen) > allowed:
                problems.append(f"step {step['index']}: acquisitions {sorted(seen)} for {step['attempts']} attempt(s)")
    status = StdDaqClient(daq.sim.url, retries=100, retry_deadline=10, sleep=time.sleep).get_status()  # past a REST outage
    ours = {rid for s in steps for rid in run_ids_of(invocation, s["index"], 2 * (s["attempts"] + 2))}
    if status["state"] == "WRITING" and (status["acquisition"] or {}).get("info", {}).get("run_id") in ours:
        if not daq.sim.core.armed_faults().get("wedge_driver"):
            problems.append("an acquisition of the run is still running")
        elif data["status"] == "passed":
            problems.append("passed with the driver wedged under its acquisition")
    return problems


def _round(daq: Daq, seed: int, tmp: Path) -> Tuple[List[str], str]:
    rng = random.Random(seed)
    folder = tmp / f"seed{seed}"
    folder.mkdir()
    text = _batch(rng, str(folder))
    batch = load_batch_text(text)
    plan = []
    for _ in range(rng.randint(1, 3)):
        step = rng.choice(batch.steps)
        # An acquisition under way only where one is; a config from outside weighs most (it
        # broke the verdict most often).
        trigger = rng.choice(TRIGGERS if step.kind == "write" else (events.STEP_STARTED, events.STEP_FINISHED))
        fault = rng.choices(sorted(FAULTS), [3 if name == "outside config" else 1 for name in sorted(FAULTS)])[0]
        plan.append((trigger, step.index, fault))
    chaos = _Chaos(daq, rng, plan)
    runner = Runner(daq.sim.url, daq.sim.redis_url, [chaos], retry_delay=0.05, outage_s=10)
    report = runner.run(batch)
    if daq.pending is not None:
        daq.pending.join()
    wait_until(lambda: daq.redis.running)
    client = redis.Redis.from_url(daq.sim.redis_url)
    try:
        wait_until(lambda: _answers(client), timeout=10)
        configs = {entry_id.decode(): json.loads(fields[b"json"]) for entry_id, fields in client.xrange("daq:config")}
        lock_left, lock_ttl_ms = client.get(LOCK_KEY), client.pttl(LOCK_KEY)
    finally:
        client.close()
    statuses = stream_entries(daq.sim.redis_url, "daq:status")
    problems = _check(daq, report, batch, chaos, configs, statuses)
    if lock_left is not None:
        # Only a Redis that was down as the run released its lock may keep it, and then only
        # until its expiry (a runner of this host takes over a dead holder's lock at once).
        holder = json.loads(lock_left)
        if not (daq.lost_history and holder.get("run") == report.run_id and 0 < lock_ttl_ms <= LOCK_TTL_S * 1000):
            problems.append(f"the runner lock is still held: {holder} (expires in {lock_ttl_ms} ms)")
    story = f"seed {seed}: {report.status} ({report.reason}); faults: {chaos.done or 'none applied'}\n{text}"
    return problems, story


def _answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.mark.timeout(60 + 20 * ROUNDS)
def test_random_fault_rounds_keep_the_verdict(daq, tmp_path):
    """Over many seeds, whatever faults hit a config-then-write batch, the run's verdict holds
    (see the module docstring for the invariants)."""
    failures = []
    for seed in range(FIRST_SEED, FIRST_SEED + ROUNDS):
        try:
            problems, story = _round(daq, seed, tmp_path)
        finally:
            daq.settle()
        print(story.splitlines()[0])  # pytest -s shows what each round met
        if problems:
            failures.append(f"{story}problems: {problems}")
    assert not failures, "\n\n".join(failures)
