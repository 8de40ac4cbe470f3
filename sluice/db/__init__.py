"""Database: SQLModel tables, async engine, Alembic migrations."""
