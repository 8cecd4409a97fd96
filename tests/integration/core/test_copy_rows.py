"""`uow.insert_tables` on PostgreSQL writes the values' text itself, as array literals for
one `unnest` statement or, for long values, in COPY's format: every kind of value a row
holds comes back as it went in (escapes, JSON, time zones, NULLs, defaults), either way."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from psycopg.errors import StringDataRightTruncation
from sqlalchemy import select, text

from app.extensions import db
from app.models import AuditEntry, Lease, LeaseHistory
from app.services import plain_sql, subnets, uow
from lf_support import running_app

pytestmark = pytest.mark.integration

AWKWARD = "tab\there, newline\nthere, back\\slash, CR\r, é, \\N, quote \" and '"


@pytest.mark.parametrize("way", ["unnest", "copy"])
def test_rows_come_back_as_they_went_in(tmp_path: Path, pg_database: str, way: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if way == "copy":
        monkeypatch.setattr(uow, "UNNEST_CHARS", 0)  # every table counts as long
        monkeypatch.setattr(uow, "LONG_ROW_CHARS", 0)
    at = datetime(2026, 11, 29, 4, 52, 12, 123456, tzinfo=UTC)
    detail = {"text": AWKWARD, "nested": [1, None, True, 2.5, {"é": "\t"}]}
    with running_app(tmp_path, database_url=pg_database) as app, app.app_context():
        with uow.unit_of_work():
            subnet = subnets.create({"cidr": "10.70.0.0/24", "pools": ["10.70.0.10-10.70.0.20"]},
                                    actor="test")
            uow.insert_rows(Lease.__table__, [
                {"id": n, "subnet_id": subnet.id, "address": 0x0A46000A + n, "state": "bound",
                 "client_id": f"01:{n}", "hostname": AWKWARD if n == 7 else None,
                 "created_at": at, "updated_at": at, "expires_at": at} for n in (7, 8)])
            uow.insert_rows(LeaseHistory.__table__, [
                {"lease_id": 7, "at": at, "event": "commit", "from_state": None,
                 "to_state": "bound", "actor": AWKWARD, "detail": detail},
                {"lease_id": 8, "at": at, "event": "renew", "from_state": "bound",
                 "to_state": "bound", "actor": "dhcp", "detail": {}}])
            uow.insert_rows(AuditEntry.__table__, [
                {"seq": 10_001, "at": at, "actor": "a", "kind": "k", "subject": AWKWARD,
                 "payload": AWKWARD, "prev_hash": "p", "hash": "h"}])
        rows = db.session.execute(select(LeaseHistory).order_by(LeaseHistory.lease_id)
                                  ).scalars().all()
        assert [(r.lease_id, r.event, r.from_state, r.actor, r.detail, r.at) for r in rows] == [
            (7, "commit", None, AWKWARD, detail, at), (8, "renew", "bound", "dhcp", {}, at)]
        lease = db.session.get(Lease, 7)
        assert lease is not None and lease.hostname == AWKWARD
        entry = db.session.execute(select(AuditEntry).where(AuditEntry.seq == 10_001)
                                   ).scalar_one()
        assert (entry.subject, entry.payload, entry.at) == (AWKWARD, AWKWARD, at)


def test_a_column_is_escaped_for_copy_only_where_it_needs_to_be() -> None:
    """One search over a column decides; a column with one special character anywhere
    is escaped value by value, as `copy_text` does alone."""
    plain = ["bound", None, "", "10.0.0.1"]
    assert uow.copy_texts(plain) == ["bound", "\\N", "", "10.0.0.1"]
    mixed = ["a", None, AWKWARD, "b\\c"]
    assert uow.copy_texts(mixed) == [uow.copy_text(text) for text in mixed]
    assert uow.copy_texts(mixed)[2] == AWKWARD.replace("\\", "\\\\").replace(
        "\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def test_many_short_rows_go_in_the_statement_and_long_documents_by_copy(
        tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large group's ledger entries are many short rows: one statement with the rest
    (COPY would cost three round trips more under the ledger head's lock); rows of long
    documents go by COPY."""
    at = datetime(2026, 11, 29, 4, 52, 12, tzinfo=UTC)
    copied: list[str] = []
    copy = uow._copy

    def recorded(connection: object, table: object, *args: object) -> None:
        copied.append(table.name)  # type: ignore[attr-defined]
        copy(connection, table, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(uow, "_copy", recorded)

    def entries(first: int, count: int, size: int) -> list[dict[str, object]]:
        return [{"seq": seq, "at": at, "actor": "a", "kind": "k", "subject": "s",
                 "payload": "p" * size, "prev_hash": "p", "hash": "h"}
                for seq in range(first, first + count)]

    with running_app(tmp_path, database_url=pg_database) as app, app.app_context():
        with uow.unit_of_work():
            short = entries(20_001, 400, 300)  # 120 kB in all
            assert sum(len(str(row["payload"])) for row in short) > uow.UNNEST_CHARS
            uow.insert_rows(AuditEntry.__table__, short)
            assert copied == []
            uow.insert_rows(AuditEntry.__table__, entries(30_001, 8, 6_000))
            assert copied == ["audit_log"]
        assert db.session.execute(text(
            "SELECT count(*) FROM audit_log WHERE seq > 20000")).scalar() == 408


def test_a_column_default_is_taken_once_per_statement_and_shared_values_written_once(
) -> None:
    """The rows that leave a column out share one default; a row that names it as None
    keeps NULL; a value that is the same object as the row before's is converted once."""
    calls: list[object] = []

    def text(value: object) -> str | None:
        calls.append(value)
        return None if value is None else f"<{value}>"

    made = iter(("first", "second"))
    plan = uow._Column(text=text, default=lambda: next(made), array_type="text")
    shared = ["x"]
    rows: list[dict[str, object]] = [
        {}, {"c": shared}, {"c": shared}, {"c": None}, {}, {"c": ["x"]}]
    assert uow._column_texts(plan, "c", rows) == [
        "<first>", "<['x']>", "<['x']>", None, "<first>", "<['x']>"]
    # The default once; `shared` once for its two rows; the equal but distinct list again.
    assert calls == ["first", shared, None, "first", ["x"]]


def test_binary_values_are_refused_not_mangled() -> None:
    with pytest.raises(TypeError):
        plain_sql.field_text(b"\x00\x01")


def test_several_tables_and_a_last_statement_go_as_one(tmp_path: Path, pg_database: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Children in the same statement as their parents (foreign keys are checked at its
    end), the ledger head moved by the same statement, one round trip."""
    at = datetime(2026, 11, 29, 4, 52, 12, tzinfo=UTC)
    with running_app(tmp_path, database_url=pg_database) as app, app.app_context():
        with uow.unit_of_work():
            subnet = subnets.create({"cidr": "10.70.0.0/24", "pools": ["10.70.0.10-10.70.0.20"]},
                                    actor="test")
        head = db.session.execute(text("SELECT seq FROM ledger_head")).scalar_one()
        db.session.commit()
        statements: list[str] = []
        run = plain_sql.run

        def counted(connection: Any, query: str, params: Sequence[Any] = (), *,
                    named: bool = False) -> list[Any]:
            statements.append(query)
            return run(connection, query, params, named=named)

        monkeypatch.setattr(plain_sql, "run", counted)
        with uow.unit_of_work():
            uow.insert_tables([
                (Lease.__table__, [{"id": 9, "subnet_id": subnet.id, "address": 0x0A46000B,
                                    "state": "bound", "client_id": "01:09",
                                    "created_at": at, "updated_at": at}]),
                (LeaseHistory.__table__, [{"lease_id": 9, "at": at, "event": "commit",
                                           "from_state": None, "to_state": "bound",
                                           "actor": "t", "detail": {"n": 1}}]),
            ], then=("UPDATE ledger_head SET seq = seq + %s WHERE id = 1", (5,)))
        monkeypatch.undo()
        assert len(statements) == 1 and statements[0].startswith("WITH ")
        assert db.session.execute(select(LeaseHistory.lease_id)).scalars().all() == [9]
        assert db.session.execute(text("SELECT seq FROM ledger_head")).scalar_one() == head + 5


def test_a_too_long_value_is_refused_as_by_an_insert(tmp_path: Path,
                                                     pg_database: str) -> None:
    """Arrays travel as text[]: the column's own length still applies."""
    at = datetime(2026, 11, 29, 4, 52, 12, tzinfo=UTC)
    with running_app(tmp_path, database_url=pg_database) as app, app.app_context():
        with pytest.raises(StringDataRightTruncation), uow.unit_of_work():
            uow.insert_rows(AuditEntry.__table__, [
                {"seq": 1, "at": at, "actor": "a", "kind": "k" * 65, "subject": "s",
                 "payload": "p", "prev_hash": "p", "hash": "h"}])


def test_instance_documents_are_compressed_with_lz4(tmp_path: Path, pg_database: str) -> None:
    """The schema asks PostgreSQL for lz4 on the ~6 kB instance documents (pglz was the
    database's largest cost on the DHCP fast path); this server offers it."""
    with running_app(tmp_path, database_url=pg_database) as app, app.app_context():
        offered = db.session.execute(text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
            "WHERE name = 'default_toast_compression'")).scalar()
        assert offered, "this PostgreSQL has no lz4: the test's premise fails"
        method = db.session.execute(text(
            "SELECT attcompression FROM pg_attribute WHERE attname = 'workflow' "
            "AND attrelid = 'process_instances'::regclass")).scalar()
        assert method == "l"


def test_a_read_only_unit_of_work_refuses_writes(tmp_path: Path, pg_database: str) -> None:
    """`uow.reads_only` runs the statements in autocommit: a write collected afterwards
    would be neither atomic nor under the ledger head's lock, so the unit of work fails
    and nothing is written."""
    with running_app(tmp_path, database_url=pg_database) as app, app.app_context():
        before = db.session.execute(text("SELECT count(*) FROM audit_log")).scalar()
        db.session.commit()  # a unit of work on a fresh transaction, as the DHCP groups run
        with pytest.raises(RuntimeError, match="read-only"), uow.unit_of_work():
            uow.reads_only()
            assert db.session.execute(text("SELECT 1")).scalar() == 1
            uow.record(kind="test.write", subject="s", actor="a", payload={})
        assert db.session.execute(text("SELECT count(*) FROM audit_log")).scalar() == before
