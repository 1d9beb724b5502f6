"""A node pair behind one floating address on one machine: two balancer nodes, each in its
own network namespace with its own keepalived (``deploy/keepalived/``, unicast VRRP), sharing
one Redis in this namespace (``harness.netns``). The proxies and SIPp run here, on the LAN's
address; callers call the floating address.

``node_a`` has the higher priority: it holds the address whenever it is healthy. ``kill`` is
a host's death: its link goes down and its Kamailio and keepalived get SIGKILL, nothing
cleaned up. ``close`` stops and removes everything, whatever failed before.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from counterpoise import processes
from counterpoise.core.settings import Settings
from harness import vrrp
from harness.netns import INSIDE_INTERFACE, Host, Lan

NODES = ("node_a", "node_b")
"""The config ids of ``deploy/keepalived/keepalived.conf``: node_a has the higher priority."""

NONLOCAL_BIND = "net.ipv4.ip_nonlocal_bind=1"
"""Both nodes listen on the floating address, the standby before it holds it: Kamailio then
takes over without a restart."""

LAN_PREFIX = "10.231.77"
"""The LAN of the pair's test and benchmark (a private range no test host uses)."""

FLOATING_HOST = 100
"""The floating address's last byte on the LAN."""


class Node:
    """One node: its namespace, Kamailio and keepalived."""

    def __init__(self, name: str, host: Host, run_dir: Path) -> None:
        self.name = name
        self.host = host
        self.run_dir = run_dir
        self.kamailio: processes.Process | None = None
        self.keepalived: processes.Process | None = None
        self.check = ""
        """keepalived's health check command; empty: Counterpoise's (``counterpoise health``)."""

    @property
    def rpc(self) -> Path:
        return processes.rpc_socket(self.run_dir)

    def started(self) -> list[processes.Process]:
        return [proc for proc in (self.keepalived, self.kamailio) if proc is not None]


class Pair:
    def __init__(
        self, run_dir: Path, timing: str = "1s", workers: int = 3, lan_prefix: str = LAN_PREFIX
    ) -> None:
        """``lan_prefix``: the LAN's first three bytes; two pairs on one machine at once need
        two."""
        self.run_dir = run_dir
        self.timing = timing
        self.workers = workers
        self.lan = Lan(lan_prefix)
        self.vip = f"{self.lan.prefix}.{FLOATING_HOST}"
        self.sip_port = processes.free_port()
        self.nodes: dict[str, Node] = {}
        self.redis: processes.Process | None = None
        self.redis_url = ""

    def open(self) -> Pair:
        """The LAN, both hosts and Redis; the nodes start with ``start_node``."""
        self.lan.open()
        for name in NODES:
            host = self.lan.add_host(name[-1], sysctls=[NONLOCAL_BIND])
            self.nodes[name] = Node(name, host, self.run_dir / name)
        port = processes.free_port()
        self.redis = processes.start_redis(
            port, self.run_dir / "redis", also_bind=[self.lan.address]
        )
        self.redis_url = f"redis://{self.lan.address}:{port}/0"
        return self

    def settings(self, name: str, base: Settings) -> Settings:
        """``base`` as node ``name``: its own socket first (the health check's), then the
        floating address, which both advertise in Via and Record-Route; the other node's own
        socket is its peer."""
        host = self.nodes[name].host
        (peer,) = (self.nodes[other].host for other in NODES if other != name)
        return base.with_values(
            node_id=f"pair-{name}",
            listen=f"udp:{host.address}:{self.sip_port},udp:{self.vip}:{self.sip_port}",
            advertise=self.vip,
            peers=f"udp:{peer.address}:{self.sip_port}",
            workers=self.workers,
            redis_url=self.redis_url,
        )

    def keepalived_config(self, name: str) -> Path:
        node = self.nodes[name]
        # The installed command, not ``python -m``: keepalived's script security runs a
        # symlink's target, and the venv's python is a symlink to the system's.
        command = Path(sys.executable).parent / "counterpoise"
        check = node.check or (
            f"{command} health --sip udp:${{SELF}}:{self.sip_port} --rpc {node.rpc}"
        )
        a, b = (self.nodes[n].host.address for n in NODES)
        parameters = {"VIP": f"{self.vip}/24", "NODE_A": a, "NODE_B": b, "CHECK": check}
        return vrrp.render(node.run_dir, parameters, self.timing)

    def start_node(self, name: str, base: Settings) -> Node:
        """Counterpoise in the node's namespace, then its keepalived (config-tested there)."""
        return self.start_node_with(name, lambda node: self._counterpoise(node, base))

    def _counterpoise(self, node: Node, base: Settings) -> processes.Process:
        return processes.start_balancer(
            self.settings(node.name, base),
            node.run_dir,
            log_path=node.run_dir / "kamailio.log",
            netns=node.host.netns,
        )

    def start_node_with(
        self, name: str, kamailio: Callable[[Node], processes.Process], check: str = ""
    ) -> Node:
        """``kamailio(node)`` (a balancer started in the node's namespace, answering on its
        own socket and on the floating address), then keepalived with the health check
        ``check`` (empty: Counterpoise's)."""
        node = self.nodes[name]
        node.run_dir.mkdir(parents=True, exist_ok=True)
        node.check = check
        node.kamailio = kamailio(node)
        config = self.keepalived_config(name)
        tested = vrrp.config_test(node.host, config, name)
        if tested.returncode != 0:
            raise processes.StartError(f"keepalived --config-test {config}: {tested.stderr}")
        node.keepalived = vrrp.start(node.host, config, name, node.run_dir)
        return node

    def holders(self) -> list[str]:
        """The nodes whose link holds the floating address now."""
        return [name for name, node in self.nodes.items() if node.host.holds(self.vip)]

    def wait_holder(self, name: str, timeout_s: float) -> None:
        """Until ``name`` alone holds the floating address (looked at every 10 ms)."""
        processes.wait_for(
            lambda: self.holders() == [name], timeout_s, f"{name} to hold {self.vip}", 0.01
        )

    def kill(self, name: str) -> None:
        """The host dies: off the LAN, then its processes SIGKILLed. The floating address, if
        keepalived had no time to drop it, goes too: a dead host holds nothing (``holders``),
        and one that reboots comes back without it."""
        node = self.nodes[name]
        node.host.set_link(up=False)
        for proc in node.started():
            proc.kill()
        if node.host.holds(self.vip):
            node.host.run("ip", "addr", "del", f"{self.vip}/24", "dev", INSIDE_INTERFACE)

    def revive(self, name: str, start: Callable[[str], Node]) -> Node:
        """The host is back (its link up) and its node starts again (``start(name)``)."""
        self.nodes[name].host.set_link(up=True)
        return start(name)

    def close(self) -> None:
        """Stop every process, newest first, then remove the LAN; each step runs even if one
        before it raised."""
        with contextlib.ExitStack() as stops:
            stops.callback(self.lan.close)
            if self.redis is not None:
                stops.callback(self.redis.stop)
            for node in self.nodes.values():
                for proc in node.started():
                    stops.callback(proc.stop)
