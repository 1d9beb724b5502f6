"""``counterpoise proxy`` and ``counterpoise watch``: the operator's pool and its table."""

from __future__ import annotations

import argparse
import json
import sys

from counterpoise import clock
from counterpoise.cli import table
from counterpoise.cli.common import CliError, open_store
from counterpoise.core.pool import Admin, check_base_weight
from counterpoise.core.settings import Settings
from counterpoise.core.sipuri import InvalidProxyUri, parse_proxy_uri
from counterpoise.core.untrusted import BadRecord
from counterpoise.store.client import ERRORS
from counterpoise.store.pool import PoolStore, UnknownProxy


def cmd_proxy(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings, args.redis)
    try:
        if args.action == "list":
            return print_list(store, settings, args.json)
        uri = parse_proxy_uri(args.uri)
        if args.action == "show":
            return print_show(store, settings, uri, args.json)
        if args.action == "add":
            config = store.add(uri, check_base_weight(args.weight))
            print(f"{uri} in the pool, base weight {config.base_weight:g}, {config.admin}")
        elif args.action == "rm":
            store.remove(uri)
            print(f"{uri} removed")
        else:
            admin = Admin.DRAINED if args.action == "drain" else Admin.ACTIVE
            store.set_admin(uri, admin)
            print(f"{uri} {admin}")
    except (InvalidProxyUri, BadRecord) as error:
        raise CliError(str(error)) from None
    except UnknownProxy as error:
        raise CliError(f"{error.args[0]} is not in the pool") from None
    except ERRORS as error:
        raise CliError(f"Redis error: {error}") from None
    return 0


def print_list(store: PoolStore, settings: Settings, as_json: bool) -> int:
    now_ms = clock.wall_ms()
    rows = table.pool_rows(store, settings, now_ms)
    if as_json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print(table.report(store, settings, now_ms))
    return 0


def print_show(store: PoolStore, settings: Settings, uri: str, as_json: bool) -> int:
    """Every input of one proxy's weight, as each live node published it."""
    config = store.pool().get(uri)
    if config is None:
        raise UnknownProxy(uri)
    published = store.node_weights(clock.wall_ms(), settings.redis.node_ttl_ms)
    records = {node: by_uri[uri] for node, by_uri in sorted(published.items()) if uri in by_uri}
    if as_json:
        shown = {"uri": uri, "admin": config.admin, "base_weight": config.base_weight}
        print(json.dumps(shown | {"nodes": records}, indent=2, sort_keys=True))
        return 0
    print(f"{uri}  admin {config.admin}, base weight {config.base_weight:g}")
    if not records:
        print("  no live node has published it yet")
    for node, record in records.items():
        print(f"node {node}:")
        for key, value in _flatten(record):
            print(f"  {key:<34} {value}")
    return 0


def _flatten(record: dict, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, value)`` of a nested record, in key order."""
    lines: list[tuple[str, object]] = []
    for key, value in sorted(record.items()):
        if isinstance(value, dict) and value:
            lines += _flatten(value, f"{prefix}{key}.")
        else:
            lines.append((prefix + key, "-" if value is None else value))
    return lines


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings, args.redis)
    return table.watch(
        store,
        settings,
        args.interval,
        once=args.once,
        as_json=args.json,
        screen=sys.stdout.isatty(),
    )
