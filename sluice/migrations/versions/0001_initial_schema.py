"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_logs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("route", sa.String(length=128), nullable=True),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("correlation_id", sa.String(length=36), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("execution_logs", schema=None) as batch_op:
        batch_op.create_index("ix_execution_logs_exec_id", ["execution_id", "id"], unique=False)

    op.create_table(
        "executions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("config_id", sa.String(length=36), nullable=False),
        sa.Column("config_version", sa.Integer(), nullable=False),
        sa.Column("config_yaml", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("namespace", sa.String(length=128), nullable=False),
        sa.Column("layer", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=True),
        sa.Column("parent_execution_id", sa.String(length=36), nullable=True),
        sa.Column("replay_source", sa.String(length=16), nullable=True),
        sa.Column("workflow_id", sa.String(length=128), nullable=False),
        sa.Column("task_queue", sa.String(length=200), nullable=False),
        sa.Column("init_payload", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("messages_processed", sa.Integer(), nullable=False),
        sa.Column("objects_written", sa.Integer(), nullable=False),
        sa.Column("rows_written", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tag"),
    )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_executions_config_id"), ["config_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_executions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_executions_parent_execution_id"), ["parent_execution_id"], unique=False
        )
        batch_op.create_index("ix_executions_pipeline", ["namespace", "layer", "pipeline"], unique=False)
        batch_op.create_index("ix_executions_status_created", ["status", "created_at"], unique=False)

    op.create_table(
        "message_lineage",
        sa.Column("correlation_id", sa.String(length=36), nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("parent_correlation_id", sa.String(length=36), nullable=True),
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("source_route", sa.String(length=128), nullable=True),
        sa.Column("stage", sa.String(length=255), nullable=True),
        sa.Column("object_key", sa.Text(), nullable=True),
        sa.Column("replay_batch_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("correlation_id"),
    )
    with op.batch_alter_table("message_lineage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_lineage_execution_id"), ["execution_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_message_lineage_parent_correlation_id"), ["parent_correlation_id"], unique=False
        )

    op.create_table(
        "pipeline_config_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("config_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("config_id", "version", name="uq_config_version"),
    )
    with op.batch_alter_table("pipeline_config_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_config_versions_config_id"), ["config_id"], unique=False
        )

    op.create_table(
        "pipeline_configs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("namespace", sa.String(length=128), nullable=False),
        sa.Column("layer", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pipeline_configs", schema=None) as batch_op:
        batch_op.create_index("ix_pipeline_configs_pipeline", ["namespace", "layer", "name"], unique=False)
        batch_op.create_index(batch_op.f("ix_pipeline_configs_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "route_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("messages_in", sa.Integer(), nullable=False),
        sa.Column("messages_processed", sa.Integer(), nullable=False),
        sa.Column("messages_out", sa.Integer(), nullable=False),
        sa.Column("objects_written", sa.Integer(), nullable=False),
        sa.Column("rows_written", sa.Integer(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("execution_id", "route", name="uq_route_run"),
    )
    with op.batch_alter_table("route_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_route_runs_execution_id"), ["execution_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("route_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_route_runs_execution_id"))

    op.drop_table("route_runs")
    with op.batch_alter_table("pipeline_configs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_configs_updated_at"))
        batch_op.drop_index("ix_pipeline_configs_pipeline")

    op.drop_table("pipeline_configs")
    with op.batch_alter_table("pipeline_config_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_config_versions_config_id"))

    op.drop_table("pipeline_config_versions")
    with op.batch_alter_table("message_lineage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_lineage_parent_correlation_id"))
        batch_op.drop_index(batch_op.f("ix_message_lineage_execution_id"))

    op.drop_table("message_lineage")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_status_created")
        batch_op.drop_index("ix_executions_pipeline")
        batch_op.drop_index(batch_op.f("ix_executions_parent_execution_id"))
        batch_op.drop_index(batch_op.f("ix_executions_created_at"))
        batch_op.drop_index(batch_op.f("ix_executions_config_id"))

    op.drop_table("executions")
    with op.batch_alter_table("execution_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_execution_logs_exec_id")

    op.drop_table("execution_logs")
