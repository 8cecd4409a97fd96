"""Engine figures: steps/s, stored size per waiting instance, and wake-up cost at scale.

1. Engine steps (no database): instances of the shipped lease process (and of its variant
   without chain steps) run their whole life — start, every service-task result, bound, a
   release message, the release steps, done. A *step* is one call into the engine adapter
   (start / result / message). Measured twice: on a workflow kept in memory, and with the
   storage round trip a worker really pays per step (restore the JSON, step, serialize).
2. Serialized size: the JSON stored per instance waiting in the bound state (release,
   renewal or expiry), which is where nearly every instance spends its life.
3. Wake-up cost: a database holding N waiting instances (1k, 100k) whose expiry timers are
   in the future, plus a few that are due. Timed: the ticker's due query
   (`instances.due_for_wake`, on the indexed `wake_at`), the same query forced to scan the
   table (what the index saves), and the wake-up half of a ticker round (due query, then
   per due instance: lock, restore, fire the timer, park the expiry steps; commit).
   Cost should stay flat in N.

Run: `python -m bench.engine [--instances N] [--sizes 1000,100000] [--database-url URL]`
(default database: a temporary SQLite file; give a PostgreSQL URL for production figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = {"default": ROOT / "processes" / "lease_lifecycle.bpmn",
             "without chain": ROOT / "processes" / "variants" /
             "lease_lifecycle_without_chain.bpmn"}
REQUEST = {"lease_request": {"subnet": "10.0.0.0/24", "client_id": "bench", "instance_id": 1}}
DUE = 20  # due instances per size: the work of one ticker round stays the same


def _result(expires_at: str) -> dict[str, Any]:
    """One answer that satisfies every operation of the lease process (a worker stand-in)."""
    return {"lease_id": 1, "ip": "10.0.0.5", "subnet": "10.0.0.0/24", "client_id": "bench",
            "state": "bound", "expires_at": expires_at, "tx_hash": "0x" + "00" * 32,
            "ok": True}


def _finish_jobs(call: Callable[..., Any], report: Any, result: dict[str, Any]) -> tuple[
        Any, int]:
    steps = 0
    while report.parked:
        for job in report.parked:
            report = call(job.task_id, result)
            steps += 1
    return report, steps


# --- 1 and 2: the engine alone ------------------------------------------------------------


def engine_figures(path: Path, instances: int) -> dict[str, float]:
    from app.engine import runtime

    spec = runtime.load_spec(path.read_text())
    result = _result("2030-01-01T00:00:00+00:00")

    # in memory: the workflow object stays alive between steps
    steps = 0
    began = time.perf_counter()
    for _ in range(instances):
        workflow, report = runtime.start(spec, REQUEST)
        report, n = _finish_jobs(
            lambda t, r, w=workflow: runtime.complete_service_task(w, t, r), report, result)
        report = runtime.send_message(workflow, "lease_release", {"by": "bench"})
        report, m = _finish_jobs(
            lambda t, r, w=workflow: runtime.complete_service_task(w, t, r), report, result)
        assert report.completed
        steps += 2 + n + m
    in_memory = time.perf_counter() - began

    # stored: every step restores the JSON and serializes the new state, as a worker does
    steps_stored = 0
    size_waiting: list[int] = []
    began = time.perf_counter()
    for _ in range(instances):
        workflow, report = runtime.start(spec, REQUEST)
        state = runtime.serialize(workflow)
        steps_stored += 1

        def resume(task_id: str, answer: dict[str, Any]) -> Any:
            nonlocal state
            current = runtime.restore(spec, state)
            out = runtime.complete_service_task(current, task_id, answer)
            state = runtime.serialize(current)
            return out

        report, n = _finish_jobs(resume, report, result)
        size_waiting.append(len(state.encode()))
        current = runtime.restore(spec, state)
        report = runtime.send_message(current, "lease_release", {"by": "bench"})
        state = runtime.serialize(current)
        report, m = _finish_jobs(resume, report, result)
        assert report.completed
        steps_stored += 1 + n + m
    stored = time.perf_counter() - began
    return {"steps_per_instance": steps / instances,
            "steps_s_memory": steps / in_memory,
            "instances_s_memory": instances / in_memory,
            "steps_s_stored": steps_stored / stored,
            "instances_s_stored": instances / stored,
            "waiting_bytes": statistics.median(size_waiting)}


# --- 3: wake-up cost ------------------------------------------------------------------------


def _app(database_url: str) -> Any:
    from flask_migrate import upgrade

    from app import create_app
    from app.config import Settings
    from app.services import dispatch, setup

    settings = Settings.from_env(environ={}, database_url=database_url, broker_url="memory://",
                                 api_token="bench-" + uuid.uuid4().hex, secret_key="b",
                                 admin_password="b")
    app = create_app(settings=settings)
    dispatch.install(None)  # jobs the wake-ups park are stored, not run: only waking is timed
    with app.app_context():
        logging.disable(logging.INFO)  # alembic's per-run INFO lines would break the table
        try:
            upgrade()
        finally:
            logging.disable(logging.NOTSET)
        setup.bootstrap()
    return app


def _due_state(spec: Any) -> str:
    """A bound instance whose expiry has passed but whose timer has not fired yet."""
    from app.engine import runtime
    from app.models import utcnow

    future = (utcnow() + timedelta(days=365)).isoformat()
    workflow, report = runtime.start(spec, REQUEST)
    _finish_jobs(lambda t, r: runtime.complete_service_task(workflow, t, r), report,
                 _result(future))
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    # the expiry lives in the task data and in the timer's memory of its due time
    return runtime.serialize(workflow).replace(future, past)


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@contextlib.contextmanager
def _fresh_database(server_url: str | None) -> Iterator[str]:
    """A new empty database per measurement: a temporary SQLite file, or a database created
    on the given PostgreSQL server and dropped afterwards."""
    if server_url is None or server_url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="lf-bench-engine-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    import sqlalchemy as sa

    name = "lf_bench_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wake_figures(database_url: str, size: int, *, composite_index: bool = False,
                 repeat: int = 15) -> dict[str, Any]:
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import ProcessInstance, utcnow
    from app.services import definitions, instances
    from app.services.uow import unit_of_work

    app = _app(database_url)
    try:
        with app.app_context():
            definition = definitions.active()
            due_state = _due_state(definitions.spec_of(definition))
            now = utcnow()
            table = ProcessInstance.__table__
            chunk = 5000
            began = time.perf_counter()
            for first in range(0, size, chunk):
                rows = [{"definition_id": definition.id, "state": "waiting", "outcome": {},
                         "request": {}, "workflow": "{}", "client_id": f"idle-{i}",
                         "wake_at": now + timedelta(seconds=3600 + (i * 7919) % 2_592_000),
                         "version": 1, "created_at": now, "updated_at": now}
                        for i in range(first, min(first + chunk, size))]
                db.session.execute(table.insert(), rows)
                db.session.commit()
            db.session.execute(table.insert(), [
                {"definition_id": definition.id, "state": "waiting", "outcome": {},
                 "request": {}, "workflow": due_state, "client_id": f"due-{i}",
                 "wake_at": now - timedelta(seconds=60 - i), "version": 1,
                 "created_at": now, "updated_at": now} for i in range(DUE)])
            db.session.commit()
            fill = time.perf_counter() - began
            dialect = db.engine.dialect.name
            if composite_index:  # what the due query needs: equality column first, then range
                db.session.execute(sa.text("CREATE INDEX ix_bench_due ON process_instances "
                                           "(state, wake_at)"))
                db.session.commit()
            if dialect == "postgresql":
                db.session.execute(sa.text("ANALYZE process_instances"))
                db.session.commit()

            def due_query() -> None:
                found = instances.due_for_wake()
                db.session.rollback()
                assert len(found) == DUE, len(found)

            query_s = _timed(due_query, repeat)
            plan, scan_s = _plan_and_scan(db, dialect, repeat)
            # The wake-up half of jobs.tick (its other duties — re-queuing stale jobs,
            # anchoring the ledger on chain — have costs of their own, not timed here).
            began = time.perf_counter()
            with unit_of_work():
                due = instances.due_for_wake()
                for instance_id in due:
                    instances.wake(instance_id)
            tick_s = time.perf_counter() - began
            assert len(due) == DUE, len(due)
            woken = db.session.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c.client_id.like("due-%"), table.c.state == "waiting",
                table.c.wake_at.is_(None))).scalar_one()
            db.session.rollback()
            assert woken == DUE, f"{woken} of {DUE} due instances left their timer"
        return {"size": size, "dialect": dialect, "index": "state+wake_at" if composite_index
                else "as shipped", "fill_s": fill, "query_ms": query_s * 1e3,
                "scan_ms": scan_s * 1e3, "tick_ms": tick_s * 1e3,
                "per_wake_ms": tick_s * 1e3 / DUE, "plan": plan, "woken": woken}
    finally:
        with app.app_context():
            db.engine.dispose()


def _plan_and_scan(db: Any, dialect: str, repeat: int) -> tuple[str, float]:
    """The due query's plan, and the same query timed with indexes off (a full scan)."""
    import sqlalchemy as sa

    from app.models import UTCDateTime, utcnow

    def due_sql(hint: str = "") -> Any:
        # the statement of instances.due_for_wake, spelled out so the plan can be asked for
        return sa.text(f"SELECT id FROM process_instances {hint} WHERE wake_at <= :now "
                       "AND state = 'waiting' ORDER BY wake_at LIMIT 500").bindparams(
            sa.bindparam("now", value=utcnow(), type_=UTCDateTime()))

    explain = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    query = due_sql()
    plan_rows = db.session.execute(sa.text(explain + str(query)).bindparams(
        *query._bindparams.values())).all()
    lines = [str(r[-1]).strip() for r in plan_rows]
    # PostgreSQL: the line naming the scan is what matters (index or sequential)
    plan = "; ".join([line for line in lines if "Scan" in line or "SEARCH" in line
                      or "SCAN" in line or "B-TREE" in line] or lines[:2])
    db.session.rollback()

    def scan() -> None:
        if dialect == "sqlite":
            db.session.execute(due_sql("NOT INDEXED")).all()
        else:
            db.session.execute(sa.text("SET LOCAL enable_indexscan = off"))
            db.session.execute(sa.text("SET LOCAL enable_bitmapscan = off"))
            db.session.execute(due_sql()).all()
        db.session.rollback()

    return plan, _timed(scan, repeat)


