"""Fixtures for the PostgreSQL + Redis + worker-process pipeline tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask


@pytest.fixture
def redis_broker() -> str:
    """A Redis database of its own for one test's broker traffic (emptied first)."""
    import redis

    from lf_support import redis_url

    base = redis_url().rsplit("/", 1)[0]
    url = f"{base}/11"
    try:
        redis.Redis.from_url(url).flushdb()
    except Exception as exc:  # pragma: no cover - environment
        pytest.fail(f"Redis is not reachable at {url} ({exc}); `make test` starts it")
    return url


@pytest.fixture
def pg_app(pg_database: str, redis_broker: str) -> Iterator[Flask]:
    """The API/engine process of a production-like deployment (PostgreSQL + Redis)."""
    from flask_migrate import upgrade

    from app import create_app, start_transport
    from app.config import Settings
    from app.services import dispatch, setup
    from lf_support import TOKEN

    settings = Settings.from_env(environ={}, database_url=pg_database, broker_url=redis_broker,
                                 api_token=TOKEN, secret_key="t", admin_password="a",
                                 job_timeout=10.0)
    application = create_app(settings=settings)
    with application.app_context():
        upgrade()
        setup.bootstrap()
    start_transport(application)
    application.config["WORKER_ENV"] = {"LEASEFLOW_JOB_TIMEOUT": "10",
                                        "LEASEFLOW_TICK_INTERVAL": "0.5"}
    yield application
    dispatch.install(None)
    with application.app_context():
        from app.extensions import db

        db.engine.dispose()

