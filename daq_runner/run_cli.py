"""``daq-run``: run a batch file against a Standard DAQ (or the embedded simulator).

The command line is wiring: the rules live in modules Python can use too. Which DAQ:
:mod:`daq_runner.targets`; where reports go: :mod:`daq_runner.report_paths`; ``--resume``:
:mod:`daq_runner.resume`; ``--dry-run`` and the estimate: :mod:`daq_runner.preflight` and
:mod:`daq_runner.estimate`; ``--sim``: :mod:`daq_runner.sim.embedded`; notifications:
:mod:`daq_runner.notify` (wired by :mod:`daq_runner._run_notifications`). What is left here:
options, output for people and log systems, signals, and the exit code
(:func:`~daq_runner.exit_codes.run_exit`). Heavy modules are imported only when needed, so
that ``--help`` and ``--version`` start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence

from ._cli import error_line as _one_line
from ._cli import log_line as _log_line
from ._cli import say as _say
from ._cli import warn as _warn
from ._limits import MAX_SECONDS
from .exceptions import SetupError
from .exit_codes import RunExit, signal_exit

__all__ = ["main", "script"]


def _parser() -> argparse.ArgumentParser:
    from ._cli import OneLineArgumentParser
    from ._version import __version__
    from .protocol import DEFAULT_OUTAGE_S
    from .targets import DEFAULT_PROFILES, DRIVER, PROFILES_ENV, REST_V2

    parser = OneLineArgumentParser(
        prog="daq-run",
        description="Run a YAML batch of Standard DAQ steps unattended and write a report. "
        "'daq-run show REPORT' prints a report for people (--html for a page).",
        epilog=f"Exit codes: {RunExit.describe()}.",
    )
    parser.add_argument("batch", nargs="?", help="batch file (YAML)")
    parser.add_argument("--version", action="version", version=f"daq-run {__version__}")
    target = parser.add_argument_group("DAQ (one source gives its URLs)")
    target.add_argument(
        "--url",
        help="URL of the DAQ; its scheme says the generation: http://HOST:5000 rest_v2's REST API, ws://HOST:8080 the current "
        "generation's driver (default: --daq, $STD_DAQ_API_URL, the batch's daq.url, http://127.0.0.1:5000)",
    )
    target.add_argument(
        "--redis",
        help="Redis URL of the DAQ (default: from the same source as the REST URL: --daq, $STD_DAQ_REDIS_URL with "
        "$STD_DAQ_API_URL, the batch's daq.redis; else the REST host on port 6379). $STD_DAQ_REDIS_PASSWORD gives "
        "its password without putting it on the command line",
    )
    target.add_argument("--no-redis", action="store_true", help="do not use Redis: poll REST, take no lock")
    target.add_argument(
        "--config-url", metavar="URL",
        help="the config REST of a ws:// DAQ (default: from the same source as --url, else the driver's host on port 5000)",
    )
    target.add_argument("--config-user", metavar="NAME", help="the user name the config REST of a ws:// DAQ records changes under (default daq-runner)")
    target.add_argument("--daq", metavar="NAME", help="a named DAQ (REST and Redis URLs) from the profile file")
    target.add_argument("--profiles", metavar="FILE", help=f"profile file for --daq (default ${PROFILES_ENV} or {DEFAULT_PROFILES})")
    target.add_argument(
        "--sim", action="store_true",
        help="start the embedded simulated DAQ and run against it (needs daq-runner[sim]); a batch variable 'root' "
        "not given with --var becomes a fresh folder, and daq-run says so",
    )
    target.add_argument("--sim-frame-rate", type=float, default=None, metavar="HZ", help="frame rate of --sim (default 1000)")
    target.add_argument(
        "--sim-generation", choices=(REST_V2, DRIVER), default=None,
        help="the DAQ generation --sim simulates: rest_v2 (default) or driver (std_det_driver and its config REST, no Redis)",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="set a template variable (repeatable; the value is text)")
    run.add_argument("--report", metavar="PATH", help="JSON report (default: <batch>-<date>-<time>-<run>.report.json next to the batch); never replaces a report")
    run.add_argument("--report-dir", metavar="DIR", help="put the report, under a new name of that form, into DIR instead")
    run.add_argument("--overwrite-report", action="store_true", help="let --report replace an existing file")
    run.add_argument("--junit", metavar="PATH", help="also write JUnit XML (replaces an earlier JUnit file, never another file)")
    run.add_argument("--resume", metavar="REPORT", help="re-run only the steps that did not pass in REPORT")
    run.add_argument("--force", action="store_true", help="with --resume: accept a batch whose steps or variables differ from REPORT's")
    run.add_argument("--overwrite", action="store_true", help="let writes replace existing files (as 'overwrite: true' on every step)")
    run.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS", help="wait this long for another runner's lock (default 0)")
    run.add_argument("--no-lock", action="store_true", help="run without the runner lock (not recommended)")
    run.add_argument(
        "--lock-ttl", type=float, default=None, metavar="SECONDS",
        help="expiry of the runner lock, renewed every third of it: how long a crashed runner blocks the DAQ "
        "(default: the lock's own, see docs/guarantees.md)",
    )
    run.add_argument(
        "--max-outage", type=float, default=DEFAULT_OUTAGE_S, metavar="SECONDS",
        help=f"ride out an unreachable DAQ this long; beyond it the run stops, exit 3 (default {DEFAULT_OUTAGE_S:g})",
    )
    run.add_argument("--no-require-log", action="store_true", help="pass writes the DAQ did not log")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--no-verify", action="store_true",
        help="do not open the files the writes wrote (by default each is checked: shape, dtype, image ids, status, time; needs h5py)",
    )
    data.add_argument("--checksums", action="store_true", help="with the file checks, add each file's size and sha256 to the report")
    data.add_argument(
        "--allow-commands", action="store_true",
        help="let the batch's run: steps run programs on this machine (else they are refused; a DAQ profile may say allow_commands: true)",
    )
    run.add_argument(
        "--restore-config", action="store_true",
        help="read the DAQ's whole configuration before the first step and put it back when the run ends, whatever "
        "ended it, if a config step changed it (as 'restore_config: true' in the batch); a failed restore fails the run",
    )
    run.add_argument(
        "--allow-low-disk", action="store_true",
        help="run even when the estimated volume exceeds the free space of an output folder this machine sees",
    )
    run.add_argument(
        "--assume-rate", type=float, default=None, metavar="HZ",
        help="images per second for the estimate, instead of the detector's rate in the DAQ's statistics",
    )
    notify = parser.add_argument_group("notifications (see docs/notifications.md)")
    notify.add_argument(
        "--notify", action="append", default=[], metavar="TARGET",
        help="tell TARGET how the run ended: an http(s):// webhook (JSON POST, Slack/Mattermost 'text') or mailto:ADDRESS "
        "(repeatable; adds to the notify: blocks of the DAQ's profile and the batch)",
    )
    notify.add_argument(
        "--notify-on", action="append", default=[], metavar="OUTCOME[,...]",
        help="when, for every target: failure, usage, unreachable, busy, interrupted, always or never "
        "(default: every outcome but a pass)",
    )
    notify.add_argument("--smtp", metavar="HOST[:PORT]", help="mail server for mailto: targets (smtp+starttls://USER@HOST, smtps://...; password in $DAQ_RUNNER_SMTP_PASSWORD)")
    notify.add_argument("--heartbeat", metavar="URL", help="dead-man's switch: URL/start at the start, URL while the run goes on, URL or URL/fail at the end")
    notify.add_argument("--heartbeat-every", type=float, default=None, metavar="SECONDS", help="seconds between heartbeat pings (default 60)")
    modes = parser.add_argument_group("modes").add_mutually_exclusive_group()
    modes.add_argument(
        "--dry-run", action="store_true",
        help="validate, print the plan (every step's parameters; with --resume what is kept), check what this machine "
        "can (output folders and files, the report path), read the DAQ state; change nothing",
    )
    modes.add_argument("--validate", action="store_true", help="only validate the batch file")
    modes.add_argument("--schema", action="store_true", help="print the JSON Schema of batch files")
    out = parser.add_argument_group("output")
    out.add_argument("--quiet", "-q", action="store_true", help="print nothing if every step passed, a summary and the report's path otherwise")
    out.add_argument("--log-format", choices=("console", "json"), help="console view or JSON log lines on stderr (default: console on a terminal)")
    out.add_argument("-v", "--verbose", action="store_true", help="more detail (and tracebacks of internal errors)")
    return parser


def _check_options(args: argparse.Namespace) -> None:
    if args.schema:
        return
    if not args.batch:
        raise SetupError("a batch file is required")
    if not 0 <= args.wait_lock <= MAX_SECONDS:
        raise SetupError(f"--wait-lock must be between 0 and {MAX_SECONDS:g} seconds")
    if not 0 < args.max_outage <= MAX_SECONDS:
        raise SetupError(f"--max-outage must be more than 0 and at most {MAX_SECONDS:g} seconds")
    if args.lock_ttl is not None and not 1.0 <= args.lock_ttl <= 3600:
        raise SetupError("--lock-ttl must be between 1 and 3600 seconds")
    if args.force and not args.resume:
        raise SetupError("--force only goes with --resume")
    if args.overwrite_report and not args.report:
        raise SetupError("--overwrite-report only goes with --report")
    if args.no_lock and args.wait_lock:
        raise SetupError("--no-lock and --wait-lock contradict each other")
    if args.quiet and args.log_format:
        raise SetupError("--quiet and --log-format contradict each other")
    if args.sim and (args.url or args.daq or args.redis or args.config_url or args.config_user):
        raise SetupError("--sim runs against the embedded simulator; do not combine it with --url, --redis, --daq, --config-url or --config-user")
    if args.sim_frame_rate is not None and not args.sim:
        raise SetupError("--sim-frame-rate only goes with --sim")
    if args.sim_generation is not None and not args.sim:
        raise SetupError("--sim-generation only goes with --sim")
    if args.sim_frame_rate is not None and not 0 < args.sim_frame_rate <= 100_000:
        raise SetupError("--sim-frame-rate must be in (0, 100000]")
    if args.checksums and args.no_verify:
        raise SetupError("--checksums and --no-verify contradict each other (the checksums are read with the file checks)")
    if args.assume_rate is not None and not 0 < args.assume_rate <= 1e9:
        raise SetupError("--assume-rate must be more than 0 and at most 1e9 images per second")


def _notifications(args: argparse.Namespace) -> Any:
    """Who is told how this invocation ends, from the flags (the files' blocks join later)."""
    from ._run_notifications import RunNotifications
    from .notify import NotifySettings

    flags = NotifySettings.from_args(
        args.notify, args.notify_on, args.smtp, args.heartbeat, args.heartbeat_every, environ=os.environ
    )
    return RunNotifications(flags, _warn, environ=os.environ, enabled=not (args.dry_run or args.validate))


def _load(args: argparse.Namespace, extra: Optional[Dict[str, str]] = None, earlier: Optional[dict] = None, told: Any = None) -> Any:
    """The batch, validated; ``earlier`` (a report being resumed) gives ``{run}`` and the time again."""
    from .batch import load_batch, parse_var
    from .exceptions import BatchValidationError
    from .resume import same_moment
    from .targets import profile_allows_commands

    # The same {run}, {date}, {time}, {datetime} as the run being resumed: the same file names.
    same = same_moment(earlier) if earlier is not None else {}
    allow_commands = args.allow_commands or profile_allows_commands(daq=args.daq, profiles=args.profiles, environ=os.environ)
    try:
        variables = dict(parse_var(v) for v in args.var)
        variables.update(extra or {})
        return load_batch(args.batch, vars=variables, allow_commands=allow_commands, **same)
    except BatchValidationError as exc:
        lines = exc.lines()
        for line in lines:
            _warn(f"daq-run: {line}")
        if told is not None:
            told.not_started(RunExit.USAGE, f"invalid batch file: {lines[0]}" + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""), args.batch)
        raise SystemExit(RunExit.USAGE) from None


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.schema:
        import json

        from .schema import batch_schema

        _say(json.dumps(batch_schema(), indent=2))
        return RunExit.PASSED
    _check_options(args)
    told = _notifications(args)
    try:
        return _main_told(args, argv, told)
    except SetupError as exc:  # said by main(); told first, where the flags name someone
        told.not_started(RunExit.USAGE, str(exc), args.batch)
        raise


