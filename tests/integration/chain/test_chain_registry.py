"""LeaseRegistry behaviour on both the embedded chain and anvil (see conftest `chain`)."""

from __future__ import annotations

import pytest

from app.chain import (
    AllocateItem,
    ChainError,
    OutOfGas,
    Reason,
    ReleaseItem,
    TransactionReverted,
    Unauthorized,
    holder_id,
    ip_to_uint,
    subnet_id,
)
from app.chain import client as client_module
from app.ledger import make_row, merkle_root

pytestmark = pytest.mark.integration

SUBNET = "10.20.0.0/24"


def alloc(ip: str, client_id: str, expires: int = 0) -> AllocateItem:
    return AllocateItem.for_lease(subnet=SUBNET, ip=ip, client_id=client_id, expires=expires)


def release(ip: str, client_id: str, force: bool = False) -> ReleaseItem:
    return ReleaseItem.for_lease(subnet=SUBNET, ip=ip, client_id=client_id, force=force)


def test_second_holder_refused(registry):
    first = registry.allocate(alloc("10.20.0.5", "alice"))
    second = registry.allocate(alloc("10.20.0.5", "bob"))

    assert first.accepted and first.tx_hash
    assert second.reason is Reason.TAKEN
    holding = registry.holder_of(subnet_id(SUBNET), ip_to_uint("10.20.0.5"))
    assert holding is not None and holding.holder == holder_id("alice")


def test_same_holder_renews(registry):
    registry.allocate(alloc("10.20.0.6", "alice"))
    assert registry.allocate(alloc("10.20.0.6", "alice", expires=2**40)).accepted
    assert registry.holder_of(subnet_id(SUBNET), ip_to_uint("10.20.0.6")).expires == 2**40


def test_batch_with_conflicting_pair_gives_one_acceptance(registry):
    items = [
        alloc("10.20.0.10", "alice"),
        alloc("10.20.0.11", "carol"),
        alloc("10.20.0.10", "bob"),  # conflicts with the first item
        alloc("10.20.0.12", "dave"),
    ]
    dry = registry.validate_batch(items)
    outcomes = registry.allocate_batch(items)

    assert [o.reason for o in outcomes] == [
        Reason.ACCEPTED, Reason.ACCEPTED, Reason.TAKEN, Reason.ACCEPTED,
    ]
    assert [o.reason for o in dry] == [o.reason for o in outcomes]
    assert [o.item for o in outcomes] == items
    assert len({o.tx_hash for o in outcomes}) == 1  # one transaction
    assert registry.holder_of(subnet_id(SUBNET), ip_to_uint("10.20.0.10")).holder == (
        holder_id("alice")
    )


def test_validate_is_a_dry_run(registry):
    assert registry.validate(alloc("10.20.0.20", "alice")).accepted
    assert registry.holder_of(subnet_id(SUBNET), ip_to_uint("10.20.0.20")) is None
    registry.allocate(alloc("10.20.0.20", "alice"))
    assert registry.validate(alloc("10.20.0.20", "bob")).reason is Reason.TAKEN


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (release("10.20.0.30", "mallory"), Reason.NOT_HOLDER),
        (release("10.20.0.31", "alice"), Reason.NOT_ALLOCATED),
        (release("10.20.0.30", "alice"), Reason.ACCEPTED),
        (release("10.20.0.30", "mallory", force=True), Reason.ACCEPTED),  # sender is admin
    ],
)
def test_release_rules(registry, item, reason):
    registry.allocate(alloc("10.20.0.30", "alice"))
    assert registry.release(item).reason is reason


def test_release_by_non_holder_leaves_lease(registry):
    registry.allocate(alloc("10.20.0.32", "alice"))
    registry.release(release("10.20.0.32", "mallory"))
    holding = registry.holder_of(subnet_id(SUBNET), ip_to_uint("10.20.0.32"))
    assert holding is not None and holding.holder == holder_id("alice")


