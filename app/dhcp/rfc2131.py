"""The DHCP server's decisions (RFC 2131, 3046, 6842) as pure functions, without I/O.

Two steps, h11 style: `plan()` reads a decoded request and says what to do — drop it, reply
at once (INFORM, a NAK for a wrong network), or `Ask` the lease backend something; then
`answer()` turns the backend's result into a reply or a deliberate silence. Where the reply
goes (`destination()`) is decided here too. The I/O driver is `app.dhcp.handler.handle`.

Which address a client gets is not decided here: that is the backend's job (`LeaseBackend`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from app.dhcp import options as opt
from app.dhcp.backend import Binding, Client, Refusal
from app.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    BROADCAST_FLAG,
    ZERO_IP,
    DhcpPacket,
    encode_options,
)
from app.dhcp.config import ServerConfig, SubnetConfig

BROADCAST_IP = "255.255.255.255"
SERVER_PORT = 67  # also the port a relay agent listens on (RFC 1542 §5.4)
CLIENT_PORT = 68


class Kind(enum.Enum):
    """What a request means, after RFC 2131 §4.3.2's REQUEST state analysis."""

    DISCOVER = "discover"
    SELECTING = "selecting"  # REQUEST with our server id: the client took our offer
    OTHER_SERVER = "other_server"  # REQUEST with another server's id
    INIT_REBOOT = "init_reboot"  # REQUEST, no server id, requested address, no ciaddr
    RENEWING = "renewing"  # REQUEST, ciaddr, unicast to us
    REBINDING = "rebinding"  # REQUEST, ciaddr, broadcast (or relayed)
    DECLINE = "decline"
    RELEASE = "release"
    INFORM = "inform"


