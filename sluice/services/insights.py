"""How the platform is doing, across pipelines: the runs calendar, the dashboard and search.

Every count is one indexed SQL aggregate (never a scan of rows in Python), so these answers stay
fast with hundreds of thousands of executions (bench/bench_list.py times the dashboard). Dry runs
appear nowhere here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Date, case, cast, func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.clock import utcnow
from sluice.db.models import ExecutionRecord, PipelineConfigRecord
from sluice.pipeline_config import PipelineConfig
from sluice.services.executions import DRY_RUN_TRIGGER as DRY_RUN

SUCCESS = ("completed",)
FAILED = ("failed", "interrupted")
RECENT_RUNS = 20
TOP_FAILING = 5
TREND_DAYS = 7


@dataclass
class DayCount:
    date: str
    success: int = 0
    failed: int = 0
    total: int = 0


@dataclass
class PipelineSummary:
    config: PipelineConfigRecord
    last_run: ExecutionRecord | None
    runs_7d: int
    success_7d: int

    @property
    def success_rate_7d(self) -> float | None:
        return round(100.0 * self.success_7d / self.runs_7d, 1) if self.runs_7d else None


@dataclass
class Dashboard:
    pipelines: list[PipelineSummary]
    recent_runs: list[ExecutionRecord]
    trends: list[DayCount]
    top_failing: list[tuple[str, str, int]]


@dataclass
class SearchHit:
    type: str
    id: str
    name: str
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _utc_day(column: Any, dialect: str) -> Any:
    """The UTC calendar day of a timestamp column, in either database."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite stores UTC text


@lru_cache(maxsize=4096)
def _parsed(config_id: str, version: int, yaml_text: str) -> PipelineConfig | None:
    try:
        return PipelineConfig.from_snapshot(yaml_text)
    except Exception:
        return None


