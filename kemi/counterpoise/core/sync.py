"""The sync loop: what Kamailio's timer process does every tick.

One process per balancer node runs it (rtimer, every ``CP_SYNC_TIMER`` of ``kamailio.cfg``,
200 ms). Each tick it

1. reads ``cp:pool:version`` and the agents' load reports in one round trip, and reloads the
   proxy list when the version changed (it keeps the last list it had while Redis is
   unreachable); reports announced for proxies not in the pool are rejected;
   in the same Guarded call it writes what this node sends to each proxy
   (``cp:sends:<node>``) and reads the other live nodes' (``policy.share``): a node that
   cannot reach Redis keeps the peers it read last;
2. merges what every SIP worker counted since the last tick (``Tally`` deltas), the
   latest ``X-CP-Load`` of each proxy's replies, and which proxies replied at all;
3. folds those windows into what it observed of each proxy and recomputes the weights
   (``policy``, with the fresh reported loads from ``load.LoadBook``) and the in-flight
   limits (from this node's share of each proxy's throughput over every node);
4. hands the new table to the SIP workers through shared memory;
5. sends the probes that are due;
6. every ``publish_interval_ms``, writes the weights and their inputs to Redis, and the
   edge's counters (``cpedge``) into ``cp:rejects:<node>`` as ``edge:<name>``, and drops
   in-flight drift (below).

In-flight drift: a SIP worker counts a relayed request in flight and its outcome takes it
off again. Should an attempt's outcome never be counted (a worker that died mid-transaction,
a bug), its proxy would look busier forever and power-of-two choices would starve it. The
counts are kept per epoch of 200 s (``attempts.INFLIGHT_EPOCH_MS``), longer than tm lets any
transaction live, so step 6 also drops the counts of epochs no attempt can still be in,
and counts what they held (``inflight_corrected``): drift heals within 400 s.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from counterpoise.core import admission, load
from counterpoise.core.attempts import RetryBudget
from counterpoise.core.backoff import Guarded
from counterpoise.core.policy import share, shed_limit
from counterpoise.core.policy.health import Health, State
from counterpoise.core.policy.observed import Observed, new_observed, observe_pool
from counterpoise.core.policy.weights import Weighting, weigh
from counterpoise.core.pool import Admin, ProxyConfig
from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally
from counterpoise.core.untrusted import BadRecord, untrusted

EDGE_COUNTER_PREFIX = "edge:"
"""The edge's counters (``cpedge``) are published in ``cp:rejects:<node>`` under this prefix."""


class SharedState(Protocol):
    """The node's shared memory, as the sync loop sees it."""

    def read_tallies(self) -> Mapping[str, Tally]:
        """Every worker's cumulative tallies, keyed ``"<worker> <proxy uri>"``."""

    def inflight(self, uri: str) -> int: ...

    def read_load_rejections(self) -> Mapping[str, str]:
        """Per proxy, the latest reason an ``X-CP-Load`` of its replies was rejected."""

    def read_location_rejections(self) -> tuple[int, str]:
        """Location records the SIP workers rejected since they started, and the latest
        reason (``"<key>: <why>"``; empty if none)."""

    def publish_table(self, entries: Sequence[RoutingEntry]) -> None:
        """Make ``entries`` the table every SIP worker routes with."""

    def read_heard(self) -> Mapping[str, int]:
        """``"<worker> <proxy uri>"`` -> stamp of the latest reply that is not a failure that
        worker got from that proxy (written at most every ``HEARD_EVERY_MS``)."""

    def retry_counts(self) -> tuple[int, int]:
        """Retries the workers spent and refused (over budget) since the node started."""

    def set_retry_tokens(self, tokens: int) -> None:
        """Retries the workers may spend until the next tick (``attempts.RetryBudget``)."""

    def drop_stale_inflight(self, now_ms: int) -> int:
        """Drop the in-flight counts of past epochs (``attempts.stale_inflight``); returns
        the requests they still counted."""

    def read_counters(self) -> Mapping[str, int]:
        """The edge's counters (refusals, unreadable input), summed over the processes."""

    def shed_count(self) -> int:
        """New initial requests the node shed past the pool's capacity since it started."""


