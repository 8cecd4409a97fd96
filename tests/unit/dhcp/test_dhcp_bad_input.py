"""Bad input is dropped and counted, never raises, never changes lease state; plus a fuzzer."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.dhcp import options as opt
from app.dhcp.codec import BOOTREPLY, MAGIC_COOKIE, decode, encode
from app.dhcp.errors import MalformedPacket
from app.dhcp.rfc2131 import Drop

SERVER = opt.ip("10.0.0.1")


def valid(make_request) -> bytes:
    return encode(make_request(opt.DISCOVER, mac="02:00:00:00:00:aa"), min_size=0)


def with_options(make_request, raw_options: bytes) -> bytes:
    return valid(make_request)[:240] + raw_options


BAD_INPUT = {
    "empty": (lambda mk: b"", "malformed"),
    "garbage": (lambda mk: os.urandom(7) + b"not dhcp at all" * 3, "malformed"),
    "truncated header": (lambda mk: valid(mk)[:200], "malformed"),
    "truncated before the cookie": (lambda mk: valid(mk)[:238], "malformed"),
    "oversized": (lambda mk: valid(mk) + bytes(1400), "malformed"),
    "wrong magic cookie": (lambda mk: valid(mk)[:236] + b"\x63\x82\x53\x64"
                           + valid(mk)[240:], "malformed"),
    "op neither request nor reply": (lambda mk: b"\x07" + valid(mk)[1:], "malformed"),
    "hlen beyond chaddr": (lambda mk: valid(mk)[:2] + b"\x11" + valid(mk)[3:], "malformed"),
    "option runs past the end": (lambda mk: with_options(mk, b"\x35\x01\x01\x0c\x20abc"),
                                 "malformed"),
    "option without length byte": (lambda mk: with_options(mk, b"\x35\x01\x01\x0c"),
                                   "malformed"),
    "overload loop (52 inside file)": (
        lambda mk: _overload_loop(mk), "malformed"),
    "overload repeated": (lambda mk: with_options(mk, b"\x35\x01\x01\x34\x01\x01\x34\x01\x02"
                                                  b"\xff"), "malformed"),
    "overload bad value": (lambda mk: with_options(mk, b"\x35\x01\x01\x34\x01\x07\xff"),
                           "malformed"),
    "BOOTREPLY sent to the server": (
        lambda mk: encode(mk(opt.OFFER, op=BOOTREPLY)), "not_request"),
    "OFFER inside a BOOTREQUEST": (lambda mk: encode(mk(opt.OFFER)), "not_request"),
    "unknown message type": (lambda mk: encode(mk(99)), "not_request"),
    "plain BOOTP (no message type)": (lambda mk: encode(mk(None)), "no_message_type"),
    "message type of two bytes": (lambda mk: with_options(mk, b"\x35\x02\x01\x01\xff"),
                                  "no_message_type"),
    "SELECTING without requested address": (
        lambda mk: encode(mk(opt.REQUEST, server_id=SERVER)), "bad_request"),
    "REQUEST with nothing to go on": (lambda mk: encode(mk(opt.REQUEST)), "bad_request"),
    "RELEASE without ciaddr": (lambda mk: encode(mk(opt.RELEASE, server_id=SERVER)),
                               "bad_request"),
    "DECLINE without address": (lambda mk: encode(mk(opt.DECLINE, server_id=SERVER)),
                                "bad_request"),
    "INFORM without ciaddr": (lambda mk: encode(mk(opt.INFORM)), "bad_request"),
}


def _overload_loop(make_request) -> bytes:
    wire = bytearray(with_options(make_request, b"\x35\x01\x01\x34\x01\x01\xff"))
    wire[108:112] = b"\x34\x01\x01\xff"  # file says "options continue in file" again
    return bytes(wire)


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_dropped_counted_and_changes_nothing(dhcp_client, make_request,
                                                          backend, case):
    # Some state first, so "no change" means something.
    offer = dhcp_client.send(make_request(opt.DISCOVER))
    before = backend.bindings(dhcp_client.now)
    build, reason = BAD_INPUT[case]
    out = dhcp_client.send(build(make_request))
    assert out == Drop(reason=reason)
    assert dhcp_client.counters["dropped_" + reason] == 1
    assert dhcp_client.counters["received"] == 2
    assert backend.bindings(dhcp_client.now) == before
    assert offer.packet.yiaddr in before


@pytest.mark.parametrize("case", [c for c, (_, r) in BAD_INPUT.items() if r == "malformed"])
def test_decoder_raises_only_malformed_packet(make_request, case):
    with pytest.raises(MalformedPacket):
        decode(BAD_INPUT[case][0](make_request))


def _options_area() -> st.SearchStrategy[bytes]:
    tlv = st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(
        lambda t: bytes((t[0], len(t[1]))) + t[1])
    junk = st.binary(max_size=8)
    return st.lists(st.one_of(tlv, junk, st.just(b"\x34\x01\x03"), st.just(b"\xff")),
                    max_size=30).map(b"".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.binary(min_size=236, max_size=236), cookie=st.sampled_from(
    [MAGIC_COOKIE, MAGIC_COOKIE, b"\x00\x00\x00\x00"]), options=_options_area())
def test_fuzzed_packets_decode_or_raise_malformed_only(header, cookie, options):
    data = header + cookie + options
    try:
        packet = decode(data)
    except MalformedPacket:
        return
    # What decodes, re-encodes and decodes to the same packet (sname/file options aside).
    again = decode(encode(packet, min_size=0))
    assert again.xid == packet.xid and again.options == packet.options


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.binary(min_size=236, max_size=236), options=_options_area(),
       message_type=st.integers(0, 255), raw=st.binary(max_size=1600))
def test_fuzzed_datagrams_never_escape_the_handler(dhcp_client, prefix, options,
                                                   message_type, raw):
    # The handler shares one backend across examples on purpose: whatever state earlier
    # garbage left, no later datagram may raise.
    bootrequest = b"\x01" + prefix[1:]
    for data in (raw, bootrequest + MAGIC_COOKIE + bytes((53, 1, message_type)) + options):
        assert dhcp_client.send(data) is not None


class ExplodingBackend:
    """A backend with a bug: every call raises."""

    def __getattr__(self, name):
        def boom(*args, **kwargs):
            raise RuntimeError(f"{name} exploded")

        return boom


def test_a_failing_backend_is_counted_and_the_client_gets_no_reply(
        config, make_request, dhcp_client_for):
    client = dhcp_client_for(config, ExplodingBackend())
    out = client.send(make_request(opt.DISCOVER))
    assert out == Drop(reason="backend_error")
    assert client.counters["backend_errors"] == 1
