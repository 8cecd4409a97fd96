"""Leases: reserve (the conflict-free allocation), commit, renew, release, search.

The allocator proposes addresses; an INSERT ... ON CONFLICT DO NOTHING against the partial
unique index decides. Two processes that pick the same address cannot both win, whatever
machine or data center they run in, because the database refuses the second holder.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, any_, bindparam, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import Invalid, LeaseflowError, NotFound
from ..extensions import db
from ..ipam.addresses import IpamError, int_to_ip, parse_address
from ..ipam.allocator import Pool, free_candidates, preferred, random_probes
from ..leases.states import HOLDING, IllegalTransition, LeaseEvent, LeaseState, transition
from ..models import HOLDING_SQL, Lease, LeaseHistory, Subnet, utcnow
from ..operations import BusinessError
from . import plain_sql, subnets, uow

_rng = random.Random()
HOLDING_VALUES = [s.value for s in HOLDING]
PROBES = 8
RECENT = 8  # leases of a client looked at for its current and previous address


@dataclass(frozen=True, kw_only=True)
class Ask:
    """One reservation of a batch (the parameters of an `ipam.reserve` job)."""

    subnet: str | int
    client_id: str
    instance_id: int | None = None
    hostname: str | None = None
    owner: str | None = None
    hwaddr: str | None = None
    requested_ip: str | None = None
    avoid: tuple[str, ...] = ()
    exact: bool = False  # requested_ip or nothing (a REQUEST names its address: RFC 2131)
    actor: str = "system"


@dataclass(kw_only=True)
class _Plan:
    index: int
    target: Subnet
    pool: Pool
    values: dict[str, Any]
    actor: str
    avoided: frozenset[int]
    queue: list[int]  # candidates still to try: preferred, then random probes
    tried: set[int] = field(default_factory=set)
    refilled: int = -1  # the round in which the queue was last filled from the free list
    exact: int | None = None  # this address or a refusal, never another


def _locked(lease_id: int) -> Lease | None:
    fresh = uow.pending().fresh_leases.get(lease_id)
    if fresh is not None:
        return fresh  # type: ignore[no-any-return]
    return db.session.get(Lease, lease_id, with_for_update=True)


def reserve(*, subnet: str | int, client_id: str, instance_id: int | None = None,
            hostname: str | None = None, owner: str | None = None, hwaddr: str | None = None,
            requested_ip: str | None = None, avoid: Iterable[str] = (), exact: bool = False,
            actor: str = "system") -> Lease:
    """Hold an address for `client_id` (state offered). Idempotent per instance. With
    `exact`, `requested_ip` or a refusal (`address_unavailable`), never another address."""
    outcome = reserve_many([Ask(subnet=subnet, client_id=client_id, instance_id=instance_id,
                                hostname=hostname, owner=owner, hwaddr=hwaddr,
                                requested_ip=requested_ip, avoid=tuple(avoid), exact=exact,
                                actor=actor)])[0]
    if isinstance(outcome, BusinessError):
        raise outcome
    return outcome


def reserve_many(asks: Sequence[Ask]) -> list[Lease | BusinessError]:
    """Hold an address for each ask, in a few statements for the whole batch.

    Every round proposes one address per open ask, distinct within the round, in one
    multi-row INSERT ... ON CONFLICT DO NOTHING; the asks whose address another holder took
    meanwhile try their next candidate in the next round. Each ask gets its lease or its
    refusal (pool exhausted, client already holding one, bad address) in its place.
    """
    outcomes: list[Lease | BusinessError | None] = [None] * len(asks)
    targets: dict[int, Subnet] = {}
    for i, ask in enumerate(asks):
        try:
            targets[i] = subnets.resolve(ask.subnet)
        except LeaseflowError as exc:
            outcomes[i] = BusinessError(exc.message, code=exc.code)
    known = recent({(t.id, asks[i].client_id) for i, t in targets.items()})
    now = utcnow()
    plans: list[_Plan] = []
    for i, target in targets.items():
        ask = asks[i]
        try:
            plan = _plan(i, ask, target, known.get((target.id, ask.client_id), []), now)
        except BusinessError as exc:
            outcomes[i] = exc
            continue
        if isinstance(plan, Lease):
            outcomes[i] = plan  # this instance already holds it (a retried job)
        else:
            plans.append(plan)
    number = 0
    while plans:
        plans = _round(plans, outcomes, number)
        number += 1
    return outcomes  # type: ignore[return-value]


def among(column: Any, values: Collection[Any]) -> Any:
    """`column IN values` as one array parameter on PostgreSQL (`= ANY(:values)`): an
    expanded IN renders and binds one parameter per value, ~10 us of CPU each here, for a
    group's hundred candidates a millisecond per query. SQLite has no arrays."""
    if db.session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(values), ARRAY(column.type)))
    return column.in_(values)


