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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, TypeDecorator, insert

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
    convert = [(c.key, _default(c), _field_writer(c, dialect)) for c in columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns))
    connection = plain_sql.connection()
    assert connection is not None  # a live connection of this transaction
    lines = ["\t".join([write(row[key] if key in row else default() if default else None)
                        for key, default, write in convert]) for row in rows]
    lines.append("")
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write("\n".join(lines))


_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _escaped(text: str) -> str:
    """`text` with COPY's four special characters escaped. A search (`in`, a C memchr) per
    character first: replace() itself counts with a slow loop even when nothing matches
    (~5 us per 6 kB instance document), and str.translate with a table of two-character
    replacements runs in Python's slow path (~700 us)."""
    for special, escape in _COPY_ESCAPES:
        if special in text:
            text = text.replace(special, escape)
    return text


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
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("COPY of binary values is not supported here")
    if isinstance(value, str):  # a str subclass (an enum's value): its text, not its name
        return _escaped(str.__str__(value))
    return _escaped(str(value))  # dates, decimals, floats, UUIDs


def _field_writer(column: Any, dialect: Any) -> Callable[[Any], str]:
    """How a value of `column` is written in COPY's text format: the column's own bind
    processing, then `copy_field`. JSON values (several per row on the DHCP path) through
    one shared encoder, and a type decorator's own conversion called directly (UTC
    datetimes): SQLAlchemy's processor wrappers and its per-call json.dumps cost ~5-10 us
    a value."""
    kind = column.type
    if isinstance(kind, JSON):
        return _json_field
    if isinstance(kind, TypeDecorator) and \
            kind.impl_instance.dialect_impl(dialect).bind_processor(dialect) is None:
        convert = kind.process_bind_param
        return lambda value: copy_field(convert(value, dialect))
    process = kind.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return copy_field
    return lambda value: copy_field(process(value) if value is not None else None)


_json_text = json.JSONEncoder().encode  # json.dumps's output, without its per-call set-up


def _json_field(value: Any) -> str:
    return "\\N" if value is None else _escaped(_json_text(value))


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
