"""Ledger checks over the audit table: stream the rows (and the anchors) into the pure
verifier of `app.ledger`, which names the first bad row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..ledger import Anchor, LedgerRow, verify as verify_rows
from ..models import AuditEntry, LedgerAnchor


def _rows() -> Iterator[LedgerRow]:
    stream = db.session.execute(
        select(AuditEntry.seq, AuditEntry.prev_hash, AuditEntry.hash, AuditEntry.payload)
        .order_by(AuditEntry.seq).execution_options(yield_per=5000))
    for seq, prev_hash, digest, payload in stream:
        yield LedgerRow(seq=seq, prev_hash=prev_hash, hash=digest, payload=payload)


def anchors() -> list[Anchor]:
    rows = db.session.execute(select(LedgerAnchor).order_by(LedgerAnchor.seq_to)).scalars()
    return [Anchor(seq=row.seq_to, root=row.root) for row in rows]


def verify() -> dict[str, Any]:
    return verify_rows(_rows(), anchors()).to_json()
