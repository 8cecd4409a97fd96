"""DHCPv4 option codes and the few value encodings the server needs (RFC 2132, 3046, 6842).

Options travel as raw bytes inside `DhcpPacket.options`; these helpers turn the values the
server reads or writes into bytes and back, so the codec itself stays a plain TLV walker
and the RFC logic speaks in names instead of numbers.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from app.dhcp.errors import MalformedPacket

# Option codes (RFC 2132 unless noted).
PAD = 0
SUBNET_MASK = 1
ROUTER = 3
DNS_SERVERS = 6
HOSTNAME = 12
DOMAIN_NAME = 15
BROADCAST_ADDRESS = 28
REQUESTED_IP = 50
LEASE_TIME = 51
OVERLOAD = 52
MESSAGE_TYPE = 53
SERVER_ID = 54
PARAMETER_REQUEST_LIST = 55
MESSAGE = 56
MAX_MESSAGE_SIZE = 57
RENEWAL_TIME = 58  # T1
REBINDING_TIME = 59  # T2
CLIENT_ID = 61
RELAY_AGENT_INFO = 82  # RFC 3046
END = 255

# Message types (option 53).
DISCOVER = 1
OFFER = 2
REQUEST = 3
DECLINE = 4
ACK = 5
NAK = 6
RELEASE = 7
INFORM = 8

MESSAGE_TYPE_NAMES = {
    DISCOVER: "DISCOVER",
    OFFER: "OFFER",
    REQUEST: "REQUEST",
    DECLINE: "DECLINE",
    ACK: "ACK",
    NAK: "NAK",
    RELEASE: "RELEASE",
    INFORM: "INFORM",
}

_U32 = struct.Struct("!I")
_inet_aton = socket.inet_aton
_inet_ntoa = socket.inet_ntoa


def u32(value: int) -> bytes:
    return _U32.pack(value)


def read_u32(raw: bytes) -> int:
    if len(raw) != 4:
        raise MalformedPacket(f"expected a 4-byte integer option, got {len(raw)} bytes")
    return int(_U32.unpack(raw)[0])


def ip(address: str) -> bytes:
    return _inet_aton(address)


def ips(addresses: Iterable[str]) -> bytes:
    return b"".join(_inet_aton(a) for a in addresses)


def read_ip(raw: bytes) -> str:
    if len(raw) != 4:
        raise MalformedPacket(f"expected a 4-byte address option, got {len(raw)} bytes")
    return _inet_ntoa(raw)


def read_ips(raw: bytes) -> tuple[str, ...]:
    if not raw or len(raw) % 4:
        raise MalformedPacket(f"expected a list of addresses, got {len(raw)} bytes")
    return tuple(_inet_ntoa(raw[i : i + 4]) for i in range(0, len(raw), 4))


def read_text(raw: bytes) -> str:
    # Clients NUL-terminate host names now and then (RFC 2132 says they should not).
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def parse_relay_agent_info(raw: bytes) -> tuple[tuple[int, bytes], ...]:
    """Option 82 sub-options (circuit id = 1, remote id = 2, ...), in wire order.

    The server echoes option 82 byte for byte (RFC 3046 §2.2), so this is only for
    reading; it raises `MalformedPacket` if a sub-option runs past the option.
    """
    subs: list[tuple[int, bytes]] = []
    i, n = 0, len(raw)
    while i < n:
        if i + 2 > n:
            raise MalformedPacket("relay agent sub-option header runs past option 82")
        code, length = raw[i], raw[i + 1]
        end = i + 2 + length
        if end > n:
            raise MalformedPacket("relay agent sub-option runs past option 82")
        subs.append((code, raw[i + 2 : end]))
        i = end
    return tuple(subs)


def relay_agent_info(subs: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes((code, len(value))) + value for code, value in subs)