class Inbound(NamedTuple):
    """A request understood: its meaning, subnet and client; `address` is the one at stake.
    (A named tuple, as `Ask` and `Reply`: see `backend.Client`.)"""

    packet: DhcpPacket
    kind: Kind
    client: Client
    address: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Drop:
    """Not for us or not valid: no reply, counted under `reason`."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Silence:
    """Handled, and RFC 2131 wants no reply (RELEASE, DECLINE, unknown INIT-REBOOT...)."""

    reason: str


class Reply(NamedTuple):
    """A packet to send to (address, port); `counter` is offers/acks/naks/informs."""

    packet: DhcpPacket
    address: str
    port: int
    counter: str
    kind: Kind | None = None  # what the request was, for the per-kind counters
    # `codec.encode_options(packet.options)`, when the reply was built from a template.
    options_wire: bytes | None = None


class Ask(NamedTuple):
    """Call `backend.<call>(client, ...)` and pass the result to `answer()`."""

    call: str  # offer | commit | renew | release | decline | forget_offer
    inbound: Inbound


Plan = Drop | Reply | Ask
Outcome = Drop | Silence | Reply

_REQUEST_TYPES = frozenset(
    (opt.DISCOVER, opt.REQUEST, opt.DECLINE, opt.RELEASE, opt.INFORM)
)


def client_identity(packet: DhcpPacket) -> bytes:
    """Option 61 if the client sent one, else hardware type + chaddr (RFC 2131 §4.2)."""
    cid = packet.options.get(opt.CLIENT_ID)
    if cid:
        return cid
    return bytes((packet.htype,)) + packet.chaddr


def select_subnet(
    packet: DhcpPacket,
    interface: str | None,
    hint: str | None,
    config: ServerConfig,
    by_ciaddr: bool = False,
) -> SubnetConfig | None:
    """giaddr's subnet for relayed traffic; ciaddr's (`hint`, with `by_ciaddr`) for a
    client that already has an address and sends straight to us, even from behind a relay
    (RENEWING, RELEASE, INFORM); else one attached to the receiving interface.

    On an interface with several subnets (a shared network) the one holding `hint` (ciaddr
    or the requested address) wins, else the first.
    """
    if packet.giaddr != ZERO_IP:
        return config.subnet_of(packet.giaddr)
    if by_ciaddr and hint is not None:
        subnet = config.subnet_of(hint)
        if subnet is not None:
            return subnet
    candidates = config.by_interface.get(interface or "", ())
    if not candidates:
        return None
    if hint is not None and len(candidates) > 1:
        for subnet in candidates:
            if subnet.contains(hint):
                return subnet
    return candidates[0]


# The kinds, once: reading an enum member off its class costs a lookup per packet.
_DISCOVER, _SELECTING, _OTHER_SERVER = Kind.DISCOVER, Kind.SELECTING, Kind.OTHER_SERVER
_INIT_REBOOT, _RENEWING, _REBINDING = Kind.INIT_REBOOT, Kind.RENEWING, Kind.REBINDING
_DECLINE, _RELEASE, _INFORM = Kind.DECLINE, Kind.RELEASE, Kind.INFORM


def plan(
    packet: DhcpPacket,
    *,
    interface: str | None,
    config: ServerConfig,
    to_broadcast: bool | None = None,
) -> Plan:
    """Decide what a received packet needs.

    `interface` is the receiving interface; `to_broadcast` whether the datagram was sent to
    a broadcast address (None if unknown), which tells RENEWING from REBINDING.
    """
    if packet.op != BOOTREQUEST:
        return Drop(reason="not_request")
    msg = packet.message_type
    if msg is None:
        return Drop(reason="no_message_type")  # plain BOOTP: not served
    if msg not in _REQUEST_TYPES:
        return Drop(reason="not_request")  # OFFER/ACK/NAK sent to a server, or unknown type
    requested = packet.requested_ip
    server_id = packet.server_id
    ciaddr = packet.ciaddr if packet.ciaddr != ZERO_IP else None
    # What the backend is asked ("" for INFORM: nobody), and whether the address at stake
    # must lie on the client's network (else NAK) before it is.
    call, on_network = "", False

    if msg == opt.REQUEST:
        if server_id is not None:
            if server_id == config.server_id:
                kind, call = _SELECTING, "commit"
            else:
                kind, call = _OTHER_SERVER, "forget_offer"
            if requested is None:
                return Drop(reason="bad_request")  # SELECTING must name the address
            address: str | None = requested
        elif ciaddr is not None:
            # RENEWING is unicast to us; REBINDING is broadcast, possibly via a relay.
            relayed = packet.giaddr != ZERO_IP
            kind = _REBINDING if relayed or to_broadcast else _RENEWING
            call, on_network, address = "renew", True, ciaddr
        elif requested is not None:
            kind, call, on_network, address = _INIT_REBOOT, "renew", True, requested
        else:
            return Drop(reason="bad_request")
    elif msg == opt.DISCOVER:
        kind, call, address = _DISCOVER, "offer", requested
    elif msg == opt.DECLINE:
        if server_id is not None and server_id != config.server_id:
            return Drop(reason="other_server")
        if requested is None:
            return Drop(reason="bad_request")
        kind, call, address = _DECLINE, "decline", requested
    elif msg == opt.RELEASE:
        if server_id is not None and server_id != config.server_id:
            return Drop(reason="other_server")
        if ciaddr is None:
            return Drop(reason="bad_request")
        kind, call, address = _RELEASE, "release", ciaddr
    else:  # INFORM
        if ciaddr is None:
            return Drop(reason="bad_request")
        kind, address = _INFORM, ciaddr

    subnet = select_subnet(packet, interface, address, config,
                           kind is _RENEWING or kind is _RELEASE or kind is _INFORM)
    if subnet is None:
        return Drop(reason="no_subnet")
    client = Client(
        subnet=subnet,
        client_id=client_identity(packet),
        chaddr=packet.chaddr,
        hostname=packet.hostname,
        relay_info=packet.relay_agent_info,
    )
    inbound = Inbound(packet=packet, kind=kind, client=client, address=address)
    if on_network and address is not None and not subnet.contains(address):
        # §4.3.2: the address is not on the client's network (it moved): NAK.
        return nak(inbound, config, "address not on this network")
    if not call:
        return inform(inbound, config)
    return Ask(call=call, inbound=inbound)


def answer(ask: Ask, result: Binding | Refusal | None, config: ServerConfig) -> Outcome:
    """The reply (or silence) for the backend's `result` to `ask`."""
    inbound = ask.inbound
    call = ask.call
    if call == "offer":
        if isinstance(result, Binding):
            return lease_reply(inbound, result, config, opt.OFFER)
        return Silence(reason="no_offer")
    if call in ("commit", "renew"):
        if isinstance(result, Binding):
            return lease_reply(inbound, result, config, opt.ACK)
        if isinstance(result, Refusal):
            return nak(inbound, config, result.reason)
        if config.authoritative:
            return nak(inbound, config, "no record of this client")
        return Silence(reason="unknown_client")  # §4.3.2: another server may know it
    if call == "release":
        return Silence(reason="releases")
    if call == "decline":
        return Silence(reason="declines")
    return Silence(reason="other_server")


