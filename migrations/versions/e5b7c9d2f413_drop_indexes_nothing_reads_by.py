"""drop indexes nothing reads by: process_instances' state and wake_at, audit_log's kind

Revision ID: e5b7c9d2f413
Revises: d4f8a3c61b27
Create Date: 2026-11-29 12:10:00

Each cost an entry for every row written: every instance stored or stepped, every ledger
row (two per lease bound on the DHCP fast path). Lookups by state use the (state, wake_at)
index `ix_process_instances_due`, and nothing looks up wake_at without a state. The ledger
is read by sequence number (verification, anchoring, the lease index that follows it) or
by subject (an instance's or an address's history), never by kind.
"""
from alembic import op

revision = "e5b7c9d2f413"
down_revision = "d4f8a3c61b27"
branch_labels = None
depends_on = None

DROPPED = {"process_instances": [("ix_process_instances_state", ["state"]),
                                 ("ix_process_instances_wake_at", ["wake_at"])],
           "audit_log": [("ix_audit_log_kind", ["kind"])]}


def upgrade():
    for table, indexes in DROPPED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _ in indexes:
                batch_op.drop_index(name)


def downgrade():
    for table, indexes in DROPPED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, columns in indexes:
                batch_op.create_index(name, columns, unique=False)
