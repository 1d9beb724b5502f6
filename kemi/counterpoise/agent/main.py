"""``counterpoise-agent``: options, then the agent's loop until SIGTERM or Ctrl-C (see
``agent.loop``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from counterpoise import clock
from counterpoise.agent.loop import DEFAULT_INTERVAL_MS, DEFAULT_TTL_MS, Agent, run_loop
from counterpoise.agent.sources import SOURCE_TIMEOUT_MS, CommandSource, KamailioSource, Source
from counterpoise.agent.usage import ProcessSet
from counterpoise.core.backoff import Backoff
from counterpoise.core.settings import Settings, load_settings
from counterpoise.core.sipuri import InvalidProxyUri, parse_proxy_uri
from counterpoise.store.pool import PoolStore

DEFAULT_RPC_SOCKET = Path("/run/kamailio/kamailio_rpc.sock")
"""Where Debian's Kamailio (its stock kamailio.cfg loads jsonrpcs) answers JSON-RPC."""


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="counterpoise-agent", description="Publish one SIP proxy's load to Redis."
    )
    parser.add_argument("--proxy", required=True, help="the proxy's URI as in the pool")
    parser.add_argument(
        "--redis",
        default=os.environ.get("COUNTERPOISE_REDIS_URL", settings.redis.redis_url),
        help="Redis URL (default: COUNTERPOISE_REDIS_URL, else the embedded Redis)",
    )
    parser.add_argument("--interval-ms", type=int, default=DEFAULT_INTERVAL_MS)
    parser.add_argument("--ttl-ms", type=int, default=DEFAULT_TTL_MS)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--pidfile", type=Path, help="pid file of the proxy's main process")
    which.add_argument("--process-name", help="every process of this name (e.g. kamailio)")
    parser.add_argument("--source", choices=("none", "kamailio", "command"), default="none")
    parser.add_argument(
        "--rpc",
        type=Path,
        default=DEFAULT_RPC_SOCKET,
        help="Kamailio's JSON-RPC datagram socket (jsonrpcs dgram_socket; --source kamailio;"
        f" default {DEFAULT_RPC_SOCKET}, Debian's)",
    )
    parser.add_argument("--command", help="shell command printing transactions in progress")
    parser.add_argument(
        "--capacity",
        type=float,
        help="transactions the proxy can work on at once (e.g. its SIP workers)",
    )
    parser.add_argument("--source-timeout-ms", type=int, default=SOURCE_TIMEOUT_MS)
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)",
    )
    return parser


def make_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Source | None:
    timeout_s = args.source_timeout_ms / 1000
    if args.source == "kamailio":
        return KamailioSource(args.rpc, timeout_s)
    if args.source == "command":
        if not args.command:
            parser.error("--source command needs --command 'CMD'")
        return CommandSource(args.command, timeout_s)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, format="counterpoise-agent: %(message)s")
    try:
        settings = load_settings()
    except ValueError as error:
        print(f"counterpoise-agent: {error}", file=sys.stderr)
        return 1
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    try:
        proxy = parse_proxy_uri(args.proxy)
    except InvalidProxyUri as error:
        parser.error(str(error))
    if args.interval_ms <= 0 or args.ttl_ms <= args.interval_ms:
        parser.error("need 0 < --interval-ms < --ttl-ms (a report must outlive the interval)")
    if args.capacity is not None and not (math.isfinite(args.capacity) and args.capacity > 0):
        parser.error("--capacity must be > 0")
    source = make_source(args, parser)
    agent = Agent(
        proxy,
        PoolStore.open(
            args.redis,
            settings.redis.key_prefix,
            settings.redis.redis_timeout_ms,
            settings.redis.redis_password_file,
        ),
        ProcessSet(pidfile=args.pidfile, name=args.process_name),
        source=source,
        capacity=args.capacity,
        ttl_ms=args.ttl_ms,
        backoff=Backoff.from_settings(settings),
    )
    if args.metrics:
        # Loaded only when asked for: the agent runs without prometheus_client otherwise.
        from counterpoise.agent import metrics as agent_metrics

        try:
            agent_metrics.serve(args.metrics, agent, clock.wall_ms)
        except (ValueError, OSError) as error:
            parser.error(f"--metrics {args.metrics}: {error}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_loop(agent, args.interval_ms, stop)
    return 0
