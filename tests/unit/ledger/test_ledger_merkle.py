"""Merkle roots and per-row proofs."""

from __future__ import annotations

import hashlib

import pytest

from app.ledger import LedgerError, ProofStep, merkle_proof, merkle_root, verify_proof


def hashes(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_leaf_has_a_proof(size):
    leaves = hashes(size)
    root = merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        assert verify_proof(leaf, merkle_proof(leaves, index), root)


def test_proof_of_another_leaf_fails():
    leaves = hashes(9)
    root = merkle_root(leaves)
    assert not verify_proof(leaves[1], merkle_proof(leaves, 2), root)
    tampered = list(merkle_proof(leaves, 2))
    tampered[0] = ProofStep(sibling="00" * 32, sibling_is_left=tampered[0].sibling_is_left)
    assert not verify_proof(leaves[2], tampered, root)


def test_root_depends_on_order_and_count():
    leaves = hashes(5)
    assert merkle_root(leaves) != merkle_root(list(reversed(leaves)))
    assert merkle_root(leaves) != merkle_root(leaves + leaves[-1:])  # no duplication trick


def test_leaf_and_node_hashes_are_separated():
    leaves = hashes(2)
    # the root of two leaves is not the leaf hash of anything we could pass as one row
    assert merkle_root([merkle_root(leaves)]) != merkle_root(leaves)


def test_empty_range_has_no_root():
    with pytest.raises(LedgerError):
        merkle_root([])
    with pytest.raises(LedgerError):
        merkle_proof(hashes(3), 3)


def test_row_proof_for_an_anchored_range():
    from app.ledger import prove_row

    leaves = hashes(10)  # rows 21..30, anchored at 30
    proof = prove_row(leaves, first_seq=21, seq=27)
    assert proof.verify()
    assert (proof.seq, proof.anchor_seq, proof.row_hash) == (27, 30, leaves[6])
    assert proof.root == merkle_root(leaves)
    assert proof.to_json()["path"][0]["side"] in {"left", "right"}
    with pytest.raises(LedgerError):
        prove_row(leaves, first_seq=21, seq=31)
