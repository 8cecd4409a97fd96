"""`plain_sql.texts` and `ints`: array literals for PostgreSQL parameters, written by us.
One search over the values picks the quick way; the output is the same either way (the
round trip through PostgreSQL is in tests/integration/core/test_copy_rows.py)."""

from __future__ import annotations

import pytest

from app.services import plain_sql


def one_by_one(values: list[str | None]) -> str:
    """Each value quoted and escaped on its own, as the quick way must match."""
    return "{" + ",".join([plain_sql._element(v) for v in values]) + "}"


@pytest.mark.parametrize("values", [
    [], [""], ["", None], [None], ["bound"], ["a", "b", "c"], ["a", None, "c"],
    ['say "hi"', None], ["back\\slash"], ["plain", 'quote"', "plain"],
    ["comma,brace{}", "NULL", " spaced "], ["é", "\t\n"],
])
def test_texts_quotes_and_escapes_every_value(values: list[str | None]) -> None:
    assert plain_sql.texts(values) == one_by_one(values)
    assert plain_sql.texts(iter(values)) == one_by_one(values)  # any iterable


def test_texts_escapes_what_the_array_syntax_needs() -> None:
    assert plain_sql.texts(['a"b', "c\\d", None, "e"]) == '{"a\\"b","c\\\\d",NULL,"e"}'
    assert plain_sql.texts(["x", "y"]) == '{"x","y"}'
    assert plain_sql.texts(["", None]) == '{"",NULL}'


def test_ints() -> None:
    assert plain_sql.ints([1, 2, 3]) == "{1,2,3}"
    assert plain_sql.ints([1, None]) == "{1,NULL}"
    assert plain_sql.ints([]) == "{}"