def recent(keys: set[tuple[int, str]]) -> dict[tuple[int, str], list[Any]]:
    """The last few leases of each (subnet, client), newest first: one query for a batch,
    as rows of `_RECENT_COLUMNS`."""
    if not keys:
        return {}
    raw = plain_sql.driver()
    if raw is not None:  # PostgreSQL: plain SQL, a few hundred us less per group
        rows: Sequence[Any] = plain_sql.run(raw, _RECENT_PG, (
            plain_sql.ints({k[0] for k in keys}), plain_sql.texts({k[1] for k in keys}),
            RECENT), named=True)
    else:
        rank = func.row_number().over(partition_by=(Lease.subnet_id, Lease.client_id),
                                      order_by=Lease.id.desc()).label("rank")
        inner = select(*_RECENT_COLUMNS, rank).where(
            among(Lease.subnet_id, {k[0] for k in keys}),
            among(Lease.client_id, {k[1] for k in keys})).subquery()
        rows = db.session.execute(select(inner).where(inner.c.rank <= RECENT)
                                  .order_by(inner.c.id.desc())).all()
    found: dict[tuple[int, str], list[Any]] = {}
    for row in rows:
        if (row.subnet_id, row.client_id) in keys:
            found.setdefault((row.subnet_id, row.client_id), []).append(row)
    return found


_RECENT_COLUMNS = (Lease.id, Lease.address, Lease.state, Lease.instance_id, Lease.subnet_id,
                   Lease.client_id)
_RECENT_NAMES = ", ".join(c.key for c in _RECENT_COLUMNS)
_RECENT_PG = (  # module constants only: not an injection
    f"SELECT {_RECENT_NAMES} FROM (SELECT {_RECENT_NAMES}, row_number() OVER"  # noqa: S608
    " (PARTITION BY subnet_id, client_id ORDER BY id DESC) AS rank FROM leases"
    " WHERE subnet_id = ANY(%s::integer[]) AND client_id = ANY(%s::text[])) AS r"
    " WHERE rank <= %s ORDER BY id DESC")


