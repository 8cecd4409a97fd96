"""Failures of a real node: wrong chain id, wrong address, node gone (anvil only)."""

from __future__ import annotations

import pytest

from app.chain import AllocateItem, ChainUnavailable, ContractNotFound, WrongChain
from app.chain.batcher import ChainBatcher
from app.chain.client import ChainClient
from bench.peers.anvil import start_anvil, stop_anvil

pytestmark = pytest.mark.integration


def test_wrong_chain_id(anvil_node):
    client = ChainClient.from_url(anvil_node.url, chain_id=anvil_node.chain_id + 1)
    with pytest.raises(WrongChain, match=str(anvil_node.chain_id)):
        client.registry()


def test_address_without_contract(anvil_node):
    client = ChainClient.from_url(anvil_node.url)
    with pytest.raises(ContractNotFound):
        client.registry("0x" + "11" * 20)


def test_address_of_another_contract(anvil_node):
    client = ChainClient.from_url(anvil_node.url)
    # A contract that answers every call with empty data: not a LeaseRegistry.
    receipt = client._transact(None, "0x600a600c600039600a6000f3" + "00" * 10, gas=100_000,
                               what="deploying a dummy")
    with pytest.raises(ContractNotFound, match="not a LeaseRegistry"):
        client.registry(receipt["contractAddress"])


def test_known_address_is_reused(anvil_node):
    client = ChainClient.from_url(anvil_node.url)
    seen = []
    first = client.registry(on_deploy=seen.append)
    again = ChainClient.from_url(anvil_node.url).registry(first.address)
    assert seen == [first.address] and again.address == first.address


def test_node_down_fails_every_future_of_the_batch_transiently():
    node = start_anvil()
    try:
        client = ChainClient.from_url(node.url)
        registry = client.registry()
        assert registry.allocate(
            AllocateItem.for_lease(subnet="n", ip="10.0.0.1", client_id="a")
        ).accepted
    finally:
        stop_anvil(node)

    with ChainBatcher(registry, max_items=10, max_delay=0.05) as batcher:
        futures = [
            batcher.submit(AllocateItem.for_lease(subnet="n", ip=f"10.0.0.{n}", client_id="b"))
            for n in range(2, 12)
        ]
        errors = [f.exception(timeout=30) for f in futures]

    assert all(isinstance(e, ChainUnavailable) and e.transient for e in errors)


# anvil's first development account: a well-known public test key, funded on every anvil.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def test_locally_signed_transactions(anvil_node):
    client = ChainClient.from_url(anvil_node.url, private_key=ANVIL_DEV_KEY,
                                  chain_id=anvil_node.chain_id)
    registry = client.registry()
    outcomes = registry.allocate_batch([
        AllocateItem.for_lease(subnet="k", ip=n, client_id="signed") for n in range(3)
    ])
    assert all(o.accepted for o in outcomes)
    assert registry.is_admin(client.sender)
