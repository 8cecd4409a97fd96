"""Fixtures of the process-admin tests: test-only operations registered from test code.

`flaky` is the operation `test.flaky_commit`: it fails with a TransientError while
`failures_left` is above zero, then commits the lease like `dhcp.commit`. The v1..v3 BPMN
files under tests/data/process_admin use it in place of `dhcp.commit`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from app import operations


@dataclass
class Flaky:
    failures_left: int = 0
    calls: int = 0


@pytest.fixture(autouse=True)
def flaky() -> Iterator[Flaky]:
    state = Flaky()

    @operations.register("test.flaky_commit", description="dhcp.commit that fails on demand",
                         params={"lease_id": "int"}, required={"lease_id"})
    def flaky_commit(params: Mapping[str, Any]) -> dict[str, Any]:
        from app.operations.dhcp_ops import commit
        from app.services import leases

        state.calls += 1
        if state.failures_left > 0:
            state.failures_left -= 1
            lease = leases.get_lease(params["lease_id"])
            from app.ipam.addresses import int_to_ip

            raise operations.TransientError("the DHCP peer did not answer", code="peer_down",
                                            details={"ip": int_to_ip(lease.address)})
        return commit(params)

    yield state
    operations.REGISTRY.pop("test.flaky_commit", None)
