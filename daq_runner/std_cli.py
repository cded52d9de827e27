"""The nine ``std_cli_*`` tools of the original client, defined once as a table.

Each tool takes ``--url_base URL`` (the README's name) or ``-b URL`` (the original's),
falling back to ``$STD_DAQ_API_URL`` and then ``http://127.0.0.1:5000``, and prints the
result as indented JSON. Errors are one line on stderr.

Exit codes: 0 success; 1 the DAQ refused the request or answered wrongly; 2 bad usage or
an unreadable config file; 3 the DAQ could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from . import api
from ._cli import OneLineArgumentParser
from .client import StdDaqClient
from .exceptions import DaqRunnerError, DaqTransportError, StdDaqAdminException

__all__ = ["TOOLS", "run_tool"]

EXIT_OK, EXIT_DAQ, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input from the command line (exit 2)."""


def _read_config_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        raise UsageError(f"config file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"config file {path!r} is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"config file {path!r} must hold a JSON object, not {type(config).__name__}")
    return config


def _write_request(args: argparse.Namespace) -> dict:
    return {"output_file": args.output_file, "n_images": args.n_images}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


@dataclass(frozen=True)
class Tool:
    """One CLI tool: its description, extra arguments and what it calls."""

    description: str
    call: Callable[[StdDaqClient, argparse.Namespace], object]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def _file_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_file", help="absolute path of the HDF5 file the DAQ writes")
    parser.add_argument("n_images", type=_positive_int, help="number of images to write")


TOOLS = {
    "std_cli_get_status": Tool("Get the Standard DAQ writer status.", lambda c, a: c.get_status()),
    "std_cli_get_config": Tool("Get the Standard DAQ configuration.", lambda c, a: c.get_config()),
    "std_cli_set_config": Tool(
        "Set (part of) the Standard DAQ configuration from a JSON file.",
        lambda c, a: c.set_config(a.daq_config),
        lambda p: p.add_argument("config_file", help="JSON file with the config fields to change"),
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
        lambda c, a: c.start_writer_sync(_write_request(a)),
        _file_args,
    ),
    "std_cli_write_stop": Tool("Stop writing (also resets an UNKNOWN writer).", lambda c, a: c.stop_writer()),
}


def _parser(prog: str, tool: Tool) -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=prog, description=tool.description)
    parser.add_argument(
        "--url_base",
        "-b",
        dest="url_base",
        default=None,
        metavar="URL",
        help=f"base URL of the REST API (default: $STD_DAQ_API_URL, else {api.DEFAULT_URL})",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per request (default 5)")
    tool.add_arguments(parser)
    return parser


def run_tool(prog: str, argv: Optional[Sequence[str]] = None) -> int:
    """Run the tool named ``prog`` with ``argv``; returns the exit code."""
    tool = TOOLS[prog]
    args = _parser(prog, tool).parse_args(argv)
    url = args.url_base or os.environ.get("STD_DAQ_API_URL") or api.DEFAULT_URL
    try:
        if prog == "std_cli_set_config":
            args.daq_config = _read_config_file(args.config_file)
        kwargs = {} if args.timeout is None else {"timeout": args.timeout}
        with StdDaqClient(url_base=url, **kwargs) as client:
            result = tool.call(client, args)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StdDaqAdminException as exc:
        print(f"{prog}: the DAQ refused: {exc}", file=sys.stderr)
        return EXIT_DAQ
    except DaqTransportError as exc:
        print(f"{prog}: DAQ unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except DaqRunnerError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_DAQ
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    return EXIT_OK


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
