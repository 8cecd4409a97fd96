"""The hash-chained audit log (the ledger's rows), appended in commit order.

Entries collected during a transaction are written at its end: lock the single ledger-head
row, chain each entry's hash to the previous one, move the head. The lock serializes
appenders only for that last moment of each transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..ledger import GENESIS_HASH, canonical_json, row_hash
from ..models import AuditEntry, LedgerHead
from . import plain_sql, uow


def _head() -> LedgerHead:
    head = db.session.execute(
        select(LedgerHead).where(LedgerHead.id == 1).with_for_update()).scalar_one_or_none()
    if head is None:
        head = LedgerHead(id=1, seq=0, hash=GENESIS_HASH)
        db.session.add(head)
        db.session.flush()
    return head


def flush(entries: Sequence[dict[str, Any]]) -> int | None:
    """Append `entries` under the head's lock; the seq of the first (the others follow it
    in order), None if there were none. Their canonical payloads are written first,
    before the lock: under it only the chain's hashes are left to compute. On PostgreSQL:
    the lock, then the rows and the head's move as one statement (`uow.insert_tables`),
    then the caller's COMMIT: the lock is held for two round trips."""
    if not entries:
        return None
    payloads = [canonical_json({"kind": entry["kind"], "subject": entry["subject"],
                                "actor": entry["actor"], "data": entry["payload"]})
                for entry in entries]
    raw = plain_sql.driver()
    row = (plain_sql.run(raw, _HEAD_PG) or [None])[0] if raw is not None else None
    if row is not None:
        rows, seq, prev = _chained(entries, payloads, *row)
        uow.insert_tables([(AuditEntry.__table__, rows)], then=(_MOVE_PG, (seq, prev)))
    else:
        head = _head()  # SQLite, or no head row yet
        rows, head.seq, head.hash = _chained(entries, payloads, head.seq, head.hash)
        uow.insert_rows(AuditEntry.__table__, rows)
    return int(rows[0]["seq"])


def _chained(entries: Sequence[dict[str, Any]], payloads: Sequence[str], seq: int,
             prev: str) -> tuple[list[dict[str, Any]], int, str]:
    """The audit rows of `entries` (with their canonical `payloads`) after (seq, prev), and
    the new head."""
    rows = []
    for entry, payload in zip(entries, payloads, strict=True):
        seq += 1
        digest = row_hash(prev, seq, payload)
        rows.append({"seq": seq, "actor": entry["actor"], "kind": entry["kind"],
                     "subject": entry["subject"], "payload": payload, "prev_hash": prev,
                     "hash": digest})
        prev = digest
    return rows, seq, prev


_HEAD_PG = "SELECT seq, hash FROM ledger_head WHERE id = 1 FOR UPDATE"
_MOVE_PG = "UPDATE ledger_head SET seq = %s, hash = %s WHERE id = 1"
