"""daq-runner benchmarks, side by side in one run against one daq-sim.

    python bench/bench_all.py [--steps 100] [--reps 9] [--scale 100000] [--only SECTIONS] [--quick]

Prints a Markdown report (paste into BENCHMARKS.md). Needs the test extra (the original
std_daq_client 1.3.5) and the sim extra. Not part of the test suite; ``--quick`` runs every
section with small numbers (tests/test_bench_smoke.py).

One ``daq-sim`` process serves every measurement: its own ``redis-server``, a detector at
20,000 Hz (a one-image acquisition ends within a millisecond), the writer driver's 0.1 s
polling turned off (``--driver-poll-s 0``: a real server adds at least 0.1 s to every start
and stop, which would hide our own costs) and each ``daq:status`` entry stored twice, as the
real server's two status loggers do (the stale copies are part of what the runner handles).
It runs in a process of its own (started through this script with ``--serve-sim``, which adds
a probe for the reaction latency), so that the measured code does not share its interpreter.

What is measured (medians of interleaved repetitions, so that drift in the machine's load
falls on every variant alike):

- the floor: a hand-written minimal loop, per one-image write: our client's
  ``start_writer_async``, then ``XREAD`` on ``daq:status`` until our run_id ends;
- daq-run's marginal cost per step: (run of N+100 one-image writes - run of N) / 100, through
  ``Runner`` in this process and through the installed ``daq-run`` command, without the file
  checks (the floor opens no file); and through ``Runner`` with them (on by default: each
  file opened with h5py after its write), to give their own cost;
- start-up: wall time of a one-step ``daq-run`` (start, lock, one write, report, exit);
- a 60-step batch: the polling script on std_daq_client 1.3.5 (``start_writer_async``, then
  ``get_status`` every 0.1 s) against daq-run, with and without start-up;
- reaction latency: FINISHED published on ``daq:status`` -> the runner's next request reaching
  the simulator, both read on the simulator's clock;
- ``get_status`` round trip, ours and the original's, in alternating blocks;
- scale: a batch of 100,000 steps validated (time, peak memory), and a run of 100,000
  ``check`` steps (peak memory, and memory every 10 % of the steps);
- ``daq-run --help`` / ``--version``;
- a config -> write sweep (bit depth 8, 16, 32, ...; 10 images per write; no ``settle``, no
  retries) on a daq-sim of its own with its default, real timings: the services restart 1 s
  after each deployment reported, for 1 s; ``daq:stat`` every second with zeros while they
  are down (the real server), or silent then (``stats_while_down="silence"``), or no restart
  at all (``restart_s`` 0, which shows no sign: the runner waits out the window). The time per
  point is set against the restart itself (1 s + 1 s).

Peak memory is ``VmHWM`` of the measured process itself (``ru_maxrss`` is not: Linux carries
the forking process's high-water mark across ``exec``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

FRAME_RATE = 20_000
STATUS_STREAM = "daq:status"
SECTIONS = "steps,startup,batch,latency,round-trip,scale,sweep"
SCRIPTS = Path(sysconfig.get_path("scripts"))
DAQ_RUN = str(SCRIPTS / "daq-run")


# -- the simulator, in a process of its own, with a probe -------------------------------------------


def serve_sim(probe_path: str, argv: List[str]) -> int:
    """``--serve-sim``: daq-sim's own main, plus a probe for the reaction latency.

    The probe appends to ``probe_path``: ``P <t>`` when a status saying our acquisition
    FINISHED and the writer READY has been added to ``daq:status``, and ``R <t> <path>`` when
    an HTTP request reaches the simulator (before it is handled). ``t`` is
    ``time.perf_counter()``, the system-wide monotonic clock on Linux.
    """
    from daq_runner.sim import app as sim_app
    from daq_runner.sim import cli
    from daq_runner.sim.daq import SimulatedDaqCore

    probe = open(probe_path, "a", buffering=1)
    publish = SimulatedDaqCore._publish_status

    def probed_publish(self: SimulatedDaqCore) -> None:
        publish(self)
        acquisition = self._acquisition or {}
        if acquisition.get("state") == "FINISHED" and self._writer_state.value == "READY":
            probe.write(f"P {time.perf_counter()!r}\n")

    create_app = sim_app.create_app

    def probed_app(core: SimulatedDaqCore):
        app = create_app(core)

        async def asgi(scope, receive, send):
            if scope.get("type") == "http":
                probe.write(f"R {time.perf_counter()!r} {scope.get('path')}\n")
            await app(scope, receive, send)

        return asgi

    SimulatedDaqCore._publish_status = probed_publish  # type: ignore[method-assign]
    sim_app.create_app = probed_app  # type: ignore[assignment]
    return cli.main(argv)


class Sim:
    """The daq-sim process of the benchmark."""

    def __init__(self, root: str) -> None:
        self.probe = str(Path(root, "probe.txt"))
        args = ["--port", "0", "--frame-rate", str(FRAME_RATE), "--driver-poll-s", "0", "--start-state", "READY"]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-sim", self.probe, "--", *args], stdout=subprocess.PIPE, text=True
        )
        ready = self.proc.stdout.readline()
        if "rest=" not in ready:
            self.proc.kill()
            raise SystemExit(f"daq-sim did not start: {ready!r}")
        self.url = ready.split("rest=")[1].split()[0]
        self.redis_url = ready.split("redis=")[1].split()[0]

    def probe_lines(self) -> List[Tuple[str, float]]:
        out = []
        with open(self.probe) as lines:
            for line in lines:
                parts = line.split()
                if len(parts) >= 2:
                    out.append((parts[0], float(parts[1])))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- batches ---------------------------------------------------------------------------------------------


def write_batch(n: int, root: str, tag: str) -> str:
    values = ", ".join(str(i) for i in range(n))
    return (
        "version: 1\ndefaults: {overwrite: true}\nsteps:\n"
        f"  - for: {{i: [{values}]}}\n    steps:\n      - write: {{output_file: '{root}/{tag}_{{i}}.h5', n_images: 1}}\n"
    )


def sweep_batch(n: int, step: str) -> str:
    """``n`` steps (a multiple of 100) as one two-variable sweep."""
    a = ", ".join(str(i) for i in range(n // 100))
    b = ", ".join(str(i) for i in range(100))
    return f"version: 1\nsteps:\n  - for: {{a: [{a}], b: [{b}]}}\n    steps:\n      - {step}\n"


class Files:
    """A fresh folder per measured run, removed afterwards (thousands of HDF5 files otherwise)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.n = 0

    def folder(self) -> str:
        self.n += 1
        path = Path(self.root, f"w{self.n}")
        path.mkdir()
        return str(path)

    @staticmethod
    def drop(folder: str) -> None:
        shutil.rmtree(folder, ignore_errors=True)


