"""The codec against scapy as an independent oracle, both directions, plus fixed bytes."""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions

from app.dhcp import options as opt
from app.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    MIN_REPLY_SIZE,
    DhcpPacket,
    decode,
    encode,
)
from app.dhcp.errors import DhcpError, MalformedPacket

MAC = bytes.fromhex("020000abcdef")
RELAY_INFO = opt.relay_agent_info([(1, b"eth0/1/7"), (2, b"\x00\x11\x22\x33\x44\x55")])


def scapy_packet(options: list[object], **fields: object) -> bytes:
    base = {"op": 1, "xid": 0xDEADBEEF, "chaddr": MAC + bytes(10)}
    base.update(fields)
    return bytes(BOOTP(**base) / DHCP(options=[*options, "end"]))


SCAPY_CASES = {
    "discover": (
        [("message-type", "discover"), ("client_id", b"\x01" + MAC),
         ("param_req_list", [1, 3, 6, 12, 15, 28, 51, 54, 58, 59]),
         ("hostname", b"node-7"), ("requested_addr", "10.0.0.5")],
        {"flags": 0x8000, "secs": 3},
    ),
    "request_selecting": (
        [("message-type", "request"), ("server_id", "10.0.0.1"),
         ("requested_addr", "10.0.0.100"), ("relay_agent_information", RELAY_INFO)],
        {"giaddr": "10.9.0.1", "hops": 1},
    ),
    "renewing": ([("message-type", "request")], {"ciaddr": "10.0.0.100"}),
    "ack": (
        [("message-type", "ack"), ("server_id", "10.0.0.1"), ("lease_time", 600),
         ("renewal_time", 300), ("rebinding_time", 525), ("subnet_mask", "255.255.255.0"),
         ("router", "10.0.0.1"), ("name_server", "10.0.0.53", "10.0.0.54")],
        {"op": 2, "yiaddr": "10.0.0.100", "siaddr": "10.0.0.1", "sname": b"boot",
         "file": b"pxelinux.0"},
    ),
}


@pytest.mark.parametrize("case", SCAPY_CASES)
def test_scapy_built_packets_decode_to_the_same_fields(case: str) -> None:
    options, fields = SCAPY_CASES[case]
    wire = scapy_packet(options, **fields)
    ours = decode(wire)
    theirs = BOOTP(wire)
    assert ours.op == theirs.op and ours.xid == theirs.xid and ours.flags == theirs.flags
    assert ours.hops == theirs.hops and ours.secs == theirs.secs
    for name in ("ciaddr", "yiaddr", "siaddr", "giaddr"):
        assert getattr(ours, name) == getattr(theirs, name)
    assert ours.chaddr == bytes(theirs.chaddr)[:6]
    assert ours.sname == bytes(theirs.sname).rstrip(b"\0")
    assert ours.file == bytes(theirs.file).rstrip(b"\0")
    # Same option codes, in the same order, as scapy found; each raw value is exactly the
    # bytes scapy rebuilds for that option alone.
    theirs_codes = [DHCPRevOptions[o[0]][0] for o in theirs[DHCP].options if isinstance(o, tuple)]
    assert list(ours.options) == theirs_codes
    for code, value in ours.options.items():
        tlv = scapy_option_bytes(wire, code)
        assert bytes(DHCP(tlv))[2:-1] == value
    assert encode(ours, min_size=0)[:240] == wire[:240]


def scapy_option_bytes(wire: bytes, code: int) -> bytes:
    """The TLV bytes of option `code` in `wire`, located by scapy's own parse."""
    i = 240
    while wire[i] != 255:
        if wire[i] == 0:
            i += 1
            continue
        if wire[i] == code:
            return wire[i : i + 2 + wire[i + 1]] + b"\xff"
        i += 2 + wire[i + 1]
    raise AssertionError(f"option {code} not found")


@pytest.mark.parametrize("case", SCAPY_CASES)
def test_scapy_wire_bytes_survive_our_round_trip(case: str) -> None:
    options, fields = SCAPY_CASES[case]
    wire = scapy_packet(options, **fields)
    assert encode(decode(wire), min_size=0) == wire