def _main_told(args: argparse.Namespace, argv: Sequence[str], told: Any) -> int:
    from . import resume

    earlier = resume.read_report(args.resume) if args.resume else None
    try:
        batch = _load(args, earlier=earlier, told=told)
    except SystemExit as exc:  # an invalid batch, said line by line
        return int(exc.code or 0)
    if args.validate:
        # What the DAQ the run would drive has: a step it cannot do is invalid too.
        refused = _unsupported(batch, _sim_generation(args) if args.sim else _target(args, batch).generation)
        if refused is not None:
            return refused
        from ._text import plural

        _say(f"{args.batch}: valid, {plural(len(batch.steps), 'step')}" + (f" and {plural(len(batch.cleanup), 'cleanup step')}" if batch.cleanup else ""))
        _validate_estimate(args, batch)
        return RunExit.PASSED
    output = None
    if args.sim:
        from .sim.embedded import ROOT_VAR, SimOutput, replaces_root

        if replaces_root(batch.vars, {v.partition("=")[0].strip() for v in args.var}):
            # The demo respects the machine: a fresh folder of its own, told at the start and the end.
            output = SimOutput(batch.vars[ROOT_VAR], create=not args.dry_run)
            try:
                batch = _load(args, {output.var: output.folder}, earlier, told)
            except SystemExit as exc:
                output.discard()
                return int(exc.code or 0)
    try:
        return _prepared(args, argv, batch, earlier, output, told)
    finally:
        if output is not None:
            said = output.finish()
            if said and not args.quiet:
                _warn(f"daq-run: {said}")


