"""due-timer index on process_instances (state, wake_at)

Revision ID: c3a9f1d27e44
Revises: b7e4d2a91c05
Create Date: 2026-11-28 18:35:00

"""
from alembic import op

revision = "c3a9f1d27e44"
down_revision = "b7e4d2a91c05"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("process_instances", schema=None) as batch_op:
        batch_op.create_index("ix_process_instances_due", ["state", "wake_at"], unique=False)


def downgrade():
    with op.batch_alter_table("process_instances", schema=None) as batch_op:
        batch_op.drop_index("ix_process_instances_due")
