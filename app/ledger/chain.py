"""Hash-chained ledger rows: each row's hash covers the previous row's hash, its own
sequence number and its canonical JSON payload, so editing, inserting or deleting any row
breaks every hash after it.

Hashes are SHA-256 as lowercase hex (64 characters), ready for a text column.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64  # the prev_hash of the first row
FIRST_SEQ = 1  # sequence numbers are contiguous from here


class LedgerError(Exception):
    """Base of the ledger's errors (bad input to the pure functions)."""


# One encoder for every entry: json.dumps with these options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)


def canonical_json(payload: Mapping[str, Any]) -> str:
    """One text per value: sorted keys, no spaces, UTF-8 kept; NaN and odd types refused."""
    try:
        return _CANONICAL.encode(payload)
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"payload is not plain JSON: {exc}") from exc


def _payload_text(payload: str | Mapping[str, Any]) -> str:
    # A string is hashed as stored: it is what canonical_json produced at append time.
    return payload if isinstance(payload, str) else canonical_json(payload)


def row_hash(prev_hash: str, seq: int, payload_json: str | Mapping[str, Any]) -> str:
    """sha256(prev_hash bytes || seq as 8 bytes big-endian || payload UTF-8), as hex."""
    try:
        prev = bytes.fromhex(prev_hash)
    except (ValueError, TypeError) as exc:
        raise LedgerError(f"prev_hash is not hex: {prev_hash!r}") from exc
    if len(prev) != 32:
        raise LedgerError(f"prev_hash must be 32 bytes of hex, got {prev_hash!r}")
    if not 0 <= seq < 2**64:
        raise LedgerError(f"seq out of range: {seq}")
    text = _payload_text(payload_json)
    return hashlib.sha256(prev + seq.to_bytes(8, "big") + text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerRow:
    """One audit-log row as stored: the lead streams these out of SQL into `verify`.

    `payload` is the stored canonical JSON text (or a mapping, canonicalised again).
    """

    seq: int
    prev_hash: str
    hash: str
    payload: str | Mapping[str, Any]


def make_row(
    previous: LedgerRow | None, payload: Mapping[str, Any] | str
) -> LedgerRow:
    """The row that follows `previous` (None for the first row), ready to insert."""
    seq = FIRST_SEQ if previous is None else previous.seq + 1
    prev_hash = GENESIS_HASH if previous is None else previous.hash
    text = _payload_text(payload)
    return LedgerRow(seq=seq, prev_hash=prev_hash, hash=row_hash(prev_hash, seq, text),
                     payload=text)