def test_forced_release_needs_admin(chain, registry, outsider):
    registry.allocate(alloc("10.20.0.33", "alice"))
    registry.grant_writer(outsider.sender)
    as_writer = registry.as_sender(outsider)

    assert as_writer.release(release("10.20.0.33", "bob", force=True)).reason is (
        Reason.NOT_ADMIN
    )
    registry.grant_admin(outsider.sender)
    assert as_writer.release(release("10.20.0.33", "bob", force=True)).accepted


def test_expired_holder_can_be_replaced(chain, registry):
    now = chain.block_timestamp()
    registry.allocate(alloc("10.20.0.40", "alice", expires=now + 100))
    assert registry.allocate(alloc("10.20.0.40", "bob", expires=now + 500)).reason is (
        Reason.TAKEN
    )

    later = chain.advance_time(200)

    assert later > now + 100
    replaced = registry.allocate(alloc("10.20.0.40", "bob", expires=later + 500))
    assert replaced.accepted
    assert registry.holder_of(subnet_id(SUBNET), ip_to_uint("10.20.0.40")).holder == (
        holder_id("bob")
    )


def test_expiry_in_the_past_refused(chain, registry):
    now = chain.block_timestamp()
    assert registry.allocate(alloc("10.20.0.41", "alice", expires=now - 10)).reason is (
        Reason.BAD_EXPIRY
    )


def test_writers_only(chain, registry, outsider):
    stranger = registry.as_sender(outsider)

    with pytest.raises(Unauthorized) as refused:
        stranger.allocate(alloc("10.20.0.50", "alice"))
    assert refused.value.transient is False
    with pytest.raises(Unauthorized):
        stranger.grant_writer(outsider.sender)

    registry.grant_writer(outsider.sender)
    assert registry.is_writer(outsider.sender)
    assert stranger.allocate(alloc("10.20.0.50", "alice")).accepted

    registry.revoke_writer(outsider.sender)
    with pytest.raises(Unauthorized):
        stranger.allocate(alloc("10.20.0.51", "alice"))


def test_anchors_are_stored_and_read_back(registry):
    rows = []
    previous = None
    for n in range(25):
        previous = make_row(previous, {"op": "bind", "n": n})
        rows.append(previous)
    first = merkle_root([r.hash for r in rows[:10]])
    second = merkle_root([r.hash for r in rows[10:25]])

    registry.anchor(10, first)
    registry.anchor(25, second)

    anchors = registry.anchors()
    assert [(a.seq, a.root_hex) for a in anchors] == [(10, first), (25, second)]
    assert registry.last_anchor().seq == 25


def test_anchor_sequence_must_grow(registry):
    registry.anchor(10, "11" * 32)
    with pytest.raises(TransactionReverted, match="anchor seq must grow"):
        registry.anchor(10, "22" * 32)
    assert registry.anchor_count() == 1


def test_anchor_needs_writer(registry, outsider):
    with pytest.raises(Unauthorized):
        registry.as_sender(outsider).anchor(1, "11" * 32)


def test_out_of_gas_is_a_clear_business_error(registry, monkeypatch):
    monkeypatch.setattr(client_module, "GAS_BASE", 60_000)
    monkeypatch.setattr(client_module, "GAS_PER_ITEM", 1)
    items = [alloc(f"10.20.1.{n}", f"c{n}") for n in range(40)]

    with pytest.raises(OutOfGas) as failed:
        registry.allocate_batch(items)
    assert isinstance(failed.value, ChainError) and not failed.value.transient

    monkeypatch.undo()
    assert all(o.accepted for o in registry.allocate_batch(items))  # nonce still in step


def test_large_batch_is_split_to_fit_blocks(registry, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_BATCH", 50)
    items = [alloc(f"10.20.2.{n}", f"c{n}") for n in range(120)]

    outcomes = registry.allocate_batch(items)

    assert all(o.accepted for o in outcomes)
    assert len({o.tx_hash for o in outcomes}) == 3
