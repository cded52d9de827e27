"""The nine ``std_cli_*`` tools of the original client, defined once as a table.

Each tool takes ``--url_base URL`` (the README's name) or ``-b URL`` (the original's),
falling back to ``$STD_DAQ_API_URL`` and then ``http://127.0.0.1:5000``, and
``--timeout SECONDS`` (a finite number > 0: the most the whole command may take, retries
included; without it each attempt of a read may take 5 s, of a write start or stop 15 s
(the real server answers those after up to 5 s), of ``write_sync`` 75 s, with up to 3
retries of what provably did not reach the DAQ), and ``--version``. Each prints the
result as indented JSON. Errors are one line on stderr, with credentials in URLs shown
as ``***``.

``std_cli_set_config CONFIG_FILE`` sends the file as given (the original's request);
with ``--merge`` it sends the current config with the file's fields changed, waits for
the deployment and for the DAQ's services to restart with it, and checks the result
(works on servers that refuse partial configs; a write sent before the restart is over
would be lost).
The file is JSON or YAML, read as ``daq-sim --config`` reads it
(:mod:`daq_runner._config_file`: a regular file of at most 1 MiB holding one mapping).
A refusal that this tool knows the way out of (a partial config refused: ``--merge``; a
writer left UNKNOWN: ``std_cli_write_stop``) says it in the same line.

``std_cli_write_sync`` exits 1 when the acquisition ended ``FAILED`` (the status is
still printed).

The tools that change the DAQ (``std_cli_write_async``, ``std_cli_write_sync``,
``std_cli_write_stop``, ``std_cli_set_config``) first look at the runner lock of
``daq-run`` in the DAQ's Redis (``--redis URL``, else ``$STD_DAQ_REDIS_URL`` unless ``-b``
names the DAQ, else the REST host on port 6379; ``$STD_DAQ_REDIS_PASSWORD`` is its
password) and refuse while a runner holds it (exit 4, naming the holder). ``--force`` goes
ahead and leaves a record that the runner reports (see :func:`daq_runner.lock.look_before_use`).
A Redis that cannot be reached within about a second does not block (``-v`` says so); one
that refuses the look (a password, an ACL) does not block either, and says so.

Exit codes: see :class:`daq_runner.exit_codes.StdCliExit`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, NoReturn, Optional, Sequence, Tuple

from . import _deadline, protocol
from ._cli import OneLineArgumentParser
from ._streams import to_devnull
from ._text import quote, redact_url
from ._version import __version__
from .exit_codes import StdCliExit
from .client import MAX_TIMEOUT_S, StdDaqClient, check_url
from .exceptions import DaqRunnerError, DaqTransportError, DeadlineExceeded, LockHeldError, StdDaqAdminException

__all__ = ["TOOLS", "Tool", "run_tool", "LOCK_LOOK_S"]

# The most the look at the runner lock may take: a DAQ whose Redis does not answer by then
# is not blocked (its tools must stay usable when Redis is down).
LOCK_LOOK_S = 1.0


class AcquisitionFailed(Exception):
    """``std_cli_write_sync``: the acquisition ended FAILED (exit 1, after printing the status)."""


def _write_request(args: argparse.Namespace) -> dict:
    return {"output_file": args.output_file, "n_images": args.n_images}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quote(text)!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quote(text)!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 and at most {MAX_TIMEOUT_S:g}, not {quote(text)}")
    return value


def _write_sync(client: StdDaqClient, args: argparse.Namespace) -> Any:
    status = client.start_writer_sync(_write_request(args))
    acquisition = status.get("acquisition") or {}
    if acquisition.get("state") == protocol.AcquisitionState.FAILED.value:
        raise AcquisitionFailed(status)
    return status


def _set_config(client: StdDaqClient, args: argparse.Namespace) -> Any:
    if args.merge:
        return client.update_config(args.daq_config, wait_restart=True).config
    return client.set_config(args.daq_config)


def _set_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_file", help="JSON or YAML file with the config fields (at most 1 MiB)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="send the current config with the file's fields changed (works on servers that refuse "
        "partial configs), wait for the deployment and for the DAQ's services to restart with it, "
        "and check the result",
    )


@dataclass(frozen=True)
class Tool:
    """One CLI tool: its description, extra arguments and what it calls.

    ``changes_daq``: it writes, stops or configures, so it looks at the runner lock first.
    """

    description: str
    call: Callable[[StdDaqClient, argparse.Namespace], object]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    epilog: Optional[str] = None
    changes_daq: bool = False


def _file_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_file", help="absolute path of the HDF5 file the DAQ writes")
    parser.add_argument("n_images", type=_positive_int, help="number of images to write")


TOOLS = {
    "std_cli_get_status": Tool("Get the Standard DAQ writer status.", lambda c, a: c.get_status()),
    "std_cli_get_config": Tool("Get the Standard DAQ configuration.", lambda c, a: c.get_config()),
    "std_cli_set_config": Tool(
        "Set (part of) the Standard DAQ configuration from a JSON or YAML file.",
        _set_config,
        _set_config_args,
        "Without --merge the file is sent as given; the last rest_v2 server version refuses partial configs.",
        changes_daq=True,
    ),
    "std_cli_get_logs": Tool(
        "Get the last acquisition logs, newest first.",
        lambda c, a: c.get_logs(a.n),
        lambda p: p.add_argument("-n", type=_positive_int, default=1, help="number of last logs (default 1)"),
    ),
    "std_cli_get_stats": Tool("Get the Standard DAQ throughput statistics.", lambda c, a: c.get_stats()),
    "std_cli_get_deploy_status": Tool(
        "Get the status of the last configuration deployment.", lambda c, a: c.get_deployment_status()
    ),
    "std_cli_write_async": Tool(
        "Start writing images to a file and return at once.",
        lambda c, a: c.start_writer_async(_write_request(a)),
        _file_args,
        changes_daq=True,
    ),
    "std_cli_write_sync": Tool(
        "Write images to a file and return when done (at most 60 s).",
        _write_sync,
        _file_args,
        "Exit status 1 when the acquisition ended FAILED (the status is printed all the same).",
        changes_daq=True,
    ),
    "std_cli_write_stop": Tool(
        "Stop writing (also resets an UNKNOWN writer).", lambda c, a: c.stop_writer(), changes_daq=True
    ),
}

_WRITES = ("std_cli_write_async", "std_cli_write_sync")


class _Hint(NamedTuple):
    """A refusal this tool knows the way out of: the tools, the texts of the DAQ's message (a
    refusal carries its status as text only), and what to say."""

    tools: Tuple[str, ...]
    texts: Tuple[str, ...]
    say: str
    unless_merged: bool = False


_HINTS = (
    _Hint(
        ("std_cli_set_config",),
        (protocol.MESSAGE_PARTIAL_CONFIG,),
        "this DAQ refuses partial configs: --merge sends the current config with the file's fields "
        "changed and waits for the deployment",
        unless_merged=True,
    ),
    _Hint(
        ("std_cli_set_config",),
        (protocol.MESSAGE_MODULE_POSITIONS,),
        "this DAQ can store only module_positions: {} (leave the field out of the file)",
    ),
    _Hint(_WRITES, (protocol.MESSAGE_BUSY_PREFIX, "UNKNOWN"), "the writer is UNKNOWN (a DAQ just started or restarted): std_cli_write_stop makes it READY"),
    _Hint(_WRITES, (protocol.MESSAGE_NEEDS_RESTART,), "the writer is UNKNOWN now: std_cli_write_stop makes it READY"),
    _Hint(("std_cli_write_stop",), (protocol.MESSAGE_NEEDS_RESTART,), "the writer is UNKNOWN now: another std_cli_write_stop makes it READY"),
)


def _hint(prog: str, args: argparse.Namespace, refusal: str) -> str:
    """``"; <what to do>"`` for a refusal this tool knows the way out of, else ``""``."""
    merged = getattr(args, "merge", False)
    for hint in _HINTS:
        if prog in hint.tools and all(text in refusal for text in hint.texts) and not (hint.unless_merged and merged):
            return f"; {hint.say}"
    return ""


_EXIT_CODES = "exit codes: " + StdCliExit.describe()


class _Parser(OneLineArgumentParser):
    """Usage errors quote what was typed: one line, no control characters, no credentials."""

    def error(self, message: str) -> NoReturn:
        super().error(quote(message, limit=None))


def _parser(prog: str, tool: Tool) -> argparse.ArgumentParser:
    epilog = f"{tool.epilog} {_EXIT_CODES}." if tool.epilog else f"{_EXIT_CODES[0].upper()}{_EXIT_CODES[1:]}."
    parser = _Parser(prog=prog, description=tool.description, epilog=epilog)
    parser.add_argument(
        "--url_base",
        "-b",
        dest="url_base",
        default=None,
        metavar="URL",
        help=f"base URL of the REST API (default: $STD_DAQ_API_URL, else {protocol.DEFAULT_URL})",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="the most the whole command may take, retries included (default: 5 s per attempt of a read, "
        "15 s of a write start or stop, 75 s of write_sync; a real DAQ needs up to 5 s for a write start or stop)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (daq-runner) {__version__}")
    if tool.changes_daq:
        parser.add_argument(
            "--redis",
            default=None,
            metavar="URL",
            help="the DAQ's Redis, where daq-run keeps its runner lock (default: $STD_DAQ_REDIS_URL unless -b is "
            "given, else the REST host on port 6379; $STD_DAQ_REDIS_PASSWORD is its password)",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="go ahead although a runner holds the DAQ's lock; the run's report will say so",
        )
        parser.add_argument("-v", "--verbose", action="store_true", help="say on stderr what the look at the lock found")
    tool.add_arguments(parser)
    return parser


def _redis_url(args: argparse.Namespace, url: str) -> str:
    """The DAQ's Redis for the look at the lock, as ``daq-run`` finds it (checked; ValueError)."""
    from ._redis import check_redis_url, default_redis_url, with_password

    given = args.redis
    if given is None and args.url_base is None:
        given = os.environ.get("STD_DAQ_REDIS_URL") or None  # with $STD_DAQ_API_URL, as daq-run pairs them
    redis_url = default_redis_url(url) if given is None else check_redis_url(given, "--redis URL" if args.redis is not None else "$STD_DAQ_REDIS_URL")
    return with_password(redis_url, os.environ.get("STD_DAQ_REDIS_PASSWORD"))


