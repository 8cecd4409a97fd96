"""Values exchanged with the LeaseRegistry contract: batch items, outcomes, anchors.

They are frozen keyword-only dataclasses, validated on construction, so a bad item is
refused in Python with a clear message instead of as an opaque ABI encoding error, and
so they can flow through reactive streams without being changed on the way.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from eth_utils import keccak

_UINT64_MAX = 2**64 - 1
_ZERO32 = bytes(32)


class Reason(enum.IntEnum):
    """Per-item reason codes of the contract (`contracts/LeaseRegistry.vy`)."""

    ACCEPTED = 0
    TAKEN = 1  # another holder has the address and its lease has not expired
    NOT_HOLDER = 2  # a release asked by someone who does not hold the lease
    NOT_ALLOCATED = 3  # a release of a free address
    BAD_EXPIRY = 4  # an allocation whose expiry is already in the past (block clock)
    BAD_HOLDER = 5  # the zero holder id, which means "free"
    NOT_ADMIN = 6  # a forced release by a writer without the admin role


def subnet_id(name: str) -> bytes:
    """The bytes32 id of a subnet on chain: keccak256 of its CIDR (or any stable name)."""
    return keccak(text=name)


def holder_id(name: str) -> bytes:
    """The bytes32 id of a holder on chain: keccak256 of its client id (or instance id)."""
    return keccak(text=name)


def ip_to_uint(ip: str | int | ipaddress.IPv4Address) -> int:
    return int(ipaddress.IPv4Address(ip))


def _check_bytes32(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {value!r}")


def _check_ip(value: int) -> None:
    if not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValueError(f"ip must be an IPv4 address as an int in [0, 2**32), got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class AllocateItem:
    """Give (subnet, ip) to holder until `expires` (unix seconds; 0 = until released)."""

    subnet: bytes
    ip: int
    holder: bytes
    expires: int = 0

    def __post_init__(self) -> None:
        _check_bytes32("subnet", self.subnet)
        _check_bytes32("holder", self.holder)
        _check_ip(self.ip)
        if not isinstance(self.expires, int) or not 0 <= self.expires <= _UINT64_MAX:
            raise ValueError(f"expires must be a uint64 unix time, got {self.expires!r}")

    @classmethod
    def for_lease(
        cls, *, subnet: str, ip: str | int, client_id: str, expires: int = 0
    ) -> AllocateItem:
        """The item for a lease given in Leaseflow's own words (CIDR, dotted IP, client id)."""
        return cls(
            subnet=subnet_id(subnet), ip=ip_to_uint(ip), holder=holder_id(client_id),
            expires=expires,
        )

    def as_abi(self) -> tuple[bytes, int, bytes, int]:
        return (self.subnet, self.ip, self.holder, self.expires)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReleaseItem:
    """Free (subnet, ip) if `holder` holds it; `force` (admins only) frees it regardless."""

    subnet: bytes
    ip: int
    holder: bytes
    force: bool = False

    def __post_init__(self) -> None:
        _check_bytes32("subnet", self.subnet)
        _check_bytes32("holder", self.holder)
        _check_ip(self.ip)

    @classmethod
    def for_lease(
        cls, *, subnet: str, ip: str | int, client_id: str, force: bool = False
    ) -> ReleaseItem:
        return cls(
            subnet=subnet_id(subnet), ip=ip_to_uint(ip), holder=holder_id(client_id), force=force
        )

    def as_abi(self) -> tuple[bytes, int, bytes, bool]:
        return (self.subnet, self.ip, self.holder, self.force)


Item = AllocateItem | ReleaseItem


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """What the contract said about one item: accepted, or refused with a reason."""

    item: AllocateItem | ReleaseItem
    reason: Reason
    tx_hash: str | None = None  # None for a dry run (eth_call)
    block_number: int | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is Reason.ACCEPTED

    def to_json(self) -> dict[str, object]:
        """A small JSON-able dict, e.g. as a BPMN task result."""
        return {
            "accepted": self.accepted,
            "reason": self.reason.name.lower(),
            "operation": "release" if isinstance(self.item, ReleaseItem) else "allocate",
            "ip": str(ipaddress.IPv4Address(self.item.ip)),
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Holding:
    """The lease stored on chain for one (subnet, ip)."""

    holder: bytes
    expires: int  # 0 = until released


@dataclass(frozen=True, kw_only=True, slots=True)
class AnchorRecord:
    """One ledger anchor on chain: the Merkle root of the rows up to `seq`."""

    seq: int
    root: bytes
    timestamp: int

    @property
    def root_hex(self) -> str:
        return self.root.hex()


@dataclass(frozen=True, kw_only=True, slots=True)
class TxResult:
    """The receipt facts a caller may want to log or persist."""

    tx_hash: str
    block_number: int
    gas_used: int


ZERO_HOLDER = _ZERO32
