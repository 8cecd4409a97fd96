"""`dhcp.commit` / `dhcp.release` with LEASEFLOW_DHCP_BACKEND=kea against a real Kea 2.2
(kea-dhcp4 + kea-ctrl-agent, REST API only), driven by the `dhcp_lease` process."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app.dhcp.backend import Binding, Client, Refusal
from app.dhcp.config import SubnetConfig
from app.dhcp.kea import KeaClient
from app.dhcp.process_backend import ProcessLeaseBackend
from app.extensions import db
from app.models import Lease, ProcessInstance
from app.services.dispatch import WAITERS
from bench.peers.kea import KeaMissing, KeaPeer, kea_server

pytestmark = pytest.mark.integration

CIDR = "10.66.0.0/24"
POOL = ("10.66.0.10", "10.66.0.12")
KEA_USER = ("leaseflow", "kea-test-password")
SUBNET = SubnetConfig(cidr=CIDR, pool=POOL, lease_time=600)


@pytest.fixture(scope="module")
def kea() -> Iterator[KeaPeer]:
    try:
        with kea_server(subnet=CIDR, pool=f"{POOL[0]} - {POOL[1]}", auth=KEA_USER) as peer:
            yield peer
    except KeaMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture
def kea_client(kea: KeaPeer) -> Iterator[KeaClient]:
    client = kea.client()
    yield client
    for lease in client.list_leases():  # each test starts from an empty lease store
        client.delete_lease(lease.ip)


@pytest.fixture
def kea_app(tmp_path: Path, kea: KeaPeer) -> Iterator[Flask]:
    from app import start_transport
    from app.services import dispatch, subnets
    from app.services.uow import unit_of_work
    from lf_support import make_app

    parts = urllib.parse.urlsplit(kea.url)
    url = parts._replace(netloc=f"{KEA_USER[0]}:{KEA_USER[1]}@{parts.netloc}").geturl()
    app = make_app(tmp_path, dhcp_backend="kea", kea_url=url)
    start_transport(app)
    with app.app_context(), unit_of_work():
        subnets.create({"cidr": CIDR, "pools": [f"{POOL[0]}-{POOL[1]}"], "lease_time": 600},
                       actor="test")
    yield app
    dispatch.install(None)


def client(n: int) -> Client:
    mac = bytes((0x02, 0, 0, 0, 1, n))
    return Client(subnet=SUBNET, client_id=b"\x01" + mac, chaddr=mac)


def instance(app: Flask, instance_id: int) -> dict[str, Any]:
    with app.app_context():
        row = db.session.get(ProcessInstance, instance_id)
        assert row is not None
        return {"state": row.state, "outcome": row.outcome, "lease_id": row.lease_id}


def latest_instance_id(app: Flask) -> int:
    with app.app_context():
        return int(db.session.execute(select(ProcessInstance.id).order_by(
            ProcessInstance.id.desc()).limit(1)).scalar_one())


def test_commit_writes_the_binding_into_kea_and_release_removes_it(kea_app, kea_client):
    backend = ProcessLeaseBackend(kea_app, patience=20.0)
    host = client(1)
    offer = backend.offer(host, None, time.time())
    assert offer is not None
    assert kea_client.get_lease(offer.address) is None  # an offer is not Kea's business
    ack = backend.commit(host, offer.address, time.time())
    assert isinstance(ack, Binding)
    held = kea_client.get_lease(offer.address)
    assert held is not None and held.hwaddr == "02:00:00:00:01:01"
    assert held.client_id == "01:02:00:00:00:01:01" and held.valid_lft == 600
    instance_id = latest_instance_id(kea_app)
    backend.release(host, offer.address, time.time())
    assert WAITERS.wait(instance_id, lambda: instance(kea_app, instance_id)["state"] ==
                        "completed", 20)
    assert kea_client.get_lease(offer.address) is None


def test_an_address_kea_gives_to_someone_else_takes_the_error_path(kea_app, kea_client):
    backend = ProcessLeaseBackend(kea_app, patience=20.0)
    host = client(2)
    offer = backend.offer(host, None, time.time())
    assert offer is not None
    kea_client.add_lease(offer.address, "aa:bb:cc:dd:ee:ff")  # Kea handed it out itself
    refusal = backend.commit(host, offer.address, time.time())
    assert isinstance(refusal, Refusal) and refusal.reason == "address_taken"  # a NAK
    instance_id = latest_instance_id(kea_app)
    assert WAITERS.wait(instance_id, lambda: instance(kea_app, instance_id)["state"] ==
                        "refused", 20)
    with kea_app.app_context():
        lease = db.session.get(Lease, instance(kea_app, instance_id)["lease_id"])
        assert lease is not None and lease.state == "abandoned"  # the offer went back
    held = kea_client.get_lease(offer.address)
    assert held is not None and held.hwaddr == "aa:bb:cc:dd:ee:ff"  # Kea's lease untouched
