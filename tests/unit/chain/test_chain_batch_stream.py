"""The batching rule in virtual time: a batch closes when full or when its time is up."""

from __future__ import annotations

from concurrent.futures import Future

from reactivex.testing import ReactiveTest, TestScheduler

from app.chain import AllocateItem
from app.chain.batcher import ChainRequest, batches_of


def request(n: int) -> ChainRequest:
    return ChainRequest(item=AllocateItem.for_lease(subnet="s", ip=n, client_id="c"),
                        future=Future())


def test_batches_close_by_count_or_time():
    scheduler = TestScheduler()
    # five items just after the subscription (at 200), a pause, then one more
    source = scheduler.create_hot_observable(
        *[ReactiveTest.on_next(201 + n, request(n)) for n in range(5)],
        ReactiveTest.on_next(800, request(9)),
        ReactiveTest.on_completed(2000),
    )

    observer = scheduler.start(
        lambda: batches_of(source, max_items=3, max_delay=100.0, scheduler=scheduler)
    )

    batches = [
        ([r.item.ip for r in m.value.value], m.time)
        for m in observer.messages if m.value.kind == "N"
    ]
    assert batches[0] == ([0, 1, 2], 203)  # full: closes at once
    assert batches[1][0] == [3, 4]  # the rest waits for the time limit
    assert batches[2][0] == [9]
    assert all(ips for ips, _ in batches)  # empty windows are dropped
