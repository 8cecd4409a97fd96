"""The hand-rolled batch encoding is byte for byte what web3 encodes from the ABI."""

from __future__ import annotations

import pytest
from web3 import Web3

from app.chain import AllocateItem, ReleaseItem
from app.chain.abi import encode_allocate_batch, encode_apply_batch, encode_release_batch
from app.chain.artifact import load_artifact

ALLOCS = [
    AllocateItem.for_lease(subnet="10.0.0.0/24", ip=f"10.0.0.{n}", client_id=f"c{n}",
                           expires=n * 1000)
    for n in range(3)
]
RELEASES = [
    ReleaseItem.for_lease(subnet="10.0.0.0/24", ip=f"10.0.0.{n}", client_id=f"c{n}",
                          force=n == 1)
    for n in range(2)
]


@pytest.fixture(scope="module")
def contract():
    w3 = Web3()
    return w3.eth.contract(address="0x" + "11" * 20, abi=load_artifact().abi)


def web3_data(contract, name, *args):
    return bytes.fromhex(getattr(contract.functions, name)(*args)._encode_transaction_data()[2:])


@pytest.mark.parametrize("count", [0, 1, 3])
def test_allocate_batch(contract, count):
    items = ALLOCS[:count]
    assert encode_allocate_batch(items) == web3_data(
        contract, "allocate_batch", [i.as_abi() for i in items]
    )


def test_release_batch(contract):
    assert encode_release_batch(RELEASES) == web3_data(
        contract, "release_batch", [i.as_abi() for i in RELEASES]
    )


@pytest.mark.parametrize(("r", "a"), [(0, 0), (2, 3), (1, 0), (0, 2)])
def test_apply_batch(contract, r, a):
    releases, allocations = RELEASES[:r], ALLOCS[:a]
    assert encode_apply_batch(releases, allocations) == web3_data(
        contract, "apply_batch", [i.as_abi() for i in releases], [i.as_abi() for i in allocations]
    )
