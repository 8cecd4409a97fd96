"""Who holds which address, kept in a DHCP server's memory so a DISCOVER is answered without
a database read.

The index is a projection of the ledger: the server loads the holders once, then applies
each `lease.*` entry the ledger gains (`app.services.lease_index`). Every lease change
writes one, and the ledger's sequence numbers are taken under the head's lock, so entries
commit in their order and a reader that saw entry n has seen every entry before it: the
index follows without gaps, a few milliseconds behind.

Behind is allowed, because an offer is no commitment (RFC 2131 §4.3.1): the index only
chooses what to offer. The binding is decided by the database's unique index, as before. An
address bound elsewhere a moment ago may be offered once, and then the REQUEST is refused
(DHCPNAK) and the client starts over, as with two servers sharing a database.

Each holder also carries its lease's expiry as the ledger last described it (a renewal's
entry moves it), so a renewal the lease's last write covers can be answered from here
(`app.dhcp.reuse`).

Thread-safe: one thread applies entries while the server's threads read.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from .states import HOLDING

_HOLDING = frozenset(state.value for state in HOLDING)


class Holder(NamedTuple):  # a tuple: thousands are made a second, as the ledger grows
    """A lease that holds its address (offered or bound), as the ledger last described it."""

    lease_id: int
    address: int
    client_id: str
    state: str
    expires_at: float | None = None  # POSIX seconds


class Change(NamedTuple):
    """One lease's state after a change (a `lease.*` ledger entry); `subnet`: its CIDR,
    `expires_at`: its expiry in POSIX seconds, if it has one."""

    subnet: str
    lease_id: int
    address: int
    client_id: str
    state: str
    expires_at: float | None = None


class LeaseIndex:
    """The holders of each subnet's addresses, each client's holding lease and the address
    of its latest lease (its previous binding, RFC 2131 §4.3.1), as of ledger entry `seq`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Per subnet, so no key tuple is kept per lease: about a third less memory.
        self._by_address: dict[str, dict[int, Holder]] = {}
        self._by_client: dict[str, dict[str, Holder]] = {}
        self._latest: dict[str, dict[str, tuple[int, int]]] = {}  # -> (lease id, address)
        self._let_go: set[int] = set()  # leases given back here, not yet ended in the ledger
        self.seq = 0  # the last ledger entry applied

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_address.values())

    def apply(self, changes: list[Change], seq: int | None = None) -> None:
        """Apply changes in the order they happened; `seq`: the ledger entry reached."""
        with self._lock:
            for change in changes:
                self._apply(change)
            if seq is not None:
                self.seq = max(self.seq, seq)

    def _apply(self, change: Change) -> None:
        subnet, lease_id, address, client_id, state, expires_at = change
        latest = self._latest.setdefault(subnet, {})
        last = latest.get(client_id)
        if last is None or last[0] <= lease_id:
            latest[client_id] = (lease_id, address)
        by_address = self._by_address.setdefault(subnet, {})
        by_client = self._by_client.setdefault(subnet, {})
        mine = by_client.get(client_id)
        if state in _HOLDING:
            if lease_id in self._let_go:
                return  # an entry from before the client gave it back
            holder = Holder(lease_id, address, client_id, state, expires_at)
            by_address[address] = holder
            if mine is None or mine.lease_id <= lease_id:
                by_client[client_id] = holder
            return
        self._let_go.discard(lease_id)
        held = by_address.get(address)
        if held is not None and held.lease_id == lease_id:
            del by_address[address]
        if mine is not None and mine.lease_id == lease_id:
            del by_client[client_id]

    def holding(self, subnet: str, client_id: str) -> Holder | None:
        """The client's offered or bound lease on the subnet."""
        return self._by_client.get(subnet, {}).get(client_id)

    def previous(self, subnet: str, client_id: str) -> int | None:
        """The address of the client's latest lease on the subnet, in whatever state."""
        latest = self._latest.get(subnet, {}).get(client_id)
        return latest[1] if latest is not None else None

    def let_go(self, subnet: str, client_id: str, address: int) -> None:
        """The client gave its lease of `address` back (RELEASE, DECLINE) through this
        server: it holds nothing here from now on, before the ledger says so, and an older
        entry of that lease read later does not make it a holder again."""
        with self._lock:
            mine = self._by_client.get(subnet, {}).get(client_id)
            if mine is None or mine.address != address:
                return
            del self._by_client[subnet][client_id]
            self._let_go.add(mine.lease_id)
            if self._by_address[subnet].get(mine.address) is mine:
                del self._by_address[subnet][mine.address]

    def holder(self, subnet: str, address: int) -> Holder | None:
        """The lease that holds the address, or None."""
        return self._by_address.get(subnet, {}).get(address)

    def holders(self, subnet: str) -> set[int]:
        """Every held address of the subnet (the exact free list, rarely needed)."""
        with self._lock:
            return set(self._by_address.get(subnet, {}))

