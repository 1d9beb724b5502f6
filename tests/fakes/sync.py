"""What the sync loop is given, faked: a clock, the node's shared memory, the probe sender and
an in-memory store; and ``Harness``, a ``SyncLoop`` wired to them on any ``StateStore`` (the
in-memory one in unit tests, ``store.pool.PoolStore`` on a real Redis in integration tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from counterpoise.core.dialog_seal import DialogKey
from counterpoise.core.location import PendingWrite, Record, within_cap
from counterpoise.core.pool import Admin, ProxyConfig
from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.settings import Settings
from counterpoise.core.sync import StateStore, SyncLoop
from counterpoise.core.tally import Tally
from counterpoise.store.dialog_keys import parse_ring
from counterpoise.store.keys import AOR, DIALOG, DOMAIN, PIN
from counterpoise.store.location import DialogFlush

WALL_EPOCH_MS = 1_700_000_000_000


class FakeClock:
    def __init__(self, start_ms: int = 0) -> None:
        self.now = start_ms

    def monotonic_ms(self) -> int:
        return self.now

    def wall_ms(self) -> int:
        return WALL_EPOCH_MS + self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


class FakeShared:
    """The node's shared memory as a few dicts (implements ``sync.SharedState``)."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}
        self.inflight_counts: dict[str, int] = {}
        self.tables: list[list[RoutingEntry]] = []
        self.header_reasons: dict[str, str] = {}
        self.location_rejections = (0, "")
        self.retries_spent = 0
        self.retries_refused = 0
        self.retry_tokens: int | None = None
        self.heard: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self.sheds = 0

    def read_tallies(self) -> Mapping[str, Tally]:
        return dict(self.tallies)

    def inflight(self, uri: str) -> int:
        return self.inflight_counts.get(uri, 0)

    def publish_table(self, entries: Sequence[RoutingEntry]) -> None:
        self.tables.append(list(entries))

    def read_load_rejections(self) -> Mapping[str, str]:
        return dict(self.header_reasons)

    def read_location_rejections(self) -> tuple[int, str]:
        return self.location_rejections

    def read_heard(self) -> Mapping[str, int]:
        return dict(self.heard)

    def retry_counts(self) -> tuple[int, int]:
        return self.retries_spent, self.retries_refused

    def set_retry_tokens(self, tokens: int) -> None:
        self.retry_tokens = tokens

    def drop_stale_inflight(self, now_ms: int) -> int:
        return 0

    def read_counters(self) -> Mapping[str, int]:
        return dict(self.counters)

    def shed_count(self) -> int:
        return self.sheds

    @property
    def table(self) -> dict[str, float]:
        """The weights the SIP workers route with now."""
        return {entry.uri: entry.weight for entry in self.tables[-1]} if self.tables else {}


class FakeProbes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def send(self, uri: str, sent_ms: int) -> None:
        self.sent.append((uri, sent_ms))

    def times(self, uri: str) -> list[int]:
        return [t for u, t in self.sent if u == uri]


class StoreDown(ConnectionError):
    """What ``MemoryStore`` raises while told to fail (one of its ``errors``)."""


