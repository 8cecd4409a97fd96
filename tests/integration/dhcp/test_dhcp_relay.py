"""Relayed traffic and garbage on the wire, with packets crafted by scapy (the oracle).

The client namespace plays a relay agent: it owns 10.88.0.1 (giaddr, a subnet the server
only knows through relays) and talks to the server from port 67, as a relay does.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

pytestmark = pytest.mark.integration

RELAY_IP = "10.88.0.1"
RELAY_INFO = bytes([1, 6]) + b"port-7" + bytes([2, 4]) + b"rack"
MAC = bytes.fromhex("02aabbccdd01")

# Runs inside the client namespace: send datagrams from RELAY_IP:67, print replies as JSON.
RELAY_SCRIPT = """
import json, socket, sys
spec = json.loads(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((spec["bind"], 67))
s.settimeout(spec["timeout"])
replies = []
for data in spec["send"]:
    s.sendto(bytes.fromhex(data), (spec["server"], 67))
if spec["expect"]:
    try:
        data, peer = s.recvfrom(4096)
        replies.append({"data": data.hex(), "peer": list(peer)})
    except socket.timeout:
        pass
print(json.dumps(replies))
"""


@pytest.fixture
def relay(dhcp_network):
    server_ns, client_ns = dhcp_network
    client_ns.run(["ip", "addr", "add", "10.77.0.2/24", "dev", client_ns.interface],
                  check=True)
    client_ns.run(["ip", "addr", "add", f"{RELAY_IP}/32", "dev", "lo"], check=True)
    server_ns.run(["ip", "route", "add", "10.88.0.0/24", "via", "10.77.0.2"], check=True)

    def exchange(*packets: bytes, expect: bool = True, timeout: float = 3.0) -> list[BOOTP]:
        spec = {"bind": RELAY_IP, "server": "10.77.0.1", "timeout": timeout,
                "expect": expect, "send": [p.hex() for p in packets]}
        result = client_ns.run([sys.executable, "-c", RELAY_SCRIPT, json.dumps(spec)],
                               timeout=timeout + 10)
        assert result.returncode == 0, result.stderr
        replies = json.loads(result.stdout)
        for reply in replies:
            assert reply["peer"] == ["10.77.0.1", 67]  # from the server port
        return [BOOTP(bytes.fromhex(r["data"])) for r in replies]

    return exchange


def relayed(message_type: str, *options: tuple) -> bytes:
    return bytes(
        BOOTP(op=1, hops=1, xid=0x5150, giaddr=RELAY_IP, chaddr=MAC + bytes(10))
        / DHCP(options=[("message-type", message_type), *options,
                        ("relay_agent_information", RELAY_INFO), "end"])
    )


def dhcp_options(packet: BOOTP) -> dict:
    return {o[0]: o[1] for o in packet[DHCP].options if isinstance(o, tuple)}


def test_relayed_dora_uses_the_giaddr_subnet_and_echoes_option_82(dhcp_server, relay):
    [offer] = relay(relayed("discover"))
    o = dhcp_options(offer)
    assert o["message-type"] == 2 and offer.giaddr == RELAY_IP
    assert offer.yiaddr.startswith("10.88.0.")  # the relay's subnet, not the interface's
    assert o["relay_agent_information"] == RELAY_INFO
    assert offer[DHCP].options[-2][0] == "relay_agent_information"  # last before end
    assert o["router"] == "10.88.0.1"
    [ack] = relay(relayed("request", ("server_id", "10.77.0.1"),
                          ("requested_addr", offer.yiaddr)))
    a = dhcp_options(ack)
    assert a["message-type"] == 5 and ack.yiaddr == offer.yiaddr
    assert a["relay_agent_information"] == RELAY_INFO
    stats = dhcp_server.wait_for(
        lambda s: s["bindings"].get(offer.yiaddr, {}).get("state") == "bound", what="bound")
    assert stats["bindings"][offer.yiaddr]["subnet"] == "10.88.0.0/24"


def test_relayed_nak_has_the_broadcast_bit(dhcp_server, relay):
    [nak] = relay(relayed("request", ("requested_addr", "192.168.5.5")))
    assert dhcp_options(nak)["message-type"] == 6
    assert nak.flags & 0x8000


GARBAGE = {
    "empty": b"",
    "random": os.urandom(300),
    "truncated": relayed("discover")[:150],
    "oversized": relayed("discover") + bytes(1500),
    "wrong magic": relayed("discover")[:236] + b"\x00\x00\x00\x00" + relayed("discover")[240:],
    "option loop": relayed("discover")[:240] + b"\x34\x01\x01\x34\x01\x02\xff",
    "option past end": relayed("discover")[:240] + b"\x35\x01\x01\x0c\x40ab",
    "bootreply": bytes(BOOTP(op=2, xid=1, giaddr=RELAY_IP, chaddr=MAC)
                       / DHCP(options=[("message-type", "offer"), "end"])),
}


def test_garbage_is_dropped_counted_and_the_server_keeps_serving(dhcp_server, relay):
    assert relay(*GARBAGE.values(), expect=False) == []
    counters = dhcp_server.wait_for(
        lambda s: s["counters"].get("received", 0) >= len(GARBAGE), what="all received"
    )["counters"]
    assert counters["dropped_malformed"] == len(GARBAGE) - 1
    assert counters["dropped_not_request"] == 1
    assert counters.get("sent", 0) == 0
    # Still alive, and nothing was allocated by the garbage.
    [offer] = relay(relayed("discover"))
    assert offer.yiaddr == "10.88.0.10"
    stats = dhcp_server.wait_for(lambda s: s["counters"].get("offers") == 1, what="offer")
    assert list(stats["bindings"]) == ["10.88.0.10"]
