"""The client on the embedded py-evm chain, and its errors when no node answers."""

from __future__ import annotations

import socket
import threading

import pytest

from app.chain import AllocateItem, ChainError, ChainUnavailable
from app.chain.batcher import ChainBatcher
from app.chain.client import ChainClient, Registry


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_embedded_clients_of_one_name_share_a_chain():
    first = ChainClient.from_url("embedded://unit-shared")
    registry = first.registry()
    registry.allocate(AllocateItem.for_lease(subnet="s", ip="10.0.0.1", client_id="a"))

    second = ChainClient.from_url("embedded://unit-shared").registry(registry.address)

    assert second.address == registry.address
    assert not second.validate(
        AllocateItem.for_lease(subnet="s", ip="10.0.0.1", client_id="b")
    ).accepted


def test_embedded_redeploys_when_the_chain_is_new():
    registry = ChainClient.embedded_fresh().registry()
    # A new process starts an empty embedded chain: the remembered address is reused.
    again = ChainClient.embedded_fresh().registry(registry.address)
    assert again.address == registry.address


def test_concurrent_senders_keep_nonces_in_step():
    client = ChainClient.embedded_fresh()
    registry = client.registry()
    errors = []

    def send(t: int) -> None:
        try:
            for n in range(5):
                registry.allocate(
                    AllocateItem.for_lease(subnet="s", ip=t * 10 + n, client_id=f"t{t}")
                )
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert client.w3.eth.get_transaction_count(client.sender) == 1 + 4 * 5


def test_unknown_url_scheme():
    with pytest.raises(ChainError, match="unsupported chain URL"):
        ChainClient.from_url("ftp://example")


def test_node_down_is_transient():
    client = ChainClient.from_url(f"http://127.0.0.1:{closed_port()}", timeout=2)
    with pytest.raises(ChainUnavailable) as down:
        client.registry()
    assert down.value.transient is True


def test_node_down_fails_every_future_of_a_batch():
    client = ChainClient.from_url(f"http://127.0.0.1:{closed_port()}", timeout=2)
    registry = Registry(client, "0x" + "22" * 20)

    with ChainBatcher(registry, max_items=5, max_delay=0.05) as batcher:
        futures = [
            batcher.submit(AllocateItem.for_lease(subnet="s", ip=n, client_id="a"))
            for n in range(5)
        ]
        errors = [f.exception(timeout=30) for f in futures]

    assert all(isinstance(e, ChainUnavailable) and e.transient for e in errors)
