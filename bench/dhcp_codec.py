"""Build+parse rate of a DHCP packet: Leaseflow's codec next to scapy's.

The server decodes every request and encodes every reply, so this rate bounds what one
core can serve. Prints one line per codec; nothing is asserted.

    python -m bench.dhcp_codec [--seconds 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from app.dhcp import options as opt
from app.dhcp.codec import BOOTREQUEST, DhcpPacket, decode, encode

MAC = bytes.fromhex("020000abcdef")


def ours() -> None:
    packet = DhcpPacket(
        op=BOOTREQUEST, xid=0x1234, giaddr="10.0.0.1", chaddr=MAC,
        options={
            opt.MESSAGE_TYPE: bytes((opt.REQUEST,)),
            opt.CLIENT_ID: b"\x01" + MAC,
            opt.REQUESTED_IP: opt.ip("10.0.0.100"),
            opt.SERVER_ID: opt.ip("10.0.0.1"),
            opt.PARAMETER_REQUEST_LIST: bytes([1, 3, 6, 15, 51, 54]),
        },
    )
    parsed = decode(encode(packet))
    assert parsed.requested_ip == "10.0.0.100"


def scapy_factory() -> Callable[[], None]:
    from scapy.layers.dhcp import BOOTP, DHCP

    def scapy() -> None:
        wire = bytes(
            BOOTP(op=1, xid=0x1234, giaddr="10.0.0.1", chaddr=MAC + bytes(10))
            / DHCP(options=[("message-type", "request"), ("client_id", b"\x01" + MAC),
                            ("requested_addr", "10.0.0.100"), ("server_id", "10.0.0.1"),
                            ("param_req_list", [1, 3, 6, 15, 51, 54]), "end"])
        )
        parsed = BOOTP(wire)
        assert parsed[DHCP].options[2][1] == "10.0.0.100"

    return scapy


def rate(fn: Callable[[], None], seconds: float) -> float:
    fn()  # warm up (imports, caches)
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    ours_rate = rate(ours, args.seconds)
    scapy_rate = rate(scapy_factory(), args.seconds)
    print(f"{'codec':<12}{'build+parse/s':>16}")
    print(f"{'leaseflow':<12}{ours_rate:>16,.0f}")
    print(f"{'scapy':<12}{scapy_rate:>16,.0f}")
    print(f"leaseflow / scapy: {ours_rate / scapy_rate:.0f}x")


if __name__ == "__main__":
    main()