class ProbeSender(Protocol):
    def send(self, uri: str, sent_ms: int) -> None: ...


class StateStore(Protocol):
    """The shared state (``store.pool.PoolStore`` on Redis), as the sync loop sees it."""

    errors: tuple[type[BaseException], ...]
    """What its calls raise when it is unavailable: the loop carries on with what it had."""

    def poll(self, uris: Sequence[str]) -> tuple[int | None, list[bytes | None]]:
        """The pool's version (None: unusable) and the raw load reports of ``uris``."""

    def versioned_pool(self) -> tuple[int | None, dict[str, ProxyConfig], dict[str, str]]:
        """The version, the usable pool records and the rejected ones (URI -> why)."""

    def announced_reports(self) -> list[str]:
        """Proxies whose agents announced a report since the last call."""

    def drop_announcements(self) -> None:
        """Forget the announcement subscription after a failure."""

    def publish_weights(
        self,
        node: str,
        records: Mapping[str, Mapping[str, object]],
        ttl_ms: int,
        now_ms: int,
        rejects: Mapping[str, int | str] | None = None,
    ) -> None: ...

    def exchange_sends(
        self, node: str, sends: str, ttl_ms: int, peers: Sequence[str], now_ms: int, live_ms: int
    ) -> tuple[list[str], dict[str, bytes]]:
        """Write what ``node`` sends; read the live nodes' names and the unexpired
        publications of ``peers`` (``store.pool.PoolStore.exchange_sends``)."""


