"""Subnets and their pools: create, change, delete, utilization."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from ..errors import Conflict, Invalid, NotFound
from ..extensions import db
from ..ipam.addresses import (
    IpamError,
    check_no_overlap,
    check_pools_disjoint,
    parse_address,
    parse_network,
    parse_pool,
)
from ..ipam.allocator import Pool
from ..leases.states import HOLDING
from ..models import Lease, Subnet
from . import uow
from .fresh import Fresh

_pool_cache: dict[tuple[int, str], Pool] = {}


def _invalid(exc: IpamError) -> Invalid:
    return Invalid(str(exc), code="invalid_subnet",
                   details=[{"field": exc.field, "message": str(exc)}])


def _validated(fields: Mapping[str, Any], *, current: Subnet | None = None) -> dict[str, Any]:
    try:
        cidr = fields.get("cidr", current.cidr if current else None)
        if not isinstance(cidr, str):
            raise IpamError("cidr is required (e.g. 10.0.0.0/24)", field="cidr")
        network = parse_network(cidr)
        pools_raw = fields.get("pools", fields.get("pool", current.pools if current else None))
        if isinstance(pools_raw, str):
            pools_raw = [p for p in pools_raw.split(",") if p.strip()]
        if not pools_raw:
            raise IpamError("at least one pool FIRST-LAST is required", field="pool")
        if not isinstance(pools_raw, list):
            raise IpamError("pools must be a list of FIRST-LAST strings", field="pools")
        pools = [parse_pool(p, network) for p in pools_raw]
        check_pools_disjoint(pools)
        gateway = fields.get("gateway", current.gateway if current else None)
        if gateway:
            if parse_address(gateway, field="gateway") not in _usable(network):
                raise IpamError(f"gateway {gateway} is not inside {network}", field="gateway")
        dns = fields.get("dns", current.dns if current else [])
        if isinstance(dns, str):
            dns = [d.strip() for d in dns.split(",") if d.strip()]
        if not isinstance(dns, list):
            raise IpamError("dns must be a list of addresses", field="dns")
        for server in dns:
            parse_address(server, field="dns")
        excluded = fields.get("excluded", current.excluded if current else [])
        if not isinstance(excluded, list):
            raise IpamError("excluded must be a list of addresses", field="excluded")
        for address in excluded:
            parse_address(address, field="excluded")
        lease_time = fields.get("lease_time", current.lease_time if current else 3600)
        if isinstance(lease_time, bool) or not isinstance(lease_time, int) or \
                not 60 <= lease_time <= 365 * 86400:
            raise IpamError("lease_time must be whole seconds between 60 and 31536000",
                            field="lease_time")
        name = fields.get("name", current.name if current else "")
        if not isinstance(name, str) or len(name) > 120:
            raise IpamError("name must be text of at most 120 characters", field="name")
    except IpamError as exc:
        raise _invalid(exc) from None
    others = db.session.execute(select(Subnet.cidr)).scalars()
    try:
        check_no_overlap(network, ((c, ipaddress.IPv4Network(c)) for c in others
                                   if current is None or c != current.cidr))
    except IpamError as exc:
        raise Conflict(str(exc), code="subnet_overlap",
                       details=[{"field": "cidr", "message": str(exc)}]) from None
    return {"cidr": str(network), "pools": [p.text() for p in pools], "gateway": gateway or None,
            "dns": dns, "excluded": excluded, "lease_time": lease_time, "name": name}


def _usable(network: ipaddress.IPv4Network) -> range:
    return range(int(network.network_address), int(network.broadcast_address) + 1)


def create(fields: Mapping[str, Any], *, actor: str) -> Subnet:
    subnet = Subnet(**_validated(fields))
    db.session.add(subnet)
    db.session.flush()
    uow.record(kind="subnet.create", subject=subnet.cidr, actor=actor, payload=describe(subnet))
    return subnet


def update(subnet_id: int, fields: Mapping[str, Any], *, actor: str) -> Subnet:
    subnet = get(subnet_id)
    if "cidr" in fields and fields["cidr"] != subnet.cidr:
        raise Invalid("the CIDR of a subnet cannot change; create a new subnet",
                      code="invalid_subnet", details=[{"field": "cidr"}])
    before = describe(subnet)
    for key, value in _validated(fields, current=subnet).items():
        setattr(subnet, key, value)
    uow.record(kind="subnet.update", subject=subnet.cidr, actor=actor,
               payload={"before": before, "after": describe(subnet)})
    _known.forget()
    return subnet


def delete(subnet_id: int, *, actor: str) -> None:
    subnet = get(subnet_id)
    held = db.session.execute(select(func.count()).select_from(Lease).where(
        Lease.subnet_id == subnet.id, Lease.state.in_([s.value for s in HOLDING]))).scalar_one()
    if held:
        raise Conflict(f"subnet {subnet.cidr} still has {held} held leases", code="subnet_in_use")
    db.session.execute(Lease.__table__.delete().where(Lease.subnet_id == subnet.id))
    db.session.delete(subnet)
    uow.record(kind="subnet.delete", subject=subnet.cidr, actor=actor, payload={})
    _known.forget()


def get(subnet_id: int) -> Subnet:
    subnet = db.session.get(Subnet, subnet_id)
    if subnet is None:
        raise NotFound(f"no subnet {subnet_id}", code="unknown_subnet")
    return subnet


def by_cidr(cidr: str) -> Subnet:
    # Within one session, the id of a CIDR is asked for once; the row then comes from the
    # identity map (a batch of jobs on one subnet reads it once, not once per job).
    known: dict[str, int] = db.session.info.setdefault("subnet_ids", {})
    subnet = db.session.get(Subnet, known[cidr]) if cidr in known else None
    if subnet is None:
        subnet = db.session.execute(select(Subnet).where(Subnet.cidr == cidr)) \
            .scalar_one_or_none()
        if subnet is not None:
            known[cidr] = subnet.id
    if subnet is not None:
        uow.pending().keep.append(subnet)
    if subnet is None:
        raise NotFound(f"no subnet {cidr}", code="unknown_subnet",
                       details=[{"field": "subnet", "message": f"unknown subnet {cidr}"}])
    return subnet


def resolve(ref: str | int) -> Subnet:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return get(int(ref))
    if not isinstance(ref, str):
        raise Invalid("subnet must be a CIDR or an id", code="invalid_request",
                      details=[{"field": "subnet"}])
    return by_cidr(ref)


@dataclass(frozen=True, kw_only=True, slots=True)
class Known:
    """A subnet's values as the DHCP fast path uses them, read at most a second ago
    (`fresh.Fresh`): a group of exchanges then costs no subnet lookup."""

    id: int
    cidr: str
    lease_time: int
    pool: Pool


def _load_known(cidr: str) -> Known:
    subnet = by_cidr(cidr)
    return Known(id=subnet.id, cidr=subnet.cidr, lease_time=subnet.lease_time,
                 pool=pool_of(subnet))


_known: Fresh[str, Known] = Fresh(_load_known)


def known(cidr: str) -> Known:
    """The subnet of `cidr` (NotFound if none), from this process's copy while it is fresh."""
    return _known.get(cidr)


