"""The rest of a lease's life on chain: a refusal at record time, renewal, expiry."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.chain import AllocateItem, ip_to_uint, subnet_id
from lf_support import settle

CIDR = "10.9.0.0/24"


def jobs_of(client: FlaskClient, admin: dict[str, str], instance_id: int) -> list[dict[str, Any]]:
    return client.get(f"/api/v1/instances/{instance_id}", headers=admin).json["jobs"]


def at_rest(client: FlaskClient, admin: dict[str, str], instance_id: int) -> None:
    settle(lambda: all(j["status"] != "queued" for j in jobs_of(client, admin, instance_id)),
           30, f"instance {instance_id} coming to rest")


def test_a_refusal_at_record_time_gives_the_binding_back_and_takes_another_address(
        client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any], registry: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer took the address between validate and record (a race validate can
    never rule out): the bound lease is given back and the process reserves another."""
    from app import operations

    def optimistic(params: Mapping[str, Any]) -> dict[str, Any]:
        return {"accepted": True}

    operations.load_all()
    validate = operations.REGISTRY["chain.validate"]
    monkeypatch.setitem(operations.REGISTRY, "chain.validate",
                        dataclasses.replace(validate, handler=optimistic))
    taken = AllocateItem.for_lease(subnet=CIDR, ip="10.9.0.12", client_id="another-site")
    assert registry.allocate(taken).accepted
    response = client.post("/api/v1/leases?wait=30", headers=admin, json={
        "subnet": CIDR, "client_id": "host-r", "requested_ip": "10.9.0.12"})
    assert response.status_code == 201, response.json
    instance_id = response.json["instance_id"]
    at_rest(client, admin, instance_id)
    bound = client.get(f"/api/v1/instances/{instance_id}", headers=admin).json
    ip = client.get("/api/v1/leases?client_id=host-r&state=bound", headers=admin).json[0]["ip"]
    assert ip != "10.9.0.12" and bound["state"] == "waiting"
    assert client.get("/api/v1/leases/10.9.0.12", headers=admin).json["state"] == "abandoned"
    records = [(j["status"], (j["error"] or "").split(":")[0])
               for j in jobs_of(client, admin, instance_id) if j["operation"] == "chain.record"]
    assert records == [("failed", "address_taken_on_chain"), ("done", "")]
    assert registry.holder_of(subnet_id(CIDR), ip_to_uint("10.9.0.12")).holder == taken.holder


def test_renewal_moves_the_expiry_on_chain(
        app: Flask, client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
        registry: Any) -> None:
    from app.services import instances, leases
    from app.services.uow import unit_of_work

    bound = client.post("/api/v1/leases?wait=30", headers=admin,
                        json={"subnet": CIDR, "client_id": "host-n"}).json
    at_rest(client, admin, bound["instance_id"])
    before = registry.holder_of(subnet_id(CIDR), ip_to_uint(bound["ip"])).expires
    with app.app_context(), unit_of_work():
        lease = leases.renew(leases.get_lease(bound["id"]), lease_time=7200)
        renewed = lease.expires_at
        instances.send_message(bound["instance_id"], "lease_renew",
                               {"expires_at": renewed.isoformat()}, actor="test")
    at_rest(client, admin, bound["instance_id"])
    holding = registry.holder_of(subnet_id(CIDR), ip_to_uint(bound["ip"]))
    assert holding.expires >= before + 7200 - 600 - 10  # 2 h instead of the first 10 min
    assert renewed > datetime.fromisoformat(bound["expires_at"])


def test_expiry_frees_the_address_on_chain(tmp_path: Path) -> None:
    from app import start_transport
    from app.services import chain, dispatch
    from lf_support import TOKEN, make_app
    from workers.jobs import tick

    app = make_app(tmp_path)
    start_transport(app)
    try:
        client, admin = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/api/v1/subnets", headers=admin, json={
            "cidr": CIDR, "pools": ["10.9.0.10-10.9.0.14"]}).status_code == 201
        with app.app_context():  # below the API's 60 s minimum, so the test stays short
            from sqlalchemy import text

            from app.extensions import db

            db.session.execute(text("UPDATE subnets SET lease_time = 2"))
            db.session.commit()
        bound = client.post("/api/v1/leases?wait=30", headers=admin,
                            json={"subnet": CIDR, "client_id": "host-x"}).json
        at_rest(client, admin, bound["instance_id"])
        with app.app_context():
            registry = chain.get().registry
        assert registry.holder_of(subnet_id(CIDR), ip_to_uint(bound["ip"])) is not None

        def expired() -> bool:
            with app.app_context():
                tick()  # wakes the instance when the lease time is over
            return client.get(f"/api/v1/instances/{bound['instance_id']}",
                              headers=admin).json["state"] == "completed"

        settle(expired, 30, "the lease expiring")
        assert client.get(f"/api/v1/leases/{bound['ip']}", headers=admin).json["state"] == \
            "expired"
        assert registry.holder_of(subnet_id(CIDR), ip_to_uint(bound["ip"])) is None
    finally:
        dispatch.install(None)