class SyncLoop:
    def __init__(
        self,
        settings: Settings,
        node: str,
        shared: SharedState,
        probes: ProbeSender,
        store: StateStore,
        monotonic_ms: Callable[[], int],
        wall_ms: Callable[[], int],
        log: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.node = node
        self._shared = shared
        self._probes = probes
        self._store = store
        self._monotonic_ms = monotonic_ms
        self._wall_ms = wall_ms
        self._log = log
        self._redis = Guarded.with_backoff_of(
            settings, store.errors, log, "Redis", "routing on the last proxy table"
        )
        self._pool_version: int | None = -1
        self._rejected_pool: dict[str, str] = {}
        self._location_rejects = 0
        self.loads = load.LoadBook(settings, log)
        self.pool: dict[str, ProxyConfig] = {}
        self.observed: dict[str, Observed] = {}
        self.weights: dict[str, Weighting] = {}
        self.totals: dict[str, Tally] = {}
        self._previous: dict[str, Tally] = {}
        self._table: list[RoutingEntry] | None = None
        self._next_probe_ms = 0
        self._next_down_probe_ms = 0
        self._next_publish_ms = 0
        self._redis_synced_ms: int | None = None
        self._started_ms = monotonic_ms()
        self._retry_budget = RetryBudget(settings)
        self._heard: Mapping[str, int] = {}
        self._peer_names: list[str] = []
        self._peers: dict[str, dict[str, share.Sends]] = {}
        self._bad_peers: dict[str, str] = {}
        self.share = share.Share(1.0, 1, {})
        """This node's part of the pool (``policy.share``), from the latest peers read."""
        self.past_capacity = shed_limit.PastCapacity()
        """The node's sheds as the latest tick read them (``policy.shed_limit``)."""
        self.ejections_refused = 0
        """Ejections the cap (``max_ejected_fraction``) refused since the node started."""
        self.retries_spent = 0
        self.retries_refused = 0
        """Failover retries the workers spent, and refused over the budget, since the node
        started (as the latest tick read them)."""

    @property
    def redis_ok(self) -> bool:
        return not self._redis.down

    @property
    def redis_errors(self) -> int:
        return self._redis.errors

    def redis_sync_age_ms(self, now_ms: int) -> int:
        """Since the last tick that read Redis (since the loop started if none did)."""
        synced = self._redis_synced_ms
        return now_ms - (synced if synced is not None else self._started_ms)

    def tick(self) -> None:
        now = self._monotonic_ms()
        self._poll(now)
        windows = self._collect_windows()
        self._take_load_headers(windows, now)
        for uri in self.pool:
            self.totals[uri] = self.totals.get(uri, Tally()) + windows.get(uri, Tally())
        self._observe(windows, now)
        attempts = sum(w.requests_ok + w.requests_failed for w in windows.values())
        self.retries_spent, self.retries_refused = self._shared.retry_counts()
        tokens = self._retry_budget.tokens(now, attempts, self.retries_spent)
        self._shared.set_retry_tokens(tokens)
        self.share = share.node_share(self._own_sends(), self._peers)
        self.past_capacity = self.past_capacity.observe(self._shared.shed_count(), now)
        self.weights = weigh(
            {uri: c.base_weight for uri, c in self.pool.items()},
            {uri for uri, c in self.pool.items() if c.admin == Admin.DRAINED},
            self.observed,
            now,
            self.settings,
            {uri: self.loads.utilisation(uri, now) for uri in self.pool},
            {uri: self.share.shared_per_s(uri) for uri in self.pool},
            self.past_capacity.lately(now),
        )
        self._publish_table(now)
        self._send_probes(now)
        if now >= self._next_publish_ms:
            self._next_publish_ms = now + self.settings.redis.publish_interval_ms
            self._redis.call(now, self._publish_weights)
            drift = self._shared.drop_stale_inflight(now)
            if drift:
                self._log(f"{drift} requests counted in flight for over 200 s: dropped")

    def _send_probes(self, now: int) -> None:
        """Every proxy each ``probe_interval_ms``; a down one also each
        ``down_probe_interval_ms``, so a restarted proxy is found back soon."""
        every = now >= self._next_probe_ms
        if every:
            self._next_probe_ms = now + self.settings.probes.probe_interval_ms
        down = now >= self._next_down_probe_ms
        if down:
            self._next_down_probe_ms = now + self.settings.probes.down_probe_interval_ms
        for uri in self.pool:
            observed = self.observed.get(uri)
            if every or (down and observed is not None and observed.health.state == State.DOWN):
                self._probes.send(uri, now)

    def _observe(self, windows: Mapping[str, Tally], now: int) -> None:
        """Fold the windows into what is observed of every proxy, with the ejection cap."""
        active = {uri: c.base_weight for uri, c in self.pool.items() if c.admin != Admin.DRAINED}
        heard = self._shared.read_heard()
        changed = {key.split(" ", 1)[-1] for key, at in heard.items() if self._heard.get(key) != at}
        self._heard = heard
        inflight = {uri: self._shared.inflight(uri) for uri in self.pool}
        seen = observe_pool(self.observed, windows, active, now, self.settings, changed, inflight)
        if seen.ejections_refused:
            self.ejections_refused += seen.ejections_refused
            kept = [
                uri
                for uri, o in seen.observed.items()
                if o.health.ejection_refused and not self.observed[uri].health.ejection_refused
            ]
            fraction = self.settings.health.max_ejected_fraction
            self._log(
                f"kept in despite failures (max_ejected_fraction "
                f"{fraction:g} of the pool down): {', '.join(kept)}"
            )
        for uri, observed in seen.observed.items():
            before = self.observed.get(uri)
            if before is not None and observed.health.state != before.health.state:
                self._log(_state_change(uri, before.health, observed.health, now))
        self.observed = seen.observed

    # --- Redis -----------------------------------------------------------------------------

    def _poll(self, now: int) -> None:
        def poll() -> None:
            uris = list(self.pool)
            version, raw_reports = self._store.poll(uris)
            if version is None or version != self._pool_version:
                # An unusable version cannot tell a change: reload every tick meanwhile.
                version, pool, rejected = self._store.versioned_pool()
                self._take_rejected_pool(version, rejected)
                self._apply_pool(version, pool, now)
            wall = self._wall_ms()
            for uri, raw in zip(uris, raw_reports, strict=True):
                if uri in self.pool:
                    self.loads.take_report(uri, raw, now, wall)
            # After the reload: a proxy added this tick is not "unknown".
            self._check_announcements()
            self._exchange_sends(wall)

        if self._redis.call(now, poll):
            self._redis_synced_ms = now
        else:
            # Subscribe again once Redis is back.
            self._store.drop_announcements()

    def _own_sends(self) -> dict[str, share.Sends]:
        return {
            uri: share.Sends(self.observed[uri].throughput.per_s, self._shared.inflight(uri))
            for uri in self.pool
            if uri in self.observed
        }

    def _exchange_sends(self, wall_ms: int) -> None:
        """Publish what this node sends and take the live peers' publications (``share``).
        While Redis is unreachable this is not called: the last peers read stay."""
        redis = self.settings.redis
        names, raws = self._store.exchange_sends(
            self.node,
            share.encode(self._own_sends()),
            redis.share_ttl_ms,
            self._peer_names,
            wall_ms,
            redis.node_ttl_ms,
        )
        peers: dict[str, dict[str, share.Sends]] = {}
        for peer, raw in raws.items():
            try:
                peers[peer] = untrusted(functools.partial(share.decode, raw))
            except BadRecord as error:
                if self._bad_peers.get(peer) != str(error):
                    self._log(f"what node {peer} sends is unusable, left out: {error}")
                self._bad_peers[peer] = str(error)
        if set(peers) != set(self._peers):
            self._log(f"nodes sharing the pool: {', '.join(sorted([self.node, *peers]))}")
        self._peers = peers
        self._peer_names = names

    def _check_announcements(self) -> None:
        """Reject reports announced for proxies that are not in the pool (a misconfigured
        agent)."""
        for uri in self._store.announced_reports():
            if uri not in self.pool:
                self.loads.reject(load.REPORT, uri, "report for a proxy that is not in the pool")

    def _take_rejected_pool(self, version: int | None, rejected: Mapping[str, str]) -> None:
        """Count and log each unusable pool record (and version) once per new reason; the
        rest of the pool is used as usual."""
        if version is None:
            rejected = {**rejected, "pool version": "cp:pool:version is not an integer"}
        for uri, reason in rejected.items():
            if self._rejected_pool.get(uri) != reason:
                self.loads.reject(load.POOL, uri, reason)
        for uri in set(self._rejected_pool) - set(rejected):
            self.loads.accept(load.POOL, uri)
        self._rejected_pool = dict(rejected)

    def _apply_pool(self, version: int | None, pool: dict[str, ProxyConfig], now: int) -> None:
        for uri in pool:
            if uri not in self.observed:
                self.observed[uri] = new_observed(now)
        for uri in set(self.observed) - set(pool):
            del self.observed[uri]
            self.totals.pop(uri, None)
            self.loads.forget(uri)
        if set(pool) != set(self.pool):
            self._log(f"proxy list version {version}: {', '.join(sorted(pool)) or 'empty'}")
        self.pool = pool
        self._pool_version = version

    def _publish_weights(self) -> None:
        wall = self._wall_ms()
        now = self._monotonic_ms()
        self._take_location_rejections()
        total_weight = sum(w.weight for w in self.weights.values())
        records = {uri: self.record(uri, total_weight, now, wall) for uri in self.pool}
        rejects: dict[str, int | str] = dict(self.loads.rejected)
        rejects |= {f"{source}:last": text for source, text in self.loads.last_reason.items()}
        rejects |= {
            "retries_spent": self.retries_spent,
            "retries_refused": self.retries_refused,
            "ejections_refused": self.ejections_refused,
        }
        counters = self._shared.read_counters()
        rejects |= {EDGE_COUNTER_PREFIX + name: count for name, count in counters.items()}
        self._store.publish_weights(
            self.node, records, self.settings.redis.node_ttl_ms, wall, rejects
        )

    def _take_location_rejections(self) -> None:
        """Bring the workers' count of rejected location records into ``cp:rejects``."""
        count, reason = self._shared.read_location_rejections()
        if count > self._location_rejects:
            key, _, why = reason.partition(": ")
            self.loads.reject(load.LOCATION, key, why, count - self._location_rejects)
        self._location_rejects = count

    def record(self, uri: str, total_weight: float, now: int, wall: int) -> dict[str, object]:
        """What Redis shows of one proxy: its weight, its share and every input of both."""
        weighting = self.weights[uri]
        observed = self.observed[uri]
        window = observed.last_window
        return {
            "weight": round(weighting.weight, 4),
            "share": round(weighting.weight / total_weight, 4) if total_weight else 0.0,
            "state": weighting.state,
            "base_weight": weighting.base_weight,
            "latency_ms": _round(weighting.latency_ms),
            "latency_factor": round(weighting.latency_factor, 4),
            "utilisation": _round(weighting.utilisation, 4),
            "load_factor": round(weighting.load_factor, 4),
            "load": self.loads.describe(uri, now),
            "ramp": round(weighting.ramp, 4),
            "panic": weighting.panic,
            "consecutive_failures": observed.health.consecutive_failures,
            "saturated": observed.saturated(now, self.settings),
            "fr_timer_ms": weighting.fr_timer_ms,
            "silence_ms": observed.silence_ms(now),
            "silent": weighting.silent,
            "inflight_limit": weighting.inflight_limit,
            "service_ms": _round(observed.service.service_ms),
            "queue_wait_at_proxy_ms": round(observed.service.wait_ms),
            "node_share": round(self.share.share, 4),
            "nodes": self.share.nodes,
            "pool_throughput_per_s": round(self.share.pool_per_s.get(uri, 0.0), 2),
            "queue_wait_ms": round(observed.queue_wait_ms(now, self.settings)),
            "throughput_per_s": round(observed.throughput.per_s, 2),
            "ejection_refused": observed.health.ejection_refused,
            "inflight": self._shared.inflight(uri),
            "window": dataclasses.asdict(window),
            "first_reply_ms": _mean(window.first_reply_ms_sum, window.requests_ok),
            "final_reply_ms": _mean(window.final_reply_ms_sum, window.requests_ok),
            "probe_ms": _round(observed.probe_ms),
            "totals": dataclasses.asdict(self.totals.get(uri, Tally())),
            "updated_ms": wall,
        }

    # --- shared memory ---------------------------------------------------------------------

    def _collect_windows(self) -> dict[str, Tally]:
        """What all workers counted per proxy since the last tick."""
        current = dict(self._shared.read_tallies())
        windows: dict[str, Tally] = {}
        for key, tally in current.items():
            uri = key.split(" ", 1)[-1]
            previous = self._previous.get(key, Tally())
            delta = tally - previous
            if delta.went_back:
                delta = tally  # the worker restarted and counts from zero again
            windows[uri] = windows.get(uri, Tally()) + delta
        self._previous = current
        return windows

    def _take_load_headers(self, windows: Mapping[str, Tally], now: int) -> None:
        """The mean utilisation the window's ``X-CP-Load`` headers stated, and rejections."""
        reasons: Mapping[str, str] | None = None
        for uri, window in windows.items():
            if window.load_samples and uri in self.pool:
                mean = window.load_milli_sum / 1000 / window.load_samples
                self.loads.take_header(uri, now, mean)
            if window.load_headers_rejected:
                if reasons is None:
                    reasons = self._shared.read_load_rejections()
                reason = reasons.get(uri, "unusable X-CP-Load")
                self.loads.reject(load.HEADER, uri, reason, window.load_headers_rejected)

    def _publish_table(self, now_ms: int) -> None:
        table = [
            RoutingEntry(
                uri=uri,
                weight=round(w.weight, 6),
                queueing=w.queueing or w.standing_queue,
                inflight_limit=w.inflight_limit,
                long_wait=w.fr_timer_ms != self.settings.failover.fr_timer_ms,
                returning=admission.may_return(
                    w.weight,
                    w.state,
                    self.observed[uri].silence.last_life_ms,
                    now_ms,
                    self.settings.timers,
                ),
                set_aside=w.silent,
                hold_limit=w.hold_limit if shed_limit.shedding(self.settings.timers) else 0,
            )
            for uri, w in sorted(self.weights.items())
        ]
        if table != self._table:
            self._shared.publish_table(table)
            self._table = table


def _mean(total: int, count: int) -> float | None:
    return round(total / count, 2) if count else None


def _state_change(uri: str, before: Health, after: Health, now_ms: int) -> str:
    """The log line of a proxy's move from one state to another (an operator's journal)."""
    if after.state == State.DOWN:
        why = "missed probes" if after.down_by_probes else "no probe missed yet"
        return f"{uri} down: {after.consecutive_failures} failures in a row ({why})"
    if before.state == State.DOWN:
        return f"{uri} {after.state} after {now_ms - before.since_ms} ms down"
    if before.state == State.SLOW_START and after.state == State.UP:
        return f"{uri} up: slow start over"
    return f"{uri} {after.state}"


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
