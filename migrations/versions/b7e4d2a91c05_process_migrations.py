"""process migrations: moves of running instances between process versions, revertible

Revision ID: b7e4d2a91c05
Revises: cfd8b821430f
Create Date: 2026-11-28 18:15:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7e4d2a91c05'
down_revision = 'cfd8b821430f'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    op.create_table(
        'process_migrations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=120), nullable=False),
        sa.Column('from_definition_id', sa.Integer(), nullable=False),
        sa.Column('to_definition_id', sa.Integer(), nullable=False),
        sa.Column('from_version', sa.Integer(), nullable=False),
        sa.Column('to_version', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('actor', sa.String(length=120), nullable=False),
        sa.Column('moved', sa.Integer(), nullable=False),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reverted_by', sa.String(length=120), nullable=True),
        sa.Column('reverted_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['from_definition_id'], ['process_definitions.id'],
                                name=op.f('fk_process_migrations_from_definition_id_process_definitions')),
        sa.ForeignKeyConstraint(['to_definition_id'], ['process_definitions.id'],
                                name=op.f('fk_process_migrations_to_definition_id_process_definitions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_process_migrations')),
    )
    with op.batch_alter_table('process_migrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_process_migrations_key'), ['key'], unique=False)

    op.create_table(
        'process_migration_items',
        sa.Column('id', BigId, nullable=False),
        sa.Column('migration_id', sa.Integer(), nullable=False),
        sa.Column('instance_id', BigId, nullable=False),
        sa.Column('outcome', sa.String(length=12), nullable=False),
        sa.Column('reasons', sa.JSON(), nullable=False),
        sa.Column('workflow_before', sa.Text(), nullable=True),
        sa.Column('state_before', sa.String(length=16), nullable=True),
        sa.Column('wake_at_before', sa.DateTime(timezone=True), nullable=True),
        sa.Column('checksum_after', sa.String(length=64), nullable=True),
        sa.Column('created_jobs', sa.JSON(), nullable=False),
        sa.Column('created_tasks', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['migration_id'], ['process_migrations.id'],
                                name=op.f('fk_process_migration_items_migration_id_process_migrations'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['instance_id'], ['process_instances.id'],
                                name=op.f('fk_process_migration_items_instance_id_process_instances'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_process_migration_items')),
    )
    with op.batch_alter_table('process_migration_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_process_migration_items_migration_id'),
                              ['migration_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_process_migration_items_instance_id'),
                              ['instance_id'], unique=False)


def downgrade():
    with op.batch_alter_table('process_migration_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_process_migration_items_instance_id'))
        batch_op.drop_index(batch_op.f('ix_process_migration_items_migration_id'))
    op.drop_table('process_migration_items')
    with op.batch_alter_table('process_migrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_process_migrations_key'))
    op.drop_table('process_migrations')