def our_packet() -> DhcpPacket:
    return DhcpPacket(
        op=BOOTREPLY, xid=0x01020304, flags=0x8000, ciaddr="0.0.0.0", yiaddr="10.0.0.100",
        giaddr="10.9.0.1", chaddr=MAC,
        options={
            opt.MESSAGE_TYPE: bytes((opt.OFFER,)),
            opt.SERVER_ID: opt.ip("10.0.0.1"),
            opt.LEASE_TIME: opt.u32(600),
            opt.RENEWAL_TIME: opt.u32(300),
            opt.REBINDING_TIME: opt.u32(525),
            opt.SUBNET_MASK: opt.ip("255.255.255.0"),
            opt.ROUTER: opt.ip("10.0.0.1"),
            opt.DNS_SERVERS: opt.ips(["10.0.0.53", "10.0.0.54"]),
            opt.HOSTNAME: b"node-7",
            opt.CLIENT_ID: b"\x01" + MAC,
            opt.RELAY_AGENT_INFO: RELAY_INFO,
        },
    )


def test_our_encoding_parses_in_scapy_with_every_field() -> None:
    wire = encode(our_packet())
    assert len(wire) >= MIN_REPLY_SIZE
    theirs = BOOTP(wire)
    assert theirs.op == 2 and theirs.xid == 0x01020304 and theirs.flags == 0x8000
    assert theirs.yiaddr == "10.0.0.100" and theirs.giaddr == "10.9.0.1"
    assert bytes(theirs.chaddr)[:6] == MAC
    parsed = dict(o for o in theirs[DHCP].options if isinstance(o, tuple) and len(o) == 2)
    assert parsed["message-type"] == 2
    assert parsed["server_id"] == "10.0.0.1"
    assert parsed["lease_time"] == 600
    assert parsed["renewal_time"] == 300 and parsed["rebinding_time"] == 525
    assert parsed["subnet_mask"] == "255.255.255.0"
    assert parsed["router"] == "10.0.0.1"
    assert parsed["hostname"] == b"node-7"
    assert parsed["client_id"] == b"\x01" + MAC
    assert parsed["relay_agent_information"] == RELAY_INFO
    name_servers = next(o for o in theirs[DHCP].options if o[0] == "name_server")
    assert list(name_servers[1:]) == ["10.0.0.53", "10.0.0.54"]
    # ... and scapy's rebuild of what it parsed is byte-identical.
    assert bytes(theirs) == wire


def test_our_round_trip_is_identity() -> None:
    packet = our_packet()
    assert decode(encode(packet)) == packet


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def z(n: int) -> bytes:
    return bytes(n)


# DHCPDISCOVERs captured from the real clients in a test namespace (Debian 12 packages).
CAPTURED = {
    "dhclient 4.4.3": h("01010600604c5b51") + z(20) + h("d2fb8beda960") + z(202)
    + h("638253633501010c02766d370d011c02030f06770c2c2f1a792aff") + z(37),
    "udhcpc 1.35.0": h("01010600f85d5c51") + z(20) + h("92d4a22c9896") + z(202)
    + h("638253633501013902024037070103060c0f1c2a3c0c756468637020312e33352e303d0701"
        "92d4a22c9896ff") + z(20),
    "dhcpcd 9.4.1": h("01010600855b0cab") + z(20) + h("32dc5cc88880") + z(202)
    + h("6382536335010137080103061c21333a3b390205c03c366468637063642d392e342e313a4c"
        "696e75782d362e31382e34342d66632d763539353a7838365f36343a41757468656e7469"
        "63414d44910101ff"),
}


