"""a replay's handled objects: one lineage row per batch instead of one per object

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replay_lineage",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("replay_batch_id", sa.String(length=36), nullable=False),
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=255), nullable=False),
        sa.Column("clustered_ids", sa.Boolean(), nullable=False),
        sa.Column("object_keys", sa.JSON(), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("replay_lineage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replay_lineage_execution_id"), ["execution_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("replay_lineage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replay_lineage_execution_id"))
    op.drop_table("replay_lineage")
