"""`ipam.reserve` and `ipam.release`: thin handlers over the lease service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import LeaseflowError
from ..ipam.addresses import int_to_ip
from ..services import leases
from . import BusinessError, OperationError, register, register_batch


def _params(params: Mapping[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value = params.get(name)
    if value is None:
        if required:
            raise BusinessError(f"parameter {name} is missing", code="invalid_parameters")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BusinessError(f"parameter {name} must be {kind.__name__}",
                            code="invalid_parameters")
    return value


@register("ipam.reserve", description="Hold a free address of a subnet for a client",
          params={"subnet": "str", "client_id": "str", "hostname": "str", "owner": "str",
                  "hwaddr": "str", "requested_ip": "str", "avoid": "list", "instance_id": "int",
                  "exact": "bool"},
          required={"subnet", "client_id"}, savepoint=False,  # idempotent per instance
          errors=("pool_exhausted", "unknown_subnet", "client_has_lease", "invalid_address",
                  "address_unavailable"))
def reserve(params: Mapping[str, Any]) -> dict[str, Any]:
    outcome = reserve_many([params])[0]
    if isinstance(outcome, OperationError):
        raise outcome
    return outcome


@register_batch("ipam.reserve")
def reserve_many(batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | OperationError]:
    outcomes: list[dict[str, Any] | OperationError | None] = [None] * len(batch)
    asks: list[tuple[int, leases.Ask]] = []
    for i, params in enumerate(batch):
        try:
            asks.append((i, leases.Ask(
                subnet=_params(params, "subnet", str),
                client_id=_params(params, "client_id", str),
                instance_id=_params(params, "instance_id", int, required=False),
                hostname=_params(params, "hostname", str, required=False),
                owner=_params(params, "owner", str, required=False),
                hwaddr=_params(params, "hwaddr", str, required=False),
                requested_ip=_params(params, "requested_ip", str, required=False),
                avoid=tuple(_params(params, "avoid", list, required=False) or ()),
                exact=bool(_params(params, "exact", bool, required=False)))))
        except OperationError as exc:
            outcomes[i] = exc
    for (i, _), lease in zip(asks, leases.reserve_many([ask for _, ask in asks]),
                             strict=True):
        outcomes[i] = lease if isinstance(lease, OperationError) else {
            "lease_id": lease.id, "ip": int_to_ip(lease.address),
            "subnet": lease.subnet.cidr, "client_id": lease.client_id}
    return outcomes  # type: ignore[return-value]


@register("ipam.release", description="Give a lease's address back (release, expire, abandon)",
          params={"lease_id": "int", "reason": "str"}, required={"lease_id"},
          savepoint=False,  # releasing twice changes nothing the second time
          errors=("unknown_lease", "invalid_reason"))
def release(params: Mapping[str, Any]) -> dict[str, Any]:
    lease = leases.release(_params(params, "lease_id", int),
                           reason=_params(params, "reason", str, required=False) or "release")
    return {"lease_id": lease.id, "ip": int_to_ip(lease.address), "state": lease.state}


@register("ipam.lease", description="A lease's state and expiry as the database holds them now "
          "(renewals on the DHCP fast path move the expiry without telling the instance)",
          params={"lease_id": "int"}, required={"lease_id"}, savepoint=False,  # a read
          errors=("unknown_lease",))
def lease(params: Mapping[str, Any]) -> dict[str, Any]:
    lease_id = _params(params, "lease_id", int)
    try:
        found = leases.get_lease(lease_id)
    except LeaseflowError as exc:
        raise BusinessError(exc.message, code=exc.code) from None
    return {"lease_id": found.id, "ip": int_to_ip(found.address), "state": found.state,
            "expires_at": found.expires_at.isoformat() if found.expires_at else None}
