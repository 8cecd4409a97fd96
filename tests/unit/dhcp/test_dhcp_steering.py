"""Several server processes on one port: the kernel's steering program and `owner` agree,
and a server of a group ignores what is another's."""

from __future__ import annotations

import random
import select
import socket
import time

import pytest

from app.dhcp import options as opt
from app.dhcp.codec import encode
from app.dhcp.config import ServerConfig, SubnetConfig
from app.dhcp.memory import MemoryLeaseBackend
from app.dhcp.server import DhcpServer, open_group, open_socket
from app.dhcp.steering import CHADDR_WORD, Shard, owner


def datagram(word: int) -> bytes:
    data = bytearray(300)
    data[CHADDR_WORD:CHADDR_WORD + 4] = word.to_bytes(4, "big")
    return bytes(data)


def test_owner_reads_the_chaddr_word_and_short_datagrams_go_to_the_first() -> None:
    assert owner(datagram(7), 3) == 1
    assert owner(datagram(0xFFFFFFFF), 2) == 1
    assert owner(b"\x01" * (CHADDR_WORD + 3), 3) == 0


@pytest.mark.parametrize(("index", "count"), [(0, 0), (3, 3), (-1, 2)])
def test_a_shard_outside_its_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError):
        Shard(index, count)


def test_the_kernel_delivers_each_datagram_to_the_socket_owner_names() -> None:
    socks = open_group("lo", 0, 3)
    try:
        port = socks[0].getsockname()[1]
        assert {s.getsockname()[1] for s in socks} == {port}
        rng = random.Random(5)
        sent = [datagram(rng.getrandbits(32)) for _ in range(60)] + [b"short", b""]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for data in sent:
                sender.sendto(data, ("127.0.0.1", port))
        got: list[list[bytes]] = [[] for _ in socks]
        deadline = time.monotonic() + 10  # bounded: a lost datagram fails below
        while sum(map(len, got)) < len(sent) and time.monotonic() < deadline:
            ready, _, _ = select.select(socks, [], [], 0.5)
            for sock in ready:
                got[socks.index(sock)].append(sock.recv(4096))
        assert sorted(d for part in got for d in part) == sorted(sent)
        for index, part in enumerate(got):
            assert part and all(owner(d, 3) == index for d in part)
    finally:
        for sock in socks:
            sock.close()


def test_a_server_of_a_group_answers_its_clients_and_ignores_the_others(make_request):
    subnet = SubnetConfig(cidr="127.0.0.0/8", pool=("127.0.10.1", "127.0.10.9"),
                          interface="lo")
    config = ServerConfig(server_id="127.0.0.1", subnets=(subnet,), workers=0)
    # A socket of its own: it sees every datagram, as each process of a group sees every
    # copy of a broadcast.
    sock = open_socket("lo", 0)
    server = DhcpServer(interface="lo", config=config, backend=MemoryLeaseBackend(),
                        sock=sock, shard=Shard(1, 2))
    server.start()
    try:
        ours = make_request(opt.DISCOVER, mac="02:00:00:00:00:01", giaddr="127.0.0.2")
        theirs = make_request(opt.DISCOVER, mac="02:00:00:00:00:02", giaddr="127.0.0.2")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for packet in (theirs, ours):
                sender.sendto(encode(packet), ("127.0.0.1", sock.getsockname()[1]))
        deadline = time.monotonic() + 10  # polling for the loop thread, bounded
        while server.counters["offers"] + server.counters["ignored_other_process"] < 2 \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        counts = server.counters.snapshot()
        assert counts["ignored_other_process"] == 1
        assert counts["received"] == counts["offers"] == 1
    finally:
        server.stop()
        sock.close()
