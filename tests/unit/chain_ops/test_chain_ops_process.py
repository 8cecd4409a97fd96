"""The default lease process on the embedded chain: validate, record, release, refusals.

Every lease the process binds is on chain with a holder derived from the lease; an address
another holder has on chain is given back and another one reserved (at most three times);
a chain that cannot be reached ends in the manual-retry inbox, never in a hung instance.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.chain import (
    AllocateItem,
    ChainTimeout,
    ChainUnavailable,
    ContractNotFound,
    OutOfGas,
    TransactionReverted,
    Unauthorized,
    WrongChain,
    ip_to_uint,
    subnet_id,
)
from app.chain.batcher import BatcherClosed
from lf_support import settle

CIDR = "10.9.0.0/24"
POOL_IPS = [f"10.9.0.{n}" for n in range(10, 15)]


def lease(client: FlaskClient, admin: dict[str, str], client_id: str, **extra: Any) -> Any:
    return client.post("/api/v1/leases?wait=30",
                       json={"subnet": CIDR, "client_id": client_id, **extra}, headers=admin)


def jobs_of(client: FlaskClient, admin: dict[str, str], instance_id: int) -> list[dict[str, Any]]:
    return client.get(f"/api/v1/instances/{instance_id}", headers=admin).json["jobs"]


def at_rest(client: FlaskClient, admin: dict[str, str], instance_id: int) -> None:
    """Wait until the instance has no queued job left (record runs after the 201)."""
    settle(lambda: all(j["status"] != "queued" for j in jobs_of(client, admin, instance_id)),
           30, f"instance {instance_id} coming to rest")


def take_on_chain(registry: Any, ip: str, holder: str = "someone-else") -> None:
    outcome = registry.allocate(AllocateItem.for_lease(subnet=CIDR, ip=ip, client_id=holder))
    assert outcome.accepted


def test_a_bound_lease_is_on_chain_with_its_own_holder_and_expiry(
        app: Flask, client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
        registry: Any) -> None:
    from app.services import chain

    response = lease(client, admin, "host-a")
    assert response.status_code == 201, response.json
    bound = response.json
    at_rest(client, admin, bound["instance_id"])
    holding = registry.holder_of(subnet_id(CIDR), ip_to_uint(bound["ip"]))
    assert holding is not None
    assert holding.holder == chain.lease_holder(subnet=CIDR, client_id="host-a",
                                                lease_id=bound["id"])
    # on the chain's clock: the lease's remaining time plus the grace period
    remaining = datetime.fromisoformat(bound["expires_at"]).timestamp() - time.time()
    ahead = holding.expires - registry.client.block_timestamp()
    assert remaining + chain.EXPIRY_GRACE - 10 < ahead <= remaining + chain.EXPIRY_GRACE + 10
    operations = [(j["operation"], j["status"]) for j in jobs_of(client, admin,
                                                                  bound["instance_id"])]
    assert operations == [("engine.start", "done"), ("ipam.reserve", "done"),
                          ("chain.validate", "done"),
                          ("dhcp.commit", "done"), ("chain.record", "done")]


def test_the_contract_address_is_kept_in_the_database(app: Flask, registry: Any) -> None:
    from app.services import chain

    with app.app_context():
        assert chain.stored_address() == registry.address
        chain.reset()  # a new process: the same contract, not a new one
        assert chain.get().registry.address == registry.address


def test_an_address_taken_on_chain_is_given_back_and_another_reserved(
        client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
        registry: Any) -> None:
    take_on_chain(registry, "10.9.0.13")
    response = lease(client, admin, "host-b", requested_ip="10.9.0.13")
    assert response.status_code == 201, response.json
    assert response.json["ip"] != "10.9.0.13"
    refused = client.get("/api/v1/leases/10.9.0.13", headers=admin).json
    assert refused["client_id"] == "host-b" and refused["state"] == "abandoned"
    failed = [j for j in jobs_of(client, admin, response.json["instance_id"])
              if j["status"] == "failed"]
    assert [(j["operation"], j["error"].split(":")[0]) for j in failed] == [
        ("chain.validate", "address_taken_on_chain")]


def test_refusals_on_chain_are_bounded_then_the_request_is_refused(
        client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
        registry: Any) -> None:
    for ip in POOL_IPS:
        take_on_chain(registry, ip)
    response = lease(client, admin, "host-c")
    assert response.status_code == 409, response.json
    assert response.json["error"] == "address_taken_on_chain"
    instance_id = response.json["details"][0]["instance_id"]
    refusals = [j for j in jobs_of(client, admin, instance_id)
                if j["operation"] == "chain.validate"]
    assert len(refusals) == 4  # the first try and three alternatives
    held = client.get("/api/v1/leases?client_id=host-c", headers=admin).json
    assert {h["state"] for h in held} == {"abandoned"} and len(held) == 4


def test_release_frees_the_address_on_chain(
        client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
        registry: Any) -> None:
    bound = lease(client, admin, "host-d").json
    at_rest(client, admin, bound["instance_id"])
    assert registry.holder_of(subnet_id(CIDR), ip_to_uint(bound["ip"])) is not None
    assert client.delete(f"/api/v1/leases/{bound['ip']}", headers=admin).status_code == 202
    settle(lambda: client.get(f"/api/v1/instances/{bound['instance_id']}",
                              headers=admin).json["state"] == "completed", 30, "release")
    assert registry.holder_of(subnet_id(CIDR), ip_to_uint(bound["ip"])) is None
    # the address can be had again, by anyone
    again = lease(client, admin, "host-e", requested_ip=bound["ip"])
    assert again.status_code == 201 and again.json["ip"] == bound["ip"]


def _reserved_lease(app: Flask, client_id: str, ip: str) -> int:
    from app.services import leases
    from app.services.uow import unit_of_work

    with app.app_context(), unit_of_work():
        return leases.reserve(subnet=CIDR, client_id=client_id, requested_ip=ip).id


def test_record_refused_when_another_holder_has_the_address(
        app: Flask, subnet: dict[str, Any], registry: Any) -> None:
    from app.operations import BusinessError, chain_ops

    lease_id = _reserved_lease(app, "host-f", "10.9.0.12")
    take_on_chain(registry, "10.9.0.12")
    with app.app_context():
        future = chain_ops.record({"lease_id": lease_id})
        with pytest.raises(BusinessError) as caught:
            future.result(timeout=30)
    assert caught.value.code == "address_taken_on_chain"
    assert caught.value.details == {"ip": "10.9.0.12"}


def test_record_is_idempotent_for_the_same_lease_and_release_of_nothing_is_done(
        app: Flask, subnet: dict[str, Any], registry: Any) -> None:
    from app.operations import chain_ops

    lease_id = _reserved_lease(app, "host-g", "10.9.0.11")
    with app.app_context():
        released = chain_ops.release({"lease_id": lease_id}).result(timeout=30)
        assert released["released"] is False and released["reason"] == "not_allocated"
        first = chain_ops.record({"lease_id": lease_id}).result(timeout=30)
        again = chain_ops.record({"lease_id": lease_id}).result(timeout=30)  # a retried job
        assert first["recorded"] and again["recorded"] and first["holder"] == again["holder"]
        released = chain_ops.release({"lease_id": lease_id}).result(timeout=30)
        assert released["released"] is True
    assert registry.holder_of(subnet_id(CIDR), ip_to_uint("10.9.0.11")) is None


def test_holder_ids_separate_leases() -> None:
    from app.services.chain import lease_holder

    one = lease_holder(subnet=CIDR, client_id="a", lease_id=1)
    assert one == lease_holder(subnet=CIDR, client_id="a", lease_id=1)
    assert one != lease_holder(subnet=CIDR, client_id="a", lease_id=2)
    assert one != lease_holder(subnet=CIDR, client_id="b", lease_id=1)
    assert one != lease_holder(subnet="10.8.0.0/24", client_id="a", lease_id=1)


@pytest.mark.parametrize(("error", "kind", "code"), [
    (ChainUnavailable("connection refused"), "transient", "chain_unavailable"),
    (ChainTimeout("no receipt"), "transient", "chain_unavailable"),
    (ContractNotFound("no contract"), "transient", "chain_misconfigured"),
    (WrongChain("chain id 1"), "transient", "chain_misconfigured"),
    (Unauthorized("not writer"), "transient", "chain_misconfigured"),
    (TransactionReverted("reverted", tx_hash="0x01"), "business", "chain_reverted"),
    (OutOfGas("out of gas"), "business", "chain_reverted"),
    (BatcherClosed("closed"), "transient", "chain_error"),
    (RuntimeError("bug"), "transient", "chain_error"),
])
def test_chain_failures_become_job_outcomes(error: Exception, kind: str, code: str) -> None:
    from app.operations.chain_ops import operation_error

    outcome = operation_error(error, "recording 10.9.0.10 on chain")
    assert (outcome.kind, outcome.code) == (kind, code)
    assert outcome.message.startswith("recording 10.9.0.10 on chain: ")


def test_default_process_passes_the_upload_gate_and_names_chain_operations(
        client: FlaskClient, admin: dict[str, str]) -> None:
    from app.cli import main
    from lf_support import ROOT

    assert main(["process", "validate", str(ROOT / "processes" / "lease_lifecycle.bpmn")]) == 0
    names = {op["name"] for op in client.get("/api/v1/operations", headers=admin).json}
    assert {"chain.validate", "chain.record", "chain.release"} <= names


def test_node_down_retries_then_the_manual_retry_inbox(tmp_path: Any) -> None:
    """Nothing listens on the chain URL: transient retries with backoff, then a person."""
    from app import start_transport
    from app.models import HumanTask, Lease
    from app.services import dispatch
    from bench.peers.anvil import free_port
    from lf_support import TOKEN, make_app
    from workers.jobs import tick

    app = make_app(tmp_path, chain_url=f"http://127.0.0.1:{free_port()}")
    start_transport(app)
    try:
        client, admin = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/api/v1/subnets", json={"cidr": CIDR, "pools": ["10.9.0.10-10.9.0.14"]},
                           headers=admin).status_code == 201
        response = client.post("/api/v1/leases", json={"subnet": CIDR, "client_id": "host-x"},
                               headers=admin)
        instance_id = response.json["instance_id"]

        def in_inbox() -> bool:
            with app.app_context():
                tick()  # the ticker brings back each retry when its backoff is over
                from app.extensions import db

                found = db.session.execute(select(HumanTask.id).where(
                    HumanTask.instance_id == instance_id)).first() is not None
                db.session.rollback()
                return found

        settle(in_inbox, 60, "the request reaching the manual-retry inbox")
        task = client.get("/api/v1/tasks", headers=admin).json[0]
        assert task["instance_id"] == instance_id and task["task"] == "approve_retry"
        assert task["error"]["code"] == "retries_exhausted"
        assert task["error"]["cause"] == "chain_unavailable"
        jobs = jobs_of(client, admin, instance_id)
        validations = [j for j in jobs if j["operation"] == "chain.validate"]
        assert [j["attempt"] for j in validations] == [1, 2, 3, 4]
        assert {j["status"] for j in validations} == {"failed"}
        instance = client.get(f"/api/v1/instances/{instance_id}", headers=admin).json
        assert instance["state"] == "waiting"
        with app.app_context():
            from app.extensions import db

            states = set(db.session.execute(select(Lease.state)).scalars())
        assert states == {"abandoned"}  # the reservation was given back meanwhile
    finally:
        dispatch.install(None)
