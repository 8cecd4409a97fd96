"""A DHCP server's in-memory `LeaseIndex`, loaded from the leases and kept current from the
ledger (`app.leases.index` says why following the ledger loses nothing).

`load()` reads the ledger's head first, then every lease in id order: a change committed
between the two reads is in the leases already and is applied once more from the ledger,
which is harmless (each entry carries the lease's whole state). `catch_up(index)` applies
the entries after the last one applied; `Follower` calls it on its own thread every few
milliseconds, so no DHCP exchange waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from ..extensions import db
from ..ipam.addresses import IpamError, parse_address
from ..leases.index import Change, LeaseIndex
from . import plain_sql

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)
BATCH = 5000  # ledger entries read per statement
LOAD_BATCH = 20_000  # leases read at a time at start

_HEAD = text("SELECT seq FROM ledger_head WHERE id = 1")
_LEASES_SQL = ("SELECT l.id, s.cidr, l.address, l.client_id, l.state, l.expires_at"
               " FROM leases l JOIN subnets s ON s.id = l.subnet_id ORDER BY l.id")
_LEASES = text(_LEASES_SQL)
# The entries after the last one applied (a batch of them): of the lease changes among
# them, the lease's id, client, state and expiry, taken out of the payload by the database;
# then one row with the batch's last seq and size, so the index moves past entries of other
# kinds without fetching them.
_ENTRIES_PG = (
    "WITH e AS (SELECT seq, kind, subject, payload FROM audit_log WHERE seq > %s"
    " ORDER BY seq LIMIT %s)"
    " SELECT seq, subject, d->>'lease_id', d->>'client_id', d->>'state', d->>'expires_at',"
    " NULL::bigint FROM e, LATERAL (SELECT payload::json -> 'data' AS d) AS j"
    " WHERE kind LIKE 'lease.%%'"
    " UNION ALL SELECT max(seq), NULL, NULL, NULL, NULL, NULL, count(*) FROM e ORDER BY 1")
_ENTRIES = text(
    "WITH e AS (SELECT seq, kind, subject, payload FROM audit_log WHERE seq > :after"
    " ORDER BY seq LIMIT :batch)"
    " SELECT seq, subject, json_extract(payload, '$.data.lease_id'),"
    " json_extract(payload, '$.data.client_id'), json_extract(payload, '$.data.state'),"
    " json_extract(payload, '$.data.expires_at'), NULL FROM e WHERE kind LIKE 'lease.%'"
    " UNION ALL SELECT max(seq), NULL, NULL, NULL, NULL, NULL, count(*) FROM e ORDER BY 1")


def load() -> LeaseIndex:
    """A new index of every lease, as of the ledger's head (read first). The leases are
    read in batches (on PostgreSQL through a server-side cursor), so a large table is not
    held twice in memory."""
    index = LeaseIndex()
    seq = db.session.execute(_HEAD).scalar() or 0
    raw = plain_sql.driver()
    if raw is not None:
        with raw.cursor("lease_index_load") as cursor:
            cursor.execute(_LEASES_SQL)
            while rows := cursor.fetchmany(LOAD_BATCH):
                _load(index, rows)
    else:
        for rows in db.session.execute(_LEASES).yield_per(LOAD_BATCH).partitions():
            _load(index, rows)
    index.apply([], seq)
    db.session.rollback()  # end the read: nothing stays open between catch-ups
    return index


def _load(index: LeaseIndex, rows: Sequence[Any]) -> None:
    index.apply([Change(cidr, lease_id, address, client_id, state, _epoch(expires_at))
                 for lease_id, cidr, address, client_id, state, expires_at in rows])


def _epoch(value: datetime | str | None) -> float | None:
    """An expiry as POSIX seconds: a column's datetime (naive on SQLite: UTC, as stored)
    or a ledger payload's ISO text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def catch_up(index: LeaseIndex, connection: Connection | None = None) -> int:
    """Apply the ledger's entries after `index.seq`; how many were read. On `connection`
    (PostgreSQL, in autocommit, kept by a `Follower`), else in the session's transaction,
    ended."""
    read = 0
    while True:
        rows = _entries(index.seq, connection)
        last, count = next((row[0], row[6]) for row in rows if row[6] is not None)
        if not count:
            return read
        changes = (_change(*row[1:6]) for row in rows if row[6] is None)
        index.apply([change for change in changes if change is not None], last)
        read += count
        if count < BATCH:
            return read


def _entries(after: int, connection: Connection | None) -> list[Any]:
    raw = plain_sql.driver() if connection is None else \
        connection.connection.driver_connection  # PostgreSQL's (psycopg)
    try:
        if raw is not None:
            return list(raw.execute(_ENTRIES_PG, (after, BATCH)).fetchall())
        return list(db.session.execute(_ENTRIES, {"after": after, "batch": BATCH}).all())
    finally:
        if connection is None:
            db.session.rollback()


def _change(subject: str, lease_id: Any, client_id: Any, state: Any,
            expires_at: Any) -> Change | None:
    """The change a `lease.*` entry records (subject `cidr/address`), or None if the entry
    does not name a lease as these do."""
    cidr, _, address = subject.rpartition("/")
    try:
        return Change(subnet=cidr, lease_id=int(lease_id),
                      address=parse_address(address, field="address"),
                      client_id=str(client_id), state=str(state),
                      expires_at=_epoch(expires_at) if isinstance(expires_at, str) else None)
    except (TypeError, ValueError, IpamError):
        return None


class Follower:
    """Keeps `index` current on a daemon thread: `catch_up` every `every` seconds. On
    PostgreSQL on a connection of its own in autocommit (one statement per round, no
    transaction, no session); on SQLite in the session's short read, as every reader there
    (its transactions take turns: `guard`). A failed read (the database away) is logged
    once and tried again on a new connection; the index stays as it was meanwhile."""

    def __init__(self, app: Flask, index: LeaseIndex, *, every: float = 0.02,
                 guard: AbstractContextManager[Any] | None = None) -> None:
        # guard: held around each read (e.g. the DHCP server's SQLite turn)
        self.app, self.index, self.every = app, index, every
        self._guard = guard if guard is not None else contextlib.nullcontext()
        with app.app_context():
            self._postgresql = db.engine.dialect.name == "postgresql"
        self._connection: Connection | None = None
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="lease-index", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.step()

    def step(self) -> None:
        try:
            with self._guard:
                self._catch_up()
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            self._drop_connection()
            if not self._failing:
                log.warning("lease index not following the ledger: %s", exc)
            self._failing = True
        else:
            if self._failing:
                log.info("lease index following the ledger again")
            self._failing = False

    def _catch_up(self) -> None:
        if not self._postgresql:
            with self.app.app_context():
                catch_up(self.index)
            return
        if self._connection is None:
            with self.app.app_context():
                self._connection = db.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
        catch_up(self.index, self._connection)

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()
                connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._drop_connection()
