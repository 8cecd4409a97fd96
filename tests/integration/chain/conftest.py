"""Fixtures of the chain integration tests: the same tests on the embedded chain and on anvil.

`chain` is a ChainClient on a fresh embedded py-evm chain or on a real anvil node (one per
session, started on a free loopback port); `registry` is a freshly deployed LeaseRegistry.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.chain.client import ChainClient, Registry
from bench.peers.anvil import AnvilNode, AnvilUnavailable, start_anvil, stop_anvil


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[AnvilNode]:
    try:
        node = start_anvil()
    except AnvilUnavailable as exc:
        pytest.fail(f"{exc} (make test installs it)")
    yield node
    stop_anvil(node)


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.integration)])
def chain(request: pytest.FixtureRequest) -> ChainClient:
    if request.param == "embedded":
        return ChainClient.embedded_fresh()
    node = request.getfixturevalue("anvil_node")
    return ChainClient.from_url(node.url, chain_id=node.chain_id)


@pytest.fixture
def registry(chain: ChainClient) -> Registry:
    return chain.registry()


@pytest.fixture
def outsider(chain: ChainClient) -> ChainClient:
    """A client on the same chain sending from an account with no role."""
    return chain.for_account(chain.accounts()[1])
