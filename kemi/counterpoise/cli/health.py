"""``counterpoise health``: whether this node may hold a pair's floating address.

keepalived runs it every check interval (``deploy/keepalived/vrrp.conf``); status 0 lets the
node hold the address, 1 gives it up. Healthy means Kamailio's SIP workers answer an OPTIONS
on the node's own socket (never the floating address: the standby must pass too, and that
address may be the peer's) and the sync loop ticked recently: a node whose timer process is
stuck routes on weights nobody updates. Redis being away is no reason: the node routes on.

It runs every second on both nodes, so it imports only what it uses (no Redis client, no
process control): ``cli/main.py`` dispatches it before the other subcommands are imported,
and ``tests/unit/test_health.py`` holds it to that.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from counterpoise import clock, control, run_files, sip_probe
from counterpoise.core.settings import Settings
from counterpoise.core.sockets import parse_socket
from counterpoise.errors import CliError
from counterpoise.kamailio import htables

OPTIONS_TIMEOUT_S = 0.5
"""A node that takes longer to answer one OPTIONS is too slow to be given the calls."""

SYNC_TICKS_MISSED = 3
"""The node view is written once per ``publish_interval_ms``: three missed in a row is a
stuck timer process, not a slow tick."""


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    sip = parse_socket(args.sip) if args.sip else settings.node.listen_sockets()[0]
    rpc = Path(args.rpc) if args.rpc else run_files.rpc_socket(run_files.node_run_dir(settings))
    max_age_ms = args.max_sync_age_ms or SYNC_TICKS_MISSED * settings.redis.publish_interval_ms
    status = sip_probe.sip_options(sip.host, sip.port, OPTIONS_TIMEOUT_S, proto=sip.proto)
    if status != 200:
        raise CliError(f"{sip}: no 200 to OPTIONS (got {status})")
    age_ms = clock.wall_ms() - sync_stamp_ms(rpc)
    if age_ms > max_age_ms:
        raise CliError(f"the sync loop last ticked {age_ms} ms ago (limit {max_age_ms} ms)")
    print(f"healthy: {sip} answers, sync {age_ms} ms ago")
    return 0


def sync_stamp_ms(rpc: Path) -> int:
    """When the node's timer process last wrote its view (``htables.VIEW_NODE``)."""
    try:
        answer = control.call(rpc, "htable.get", htables.PROXY_VIEW.name, htables.VIEW_NODE)
        return int(json.loads(answer["item"]["value"])["updated_ms"])
    except control.RpcError as error:
        raise CliError(f"no answer on {rpc}: {error}") from None
    except (KeyError, TypeError, ValueError):
        raise CliError(f"{rpc}: no node view yet (the sync loop has not ticked)") from None


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "health", parents=[common], help="whether this node may hold the floating address"
    )
    parser.add_argument("--sip", help="the node's own socket (default: the first --listen)")
    parser.add_argument("--rpc", help="Kamailio's JSON-RPC socket (default: in the run folder)")
    parser.add_argument(
        "--max-sync-age-ms",
        type=int,
        default=0,
        help=f"unhealthy past this sync age (default: {SYNC_TICKS_MISSED} publish intervals)",
    )
    parser.set_defaults(func=cmd_health)
