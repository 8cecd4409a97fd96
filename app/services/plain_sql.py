"""Plain SQL for the DHCP fast path's few statements on PostgreSQL.

A group of exchanges runs about ten statements. Through the ORM each costs 250 us and
more of CPU here; as plain SQL on the transaction's own psycopg connection, ~60 us; as a
prepared statement run by libpq itself (`run`), ~20. Their arrays go as one text literal
each (`'{1,2,3}'::bigint[]`): psycopg adapts a Python list element by element in Python,
a join is one call. On SQLite (the embedded default) the callers keep their SQLAlchemy
statements: each is a function call there, not a round trip.
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
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


# `run`: a statement of a few fixed texts, executed many times a second on one connection.
# psycopg's `Connection.execute` costs ~70 us of CPU a statement here (its cursor, query
# conversion, prepared-statement bookkeeping and result generators, in Python); libpq's
# PQexecPrepared, which psycopg wraps as `pgconn.exec_prepared` (without the interpreter
# lock), ~10, and psycopg's own C loaders turn the result into the same Python values.
# A group of DHCP bindings runs five such statements.
#
# The statements are prepared under names that psycopg's own prepared-statement cache
# holds (`Connection._prepared`, keyed apart from psycopg's keys): psycopg forgets its
# statements, and has the server deallocate them all, after a rollback or DDL, and ours go
# with them; a statement missing from the cache is prepared again, under a new name.
_KEY = b"leaseflow\0"


class _State:
    """What `run` keeps per connection: the last name it made, a result loader, and the
    row makers of named rows."""

    __slots__ = ("loader", "made", "rows")

    def __init__(self, connection: Any) -> None:
        from psycopg.adapt import Transformer

        self.made = 0
        self.rows: dict[str, Callable[[Sequence[Any]], Any]] = {}
        self.loader = Transformer(connection)


_PLACEHOLDER = re.compile(r"%.?", re.DOTALL)


def numbered(query: str) -> bytes:
    """A psycopg-style query as libpq wants it: `%s` placeholders numbered (`$1`, `$2`,
    ...) and psycopg's `%%` escape a plain `%`. Any other `%` is refused, as psycopg
    refuses it (its `%b`, `%t` and `%(name)s` are not supported here)."""
    count = iter(range(1, 1 << 16))

    def replace(match: re.Match[str]) -> str:
        if match[0] == "%s":
            return f"${next(count)}"
        if match[0] == "%%":
            return "%"
        raise ValueError(f"only %s placeholders and %% are allowed, not {match[0]!r}: "
                         f"{query[:80]!r}")

    return _PLACEHOLDER.sub(replace, query).encode()


@functools.lru_cache(maxsize=256)
def _statement(query: str) -> tuple[bytes, tuple[bytes, tuple[()]]]:
    """`query`'s text for libpq and its key in psycopg's prepared-statement cache, made
    once per query (a group's INSERT is a few kB: converted and hashed once, not per run)."""
    text = numbered(query)
    return text, (_KEY + text, ())


def field_text(value: Any) -> str | None:
    """A value as the text PostgreSQL parses for its column (None for NULL), without
    psycopg's per-value dumper lookup (a tenth of the DHCP fast path's CPU when COPY rows
    went through `write_row`)."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "t" if value else "f"
    if kind is datetime:
        return value.isoformat()  # type: ignore[no-any-return]
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{type(value).__name__} values are not supported here: "
                        "binary data has no text form")
    if isinstance(value, str):  # a str subclass (an enum's value): its text, not its name
        return str.__str__(value)
    return str(value)  # dates, decimals, floats, UUIDs


def param(value: Any) -> bytes | None:
    """A parameter as text for the server (`field_text`), which reads it as the type its
    place in the statement has (a cast, a column). A naive datetime is refused: the
    server would read it in its own time zone."""
    if type(value) is datetime and value.tzinfo is None:
        raise ValueError("a naive datetime is ambiguous as a parameter")
    text = field_text(value)
    return None if text is None else text.encode()


def run(connection: Any, query: str, params: Sequence[Any] = (), *,
        named: bool = False) -> list[Any]:
    """Execute `query` (psycopg placeholders) on `connection` (`driver()`/`connection()`)
    as a prepared statement; its rows as tuples (named tuples with `named`), as
    `connection.execute(...).fetchall()` would return them, or [] for a statement without
    rows. Inside the transaction psycopg would open: a connection that is not in
    autocommit and has none open begins one first, as psycopg would (a round trip of its
    own, as psycopg's is). A failure raises psycopg's error for it, as `execute` would."""
    from psycopg import errors, pq

    pgconn = connection.pgconn
    state: _State | None = getattr(connection, "_leaseflow_plain", None)
    if state is None:
        state = connection._leaseflow_plain = _State(connection)
    if not connection.autocommit and pgconn.transaction_status == pq.TransactionStatus.IDLE:
        # psycopg's own BEGIN, with the connection's isolation level and read-only flag
        _check(pgconn.exec_(connection._get_tx_start_command()), connection, errors)
    text, key = _statement(query)
    values = [param(value) for value in params]
    cache = connection._prepared
    name = cache._names.get(key)
    if name is None and len(cache._names) < cache.prepared_max:
        state.made += 1
        name = b"leaseflow_%d" % state.made
        _check(pgconn.prepare(name, text), connection, errors)
        cache._names[key] = name
    result = _check(pgconn.exec_prepared(name, values) if name is not None else
                    pgconn.exec_params(text, values), connection, errors)
    if result.status != pq.ExecStatus.TUPLES_OK:
        return []
    make: Callable[[Sequence[Any]], Any] = tuple
    if named:
        made = state.rows.get(query)
        if made is None:
            kind: Any = collections.namedtuple(  # type: ignore[misc]  # noqa: PYI024
                "Row", [result.fname(i).decode() for i in range(result.nfields)])
            made = state.rows[query] = kind._make
        make = made
    loader = state.loader
    loader.set_pgresult(result)
    return loader.load_rows(0, result.ntuples, make)  # type: ignore[no-any-return]


def _check(result: Any, connection: Any, errors: Any) -> Any:
    from psycopg import pq

    if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        raise errors.error_from_result(result, encoding=connection.info.encoding)
    return result
