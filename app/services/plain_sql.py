"""Plain SQL for the DHCP fast path's few statements on PostgreSQL.

A group of exchanges runs about ten statements. Through the ORM each costs 250 us and
more of CPU here; as plain SQL on the transaction's own psycopg connection, ~60 us. Their
arrays go as one text literal each (`'{1,2,3}'::bigint[]`): psycopg adapts a Python list
element by element in Python, a join is one call. On SQLite (the embedded default) the
callers keep their SQLAlchemy statements: each is a function call there, not a round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..extensions import db


def driver() -> Any | None:
    """The transaction's psycopg connection on PostgreSQL, else None. The session's pending
    changes are flushed first, as an ORM statement would (autoflush), so the SQL sees them."""
    session = db.session
    if session.get_bind().dialect.name != "postgresql":
        return None
    session.flush()
    return connection()


def connection() -> Any:
    """The transaction's own DBAPI (psycopg) connection, without flushing the session."""
    return db.session.connection().connection.driver_connection


def ints(values: Iterable[int | None]) -> str:
    """An array literal of integers (NULL for None), for a `%s::bigint[]` parameter."""
    items = list(values)
    if None in items:
        return "{" + ",".join("NULL" if v is None else str(int(v)) for v in items) + "}"
    return "{" + ",".join(map(str, map(int, items))) + "}"  # type: ignore[arg-type]


def texts(values: Iterable[str | None]) -> str:
    """An array literal of strings (NULL for None), each quoted and escaped, for a
    `%s::text[]` parameter (or any array type: the elements are the values' text).

    One search over all the values decides whether any needs escaping: usually none
    does (a ledger hash: 149 -> 62 ns a value, `timeit` against the per-value way)."""
    items = values if isinstance(values, list) else list(values)
    if not items:
        return "{}"
    present = "".join(filter(None, items))
    if "\\" in present or '"' in present:
        return "{" + ",".join([_element(v) for v in items]) + "}"
    if None in items:
        return "{" + ",".join(["NULL" if v is None else '"' + v + '"' for v in items]) + "}"
    return '{"' + '","'.join(items) + '"}'  # type: ignore[arg-type]


def _element(text: str | None) -> str:
    """NULL, or the text quoted and escaped. A search (`in`, a C memchr) before each
    replace(): replace() scans slowly even when nothing matches (~5 us per 6 kB instance
    document)."""
    if text is None:
        return "NULL"
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if '"' in text:
        text = text.replace('"', '\\"')
    return '"' + text + '"'
