"""The DHCP server's fast DORA path: OFFER and ACK from group-committed transactions, the
`dhcp_lease` instance follows.

On the process path (`app.dhcp.process_backend`) every DISCOVER starts an instance and
waits for its reservation, every REQUEST is a message that waits for its commit: each
exchange pays for four engine steps and two saves of a workflow, about 4-5 ms of CPU, so a
boot storm of a few thousand clients overruns the server. On this path the server answers
many exchanges per transaction, as Kea and ISC dhcpd would, and the process takes over
once the lease is bound:

- DISCOVER: `offer_indexed` picks an address per client (the allocator's preferred
  order, then random probes) from the server's memory: the `LeaseIndex` of holders, which
  follows the ledger (`app.services.lease_index`), and the `OfferBook`, which holds the
  offer for the offer lifetime. No transaction, no thread hand-over. An offer is no
  commitment (RFC 2131 §4.3.1), so it costs no write. A client that holds a lease gets it
  again. Only when every candidate is held (a nearly full pool) does a group read the
  database's exact free list (`offer_many`).
- REQUEST: `bind_many` inserts the bound leases of a group in one statement, durably
  before the ACK, and stores each client's `dhcp_lease` instance (`bound_lease_id` in its
  request) in the same transaction. The diagram adopts the binding and governs the rest
  of the lease's life (renewals, RELEASE, DECLINE, expiry, manual retries). Where the
  diagram only waits after adopting, the instance is stored already there, stamped from
  the engine's snapshot (`runtime.snapshot`): no worker, no engine step. Otherwise it gets
  an `engine.start` job and a worker runs it.
- Renewals: `renew_many` moves the expiries of a group in one UPDATE; the instance's
  expiry timer reads the database before it lets a lease go. A renewal of a lease written
  a moment ago never gets here: the server ACKs it from the index with the time left
  (`app.dhcp.reuse`).

The guarantees stay where they were: the database's partial unique index decides every
conflict (a REQUEST for an address someone else got meanwhile, e.g. from another server
sharing the database, is refused and the client starts over), and the lease, its history,
the ledger entries and its instance commit together, so a crash loses no binding and no
instance. What this path gives up is steps of the diagram *before* the
binding (for example a chain validation before the OFFER): a site that needs them runs
the process path.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ..engine import runtime
from ..errors import LeaseflowError
from ..extensions import db
from ..ipam.addresses import IpamError, int_to_ip, parse_address
from ..ipam.allocator import Pool, free_candidates, iter_probes, preferred, random_probes
from ..ipam.offers import OfferBook
from ..leases.index import LeaseIndex
from ..leases.states import LeaseState
from ..models import HOLDING_SQL, Lease, ProcessInstance, ServiceJob
from . import definitions, ids, instances, leases, plain_sql, subnets, uow
from .dhcp import HOLDING, PROCESS_KEY, LeaseView, view

log = logging.getLogger(__name__)
ADOPT_TASK = "adopt_binding"  # the diagram's step that takes over a binding made here
PROBES = 8  # random candidates per DISCOVER after the preferred ones
_rng = random.Random()


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


@dataclass(frozen=True, kw_only=True, slots=True)
class Renew(Request):
    """A renewal (RENEWING, REBINDING, INIT-REBOOT) of `address` by its client."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The client may not have the address: the server answers DHCPNAK with `reason`."""

    reason: str


@dataclass(frozen=True, slots=True)
class Offered:
    """An address held for the client in the server's offer book (not in the database)."""

    address: str


# None: no answer (e.g. the pool is exhausted; the client retransmits or tries elsewhere)
Outcome = LeaseView | Offered | Refused | None


def check_process() -> None:
    """The active `dhcp_lease` process must be able to adopt a binding made here. Its
    snapshot is taken now too, so the first REQUEST does not wait for that engine run."""
    definition = definitions.current(PROCESS_KEY)
    if definitions.spec_by_id(definition.id).has_task(ADOPT_TASK):
        _snapshot(definition)
    else:
        raise LeaseflowError(
            f"the active {PROCESS_KEY} process (v{definition.version}) has no "
            f"{ADOPT_TASK!r} step, so it cannot follow leases bound on the fast DORA path; "
            "deploy processes/dhcp_lease.bpmn (or a version built on it), or run the "
            "process path", code="process_cannot_adopt")


