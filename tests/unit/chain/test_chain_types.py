"""Batch items refuse bad values in Python, before any ABI encoding."""

from __future__ import annotations

import pytest

from app.chain import AllocateItem, Outcome, Reason, ReleaseItem, holder_id, subnet_id


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subnet": b"short", "ip": 1, "holder": bytes(32)},
        {"subnet": bytes(32), "ip": -1, "holder": bytes(32)},
        {"subnet": bytes(32), "ip": 2**32, "holder": bytes(32)},
        {"subnet": bytes(32), "ip": 1, "holder": "not bytes"},
        {"subnet": bytes(32), "ip": 1, "holder": bytes(32), "expires": -5},
        {"subnet": bytes(32), "ip": 1, "holder": bytes(32), "expires": 2**64},
    ],
)
def test_bad_allocate_items_refused(kwargs):
    with pytest.raises(ValueError):
        AllocateItem(**kwargs)


def test_items_from_lease_words():
    item = AllocateItem.for_lease(subnet="10.0.0.0/24", ip="10.0.0.7", client_id="c1",
                                  expires=99)
    assert item.subnet == subnet_id("10.0.0.0/24")
    assert item.holder == holder_id("c1")
    assert item.ip == 0x0A000007
    assert item.as_abi() == (item.subnet, 0x0A000007, item.holder, 99)
    release = ReleaseItem.for_lease(subnet="10.0.0.0/24", ip="10.0.0.7", client_id="c1")
    assert release.as_abi()[3] is False


def test_outcome_json():
    item = AllocateItem.for_lease(subnet="s", ip="10.0.0.7", client_id="c1")
    outcome = Outcome(item=item, reason=Reason.TAKEN, tx_hash="0xab", block_number=3)
    assert outcome.to_json() == {
        "accepted": False, "reason": "taken", "operation": "allocate", "ip": "10.0.0.7",
        "tx_hash": "0xab", "block_number": 3,
    }
