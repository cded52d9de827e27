"""``daq-run``: run a batch file against a Standard DAQ (or the embedded simulator).

Exit codes: 0 every step passed; 1 a step failed; 2 invalid batch file or usage; 3 DAQ
unreachable before the first step, or for longer than ``--max-outage`` during the run;
4 another runner holds this DAQ's lock; 130 / 143 interrupted by SIGINT / SIGTERM
(SIGHUP counts as SIGTERM).

Configuration precedence: flags > environment (``STD_DAQ_API_URL``, ``STD_DAQ_REDIS_URL``)
> the batch's ``daq:`` > the profile chosen with ``--daq`` > defaults. Heavy modules are
imported only when needed, so ``--help`` and ``--version`` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_LOCKED"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_LOCKED = 0, 1, 2, 3, 4
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 143}
DEFAULT_PROFILES = os.path.join("config", "daqs.yaml")
MAX_SECONDS = 7 * 24 * 3600.0


class _Usage(Exception):
    """A usage problem: one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    from ._cli import OneLineArgumentParser
    from .api import DEFAULT_OUTAGE_S
    from ._version import __version__

    parser = OneLineArgumentParser(
        prog="daq-run",
        description="Run a YAML batch of Standard DAQ steps unattended and write a report.",
        epilog="Exit codes: 0 passed, 1 a step failed, 2 invalid batch/usage, 3 DAQ unreachable (at start or beyond --max-outage), "
        "4 DAQ locked by another runner, 130/143 interrupted.",
    )
    parser.add_argument("batch", nargs="?", help="batch file (YAML)")
    parser.add_argument("--version", action="version", version=f"daq-run {__version__}")
    target = parser.add_argument_group("DAQ")
    target.add_argument("--url", help="REST base URL (default $STD_DAQ_API_URL, the batch's daq.url, the profile, http://127.0.0.1:5000)")
    target.add_argument("--redis", help="Redis URL of the DAQ (default $STD_DAQ_REDIS_URL, the batch, the profile, the REST host on 6379)")
    target.add_argument("--no-redis", action="store_true", help="do not use Redis: poll REST, take no lock")
    target.add_argument("--daq", metavar="NAME", help="a named DAQ from the profile file")
    target.add_argument("--profiles", metavar="FILE", help=f"profile file (default $DAQ_RUNNER_PROFILES or {DEFAULT_PROFILES})")
    target.add_argument("--sim", action="store_true", help="start the embedded simulated DAQ and run against it")
    target.add_argument("--sim-frame-rate", type=float, default=1000.0, metavar="HZ", help="frame rate of --sim (default 1000)")
    run = parser.add_argument_group("run")
    run.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="set a template variable (repeatable)")
    run.add_argument("--report", metavar="PATH", help="JSON report (default: <batch>-<date>-<time>.report.json next to the batch)")
    run.add_argument("--junit", metavar="PATH", help="also write JUnit XML")
    run.add_argument("--resume", metavar="REPORT", help="re-run only the steps that did not pass in REPORT")
    run.add_argument("--force", action="store_true", help="with --resume: accept a batch file that changed")
    run.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS", help="wait for another runner's lock")
    run.add_argument(
        "--max-outage",
        type=float,
        default=DEFAULT_OUTAGE_S,
        metavar="SECONDS",
        help=f"ride out an unreachable DAQ this long; beyond it the run stops, exit 3 (default {DEFAULT_OUTAGE_S:g})",
    )
    run.add_argument("--no-require-log", action="store_true", help="pass writes the DAQ did not log")
    modes = parser.add_argument_group("modes")
    modes.add_argument("--dry-run", action="store_true", help="validate, print the plan, read the DAQ state; change nothing")
    modes.add_argument("--validate", action="store_true", help="only validate the batch file")
    modes.add_argument("--schema", action="store_true", help="print the JSON Schema of batch files")
    out = parser.add_argument_group("output")
    out.add_argument("--quiet", "-q", action="store_true", help="print nothing if every step passed, a summary otherwise")
    out.add_argument("--log-format", choices=("console", "json"), help="console view or JSON log lines (default: console on a terminal)")
    out.add_argument("-v", "--verbose", action="store_true", help="more detail")
    return parser


def _configure_logging(verbose: bool) -> None:
    """Structured JSON log lines on stderr: the only place logging is configured."""
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=False, default=str),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        cache_logger_on_first_use=True,
    )


