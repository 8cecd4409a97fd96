"""The audit ledger against its on-chain anchors (embedded chain): verify, anchor, proofs.

Rows are tampered with plain SQL, as an attacker with database access would; verify must
name the tampered row, from the API and from `leaseflow ledger verify` (exit 1).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from app.ledger import canonical_json, row_hash, verify_proof
from app.ledger.merkle import ProofStep

CIDR = "10.9.0.0/24"


def lease(client: FlaskClient, admin: dict[str, str], client_id: str) -> dict[str, Any]:
    response = client.post("/api/v1/leases?wait=30", json={"subnet": CIDR, "client_id": client_id},
                           headers=admin)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def anchor(client: FlaskClient, admin: dict[str, str]) -> dict[str, Any]:
    response = client.post("/api/v1/ledger/anchor", headers=admin)
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[no-any-return]


def sql(app: Flask, statement: str, **params: Any) -> None:
    from app.extensions import db

    with app.app_context():
        db.session.execute(text(statement), params)
        db.session.commit()


def row(app: Flask, seq: int) -> Any:
    from app.extensions import db

    with app.app_context():
        found = db.session.execute(text("SELECT seq, prev_hash, hash, payload FROM audit_log "
                                        "WHERE seq = :seq"), {"seq": seq}).one()
        db.session.rollback()
        return found


def cli_verify(app: Flask, monkeypatch: pytest.MonkeyPatch) -> int:
    from app.cli import main

    monkeypatch.setenv("LEASEFLOW_DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    return main(["ledger", "verify"])


@pytest.fixture
def ledger_rows(client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any]) -> int:
    """Some lease history, half of it anchored; the number of the last anchored row."""
    lease(client, admin, "host-1")
    lease(client, admin, "host-2")
    first = anchor(client, admin)
    lease(client, admin, "host-3")
    second = anchor(client, admin)
    assert second["seq_from"] == first["seq_to"] + 1
    return int(second["seq_to"])


def test_verify_passes_against_the_chains_anchors(
        app: Flask, client: FlaskClient, admin: dict[str, str], ledger_rows: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    report = client.get("/api/v1/ledger/verify", headers=admin).json
    assert report["ok"] is True and report["anchors_source"] == "chain"
    assert report["anchors_checked"] == 2 and report["last_anchored_seq"] == ledger_rows
    assert cli_verify(app, monkeypatch) == 0


def _edit(app: Flask, seq: int) -> None:
    sql(app, "UPDATE audit_log SET payload = payload || ' ' WHERE seq = :s", s=seq)


def _delete(app: Flask, seq: int) -> None:
    sql(app, "DELETE FROM audit_log WHERE seq = :s", s=seq)


def _insert(app: Flask, seq: int) -> None:
    """Shift the rows from `seq` up by one and put a self-consistent forged row at `seq`."""
    before = row(app, seq - 1)
    sql(app, "UPDATE audit_log SET seq = seq + 1000000 WHERE seq >= :s", s=seq)
    sql(app, "UPDATE audit_log SET seq = seq - 999999 WHERE seq >= 1000000")
    payload = canonical_json({"kind": "lease.commit", "subject": "forged", "actor": "evil",
                              "data": {}})
    sql(app, "INSERT INTO audit_log (seq, at, actor, kind, subject, payload, prev_hash, hash) "
             "VALUES (:s, CURRENT_TIMESTAMP, 'evil', 'lease.commit', 'forged', :p, :prev, :h)",
        s=seq, p=payload, prev=before.hash, h=row_hash(before.hash, seq, payload))


def _delete_renumbered(app: Flask, seq: int) -> None:
    """Delete row `seq` and move the later rows down so no number is missing."""
    sql(app, "DELETE FROM audit_log WHERE seq = :s", s=seq)
    sql(app, "UPDATE audit_log SET seq = seq + 1000000 WHERE seq > :s", s=seq)
    sql(app, "UPDATE audit_log SET seq = seq - 1000001 WHERE seq >= 1000000")


@pytest.mark.parametrize("tamper", [_edit, _delete, _insert, _delete_renumbered],
                         ids=["edit", "delete", "insert", "delete_renumbered"])
@pytest.mark.parametrize("where", ["first_anchor", "second_anchor", "unanchored"])
def test_tampering_is_found_at_the_tampered_row(
        app: Flask, client: FlaskClient, admin: dict[str, str], ledger_rows: int,
        monkeypatch: pytest.MonkeyPatch, tamper: Any, where: str) -> None:
    if where == "unanchored":
        lease(client, admin, "host-4")
        seq = ledger_rows + 2
    else:
        seq = 3 if where == "first_anchor" else ledger_rows - 1
    tamper(app, seq)
    report = client.get("/api/v1/ledger/verify", headers=admin).json
    assert report["ok"] is False
    assert report["first_bad_seq"] == seq, report
    assert cli_verify(app, monkeypatch) == 1


def test_a_forged_row_appended_at_the_end_is_found(
        app: Flask, client: FlaskClient, admin: dict[str, str], ledger_rows: int) -> None:
    """Well hashed and linked, but past the ledger head and not anchored yet."""
    last = row(app, ledger_rows)
    payload = canonical_json({"kind": "lease.commit", "subject": "forged", "actor": "evil",
                              "data": {}})
    seq = ledger_rows + 1
    sql(app, "INSERT INTO audit_log (seq, at, actor, kind, subject, payload, prev_hash, hash) "
             "VALUES (:s, CURRENT_TIMESTAMP, 'evil', 'lease.commit', 'forged', :p, :prev, :h)",
        s=seq, p=payload, prev=last.hash, h=row_hash(last.hash, seq, payload))
    report = client.get("/api/v1/ledger/verify", headers=admin).json
    assert report["ok"] is False and report["first_bad_seq"] == seq
    assert report["problem"] == "inserted_row"


def test_rewriting_rows_and_their_hashes_is_caught_by_the_anchor(
        app: Flask, client: FlaskClient, admin: dict[str, str], ledger_rows: int) -> None:
    """An attacker who rechains every hash from row 2 on still cannot match the anchor."""
    from app.extensions import db

    _edit(app, 2)
    prev = row(app, 1).hash
    with app.app_context():
        rows = db.session.execute(text("SELECT seq, payload FROM audit_log ORDER BY seq")).all()
        for seq, payload in rows[1:]:
            digest = row_hash(prev, seq, payload)
            db.session.execute(text("UPDATE audit_log SET prev_hash = :p, hash = :h "
                                    "WHERE seq = :s"), {"p": prev, "h": digest, "s": seq})
            prev = digest
        db.session.commit()
    report = client.get("/api/v1/ledger/verify", headers=admin).json
    assert report["ok"] is False and report["problem"] == "anchor_mismatch"
    assert report["first_bad_seq"] == 1  # the first row of the range whose root differs


def test_anchoring_refuses_to_vouch_for_tampered_rows(
        app: Flask, client: FlaskClient, admin: dict[str, str], ledger_rows: int) -> None:
    lease(client, admin, "host-5")
    _edit(app, ledger_rows + 1)
    response = client.post("/api/v1/ledger/anchor", headers=admin)
    assert response.status_code == 409 and response.json["error"] == "ledger_tampered"
    assert str(ledger_rows + 1) in response.json["message"]


def test_the_ticker_anchors_when_due(app: Flask, client: FlaskClient, admin: dict[str, str],
                                     subnet: dict[str, Any], registry: Any) -> None:
    from workers.jobs import tick

    lease(client, admin, "host-6")
    with app.app_context():
        assert tick()["anchored"] == 1
        assert tick()["anchored"] == 0  # not due again before anchor_interval
    assert registry.anchor_count() == 1


def test_concurrent_anchoring_never_overlaps(
        app: Flask, client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
        registry: Any) -> None:
    from app.extensions import db
    from app.models import LedgerAnchor
    from app.services import anchoring
    from app.services.uow import unit_of_work

    errors: list[BaseException] = []

    def anchor_some() -> None:
        for _ in range(3):
            with app.app_context():
                try:
                    with unit_of_work():
                        anchoring.anchor_now()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

    threads = [threading.Thread(target=anchor_some) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(4):
        lease(client, admin, f"host-c{i}")
    for t in threads:
        t.join()
    anchor(client, admin)
    assert errors == []
    with app.app_context():
        stored = [(a.seq_from, a.seq_to) for a in db.session.query(LedgerAnchor)
                  .order_by(LedgerAnchor.seq_to)]
    on_chain = [a.seq for a in registry.anchors()]
    assert [last for _first, last in stored] == on_chain
    assert all(b[0] == a[1] + 1 for a, b in zip(stored, stored[1:], strict=False))
    assert stored[0][0] == 1


def test_a_lease_proof_reaches_the_anchored_root(
        app: Flask, client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
        registry: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bound = lease(client, admin, "host-p")
    unanchored = client.get(f"/api/v1/leases/{bound['ip']}/proof", headers=admin).json
    assert [r["kind"] for r in unanchored["rows"]] == ["lease.reserve", "lease.commit"]
    assert all(r["proof"] is None for r in unanchored["rows"])
    anchor(client, admin)
    proof = client.get(f"/api/v1/leases/{bound['ip']}/proof", headers=admin).json
    assert proof["anchors_source"] == "chain" and proof["lease"]["id"] == bound["id"]
    roots = {a.root.hex() for a in registry.anchors()}
    for entry in proof["rows"]:
        p = entry["proof"]
        steps = [ProofStep(sibling=s["sibling"], sibling_is_left=s["side"] == "left")
                 for s in p["path"]]
        assert p["valid"] and p["root"] in roots
        assert verify_proof(entry["hash"], steps, p["root"])
        assert row_hash(entry["prev_hash"], entry["seq"], entry["payload"]) == entry["hash"]
    from app.cli import main

    monkeypatch.setenv("LEASEFLOW_DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    assert main(["ledger", "proof", bound["ip"]]) == 0
    assert '"anchors_source": "chain"' in capsys.readouterr().out
    assert client.get("/api/v1/leases/10.9.0.99/proof", headers=admin).status_code == 404


def test_verify_falls_back_to_stored_anchors_when_the_chain_is_down(
        app: Flask, client: FlaskClient, admin: dict[str, str], ledger_rows: int) -> None:
    from app.config import Settings
    from app.services import chain
    from bench.peers.anvil import free_port

    down = f"http://127.0.0.1:{free_port()}"
    sql(app, "INSERT INTO settings (key, value) VALUES (:k, :v)",
        k=chain.ADDRESS_KEY + down, v="0x000000000000000000000000000000000000dEaD")
    settings: Settings = app.config["LEASEFLOW"]
    chain.reset()
    app.config["LEASEFLOW"] = dataclasses.replace(settings, chain_url=down)
    try:
        report = client.get("/api/v1/ledger/verify", headers=admin).json
        assert report["ok"] is True and report["anchors_source"] == "database"
        assert "could not be read" in report["note"] and report["anchors_checked"] == 2
        # anchoring needs the chain: a clear 503, not a crash
        response = client.post("/api/v1/ledger/anchor", headers=admin)
        assert response.status_code == 503 and response.json["error"] == "chain_unavailable"
    finally:
        app.config["LEASEFLOW"] = settings


def test_anchoring_refuses_a_contract_that_does_not_know_the_stored_anchors(
        app: Flask, client: FlaskClient, admin: dict[str, str], ledger_rows: int) -> None:
    """E.g. `leaseflow ledger anchor` run in another process on the embedded chain."""
    from app.extensions import db
    from app.services import chain

    with app.app_context():
        chain.reset()
        db.session.execute(text("DELETE FROM settings WHERE key = :k"),
                           {"k": chain.address_key()})
        db.session.commit()
    response = client.post("/api/v1/ledger/anchor", headers=admin)  # deploys a new contract
    assert response.status_code == 409 and response.json["error"] == "anchors_not_on_chain"


def test_cli_anchor_then_verify(app: Flask, client: FlaskClient, admin: dict[str, str],
                                ledger_rows: int, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    lease(client, admin, "host-cli")
    monkeypatch.setenv("LEASEFLOW_DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    capsys.readouterr()
    assert main(["ledger", "anchor"]) == 0
    out = capsys.readouterr().out
    assert '"anchored": true' in out and f'"seq_from": {ledger_rows + 1}' in out
    assert main(["ledger", "anchor"]) == 0
    assert '"anchored": false' in capsys.readouterr().out
    assert main(["ledger", "verify"]) == 0
    assert '"unanchored_rows": 0' in capsys.readouterr().out