# -- the contenders --------------------------------------------------------------------------------------


def floor_loop(sim: Sim, n: int, folder: str) -> float:
    """Seconds per one-image write of the minimal loop: write_async, XREAD until our run_id ends."""
    from daq_runner import StdDaqClient
    from daq_runner._redis import connect

    client = StdDaqClient(sim.url)
    redis_client = connect(sim.redis_url)
    try:
        start = time.perf_counter()
        for i in range(n):
            newest = redis_client.xrevrange(STATUS_STREAM, count=1)
            cursor = newest[0][0] if newest else b"0-0"
            run_id = time.time_ns()
            client.start_writer_async({"output_file": f"{folder}/f_{i}.h5", "n_images": 1, "run_id": run_id})
            ended = None
            while ended is None:
                reply = redis_client.xread({STATUS_STREAM: cursor}, count=100, block=5000)
                if not reply:
                    raise RuntimeError("floor: no status within 5 s")
                for entry_id, fields in reply[0][1]:
                    cursor = entry_id
                    acquisition = json.loads(fields[b"json"]).get("acquisition") or {}
                    if (acquisition.get("info") or {}).get("run_id") == run_id and acquisition.get("state") in ("FINISHED", "FAILED"):
                        ended = acquisition["state"]
                        break
            if ended != "FINISHED":
                raise RuntimeError(f"floor: acquisition {run_id} ended {ended}")
        return (time.perf_counter() - start) / n
    finally:
        client.close()
        redis_client.close()


def runner_run(sim: Sim, n: int, folder: str, verify: bool = False) -> float:
    """Seconds of ``Runner.run`` (in this process) for ``n`` one-image writes (``verify``: with the file checks)."""
    from daq_runner import Runner
    from daq_runner.batch import load_batch_text

    batch = load_batch_text(write_batch(n, folder, "r"))
    start = time.perf_counter()
    report = Runner(sim.url, sim.redis_url, verify=verify).run(batch)
    elapsed = time.perf_counter() - start
    if report.status != "passed":
        raise RuntimeError(f"Runner: {report.reason}")
    return elapsed


def runner_checked_run(sim: Sim, n: int, folder: str) -> float:
    return runner_run(sim, n, folder, verify=True)


