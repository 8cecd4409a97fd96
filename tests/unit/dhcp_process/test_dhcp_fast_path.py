"""The fast DORA path (`leaseflow dhcp --dora fast`): OFFER and ACK from group-committed
transactions, the `dhcp_lease` instance follows and governs the rest of the lease's life."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from test_dhcp_process_backend import bind as dora
from test_dhcp_process_backend import count, instance_of, lease_of, wait_instance

from app.dhcp.backend import Binding, Client, Refusal
from app.dhcp.fast_backend import FastLeaseBackend
from app.errors import LeaseflowError
from app.extensions import db
from app.ipam.addresses import parse_address
from app.models import AuditEntry, Lease, ProcessInstance, ServiceJob
from app.services import dhcp
from lf_support import running_app

MakeClient = Callable[..., Client]
CIDR = "10.66.0.0/24"  # the subnet of this directory's dhcp_app fixture


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def dhcp_app(request: pytest.FixtureRequest, tmp_path: Path,
             add_subnet: Callable[[Flask], Flask]) -> Iterator[Flask]:
    """Each test on the embedded default and on PostgreSQL, where the fast path sends its
    statements as plain SQL."""
    if request.param == "sqlite":
        yield add_subnet(request.getfixturevalue("app"))
        return
    with running_app(tmp_path, database_url=request.getfixturevalue("pg_database")) as pg_app:
        yield add_subnet(pg_app)


@pytest.fixture
def fast(dhcp_app: Flask) -> Iterator[FastLeaseBackend]:
    backend = FastLeaseBackend(dhcp_app, patience=20.0, offer_lifetime=30.0)
    yield backend
    backend.close()


def audit_kinds(app: Flask) -> list[str]:
    with app.app_context():
        return [e.kind for e in db.session.execute(
            select(AuditEntry).order_by(AuditEntry.seq)).scalars()]


def commit_entries(app: Flask) -> list[dict[str, Any]]:
    """The data of the ledger's `lease.commit` entries, in order."""
    with app.app_context():
        return [json.loads(payload)["data"] for payload in db.session.execute(
            select(AuditEntry.payload).where(AuditEntry.kind == "lease.commit")
            .order_by(AuditEntry.seq)).scalars()]


def test_an_offer_needs_no_instance_and_the_ack_stores_one_that_adopts_the_binding(
        dhcp_app, fast, make_client):
    client = make_client(1)
    offer = fast.offer(client, None, time.time())
    assert offer is not None and offer.lease_time == 600
    # An offer is held in the server's memory, as Kea holds its offers: no row, no instance.
    assert count(dhcp_app, ProcessInstance) == 0 and count(dhcp_app, Lease) == 0
    assert fast.book.held(CIDR, dhcp.client_key(client.client_id), time.monotonic()) \
        is not None
    ack = fast.commit(client, offer.address, time.time())
    assert isinstance(ack, Binding) and ack.state == "bound" and ack.lease_time == 600
    lease = lease_of(dhcp_app, client)
    assert lease["state"] == "bound" and lease["instance_id"] is not None
    # The instance is stored with the binding, already waiting where its engine run would
    # leave it (the binding adopted, stamped from the engine's snapshot): no job, no worker.
    instance = instance_of(dhcp_app, client)
    assert instance["state"] == "waiting" and instance["process"] == "dhcp_lease"
    assert instance["lease_id"] == lease["id"] == lease_of(dhcp_app, client)["id"]
    # Each names the other: on PostgreSQL the lease's INSERT drew the instance's id.
    assert lease["instance_id"] == instance["id"]
    assert count(dhcp_app, ServiceJob) == 0
    # One ledger entry for the binding: the lease's commit names its instance.
    kinds = audit_kinds(dhcp_app)
    assert "instance.start" not in kinds and "lease.reserve" not in kinds
    [data] = commit_entries(dhcp_app)
    assert data["instance_id"] == instance["id"] and data["lease_id"] == lease["id"]
    assert data["process"].startswith("dhcp_lease/v") and data["state"] == "bound"


