"""Row ids taken from the database's sequence ahead of the INSERT.

With its ids known, a group's rows can name each other (a lease its instance, a job its
instance) and go in as collected rows (`uow.insert_tables`) instead of ORM objects whose
ids SQLAlchemy asks back one INSERT ... RETURNING at a time. PostgreSQL has the
sequences; elsewhere (SQLite) the rows keep the usual insert and this answers None.
"""

from __future__ import annotations

from typing import Any

from ..extensions import db
from . import plain_sql

# Plain SQL on the transaction's psycopg connection: through the session each call cost
# ~10 % of a small group of DHCP bindings.
_NEXT = "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"


def allocate_pair(first: Any, second: Any, count: int) -> tuple[list[int], list[int]] | None:
    """`count` fresh ids for each of two tables in one round trip (e.g. instances and their
    start jobs), or None where the database has no sequences."""
    if count <= 0 or db.session.get_bind().dialect.name != "postgresql":
        return None
    rows = plain_sql.run(plain_sql.connection(), _PAIR,
                         (first.__table__.name, second.__table__.name, count))
    return [int(a) for a, _ in rows], [int(b) for _, b in rows]


_PAIR = ("SELECT nextval(pg_get_serial_sequence(%s, 'id')), "
         "nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)")


def allocate(model: Any, count: int) -> list[int] | None:
    """`count` fresh ids for `model`'s table, or None where the database has no sequence."""
    if count <= 0 or db.session.get_bind().dialect.name != "postgresql":
        return None
    rows = plain_sql.run(plain_sql.connection(), _NEXT, (model.__table__.name, count))
    return [int(i) for i, in rows]
