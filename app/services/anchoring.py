"""Anchoring the audit ledger on chain: the Merkle root of the rows since the last anchor.

The chain is the record of what was anchored: the range of a new anchor starts after the last
anchor the contract holds, and an anchor whose transaction landed but whose database row was
lost (the process died before its commit) is copied back from the chain. Two processes never
anchor overlapping ranges: the whole step runs under a row lock on one `settings` row
(`ledger.anchor_lock`) — not the ledger head, so appending rows never waits for a chain
transaction — and the contract itself refuses a sequence number that does not grow.

A range is only anchored after its rows were checked (hashes recomputed, links followed): an
anchor vouches for the rows, so it must never vouch for rows already tampered with.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..chain import AnchorRecord
from ..chain.client import Registry
from ..errors import LeaseflowError
from ..extensions import db
from ..ledger import LedgerRow, merkle_root, row_hash
from ..models import AuditEntry, LedgerAnchor, SettingValue, utcnow
from . import chain

log = logging.getLogger(__name__)
LOCK_KEY = "ledger.anchor_lock"


class AnchorRefused(LeaseflowError):
    """The rows to anchor do not check out; anchoring them would vouch for tampered rows."""

    status = 409
    code = "ledger_tampered"


def _lock() -> None:
    """Take the anchoring lock for the rest of the caller's transaction."""
    table = SettingValue.__table__
    dialect = db.session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    db.session.execute(insert(table).values(key=LOCK_KEY, value="")
                       .on_conflict_do_nothing(index_elements=["key"]))
    # SQLite's BEGIN IMMEDIATE already made this transaction the only writer.
    db.session.execute(select(SettingValue.key).where(SettingValue.key == LOCK_KEY)
                       .with_for_update())


def _db_last_seq() -> int:
    return int(db.session.execute(select(func.max(LedgerAnchor.seq_to))).scalar() or 0)


def _copy_missing(registry: Registry, db_last: int) -> None:
    """Store anchors that are on chain but not in the database (a commit lost after the tx)."""
    records: list[AnchorRecord] = registry.anchors()
    previous = 0
    for record in records:
        if record.seq > db_last:
            db.session.add(LedgerAnchor(seq_from=previous + 1, seq_to=record.seq,
                                        root=record.root.hex(), tx_hash=None))
        previous = record.seq


def _range_rows(after: int, upto: int) -> list[LedgerRow]:
    stream = db.session.execute(
        select(AuditEntry.seq, AuditEntry.prev_hash, AuditEntry.hash, AuditEntry.payload)
        .where(AuditEntry.seq > after, AuditEntry.seq <= upto).order_by(AuditEntry.seq))
    return [LedgerRow(seq=s, prev_hash=p, hash=h, payload=text) for s, p, h, text in stream]


def _check_range(rows: list[LedgerRow], after: int) -> None:
    """The rows must link to the last anchored row and to each other, with no gap."""
    if not rows:
        return
    if after > 0:
        anchored = db.session.execute(select(AuditEntry.hash)
                                      .where(AuditEntry.seq == after)).scalar_one_or_none()
        if anchored != rows[0].prev_hash:
            raise AnchorRefused(f"row {rows[0].seq} does not link to the anchored row {after}; "
                                "run `leaseflow ledger verify`")
    first = after + 1
    for index, row in enumerate(rows):
        if row.seq != first + index:
            raise AnchorRefused(f"row {first + index} is missing; run `leaseflow ledger verify`")
        if row_hash(row.prev_hash, row.seq, row.payload) != row.hash:
            raise AnchorRefused(f"row {row.seq} does not match its hash; "
                                "run `leaseflow ledger verify`")
        if index and row.prev_hash != rows[index - 1].hash:
            raise AnchorRefused(f"row {row.seq} does not link to row {row.seq - 1}; "
                                "run `leaseflow ledger verify`")


def anchor_now() -> dict[str, Any]:
    """Anchor every row after the last anchor; the caller commits (unit of work)."""
    _lock()
    registry = chain.get().registry
    last = registry.last_anchor()
    chain_last = last.seq if last is not None else 0
    db_last = _db_last_seq()
    if chain_last > db_last:
        _copy_missing(registry, db_last)
    elif db_last > chain_last:
        # The contract knows fewer anchors than the database: it is not the contract that
        # anchored (a node reset, another chain URL, or the embedded chain of another
        # process). Anchoring here again would start a second, overlapping history.
        raise AnchorRefused(
            f"the database has anchors up to row {db_last} but the contract at "
            f"{registry.address} only up to row {chain_last}: anchor from the process that "
            "serves this chain (`leaseflow up` owns the embedded chain; use POST "
            "/api/v1/ledger/anchor there)", code="anchors_not_on_chain")
    head = int(db.session.execute(select(func.max(AuditEntry.seq))).scalar() or 0)
    if head <= chain_last:
        return {"anchored": False, "seq": chain_last, "message": "no new rows since the last "
                f"anchor (row {chain_last})"}
    rows = _range_rows(chain_last, head)
    _check_range(rows, chain_last)
    root = merkle_root([row.hash for row in rows])
    tx = registry.anchor(head, bytes.fromhex(root))
    db.session.add(LedgerAnchor(seq_from=chain_last + 1, seq_to=head, root=root,
                                tx_hash=tx.tx_hash))
    db.session.flush()
    log.info("anchored ledger rows %s..%s in %s", chain_last + 1, head, tx.tx_hash)
    return {"anchored": True, "seq_from": chain_last + 1, "seq_to": head, "root": root,
            "rows": len(rows), "tx_hash": tx.tx_hash, "block_number": tx.block_number}


_due_lock = threading.Lock()
_last_try: dict[str, float] = {}


def maybe_anchor() -> dict[str, Any] | None:
    """The ticker's call: anchor when `anchor_interval` has passed; never raises.

    A process-local clock keeps the ticker from asking the database every tick; the time of
    the last anchor in the database keeps several processes from anchoring too often.
    """
    interval = current_app.config["LEASEFLOW"].anchor_interval
    if interval <= 0:
        return None
    key = current_app.config["SQLALCHEMY_DATABASE_URI"]
    now = time.monotonic()
    with _due_lock:
        if now - _last_try.get(key, -interval) < interval:
            return None
        _last_try[key] = now
    savepoint = db.session.begin_nested()
    try:
        latest = db.session.execute(select(func.max(LedgerAnchor.at))).scalar()
        if latest is not None and latest > utcnow() - timedelta(seconds=interval):
            savepoint.commit()
            return None
        result = anchor_now()
        savepoint.commit()
        return result
    except Exception as exc:  # the ticker must go on; the next interval tries again
        savepoint.rollback()
        log.warning("anchoring the ledger failed: %s", exc)
        return {"anchored": False, "error": str(exc)}
