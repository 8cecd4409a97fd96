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
from ..ledger import Anchor, LedgerError, LedgerRow, anchor_ranges, prove_row, row_hash
from ..ledger import verify as verify_rows
from ..models import AuditEntry, LedgerAnchor, LedgerHead
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
    """Recompute the hash chain and compare each anchored range with its on-chain root.

    Two checks beyond the pure verifier, because SQL can renumber rows: a row that hashes
    right one place lower was shifted up by an inserted row (named as the first bad row), and
    one that hashes right one place higher was shifted down over a deleted row. And the
    rows must end where the ledger head (the appenders' own record) says they end, which
    catches a forged row appended at the end before the next anchor.
    """
    found, source, note = anchors()
    head_before = _head()
    report = verify_rows(_rows(), found).to_json()
    report["anchors_source"] = source
    if note:
        report["note"] = note
    if report["problem"] == "hash_mismatch":
        _explain_renumbering(report)
    elif report["ok"]:
        _check_head(report, head_before)
    return report


def _head() -> tuple[int, str | None]:
    head = db.session.execute(select(LedgerHead.seq, LedgerHead.hash)
                              .where(LedgerHead.id == 1)).one_or_none()
    return (int(head.seq), head.hash) if head is not None else (0, None)


def _fail(report: dict[str, Any], seq: int, problem: str, message: str) -> None:
    report.update(ok=False, first_bad_seq=seq, problem=problem, message=message)


def _explain_renumbering(report: dict[str, Any]) -> None:
    seq = int(report["first_bad_seq"])
    row = db.session.execute(select(AuditEntry.prev_hash, AuditEntry.hash, AuditEntry.payload)
                             .where(AuditEntry.seq == seq)).one_or_none()
    if row is None:
        return
    try:
        if seq > 1 and row_hash(row.prev_hash, seq - 1, row.payload) == row.hash:
            _fail(report, seq - 1, "inserted_row",
                  f"row {seq - 1} was inserted: the rows after it were renumbered")
        elif row_hash(row.prev_hash, seq + 1, row.payload) == row.hash:
            _fail(report, seq, "missing_row",
                  f"row {seq} was deleted: the rows after it were renumbered")
    except LedgerError:
        return


def _check_head(report: dict[str, Any], before: tuple[int, str | None]) -> None:
    last = int(report["last_seq"] or 0)
    seq, digest = before
    if last == seq and (digest is None or digest == report["head_hash"]):
        return
    if last > seq:
        seq, digest = _head()  # rows appended while we read are fine
        if last <= seq:
            return
        _fail(report, seq + 1, "inserted_row",
              f"rows from {seq + 1} were inserted after the ledger head (row {seq})")
    elif last < seq:
        _fail(report, last + 1, "missing_row", f"rows from {last + 1} to {seq} are missing")
    else:
        _fail(report, last, "hash_mismatch",
              f"row {last} differs from the ledger head's record of it")


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
