"""Hash-chained rows: canonical JSON and row hashes."""

from __future__ import annotations

import hashlib

import pytest

from app.ledger import GENESIS_HASH, LedgerError, canonical_json, make_row, row_hash


def test_canonical_json_is_order_free():
    assert canonical_json({"b": 1, "a": "é"}) == canonical_json({"a": "é", "b": 1})
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


@pytest.mark.parametrize("payload", [{"x": float("nan")}, {"x": object()}])
def test_canonical_json_refuses_non_json(payload):
    with pytest.raises(LedgerError):
        canonical_json(payload)


def test_row_hash_layout():
    expected = hashlib.sha256(bytes(32) + (7).to_bytes(8, "big") + b'{"a":1}').hexdigest()
    assert row_hash(GENESIS_HASH, 7, '{"a":1}') == expected
    assert row_hash(GENESIS_HASH, 7, {"a": 1}) == expected


@pytest.mark.parametrize(("prev", "seq"), [("zz" * 32, 1), ("00" * 31, 1), (GENESIS_HASH, -1)])
def test_row_hash_refuses_bad_input(prev, seq):
    with pytest.raises(LedgerError):
        row_hash(prev, seq, "{}")


def test_rows_chain():
    first = make_row(None, {"op": "bind"})
    second = make_row(first, {"op": "release"})
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.hash == row_hash(first.hash, 2, second.payload)
