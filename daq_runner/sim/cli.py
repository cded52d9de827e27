"""``daq-sim``: run a simulated Standard DAQ until Ctrl-C or SIGTERM.

``--generation rest_v2`` (the default) serves the rest_v2 REST API and Redis streams;
``--generation driver`` the current generation's driver WebSocket and config REST.

Exit codes: 0 clean shutdown; 1 the simulator could not start; 2 bad usage, a bad config
file, or a set-up problem that a command fixes (the ``sim`` extra or a Redis-compatible
server missing: the message gives the command).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .._cli import OneLineArgumentParser
from ..exit_codes import SimExit
from .._version import __version__

if TYPE_CHECKING:
    from .daq import SimSettings

__all__ = ["main"]


# Options of one generation only, refused with the other.
_REST_V2_ONLY = (
    "--redis-url", "--sync-limit", "--deploy-delay", "--restart-delay-s", "--start-state", "--driver-poll-s", "--accept-partial-config",
)  # fmt: skip
_DRIVER_ONLY = ("--protocol", "--ws-port")

# The command line's numbers: option, the SimSettings field it sets (its default is the
# field's; --restart-s's is the generation's), metavar, help.
_NUMBER_OPTIONS = (
    ("--frame-rate", "frame_rate", "HZ", "detector frame rate"),
    ("--sync-limit", "sync_limit_s", "S", "write_sync limit"),
    ("--deploy-delay", "deploy_delay_s", "S", "config deployment time"),
    ("--restart-delay-s", "restart_delay_s", "S", "from a deployment's SUCCESS until the services restart"),
    ("--restart-s", "restart_s", "S", "how long the services are down when they restart after a stored config (0: not at all)"),
    (
        "--driver-poll-s",
        "driver_poll_s",
        "SECONDS",
        "how often the writer driver looks for WRITING/READY during a start or stop (as the real server; 0: no delay, for benchmarks)",
    ),
)


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from .daq import SimSettings

    # The defaults are the settings' own: one place says how the simulator behaves.
    default = SimSettings()
    parser = OneLineArgumentParser(
        prog="daq-sim",
        description="Simulated Standard DAQ: REST API, Redis streams, HDF5 files (--generation rest_v2), "
        "or the current generation's driver WebSocket and config REST (--generation driver).",
        epilog=f"Exit codes: {SimExit.describe()}.",
    )
    parser.add_argument("--version", action="version", version=f"daq-sim {__version__}")
    parser.add_argument(
        "--generation",
        choices=("rest_v2", "driver"),
        default="rest_v2",
        help="rest_v2 (default): the rest_v2 server; driver: std_det_driver's WebSocket and the config REST",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=5000, help="REST port, the config REST's with --generation driver (default 5000; 0 picks a free one)")
    parser.add_argument("--ws-port", type=int, default=8080, help="driver: the WebSocket's port (default 8080; 0 picks a free one)")
    parser.add_argument(
        "--protocol",
        choices=("persistent", "per-connection"),
        default="persistent",
        help="driver: the build, persistent sessions (since March 2025, default) or one connection per acquisition (older)",
    )
    parser.add_argument("--redis-url", default=None, help="use this Redis (default: start a private redis-server)")
    parser.add_argument("--config", default=None, metavar="FILE", help="initial DAQ config, whole or partial (JSON or YAML)")
    from .driver.core import DriverSimSettings

    driver_default = DriverSimSettings()
    for option, setting, metavar, what in _NUMBER_OPTIONS:
        value = getattr(default, setting)
        if setting in ("restart_s", "frame_rate"):  # both generations have it, each its own default
            both = f"default {value:g}; --generation driver: {getattr(driver_default, setting):g}"
            parser.add_argument(option, dest=setting, type=float, default=None, metavar=metavar, help=f"{what}; {both}")
        else:
            parser.add_argument(option, dest=setting, type=float, default=value, metavar=metavar, help=f"{what}; default {value:g}")
    parser.add_argument(
        "--start-state",
        choices=("READY", "UNKNOWN"),
        default=default.start_state,
        help=f"writer state at start (default {default.start_state}, as the real server until a stop)",
    )
    parser.add_argument(
        "--accept-partial-config",
        action="store_true",
        help="merge partial configs as mid-2023 servers did (default: refuse them, as the last server version)",
    )
    args = parser.parse_args(argv)
    given = {arg.split("=", 1)[0] for arg in (sys.argv[1:] if argv is None else argv) if arg.startswith("--")}
    foreign = sorted(given & set(_REST_V2_ONLY if args.generation == "driver" else _DRIVER_ONLY))
    if foreign:
        parser.error(f"{', '.join(foreign)} is not an option of --generation {args.generation}")
    if not 0 <= args.ws_port <= 65535:
        parser.error("--ws-port must be in 0..65535")
    for setting in ("restart_s", "frame_rate"):
        if getattr(args, setting) is None:
            setattr(args, setting, getattr(driver_default if args.generation == "driver" else default, setting))
    if not 0 < args.frame_rate <= 100_000:
        parser.error("--frame-rate must be in (0, 100000]")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in 0..65535")
    if not 0 <= args.driver_poll_s <= 5:
        parser.error("--driver-poll-s must be in [0, 5]")
    # NaN fails every comparison: these read "not in range" for it too.
    for option, value in (("--deploy-delay", args.deploy_delay_s), ("--restart-delay-s", args.restart_delay_s), ("--restart-s", args.restart_s)):
        if not 0 <= value <= 3600:
            parser.error(f"{option} must be in [0, 3600] seconds")
    if not 0 < args.sync_limit_s <= 3600:
        parser.error("--sync-limit must be in (0, 3600] seconds")
    return args


def _settings(args: argparse.Namespace) -> "SimSettings":
    """The simulator settings the command line asks for."""
    from .daq import SimSettings

    numbers = {setting: getattr(args, setting) for _, setting, _, _ in _NUMBER_OPTIONS}
    return SimSettings(**numbers, start_state=args.start_state, accept_partial_config=args.accept_partial_config)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``daq-sim``; returns the exit code."""
    args = _parse(argv)
    from ._extra import SimExtraMissing, require_sim_extra

    try:
        require_sim_extra()
    except SimExtraMissing as exc:
        print(f"daq-sim: error: {exc}", file=sys.stderr)
        return SimExit.USAGE
    if args.generation == "driver":
        return _main_driver(args)
    from .._config_file import load_config_file
    from .daq import DEFAULT_CONFIG, SimRefusal, validate_config_update
    from .._text import quote, redact_url, userinfo_problem
    from .redis_server import RedisServerNotFound
    from .server import SimulatedDaq

    if args.redis_url is not None:
        problem = userinfo_problem(args.redis_url)
        if problem:  # never echoed: part of a password would show
            print(f"daq-sim: error: --redis-url is not usable: {problem}", file=sys.stderr)
            return SimExit.USAGE
    config = None
    if args.config:
        try:
            config = validate_config_update(DEFAULT_CONFIG, load_config_file(args.config))
        except ValueError as exc:  # the message names the file
            print(f"daq-sim: error: {exc}", file=sys.stderr)
            return SimExit.USAGE
        except SimRefusal as exc:
            print(f"daq-sim: error: config file {args.config!r}: {exc}", file=sys.stderr)
            return SimExit.USAGE
    settings = _settings(args)
    # The simulator's warnings (Redis gone and back, a log thread ended) and the REST
    # server's errors, one line each on stderr.
    logging.basicConfig(level=logging.WARNING, format="daq-sim: %(message)s", stream=sys.stderr)
    done = _until_signal()
    sim = SimulatedDaq(host=args.host, port=args.port, redis_url=args.redis_url, config=config, settings=settings, log_output=True)
    try:
        sim.start()
    except RedisServerNotFound as exc:  # a missing local program: the message gives the fix
        print(f"daq-sim: error: {exc}", file=sys.stderr)
        return SimExit.USAGE
    except Exception as exc:  # one clear line: port in use, a server that dies at start, ...
        print(f"daq-sim: error: cannot start: {quote(exc)}", file=sys.stderr)
        return SimExit.START_FAILED
    # Credentials of the Redis URL never reach the terminal or a log collecting it.
    return _serve(sim, f"daq-sim ready rest={sim.url} redis={redact_url(sim.redis_url)}", done)


