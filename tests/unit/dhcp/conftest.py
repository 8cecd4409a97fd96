"""Fixtures for the DHCP unit tests: a two-subnet server config, a memory backend, and a
`dhcp_client` that crafts requests and runs them through the server's `handle()`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions

from app.dhcp import options as opt
from app.dhcp.codec import BOOTREQUEST, DhcpPacket, decode, encode, encode_options
from app.dhcp.config import ServerConfig, SubnetConfig
from app.dhcp.handler import Counters, handle
from app.dhcp.memory import MemoryLeaseBackend
from app.dhcp.rfc2131 import Outcome, Reply

SERVER_ID = "10.0.0.1"
IFACE = "eth1"


@pytest.fixture
def subnet() -> SubnetConfig:
    return SubnetConfig(cidr="10.0.0.0/24", pool=("10.0.0.100", "10.0.0.109"),
                        gateway="10.0.0.1", dns=("10.0.0.53",), domain_name="lab.example",
                        lease_time=600, interface=IFACE)


@pytest.fixture
def relayed_subnet() -> SubnetConfig:
    # Reached only through a relay whose giaddr is 10.9.0.1.
    return SubnetConfig(cidr="10.9.0.0/24", pool=("10.9.0.10", "10.9.0.20"),
                        gateway="10.9.0.1", lease_time=1200)


@pytest.fixture
def config(subnet: SubnetConfig, relayed_subnet: SubnetConfig) -> ServerConfig:
    return ServerConfig(server_id=SERVER_ID, subnets=(subnet, relayed_subnet), workers=0)


@pytest.fixture
def backend() -> MemoryLeaseBackend:
    return MemoryLeaseBackend(offer_lifetime=30, decline_probation=3600)


def request(message_type: int | None, *, mac: str = "02:00:00:00:00:01", xid: int = 0x1000,
            ciaddr: str = "0.0.0.0", giaddr: str = "0.0.0.0", flags: int = 0,
            op: int = BOOTREQUEST, **options: bytes) -> DhcpPacket:
    """A client request; keyword options by name: requested, server_id, client_id, prl, ..."""
    names = {"requested": opt.REQUESTED_IP, "server_id": opt.SERVER_ID,
             "client_id": opt.CLIENT_ID, "prl": opt.PARAMETER_REQUEST_LIST,
             "hostname": opt.HOSTNAME, "relay": opt.RELAY_AGENT_INFO}
    opts: dict[int, bytes] = {}
    if message_type is not None:
        opts[opt.MESSAGE_TYPE] = bytes((message_type,))
    for name, value in options.items():
        opts[names[name]] = value
    return DhcpPacket(op=op, xid=xid, ciaddr=ciaddr, giaddr=giaddr, flags=flags,
                      chaddr=bytes.fromhex(mac.replace(":", "")), options=opts)


class DhcpClientDriver:
    """Runs crafted requests through `handle()` at a controllable `now`."""

    def __init__(self, config: ServerConfig, backend: MemoryLeaseBackend) -> None:
        self.config = config
        self.backend = backend
        self.counters = Counters()
        self.now = 1_000_000.0

    def send(self, packet: DhcpPacket | bytes, *, to_broadcast: bool | None = None,
             interface: str | None = IFACE) -> Outcome:
        data = packet if isinstance(packet, bytes) else encode(packet)
        outcome = handle(data, interface=interface, backend=self.backend, config=self.config,
                         now=self.now, counters=self.counters, to_broadcast=to_broadcast)
        if isinstance(outcome, Reply):
            check_against_scapy(outcome.packet)
            check_template(outcome)
        return outcome


def check_template(reply: Reply) -> None:
    """A reply built from a template (`rfc2131.lease_reply`) sends what its packet says."""
    if reply.options_wire is not None:
        assert reply.options_wire == encode_options(reply.packet.options)


def check_against_scapy(packet: DhcpPacket) -> None:
    """Every reply the tests see also reads the same in scapy, the independent oracle."""
    wire = encode(packet)
    assert decode(wire) == packet
    theirs = BOOTP(wire)
    assert (theirs.op, theirs.xid, theirs.flags) == (packet.op, packet.xid, packet.flags)
    assert (theirs.ciaddr, theirs.yiaddr, theirs.giaddr) == (
        packet.ciaddr, packet.yiaddr, packet.giaddr)
    assert bytes(theirs.chaddr)[: packet.hlen] == packet.chaddr
    codes = [DHCPRevOptions[o[0]][0] if isinstance(o[0], str) else o[0]
             for o in theirs[DHCP].options if isinstance(o, tuple)]
    assert codes == list(packet.options)
    assert bytes(theirs) == wire


@pytest.fixture
def dhcp_client(config: ServerConfig, backend: MemoryLeaseBackend) -> DhcpClientDriver:
    return DhcpClientDriver(config, backend)


@pytest.fixture
def make_request() -> Callable[..., DhcpPacket]:
    return request


@pytest.fixture
def dhcp_client_for() -> Callable[[ServerConfig, MemoryLeaseBackend], DhcpClientDriver]:
    """A driver against another config (e.g. `authoritative=True`)."""
    return DhcpClientDriver
