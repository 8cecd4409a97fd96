"""The DHCP server's fast DORA path: OFFER and ACK from group-committed transactions, the
`dhcp_lease` instance follows.

On the process path (`app.dhcp.process_backend`) every DISCOVER starts an instance and
waits for its reservation, every REQUEST is a message that waits for its commit: each
exchange pays for four engine steps and two saves of a workflow, about 4-5 ms of CPU, so a
boot storm of a few thousand clients overruns the server. On this path the server's own
transactions do what those steps would have done, for many exchanges at once:

- DISCOVER: `offer_many` reserves an address per client (the allocator's batch, one
  multi-row INSERT ... ON CONFLICT DO NOTHING per round), held for the offer lifetime. A
  client that holds an offer or a lease already gets the same address again.
- REQUEST: `bind_many` binds the offered lease (or, without an offer of ours, reserves and
  binds the requested address), durably before the ACK, and stores the client's
  `dhcp_lease` instance with `bound_lease_id` and an `engine.start` job, in the same
  transaction. A worker starts it later; the diagram adopts the binding and governs the
  rest of the lease's life (renewals, RELEASE, DECLINE, expiry, manual retries).

The guarantees stay where they were: the database's partial unique index decides every
conflict, the lease, its history, the ledger entries and the instance's start job commit
together (nothing is lost in a crash), and an ACK goes out only after that commit. What
this path gives up is steps of the diagram *before* the binding (for example a chain
validation before the OFFER): a site that needs them runs the process path. Offers nobody
took are freed by the ticker (`leases.reclaim_offers`), as the instance's timer would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from ..errors import LeaseflowError
from ..extensions import db
from ..ipam.addresses import int_to_ip
from ..leases.states import LeaseState
from ..models import Lease, ProcessInstance, utcnow
from ..operations import BusinessError
from . import definitions, ids, instances, leases, subnets, uow
from .dhcp import PROCESS_KEY, LeaseView, renew_bound, view

log = logging.getLogger(__name__)
ADOPT_TASK = "adopt_binding"  # the diagram's step that takes over a binding made here
HOLDING = (LeaseState.OFFERED.value, LeaseState.BOUND.value)


@dataclass(frozen=True, kw_only=True, slots=True)
class Discover:
    cidr: str
    client_id: str
    hwaddr: str | None = None
    hostname: str | None = None
    requested_ip: str | None = None
    offer_lifetime: float = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """A REQUEST for `address` (SELECTING, or a REBOOT/renewal we hold no lease for)."""

    cidr: str
    client_id: str
    address: str
    hwaddr: str | None = None
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The client may not have the address: the server answers DHCPNAK with `reason`."""

    reason: str


Outcome = LeaseView | Refused | None  # None: no answer (e.g. the pool is exhausted)


def check_process() -> None:
    """The active `dhcp_lease` process must be able to adopt a binding made here."""
    definition = definitions.active(PROCESS_KEY)
    if not definitions.spec_by_id(definition.id).has_task(ADOPT_TASK):
        raise LeaseflowError(
            f"the active {PROCESS_KEY} process (v{definition.version}) has no "
            f"{ADOPT_TASK!r} step, so it cannot follow leases bound on the fast DORA path; "
            "deploy processes/dhcp_lease.bpmn (or a version built on it), or run the "
            "process path", code="process_cannot_adopt")


def run(asks: Sequence[Discover | Request], *, actor: str) -> list[Outcome]:
    """One group of exchanges, in the caller's unit of work: offers, then bindings."""
    outcomes: list[Outcome] = [None] * len(asks)
    discovers = [(i, a) for i, a in enumerate(asks) if isinstance(a, Discover)]
    requests = [(i, a) for i, a in enumerate(asks) if isinstance(a, Request)]
    for (i, _), offered in zip(discovers, offer_many([a for _, a in discovers], actor=actor),
                               strict=True):
        outcomes[i] = offered
    for (i, _), bound in zip(requests, bind_many([a for _, a in requests], actor=actor),
                             strict=True):
        outcomes[i] = bound
    return outcomes


def _first_of_each(asks: Sequence[Discover | Request]) -> dict[tuple[str, str], int]:
    """(subnet, client) -> the place of its first ask: a retransmission in the same group
    gets the first copy's outcome."""
    first: dict[tuple[str, str], int] = {}
    for i, ask in enumerate(asks):
        first.setdefault((ask.cidr, ask.client_id), i)
    return first


def offer_many(asks: Sequence[Discover], *, actor: str) -> list[LeaseView | None]:
    first = _first_of_each(asks)
    unique = sorted(first.values())
    reserved = leases.reserve_many([leases.Ask(
        subnet=asks[i].cidr, client_id=asks[i].client_id, hwaddr=asks[i].hwaddr,
        hostname=asks[i].hostname, requested_ip=asks[i].requested_ip,
        hold_seconds=asks[i].offer_lifetime, actor=actor) for i in unique])
    found: dict[int, LeaseView | None] = {}
    again: list[int] = []  # clients that hold an offer or a lease already
    for i, outcome in zip(unique, reserved, strict=True):
        if isinstance(outcome, Lease):
            found[i] = view(outcome)
        elif outcome.code == "client_has_lease":
            again.append(i)
        else:
            log.info("no offer for %s on %s: %s", asks[i].client_id, asks[i].cidr, outcome)
            found[i] = None
    if again:
        held = _holding([(asks[i].cidr, asks[i].client_id) for i in again])
        for i in again:
            lease = held.get((asks[i].cidr, asks[i].client_id))
            if lease is not None and lease.state == LeaseState.OFFERED.value \
                    and lease.instance_id is None:
                # The same offer again: it holds for another offer lifetime from now.
                lease.expires_at = utcnow() + timedelta(seconds=asks[i].offer_lifetime)
            found[i] = view(lease)
    return [found[first[(ask.cidr, ask.client_id)]] for ask in asks]