class MemoryStore:
    """The shared state in dicts (implements ``sync.StateStore``), with the operator's and
    the agents' side (``add``, ``remove``, ``set_admin``, ``put_report``) for the test.

    It behaves as ``PoolStore`` on Redis where the loop can tell: every change bumps the
    version; reports are announced only to a subscriber, and the subscription starts on the
    first ``announced_reports`` and ends with ``drop_announcements`` (announcements made in
    between are lost, as Redis pub/sub loses them); published records go through JSON.
    ``fail()`` makes every call raise ``StoreDown`` until ``recover()``.
    """

    errors: tuple[type[BaseException], ...] = (StoreDown,)

    def __init__(self) -> None:
        self.version = 0
        self.pool: dict[str, ProxyConfig] = {}
        self.reports: dict[str, bytes] = {}
        self.weights: dict[str, dict[str, dict]] = {}
        """Per node, the records it published last (decoded from their JSON)."""
        self.rejects: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, int] = {}
        """Per node, the wall time of its last publish."""
        self.sends: dict[str, tuple[bytes, int]] = {}
        """Per node, what it sends (``cp:sends:<node>``) and when that expires (wall ms)."""
        self._subscribed = False
        self._announced: list[str] = []
        self._failure: StoreDown | None = None

    # --- the test's controls ---------------------------------------------------------------

    def fail(self, reason: str = "store unreachable") -> None:
        self._failure = StoreDown(reason)

    def recover(self) -> None:
        self._failure = None

    # --- the operator's and the agents' side ----------------------------------------------

    def add(self, uri: str, base_weight: float = 1.0, admin: Admin = Admin.ACTIVE) -> None:
        self.pool[uri] = ProxyConfig(uri, base_weight, admin)
        self.version += 1

    def remove(self, uri: str) -> None:
        del self.pool[uri]
        self.version += 1

    def set_admin(self, uri: str, admin: Admin) -> None:
        self.add(uri, self.pool[uri].base_weight, admin)

    def put_report(self, uri: str, data: bytes) -> None:
        self.reports[uri] = data
        if self._subscribed:
            self._announced.append(uri)

    # --- sync.StateStore -------------------------------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def poll(self, uris: Sequence[str]) -> tuple[int | None, list[bytes | None]]:
        self._check()
        return self.version, [self.reports.get(uri) for uri in uris]

    def versioned_pool(self) -> tuple[int | None, dict[str, ProxyConfig], dict[str, str]]:
        self._check()
        return self.version, dict(self.pool), {}

    def announced_reports(self) -> list[str]:
        self._check()
        self._subscribed = True
        uris, self._announced = self._announced, []
        return uris

    def drop_announcements(self) -> None:
        self._subscribed = False
        self._announced = []

    def publish_weights(
        self,
        node: str,
        records: Mapping[str, Mapping[str, object]],
        ttl_ms: int,
        now_ms: int,
        rejects: Mapping[str, int | str] | None = None,
    ) -> None:
        self._check()
        self.weights[node] = {uri: json.loads(json.dumps(r)) for uri, r in records.items()}
        if rejects:
            self.rejects.setdefault(node, {}).update({k: str(v) for k, v in rejects.items()})
        self.nodes[node] = now_ms

    def exchange_sends(
        self, node: str, sends: str, ttl_ms: int, peers: Sequence[str], now_ms: int, live_ms: int
    ) -> tuple[list[str], dict[str, bytes]]:
        self._check()
        self.sends[node] = (sends.encode(), now_ms + ttl_ms)
        names = [n for n, at in self.nodes.items() if at >= now_ms - live_ms and n != node]
        found = {p: self.sends[p][0] for p in peers if p in self.sends}
        return names, {p: raw for p, raw in found.items() if self.sends[p][1] > now_ms}