def _base_reply(request: DhcpPacket, *, yiaddr: str, ciaddr: str, flags: int,
                options: Mapping[int, bytes]) -> DhcpPacket:
    return DhcpPacket(
        op=BOOTREPLY,
        htype=request.htype,
        hlen=request.hlen,
        xid=request.xid,
        flags=flags,
        ciaddr=ciaddr,
        yiaddr=yiaddr,
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        options=options,
    )


def _echoes(request: DhcpPacket) -> dict[int, bytes]:
    """The client id (RFC 6842) and, last of all, option 82 unchanged (RFC 3046)."""
    echoes: dict[int, bytes] = {}
    cid = request.options.get(opt.CLIENT_ID)
    if cid is not None:
        echoes[opt.CLIENT_ID] = cid
    relay = request.options.get(opt.RELAY_AGENT_INFO)
    if relay is not None:
        echoes[opt.RELAY_AGENT_INFO] = relay
    return echoes


def _parameters(request: DhcpPacket, subnet: SubnetConfig, options: dict[int, bytes],
                hostname: str | None) -> None:
    """Subnet options the client asked for in option 55, in its order; all if no list."""
    available = subnet.parameters
    prl = request.options.get(opt.PARAMETER_REQUEST_LIST)
    if prl is None:
        options.update(available)
        return
    for code in prl:
        value = available.get(code)
        if value is not None:
            options[code] = value
        elif code == opt.HOSTNAME and hostname:
            options[code] = hostname.encode()


# The options of an OFFER or ACK before the echoes (message type, server id, lease time,
# T1, T2, the subnet's parameters in the order the client asked for them) are the same for
# every client on a subnet that sends the same parameter request list: they are built and
# encoded once per (message type, lease time, server id, list) and kept on the subnet
# (`SubnetConfig.replies`), at most this many per subnet. A reply then copies them and
# appends its echoes.
TEMPLATES_PER_SUBNET = 64


def _lease_options(request: DhcpPacket, subnet: SubnetConfig, config: ServerConfig,
                   lease: int, message_type: int,
                   hostname: str | None) -> tuple[Mapping[int, bytes], bytes]:
    """The options of a lease reply before its echoes, and their wire form."""
    prl = request.options.get(opt.PARAMETER_REQUEST_LIST)
    # A host name the client asked for and the subnet does not set is its own: no template.
    own = bool(hostname) and prl is not None and opt.HOSTNAME in prl \
        and opt.HOSTNAME not in subnet.parameters
    key = (message_type, lease, config.server_id_bytes, prl)
    if not own:
        template = subnet.replies.get(key)
        if template is not None:
            return template
    t1, t2 = subnet.timers(lease)
    options: dict[int, bytes] = {
        opt.MESSAGE_TYPE: bytes((message_type,)),
        opt.SERVER_ID: config.server_id_bytes,
        opt.LEASE_TIME: opt.u32(lease),
        opt.RENEWAL_TIME: opt.u32(t1),
        opt.REBINDING_TIME: opt.u32(t2),
    }
    _parameters(request, subnet, options, hostname)
    template = (options, encode_options(options))
    if not own:
        if len(subnet.replies) >= TEMPLATES_PER_SUBNET:
            subnet.replies.clear()  # clients with ever new lists: start again
        subnet.replies[key] = template
    return template