def _look_at_lock(prog: str, args: argparse.Namespace, redis_url: str, argv: Sequence[str]) -> None:
    """Refuse (LockHeldError) while a runner holds the DAQ's lock, unless ``--force``.

    A Redis that cannot be reached within :data:`LOCK_LOOK_S` (or the ``--timeout`` left)
    does not block; one that refuses (a password, an ACL) does not either, and says so.
    """
    import redis

    from ._redis import connect
    from .lock import DaqLock, look_before_use

    shown = redact_url(redis_url)
    client = connect(redis_url, socket_timeout=max(min(LOCK_LOOK_S, _deadline.current().remaining()), 0.05))
    try:
        look = look_before_use(client, prog, argv, force=args.force)
    except (redis.AuthenticationError, redis.ResponseError, redis.WatchError) as exc:
        # Redis answers, but not with the lock: a setting to fix, said every time.
        password = "; $STD_DAQ_REDIS_PASSWORD gives its password" if isinstance(exc, redis.AuthenticationError) else ""
        _say(prog, f"warning: the runner lock was not looked at: Redis {shown} refused: {quote(exc)}{password}; going ahead")
        return
    except redis.RedisError as exc:
        if args.verbose:
            _say(prog, f"the runner lock was not looked at: Redis {shown} cannot be reached ({quote(exc)}); going ahead")
        return
    finally:
        client.close()
    if look.forced:
        _say(prog, f"--force: going ahead although a runner holds this DAQ's lock ({quote(DaqLock.describe(look.holder))}); the run is told")
    elif args.verbose:
        if look.holder is None:
            _say(prog, f"no runner holds this DAQ's lock (Redis {shown})")
        else:
            _say(prog, f"the runner lock is held by a process of this host that no longer runs ({quote(DaqLock.describe(look.holder))}); going ahead")


