"""Tables of Leaseflow (Flask-SQLAlchemy 3, SQLAlchemy 2 typed mappings).

The same schema serves SQLite (embedded) and PostgreSQL (production). The one-holder
guarantee is a partial unique index on leases, not Python code: whatever process inserts a
second holding lease for an address, the database refuses it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db
from .leases.states import HOLDING

# BIGINT primary keys on PostgreSQL; SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

HOLDING_SQL = "state IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(HOLDING)))


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(db.TypeDecorator):  # type: ignore[name-defined, misc]
    """Timezone-aware UTC datetimes on both SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Subnet(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "subnets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cidr: Mapped[str] = mapped_column(String(43), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    pools: Mapped[list[str]] = mapped_column(JSON, default=list)  # ["FIRST-LAST", ...]
    excluded: Mapped[list[str]] = mapped_column(JSON, default=list)
    gateway: Mapped[str | None] = mapped_column(String(15))
    dns: Mapped[list[str]] = mapped_column(JSON, default=list)
    lease_time: Mapped[int] = mapped_column(Integer, default=3600)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lease(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "leases"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subnet_id: Mapped[int] = mapped_column(ForeignKey("subnets.id", ondelete="RESTRICT"))
    address: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    client_id: Mapped[str] = mapped_column(String(255))
    hwaddr: Mapped[str | None] = mapped_column(String(64))
    hostname: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(255))  # e.g. "pod:namespace/name"
    instance_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    subnet: Mapped[Subnet] = relationship(lazy="select")

    __table_args__ = (
        # The guarantee: at most one offered/bound lease per (subnet, address).
        Index("uq_leases_holder", "subnet_id", "address", unique=True,
              postgresql_where=text(HOLDING_SQL), sqlite_where=text(HOLDING_SQL)),
        Index("ix_leases_client", "subnet_id", "client_id"),
        Index("ix_leases_address", "subnet_id", "address"),
    )


class LeaseHistory(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "lease_history"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lease_id: Mapped[int] = mapped_column(ForeignKey("leases.id", ondelete="CASCADE"),
                                          index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(120), default="system")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ProcessDefinition(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "process_definitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(120))
    version: Mapped[int] = mapped_column(Integer)
    xml: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    author: Mapped[str] = mapped_column(String(120), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("key", "version", name="uq_process_definitions_key"),)


class ProcessInstance(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "process_instances"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("process_definitions.id"))
    # running: engine has work; waiting: parked on jobs, messages, timers or people;
    # completed / refused / aborted / failed: final.
    state: Mapped[str] = mapped_column(String(16))  # indexed first in ix_process_instances_due
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    workflow: Mapped[str] = mapped_column(Text)  # serialized SpiffWorkflow state (no spec)
    client_id: Mapped[str | None] = mapped_column(String(255), index=True)
    subnet_id: Mapped[int | None] = mapped_column(Integer)
    lease_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    wake_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    # Not joined: the XML is large and the engine takes specs from a per-id cache instead.
    definition: Mapped[ProcessDefinition] = relationship(lazy="select")
    # Optimistic locking: an UPDATE that finds another version raises StaleDataError.
    __mapper_args__ = {"version_id_col": version}
    # The ticker's "due timers" query: without state in front, SQLite picked a state index
    # and sorted every waiting instance (19.7 ms at 100k instead of 0.36 ms, bench/engine.py).
    # It serves lookups by state alone too: no index of state or wake_at alone, two fewer
    # index entries to write per instance stored or stepped.
    __table_args__ = (Index("ix_process_instances_due", "state", "wake_at"),)


class ServiceJob(db.Model):  # type: ignore[name-defined, misc]
    """The outbox: one row per service-task attempt, written with the instance state."""

    __tablename__ = "service_jobs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("process_instances.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(36))  # SpiffWorkflow task uuid
    task_name: Mapped[str] = mapped_column(String(120))  # BPMN element id
    operation: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    backoff_base: Mapped[int] = mapped_column(Integer, default=0)
    # queued / done / failed / cancelled
    status: Mapped[str] = mapped_column(String(12), default="queued")
    queue: Mapped[str] = mapped_column(String(32), default="default")
    deliveries: Mapped[int] = mapped_column(Integer, default=0)  # re-handed out by the ticker
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (
        UniqueConstraint("instance_id", "task_id", "attempt", name="uq_service_jobs_attempt"),
        Index("ix_service_jobs_due", "status", "deadline"),
    )


class HumanTask(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "human_tasks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("process_instances.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(36))
    task_name: Mapped[str] = mapped_column(String(120))
    title: Mapped[str] = mapped_column(String(255))
    form: Mapped[str] = mapped_column(String(64), default="manual_retry")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(12), default="open", index=True)
    action: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    completed_by: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(db.Model):  # type: ignore[name-defined, misc]
    """The hash-chained ledger: row n carries the hash of row n-1."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(64))  # not indexed: read by seq or subject
    subject: Mapped[str] = mapped_column(String(255), index=True)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON, hashed as is
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LedgerHead(db.Model):  # type: ignore[name-defined, misc]
    """One row: the last sequence number and hash, locked to append in order."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class LedgerAnchor(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "ledger_anchors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq_from: Mapped[int] = mapped_column(BigInteger)
    seq_to: Mapped[int] = mapped_column(BigInteger, index=True)
    root: Mapped[str] = mapped_column(String(64))
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # viewer / operator / admin


class SettingValue(db.Model):  # type: ignore[name-defined, misc]
    """Small facts the system learns at run time (e.g. the deployed contract address)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