def lease_reply(inbound: Inbound, binding: Binding, config: ServerConfig,
                message_type: int) -> Reply:
    """OFFER or ACK carrying a lease (RFC 2131 table 3)."""
    request = inbound.packet
    fixed, wire = _lease_options(request, inbound.client.subnet, config, binding.lease_time,
                                 message_type, binding.hostname)
    options = dict(fixed)
    echoes = _echoes(request)
    if echoes:
        options.update(echoes)
        wire += encode_options(echoes)
    packet = _base_reply(
        request,
        yiaddr=binding.address,
        # ciaddr is echoed in an ACK (RENEWING/REBINDING), zero in an OFFER.
        ciaddr=request.ciaddr if message_type == opt.ACK else ZERO_IP,
        flags=request.flags,
        options=options,
    )
    address, port = destination(request, message_type)
    counter = "offers" if message_type == opt.OFFER else "acks"
    return Reply(packet=packet, address=address, port=port, counter=counter, kind=inbound.kind,
                 options_wire=wire)


def inform(inbound: Inbound, config: ServerConfig) -> Reply:
    """ACK to an INFORM: configuration only, no lease time, no binding (§4.3.5)."""
    request = inbound.packet
    options: dict[int, bytes] = {
        opt.MESSAGE_TYPE: bytes((opt.ACK,)),
        opt.SERVER_ID: config.server_id_bytes,
    }
    _parameters(request, inbound.client.subnet, options, None)
    options.update(_echoes(request))
    packet = _base_reply(request, yiaddr=ZERO_IP, ciaddr=request.ciaddr, flags=request.flags,
                         options=options)
    address, port = destination(request, opt.ACK)
    return Reply(packet=packet, address=address, port=port, counter="informs", kind=inbound.kind)


def nak(inbound: Inbound, config: ServerConfig, reason: str) -> Reply:
    """DHCPNAK (§4.3.2, table 3): no addresses; broadcast bit set when relayed (§4.1)."""
    request = inbound.packet
    options: dict[int, bytes] = {
        opt.MESSAGE_TYPE: bytes((opt.NAK,)),
        opt.SERVER_ID: config.server_id_bytes,
        opt.MESSAGE: reason.encode()[:255],
    }
    options.update(_echoes(request))
    flags = request.flags
    if request.giaddr != ZERO_IP:
        flags |= BROADCAST_FLAG  # the relay must broadcast it to the client
    packet = _base_reply(request, yiaddr=ZERO_IP, ciaddr=ZERO_IP, flags=flags, options=options)
    address, port = destination(request, opt.NAK)
    return Reply(packet=packet, address=address, port=port, counter="naks", kind=inbound.kind)


def destination(request: DhcpPacket, message_type: int) -> tuple[str, int]:
    """Where a reply goes (RFC 2131 §4.1), in this order:

    1. giaddr set: to the relay, port 67;
    2. a NAK otherwise: broadcast (the client's address is in doubt);
    3. ciaddr set: unicast to it (RENEWING, REBINDING, INFORM);
    4. broadcast bit set: broadcast;
    5. else the RFC wants a unicast to yiaddr at chaddr. The client has no address yet and
       will not answer ARP, so that needs an ARP entry written by hand or a raw socket; with
       a plain UDP socket it is impossible, so we broadcast (as Kea does in UDP mode). All
       clients accept a broadcast reply.
    """
    if request.giaddr != ZERO_IP:
        return request.giaddr, SERVER_PORT
    if message_type == opt.NAK:
        return BROADCAST_IP, CLIENT_PORT
    if request.ciaddr != ZERO_IP:
        return request.ciaddr, CLIENT_PORT
    return BROADCAST_IP, CLIENT_PORT