def _say(prog: str, message: str) -> None:
    try:
        print(f"{prog}: {message}", file=sys.stderr)
    except (OSError, ValueError, AttributeError):  # no stderr to say it on: the exit code says it
        pass


def _print(result: Any) -> Optional[str]:
    """Print the result as indented JSON; ``None``, or why it could not be written."""
    try:
        print(json.dumps(result, indent=2))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and no traceback at exit.
        to_devnull(sys.stdout)
    except (OSError, ValueError, AttributeError) as exc:  # a full disk, a closed stdout
        to_devnull(sys.stdout)
        return getattr(exc, "strerror", None) or "standard output is closed"
    except RecursionError:  # replies are checked for depth; this is the last line of defence
        return "the result is nested too deeply to print"
    return None


def run_tool(prog: str, argv: Optional[Sequence[str]] = None) -> int:
    """Run the tool named ``prog`` with ``argv``; returns the exit code (argparse exits 2 itself)."""
    tool = TOOLS[prog]
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(prog, tool).parse_args(argv)
    # An empty -b "$UNSET" is a mistake, not a request for the default DAQ.
    url = args.url_base if args.url_base is not None else os.environ.get("STD_DAQ_API_URL") or protocol.DEFAULT_URL
    bound = _deadline.Deadline(args.timeout) if args.timeout is not None else _deadline.current()
    try:
        # Everything is checked before the first request, to Redis or to the DAQ.
        url = check_url(url)
        if prog == "std_cli_set_config":
            from ._config_file import load_config_file  # YAML: only this tool pays for it

            args.daq_config = load_config_file(args.config_file)
        redis_url = _redis_url(args, url) if tool.changes_daq else None
        kwargs = {} if args.timeout is None else {"timeout": args.timeout}
        with StdDaqClient(url_base=url, **kwargs) as client, _deadline.bounded(bound):
            if redis_url is not None:
                _look_at_lock(prog, args, redis_url, argv)
            result = tool.call(client, args)
    except ValueError as exc:
        _say(prog, f"error: {quote(redact_url(str(exc)), limit=None)}")
        return StdCliExit.USAGE
    except LockHeldError as exc:
        _say(prog, f"refused: {quote(exc, limit=None)}; --force goes ahead and tells the run")
        return StdCliExit.LOCKED
    except AcquisitionFailed as exc:
        status = exc.args[0]
        _print(status)  # what it can; the exit code says FAILED either way
        message = (status.get("acquisition") or {}).get("message")
        _say(prog, f"the acquisition FAILED: {quote(message)}")
        return StdCliExit.DAQ
    except StdDaqAdminException as exc:
        _say(prog, f"the DAQ refused: {exc}{_hint(prog, args, str(exc))}")
        return StdCliExit.DAQ
    except DeadlineExceeded as exc:
        if args.timeout is not None and bound.expired:
            _say(prog, f"not done within --timeout {args.timeout:g} s: {exc}")
        else:
            _say(prog, f"DAQ unreachable: {exc}")
        return StdCliExit.UNREACHABLE
    except DaqTransportError as exc:
        _say(prog, f"DAQ unreachable: {exc}")
        return StdCliExit.UNREACHABLE
    except DaqRunnerError as exc:
        _say(prog, f"error: {exc}")
        return StdCliExit.DAQ
    except KeyboardInterrupt:
        _say(prog, "interrupted")
        return StdCliExit.INTERRUPTED
    problem = _print(result)
    if problem is not None:
        _say(prog, f"error: cannot write the result: {problem}")
        return StdCliExit.DAQ
    return StdCliExit.OK


def _entry(prog: str) -> Callable[[], None]:
    def main() -> None:
        sys.exit(run_tool(prog))

    main.__name__ = prog.replace("std_cli_", "")
    main.__doc__ = TOOLS[prog].description
    return main


get_status = _entry("std_cli_get_status")
get_config = _entry("std_cli_get_config")
set_config = _entry("std_cli_set_config")
get_logs = _entry("std_cli_get_logs")
get_stats = _entry("std_cli_get_stats")
get_deploy_status = _entry("std_cli_get_deploy_status")
write_async = _entry("std_cli_write_async")
write_sync = _entry("std_cli_write_sync")
write_stop = _entry("std_cli_write_stop")
