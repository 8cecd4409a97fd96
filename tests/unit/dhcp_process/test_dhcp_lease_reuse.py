"""Lease reuse on the fast DORA path (`LEASEFLOW_DHCP_REUSE`, `app.dhcp.reuse`): a renewal
that the lease's last write covers is ACKed from the lease index, without a write."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select
from test_dhcp_fast_path import CIDR, dhcp_app  # noqa: F401 - the fixture, both databases
from test_dhcp_process_backend import bind as dora
from test_dhcp_process_backend import count, lease_of, wait_instance

from app.dhcp.backend import Binding
from app.dhcp.errors import ConfigError
from app.dhcp.fast_backend import FastLeaseBackend
from app.extensions import db
from app.leases.index import Change
from app.models import AuditEntry, Lease, LeaseHistory
from app.services import dhcp

LEASE_TIME = 600  # the subnet's (conftest)


@pytest.fixture
def reusing(dhcp_app: Flask) -> Iterator[FastLeaseBackend]:  # noqa: F811
    """Reuse at Kea's usual threshold; the index follows only when the test steps it."""
    backend = FastLeaseBackend(dhcp_app, patience=20.0, reuse=0.25, follow_every=3600.0)
    yield backend
    backend.close()


def writes(app: Flask) -> tuple[int, int]:
    """Ledger entries and history rows: what a written renewal adds one of each to."""
    with app.app_context():
        return (db.session.execute(select(func.count()).select_from(AuditEntry)).scalar_one(),
                db.session.execute(select(func.count()).select_from(LeaseHistory)).scalar_one())


def test_a_renewal_right_after_the_binding_is_acked_with_the_time_left_and_no_write(
        dhcp_app, reusing, make_client):  # noqa: F811
    client = make_client(11)
    ack = dora(reusing, client)
    wait_instance(dhcp_app, client, "waiting")
    reusing._follower.step()  # the index has read the binding's entry
    stored, before = lease_of(dhcp_app, client)["expires_at"], writes(dhcp_app)
    renewed = reusing.renew(client, ack.address, time.time())
    assert isinstance(renewed, Binding) and renewed.state == "bound"
    assert renewed.address == ack.address and LEASE_TIME - 5 <= renewed.lease_time < LEASE_TIME
    assert renewed.lease_time <= (stored.timestamp() - time.time()) + 1
    # A client starting over (DISCOVER, REQUEST) while bound: the same.
    again = dora(reusing, client)
    assert again.address == ack.address and again.lease_time < LEASE_TIME
    assert writes(dhcp_app) == before and lease_of(dhcp_app, client)["expires_at"] == stored
    assert count(dhcp_app, Lease) == 1


def test_a_lease_written_longer_ago_is_renewed_in_the_database_and_followed(
        dhcp_app, reusing, make_client):  # noqa: F811
    client = make_client(12)
    ack = dora(reusing, client)
    reusing._follower.step()
    cid = dhcp.client_key(client.client_id)
    held = reusing.index.holding(CIDR, cid)
    assert held is not None and held.expires_at is not None
    # As the ledger would describe it had it been written 0.3 × its lease time ago.
    reusing.index.apply([Change(CIDR, held.lease_id, held.address, cid, "bound",
                                time.time() + LEASE_TIME * 0.7)])
    before = writes(dhcp_app)
    renewed = reusing.renew(client, ack.address, time.time())
    assert isinstance(renewed, Binding) and renewed.lease_time >= LEASE_TIME - 1
    assert writes(dhcp_app) == (before[0] + 1, before[1] + 1)
    reusing._follower.step()  # the renewal's entry moves the index's expiry
    moved = reusing.index.holding(CIDR, cid)
    assert moved is not None and moved.expires_at == pytest.approx(
        lease_of(dhcp_app, client)["expires_at"].timestamp(), abs=1e-3)
    assert moved.expires_at > time.time() + LEASE_TIME * 0.9


def test_a_renewal_after_the_clients_release_is_never_reused(
        dhcp_app, reusing, make_client):  # noqa: F811
    client = make_client(13)
    ack = dora(reusing, client)
    reusing._follower.step()
    reusing.release(client, ack.address, time.time())
    assert reusing.index.holding(CIDR, dhcp.client_key(client.client_id)) is None
    wait_instance(dhcp_app, client, "completed")
    before = writes(dhcp_app)
    # The database decides: the client's last address, free, is bound again (a new lease).
    again = reusing.renew(client, ack.address, time.time())
    assert isinstance(again, Binding) and again.lease_time == LEASE_TIME
    assert count(dhcp_app, Lease) == 2 and writes(dhcp_app) > before


def test_reuse_off_writes_every_renewal(dhcp_app, make_client):  # noqa: F811
    backend = FastLeaseBackend(dhcp_app, patience=20.0, reuse=0.0, follow_every=3600.0)
    try:
        client = make_client(14)
        ack = dora(backend, client)
        backend._follower.step()
        before = writes(dhcp_app)
        renewed = backend.renew(client, ack.address, time.time())
        assert isinstance(renewed, Binding) and renewed.lease_time >= LEASE_TIME - 1
        assert writes(dhcp_app) == (before[0] + 1, before[1] + 1)
    finally:
        backend.close()


def test_a_threshold_outside_0_to_1_stops_the_server_at_start(dhcp_app):  # noqa: F811
    from app.dhcp.process_backend import start_server

    settings = dhcp_app.config["LEASEFLOW"]
    dhcp_app.config["LEASEFLOW"] = dataclasses.replace(settings, dhcp_reuse=1.0)
    try:
        with pytest.raises(ConfigError, match="LEASEFLOW_DHCP_REUSE"):
            start_server(dhcp_app, interface="lo", port=0, dora="fast")
    finally:
        dhcp_app.config["LEASEFLOW"] = settings
