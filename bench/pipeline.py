"""Allocations/s and request latency through the whole lease pipeline.

Each request is `POST /api/v1/leases?wait=` through the real Flask app (bearer auth, JSON,
unit of work), the engine (SpiffWorkflow start → park), the outbox, a worker (ipam.reserve,
dhcp.commit) and back, until the lease is bound. Two modes, printed side by side:

- embedded: SQLite + the in-process worker (what `make run` starts);
- postgres: PostgreSQL + Redis + N `leaseflow worker` processes (production shape).

Run: `leaseflow bench pipeline [--requests N] [--threads T] [--workers W] [--mode M]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-" + uuid.uuid4().hex
CIDR = "10.70.0.0/16"
POOL = "10.70.0.10-10.70.255.250"


FOUNDATION = ROOT / "processes" / "variants" / "lease_lifecycle_without_chain.bpmn"


def _app(settings_values: dict[str, Any], process: str = "default") -> Any:
    from flask_migrate import upgrade

    from app import create_app
    from app.config import Settings
    from app.services import setup

    settings = Settings.from_env(environ={}, api_token=TOKEN, secret_key="b",
                                 admin_password="b", **settings_values)
    app = create_app(settings=settings)
    with app.app_context():
        upgrade()
        setup.bootstrap()
        if process == "foundation":
            # The issue-2 pipeline alone (reserve, commit), without the steps later issues add.
            from app.services import definitions
            from app.services.uow import unit_of_work

            with unit_of_work():
                definitions.store(FOUNDATION.read_text(), author="bench", activate=True)
    client = app.test_client()
    response = client.post("/api/v1/subnets", json={"cidr": CIDR, "pools": [POOL]},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 201, response.json
    return app


def _drive_open(app: Any, requests: int, threads: int) -> dict[str, float]:
    """Open loop: submit everything (202), then time each request until its lease is bound,
    from the database's own timestamps (instance created → lease committed)."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import Lease, LeaseHistory, ProcessInstance

    headers = {"Authorization": f"Bearer {TOKEN}"}
    began = time.perf_counter()

    def run(k: int) -> None:
        client = app.test_client()
        for i in range(k, requests, threads):
            response = client.post("/api/v1/leases", headers=headers,
                                   json={"subnet": CIDR, "client_id": f"bench-{i}"})
            assert response.status_code == 202, response.json

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    submitted = time.perf_counter() - began
    deadline = time.monotonic() + 600
    with app.app_context():
        while time.monotonic() < deadline:
            done = db.session.execute(sa.select(sa.func.count()).select_from(Lease).where(
                Lease.state == "bound")).scalar_one()
            db.session.rollback()
            if done >= requests:
                break
            threading.Event().wait(0.05)
        seconds = time.perf_counter() - began
        rows = db.session.execute(
            sa.select(ProcessInstance.created_at, LeaseHistory.at)
            .join(Lease, Lease.id == ProcessInstance.lease_id)
            .join(LeaseHistory, sa.and_(LeaseHistory.lease_id == Lease.id,
                                        LeaseHistory.to_state == "bound",
                                        LeaseHistory.event == "commit"))).all()
        db.session.rollback()
    latencies = sorted((bound - created).total_seconds() for created, bound in rows)
    return {"bound": len(latencies), "failed": requests - len(latencies), "seconds": seconds,
            "rate": len(latencies) / seconds, "submit_rate": requests / submitted,
            "p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            if latencies else float("nan")}


def _drive(app: Any, requests: int, threads: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    failures: list[Any] = []
    lock = threading.Lock()

    def run(k: int) -> None:
        client = app.test_client()
        for i in range(k, requests, threads):
            started = time.perf_counter()
            response = client.post("/api/v1/leases?wait=60", headers=headers,
                                   json={"subnet": CIDR, "client_id": f"bench-{i}"})
            elapsed = time.perf_counter() - started
            with lock:
                if response.status_code == 201:
                    latencies.append(elapsed)
                else:
                    failures.append(response.status_code)

    began = time.perf_counter()
    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - began
    latencies.sort()
    return {"bound": len(latencies), "failed": len(failures), "seconds": seconds,
            "rate": len(latencies) / seconds,
            "p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            if latencies else float("nan")}


def _cpu(result: dict[str, float], busy_before: float) -> dict[str, float]:
    """Machine CPU per bound lease during the run, and how many cores were busy on average."""
    busy = _busy_seconds() - busy_before
    return {"cpu_ms": busy * 1000 / max(result["bound"], 1),
            "cores": busy / result["seconds"] if result["seconds"] else float("nan")}


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process: the API,
    the workers, PostgreSQL, Redis), from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = (fields + [0] * 7)[:7]
    # steal (time the host did not run us) is not CPU the work used
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def embedded(requests: int, threads: int, process: str, load: str) -> dict[str, float]:
    from app import start_transport
    from app.services import dispatch

    with tempfile.TemporaryDirectory() as tmp:
        quiet = {"anchor_interval": 0.0} if process == "foundation" else {}
        app = _app({"database_url": f"sqlite:///{tmp}/bench.db", "broker_url": "memory://",
                    **quiet}, process)
        start_transport(app)
        drive = _drive_open if load == "open" else _drive
        try:
            busy = _busy_seconds()
            result = drive(app, requests, threads)
            return {**result, "rss_mb": _rss_mb(), **_cpu(result, busy)}
        finally:
            dispatch.install(None)


def postgres(requests: int, threads: int, workers: int, process: str,
             load: str) -> dict[str, float]:
    import redis
    import sqlalchemy as sa

    from app import start_transport
    from app.services import dispatch
    from bench.peers.workers import worker_env
    from bench.peers.workers import workers as run_workers

    base = os.environ.get("LEASEFLOW_TEST_DATABASE_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    broker = os.environ.get("LEASEFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    broker = broker.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(broker).flushdb()
    name = "lf_bench_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        # Without the chain steps, no chain: the ticker does not anchor the ledger either.
        quiet = {"anchor_interval": 0.0} if process == "foundation" else {}
        app = _app({"database_url": url, "broker_url": broker, **quiet}, process)
        start_transport(app)
        env = worker_env(url, broker, **({"LEASEFLOW_ANCHOR_INTERVAL": "0"} if quiet else {}))
        drive = _drive_open if load == "open" else _drive
        with run_workers(env, workers, app.extensions["celery"], prefix="bench"):
            busy = _busy_seconds()
            result = drive(app, requests, threads)
            result.update(_cpu(result, busy))
        dispatch.install(None)
        with app.app_context():
            from app.extensions import db

            db.engine.dispose()
        return {**result, "rss_mb": _rss_mb()}
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leaseflow bench pipeline", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="leaseflow worker processes (default: one per core but the "
                             "API's: on 2 cores, 1)")
    parser.add_argument("--mode", choices=["both", "embedded", "postgres"], default="both")
    parser.add_argument("--process", choices=["default", "foundation"], default="default",
                        help="the shipped default process, or the issue-2 pipeline alone")
    parser.add_argument("--load", choices=["closed", "open"], default="closed",
                        help="closed: each thread waits for its lease (?wait=); open: submit "
                             "all, then time each request from database timestamps")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    rows = []
    if args.mode in ("both", "embedded"):
        rows.append(("embedded (SQLite, in-process worker)",
                     embedded(args.requests, args.threads, args.process, args.load)))
    if args.mode in ("both", "postgres"):
        rows.append((f"postgres+redis ({args.workers} worker processes)",
                     postgres(args.requests, args.threads, args.workers, args.process,
                              args.load)))
    print(f"pipeline: {args.requests} lease requests, {args.threads} client threads, "
          f"{args.load} loop, process={args.process}, {os.cpu_count()} cores")
    print(f"{'mode':<40} {'bound':>6} {'alloc/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'accepted/s':>10} {'api RSS MB':>10} {'CPU ms/lease':>12} {'cores busy':>10}")
    for label, r in rows:
        accepted = f"{r['submit_rate']:>10.1f}" if "submit_rate" in r else f"{'-':>10}"
        print(f"{label:<40} {r['bound']:>6.0f} {r['rate']:>8.1f} {r['p50']:>8.1f} "
              f"{r['p99']:>8.1f} {accepted} {r['rss_mb']:>10.0f} {r['cpu_ms']:>12.2f} "
              f"{r['cores']:>10.2f}")
    print("CPU ms/lease: the whole machine's busy CPU time during the run (API, workers, "
          "PostgreSQL, Redis, the client threads) per bound lease; the cores a deployment "
          "needs for a rate R are about R x CPU ms / 1000.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
