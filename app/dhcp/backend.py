"""The port through which the DHCP server asks for addresses: `LeaseBackend`.

The server decides *how* to answer (RFC 2131); a backend decides *which address* a client
gets and remembers leases. Leaseflow's real backend runs the BPMN lease process and the
database allocator; `app.dhcp.memory.MemoryLeaseBackend` keeps everything in memory for
tests and benchmarks.

Contract for implementers:

- Address choice on `offer`, in this order: the client's current binding; its previous
  binding (if that address is still free); the requested address if it is in the pool and
  free; else a new address from the pool. Return `None` to make the server stay silent
  (pool exhausted, or the lease process not ready within the client's patience).
- An offered address is held for the client for `ServerConfig.offer_lifetime`.
- Calls may block (a slow process); the server runs them on worker threads and never on its
  receive loop, so a backend must be thread-safe.
- `now` is the server's wall clock (`time.time()`), passed in so tests control time.
- Exceptions other than these results are counted by the server as `backend_errors` and the
  client gets no reply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from app.dhcp.config import SubnetConfig
from app.pending import Pending

BindingState = Literal["offered", "bound", "released", "expired"]


class Client(NamedTuple):
    """Who is asking, as the server identified them (client id = option 61 else htype+chaddr).

    This, `Binding` and the RFC logic's `Inbound`, `Ask` and `Reply` are made for every
    packet, several per exchange: named tuples, immutable and built by keyword like the
    codec's `DhcpPacket`, because a frozen dataclass's field-by-field `__init__` cost 2.5
    to 3 us each against 1.3 (timeit, 5 fields, on a 2 GHz EPYC).
    """

    subnet: SubnetConfig
    client_id: bytes
    chaddr: bytes
    hostname: str | None = None
    relay_info: bytes | None = None  # option 82 as received, for backends that record it


class Binding(NamedTuple):
    """An address held by a client; `lease_time` is the seconds granted from now."""

    address: str
    client_id: bytes
    lease_time: int
    state: BindingState
    hostname: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Refusal:
    """The client may not have that address (the server answers DHCPNAK with `reason`)."""

    reason: str


class LeaseBackend(Protocol):
    def offer(self, client: Client, requested: str | None, now: float) -> Binding | None:
        """Reserve an address for a DISCOVER (see the choice order above); None = silence."""
        ...

    def commit(self, client: Client, address: str, now: float) -> Binding | Refusal:
        """Bind `address` for a REQUEST in SELECTING state (the client took our offer).

        Succeeds if the address was offered to this client, or is in the pool and free.
        """
        ...

    def renew(self, client: Client, address: str, now: float) -> Binding | Refusal | None:
        """Extend the client's lease on `address` (INIT-REBOOT, RENEWING, REBINDING).

        `Refusal` if the address is not (or can no longer be) this client's; `None` if we
        have no record of this client at all (the server stays silent unless authoritative).
        """
        ...

    def release(self, client: Client, address: str, now: float) -> None:
        """Free the address; keep the record so the client gets it back next time."""
        ...

    def decline(self, client: Client, address: str, now: float) -> None:
        """The client found the address in use: put it on probation and alert the admin.

        Only if `address` is this client's (offered or bound): a DECLINE for someone else's
        address is ignored, or one client could empty the pool.
        """
        ...

    def forget_offer(self, client: Client, now: float) -> None:
        """The client chose another server's offer: free what we offered it."""
        ...

    def lookup(self, client: Client, now: float) -> Binding | None:
        """The client's binding on `client.subnet` (any state), without changing anything."""
        ...


class Later(enum.Enum):
    LATER = "later"


LATER = Later.LATER  # `at_once`: this call needs `begin`


class GroupedLeaseBackend(LeaseBackend, Protocol):
    """A backend that answers some calls in groups, without a server thread per call.

    `at_once` answers `call` ("offer", "commit" or "renew") from what the backend holds in
    memory, on the receive loop, or says LATER. `begin` starts a call `at_once` left LATER
    and returns a `Pending` whose result is what the blocking method would have returned;
    the server answers the client from its callback, which runs on the backend's own
    thread. `None` means "not taken": the server calls the blocking method on a worker as
    usual.
    """

    def at_once(self, call: str, client: Client, address: str | None,
                now: float) -> Binding | Refusal | None | Later:
        ...

    def begin(self, call: str, client: Client, address: str | None,
              now: float) -> Pending[Binding | Refusal | None] | None:
        ...