def _validate_estimate(args: argparse.Namespace, batch: Any) -> None:
    """``--validate``: the estimate, where the DAQ answers (a DAQ that cannot be resolved or
    reached is a note: the batch is valid all the same)."""
    from .preflight import run_estimate
    url, why = None, None
    if args.sim:
        why = "--validate does not start the simulator (--dry-run does)"
    else:
        try:
            url = _target(args, batch, no_redis=True)
        except SetupError as exc:
            why = f"the DAQ could not be named: {exc}"
    estimate, _ = run_estimate(batch, url, assume_rate=args.assume_rate, restore_config=args.restore_config)
    from ._text import printable

    for line in estimate.lines() + ([f"  note: {why}"] if why else []):
        _say(printable(line))


def _target(args: argparse.Namespace, batch: Any, no_redis: bool = False) -> Any:
    """The DAQ of the run, from the options, the environment and the batch (:mod:`daq_runner.targets`);
    ``no_redis``: the caller needs no Redis (``--redis`` is then left aside, not a contradiction)."""
    from .targets import resolve_target

    return resolve_target(
        url=args.url, redis=None if no_redis else args.redis, no_redis=no_redis or args.no_redis, daq=args.daq, profiles=args.profiles, batch=batch,
        environ=os.environ, config_url=args.config_url, config_user=args.config_user,
    )  # fmt: skip


