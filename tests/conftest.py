"""Shared fixtures, named for roles (flaskr style): `app`, `client`, `admin`, `pg_url`.

Unit tests run on a fresh SQLite file with the in-process worker; integration tests use the
real PostgreSQL and Redis named by LEASEFLOW_TEST_DATABASE_URL / LEASEFLOW_TEST_REDIS_URL
(the Makefile starts them when they are not running).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-" + uuid.uuid4().hex


def make_app(tmp_path: Path, **overrides: Any) -> Flask:
    from app import create_app
    from app.config import Settings
    from app.extensions import db
    from app.services import setup

    values: dict[str, Any] = {"database_url": f"sqlite:///{tmp_path / 'leaseflow.db'}",
                              "broker_url": "memory://", "api_token": TOKEN,
                              "admin_password": "admin-secret", "secret_key": "test",
                              "tick_interval": 0.05}
    values.update(overrides)
    settings = Settings.from_env(environ={}, **values)
    app = create_app(settings=settings)
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        setup.bootstrap()
        db.session.remove()
    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    from app import start_transport
    from app.services import dispatch

    application = make_app(tmp_path)
    start_transport(application)
    yield application
    dispatch.install(None)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin() -> dict[str, str]:
    """Headers of an admin (the API token)."""
    return {"Authorization": f"Bearer {TOKEN}"}


def pg_url() -> str:
    return os.environ.get("LEASEFLOW_TEST_DATABASE_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def redis_url() -> str:
    return os.environ.get("LEASEFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL schema-less database for one test (dropped afterwards)."""
    import sqlalchemy as sa

    base = pg_url()
    name = "lf_" + uuid.uuid4().hex[:12]
    try:
        engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment
        pytest.fail(f"PostgreSQL is not reachable at {base} ({exc}); `make test` starts it")
    url = base.rsplit("/", 1)[0] + "/" + name
    yield url
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
