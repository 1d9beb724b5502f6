"""CPU per call of a balancer with its metrics endpoint on (scraped every second, route
times recorded) and off.

A small A/B run, not part of the full bench: one balancer in front of a SIPp UAS alone
(no downstream proxy, as the overhead bench), SIPp calls at ``RATE`` for ``SECONDS``, the
balancer's CPU seconds (Kamailio and every process it forked) divided by the calls; the
runs alternate off/on ``ROUNDS`` times so drift in the machine's load hits both alike.

    .venv/bin/python -m bench.metrics_cost
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from harness import testbed

from bench.contenders import group_cpu_seconds
from counterpoise import processes
from counterpoise.core.settings import Settings
from counterpoise.monitoring.read import scrape, value
from counterpoise.store.client import connect
from counterpoise.store.pool import PoolStore

RATE = 150
SECONDS = 20
ROUNDS = 3
WORKERS = 4


def one_run(run_dir: Path, redis_url: str, uas_uri: str, metrics: bool) -> float:
    """CPU milliseconds per call of one run."""
    port = processes.free_port()
    listen = f"127.0.0.1:{processes.free_port()}" if metrics else ""
    settings = Settings.of(
        redis_url=redis_url,
        node_id=f"bench:{port}",
        metrics_listen=listen,
        listen=f"udp:127.0.0.1:{port}",
        workers=WORKERS,
    )
    store = PoolStore(connect(redis_url, 1000), settings.redis.key_prefix)
    store.client.flushdb()
    store.add(uas_uri, 1)
    name = f"{'on' if metrics else 'off'}-{port}"
    proc = processes.start_balancer(settings, run_dir / name, log_path=run_dir / f"{name}.log")
    stop = threading.Event()
    scrapes = 0

    def keep_scraping() -> None:
        nonlocal scrapes
        while not stop.wait(1.0):
            with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as response:
                response.read()
            scrapes += 1

    scraper = threading.Thread(target=keep_scraping, daemon=True)
    try:
        time.sleep(2)  # the sync loop has its table
        if metrics:
            scraper.start()
        before = group_cpu_seconds(proc.pid)
        calls = RATE * SECONDS
        caller = testbed.Caller(f"127.0.0.1:{port}", run_dir / name, calls, RATE, hold_ms=0)
        result = caller.wait(SECONDS + 60)
        used = group_cpu_seconds(proc.pid) - before
        stop.set()
        if metrics:
            scraper.join()
            assert scrapes >= SECONDS - 2, scrapes
            samples = scrape(f"http://{listen}/metrics")
            count = value(samples, "counterpoise_route_seconds_count") or 0
            total = value(samples, "counterpoise_route_seconds_sum") or 0
            print(f"  route time: mean {total / count * 1e6:.0f} us over {count:.0f} requests")
        assert result.successful == calls, result.output[-1000:]
        return used * 1000 / calls
    finally:
        stop.set()
        proc.stop()


def main() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="cp-metrics-cost-"))
    redis_port = processes.free_port()
    redis = processes.start_redis(redis_port, run_dir / "redis")
    uas_port = processes.free_port()
    uas = testbed.start_uas(uas_port, run_dir)
    figures: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(ROUNDS):
            for metrics in (False, True):
                url = f"redis://127.0.0.1:{redis_port}/0"
                ms = one_run(run_dir, url, f"sip:127.0.0.1:{uas_port}", metrics)
                figures[metrics].append(ms)
                print(
                    f"metrics {'on ' if metrics else 'off'}: {ms:.3f} ms CPU per call", flush=True
                )
    finally:
        uas.stop()
        redis.stop()
    for metrics, values in figures.items():
        print(
            f"metrics {'on ' if metrics else 'off'}: median {statistics.median(values):.3f} ms"
            f" CPU per call over {len(values)} runs of {RATE * SECONDS} calls at {RATE}/s"
        )


if __name__ == "__main__":
    main()