def test_an_instance_is_stored_as_a_name_for_the_snapshot_and_read_whole(
        dhcp_app, fast, make_client):
    """Its row names the engine's snapshot (under 200 bytes, not ~6 kB of workflow); read,
    it is the whole workflow with its own values, the binding adopted."""
    from app.engine import runtime
    from app.services import instances

    client = make_client(140)
    ack = dora(fast, client)
    with dhcp_app.app_context():
        row = db.session.execute(select(ProcessInstance).where(
            ProcessInstance.client_id == dhcp.client_key(client.client_id))).scalar_one()
        assert row.workflow.startswith(runtime.DEFERRED) and len(row.workflow) < 200
        shown = instances.describe(row, with_tasks=True)
        data = runtime.data_of(instances.workflow_of(row))
    states = {t["element"]: t["state"] for t in shown["tasks"]}
    assert states["adopt_binding"] == "COMPLETED"
    assert data["lease_request"]["instance_id"] == row.id
    assert data["lease_request"]["requested_ip"] == ack.address


def test_a_retransmitted_discover_gets_the_same_offer(dhcp_app, fast, make_client):
    client = make_client(2)
    first = fast.offer(client, None, time.time())
    again = fast.offer(client, None, time.time())
    assert first is not None and again is not None and again.address == first.address
    assert len(fast.book) == 1


def test_the_requested_address_is_honoured_when_free(fast, make_client):
    offer = fast.offer(make_client(3), "10.66.0.13", time.time())
    assert offer is not None and offer.address == "10.66.0.13"


def test_release_reaches_the_following_instance(dhcp_app, fast, make_client):
    client = make_client(4)
    ack = dora(fast, client)
    # Whether or not a worker started the instance yet, the RELEASE is its message.
    fast.release(client, ack.address, time.time())
    instance = wait_instance(dhcp_app, client, "completed")
    assert instance["outcome"]["reason"] == "released"
    assert lease_of(dhcp_app, client)["state"] == "released"


def test_a_renewal_moves_the_expiry_in_the_database_only(dhcp_app, fast, make_client):
    client = make_client(5)
    ack = dora(fast, client)
    wait_instance(dhcp_app, client, "waiting")
    before = lease_of(dhcp_app, client)["expires_at"]
    renewed = fast.renew(client, ack.address, time.time())
    assert isinstance(renewed, Binding) and renewed.state == "bound"
    assert lease_of(dhcp_app, client)["expires_at"] > before
    kinds = audit_kinds(dhcp_app)
    assert "lease.renew" in kinds and "instance.message.lease_renew" not in kinds


def test_a_bound_client_starting_over_renews_like_a_renewal(dhcp_app, fast, make_client):
    """A client that DISCOVERs and REQUESTs again while bound (a reboot, a lost ACK, 1,000
    perfdhcp clients cycling) gets its lease again: the expiry moves in the one UPDATE of
    a renewal, and its instance is not told, as for a renewal."""
    client = make_client(6)
    ack = dora(fast, client)
    wait_instance(dhcp_app, client, "waiting")
    before = lease_of(dhcp_app, client)["expires_at"]
    again = dora(fast, client)
    assert again.address == ack.address and again.state == "bound"
    assert lease_of(dhcp_app, client)["expires_at"] > before
    assert count(dhcp_app, Lease) == 1 and count(dhcp_app, ProcessInstance) == 1
    kinds = audit_kinds(dhcp_app)
    assert "lease.renew" in kinds and "instance.message.lease_renew" not in kinds


