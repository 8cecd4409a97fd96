"""Row ids taken from the database's sequence ahead of the INSERT.

With its ids known, a group of rows goes in as one prepared executemany; otherwise
SQLAlchemy asks for them back with RETURNING in one statement of thousands of parameters,
which psycopg parses anew every time (it caches only short statements). PostgreSQL has the
sequences; elsewhere (SQLite) the rows keep the usual insert and this answers None.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from ..extensions import db

_NEXT = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
             "FROM generate_series(1, :count)")


def allocate_pair(first: Any, second: Any, count: int) -> tuple[list[int], list[int]] | None:
    """`count` fresh ids for each of two tables in one round trip (e.g. instances and their
    start jobs), or None where the database has no sequences."""
    if count <= 0 or db.session.get_bind().dialect.name != "postgresql":
        return None
    rows = db.session.execute(_PAIR, {"first": first.__table__.name,
                                      "second": second.__table__.name, "count": count}).all()
    return [int(a) for a, _ in rows], [int(b) for _, b in rows]


_PAIR = text("SELECT nextval(pg_get_serial_sequence(:first, 'id')), "
             "nextval(pg_get_serial_sequence(:second, 'id')) FROM generate_series(1, :count)")


def allocate(model: Any, count: int) -> list[int] | None:
    """`count` fresh ids for `model`'s table, or None where the database has no sequence."""
    if count <= 0 or db.session.get_bind().dialect.name != "postgresql":
        return None
    return [int(i) for i in db.session.execute(
        _NEXT, {"table": model.__table__.name, "count": count}).scalars()]
