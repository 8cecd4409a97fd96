"""Throw-away network namespaces joined by veth pairs.

Traffic of tests and benchmarks must stay on loopback or inside namespaces that the run
created itself; this module is the one place that creates them, and always deletes them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, or iproute2 missing)."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def require_netns() -> None:
    if shutil.which("ip") is None:
        raise NetnsUnavailable("`ip` not found: install iproute2 (make test installs it)")
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")


@dataclass(frozen=True, kw_only=True)
class Namespace:
    name: str
    interface: str
    address: str  # with prefix, e.g. "10.77.0.1/24"

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    def cmd(self, argv: Sequence[str]) -> list[str]:
        """argv prefixed so that it runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(argv), text=True, capture_output=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.cmd(argv), **kwargs)  # type: ignore[call-overload, no-any-return]


def parse_udp_counters(snmp: str) -> dict[str, int]:
    """The `Udp:` counters of /proc/net/snmp's text: a line of names, then one of values."""
    rows = [line.split()[1:] for line in snmp.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2 or len(rows[0]) != len(rows[1]):
        raise ValueError("no Udp counters in this /proc/net/snmp text")
    return dict(zip(rows[0], map(int, rows[1]), strict=True))


def udp_counters(namespace: Namespace) -> dict[str, int]:
    """The UDP counters of `namespace` (its own /proc/net/snmp), e.g. RcvbufErrors: the
    datagrams that reached a socket with a full receive buffer and were lost there."""
    done = namespace.run(["cat", "/proc/net/snmp"], check=True)
    return parse_udp_counters(done.stdout)


@contextlib.contextmanager
def veth_pair(
    server_address: str = "10.77.0.1/24", client_address: str | None = None
) -> Iterator[tuple[Namespace, Namespace]]:
    """Two fresh namespaces, `server` and `client`, joined by one veth pair.

    The server side gets `server_address`; the client side gets `client_address` or no
    address (a DHCP client configures it). Both namespaces are deleted on exit.
    """
    require_netns()
    tag = uuid.uuid4().hex[:6]
    server = Namespace(name=f"lfs-{tag}", interface=f"lfs{tag}", address=server_address)
    client = Namespace(name=f"lfc-{tag}", interface=f"lfc{tag}", address=client_address or "")
    created: list[str] = []
    try:
        for ns in (server, client):
            _ip("netns", "add", ns.name)
            created.append(ns.name)
            _ip("-n", ns.name, "link", "set", "lo", "up")
        _ip("link", "add", server.interface, "netns", server.name,
            "type", "veth", "peer", "name", client.interface, "netns", client.name)
        for ns in (server, client):
            if ns.address:
                _ip("-n", ns.name, "addr", "add", ns.address, "dev", ns.interface)
            _ip("-n", ns.name, "link", "set", ns.interface, "up")
        yield server, client
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
