"""The micro-batcher against a real contract, on the embedded chain and on anvil."""

from __future__ import annotations

import threading

import pytest

from app.chain import (
    AllocateItem,
    Reason,
    ReleaseItem,
    Unauthorized,
    holder_id,
    ip_to_uint,
    subnet_id,
)
from app.chain.batcher import BatcherClosed, ChainBatcher

pytestmark = pytest.mark.integration

SUBNET = "10.30.0.0/16"


def test_concurrent_submitters_each_get_their_own_outcome(registry):
    # 8 threads x 40 items; every address is wanted by two different threads.
    threads_n, per_thread = 8, 40
    reports = []
    results: dict[int, list] = {}

    with ChainBatcher(registry, max_items=100, max_delay=0.05, on_batch=reports.append) as b:
        def submitter(t: int) -> None:
            items = [
                AllocateItem.for_lease(
                    subnet=SUBNET, ip=f"10.30.0.{(t // 2) * per_thread + n}",
                    client_id=f"thread-{t}",
                )
                for n in range(per_thread)
            ]
            futures = [b.submit(item) for item in items]
            results[t] = [(item, f.result(timeout=60)) for item, f in zip(items, futures)]

        threads = [threading.Thread(target=submitter, args=(t,)) for t in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    pairs = [pair for t in range(threads_n) for pair in results[t]]
    assert len(pairs) == threads_n * per_thread
    assert all(outcome.item is item for item, outcome in pairs)
    winners: dict[int, bytes] = {}
    for item, outcome in pairs:
        if outcome.accepted:
            assert item.ip not in winners, "two acceptances for one address"
            winners[item.ip] = item.holder
        else:
            assert outcome.reason is Reason.TAKEN
    assert len(winners) == threads_n // 2 * per_thread
    for ip, holder in winners.items():
        assert registry.holder_of(subnet_id(SUBNET), ip).holder == holder
    assert sum(r.size for r in reports) == threads_n * per_thread
    assert len(reports) < threads_n * per_thread  # batched: fewer transactions than items


def test_conflicting_pair_in_one_batch(registry):
    with ChainBatcher(registry, max_items=2, max_delay=5.0) as batcher:
        first = batcher.submit(AllocateItem.for_lease(subnet=SUBNET, ip="10.30.9.9",
                                                      client_id="alice"))
        second = batcher.submit(AllocateItem.for_lease(subnet=SUBNET, ip="10.30.9.9",
                                                       client_id="bob"))
        outcomes = [first.result(timeout=30), second.result(timeout=30)]

    assert [o.reason for o in outcomes] == [Reason.ACCEPTED, Reason.TAKEN]
    assert outcomes[0].tx_hash == outcomes[1].tx_hash


def test_release_and_allocation_in_one_batch(registry):
    registry.allocate(AllocateItem.for_lease(subnet=SUBNET, ip="10.30.8.8", client_id="alice"))
    with ChainBatcher(registry, max_items=2, max_delay=5.0) as batcher:
        taken = batcher.submit(AllocateItem.for_lease(subnet=SUBNET, ip="10.30.8.8",
                                                      client_id="bob"))
        freed = batcher.submit(ReleaseItem.for_lease(subnet=SUBNET, ip="10.30.8.8",
                                                     client_id="alice"))
        # releases go first in a batch, so bob gets the address alice gave back
        assert freed.result(timeout=30).accepted
        assert taken.result(timeout=30).accepted
    assert registry.holder_of(subnet_id(SUBNET), ip_to_uint("10.30.8.8")).holder == (
        holder_id("bob")
    )


def test_closed_batcher_refuses_new_items(registry):
    batcher = ChainBatcher(registry, max_items=10, max_delay=0.05)
    pending = batcher.submit(AllocateItem.for_lease(subnet=SUBNET, ip="10.30.7.7",
                                                    client_id="a"))
    batcher.close()
    assert pending.result(timeout=30).accepted  # flushed on close
    with pytest.raises(BatcherClosed):
        batcher.submit(AllocateItem.for_lease(subnet=SUBNET, ip="10.30.7.8", client_id="a"))


def test_refused_transaction_fails_every_future_as_business_error(registry, outsider):
    stranger = registry.as_sender(outsider)  # not a writer: the whole transaction reverts
    with ChainBatcher(stranger, max_items=3, max_delay=0.05) as batcher:
        futures = [
            batcher.submit(AllocateItem.for_lease(subnet=SUBNET, ip=f"10.30.6.{n}",
                                                  client_id="a"))
            for n in range(3)
        ]
        errors = [f.exception(timeout=30) for f in futures]

    assert all(isinstance(e, Unauthorized) and not e.transient for e in errors)
