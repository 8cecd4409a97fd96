"""Admission control of the server under overload, deterministic: the worker pool is a queue
the test runs by hand and the clock is a number the test sets (no threads, no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import pytest

from app.dhcp import options as opt
from app.dhcp.codec import DhcpPacket, decode, encode
from app.dhcp.config import ServerConfig, SubnetConfig
from app.dhcp.errors import ConfigError
from app.dhcp.handler import is_stale, opens_exchange
from app.dhcp.memory import MemoryLeaseBackend
from app.dhcp.rfc2131 import Ask, plan
from app.dhcp.server import DhcpServer

IFACE = "eth1"  # the interface of the `subnet` fixture
SERVER = opt.ip("10.0.0.1")


class ManualPool(Executor):
    """Keeps submitted calls until the test runs them: 'waiting for a worker', made visible."""

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        assert not kwargs
        self.queue.append((fn, args))
        return Future()

    def run_all(self) -> None:
        queue, self.queue = self.queue, []
        for fn, args in queue:
            fn(*args)


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[DhcpPacket] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append(decode(data))
        return len(data)


class RecordingBackend(MemoryLeaseBackend):
    def __init__(self) -> None:
        super().__init__(offer_lifetime=30, decline_probation=3600)
        self.calls: list[str] = []

    def offer(self, client, requested, now):
        self.calls.append("offer")
        return super().offer(client, requested, now)

    def commit(self, client, address, now):
        self.calls.append("commit")
        return super().commit(client, address, now)


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, config: ServerConfig) -> None:
        self.pool = ManualPool()
        self.clock = Clock()
        self.sock = FakeSocket()
        self.backend = RecordingBackend()
        self.server = DhcpServer(interface=IFACE, config=config, backend=self.backend,
                                 sock=self.sock, executor=self.pool,  # type: ignore[arg-type]
                                 clock=self.clock)

    def receive(self, packet: DhcpPacket) -> None:
        self.server._dispatch(encode(packet), [])

    @property
    def counters(self) -> dict[str, int]:
        return self.server.counters.snapshot()

    def replies(self) -> list[int | None]:
        return [p.message_type for p in self.sock.sent]


@pytest.fixture
def harness(subnet: SubnetConfig) -> Callable[..., Harness]:
    def make(**policy: Any) -> Harness:
        config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,), workers=4, **policy)
        return Harness(config)
    return make


def mac(n: int) -> str:
    return f"02:00:00:00:00:{n:02x}"


def discover(make_request, n: int) -> DhcpPacket:
    return make_request(opt.DISCOVER, mac=mac(n), xid=n)


def selecting(make_request, n: int, address: str) -> DhcpPacket:
    return make_request(opt.REQUEST, mac=mac(n), xid=n, server_id=SERVER,
                        requested=opt.ip(address))


def test_a_discover_beyond_the_new_exchange_budget_is_dropped_but_a_request_admitted(
        harness, make_request):
    h = harness(max_new_exchanges=1)
    h.receive(discover(make_request, 1))  # takes the only slot for new exchanges
    h.receive(discover(make_request, 2))  # dropped at once: the client retransmits
    h.receive(selecting(make_request, 3, "10.0.0.105"))  # half done: still admitted
    assert len(h.pool.queue) == 2
    assert h.counters["dropped_overload_new"] == 1
    assert "dropped_overload" not in h.counters

    h.pool.run_all()
    assert h.backend.calls == ["offer", "commit"]
    assert h.replies() == [opt.OFFER, opt.ACK]

    # The DISCOVER finished, so its slot is free again: the retransmission gets in.
    h.receive(discover(make_request, 2))
    assert len(h.pool.queue) == 1
    assert h.counters["dropped_overload_new"] == 1


def test_requests_are_not_limited_by_the_new_exchange_budget(harness, make_request):
    h = harness(max_new_exchanges=1)
    h.receive(discover(make_request, 1))
    for n in range(2, 6):
        h.receive(selecting(make_request, n, f"10.0.0.10{n}"))
    assert len(h.pool.queue) == 5
    assert h.counters.get("dropped_overload_new", 0) == 0


def test_a_full_queue_still_drops_anything_as_dropped_overload(harness, make_request):
    h = harness(max_new_exchanges=2, max_pending=1)
    h.receive(selecting(make_request, 1, "10.0.0.101"))
    h.receive(discover(make_request, 2))  # a new-exchange slot, but no room in the queue
    h.receive(selecting(make_request, 3, "10.0.0.103"))
    assert h.counters["dropped_overload"] == 2
    assert h.counters.get("dropped_overload_new", 0) == 0
    h.pool.run_all()
    # The refused DISCOVER gave its new-exchange slot back: two fit again.
    h.receive(discover(make_request, 2))
    h.pool.run_all()
    h.receive(discover(make_request, 4))
    assert h.counters.get("dropped_overload_new", 0) == 0


def test_a_stale_ask_is_dropped_without_calling_the_backend(harness, make_request):
    h = harness(max_new_exchanges=1, stale_after=1.0)
    h.receive(discover(make_request, 1))  # queued at 100.0
    h.receive(selecting(make_request, 2, "10.0.0.102"))
    h.clock.now = 101.5  # the workers were busy: both waited past the client's patience
    h.pool.run_all()
    assert h.backend.calls == []
    assert h.sock.sent == []
    assert h.counters["dropped_stale"] == 2
    assert "offers" not in h.counters and "acks" not in h.counters

    # Their slots are free again, and an ask run within the bound is served.
    h.receive(discover(make_request, 1))  # queued at 101.5
    h.clock.now = 102.5  # exactly the bound: not stale yet
    h.pool.run_all()
    assert h.backend.calls == ["offer"]
    assert h.replies() == [opt.OFFER]
    assert h.counters["dropped_stale"] == 2


def test_inline_servers_admit_everything(subnet, make_request):
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,), workers=0,
                          max_new_exchanges=1)
    sock = FakeSocket()
    server = DhcpServer(interface=IFACE, config=config, backend=MemoryLeaseBackend(),
                        sock=sock)  # type: ignore[arg-type]
    for n in (1, 2, 3):
        server._dispatch(encode(discover(make_request, n)), [])
    assert [p.message_type for p in sock.sent] == [opt.OFFER] * 3


# -- the pure decisions and the config -------------------------------------------------------


def ask_for(packet: DhcpPacket, config: ServerConfig) -> Ask:
    planned = plan(packet, interface=IFACE, config=config, to_broadcast=None)
    assert isinstance(planned, Ask)
    return planned


def test_only_a_discover_opens_an_exchange(config, make_request):
    assert opens_exchange(ask_for(discover(make_request, 1), config))
    others = [selecting(make_request, 1, "10.0.0.101"),
              make_request(opt.REQUEST, requested=opt.ip("10.0.0.101")),  # INIT-REBOOT
              make_request(opt.REQUEST, ciaddr="10.0.0.101"),  # RENEWING
              make_request(opt.RELEASE, ciaddr="10.0.0.101", server_id=SERVER),
              make_request(opt.DECLINE, server_id=SERVER, requested=opt.ip("10.0.0.101"))]
    assert not any(opens_exchange(ask_for(p, config)) for p in others)


def test_stale_means_waited_longer_than_the_bound(subnet):
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,), stale_after=0.5)
    assert not is_stale(10.0, 10.0, config)
    assert not is_stale(10.0, 10.5, config)
    assert is_stale(10.0, 10.51, config)


@pytest.mark.parametrize(("workers", "given", "budget"),
                         [(16, None, 8), (8, None, 4), (2, None, 2), (0, None, 2), (16, 3, 3)])
def test_new_exchange_budget(subnet, workers, given, budget):
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,), workers=workers,
                          max_new_exchanges=given)
    assert config.new_exchange_budget == budget


@pytest.mark.parametrize("policy", [{"max_new_exchanges": 0}, {"stale_after": 0.0},
                                    {"reply_burst": -1}, {"reply_gap": -0.001},
                                    {"reply_gap": float("nan")}])
def test_admission_policy_is_checked(subnet, policy):
    with pytest.raises(ConfigError):
        ServerConfig(server_id="10.0.0.1", subnets=(subnet,), **policy)


# -- a grouping backend (GroupedLeaseBackend): answered from its own thread, no worker ----


class GroupingBackend(MemoryLeaseBackend):
    """Takes offers and commits as futures the test completes by hand (one 'group')."""

    def __init__(self) -> None:
        super().__init__(offer_lifetime=30, decline_probation=3600)
        self.open: list[tuple[Future[Any], str, Any, str | None, float]] = []

    def begin(self, call, client, address, now):
        future: Future[Any] = Future()
        self.open.append((future, call, client, address, now))
        return future

    def commit_group(self) -> None:
        group, self.open = self.open, []
        for future, call, client, address, now in group:
            method = self.offer if call == "offer" else self.commit
            future.set_result(method(client, address, now))


def grouped_harness(subnet: SubnetConfig, **policy: Any) -> Harness:
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,), workers=4, **policy)
    harness = Harness(config)
    harness.backend = GroupingBackend()  # type: ignore[assignment]
    harness.server = DhcpServer(interface=IFACE, config=config, backend=harness.backend,
                                sock=harness.sock, executor=harness.pool,  # type: ignore[arg-type]
                                clock=harness.clock)
    return harness


def test_a_grouping_backend_answers_from_its_group_without_a_worker(subnet, make_request):
    h = grouped_harness(subnet, max_new_exchanges=8)
    for n in range(3):
        h.receive(discover(make_request, n))
    assert h.pool.queue == [] and h.replies() == []  # no worker, no reply before the group
    h.backend.commit_group()  # type: ignore[attr-defined]
    assert h.replies() == [opt.OFFER] * 3
    assert len({p.yiaddr for p in h.sock.sent}) == 3
    assert h.counters["offers"] == 3


def test_grouped_new_exchanges_keep_their_budget_and_give_it_back(subnet, make_request):
    h = grouped_harness(subnet, max_new_exchanges=2)
    for n in range(3):
        h.receive(discover(make_request, n))
    assert h.counters["dropped_overload_new"] == 1  # the third DISCOVER: over the budget
    h.backend.commit_group()  # type: ignore[attr-defined]
    h.receive(discover(make_request, 3))  # the budget is back once the group answered
    h.backend.commit_group()  # type: ignore[attr-defined]
    assert h.counters["offers"] == 3 and h.counters["dropped_overload_new"] == 1


def test_a_grouped_call_that_fails_is_a_counted_drop_not_a_reply(subnet, make_request):
    h = grouped_harness(subnet)
    h.receive(discover(make_request, 1))
    future = h.backend.open[0][0]  # type: ignore[attr-defined]
    future.set_exception(RuntimeError("the group's transaction failed"))
    assert h.replies() == [] and h.counters["backend_errors"] == 1


def test_calls_a_grouping_backend_does_not_take_go_to_the_workers(subnet, make_request):
    h = grouped_harness(subnet)
    h.receive(make_request(opt.RELEASE, mac=mac(5), xid=5, ciaddr="10.0.0.50",
                           server_id=SERVER))
    assert len(h.pool.queue) == 1 and h.backend.open == []  # type: ignore[attr-defined]


class AtOnceBackend(GroupingBackend):
    """Answers offers from memory (`at_once`); everything else waits for its group."""

    def at_once(self, call, client, address, now):
        from app.dhcp.backend import LATER

        if call == "offer":
            return self.offer(client, address, now)
        return LATER


def test_what_the_backend_answers_at_once_takes_no_slot_and_waits_for_no_group(
        subnet, make_request):
    h = grouped_harness(subnet, max_new_exchanges=2)
    h.backend = h.server.backend = AtOnceBackend()  # type: ignore[assignment]
    h.server._at_once = h.backend.at_once  # type: ignore[attr-defined]
    h.server._begin = h.backend.begin  # type: ignore[attr-defined]
    for n in range(5):  # more than the budget of new exchanges: none is held
        h.receive(discover(make_request, n))
    assert h.replies() == [opt.OFFER] * 5 and h.counters.get("dropped_overload_new", 0) == 0
    offered = h.sock.sent[0].yiaddr
    h.receive(make_request(opt.REQUEST, mac=mac(0), xid=0, requested=opt.ip(offered),
                           server_id=SERVER))
    assert h.replies() == [opt.OFFER] * 5  # the REQUEST waits for its group
    h.backend.commit_group()  # type: ignore[attr-defined]
    assert h.replies() == [opt.OFFER] * 5 + [opt.ACK]


def test_a_groups_replies_go_out_paced_and_hold_their_slots_until_sent(subnet, make_request):
    from app.dhcp.pacer import Pacer

    h = grouped_harness(subnet, max_new_exchanges=5)
    pauses: list[float] = []
    pacer = Pacer(h.server._answer_paced, burst=2, gap=0.25, sleep=pauses.append,
                  start=False)
    h.server._pacer = pacer
    for n in range(5):
        h.receive(discover(make_request, n))
    h.backend.commit_group()  # type: ignore[attr-defined]
    assert h.replies() == []  # queued for the pacer, not sent on the group's thread
    h.receive(discover(make_request, 5))  # the five slots are held until the replies go out
    assert h.counters["dropped_overload_new"] == 1
    assert pacer.drain() == 5
    assert h.replies() == [opt.OFFER] * 5 and pauses == [0.25, 0.25]  # 2, 2, then 1
    h.receive(discover(make_request, 6))  # the slots are back
    h.backend.commit_group()  # type: ignore[attr-defined]
    pacer.drain()
    assert h.counters["offers"] == 6 and h.counters["dropped_overload_new"] == 1


def test_a_started_server_freezes_what_it_loaded_and_collects_young_objects_less_often():
    import gc

    from app.dhcp.server import GC_THRESHOLD, tune_collector

    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == GC_THRESHOLD and GC_THRESHOLD[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_slots_are_taken_up_to_their_limit_and_never_given_back_twice():
    from app.dhcp.server import Slots

    slots = Slots(2)
    assert slots.take() and slots.take() and not slots.take()  # never waits: says no
    slots.give()
    assert slots.free == 1 and slots.take() and not slots.take()
    slots.give()
    slots.give()
    with pytest.raises(ValueError, match="not taken"):
        slots.give()
    assert slots.free == 2
