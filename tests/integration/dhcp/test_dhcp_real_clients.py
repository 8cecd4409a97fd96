"""Our DHCP server against real dhclient, udhcpc and dhcpcd over a veth pair."""

from __future__ import annotations

import ipaddress

import pytest

pytestmark = pytest.mark.integration

CLIENTS = ["dhclient", "udhcpc", "dhcpcd"]
POOL = (ipaddress.IPv4Address("10.77.0.100"), ipaddress.IPv4Address("10.77.0.199"))


def in_pool(address: str | None) -> bool:
    return address is not None and POOL[0] <= ipaddress.IPv4Address(address) <= POOL[1]


def bound(kind, client) -> str:
    """Get a lease with `client` and stay running; return the address it configured."""
    if kind == "udhcpc":
        client.start()
        _, address = client.wait_event(["bound"])
    elif kind == "dhcpcd":
        client.start()
        _, address = client.wait_event(["BOUND", "REBOOT"])
    else:
        result = client.obtain()
        assert result.returncode == 0, result.stderr
        _, address = client.wait_event(["BOUND", "REBOOT"])
    return address


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_binds_an_address_from_the_pool(dhcp_server, make_client, kind):
    client = make_client(kind)
    address = bound(kind, client)
    assert in_pool(address)
    assert client.address() == address  # the client configured what we acked
    stats = dhcp_server.wait_for(
        lambda s: s["bindings"].get(address, {}).get("state") == "bound", what="bound")
    assert stats["counters"]["offers"] >= 1 and stats["counters"]["acks"] >= 1
    assert stats["counters"].get("dropped_malformed", 0) == 0


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_renews_at_t1(start_server, make_client, kind):
    # A 6 s lease puts T1 at 3 s: the client unicasts a REQUEST (RENEWING) and we ACK it
    # to ciaddr, which only arrives because the client holds that address.
    server = start_server("--lease-time", "6")
    client = make_client(kind)
    address = bound(kind, client)
    after = len(client.events())
    reason, renewed = client.wait_event(["RENEW", "renew"], after=after, timeout=20)
    assert renewed == address
    # The stats file is a snapshot: one taken between counting the RENEWING request and
    # counting its ACK shows the first without the second, so wait for both.
    stats = server.wait_for(lambda s: s["counters"].get("requests_renewing", 0) >= 1
                            and s["counters"].get("acks", 0) >= 2,
                            what="a RENEWING request and its ACK")
    assert stats["counters"]["acks"] >= 2
    assert stats["bindings"][address]["state"] == "bound"


def test_udhcpc_renews_on_demand(dhcp_server, make_client):
    client = make_client("udhcpc")
    address = bound("udhcpc", client)
    after = len(client.events())
    client.renew()  # SIGUSR1
    assert client.wait_event(["renew"], after=after) == ("renew", address)
    dhcp_server.wait_for(lambda s: s["counters"].get("requests_renewing", 0) == 1,
                         what="one RENEWING request")


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_release_frees_the_address(dhcp_server, make_client, kind):
    client = make_client(kind)
    address = bound(kind, client)
    if kind == "udhcpc":
        after = len(client.events())
        client.release()  # SIGUSR2
        client.wait_event(["deconfig"], after=after)
    else:
        result = client.release()
        assert result.returncode == 0, result.stderr
    stats = dhcp_server.wait_for(
        lambda s: s["bindings"].get(address, {}).get("state") == "released", what="released")
    assert stats["counters"]["releases"] == 1


def test_dhclient_rebooting_into_the_wrong_network_is_naked_then_binds(
        dhcp_server, make_client):
    client = make_client("dhclient")
    client.seed_lease(address="192.168.99.50", mask="255.255.255.0", server="192.168.99.1")
    result = client.obtain()
    assert result.returncode == 0, result.stderr
    assert "DHCPNAK" in result.stderr
    _, address = client.wait_event(["BOUND"])
    assert in_pool(address) and client.address() == address
    stats = dhcp_server.wait_for(lambda s: s["counters"].get("acks", 0) >= 1, what="an ACK")
    assert stats["counters"]["naks"] == 1
    assert stats["counters"]["requests_init_reboot"] == 1


@pytest.mark.parametrize("kind", ["dhclient", "dhcpcd"])
def test_client_rebooting_with_its_lease_is_acked(dhcp_server, make_client, kind):
    # First run: get a lease and exit without releasing it (dhclient is killed, dhcpcd
    # runs one-shot), so both sides remember it. Second run: INIT-REBOOT, straight ACK.
    first = make_client(kind)
    result = first.obtain()
    assert result.returncode == 0, result.stderr
    _, address = first.wait_event(["BOUND"])
    if kind == "dhclient":
        first.stop()  # dhcpcd -1 has exited already; its stop() would delete the lease
    dhcp_server.wait_for(lambda s: s["counters"].get("acks", 0) >= 1, what="first ACK")
    offers_before = dhcp_server.counters()["offers"]
    again = make_client(kind)
    if kind == "dhclient":
        again.lease_file.write_text(first.lease_file.read_text())
        result = again.obtain()
        assert result.returncode == 0, result.stderr
    else:
        again.start()  # reads the lease dhcpcd kept under /var/lib/dhcpcd
    assert again.wait_event(["REBOOT"]) == ("REBOOT", address)
    stats = dhcp_server.wait_for(
        lambda s: s["counters"].get("requests_init_reboot", 0) >= 1, what="INIT-REBOOT")
    assert stats["counters"]["offers"] == offers_before  # no new DISCOVER was needed
    assert stats["counters"].get("naks", 0) == 0