def _plan(index: int, ask: Ask, target: Subnet, recent: list[Any],
          now: datetime) -> _Plan | Lease:
    # One look at the client's recent leases answers three questions: does this instance
    # already hold one (a retried job), does the client hold one, which address had it last.
    for row in recent:
        if row.state in HOLDING_VALUES:
            if ask.instance_id is not None and row.instance_id == ask.instance_id:
                return get_lease(row.id)
            raise BusinessError(f"client {ask.client_id} already holds {int_to_ip(row.address)}",
                                code="client_has_lease", details={"ip": int_to_ip(row.address)})
    previous = recent[0].address if recent else None
    try:
        avoided = frozenset(parse_address(a, field="avoid") for a in ask.avoid if a)
        requested = parse_address(ask.requested_ip, field="requested_ip") \
            if ask.requested_ip else None
    except IpamError as exc:
        raise BusinessError(str(exc), code="invalid_address") from None
    pool = subnets.pool_of(target)
    values = {"subnet_id": target.id, "state": LeaseState.OFFERED.value,
              "client_id": ask.client_id, "instance_id": ask.instance_id,
              "hostname": ask.hostname, "owner": ask.owner, "hwaddr": ask.hwaddr,
              "created_at": now, "updated_at": now,
              "expires_at": now + timedelta(seconds=target.lease_time)}
    if ask.exact:
        # A REQUEST for an address we offered nothing for: that address or none. Holding
        # another one only to let it go would, meanwhile, refuse a client that asks for it.
        if requested is None or requested not in pool or requested in avoided:
            raise _unavailable(ask.requested_ip, target)
        return _Plan(index=index, target=target, pool=pool, values=values, actor=ask.actor,
                     avoided=avoided, queue=[requested], tried=set(avoided), exact=requested)
    queue = preferred(pool, current=None, previous=previous, requested=requested) + \
        random_probes(pool, PROBES, _rng)
    return _Plan(index=index, target=target, pool=pool, values=values, actor=ask.actor,
                 avoided=avoided, queue=queue, tried=set(avoided))


def _round(plans: list[_Plan], outcomes: list[Any], number: int) -> list[_Plan]:
    """Propose one address per plan, insert them together; the plans left to try again."""
    claimed: dict[int, set[int]] = {}
    taken: dict[int, set[int]] = {}
    proposals: dict[tuple[int, int], _Plan] = {}
    for plan in plans:
        mine = claimed.setdefault(plan.target.id, set())
        address = _candidate(plan, mine, taken, number)
        if isinstance(address, BusinessError):
            outcomes[plan.index] = address
        elif address is not None:
            mine.add(address)
            proposals[(plan.target.id, address)] = plan
    left = [plan for plan in plans if outcomes[plan.index] is None]
    if not proposals:
        # Nothing to propose although the free list is not empty: cannot happen while the
        # taken set is read each round, but a loop must end, so refuse rather than spin.
        for plan in left:
            outcomes[plan.index] = _exhausted(plan)
        return []
    for lease in _insert([{**plan.values, "address": address}
                          for (_, address), plan in proposals.items()]):
        plan = proposals.pop((lease.subnet_id, lease.address))
        outcomes[plan.index] = _reserved(lease, plan.actor)
    return [plan for plan in left if outcomes[plan.index] is None]  # waiting, and the losers


def _candidate(plan: _Plan, claimed: set[int], taken: dict[int, set[int]],
               number: int) -> int | None | BusinessError:
    """The plan's next address; None to sit this round out; an error when exhausted."""
    while True:
        while plan.queue:
            address = plan.queue.pop(0)
            if address in claimed or address in plan.tried:
                continue
            plan.tried.add(address)
            return address
        if plan.exact is not None:  # its one address went to another holder
            return _unavailable(int_to_ip(plan.exact), plan.target)
        if plan.refilled == number:
            return None  # this round's free addresses went to others of the batch
        # Probes spent: pick from the exact free list (read once per subnet per round).
        held = taken.get(plan.target.id)
        if held is None:
            held = taken[plan.target.id] = held_addresses(plan.target.id)
        free = free_candidates(plan.pool, held | plan.avoided, PROBES, _rng)
        if not free:
            return _exhausted(plan)
        plan.refilled, plan.queue = number, free
        plan.tried -= set(free)  # free now, whatever an earlier round saw


def held_addresses(subnet_id: int, addresses: Iterable[int] | None = None) -> set[int]:
    """The addresses of the subnet that have a holder (offered or bound), or only those of
    them among `addresses` (one indexed lookup for a group's candidates)."""
    raw = plain_sql.driver()
    if raw is not None:
        if addresses is None:
            found = plain_sql.run(raw, _HELD_PG, (subnet_id,))
        else:
            found = plain_sql.run(raw, _HELD_AMONG_PG, (subnet_id, plain_sql.ints(addresses)))
        return {address for address, in found}
    query = select(Lease.address).where(Lease.subnet_id == subnet_id,
                                        Lease.state.in_(HOLDING_VALUES))
    if addresses is not None:
        query = query.where(among(Lease.address, set(addresses)))
    return set(db.session.execute(query).scalars())