def _sim_generation(args: argparse.Namespace) -> str:
    from .targets import REST_V2

    return args.sim_generation or REST_V2


def _unsupported(batch: Any, generation: str) -> Optional[int]:
    """Exit 2, each step said on its line, when the batch asks what ``generation`` does not have; else ``None``."""
    from .daq import check_supported
    from .exceptions import BatchValidationError
    from .targets import generation_traits

    try:
        check_supported(batch, generation_traits(generation))
    except BatchValidationError as exc:
        for line in exc.lines():
            _warn(f"daq-run: {line}")
        return RunExit.USAGE
    return None


def _prepared(args: argparse.Namespace, argv: Sequence[str], batch: Any, earlier: Optional[dict], output: Any, told: Any) -> int:
    """Everything checked before the DAQ is touched, then the dry run or the run."""
    from .report_paths import choose_report_paths
    from .resume import kept_steps, previous_results

    target = None if args.sim else _target(args, batch)
    refused = _unsupported(batch, _sim_generation(args) if args.sim else target.generation)
    if refused is not None:
        return refused
    if args.sim:
        from .sim._extra import SimExtraMissing, require_sim_extra

        try:  # the simulator's extra brings the file checks' too: its line comes first
            require_sim_extra()
        except SimExtraMissing as exc:
            _warn(f"daq-run: error: --sim: {exc}")
            return RunExit.USAGE
    if not args.dry_run:
        from ._filecheck import FileChecks
        from .verify import VerifyExtraMissing

        try:  # files to check and no h5py: said now, before the simulator or the DAQ is touched
            FileChecks(not args.no_verify, args.checksums).require(batch.steps)
        except VerifyExtraMissing as exc:
            _warn(f"daq-run: error: {exc}")
            return RunExit.USAGE
    # Every notify: block is checked (and the SMTP password found) before anything is sent.
    told.add(
        profile=target.notify if target is not None else None,
        profile_source=target.notify_source if target is not None else None,
        batch=batch.notify,
        batch_source=batch.path,
    )
    previous = kept = None
    if earlier is not None:
        previous = previous_results(
            earlier, batch, report_path=args.resume, batch_path=args.batch, force=args.force,
            ignore_vars=(output.var,) if output is not None else (), notice=lambda line: _warn(f"daq-run: note: {line}"),
        )
        kept = kept_steps(batch.steps, previous)
        if len(kept) == len(batch.steps) and not args.dry_run:
            if not args.quiet:
                steps = "the step" if len(kept) == 1 else f"all {len(kept)} steps"  # not "all 1 steps"
                _warn(f"daq-run: nothing to run: {steps} of {args.batch} passed in {args.resume} (no new report written)")
            return RunExit.PASSED
    paths = problem = None
    try:
        paths = choose_report_paths(
            batch, report=args.report, report_dir=args.report_dir, junit=args.junit, overwrite_report=args.overwrite_report
        )
    except SetupError as exc:
        if not args.dry_run:
            raise
        problem = str(exc)
    sim = None
    try:
        if args.sim:
            from .sim.embedded import EmbeddedSim, SimStartError, start_lines

            try:
                sim = EmbeddedSim(args.sim_frame_rate, redis=not args.no_redis, generation=_sim_generation(args)).start()
            except SimStartError as exc:
                _warn(f"daq-run: error: {exc}")
                told.not_started(RunExit.UNREACHABLE, str(exc), args.batch)
                return RunExit.UNREACHABLE
            target = sim.target
            for line in output.announce(batch, quiet=args.quiet) if output is not None else start_lines(batch, quiet=args.quiet):
                _warn(f"daq-run: {line}")
        made_at_start = output.folder if output is not None else None
        if args.dry_run:
            return _dry_run(args, batch, target, kept, paths, problem, made_at_start=made_at_start)
        resume_from = {output.var: output.folder} if output is not None else {}
        return _run(args, batch, target, previous, paths, argv, earlier, told, kept or (), made_at_start, resume_from)
    finally:
        if sim is not None:
            sim.stop()