Ask = Discover | Request  # a Renew is a Request too


def run(asks: Sequence[Ask], *, book: OfferBook, actor: str,
        now: float | None = None) -> list[Outcome]:
    """One group of exchanges, in the caller's unit of work: offers, bindings, renewals.
    `now` is the offer book's clock (monotonic seconds)."""
    clock = time.monotonic() if now is None else now
    outcomes: list[Outcome] = [None] * len(asks)
    discovers = [(i, a) for i, a in enumerate(asks) if isinstance(a, Discover)]
    if len(discovers) == len(asks):
        uow.reads_only()  # offers write nothing: no transaction around the reads
    renewals = [(i, a) for i, a in enumerate(asks) if isinstance(a, Renew)]
    requests = [(i, a) for i, a in enumerate(asks)
                if isinstance(a, Request) and not isinstance(a, Renew)]
    if discovers:
        for (i, _), offered in zip(discovers, offer_many([a for _, a in discovers],
                                                         book=book, now=clock), strict=True):
            outcomes[i] = offered
    if requests:
        for (i, _), bound in zip(requests, bind_many([a for _, a in requests], actor=actor),
                                 strict=True):
            outcomes[i] = bound
    if renewals:
        for (i, _), renewed in zip(renewals, renew_many([a for _, a in renewals],
                                                        actor=actor), strict=True):
            outcomes[i] = renewed
    return outcomes


def _first_of_each(asks: Sequence[Ask]) -> dict[tuple[str, str], int]:
    """(subnet, client) -> the place of its first ask: a retransmission in the same group
    gets the first copy's outcome."""
    first: dict[tuple[str, str], int] = {}
    for i, ask in enumerate(asks):
        first.setdefault((ask.cidr, ask.client_id), i)
    return first


def offer_many(asks: Sequence[Discover], *, book: OfferBook,
               now: float) -> list[LeaseView | Offered | None]:
    first = _first_of_each(asks)
    found: dict[int, LeaseView | Offered | None] = {}
    fresh: list[int] = []
    for i in sorted(first.values()):
        held = book.held(asks[i].cidr, asks[i].client_id, now)
        if held is not None:  # a retransmitted DISCOVER: the same offer again
            found[i] = Offered(int_to_ip(held))
        else:
            fresh.append(i)
    if fresh:
        _choose([asks[i] for i in fresh], fresh, found, book=book, now=now)
    return [found[first[(ask.cidr, ask.client_id)]] for ask in asks]


class Undecided:
    """`offer_indexed` could not choose from memory: the database's free list decides."""


UNDECIDED = Undecided()


def offer_indexed(ask: Discover, *, index: LeaseIndex, book: OfferBook, pool: Pool,
                  now: float) -> Offered | Undecided:
    """An OFFER from the server's memory alone (no transaction): the offer still held, the
    client's lease, else the first of its preferred addresses and random probes that
    neither the index nor the book holds. UNDECIDED when every candidate is held (a nearly
    full pool): then `offer_many` reads the database's exact free list.

    A client that holds a lease is offered its address for the subnet's full lease time:
    its REQUEST renews the lease for that long (`bind_many`)."""
    held = book.held(ask.cidr, ask.client_id, now)
    if held is not None:  # a retransmitted DISCOVER: the same offer again, unless another
        other = index.holder(ask.cidr, held)  # client got the address meanwhile
        if other is None or other.client_id == ask.client_id:
            return Offered(int_to_ip(held))
        book.drop(ask.cidr, ask.client_id)
    holder = index.holding(ask.cidr, ask.client_id)
    if holder is not None:  # a client rebooting, or asking again: its own lease
        return Offered(int_to_ip(holder.address))
    until = now + ask.offer_lifetime
    previous = index.previous(ask.cidr, ask.client_id)
    for address in itertools.chain(_preferred(ask, pool, previous),
                                   iter_probes(pool, PROBES, _rng, book.stripe)):
        if index.holder(ask.cidr, address) is None and \
                book.claim(ask.cidr, ask.client_id, address, until, now):
            return Offered(int_to_ip(address))
    return UNDECIDED


