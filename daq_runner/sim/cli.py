"""``daq-sim``: run a simulated Standard DAQ until Ctrl-C or SIGTERM.

``--generation rest_v2`` (the default) serves the rest_v2 REST API and Redis streams;
``--generation driver`` the current generation's driver WebSocket and config REST.

Exit codes: 0 clean shutdown; 1 the simulator could not start; 2 bad usage, a bad config
file, or a set-up problem that a command fixes (the ``sim`` extra or a Redis-compatible
server missing: the message gives the command).
"""

from __future__ import annotations

import argparse
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
_REST_V2_ONLY = ("--redis-url", "--sync-limit", "--deploy-delay", "--start-state", "--driver-poll-s", "--accept-partial-config")
_DRIVER_ONLY = ("--protocol", "--ws-port", "--restart-delay")


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
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
    parser.add_argument("--restart-delay", type=float, default=1.0, metavar="S", help="driver: how long the services are down after a stored config or a crash (default 1)")
    parser.add_argument("--redis-url", default=None, help="use this Redis (default: start a private redis-server)")
    parser.add_argument("--config", default=None, metavar="FILE", help="initial DAQ config, whole or partial (JSON or YAML)")
    parser.add_argument("--frame-rate", type=float, default=100.0, metavar="HZ", help="detector frame rate (default 100)")
    parser.add_argument("--sync-limit", type=float, default=60.0, metavar="S", help="write_sync limit (default 60)")
    parser.add_argument("--deploy-delay", type=float, default=0.2, metavar="S", help="config deployment time (default 0.2)")
    parser.add_argument(
        "--start-state",
        choices=("READY", "UNKNOWN"),
        default="UNKNOWN",
        help="writer state at start (default UNKNOWN, as the real server until a stop)",
    )
    parser.add_argument(
        "--driver-poll-s",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="how often the writer driver looks for WRITING/READY during a start or stop "
        "(default 0.1, as the real server; 0: no delay, for benchmarks)",
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
    if not 0 <= args.restart_delay <= 3600:
        parser.error("--restart-delay must be in [0, 3600] seconds")
    if not 0 < args.frame_rate <= 100_000:
        parser.error("--frame-rate must be in (0, 100000]")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in 0..65535")
    if not 0 <= args.driver_poll_s <= 5:
        parser.error("--driver-poll-s must be in [0, 5]")
    # NaN fails every comparison: these read "not in range" for it too.
    if not 0 <= args.deploy_delay <= 3600:
        parser.error("--deploy-delay must be in [0, 3600] seconds")
    if not 0 < args.sync_limit <= 3600:
        parser.error("--sync-limit must be in (0, 3600] seconds")
    return args


def _settings(args: argparse.Namespace) -> "SimSettings":
    """The simulator settings the command line asks for."""
    from .daq import SimSettings

    return SimSettings(
        frame_rate=args.frame_rate,
        sync_limit_s=args.sync_limit,
        deploy_delay_s=args.deploy_delay,
        start_state=args.start_state,
        driver_poll_s=args.driver_poll_s,
        accept_partial_config=args.accept_partial_config,
    )


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
        except (ValueError, SimRefusal) as exc:
            print(f"daq-sim: error: {exc}", file=sys.stderr)
            return SimExit.USAGE
    settings = _settings(args)
    done = _until_signal()
    sim = SimulatedDaq(host=args.host, port=args.port, redis_url=args.redis_url, config=config, settings=settings)
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
    settings = DriverSimSettings(build=args.protocol, frame_rate=args.frame_rate, restart_s=args.restart_delay)
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
