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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    read_only: bool = False  # `reads_only()`: autocommit, nothing may be written
    # The seq of `ledger`'s first entry once appended (the others follow it in order).
    ledger_from: int | None = None


def pending() -> Pending:
    info = db.session.info
    if "leaseflow_pending" not in info:
        info["leaseflow_pending"] = Pending()
    return info["leaseflow_pending"]  # type: ignore[no-any-return]


def reads_only() -> None:
    """PostgreSQL: the rest of this unit of work only reads (a group of DHCP offers), so
    its statements run in autocommit: no BEGIN and no COMMIT, two round trips of four.
    Called after the session's first statement, it changes nothing. Rows,
    ledger entries or jobs collected afterwards fail the unit of work: written without a
    transaction they would not be atomic (and the ledger head would not stay locked)."""
    session = db.session
    if session.get_bind().dialect.name == "postgresql" and not session().in_transaction():
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        pending().read_only = True


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
    insert_tables(_collected(state))
    state.rows.clear()


_order: dict[Any, int] = {}


def _table_order() -> dict[Any, int]:
    """Each table's place, parents first (the metadata sorts them anew on every call)."""
    if not _order:
        _order.update({table: i for i, table in enumerate(db.metadata.sorted_tables)})
    return _order


def _collected(state: Pending) -> list[tuple[Any, list[dict[str, Any]]]]:
    order = _table_order()
    return [(table, state.rows[table])
            for table in sorted(state.rows, key=lambda t: order.get(t, len(order)))]


def insert_rows(table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows of one table, the cheapest way the database offers (`insert_tables`)."""
    insert_tables([(table, rows)])


# A table goes by COPY (see insert_tables) when its values are longer than UNNEST_CHARS in
# all and than LONG_ROW_CHARS a row on average: long documents, not many short rows. A
# large group's ledger entries (~460 characters a row) went by COPY on the first count
# alone, three round trips more with the ledger head locked.
UNNEST_CHARS = 32_768
LONG_ROW_CHARS = 1_024


def insert_tables(tables: Sequence[tuple[Any, list[dict[str, Any]]]],
                  then: tuple[str, Sequence[Any]] | None = None) -> None:
    """Insert the rows of several tables, then run `then` (a last statement, PostgreSQL).

    Values go through each column's own bind processing (UTC datetimes, JSON), and a
    column a row leaves out gets its Python-side default, as an INSERT would. SQLite runs
    one executemany per table (in-process, cheap as it is). PostgreSQL gets one statement
    for everything: each table's rows as one array per column, `unnest`ed into an INSERT,
    the INSERTs chained as data-modifying CTEs, `then` last. An executemany costs ~50-70 us
    of CPU per row here, and a COPY two round trips and psycopg's copy set-up per table (a
    sixth of a small group of DHCP bindings, which writes three tables). Only a table of
    long rows (a group's ~6 kB instance documents) still goes by COPY, which the database
    parses faster than array literals (`bench dhcp_groups`).
    """
    session = db.session
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        if then is not None:
            raise ValueError("a statement after the rows is for PostgreSQL only")
        for table, rows in tables:
            if rows:
                session.execute(insert(table), rows)
        return
    connection = plain_sql.connection()
    assert connection is not None  # a live connection of this transaction
    parts: list[tuple[str, list[Any]]] = []
    for table, rows in tables:
        if not rows:
            continue
        columns, texts = _texts(table, rows, dialect)
        chars = sum(sum(map(len, filter(None, values))) for values in texts)
        if chars > UNNEST_CHARS and chars > LONG_ROW_CHARS * len(rows):
            _copy(connection, table, columns, texts)
        else:
            parts.append(_unnest_insert(table, columns, texts, dialect))
    if then is not None:
        parts.append((then[0], list(then[1])))
    if not parts:
        return
    *ctes, (main, params) = parts
    if ctes:
        main = "WITH " + ", ".join(f"w{n} AS ({sql})" for n, (sql, _) in enumerate(ctes)) \
            + " " + main
        params = [param for _, group in ctes for param in group] + params
    plain_sql.run(connection, main, params)


def _texts(table: Any, rows: list[dict[str, Any]],
           dialect: Any) -> tuple[list[Any], list[list[str | None]]]:
    """The columns to write (those some row names, and those with a Python default) and,
    per column, each row's value as text (None: NULL)."""
    named = set().union(*(row.keys() for row in rows))
    columns = [c for c in table.columns
               if c.key in named or _column(c, dialect).default is not None]
    return columns, [_column_texts(_column(column, dialect), column.key, rows)
                     for column in columns]


def _column_texts(plan: _Column, key: str, rows: list[dict[str, Any]]) -> list[str | None]:
    """One column's texts. The rows that leave it out share one default, taken once per
    statement (as PostgreSQL's now() is one per transaction), and a value that is the same
    object as the row before's is not written out again: a group's rows share their
    timestamps and empty documents, and those conversions were a third of the text work
    for a group of DHCP bindings."""
    text = plan.text
    fill = plan.default() if plan.default is not None else None
    out: list[str | None] = []
    append = out.append
    last: Any = _UNSEEN
    last_text: str | None = None
    for row in rows:
        value = row.get(key, fill)
        if value is not last:
            last, last_text = value, text(value)
        append(last_text)
    return out


_UNSEEN = object()


def _copy(connection: Any, table: Any, columns: list[Any],
          texts: list[list[str | None]]) -> None:
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns))
    lines = ["\t".join(row) for row in zip(*map(copy_texts, texts), strict=True)]
    lines.append("")
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write("\n".join(lines))


