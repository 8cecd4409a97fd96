"""Ledger checks over the audit table: stream the rows into the pure verifier of `app.ledger`,
against the anchors READ FROM THE CHAIN, and export per-lease proofs.

The chain is the witness: the database's own copy of the anchors (`ledger_anchors`) could be
rewritten together with the rows. The database copy is used only when the chain cannot answer
— the node is down, or the embedded chain of this process is not the one that anchored (it
lives and dies with its process) — and the report says so in `anchors_source` and `note`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from ..chain import ChainError
from ..errors import NotFound
from ..extensions import db
from ..ipam.addresses import int_to_ip
from ..ledger import Anchor, LedgerRow, anchor_ranges, prove_row
from ..ledger import verify as verify_rows
from ..models import AuditEntry, LedgerAnchor
from . import chain, leases


def _rows() -> Iterator[LedgerRow]:
    stream = db.session.execute(
        select(AuditEntry.seq, AuditEntry.prev_hash, AuditEntry.hash, AuditEntry.payload)
        .order_by(AuditEntry.seq).execution_options(yield_per=5000))
    for seq, prev_hash, digest, payload in stream:
        yield LedgerRow(seq=seq, prev_hash=prev_hash, hash=digest, payload=payload)


def db_anchors() -> list[Anchor]:
    rows = db.session.execute(select(LedgerAnchor).order_by(LedgerAnchor.seq_to)).scalars()
    return [Anchor(seq=row.seq_to, root=row.root) for row in rows]


def anchors() -> tuple[list[Anchor], str, str | None]:
    """(anchors, where they came from: "chain" or "database", why not the chain if not)."""
    try:
        registry = chain.deployed_registry()
    except ChainError as exc:
        return db_anchors(), "database", f"the chain could not be read ({exc}); the " \
            "anchors stored in the database were used instead"
    if registry is None:
        stored = db_anchors()
        if not stored:
            return [], "chain", None  # nothing anchored yet, on chain or off
        return stored, "database", "the contract that holds the anchors is not on this " \
            "process's embedded chain (it lives only in the process that made it); the " \
            "anchors stored in the database were used instead"
    try:
        return [Anchor.of(record) for record in registry.anchors()], "chain", None
    except ChainError as exc:
        return db_anchors(), "database", f"the chain could not be read ({exc}); the " \
            "anchors stored in the database were used instead"


def verify() -> dict[str, Any]:
    """Recompute the hash chain and compare each anchored range with its on-chain root."""
    found, source, note = anchors()
    report = verify_rows(_rows(), found).to_json()
    report["anchors_source"] = source
    if note:
        report["note"] = note
    return report


def _lease_rows(lease_id: int, subject: str) -> list[AuditEntry]:
    rows = db.session.execute(select(AuditEntry).where(AuditEntry.subject == subject)
                              .order_by(AuditEntry.seq)).scalars()
    out = []
    for row in rows:
        try:
            data = json.loads(row.payload).get("data") or {}
        except (ValueError, AttributeError):
            continue
        if data.get("lease_id") == lease_id:
            out.append(row)
    return out


def proof(ip: str) -> dict[str, Any]:
    """The audit rows of the latest lease of `ip`, each with its Merkle path to an anchor.

    Rows after the last anchor have no proof yet (`proof: null`); `leaseflow ledger anchor`
    anchors them at once.
    """
    lease = leases.latest_for_ip(ip)
    subject = f"{lease.subnet.cidr}/{int_to_ip(lease.address)}"
    rows = _lease_rows(lease.id, subject)
    if not rows:
        raise NotFound(f"the ledger has no rows for lease {lease.id}", code="no_ledger_rows")
    found, source, note = anchors()
    ranges = anchor_ranges(found)
    range_hashes: dict[int, list[str]] = {}
    out = []
    for row in rows:
        covering = next(((first, last, root) for first, last, root in ranges
                         if first <= row.seq <= last), None)
        entry: dict[str, Any] = {"seq": row.seq, "at": row.at.isoformat(), "kind": row.kind,
                                 "subject": row.subject, "actor": row.actor,
                                 "payload": row.payload, "prev_hash": row.prev_hash,
                                 "hash": row.hash, "proof": None}
        if covering is not None:
            first, last, root = covering
            if first not in range_hashes:
                range_hashes[first] = list(db.session.execute(
                    select(AuditEntry.hash).where(AuditEntry.seq >= first,
                                                  AuditEntry.seq <= last)
                    .order_by(AuditEntry.seq)).scalars())
            hashes = range_hashes[first]
            row_proof = prove_row(hashes, first, row.seq)
            entry["proof"] = {**row_proof.to_json(), "anchor_root": root,
                              "valid": row_proof.verify() and row_proof.root == root
                              and len(hashes) == last - first + 1}
        out.append(entry)
    result: dict[str, Any] = {
        "lease": leases.describe(lease), "anchors_source": source, "rows": out,
        "hashing": "row hash = sha256(prev_hash || seq as 8 bytes big-endian || payload); "
                   "Merkle leaf = sha256(0x00 || row hash), node = sha256(0x01 || left || "
                   "right), an odd last node moves up unchanged"}
    if note:
        result["note"] = note
    return result
