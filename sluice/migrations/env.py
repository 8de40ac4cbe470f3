"""Alembic environment: runs on the connection handed over by sluice.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from sluice.db import models  # noqa: F401 - registers tables on the metadata

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `sluice migrate` (sluice.db.migrate.upgrade)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
