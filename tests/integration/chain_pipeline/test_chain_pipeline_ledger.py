"""The ledger on both chains: anchors read back from the contract, tampering found by row.

`pipeline_app` runs once on the embedded chain and once on anvil (see conftest).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from app.ledger import canonical_json, row_hash
from lf_support import TOKEN

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
CIDR = "10.72.0.0/24"


def sql(app: Flask, statement: str, **params: Any) -> Any:
    from app.extensions import db

    with app.app_context():
        result = db.session.execute(text(statement), params)
        rows = result.all() if result.returns_rows else None
        db.session.commit()
        return rows


def edit(app: Flask, seq: int) -> None:
    sql(app, "UPDATE audit_log SET payload = payload || ' ' WHERE seq = :s", s=seq)


def delete(app: Flask, seq: int) -> None:
    sql(app, "DELETE FROM audit_log WHERE seq = :s", s=seq)


def insert(app: Flask, seq: int) -> None:
    """Renumber the rows from `seq` up by one and forge a well-linked row at `seq`."""
    before = sql(app, "SELECT hash FROM audit_log WHERE seq = :s", s=seq - 1)[0][0]
    sql(app, "UPDATE audit_log SET seq = seq + 1000000 WHERE seq >= :s", s=seq)
    sql(app, "UPDATE audit_log SET seq = seq - 999999 WHERE seq >= 1000000")
    payload = canonical_json({"kind": "lease.commit", "subject": "forged", "actor": "evil",
                              "data": {}})
    sql(app, "INSERT INTO audit_log (seq, at, actor, kind, subject, payload, prev_hash, hash) "
             "VALUES (:s, CURRENT_TIMESTAMP, 'evil', 'lease.commit', 'forged', :p, :prev, :h)",
        s=seq, p=payload, prev=before, h=row_hash(before, seq, payload))


@pytest.mark.parametrize("tamper", [edit, delete, insert], ids=["edit", "delete", "insert"])
def test_verify_against_on_chain_anchors_names_the_tampered_row(
        pipeline_app: Flask, tamper: Any) -> None:
    client = pipeline_app.test_client()
    assert client.post("/api/v1/subnets", headers=HEADERS, json={
        "cidr": CIDR, "pools": ["10.72.0.10-10.72.0.50"]}).status_code == 201
    for i in range(6):
        response = client.post("/api/v1/leases?wait=30", headers=HEADERS,
                               json={"subnet": CIDR, "client_id": f"host-{i}"})
        assert response.status_code == 201, response.json
        if i in (1, 3):
            assert client.post("/api/v1/ledger/anchor", headers=HEADERS).json["anchored"]
    report = client.get("/api/v1/ledger/verify", headers=HEADERS).json
    assert report["ok"] is True and report["anchors_source"] == "chain"
    assert report["anchors_checked"] == 2 and report["unanchored_rows"] > 0
    seq = report["last_anchored_seq"] - 2  # inside the second anchored range
    tamper(pipeline_app, seq)
    report = client.get("/api/v1/ledger/verify", headers=HEADERS).json
    assert report["ok"] is False and report["first_bad_seq"] == seq, report