def _dry_run(args: argparse.Namespace, batch: Any, target: Any, kept: Any, paths: Any, problem: Optional[str], made_at_start: Optional[str]) -> int:
    """The plan, what this machine can check, the report path and the DAQ's state; nothing changes."""
    import json

    from ._text import printable, redact_url
    from .exceptions import DaqRunnerError
    from .preflight import check_commands, check_writes, daq_is_here, daq_state, plan_lines, run_estimate

    findings = check_writes(
        batch.steps, overwrite=args.overwrite, kept=kept or (), resuming=kept is not None,
        daq_here=args.sim or daq_is_here(target.url), made_at_start=made_at_start, generation=target.generation,
    ) + check_commands(batch.steps, kept=kept or ())
    findings.sort(key=lambda finding: finding.step)
    # Names, paths and values in these lines come from the batch file: escaped (printable).
    for line in plan_lines(batch, target=target, kept=kept, findings=findings, report=paths, report_problem=problem):
        _say(printable(line))
    try:
        state = daq_state(target)
    except DaqRunnerError as exc:
        _warn(f"daq-run: DAQ unreachable at {redact_url(target.url)}: {_one_line(exc)}")
        estimate, _ = run_estimate(
            batch, None, assume_rate=args.assume_rate, kept=kept or (), made_at_start=made_at_start, restore_config=args.restore_config
        )
        for line in estimate.lines():
            _say(printable(line))
        return RunExit.UNREACHABLE
    _say("DAQ state (nothing was changed):")
    _say(json.dumps(state, indent=2))
    estimate, _ = run_estimate(
        batch, target, assume_rate=args.assume_rate, kept=kept or (), made_at_start=made_at_start, restore_config=args.restore_config
    )
    for line in estimate.lines():
        _say(printable(line))
    low = estimate.low_disk
    if low and not args.allow_low_disk:
        _say("the run would refuse to start: not enough disk space (marked !; --allow-low-disk runs anyway)")
    if problem is not None or (low and not args.allow_low_disk):
        return RunExit.USAGE
    return RunExit.FAILED if any(f.fails for f in findings) else RunExit.PASSED


