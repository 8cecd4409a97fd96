"""OFFER and ACK options built once per subnet and parameter request list
(`rfc2131.lease_reply`): what goes out is what the reply's packet says, for every client."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.dhcp import options as opt
from app.dhcp.backend import Binding, Client
from app.dhcp.codec import decode, encode, encode_options
from app.dhcp.config import ServerConfig, SubnetConfig
from app.dhcp.rfc2131 import TEMPLATES_PER_SUBNET, Ask, Inbound, Kind, Reply, lease_reply, plan

IFACE = "eth1"  # the conftest's interface


def _subnet() -> SubnetConfig:
    return SubnetConfig(cidr="10.0.0.0/24", pool=("10.0.0.100", "10.0.0.199"),
                        gateway="10.0.0.1", dns=("10.0.0.53",), domain_name="lab.example",
                        lease_time=600, interface=IFACE)


def _reply(request, config: ServerConfig, message_type: int, *, mac: str = "02:00:00:00:00:01",
           hostname: str | None = None, **options: bytes) -> Reply:
    packet = request(opt.DISCOVER, mac=mac, **options)
    asked = plan(packet, interface=IFACE, config=config)
    assert isinstance(asked, Ask)
    binding = Binding(address="10.0.0.150", client_id=asked.inbound.client.client_id,
                      lease_time=600, state="bound", hostname=hostname)
    return lease_reply(asked.inbound, binding, config, message_type)


def _sent(reply: Reply) -> bytes:
    """What the server puts on the wire (`DhcpServer._send`)."""
    return encode(reply.packet, options_wire=reply.options_wire)


def test_clients_with_one_request_list_share_a_template_and_keep_their_own_fields(make_request):
    subnet = _subnet()
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,))
    prl = bytes([1, 3, 6, 51, 58, 59])
    first = _reply(make_request, config, opt.OFFER, mac="02:00:00:00:00:01", prl=prl,
                   client_id=b"\x01\x02\x00\x00\x00\x00\x01")
    second = _reply(make_request, config, opt.OFFER, mac="02:00:00:00:00:02", prl=prl,
                    relay=opt.relay_agent_info([(1, b"port-7")]))
    assert len(subnet.replies) == 1
    for reply in (first, second):
        assert _sent(reply) == encode(reply.packet)
    one, two = decode(_sent(first)), decode(_sent(second))
    assert one.chaddr != two.chaddr
    assert one.options[opt.CLIENT_ID] == b"\x01\x02\x00\x00\x00\x00\x01"
    assert opt.CLIENT_ID not in two.options
    assert two.options[opt.RELAY_AGENT_INFO] == opt.relay_agent_info([(1, b"port-7")])
    assert list(one.options)[:5] == [opt.MESSAGE_TYPE, opt.SERVER_ID, opt.LEASE_TIME,
                                     opt.RENEWAL_TIME, opt.REBINDING_TIME]


def test_an_offer_and_an_ack_have_templates_of_their_own(make_request):
    subnet = _subnet()
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,))
    offer = decode(_sent(_reply(make_request, config, opt.OFFER)))
    ack = decode(_sent(_reply(make_request, config, opt.ACK)))
    assert (offer.message_type, ack.message_type) == (opt.OFFER, opt.ACK)
    assert len(subnet.replies) == 2


def test_two_servers_on_one_subnet_never_share_a_server_id(make_request):
    subnet = _subnet()
    ours = ServerConfig(server_id="10.0.0.1", subnets=(subnet,))
    theirs = ServerConfig(server_id="10.0.0.2", subnets=(subnet,))
    assert decode(_sent(_reply(make_request, ours, opt.ACK))).server_id == "10.0.0.1"
    assert decode(_sent(_reply(make_request, theirs, opt.ACK))).server_id == "10.0.0.2"


def test_a_host_name_the_client_asked_for_is_its_own_not_a_template(make_request):
    subnet = _subnet()
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,))
    prl = bytes([1, 12, 3])
    a = _reply(make_request, config, opt.ACK, prl=prl, hostname="node-a")
    b = _reply(make_request, config, opt.ACK, mac="02:00:00:00:00:02", prl=prl, hostname="node-b")
    assert subnet.replies == {}
    assert decode(_sent(a)).options[opt.HOSTNAME] == b"node-a"
    assert decode(_sent(b)).options[opt.HOSTNAME] == b"node-b"
    assert list(decode(_sent(b)).options)[5:8] == [1, 12, 3]


def test_templates_per_subnet_are_bounded(make_request):
    subnet = _subnet()
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,))
    for n in range(TEMPLATES_PER_SUBNET * 2 + 3):
        prl = bytes([1, 3, 6]) + n.to_bytes(2, "big")
        reply = _reply(make_request, config, opt.OFFER, prl=prl)
        assert _sent(reply) == encode(reply.packet)
        assert 1 <= len(subnet.replies) <= TEMPLATES_PER_SUBNET


_option_value = st.binary(min_size=1, max_size=300)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # a pure factory
@given(prl=st.none() | st.binary(min_size=0, max_size=40),
       client_id=st.none() | _option_value, relay=st.none() | _option_value,
       hostname=st.none() | st.text(min_size=1, max_size=20),
       message_type=st.sampled_from([opt.OFFER, opt.ACK]))
def test_the_template_wire_is_the_packets_encoding(make_request, prl, client_id, relay,
                                                   hostname, message_type):
    subnet = _subnet()
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,))
    options = {name: value for name, value in
               (("prl", prl), ("client_id", client_id), ("relay", relay)) if value is not None}
    client = Client(subnet=subnet, client_id=client_id or b"\x01\x02\x00\x00\x00\x00\x01",
                    chaddr=bytes.fromhex("020000000001"), hostname=hostname)
    inbound = Inbound(packet=make_request(opt.REQUEST, **options), kind=Kind.SELECTING,
                      client=client, address="10.0.0.150")
    binding = Binding(address="10.0.0.150", client_id=client.client_id, lease_time=600,
                      state="bound", hostname=hostname)
    for _ in range(2):  # built, then from the template
        reply = lease_reply(inbound, binding, config, message_type)
        assert reply.options_wire == encode_options(reply.packet.options)
        assert _sent(reply) == encode(reply.packet)