def _candidates(ask: Discover, pool: Pool, previous: int | None,
                book: OfferBook) -> list[int]:
    """The addresses to try for a client without a lease, best first: its previous one,
    the one it asks for (if it parses), then random probes of this server's stripe."""
    return _preferred(ask, pool, previous) + random_probes(pool, PROBES, _rng, book.stripe)


def _preferred(ask: Discover, pool: Pool, previous: int | None) -> list[int]:
    """Its previous address, then the one it asks for (if it parses)."""
    try:
        requested = parse_address(ask.requested_ip, field="requested_ip") \
            if ask.requested_ip else None
    except IpamError:
        requested = None
    return preferred(pool, current=None, previous=previous, requested=requested)


def _choose(asks: Sequence[Discover], places: Sequence[int],
            found: dict[int, LeaseView | Offered | None], *, book: OfferBook,
            now: float) -> None:
    """An address for each client with no offer held: its current lease if it has one,
    else the first free of its preferred addresses and random probes (one read for the
    group), else one from the exact free list."""
    ask_at = dict(zip(places, asks, strict=True))
    target = _subnets(ask.cidr for ask in asks)
    known = leases.recent({(target[a.cidr].id, a.client_id) for a in asks})
    queues: dict[int, list[int]] = {}
    holding: list[int] = []
    for place, ask in ask_at.items():
        rows = known.get((target[ask.cidr].id, ask.client_id), [])
        if any(row.state in HOLDING for row in rows):
            holding.append(place)  # a client rebooting, or asking again: its own lease
            continue
        queues[place] = _candidates(ask, target[ask.cidr].pool,
                                    rows[0].address if rows else None, book)
    if holding:
        held = _holding([(ask_at[p].cidr, ask_at[p].client_id) for p in holding])
        for place in holding:
            found[place] = view(held.get((ask_at[place].cidr, ask_at[place].client_id)))
    candidates: dict[str, set[int]] = {}
    for place, queue in queues.items():
        candidates.setdefault(ask_at[place].cidr, set()).update(queue)
    taken = {cidr: leases.held_addresses(target[cidr].id, among)
             for cidr, among in candidates.items()}
    for place, queue in queues.items():
        ask = ask_at[place]
        address = _pick(ask, queue, taken[ask.cidr], target[ask.cidr], book=book, now=now)
        if address is None:
            log.info("no offer for %s on %s: pool exhausted", ask.client_id, ask.cidr)
            found[place] = None
            continue
        taken[ask.cidr].add(address)
        found[place] = Offered(int_to_ip(address))


def _pick(ask: Discover, queue: list[int], taken: set[int], subnet: subnets.Known, *,
          book: OfferBook, now: float) -> int | None:
    """The first candidate nobody holds, claimed in the book for the offer lifetime."""
    until = now + ask.offer_lifetime
    for address in queue:
        if address not in taken and book.claim(ask.cidr, ask.client_id, address, until, now):
            return address
    # Probes spent (a nearly full pool): the exact free list, read once for this ask.
    busy = leases.held_addresses(subnet.id) | taken | book.addresses(ask.cidr, now)
    for address in free_candidates(subnet.pool, busy, PROBES, _rng, book.stripe):
        if book.claim(ask.cidr, ask.client_id, address, until, now):
            return address
    return None


def _subnets(cidrs: Iterable[str]) -> dict[str, subnets.Known]:
    """Each distinct subnet of a group, looked up once (not once per exchange)."""
    return {cidr: subnets.known(cidr) for cidr in set(cidrs)}


