"""A real kea-dhcp4 (in its own network namespace) behind a real kea-ctrl-agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.dhcp.kea import KeaClient
from bench.peers.kea import KeaMissing, KeaPeer, kea_server
from bench.peers.netns import NetnsUnavailable, veth_pair

KEA_USER = ("leaseflow", "kea-test-password")
SUBNET = "10.77.0.0/24"
POOL = "10.77.0.100 - 10.77.0.200"


@pytest.fixture(scope="module")
def kea() -> Iterator[KeaPeer]:
    try:
        with veth_pair("10.77.0.1/24") as (server, _client):
            with kea_server(subnet=SUBNET, pool=POOL, namespace=server, auth=KEA_USER) as peer:
                yield peer
    except (KeaMissing, NetnsUnavailable) as exc:
        pytest.fail(str(exc))


@pytest.fixture
def kea_client(kea: KeaPeer) -> Iterator[KeaClient]:
    client = kea.client()
    yield client
    # Each test starts from an empty lease store.
    for lease in client.list_leases():
        client.delete_lease(lease.ip)