def _run(
    args: argparse.Namespace,
    batch: Any,
    target: Any,
    previous: Optional[Dict[str, List[dict]]],
    paths: Any,
    argv: Sequence[str],
    earlier: Optional[dict],
    told: Any,
    kept: Sequence[int],
    made_at_start: Optional[str],
    resume_vars: Dict[str, str],
) -> int:
    from dataclasses import replace

    from ._cli import configure_json_logging
    from ._tally import Tally
    from ._text import redact_text, redact_url
    from .console import ConsoleView, LogEvents, QuietSummary
    from .exceptions import BatchValidationError, LockError, LockHeldError
    from .lock import LOCK_TTL_S
    from .preflight import run_estimate
    from .report import JsonReportFile, JUnitFile
    from .resume import ResumedRun, resume_command
    from .runner import Runner
    from .targets import DRIVER

    log_format = args.log_format or ("console" if sys.stdout.isatty() else "json")
    # The command line that continues this run (its notification and its report say it).
    resume = resume_command(argv, paths.report, options=_long_options(), cwd=os.getcwd(), variables=resume_vars, program=_program())
    runner = Runner(
        url=target.url,
        redis_url=target.redis,
        config_url=target.config_url,
        config_user=target.config_user,
        require_log=not args.no_require_log,
        # A DAQ generation without a Redis of its own runs unlocked unless one is given, and says so.
        lock=not args.no_lock and (target.redis is not None or target.generation == DRIVER),
        lock_wait=args.wait_lock,
        lock_ttl=args.lock_ttl if args.lock_ttl is not None else LOCK_TTL_S,
        outage_s=args.max_outage,
        overwrite=args.overwrite,
        resumed=ResumedRun.from_report(earlier) if earlier is not None else None,
        context={
            "command": ["daq-run", *map(redact_text, argv)], "resume_command": redact_text(resume), "url_source": target.url_source,
            "redis_source": target.redis_source, "config_url_source": target.config_url_source,
        },  # fmt: skip
        keep_steps=False,
        verify=not args.no_verify,
        checksums=args.checksums,
        restore_config=args.restore_config,
    )
    try:
        runner.refuse_unusable(batch)  # a step this DAQ's generation cannot do: nothing sent, no report
    except BatchValidationError as exc:
        for line in exc.lines():
            _warn(f"daq-run: {line}")
        return RunExit.USAGE
    # Signals are handled from here: one during the estimate abandons it, and the run then
    # stops before its first step, with a report.
    with _signals_to(runner) as stopping:
        estimate, _ = run_estimate(
            batch, target, assume_rate=args.assume_rate, kept=kept, made_at_start=made_at_start,
            restore_config=args.restore_config, cancel=stopping,
        )
        low = estimate.low_disk
        if low and not args.allow_low_disk and not stopping.is_set():
            raise SetupError(f"not enough disk space: {low[0]}; nothing was sent to the DAQ (--allow-low-disk runs anyway)")
        report_file = JsonReportFile(paths.report)
        runner.subscribe(report_file)
        junit = JUnitFile(paths.junit) if paths.junit else None
        if junit is not None:
            runner.subscribe(junit)
        tally = Tally()  # how the run ended, also when run() raises
        runner.subscribe(tally.feed)
        if args.quiet:
            runner.subscribe(QuietSummary())
        elif log_format == "console":
            runner.subscribe(ConsoleView(verbose=args.verbose, estimate=estimate))
        else:
            configure_json_logging(args.verbose)
            runner.subscribe(LogEvents())

        def incomplete() -> List[str]:
            return [c.error for c in (report_file, junit) if c is not None and getattr(c, "error", None)]

        told.watch(
            runner,
            label=args.batch,
            secrets=batch.secrets,
            report=paths.report,
            resume=resume,
            incomplete=incomplete,
        )
        code: Optional[int] = None
        try:
            runner.run(batch, previous, estimate=estimate.to_json())
        except LockError as exc:
            # Where the Redis address came from, and how to give another (it may have been guessed).
            hint = "" if isinstance(exc, LockHeldError) else f" ({target.redis_hint()})"
            _warn(f"daq-run: {_one_line(exc)}{hint}")
            code = RunExit.LOCKED
        errors = incomplete()
        ending = replace(runner.ending, report_incomplete=bool(errors))
        if code is None:
            code = ending.exit_code
            # --quiet: one line on stderr for scripts (the console's and the log's last lines say why themselves).
            if args.quiet and ending.lock_lost is not None:
                _warn(f"daq-run: runner lock lost: {ending.lock_lost}; the run was stopped")
            elif args.quiet and code == RunExit.UNREACHABLE:
                url = redact_url(target.url)
                at = "" if url in (tally.reason or "") else f" at {url}"  # the reason names it (a request's URL) or not
                _warn(f"daq-run: {tally.reason}{at}; the rest of the run was skipped")
        _tell_the_end(args, log_format, tally, paths.report, runner.run_id, code, errors)
        return code