def test_the_expiry_timer_follows_a_renewal_then_lets_the_lease_go(dhcp_app, make_client):
    """A renewal the instance never heard of: its timer asks the database (ipam.lease),
    follows the new expiry, and expires the lease once no renewal came."""
    from sqlalchemy import update

    from app.models import Subnet
    from lf_support import settle
    from workers.jobs import tick

    with dhcp_app.app_context():  # a 2 s lease: below what the API allows, for the timer
        db.session.execute(update(Subnet).values(lease_time=2))
        db.session.commit()
    backend = FastLeaseBackend(dhcp_app, patience=20.0)
    try:
        client = make_client(70)
        ack = dora(backend, client)
        wait_instance(dhcp_app, client, "waiting")
        assert isinstance(backend.renew(client, ack.address, time.time()), Binding)

        def history() -> list[str]:
            with dhcp_app.app_context():
                tick()
            return [k for k in audit_kinds(dhcp_app) if k.startswith("lease.")]

        settle(lambda: "lease.expire" in history(), 30, "the expiry after the renewal")
        kinds = history()
        assert kinds.index("lease.renew") < kinds.index("lease.expire")
        assert lease_of(dhcp_app, client)["state"] == "expired"
        with dhcp_app.app_context():
            checks = db.session.execute(select(func.count()).select_from(ServiceJob).where(
                ServiceJob.operation == "ipam.lease")).scalar_one()
        assert checks == 2  # once it followed the renewal, once it let the lease go
    finally:
        backend.close()


def test_someone_elses_address_is_refused(dhcp_app, fast, make_client):
    owner, other = make_client(6), make_client(7)
    ack = dora(fast, owner)
    assert isinstance(fast.commit(other, ack.address, time.time()), Refusal)
    assert isinstance(fast.commit(other, "10.77.0.5", time.time()), Refusal)  # not our pool
    assert lease_of(dhcp_app, owner)["state"] == "bound"


def test_a_request_without_our_offer_binds_the_address_if_free(dhcp_app, fast, make_client):
    client = make_client(8)
    ack = fast.commit(client, "10.66.0.12", time.time())  # e.g. INIT-REBOOT after a restart
    assert isinstance(ack, Binding) and ack.address == "10.66.0.12" and ack.state == "bound"
    wait_instance(dhcp_app, client, "waiting")


def test_an_exhausted_pool_means_silence_and_no_instance(dhcp_app, fast, make_client):
    clients = [make_client(20 + n) for n in range(6)]  # the pool holds 5
    offers = [fast.offer(c, None, time.time()) for c in clients]
    assert sum(o is not None for o in offers) == 5 and offers[-1] is None
    assert count(dhcp_app, ProcessInstance) == 0 and count(dhcp_app, Lease) == 0


def test_an_offer_holds_its_address_for_the_offer_lifetime_only(dhcp_app, make_client):
    backend = FastLeaseBackend(dhcp_app, patience=20.0, offer_lifetime=30.0)
    try:
        pool = [make_client(50 + n) for n in range(5)]  # the pool holds 5
        offers = [backend.offer(c, None, time.time()) for c in pool]
        assert len({o.address for o in offers if o is not None}) == 5
        assert backend.offer(make_client(60), None, time.time()) is None  # all held
        # The book's clock moved past the offer lifetime: the addresses are free again.
        later = time.monotonic() + 31
        assert all(backend.book.held(CIDR, dhcp.client_key(c.client_id), later) is None
                   for c in pool)
        first = parse_address(offers[0].address, field="address")
        assert backend.book.holder(CIDR, first, time.monotonic()) is not None
        assert backend.book.holder(CIDR, first, later) is None
    finally:
        backend.close()


def test_an_offer_taken_elsewhere_frees_its_address(dhcp_app, fast, make_client):
    client = make_client(61)
    assert fast.offer(client, None, time.time()) is not None
    fast.forget_offer(client, time.time())
    assert len(fast.book) == 0


def test_a_request_for_an_address_someone_got_meanwhile_is_refused(
        dhcp_app, fast, make_client):
    # Another server sharing the database bound the address this server offered.
    first, second = make_client(62), make_client(63)
    offer = fast.offer(first, None, time.time())
    assert offer is not None
    ack = fast.commit(second, offer.address, time.time())  # e.g. through the other server
    assert isinstance(ack, Binding)
    refused = fast.commit(first, offer.address, time.time())
    assert isinstance(refused, Refusal)
    assert lease_of(dhcp_app, second)["state"] == "bound"


