"""Subnet and pool values, parsed and checked without I/O.

Every check that the API and CLI report for a subnet (invalid CIDR, pool outside its subnet,
overlap) lives here so the web and the shell say the same thing.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class IpamError(ValueError):
    """Base of the IPAM errors; `field` names the input at fault."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class InvalidSubnet(IpamError):
    pass


class SubnetOverlap(IpamError):
    pass


_U32 = struct.Struct("!I")


def ip_to_int(ip: str) -> int:
    """A dotted quad as an int; ValueError for anything else. `inet_pton` accepts exactly
    what `ipaddress.IPv4Address` does (four decimal octets, no leading zeros, no spaces)
    at a tenth of its cost: the DHCP path converts every address it stores or answers."""
    try:
        return int(_U32.unpack(socket.inet_pton(socket.AF_INET, ip))[0])
    except OSError:
        raise ValueError(f"{ip!r} is not an IPv4 address") from None


def int_to_ip(value: int) -> str:
    """An int as a dotted quad; ValueError outside 0 .. 2**32-1."""
    try:
        return socket.inet_ntoa(_U32.pack(value))
    except struct.error:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


@dataclass(frozen=True, kw_only=True)
class PoolRange:
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first > self.last:
            raise InvalidSubnet(
                f"pool {int_to_ip(self.first)}-{int_to_ip(self.last)} ends before it starts",
                field="pool",
            )

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, address: object) -> bool:
        return isinstance(address, int) and self.first <= address <= self.last

    def text(self) -> str:
        return f"{int_to_ip(self.first)}-{int_to_ip(self.last)}"


def parse_network(cidr: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(cidr, strict=True)
    except (ValueError, TypeError) as exc:
        raise InvalidSubnet(f"{cidr!r} is not an IPv4 network in CIDR form ({exc})",
                            field="cidr") from None


def parse_address(text: str, *, field: str) -> int:
    try:
        return ip_to_int(text)
    except (ValueError, TypeError):
        raise InvalidSubnet(f"{text!r} is not an IPv4 address", field=field) from None


def parse_pool(text: str, network: ipaddress.IPv4Network) -> PoolRange:
    """`FIRST-LAST` inside `network`, excluding its network and broadcast addresses."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise InvalidSubnet(f"pool {text!r} must be FIRST-LAST", field="pool")
    first_text, last_text = (part.strip() for part in text.split("-"))
    pool = PoolRange(first=parse_address(first_text, field="pool"),
                     last=parse_address(last_text, field="pool"))
    low, high = int(network.network_address), int(network.broadcast_address)
    if network.prefixlen < 31:
        low, high = low + 1, high - 1
    if pool.first < low or pool.last > high:
        raise InvalidSubnet(f"pool {text} is not inside the usable range of {network}",
                            field="pool")
    return pool


def check_no_overlap(network: ipaddress.IPv4Network,
                     others: Iterable[tuple[str, ipaddress.IPv4Network]]) -> None:
    for name, other in others:
        if network.overlaps(other):
            raise SubnetOverlap(f"{network} overlaps subnet {name}", field="cidr")


def check_pools_disjoint(pools: Sequence[PoolRange]) -> None:
    ordered = sorted(pools, key=lambda p: p.first)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.first <= a.last:
            raise InvalidSubnet(f"pools {a.text()} and {b.text()} overlap", field="pool")
