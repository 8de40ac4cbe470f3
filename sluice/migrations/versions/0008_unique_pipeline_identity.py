"""one pipeline per (namespace, layer, name): duplicates renamed and reported, then a unique index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

log = logging.getLogger("sluice.migrations")


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, namespace, layer, name FROM pipeline_configs "
            "ORDER BY namespace, layer, name, updated_at DESC, id"
        )
    ).fetchall()
    seen: set[tuple[str, str, str]] = set()
    for config_id, namespace, layer, name in rows:
        identity = (namespace, layer, name)
        if identity not in seen:
            seen.add(identity)  # the most recently updated keeps the name
            continue
        renamed = f"{name[:118]}-{config_id[:8]}"
        bind.execute(
            sa.text("UPDATE pipeline_configs SET name = :renamed WHERE id = :id"),
            {"renamed": renamed, "id": config_id},
        )
        log.warning(
            "pipeline %s.%s.%s had several configs: config %s is renamed %r (its executions keep their snapshots)",
            namespace,
            layer,
            name,
            config_id,
            renamed,
        )
    with op.batch_alter_table("pipeline_configs", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_configs_pipeline")
        batch_op.create_index("ix_pipeline_configs_pipeline", ["namespace", "layer", "name"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("pipeline_configs", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_configs_pipeline")
        batch_op.create_index("ix_pipeline_configs_pipeline", ["namespace", "layer", "name"], unique=False)