# The statements below are built from module constants only (HOLDING_SQL, a state name).
_HELD_PG = f"SELECT address FROM leases WHERE subnet_id = %s AND {HOLDING_SQL}"  # noqa: S608
_HELD_AMONG_PG = _HELD_PG + " AND address = ANY(%s::bigint[])"


@dataclass(frozen=True, kw_only=True, slots=True)
class Bind:
    """A lease to bind straight away, on an address chosen elsewhere (a held offer)."""

    subnet: subnets.Known
    client_id: str
    address: int
    instance_id: int | None = None
    hostname: str | None = None
    hwaddr: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Bound:
    """A lease `bind_new` inserted, as its row's values: a group binds hundreds, and an ORM
    object costs more to build than the row does to insert."""

    id: int
    subnet_id: int
    cidr: str
    address: int
    client_id: str
    hwaddr: str | None
    hostname: str | None
    instance_id: int | None
    expires_at: datetime
    state: str = LeaseState.BOUND.value


def bind_new(asks: Sequence[Bind], *, actor: str = "system",
             instance_ids_of: Any = None) -> list[Bound | None]:
    """Insert each ask as a bound lease with a fresh expiry, in one statement; None where
    the address has a holder already (the database's unique index said no). The caller
    records each one's ledger entry (`committed`) once it knows what took the lease over.

    `instance_ids_of` (a model): on PostgreSQL, each lease an ask left without an
    instance names a fresh id of that model's sequence, drawn by the same statement (its
    `Bound.instance_id`), instead of a round trip for the ids before it."""
    if not asks:
        return []
    now = utcnow()
    expiry = {a.subnet.id: now + timedelta(seconds=a.subnet.lease_time) for a in asks}
    raw = plain_sql.driver()
    if raw is not None:  # PostgreSQL: one plain statement over arrays, no ORM rows
        returned = plain_sql.run(raw, _BIND_PG, (
            now, actor,
            None if instance_ids_of is None else instance_ids_of.__table__.name,
            plain_sql.ints(a.subnet.id for a in asks), plain_sql.ints(a.address for a in asks),
            plain_sql.texts(a.client_id for a in asks),
            plain_sql.ints(a.instance_id for a in asks), plain_sql.texts(a.hostname for a in asks),
            plain_sql.texts(a.hwaddr for a in asks),
            plain_sql.ints(a.subnet.lease_time for a in asks)))
        _statistics.grew(len(returned))
    else:
        returned = [(lease.id, lease.subnet_id, lease.address, lease.client_id,
                     lease.instance_id)
                    for lease in _insert([{
                        "subnet_id": a.subnet.id, "address": a.address,
                        "state": LeaseState.BOUND.value, "client_id": a.client_id,
                        "instance_id": a.instance_id, "hostname": a.hostname, "owner": None,
                        "hwaddr": a.hwaddr, "created_at": now, "updated_at": now,
                        "expires_at": expiry[a.subnet.id]} for a in asks])]
    inserted = {(subnet_id, address, client_id): (lease_id, instance_id)
                for lease_id, subnet_id, address, client_id, instance_id in returned}
    out: list[Bound | None] = []
    for ask in asks:
        row = inserted.get((ask.subnet.id, ask.address, ask.client_id))
        if row is None:
            out.append(None)  # held by someone else, or by another ask of this group
            continue
        bound = Bound(id=row[0], subnet_id=ask.subnet.id, cidr=ask.subnet.cidr,
                      address=ask.address, client_id=ask.client_id, hwaddr=ask.hwaddr,
                      hostname=ask.hostname, instance_id=row[1],
                      expires_at=expiry[ask.subnet.id])
        if raw is None:  # on PostgreSQL the statement wrote the history rows (`_BIND_PG`)
            _history_row(bound.id, "commit", None, LeaseState.BOUND, actor, None)
        out.append(bound)
    return out


