"""One test per RFC 2131 / 3046 / 6842 behaviour, with crafted packets through `handle()`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.dhcp import options as opt
from app.dhcp.codec import BOOTREPLY, BROADCAST_FLAG
from app.dhcp.config import ServerConfig
from app.dhcp.rfc2131 import Drop, Kind, Reply, Silence, plan

SERVER = opt.ip("10.0.0.1")
OTHER_SERVER = opt.ip("10.0.0.2")


def dora(dhcp_client, make_request, mac="02:00:00:00:00:01", **extra):
    offer = dhcp_client.send(make_request(opt.DISCOVER, mac=mac, **extra))
    assert isinstance(offer, Reply)
    ack = dhcp_client.send(make_request(
        opt.REQUEST, mac=mac, server_id=SERVER,
        requested=opt.ip(offer.packet.yiaddr), **extra))
    assert isinstance(ack, Reply) and ack.packet.message_type == opt.ACK
    return offer, ack


def test_discover_gets_an_offer_from_the_pool_of_the_receiving_interface(
        dhcp_client, make_request):
    reply = dhcp_client.send(make_request(opt.DISCOVER))
    assert isinstance(reply, Reply)
    p = reply.packet
    assert p.op == BOOTREPLY and p.message_type == opt.OFFER and p.xid == 0x1000
    assert p.yiaddr == "10.0.0.100" and p.ciaddr == "0.0.0.0"
    assert p.options[opt.SERVER_ID] == SERVER
    assert opt.read_u32(p.options[opt.LEASE_TIME]) == 600
    assert dhcp_client.counters["offers"] == 1


def test_offer_prefers_the_current_binding(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    again = dhcp_client.send(make_request(opt.DISCOVER, requested=opt.ip("10.0.0.105")))
    assert again.packet.yiaddr == ack.packet.yiaddr


def test_offer_prefers_the_previous_binding_after_release(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    address = ack.packet.yiaddr
    dora(dhcp_client, make_request, mac="02:00:00:00:00:02")
    released = dhcp_client.send(make_request(opt.RELEASE, ciaddr=address, server_id=SERVER))
    assert isinstance(released, Silence)
    offer = dhcp_client.send(make_request(opt.DISCOVER, requested=opt.ip("10.0.0.107")))
    assert offer.packet.yiaddr == address


def test_offer_honours_a_free_requested_address(dhcp_client, make_request):
    offer = dhcp_client.send(make_request(opt.DISCOVER, requested=opt.ip("10.0.0.107")))
    assert offer.packet.yiaddr == "10.0.0.107"


@pytest.mark.parametrize("requested", ["10.0.0.5", "10.9.0.15", "10.0.0.110"])
def test_offer_ignores_a_requested_address_outside_the_pool(
        dhcp_client, make_request, requested):
    offer = dhcp_client.send(make_request(opt.DISCOVER, requested=opt.ip(requested)))
    assert offer.packet.yiaddr == "10.0.0.100"


def test_offer_skips_an_address_held_by_another_client(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    offer = dhcp_client.send(make_request(opt.DISCOVER, mac="02:00:00:00:00:09",
                                          requested=opt.ip(ack.packet.yiaddr)))
    assert offer.packet.yiaddr != ack.packet.yiaddr


def test_offered_address_is_held_for_the_offer_lifetime(dhcp_client, make_request):
    first = dhcp_client.send(make_request(opt.DISCOVER))
    other = dhcp_client.send(make_request(opt.DISCOVER, mac="02:00:00:00:00:02",
                                          requested=opt.ip(first.packet.yiaddr)))
    assert other.packet.yiaddr != first.packet.yiaddr
    dhcp_client.now += 31  # offer lifetime is 30 s
    taken = dhcp_client.send(make_request(opt.DISCOVER, mac="02:00:00:00:00:03",
                                          requested=opt.ip(first.packet.yiaddr)))
    assert taken.packet.yiaddr == first.packet.yiaddr


def test_exhausted_pool_means_silence(dhcp_client, make_request):
    for i in range(10):
        assert isinstance(dhcp_client.send(make_request(
            opt.DISCOVER, mac=f"02:00:00:00:01:{i:02x}")), Reply)
    assert isinstance(dhcp_client.send(make_request(opt.DISCOVER, mac="02:00:00:00:02:00")),
                      Silence)
    assert dhcp_client.counters["no_offer"] == 1


def test_relayed_discover_uses_the_giaddr_subnet_and_replies_to_the_relay(
        dhcp_client, make_request):
    relay = opt.relay_agent_info([(1, b"port7"), (2, b"remote")])
    reply = dhcp_client.send(make_request(opt.DISCOVER, giaddr="10.9.0.1", relay=relay),
                             interface=None)
    assert reply.packet.yiaddr == "10.9.0.10"
    assert (reply.address, reply.port) == ("10.9.0.1", 67)
    assert reply.packet.giaddr == "10.9.0.1"
    assert opt.read_u32(reply.packet.options[opt.LEASE_TIME]) == 1200
    # RFC 3046: echoed unchanged, and as the last option.
    assert reply.packet.options[opt.RELAY_AGENT_INFO] == relay
    assert list(reply.packet.options)[-1] == opt.RELAY_AGENT_INFO


def relayed_dora(dhcp_client, make_request, mac="02:00:00:00:00:21"):
    offer = dhcp_client.send(make_request(opt.DISCOVER, mac=mac, giaddr="10.9.0.1"),
                             interface=None)
    ack = dhcp_client.send(make_request(opt.REQUEST, mac=mac, giaddr="10.9.0.1",
                                        server_id=SERVER, requested=opt.ip(offer.packet.yiaddr)),
                           interface=None)
    assert ack.packet.message_type == opt.ACK
    return ack.packet.yiaddr


def test_client_behind_a_relay_renews_straight_to_us(dhcp_client, make_request):
    # RENEWING goes unicast to the server without the relay: giaddr is zero and the packet
    # arrives on an interface that does not carry the client's subnet; ciaddr decides.
    address = relayed_dora(dhcp_client, make_request)
    out = dhcp_client.send(make_request(opt.REQUEST, mac="02:00:00:00:00:21", ciaddr=address),
                           to_broadcast=False)
    assert out.packet.message_type == opt.ACK and (out.address, out.port) == (address, 68)
    assert opt.read_u32(out.packet.options[opt.LEASE_TIME]) == 1200  # the relayed subnet's


def test_client_behind_a_relay_releases_straight_to_us(dhcp_client, make_request, backend):
    address = relayed_dora(dhcp_client, make_request)
    dhcp_client.send(make_request(opt.RELEASE, mac="02:00:00:00:00:21", ciaddr=address,
                                  server_id=SERVER))
    assert backend.bindings(dhcp_client.now)[address]["state"] == "released"


def test_unknown_relay_network_is_dropped(dhcp_client, make_request):
    out = dhcp_client.send(make_request(opt.DISCOVER, giaddr="192.0.2.1"))
    assert out == Drop(reason="no_subnet")
    assert dhcp_client.counters["dropped_no_subnet"] == 1


def test_interface_without_subnet_is_dropped(dhcp_client, make_request):
    assert dhcp_client.send(make_request(opt.DISCOVER), interface="eth9") == Drop(
        reason="no_subnet")


def test_request_selecting_our_server_binds_and_acks(dhcp_client, make_request, backend,
                                                      subnet):
    offer, ack = dora(dhcp_client, make_request)
    assert ack.packet.yiaddr == offer.packet.yiaddr
    assert ack.packet.options[opt.SERVER_ID] == SERVER
    assert backend.bindings(dhcp_client.now)[ack.packet.yiaddr]["state"] == "bound"


def test_request_selecting_another_server_is_dropped_and_frees_our_offer(
        dhcp_client, make_request, backend):
    offer = dhcp_client.send(make_request(opt.DISCOVER))
    out = dhcp_client.send(make_request(opt.REQUEST, server_id=OTHER_SERVER,
                                        requested=opt.ip("10.0.0.200")))
    assert isinstance(out, Silence) and out.reason == "other_server"
    assert offer.packet.yiaddr not in backend.bindings(dhcp_client.now)


def test_request_selecting_an_address_taken_meanwhile_is_naked(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    out = dhcp_client.send(make_request(opt.REQUEST, mac="02:00:00:00:00:02", server_id=SERVER,
                                        requested=opt.ip(ack.packet.yiaddr)))
    assert out.packet.message_type == opt.NAK


def test_init_reboot_with_the_right_address_is_acked(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    out = dhcp_client.send(make_request(opt.REQUEST, requested=opt.ip(ack.packet.yiaddr)))
    assert out.packet.message_type == opt.ACK and out.packet.yiaddr == ack.packet.yiaddr


def test_init_reboot_into_the_wrong_network_is_naked(dhcp_client, make_request):
    out = dhcp_client.send(make_request(opt.REQUEST, requested=opt.ip("192.168.1.50")))
    assert out.packet.message_type == opt.NAK
    assert out.packet.yiaddr == "0.0.0.0" and out.packet.ciaddr == "0.0.0.0"
    assert (out.address, out.port) == ("255.255.255.255", 68)
    assert opt.LEASE_TIME not in out.packet.options
    assert dhcp_client.counters["naks"] == 1


def test_init_reboot_with_someone_elses_address_is_naked(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    dora(dhcp_client, make_request, mac="02:00:00:00:00:02")
    out = dhcp_client.send(make_request(opt.REQUEST, mac="02:00:00:00:00:02",
                                        requested=opt.ip(ack.packet.yiaddr)))
    assert out.packet.message_type == opt.NAK


def test_init_reboot_without_record_is_silent(dhcp_client, make_request):
    out = dhcp_client.send(make_request(opt.REQUEST, requested=opt.ip("10.0.0.104")))
    assert out == Silence(reason="unknown_client")


@pytest.mark.parametrize("kind", ["init_reboot", "renewing"])
def test_unknown_client_is_naked_when_authoritative(config, backend, make_request,
                                                    dhcp_client_for, kind):
    client = dhcp_client_for(replace(config, authoritative=True), backend)
    if kind == "init_reboot":
        packet = make_request(opt.REQUEST, requested=opt.ip("10.0.0.104"))
    else:
        packet = make_request(opt.REQUEST, ciaddr="10.0.0.104")
    out = client.send(packet)
    assert out.packet.message_type == opt.NAK


def test_relayed_nak_goes_to_the_relay_with_the_broadcast_bit(dhcp_client, make_request):
    out = dhcp_client.send(make_request(opt.REQUEST, giaddr="10.9.0.1",
                                        requested=opt.ip("10.0.0.50")), interface=None)
    assert out.packet.message_type == opt.NAK
    assert (out.address, out.port) == ("10.9.0.1", 67)
    assert out.packet.flags & BROADCAST_FLAG


def test_renewing_is_unicast_to_ciaddr_and_extends_the_lease(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    address = ack.packet.yiaddr
    dhcp_client.now += 300  # T1
    out = dhcp_client.send(make_request(opt.REQUEST, ciaddr=address), to_broadcast=False)
    assert out.packet.message_type == opt.ACK
    assert out.packet.ciaddr == address and out.packet.yiaddr == address
    assert (out.address, out.port) == (address, 68)
    dhcp_client.now += 500  # past the first lease's end: the renewal counted
    assert dhcp_client.backend.lookup(
        plan(make_request(opt.REQUEST, ciaddr=address), interface="eth1",
             config=dhcp_client.config).inbound.client, dhcp_client.now).state == "bound"


def test_request_classification(config, make_request):
    def kind(packet, **kw):
        return plan(packet, interface="eth1", config=config, **kw).inbound.kind

    assert kind(make_request(opt.REQUEST, server_id=SERVER,
                             requested=opt.ip("10.0.0.100"))) is Kind.SELECTING
    assert kind(make_request(opt.REQUEST, requested=opt.ip("10.0.0.100"))) is Kind.INIT_REBOOT
    assert kind(make_request(opt.REQUEST, ciaddr="10.0.0.100"),
                to_broadcast=False) is Kind.RENEWING
    assert kind(make_request(opt.REQUEST, ciaddr="10.0.0.100"),
                to_broadcast=True) is Kind.REBINDING
    assert kind(make_request(opt.REQUEST, ciaddr="10.9.0.12", giaddr="10.9.0.1")) \
        is Kind.REBINDING


def test_rebinding_broadcast_is_acked_to_ciaddr(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    address = ack.packet.yiaddr
    out = dhcp_client.send(make_request(opt.REQUEST, ciaddr=address), to_broadcast=True)
    assert out.packet.message_type == opt.ACK and (out.address, out.port) == (address, 68)


def test_rebinding_from_a_foreign_network_is_naked(dhcp_client, make_request):
    out = dhcp_client.send(make_request(opt.REQUEST, ciaddr="192.168.7.7"), to_broadcast=True)
    assert out.packet.message_type == opt.NAK


def test_renewal_after_the_address_went_to_another_client_is_naked(
        dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    address = ack.packet.yiaddr
    dhcp_client.send(make_request(opt.RELEASE, ciaddr=address, server_id=SERVER))
    for i in range(10):  # exhaust the pool so the released address is reused
        dhcp_client.send(make_request(opt.DISCOVER, mac=f"02:00:00:00:01:{i:02x}"))
    holder = dhcp_client.backend.bindings(dhcp_client.now)[address]
    assert holder["client_id"] != "01020000000001"
    out = dhcp_client.send(make_request(opt.REQUEST, ciaddr=address), to_broadcast=False)
    assert out.packet.message_type == opt.NAK


def test_t1_t2_default_to_half_and_seven_eighths(dhcp_client, make_request):
    offer, ack = dora(dhcp_client, make_request)
    for reply in (offer, ack):
        o = reply.packet.options
        assert opt.read_u32(o[opt.LEASE_TIME]) == 600
        assert opt.read_u32(o[opt.RENEWAL_TIME]) == 300
        assert opt.read_u32(o[opt.REBINDING_TIME]) == 525


def test_t1_t2_follow_the_subnet_when_set(make_request, backend):
    from app.dhcp.codec import encode
    from app.dhcp.config import SubnetConfig
    from app.dhcp.handler import Counters, handle

    subnet = SubnetConfig(cidr="10.0.0.0/24", pool=("10.0.0.100", "10.0.0.109"),
                          lease_time=1000, renewal_time=100, rebinding_time=200,
                          interface="eth1")
    config = ServerConfig(server_id="10.0.0.1", subnets=(subnet,), workers=0)
    out = handle(encode(make_request(opt.DISCOVER)), interface="eth1", backend=backend,
                 config=config, now=0.0, counters=Counters())
    assert opt.read_u32(out.packet.options[opt.RENEWAL_TIME]) == 100
    assert opt.read_u32(out.packet.options[opt.REBINDING_TIME]) == 200


def test_client_identifier_is_the_identity_and_is_echoed(dhcp_client, make_request):
    cid = b"\xff\x00\x00\x00\x01\x00\x01\x2a"
    offer, ack = dora(dhcp_client, make_request, client_id=cid)
    assert offer.packet.options[opt.CLIENT_ID] == cid
    assert ack.packet.options[opt.CLIENT_ID] == cid
    # Same option 61 from another NIC: the same client, so the same address.
    again = dhcp_client.send(make_request(opt.DISCOVER, mac="02:00:00:00:00:77",
                                          client_id=cid))
    assert again.packet.yiaddr == ack.packet.yiaddr


def test_without_client_identifier_chaddr_identifies_the_client(dhcp_client, make_request):
    _, ack = dora(dhcp_client, make_request)
    assert opt.CLIENT_ID not in ack.packet.options
    other = dhcp_client.send(make_request(opt.DISCOVER, mac="02:00:00:00:00:02"))
    assert other.packet.yiaddr != ack.packet.yiaddr


def test_parameter_request_list_is_honoured_in_its_order(dhcp_client, make_request):
    reply = dhcp_client.send(make_request(opt.DISCOVER, prl=bytes([6, 3, 1, 12]),
                                          hostname=b"node-7"))
    o = reply.packet.options
    assert o[opt.DNS_SERVERS] == opt.ip("10.0.0.53")
    assert o[opt.ROUTER] == opt.ip("10.0.0.1")
    assert o[opt.SUBNET_MASK] == opt.ip("255.255.255.0")
    assert o[opt.HOSTNAME] == b"node-7"
    assert opt.DOMAIN_NAME not in o and opt.BROADCAST_ADDRESS not in o
    params = [c for c in o if c in (1, 3, 6, 12)]
    assert params == [6, 3, 1, 12]


def test_without_parameter_request_list_all_subnet_options_are_sent(
        dhcp_client, make_request):
    o = dhcp_client.send(make_request(opt.DISCOVER)).packet.options
    assert o[opt.DOMAIN_NAME] == b"lab.example"
    assert o[opt.BROADCAST_ADDRESS] == opt.ip("10.0.0.255")


def test_decline_puts_the_address_on_probation(dhcp_client, make_request, backend):
    _, ack = dora(dhcp_client, make_request)
    address = ack.packet.yiaddr
    out = dhcp_client.send(make_request(opt.DECLINE, requested=opt.ip(address),
                                        server_id=SERVER))
    assert out == Silence(reason="declines")
    assert [e.address for e in backend.declines] == [address]  # the admin alert
    again = dhcp_client.send(make_request(opt.DISCOVER, requested=opt.ip(address)))
    assert again.packet.yiaddr != address
    dhcp_client.now += 3601
    for i in range(10):
        dhcp_client.send(make_request(opt.DISCOVER, mac=f"02:00:00:00:03:{i:02x}"))
    assert address in backend.bindings(dhcp_client.now)  # back in the pool after probation


def test_decline_of_someone_elses_address_changes_nothing(dhcp_client, make_request, backend):
    _, ack = dora(dhcp_client, make_request)
    out = dhcp_client.send(make_request(opt.DECLINE, mac="02:00:00:00:00:66",
                                        requested=opt.ip(ack.packet.yiaddr), server_id=SERVER))
    assert out == Silence(reason="declines")
    assert backend.declines == []
    assert backend.bindings(dhcp_client.now)[ack.packet.yiaddr]["state"] == "bound"


def test_release_frees_the_address_but_keeps_the_binding(dhcp_client, make_request, backend):
    _, ack = dora(dhcp_client, make_request)
    address = ack.packet.yiaddr
    out = dhcp_client.send(make_request(opt.RELEASE, ciaddr=address, server_id=SERVER))
    assert out == Silence(reason="releases")
    assert backend.bindings(dhcp_client.now)[address]["state"] == "released"


def test_release_for_another_server_is_ignored(dhcp_client, make_request, backend):
    _, ack = dora(dhcp_client, make_request)
    out = dhcp_client.send(make_request(opt.RELEASE, ciaddr=ack.packet.yiaddr,
                                        server_id=OTHER_SERVER))
    assert out == Drop(reason="other_server")
    assert backend.bindings(dhcp_client.now)[ack.packet.yiaddr]["state"] == "bound"


def test_inform_gets_configuration_without_a_lease(dhcp_client, make_request, backend):
    out = dhcp_client.send(make_request(opt.INFORM, ciaddr="10.0.0.33", prl=bytes([1, 3, 6])))
    p = out.packet
    assert p.message_type == opt.ACK and p.yiaddr == "0.0.0.0" and p.ciaddr == "10.0.0.33"
    assert opt.LEASE_TIME not in p.options and opt.RENEWAL_TIME not in p.options
    assert p.options[opt.ROUTER] == opt.ip("10.0.0.1")
    assert (out.address, out.port) == ("10.0.0.33", 68)
    assert backend.bindings(dhcp_client.now) == {}
    assert dhcp_client.counters["informs"] == 1


@pytest.mark.parametrize("flags, expected", [(BROADCAST_FLAG, "255.255.255.255"),
                                             (0, "255.255.255.255")])
def test_offer_to_a_client_without_address_is_broadcast(dhcp_client, make_request, flags,
                                                        expected):
    # Without the broadcast bit the RFC asks for a unicast to yiaddr, which a plain UDP
    # socket cannot do for a client that has no address yet: we broadcast (see destination).
    reply = dhcp_client.send(make_request(opt.DISCOVER, flags=flags))
    assert (reply.address, reply.port) == (expected, 68)
    assert reply.packet.flags == flags


def test_server_replies_never_carry_hops_or_secs(dhcp_client, make_request):
    reply = dhcp_client.send(make_request(opt.DISCOVER))
    assert reply.packet.hops == 0 and reply.packet.secs == 0
