"""Offers held in memory: the addresses a DHCP server on the fast DORA path has offered and
not yet bound.

Kea and ISC dhcpd hold their offers the same way: an offer is no commitment (RFC 2131
§4.3.1: the client may take another server's, or none), so writing each one durably costs a
transaction per DISCOVER for nothing a crash would lose. What must not happen — two holders
of one address — is decided when the lease is bound, by the database's unique index. Within
one server the book keeps two clients from being offered one address for the offer
lifetime; two servers sharing a database may offer the same address to two clients, and
then the second REQUEST is refused (DHCPNAK) and that client starts over.

Thread-safe; times are the caller's clock (seconds), so tests control them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .allocator import Stripe


@dataclass(frozen=True, slots=True)
class Held:
    address: int
    until: float


class OfferBook:
    """`stripe`: the share of each pool this server offers from first, when it is one of
    several processes sharing the pools (`app.ipam.allocator.Stripe`)."""

    def __init__(self, *, purge_every: float = 5.0, stripe: Stripe | None = None) -> None:
        self.stripe = stripe
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Held] = {}  # (subnet, client) -> its offer
        self._addresses: dict[tuple[str, int], str] = {}  # (subnet, address) -> client
        self._purge_every = purge_every
        self._next_purge = 0.0

    def __len__(self) -> int:
        return len(self._clients)

    def held(self, subnet: str, client: str, now: float) -> int | None:
        """The address offered to `client` that still holds, or None."""
        with self._lock:
            entry = self._clients.get((subnet, client))
            return entry.address if entry is not None and entry.until > now else None

    def holder(self, subnet: str, address: int, now: float) -> str | None:
        """The client a live offer of `address` is held for, or None."""
        with self._lock:
            client = self._addresses.get((subnet, address))
            if client is None:
                return None
            entry = self._clients.get((subnet, client))
            if entry is None or entry.address != address or entry.until <= now:
                return None
            return client

    def addresses(self, subnet: str, now: float) -> set[int]:
        """Every address with a live offer on `subnet` (for the free list, rarely needed)."""
        with self._lock:
            return {held.address for (s, _), held in self._clients.items()
                    if s == subnet and held.until > now}

    def claim(self, subnet: str, client: str, address: int, until: float,
              now: float) -> bool:
        """Hold `address` for `client` unless another client's live offer holds it (one
        check-and-hold, so two groups choosing at once cannot both take it)."""
        with self._lock:
            other = self._addresses.get((subnet, address))
            if other is not None and other != client:
                entry = self._clients.get((subnet, other))
                if entry is not None and entry.address == address and entry.until > now:
                    return False
            self._hold(subnet, client, address, until, now)
            return True

    def _hold(self, subnet: str, client: str, address: int, until: float,
              now: float) -> None:
        previous = self._clients.get((subnet, client))
        if previous is not None and previous.address != address:
            self._addresses.pop((subnet, previous.address), None)
        self._clients[(subnet, client)] = Held(address, until)
        self._addresses[(subnet, address)] = client
        if now >= self._next_purge:
            self._purge(now)
            self._next_purge = now + self._purge_every

    def drop(self, subnet: str, client: str) -> int | None:
        """Forget the client's offer (bound, declined or taken elsewhere); its address."""
        with self._lock:
            entry = self._clients.pop((subnet, client), None)
            if entry is None:
                return None
            if self._addresses.get((subnet, entry.address)) == client:
                del self._addresses[(subnet, entry.address)]
            return entry.address

    def _purge(self, now: float) -> None:
        stale = [key for key, held in self._clients.items() if held.until <= now]
        for subnet, client in stale:
            entry = self._clients.pop((subnet, client))
            if self._addresses.get((subnet, entry.address)) == client:
                del self._addresses[(subnet, entry.address)]
