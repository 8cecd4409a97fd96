"""drop audit_log's kind index: no read selects by kind

Revision ID: f6c8d0e3a524
Revises: e5b7c9d2f413
Create Date: 2026-11-29 12:40:00

The ledger is read by sequence number (verification, anchoring, the lease index that
follows it) or by subject (an instance's or an address's history). The kind index only
cost an entry per ledger row: two per lease bound on the DHCP fast path.
"""
from alembic import op

revision = "f6c8d0e3a524"
down_revision = "e5b7c9d2f413"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_kind")


def downgrade():
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_kind", ["kind"], unique=False)
