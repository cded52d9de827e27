"""daq-runner benchmarks, side by side against one daq-sim in one run.

    python bench/bench_all.py [--steps 200] [--quick]

Prints a Markdown report (paste into BENCHMARKS.md). Needs the test extra (for the
original std_daq_client 1.3.5). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from daq_runner import Runner, StdDaqClient
from daq_runner.batch import load_batch_text
from daq_runner.report import JsonReportFile
from daq_runner.sim import SimSettings, SimulatedDaq

FRAME_RATE = 20_000.0


def one_image_batch(n: int, root: str) -> str:
    values = ", ".join(str(i) for i in range(n))
    return f"version: 1\ndefaults: {{overwrite: true}}\nsteps:\n  - for: {{i: [{values}]}}\n    steps:\n      - write: {{output_file: '{root}/b_{{i}}.h5', n_images: 1}}\n"


def per_step(sim: SimulatedDaq, n: int, root: str) -> dict:
    """Per-step cost of n one-image writes: daq-run with Redis, without Redis, a polling script."""
    from std_daq_client.client import StdDaqClient as Original

    out = {}
    batch = load_batch_text(one_image_batch(n, root))
    for label, redis_url in (("daq-run, Redis", sim.redis_url), ("daq-run, no Redis", None)):
        start = time.perf_counter()
        report = Runner(sim.url, redis_url, lock=False).run(batch)
        assert report.status == "passed", report.failed_steps[:1]
        out[label] = (time.perf_counter() - start) / n
    original = Original(sim.url)
    start = time.perf_counter()
    for i in range(n):
        original.start_writer_async({"output_file": f"{root}/p_{i}.h5", "n_images": 1})
        while True:
            time.sleep(0.1)
            if original.get_status()["state"] == "READY":
                break
    out["polling script (std_daq_client 1.3.5, 0.1 s)"] = (time.perf_counter() - start) / n
    return out


def reaction(sim: SimulatedDaq, n: int, root: str) -> list:
    """Time from the FINISHED status entry being published to the runner's next request."""
    core = sim.core
    published, reacted = [], []
    original_publish = core._publish_status
    original_status = core.status

    def publish() -> None:
        original_publish()
        acquisition = core._acquisition or {}
        if acquisition.get("state") == "FINISHED" and core._writer_state.value == "READY":
            published.append(time.perf_counter())

    def status() -> dict:
        if len(published) > len(reacted):
            reacted.append(time.perf_counter())
        return original_status()

    core._publish_status, core.status = publish, status
    try:
        batch = load_batch_text(one_image_batch(n, root))
        Runner(sim.url, sim.redis_url, lock=False).run(batch)
    finally:
        core._publish_status, core.status = original_publish, original_status
    pairs = list(zip(published, reacted))
    return [(b - a) * 1000 for a, b in pairs]