def _holding(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Lease]:
    """The offered or bound lease of each (subnet, client), locked for this transaction."""
    ids = {cidr: subnets.by_cidr(cidr).id for cidr, _ in keys}
    cidr_of = {subnet_id: cidr for cidr, subnet_id in ids.items()}
    wanted = set(keys)
    rows = db.session.execute(select(Lease).where(
        Lease.subnet_id.in_(set(ids.values())), Lease.client_id.in_({c for _, c in keys}),
        Lease.state.in_(HOLDING)).order_by(Lease.id).with_for_update()).scalars().all()
    found: dict[tuple[str, str], Lease] = {}
    fresh = uow.pending().fresh_leases
    for lease in rows:
        key = (cidr_of[lease.subnet_id], lease.client_id)
        if key in wanted:
            found[key] = lease  # the newest wins (ordered by id)
            fresh[lease.id] = lease  # locked by this transaction: no second lock
    return found


def bind_many(asks: Sequence[Request], *, actor: str) -> list[Outcome]:
    first = _first_of_each(asks)
    unique = sorted(first.values())
    held = _holding([(asks[i].cidr, asks[i].client_id) for i in unique])
    found: dict[int, Outcome] = {}
    offered: list[tuple[int, Request, Lease]] = []  # our offers: bound together below
    claims: list[int] = []  # no lease of ours: reserve the requested address first
    for i in unique:
        ask = asks[i]
        lease = held.get((ask.cidr, ask.client_id))
        if lease is None:
            claims.append(i)
        elif int_to_ip(lease.address) != ask.address:
            found[i] = Refused("not the address offered to this client")
        elif lease.state == LeaseState.BOUND.value:
            # A retransmitted REQUEST, or a client requesting what it holds: renew.
            found[i] = renew_bound(lease.id, lease.client_id, actor=actor)
        elif lease.instance_id is not None:
            found[i] = _through_process(lease, ask, actor=actor)
        else:
            offered.append((i, ask, lease))
    if claims:
        offered.extend(_claim([asks[i] for i in claims], found, claims, actor=actor))
    _bind(offered, actor=actor)
    for i, _, lease in offered:
        found[i] = view(lease)
    return [found[first[(ask.cidr, ask.client_id)]] for ask in asks]


def _claim(asks: Sequence[Request], found: dict[int, Outcome], places: Sequence[int], *,
           actor: str) -> list[tuple[int, Request, Lease]]:
    """Reserve the requested address of clients we made no offer to; the offers made."""
    reserved = leases.reserve_many([leases.Ask(
        subnet=ask.cidr, client_id=ask.client_id, hwaddr=ask.hwaddr, hostname=ask.hostname,
        requested_ip=ask.address, actor=actor) for ask in asks])
    made = []
    for place, ask, outcome in zip(places, asks, reserved, strict=True):
        if isinstance(outcome, BusinessError):
            found[place] = Refused(outcome.message)
        elif int_to_ip(outcome.address) != ask.address:
            leases.release(outcome.id, reason="abandon", actor=actor)  # not what they asked
            found[place] = Refused("address not available")
        else:
            made.append((place, ask, outcome))
    return made


def _through_process(lease: Lease, ask: Request, *, actor: str) -> Outcome:
    """An offer a process-path server made (several servers share the database): its
    instance takes the REQUEST, run ahead in this transaction."""
    from . import dhcp

    dhcp.tell(lease.instance_id or 0, "dhcp_request",
              {"address": ask.address, "hostname": ask.hostname}, actor=actor)
    dhcp.run_parked()
    if lease.state == LeaseState.BOUND.value:
        return view(lease)
    return None  # not bound yet (a retry waits out its backoff): the client retransmits


def _bind(offered: Sequence[tuple[int, Request, Lease]], *, actor: str) -> None:
    """Bind the offered leases and store each one's `dhcp_lease` instance (started later
    by a worker), all in one UPDATE and one group of rows."""
    if not offered:
        return
    definition = definitions.active(PROCESS_KEY)
    entries = []
    for _, ask, lease in offered:
        expires = utcnow() + timedelta(seconds=lease.subnet.lease_time)
        request: dict[str, Any] = {
            "subnet": ask.cidr, "client_id": lease.client_id, "hwaddr": lease.hwaddr,
            "hostname": lease.hostname, "requested_ip": int_to_ip(lease.address),
            "bound_lease_id": lease.id, "bound_until": expires.isoformat()}
        entries.append(instances.Accepted(request=request, actor=actor,
                                          subnet_id=lease.subnet_id,
                                          client_id=lease.client_id, lease_id=lease.id))
    # With ids from the sequence the binding is written (and recorded) before its
    # instance; without (SQLite) the instances go in first to get theirs.
    instance_ids = ids.allocate(ProcessInstance, len(entries))
    if instance_ids is None:
        instance_ids = instances.accept_many(definition, entries)
        leases.commit_many([(lease, n) for (_, _, lease), n in zip(offered, instance_ids,
                                                                    strict=True)], actor=actor)
    else:
        leases.commit_many([(lease, n) for (_, _, lease), n in zip(offered, instance_ids,
                                                                    strict=True)], actor=actor)
        instances.accept_many(definition, entries, instance_ids=instance_ids)
