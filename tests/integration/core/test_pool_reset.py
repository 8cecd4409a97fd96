"""`roll_back_only_open_transactions`: a connection back in the pool after its COMMIT costs
no ROLLBACK round trip; one that comes back holding a transaction is still rolled back,
so the next user of the connection sees none of its writes and starts clean."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from psycopg.pq import TransactionStatus

from app import roll_back_only_open_transactions

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_database: str) -> Iterator[sa.Engine]:
    """One pooled connection, reset as `create_app` sets up PostgreSQL."""
    made = sa.create_engine(pg_database, pool_size=1, max_overflow=0, pool_reset_on_return=None)
    roll_back_only_open_transactions(made)
    with made.begin() as conn:
        conn.execute(sa.text("CREATE TEMPORARY TABLE IF NOT EXISTS noted (n int)"))
    yield made
    made.dispose()


def _statements(conn: sa.Connection) -> list[str]:
    """Every command the driver connection sends from now on (psycopg's notice of each
    query is not public: its `_exec_command` is where BEGIN, COMMIT and ROLLBACK go)."""
    driver = conn.connection.driver_connection
    sent: list[str] = []
    command = driver._exec_command  # type: ignore[union-attr]

    def recorded(query: object, *args: object, **kwargs: object) -> object:
        sent.append(bytes(query).decode() if isinstance(query, bytes) else str(query))
        return command(query, *args, **kwargs)

    driver._exec_command = recorded  # type: ignore[union-attr, method-assign]
    return sent


def test_a_connection_back_after_its_commit_is_not_rolled_back(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        sent = _statements(conn)
        conn.execute(sa.text("INSERT INTO noted VALUES (1)"))
        conn.commit()
    assert sent == ["BEGIN", "COMMIT"]  # and no ROLLBACK when it went back to the pool
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM noted")).scalar() == 1


def test_a_connection_back_in_a_transaction_is_rolled_back(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        sent = _statements(conn)
        driver = conn.connection.driver_connection
        conn.execute(sa.text("INSERT INTO noted VALUES (2)"))  # never committed
    assert sent == ["BEGIN", "ROLLBACK"]
    assert driver is not None and driver.info.transaction_status == TransactionStatus.IDLE
    with engine.connect() as conn:
        assert conn.connection.driver_connection is driver  # the same, pooled connection
        assert conn.execute(sa.text("SELECT count(*) FROM noted WHERE n = 2")).scalar() == 0


def test_a_failed_transaction_is_rolled_back_before_the_next_user(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text("SELECT 1 / 0"))
        driver = conn.connection.driver_connection
        assert driver is not None
        assert driver.info.transaction_status == TransactionStatus.INERROR
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