def daq_run_command(sim: Sim, batch_path: str, report_path: str) -> float:
    """Wall seconds of the installed ``daq-run`` on ``batch_path`` (start to exit), without the file checks."""
    command = [DAQ_RUN, batch_path, "--url", sim.url, "--redis", sim.redis_url, "--quiet", "--report", report_path, "--overwrite-report", "--no-verify"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"daq-run exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


def command_run(sim: Sim, n: int, folder: str) -> float:
    path = Path(folder, "batch.yaml")
    path.write_text(write_batch(n, folder, "c"))
    return daq_run_command(sim, str(path), str(Path(folder, "report.json")))


POLLING_SCRIPT = """
import sys, time
from std_daq_client import StdDaqClient
client = StdDaqClient(url_base=sys.argv[1])
start = time.perf_counter()
for i in range(int(sys.argv[3])):
    client.start_writer_async({"output_file": f"{sys.argv[2]}/p_{i}.h5", "n_images": 1})
    while True:
        time.sleep(0.1)
        if client.get_status()["state"] == "READY":
            break
print(time.perf_counter() - start)
"""


def polling_script(sim: Sim, n: int, folder: str) -> Tuple[float, float]:
    """(wall seconds with start-up, seconds of the loop alone) of the polling script on std_daq_client 1.3.5."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", POLLING_SCRIPT, sim.url, folder, str(n)], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, float(out.stdout.split()[-1])


# -- measurements ------------------------------------------------------------------------------------------


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def per_step(sim: Sim, files: Files, n: int, reps: int) -> Dict[str, List[float]]:
    """Floor per write, and daq-run's marginal cost per step (Runner and command), interleaved."""
    samples: Dict[str, List[float]] = {"floor": [], "runner": [], "command": [], "checked": [], "runner_avg": [], "command_avg": [], "checked_avg": []}

    def measured(what: Callable[[Sim, int, str], float], count: int) -> float:
        folder = files.folder()
        try:
            return what(sim, count, folder)
        finally:
            files.drop(folder)

    measured(floor_loop, 20)  # warm-up: connections, the simulator's first files
    measured(runner_run, 20)
    for _ in range(reps):
        samples["floor"].append(measured(floor_loop, 100))
        small, large = measured(runner_run, n), measured(runner_run, n + 100)
        samples["runner"].append((large - small) / 100)
        samples["runner_avg"].append(large / (n + 100))
        small, large = measured(command_run, n), measured(command_run, n + 100)
        samples["command"].append((large - small) / 100)
        samples["command_avg"].append(large / (n + 100))
        small, large = measured(runner_checked_run, n), measured(runner_checked_run, n + 100)
        samples["checked"].append((large - small) / 100)
        samples["checked_avg"].append(large / (n + 100))
    return samples


def startup(sim: Sim, files: Files, reps: int) -> Dict[str, float]:
    """Wall time of a one-step daq-run, and of --help / --version."""
    out: Dict[str, float] = {}
    folder = files.folder()
    try:
        path = Path(folder, "one.yaml")
        path.write_text(write_batch(1, folder, "one"))
        daq_run_command(sim, str(path), str(Path(folder, "r.json")))  # warm the page cache
        out["one_step"] = median([daq_run_command(sim, str(path), str(Path(folder, "r.json"))) for _ in range(reps)])
    finally:
        files.drop(folder)
    for flag in ("--help", "--version"):
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            subprocess.run([DAQ_RUN, flag], stdout=subprocess.DEVNULL, check=True)
            samples.append(time.perf_counter() - start)
        out[flag] = median(samples)
    return out


def batch_of(k: int, sim: Sim, files: Files, reps: int) -> Dict[str, float]:
    """k one-image writes: the polling script against daq-run, with and without start-up."""
    samples: Dict[str, List[float]] = {"poll_wall": [], "poll_loop": [], "run_wall": [], "run_loop": []}
    for _ in range(reps):
        folder = files.folder()
        try:
            wall, loop = polling_script(sim, k, folder)
        finally:
            files.drop(folder)
        samples["poll_wall"].append(wall)
        samples["poll_loop"].append(loop)
        folder = files.folder()
        try:
            samples["run_wall"].append(command_run(sim, k, folder))
        finally:
            files.drop(folder)
        folder = files.folder()
        try:
            samples["run_loop"].append(runner_run(sim, k, folder))
        finally:
            files.drop(folder)
    return {key: median(values) for key, values in samples.items()}


def reaction(sim: Sim, files: Files, n: int) -> List[float]:
    """Milliseconds from FINISHED published on daq:status to the runner's next request (simulator's clock)."""
    folder = files.folder()
    try:
        since = time.perf_counter()
        runner_run(sim, n, folder)
        until = time.perf_counter()
    finally:
        files.drop(folder)
    lines = [(kind, t) for kind, t in sim.probe_lines() if since <= t <= until]
    latencies, published = [], None
    for kind, t in lines:
        if kind == "P":
            published = t
        elif kind == "R" and published is not None:
            latencies.append((t - published) * 1000)
            published = None
    return latencies


def round_trip(sim: Sim, n: int) -> Dict[str, float]:
    """Median get_status round trip, ours and the original's, in alternating blocks of n/10 calls."""
    from std_daq_client.client import StdDaqClient as Original

    from daq_runner import StdDaqClient

    clients = {"daq-runner StdDaqClient": StdDaqClient(sim.url), "std_daq_client 1.3.5": Original(sim.url)}
    samples: Dict[str, List[float]] = {label: [] for label in clients}
    for client in clients.values():
        client.get_status()
    # Each client alone on the server within a block (the original's per-call connection
    # teardown must not land in our timings), drift spread over both.
    for _ in range(10):
        for label, client in clients.items():
            for _ in range(max(n // 10, 1)):
                start = time.perf_counter()
                client.get_status()
                samples[label].append(time.perf_counter() - start)
    return {label: median(values) * 1000 for label, values in samples.items()}


PROC_STATUS = """
def memory_mb(key):
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024
    return float('nan')
"""

VALIDATE = PROC_STATUS + """
import sys, time
start = time.perf_counter()
from daq_runner.run_cli import main
code = main(['--validate', sys.argv[1]])
print(code, time.perf_counter() - start, memory_mb('VmHWM'))
"""

# The measured run is daq-run's own main(); the only addition is a look at the process's
# memory every tenth of the steps (one counter per finished step).
RUN_MEMORY = PROC_STATUS + """
import json, sys, time
import daq_runner.report as report
n_steps, marks, seen = int(sys.argv[5]), [], [0]
every = max(n_steps // 10, 1)
finished = report.JsonReportFile.__call__
def counted(self, event):
    finished(self, event)
    if event.kind == 'step_finished':
        seen[0] += 1
        if seen[0] % every == 0:
            marks.append((seen[0], memory_mb('VmRSS')))
report.JsonReportFile.__call__ = counted
from daq_runner.run_cli import main
start = time.perf_counter()
code = main([sys.argv[1], '--url', sys.argv[2], '--redis', sys.argv[3], '--quiet', '--report', sys.argv[4]])
print(json.dumps({'exit': code, 's': time.perf_counter() - start, 'peak_mb': memory_mb('VmHWM'), 'marks': marks}))
"""


def scale(sim: Sim, root: str, n: int) -> Dict[str, object]:
    """A batch of n writes validated; a run of n check steps: time, peak memory, memory along the run."""
    big = Path(root, "big.yaml")
    big.write_text(sweep_batch(n, "write: {output_file: '/data/e1/x_{a}_{b}.h5', n_images: 10}"))
    out = subprocess.run([sys.executable, "-c", VALIDATE, str(big)], capture_output=True, text=True, check=True)
    code, seconds, peak = out.stdout.split()[-3:]
    result: Dict[str, object] = {"validate_exit": int(code), "validate_s": float(seconds), "validate_peak_mb": float(peak)}
    checks = Path(root, "checks.yaml")
    checks.write_text(sweep_batch(n, "check: {writer: READY}"))
    out = subprocess.run(
        [sys.executable, "-c", RUN_MEMORY, str(checks), sim.url, sim.redis_url, str(Path(root, "checks.json")), str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    run = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(run_exit=run["exit"], run_s=run["s"], run_peak_mb=run["peak_mb"], marks=run["marks"])
    return result


def config_sweep(points: int, variants: List[Tuple[str, Dict[str, object]]]) -> List[Dict[str, object]]:
    """Per variant of the simulator: a config -> write sweep of ``points`` points through ``Runner``;
    wall time per point, and the config step, the restart seen, the write, as medians."""
    from daq_runner import Runner
    from daq_runner.batch import load_batch_text
    from daq_runner.sim import SimSettings, SimulatedDaq

    out = []
    for label, settings in variants:
        depths = [(8, 16, 32)[i % 3] for i in range(points)]
        with tempfile.TemporaryDirectory() as folder, SimulatedDaq(settings=SimSettings(start_state="READY", **settings)) as sim:  # type: ignore[arg-type]
            batch = load_batch_text(_sweep_text(depths, folder))
            start = time.perf_counter()
            report = Runner(sim.url, sim.redis_url).run(batch)
            wall = time.perf_counter() - start
            restart = sim.core.settings.restart_delay_s + sim.core.settings.restart_s if sim.core.settings.restart_s > 0 else None
        configs = [s for s in report.steps if s["kind"] == "config"]
        writes = [s for s in report.steps if s["kind"] == "write"]
        out.append({
            "label": label,
            "status": report.status,
            "per_point": wall / points,
            "config": median([s["duration_s"] for s in configs]),
            "back": median([s["restart"]["back_after_s"] or 0.0 for s in configs]),
            "seen": sum(1 for s in configs if s["restart"]["seen"]),
            "write": median([s["duration_s"] for s in writes]),
            "restart": restart,
            "points": points,
        })
    return out


def _sweep_text(depths: List[int], folder: str) -> str:
    steps = "".join(
        f"  - config: {{bit_depth: {depth}}}\n  - write: {{output_file: '{folder}/p{i}.h5', n_images: 10}}\n" for i, depth in enumerate(depths)
    )
    return "version: 1\nsteps:\n" + steps


def compile_package() -> bool:
    """Byte-compile the installed package, as ``pip install`` does (an editable install is not)."""
    import compileall

    import daq_runner

    try:
        return bool(compileall.compile_dir(os.path.dirname(daq_runner.__file__), quiet=1))
    except OSError:
        return False


# -- report ---------------------------------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-sim":
        return serve_sim(sys.argv[2], sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="N of the marginal cost: runs of N and N+100 writes")
    parser.add_argument("--reps", type=int, default=9, help="repetitions of the per-step timings")
    parser.add_argument("--scale", type=int, default=100_000, help="steps of the scale runs (a multiple of 100)")
    parser.add_argument("--quick", action="store_true", help="small numbers, to check that the script runs")
    parser.add_argument("--only", default=SECTIONS, help=f"comma-separated sections to run (default: all of {SECTIONS})")
    args = parser.parse_args()
    only = set(args.only.split(","))
    n, reps, n_scale = (5, 1, 1000) if args.quick else (args.steps, args.reps, args.scale)
    compiled = compile_package()
    with tempfile.TemporaryDirectory() as root:
        sim = Sim(root)
        files = Files(root)
        try:
            steps = per_step(sim, files, n, reps) if "steps" in only else {}
            start = startup(sim, files, 3 if args.quick else 11) if "startup" in only else {}
            k = 5 if args.quick else 60
            sixty = batch_of(k, sim, files, 1 if args.quick else 5) if "batch" in only else {}
            latencies = reaction(sim, files, 20 if args.quick else 300) if "latency" in only else []
            trip = round_trip(sim, 50 if args.quick else 1000) if "round-trip" in only else {}
            big = scale(sim, root, n_scale) if "scale" in only else {}
        finally:
            sim.stop()
    variants: List[Tuple[str, Dict[str, object]]] = [("restart, zeros in daq:stat (the real server)", {})]
    if not args.quick:
        variants += [("restart, daq:stat silent", {"stats_while_down": "silence"}), ("no restart (restart_s 0): no sign", {"restart_s": 0.0})]
    swept = config_sweep(2 if args.quick else 9, variants) if "sweep" in only else []

    command = "python bench/bench_all.py" + (" --quick" if args.quick else f" --steps {n} --reps {reps} --scale {n_scale}")
    print(f"## Run of {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}.")
    print(f"Command: `{command}`. One daq-sim process: {FRAME_RATE:,} Hz, `--driver-poll-s 0`, duplicated `daq:status` entries kept.")
    print(f"Byte-compiled package: {'yes' if compiled else 'no'}.\n")

    if steps:
        print_steps(steps, n, reps)
    if start:
        print_startup(start, 3 if args.quick else 11)
    if sixty:
        print_batch(sixty, k, 1 if args.quick else 5)
    if "latency" in only:
        print_latency(latencies)
    if trip:
        print_round_trip(trip)
    if big:
        print_scale(big, n_scale)
    if swept:
        print_sweep(swept)
    return 0


def print_sweep(swept: List[Dict[str, object]]) -> None:
    print(f"### Config -> write sweep, {swept[0]['points']} points, daq-sim's real timings (medians per point)\n")
    print("| daq-sim | run | per point | config step | services back after SUCCESS | restart seen | write step | the DAQ's own restart |\n|---|---|---|---|---|---|---|---|")
    for row in swept:
        restart = "none" if row["restart"] is None else f"{row['restart']:.1f} s"
        print(
            f"| {row['label']} | {row['status']} | **{row['per_point']:.2f} s** | {row['config']:.2f} s | {row['back']:.2f} s | "
            f"{row['seen']}/{row['points']} | {row['write']:.2f} s | {restart} |"
        )
    print()


def print_steps(steps: Dict[str, List[float]], n: int, reps: int) -> None:
    floor = median(steps["floor"])
    print(f"### Per-step cost (one-image writes; medians of {reps} interleaved repetitions)\n")
    print("| variant | ms per step | / floor | median of the repetitions' own ratios |\n|---|---|---|---|")
    print(f"| floor: write_async + XREAD until our run_id ends (100 writes) | {floor * 1000:.2f} | 1.00 | |")
    for key, label in (
        ("runner", "`Runner` in-process, `verify=False`"), ("command", "`daq-run` command, `--no-verify`"),
        ("checked", "`Runner` in-process, each file checked (the default)"),
    ):
        marginal = median(steps[key])
        paired = median([m / f for m, f in zip(steps[key], steps["floor"])])
        print(f"| {label}, marginal: (N={n + 100} - N={n}) / 100 | {marginal * 1000:.2f} | **{marginal / floor:.2f}x** | {paired:.2f}x |")
        average = median(steps[key + "_avg"])
        print(f"| {label}, average over N={n + 100} (fixed costs included) | {average * 1000:.2f} | {average / floor:.2f}x | |")
    print("\nAll samples (ms): " + "; ".join(f"{k} " + " ".join(f"{v * 1000:.2f}" for v in vs) for k, vs in steps.items()) + "\n")


def print_startup(start: Dict[str, float], reps: int) -> None:
    print("### Start-up\n")
    print(f"- one-step `daq-run` (start, lock, one write, report, exit), median of {reps}: **{start['one_step'] * 1000:.0f} ms**")
    for flag in ("--help", "--version"):
        print(f"- `daq-run {flag}`: **{start[flag] * 1000:.0f} ms**")
    print()


def print_batch(sixty: Dict[str, float], k: int, reps: int) -> None:
    print(f"### A {k}-step batch of one-image writes (median of {reps})\n")
    print("| | polling script, std_daq_client 1.3.5 (0.1 s) | daq-run | ratio |\n|---|---|---|---|")
    print(f"| with start-up (wall of the process) | {sixty['poll_wall']:.2f} s | {sixty['run_wall']:.3f} s | **{sixty['poll_wall'] / sixty['run_wall']:.1f}x** |")
    print(f"| without start-up (the loop; `Runner.run`) | {sixty['poll_loop']:.2f} s | {sixty['run_loop']:.3f} s | {sixty['poll_loop'] / sixty['run_loop']:.1f}x |")
    print()


def print_latency(latencies: List[float]) -> None:
    latencies = sorted(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
    print("### Reaction latency (FINISHED published on daq:status -> runner's next request)\n")
    print(f"{len(latencies)} samples: median **{median(latencies):.2f} ms**, p99 **{p99:.2f} ms**, max {latencies[-1] if latencies else float('nan'):.2f} ms\n")


def print_round_trip(trip: Dict[str, float]) -> None:
    print("### get_status round trip (median, alternating blocks)\n")
    print("| client | ms |\n|---|---|")
    for label, ms in trip.items():
        print(f"| {label} | {ms:.3f} |")
    values = list(trip.values())
    print(f"\nOriginal / ours: **{values[1] / values[0]:.2f}x**\n")


def print_scale(big: Dict[str, object], n_scale: int) -> None:
    print(f"### Scale: {n_scale:,} steps\n")
    print(f"- `daq-run --validate` of {n_scale:,} write steps: exit {big['validate_exit']}, **{big['validate_s']:.2f} s**, peak memory **{big['validate_peak_mb']:.0f} MB**")
    print(f"- `daq-run` of {n_scale:,} check steps: exit {big['run_exit']}, {big['run_s']:.1f} s, peak memory **{big['run_peak_mb']:.0f} MB**")
    marks = big["marks"]
    print("- memory (RSS) along that run, by steps finished: " + ", ".join(f"{k:,}: {mb:.0f} MB" for k, mb in marks))  # type: ignore[union-attr]


if __name__ == "__main__":
    sys.exit(main())