class InsightService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def _days(self, since: datetime, *, config_id: str | None = None) -> list[DayCount]:
        async with self.sessions() as session:
            dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
            day = _utc_day(col(ExecutionRecord.created_at), dialect).label("day")
            query = (
                select(
                    day,
                    func.sum(case((col(ExecutionRecord.status).in_(SUCCESS), 1), else_=0)),
                    func.sum(case((col(ExecutionRecord.status).in_(FAILED), 1), else_=0)),
                    func.count(),
                )
                .where(col(ExecutionRecord.created_at) >= since, ExecutionRecord.trigger != DRY_RUN)
                .group_by(day)
                .order_by(day)
            )
            if config_id is not None:
                query = query.where(ExecutionRecord.config_id == config_id)
            rows = (await session.exec(query)).all()  # type: ignore[call-overload]
        return [DayCount(str(d), int(s or 0), int(f or 0), int(t)) for d, s, f, t in rows]

    async def calendar(self, days: int) -> list[DayCount]:
        """Runs per UTC day that has any, for the last `days` days (today included), oldest first."""
        start = datetime.combine(utcnow().date() - timedelta(days=days - 1), datetime.min.time(), UTC)
        return await self._days(start)

    async def dashboard(self) -> Dashboard:
        now = utcnow()
        first_day = now.date() - timedelta(days=TREND_DAYS - 1)
        since = datetime.combine(first_day, datetime.min.time(), UTC)
        counted = {d.date: d for d in await self._days(since)}
        trends = [
            counted.get(str(first_day + timedelta(days=i)), DayCount(str(first_day + timedelta(days=i))))
            for i in range(TREND_DAYS)
        ]
        live = ExecutionRecord.trigger != DRY_RUN
        async with self.sessions() as session:
            configs = list(
                (
                    await session.exec(select(PipelineConfigRecord).order_by(col(PipelineConfigRecord.name)))
                ).all()
            )
            recent = list(
                (
                    await session.exec(
                        select(ExecutionRecord)
                        .where(live)
                        .order_by(col(ExecutionRecord.created_at).desc(), col(ExecutionRecord.id).desc())
                        .limit(RECENT_RUNS)
                    )
                ).all()
            )
            week = (
                await session.exec(
                    select(  # type: ignore[call-overload]
                        ExecutionRecord.config_id,
                        func.count(),
                        func.sum(case((col(ExecutionRecord.status).in_(SUCCESS), 1), else_=0)),
                        func.sum(case((col(ExecutionRecord.status).in_(FAILED), 1), else_=0)),
                    )
                    .where(col(ExecutionRecord.created_at) >= now - timedelta(days=TREND_DAYS), live)
                    .group_by(ExecutionRecord.config_id)
                )
            ).all()
            last: dict[str, ExecutionRecord] = {}
            for config in configs:  # one indexed lookup per pipeline: (config_id, created_at)
                row = (
                    await session.exec(
                        select(ExecutionRecord)
                        .where(ExecutionRecord.config_id == config.id, live)
                        .order_by(col(ExecutionRecord.created_at).desc())
                        .limit(1)
                    )
                ).first()
                if row is not None:
                    last[config.id] = row
        stats = {config_id: (int(total), int(ok or 0), int(bad or 0)) for config_id, total, ok, bad in week}
        names = {c.id: c.name for c in configs}
        pipelines = [
            PipelineSummary(c, last.get(c.id), stats.get(c.id, (0, 0, 0))[0], stats.get(c.id, (0, 0, 0))[1])
            for c in configs
        ]
        failing = sorted(
            ((cid, names.get(cid, cid), s[2]) for cid, s in stats.items() if s[2]),
            key=lambda x: (-x[2], x[1]),
        )[:TOP_FAILING]
        return Dashboard(pipelines, recent, trends, failing)

    async def search(self, q: str, limit: int) -> list[SearchHit]:
        """Case-insensitive substring over pipeline names and descriptions, routes, stages and
        execution tags."""
        needle = q.lower()
        hits: list[SearchHit] = []
        async with self.sessions() as session:
            configs = list(
                (
                    await session.exec(select(PipelineConfigRecord).order_by(col(PipelineConfigRecord.name)))
                ).all()
            )
        for config in configs:
            if needle in config.name.lower() or needle in (config.description or "").lower():
                hits.append(SearchHit("pipeline", config.id, config.name, config.description))
        for config in configs:
            pipeline = _parsed(config.id, config.version, config.yaml)
            if pipeline is None:
                continue
            stages: set[str] = set()
            for route in pipeline.routes:
                if needle in route.name.lower():
                    hits.append(
                        SearchHit(
                            "route",
                            f"{config.id}:{route.name}",
                            route.name,
                            f"route of {config.name} ({route.handler})",
                            {"pipeline_id": config.id},
                        )
                    )
                if route.stage and needle in route.stage.lower() and route.stage not in stages:
                    stages.add(route.stage)
                    hits.append(
                        SearchHit(
                            "stage",
                            f"{config.id}:{route.stage}",
                            route.stage,
                            f"stage of {config.name}, written by {route.name}",
                            {"pipeline_id": config.id},
                        )
                    )
            if len(hits) >= limit:
                return hits[:limit]
        pattern = f"%{_escape(needle)}%"
        async with self.sessions() as session:
            tagged = (
                await session.exec(
                    select(ExecutionRecord)
                    .where(
                        func.lower(col(ExecutionRecord.tag)).like(pattern, escape="\\"),
                        ExecutionRecord.trigger != DRY_RUN,
                    )
                    .order_by(col(ExecutionRecord.created_at).desc())
                    .limit(limit)
                )
            ).all()
        for run in tagged:
            hits.append(
                SearchHit(
                    "execution",
                    run.id,
                    run.tag or run.id,
                    f"{run.status} run of {run.pipeline}",
                    {"pipeline_id": run.config_id},
                )
            )
        return hits[:limit]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
