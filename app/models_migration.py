"""Tables of instance migrations between process versions (kept to report and to revert them).

A migration moves the movable instances of one version of a process to another. Each move
keeps what is needed to undo it — the instance's previous serialized workflow, definition,
state and wake-up time — and a checksum of the state it was moved to, so a revert can tell
whether the instance has done anything since (then reverting would throw work away, and it
is refused for that instance).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db
from .models import BigId, UTCDateTime, utcnow


class ProcessMigration(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "process_migrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(120), index=True)
    from_definition_id: Mapped[int] = mapped_column(ForeignKey("process_definitions.id"))
    to_definition_id: Mapped[int] = mapped_column(ForeignKey("process_definitions.id"))
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="applied")  # applied / reverted
    actor: Mapped[str] = mapped_column(String(120))
    moved: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reverted_by: Mapped[str | None] = mapped_column(String(120))
    reverted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProcessMigrationItem(db.Model):  # type: ignore[name-defined, misc]
    """One instance of a migration: moved (with its previous state) or skipped (with reasons)."""

    __tablename__ = "process_migration_items"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    migration_id: Mapped[int] = mapped_column(
        ForeignKey("process_migrations.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("process_instances.id", ondelete="CASCADE"), index=True)
    # moved / skipped / reverted / kept (a revert found it changed since the move)
    outcome: Mapped[str] = mapped_column(String(12))
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    workflow_before: Mapped[str | None] = mapped_column(Text)
    state_before: Mapped[str | None] = mapped_column(String(16))
    wake_at_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checksum_after: Mapped[str | None] = mapped_column(String(64))
    # Jobs and inbox tasks the move created: cancelled again by a revert.
    created_jobs: Mapped[list[int]] = mapped_column(JSON, default=list)
    created_tasks: Mapped[list[int]] = mapped_column(JSON, default=list)
