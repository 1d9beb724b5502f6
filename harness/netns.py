"""Hosts of one LAN on one machine: network namespaces (``ip netns``, root needed), each joined
by a veth pair to a bridge in this namespace, which holds the LAN's first address.

The node pair's test and benchmark run each balancer node in its own namespace, as its own
host: its own addresses (the floating one among them), its own ARP, its own VRRP. Redis, the
proxies and SIPp stay in this namespace, on the bridge's address. Every name carries this
process's id and the LAN's number, so runs never share one, and ``close`` removes everything
made, whatever failed before.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Sequence

_lans = itertools.count()
"""Each LAN of this process gets its own names: one that failed to close never collides."""

INSIDE_INTERFACE = "eth0"
"""The name of each host's link inside its namespace: the one ``deploy/keepalived`` names."""


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


class Host:
    """One namespace of the LAN, at ``address`` on its ``eth0``."""

    def __init__(self, netns: str, address: str, outside_link: str) -> None:
        self.netns = netns
        self.address = address
        self.outside_link = outside_link

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *command]

    def run(self, *command: str) -> str:
        return ip("netns", "exec", self.netns, *command)

    def set_link(self, up: bool) -> None:
        """Cut this host off the LAN (a dead host's cable), or plug it back."""
        self.run("ip", "link", "set", INSIDE_INTERFACE, "up" if up else "down")

    def holds(self, address: str) -> bool:
        """Whether ``address`` is configured on this host's link (VRRP put it there)."""
        shown = self.run("ip", "-o", "-4", "addr", "show", "dev", INSIDE_INTERFACE)
        return f" {address}/" in shown


class Lan:
    """A bridge at ``{prefix}.1/24`` and the hosts added to it (``{prefix}.{10 + n}``)."""

    def __init__(self, prefix: str) -> None:
        self.tag = f"{os.getpid() % 100_000}x{next(_lans)}y"  # y: no tag begins another
        self.prefix = prefix
        self.bridge = f"cpbr{self.tag}"
        self.address = f"{prefix}.1"
        self.hosts: list[Host] = []
        self._made_bridge = False

    def open(self) -> Lan:
        ip("link", "add", self.bridge, "type", "bridge")
        self._made_bridge = True
        ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str, sysctls: Sequence[str] = ()) -> Host:
        """A new namespace on the LAN; ``sysctls`` (``net.ipv4.ip_nonlocal_bind=1``) set in it."""
        netns = f"cp{self.tag}{name}"
        outside = f"cpv{self.tag}{name}"
        ip("netns", "add", netns)
        host = Host(netns, f"{self.prefix}.{10 + len(self.hosts)}", outside)
        self.hosts.append(host)
        ip("link", "add", outside, "type", "veth", "peer", "name", INSIDE_INTERFACE, "netns", netns)
        ip("link", "set", outside, "master", self.bridge)
        ip("link", "set", outside, "up")
        host.run("ip", "addr", "add", f"{host.address}/24", "dev", INSIDE_INTERFACE)
        host.run("ip", "link", "set", "lo", "up")
        host.set_link(up=True)
        for sysctl in sysctls:
            host.run("sysctl", "-q", "-w", sysctl)
        return host

    def close(self) -> None:
        """Delete the namespaces (their veth ends go with them) and the bridge; each step runs
        even if one before it failed."""
        for host in self.hosts:
            with contextlib.suppress(RuntimeError):
                ip("netns", "delete", host.netns)
            with contextlib.suppress(RuntimeError):  # normally gone with its peer
                ip("link", "delete", host.outside_link)
        self.hosts.clear()
        if self._made_bridge:
            with contextlib.suppress(RuntimeError):
                ip("link", "delete", self.bridge)
            self._made_bridge = False

    def leftovers(self) -> list[str]:
        """Namespaces and links of this LAN still on the machine (none after ``close``)."""
        names = ip("netns", "list") + ip("-o", "link", "show")
        return [word for word in names.split() if self.tag in word and word.startswith("cp")]
