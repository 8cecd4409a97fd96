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


class Change(NamedTuple):
    """One lease's state after a change (a `lease.*` ledger entry); `subnet`: its CIDR."""

    subnet: str
    lease_id: int
    address: int
    client_id: str
    state: str


class LeaseIndex:
    """The holders of each subnet's addresses, each client's holding lease and the address
    of its latest lease (its previous binding, RFC 2131 §4.3.1), as of ledger entry `seq`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_address: dict[tuple[str, int], Holder] = {}
        self._by_client: dict[tuple[str, str], Holder] = {}
        self._latest: dict[tuple[str, str], tuple[int, int]] = {}  # -> (lease id, address)
        self.seq = 0  # the last ledger entry applied

    def __len__(self) -> int:
        return len(self._by_address)

    def apply(self, changes: list[Change], seq: int | None = None) -> None:
        """Apply changes in the order they happened; `seq`: the ledger entry reached."""
        with self._lock:
            for change in changes:
                self._apply(change)
            if seq is not None:
                self.seq = max(self.seq, seq)

    def _apply(self, change: Change) -> None:
        client = (change.subnet, change.client_id)
        place = (change.subnet, change.address)
        latest = self._latest.get(client)
        if latest is None or latest[0] <= change.lease_id:
            self._latest[client] = (change.lease_id, change.address)
        if change.state in _HOLDING:
            holder = Holder(change.lease_id, change.address, change.client_id, change.state)
            self._by_address[place] = holder
            mine = self._by_client.get(client)
            if mine is None or mine.lease_id <= change.lease_id:
                self._by_client[client] = holder
            return
        held = self._by_address.get(place)
        if held is not None and held.lease_id == change.lease_id:
            del self._by_address[place]
        mine = self._by_client.get(client)
        if mine is not None and mine.lease_id == change.lease_id:
            del self._by_client[client]

    def holding(self, subnet: str, client_id: str) -> Holder | None:
        """The client's offered or bound lease on the subnet."""
        return self._by_client.get((subnet, client_id))

    def previous(self, subnet: str, client_id: str) -> int | None:
        """The address of the client's latest lease on the subnet, in whatever state."""
        latest = self._latest.get((subnet, client_id))
        return latest[1] if latest is not None else None

    def holder(self, subnet: str, address: int) -> Holder | None:
        """The lease that holds the address, or None."""
        return self._by_address.get((subnet, address))

    def holders(self, subnet: str) -> set[int]:
        """Every held address of the subnet (the exact free list, rarely needed)."""
        with self._lock:
            return {address for (s, address) in self._by_address if s == subnet}

