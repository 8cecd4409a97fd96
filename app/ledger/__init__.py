"""The tamper-evident audit ledger: hash-chained rows, Merkle anchors, verification.

Pure functions and values, no I/O: the lead's service streams rows out of SQL and anchors
out of the chain and hands them here.
"""

from __future__ import annotations

from app.ledger.chain import (
    FIRST_SEQ,
    GENESIS_HASH,
    LedgerError,
    LedgerRow,
    canonical_json,
    make_row,
    row_hash,
)
from app.ledger.merkle import (
    ProofStep,
    RowProof,
    merkle_proof,
    merkle_root,
    prove_row,
    verify_proof,
)
from app.ledger.verify import Anchor, Problem, VerifyReport, anchor_ranges, verify

__all__ = [
    "FIRST_SEQ",
    "GENESIS_HASH",
    "Anchor",
    "LedgerError",
    "LedgerRow",
    "Problem",
    "ProofStep",
    "RowProof",
    "VerifyReport",
    "anchor_ranges",
    "canonical_json",
    "make_row",
    "merkle_proof",
    "merkle_root",
    "prove_row",
    "row_hash",
    "verify",
    "verify_proof",
]
