"""What the DHCP server serves: subnets, their options, and server-wide policy.

Values are checked once, here, and the per-packet lookups (which subnet holds an address,
which options a subnet offers) are precomputed so the hot path only does integer masks and
dict lookups.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from app.dhcp import options as opt
from app.dhcp.errors import ConfigError

_U32 = struct.Struct("!I")


def ip_int(address: str) -> int:
    """Dotted quad → int, fast (inet_aton is C); raises OSError on a bad address."""
    return int(_U32.unpack(socket.inet_aton(address))[0])


def _check_ip(value: str, what: str) -> int:
    try:
        return int(ipaddress.IPv4Address(value))
    except ValueError as exc:
        raise ConfigError(f"{what}: {value!r} is not an IPv4 address") from exc


@dataclass(frozen=True, kw_only=True)
class SubnetConfig:
    """One IPv4 subnet served by the server.

    `interface` names the interface the subnet is directly attached to; `None` means it is
    only reached through relays (selected by `giaddr`). `pool` is the inclusive range of
    addresses the server may hand out.
    """

    cidr: str
    pool: tuple[str, str]
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    domain_name: str | None = None
    lease_time: int = 3600
    renewal_time: int | None = None  # T1 (option 58); default 0.5 × lease time
    rebinding_time: int | None = None  # T2 (option 59); default 0.875 × lease time
    interface: str | None = None

    network: int = field(init=False, repr=False, compare=False)
    mask: int = field(init=False, repr=False, compare=False)
    pool_first: int = field(init=False, repr=False, compare=False)
    pool_last: int = field(init=False, repr=False, compare=False)
    # Options every reply on this subnet may carry, by code, already encoded.
    parameters: Mapping[int, bytes] = field(init=False, repr=False, compare=False)
    # The lease replies' option templates (`rfc2131.lease_reply`), filled as clients come.
    replies: dict[tuple[int, int, bytes, bytes | None], tuple[Mapping[int, bytes], bytes]] = \
        field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        try:
            net = ipaddress.IPv4Network(self.cidr, strict=True)
        except ValueError as exc:
            raise ConfigError(f"subnet {self.cidr!r}: {exc}") from exc
        first = _check_ip(self.pool[0], "pool start")
        last = _check_ip(self.pool[1], "pool end")
        if first > last:
            raise ConfigError(f"pool {self.pool[0]}-{self.pool[1]} ends before it starts")
        lo, hi = int(net.network_address), int(net.broadcast_address)
        if net.prefixlen < 31:
            lo, hi = lo + 1, hi - 1  # network and broadcast addresses are never leased
        if not (lo <= first and last <= hi):
            raise ConfigError(f"pool {self.pool[0]}-{self.pool[1]} is not inside {self.cidr}")
        if self.lease_time <= 0:
            raise ConfigError("lease time must be positive")
        params: dict[int, bytes] = {opt.SUBNET_MASK: net.netmask.packed}
        if self.gateway is not None:
            if _check_ip(self.gateway, "gateway") not in range(lo, hi + 1):
                raise ConfigError(f"gateway {self.gateway} is not inside {self.cidr}")
            params[opt.ROUTER] = opt.ip(self.gateway)
        if self.dns:
            for server in self.dns:
                _check_ip(server, "dns server")
            params[opt.DNS_SERVERS] = opt.ips(self.dns)
        if self.domain_name:
            params[opt.DOMAIN_NAME] = self.domain_name.encode()
        params[opt.BROADCAST_ADDRESS] = net.broadcast_address.packed
        object.__setattr__(self, "network", int(net.network_address))
        object.__setattr__(self, "mask", int(net.netmask))
        object.__setattr__(self, "pool_first", first)
        object.__setattr__(self, "pool_last", last)
        object.__setattr__(self, "parameters", MappingProxyType(params))

    def contains(self, address: str) -> bool:
        try:
            return ip_int(address) & self.mask == self.network
        except OSError:
            return False

    def in_pool(self, address: str) -> bool:
        try:
            return self.pool_first <= ip_int(address) <= self.pool_last
        except OSError:
            return False

    def timers(self, lease_time: int) -> tuple[int, int]:
        """(T1, T2) for a lease of `lease_time` seconds (RFC 2131 §4.4.5 defaults)."""
        t1 = self.renewal_time if self.renewal_time is not None else lease_time // 2
        t2 = self.rebinding_time if self.rebinding_time is not None else lease_time * 7 // 8
        return min(t1, lease_time), min(t2, lease_time)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Server-wide policy.

    `authoritative`: NAK a client we have no record of (INIT-REBOOT, RENEWING, REBINDING)
    instead of staying silent, so a client moved from another network restarts at once.
    `offer_lifetime`: seconds an offered address stays held for the client.
    `decline_probation`: seconds a declined address is kept out of the pool.
    `workers`: threads that run backend calls (0 = inside the receive loop, only for
    backends that never block); `max_pending`: packets waiting for a worker beyond which
    new ones are dropped (clients retransmit) rather than queued without bound.

    Admission control (only with `workers > 0`), so that an overloaded server keeps
    completing about its capacity instead of collapsing: `max_new_exchanges` is how many
    DISCOVERs (new exchanges) may wait for or run on a worker at once; a DISCOVER beyond it
    is dropped at once (the client retransmits), which keeps the queue short for the
    REQUESTs of exchanges already half done. `None` derives it from `workers`: half of them
    (at least 2, so one slow DISCOVER never stalls every newcomer), leaving the other half
    to clients already in an exchange; the value in force is `new_exchange_budget`.
    `stale_after`: seconds a call may have waited for a worker before it is dropped unrun,
    its client having given up on that copy (perfdhcp waits 1 s, real clients retransmit
    after 2-4 s).

    Replies of a grouping backend (`GroupedLeaseBackend`), which become ready a group at a
    time, go out paced (`dhcp.pacer`): a quarter of those waiting, at least `reply_burst`
    and at most `pacer.MOST` (or `reply_burst` if more), then `reply_gap` seconds of pause;
    `reply_burst=0` sends each on the group's thread at once.
    """

    server_id: str
    subnets: tuple[SubnetConfig, ...]
    authoritative: bool = False
    offer_lifetime: float = 30.0
    decline_probation: float = 3600.0
    workers: int = 8
    max_pending: int = 2048
    max_new_exchanges: int | None = None
    stale_after: float = 1.0
    reply_burst: int = 32
    reply_gap: float = 0.001

    by_interface: Mapping[str, tuple[SubnetConfig, ...]] = field(
        init=False, repr=False, compare=False
    )
    server_id_bytes: bytes = field(init=False, repr=False, compare=False)  # option 54
    # max_new_exchanges, or the default derived from workers.
    new_exchange_budget: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_ip(self.server_id, "server id")
        object.__setattr__(self, "server_id_bytes", opt.ip(self.server_id))
        if not self.subnets:
            raise ConfigError("no subnet to serve")
        nets = [ipaddress.IPv4Network(s.cidr) for s in self.subnets]
        for i, a in enumerate(nets):
            for b in nets[i + 1 :]:
                if a.overlaps(b):
                    raise ConfigError(f"subnets {a} and {b} overlap")
        by_interface: dict[str, list[SubnetConfig]] = {}
        for subnet in self.subnets:
            if subnet.interface is not None:
                by_interface.setdefault(subnet.interface, []).append(subnet)
        object.__setattr__(
            self,
            "by_interface",
            MappingProxyType({k: tuple(v) for k, v in by_interface.items()}),
        )
        if self.workers < 0 or self.max_pending < 1:
            raise ConfigError("workers must be >= 0 and max_pending >= 1")
        budget = self.max_new_exchanges
        if budget is None:
            budget = max(2, self.workers // 2)
        elif budget < 1:
            raise ConfigError("max_new_exchanges must be >= 1")
        object.__setattr__(self, "new_exchange_budget", budget)
        if not self.stale_after > 0:
            raise ConfigError("stale_after must be positive")
        if self.reply_burst < 0 or not self.reply_gap >= 0:
            raise ConfigError("reply_burst and reply_gap must be >= 0")

    def subnet_of(self, address: str) -> SubnetConfig | None:
        """The subnet holding `address` (a relay's giaddr), if we serve it."""
        try:
            value = ip_int(address)
        except OSError:
            return None
        for subnet in self.subnets:
            if value & subnet.mask == subnet.network:
                return subnet
        return None
