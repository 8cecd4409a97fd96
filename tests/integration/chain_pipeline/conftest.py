"""Fixtures of the chain pipeline tests: the whole lease flow on the embedded chain and on a
real EVM node (anvil on a free loopback port, one per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from bench.peers.anvil import AnvilNode, AnvilUnavailable, start_anvil, stop_anvil


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[AnvilNode]:
    try:
        node = start_anvil()
    except AnvilUnavailable as exc:
        pytest.fail(f"{exc} (make test installs it)")
    yield node
    stop_anvil(node)


@pytest.fixture(params=["embedded", "anvil"])
def chain_url(request: pytest.FixtureRequest) -> str:
    if request.param == "embedded":
        return "embedded://"
    node: AnvilNode = request.getfixturevalue("anvil_node")
    return node.url


@pytest.fixture
def pipeline_app(tmp_path: Path, chain_url: str) -> Iterator[Flask]:
    """SQLite + the in-process worker, on the chain of `chain_url`; a contract of its own."""
    from app import start_transport
    from app.services import chain, dispatch
    from lf_support import make_app

    app = make_app(tmp_path, chain_url=chain_url)
    start_transport(app)
    yield app
    dispatch.install(None)
    chain.reset()


@pytest.fixture
def redis_broker_url() -> str:
    """A Redis database of its own for this area's broker traffic (emptied first)."""
    import redis

    from lf_support import redis_url

    url = f"{redis_url().rsplit('/', 1)[0]}/12"
    try:
        redis.Redis.from_url(url).flushdb()
    except Exception as exc:  # pragma: no cover - environment
        pytest.fail(f"Redis is not reachable at {url} ({exc}); `make test` starts it")
    return url


@pytest.fixture
def pg_chain_app(pg_database: str, redis_broker_url: str, anvil_node: AnvilNode
                 ) -> Iterator[Flask]:
    """PostgreSQL + Redis + anvil: the API/engine process of a production-like deployment."""
    from flask_migrate import upgrade

    from app import create_app, start_transport
    from app.config import Settings
    from app.services import chain, dispatch, setup
    from lf_support import TOKEN

    settings = Settings.from_env(environ={}, database_url=pg_database,
                                 broker_url=redis_broker_url, chain_url=anvil_node.url,
                                 api_token=TOKEN, secret_key="t", admin_password="a",
                                 job_timeout=20.0)
    app = create_app(settings=settings)
    with app.app_context():
        upgrade()
        setup.bootstrap()
    start_transport(app)
    yield app
    dispatch.install(None)
    chain.reset()
    with app.app_context():
        from app.extensions import db

        db.engine.dispose()
