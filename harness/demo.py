"""The demo, ``scripts/demo.sh`` (``python -m harness.demo`` from a clone): the embedded
default, end to end, on this host.

Starts the embedded Redis, a balancer, a SIPp UAS and three downstream Kamailio proxies of
unequal capacity, each with its load agent (capacity = its workers), enters the proxies in
Redis with equal base weights, sends SIPp calls through the balancer and shows the live
table: the weights find the capacities by themselves. The balancer and each agent serve
Prometheus metrics on free local ports, printed under the table. Ctrl-C (or SIGTERM, or
``--duration``) stops everything it started.

    python -m harness.demo [--listen PROTO:HOST:PORT] [--rate N] [--duration S] [--users N]

Errors print one line on stderr and exit with status 1, as ``counterpoise``'s do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from counterpoise import processes
from counterpoise.cli import table, up
from counterpoise.cli.common import CliError, open_admin_store, open_store
from counterpoise.cli.shutdown import Shutdown
from counterpoise.cli.users import make_agent_user
from counterpoise.core.settings import Settings, load_settings
from harness import location_demo, testbed

DEMO_POOL = (("big", 4), ("medium", 2), ("small", 1))
"""Name and worker count of each demo proxy."""

DEMO_DELAY_MS = 50
"""Each demo proxy's workers sleep 50 ms per INVITE: capacities 80, 40 and 20 calls/s. The
capacity comes from sleeping, not from the two CPU cores, so the demo runs on a laptop."""

DEMO_HOLD_MS = 2000
"""How long each demo call stays up."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.sh", description="embedded default: Redis, balancer, demo pool, calls"
    )
    parser.add_argument("--listen", help="balancer SIP address (default: the listen setting)")
    parser.add_argument("--rate", type=float, default=30.0, help="calls per second (default 30)")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until Ctrl-C")
    parser.add_argument(
        "--users",
        type=int,
        default=0,
        help="registrar proxies; N users register through the balancer and are called",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(load_settings(), args)
    except (CliError, ValueError, processes.StartError) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="counterpoise-demo-"))
    started: list[processes.Process] = []
    pool: list[testbed.Downstream] = []
    caller: testbed.Caller | None = None
    shutdown = Shutdown()
    if args.listen:
        settings = settings.with_values(listen=args.listen)
    try:
        if not settings.redis.redis_data_dir:  # a demo's pool is throwaway: not the operator's
            settings = settings.with_values(redis_data_dir=str(run_dir / "redis"))
        operator = settings
        metrics = settings.node.metrics_listen or f"127.0.0.1:{processes.free_port()}"
        settings = settings.with_values(metrics_listen=metrics)
        settings = up.start_node(settings, None, run_dir, started, run_dir / "balancer.log")
        store = open_store(operator, None)  # the embedded Redis's operator
        admin = open_admin_store(operator, None)
        redis_port = up.redis_port(settings.redis.redis_url)
        metrics_urls = [f"balancer http://{metrics}/metrics"]
        uas_port = processes.free_port()
        if not args.users:  # with users, the UAS takes their Contact port after they register
            started.append(testbed.start_uas(uas_port, run_dir))
        for name, workers in DEMO_POOL:
            ds = testbed.Downstream(
                name, processes.free_port(), workers, f"sip:127.0.0.1:{uas_port}", run_dir,
                registrar=args.users > 0,
            )  # fmt: skip
            pool.append(ds)
            ds.start().set_delay_ms(DEMO_DELAY_MS)
            store.add(ds.uri, 1.0)  # before its agent reports: a report needs its proxy
            agent_metrics = f"127.0.0.1:{processes.free_port()}"
            metrics_urls.append(f"agent {name} http://{agent_metrics}/metrics")
            agent_source = [
                "--source", "kamailio", "--rpc", str(ds.rpc), "--metrics", agent_metrics
            ]  # fmt: skip
            password_file = run_dir / f"agent-{name}.password"
            user = make_agent_user(admin, ds.uri, password_file)
            agent_url = f"redis://{user}@127.0.0.1:{redis_port}/0"
            agent_env = {"COUNTERPOISE_REDIS_PASSWORD_FILE": str(password_file)}
            started.append(testbed.start_agent(ds, agent_url, agent_source, workers, agent_env))
            print(f"demo proxy {name}: {ds.uri}, {workers} workers x {DEMO_DELAY_MS} ms")
        first = settings.node.listen_sockets()[0]
        host, port = first.host, first.port
        calls = int(args.rate * args.duration) if args.duration else 10_000_000
        users: dict = {}
        if args.users:
            target = f"{host}:{port}"
            users = location_demo.register(store, settings, target, run_dir, args.users, uas_port)
            started.append(testbed.start_uas(uas_port, run_dir))
        caller = testbed.Caller(f"{host}:{port}", run_dir, calls, args.rate, DEMO_HOLD_MS, **users)

        def footer() -> str:
            capacities = ", ".join(
                f"{ds.name} {ds.uri} ~{ds.workers * 1000 // DEMO_DELAY_MS} calls/s" for ds in pool
            )
            return (
                f"SIPp: {args.rate:g} calls/s through sip:{host}:{port}; capacities: {capacities}"
                f"\nPrometheus metrics: {', '.join(metrics_urls)}"
                f"\nlogs in {run_dir}; try"
                f" `COUNTERPOISE_REDIS_DATA_DIR={operator.redis.redis_data_dir} counterpoise"
                " proxy drain URI` in another terminal; Ctrl-C stops the demo"
            ) + ("\n" + location_demo.footer(store, settings, pool) if args.users else "")

        screen = sys.stdout.isatty()
        return table.watch(store, settings, 1.0, footer, args.duration, screen=screen)
    except KeyboardInterrupt:
        return 0
    finally:
        shutdown.begin()
        if caller:
            caller.stop()
        for ds in pool:
            ds.stop()
        for proc in reversed(started):
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
