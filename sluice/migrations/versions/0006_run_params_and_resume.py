"""run params, resume details, message payloads and processed markers in lineage, failed messages
per route, backfills

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("config_id", sa.String(length=36), nullable=False),
        sa.Column("config_version", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("start_date", sa.String(length=10), nullable=False),
        sa.Column("end_date", sa.String(length=10), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("only_missing", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("workflow_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("backfills", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backfills_config_id"), ["config_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_backfills_created_at"), ["created_at"], unique=False)
    op.create_table(
        "backfill_runs",
        sa.Column("backfill_id", sa.String(length=36), nullable=False),
        sa.Column("run_date", sa.String(length=10), nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("backfill_id", "run_date"),
        sa.UniqueConstraint("execution_id"),
    )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("resume", sa.JSON(), nullable=True))
    with op.batch_alter_table("message_lineage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("route_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages_failed", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_table("backfill_runs")
    with op.batch_alter_table("backfills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backfills_created_at"))
        batch_op.drop_index(batch_op.f("ix_backfills_config_id"))
    op.drop_table("backfills")
    with op.batch_alter_table("route_runs", schema=None) as batch_op:
        batch_op.drop_column("messages_failed")
    with op.batch_alter_table("message_lineage", schema=None) as batch_op:
        batch_op.drop_column("processed_at")
        batch_op.drop_column("payload")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("resume")
        batch_op.drop_column("params")