def _unnest_insert(table: Any, columns: list[Any], texts: list[list[str | None]],
                   dialect: Any) -> tuple[str, list[Any]]:
    """`INSERT INTO table (...) SELECT * FROM unnest(%s::type[], ...)` and its arrays, each
    one text literal (psycopg would adapt a list element by element, in Python)."""
    arrays = [plain_sql.texts(values) for values in texts]
    names = ", ".join(f'"{c.name}"' for c in columns)
    casts = ", ".join(f"%s::{_column(c, dialect).array_type}[]" for c in columns)
    # Names and types come from the models; values travel as parameters.
    return (f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({casts})',  # noqa: S608
            arrays)


@dataclass(frozen=True, slots=True)
class _Column:
    """How `insert_tables` writes one column, worked out once per column: compiling its
    type alone cost ~35 us for the three tables of a group of DHCP bindings."""

    text: Callable[[Any], str | None]  # a value's text (`_text_writer`)
    default: Callable[[], Any] | None  # the Python-side default (`_default`)
    array_type: str  # its parameter array's element type (`_array_type`)


_columns: dict[tuple[Any, str], _Column] = {}


def _column(column: Any, dialect: Any) -> _Column:
    plan = _columns.get((column, dialect.name))
    if plan is None:
        plan = _columns[(column, dialect.name)] = _Column(
            text=_text_writer(column, dialect), default=_default(column),
            array_type=_array_type(column, dialect))
    return plan


def _array_type(column: Any, dialect: Any) -> str:
    """The element type of a column's parameter array: its own, without a length (text for
    VARCHAR(n): the INSERT's assignment still refuses a value that is too long)."""
    name = column.type.compile(dialect=dialect).split("(")[0].strip().lower()
    return "text" if name in ("varchar", "character varying") else name


_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def copy_text(text: str | None) -> str:
    """One value in COPY's text format: \\N, or the text with COPY's four special characters
    escaped. A search (`in`, a C memchr) per character first: replace() itself counts with
    a slow loop even when nothing matches (~5 us per 6 kB instance document), and
    str.translate with a table of two-character replacements runs in Python's slow path
    (~700 us)."""
    if text is None:
        return "\\N"
    for special, escape in _COPY_ESCAPES:
        if special in text:
            text = text.replace(special, escape)
    return text


def copy_texts(values: list[str | None]) -> list[str]:
    """A column's values in COPY's text format (`copy_text`): one search over the column
    for the usual case of none holding a special character, instead of four per value."""
    joined = "".join(filter(None, values))
    if not any(special in joined for special, _ in _COPY_ESCAPES):
        return ["\\N" if text is None else text for text in values]
    return [copy_text(text) for text in values]


def _text_writer(column: Any, dialect: Any) -> Callable[[Any], str | None]:
    """How a value of `column` becomes its text: the column's own bind processing, then
    `plain_sql.field_text`. JSON values (several per row on the DHCP path) through one shared
    encoder, and a type decorator's own conversion called directly (UTC datetimes):
    SQLAlchemy's processor wrappers and its per-call json.dumps cost ~5-10 us a value."""
    kind = column.type
    if isinstance(kind, JSON):
        return _json_text_or_none
    if isinstance(kind, TypeDecorator) and \
            kind.impl_instance.dialect_impl(dialect).bind_processor(dialect) is None:
        convert = kind.process_bind_param
        return lambda value: plain_sql.field_text(convert(value, dialect))
    process = kind.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return plain_sql.field_text
    return lambda value: plain_sql.field_text(process(value) if value is not None else None)


_json_text = json.JSONEncoder().encode  # json.dumps's output, without its per-call set-up


def _json_text_or_none(value: Any) -> str | None:
    return None if value is None else _json_text(value)


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
        if state.read_only and (state.rows or state.ledger or state.jobs or state.workflows):
            raise RuntimeError("a read-only unit of work collected writes")
        instances.flush_workflows(state)
        flush_rows()  # before the ledger head's lock: it serializes every writer
        state.ledger_from = audit.flush(state.ledger)
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
