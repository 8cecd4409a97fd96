"""index for the ticker's reclaim of fast-path offers (offered, no instance, by expiry)

Revision ID: d5f2c8a4b913
Revises: c3a9f1d27e44
Create Date: 2026-11-29 00:30:00

"""
import sqlalchemy as sa
from alembic import op

revision = "d5f2c8a4b913"
down_revision = "c3a9f1d27e44"
branch_labels = None
depends_on = None

WHERE = "state = 'offered' AND instance_id IS NULL"


def upgrade():
    op.create_index("ix_leases_orphan_offers", "leases", ["expires_at"], unique=False,
                    postgresql_where=sa.text(WHERE), sqlite_where=sa.text(WHERE))


def downgrade():
    op.drop_index("ix_leases_orphan_offers", table_name="leases")
