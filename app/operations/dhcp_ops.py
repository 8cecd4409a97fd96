"""`dhcp.commit` and `dhcp.release`: make a reservation a binding the DHCP server serves.

With the builtin server (`LEASEFLOW_DHCP_BACKEND=builtin`) the lease table is the server's
store, so committing is binding the row. With `LEASEFLOW_DHCP_BACKEND=kea` Kea answers the
wire, so the binding is also written into Kea through its control agent (`lease4-add`, and
`lease4-del` on release). Kea's answers map onto the operation errors the diagram handles:
an address Kea already leases to someone else is the business error `address_taken` (the
process's error path at once), an unreachable Kea is transient (retried with backoff).

With Kea, the database row changes first, inside a savepoint: if Kea then refuses, the
savepoint rolls the row back, so the two never disagree about a committed lease. With the
builtin server there is nothing after the row change to fail, and `leases.commit` checks
before it changes anything, so the job needs no savepoint (two statements fewer per lease).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from flask import current_app

from ..dhcp.kea import KeaClient, KeaCommandError, KeaUnavailable, LeaseConflict
from ..ipam.addresses import int_to_ip
from ..models import Lease
from ..services import leases, uow
from . import BusinessError, TransientError, register
from .ipam_ops import _params

_clients: dict[str, KeaClient] = {}
_clients_lock = threading.Lock()


def _kea() -> KeaClient | None:
    """The Kea client when Kea is the DHCP backend, else None (builtin server)."""
    settings = current_app.config["LEASEFLOW"]
    if settings.dhcp_backend != "kea":
        return None
    if not settings.kea_url:
        raise BusinessError("LEASEFLOW_DHCP_BACKEND=kea needs LEASEFLOW_KEA_URL",
                            code="kea_not_configured")
    with _clients_lock:
        client = _clients.get(settings.kea_url)
        if client is None:
            client = _clients[settings.kea_url] = KeaClient.from_url(settings.kea_url)
    return client


def _push(kea: KeaClient, lease: Lease) -> None:
    ip = int_to_ip(lease.address)
    valid = lease.subnet.lease_time
    try:
        # commit_lease: a retried job that finds its own lease in Kea succeeds.
        kea.commit_lease(ip, lease.hwaddr or None, lease.client_id, valid_lft=valid,
                         hostname=lease.hostname)
    except LeaseConflict as exc:
        holder = exc.holder
        raise BusinessError(f"Kea already leases {ip} to another client", code="address_taken",
                            details={"ip": ip, "holder": sorted(holder.identities())
                                     if holder is not None else None}) from None
    except KeaUnavailable as exc:
        raise TransientError(f"Kea is unreachable: {exc}", code="kea_unavailable") from None
    except KeaCommandError as exc:
        raise BusinessError(f"Kea refused the lease: {exc}", code="kea_refused",
                            details={"ip": ip}) from None
    except ValueError as exc:  # nothing to identify the holder by, or a bad address
        raise BusinessError(f"cannot describe the lease to Kea: {exc}",
                            code="kea_refused", details={"ip": ip}) from None


@register("dhcp.commit", description="Bind a reserved lease in the DHCP server",
          params={"lease_id": "int"}, required={"lease_id"}, savepoint=False,
          errors=("unknown_lease", "lease_not_offered", "address_taken", "kea_refused",
                  "kea_not_configured"))
def commit(params: Mapping[str, Any]) -> dict[str, Any]:
    lease_id = _params(params, "lease_id", int)
    kea = _kea()
    if kea is None:
        lease = leases.commit(lease_id)
    else:
        with uow.savepoint():  # Kea's refusal rolls the row change back
            lease = leases.commit(lease_id)
            _push(kea, lease)
    return {"lease_id": lease.id, "ip": int_to_ip(lease.address), "state": lease.state,
            "expires_at": lease.expires_at.isoformat() if lease.expires_at else None}


@register("dhcp.release", description="Remove a lease from the DHCP server",
          params={"lease_id": "int", "reason": "str"}, required={"lease_id"},
          errors=("unknown_lease", "invalid_reason", "kea_refused", "kea_not_configured"))
def release(params: Mapping[str, Any]) -> dict[str, Any]:
    lease = leases.release(_params(params, "lease_id", int),
                           reason=_params(params, "reason", str, required=False) or "release")
    kea = _kea()
    removed = None
    if kea is not None:
        try:
            removed = kea.delete_lease(int_to_ip(lease.address))
        except KeaUnavailable as exc:
            raise TransientError(f"Kea is unreachable: {exc}", code="kea_unavailable") from None
        except KeaCommandError as exc:
            raise BusinessError(f"Kea refused to delete the lease: {exc}",
                                code="kea_refused") from None
    return {"lease_id": lease.id, "ip": int_to_ip(lease.address), "state": lease.state,
            **({"removed_from_kea": removed} if removed is not None else {})}
