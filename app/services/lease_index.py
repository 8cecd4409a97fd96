"""A DHCP server's in-memory `LeaseIndex`, loaded from the leases and kept current from the
ledger (`app.leases.index` says why following the ledger loses nothing).

`load()` reads the ledger's head first, then every lease in id order: a change committed
between the two reads is in the leases already and is applied once more from the ledger,
which is harmless (each entry carries the lease's whole state). `catch_up(index)` applies
the entries after the last one applied; `Follower` calls it on its own thread every few
milliseconds, so no DHCP exchange waits for it.

The server's own transactions hand their entries to the follower as they commit
(`Follower.own`): on PostgreSQL it then reads only the other writers' entries, and takes
its own from memory, merged in seq order. On a busy server nearly every entry is its own,
so reading them back was most of the follower's work, and the database's too (each
payload's JSON parsed again).
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
from . import plain_sql, uow

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
# On PostgreSQL, entries in the ranges (this process's own, `Own`) are left out.
_ENTRIES_PG = (
    "WITH e AS (SELECT seq, kind, subject, payload FROM audit_log WHERE seq > %s"
    " AND NOT (seq <@ ANY(%s::int8range[])) ORDER BY seq LIMIT %s)"
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


def catch_up(index: LeaseIndex, connection: Connection | None = None,
             own: Own | None = None) -> int:
    """Apply the ledger's entries after `index.seq`; how many were read. On `connection`
    (PostgreSQL, in autocommit, kept by a `Follower`), else in the session's transaction,
    ended. `own` (PostgreSQL): entries this process committed, which are taken from it
    instead of the database."""
    read = 0
    while True:
        skip = own.after(index.seq) if own is not None else []
        rows = _entries(index.seq, connection, skip)
        last, count = next((row[0], int(row[6])) for row in rows if row[6] is not None)
        theirs = [(row[0], _change(*row[1:6])) for row in rows if row[6] is None]
        # A full batch reached `last`; a short one everything committed, and so all of
        # `skip`, which was committed before it was handed over.
        full = count == BATCH
        reached = last if full else max([last or 0, index.seq, *(s[-1][0] for s in skip)])
        mine = [(seq, change) for entries in skip for seq, change in entries
                if index.seq < seq <= reached]
        if not theirs and not mine and reached <= index.seq:
            return read
        merged = sorted(theirs + mine, key=_seq)  # seqs are distinct: the SQL left mine out
        index.apply([change for _, change in merged if change is not None], reached)
        if own is not None:
            own.forget(reached)
        read += count + len(mine)
        if not full:
            return read


def _seq(pair: tuple[int, Any]) -> int:
    return pair[0]


def _entries(after: int, connection: Connection | None,
             skip: Sequence[Sequence[tuple[int, Change | None]]] = ()) -> list[Any]:
    raw = plain_sql.driver() if connection is None else \
        connection.connection.driver_connection  # PostgreSQL's (psycopg)
    try:
        if raw is not None:
            ranges = ",".join(f'"[{s[0][0]},{s[-1][0]}]"' for s in skip)
            return plain_sql.run(raw, _ENTRIES_PG, (after, "{" + ranges + "}", BATCH))
        return list(db.session.execute(_ENTRIES, {"after": after, "batch": BATCH}).all())
    finally:
        if connection is None:
            db.session.rollback()


class Own:
    """The lease changes of the ledger entries this process committed, by seq, until the
    follower has passed them. Thread-safe: groups hand theirs over as the follower reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: list[list[tuple[int, Change | None]]] = []  # each a run of seqs

    def add(self, first: int, entries: Sequence[dict[str, Any]]) -> None:
        """A transaction's `entries` (`uow.record`'s), appended from seq `first` on."""
        if not entries:
            return
        run = [(first + n, _change_of(entry)) for n, entry in enumerate(entries)]
        with self._lock:
            self._runs.append(run)

    def after(self, seq: int) -> list[list[tuple[int, Change | None]]]:
        """The runs with entries after `seq`, in seq order."""
        with self._lock:
            return sorted((run for run in self._runs if run[-1][0] > seq),
                          key=lambda run: _seq(run[0]))

    def forget(self, seq: int) -> None:
        """Drop the runs the follower has passed."""
        with self._lock:
            self._runs = [run for run in self._runs if run[-1][0] > seq]


def _change_of(entry: dict[str, Any]) -> Change | None:
    """`_change` of an entry still in memory: what the database would have read of it."""
    if not str(entry["kind"]).startswith("lease."):
        return None
    data = entry["payload"]
    return _change(entry["subject"], data.get("lease_id"), data.get("client_id"),
                   data.get("state"), data.get("expires_at"))


def _change(subject: str | None, lease_id: Any, client_id: Any, state: Any,
            expires_at: Any) -> Change | None:
    """The change a `lease.*` entry records (subject `cidr/address`), or None if the entry
    does not name a lease as these do."""
    if subject is None:
        return None
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
        # This process's own entries (PostgreSQL), handed over by its transactions (`own`).
        self._own = Own() if self._postgresql else None
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="lease-index", daemon=True)
        self._thread.start()

    def own(self, done: uow.Pending) -> None:
        """A unit of work of this process committed (`GroupCommit`'s `after`): its lease
        changes are taken from memory, not read back (PostgreSQL; on SQLite a no-op)."""
        if self._own is not None and done.ledger_from is not None:
            self._own.add(done.ledger_from, done.ledger)

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
        catch_up(self.index, self._connection, self._own)

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