# --- output ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.engine", description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300,
                        help="lease lifecycles per engine measurement")
    parser.add_argument("--sizes", default="1000,100000",
                        help="numbers of waiting instances for the wake-up figures")
    parser.add_argument("--database-url", default=None,
                        help="where to create the wake-up databases: a PostgreSQL server URL "
                             "(a database is created per size and dropped), default SQLite")
    parser.add_argument("--compare-index", action="store_true",
                        help="also time each size with a composite (state, wake_at) index")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print("bench.engine: --sizes takes whole numbers, e.g. 1000,100000", file=sys.stderr)
        return 2
    if args.instances < 1 or not sizes or min(sizes) < 1:
        print("bench.engine: --instances and --sizes must be positive", file=sys.stderr)
        return 2
    print(f"Leaseflow engine bench: {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {args.instances} lease lifecycles per process")
    out: dict[str, Any] = {"cores": os.cpu_count(), "engine": {}, "wake": []}
    print()
    print(f"{'process':<15} {'steps/life':>10} {'steps/s mem':>12} {'lives/s mem':>12} "
          f"{'steps/s stored':>15} {'lives/s stored':>15} {'waiting JSON':>13}")
    for name, path in PROCESSES.items():
        if not path.exists():
            continue
        fig = engine_figures(path, args.instances)
        out["engine"][name] = fig
        print(f"{name:<15} {fig['steps_per_instance']:>10.0f} {fig['steps_s_memory']:>12,.0f} "
              f"{fig['instances_s_memory']:>12,.0f} {fig['steps_s_stored']:>15,.0f} "
              f"{fig['instances_s_stored']:>15,.0f} {fig['waiting_bytes'] / 1024:>10.1f} KB")
    print()
    print(f"Wake-up cost ({DUE} due among N waiting; median of 15 queries)")
    print(f"{'db':<10} {'index':<13} {'N waiting':>10} {'due query':>10} {'full scan':>10} "
          f"{'wake ' + str(DUE) + ' due':>15} {'per wake':>9}  plan")
    for size in sizes:
        for composite in (False, True) if args.compare_index else (False,):
            with _fresh_database(args.database_url) as url:
                fig = wake_figures(url, size, composite_index=composite)
            out["wake"].append(fig)
            print(f"{fig['dialect']:<10} {fig['index']:<13} {size:>10,} {fig['query_ms']:>8.2f}ms "
                  f"{fig['scan_ms']:>8.2f}ms {fig['tick_ms']:>13.1f}ms "
                  f"{fig['per_wake_ms']:>7.2f}ms  {fig['plan']}")
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
