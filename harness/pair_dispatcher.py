"""The node pair with Kamailio's dispatcher instead of Counterpoise, for the comparison the
pair's benchmark reports: the same two namespaces, keepalived configuration and floating
address, each node the benchmark's native contender (``bench/dispatcher.cfg``) with its own
dispatcher list of the same proxies. Nothing is shared between the nodes: the survivor starts
with its own list, weights and marks, as a stock dispatcher pair does.
"""

from __future__ import annotations

from collections.abc import Sequence

from counterpoise import processes
from counterpoise.core.settings import Settings
from harness import REPO
from harness.pair import Node, Pair

DISPATCHER_CFG = REPO / "bench" / "dispatcher.cfg"
WEIGHTED_ALG = 9
"""ds_select_dst's weight-based algorithm: the destinations' ``weight`` attributes, the
closest dispatcher has to the pool's base weights."""
SIPSAK = "/usr/bin/sipsak"
"""A stock pair's health check: Kamailio answers an OPTIONS on the node's own socket (status
0 on a 2xx); keepalived's ``timeout`` ends it when none comes."""


def dispatcher_list(proxies: Sequence[tuple[str, float]]) -> str:
    """Set 1, every proxy with its share of the pool's weight in percent."""
    total = sum(weight for _, weight in proxies)
    return "".join(f"1 {uri} 0 0 weight={round(100 * w / total)}\n" for uri, w in proxies)


def start_node(pair: Pair, name: str, proxies: Sequence[tuple[str, float]]) -> Node:
    """Node ``name`` of ``pair`` running dispatcher on its own socket (advertising the floating
    address, as Counterpoise's nodes do) and on the floating address, then its keepalived."""

    def kamailio(node: Node) -> processes.Process:
        ds_list = node.run_dir / "dispatcher.list"
        ds_list.write_text(dispatcher_list(proxies))
        own = node.host.address
        listen = [f"udp:{own}:{pair.sip_port}/{pair.vip}", f"udp:{pair.vip}:{pair.sip_port}"]
        defines: dict[str, str | int] = {
            "DS_LIST": str(ds_list),
            "DS_ALG": WEIGHTED_ALG,
            "DS_CTL": f"unixs:{processes.ctl_socket(node.run_dir)}",
            "DS_FR_TIMER_MS": Settings().failover.fr_timer_ms,
        }
        argv = processes.kamailio_argv(DISPATCHER_CFG, listen, pair.workers, node.run_dir, defines)
        log = node.run_dir / "kamailio.log"
        proc = processes.Process(f"dispatcher {name}", node.host.argv(*argv), log)
        proc.ensure_started(
            lambda: processes.sip_options(own, pair.sip_port, 0.3) == 200,
            20.0,
            f"dispatcher at {name} to answer OPTIONS",
        )
        return proc

    return pair.start_node_with(name, kamailio, f"{SIPSAK} -s sip:${{SELF}}:{pair.sip_port}")
