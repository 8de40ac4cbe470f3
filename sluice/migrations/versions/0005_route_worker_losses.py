"""route runs count worker losses apart from handler retries

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("route_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_losses", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("route_runs", schema=None) as batch_op:
        batch_op.drop_column("worker_losses")
