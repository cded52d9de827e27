"""``daq-run``: run a batch file against a Standard DAQ (or the embedded simulator).

Exit codes: 0 every step passed; 1 a step failed (or the report could not be written
completely); 2 invalid batch file or usage; 3 DAQ unreachable before the first step, or for
longer than ``--max-outage`` during the run; 4 another runner holds this DAQ's lock, the lock
could not be taken, or it was lost during the run; 130 / 143 interrupted by SIGINT / SIGTERM
(SIGHUP counts as SIGTERM).

One DAQ per run: the REST URL and the Redis URL come as a pair from one source, in this order:
``--url``/``--redis`` > ``--daq NAME`` (a profile) > the environment (``STD_DAQ_API_URL``,
``STD_DAQ_REDIS_URL``) > the batch's ``daq:`` > ``http://127.0.0.1:5000``. A source that names
only the REST URL gets the Redis on the same host (port 6379); a Redis URL from one source and a
REST URL from another are refused. Heavy modules are imported only when needed, so ``--help``
and ``--version`` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

__all__ = ["main", "script"]

from .exit_codes import RunExit, signal_exit
DEFAULT_PROFILES = os.path.join("config", "daqs.yaml")
MAX_SECONDS = 7 * 24 * 3600.0
# The embedded simulator's detector for --sim: small images, so that the demo writes a few MB.
SIM_IMAGE_SIZE = 48


class _Usage(Exception):
    """A usage problem: one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    from ._cli import OneLineArgumentParser
    from ._version import __version__
    from .protocol import DEFAULT_OUTAGE_S

    parser = OneLineArgumentParser(
        prog="daq-run",
        description="Run a YAML batch of Standard DAQ steps unattended and write a report. "
        "'daq-run show REPORT' prints a report for people (--html for a page).",
        epilog=f"Exit codes: {RunExit.describe()}.",
    )
    parser.add_argument("batch", nargs="?", help="batch file (YAML)")
    parser.add_argument("--version", action="version", version=f"daq-run {__version__}")
    target = parser.add_argument_group("DAQ (one source gives both URLs)")
    target.add_argument("--url", help="REST base URL of the DAQ (default: --daq, $STD_DAQ_API_URL, the batch's daq.url, http://127.0.0.1:5000)")
    target.add_argument(
        "--redis",
        help="Redis URL of the DAQ (default: from the same source as the REST URL: --daq, $STD_DAQ_REDIS_URL with "
        "$STD_DAQ_API_URL, the batch's daq.redis; else the REST host on port 6379). $STD_DAQ_REDIS_PASSWORD gives "
        "its password without putting it on the command line",
    )
    target.add_argument("--no-redis", action="store_true", help="do not use Redis: poll REST, take no lock")
    target.add_argument("--daq", metavar="NAME", help="a named DAQ (REST and Redis URLs) from the profile file")
    target.add_argument("--profiles", metavar="FILE", help=f"profile file for --daq (default $DAQ_RUNNER_PROFILES or {DEFAULT_PROFILES})")
    target.add_argument("--sim", action="store_true", help="start the embedded simulated DAQ and run against it (needs daq-runner[sim])")
    target.add_argument("--sim-frame-rate", type=float, default=None, metavar="HZ", help="frame rate of --sim (default 1000)")
    run = parser.add_argument_group("run")
    run.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="set a template variable (repeatable; the value is text)")
    run.add_argument("--report", metavar="PATH", help="JSON report (default: <batch>-<date>-<time>-<run>.report.json next to the batch)")
    run.add_argument("--junit", metavar="PATH", help="also write JUnit XML")
    run.add_argument("--resume", metavar="REPORT", help="re-run only the steps that did not pass in REPORT")
    run.add_argument("--force", action="store_true", help="with --resume: accept a batch file that changed since REPORT")
    run.add_argument("--overwrite", action="store_true", help="let writes replace existing files (as 'overwrite: true' on every step)")
    run.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS", help="wait this long for another runner's lock (default 0)")
    run.add_argument("--no-lock", action="store_true", help="run without the runner lock (not recommended)")
    run.add_argument(
        "--lock-ttl", type=float, default=30.0, metavar="SECONDS",
        help="expiry of the runner lock, renewed every third of it: how long a crashed runner blocks the DAQ (default 30)",
    )
    run.add_argument(
        "--max-outage",
        type=float,
        default=DEFAULT_OUTAGE_S,
        metavar="SECONDS",
        help=f"ride out an unreachable DAQ this long; beyond it the run stops, exit 3 (default {DEFAULT_OUTAGE_S:g})",
    )
    run.add_argument("--no-require-log", action="store_true", help="pass writes the DAQ did not log")
    modes = parser.add_argument_group("modes").add_mutually_exclusive_group()
    modes.add_argument("--dry-run", action="store_true", help="validate, print the plan (and with --resume what is kept), read the DAQ state; change nothing")
    modes.add_argument("--validate", action="store_true", help="only validate the batch file")
    modes.add_argument("--schema", action="store_true", help="print the JSON Schema of batch files")
    out = parser.add_argument_group("output")
    out.add_argument("--quiet", "-q", action="store_true", help="print nothing if every step passed, a summary otherwise")
    out.add_argument("--log-format", choices=("console", "json"), help="console view or JSON log lines on stderr (default: console on a terminal)")
    out.add_argument("-v", "--verbose", action="store_true", help="more detail (and tracebacks of internal errors)")
    return parser


