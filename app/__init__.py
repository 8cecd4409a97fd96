"""Leaseflow: conflict-free DHCP leases whose lifecycle is a BPMN process.

`create_app()` is the WSGI factory (`gunicorn 'app:create_app()'`). It binds the extensions,
the API and the job transport: an in-process worker on the embedded default
(`LEASEFLOW_BROKER_URL=memory://`), Celery over Redis otherwise.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from .config import Settings
from .extensions import db, migrate

ROOT = Path(__file__).resolve().parent.parent


def _database_uri(url: str) -> str:
    """Relative SQLite paths are relative to the working directory (as the README says)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        path = Path(os.getcwd(), url[len(prefix):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def _sqlite_immediate(engine: Engine) -> None:
    """SQLite: one writer at a time, taken at BEGIN (no lock upgrades that deadlock), WAL."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # WAL + NORMAL survives a process crash (the embedded default's promise); a power
        # cut may lose the last transactions, which is what PostgreSQL is for.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


IDLE_PING_AFTER = 1.0  # seconds a pooled connection may sit unused before it is pinged


def ping_when_idle(engine: Engine, after: float = IDLE_PING_AFTER) -> None:
    """SQLAlchemy's `pool_pre_ping`, for connections that sat in the pool `after` seconds.

    The pre-ping is a round trip on every checkout: the DHCP server's group commits check
    out a connection hundreds of times a second. A connection back in use within a second
    was alive a moment ago; one the database dropped since (a restart) fails its first
    statement, and SQLAlchemy then discards every connection of the pool made before it,
    so one unit of work fails (the caller's error path: a DHCP client retransmits) and the
    next gets a fresh connection.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        record.info["leaseflow_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["leaseflow_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("leaseflow_idle_since")
        if since is not None and time.monotonic() - since < after:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc
        if not alive:
            raise DisconnectionError("pooled connection is gone")


def roll_back_only_open_transactions(engine: Engine) -> None:
    """PostgreSQL: a connection back in the pool is rolled back only if it holds a
    transaction (the engine is made with `pool_reset_on_return=None`).

    SQLAlchemy's reset sends a ROLLBACK for every connection that comes back, also after
    a COMMIT, when there is nothing left to roll back: a round trip for every unit of
    work, one of seven for a group of DHCP bindings. The driver knows whether a
    transaction is open (`info.transaction_status`), with no round trip."""
    from psycopg.pq import TransactionStatus

    @event.listens_for(engine, "reset")
    def _reset(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
        info = getattr(dbapi_connection, "info", None)
        if getattr(info, "transaction_status", None) != TransactionStatus.IDLE:
            dbapi_connection.rollback()  # open, failed, or a driver that does not say


def create_app(config: dict[str, Any] | None = None, *, start_background: bool = False,
               settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env(**(config or {}))
    app = Flask(__name__, template_folder=str(ROOT / "templates"))
    uri = _database_uri(settings.database_url)
    options: dict[str, Any] = {}
    if uri.startswith("sqlite"):
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        options.update(pool_size=10, max_overflow=20, pool_reset_on_return=None)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=uri,
        SQLALCHEMY_ENGINE_OPTIONS=options,
        LEASEFLOW=settings,
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=8 * 1024 * 1024,
    )
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    with app.app_context():
        ping_when_idle(db.engine)
        if uri.startswith("sqlite"):
            _sqlite_immediate(db.engine)
        else:
            roll_back_only_open_transactions(db.engine)

    from .web import init_app as init_web

    init_web(app)
    if start_background:
        start_transport(app)
    logging.getLogger("SpiffWorkflow").setLevel(logging.WARNING)
    return app


def start_transport(app: Flask, *, local_workers: int | None = None) -> None:
    """Install how committed jobs reach workers in this process."""
    from .services import dispatch
    from .services.intake import Intake

    settings: Settings = app.config["LEASEFLOW"]
    previous = app.extensions.pop("leaseflow_intake", None)
    if previous is not None:
        previous.close()
    app.extensions["leaseflow_intake"] = Intake(app, max_group=settings.batch_size)
    if settings.embedded_broker:
        from workers.jobs import run_jobs

        def run(ids: list[int]) -> None:
            with app.app_context():
                run_jobs(ids)

        threads = local_workers if local_workers is not None else settings.local_workers
        dispatch.install(dispatch.LocalTransport(run, threads=threads,
                                                 batch=settings.batch_size))
    else:
        from workers.celery_app import make_celery

        celery = app.extensions.get("celery") or make_celery(app)
        dispatch.install(dispatch.CeleryTransport(celery, settings.broker_url,
                                                  batch=settings.batch_size))
