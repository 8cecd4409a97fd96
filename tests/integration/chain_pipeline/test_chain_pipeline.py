"""500 concurrent lease requests through the API → the chain's holders are the database's.

Every bound lease is on chain with the holder derived from that very lease, no address has
two holders, and every pool address the database does not hold is free on chain. Run on the
embedded chain and on anvil, with SQLite and the in-process worker, and on anvil with
PostgreSQL + Redis + two worker processes (each sending from its own account).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from lf_support import TOKEN, settle

pytestmark = pytest.mark.integration

REQUESTS, THREADS = 500, 8
CIDR = "10.70.0.0/22"
POOL_TEXT = "10.70.0.10-10.70.2.97"  # 600 addresses
POOL = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.70.0.10")) + i))
        for i in range(600)]


def add_subnet(app: Flask) -> None:
    response = app.test_client().post(
        "/api/v1/subnets", json={"cidr": CIDR, "pools": [POOL_TEXT]},
        headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 201, response.json
    assert response.json["utilization"]["size"] == len(POOL)


def submit_all(app: Flask) -> list[int]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ids: list[int] = []
    errors: list[Any] = []
    lock = threading.Lock()

    def run(k: int) -> None:
        client = app.test_client()
        for i in range(k, REQUESTS, THREADS):
            response = client.post("/api/v1/leases", headers=headers,
                                   json={"subnet": CIDR, "client_id": f"host-{i:04d}"})
            with lock:
                if response.status_code == 202:
                    ids.append(response.json["instance_id"])
                else:
                    errors.append(response.json)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return ids


def progress(app: Flask) -> dict[str, int]:
    from app.extensions import db
    from app.models import Lease, ServiceJob

    with app.app_context():
        bound = db.session.execute(select(func.count()).where(Lease.state == "bound")
                                   ).scalar_one()
        queued = db.session.execute(select(func.count()).where(ServiceJob.status == "queued")
                                    ).scalar_one()
        recorded = db.session.execute(select(func.count()).where(
            ServiceJob.operation == "chain.record", ServiceJob.status == "done")).scalar_one()
        db.session.rollback()
    return {"bound": bound, "queued": queued, "recorded": recorded}


def chain_matches_database(app: Flask) -> None:
    from app.chain import ip_to_uint, subnet_id
    from app.extensions import db
    from app.ipam.addresses import int_to_ip
    from app.models import Lease, ProcessInstance
    from app.services import chain

    with app.app_context():
        bound = db.session.execute(select(Lease.id, Lease.address, Lease.client_id)
                                   .where(Lease.state == "bound")).all()
        states = dict(db.session.execute(select(ProcessInstance.state, func.count())
                                         .group_by(ProcessInstance.state)).all())
        registry = chain.get().registry
        db.session.rollback()
    assert len(bound) == REQUESTS and len({b.address for b in bound}) == REQUESTS
    assert states == {"waiting": REQUESTS}  # every instance bound, waiting for release
    expected = {int_to_ip(b.address): chain.lease_holder(subnet=CIDR, client_id=b.client_id,
                                                         lease_id=b.id) for b in bound}
    on_chain = {}
    for ip in POOL:
        holding = registry.holder_of(subnet_id(CIDR), ip_to_uint(ip))
        if holding is not None:
            on_chain[ip] = holding.holder
    assert on_chain == expected  # same addresses, same holders: none missing, none extra


def test_five_hundred_concurrent_requests_chain_equals_database(
        pipeline_app: Flask, chain_url: str) -> None:
    add_subnet(pipeline_app)
    started = time.monotonic()
    ids = submit_all(pipeline_app)
    assert len(set(ids)) == REQUESTS
    settle(lambda: progress(pipeline_app) == {"bound": REQUESTS, "queued": 0,
                                              "recorded": REQUESTS}, 300,
           "all 500 leases bound and recorded on chain")
    seconds = time.monotonic() - started
    chain_matches_database(pipeline_app)
    from app.services import chain

    with pipeline_app.app_context():
        stats = chain.get().stats
    # Figures for the report (never asserted: timing depends on the machine).
    print(f"\n[{'embedded' if chain_url.startswith('embedded') else 'anvil'}] {REQUESTS} "
          f"chain-validated allocations in {seconds:.1f}s = {REQUESTS / seconds:.0f}/s; "
          f"{stats.batches} chain batches, {stats.items / max(stats.batches, 1):.0f} "
          f"changes per transaction (largest {stats.largest})")


def worker_accounts(app: Flask, node_url: str, count: int) -> list[str]:
    """Private keys of `count` funded accounts with the writer role on the app's contract.

    Each worker process sends from its own account: one account's nonces can only be
    handed out in order by one process.
    """
    from eth_account import Account

    from app.services import chain

    with app.app_context():
        registry = chain.get().registry  # deploys and stores the address for the workers
    keys = []
    for _ in range(count):
        account = Account.create()
        registry.client.w3.provider.make_request(  # type: ignore[arg-type]
            "anvil_setBalance", [account.address, hex(10**21)])
        registry.grant_writer(account.address)
        keys.append("0x" + bytes(account.key).hex())
    return keys


def test_five_hundred_requests_postgres_redis_workers_on_anvil(
        pg_chain_app: Flask, anvil_node: Any) -> None:
    from bench.peers.workers import start_worker, stop, wait_ready, worker_env

    add_subnet(pg_chain_app)
    keys = worker_accounts(pg_chain_app, anvil_node.url, 2)
    names = [f"lfchain{i}-{threading.get_ident()}" for i in range(2)]
    procs = []
    try:
        for name, key in zip(names, keys, strict=True):
            env = worker_env(pg_chain_app.config["SQLALCHEMY_DATABASE_URI"],
                             pg_chain_app.config["LEASEFLOW"].broker_url,
                             LEASEFLOW_CHAIN_URL=anvil_node.url, LEASEFLOW_CHAIN_PRIVATE_KEY=key,
                             LEASEFLOW_JOB_TIMEOUT="20", LEASEFLOW_TICK_INTERVAL="0.5",
                             LEASEFLOW_ANCHOR_INTERVAL="1")
            procs.append(start_worker(env, name))
        wait_ready(pg_chain_app.extensions["celery"], names)
        started = time.monotonic()
        ids = submit_all(pg_chain_app)
        assert len(set(ids)) == REQUESTS
        settle(lambda: progress(pg_chain_app) == {"bound": REQUESTS, "queued": 0,
                                                  "recorded": REQUESTS}, 300,
               "all 500 leases bound and recorded on chain")
        seconds = time.monotonic() - started
    finally:
        for proc in procs:
            stop(proc)
    chain_matches_database(pg_chain_app)
    print(f"\n[anvil, PostgreSQL + Redis + 2 workers] {REQUESTS} chain-validated allocations "
          f"in {seconds:.1f}s = {REQUESTS / seconds:.0f}/s")
    # The workers' tickers anchored concurrently: verify reads those anchors from the chain.
    client = pg_chain_app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/v1/ledger/anchor", headers=headers).status_code == 200
    report = client.get("/api/v1/ledger/verify", headers=headers).json
    assert report["ok"] is True, report
    assert report["anchors_source"] == "chain" and report["unanchored_rows"] == 0
    from app.extensions import db
    from app.models import LedgerAnchor

    with pg_chain_app.app_context():
        ranges = [(a.seq_from, a.seq_to) for a in db.session.query(LedgerAnchor)
                  .order_by(LedgerAnchor.seq_to)]
    assert ranges[0][0] == 1 and all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:],
                                                                       strict=False))
    assert len(ranges) == report["anchors_checked"]
