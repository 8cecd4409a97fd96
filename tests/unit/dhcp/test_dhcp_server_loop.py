"""The socket loop on loopback: garbage is counted, nothing escapes, stop() is prompt."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from app.dhcp import options as opt
from app.dhcp.codec import encode
from app.dhcp.config import ServerConfig, SubnetConfig
from app.dhcp.handler import Counters
from app.dhcp.memory import MemoryLeaseBackend
from app.dhcp.server import DhcpServer, open_socket


@pytest.fixture
def loopback_server():
    subnet = SubnetConfig(cidr="127.0.0.0/8", pool=("127.0.10.1", "127.0.10.9"),
                          interface="lo")
    config = ServerConfig(server_id="127.0.0.1", subnets=(subnet,), workers=2)
    sock = open_socket("lo", 0)  # an ephemeral port: no clash with a real server
    server = DhcpServer(interface="lo", config=config, backend=MemoryLeaseBackend(),
                        sock=sock)
    server.start()
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.stop()
        sock.close()


def test_loop_counts_garbage_and_keeps_going(loopback_server, make_request):
    server, port = loopback_server
    datagrams = [b"", b"garbage" * 10, bytes(300), encode(make_request(opt.OFFER)),
                 encode(make_request(opt.INFORM, ciaddr="0.0.0.0"))]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for data in datagrams:
            sender.sendto(data, ("127.0.0.1", port))
        # A request whose backend call runs on a worker thread; its reply goes to a
        # relay address that nobody listens on, which is fine for this test.
        sender.sendto(encode(make_request(opt.DISCOVER, giaddr="127.0.0.2")),
                      ("127.0.0.1", port))
    end = time.monotonic() + 10
    while server.counters["sent"] < 1 and time.monotonic() < end:
        time.sleep(0.01)  # polling for the worker thread, bounded
    counts = server.counters.snapshot()
    assert counts["received"] == len(datagrams) + 1
    assert counts["dropped_malformed"] == 3
    assert counts["dropped_not_request"] == 1
    assert counts["dropped_bad_request"] == 1
    assert counts["offers"] == 1 and counts["sent"] == 1


def test_stop_returns_promptly_while_blocked_in_receive(loopback_server):
    server, _ = loopback_server
    server.stop(timeout=5)
    assert not server._thread.is_alive()


class SlowForOneClient(MemoryLeaseBackend):
    """Blocks the offer for one client until released, like a lease process past patience."""

    def __init__(self, slow_chaddr: bytes) -> None:
        super().__init__()
        self.slow_chaddr = slow_chaddr
        self.release_slow = threading.Event()

    def offer(self, client, requested, now):
        if client.chaddr == self.slow_chaddr:
            self.release_slow.wait(10)
        return super().offer(client, requested, now)


def test_a_slow_backend_call_does_not_stall_other_clients(make_request):
    subnet = SubnetConfig(cidr="127.0.0.0/8", pool=("127.0.10.1", "127.0.10.9"),
                          interface="lo")
    config = ServerConfig(server_id="127.0.0.1", subnets=(subnet,), workers=2)
    slow = make_request(opt.DISCOVER, mac="02:00:00:00:00:01", giaddr="127.0.0.2")
    fast = make_request(opt.DISCOVER, mac="02:00:00:00:00:02", giaddr="127.0.0.2")
    backend = SlowForOneClient(slow.chaddr)
    sock = open_socket("lo", 0)
    server = DhcpServer(interface="lo", config=config, backend=backend, sock=sock)
    server.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(encode(slow), sock.getsockname())
            sender.sendto(encode(fast), sock.getsockname())
        wait_until(lambda: server.counters["offers"] == 1)
        assert not backend.release_slow.is_set()  # the fast client was served meanwhile
        backend.release_slow.set()
        wait_until(lambda: server.counters["offers"] == 2)
    finally:
        backend.release_slow.set()
        server.stop()
        sock.close()


def wait_until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)  # polling a worker thread, bounded


def test_counts_from_many_threads_add_up_while_being_read() -> None:
    counters = Counters()
    start = threading.Barrier(5)

    def count(kind: str) -> None:
        start.wait()
        for _ in range(20_000):
            counters.add("received", kind)

    threads = [threading.Thread(target=count, args=(f"requests_{n % 2}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    start.wait()
    seen = [counters.snapshot() for _ in range(100)]  # while the threads count
    for thread in threads:
        thread.join()
    assert all(s.get("received", 0) >= s.get("requests_0", 0) for s in seen)
    assert counters.snapshot() == {"received": 80_000, "requests_0": 40_000,
                                   "requests_1": 40_000}
    assert counters["received"] == 80_000 and counters["dropped_malformed"] == 0
