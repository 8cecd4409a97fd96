"""Fixtures of the BPMN safety gate tests: a small operations catalogue and the case table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.engine.validation import OperationSchema

CASES_DIR = Path(__file__).resolve().parents[2] / "data" / "bpmn"


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


def bpmn_cases() -> list[tuple[str, bytes, dict[str, object]]]:
    """(case name, file bytes, expected) for every directory under tests/data/bpmn."""
    cases = []
    for case in sorted(p for p in CASES_DIR.iterdir() if p.is_dir()):
        expected = json.loads((case / "expected.json").read_text())
        cases.append((case.name, (case / "process.bpmn").read_bytes(), expected))
    return cases


def read_case(name: str) -> bytes:
    return (CASES_DIR / name / "process.bpmn").read_bytes()
