"""drop process_instances' state and wake_at indexes: ix_process_instances_due covers them

Revision ID: e5b7c9d2f413
Revises: d4f8a3c61b27
Create Date: 2026-11-29 12:10:00

Every instance stored or stepped wrote an entry into each of them. Lookups by state use the
(state, wake_at) index's first column; nothing looks up wake_at without a state.
"""
from alembic import op

revision = "e5b7c9d2f413"
down_revision = "d4f8a3c61b27"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("process_instances", schema=None) as batch_op:
        batch_op.drop_index("ix_process_instances_state")
        batch_op.drop_index("ix_process_instances_wake_at")


def downgrade():
    with op.batch_alter_table("process_instances", schema=None) as batch_op:
        batch_op.create_index("ix_process_instances_wake_at", ["wake_at"], unique=False)
        batch_op.create_index("ix_process_instances_state", ["state"], unique=False)
