"""The ``counterpoise`` command: run a balancer, manage and inspect the pool.

    counterpoise up [--listen PROTO:HOST:PORT]... [--advertise HOST] [--peer PROTO:HOST:PORT]...
                    [--redis URL] [--workers N] [--shm-mb MB] [--user U] [--group G]
                    [--run-dir DIR] [--log-file FILE]
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
import sys
from collections.abc import Sequence

from counterpoise.cli import health
from counterpoise.core.settings import load_settings
from counterpoise.errors import CliError, StartError

HEALTH = "health"
"""keepalived runs ``counterpoise health`` every second on each node of a pair: it is parsed
with its own subcommand only, so that none of the others (Redis client, process control) is
imported for it."""


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's parser; their modules are imported here, not for ``health``."""
    from counterpoise.cli import dialog_key, users
    from counterpoise.cli import location as location_cli
    from counterpoise.cli.pool import cmd_proxy, cmd_watch
    from counterpoise.cli.up import add_node_options, cmd_up

    parser, sub, common = _skeleton()
    parser.add_argument("--version", action="version", version=f"counterpoise {version()}")

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


def health_parser() -> argparse.ArgumentParser:
    """The ``counterpoise`` parser knowing ``health`` alone (see HEALTH)."""
    parser, sub, common = _skeleton()
    health.add_parser(sub, common)
    return parser


def _skeleton() -> tuple[
    argparse.ArgumentParser, argparse._SubParsersAction, argparse.ArgumentParser
]:
    """The top-level parser, its subcommands' slot, and the options every subcommand takes."""
    parser = argparse.ArgumentParser(prog="counterpoise", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis", help="Redis URL (default: COUNTERPOISE_REDIS_URL or embedded)")
    sub = parser.add_subparsers(dest="command", required=True)
    return parser, sub, common


def version() -> str:
    import importlib.metadata  # here, not at the top: costly, and only --version asks

    try:
        return importlib.metadata.version("counterpoise")
    except importlib.metadata.PackageNotFoundError:  # run from a clone without installing
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = health_parser() if argv[:1] == [HEALTH] else build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return args.func(args, settings)
    except (CliError, ValueError, StartError) as error:
        print(f"counterpoise: {error}", file=sys.stderr)
        return 1
