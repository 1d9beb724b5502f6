"""``counterpoise location``: the operator's view of the location server's records.

    counterpoise location pin NAME PROXY     pin an AOR (user@host, sip:user@host) or a domain
    counterpoise location list [--kind K] [--json]
    counterpoise location show NAME [--json] which proxy an AOR or a Call-ID maps to, and why
    counterpoise location rm NAME            delete every record named NAME (pin, registration,
                                             domain pin, dialog)

Errors print one line and exit 1, as every ``counterpoise`` command.
"""

from __future__ import annotations

import argparse
import json

from counterpoise import clock
from counterpoise.cli.common import CliError, open_location_store, open_store
from counterpoise.core import location
from counterpoise.core.settings import Settings
from counterpoise.core.sipuri import InvalidProxyUri, parse_proxy_uri
from counterpoise.store.client import ERRORS
from counterpoise.store.keys import AOR, DIALOG, DOMAIN, PIN
from counterpoise.store.keys import LOCATION_KINDS as KINDS
from counterpoise.store.location import Entry, LocationStore
from counterpoise.store.pool import PoolStore

SOURCES = {PIN: "AOR pin", AOR: "registration", DOMAIN: "domain pin", DIALOG: "dialog"}


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("location", help="records of the location server")
    actions = parser.add_subparsers(dest="action", required=True)
    pin = actions.add_parser("pin", parents=[common], help="pin an AOR or a domain to a proxy")
    pin.add_argument("name", help="user@host, sip:user@host or a domain")
    pin.add_argument("proxy", help="proxy SIP URI, e.g. sip:10.0.0.11:5060")
    listing = actions.add_parser("list", parents=[common], help="every record")
    listing.add_argument("--kind", choices=KINDS, help="only records of this kind")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = actions.add_parser("show", parents=[common], help="where an AOR or Call-ID goes")
    show.add_argument("name", help="user@host, sip:user@host, or a Call-ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    rm = actions.add_parser("rm", parents=[common], help="delete the records named NAME")
    rm.add_argument("name", help="user@host, a domain, or a Call-ID")
    parser.set_defaults(func=cmd_location)


def cmd_location(args: argparse.Namespace, settings: Settings) -> int:
    store = open_location_store(settings, args.redis)
    try:
        if args.action == "pin":
            return pin(store, open_store(settings, args.redis), args.name, args.proxy)
        if args.action == "list":
            return print_list(store, args.kind, args.json)
        if args.action == "show":
            return show(store, args.name, args.json)
        return remove(store, args.name)
    except (location.InvalidName, InvalidProxyUri) as error:
        raise CliError(str(error)) from None
    except ERRORS as error:
        raise CliError(f"Redis error: {error}") from None


def pin(store: LocationStore, pool: PoolStore, name: str, proxy: str) -> int:
    kind, key = location.parse_name(name)
    uri = parse_proxy_uri(proxy)
    store.put(PIN if kind == "aor" else DOMAIN, key, location.Record(uri, clock.wall_ms()))
    print(f"{key} pinned to {uri}")
    if pool.get(uri) is None:
        print(f"note: {uri} is not in the pool; until it is, location_fallback applies")
    return 0


def print_list(store: LocationStore, kind: str | None, as_json: bool) -> int:
    rows = [_row(entry) for entry in store.scan((kind,) if kind else KINDS)]
    rows.sort(key=lambda row: (KINDS.index(row["kind"]), row["name"]))
    if as_json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    print(f"{'kind':<7} {'name':<40} {'proxy':<32} expires")
    for row in rows:
        ttl = "never" if row["ttl_s"] is None else f"in {row['ttl_s']} s"
        print(f"{row['kind']:<7} {row['name']:<40} {row['proxy'] or '(unreadable)':<32} {ttl}")
    print(f"{len(rows)} records")
    return 0


def _row(entry: Entry) -> dict:
    record = entry.record
    row = {
        "kind": entry.kind,
        "name": entry.name,
        "proxy": record.proxy if record else None,
        "since_ms": record.since_ms if record else None,
        "ttl_s": None if entry.ttl_ms < 0 else round(entry.ttl_ms / 1000),
    }
    if record and entry.kind == DIALOG:
        row["from_tag"], row["to_tag"] = record.from_tag, record.to_tag
    return row


def show(store: LocationStore, name: str, as_json: bool) -> int:
    """Where a request for this AOR, or an in-dialog request of this Call-ID, goes."""
    dialog = store.get(DIALOG, name.strip())
    if dialog is not None:
        result = {"name": name.strip(), "proxy": dialog.proxy, "source": "dialog"}
        result |= {"from_tag": dialog.from_tag, "to_tag": dialog.to_tag}
    else:
        kind, key = location.parse_name(name)
        if kind != "aor":
            raise CliError(f"{name!r} is neither user@host nor a known Call-ID")
        found = location.holder(*store.lookup(key, key.rpartition("@")[2]))
        if found is None:
            raise CliError(f"no record for {key}: requests for it are routed by weight")
        result = {"name": key, "proxy": found.proxy, "source": found.source}
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        source = SOURCES.get(result["source"], result["source"])
        print(f"{result['name']} -> {result['proxy']} ({source})")
    return 0


def remove(store: LocationStore, name: str) -> int:
    """Delete every record called ``name``: AOR pin and registration, domain pin, dialog."""
    targets = [(DIALOG, name.strip())]
    try:
        kind, key = location.parse_name(name)
        targets += [(PIN, key), (AOR, key)] if kind == "aor" else [(DOMAIN, key)]
    except location.InvalidName:
        pass
    removed = [f"{SOURCES[kind]} {key}" for kind, key in targets if store.delete(kind, key)]
    if not removed:
        raise CliError(f"no record for {name}")
    print("removed " + ", ".join(removed))
    return 0
