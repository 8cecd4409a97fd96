"""Leases: reserve (the conflict-free allocation), commit, renew, release, search.

The allocator proposes addresses; an INSERT ... ON CONFLICT DO NOTHING against the partial
unique index decides. Two processes that pick the same address cannot both win, whatever
machine or data center they run in, because the database refuses the second holder.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import Invalid, NotFound
from ..extensions import db
from ..ipam.addresses import IpamError, int_to_ip, parse_address
from ..ipam.allocator import free_candidates, preferred, random_probes
from ..leases.states import HOLDING, IllegalTransition, LeaseEvent, LeaseState, transition
from ..models import HOLDING_SQL, Lease, LeaseHistory, Subnet, utcnow
from ..operations import BusinessError
from . import subnets, uow

_rng = random.Random()
HOLDING_VALUES = [s.value for s in HOLDING]
PROBES = 8


def _insert(**values: Any) -> Lease | None:
    """The new holding lease, or None when the address is held (the index said no)."""
    dialect = db.session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(Lease).values(**values).on_conflict_do_nothing(
        index_elements=["subnet_id", "address"], index_where=text(HOLDING_SQL),
    ).returning(Lease)
    lease: Lease | None = db.session.execute(stmt).scalar_one_or_none()
    if lease is not None:
        # Nobody else can see, let alone change, a row this transaction inserted: later
        # steps of the same transaction may use it without locking it again.
        uow.pending().fresh_leases[lease.id] = lease
    return lease


def _locked(lease_id: int) -> Lease | None:
    fresh = uow.pending().fresh_leases.get(lease_id)
    if fresh is not None:
        return fresh  # type: ignore[no-any-return]
    return db.session.get(Lease, lease_id, with_for_update=True)


def reserve(*, subnet: str | int, client_id: str, instance_id: int | None = None,
            hostname: str | None = None, owner: str | None = None, hwaddr: str | None = None,
            requested_ip: str | None = None, avoid: Iterable[str] = (),
            actor: str = "system") -> Lease:
    """Hold an address for `client_id` (state offered). Idempotent per instance."""
    target = subnets.resolve(subnet)
    # One look at the client's recent leases answers three questions: does this instance
    # already hold one (a retried job), does the client hold one, which address had it last.
    recent = db.session.execute(
        select(Lease.id, Lease.address, Lease.state, Lease.instance_id)
        .where(Lease.subnet_id == target.id, Lease.client_id == client_id)
        .order_by(Lease.id.desc()).limit(8)).all()
    for lease_id, address, state, owner_instance in recent:
        if state in HOLDING_VALUES:
            if instance_id is not None and owner_instance == instance_id:
                return get_lease(lease_id)
            raise BusinessError(f"client {client_id} already holds {int_to_ip(address)}",
                                code="client_has_lease", details={"ip": int_to_ip(address)})
    previous = recent[0][1] if recent else None
    pool = subnets.pool_of(target)
    avoided = {parse_address(a, field="avoid") for a in avoid if a}
    requested = None
    if requested_ip:
        try:
            requested = parse_address(requested_ip, field="requested_ip")
        except IpamError as exc:
            raise BusinessError(str(exc), code="invalid_address") from None
    now = utcnow()
    values = {"subnet_id": target.id, "state": LeaseState.OFFERED.value, "client_id": client_id,
              "instance_id": instance_id, "hostname": hostname, "owner": owner,
              "hwaddr": hwaddr, "created_at": now, "updated_at": now,
              "expires_at": now + timedelta(seconds=target.lease_time)}
    tried: set[int] = set(avoided)
    first = preferred(pool, current=None, previous=previous, requested=requested)
    for address in [a for a in first if a not in tried] + random_probes(pool, PROBES, _rng):
        if address in tried:
            continue
        tried.add(address)
        lease = _insert(address=address, **values)
        if lease is not None:
            return _reserved(lease, actor)
    while True:
        taken = set(db.session.execute(select(Lease.address).where(
            Lease.subnet_id == target.id, Lease.state.in_(HOLDING_VALUES))).scalars())
        candidates = free_candidates(pool, taken | avoided, PROBES, _rng)
        if not candidates:
            raise BusinessError(f"pool of {target.cidr} is exhausted", code="pool_exhausted",
                                details={"subnet": target.cidr})
        for address in candidates:
            lease = _insert(address=address, **values)
            if lease is not None:
                return _reserved(lease, actor)


def _reserved(lease: Lease, actor: str) -> Lease:
    _history(lease, LeaseEvent("commit"), None, LeaseState.OFFERED, actor, event_name="reserve")
    return lease


def _history(lease: Lease, event: LeaseEvent, before: LeaseState | None, after: LeaseState,
             actor: str, *, event_name: str | None = None,
             detail: Mapping[str, Any] | None = None) -> None:
    name = event_name or event.value
    db.session.add(LeaseHistory(lease_id=lease.id, event=name,
                                from_state=before.value if before else None,
                                to_state=after.value, actor=actor, detail=dict(detail or {})))
    uow.record(kind=f"lease.{name}", subject=f"{lease.subnet.cidr}/{int_to_ip(lease.address)}",
               actor=actor, payload={"lease_id": lease.id, "client_id": lease.client_id,
                                     "state": after.value, "owner": lease.owner,
                                     "expires_at": _iso(lease.expires_at), **dict(detail or {})})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _change(lease: Lease, event: LeaseEvent, actor: str,
            detail: Mapping[str, Any] | None = None) -> Lease:
    before = LeaseState(lease.state)
    after = transition(before, event)  # raises IllegalTransition, nothing changed
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
    lease.expires_at = utcnow() + timedelta(seconds=lease.subnet.lease_time)
    try:
        return _change(lease, LeaseEvent.COMMIT, actor)
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


def renew(lease: Lease, *, actor: str = "system", lease_time: int | None = None) -> Lease:
    seconds = lease_time or lease.subnet.lease_time
    lease.expires_at = utcnow() + timedelta(seconds=seconds)
    return _change(lease, LeaseEvent.RENEW, actor, {"lease_time": seconds})


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
        rows = db.session.execute(select(LeaseHistory).where(LeaseHistory.lease_id == lease.id)
                                  .order_by(LeaseHistory.id)).scalars()
        out["history"] = [{"at": _iso(h.at), "event": h.event, "from": h.from_state,
                           "to": h.to_state, "actor": h.actor, "detail": h.detail}
                          for h in rows]
    return out
