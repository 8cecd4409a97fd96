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
