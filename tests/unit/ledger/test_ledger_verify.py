"""`verify` names the first bad row for every kind of tampering."""

from __future__ import annotations

import dataclasses
import json

import pytest

from app.ledger import Anchor, LedgerRow, Problem, make_row, merkle_root, row_hash, verify


def build(n: int) -> list[LedgerRow]:
    rows, previous = [], None
    for i in range(n):
        previous = make_row(previous, {"op": "bind", "ip": f"10.0.0.{i % 250}", "n": i})
        rows.append(previous)
    return rows


def anchor(rows: list[LedgerRow], first: int, last: int) -> Anchor:
    return Anchor(seq=last, root=merkle_root([r.hash for r in rows[first - 1:last]]))


ROWS = build(60)
ANCHORS = [anchor(ROWS, 1, 20), anchor(ROWS, 21, 45)]


def test_intact_ledger_passes():
    report = verify(iter(ROWS), ANCHORS)
    assert report.ok and report.first_bad_seq is None
    assert (report.rows_checked, report.anchors_checked) == (60, 2)
    assert (report.last_anchored_seq, report.unanchored_rows) == (45, 15)
    assert report.head_hash == ROWS[-1].hash


def test_empty_ledger_passes():
    assert verify([], []).ok


def edited(rows):
    rows[29] = dataclasses.replace(rows[29], payload=rows[29].payload.replace("bind", "free"))
    return rows


def deleted(rows):
    del rows[29]
    return rows


def deleted_and_relinked(rows):
    # remove row 30 and renumber/relink the rest with correct-looking stored hashes
    kept = rows[:29]
    previous = kept[-1]
    for row in rows[30:]:
        previous = make_row(previous, row.payload)
        kept.append(previous)
    return kept


def inserted(rows):
    rows.insert(30, make_row(rows[28], {"op": "bind", "ip": "10.0.0.99"}))
    return rows


def inserted_with_new_seq(rows):
    intruder = make_row(rows[29], {"op": "bind", "ip": "10.0.0.99"})
    shifted = [dataclasses.replace(r, seq=r.seq + 1) for r in rows[30:]]
    return rows[:30] + [intruder] + shifted


def rewritten_from(rows):
    # edit row 30 and recompute every later hash: only the anchor can tell
    kept = rows[:29]
    previous = kept[-1]
    for row in rows[29:]:
        payload = '{"op":"evil"}' if row.seq == 30 else row.payload
        previous = make_row(previous, payload)
        kept.append(previous)
    return kept


def replaced(rows):
    rows[29] = make_row(rows[28], {"op": "bind", "ip": "10.0.0.99"})
    return rows


def tail_deleted(rows):
    return rows[:40]


def stored_hash_edited(rows):
    rows[29] = dataclasses.replace(rows[29], hash="ab" * 32)
    return rows


@pytest.mark.parametrize(
    ("tamper", "first_bad", "problem"),
    [
        (edited, 30, Problem.HASH_MISMATCH),
        (stored_hash_edited, 30, Problem.HASH_MISMATCH),
        (deleted, 30, Problem.MISSING_ROW),
        (deleted_and_relinked, 21, Problem.ANCHOR_MISMATCH),  # only the anchor can tell
        (inserted, 30, Problem.DUPLICATE_ROW),
        # the intruder (31) is self-consistent; the first row it displaced no longer is
        (inserted_with_new_seq, 32, Problem.HASH_MISMATCH),
        (replaced, 30, Problem.BROKEN_LINK),
        (rewritten_from, 21, Problem.ANCHOR_MISMATCH),  # the anchored range holding row 30
        (tail_deleted, 41, Problem.MISSING_ROW),
    ],
)
def test_tampering_names_first_bad_row(tamper, first_bad, problem):
    report = verify(tamper(list(ROWS)), ANCHORS)
    assert not report.ok
    assert (report.first_bad_seq, report.problem) == (first_bad, problem)
    assert str(first_bad) in report.message


@pytest.mark.parametrize("prev_hash", ["cd" * 32, "not hex"])
def test_edited_prev_hash_is_reported(prev_hash):
    rows = list(ROWS)
    rows[9] = dataclasses.replace(rows[9], prev_hash=prev_hash)
    report = verify(rows, ANCHORS)
    assert (report.first_bad_seq, report.problem) == (10, Problem.HASH_MISMATCH)


def test_first_row_must_start_from_genesis():
    forged = [LedgerRow(seq=1, prev_hash="ab" * 32, hash=row_hash("ab" * 32, 1, "{}"),
                        payload="{}")]
    report = verify(forged, [])
    assert (report.first_bad_seq, report.problem) == (1, Problem.BROKEN_LINK)


def test_rewritten_row_after_an_anchor_is_named():
    rows = list(ROWS)
    forged_prev = "ef" * 32
    rows[20] = LedgerRow(seq=21, prev_hash=forged_prev, payload=rows[20].payload,
                         hash=row_hash(forged_prev, 21, rows[20].payload))
    report = verify(rows, ANCHORS)
    assert (report.first_bad_seq, report.problem) == (21, Problem.BROKEN_LINK)


def test_anchor_roots_as_bytes_from_chain_records():
    @dataclasses.dataclass
    class Record:  # the shape of app.chain AnchorRecord
        seq: int
        root: bytes

    records = [Record(seq=a.seq, root=bytes.fromhex(a.root)) for a in ANCHORS]
    assert verify(ROWS, records).ok


def test_anchors_that_do_not_grow():
    report = verify(ROWS, [ANCHORS[1], ANCHORS[0]])
    assert report.problem is Problem.BAD_ANCHORS and not report.ok


def test_mapping_payloads_are_canonicalised():
    rows = [dataclasses.replace(r, payload=dict(reversed(json.loads(r.payload).items())))
            for r in ROWS]
    assert verify(rows, ANCHORS).ok
