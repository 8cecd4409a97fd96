"""The DHCP server's use cases over leases and `dhcp_lease` process instances.

The DHCP server (`app.dhcp.process_backend`) is an edge like the API: it opens the unit of
work, calls one of these, and waits for instances through `dispatch.WAITERS`. What it gets
back are small frozen views, never ORM rows, because it reads them after the transaction
ended (it must never hold one while it waits: SQLite takes its write lock at BEGIN).

A client's lease lives in one `dhcp_lease` instance: a DISCOVER starts it (`start`), its
REQUEST, RELEASE and DECLINE are messages (`tell`), and a renewal of a bound lease is the
fast path `renew_bound`: the expiry moves in the database in this transaction and the
instance only hears about it, so an ACK never waits on a worker queue.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from ..errors import Conflict, Invalid
from ..extensions import db
from ..ipam.addresses import IpamError, int_to_ip, parse_address
from ..leases.states import LeaseState
from ..models import Lease, ProcessInstance, utcnow
from . import definitions, instances, leases, subnets, uow

PROCESS_KEY = definitions.DHCP_KEY
HOLDING = (LeaseState.OFFERED.value, LeaseState.BOUND.value)
LIVE = ("running", "waiting")
MAX_ID = 255  # Lease.client_id's width


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseView:
    """One lease as the DHCP server needs it."""

    lease_id: int
    instance_id: int | None
    address: str
    state: str
    client_id: str
    hostname: str | None
    expires_at: datetime | None

    def seconds_left(self, now: datetime | None = None) -> int:
        if self.expires_at is None:
            return 0
        return max(0, round((self.expires_at - (now or utcnow())).total_seconds()))


@dataclass(frozen=True, kw_only=True, slots=True)
class InstanceView:
    """A `dhcp_lease` instance and the lease it reserved (if any yet)."""

    instance_id: int
    state: str
    outcome: dict[str, Any]
    lease: LeaseView | None

    @property
    def ended(self) -> bool:
        return self.state in instances.FINAL


def client_key(identity: bytes) -> str:
    """The stored client id of a DHCP client: its identity (option 61 or htype+chaddr) as
    'aa:bb:..' (Kea's spelling too); an oversized one is stored as its digest."""
    text = identity.hex(":")
    if len(text) > MAX_ID:
        return "sha256:" + hashlib.sha256(identity).hexdigest()
    return text


def view(lease: Any, *, instance_id: int | None = None,
         expires_at: datetime | None = None) -> LeaseView | None:
    """The lease as the server needs it, from an ORM lease or a row with its columns
    (`instance_id`, `expires_at`: values the row does not hold yet)."""
    if lease is None:
        return None
    return LeaseView(lease_id=lease.id, instance_id=instance_id or lease.instance_id,
                     address=int_to_ip(lease.address), state=lease.state,
                     client_id=lease.client_id, hostname=lease.hostname,
                     expires_at=expires_at or lease.expires_at)


def _subnet_id(cidr: str) -> int:
    return subnets.by_cidr(cidr).id


# --- reading ---------------------------------------------------------------------------------


def holding(cidr: str, client_id: str) -> LeaseView | None:
    """The client's offered or bound lease on the subnet."""
    return view(db.session.execute(select(Lease).where(
        Lease.subnet_id == _subnet_id(cidr), Lease.client_id == client_id,
        Lease.state.in_(HOLDING)).order_by(Lease.id.desc()).limit(1)).scalar_one_or_none())


def latest(cidr: str, client_id: str) -> LeaseView | None:
    """The client's most recent lease on the subnet, in any state."""
    return view(db.session.execute(select(Lease).where(
        Lease.subnet_id == _subnet_id(cidr), Lease.client_id == client_id)
        .order_by(Lease.id.desc()).limit(1)).scalar_one_or_none())


def holder_of(cidr: str, address: str) -> LeaseView | None:
    """Whoever holds `address` on the subnet now."""
    try:
        value = parse_address(address, field="address")
    except IpamError:
        return None
    return view(db.session.execute(select(Lease).where(
        Lease.subnet_id == _subnet_id(cidr), Lease.address == value,
        Lease.state.in_(HOLDING)).limit(1)).scalar_one_or_none())


def pending_instance(cidr: str, client_id: str) -> int | None:
    """A live `dhcp_lease` instance of the client that has not reserved an address yet."""
    return db.session.execute(select(ProcessInstance.id).where(
        ProcessInstance.subnet_id == _subnet_id(cidr), ProcessInstance.client_id == client_id,
        ProcessInstance.state.in_(LIVE), ProcessInstance.lease_id.is_(None))
        .order_by(ProcessInstance.id.desc()).limit(1)).scalar_one_or_none()


def client_state(cidr: str, client_id: str) -> tuple[LeaseView | None, int | None]:
    """`holding` and, when nothing is held, `pending_instance`: one read for a DISCOVER."""
    lease = holding(cidr, client_id)
    return lease, (pending_instance(cidr, client_id) if lease is None else None)


def observe(instance_id: int) -> InstanceView:
    instance = instances.get(instance_id)
    lease = db.session.get(Lease, instance.lease_id) if instance.lease_id else None
    return InstanceView(instance_id=instance.id, state=instance.state,
                        outcome=dict(instance.outcome or {}), lease=view(lease))


def is_live(instance_id: int | None) -> bool:
    if instance_id is None:
        return False
    instance = db.session.get(ProcessInstance, instance_id)
    return instance is not None and instance.state in LIVE


# --- changing (inside the caller's unit of work) ------------------------------------------------


def start(*, subnet: str, client_id: str, hwaddr: str | None, hostname: str | None,
          requested_ip: str | None, offer_lifetime: float, actor: str,
          exact: bool = False) -> int:
    """Start a `dhcp_lease` instance for a DISCOVER (or, with `exact`, a REQUEST we have no
    offer for: its reservation is `requested_ip` or a refusal, never another address)."""
    target = subnets.by_cidr(subnet)
    if requested_ip:
        try:
            parse_address(requested_ip, field="requested_ip")
        except IpamError as exc:
            raise Invalid(str(exc), code="invalid_request") from None
    definition = definitions.active(PROCESS_KEY)
    request: dict[str, Any] = {
        "subnet": target.cidr, "client_id": client_id, "hwaddr": hwaddr,
        "hostname": hostname, "requested_ip": requested_ip,
        "offer_until": (utcnow() + timedelta(seconds=offer_lifetime)).isoformat()}
    if exact:
        request["exact"] = True
    instance = ProcessInstance(definition_id=definition.id, definition=definition,
                               state="running", request=request, workflow="",
                               client_id=client_id, subnet_id=target.id)
    db.session.add(instance)
    db.session.flush()
    request["instance_id"] = instance.id
    from ..engine import runtime

    workflow, report = runtime.start(definitions.spec_by_id(definition.id),
                                     {"lease_request": request})
    uow.record(kind="instance.start", subject=f"instance/{instance.id}", actor=actor,
               payload={"process": definitions.label(definition.key, definition.version),
                        "request": request})
    # The same persistence as every other start: outbox jobs, timers, the instance state.
    instances.persist_step(instance, workflow, report)
    return instance.id


def run_parked() -> int:
    """Run now, in this unit of work, the service jobs it parked: the run-ahead a worker
    does after each batch, here because a DHCP client is waiting for exactly these results
    (its OFFER needs the reservation, its ACK the commit). Only jobs of the default queue
    run here; others, and retries waiting out a backoff, still go to the workers. The
    results are durable only when the caller's unit of work commits, as for a worker.
    Returns how many jobs ran."""
    from . import jobs

    pending = uow.pending()
    mine = [job for job in pending.new_jobs if job.queue == "default"]
    if not mine:
        return 0
    pending.new_jobs[:] = [job for job in pending.new_jobs if job not in mine]
    pending.keep.extend(mine)
    db.session.add_all(mine)
    db.session.flush()  # the job rows get their ids
    stats = jobs.run_batch([job.id for job in mine])
    return stats["done"] + stats["failed"] + stats["retried"]


def tell(instance_id: int, name: str, payload: dict[str, Any], *, actor: str) -> bool:
    """Send message `name`; False when the instance has ended or is not waiting for it
    (a retransmitted packet whose first copy already moved the instance on)."""
    try:
        instance = instances.send_message(instance_id, name, payload, actor=actor)
    except Conflict:
        return False
    return instance.state not in ("failed",)


def renew_bound(lease_id: int, client_id: str, *, actor: str) -> LeaseView | None:
    """The fast path: move a bound lease's expiry now and tell its instance.

    None if the lease is no longer this client's bound lease (it changed since we read it).
    """
    lease = db.session.get(Lease, lease_id, with_for_update=True,
                           populate_existing=True)
    if lease is None or lease.state != LeaseState.BOUND.value or lease.client_id != client_id:
        return None
    leases.renew(lease, actor=actor)
    if lease.instance_id is not None and is_live(lease.instance_id):
        tell(lease.instance_id, "lease_renew", {"expires_at": lease.expires_at.isoformat()
                                                if lease.expires_at else None}, actor=actor)
    db.session.flush()
    return view(lease)


def give_back(lease_id: int, *, reason: str, actor: str) -> None:
    """Free a lease that has no live instance to do it (an instance that ended oddly)."""
    lease = leases.release(lease_id, reason=reason, actor=actor)
    if reason == "decline":
        alert_decline(lease, actor=actor)


def alert_decline(lease: Lease, *, actor: str) -> None:
    uow.record(kind="process.dhcp.decline", subject=f"{lease.subnet.cidr}/"
               f"{int_to_ip(lease.address)}", actor=actor,
               payload={"alert": "address in use by an unknown host",
                        "ip": int_to_ip(lease.address), "client_id": lease.client_id,
                        "hwaddr": lease.hwaddr, "lease_id": lease.id})


@dataclass(frozen=True, kw_only=True, slots=True)
class ServedSubnet:
    """What the DHCP server needs of a subnet to build its `SubnetConfig`."""

    cidr: str
    pool: tuple[str, str]  # the envelope of the subnet's pools; the allocator skips the gaps
    gateway: str | None
    dns: tuple[str, ...]
    lease_time: int


def served_subnets() -> list[ServedSubnet]:
    out = []
    for subnet in subnets.all_subnets():
        ranges = subnets.pool_of(subnet).ranges
        if not ranges:
            continue
        out.append(ServedSubnet(
            cidr=subnet.cidr, pool=(int_to_ip(min(r.first for r in ranges)),
                                    int_to_ip(max(r.last for r in ranges))),
            gateway=subnet.gateway, dns=tuple(subnet.dns or ()), lease_time=subnet.lease_time))
    return out
