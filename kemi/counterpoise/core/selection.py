"""Choosing a proxy for one request: weighted power of two choices.

Pure arithmetic: no Kamailio, no Redis. The uniform sources and the in-flight counts are
passed in, so the tests drive it with seeded sources and a dict.

The rule, per decision:

1. Draw two proxies, each with probability ``w_i / sum(w)`` (prefix sums and a binary
   search: O(log n), so the cost barely grows with the pool): the first by the ``first``
   source, the second by the ``second``, independent of it.
2. If both draws are the same proxy, take it. Otherwise take the one with the lower
   ``inflight_i / w_i`` (requests in flight per unit of weight); on a tie, the first.

Why this split is right: with nothing in flight, proxy *i* is chosen with probability
``p_i^2 + sum_{j != i} p_i p_j = p_i``, exactly its weight share. Under load, a proxy whose
requests take longer accumulates more requests in flight (Little's law), loses the
comparison more often, and its share drops at once, before the periodic weight update even
sees its latency. With equal latencies, the comparisons balance around the weight ratio,
so base weights of 3:1 still give a 3:1 split.

Why a tie goes to the first: the two draws are alike, so taking the first on a tie is as
fair as a coin, and it lets the first source alone decide every pick where nothing is in
flight. The worker passes an evenly spread sequence there (``core.spread``) and its random
generator as the second: its picks then follow the weights within a few requests, as a
weighted cycle would, where independent draws stray by the square root of their number,
and the second draw, still random, keeps the in-flight comparison as it was: a proxy that
holds more requests in flight than another wins only when both draws land on it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Collection, Sequence

REDRAWS_BEFORE_SCAN = 8
"""Draws that may land on excluded proxies (already tried by this request) before the picker
falls back to scanning the remaining ones. With one of n equal proxies excluded, 8 draws all
missing is (1/n)^8: below 0.4 % at n = 2, so the O(n) scan is a failover-only path."""


class WeightedPicker:
    """An immutable snapshot of the proxies and weights one worker routes with."""

    def __init__(self, weights: Sequence[tuple[str, float]]) -> None:
        self._uris = tuple(uri for uri, weight in weights if weight > 0)
        self._weight = {uri: weight for uri, weight in weights if weight > 0}
        self._prefix = list(itertools.accumulate(self._weight[uri] for uri in self._uris))

    def __len__(self) -> int:
        return len(self._uris)

    def __contains__(self, uri: object) -> bool:
        """Whether ``uri`` has a weight in this snapshot (in the pool, active, not down)."""
        return uri in self._weight

    @property
    def uris(self) -> tuple[str, ...]:
        """The proxies with a weight, in table order."""
        return self._uris

    @property
    def total_weight(self) -> float:
        return self._prefix[-1] if self._prefix else 0.0

    def _draw(self, rand: Callable[[], float]) -> str:
        index = bisect.bisect_right(self._prefix, rand() * self._prefix[-1])
        return self._uris[min(index, len(self._uris) - 1)]

    def _draw_allowed(self, rand: Callable[[], float], exclude: Collection[str]) -> str | None:
        for _ in range(REDRAWS_BEFORE_SCAN):
            uri = self._draw(rand)
            if uri not in exclude:
                return uri
        rest = [(uri, self._weight[uri]) for uri in self._uris if uri not in exclude]
        if not rest:
            return None
        return WeightedPicker(rest)._draw(rand)

    def pick(
        self,
        first_draw: Callable[[], float],
        second_draw: Callable[[], float],
        inflight: Callable[[str], int],
        exclude: Collection[str] = (),
    ) -> str | None:
        """The proxy for the next request, or None when every proxy is excluded or the
        snapshot is empty. ``first_draw`` and ``second_draw`` return floats in [0, 1), each
        source drawing one candidate; ``inflight(uri)`` returns the requests in flight to that
        proxy right now."""
        if not self._uris:
            return None
        first = self._draw_allowed(first_draw, exclude)
        if first is None:
            return None
        second = self._draw_allowed(second_draw, exclude)
        if second is None or second == first:
            return first
        load_first = inflight(first) / self._weight[first]
        load_second = inflight(second) / self._weight[second]
        return second if load_second < load_first else first

    def least_loaded(
        self, inflight: Callable[[str], int], exclude: Collection[str] = ()
    ) -> str | None:
        """The proxy for a retry: of those not excluded (already tried), the one with the
        fewest requests in flight per unit of weight, counting the retry itself. A retry is
        extra load on the pool: it goes where there is room, never to a proxy whose queue
        is longer than another's (relative to their weights), as a second random draw
        might. A scan of the pool, on the failover path only (budgeted retries)."""
        best, best_load = None, 0.0
        for uri in self._uris:
            if uri in exclude:
                continue
            load = (inflight(uri) + 1) / self._weight[uri]
            if best is None or load < best_load:
                best, best_load = uri, load
        return best
