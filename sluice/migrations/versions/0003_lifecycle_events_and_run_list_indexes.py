"""lifecycle events and run list indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("execution_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("data", sa.JSON(), nullable=True))

    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_executions_pipeline"))
        batch_op.create_index(
            "ix_executions_pipeline", ["namespace", "layer", "pipeline", "created_at"], unique=False
        )
        batch_op.create_index("ix_executions_completed_at", ["completed_at"], unique=False)
        batch_op.create_index("ix_executions_duration_ms", ["duration_ms"], unique=False)
        batch_op.create_index("ix_executions_started_at", ["started_at"], unique=False)
        batch_op.create_index("ix_executions_trigger_created", ["trigger", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_trigger_created")
        batch_op.drop_index("ix_executions_started_at")
        batch_op.drop_index("ix_executions_duration_ms")
        batch_op.drop_index("ix_executions_completed_at")
        batch_op.drop_index("ix_executions_pipeline")
        batch_op.create_index(
            batch_op.f("ix_executions_pipeline"), ["namespace", "layer", "pipeline"], unique=False
        )

    with op.batch_alter_table("execution_logs", schema=None) as batch_op:
        batch_op.drop_column("data")
        batch_op.drop_column("event")
