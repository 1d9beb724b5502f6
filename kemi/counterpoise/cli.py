"""The ``counterpoise`` command: run a balancer, manage and inspect the pool.

    counterpoise up [--listen HOST:PORT] [--redis URL] [--workers N] [--run-dir DIR]
    counterpoise proxy add URI [--weight N] | rm URI | drain URI | undrain URI | list [--json]
    counterpoise watch             live table of the pool
    counterpoise location pin NAME PROXY | list | show NAME | rm NAME   (location_cli)
    counterpoise demo              the embedded default: Redis, balancer, demo pool, calls

Every subcommand takes ``--redis URL`` (default: ``COUNTERPOISE_REDIS_URL`` or the embedded
Redis). Errors print one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import redis

from counterpoise import location, procs, table
from counterpoise.settings import Settings, load_settings, to_environ
from counterpoise.sipuri import InvalidProxyUri, parse_proxy_uri
from counterpoise.store import ACTIVE, DRAINED, PoolStore, UnknownProxy, connect

DEFAULT_LISTEN = "127.0.0.1:5060"


class CliError(Exception):
    """An error for the operator: printed as one line, exit status 1."""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CliError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5060")
    return host, int(port)


def redis_port(url: str) -> int:
    return urllib.parse.urlsplit(url).port or 6379


def open_store(settings: Settings, url: str | None) -> PoolStore:
    client = connect(url or settings.redis_url, max(settings.redis_timeout_ms, 1000))
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        raise CliError(f"Redis at {url or settings.redis_url} is unreachable: {error}") from None
    return PoolStore(client, settings.key_prefix)


# --- up ---------------------------------------------------------------------------------------


def start_node(
    settings: Settings,
    listen: str,
    redis_url: str | None,
    workers: int,
    run_dir: Path,
    started: list[procs.Process],
    log_path: Path | None = None,
) -> Settings:
    """Start the embedded Redis (when ``redis_url`` is None) and a balancer; every process
    started is appended to ``started`` for the caller to stop. Returns the node's settings."""
    host, port = parse_listen(listen)
    location.Options.from_settings(settings)  # a bad location_* value: one line, exit 1
    procs.check_udp_free(host, port)
    if redis_url is None:
        redis_url = settings.redis_url
        embedded_port = redis_port(redis_url)
        print(f"starting the embedded Redis on 127.0.0.1:{embedded_port} ({run_dir / 'redis'})")
        started.append(procs.start_redis(embedded_port, run_dir / "redis"))
    node_id = settings.node_id or f"{os.uname().nodename}:{port}"
    settings = dataclasses.replace(settings, redis_url=redis_url, node_id=node_id)
    open_store(settings, redis_url)  # fail early and clearly if Redis is unreachable
    print(f"starting Kamailio on udp:{host}:{port}, Redis {redis_url}")
    started.append(
        procs.start_balancer(
            host, port, run_dir, to_environ(settings), settings.fr_timer_ms, workers, log_path
        )
    )
    print(f"balancer ready on sip:{host}:{port} (node {node_id})")
    return settings


def stop_on_sigterm() -> None:
    """Make SIGTERM end the foreground command the way Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="counterpoise-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    started: list[procs.Process] = []
    stop_on_sigterm()
    try:
        start_node(settings, args.listen, args.redis, args.workers, run_dir, started)
        print("Kamailio logs on stderr; Ctrl-C stops everything")
        balancer = started[-1]
        while balancer.alive():
            time.sleep(0.2)
        raise CliError(f"Kamailio exited with status {balancer.popen.returncode}")
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()


# --- proxy ------------------------------------------------------------------------------------


def cmd_proxy(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings, args.redis)
    try:
        if args.action == "list":
            return print_list(store, settings, args.json)
        uri = parse_proxy_uri(args.uri)
        if args.action == "add":
            if not (math.isfinite(args.weight) and args.weight > 0):
                raise CliError(f"--weight {args.weight}: must be a positive number")
            config = store.add(uri, args.weight)
            print(f"{uri} in the pool, base weight {config.base_weight:g}, {config.admin}")
        elif args.action == "rm":
            store.remove(uri)
            print(f"{uri} removed")
        else:
            admin = DRAINED if args.action == "drain" else ACTIVE
            store.set_admin(uri, admin)
            print(f"{uri} {admin}")
    except InvalidProxyUri as error:
        raise CliError(str(error)) from None
    except UnknownProxy as error:
        raise CliError(f"{error.args[0]} is not in the pool") from None
    except (redis.RedisError, OSError) as error:
        raise CliError(f"Redis error: {error}") from None
    return 0


def print_list(store: PoolStore, settings: Settings, as_json: bool) -> int:
    now_ms = int(time.time() * 1000)
    rows = table.pool_rows(store, settings, now_ms)
    if as_json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print(table.render(rows))
        for line in table.rejected_inputs(store, settings, now_ms):
            print(line)
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings, args.redis)
    return table.watch(store, settings, args.interval)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from counterpoise import demo

    return demo.run(settings, args)


# --- argument parsing -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="counterpoise", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis", help="Redis URL (default: COUNTERPOISE_REDIS_URL or embedded)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common], help="run the balancer in the foreground")
    up.add_argument("--listen", default=DEFAULT_LISTEN, help="SIP UDP address HOST:PORT")
    up.add_argument("--workers", type=int, default=4, help="SIP worker processes (default 4)")
    up.add_argument("--run-dir", help="directory for pid file, ctl socket, embedded Redis data")
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
    proxy.set_defaults(func=cmd_proxy)

    watch = sub.add_parser("watch", parents=[common], help="live table of the pool")
    watch.add_argument("--interval", type=float, default=1.0, help="refresh period in seconds")
    watch.set_defaults(func=cmd_watch)

    from counterpoise import location_cli  # imports this module: loaded once it is

    location_cli.add_parser(sub, common)

    demo = sub.add_parser("demo", help="embedded default: Redis, balancer, demo pool, calls")
    demo.add_argument("--listen", default=DEFAULT_LISTEN, help="balancer SIP address")
    demo.add_argument("--rate", type=float, default=30.0, help="calls per second (default 30)")
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until Ctrl-C")
    demo.add_argument(
        "--users",
        type=int,
        default=0,
        help="registrar proxies; N users register through the balancer and are called",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return args.func(args, settings)
    except (CliError, ValueError, procs.StartError) as error:
        print(f"counterpoise: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # `python -m counterpoise.cli` runs this file as __main__: call the copy other modules
    # import (location_cli), so its CliError is the one main() catches.
    from counterpoise.cli import main as imported_main

    sys.exit(imported_main())
