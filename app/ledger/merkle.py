"""Merkle roots and inclusion proofs over ledger row hashes.

A root of a range of rows is what gets anchored on chain; a proof shows that one row is in
an anchored range without handing over the other rows. Leaves and inner nodes are hashed
with different prefixes (0x00 / 0x01, as in RFC 6962) so an inner node can never pass for
a leaf; an odd node at the end of a level moves up unchanged (no duplication, so no two
different lists share a root).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from app.ledger.chain import LedgerError

_sha256 = hashlib.sha256


@dataclass(frozen=True, kw_only=True, slots=True)
class ProofStep:
    sibling: str  # hex of the sibling node
    sibling_is_left: bool


def _leaf(row_hash_hex: str) -> bytes:
    try:
        return _sha256(b"\x00" + bytes.fromhex(row_hash_hex)).digest()
    except (ValueError, TypeError) as exc:
        raise LedgerError(f"not a hex hash: {row_hash_hex!r}") from exc


def _level_up(level: list[bytes]) -> list[bytes]:
    parents = [
        _sha256(b"\x01" + level[i] + level[i + 1]).digest()
        for i in range(0, len(level) - 1, 2)
    ]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


def merkle_root(hashes: Sequence[str]) -> str:
    """The root (hex) over row hashes (hex), in order; at least one hash."""
    if not hashes:
        raise LedgerError("no Merkle root of an empty range")
    level = [_leaf(h) for h in hashes]
    while len(level) > 1:
        level = _level_up(level)
    return level[0].hex()


def merkle_proof(hashes: Sequence[str], index: int) -> tuple[ProofStep, ...]:
    """The path from leaf `index` to the root of `hashes`."""
    if not 0 <= index < len(hashes):
        raise LedgerError(f"leaf {index} not in a range of {len(hashes)}")
    level = [_leaf(h) for h in hashes]
    steps = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            steps.append(ProofStep(sibling=level[sibling].hex(), sibling_is_left=sibling < index))
        level = _level_up(level)
        index //= 2
    return tuple(steps)


def verify_proof(row_hash_hex: str, proof: Sequence[ProofStep], root: str) -> bool:
    """Does `proof` lead from this row hash to `root`?"""
    try:
        node = _leaf(row_hash_hex)
        for step in proof:
            sibling = bytes.fromhex(step.sibling)
            pair = sibling + node if step.sibling_is_left else node + sibling
            node = _sha256(b"\x01" + pair).digest()
    except (LedgerError, ValueError):
        return False
    return node.hex() == root.lower().removeprefix("0x")


@dataclass(frozen=True, kw_only=True, slots=True)
class RowProof:
    """Evidence that one row is inside an anchored range: export it with the row itself."""

    seq: int
    row_hash: str
    anchor_seq: int  # the anchor whose root this proof reaches
    root: str
    steps: tuple[ProofStep, ...]

    def verify(self) -> bool:
        return verify_proof(self.row_hash, self.steps, self.root)

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "row_hash": self.row_hash,
            "anchor_seq": self.anchor_seq,
            "root": self.root,
            "path": [
                {"sibling": s.sibling, "side": "left" if s.sibling_is_left else "right"}
                for s in self.steps
            ],
        }


def prove_row(range_hashes: Sequence[str], first_seq: int, seq: int) -> RowProof:
    """The proof for row `seq` in the anchored range starting at `first_seq`.

    `range_hashes` are the stored hashes of every row of that range, in order (the range
    of an anchor is the rows after the previous anchor up to its own seq).
    """
    index = seq - first_seq
    return RowProof(
        seq=seq,
        row_hash=range_hashes[index] if 0 <= index < len(range_hashes) else "",
        anchor_seq=first_seq + len(range_hashes) - 1,
        root=merkle_root(range_hashes),
        steps=merkle_proof(range_hashes, index),
    )