@contextlib.contextmanager
def _signals_to(runner: Any) -> Iterator[threading.Event]:
    """SIGINT, SIGTERM and SIGHUP (as SIGTERM) go to ``runner`` while the block runs: the first
    asks it to stop (a run about to begin stops before its first step), a second hurries its
    cleanup, a third exits at once. Yields an event set by the first signal. The handlers
    before are restored afterwards, so that main() can also be called from Python."""
    import signal

    received: List[str] = []
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        name = "SIGTERM" if signum == signal.SIGHUP else signal.Signals(signum).name
        received.append(name)
        stopping.set()
        if len(received) == 1:
            runner.request_stop(name)
        elif len(received) == 2:
            # A second signal: finish now, with one short stop; the report and the lock are still done.
            runner.hurry(1.0)
        else:
            os._exit(signal_exit(received[0]))  # a third: at once

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        yield stopping
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _long_options() -> List[str]:
    """Every long option of ``daq-run`` (to read abbreviations the way argparse does)."""
    return [o for action in _parser()._actions for o in action.option_strings if o.startswith("--")]


def _program() -> str:
    """How this ``daq-run`` was started, for a command line that continues the run: its full
    path when it was started by one (cron often lacks the venv's ``bin`` on its ``PATH``)."""
    started = sys.argv[0] if sys.argv else ""
    return started if os.path.basename(started) == "daq-run" and os.path.isabs(started) else "daq-run"


def _tell_the_end(args: argparse.Namespace, log_format: str, tally: Any, path: str, run_id: str, code: int, incomplete: List[Any]) -> None:
    """Where the report is, as each output mode needs it: on a terminal after the console's
    end line; for log systems a JSON line, then one line for people (CI, an IDE, ``| tee``);
    with ``--quiet`` after the summary, whenever the run did not pass (cron mail says where to look).
    A report (or JUnit file) that could not be written completely is said so on that line:
    the run's status alone would read as if everything was in order (exit 1 says otherwise)."""
    from ._text import one_line

    if incomplete:
        path = f"{path} (NOT complete: {one_line(incomplete[0], 300)})"
    if args.quiet:
        if code != RunExit.PASSED:
            _say(f"  report: {path}")
        return
    if log_format == "console":
        _say(f"report: {path}")
        return
    from .console import end_line

    _log_line("report", run=run_id, path=path, complete=not incomplete)  # where log systems find it
    reason = f"; reason: {one_line(tally.reason, 300)}" if tally.reason else ""
    _warn(f"{end_line(tally)}{reason}; report: {path}")


# -- main --------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``daq-run``; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list[:1] == ["show"]:
            from .show import main as show_main

            return show_main(args_list[1:])
        return _main(args_list)
    except SetupError as exc:
        _warn(f"daq-run: error: {exc}")
        return RunExit.USAGE
    except KeyboardInterrupt:  # Ctrl-C before the run began: nothing was started
        _warn("daq-run: interrupted before the run began")
        return RunExit.SIGINT
    except BrokenPipeError:
        from ._streams import to_devnull

        to_devnull(sys.stdout)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
