"""Real dhclient, udhcpc and dhcpcd against our server driven by the `dhcp_lease` process."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.extensions import db
from app.models import Lease, LeaseHistory, ProcessInstance, ServiceJob
from app.services.dispatch import WAITERS
from lf_support import settle

pytestmark = pytest.mark.integration

CLIENTS = ["dhclient", "udhcpc", "dhcpcd"]
POOL = (ipaddress.IPv4Address("10.77.0.100"), ipaddress.IPv4Address("10.77.0.199"))


def bound(kind: str, client: Any) -> str:
    """Get a lease with `client` and keep it running; the address it configured."""
    if kind == "dhclient":
        result = client.obtain()
        assert result.returncode == 0, result.stderr
        _, address = client.wait_event(["BOUND", "REBOOT"])
    else:
        client.start()
        _, address = client.wait_event(["bound", "BOUND", "REBOOT"])
    assert POOL[0] <= ipaddress.IPv4Address(address) <= POOL[1]
    assert client.address() == address
    return address


def lease_at(app: Flask, address: str) -> dict[str, Any]:
    with app.app_context():
        lease = db.session.execute(select(Lease).where(
            Lease.address == int(ipaddress.IPv4Address(address)))
            .order_by(Lease.id.desc())).scalars().first()
        assert lease is not None, f"no lease row for {address}"
        instance = db.session.get(ProcessInstance, lease.instance_id)
        history = [h.event for h in db.session.execute(select(LeaseHistory).where(
            LeaseHistory.lease_id == lease.id).order_by(LeaseHistory.id)).scalars()]
        return {"state": lease.state, "hwaddr": lease.hwaddr, "expires_at": lease.expires_at,
                "instance_id": lease.instance_id, "instance": instance.state,
                "process": instance.definition.key, "outcome": instance.outcome,
                "history": history}


def mac_of(client: Any) -> str:
    return client.ns.run(["cat", f"/sys/class/net/{client.ns.interface}/address"]).stdout.strip()


def jobs(app: Flask) -> int:
    with app.app_context():
        return int(db.session.execute(select(func.count()).select_from(ServiceJob))
                   .scalar_one())


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_binds_through_the_lease_process(app, start_server, make_client, kind):
    server = start_server()
    client = make_client(kind)
    address = bound(kind, client)
    lease = lease_at(app, address)
    assert lease["state"] == "bound" and lease["hwaddr"] == mac_of(client)
    assert lease["process"] == "dhcp_lease" and lease["instance"] == "waiting"
    assert lease["history"][:2] == ["reserve", "commit"]
    counters = server.counters.snapshot()
    assert counters["offers"] >= 1 and counters["acks"] >= 1
    assert counters.get("backend_errors", 0) == 0
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert f'leaseflow_dhcp_packets_total{{interface="{server.interface}",event="acks"}}' \
        in metrics


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_binds_on_the_fast_dora_path_and_the_instance_follows(
        app, start_server, make_client, kind):
    server = start_server(dora="fast")
    client = make_client(kind)
    address = bound(kind, client)
    lease = lease_at(app, address)
    assert lease["state"] == "bound" and lease["hwaddr"] == mac_of(client)
    assert lease["history"][:1] == ["commit"]  # the offer was held in memory, not stored
    # The instance was stored with the binding; a worker starts it and it adopts the lease.
    assert WAITERS.wait(lease["instance_id"],
                        lambda: lease_at(app, address)["instance"] == "waiting", 20)
    assert lease_at(app, address)["process"] == "dhcp_lease"
    assert server.counters.snapshot().get("backend_errors", 0) == 0
    if kind != "udhcpc":  # the RELEASE is the instance's message, as on the process path
        result = client.release()
        assert result.returncode == 0, result.stderr
        settle(lambda: lease_at(app, address)["instance"] == "completed", 20, "the release")
        assert lease_at(app, address)["state"] == "released"


@pytest.mark.parametrize("dora", ["process", "fast"])
@pytest.mark.parametrize("kind", CLIENTS)
def test_client_renewal_moves_the_expiry_on_the_fast_path(app, start_server, make_client, kind,
                                                          dora):
    # T1 at 3 s: the client unicasts a REQUEST (RENEWING) to us.
    server = start_server(lease_time=60, renewal_time=3, dora=dora)
    client = make_client(kind)
    address = bound(kind, client)
    before = lease_at(app, address)
    queued = jobs(app)
    after = len(client.events())
    if kind == "udhcpc":
        client.renew()  # SIGUSR1: busybox renews at half the lease time, ignoring T1
    reason, renewed = client.wait_event(["RENEW", "renew"], after=after, timeout=20)
    assert renewed == address
    settle(lambda: "renew" in lease_at(app, address)["history"], 10, "the renewal")
    now = lease_at(app, address)
    assert now["state"] == "bound" and now["expires_at"] > before["expires_at"]
    assert now["instance_id"] == before["instance_id"] and now["instance"] == "waiting"
    assert jobs(app) == queued  # nothing went through the worker queue
    assert server.counters.snapshot().get("requests_renewing", 0) >= 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_release_ends_the_lease_process(app, start_server, make_client, kind):
    server = start_server()
    client = make_client(kind)
    address = bound(kind, client)
    instance_id = lease_at(app, address)["instance_id"]
    if kind == "udhcpc":
        after = len(client.events())
        client.release()  # SIGUSR2
        client.wait_event(["deconfig"], after=after)
    else:
        result = client.release()
        assert result.returncode == 0, result.stderr
    assert WAITERS.wait(instance_id, lambda: lease_at(app, address)["instance"] == "completed",
                        20), lease_at(app, address)
    lease = lease_at(app, address)
    assert lease["state"] == "released" and lease["outcome"]["reason"] == "released"
    assert server.counters.snapshot()["releases"] == 1


def test_dhclient_rebooting_into_the_wrong_network_is_naked_then_binds(
        app, start_server, make_client):
    server = start_server()
    client = make_client("dhclient")
    client.seed_lease(address="192.168.99.50", mask="255.255.255.0", server="192.168.99.1")
    result = client.obtain()
    assert result.returncode == 0, result.stderr
    assert "DHCPNAK" in result.stderr
    _, address = client.wait_event(["BOUND"])
    assert lease_at(app, address)["state"] == "bound"
    counters = server.counters.snapshot()
    assert counters["naks"] == 1 and counters["requests_init_reboot"] == 1
