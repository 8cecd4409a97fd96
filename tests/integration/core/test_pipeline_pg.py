"""1,000 concurrent lease requests on a pool of 800, PostgreSQL + Redis + 2 worker processes.

Exactly 800 bound with 800 distinct addresses, 200 refused as exhausted, none lost — also
when one worker is killed with SIGKILL in the middle of the run.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from bench.peers.workers import stop, worker_env, workers
from lf_support import TOKEN, settle

pytestmark = pytest.mark.integration

REQUESTS, POOL, THREADS = 1000, 800, 8
CIDR = "10.60.0.0/22"
POOL_TEXT = "10.60.0.10-10.60.3.41"  # 800 addresses


def _submit_all(app: Flask, after: int | None = None,
                on_after: Any = None) -> list[int]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ids: list[int] = []
    lock = threading.Lock()
    errors: list[Any] = []

    def run(k: int) -> None:
        client = app.test_client()
        for i in range(k, REQUESTS, THREADS):
            response = client.post("/api/v1/leases", headers=headers,
                                   json={"subnet": CIDR, "client_id": f"host-{i:04d}"})
            if response.status_code != 202:
                errors.append(response.json)
                continue
            with lock:
                ids.append(response.json["instance_id"])
                if after is not None and len(ids) == after and on_after is not None:
                    on_after()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return ids


def _outcome(app: Flask) -> dict[str, Any]:
    from app.extensions import db
    from app.models import Lease, ProcessInstance

    with app.app_context():
        states = dict(db.session.execute(select(ProcessInstance.state, func.count())
                                         .group_by(ProcessInstance.state)).all())
        bound = db.session.execute(select(func.count(), func.count(Lease.address.distinct()))
                                   .where(Lease.state == "bound")).one()
        refused = db.session.execute(select(ProcessInstance.outcome).where(
            ProcessInstance.state == "refused")).scalars().all()
        offered = db.session.execute(select(func.count()).where(
            Lease.state == "offered")).scalar_one()
        db.session.rollback()
    return {"states": states, "bound": bound[0], "distinct": bound[1], "offered": offered,
            "refused_reasons": {o.get("reason") for o in refused}, "refused": len(refused)}


def _subnet(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/api/v1/subnets", json={"cidr": CIDR, "pools": [POOL_TEXT]},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 201, response.json
    assert response.json["utilization"]["size"] == POOL


def _settled(app: Flask) -> bool:
    o = _outcome(app)
    return o["bound"] + o["refused"] == REQUESTS and o["offered"] == 0


@pytest.mark.parametrize("kill_one", [False, True], ids=["steady", "sigkill"])
def test_thousand_requests_on_800_addresses(pg_app: Flask, kill_one: bool) -> None:
    _subnet(pg_app)
    celery = pg_app.extensions["celery"]
    env = worker_env(pg_app.config["SQLALCHEMY_DATABASE_URI"],
                     pg_app.config["LEASEFLOW"].broker_url, **pg_app.config["WORKER_ENV"])
    with workers(env, 2, celery) as procs:
        killed = threading.Event()

        def kill() -> None:
            stop(procs[0], signal.SIGKILL)
            killed.set()

        ids = _submit_all(pg_app, after=REQUESTS // 2 if kill_one else None,
                          on_after=kill if kill_one else None)
        assert len(set(ids)) == REQUESTS
        assert killed.is_set() == kill_one
        settle(lambda: _settled(pg_app), 240, "all 1,000 requests settling")
    o = _outcome(pg_app)
    assert o["bound"] == POOL and o["distinct"] == POOL
    assert o["refused"] == REQUESTS - POOL
    assert o["refused_reasons"] == {"pool_exhausted"}
    # nothing lost: every instance is bound (waiting for release/expiry) or refused
    assert o["states"] == {"waiting": POOL, "refused": REQUESTS - POOL}
