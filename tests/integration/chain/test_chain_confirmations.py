"""Confirmation depth: a receipt counts only once N blocks are on top of it (anvil)."""

from __future__ import annotations

import threading

import pytest

from app.chain import AllocateItem, ChainTimeout
from app.chain.client import ChainClient

pytestmark = pytest.mark.integration


def test_waits_for_confirmations(anvil_node):
    registry = ChainClient.from_url(anvil_node.url).registry()
    deep = registry.as_sender(ChainClient.from_url(anvil_node.url, confirmations=3))
    done = threading.Event()

    def miner() -> None:  # anvil mines only on demand: give the chain blocks to grow
        rpc = ChainClient.from_url(anvil_node.url).w3.provider
        while not done.wait(0.02):
            rpc.make_request("evm_mine", [])

    thread = threading.Thread(target=miner)
    thread.start()
    try:
        outcome = deep.allocate(AllocateItem.for_lease(subnet="c", ip=1, client_id="a"))
    finally:
        done.set()
        thread.join()

    assert outcome.accepted
    assert deep.client.block_number() >= outcome.block_number + 3


def test_missing_confirmations_time_out_transiently(anvil_node):
    registry = ChainClient.from_url(anvil_node.url).registry()
    deep = registry.as_sender(ChainClient.from_url(anvil_node.url, confirmations=5, timeout=0.5))
    with pytest.raises(ChainTimeout) as late:
        deep.allocate(AllocateItem.for_lease(subnet="c", ip=2, client_id="a"))
    assert late.value.transient
