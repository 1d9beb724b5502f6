"""In-memory stand-ins for what Kamailio gives the sync loop, and an injected clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis

from counterpoise.core.settings import Settings
from counterpoise.core.sync import SyncLoop
from counterpoise.core.tally import Tally
from counterpoise.store.pool import PoolStore

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
        self.tables: list[list[tuple[str, float]]] = []
        self.header_reasons: dict[str, str] = {}

    def read_tallies(self) -> Mapping[str, Tally]:
        return dict(self.tallies)

    def ensure_inflight(self, uri: str) -> None:
        self.inflight_counts.setdefault(uri, 0)

    def inflight(self, uri: str) -> int:
        return self.inflight_counts.get(uri, 0)

    def publish_table(self, entries: Sequence[tuple[str, float]]) -> None:
        self.tables.append(list(entries))

    def read_load_rejections(self) -> Mapping[str, str]:
        return dict(self.header_reasons)

    @property
    def table(self) -> dict[str, float]:
        """The table the SIP workers route with now."""
        return dict(self.tables[-1]) if self.tables else {}


class FakeProbes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def send(self, uri: str, sent_ms: int) -> None:
        self.sent.append((uri, sent_ms))

    def times(self, uri: str) -> list[int]:
        return [t for u, t in self.sent if u == uri]


class CountingStore(PoolStore):
    """The real store, recording the (fake) time of every call the sync loop makes."""

    def __init__(self, client: redis.Redis, prefix: str, clock: FakeClock) -> None:
        super().__init__(client, prefix)
        self.clock = clock
        self.calls: list[tuple[str, int]] = []

    def poll(self, uris):
        self.calls.append(("poll", self.clock.now))
        return super().poll(uris)

    def versioned_pool(self):
        self.calls.append(("versioned_pool", self.clock.now))
        return super().versioned_pool()

    def publish_weights(self, node, records, ttl_ms, now_ms, rejects=None) -> None:
        self.calls.append(("publish_weights", self.clock.now))
        super().publish_weights(node, records, ttl_ms, now_ms, rejects)

    def times(self, name: str) -> list[int]:
        return [t for n, t in self.calls if n == name]


class Harness:
    """A SyncLoop wired to fakes, a real Redis and a fake clock."""

    def __init__(self, client: redis.Redis, settings: Settings, node: str = "lb1") -> None:
        self.settings = settings
        self.clock = FakeClock(start_ms=1_000_000)
        self.shared = FakeShared()
        self.probes = FakeProbes()
        self.store = CountingStore(client, settings.key_prefix, self.clock)
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

    def run(self, duration_ms: int, step_ms: int = 100, each=None) -> None:
        """Tick every ``step_ms`` for ``duration_ms``; ``each()`` runs before every tick."""
        for _ in range(duration_ms // step_ms):
            self.clock.advance(step_ms)
            if each is not None:
                each()
            self.loop.tick()