def known_copy(cidr: str, engine: Any) -> Known | None:
    """`known(cidr)` if this process's copy for `engine` is fresh, else None (no read)."""
    return _known.copy(cidr, engine)


def pool_of(subnet: Subnet) -> Pool:
    key = (subnet.id, repr((subnet.cidr, subnet.pools, subnet.excluded)))
    pool = _pool_cache.get(key)
    if pool is None:
        network = ipaddress.IPv4Network(subnet.cidr)
        pool = Pool(ranges=tuple(parse_pool(p, network) for p in subnet.pools),
                    excluded=frozenset(parse_address(a, field="excluded")
                                       for a in subnet.excluded))
        _pool_cache[key] = pool
    return pool


def utilization(subnet: Subnet) -> dict[str, int]:
    counts = dict(db.session.execute(
        select(Lease.state, func.count()).where(Lease.subnet_id == subnet.id,
                                                Lease.state.in_([s.value for s in HOLDING]))
        .group_by(Lease.state)).all())
    size = pool_of(subnet).size
    used = sum(counts.values())
    return {"size": size, "offered": counts.get("offered", 0), "bound": counts.get("bound", 0),
            "free": max(size - used, 0)}


def describe(subnet: Subnet, *, with_usage: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": subnet.id, "cidr": subnet.cidr, "name": subnet.name,
                           "pools": subnet.pools, "gateway": subnet.gateway, "dns": subnet.dns,
                           "excluded": subnet.excluded, "lease_time": subnet.lease_time}
    if with_usage:
        out["utilization"] = utilization(subnet)
    return out


def all_subnets() -> list[Subnet]:
    return list(db.session.execute(select(Subnet).order_by(Subnet.id)).scalars())

