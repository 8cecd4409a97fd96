"""Fixtures shared by the integration suites that put DHCP clients in a namespace."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.peers.clients import ClientMissing, DhcpClient, client_factory
from bench.peers.netns import Namespace, NetnsUnavailable, veth_pair

SERVER_ADDRESS = "10.77.0.1/24"  # the server's side of the veth pair; clients get leases


@pytest.fixture
def dhcp_network() -> Iterator[tuple[Namespace, Namespace]]:
    try:
        with veth_pair(SERVER_ADDRESS) as pair:
            yield pair
    except NetnsUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture
def make_client(dhcp_network: tuple[Namespace, Namespace],
                tmp_path: Path) -> Iterator[Callable[[str], DhcpClient]]:
    """A real client of the given kind in the client namespace; stopped on teardown."""
    with client_factory(dhcp_network[1], tmp_path) as build:
        def make(kind: str) -> DhcpClient:
            try:
                return build(kind)  # type: ignore[no-any-return]
            except ClientMissing as exc:
                pytest.fail(str(exc))

        yield make
