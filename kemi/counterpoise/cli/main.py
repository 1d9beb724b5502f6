"""The ``counterpoise`` command: run a balancer, manage and inspect the pool.

    counterpoise up [--listen PROTO:HOST:PORT]... [--advertise HOST] [--redis URL] [--workers N]
                    [--shm-mb MB] [--user U] [--group G] [--run-dir DIR] [--log-file FILE]
    counterpoise proxy add URI [--weight N] | rm URI | drain URI | undrain URI | list [--json]
    counterpoise watch             live table of the pool
    counterpoise location pin NAME PROXY | list | show NAME | rm NAME   (cli/location.py)
    counterpoise agent-user URI --password-file PATH   a Redis user for one agent (cli/users.py)
    counterpoise dialog-key rotate  a new key sealing the dialogs (cli/dialog_key.py)
    counterpoise health [--sip S] [--rpc PATH]  may this node hold a pair's address (cli/health.py)

Every subcommand takes ``--redis URL`` (default: ``COUNTERPOISE_REDIS_URL`` or the embedded
Redis). Errors print one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence

from counterpoise import processes
from counterpoise.cli import dialog_key, health, users
from counterpoise.cli import location as location_cli
from counterpoise.cli.common import CliError
from counterpoise.cli.pool import cmd_proxy, cmd_watch
from counterpoise.cli.up import add_node_options, cmd_up
from counterpoise.core.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="counterpoise", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"counterpoise {version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis", help="Redis URL (default: COUNTERPOISE_REDIS_URL or embedded)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common], help="run the balancer in the foreground")
    add_node_options(up)
    up.set_defaults(func=cmd_up)

    proxy = sub.add_parser("proxy", help="manage the pool of downstream proxies")
    actions = proxy.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="add a proxy or change its weight")
    add.add_argument("uri")
    add.add_argument("--weight", type=float, default=1.0, help="base weight (default 1)")
    for name, text in (
        ("rm", "remove a proxy"),
        ("drain", "no new dialogs; dialogs in progress continue"),
        ("undrain", "take new dialogs again"),
    ):
        actions.add_parser(name, parents=[common], help=text).add_argument("uri")
    listing = actions.add_parser("list", parents=[common], help="the pool with weights")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = actions.add_parser(
        "show", parents=[common], help="every input of one proxy's weight, on every node"
    )
    show.add_argument("uri")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    proxy.set_defaults(func=cmd_proxy)

    watch = sub.add_parser("watch", parents=[common], help="live table of the pool")
    watch.add_argument("--interval", type=float, default=1.0, help="refresh period in seconds")
    watch.add_argument("--once", action="store_true", help="print the table once and exit")
    watch.add_argument("--json", action="store_true", help="one JSON object per refresh")
    watch.set_defaults(func=cmd_watch)

    location_cli.add_parser(sub, common)
    users.add_parser(sub, common)
    dialog_key.add_parser(sub, common)
    health.add_parser(sub, common)

    return parser


def version() -> str:
    try:
        return importlib.metadata.version("counterpoise")
    except importlib.metadata.PackageNotFoundError:  # run from a clone without installing
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return args.func(args, settings)
    except (CliError, ValueError, processes.StartError) as error:
        print(f"counterpoise: {error}", file=sys.stderr)
        return 1
