"""`plain_sql.run` on PostgreSQL: the fast path's statements, prepared once per connection
and run by libpq itself, give what psycopg's `execute` would, inside the same transaction,
and survive psycopg deallocating every prepared statement after a rollback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors, pq

from app.services import plain_sql

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(pg_database: str) -> Iterator[psycopg.Connection]:
    url = pg_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as connection:
        connection.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, at timestamptz)")
        connection.commit()
        yield connection


def prepared(conn: psycopg.Connection) -> set[str]:
    return {name for name, in conn.execute("SELECT name FROM pg_prepared_statements")}


def test_values_come_back_as_psycopg_reads_them(conn: psycopg.Connection) -> None:
    at = datetime(2026, 11, 30, 7, 5, 1, 250000, tzinfo=UTC)
    query = ("SELECT %s::bigint, %s::text, %s::timestamptz, %s::bool, %s::float8,"
             " %s::text IS NULL, %s::bigint[]")
    params = (2**40, 'é "quoted" \\ back', at, True, 2.5, None, plain_sql.ints([1, None, 3]))
    ours = plain_sql.run(conn, query, params)
    assert ours == conn.execute(query, params).fetchall()
    assert ours == [(2**40, 'é "quoted" \\ back', at, True, 2.5, True, [1, None, 3])]
    row, = plain_sql.run(conn, "SELECT 1 AS one, 'x' AS two", named=True)
    assert (row.one, row.two) == (1, "x")
    assert plain_sql.run(conn, "SELECT 1 WHERE false") == []


def test_statements_run_in_the_transaction_and_are_prepared_once(
        conn: psycopg.Connection) -> None:
    insert = "INSERT INTO t (id, name, at) VALUES (%s, %s, %s)"
    now = datetime.now(UTC)
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert plain_sql.run(conn, insert, (1, "a", now)) == []  # no rows: a command
    assert conn.info.transaction_status == pq.TransactionStatus.INTRANS  # begun as psycopg would
    plain_sql.run(conn, insert, (2, "b", now + timedelta(seconds=1)))
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.commit()
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE  # begun with it, too
    assert plain_sql.run(conn, "SHOW transaction_isolation") == [("serializable",)]
    conn.rollback()
    plain_sql.run(conn, insert, (3, "c", now))
    conn.commit()
    assert conn.execute("SELECT id, name FROM t").fetchall() == [(3, "c")]
    assert len([n for n in prepared(conn) if n.startswith("leaseflow_")]) == 1


def test_psycopgs_deallocation_after_a_rollback_takes_ours_too_and_they_come_back(
        conn: psycopg.Connection) -> None:
    select = "SELECT name FROM t WHERE id = %s"
    conn.execute("INSERT INTO t (id, name) VALUES (1, 'a')")
    conn.commit()
    assert plain_sql.run(conn, select, (1,)) == [("a",)]
    conn.execute("SELECT 1", prepare=True)  # psycopg's own prepared statement
    before = {n for n in prepared(conn) if n.startswith("leaseflow_")}
    assert before
    conn.rollback()  # psycopg deallocates every prepared statement of the session
    assert not prepared(conn)
    assert plain_sql.run(conn, select, (1,)) == [("a",)]
    after = {n for n in prepared(conn) if n.startswith("leaseflow_")}
    assert after and not after & before  # prepared again, under a new name
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_failing_statement_raises_psycopgs_error_and_aborts_the_transaction(
        conn: psycopg.Connection) -> None:
    insert = "INSERT INTO t (id) VALUES (%s)"
    plain_sql.run(conn, insert, (1,))
    with pytest.raises(errors.UniqueViolation):
        plain_sql.run(conn, insert, (1,))
    assert conn.info.transaction_status == pq.TransactionStatus.INERROR
    conn.rollback()
    with pytest.raises(errors.SyntaxError):
        plain_sql.run(conn, "SELEC 1")
    conn.rollback()
    assert plain_sql.run(conn, "SELECT count(*) FROM t") == [(0,)]


def test_parameters_it_cannot_send_plainly_are_refused(conn: psycopg.Connection) -> None:
    with pytest.raises(ValueError, match="naive"):
        plain_sql.run(conn, "SELECT %s::timestamptz", (datetime(2026, 1, 1),))
    with pytest.raises(TypeError, match="bytes"):
        plain_sql.run(conn, "SELECT %s::text", (b"raw",))


def test_placeholders_are_numbered_for_libpq() -> None:
    assert plain_sql.numbered("SELECT %s, %s::int[] FROM x WHERE y = %s") == \
        b"SELECT $1, $2::int[] FROM x WHERE y = $3"


def test_psycopgs_percent_escape_is_a_percent_and_other_placeholders_are_refused(
        conn: psycopg.Connection) -> None:
    assert plain_sql.numbered("SELECT %s WHERE k LIKE 'a.%%'") == b"SELECT $1 WHERE k LIKE 'a.%'"
    assert plain_sql.run(conn, "SELECT %s || '%%'", ("5",)) == \
        conn.execute("SELECT %s || '%%'", ("5",)).fetchall() == [("5%",)]
    for query in ("SELECT %(name)s", "SELECT %b", "SELECT 5 % 2"):
        with pytest.raises(ValueError, match="placeholders"):
            plain_sql.numbered(query)
