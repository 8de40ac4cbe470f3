"""run params, resume details, message payloads and processed markers in lineage, failed messages per route

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
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("resume", sa.JSON(), nullable=True))
    with op.batch_alter_table("message_lineage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("route_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages_failed", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("route_runs", schema=None) as batch_op:
        batch_op.drop_column("messages_failed")
    with op.batch_alter_table("message_lineage", schema=None) as batch_op:
        batch_op.drop_column("processed_at")
        batch_op.drop_column("payload")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("resume")
        batch_op.drop_column("params")
