"""`FastLeaseBackend`: the DHCP server's fast DORA path (`leaseflow dhcp --dora fast`).

A DISCOVER is answered at once from the server's memory (`dora.offer_indexed`: the lease
index, kept current from the ledger on its own thread, and the offer book). REQUESTs and
renewals are handed to one group commit: every exchange waiting at that moment is answered
from one transaction (`app.services.dora`), and the `dhcp_lease`
instance of each newly bound lease is stored with it and started by a worker. An ACK goes
out only after that transaction committed. A renewal moves the expiry in the database only:
the instance's expiry timer reads it there before it lets the lease go, and a renewal of a
lease written a moment ago is ACKed from the index with the time left (`app.dhcp.reuse`),
without a write. RELEASE, DECLINE,
an offer taken elsewhere and lookups are the process backend's, so the instance hears
about them as on the process path.

The server hands these exchanges over without blocking (`begin`, the
`GroupedLeaseBackend` port) and sends each reply once its group committed (paced,
`app.dhcp.pacer`): no server thread waits per exchange, so a group holds every exchange
that arrived while the previous one ran. A failed group commit fails only its own
exchanges (silence: the clients retransmit), never with a wrong answer.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.dhcp.backend import LATER, Binding, Client, Later, Refusal
from app.dhcp.handler import Counters
from app.dhcp.process_backend import DEFAULT_PATIENCE, ProcessLeaseBackend, _hwaddr
from app.dhcp.reuse import check_threshold, granted
from app.extensions import db
from app.ipam.addresses import int_to_ip, ip_to_int
from app.ipam.allocator import Stripe
from app.ipam.offers import OfferBook
from app.pending import Pending
from app.services import dhcp, dora, lease_index, subnets

if TYPE_CHECKING:
    from flask import Flask

    from app.services.dora import Ask, Outcome
    from app.services.group import GroupCommit

log = logging.getLogger(__name__)


class FastLeaseBackend(ProcessLeaseBackend):
    def __init__(self, app: Flask, *, patience: float = DEFAULT_PATIENCE,
                 offer_lifetime: float = 30.0, actor: str = "dhcp",
                 max_group: int = 1024, stripe: Stripe | None = None,
                 follow_every: float = 0.02, bind_threads: int = 1,
                 bind_window: float = 0.004, reuse: float = 0.0,
                 counters: Counters | None = None) -> None:
        from app.services.group import GroupCommit

        super().__init__(app, patience=patience, offer_lifetime=offer_lifetime, actor=actor)
        with app.app_context():
            self._read(dora.check_process)  # fail at start, not on the first REQUEST
            # DISCOVERs are answered from memory: the index follows the ledger on a thread.
            self.index = self._read(lease_index.load)
            self._engine = db.engine  # whose subnets' copies the receive loop reads
        self.book = OfferBook(stripe=stripe)  # stripe: one of several processes
        self.reuse = check_threshold(reuse)
        self.counters = counters if counters is not None else Counters()  # acks_reused
        self._follower = lease_index.Follower(app, self.index, every=follow_every,
                                              guard=self._turn)
        # Offers the index cannot decide (reads) and bindings (writes) group separately: a
        # DISCOVER never waits behind a group of bindings. One group of bindings at a time
        # by default: with the offers answered from memory, a second one committing beside
        # it made the groups smaller and cost more per lease (one process on 2 cores at
        # 4,000 new leases/s: 0.209 + 0.080 ms of server and database CPU per lease with
        # two, 0.199 + 0.068 with one, which also dropped nothing). SQLite takes one
        # transaction at a time anyway (the server's turn). Under load a group of bindings
        # also waits up to `bind_window` for more (`GroupCommit` busy_window): at 5,000 new
        # leases/s over two processes that took 8 % off the CPU per lease.
        sqlite = str(app.config.get("SQLALCHEMY_DATABASE_URI", "")).startswith("sqlite")

        def run(asks: Sequence[Ask]) -> list[Outcome]:
            return dora.run(asks, book=self.book, actor=actor)

        # Each group's ledger entries go to the follower as it commits (`Follower.own`).
        self._offers: GroupCommit[Ask, Outcome] = GroupCommit(
            app, run, name="dhcp-offers", max_group=max_group, guard=self._turn,
            after=self._follower.own)
        self._binds: GroupCommit[Ask, Outcome] = GroupCommit(
            app, run, name="dhcp-binds", max_group=max_group, guard=self._turn,
            busy_window=bind_window,
            threads=1 if sqlite else bind_threads, after=self._follower.own)

    def close(self) -> None:
        self._follower.close()
        self._offers.close()
        self._binds.close()

    def at_once(self, call: str, client: Client, address: str | None,
                now: float) -> Binding | Refusal | None | Later:
        """What the server answers from memory on its receive loop (`GroupedLeaseBackend`):
        an OFFER from the index, a refused address outside the pool, a reused lease; LATER
        for what needs a group's transaction."""
        if call == "offer":
            offered = self._offer_now(self._discover(client, address))
            return LATER if offered is None else self._reply(client, offered)
        if call not in ("commit", "renew") or address is None:
            return LATER
        if call == "commit" and not client.subnet.in_pool(address):
            return Refusal(reason="address not in the pool")
        reused = self._reused(client, dhcp.client_key(client.client_id), address)
        return LATER if reused is None else reused

    def begin(self, call: str, client: Client, address: str | None,
              now: float) -> Pending[Binding | Refusal | None] | None:
        """The server's non-blocking entry (`GroupedLeaseBackend`) for what `at_once` left
        LATER (DISCOVERs, REQUESTs and renewals): the call joins the next group, and the
        answer comes from the group's thread."""
        if call not in ("offer", "commit", "renew") or (call != "offer" and address is None):
            return None
        cid = dhcp.client_key(client.client_id)
        ask: Ask
        if call == "offer":
            ask = self._discover(client, address)
        else:
            assert address is not None
            kind = dora.Request if call == "commit" else dora.Renew
            ask = kind(cidr=client.subnet.cidr, client_id=cid, address=address,
                       hwaddr=_hwaddr(client), hostname=client.hostname)
        answer: Pending[Binding | Refusal | None] = Pending()

        def settle(done: Pending[Outcome]) -> None:
            try:
                reply = self._reply(client, done.result())
            except Exception as exc:  # the group failed: the client retransmits
                log.warning("DHCP exchange of %s not stored: %s", cid, exc)
                answer.set_result(None)
                return
            if isinstance(reply, Refusal) and call == "commit":
                # NAK: the client starts over, and its next DISCOVER must not get the
                # address again (e.g. another server bound it since our OFFER).
                self.book.drop(client.subnet.cidr, cid)
            answer.set_result(reply)

        group = self._offers if isinstance(ask, dora.Discover) else self._binds
        group.submit_nowait(ask).add_done_callback(settle)
        return answer

    def _discover(self, client: Client, requested: str | None) -> dora.Discover:
        return dora.Discover(cidr=client.subnet.cidr, client_id=dhcp.client_key(client.client_id),
                             hwaddr=_hwaddr(client), hostname=client.hostname,
                             requested_ip=requested, offer_lifetime=self.offer_lifetime)

    def _offer_now(self, ask: dora.Discover) -> dora.Offered | None:
        """The OFFER from memory (`dora.offer_indexed`); None: a group reads the database
        (a nearly full pool, or a subnet this process cannot read now)."""
        known = subnets.known_copy(ask.cidr, self._engine)
        if known is None:  # once a second: read it again, in an app context
            try:
                with self.app.app_context():
                    known = subnets.known(ask.cidr)
            except Exception:  # noqa: BLE001 - the group's transaction reports it
                return None
        offered = dora.offer_indexed(ask, index=self.index, book=self.book, pool=known.pool,
                                     now=time.monotonic())
        return offered if isinstance(offered, dora.Offered) else None

    def _reused(self, client: Client, cid: str, address: str) -> Binding | None:
        """The ACK of a renewal (or a REQUEST for what the client holds) that the lease's
        last write covers (`app.dhcp.reuse`), from the index; None: it is written.

        The index follows the ledger a few milliseconds behind: a lease ended elsewhere
        just now (an operator's release) may be confirmed once more, up to the expiry it
        was stored with, as if the renewal had come a moment earlier. A client's own
        RELEASE or DECLINE reaches the index at once (`let_go`)."""
        holder = self.index.holding(client.subnet.cidr, cid)
        if holder is None or holder.state != "bound" or int_to_ip(holder.address) != address:
            return None
        seconds = granted(holder.expires_at, client.subnet.lease_time, self.reuse, time.time())
        if seconds is None:
            return None
        self.counters.add("acks_reused")
        return Binding(address=address, client_id=client.client_id, lease_time=seconds,
                       state="bound", hostname=client.hostname)

    def _call(self, call: str, client: Client,
              address: str | None) -> Binding | Refusal | None:
        """`at_once`, else `begin` waited for at most the client's patience (None:
        silence)."""
        known = self.at_once(call, client, address, time.time())
        if known is not LATER:
            return known
        future = self.begin(call, client, address, time.time())
        assert future is not None  # offer, commit and renew are always taken
        try:
            return future.result(timeout=self.patience)
        except TimeoutError:
            return None  # answered later, or not at all: the client retransmits

    def _reply(self, client: Client, outcome: Outcome) -> Binding | Refusal | None:
        """A group's outcome as the server's answer: OFFER/ACK, NAK, or silence."""
        if isinstance(outcome, dora.Offered):
            return Binding(address=outcome.address, client_id=client.client_id,
                           lease_time=client.subnet.lease_time, state="offered",
                           hostname=client.hostname)
        if isinstance(outcome, dora.Refused):
            return Refusal(reason=outcome.reason)
        if not isinstance(outcome, dhcp.LeaseView):
            return None
        if outcome.state == "offered":
            return self._binding(client, outcome, client.subnet.lease_time)
        return self._binding(client, outcome)

    def offer(self, client: Client, requested: str | None, now: float) -> Binding | None:
        reply = self._call("offer", client, requested)
        return reply if isinstance(reply, Binding) else None

    def renew(self, client: Client, address: str, now: float) -> Binding | Refusal | None:
        return self._call("renew", client, address)

    def forget_offer(self, client: Client, now: float) -> None:
        self.book.drop(client.subnet.cidr, dhcp.client_key(client.client_id))
        super().forget_offer(client, now)

    def release(self, client: Client, address: str, now: float) -> None:
        self._let_go(client, address)
        super().release(client, address, now)

    def decline(self, client: Client, address: str, now: float) -> None:
        self.book.drop(client.subnet.cidr, dhcp.client_key(client.client_id))
        self._let_go(client, address)
        super().decline(client, address, now)

    def _let_go(self, client: Client, address: str) -> None:
        """No renewal of `address` by this client is reused once it gave it back."""
        with contextlib.suppress(ValueError):  # not an address: it holds no such lease
            self.index.let_go(client.subnet.cidr, dhcp.client_key(client.client_id),
                              ip_to_int(address))

    def _request(self, client: Client, address: str) -> Binding | Refusal | None:
        """Bind `address` (SELECTING, or a reboot we hold no lease for) in a group."""
        return self._call("commit", client, address)


if TYPE_CHECKING:  # mypy proves the fast backend satisfies the grouped port
    from app.dhcp.backend import GroupedLeaseBackend

    def _check(app: Flask) -> GroupedLeaseBackend:
        return FastLeaseBackend(app)
