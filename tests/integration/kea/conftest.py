"""A real kea-dhcp4 (in its own network namespace) behind a real kea-ctrl-agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.dhcp.kea import KeaClient
from bench.peers.kea import KeaMissing, KeaPeer, kea_server
from bench.peers.netns import Namespace, NetnsUnavailable, veth_pair

KEA_USER = ("leaseflow", "kea-test-password")
SUBNET = "10.77.0.0/24"
POOL = "10.77.0.100 - 10.77.0.200"


@pytest.fixture(scope="module")
def kea_net() -> Iterator[tuple[KeaPeer, Namespace]]:
    """Kea serving the server namespace, and the client namespace across the veth pair.

    The client side has an address in Kea's subnet because perfdhcp relays from it.
    """
    try:
        with veth_pair("10.77.0.1/24", "10.77.0.2/24") as (server, client):
            with kea_server(subnet=SUBNET, pool=POOL, namespace=server, auth=KEA_USER) as peer:
                yield peer, client
    except (KeaMissing, NetnsUnavailable) as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def kea(kea_net: tuple[KeaPeer, Namespace]) -> KeaPeer:
    return kea_net[0]


@pytest.fixture(scope="module")
def dhcp_client(kea_net: tuple[KeaPeer, Namespace]) -> Namespace:
    return kea_net[1]


@pytest.fixture
def kea_client(kea: KeaPeer) -> Iterator[KeaClient]:
    client = kea.client()
    yield client
    # Each test starts from an empty lease store.
    for lease in client.list_leases():
        client.delete_lease(lease.ip)