def test_concurrent_clients_racing_for_a_small_pool_never_share_an_address(
        dhcp_app, fast, make_client):
    clients = [make_client(40 + n) for n in range(8)]  # 8 clients, 5 addresses

    def exchange(client: Client) -> str | None:
        offer = fast.offer(client, None, time.time())
        if offer is None:
            return None
        ack = fast.commit(client, offer.address, time.time())
        return ack.address if isinstance(ack, Binding) else None

    with ThreadPoolExecutor(8) as pool:
        got = [a for a in pool.map(exchange, clients) if a is not None]
    assert len(got) == len(set(got)) == 5
    with dhcp_app.app_context():
        holders = db.session.execute(select(Lease.address, func.count()).where(
            Lease.state.in_(["offered", "bound"])).group_by(Lease.address)).all()
    assert len(holders) == 5 and all(n == 1 for _, n in holders)


def test_a_process_that_cannot_adopt_a_binding_is_refused_at_start(dhcp_app):
    from app.services import definitions
    from app.services.uow import unit_of_work

    shipped = (definitions.PROCESSES_DIR / "dhcp_lease.bpmn").read_text()
    with dhcp_app.app_context(), unit_of_work():
        definitions.store(shipped.replace("adopt_binding", "take_over"), author="test",
                          activate=True)
    with pytest.raises(LeaseflowError, match="cannot follow leases bound on the fast"):
        FastLeaseBackend(dhcp_app, patience=1.0)


def test_a_diagram_that_works_after_adopting_gets_its_instances_started_by_a_worker(
        dhcp_app, make_client):
    """An admin's version with a service task after the adoption: no snapshot can stand for
    it, so each instance is stored with an engine.start job and a worker runs it."""
    from app.services import definitions
    from app.services.uow import unit_of_work

    shipped = (definitions.PROCESSES_DIR / "dhcp_lease.bpmn").read_text()
    step = '''
    <bpmn:serviceTask id="note_adoption" name="Note the adoption">
      <bpmn:extensionElements>
        <spiffworkflow:serviceTaskOperator id="ledger.append" resultVariable="noted">
          <spiffworkflow:parameters>
            <spiffworkflow:parameter id="kind" type="str" value="'dhcp.adopted'"/>
            <spiffworkflow:parameter id="subject" type="str" value="lease_request['subnet']"/>
            <spiffworkflow:parameter id="data" type="dict"
              value="{'lease_id': reservation['lease_id']}"/>
          </spiffworkflow:parameters>
          <spiffworkflow:retry retries="1" backoff_base="1"/>
        </spiffworkflow:serviceTaskOperator>
      </bpmn:extensionElements>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f_noted_bound" sourceRef="note_adoption" targetRef="bound"/>
  </bpmn:process>'''
    variant = shipped.replace(
        '<bpmn:sequenceFlow id="f_adopt_bound" sourceRef="adopt_binding" targetRef="bound"/>',
        '<bpmn:sequenceFlow id="f_adopt_bound" sourceRef="adopt_binding" '
        'targetRef="note_adoption"/>').replace("\n  </bpmn:process>", step, 1)
    assert variant != shipped
    with dhcp_app.app_context(), unit_of_work():
        definitions.store(variant, author="test", activate=True)
    backend = FastLeaseBackend(dhcp_app, patience=20.0)
    try:
        client = make_client(80)
        dora(backend, client)
        wait_instance(dhcp_app, client, "waiting")
        with dhcp_app.app_context():
            operations = sorted(db.session.execute(select(ServiceJob.operation)).scalars())
        assert operations == ["engine.start", "ledger.append"]
        kinds = audit_kinds(dhcp_app)
        assert "process.dhcp.adopted" in kinds  # ledger.append's kind
        # Started by a worker, the instance is still named by the lease's commit alone.
        assert "instance.start" not in kinds
        [data] = commit_entries(dhcp_app)
        assert data["instance_id"] == instance_of(dhcp_app, client)["id"]
    finally:
        backend.close()


