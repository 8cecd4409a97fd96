"""Recompute the ledger's hash chain and compare it with the anchors found on chain.

One streaming pass: rows arrive in sequence order (straight from a SQL cursor), only the
hashes of the current anchor range are held in memory, and the first problem ends the
pass and names the first bad row's sequence number.

What each tampering looks like here:
- edited row: its recomputed hash differs from the stored one (or, if the attacker also
  rewrote the stored hashes, the range's Merkle root differs from its anchor);
- deleted row: a gap in the sequence numbers, or a prev_hash that does not link, or rows
  missing at the end that an anchor covers;
- inserted row: a repeated or out-of-order sequence number, or a broken link.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from app.ledger.chain import FIRST_SEQ, GENESIS_HASH, LedgerError, LedgerRow, canonical_json
from app.ledger.merkle import merkle_root


class Problem(enum.Enum):
    HASH_MISMATCH = "hash_mismatch"  # stored hash != recomputed hash: the row was edited
    BROKEN_LINK = "broken_link"  # a self-consistent row whose successor does not link to it
    MISSING_ROW = "missing_row"  # a sequence number is missing (deleted row)
    DUPLICATE_ROW = "duplicate_row"  # a sequence number repeats or goes back (inserted row)
    ANCHOR_MISMATCH = "anchor_mismatch"  # a range's Merkle root differs from its anchor
    BAD_ANCHORS = "bad_anchors"  # anchors whose sequence numbers do not grow


@dataclass(frozen=True, kw_only=True, slots=True)
class Anchor:
    """An anchor as read from the chain: rows after the previous anchor up to `seq`."""

    seq: int
    root: str  # hex

    @classmethod
    def of(cls, record: object) -> Anchor:
        """From anything with `.seq` and `.root` (hex str or bytes), e.g. an AnchorRecord."""
        root = record.root  # type: ignore[attr-defined]
        root_hex = root.hex() if isinstance(root, bytes | bytearray) else str(root)
        return cls(seq=int(record.seq), root=root_hex.lower().removeprefix("0x"))  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    ok: bool
    rows_checked: int
    anchors_checked: int
    last_seq: int | None  # the last row read
    head_hash: str | None  # its hash, i.e. the head of the chain
    last_anchored_seq: int | None
    unanchored_rows: int  # rows after the last anchor: chained, not yet on chain
    first_bad_seq: int | None = None
    problem: Problem | None = None
    message: str = "ledger intact"
    details: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "rows_checked": self.rows_checked,
            "anchors_checked": self.anchors_checked,
            "last_seq": self.last_seq,
            "head_hash": self.head_hash,
            "last_anchored_seq": self.last_anchored_seq,
            "unanchored_rows": self.unanchored_rows,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem.value if self.problem else None,
            "message": self.message,
        }


def anchor_ranges(anchors: Sequence[Anchor]) -> list[tuple[int, int, str]]:
    """(first_seq, last_seq, root) of each anchor: each covers the rows after the one before."""
    ranges = []
    start = FIRST_SEQ
    for anchor in anchors:
        if anchor.seq < start:
            raise LedgerError(f"anchor at seq {anchor.seq} does not follow {start - 1}")
        ranges.append((start, anchor.seq, anchor.root))
        start = anchor.seq + 1
    return ranges


def verify(rows: Iterable[LedgerRow], anchors: Iterable[object]) -> VerifyReport:
    """Check the rows (in seq order) against themselves and against the anchors."""
    anchor_list = [a if isinstance(a, Anchor) else Anchor.of(a) for a in anchors]
    counters = {"rows": 0, "anchors": 0}
    try:
        ranges = anchor_ranges(anchor_list)
    except LedgerError as exc:
        return _report(counters, None, None, None, 0, first_bad=None,
                       problem=Problem.BAD_ANCHORS, message=str(exc))

    sha256 = hashlib.sha256
    expected_seq = FIRST_SEQ
    prev_hash = GENESIS_HASH
    prev_bytes = bytes(32)
    last_seq: int | None = None
    range_index = 0
    range_hashes: list[str] = []
    last_anchored: int | None = None

    def fail(seq: int, problem: Problem, message: str) -> VerifyReport:
        return _report(counters, last_seq, prev_hash if last_seq is not None else None,
                       last_anchored, len(range_hashes), first_bad=seq, problem=problem,
                       message=message)

    for row in rows:
        seq = row.seq
        if seq != expected_seq:
            if seq > expected_seq:
                return fail(expected_seq, Problem.MISSING_ROW,
                            f"row {expected_seq} is missing (next row is {seq})")
            return fail(seq, Problem.DUPLICATE_ROW,
                        f"row {seq} appears again after row {expected_seq - 1}")
        payload = row.payload if isinstance(row.payload, str) else canonical_json(row.payload)
        # Inlined row_hash: this loop is the 100k-row hot path. The row is first checked
        # against its own stored prev_hash, then for its link to the row before, so an
        # edited row and a replaced neighbour are told apart.
        if row.prev_hash == prev_hash:
            own_prev = prev_bytes
        else:
            try:
                own_prev = bytes.fromhex(row.prev_hash)
            except (TypeError, ValueError):
                own_prev = b""
        digest = sha256(own_prev + seq.to_bytes(8, "big") + payload.encode("utf-8"))
        computed = digest.hexdigest()
        if computed != row.hash or len(own_prev) != 32:
            return fail(seq, Problem.HASH_MISMATCH,
                        f"row {seq} was changed: its content does not match its hash")
        if row.prev_hash != prev_hash:
            if seq == FIRST_SEQ:
                return fail(seq, Problem.BROKEN_LINK,
                            f"row {seq} does not start from the genesis hash")
            if last_anchored is not None and seq - 1 <= last_anchored:
                # the row before is vouched for by an anchor: this row was rewritten
                return fail(seq, Problem.BROKEN_LINK,
                            f"row {seq} was rewritten: it does not link to row {seq - 1}")
            return fail(seq - 1, Problem.BROKEN_LINK,
                        f"row {seq - 1} was replaced or inserted: row {seq} does not link "
                        "to it")
        counters["rows"] += 1
        last_seq = seq
        prev_hash = computed
        prev_bytes = digest.digest()
        expected_seq = seq + 1
        if range_index < len(ranges):
            range_hashes.append(computed)
            first, last, root = ranges[range_index]
            if seq == last:
                if merkle_root(range_hashes) != root:
                    return fail(first, Problem.ANCHOR_MISMATCH,
                                f"rows {first}..{last} differ from their on-chain anchor "
                                "(hashes rewritten): the first bad row is in this range")
                counters["anchors"] += 1
                last_anchored = last
                range_index += 1
                range_hashes = []

    if range_index < len(ranges):
        first, last, _root = ranges[range_index]
        return fail(expected_seq, Problem.MISSING_ROW,
                    f"rows from {expected_seq} are missing: anchor #{range_index} covers "
                    f"rows up to {last}")
    unanchored = (last_seq - (last_anchored or FIRST_SEQ - 1)) if last_seq is not None else 0
    return _report(counters, last_seq, prev_hash if last_seq is not None else None,
                   last_anchored, unanchored)


def _report(
    counters: dict[str, int],
    last_seq: int | None,
    head_hash: str | None,
    last_anchored: int | None,
    unanchored: int,
    *,
    first_bad: int | None = None,
    problem: Problem | None = None,
    message: str = "ledger intact",
) -> VerifyReport:
    return VerifyReport(
        ok=problem is None,
        rows_checked=counters["rows"],
        anchors_checked=counters["anchors"],
        last_seq=last_seq,
        head_hash=head_hash,
        last_anchored_seq=last_anchored,
        unanchored_rows=unanchored,
        first_bad_seq=first_bad,
        problem=problem,
        message=message,
    )
