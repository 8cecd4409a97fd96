"""Two DHCP servers (two apps, two connection pools, as two processes would have) on one
real PostgreSQL database: racing clients never get one address twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.dhcp.backend import Binding, Client
from app.dhcp.config import SubnetConfig
from app.dhcp.process_backend import ProcessLeaseBackend
from app.extensions import db
from app.models import Lease
from lf_support import make_app

pytestmark = pytest.mark.integration

CIDR = "10.66.0.0/24"
SUBNET = SubnetConfig(cidr=CIDR, pool=("10.66.0.10", "10.66.0.14"), lease_time=600)


@pytest.fixture
def two_apps(tmp_path: Path, pg_database: str) -> Iterator[tuple[Flask, Flask]]:
    from app import start_transport
    from app.services import dispatch, subnets
    from app.services.uow import unit_of_work

    first = make_app(tmp_path / "a", database_url=pg_database)
    second = make_app(tmp_path / "b", database_url=pg_database)
    start_transport(first, local_workers=2)
    with first.app_context(), unit_of_work():
        subnets.create({"cidr": CIDR, "pools": ["10.66.0.10-10.66.0.14"]}, actor="test")
    yield first, second
    dispatch.install(None)
    for app in (first, second):
        with app.app_context():
            db.engine.dispose()


def backends_for(apps: tuple[Flask, Flask], paths: tuple[str, str]) -> list[ProcessLeaseBackend]:
    from app.dhcp.fast_backend import FastLeaseBackend

    return [FastLeaseBackend(app, patience=30.0) if path == "fast"
            else ProcessLeaseBackend(app, patience=30.0) for app, path in zip(apps, paths)]


@pytest.mark.parametrize("paths", [("process", "process"), ("fast", "fast"),
                                   ("fast", "process")], ids="-".join)
def test_two_servers_on_one_postgres_never_hand_out_one_address_twice(
        two_apps, paths) -> None:
    backends = backends_for(two_apps, paths)
    clients = [Client(subnet=SUBNET, client_id=bytes((1, 2, 0, 0, 0, 9, n)),
                      chaddr=bytes((2, 0, 0, 0, 9, n))) for n in range(12)]

    def dora(n: int) -> str | None:
        # The DISCOVER reaches one server, the REQUEST the other.
        offer = backends[n % 2].offer(clients[n], None, time.time())
        if offer is None:
            return None
        ack = backends[(n + 1) % 2].commit(clients[n], offer.address, time.time())
        return ack.address if isinstance(ack, Binding) else None

    with ThreadPoolExecutor(8) as pool:
        got = [a for a in pool.map(dora, range(len(clients))) if a is not None]
    assert len(got) == len(set(got)) == 5  # the whole pool, each address once
    with two_apps[0].app_context():
        holders = db.session.execute(select(Lease.address, func.count()).where(
            Lease.state.in_(["offered", "bound"])).group_by(Lease.address)).all()
    assert len(holders) == 5 and all(n == 1 for _, n in holders)
    for backend in backends:
        backend.close()


def test_one_request_reaching_two_fast_servers_at_once_is_acked_by_both_once_bound(
        two_apps) -> None:
    """A client's REQUEST (or its retransmission) answered by two fast-path servers at
    the same moment: both answer ACK with the same lease; one lease, one instance."""
    from app.models import ProcessInstance

    backends = backends_for(two_apps, ("fast", "fast"))
    client = Client(subnet=SUBNET, client_id=b"\x01\x02\x00\x00\x00\x09\x77",
                    chaddr=b"\x02\x00\x00\x00\x09\x77")
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda b: b.commit(client, "10.66.0.12", time.time()),
                                backends))
    assert all(isinstance(a, Binding) and a.address == "10.66.0.12" for a in answers)
    with two_apps[0].app_context():
        assert db.session.execute(select(func.count()).select_from(Lease)).scalar_one() == 1
        assert db.session.execute(
            select(func.count()).select_from(ProcessInstance)).scalar_one() == 1
    for backend in backends:
        backend.close()
