"""The unit of work used by every edge: one transaction, then what must happen after it.

Inside: services add ledger entries (`record`), new job ids (`enqueue`) and changed instances
(`touch`). On success the ledger rows are appended under the ledger-head lock as the very
last statements (so the lock is held for milliseconds, not the whole transaction), the
transaction commits, and only then are jobs dispatched and waiters notified — a job is never
visible to a worker before the state that produced it is durable.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Json
from sqlalchemy import insert

from ..extensions import db
from . import plain_sql


@dataclass
class Pending:
    ledger: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    instances: set[int] = field(default_factory=set)
    workflows: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # id -> (row, workflow)
    new_jobs: list[Any] = field(default_factory=list)  # job rows parked here (strong refs)
    instance_changes: dict[int, dict[str, Any]] = field(default_factory=dict)
    fresh_leases: dict[int, Any] = field(default_factory=dict)  # inserted by this transaction
    # Strong references for rows a transaction reads again: the session's identity map only
    # holds clean rows weakly, and a row it dropped costs another SELECT.
    keep: list[Any] = field(default_factory=list)
    # Rows nobody reads back by id in this transaction (lease history, jobs that ran ahead
    # and finished), inserted with one executemany per table when the unit of work ends.
    rows: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)


def pending() -> Pending:
    info = db.session.info
    if "leaseflow_pending" not in info:
        info["leaseflow_pending"] = Pending()
    return info["leaseflow_pending"]  # type: ignore[no-any-return]


def record(*, kind: str, subject: str, actor: str, payload: dict[str, Any]) -> None:
    pending().ledger.append({"kind": kind, "subject": subject, "actor": actor,
                             "payload": payload})


def enqueue(job_id: int) -> None:
    pending().jobs.append(job_id)


def touch(instance_id: int) -> None:
    pending().instances.add(instance_id)


def add_row(table: Any, row: dict[str, Any]) -> None:
    pending().rows.setdefault(table, []).append(row)


def flush_rows() -> None:
    """Insert the rows collected by `add_row` now (before reading them back), parents
    before children (a job row after its instance's)."""
    state = pending()
    order = _table_order()
    for table in sorted(state.rows, key=lambda t: order.get(t, len(order))):
        insert_rows(table, state.rows[table])
    state.rows.clear()


_order: dict[Any, int] = {}


def _table_order() -> dict[Any, int]:
    """Each table's place, parents first (the metadata sorts them anew on every call)."""
    if not _order:
        _order.update({table: i for i, table in enumerate(db.metadata.sorted_tables)})
    return _order


def insert_rows(table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows of one table, the cheapest way the database offers.

    On PostgreSQL that is COPY: an executemany costs ~50-70 us of CPU per row here (one
    pipelined statement each), COPY a few. Values go through each column's own bind
    processing (UTC datetimes, JSON), and a column a row leaves out gets its Python-side
    default, as an INSERT would. SQLite's executemany runs in-process and is cheap as it
    is.
    """
    if not rows:
        return
    session = db.session
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    from psycopg import sql

    named = set().union(*(row.keys() for row in rows))
    columns = [c for c in table.columns if c.key in named or _default(c) is not None]
    convert = [(c.key, _default(c), c.type.dialect_impl(dialect).bind_processor(dialect))
               for c in columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns))
    connection = plain_sql.connection()
    assert connection is not None  # a live connection of this transaction
    lines = []
    for row in rows:
        fields = []
        for key, default, process in convert:
            value = row[key] if key in row else default() if default else None
            fields.append(copy_field(process(value) if process is not None and value is not None
                                     else value))
        lines.append("\t".join(fields))
    lines.append("")
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write("\n".join(lines))


def _escaped(text: str) -> str:
    """`text` with COPY's four special characters escaped. Chained replace(), each a C scan
    that returns `text` itself when there is nothing to replace: str.translate with this
    table runs character by character, ~700 us for a 7 kB instance document."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n") \
        .replace("\r", "\\r")


def copy_field(value: Any) -> str:
    """One value in COPY's text format (what psycopg's `write_row` would send, without
    its per-value dumper lookup: that was a tenth of the DHCP fast path's CPU)."""
    if value is None:
        return "\\N"
    kind = type(value)
    if kind is str:
        return _escaped(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "t" if value else "f"
    if kind is datetime:
        return value.isoformat()  # type: ignore[no-any-return]
    if kind is Json:  # a JSON column's value, as SQLAlchemy's bind processing leaves it
        text = (value.dumps or json.dumps)(value.obj)
        return _escaped(text)
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("COPY of binary values is not supported here")
    if isinstance(value, str):  # a str subclass (an enum's value): its text, not its name
        return _escaped(str.__str__(value))
    return _escaped(str(value))  # dates, decimals, floats, UUIDs


def _default(column: Any) -> Any:
    """A column's Python-side default as a function of nothing, or None."""
    default = column.default
    if default is None or not (default.is_scalar or default.is_callable):
        return None
    if default.is_scalar:
        return lambda: default.arg
    return lambda: default.arg(None)


@contextlib.contextmanager
def savepoint() -> Iterator[None]:
    """A SAVEPOINT whose rollback also forgets the ledger entries and rows recorded inside."""
    state = pending()
    ledger, rows = len(state.ledger), {table: len(r) for table, r in state.rows.items()}
    nested = db.session.begin_nested()
    try:
        yield
    except BaseException:
        nested.rollback()
        del state.ledger[ledger:]
        for table in list(state.rows):
            del state.rows[table][rows.get(table, 0):]
        raise
    nested.commit()


@contextlib.contextmanager
def unit_of_work(*, dispatch_jobs: bool = True) -> Iterator[Pending]:
    from . import audit, dispatch, instances

    db.session.info.pop("leaseflow_pending", None)
    state = pending()
    try:
        yield state
        instances.flush_workflows(state)
        flush_rows()
        audit.flush(state.ledger)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        db.session.info.pop("leaseflow_pending", None)
        raise
    db.session.info.pop("leaseflow_pending", None)
    if state.jobs and dispatch_jobs:
        dispatch.send(state.jobs)
    if state.instances:
        dispatch.notify(state.instances)