def _configure_logging(verbose: bool) -> None:
    """Structured JSON log lines on stderr: the only place logging is configured."""
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=False, default=str, ensure_ascii=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        cache_logger_on_first_use=True,
    )


# -- where the DAQ is: one source for both URLs -------------------------------------------------


class _Source(NamedTuple):
    name: str
    url: Optional[str]
    redis: Optional[str]


def _load_profile(path: Optional[str], name: str) -> _Source:
    import yaml

    chosen = path or os.environ.get("DAQ_RUNNER_PROFILES") or DEFAULT_PROFILES
    try:
        with open(chosen, encoding="utf-8") as handle:
            profiles = yaml.safe_load(handle.read(1024 * 1024)) or {}
    except OSError as exc:
        raise _Usage(f"cannot read profile file {chosen}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _Usage(f"profile file {chosen} is not valid YAML: {str(exc).splitlines()[0]}") from None
    daqs = profiles.get("daqs") if isinstance(profiles, dict) else None
    if not isinstance(daqs, dict) or name not in daqs or not isinstance(daqs[name], dict):
        known = ", ".join(sorted(map(str, daqs))) if isinstance(daqs, dict) else "none"
        raise _Usage(f"no DAQ named {name!r} in {chosen} (known: {known})")
    entry = daqs[name]
    if not isinstance(entry.get("url"), str):
        raise _Usage(f"DAQ {name!r} in {chosen} has no url")
    redis = entry.get("redis")
    return _Source(f"--daq {name} ({chosen})", entry["url"], redis if isinstance(redis, str) else None)


def _check_url(url: str, schemes: Sequence[str], what: str) -> str:
    from ._text import check_url_shape

    try:
        return check_url_shape(url, schemes, what)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _resolve_daq(args: argparse.Namespace, batch: Any) -> Dict[str, Optional[str]]:
    """The REST and Redis URLs of the run and where each came from (a pair from one source)."""
    from . import protocol
    from ._redis import check_redis_url, default_redis_url, with_password

    if args.daq and args.url:
        raise _Usage("--daq and --url both name a DAQ; give one of them")
    levels: List[_Source] = [_Source("--url/--redis", args.url, args.redis)]
    if args.daq:
        levels.append(_load_profile(args.profiles, args.daq))
    env = os.environ
    levels.append(_Source("environment (STD_DAQ_API_URL/STD_DAQ_REDIS_URL)", env.get("STD_DAQ_API_URL") or None, env.get("STD_DAQ_REDIS_URL") or None))
    levels.append(_Source(f"the batch's daq: ({batch.path})", batch.daq.get("url"), batch.daq.get("redis")))
    top = next((level for level in levels if level.url or level.redis), None)
    url_source = redis_source = "default"
    url, redis = protocol.DEFAULT_URL, None
    if top is not None and top.url:
        url, url_source = top.url, top.name
        if top.redis:
            redis, redis_source = top.redis, top.name
    elif top is not None:  # a Redis URL without a REST URL at the same level
        lower = next((level for level in levels[levels.index(top) + 1 :] if level.url), None)
        if lower is not None:
            raise _Usage(
                f"the Redis URL comes from {top.name} but the REST URL would come from {lower.name}: "
                "give both from one source (e.g. --url and --redis) so that they belong to one DAQ"
            )
        redis, redis_source = top.redis, top.name
    _check_url(url, ("http", "https"), "DAQ URL")
    from .client import check_url

    try:
        check_url(url)  # the client's own rules too (no query or fragment: endpoints are appended)
    except ValueError as exc:
        raise _Usage(f"DAQ URL: {exc}") from None
    redis = with_password(redis, os.environ.get("STD_DAQ_REDIS_PASSWORD"))
    if args.no_redis:
        redis, redis_source = None, "--no-redis"
    elif redis is None:
        redis, redis_source = default_redis_url(url), f"derived from the REST URL (its host, port {protocol.DEFAULT_REDIS_PORT})"
    else:
        try:
            check_redis_url(redis)
        except ValueError as exc:
            raise _Usage(str(exc)) from None
    return {"url": url, "redis": redis, "url_source": url_source, "redis_source": redis_source}


# -- resume -----------------------------------------------------------------------------------------


def _earlier_report(path: str) -> dict:
    from .resume import ResumeError, read_report

    try:
        return read_report(path)
    except ResumeError as exc:
        raise _Usage(str(exc)) from None


def _refuse_a_live_runs_report(path: str, what: str = "--report") -> None:
    """``--report`` (or ``--junit``) naming the report of a run still going on this host
    (another DAQ, the same cron line twice): the first run's report would be lost."""
    import socket

    from .lock import process_alive
    from .report import load_report

    if not os.path.isfile(path):
        return
    try:
        other = load_report(path)
    except ValueError:
        return  # not a report: replaced, as any file
    pid = other.get("pid")
    if other.get("status") == "running" and other.get("host") == socket.gethostname() and pid != os.getpid() and process_alive(pid):
        raise _Usage(f"{what} {path} is the report of a run still going on (pid {pid}); give another path")


def _previous_results(args: argparse.Namespace, batch: Any, old: dict) -> Dict[str, List[dict]]:
    """The passed steps of ``--resume REPORT``, keyed by step identity; refuses another batch's report."""
    from .resume import ResumeError, previous_results

    try:
        # --sim names a fresh output folder of its own each time
        return previous_results(
            old, batch, report_path=args.resume, batch_path=args.batch, force=args.force, ignore_vars=("root",) if args.sim else ()
        )
    except ResumeError as exc:
        raise _Usage(str(exc)) from None


def _print_plan(batch: Any, daq: Dict[str, Optional[str]], previous: Optional[Dict[str, List[dict]]]) -> None:
    from ._redis import redact_url
    from ._text import scrub

    secrets = batch.secrets

    def out(text: str) -> None:  # every line of the plan, credentials of variables masked
        _say(scrub(text, secrets) if secrets else text)

    out(f"batch {batch.name}: {len(batch.steps)} steps")
    out(f"DAQ {redact_url(daq['url'])} (from {daq['url_source']}), Redis {redact_url(daq['redis'])} (from {daq['redis_source']})")
    left = {identity: len(records) for identity, records in (previous or {}).items()}
    width = len(str(len(batch.steps)))
    for step in batch.steps:
        what = ""
        if previous is not None:
            if left.get(step.identity):
                left[step.identity] -= 1
                what = "keep  "
            else:
                what = "run   "
        extra = f" timeout={step.timeout:g}s retries={step.retries} on_error={step.on_error}"
        out(f"  {step.index:>{width}}. {what}{step.kind:<6} {step.name}{extra}")


# -- main --------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``daq-run``; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list[:1] == ["show"]:
            from .show import main as show_main

            return show_main(args_list[1:])
        return _main(args_list)
    except _Usage as exc:
        _warn(f"daq-run: error: {exc}")
        return RunExit.USAGE
    except KeyboardInterrupt:  # Ctrl-C before the run began: nothing was started
        _warn("daq-run: interrupted before the run began")
        return RunExit.SIGINT
    except BrokenPipeError:
        _silence(sys.stdout)
        return RunExit.FAILED
    except Exception as exc:
        # An unforeseen failure: one line for cron mail; -v shows the traceback. Any
        # acquisition the runner started has been stopped by then (Runner.run's cleanup).
        if any(arg in ("-v", "--verbose") for arg in args_list):
            raise
        _warn(f"daq-run: internal error: {type(exc).__name__}: {_one_line(exc)} (run with -v for the traceback)")
        return RunExit.FAILED


def script() -> None:
    """Entry point of the installed ``daq-run`` command: :func:`main`, then a quick exit.

    Once ``main`` has returned, everything is done: the acquisitions the run started are
    stopped, the lock released, the report and JUnit files written, synced and closed, the
    simulator of ``--sim`` stopped. What is left is the interpreter's own shutdown, which
    tears down every imported module one by one: about 40 ms with requests and redis-py
    loaded, a sixth of a one-step run. So the command flushes stdout and stderr and ends
    the process with ``os._exit``. ``main`` called from Python returns as usual; ``--help``
    and ``--version`` (argparse's ``SystemExit``) exit the usual way.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, a closed stream
            pass
    os._exit(code)


def _one_line(exc: BaseException) -> str:
    from ._text import redact_text

    return " ".join(redact_text(str(exc)).split())[:500]


def _silence(stream: Any) -> None:
    # Python flushes the stream at exit; a closed pipe would print a second error there.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _say(text: str) -> None:
    """Print a line on stdout; a reader that went away (``| head``) does not end the run."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        _silence(sys.stdout)


def _log_line(event: str, **fields: Any) -> None:
    """One more JSON log line (``--log-format json``); a broken stderr is ignored."""
    import structlog

    try:
        structlog.get_logger("daq_runner").info(event, **fields)
    except (OSError, ValueError):
        _silence(sys.stderr)


def _warn(text: str) -> None:
    """Print a line on stderr; a broken or full stderr does not end the run (the report is the record)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        _silence(sys.stderr)


def _check_options(args: argparse.Namespace) -> None:
    if args.schema:
        return
    if not args.batch:
        raise _Usage("a batch file is required")
    if not 0 <= args.wait_lock <= MAX_SECONDS:
        raise _Usage(f"--wait-lock must be between 0 and {MAX_SECONDS:g} seconds")
    if not 0 < args.max_outage <= MAX_SECONDS:
        raise _Usage(f"--max-outage must be more than 0 and at most {MAX_SECONDS:g} seconds")
    if not 1.0 <= args.lock_ttl <= 3600:
        raise _Usage("--lock-ttl must be between 1 and 3600 seconds")
    if args.force and not args.resume:
        raise _Usage("--force only goes with --resume")
    if args.no_redis and args.redis:
        raise _Usage("--no-redis and --redis contradict each other")
    if args.no_lock and args.wait_lock:
        raise _Usage("--no-lock and --wait-lock contradict each other")
    if args.quiet and args.log_format:
        raise _Usage("--quiet and --log-format contradict each other")
    if args.sim and (args.url or args.daq or args.redis):
        raise _Usage("--sim runs against the embedded simulator; do not combine it with --url, --redis or --daq")
    if args.sim_frame_rate is not None and not args.sim:
        raise _Usage("--sim-frame-rate only goes with --sim")
    if args.sim_frame_rate is not None and not 0 < args.sim_frame_rate <= 100_000:
        raise _Usage("--sim-frame-rate must be in (0, 100000]")


def _load(args: argparse.Namespace, extra: Optional[Dict[str, str]] = None, earlier: Optional[dict] = None) -> Any:
    """The batch, validated; ``earlier`` (a report being resumed) gives ``{run}`` and the time again."""
    from .batch import load_batch, parse_var
    from .exceptions import BatchValidationError

    from .resume import same_moment

    # The same {run}, {date}, {time}, {datetime} as the run being resumed: the same file names.
    same = same_moment(earlier) if earlier is not None else {}
    try:
        variables = dict(parse_var(v) for v in args.var)
        variables.update(extra or {})
        return load_batch(args.batch, vars=variables, **same)
    except BatchValidationError as exc:
        for line in exc.lines():
            _warn(f"daq-run: {line}")
        raise SystemExit(RunExit.USAGE) from None


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.schema:
        import json

        from .schema import batch_schema

        _say(json.dumps(batch_schema(), indent=2))
        return RunExit.PASSED
    _check_options(args)
    earlier = _earlier_report(args.resume) if args.resume else None
    try:
        batch = _load(args, earlier=earlier)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.validate:
        _say(f"{args.batch}: valid, {len(batch.steps)} steps")
        return RunExit.PASSED
    output_root = None
    if args.sim and "root" in batch.vars and not any(v.partition("=")[0].strip() == "root" for v in args.var):
        # The demo respects the machine: a fresh folder of its own, named at the start and the
        # end (a dry run only names one).
        import tempfile

        if args.dry_run:
            output_root = os.path.join(tempfile.gettempdir(), "daq-run-sim-NEW")
        else:
            output_root = tempfile.mkdtemp(prefix="daq-run-sim-")
        try:
            batch = _load(args, {"root": output_root}, earlier)
        except SystemExit as exc:
            _remove_if_empty(output_root)
            return int(exc.code or 0)
    daq = _resolve_daq(args, batch) if not args.sim else {"url": None, "redis": None, "url_source": "--sim", "redis_source": "--sim"}
    previous = _previous_results(args, batch, earlier) if earlier is not None else None
    report_path = args.report
    if not args.dry_run:
        from .report import check_output_path, default_report_path

        try:
            if report_path is not None:
                check_output_path(report_path, batch_path=args.batch, what="--report")
                _refuse_a_live_runs_report(report_path)
            else:
                # Checked before anything is sent, as a --report is: a run whose report cannot
                # be written must not change the DAQ.
                report_path = default_report_path(args.batch, batch.run)
                try:
                    check_output_path(report_path, batch_path=args.batch, what="report")
                except ValueError as exc:
                    raise ValueError(f"{exc} (the default, next to the batch file); give --report PATH") from None
            if args.junit:
                check_output_path(args.junit, batch_path=args.batch, what="--junit")
                _refuse_a_live_runs_report(args.junit, "--junit")
            if args.junit and report_path and os.path.abspath(args.junit) == os.path.abspath(report_path):
                raise ValueError("--junit and --report name the same file")
        except ValueError as exc:
            raise _Usage(str(exc)) from None
    if args.dry_run and not args.sim:
        _print_plan(batch, daq, previous)
        return _show_state(daq)

    try:
        sim = _start_sim(args, daq) if args.sim else None
    except BaseException:
        if not args.dry_run and output_root is not None:
            _remove_if_empty(output_root)
        raise
    tell = output_root is not None and not args.dry_run and not args.quiet
    try:
        if args.dry_run:
            _print_plan(batch, daq, previous)
            return _show_state(daq)
        if tell:
            _warn(f"daq-run: the simulated DAQ writes into {output_root}")
        return _run(args, batch, daq, previous, report_path, argv, earlier)
    finally:
        if sim is not None:
            sim.stop()
        if output_root is not None and not args.dry_run:
            removed = _remove_if_empty(output_root)
            if tell and removed:
                _warn(f"daq-run: the simulated DAQ wrote no files (removed the empty {output_root})")
            elif tell:
                _warn(f"daq-run: files written by the simulated DAQ are in {output_root}")


def _remove_if_empty(folder: str) -> bool:
    try:
        os.rmdir(folder)  # only an empty folder goes
    except OSError:
        return False
    return True


def _start_sim(args: argparse.Namespace, daq: Dict[str, Optional[str]]) -> Any:
    # A missing sim extra or Redis-compatible server is a set-up problem of this machine
    # with a one-command fix (exit 2), not an unreachable DAQ (exit 3).
    from .sim._extra import SimExtraMissing, require_sim_extra

    try:
        require_sim_extra()
    except SimExtraMissing as exc:
        raise _Usage(f"--sim: {exc}") from None
    from .sim import DEFAULT_CONFIG, SimSettings, SimulatedDaq
    from .sim.redis_server import RedisServerNotFound

    config = {**DEFAULT_CONFIG, "image_pixel_height": SIM_IMAGE_SIZE, "image_pixel_width": SIM_IMAGE_SIZE}
    try:
        sim = SimulatedDaq(config=config, settings=SimSettings(frame_rate=args.sim_frame_rate or 1000.0)).start()
    except RedisServerNotFound as exc:
        raise _Usage(f"--sim: {exc}") from None
    except Exception as exc:
        _warn(f"daq-run: error: cannot start the simulator: {exc}")
        raise SystemExit(RunExit.UNREACHABLE) from None
    daq["url"] = sim.url
    daq["redis"] = None if args.no_redis else sim.redis_url
    return sim


def _command_line(argv: Sequence[str]) -> List[str]:
    from ._text import redact_text

    return ["daq-run", *(redact_text(arg) for arg in argv)]


def _run(
    args: argparse.Namespace,
    batch: Any,
    daq: Dict[str, Optional[str]],
    previous: Optional[Dict[str, List[dict]]],
    report_path: Optional[str],
    argv: Sequence[str],
    earlier: Optional[dict] = None,
) -> int:
    import signal

    from ._redis import redact_url
    from .console import ConsoleView, LogEvents, QuietSummary
    from .exceptions import LockError, LockHeldError
    from .resume import ResumedRun
    from .report import JsonReportFile, JUnitFile, default_report_path
    from .runner import Runner

    log_format = args.log_format or ("console" if sys.stdout.isatty() else "json")
    runner = Runner(
        url=daq["url"],
        redis_url=daq["redis"],
        require_log=not args.no_require_log,
        lock=daq["redis"] is not None and not args.no_lock,
        lock_wait=args.wait_lock,
        lock_ttl=args.lock_ttl,
        outage_s=args.max_outage,
        overwrite=args.overwrite,
        resumed=ResumedRun.from_report(earlier) if earlier is not None else None,
        context={"command": _command_line(argv), "url_source": daq["url_source"], "redis_source": daq["redis_source"]},
        keep_steps=False,
    )
    report_path = report_path or default_report_path(args.batch, batch.run)
    report_file = JsonReportFile(report_path)
    runner.subscribe(report_file)
    junit = JUnitFile(args.junit) if args.junit else None
    if junit is not None:
        runner.subscribe(junit)
    if args.quiet:
        runner.subscribe(QuietSummary())
    elif log_format == "console":
        runner.subscribe(ConsoleView(verbose=args.verbose))
    else:
        _configure_logging(args.verbose)
        runner.subscribe(LogEvents())

    received: List[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        name = "SIGTERM" if signum == signal.SIGHUP else signal.Signals(signum).name
        received.append(name)
        if len(received) == 1:
            runner.request_stop(name)
        elif len(received) == 2:
            # A second signal: finish now, with one short stop; the report and the lock are still done.
            runner.hurry(1.0)
        else:
            os._exit(signal_exit(received[0]))

    # Restored afterwards, so that main() can also be called from Python (a test, a script).
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        report = runner.run(batch, previous)
    except LockError as exc:
        hint = "" if isinstance(exc, LockHeldError) else " (--no-lock runs without it; --no-redis without Redis at all)"
        _warn(f"daq-run: {_one_line(exc)}{hint}")
        return RunExit.LOCKED
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    incomplete = [c.error for c in (report_file, junit) if c is not None and getattr(c, "error", None)]
    if not args.quiet and log_format == "console":
        _say(f"report: {report_path}")
    elif not args.quiet:
        _log_line("report", run=runner.run_id, path=report_path, complete=not incomplete)  # where log systems find it
    elif report.status != "passed":
        _say(f"  report: {report_path}")  # after the quiet summary: cron mail says where to look
    if runner.lock_lost is not None:
        _warn(f"daq-run: runner lock lost: {runner.lock_lost}; the run was stopped")
        return RunExit.LOCKED
    if report.status == "interrupted":
        return signal_exit(received[0] if received else "SIGINT")
    if report.daq_unreachable:
        _warn(f"daq-run: {report.reason} at {redact_url(daq['url'])}; the rest of the run was skipped")
        return RunExit.UNREACHABLE
    if report.status == "passed" and not incomplete:
        return RunExit.PASSED
    return RunExit.FAILED


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
        _warn(f"daq-run: DAQ unreachable at {redact_url(daq['url'])}: {_one_line(exc)}")
        return RunExit.UNREACHABLE
    _say("DAQ state (nothing was changed):")
    _say(json.dumps(state, indent=2))
    return RunExit.PASSED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
