"""`dhcp.commit` / `dhcp.release` map the Kea backend's failures onto operation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import operations
from app.operations import BusinessError, OperationError, TransientError
from bench.peers.kea import free_port
from lf_support import make_app


def reserved_lease(app) -> int:
    from app.services import leases, subnets
    from app.services.uow import unit_of_work

    with app.app_context(), unit_of_work():
        subnets.create({"cidr": "10.66.0.0/24", "pools": ["10.66.0.10-10.66.0.14"]},
                       actor="test")
        return leases.reserve(subnet="10.66.0.0/24", client_id="01:02:00:00:00:00:01",
                              hwaddr="02:00:00:00:00:01").id


@pytest.mark.parametrize(("settings", "error", "code"), [
    ({"dhcp_backend": "kea", "kea_url": ""}, BusinessError, "kea_not_configured"),
    # Nothing listens there: Kea is down, which is worth retrying, not a refusal.
    ({"dhcp_backend": "kea", "kea_url": "http://127.0.0.1:{port}/"}, TransientError,
     "kea_unavailable"),
])
@pytest.mark.parametrize("operation", ["dhcp.commit", "dhcp.release"])
def test_kea_failures_become_operation_errors(tmp_path: Path, settings, error, code,
                                              operation) -> None:
    settings = {k: v.format(port=free_port()) for k, v in settings.items()}
    app = make_app(tmp_path, **settings)
    lease_id = reserved_lease(app)
    with app.app_context():
        with pytest.raises(OperationError) as caught:
            operations.get(operation).handler({"lease_id": lease_id})
    assert type(caught.value) is error and caught.value.code == code


def test_the_builtin_backend_binds_the_row_only(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    lease_id = reserved_lease(app)
    with app.app_context():
        result = operations.get("dhcp.commit").handler({"lease_id": lease_id})
    assert result["state"] == "bound" and "removed_from_kea" not in result
