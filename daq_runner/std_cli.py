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
the deployment and checks the result (works on servers that refuse partial configs).
The file must be a regular file of at most 1 MiB holding a JSON object (nested at most
32 levels, no NaN or Infinity).

``std_cli_write_sync`` exits 1 when the acquisition ended ``FAILED`` (the status is
still printed).

Exit codes: 0 success; 1 the DAQ refused the request, answered wrongly, a deployment
failed, or (``std_cli_write_sync``) the acquisition FAILED; 2 bad usage (an option value,
a URL that is not http(s), an unreadable or invalid config file, an unknown config
field); 3 the DAQ could not be reached, did not answer within ``--timeout``, or the reply to a write
start or a config was lost (it may have taken effect: it is never sent twice); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, Sequence

from . import _deadline, protocol
from ._cli import OneLineArgumentParser
from ._streams import to_devnull
from ._text import quote, redact_url
from ._version import __version__
from .exit_codes import StdCliExit
from .client import MAX_TIMEOUT_S, StdDaqClient, check_url
from .exceptions import DaqRunnerError, DaqTransportError, DeadlineExceeded, StdDaqAdminException

__all__ = ["TOOLS", "run_tool", "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH"]

# A DAQ config is a few hundred bytes, three levels deep.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = 32


class UsageError(Exception):
    """Bad input from the command line (exit 2)."""


class AcquisitionFailed(Exception):
    """``std_cli_write_sync``: the acquisition ended FAILED (exit 1, after printing the status)."""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _read_config_file(path: str) -> dict:
    """The JSON object in ``path``: a regular file of at most MAX_CONFIG_BYTES, shallow, finite numbers.

    Never blocks: a FIFO, a device (``/dev/zero``) or a directory is refused before reading.
    """
    shown = quote(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UsageError(f"config file {shown!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"config file {shown!r} is a directory") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read config file {shown!r}: {quote(getattr(exc, 'strerror', None) or exc)}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"config file {shown!r} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"config file {shown!r} is not a regular file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise UsageError(f"config file {shown!r} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read config file {shown!r}: {quote(exc.strerror or exc)}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"config file {shown!r} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file {shown!r} is not UTF-8 text: {quote(exc)}") from None
    try:
        config = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise UsageError(f"config file {shown!r} is nested more than {MAX_CONFIG_DEPTH} levels deep") from None
    except ValueError as exc:
        raise UsageError(f"config file {shown!r} is not JSON: {quote(exc)}") from None
    if not isinstance(config, dict):
        raise UsageError(f"config file {shown!r} must hold a JSON object, not {protocol._json_kind(config)}")
    if protocol.nesting_depth(config, MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH:
        raise UsageError(f"config file {shown!r} is nested more than {MAX_CONFIG_DEPTH} levels deep")
    return config


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
        return client.update_config(args.daq_config).config
    return client.set_config(args.daq_config)


def _set_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_file", help="JSON file with the config fields (at most 1 MiB)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="send the current config with the file's fields changed (works on servers that refuse "
        "partial configs), wait for the deployment and check the result",
    )


@dataclass(frozen=True)
class Tool:
    """One CLI tool: its description, extra arguments and what it calls."""

    description: str
    call: Callable[[StdDaqClient, argparse.Namespace], object]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    epilog: Optional[str] = None


def _file_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_file", help="absolute path of the HDF5 file the DAQ writes")
    parser.add_argument("n_images", type=_positive_int, help="number of images to write")


TOOLS = {
    "std_cli_get_status": Tool("Get the Standard DAQ writer status.", lambda c, a: c.get_status()),
    "std_cli_get_config": Tool("Get the Standard DAQ configuration.", lambda c, a: c.get_config()),
    "std_cli_set_config": Tool(
        "Set (part of) the Standard DAQ configuration from a JSON file.",
        _set_config,
        _set_config_args,
        "Without --merge the file is sent as given; the last rest_v2 server version refuses partial configs.",
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
    ),
    "std_cli_write_sync": Tool(
        "Write images to a file and return when done (at most 60 s).",
        _write_sync,
        _file_args,
        "Exit status 1 when the acquisition ended FAILED (the status is printed all the same).",
    ),
    "std_cli_write_stop": Tool("Stop writing (also resets an UNKNOWN writer).", lambda c, a: c.stop_writer()),
}

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
    tool.add_arguments(parser)
    return parser


def _error(prog: str, message: str) -> None:
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
    args = _parser(prog, tool).parse_args(argv)
    # An empty -b "$UNSET" is a mistake, not a request for the default DAQ.
    url = args.url_base if args.url_base is not None else os.environ.get("STD_DAQ_API_URL") or protocol.DEFAULT_URL
    bound = _deadline.Deadline(args.timeout) if args.timeout is not None else _deadline.current()
    try:
        url = check_url(url)
        if prog == "std_cli_set_config":
            args.daq_config = _read_config_file(args.config_file)
        kwargs = {} if args.timeout is None else {"timeout": args.timeout}
        with StdDaqClient(url_base=url, **kwargs) as client, _deadline.bounded(bound):
            result = tool.call(client, args)
    except (UsageError, ValueError) as exc:
        _error(prog, f"error: {quote(redact_url(str(exc)), limit=None)}")
        return StdCliExit.USAGE
    except AcquisitionFailed as exc:
        status = exc.args[0]
        _print(status)  # what it can; the exit code says FAILED either way
        message = (status.get("acquisition") or {}).get("message")
        _error(prog, f"the acquisition FAILED: {quote(message)}")
        return StdCliExit.DAQ
    except StdDaqAdminException as exc:
        _error(prog, f"the DAQ refused: {exc}")
        return StdCliExit.DAQ
    except DeadlineExceeded as exc:
        if args.timeout is not None and bound.expired:
            _error(prog, f"not done within --timeout {args.timeout:g} s: {exc}")
        else:
            _error(prog, f"DAQ unreachable: {exc}")
        return StdCliExit.UNREACHABLE
    except DaqTransportError as exc:
        _error(prog, f"DAQ unreachable: {exc}")
        return StdCliExit.UNREACHABLE
    except DaqRunnerError as exc:
        _error(prog, f"error: {exc}")
        return StdCliExit.DAQ
    except KeyboardInterrupt:
        _error(prog, "interrupted")
        return StdCliExit.INTERRUPTED
    problem = _print(result)
    if problem is not None:
        _error(prog, f"error: cannot write the result: {problem}")
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
