"""Shared fixtures, named for roles (flaskr style): `app`, `client`, `admin`, `pg_url`.

Unit tests run on a fresh SQLite file with the in-process worker; integration tests use the
real PostgreSQL and Redis named by LEASEFLOW_TEST_DATABASE_URL / LEASEFLOW_TEST_REDIS_URL
(the Makefile starts them when they are not running).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lf_support import TOKEN, pg_url, running_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    with running_app(tmp_path) as application:
        yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin() -> dict[str, str]:
    """Headers of an admin (the API token)."""
    return {"Authorization": f"Bearer {TOKEN}"}


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
