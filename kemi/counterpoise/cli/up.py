"""``counterpoise up``: a balancer node (and the embedded Redis) in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import urllib.parse
from pathlib import Path

from counterpoise import clock, interpreter, processes, run_files
from counterpoise.cli import embedded
from counterpoise.cli.common import CliError, open_store
from counterpoise.cli.leftover import clear_leftover
from counterpoise.cli.reload import Reloader
from counterpoise.cli.shutdown import Shutdown
from counterpoise.core.settings import Settings, host_port, load_settings
from counterpoise.store.client import redact

NODE_OPTIONS = (
    "listen",
    "advertise",
    "peers",
    "workers",
    "shm_mb",
    "run_dir",
    "user",
    "group",
    "log_file",
    "tls_certificate",
    "tls_private_key",
    "metrics_listen",
    "trusted_upstreams",
)
"""Settings of the ``node`` group, and the trusted upstreams, that ``up`` also takes as
options (``--shm-mb`` for ``shm_mb``, ``--peer`` for ``peers``, ``--metrics`` for
``metrics_listen``, ``--trust`` for ``trusted_upstreams``); an option given wins over the file
and the environment."""
REPEATED_OPTIONS = ("listen", "peers", "trusted_upstreams")
"""Options given once per value, joined with commas as their setting is written."""


def add_node_options(up: argparse.ArgumentParser) -> None:
    up.add_argument(
        "--listen",
        action="append",
        help="SIP socket PROTO:HOST:PORT (udp, tcp, tls; IPv6 as [::1]; bare HOST:PORT is udp);"
        " repeat for more (default: the listen setting, udp:127.0.0.1:5060)",
    )
    up.add_argument("--advertise", help="public HOST[:PORT] for Via and Record-Route (NAT)")
    up.add_argument(
        "--peer",
        dest="peers",
        action="append",
        metavar="PROTO:HOST:PORT",
        help="the own socket of another node behind the same floating address, passed the"
        " replies that reach this one for its requests; repeat for more (default: none)",
    )
    up.add_argument("--workers", type=int, help="SIP worker processes (default 4)")
    up.add_argument("--shm-mb", type=int, help="Kamailio shared memory in MB (default 64)")
    up.add_argument("--run-dir", help="pid file, control sockets (default /run/counterpoise)")
    up.add_argument("--user", help="run Kamailio's processes as this user (-u)")
    up.add_argument("--group", help="and this group (-g)")
    up.add_argument("--log-file", help="Kamailio's log (default: stderr, the journal)")
    up.add_argument("--tls-certificate", help="PEM certificate of the tls sockets")
    up.add_argument("--tls-private-key", help="PEM private key of the tls sockets")
    up.add_argument(
        "--metrics",
        dest="metrics_listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)",
    )
    up.add_argument(
        "--trust",
        dest="trusted_upstreams",
        action="append",
        metavar="CIDR",
        help="an upstream (SBC, trunk) exempt from the flood limits: an address or a CIDR"
        " network; repeat for more (default: the trusted_upstreams setting, none)",
    )


def node_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with the node options given on the command line."""
    given = {name: getattr(args, name) for name in NODE_OPTIONS}
    for name in REPEATED_OPTIONS:
        if given[name] is not None:
            given[name] = ",".join(given[name])
    return settings.with_values(
        **{name: value for name, value in given.items() if value is not None}
    )


def redis_port(url: str) -> int:
    return urllib.parse.urlsplit(url).port or 6379


def start_node(
    settings: Settings,
    redis_url: str | None,
    run_dir: Path,
    started: list[processes.Process],
    log_path: Path | None = None,
) -> Settings:
    """Start the embedded Redis (when ``redis_url`` is None) and a balancer; every process
    started is appended to ``started`` for the caller to stop. Returns the node's settings."""
    sockets = settings.node.listen_sockets()
    clear_leftover(run_dir)  # before the port checks: a leftover Kamailio holds its port
    for sip in sockets:
        processes.check_free(sip)
    if settings.node.metrics_listen:
        processes.check_tcp_free(*metrics_address(settings.node.metrics_listen))
    if settings.node.user:
        processes.check_user(settings.node.user, settings.node.group)
    try:
        interpreter.check_imports()
    except interpreter.EmbeddingError as error:
        raise CliError(str(error)) from None
    if redis_url is None:
        redis_url = settings.redis.redis_url
        embedded_port = redis_port(redis_url)
        data_dir = embedded.data_dir(settings)
        acl = embedded.prepare(data_dir, settings.redis.key_prefix)
        print(f"starting the embedded Redis on 127.0.0.1:{embedded_port} (data in {data_dir})")
        started.append(processes.start_redis(embedded_port, data_dir, aclfile=acl))
        settings = embedded.as_role(settings, data_dir, "balancer")
        redis_url = settings.redis.redis_url
    node_id = settings.node.node_id or f"{os.uname().nodename}:{sockets[0].port}"
    settings = settings.with_values(redis_url=redis_url, node_id=node_id)
    open_store(settings, redis_url)  # fail early and clearly if Redis is unreachable
    print(f"starting Kamailio on {', '.join(map(str, sockets))}, Redis {redact(redis_url)}")
    started.append(processes.start_balancer(settings, run_dir, log_path))
    ctl, rpc = run_files.ctl_socket(run_dir), run_files.rpc_socket(run_dir)
    print(f"control socket: unixs:{ctl} (kamcmd -s unixs:{ctl}), JSON-RPC: {rpc}")
    print(f"balancer ready on {', '.join(sip.uri() for sip in sockets)} (node {node_id})")
    if settings.node.metrics_listen:
        print(f"Prometheus metrics on http://{settings.node.metrics_listen}/metrics")
    return settings


def metrics_address(text: str) -> tuple[str, int]:
    address = host_port(text)
    if address is None:
        raise CliError(f"--metrics {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return address


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # in order with Kamailio's log on stderr
    settings = node_settings(settings, args)
    # Absolute: Kamailio is given its pid file's path, by which a later up finds it again.
    run_dir = run_files.node_run_dir(settings).absolute()
    log_path = Path(settings.node.log_file) if settings.node.log_file else None
    started: list[processes.Process] = []
    shutdown = Shutdown()
    # Before anything starts: a SIGHUP during the start is kept for after it, not fatal.
    reloader = Reloader(
        lambda: node_settings(load_settings(), args), settings, run_files.rpc_socket(run_dir)
    )
    try:
        start_node(settings, args.redis, run_dir, started, log_path)
        print(f"Kamailio logs to {log_path or 'stderr'}; SIGHUP re-reads the config file;"
              " Ctrl-C stops everything")  # fmt: skip
        balancer = started[-1]
        while balancer.alive():
            reloader.reload_if_requested()
            clock.sleep_s(0.2)
        raise CliError(f"Kamailio exited with status {balancer.popen.returncode}")
    except KeyboardInterrupt:
        return 0
    finally:
        shutdown.begin()
        for proc in reversed(started):
            with contextlib.suppress(OSError):  # a closed stdout must not skip a stop
                print(f"stopping {proc.name} (pid {proc.pid})")
            proc.stop()
