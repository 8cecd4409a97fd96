"""MemoryLeaseBackend: the allocator order and its thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from app.dhcp.backend import Binding, Client, Refusal
from app.dhcp.config import SubnetConfig
from app.dhcp.memory import MemoryLeaseBackend

SUBNET = SubnetConfig(cidr="10.1.0.0/16", pool=("10.1.0.10", "10.1.3.255"), lease_time=100)


def client(n: int) -> Client:
    return Client(subnet=SUBNET, client_id=n.to_bytes(4, "big"), chaddr=n.to_bytes(6, "big"))


def test_concurrent_clients_never_share_an_address() -> None:
    backend = MemoryLeaseBackend()

    def dora(n: int) -> str:
        offer = backend.offer(client(n), None, 0.0)
        assert isinstance(offer, Binding)
        bound = backend.commit(client(n), offer.address, 1.0)
        assert isinstance(bound, Binding)
        return bound.address

    with ThreadPoolExecutor(8) as pool:
        addresses = list(pool.map(dora, range(800)))
    assert len(set(addresses)) == 800
    assert len(backend.bindings(2.0)) == 800


def test_commit_of_someone_elses_address_is_refused() -> None:
    backend = MemoryLeaseBackend()
    offer = backend.offer(client(1), None, 0.0)
    assert isinstance(offer, Binding)
    assert isinstance(backend.commit(client(2), offer.address, 0.0), Refusal)


def test_expired_lease_is_the_clients_previous_binding() -> None:
    backend = MemoryLeaseBackend()
    first = backend.commit(client(1), "10.1.0.50", 0.0)
    assert isinstance(first, Binding)
    assert backend.lookup(client(1), 500.0).state == "expired"
    again = backend.offer(client(1), None, 500.0)
    assert again is not None and again.address == "10.1.0.50"


def test_forget_offer_frees_only_offers() -> None:
    backend = MemoryLeaseBackend()
    bound = backend.commit(client(1), "10.1.0.50", 0.0)
    assert isinstance(bound, Binding)
    backend.forget_offer(client(1), 1.0)
    assert backend.lookup(client(1), 1.0).state == "bound"


def test_exhausted_pool_reclaims_a_released_address() -> None:
    small = SubnetConfig(cidr="10.2.0.0/24", pool=("10.2.0.10", "10.2.0.12"), lease_time=100)

    def on_small(n: int) -> Client:
        return Client(subnet=small, client_id=bytes([n]), chaddr=bytes(6))

    backend = MemoryLeaseBackend()
    for n in range(3):
        bound = backend.offer(on_small(n), None, 0.0)
        assert bound is not None
        backend.commit(on_small(n), bound.address, 0.0)
    assert backend.offer(on_small(9), None, 0.0) is None
    backend.release(on_small(1), "10.2.0.11", 0.5)
    # Within a second of a fruitless scan the pool is not rescanned; afterwards it is.
    again = backend.offer(on_small(9), None, 2.0)
    assert again is not None and again.address == "10.2.0.11"
