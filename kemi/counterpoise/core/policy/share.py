"""The node's share of the pool: how active-active nodes on one Redis divide what each proxy
can take.

Every node keeps its own in-flight counts and its own hold queue, so each would fill every
proxy up to the whole limit it measures if nothing told it of the others. Each tick a node
therefore publishes what it **sends** to each proxy (``Sends``: the requests it completes
there per second, and its in-flight count) and reads the other live nodes' publications.

* **Pool throughput** of a proxy: the sum, over the live nodes, of what each completes
  there per second: the proxy's capacity while it is saturated, as one node alone measures
  it.
* **Node share**: this node's requests per second over all proxies, divided by the sum over
  the live nodes (over the proxies of this node's pool: a peer still on an older pool does
  not count what it sends elsewhere), at least ``MIN_SHARE_OF_EQUAL`` of an equal split; an
  equal split while no node sends anything. It is taken over the whole pool, not per proxy:
  a node whose requests to one proxy are held goes elsewhere with them, and a per-proxy
  share would shrink with every hold until that node had none. What a node is asked to
  carry moves with its callers, not with its own holds.
* **Shared rate** of a proxy: its pool throughput times the node share. The in-flight limit
  (``timers.inflight_limit``) is derived from it, so the nodes' limits add up to what one
  node would allow, and the hold queue and admission follow the share.

A node alone (no peer) has share 1 and a shared rate equal to its own throughput: it
behaves as if this module did not exist. Peers' publications are taken as they are found;
staleness is the caller's (peers whose publication expired are not passed in).

Pure: rates and counts are passed in.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

from counterpoise.core.untrusted import BadRecord

MIN_SHARE_OF_EQUAL = 0.25
"""A node's share is at least this fraction of an equal split (1/4 of 1/2 with two nodes): a
node that has just joined, or whose callers are quiet, still has room for the requests
that will show its demand."""

MAX_SENDS_BYTES = 65_536
"""A node's publication read at most (about 600 proxies); beyond it, it is refused."""


@dataclasses.dataclass(frozen=True)
class Sends:
    """What one node sends to one proxy."""

    per_s: float
    """Requests it completes there per second (its smoothed throughput)."""
    inflight: int
    """Its requests in flight there."""


@dataclasses.dataclass(frozen=True)
class Share:
    """This node's part of the pool."""

    share: float
    """Its share of every proxy's pool throughput."""
    nodes: int
    """Live nodes counted, itself included."""
    pool_per_s: Mapping[str, float]
    """Per proxy, the pool throughput (every live node's)."""

    def shared_per_s(self, uri: str) -> float:
        """This node's part of the proxy's pool throughput."""
        return self.pool_per_s.get(uri, 0.0) * self.share


def node_share(own: Mapping[str, Sends], peers: Mapping[str, Mapping[str, Sends]]) -> Share:
    """This node's share, from what it sends (``own``) and what each live peer sends."""
    nodes = 1 + len(peers)
    pool_per_s = {uri: sends.per_s for uri, sends in own.items()}
    for sent in peers.values():
        for uri, sends in sent.items():
            if uri in pool_per_s:
                pool_per_s[uri] += sends.per_s
    own_per_s = sum(sends.per_s for sends in own.values())
    total_per_s = sum(pool_per_s.values())
    equal = 1.0 / nodes
    share = own_per_s / total_per_s if total_per_s > 0 else equal
    return Share(max(share, equal * MIN_SHARE_OF_EQUAL), nodes, pool_per_s)


def encode(sends: Mapping[str, Sends]) -> str:
    """A node's publication: JSON ``{uri: [per_s, inflight]}``."""
    return json.dumps({uri: [round(s.per_s, 3), s.inflight] for uri, s in sends.items()})


def decode(raw: bytes) -> dict[str, Sends]:
    """Another node's publication; ``BadRecord`` if unusable (run under ``untrusted``)."""
    if len(raw) > MAX_SENDS_BYTES:
        raise BadRecord(f"over {MAX_SENDS_BYTES} bytes")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise BadRecord("not a JSON object")
    result: dict[str, Sends] = {}
    for uri, pair in data.items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadRecord(f"{uri}: not [per_s, inflight]")
        per_s, inflight = float(pair[0]), int(pair[1])
        if not math.isfinite(per_s) or per_s < 0 or inflight < 0:
            raise BadRecord(f"{uri}: negative or not finite")
        result[str(uri)] = Sends(per_s, inflight)
    return result
