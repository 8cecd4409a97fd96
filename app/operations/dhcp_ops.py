"""`dhcp.commit` and `dhcp.release`: make a reservation a binding the DHCP server serves.

With the builtin server the lease table is the server's store, so committing is binding the
row. The Kea backend (LEASEFLOW_DHCP_BACKEND=kea) also writes the lease into Kea.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..ipam.addresses import int_to_ip
from ..services import leases
from . import register
from .ipam_ops import _params


@register("dhcp.commit", description="Bind a reserved lease in the DHCP server",
          params={"lease_id": "int"}, required={"lease_id"},
          errors=("unknown_lease", "lease_not_offered", "address_taken"))
def commit(params: Mapping[str, Any]) -> dict[str, Any]:
    lease = leases.commit(_params(params, "lease_id", int))
    return {"lease_id": lease.id, "ip": int_to_ip(lease.address), "state": lease.state,
            "expires_at": lease.expires_at.isoformat() if lease.expires_at else None}


@register("dhcp.release", description="Remove a lease from the DHCP server",
          params={"lease_id": "int", "reason": "str"}, required={"lease_id"},
          errors=("unknown_lease",))
def release(params: Mapping[str, Any]) -> dict[str, Any]:
    lease = leases.release(_params(params, "lease_id", int),
                           reason=_params(params, "reason", str, required=False) or "release")
    return {"lease_id": lease.id, "ip": int_to_ip(lease.address), "state": lease.state}