def _load_profiles(path: Optional[str], name: Optional[str]) -> Dict[str, str]:
    import yaml

    chosen = path or os.environ.get("DAQ_RUNNER_PROFILES") or DEFAULT_PROFILES
    if name is None:
        return {}
    try:
        with open(chosen, encoding="utf-8") as handle:
            profiles = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise _Usage(f"cannot read profile file {chosen}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise _Usage(f"profile file {chosen} is not valid YAML: {str(exc).splitlines()[0]}") from None
    daqs = profiles.get("daqs") if isinstance(profiles, dict) else None
    if not isinstance(daqs, dict) or name not in daqs or not isinstance(daqs[name], dict):
        known = ", ".join(sorted(daqs)) if isinstance(daqs, dict) else "none"
        raise _Usage(f"no DAQ named {name!r} in {chosen} (known: {known})")
    return {k: str(v) for k, v in daqs[name].items() if k in ("url", "redis")}


def _check_url(url: str, schemes: Sequence[str], what: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _Usage(f"{what} {url!r} is not a valid URL") from None
    if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "unix"):
        raise _Usage(f"{what} {url!r} must be a {'/'.join(schemes)} URL with a host")
    return url


def _resolve_daq(args: argparse.Namespace, batch: Any) -> Dict[str, Optional[str]]:
    from urllib.parse import urlsplit

    from . import api

    profile = _load_profiles(args.profiles, args.daq)
    url = args.url or os.environ.get("STD_DAQ_API_URL") or batch.daq.get("url") or profile.get("url") or api.DEFAULT_URL
    redis = args.redis or os.environ.get("STD_DAQ_REDIS_URL") or batch.daq.get("redis") or profile.get("redis")
    _check_url(url, ("http", "https"), "DAQ URL")
    if redis is None:
        redis = f"redis://{urlsplit(url).hostname}:{api.DEFAULT_REDIS_PORT}/0"
    else:
        _check_url(redis, ("redis", "rediss", "unix"), "Redis URL")
    if args.no_redis:
        redis = None
    return {"url": url, "redis": redis}


def _default_report_path(batch_path: str) -> str:
    import time

    stem = os.path.splitext(os.path.basename(batch_path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(batch_path)), f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.report.json")


def _check_writable(path: str, what: str) -> None:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise _Usage(f"{what} folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise _Usage(f"{what} folder {folder} is not writable")


def _previous_results(args: argparse.Namespace, batch: Any) -> Dict[int, dict]:
    from .report import load_report

    try:
        old = load_report(args.resume)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    if old["batch"].get("sha256") != batch.sha256 and not args.force:
        raise _Usage(f"{args.batch} changed since {args.resume} was written (sha256 differs); use --force to resume anyway")
    passed = {s["index"]: s for s in old["steps"] if isinstance(s, dict) and s.get("status") == "passed" and isinstance(s.get("index"), int)}
    protected = {s.get("output_file"): s["index"] for s in passed.values() if s.get("output_file")}
    for step in batch.steps:
        if step.index not in passed and getattr(step, "output_file", None) in protected:
            raise _Usage(
                f"step {step.index} would rewrite {step.output_file}, written by step {protected[step.output_file]} "
                "that passed in the earlier run"
            )
    return passed


def _print_plan(batch: Any, daq: Dict[str, Optional[str]]) -> None:
    from ._redis import redact_url

    print(f"batch {batch.name}: {len(batch.steps)} steps, DAQ {redact_url(daq['url'])}, redis {redact_url(daq['redis'])}")
    width = len(str(len(batch.steps)))
    for step in batch.steps:
        extra = f" timeout={step.timeout:g}s retries={step.retries} on_error={step.on_error}"
        print(f"  {step.index:>{width}}. {step.kind:<6} {step.name}{extra}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``daq-run``; returns the exit code."""
    try:
        return _main(argv)
    except _Usage as exc:
        print(f"daq-run: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. the report cannot be written (disk full)
        print(f"daq-run: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C before the run began: nothing was started
        print("daq-run: interrupted before the run began", file=sys.stderr)
        return EXIT_SIGNAL["SIGINT"]
    except Exception as exc:
        # An unforeseen failure: one line for cron mail; -v shows the traceback. Any
        # acquisition the runner started has been stopped by then (Runner.run's cleanup).
        if any(arg in ("-v", "--verbose") for arg in (sys.argv[1:] if argv is None else argv)):
            raise
        print(f"daq-run: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)", file=sys.stderr)
        return EXIT_FAILED


def _main(argv: Optional[Sequence[str]]) -> int:
    args = _parser().parse_args(argv)
    if args.schema:
        import json

        from .schema import batch_schema

        print(json.dumps(batch_schema(), indent=2))
        return EXIT_OK
    if not args.batch:
        raise _Usage("a batch file is required")
    if not 0 <= args.wait_lock <= MAX_SECONDS:
        raise _Usage(f"--wait-lock must be between 0 and {MAX_SECONDS:g} seconds")
    if not 0 < args.max_outage <= MAX_SECONDS:
        raise _Usage(f"--max-outage must be more than 0 and at most {MAX_SECONDS:g} seconds")

    from .batch import load_batch, parse_var
    from .exceptions import BatchValidationError

    try:
        variables = dict(parse_var(v) for v in args.var)
        batch = load_batch(args.batch, vars=variables)
    except BatchValidationError as exc:
        print(f"daq-run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.validate:
        print(f"{args.batch}: valid, {len(batch.steps)} steps")
        return EXIT_OK
    if args.sim and (args.url or args.daq):
        raise _Usage("--sim runs against the embedded simulator; do not combine it with --url or --daq")
    daq = _resolve_daq(args, batch)
    previous = _previous_results(args, batch) if args.resume else {}
    report_path = args.report or _default_report_path(args.batch)
    if not args.dry_run:
        _check_writable(report_path, "report")
        if args.junit:
            _check_writable(args.junit, "JUnit")

    sim = None
    if args.sim:
        sim = _start_sim(args, daq)
    try:
        return _run(args, batch, daq, previous, report_path)
    finally:
        if sim is not None:
            sim.stop()


def _start_sim(args: argparse.Namespace, daq: Dict[str, Optional[str]]) -> Any:
    if not 0 < args.sim_frame_rate <= 100_000:
        raise _Usage("--sim-frame-rate must be in (0, 100000]")
    # A missing sim extra or Redis-compatible server is a set-up problem of this machine
    # with a one-command fix (exit 2), not an unreachable DAQ (exit 3).
    from .sim._extra import SimExtraMissing, require_sim_extra

    try:
        require_sim_extra()
    except SimExtraMissing as exc:
        raise _Usage(f"--sim: {exc}") from None
    from .sim import SimSettings, SimulatedDaq
    from .sim.redis_server import RedisServerNotFound

    try:
        sim = SimulatedDaq(settings=SimSettings(frame_rate=args.sim_frame_rate)).start()
    except RedisServerNotFound as exc:
        raise _Usage(f"--sim: {exc}") from None
    except Exception as exc:
        print(f"daq-run: error: cannot start the simulator: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_UNREACHABLE) from None
    daq["url"] = sim.url
    daq["redis"] = None if args.no_redis else sim.redis_url
    return sim


def _run(args: argparse.Namespace, batch: Any, daq: Dict[str, Optional[str]], previous: Dict[int, dict], report_path: str) -> int:
    import signal

    from ._redis import redact_url
    from .console import ConsoleView, LogEvents, QuietSummary
    from .exceptions import DaqRunnerError, LockHeldError
    from .report import JsonReportFile, JUnitFile
    from .runner import Runner

    if args.dry_run:
        _print_plan(batch, daq)
        return _show_state(daq)

    log_format = args.log_format or ("console" if sys.stdout.isatty() else "json")
    consumers: List[Any] = [JsonReportFile(report_path)]
    if args.junit:
        consumers.append(JUnitFile(args.junit))
    if args.quiet:
        consumers.append(QuietSummary())
    elif log_format == "console":
        consumers.append(ConsoleView(verbose=args.verbose))
    else:
        _configure_logging(args.verbose)
        consumers.append(LogEvents())
    runner = Runner(
        url=daq["url"],
        redis_url=daq["redis"],
        consumers=consumers,
        require_log=not args.no_require_log,
        lock=daq["redis"] is not None,
        lock_wait=args.wait_lock,
        outage_s=args.max_outage,
    )
    try:
        runner.check_reachable()
    except DaqRunnerError as exc:
        print(f"daq-run: DAQ unreachable at {redact_url(daq['url'])}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE

    received: List[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if received and name == "SIGINT":
            os._exit(EXIT_SIGNAL["SIGINT"])  # second Ctrl-C: at once; the report on disk is valid JSON
        received.append(name)
        runner.request_stop(name)

    # Restored afterwards, so that main() can also be called from Python (a test, a script).
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        report = runner.run(batch, previous)
    except LockHeldError as exc:
        print(f"daq-run: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    if not args.quiet and log_format == "console":
        print(f"report: {report_path}")
    if report.status == "passed":
        return EXIT_OK
    if report.status == "interrupted":
        return EXIT_SIGNAL.get(received[0] if received else "SIGINT", 130)
    if report.daq_unreachable:
        print(f"daq-run: {report.reason} at {redact_url(daq['url'])}; the rest of the run was skipped", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def _show_state(daq: Dict[str, Optional[str]]) -> int:
    import json

    from ._redis import redact_url
    from .client import StdDaqClient
    from .exceptions import DaqRunnerError

    client = StdDaqClient(daq["url"], timeout=3.0, retries=1)
    try:
        state = {
            "writer": client.get_status(),
            "deployment": client.get_deployment_status(),
            "config": client.get_config(),
        }
    except DaqRunnerError as exc:
        print(f"daq-run: DAQ unreachable at {redact_url(daq['url'])}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print("DAQ state (nothing was changed):")
    print(json.dumps(state, indent=2))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