def test_a_group_of_offers_reads_outside_a_transaction_and_bindings_inside_one(dhcp_app):
    """Offers write nothing: on PostgreSQL their reads run in autocommit (no BEGIN, no
    COMMIT); a group with a REQUEST is one transaction as before."""
    from psycopg.pq import TransactionStatus

    from app.ipam.offers import OfferBook
    from app.services import dora as fast_dora
    from app.services import plain_sql
    from app.services.uow import unit_of_work

    postgresql = not str(dhcp_app.config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite")
    book = OfferBook()
    with dhcp_app.app_context():
        with unit_of_work():
            [offered] = fast_dora.run([fast_dora.Discover(cidr=CIDR, client_id="01:aa")],
                                      book=book, actor="test")
            if postgresql:
                status = plain_sql.connection().info.transaction_status
                assert status == TransactionStatus.IDLE
        assert isinstance(offered, fast_dora.Offered)
        with unit_of_work():
            [bound] = fast_dora.run([fast_dora.Request(cidr=CIDR, client_id="01:aa",
                                                       address=offered.address)],
                                    book=book, actor="test")
            if postgresql:
                status = plain_sql.connection().info.transaction_status
                assert status == TransactionStatus.INTRANS
        assert isinstance(bound, dhcp.LeaseView) and bound.state == "bound"


def test_each_lease_of_a_group_names_its_own_instance(dhcp_app):
    """A group of bindings, one of them for an address another of the group got first:
    every bound lease names the instance stored for it (on PostgreSQL the leases' INSERT
    draws the ids), and the lost one stores none."""
    from app.ipam.offers import OfferBook
    from app.services import dora as fast_dora
    from app.services.uow import unit_of_work

    book = OfferBook()
    clients = [f"01:bb:{n:02x}" for n in range(4)]
    with dhcp_app.app_context():
        with unit_of_work():
            offers = fast_dora.run([fast_dora.Discover(cidr=CIDR, client_id=c)
                                    for c in clients[:3]], book=book, actor="test")
        asks = [fast_dora.Request(cidr=CIDR, client_id=c, address=o.address)
                for c, o in zip(clients[:3], offers, strict=True)]
        # The fourth client asks for the first one's address in the same group.
        asks.append(fast_dora.Request(cidr=CIDR, client_id=clients[3],
                                      address=offers[0].address))
        with unit_of_work():
            outcomes = fast_dora.run(asks, book=book, actor="test")
        assert [o.state for o in outcomes[:3]] == ["bound"] * 3
        assert isinstance(outcomes[3], fast_dora.Refused)
        rows = db.session.execute(
            select(Lease.id, Lease.instance_id, ProcessInstance.lease_id)
            .join(ProcessInstance, ProcessInstance.id == Lease.instance_id)
            .where(Lease.client_id.in_(clients))).all()
        assert len(rows) == 3 and all(lease == named for lease, _, named in rows)
        assert len({instance for _, instance, _ in rows}) == 3
        assert [o.instance_id for o in outcomes[:3]] == [
            next(i for lease, i, _ in rows if lease == o.lease_id) for o in outcomes[:3]]
        assert db.session.execute(select(func.count()).select_from(ProcessInstance).where(
            ProcessInstance.client_id == clients[3])).scalar() == 0


# --- DISCOVERs from memory: the lease index ----------------------------------------------


@pytest.fixture
def behind(dhcp_app: Flask) -> Iterator[FastLeaseBackend]:
    """A fast backend whose lease index follows the ledger only when the test steps it."""
    backend = FastLeaseBackend(dhcp_app, patience=20.0, offer_lifetime=30.0,
                               follow_every=3600.0)
    yield backend
    backend.close()


def bound_elsewhere(app: Flask, clients: list[Client]) -> list[Binding]:
    """Leases bound by another server sharing the database."""
    other = FastLeaseBackend(app, patience=20.0)
    try:
        return [dora(other, client) for client in clients]
    finally:
        other.close()


def test_a_discover_is_answered_from_memory(fast, make_client, monkeypatch):
    from app.services import dora as fast_dora

    def no_database(*args: object, **kwargs: object) -> None:
        raise AssertionError("a DISCOVER read the database")

    monkeypatch.setattr(fast_dora, "offer_many", no_database)
    client = make_client(81)
    offer = fast.offer(client, None, time.time())
    assert offer is not None and offer.state == "offered" and offer.lease_time == 600
    assert fast.book.held(CIDR, dhcp.client_key(client.client_id), time.monotonic()) == \
        parse_address(offer.address, field="address")


def test_the_index_follows_bindings_and_releases_made_elsewhere(
        dhcp_app, behind, make_client):
    clients = [make_client(90 + n) for n in range(4)]  # 4 of the pool's 5 addresses
    bound = bound_elsewhere(dhcp_app, clients)
    taken = {parse_address(b.address, field="address") for b in bound}
    assert not any(behind.index.holder(CIDR, a) for a in taken)  # not followed yet
    behind._follower.step()
    assert all(behind.index.holder(CIDR, a) for a in taken)
    # A new client gets the one free address; a client bound elsewhere, its own lease.
    free = behind.offer(make_client(95), None, time.time())
    assert free is not None and parse_address(free.address, field="address") not in taken
    own = behind.offer(clients[0], None, time.time())
    assert own is not None and own.address == bound[0].address
    # Its RELEASE (through its instance) frees the address once the index follows.
    behind.release(clients[1], bound[1].address, time.time())
    wait_instance(dhcp_app, clients[1], "completed")
    behind._follower.step()
    assert behind.index.holder(CIDR, parse_address(bound[1].address, field="address")) is None
    assert behind.index.previous(CIDR, dhcp.client_key(clients[1].client_id)) == \
        parse_address(bound[1].address, field="address")


def test_an_offer_from_an_index_behind_the_ledger_is_refused_not_bound_twice(
        dhcp_app, behind, make_client):
    bound = bound_elsewhere(dhcp_app, [make_client(100 + n) for n in range(5)])  # all 5
    late = make_client(110)
    offer = behind.offer(late, None, time.time())  # the index has not seen them
    assert offer is not None and offer.address in {b.address for b in bound}
    assert isinstance(behind.commit(late, offer.address, time.time()), Refusal)
    # The NAK'd client's offer is dropped; once the index follows, the pool is full.
    assert behind.book.held(CIDR, dhcp.client_key(late.client_id), time.monotonic()) is None
    behind._follower.step()
    assert behind.offer(late, None, time.time()) is None
    with dhcp_app.app_context():
        holders = db.session.execute(select(Lease.address, func.count()).where(
            Lease.state.in_(["offered", "bound"])).group_by(Lease.address)).all()
    assert len(holders) == 5 and all(n == 1 for _, n in holders)


def test_a_held_offer_of_an_address_someone_got_meanwhile_is_not_offered_again(
        dhcp_app, behind, make_client):
    first = make_client(111)
    offer = behind.offer(first, None, time.time())
    assert offer is not None
    other = make_client(112)  # another server's client REQUESTs the same address
    fast_other = FastLeaseBackend(dhcp_app, patience=20.0)
    try:
        assert isinstance(fast_other.commit(other, offer.address, time.time()), Binding)
    finally:
        fast_other.close()
    behind._follower.step()
    again = behind.offer(first, None, time.time())  # its retransmitted DISCOVER
    assert again is not None and again.address != offer.address


def test_following_the_ledger_moves_past_every_entry_in_batches(
        dhcp_app, behind, make_client, monkeypatch):
    from app.services import lease_index
    from app.services.uow import unit_of_work

    bound_elsewhere(dhcp_app, [make_client(120), make_client(121)])
    with dhcp_app.app_context(), unit_of_work():  # a lease entry that names no lease
        from app.services import uow

        uow.record(kind="lease.note", subject=f"{CIDR}/10.66.0.10", actor="test",
                   payload={"note": "no lease id"})
    monkeypatch.setattr(lease_index, "BATCH", 2)
    seq = behind.index.seq
    with dhcp_app.app_context():
        read = lease_index.catch_up(behind.index)
        head = db.session.execute(select(func.max(AuditEntry.seq))).scalar_one()
    assert read == head - seq and behind.index.seq == head
    assert len(behind.index) == 2


def test_a_servers_own_entries_and_another_writers_meet_in_the_index_in_ledger_order(
        dhcp_app, behind, make_client, monkeypatch):
    from app.services import lease_index

    mine = [dora(behind, make_client(170))]
    theirs = bound_elsewhere(dhcp_app, [make_client(171)])
    # Its index has not seen theirs (5 addresses): it asks for one neither holds.
    free = next(a for a in ("10.66.0.10", "10.66.0.11", "10.66.0.12")
                if a not in {mine[0].address, theirs[0].address})
    offer = behind.offer(make_client(172), free, time.time())
    assert offer is not None and offer.address == free
    ack = behind.commit(make_client(172), free, time.time())
    assert isinstance(ack, Binding)
    mine.append(ack)
    monkeypatch.setattr(lease_index, "BATCH", 1)  # every batch full: own runs wait for it
    behind._follower.step()
    with dhcp_app.app_context():
        head = db.session.execute(select(func.max(AuditEntry.seq))).scalar_one()
    assert behind.index.seq == head and len(behind.index) == 3
    for n, binding in zip((170, 172, 171), mine + theirs, strict=True):
        holder = behind.index.holder(CIDR, parse_address(binding.address, field="address"))
        assert holder is not None and holder.state == "bound"
        assert holder.client_id == dhcp.client_key(make_client(n).client_id)
    if behind._follower._own is not None:  # PostgreSQL: nothing of its own is kept
        assert behind._follower._own.after(0) == []


@pytest.mark.integration
def test_on_postgresql_a_follower_reads_back_only_what_others_wrote(
        tmp_path, add_subnet, make_client, pg_database, monkeypatch):
    from app.services import lease_index

    read: list[Any] = []
    real = lease_index._entries

    def spy(*args: Any) -> list[Any]:
        rows = real(*args)
        read.extend(row[1] for row in rows if row[6] is None)  # the lease entries' subjects
        return rows

    with running_app(tmp_path, database_url=pg_database) as pg_app:
        app = add_subnet(pg_app)
        backend = FastLeaseBackend(app, patience=20.0, follow_every=3600.0)
        try:
            [mine] = [dora(backend, make_client(180))]
            [theirs] = bound_elsewhere(app, [make_client(181)])
            own = backend._follower._own
            assert own is not None and len(own.after(backend.index.seq)) == 1  # handed over
            monkeypatch.setattr(lease_index, "_entries", spy)
            backend._follower.step()
            assert read == [f"{CIDR}/{theirs.address}"]  # its own bind came from memory
            for binding in (mine, theirs):
                assert backend.index.holder(CIDR, parse_address(binding.address,
                                                                field="address"))
            assert own.after(0) == []
        finally:
            backend.close()


def test_a_follower_that_cannot_read_says_so_once_and_carries_on(
        dhcp_app, behind, make_client, monkeypatch, caplog):
    from app.services import lease_index

    real = lease_index.catch_up
    failures = iter([RuntimeError("database away"), RuntimeError("database away")])

    def flaky(*args: Any) -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real(*args)

    bound = bound_elsewhere(dhcp_app, [make_client(130)])
    monkeypatch.setattr(lease_index, "catch_up", flaky)
    with caplog.at_level("INFO", logger="app.services.lease_index"):
        for _ in range(3):
            behind._follower.step()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not following the ledger" in m for m in messages) == 1
    assert any("following the ledger again" in m for m in messages)
    assert behind.index.holder(CIDR, parse_address(bound[0].address, field="address"))


def test_an_instance_stored_as_a_snapshot_name_moves_to_a_new_version_and_back(
        dhcp_app, fast, make_client):
    """A process migration reads the instance whole; reverting puts back what was stored."""
    from app.engine import runtime
    from app.services import definitions, migration
    from app.services.uow import unit_of_work

    client = make_client(141)
    dora(fast, client)
    shipped = (definitions.PROCESSES_DIR / "dhcp_lease.bpmn").read_text()
    renamed = shipped.replace("Adopt the server's binding", "Take over the binding")
    assert renamed != shipped
    with dhcp_app.app_context(), unit_of_work():
        v1 = definitions.current(dhcp.PROCESS_KEY).version
        v2 = definitions.store(renamed, author="test", activate=False).version
    with dhcp_app.app_context():
        planned = migration.dry_run(dhcp.PROCESS_KEY, v1, v2)
    assert planned["movable"] == 1, planned
    with dhcp_app.app_context(), unit_of_work():
        run = migration.migrate(dhcp.PROCESS_KEY, v1, v2, actor="test")
        assert run.moved == 1
        run_id = run.id
    with dhcp_app.app_context():
        row = db.session.execute(select(ProcessInstance)).scalar_one()
        assert row.definition.version == v2 and not row.workflow.startswith(runtime.DEFERRED)
    with dhcp_app.app_context(), unit_of_work():
        migration.revert(dhcp.PROCESS_KEY, run_id, actor="test")
    with dhcp_app.app_context():
        row = db.session.execute(select(ProcessInstance)).scalar_one()
        assert row.definition.version == v1 and row.workflow.startswith(runtime.DEFERRED)


@pytest.mark.integration
def test_a_follower_whose_connection_is_cut_follows_again_on_a_new_one(
        tmp_path, add_subnet, make_client, pg_database, caplog):
    from sqlalchemy import text

    with running_app(tmp_path, database_url=pg_database) as pg_app:
        app = add_subnet(pg_app)
        backend = FastLeaseBackend(app, patience=20.0, follow_every=3600.0)
        try:
            follower = backend._follower
            follower.step()  # opens its own connection
            assert follower._connection is not None
            pid = follower._connection.connection.driver_connection.info.backend_pid
            with app.app_context():
                db.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                db.session.commit()
            [bound] = bound_elsewhere(app, [make_client(150)])
            with caplog.at_level("INFO", logger="app.services.lease_index"):
                follower.step()  # its connection is gone
                follower.step()  # a new one
            messages = [r.getMessage() for r in caplog.records]
            assert sum("not following the ledger" in m for m in messages) == 1
            assert any("following the ledger again" in m for m in messages)
            assert backend.index.holder(CIDR, parse_address(bound.address, field="address"))
        finally:
            backend.close()


def test_the_index_loaded_at_start_knows_every_holder_and_where_the_ledger_was(
        dhcp_app, make_client, monkeypatch):
    from app.services import lease_index

    clients = [make_client(160 + n) for n in range(3)]
    bound = bound_elsewhere(dhcp_app, clients)
    monkeypatch.setattr(lease_index, "LOAD_BATCH", 2)  # read in batches, as a big table is
    with dhcp_app.app_context():
        index = lease_index.load()
        head = db.session.execute(select(func.max(AuditEntry.seq))).scalar_one()
    assert len(index) == 3 and index.seq == head
    for client, binding in zip(clients, bound, strict=True):
        holder = index.holding(CIDR, dhcp.client_key(client.client_id))
        assert holder is not None and holder.state == "bound"
        assert holder.address == parse_address(binding.address, field="address")


def test_a_binding_and_a_renewal_leave_their_history_rows_as_the_slow_path_does(
        dhcp_app, fast, make_client):
    """On PostgreSQL the bind INSERT and the renewal UPDATE write the history rows
    themselves: the same rows Python writes on SQLite."""
    from app.models import LeaseHistory

    client = make_client(171)
    ack = dora(fast, client)
    assert isinstance(fast.renew(client, ack.address, time.time()), Binding)
    lease_id = lease_of(dhcp_app, client)["id"]
    with dhcp_app.app_context():
        rows = db.session.execute(select(LeaseHistory).where(
            LeaseHistory.lease_id == lease_id).order_by(LeaseHistory.id)).scalars().all()
        seen = [(r.event, r.from_state, r.to_state, r.actor, r.detail, r.at is not None)
                for r in rows]
    assert seen == [("commit", None, "bound", "dhcp", {}, True),
                    ("renew", "bound", "bound", "dhcp", {"lease_time": 600}, True)]