def committed(bound: Bound, *, actor: str, detail: Mapping[str, Any]) -> None:
    """The ledger entry of a lease `bind_new` inserted, with `detail` (e.g. the instance
    that governs it from now on: one entry says both)."""
    _record(bound.id, bound.cidr, bound.address, bound.client_id, None, bound.expires_at,
            "commit", None, LeaseState.BOUND, actor, detail, history=False)


# The bound leases, and each one's history row from what the INSERT returned: the database
# writes the history, not Python (a group of hundreds formatted their rows in ~5 % of the
# server's time). The history row's foreign key is checked at the statement's end. A lease
# without an instance id draws one from the named table's sequence, or stays without
# (a NULL table name: nextval of NULL is NULL). An address another holder keeps draws an
# id all the same: a sequence has gaps anyway.
_BIND_PG = (
    "WITH n AS (SELECT %s::timestamptz AS now, %s::text AS actor,"  # noqa: S608
    " pg_get_serial_sequence(%s::text, 'id')::regclass AS seq),"
    " ins AS (INSERT INTO leases (subnet_id, address, state, client_id, instance_id,"
    " hostname, hwaddr, expires_at, created_at, updated_at)"
    f" SELECT s, a, '{LeaseState.BOUND.value}', c, COALESCE(i, nextval(n.seq)), h, w,"
    " n.now + make_interval(secs => t), n.now, n.now"
    " FROM n, unnest(%s::integer[], %s::bigint[],"
    " %s::text[], %s::bigint[], %s::text[], %s::text[], %s::integer[])"
    " AS v(s, a, c, i, h, w, t)"
    f" ON CONFLICT (subnet_id, address) WHERE {HOLDING_SQL} DO NOTHING"
    " RETURNING id, subnet_id, address, client_id, instance_id),"
    " hist AS (INSERT INTO lease_history (lease_id, at, event, from_state, to_state, actor,"
    f" detail) SELECT ins.id, n.now, 'commit', NULL, '{LeaseState.BOUND.value}', n.actor,"
    " '{}'::json FROM ins, n)"
    " SELECT id, subnet_id, address, client_id, instance_id FROM ins")


def name_instances(pairs: Sequence[tuple[int, int]]) -> None:
    """Set each (lease id, instance id): where instance ids come only with their insert
    (SQLite), after the leases that name them."""
    if pairs:
        db.session.execute(_NAME_INSTANCE, [{"lease_id": lease, "instance_id": instance}
                                            for lease, instance in pairs])


_NAME_INSTANCE = update(Lease.__table__).where(Lease.__table__.c.id == bindparam("lease_id")) \
    .values(instance_id=bindparam("instance_id"))


def _unavailable(address: str | None, target: Subnet) -> BusinessError:
    return BusinessError(f"{address} is not available in {target.cidr}",
                         code="address_unavailable",
                         details={"subnet": target.cidr, "ip": address})


def _exhausted(plan: _Plan) -> BusinessError:
    return BusinessError(f"pool of {plan.target.cidr} is exhausted", code="pool_exhausted",
                         details={"subnet": plan.target.cidr})


def _insert(rows: list[dict[str, Any]]) -> list[Lease]:
    """The leases inserted; a row whose address is held is left out (the index said no)."""
    dialect = db.session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    # Rows as parameters (not .values(rows)): the statement compiles once and is cached,
    # and SQLAlchemy's insertmanyvalues still sends it as a few multi-row INSERTs. A
    # statement with the rows inside compiled anew for every batch size (~10 ms each).
    stmt = insert(Lease).on_conflict_do_nothing(
        index_elements=["subnet_id", "address"], index_where=text(HOLDING_SQL),
    ).returning(Lease)
    inserted = list(db.session.execute(stmt, rows).scalars())
    _statistics.grew(len(inserted))
    fresh = uow.pending().fresh_leases
    for lease in inserted:
        # Nobody else can see, let alone change, a row this transaction inserted: later
        # steps of the same transaction may use it without locking it again.
        fresh[lease.id] = lease
    return inserted