def _holding(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """The offered or bound lease of each (subnet, client), locked for this transaction,
    as a row of `_HELD_COLUMNS`, not an ORM object."""
    if not keys:
        return {}
    ids_ = {cidr: known.id for cidr, known in _subnets(cidr for cidr, _ in keys).items()}
    cidr_of = {subnet_id: cidr for cidr, subnet_id in ids_.items()}
    wanted = set(keys)
    raw = plain_sql.driver()
    if raw is not None:  # PostgreSQL: one plain statement
        rows: Sequence[Any] = plain_sql.run(raw, _HOLDING_PG, (
            plain_sql.ints(set(ids_.values())), plain_sql.texts({c for _, c in keys})),
            named=True)
    else:
        rows = db.session.execute(select(*_HELD_COLUMNS).where(
            leases.among(Lease.subnet_id, set(ids_.values())),
            leases.among(Lease.client_id, {c for _, c in keys}),
            Lease.state.in_(HOLDING)).order_by(Lease.id).with_for_update()).all()
    found: dict[tuple[str, str], Any] = {}
    for row in rows:
        key = (cidr_of[row.subnet_id], row.client_id)
        if key in wanted:
            found[key] = row  # the newest wins (ordered by id)
    return found


_HELD_COLUMNS = (Lease.id, Lease.subnet_id, Lease.address, Lease.state, Lease.client_id,
                 Lease.hostname, Lease.owner, Lease.instance_id, Lease.expires_at)
# Module constants only (column names, HOLDING_SQL's states), no input: not an injection.
_HOLDING_PG = (f"SELECT {', '.join(c.key for c in _HELD_COLUMNS)} FROM leases"  # noqa: S608
               " WHERE subnet_id = ANY(%s::integer[]) AND client_id = ANY(%s::text[])"
               f" AND {HOLDING_SQL} ORDER BY id FOR UPDATE")


def _sort_held(asks: Sequence[Request], unique: Sequence[int], found: dict[int, Outcome], *,
               actor: str) -> tuple[list[tuple[int, Any]], list[int]]:
    """Answer the asks whose client holds another address or a process-path offer; the
    others come back as (the places with a bound lease of that address, the places of
    clients that hold nothing)."""
    held = _holding([(asks[i].cidr, asks[i].client_id) for i in unique])
    bound: list[tuple[int, Any]] = []
    free: list[int] = []
    for i in unique:
        ask = asks[i]
        lease = held.get((ask.cidr, ask.client_id))
        if lease is None:
            free.append(i)
        elif int_to_ip(lease.address) != ask.address:
            found[i] = Refused("not your address" if isinstance(ask, Renew)
                               else "not the address offered to this client")
        elif lease.state == LeaseState.BOUND.value:
            bound.append((i, lease))
        elif lease.instance_id is not None:  # an offer of the process path, taken now
            found[i] = _through_process(lease, ask, actor=actor)
        else:
            found[i] = Refused("the offer has no lease process")
    return bound, free


def bind_many(asks: Sequence[Request], *, actor: str) -> list[Outcome]:
    first = _first_of_each(asks)
    found: dict[int, Outcome] = {}
    bound, new = _sort_held(asks, sorted(first.values()), found, actor=actor)
    # A retransmitted REQUEST, or a client requesting what it holds: a renewal.
    _renew_held(asks, bound, found, actor=actor)
    if new:
        # The offers stay in the book until their lifetime ends: dropped here, before this
        # transaction commits, an address would look free to a concurrent offers group.
        _bind([asks[i] for i in new], new, found, actor=actor)
    return [found[first[(ask.cidr, ask.client_id)]] for ask in asks]


def _bind(asks: Sequence[Request], places: Sequence[int], found: dict[int, Outcome], *,
          actor: str) -> None:
    """Insert the group's bound leases and store each one's `dhcp_lease` instance: one
    INSERT and one group of rows. The instances are stored already waiting at "bound"
    (stamped from the engine's snapshot) where the diagram allows, else with a start job
    for a worker."""
    definition = definitions.current(PROCESS_KEY)
    snap = _snapshot(definition)
    # Ids from the sequences (PostgreSQL) let each lease row name its instance at once:
    # drawn by the INSERT of the leases itself, or ahead of it with the start jobs' where
    # no snapshot stands for the instances. On SQLite the instances get theirs when
    # inserted, after the leases.
    taken = None if snap is not None else \
        ids.allocate_pair(ProcessInstance, ServiceJob, len(asks))
    target = _subnets(ask.cidr for ask in asks)
    binds = []
    for n, ask in enumerate(asks):
        binds.append(leases.Bind(
            subnet=target[ask.cidr], client_id=ask.client_id,
            address=parse_address(ask.address, field="address"), hostname=ask.hostname,
            hwaddr=ask.hwaddr, instance_id=taken[0][n] if taken else None))
    bound = leases.bind_new(binds, actor=actor,
                            instance_ids_of=ProcessInstance if snap is not None else None)
    place_of = {place: n for n, place in enumerate(places)}
    lost = [ask for ask, lease in zip(asks, bound, strict=True) if lease is None]
    # A copy of the same REQUEST in a concurrent group may have bound it first: then this
    # one is answered with that lease (an ACK again), not refused.
    theirs = _holding([(ask.cidr, ask.client_id) for ask in lost]) if lost else {}
    entries: list[instances.Accepted] = []
    made: list[tuple[int, leases.Bound]] = []
    for place, ask, lease in zip(places, asks, bound, strict=True):
        if lease is None:
            mine = theirs.get((ask.cidr, ask.client_id))
            found[place] = view(mine) if mine is not None and \
                int_to_ip(mine.address) == ask.address else Refused("address not available")
            continue
        request: dict[str, Any] = {
            "subnet": ask.cidr, "client_id": lease.client_id, "hwaddr": lease.hwaddr,
            "hostname": lease.hostname, "requested_ip": ask.address,
            "bound_lease_id": lease.id, "bound_until": leases.iso_text(lease.expires_at)}
        entries.append(instances.Accepted(request=request, actor=actor,
                                          subnet_id=lease.subnet_id,
                                          client_id=lease.client_id, lease_id=lease.id))
        made.append((place, lease))
    kept = [place_of[place] for place, _ in made]
    named = [lease.instance_id for _, lease in made if lease.instance_id is not None]
    known = len(named) == len(made)  # not on SQLite: the instances' insert gives the ids
    if snap is not None:
        # The instances are stored where their first engine run would leave them: the
        # binding adopted, waiting at "bound". No start job, no worker, no engine step.
        # Stored deferred (`runtime.deferred`): most never step again before they end,
        # and `instances.document` stamps the snapshot from the row's request and id when
        # one does.
        # The timer's due time is the lease's expiry itself: one datetime per subnet of
        # the group, so its column text is written once (`uow._column_texts`).
        until = {lease.id: lease.expires_at for _, lease in made}

        def started(instance_id: int, entry: instances.Accepted) -> tuple[str, Any]:
            assert entry.lease_id is not None  # every entry here names its new lease
            return _DEFERRED, until[entry.lease_id] if snap.timer_field else None

        stored = instances.store_started(definition, entries, started,
                                         instance_ids=named if known else None)
    else:  # a diagram whose adoption runs service tasks: a worker starts the instances
        stored = instances.accept_many(definition, entries, ids_taken=(
            [taken[0][n] for n in kept], [taken[1][n] for n in kept]) if taken else None,
            record=False)
    if not known:  # SQLite: the instance ids are known only now
        leases.name_instances([(lease.id, instance_id)
                               for (_, lease), instance_id in zip(made, stored, strict=True)])
    # One ledger entry per binding: the lease's commit names the instance that governs it
    # (an entry of its own for the instance's start was the group's largest ledger row).
    process = definitions.label(definition.key, definition.version)
    for (place, lease), instance_id in zip(made, stored, strict=True):
        leases.committed(lease, actor=actor, detail={
            "process": process, "instance_id": instance_id, "hwaddr": lease.hwaddr,
            "hostname": lease.hostname})
        found[place] = view(lease, instance_id=instance_id)


# The request `_bind` stores, and the instance id: what a stamped instance is made of.
_SNAPSHOT = runtime.SnapshotKey(
    "lease_request", ("subnet", "client_id", "hwaddr", "hostname", "requested_ip",
                      "bound_lease_id", "bound_until", "instance_id"), "bound_until")
_DEFERRED = runtime.deferred(_SNAPSHOT)


def _snapshot(definition: definitions.Current) -> runtime.Snapshot | None:
    """The engine's snapshot of a new instance of `definition` that adopted a binding (one
    engine run per definition and process), or None where the diagram does more than wait
    after adopting (a service task, a user task, a relative timer)."""
    return runtime.snapshot_of(definitions.spec_by_id(definition.id), _SNAPSHOT)


def renew_many(asks: Sequence[Renew], *, actor: str) -> list[Outcome]:
    """Renew the group's bound leases in one UPDATE (`_renew_held`). A client we hold
    nothing for gets its address back if it was its last and nobody holds
    it (a bind, as for a REQUEST); someone else's address is refused; otherwise silence
    (RFC 2131 §4.3.2: no record, no answer unless authoritative)."""
    first = _first_of_each(asks)
    found: dict[int, Outcome] = {}
    renewing, unknown = _sort_held(asks, sorted(first.values()), found, actor=actor)
    _renew_held(asks, renewing, found, actor=actor)
    if unknown:
        back = _returning([asks[i] for i in unknown], unknown, found)
        if back:
            found.update(zip(back, bind_many([asks[i] for i in back], actor=actor),
                             strict=True))
    return [found[first[(ask.cidr, ask.client_id)]] for ask in asks]


def _renew_held(asks: Sequence[Request], held: Sequence[tuple[int, Any]],
                found: dict[int, Outcome], *, actor: str) -> None:
    """Renew the bound leases `_sort_held` locked (a place and its row each) in one UPDATE.
    The instance is not told: its expiry timer asks the database before it lets a lease go
    (`ipam.lease` in the diagram); a message would cost an engine step per renewal."""
    target = _subnets(asks[i].cidr for i, _ in held)
    expiries = leases.renew_many([leases.Renewal(lease=lease, subnet=target[asks[i].cidr])
                                  for i, lease in held], actor=actor)
    for (i, lease), expires_at in zip(held, expiries, strict=True):
        found[i] = view(lease, expires_at=expires_at)


def _returning(asks: Sequence[Renew], places: Sequence[int],
               found: dict[int, Outcome]) -> list[int]:
    """Of clients we hold no lease for: the places of those back with their last address,
    free and in the pool (bound again); the others are refused or get silence."""
    target = _subnets(ask.cidr for ask in asks)
    known = leases.recent({(target[a.cidr].id, a.client_id) for a in asks})
    wanted: dict[str, set[int]] = {}
    for ask in asks:
        wanted.setdefault(ask.cidr, set()).add(parse_address(ask.address, field="address"))
    taken = {cidr: leases.held_addresses(target[cidr].id, among)
             for cidr, among in wanted.items()}
    back = []
    for place, ask in zip(places, asks, strict=True):
        address = parse_address(ask.address, field="address")
        rows = known.get((target[ask.cidr].id, ask.client_id), [])
        if address in taken[ask.cidr]:
            found[place] = Refused("address held by another client")
        elif rows and rows[0].address == address and \
                address in target[ask.cidr].pool:
            back.append(place)
        else:
            found[place] = None
    return back


def _through_process(lease: Any, ask: Request, *, actor: str) -> Outcome:
    """An offer a process-path server made (several servers share the database): its
    instance takes the REQUEST, run ahead in this transaction."""
    from . import dhcp

    dhcp.tell(lease.instance_id or 0, "dhcp_request",
              {"address": ask.address, "hostname": ask.hostname}, actor=actor)
    dhcp.run_parked()
    current = db.session.get(Lease, lease.id)
    if current is not None and current.state == LeaseState.BOUND.value:
        return view(current)
    return None  # not bound yet (a retry waits out its backoff): the client retransmits
