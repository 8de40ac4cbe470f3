"""Timestamps: everything Sluice stores and shows is UTC.

SQLite hands back naive datetimes; `UtcDatetime` (for models) and `as_utc` (for values) read
them as UTC, so no caller patches time zones of its own. Pure: the workflow uses these too,
with `workflow.now()` as its clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]


def duration_ms(start: datetime | None, end: datetime | None) -> int | None:
    """Milliseconds from start to end (never negative); None until both are known."""
    if start is None or end is None:
        return None
    return max(int((_aware(end) - _aware(start)).total_seconds() * 1000), 0)