def _until_signal() -> threading.Event:
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: done.set())
    return done


def _serve(sim: Any, ready: str, done: threading.Event) -> int:
    """Say ``ready``, serve until ``done`` (a signal), stop ``sim``."""
    try:
        print(ready, flush=True)
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return SimExit.STOPPED


def _main_driver(args: argparse.Namespace) -> int:
    """``daq-sim --generation driver``: the driver's WebSocket and the config REST."""
    from .._config_file import load_config_file
    from .._text import quote
    from .driver import DEFAULT_DRIVER_CONFIG, DriverSimSettings, SimulatedDriverDaq
    from .driver.core import sim_config_problem

    config = dict(DEFAULT_DRIVER_CONFIG)
    if args.config:
        try:
            config = load_config_file(args.config)
        except ValueError as exc:
            print(f"daq-sim: error: {exc}", file=sys.stderr)
            return SimExit.USAGE
        problem = sim_config_problem(config)
        if problem:
            print(f"daq-sim: error: config file {args.config!r}: the services cannot run it: {quote(problem)}", file=sys.stderr)
            return SimExit.USAGE
    settings = DriverSimSettings(build=args.protocol, frame_rate=args.frame_rate, restart_s=args.restart_s)
    done = _until_signal()
    sim = SimulatedDriverDaq(host=args.host, port=args.port, ws_port=args.ws_port, config=config, settings=settings)
    try:
        sim.start()
    except Exception as exc:  # one clear line: port in use, ...
        print(f"daq-sim: error: cannot start: {quote(exc)}", file=sys.stderr)
        return SimExit.START_FAILED
    return _serve(sim, f"daq-sim ready ws={sim.ws_url} config={sim.url}", done)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
