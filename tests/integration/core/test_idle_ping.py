"""`ping_when_idle`: a pooled connection that sat idle is pinged before use and replaced if
the database dropped it; one back in use at once is trusted, and if the database dropped
it meanwhile, one statement fails and the pool starts over."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from app import ping_when_idle

pytestmark = pytest.mark.integration


def _backend(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _drop(url: str, pid: int) -> None:
    """What a database restart does to one connection."""
    killer = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with killer.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    killer.dispose()


def _count_pings(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    pings: list[bool] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        try:
            alive = ping(dbapi_connection)
        except Exception:
            pings.append(False)
            raise
        pings.append(alive)
        return alive

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


Pinged = Callable[[float], tuple[sa.Engine, list[bool]]]


@pytest.fixture
def pinged(pg_database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pinged]:
    """An engine of one connection with `ping_when_idle(after)`, and its pings' results."""
    engines: list[sa.Engine] = []

    def make(after: float) -> tuple[sa.Engine, list[bool]]:
        engine = sa.create_engine(pg_database, pool_size=1, max_overflow=0)
        ping_when_idle(engine, after=after)
        engines.append(engine)
        return engine, _count_pings(engine, monkeypatch)

    yield make
    for engine in engines:
        engine.dispose()


def test_an_idle_connection_the_database_dropped_is_replaced(
        pg_database: str, pinged: Pinged) -> None:
    engine, pings = pinged(0.0)  # every checkout counts as idle
    with engine.connect() as conn:
        first = _backend(conn)
    _drop(pg_database, first)
    with engine.connect() as conn:  # pinged, found dead, replaced: no error
        assert _backend(conn) != first
    assert False in pings


def test_a_busy_connection_is_not_pinged_and_a_dropped_one_fails_once(
        pg_database: str, pinged: Pinged) -> None:
    engine, pings = pinged(3600.0)  # never idle within this test
    with engine.connect() as conn:
        first = _backend(conn)
    with engine.connect() as conn:
        assert _backend(conn) == first
    assert pings == []
    _drop(pg_database, first)
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        _backend(conn)
    with engine.connect() as conn:  # the pool started over
        assert _backend(conn) != first
