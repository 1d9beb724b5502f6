"""``counterpoise up``: a balancer node (and the embedded Redis) in the foreground."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import tempfile
import time
import urllib.parse
from pathlib import Path

from counterpoise import processes
from counterpoise.cli import embedded
from counterpoise.cli.common import CliError, open_store
from counterpoise.core.settings import Settings, to_environ
from counterpoise.store.client import redact

DEFAULT_LISTEN = "127.0.0.1:5060"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CliError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5060")
    return host, int(port)


def redis_port(url: str) -> int:
    return urllib.parse.urlsplit(url).port or 6379


def start_node(
    settings: Settings,
    listen: str,
    redis_url: str | None,
    workers: int,
    run_dir: Path,
    started: list[processes.Process],
    log_path: Path | None = None,
) -> Settings:
    """Start the embedded Redis (when ``redis_url`` is None) and a balancer; every process
    started is appended to ``started`` for the caller to stop. Returns the node's settings."""
    host, port = parse_listen(listen)
    processes.check_udp_free(host, port)
    if redis_url is None:
        redis_url = settings.redis_url
        embedded_port = redis_port(redis_url)
        data_dir = embedded.data_dir(settings)
        acl = embedded.prepare(data_dir, settings.key_prefix)
        print(f"starting the embedded Redis on 127.0.0.1:{embedded_port} (data in {data_dir})")
        started.append(processes.start_redis(embedded_port, data_dir, aclfile=acl))
        settings = embedded.as_role(settings, data_dir, "balancer")
        redis_url = settings.redis_url
    node_id = settings.node_id or f"{os.uname().nodename}:{port}"
    settings = dataclasses.replace(settings, redis_url=redis_url, node_id=node_id)
    open_store(settings, redis_url)  # fail early and clearly if Redis is unreachable
    print(f"starting Kamailio on udp:{host}:{port}, Redis {redact(redis_url)}")
    started.append(
        processes.start_balancer(
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
    started: list[processes.Process] = []
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
