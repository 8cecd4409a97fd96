"""A real node that goes away, a contract that is not there, the wrong chain: every lease
request ends bound, refused or in the manual-retry inbox with the cause — never hung."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from bench.peers.anvil import AnvilNode, start_anvil, stop_anvil
from lf_support import TOKEN, settle

pytestmark = pytest.mark.integration

CIDR = "10.71.0.0/24"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def own_anvil() -> Iterator[AnvilNode]:
    """An anvil of this test's own, so the test may stop it."""
    node = start_anvil()
    yield node
    stop_anvil(node)


def make(tmp_path: Path, **settings: Any) -> Flask:
    from app import start_transport
    from lf_support import make_app

    app = make_app(tmp_path, **settings)
    start_transport(app)
    response = app.test_client().post("/api/v1/subnets", headers=HEADERS, json={
        "cidr": CIDR, "pools": ["10.71.0.10-10.71.0.20"]})
    assert response.status_code == 201, response.json
    return app


@pytest.fixture
def cleanup() -> Iterator[None]:
    yield
    from app.services import chain, dispatch

    dispatch.install(None)
    chain.reset()


def inbox_task(app: Flask, instance_id: int) -> dict[str, Any]:
    """Tick (retries come back after their backoff) until the instance asks a person."""
    from app.extensions import db
    from app.models import HumanTask
    from workers.jobs import tick

    def asked() -> bool:
        with app.app_context():
            tick()
            found = db.session.execute(select(HumanTask.id).where(
                HumanTask.instance_id == instance_id)).first() is not None
            db.session.rollback()
            return found

    settle(asked, 90, f"instance {instance_id} reaching the manual-retry inbox")
    tasks = app.test_client().get("/api/v1/tasks", headers=HEADERS).json
    return next(t for t in tasks if t["instance_id"] == instance_id)


def request_lease(app: Flask, client_id: str, wait: float = 0) -> Any:
    return app.test_client().post(f"/api/v1/leases?wait={wait}", headers=HEADERS,
                                  json={"subnet": CIDR, "client_id": client_id})


def test_node_down_mid_run_then_back(tmp_path: Path, own_anvil: AnvilNode,
                                     cleanup: None) -> None:
    app = make(tmp_path, chain_url=own_anvil.url)
    client = app.test_client()
    bound = request_lease(app, "host-1", wait=30)
    assert bound.status_code == 201, bound.json
    stop_anvil(own_anvil)
    # a new request: transient retries, then the inbox, with the cause
    pending = request_lease(app, "host-2").json["instance_id"]
    task = inbox_task(app, pending)
    assert task["error"]["code"] == "retries_exhausted"
    assert task["error"]["cause"] == "chain_unavailable"
    # releasing the bound lease goes on without the chain (its entry lapses at expiry)
    assert client.delete(f"/api/v1/leases/{bound.json['ip']}", headers=HEADERS
                         ).status_code == 202

    def released() -> bool:
        from workers.jobs import tick

        with app.app_context():
            tick()
        return client.get(f"/api/v1/instances/{bound.json['instance_id']}",
                          headers=HEADERS).json["state"] == "completed"

    settle(released, 90, "the release finishing without the chain")
    assert client.get(f"/api/v1/leases/{bound.json['ip']}", headers=HEADERS
                      ).json["state"] == "released"


def test_a_stored_address_without_a_contract_is_a_clear_error(
        tmp_path: Path, anvil_node: AnvilNode, cleanup: None) -> None:
    from app.chain import ContractNotFound
    from app.extensions import db
    from app.models import SettingValue
    from app.services import chain

    app = make(tmp_path, chain_url=anvil_node.url)
    with app.app_context():
        db.session.add(SettingValue(key=chain.address_key(),
                                    value="0x000000000000000000000000000000000000dEaD"))
        db.session.commit()
        with pytest.raises(ContractNotFound, match="chain.registry_address"):
            chain.get()
    pending = request_lease(app, "host-3").json["instance_id"]
    task = inbox_task(app, pending)
    assert task["error"]["cause"] == "chain_misconfigured"
    assert "0x000000000000000000000000000000000000dEaD" in task["error"]["message"]


def test_the_wrong_chain_id_is_refused(tmp_path: Path, anvil_node: AnvilNode,
                                       cleanup: None) -> None:
    app = make(tmp_path, chain_url=anvil_node.url, chain_id=anvil_node.chain_id + 1)
    pending = request_lease(app, "host-4").json["instance_id"]
    task = inbox_task(app, pending)
    assert task["error"]["cause"] == "chain_misconfigured"
    assert f"expected {anvil_node.chain_id + 1}" in task["error"]["message"]
