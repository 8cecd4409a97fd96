"""`MemoryLeaseBackend`: a thread-safe, in-memory `LeaseBackend` for tests and benchmarks.

It implements the same address choice as Leaseflow's database allocator (current binding →
previous binding → requested if free → new), offer lifetime and decline probation, so the
DHCP server can be exercised by real clients and perfdhcp without the lease process.
Nothing survives a restart.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.dhcp.backend import Binding, BindingState, Client, LeaseBackend, Refusal
from app.dhcp.config import SubnetConfig, ip_int
from app.ipam.addresses import int_to_ip

log = logging.getLogger(__name__)


@dataclass(kw_only=True, slots=True)
class _Record:
    """A client's last address on one subnet (mutable, guarded by the backend's lock)."""

    address: int
    state: BindingState
    expires_at: float
    lease_time: int
    hostname: str | None = None


@dataclass(kw_only=True, slots=True)
class _Pool:
    subnet: SubnetConfig
    cursor: int  # next never-used address
    reclaim_cursor: int  # where the scan for expired/released addresses goes on
    full_until: float = 0.0  # a full scan found nothing: do not rescan before this time
    records: dict[bytes, _Record] = field(default_factory=dict)  # client id → record
    owners: dict[int, bytes] = field(default_factory=dict)  # address → client id
    probation: dict[int, float] = field(default_factory=dict)  # address → until


@dataclass(frozen=True, kw_only=True, slots=True)
class DeclineEvent:
    """What the admin is alerted about when a client declines an address."""

    subnet: str
    address: str
    client_id: bytes
    at: float


class MemoryLeaseBackend:
    def __init__(self, *, offer_lifetime: float = 30.0, decline_probation: float = 3600.0) -> None:
        self.offer_lifetime = offer_lifetime
        self.decline_probation = decline_probation
        self.declines: list[DeclineEvent] = []
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()

    # -- helpers (caller holds the lock) ---------------------------------------------------

    def _pool(self, subnet: SubnetConfig) -> _Pool:
        pool = self._pools.get(subnet.cidr)
        if pool is None:
            pool = self._pools[subnet.cidr] = _Pool(
                subnet=subnet, cursor=subnet.pool_first, reclaim_cursor=subnet.pool_first
            )
        return pool

    @staticmethod
    def _active(record: _Record, now: float) -> bool:
        return record.state in ("offered", "bound") and record.expires_at > now

    def _free_for(self, pool: _Pool, address: int, client_id: bytes, now: float) -> bool:
        """May `client_id` take `address`? (in pool, not on probation, not held by another)"""
        if not pool.subnet.pool_first <= address <= pool.subnet.pool_last:
            return False
        until = pool.probation.get(address)
        if until is not None:
            if until > now:
                return False
            del pool.probation[address]
        owner = pool.owners.get(address)
        if owner is None or owner == client_id:
            return True
        other = pool.records.get(owner)
        return other is None or other.address != address or not self._active(other, now)

    def _take(self, pool: _Pool, client_id: bytes, address: int) -> None:
        old = pool.records.get(client_id)
        if old is not None and old.address != address and pool.owners.get(old.address) == client_id:
            del pool.owners[old.address]
        previous = pool.owners.get(address)
        if previous is not None and previous != client_id:
            # The address had expired or been released by `previous`: it is no longer theirs.
            pool.records.pop(previous, None)
        pool.owners[address] = client_id

    def _new_address(self, pool: _Pool, client_id: bytes, now: float) -> int | None:
        subnet = pool.subnet
        # Never-used addresses first (cheap: the cursor only moves forward) ...
        while pool.cursor <= subnet.pool_last:
            address = pool.cursor
            pool.cursor += 1
            if address not in pool.owners and self._free_for(pool, address, client_id, now):
                return address
        # ... then reclaim expired or released ones, so other clients' previous bindings
        # are given away only when the pool has nothing else. The scan resumes where it
        # stopped, and a fruitless full scan is not repeated for a second, so an exhausted
        # pool under a DISCOVER storm costs one scan per second, not one per packet.
        if now < pool.full_until:
            return None
        first, last = subnet.pool_first, subnet.pool_last
        for _ in range(last - first + 1):
            address = pool.reclaim_cursor
            pool.reclaim_cursor = first if address >= last else address + 1
            if self._free_for(pool, address, client_id, now):
                return address
        pool.full_until = now + 1.0
        return None

    @staticmethod
    def _binding(client_id: bytes, record: _Record, lease_time: int) -> Binding:
        return Binding(
            address=int_to_ip(record.address),
            client_id=client_id,
            lease_time=lease_time,
            state=record.state,
            hostname=record.hostname,
        )

    # -- LeaseBackend ----------------------------------------------------------------------

    def offer(self, client: Client, requested: str | None, now: float) -> Binding | None:
        with self._lock:
            pool = self._pool(client.subnet)
            cid = client.client_id
            record = pool.records.get(cid)
            address: int | None = None
            if record is not None and pool.owners.get(record.address) == cid:
                if self._active(record, now) or self._free_for(pool, record.address, cid, now):
                    address = record.address  # current, else previous binding
            if address is None and requested is not None:
                try:
                    wanted = ip_int(requested)
                except OSError:
                    wanted = -1
                if wanted >= 0 and self._free_for(pool, wanted, cid, now):
                    address = wanted
            if address is None:
                address = self._new_address(pool, cid, now)
                if address is None:
                    log.warning("pool of %s exhausted", client.subnet.cidr)
                    return None
            self._take(pool, cid, address)
            if record is not None and record.state == "bound" and record.address == address \
                    and record.expires_at > now:
                # A bound client re-discovering keeps its lease; only the reply is an OFFER.
                return self._binding(cid, record, client.subnet.lease_time)
            record = _Record(
                address=address,
                state="offered",
                expires_at=now + self.offer_lifetime,
                lease_time=client.subnet.lease_time,
                hostname=client.hostname,
            )
            pool.records[cid] = record
            return self._binding(cid, record, record.lease_time)

    def _bind(self, pool: _Pool, client: Client, address: int, now: float) -> Binding:
        lease_time = client.subnet.lease_time
        self._take(pool, client.client_id, address)
        record = _Record(
            address=address,
            state="bound",
            expires_at=now + lease_time,
            lease_time=lease_time,
            hostname=client.hostname,
        )
        pool.records[client.client_id] = record
        return self._binding(client.client_id, record, lease_time)

    def commit(self, client: Client, address: str, now: float) -> Binding | Refusal:
        with self._lock:
            pool = self._pool(client.subnet)
            try:
                wanted = ip_int(address)
            except OSError:
                return Refusal(reason="not an address")
            if not self._free_for(pool, wanted, client.client_id, now):
                return Refusal(reason="address not available")
            return self._bind(pool, client, wanted, now)

    def renew(self, client: Client, address: str, now: float) -> Binding | Refusal | None:
        with self._lock:
            pool = self._pool(client.subnet)
            record = pool.records.get(client.client_id)
            try:
                wanted = ip_int(address)
            except OSError:
                return Refusal(reason="not an address")
            if record is None:
                if not self._free_for(pool, wanted, client.client_id, now):
                    return Refusal(reason="address held by another client")
                return None
            if record.address != wanted:
                return Refusal(reason="not your address")
            if not self._free_for(pool, wanted, client.client_id, now):
                return Refusal(reason="address given to another client")
            return self._bind(pool, client, wanted, now)

    def release(self, client: Client, address: str, now: float) -> None:
        with self._lock:
            pool = self._pool(client.subnet)
            record = pool.records.get(client.client_id)
            try:
                wanted = ip_int(address)
            except OSError:
                return
            if record is not None and record.address == wanted and record.state == "bound":
                record.state = "released"
                record.expires_at = now

    def decline(self, client: Client, address: str, now: float) -> None:
        with self._lock:
            pool = self._pool(client.subnet)
            try:
                wanted = ip_int(address)
            except OSError:
                return
            # Only the holder may decline an address: otherwise one client could take the
            # whole pool out of service with a burst of forged DECLINEs.
            if pool.owners.get(wanted) != client.client_id:
                return
            del pool.owners[wanted]
            record = pool.records.get(client.client_id)
            if record is not None and record.address == wanted:
                del pool.records[client.client_id]
            pool.probation[wanted] = now + self.decline_probation
            self.declines.append(
                DeclineEvent(subnet=client.subnet.cidr, address=address,
                             client_id=client.client_id, at=now)
            )
        # The admin alert; the real backend writes it to the audit log.
        log.warning("address %s declined by client %s: on probation for %ss",
                    address, client.client_id.hex(), self.decline_probation)

    def forget_offer(self, client: Client, now: float) -> None:
        with self._lock:
            pool = self._pool(client.subnet)
            record = pool.records.get(client.client_id)
            if record is not None and record.state == "offered":
                del pool.records[client.client_id]
                if pool.owners.get(record.address) == client.client_id:
                    del pool.owners[record.address]

    def lookup(self, client: Client, now: float) -> Binding | None:
        with self._lock:
            pool = self._pool(client.subnet)
            record = pool.records.get(client.client_id)
            if record is None or pool.owners.get(record.address) != client.client_id:
                return None
            state = record.state
            if state in ("offered", "bound") and record.expires_at <= now:
                state = "expired"
            remaining = max(0, int(record.expires_at - now))
            return Binding(address=int_to_ip(record.address), client_id=client.client_id,
                           lease_time=remaining, state=state, hostname=record.hostname)

    # -- for tests and the bench -------------------------------------------------------------

    def bindings(self, now: float) -> dict[str, dict[str, str]]:
        """address → {client_id (hex), state}; a snapshot for assertions and stats files."""
        out: dict[str, dict[str, str]] = {}
        with self._lock:
            for pool in self._pools.values():
                for cid, record in pool.records.items():
                    if pool.owners.get(record.address) != cid:
                        continue
                    state = record.state
                    if state in ("offered", "bound") and record.expires_at <= now:
                        state = "expired"
                    out[int_to_ip(record.address)] = {"client_id": cid.hex(), "state": state,
                                                   "subnet": pool.subnet.cidr}
        return out


if TYPE_CHECKING:  # mypy proves the in-memory backend satisfies the port
    _backend: LeaseBackend = MemoryLeaseBackend()
