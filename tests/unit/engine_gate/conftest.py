"""Fixtures of the BPMN safety gate tests: a small operations catalogue (the case table
is `lf_support.bpmn_cases`)."""

from __future__ import annotations

import pytest

from app.engine.validation import OperationSchema


def _op(name: str, params: dict[str, str], *required: str) -> OperationSchema:
    return OperationSchema(name=name, params=params, required=frozenset(required))


@pytest.fixture(scope="session")
def catalogue() -> dict[str, OperationSchema]:
    ops = [
        _op("ipam.reserve", {"subnet": "str", "client_id": "str", "requested_ip": "str"},
            "subnet", "client_id"),
        _op("ipam.release", {"subnet": "str", "ip": "str"}, "subnet", "ip"),
        _op("ledger.append", {"action": "str", "ip": "str", "detail": "dict"}, "action", "ip"),
        _op("chain.validate", {"subnet": "str"}, "subnet"),
        _op("dhcp.commit", {"ip": "str", "lease_time": "int"}, "ip"),
    ]
    return {op.name: op for op in ops}
