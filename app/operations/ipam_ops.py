"""`ipam.reserve` and `ipam.release`: thin handlers over the lease service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import LeaseflowError
from ..ipam.addresses import int_to_ip
from ..services import leases
from . import BusinessError, register


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
                  "hwaddr": "str", "requested_ip": "str", "avoid": "list", "instance_id": "int"},
          required={"subnet", "client_id"}, savepoint=False,  # idempotent per instance
          errors=("pool_exhausted", "unknown_subnet", "client_has_lease", "invalid_address"))
def reserve(params: Mapping[str, Any]) -> dict[str, Any]:
    try:
        lease = leases.reserve(
            subnet=_params(params, "subnet", str), client_id=_params(params, "client_id", str),
            instance_id=_params(params, "instance_id", int, required=False),
            hostname=_params(params, "hostname", str, required=False),
            owner=_params(params, "owner", str, required=False),
            hwaddr=_params(params, "hwaddr", str, required=False),
            requested_ip=_params(params, "requested_ip", str, required=False),
            avoid=_params(params, "avoid", list, required=False) or ())
    except LeaseflowError as exc:  # unknown subnet and the like: refuse, do not retry
        raise BusinessError(exc.message, code=exc.code) from None
    return {"lease_id": lease.id, "ip": int_to_ip(lease.address), "subnet": lease.subnet.cidr,
            "client_id": lease.client_id}


@register("ipam.release", description="Give a lease's address back (release, expire, abandon)",
          params={"lease_id": "int", "reason": "str"}, required={"lease_id"},
          savepoint=False,  # releasing twice changes nothing the second time
          errors=("unknown_lease", "invalid_reason"))
def release(params: Mapping[str, Any]) -> dict[str, Any]:
    lease = leases.release(_params(params, "lease_id", int),
                           reason=_params(params, "reason", str, required=False) or "release")
    return {"lease_id": lease.id, "ip": int_to_ip(lease.address), "state": lease.state}
