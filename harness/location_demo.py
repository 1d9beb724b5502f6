"""``scripts/demo.sh --users N``: the location server in the demo.

The demo proxies become registrars (each its own location table); N users register through
the balancer, which records each one's proxy in Redis; then the demo's calls go to those
users, and each call must reach the registrar holding its user (a wrong one answers 404).
The footer shows, per proxy, the users Redis says it holds, the users its own location table
holds, and the 404s it sent: equal columns and no 404 are the location server working.
"""

from __future__ import annotations

from pathlib import Path

from counterpoise import clock, processes
from counterpoise.cli import table
from counterpoise.core.settings import Settings
from counterpoise.store.keys import AOR
from counterpoise.store.location import LocationStore
from counterpoise.store.pool import PoolStore
from harness import testbed


def register(
    store: PoolStore, settings: Settings, target: str, run_dir: Path, users: int, port: int
) -> dict:
    """Register ``users`` users through the balancer at ``target`` with their Contact on
    ``port`` (where the UAS then answers), once every proxy is in the balancer's table; the
    Caller keyword arguments that call them in turn."""

    def pool_ready() -> bool:
        rows = table.pool_rows(store, settings, clock.wall_ms())
        return bool(rows) and all(row["state"] in ("up", "slowstart") for row in rows)

    processes.wait_for(pool_ready, 20, "the demo proxies to be up in the balancer's table")
    names = [f"user{n:04d}" for n in range(1, users + 1)]
    csv = testbed.users_csv(run_dir / "demo-users.csv", names, 3600)
    extra = ("-inf", str(csv))
    registering = testbed.Caller(
        target, run_dir, users, 50, 0, "register.xml", extra=extra, port=port
    )
    result = registering.wait(60 + users / 50)
    if result.failed or result.successful != users:
        raise processes.StartError(f"demo registrations: {result.successful} of {users} succeeded")
    print(f"{users} users registered through the balancer (Contact port {port})")
    scenario = testbed.derived_scenario(run_dir, "uac.xml", {"[service]": "[field0]"})
    return {"scenario": str(scenario), "extra": extra}


def footer(store: PoolStore, settings: Settings, pool: list[testbed.Downstream]) -> str:
    records = LocationStore(store.client, settings.redis.key_prefix).scan((AOR,))
    held: dict[str, int] = {}
    for entry in records:
        if entry.record is not None:
            held[entry.record.proxy] = held.get(entry.record.proxy, 0) + 1
    parts = []
    for ds in pool:
        stats = testbed.statistics(ds.ctl, "all")
        parts.append(
            f"{ds.name}: {held.get(ds.uri, 0)} in Redis, "
            f"{stats.get('usrloc:registered_users', 0)} in its table, "
            f"{stats.get('sl:404_replies', 0)} x 404"
        )
    return "registered users per proxy: " + "; ".join(parts)
