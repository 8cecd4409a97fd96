"""instance documents compressed with lz4 on PostgreSQL

Revision ID: d4f8a3c61b27
Revises: c3a9f1d27e44
Create Date: 2026-11-29 07:00:00

A `process_instances.workflow` document is ~6 kB of JSON, and PostgreSQL compresses every
value that size before it stores it. With its default (pglz) that compression was the
largest part of the database's CPU on the DHCP fast path, which writes one instance per
bound lease; lz4 does the same several times faster. Only where the server offers lz4
(PostgreSQL 14 and newer, built with it); elsewhere nothing changes. Existing values keep
their compression until rewritten.
"""
from alembic import op

revision = "d4f8a3c61b27"
down_revision = "c3a9f1d27e44"
branch_labels = None
depends_on = None


def _lz4(bind) -> bool:
    if bind.dialect.name != "postgresql":
        return False
    return bool(bind.exec_driver_sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
        "WHERE name = 'default_toast_compression'").scalar())


def upgrade():
    if _lz4(op.get_bind()):
        op.execute("ALTER TABLE process_instances ALTER COLUMN workflow SET COMPRESSION lz4")


def downgrade():
    if _lz4(op.get_bind()):
        op.execute("ALTER TABLE process_instances ALTER COLUMN workflow SET COMPRESSION default")
