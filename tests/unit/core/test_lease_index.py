"""`LeaseIndex`: who holds which address, as the ledger's lease entries describe it."""

from __future__ import annotations

from app.leases.index import Change, LeaseIndex

NET = "10.0.0.0/24"


def change(lease_id: int, address: int, client: str, state: str, subnet: str = NET) -> Change:
    return Change(subnet=subnet, lease_id=lease_id, address=address, client_id=client,
                  state=state)


def test_a_bound_or_offered_lease_holds_its_address_for_its_client():
    index = LeaseIndex()
    index.apply([change(1, 10, "a", "bound"), change(2, 11, "b", "offered")], seq=7)
    assert index.holder(NET, 10) and index.holder(NET, 11) and not index.holder(NET, 12)
    assert index.holding(NET, "a").address == 10 and index.holding(NET, "b").state == "offered"
    assert index.seq == 7 and len(index) == 2
    assert index.holders(NET) == {10, 11} and index.holders("10.1.0.0/24") == set()


def test_a_lease_that_ends_frees_its_address_and_stays_the_clients_previous_one():
    index = LeaseIndex()
    index.apply([change(1, 10, "a", "bound")])
    for state in ("released", "expired", "declined", "abandoned"):
        index.apply([change(1, 10, "a", "bound"), change(1, 10, "a", state)])
        assert not index.holder(NET, 10) and index.holding(NET, "a") is None
        assert index.previous(NET, "a") == 10  # RFC 2131 §4.3.1: offered again if free


def test_an_old_leases_end_does_not_free_the_address_from_its_new_holder():
    index = LeaseIndex()
    index.apply([change(1, 10, "a", "bound"), change(2, 11, "a", "bound"),
                 change(3, 10, "b", "bound"),
                 change(1, 10, "a", "expired")])  # a late entry about lease 1
    assert index.holding(NET, "b").lease_id == 3 and index.holder(NET, 10)
    assert index.holding(NET, "a").lease_id == 2 and index.previous(NET, "a") == 11


def test_the_latest_lease_of_a_client_is_its_previous_address():
    index = LeaseIndex()
    index.apply([change(5, 20, "a", "released"), change(3, 30, "a", "expired")])
    assert index.previous(NET, "a") == 20  # lease 5 is newer than lease 3
    assert index.previous(NET, "nobody") is None


def test_subnets_are_apart():
    index = LeaseIndex()
    index.apply([change(1, 10, "a", "bound", subnet="10.1.0.0/24")])
    assert not index.holder(NET, 10) and index.holding(NET, "a") is None
    assert index.holder("10.1.0.0/24", 10)


def test_the_position_in_the_ledger_only_moves_forward():
    index = LeaseIndex()
    index.apply([], seq=9)
    index.apply([], seq=4)
    index.apply([change(1, 10, "a", "bound")])
    assert index.seq == 9


def test_a_holder_carries_its_expiry_and_a_renewal_moves_it():
    index = LeaseIndex()
    index.apply([Change(NET, 1, 10, "a", "bound", 100.0)])
    assert index.holding(NET, "a").expires_at == 100.0
    index.apply([Change(NET, 1, 10, "a", "bound", 700.0)])  # a lease.renew entry
    assert index.holding(NET, "a").expires_at == 700.0 and index.holder(NET, 10).expires_at == 700.0


def test_a_lease_let_go_here_holds_nothing_even_when_an_older_entry_comes_later():
    index = LeaseIndex()
    index.apply([change(1, 10, "a", "bound")])
    index.let_go(NET, "a", 11)  # not its address: nothing changes
    assert index.holding(NET, "a") is not None
    index.let_go(NET, "a", 10)
    assert index.holding(NET, "a") is None and index.holder(NET, 10) is None
    index.apply([change(1, 10, "a", "bound")])  # a renewal written before the RELEASE
    assert index.holding(NET, "a") is None and index.holder(NET, 10) is None
    index.apply([change(1, 10, "a", "released"), change(2, 10, "a", "bound")])
    assert index.holding(NET, "a").lease_id == 2  # a new lease of it holds as any other
    index.let_go(NET, "nobody", 10)  # a client it never knew: nothing to do
    assert index.holding(NET, "a").lease_id == 2 and index.holder(NET, 10).lease_id == 2
    assert index.holding(NET, "nobody") is None