@pytest.mark.parametrize("client", CAPTURED)
def test_captured_client_discovers_decode_like_scapy_and_round_trip(client: str) -> None:
    wire = CAPTURED[client]
    ours = decode(wire)
    theirs = BOOTP(wire)
    assert ours.op == BOOTREQUEST and ours.message_type == opt.DISCOVER
    assert ours.xid == theirs.xid and ours.flags == theirs.flags
    assert ours.chaddr == bytes(theirs.chaddr)[:6]
    theirs_codes = [DHCPRevOptions[o[0]][0] if isinstance(o[0], str) else o[0]
                    for o in theirs[DHCP].options if isinstance(o, tuple)]
    assert list(ours.options) == theirs_codes
    assert ours.parameter_request_list == bytes(
        dict(o for o in theirs[DHCP].options if isinstance(o, tuple) and len(o) == 2)
        ["param_req_list"])
    # Byte-identical re-encoding (the clients pad with zeros after END, as we do).
    assert encode(ours, min_size=len(wire)) == wire


def test_long_option_is_split_and_joined_again() -> None:
    long_value = bytes(range(256)) * 2  # 512 bytes: needs three instances (RFC 3396)
    packet = DhcpPacket(op=BOOTREQUEST, xid=1, chaddr=MAC,
                        options={opt.MESSAGE_TYPE: b"\x01", 43: long_value})
    wire = encode(packet)
    assert wire.count(bytes((43, 255))) == 2
    assert decode(wire).options[43] == long_value


@pytest.mark.parametrize("overload, where", [(1, "file"), (2, "sname"), (3, "both")])
def test_overloaded_sname_and_file_carry_options(overload: int, where: str) -> None:
    file_options = bytes((opt.HOSTNAME, 4)) + b"host" + b"\xff"
    sname_options = bytes((opt.REQUESTED_IP, 4)) + opt.ip("10.0.0.7") + b"\xff"
    wire = bytearray(encode(DhcpPacket(
        op=BOOTREQUEST, xid=7, chaddr=MAC,
        options={opt.MESSAGE_TYPE: b"\x01", opt.OVERLOAD: bytes((overload,))},
    ), min_size=0))
    if overload & 1:
        wire[108 : 108 + len(file_options)] = file_options
    if overload & 2:
        wire[44 : 44 + len(sname_options)] = sname_options
    packet = decode(bytes(wire))
    if overload & 1:
        assert packet.file == b""  # it held options, not a file name
    assert (packet.hostname == "host") == bool(overload & 1)
    assert (packet.requested_ip == "10.0.0.7") == bool(overload & 2)
    assert opt.OVERLOAD not in packet.options


def test_relay_agent_sub_options_are_read_in_order() -> None:
    assert opt.parse_relay_agent_info(RELAY_INFO) == (
        (1, b"eth0/1/7"), (2, b"\x00\x11\x22\x33\x44\x55"))
    with pytest.raises(MalformedPacket):
        opt.parse_relay_agent_info(b"\x01\x09short")


def test_encoding_refuses_impossible_packets() -> None:
    with pytest.raises(DhcpError):
        encode(DhcpPacket(op=1, xid=1, chaddr=bytes(17)))
    with pytest.raises(DhcpError):
        encode(DhcpPacket(op=1, xid=1, chaddr=MAC, ciaddr="not-an-ip"))
    with pytest.raises(DhcpError):
        encode(DhcpPacket(op=1, xid=1, chaddr=MAC, options={255: b""}))


def test_packet_is_frozen() -> None:
    packet = our_packet()
    with pytest.raises(AttributeError):
        packet.xid = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        packet.options[1] = b"x"  # type: ignore[index]


def test_a_packet_is_built_by_keyword_with_the_bootp_defaults() -> None:
    packet = DhcpPacket(op=BOOTREQUEST, xid=7, chaddr=MAC)
    assert (packet.htype, packet.hlen, packet.hops, packet.secs, packet.flags) == (1, 6, 0, 0, 0)
    assert packet.ciaddr == packet.yiaddr == packet.siaddr == packet.giaddr == "0.0.0.0"
    assert (packet.sname, packet.file, dict(packet.options)) == (b"", b"", {})
    with pytest.raises(TypeError):
        DhcpPacket(BOOTREQUEST, 1, 6, 0, 7)  # type: ignore[misc, call-arg]  # positions
    decoded = decode(encode(packet))
    assert decoded == packet and type(decoded) is DhcpPacket
    assert repr(decoded).startswith("DhcpPacket(op=1, htype=1, hlen=6, hops=0, xid=7,")