class MemoryLocationStore:
    """The location records in a dict (what ``kamailio.location`` uses of
    ``store.location.LocationStore``), keyed ``(kind, name)``, each with the ``ttl_ms`` it was
    written with (0: none); ``fail()`` makes every call raise ``StoreDown`` until
    ``recover()``."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[Record, int]] = {}
        self.sources: dict[str, dict[str, int]] = {}
        """Source -> Call-ID -> expiry (epoch ms) of the dialog records it holds."""
        self._failure: StoreDown | None = None

    def fail(self, reason: str = "store unreachable") -> None:
        self._failure = StoreDown(reason)

    def recover(self) -> None:
        self._failure = None

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def lookup(self, aor: str, domain: str) -> tuple[Record | None, Record | None, Record | None]:
        self._check()
        return self._record(PIN, aor), self._record(AOR, aor), self._record(DOMAIN, domain)

    def _record(self, kind: str, name: str) -> Record | None:
        found = self.records.get((kind, name))
        return None if found is None else found[0]

    def put(self, kind: str, name: str, record: Record, ttl_ms: int = 0) -> None:
        self._check()
        self.records[(kind, name)] = (record, ttl_ms)

    def get(self, kind: str, name: str) -> Record | None:
        self._check()
        return self._record(kind, name)

    def delete(self, kind: str, name: str) -> bool:
        self._check()
        return self.records.pop((kind, name), None) is not None

    def apply_dialogs(
        self, writes: Sequence[PendingWrite], now_ms: int, per_source: int
    ) -> DialogFlush:
        self._check()
        for calls in self.sources.values():
            for call_id in [c for c, expiry_ms in calls.items() if expiry_ms <= now_ms]:
                del calls[call_id]
        deleted = forged = 0
        for write in writes:
            record = self._record(DIALOG, write.name) if write.record is None else None
            if write.deletes(record):
                assert record is not None
                del self.records[(DIALOG, write.name)]
                self.sources.get(record.source, {}).pop(write.name, None)
                deleted += 1
            elif record is not None:
                forged += 1
        held = {source: len(calls) for source, calls in self.sources.items()}
        sets = [write for write in writes if write.record is not None]
        written, capped = within_cap(sets, held, per_source)
        for write in written:
            self.records[(DIALOG, write.name)] = (Record.from_json(write.record), write.ttl_ms)
            self.sources.setdefault(write.source, {})[write.name] = now_ms + write.ttl_ms
        return DialogFlush(len(written), len(capped), deleted, forged)


class RecordingStore:
    """Any ``StateStore``, recording the (fake) time of every call of the sync loop that
    reaches it (``poll``, ``versioned_pool``, ``publish_weights``): the backoff schedule."""

    def __init__(self, store: StateStore, clock: FakeClock) -> None:
        self.store = store
        self.errors = store.errors
        self.clock = clock
        self.calls: list[tuple[str, int]] = []

    def poll(self, uris: Sequence[str]) -> tuple[int | None, list[bytes | None]]:
        self.calls.append(("poll", self.clock.now))
        return self.store.poll(uris)

    def versioned_pool(self) -> tuple[int | None, dict[str, ProxyConfig], dict[str, str]]:
        self.calls.append(("versioned_pool", self.clock.now))
        return self.store.versioned_pool()

    def announced_reports(self) -> list[str]:
        return self.store.announced_reports()

    def drop_announcements(self) -> None:
        self.store.drop_announcements()

    def publish_weights(self, node, records, ttl_ms, now_ms, rejects=None) -> None:
        self.calls.append(("publish_weights", self.clock.now))
        self.store.publish_weights(node, records, ttl_ms, now_ms, rejects)

    def exchange_sends(self, node, sends, ttl_ms, peers, now_ms, live_ms):
        self.calls.append(("exchange_sends", self.clock.now))
        return self.store.exchange_sends(node, sends, ttl_ms, peers, now_ms, live_ms)

    def times(self, name: str) -> list[int]:
        return [t for n, t in self.calls if n == name]


class Harness:
    """A SyncLoop wired to fake shared memory and probes, ``store`` and a fake clock."""

    def __init__(self, store: StateStore, settings: Settings, node: str = "lb1") -> None:
        self.settings = settings
        self.clock = FakeClock(start_ms=1_000_000)
        self.shared = FakeShared()
        self.probes = FakeProbes()
        self.store = RecordingStore(store, self.clock)
        self.logs: list[str] = []
        self.loop = SyncLoop(
            settings=settings,
            node=node,
            shared=self.shared,
            probes=self.probes,
            store=self.store,
            monotonic_ms=self.clock.monotonic_ms,
            wall_ms=self.clock.wall_ms,
            log=self.logs.append,
        )

    def tick(self, advance_ms: int = 0) -> None:
        self.clock.advance(advance_ms)
        self.loop.tick()

    def run(
        self, duration_ms: int, step_ms: int = 100, each: Callable[[], None] | None = None
    ) -> None:
        """Tick every ``step_ms`` for ``duration_ms``; ``each()`` runs before every tick."""
        for _ in range(duration_ms // step_ms):
            self.clock.advance(step_ms)
            if each is not None:
                each()
            self.loop.tick()


class MemoryDialogKeyStore:
    """The dialog key ring in a dict (what ``kamailio.dialog_keys`` uses of
    ``store.dialog_keys.DialogKeyStore``): field -> value, as in the Redis hash."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def ring(self) -> tuple[dict[str, DialogKey], dict[str, str]]:
        return parse_ring(self.fields)

    def create_first(self, secret: bytes) -> bool:
        if self.fields:
            return False
        self.fields["1"] = DialogKey("1", 0, secret).encode()
        return True
