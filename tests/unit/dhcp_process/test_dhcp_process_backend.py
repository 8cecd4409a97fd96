"""`ProcessLeaseBackend` on the embedded default: every DHCP exchange goes through the
`dhcp_lease` process, the lease table and the in-process worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.dhcp.backend import Binding, Client, Refusal
from app.dhcp.process_backend import ProcessLeaseBackend
from app.extensions import db
from app.models import AuditEntry, Lease, ProcessInstance, ServiceJob
from app.services import dhcp
from app.services.dispatch import WAITERS

MakeClient = Callable[..., Client]


def instance_of(app: Flask, client: Client) -> dict[str, Any]:
    with app.app_context():
        row = db.session.execute(select(ProcessInstance).where(
            ProcessInstance.client_id == dhcp.client_key(client.client_id))
            .order_by(ProcessInstance.id.desc())).scalars().first()
        assert row is not None
        return {"id": row.id, "state": row.state, "outcome": row.outcome,
                "process": row.definition.key, "lease_id": row.lease_id}


def lease_of(app: Flask, client: Client) -> dict[str, Any]:
    with app.app_context():
        row = db.session.execute(select(Lease).where(
            Lease.client_id == dhcp.client_key(client.client_id))
            .order_by(Lease.id.desc())).scalars().first()
        assert row is not None
        return {"id": row.id, "state": row.state, "hwaddr": row.hwaddr,
                "expires_at": row.expires_at, "instance_id": row.instance_id}


def wait_instance(app: Flask, client: Client, state: str) -> dict[str, Any]:
    instance_id = instance_of(app, client)["id"]

    def reached() -> bool:
        return instance_of(app, client)["state"] == state

    assert WAITERS.wait(instance_id, reached, 20), instance_of(app, client)
    return instance_of(app, client)


def count(app: Flask, model: Any) -> int:
    with app.app_context():
        return int(db.session.execute(select(func.count()).select_from(model)).scalar_one())


def bind(backend: ProcessLeaseBackend, client: Client) -> Binding:
    offer = backend.offer(client, None, time.time())
    assert isinstance(offer, Binding) and offer.state == "offered"
    ack = backend.commit(client, offer.address, time.time())
    assert isinstance(ack, Binding) and ack.state == "bound"
    assert ack.address == offer.address
    return ack


@pytest.mark.parametrize("run_ahead", [True, False], ids=["run-ahead", "via-worker"])
def test_discover_request_binds_through_the_process(dhcp_app, make_client, run_ahead):
    backend = ProcessLeaseBackend(dhcp_app, patience=20.0, run_ahead=run_ahead)
    client = make_client(1)
    ack = bind(backend, client)
    assert ack.lease_time == 600 and ack.client_id == client.client_id
    lease = lease_of(dhcp_app, client)
    assert lease["state"] == "bound" and lease["hwaddr"] == "02:00:00:00:00:01"
    instance = instance_of(dhcp_app, client)
    assert instance["process"] == "dhcp_lease" and instance["state"] == "waiting"
    assert instance["lease_id"] == lease["id"] == lease_of(dhcp_app, client)["id"]
    assert backend.lookup(client, time.time()).state == "bound"


def test_a_retransmitted_discover_gets_the_same_offer_from_the_same_instance(
        dhcp_app, backend, make_client):
    client = make_client(2)
    first = backend.offer(client, None, time.time())
    again = backend.offer(client, None, time.time())
    assert first is not None and again is not None and again.address == first.address
    assert count(dhcp_app, ProcessInstance) == 1


def test_requested_address_is_honoured_when_free(backend, make_client):
    offer = backend.offer(make_client(3), "10.66.0.13", time.time())
    assert offer is not None and offer.address == "10.66.0.13"


def test_a_request_without_an_offer_reserves_that_address_and_no_other(
        dhcp_app, backend, make_client):
    """A REQUEST this server offered nothing for (the DISCOVER went to another server)
    binds the address it names; its instance may reserve no other one meanwhile."""
    client = make_client(5)
    ack = backend.commit(client, "10.66.0.14", time.time())
    assert isinstance(ack, Binding) and ack.address == "10.66.0.14"
    with dhcp_app.app_context():
        instance = db.session.get(ProcessInstance, instance_of(dhcp_app, client)["id"])
        assert instance is not None and instance.request["exact"] is True


@pytest.mark.parametrize(("address", "why"), [
    ("10.66.0.14", "held by another client"), ("10.66.0.200", "outside the pool")])
def test_an_exact_reservation_is_refused_rather_than_moved(
        dhcp_app, backend, make_client, address, why):
    from app.operations import BusinessError
    from app.services import leases
    from app.services.uow import unit_of_work

    bind_to = backend.commit(make_client(6), "10.66.0.14", time.time())
    assert isinstance(bind_to, Binding)
    before = count(dhcp_app, Lease)
    with dhcp_app.app_context(), unit_of_work(), pytest.raises(BusinessError) as refused:
        leases.reserve(subnet="10.66.0.0/24", client_id="01:02:00:00:00:00:07",
                       requested_ip=address, exact=True)
    assert refused.value.code == "address_unavailable", why
    assert address in refused.value.message
    assert count(dhcp_app, Lease) == before  # nothing held, not even for a moment
    with dhcp_app.app_context(), unit_of_work():  # without `exact`: another address
        other = leases.reserve(subnet="10.66.0.0/24", client_id="01:02:00:00:00:00:07",
                               requested_ip=address)
        assert other.address != address


def test_renewal_takes_the_fast_path(dhcp_app, backend, make_client):
    client = make_client(4)
    ack = bind(backend, client)
    before = lease_of(dhcp_app, client)["expires_at"]
    jobs = count(dhcp_app, ServiceJob)
    renewed = backend.renew(client, ack.address, time.time() + 1)
    assert isinstance(renewed, Binding) and renewed.state == "bound"
    assert lease_of(dhcp_app, client)["expires_at"] > before
    # No job for a worker: the expiry moved in the server's own transaction.
    assert count(dhcp_app, ServiceJob) == jobs
    assert instance_of(dhcp_app, client)["state"] == "waiting"
    with dhcp_app.app_context():
        events = [e.kind for e in db.session.execute(select(AuditEntry)).scalars()]
    assert "instance.message.lease_renew" in events and "lease.renew" in events


def test_release_ends_the_instance_and_frees_the_address(dhcp_app, backend, make_client):
    client = make_client(5)
    ack = bind(backend, client)
    backend.release(client, ack.address, time.time())
    instance = wait_instance(dhcp_app, client, "completed")
    assert instance["outcome"]["reason"] == "released"
    assert lease_of(dhcp_app, client)["state"] == "released"
    assert backend.lookup(client, time.time()).state == "released"


def test_decline_frees_with_reason_decline_and_alerts_the_admin(dhcp_app, backend, make_client):
    client = make_client(6)
    ack = bind(backend, client)
    backend.decline(client, ack.address, time.time())
    wait_instance(dhcp_app, client, "completed")
    assert lease_of(dhcp_app, client)["state"] == "declined"
    with dhcp_app.app_context():
        alerts = db.session.execute(select(AuditEntry).where(
            AuditEntry.kind == "process.dhcp.decline")).scalars().all()
        assert len(alerts) == 1 and ack.address in alerts[0].subject


def test_someone_elses_address_cannot_be_declined_released_or_renewed(
        dhcp_app, backend, make_client):
    owner, other = make_client(7), make_client(8)
    ack = bind(backend, owner)
    backend.decline(other, ack.address, time.time())
    backend.release(other, ack.address, time.time())
    assert isinstance(backend.renew(other, ack.address, time.time()), Refusal)
    assert isinstance(backend.commit(other, ack.address, time.time()), Refusal)
    assert lease_of(dhcp_app, owner)["state"] == "bound"


def test_an_offer_taken_elsewhere_is_given_back(dhcp_app, backend, make_client):
    client = make_client(9)
    assert backend.offer(client, None, time.time()) is not None
    backend.forget_offer(client, time.time())
    instance = wait_instance(dhcp_app, client, "completed")
    assert instance["outcome"]["reason"] == "offer_abandon"
    assert lease_of(dhcp_app, client)["state"] == "abandoned"


def test_an_offer_not_taken_in_time_is_abandoned_by_its_timer(dhcp_app, make_client):
    from lf_support import settle
    from workers.jobs import tick

    backend = ProcessLeaseBackend(dhcp_app, patience=20.0, offer_lifetime=1.0)
    client = make_client(10)
    assert backend.offer(client, None, time.time()) is not None

    def ticked_away() -> bool:
        with dhcp_app.app_context():
            tick()  # what the ticker of `leaseflow dhcp` / `leaseflow up` does
        return instance_of(dhcp_app, client)["state"] == "completed"

    settle(ticked_away, 20, "the offer timer")
    assert instance_of(dhcp_app, client)["outcome"]["reason"] == "offer_timeout"
    settle(lambda: lease_of(dhcp_app, client)["state"] == "abandoned", 20, "abandon")


def test_a_client_back_with_its_old_address_gets_it_again(dhcp_app, backend, make_client):
    client = make_client(11)
    ack = bind(backend, client)
    backend.release(client, ack.address, time.time())
    wait_instance(dhcp_app, client, "completed")
    again = backend.renew(client, ack.address, time.time())  # INIT-REBOOT
    assert isinstance(again, Binding) and again.address == ack.address
    assert lease_of(dhcp_app, client)["state"] == "bound"
    assert count(dhcp_app, ProcessInstance) == 2


def test_an_unknown_client_gets_silence_not_an_answer(backend, make_client):
    assert backend.renew(make_client(12), "10.66.0.12", time.time()) is None


def test_an_exhausted_pool_means_silence(dhcp_app, backend, make_client):
    clients = [make_client(20 + n) for n in range(6)]  # the pool holds 5
    offers = [backend.offer(c, None, time.time()) for c in clients]
    assert sum(o is not None for o in offers) == 5
    assert offers[-1] is None
    assert instance_of(dhcp_app, clients[-1])["outcome"]["reason"] == "pool_exhausted"


class NoWorker:
    """A transport whose worker never comes: jobs stay queued (a worker down, a slow queue)."""

    def send(self, job_ids: list[int]) -> None:
        pass

    def notify(self, instance_ids: list[int]) -> None:
        WAITERS.changed(instance_ids)

    def close(self) -> None:
        pass


def test_a_process_not_ready_within_patience_gets_no_reply(dhcp_app, make_client):
    from app.services import dispatch

    dispatch.install(NoWorker())  # the fixture's teardown uninstalls it
    backend = ProcessLeaseBackend(dhcp_app, patience=0.3, run_ahead=False)
    client = make_client(30)
    assert backend.offer(client, None, time.time()) is None
    # Nothing is lost: the instance waits with its reservation job queued.
    assert instance_of(dhcp_app, client)["state"] == "waiting"
    with dhcp_app.app_context():
        job = db.session.execute(select(ServiceJob)).scalars().one()
        assert (job.operation, job.status) == ("ipam.reserve", "queued")


@pytest.mark.parametrize("workers", [1, 4])
def test_two_servers_on_one_database_never_hand_out_one_address_twice(
        tmp_path, dhcp_app, make_client, workers):
    """Two apps (two engines, as two server processes would have) on one database file,
    clients racing for a pool smaller than their number."""
    from concurrent.futures import ThreadPoolExecutor

    from lf_support import make_app

    other_app = make_app(tmp_path)  # same file as dhcp_app (make_app names it per tmp_path)
    # One server runs the process steps itself, the other through the worker queue.
    backends = [ProcessLeaseBackend(dhcp_app, patience=20.0),
                ProcessLeaseBackend(other_app, patience=20.0, run_ahead=False)]
    clients = [make_client(40 + n) for n in range(8)]

    def dora(n: int) -> str | None:
        # Each client's DISCOVER reaches one server and its REQUEST the other.
        offer = backends[n % 2].offer(clients[n], None, time.time())
        if offer is None:
            return None
        ack = backends[(n + 1) % 2].commit(clients[n], offer.address, time.time())
        return ack.address if isinstance(ack, Binding) else None

    with ThreadPoolExecutor(workers) as pool:
        got = [a for a in pool.map(dora, range(len(clients))) if a is not None]
    assert len(got) == len(set(got)) == 5
    with dhcp_app.app_context():
        holders = db.session.execute(select(Lease.address, func.count()).where(
            Lease.state.in_(["offered", "bound"])).group_by(Lease.address)).all()
    assert all(n == 1 for _, n in holders) and len(holders) == 5


def test_a_released_client_is_offered_its_previous_address(dhcp_app, backend, make_client):
    client = make_client(13)
    ack = bind(backend, client)
    backend.release(client, ack.address, time.time())
    wait_instance(dhcp_app, client, "completed")
    offer = backend.offer(client, None, time.time())  # a new DISCOVER, a new instance
    assert offer is not None and offer.address == ack.address


def test_on_sqlite_the_backends_of_one_app_take_turns_for_the_database(
        dhcp_app, backend, make_client, monkeypatch):
    """Every transaction runs holding the app's one turn, so the server's threads queue on
    a lock instead of polling SQLite's busy handler."""
    import threading

    other = ProcessLeaseBackend(dhcp_app, patience=20.0)
    turn = dhcp_app.extensions["leaseflow_dhcp_turn"]
    assert backend._turn is other._turn is turn

    def free_for_another_thread() -> bool:
        free: list[bool] = []

        def probe() -> None:
            free.append(turn.acquire(blocking=False))
            if free[0]:
                turn.release()

        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
        return free[0]

    seen: list[bool] = []
    latest = dhcp.latest

    def observed_latest(*args: Any) -> Any:
        seen.append(free_for_another_thread())
        return latest(*args)

    monkeypatch.setattr(dhcp, "latest", observed_latest)
    assert other.lookup(make_client(50), time.time()) is None
    assert seen == [False]  # inside the database, the turn was taken
    assert free_for_another_thread()  # and given back after