class _Statistics:
    """Keeps the planner's picture of the lease table current while it grows fast.

    On a new database the table starts empty, and autovacuum analyzes it at most once a
    minute. Until then PostgreSQL plans the lookups by address or client as if the table
    held a handful of rows: it walks the whole subnet's index entries instead of probing
    them (measured: 1.4 ms instead of 0.05 ms at 3,000 leases, growing with the table), which
    is exactly when a boot storm fills it. So each time the rows this process inserted double
    (from 1,000 on), it analyzes the table itself: a dozen times up to a few million rows,
    each a sample of at most 30,000 rows. ANALYZE blocks no reader or writer.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inserted = 0
        self.next_at = 1000

    def grew(self, count: int) -> None:
        with self.lock:
            self.inserted += count
            if self.inserted < self.next_at:
                return
            self.next_at = self.inserted * 2
        if db.session.get_bind().dialect.name == "postgresql":
            db.session.execute(text("ANALYZE leases"))


_statistics = _Statistics()


def _reserved(lease: Lease, actor: str) -> Lease:
    _history(lease, LeaseEvent("commit"), None, LeaseState.OFFERED, actor, event_name="reserve")
    return lease


def _history(lease: Lease, event: LeaseEvent, before: LeaseState | None, after: LeaseState,
             actor: str, *, event_name: str | None = None,
             detail: Mapping[str, Any] | None = None) -> None:
    _record(lease.id, lease.subnet.cidr, lease.address, lease.client_id, lease.owner,
            lease.expires_at, event_name or event.value, before, after, actor, detail)


def _record(lease_id: int, cidr: str, address: int, client_id: str, owner: str | None,
            expires_at: datetime | None, name: str, before: LeaseState | None,
            after: LeaseState, actor: str, detail: Mapping[str, Any] | None = None, *,
            history: bool = True) -> None:
    """A lease's change in its history (unless the caller's statement wrote that row) and
    in the ledger."""
    if history:
        _history_row(lease_id, name, before, after, actor, detail)
    uow.record(kind=f"lease.{name}", subject=f"{cidr}/{int_to_ip(address)}",
               actor=actor, payload={"lease_id": lease_id, "client_id": client_id,
                                     "state": after.value, "owner": owner,
                                     "expires_at": _iso(expires_at), **dict(detail or {})})


def _history_row(lease_id: int, name: str, before: LeaseState | None, after: LeaseState,
                 actor: str, detail: Mapping[str, Any] | None) -> None:
    uow.add_row(LeaseHistory.__table__, {
        "lease_id": lease_id, "at": utcnow(), "event": name,
        "from_state": before.value if before else None, "to_state": after.value,
        "actor": actor, "detail": dict(detail or {})})


def _iso(value: datetime | None) -> str | None:
    return iso_text(value) if value else None


_last_iso: tuple[datetime | None, str] = (None, "")


def iso_text(value: datetime) -> str:
    """`value.isoformat()`, once for a run of calls with the same datetime: a group's
    leases share their expiry (one per subnet), and each lease writes it twice (ledger
    entry, instance request). The last pair is one tuple, swapped whole: safe between
    threads."""
    global _last_iso  # noqa: PLW0603 - a one-entry cache
    last = _last_iso
    if value is last[0]:
        return last[1]
    text = value.isoformat()
    _last_iso = (value, text)
    return text


def _change(lease: Lease, event: LeaseEvent, actor: str,
            detail: Mapping[str, Any] | None = None, *,
            expires_at: datetime | None = None) -> Lease:
    before = LeaseState(lease.state)
    after = transition(before, event)  # raises IllegalTransition, nothing changed
    if expires_at is not None:  # moved only once the transition is known to be legal
        lease.expires_at = expires_at
    lease.state = after.value
    lease.updated_at = utcnow()
    _history(lease, event, before, after, actor, detail=detail)
    return lease


def get_lease(lease_id: int) -> Lease:
    lease = db.session.get(Lease, lease_id)
    if lease is None:
        raise NotFound(f"no lease {lease_id}", code="unknown_lease")
    return lease


def commit(lease_id: int, *, actor: str = "system") -> Lease:
    """offered → bound with a fresh expiry; committing a bound lease again changes nothing."""
    lease = _locked(lease_id)
    if lease is None:
        raise BusinessError(f"no lease {lease_id}", code="unknown_lease")
    if lease.state == LeaseState.BOUND.value:
        return lease
    try:
        return _change(lease, LeaseEvent.COMMIT, actor,
                       expires_at=utcnow() + timedelta(seconds=lease.subnet.lease_time))
    except IllegalTransition as exc:
        raise BusinessError(str(exc), code="lease_not_offered") from None


RELEASE_EVENTS = {"release": LeaseEvent.RELEASE, "expire": LeaseEvent.EXPIRE,
                  "abandon": LeaseEvent.ABANDON, "decline": LeaseEvent.DECLINE}


def release(lease_id: int, *, reason: str = "release", actor: str = "system") -> Lease:
    """Give the address back; a lease that no longer holds its address is left as it is."""
    if reason not in RELEASE_EVENTS:
        raise BusinessError(f"unknown release reason {reason!r}", code="invalid_reason")
    lease = _locked(lease_id)
    if lease is None:
        raise BusinessError(f"no lease {lease_id}", code="unknown_lease")
    if lease.state not in HOLDING_VALUES:
        return lease
    return _change(lease, RELEASE_EVENTS[reason], actor)


@dataclass(frozen=True, slots=True)
class Renewal:
    """A bound lease this transaction holds locked, as a row (id, state, address, client_id,
    owner), and its subnet."""

    lease: Any
    subnet: subnets.Known


def renew_many(renewals: Sequence[Renewal], *, actor: str = "system") -> list[datetime]:
    """Renew bound leases, each for its subnet's lease time, in one UPDATE (the DHCP fast
    path renews a group at once); their new expiries. Raises IllegalTransition before
    anything is written if one is not bound."""
    for renewal in renewals:
        transition(LeaseState(renewal.lease.state), LeaseEvent.RENEW)
    if not renewals:
        return []
    now = utcnow()
    expiries = [now + timedelta(seconds=r.subnet.lease_time) for r in renewals]
    raw = plain_sql.driver()
    for renewal, expires_at in zip(renewals, expiries, strict=True):
        lease = renewal.lease
        _record(lease.id, renewal.subnet.cidr, lease.address, lease.client_id, lease.owner,
                expires_at, LeaseEvent.RENEW.value, LeaseState.BOUND, LeaseState.BOUND, actor,
                {"lease_time": renewal.subnet.lease_time}, history=raw is None)
    if raw is not None:  # the UPDATE writes the history rows too (`_RENEW_PG`)
        plain_sql.run(raw, _RENEW_PG, (now, actor, plain_sql.ints(r.lease.id for r in renewals),
                                       plain_sql.ints(r.subnet.lease_time for r in renewals)))
    else:
        db.session.execute(_RENEW, [{"lease_id": r.lease.id, "expires_at": e, "updated_at": now}
                                    for r, e in zip(renewals, expiries, strict=True)])
    return expiries


# Module constants only (the states' and the event's values), no input: not an injection.
_RENEW_PG = (
    "WITH n AS (SELECT %s::timestamptz AS now, %s::text AS actor),"  # noqa: S608
    " upd AS (UPDATE leases SET updated_at = n.now,"
    " expires_at = n.now + make_interval(secs => v.t)"
    " FROM n, unnest(%s::bigint[], %s::integer[]) AS v(id, t) WHERE leases.id = v.id"
    " RETURNING leases.id, v.t)"
    " INSERT INTO lease_history (lease_id, at, event, from_state, to_state, actor, detail)"
    f" SELECT upd.id, n.now, '{LeaseEvent.RENEW.value}', '{LeaseState.BOUND.value}',"
    f" '{LeaseState.BOUND.value}', n.actor, json_build_object('lease_time', upd.t)"
    " FROM upd, n")
_RENEW = update(Lease.__table__).where(Lease.__table__.c.id == bindparam("lease_id")) \
    .values(expires_at=bindparam("expires_at"), updated_at=bindparam("updated_at"))


def renew(lease: Lease, *, actor: str = "system", lease_time: int | None = None) -> Lease:
    seconds = lease_time or lease.subnet.lease_time
    return _change(lease, LeaseEvent.RENEW, actor, {"lease_time": seconds},
                   expires_at=utcnow() + timedelta(seconds=seconds))


def _address(ip: str) -> int:
    try:
        return parse_address(ip, field="ip")
    except IpamError as exc:
        raise Invalid(str(exc), code="invalid_address", details=[{"field": "ip"}]) from None


def find_holding(ip: str, subnet: str | None = None) -> Lease:
    address = _address(ip)
    query = select(Lease).where(Lease.address == address, Lease.state.in_(HOLDING_VALUES))
    if subnet:
        query = query.where(Lease.subnet_id == subnets.resolve(subnet).id)
    lease = db.session.execute(query.order_by(Lease.id.desc()).limit(1)).scalar_one_or_none()
    if lease is None:
        raise NotFound(f"no lease holds {ip}", code="unknown_lease")
    return lease


def latest_for_ip(ip: str) -> Lease:
    address = _address(ip)
    lease = db.session.execute(select(Lease).where(Lease.address == address)
                               .order_by(Lease.id.desc()).limit(1)).scalar_one_or_none()
    if lease is None:
        raise NotFound(f"no lease for {ip}", code="unknown_lease")
    return lease


def search(*, ip: str | None = None, client_id: str | None = None, owner: str | None = None,
           state: str | None = None, subnet: str | None = None, limit: int = 500,
           offset: int = 0) -> list[Lease]:
    query = select(Lease).join(Subnet)
    if ip:
        query = query.where(Lease.address == _address(ip))
    if client_id:
        query = query.where(Lease.client_id == client_id)
    if owner:
        query = query.where(Lease.owner == owner)
    if state:
        try:
            query = query.where(Lease.state == LeaseState(state).value)
        except ValueError:
            raise Invalid(f"unknown state {state!r}", code="invalid_state",
                          details=[{"field": "state",
                                    "allowed": [s.value for s in LeaseState]}]) from None
    if subnet:
        query = query.where(Lease.subnet_id == subnets.resolve(subnet).id)
    return list(db.session.execute(query.order_by(Lease.id).limit(limit).offset(offset))
                .scalars())


def describe(lease: Lease, *, with_history: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": lease.id, "ip": int_to_ip(lease.address), "subnet": lease.subnet.cidr,
        "state": lease.state, "client_id": lease.client_id, "hwaddr": lease.hwaddr,
        "hostname": lease.hostname, "owner": lease.owner, "instance_id": lease.instance_id,
        "expires_at": _iso(lease.expires_at), "created_at": _iso(lease.created_at),
        "updated_at": _iso(lease.updated_at)}
    if with_history:
        uow.flush_rows()  # history this transaction recorded
        rows = db.session.execute(select(LeaseHistory).where(LeaseHistory.lease_id == lease.id)
                                  .order_by(LeaseHistory.id)).scalars()
        out["history"] = [{"at": _iso(h.at), "event": h.event, "from": h.from_state,
                           "to": h.to_state, "actor": h.actor, "detail": h.detail}
                          for h in rows]
    return out