def round_trip(sim: SimulatedDaq, n: int) -> dict:
    from std_daq_client.client import StdDaqClient as Original

    clients = {"daq-runner StdDaqClient": StdDaqClient(sim.url), "std_daq_client 1.3.5": Original(sim.url)}
    samples: dict = {label: [] for label in clients}
    for client in clients.values():
        client.get_status()
    # Alternating blocks: each client alone on the server within a block (as in use: the
    # original's per-call connection teardown must not land in our timings or vice versa),
    # and drift in the machine's load spread over both instead of hitting whichever ran second.
    blocks = 10
    for _ in range(blocks):
        for label, client in clients.items():
            for _ in range(max(n // blocks, 1)):
                start = time.perf_counter()
                client.get_status()
                samples[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) * 1000 for label, values in samples.items()}


# Peak memory of the measured process itself. ru_maxrss is not: Linux carries the high-water
# mark of the forking process across exec, so every child reported the benchmark's own peak.
PEAK_RSS_MB = (
    "def peak_rss_mb():\n"
    "    with open('/proc/self/status') as status:\n"
    "        for line in status:\n"
    "            if line.startswith('VmHWM:'):\n"
    "                return int(line.split()[1]) / 1024\n"
    "    import resource\n"
    "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
)


def scale(root: str) -> dict:
    """10,000 steps: load time and peak memory (fresh process), report cost per step."""
    code = (
        "import time, sys\n"
        + PEAK_RSS_MB
        + "from daq_runner.batch import load_batch_text\n"
        f"text = open({str(Path(root) / 'big.yaml')!r}).read()\n"
        "t = time.perf_counter(); b = load_batch_text(text); dt = time.perf_counter() - t\n"
        "print(len(b.steps), dt, peak_rss_mb())\n"
    )
    values = ", ".join(str(i) for i in range(100))
    Path(root, "big.yaml").write_text(
        f"version: 1\nsteps:\n  - for: {{a: [{values}], b: [{values}]}}\n    steps:\n      - write: {{output_file: '/data/x_{{a}}_{{b}}.h5', n_images: 10}}\n"
    )
    n, load_s, rss_mb = subprocess.check_output([sys.executable, "-c", code], text=True).split()
    # Report writing: cost of one step_finished at the start and at the end of 10,000 steps.
    from daq_runner import events

    batch = load_batch_text(Path(root, "big.yaml").read_text())
    writer = JsonReportFile(str(Path(root, "report.json")))
    writer(events.Event(events.RUN_STARTED, "r", data={"batch": {"name": "b", "path": "p", "sha256": "s"}, "daq": {"url": "u", "redis": None}, "n_steps": len(batch.steps)}))
    costs = []
    for step in batch.steps:
        record = {"index": step.index, "name": step.name, "kind": step.kind, "params": step.params, "status": "passed", "attempts": 1,
                  "started_at": time.time(), "finished_at": time.time(), "duration_s": 0.01, "error": None, "run_id": 1,
                  "output_file": step.params["output_file"], "n_images": 10, "acquisition": {"state": "FINISHED"}, "daq_log": {"state": "FINISHED"}}
        start = time.perf_counter()
        writer(events.Event(events.STEP_FINISHED, "r", step.index, step.name, record))
        costs.append(time.perf_counter() - start)
    start = time.perf_counter()
    writer(events.Event(events.RUN_FINISHED, "r", data={"status": "passed"}))
    final = time.perf_counter() - start
    # Peak memory of a whole daq-run of 10,000 steps, runner and simulator in separate processes.
    values = ", ".join(str(i) for i in range(100))
    Path(root, "run10k.yaml").write_text(
        f"version: 1\nsteps:\n  - for: {{a: [{values}], b: [{values}]}}\n    steps:\n      - check: {{writer: READY}}\n"
    )
    scripts = Path(sysconfig.get_path("scripts"))
    sim_proc = subprocess.Popen([str(scripts / "daq-sim"), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        ready = sim_proc.stdout.readline()
        rest, redis_url = ready.split("rest=")[1].split()[0], ready.split("redis=")[1].split()[0]
        run_code = (
            "import subprocess, sys, time\n"
            + PEAK_RSS_MB
            + "from daq_runner.run_cli import main\n"
            "t = time.perf_counter()\n"
            f"code = main([{str(Path(root, 'run10k.yaml'))!r}, '--url', {rest!r}, '--redis', {redis_url!r}, '--quiet', '--report', {str(Path(root, 'run10k.json'))!r}])\n"
            "print(code, time.perf_counter() - t, peak_rss_mb())\n"
        )
        code, run_s, run_rss = subprocess.check_output([sys.executable, "-c", run_code], text=True).split()[-3:]
    finally:
        sim_proc.terminate()
        sim_proc.wait()
    return {
        "run_exit": int(code),
        "run_s": float(run_s),
        "run_peak_rss_mb": float(run_rss),
        "steps": int(n),
        "load_s": float(load_s),
        "peak_rss_mb": float(rss_mb),
        "report_first_100_us": statistics.median(costs[:100]) * 1e6,
        "report_last_100_us": statistics.median(costs[-100:]) * 1e6,
        "report_final_rewrite_ms": final * 1000,
    }


def startup() -> dict:
    exe = str(Path(sysconfig.get_path("scripts")) / "daq-run")
    out = {}
    for flag in ("--help", "--version"):
        samples = []
        for _ in range(10):
            start = time.perf_counter()
            subprocess.run([exe, flag], stdout=subprocess.DEVNULL, check=True)
            samples.append(time.perf_counter() - start)
        out[flag] = statistics.median(samples)
    return out


def sim_limit(sim: SimulatedDaq, root: str) -> float:
    """Images per second the simulator sustains writing 256x256x16-bit images."""
    sim.core.settings.frame_rate = 1_000_000
    client = StdDaqClient(sim.url)
    start = time.perf_counter()
    status = client.start_writer_sync({"output_file": f"{root}/limit.h5", "n_images": 20000})
    elapsed = time.perf_counter() - start
    sim.core.settings.frame_rate = FRAME_RATE
    return status["acquisition"]["stats"]["n_write_completed"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200, help="one-image writes per variant")
    parser.add_argument("--quick", action="store_true", help="small numbers, to check the script runs")
    args = parser.parse_args()
    n = 5 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as root, SimulatedDaq(settings=SimSettings(frame_rate=FRAME_RATE, heartbeat_s=1.0)) as sim:
        steps = per_step(sim, n, root)
        latencies = reaction(sim, n, root)
        trip = round_trip(sim, 50 if args.quick else 1000)
        big = scale(root) if not args.quick else {}
        start_times = startup()
        limit = sim_limit(sim, root) if not args.quick else 0.0
    print(f"## Run of {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}. Command: `python bench/bench_all.py --steps {n}`\n")
    print("### Per-step cost (one-image writes, simulator at %d Hz)\n" % FRAME_RATE)
    print("| variant | ms per step |\n|---|---|")
    for label, cost in steps.items():
        print(f"| {label} | {cost * 1000:.2f} |")
    poll = steps["polling script (std_daq_client 1.3.5, 0.1 s)"]
    print(f"\nRatio polling / daq-run with Redis: **{poll / steps['daq-run, Redis']:.1f}x**; polling / daq-run without Redis: {poll / steps['daq-run, no Redis']:.1f}x\n")
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print("### Reaction latency (FINISHED published on daq:status -> runner's next request)\n")
    print(f"{len(latencies)} samples: median **{statistics.median(latencies):.2f} ms**, p99 **{p99:.2f} ms**, max {latencies[-1]:.2f} ms\n")
    print("### get_status round trip (median)\n")
    print("| client | ms |\n|---|---|")
    for label, ms in trip.items():
        print(f"| {label} | {ms:.3f} |")
    values = list(trip.values())
    print(f"\nOriginal / ours: **{values[1] / values[0]:.2f}x**\n")
    if big:
        print("### Scale: a batch of 10,000 steps\n")
        print(f"- load and validate: **{big['load_s']:.3f} s**; peak memory of that process: **{big['peak_rss_mb']:.0f} MB**")
        print(f"- a whole `daq-run` of 10,000 check steps: exit {big['run_exit']}, {big['run_s']:.1f} s, peak memory **{big['run_peak_rss_mb']:.0f} MB**")
        print(f"- report cost per finished step: first 100 steps {big['report_first_100_us']:.1f} us, last 100 steps {big['report_last_100_us']:.1f} us (median); final atomic rewrite {big['report_final_rewrite_ms']:.0f} ms\n")
    print("### Start-up (median of 10)\n")
    for flag, seconds in start_times.items():
        print(f"- `daq-run {flag}`: **{seconds * 1000:.0f} ms**")
    if limit:
        print(f"\n### Simulator limit\n\nWriting 256x256 16-bit images to HDF5 as fast as it can: **{limit:,.0f} images/s** (the benchmarks use {FRAME_RATE:,.0f} Hz).")
    print(f"\n(peak RSS of the benchmark process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
