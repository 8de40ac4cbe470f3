"""Pipeline configs: validate, store with a version history, read, delete."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, NamedTuple, NoReturn, TypeVar

from sqlalchemy import bindparam, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sluice.clock import utcnow
from sluice.db.engine import SyncTransactions
from sluice.db.models import PipelineConfigRecord, PipelineConfigVersion
from sluice.errors import AlreadyExistsError, ConfigInvalidError, NotFoundError
from sluice.pipeline_config import PipelineConfig
from sluice.services.handler_check import HandlerChecker
from sluice.validation import ValidationOutcome, ValidationReport, validate_yaml, with_issues

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class ConfigText(NamedTuple):
    """A config's current version, as a run reads it (`ConfigService.current`)."""

    id: str
    version: int
    yaml: str


_CURRENT = select(PipelineConfigRecord.id, PipelineConfigRecord.version, PipelineConfigRecord.yaml).where(
    PipelineConfigRecord.id == bindparam("id")
)


@lru_cache(maxsize=256)
def _validated(yaml_text: str) -> ValidationOutcome:
    return validate_yaml(yaml_text)


def require_valid(yaml_text: str) -> tuple[PipelineConfig, ValidationReport]:
    """Schema, graph and handler policy, without importing handlers (cached by text: runs of an
    unchanged config skip the parse)."""
    outcome = _validated(yaml_text)
    if outcome.config is None:
        _invalid(outcome.report)
    assert outcome.config is not None
    return outcome.config, outcome.report


def _invalid(report: ValidationReport) -> NoReturn:
    raise ConfigInvalidError(
        f"pipeline config is invalid: {report.error_count} error(s), {report.warning_count} warning(s)",
        extra=report.model_dump(),
    )


class ConfigService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        checker: HandlerChecker,
        transactions: SyncTransactions,
    ):
        self.sessions = sessions
        self.checker = checker
        self.transactions = transactions

    async def validate(self, yaml_text: str) -> ValidationReport:
        """The full report without storing anything: the API's checks, then a worker's import of
        each handler (not cached: nothing a caller only validates should fill the cache)."""
        # Parsing a big config takes a while: off the event loop, so the API keeps answering.
        outcome = await asyncio.to_thread(validate_yaml, yaml_text)
        if outcome.config is None:
            return outcome.report
        return with_issues(outcome.report, await self.checker.check(outcome.config))

    async def _checked(self, yaml_text: str) -> PipelineConfig:
        """A config fit to store: valid here, and its handlers import on the workers (or could not
        be checked, which is a warning)."""
        config, report = await asyncio.to_thread(require_valid, yaml_text)
        full = with_issues(report, await self.checker.check(config))
        if not full.is_valid:
            _invalid(full)
        return config

    async def create(self, yaml_text: str, *, created_by: str | None = None) -> PipelineConfigRecord:
        config = await self._checked(yaml_text)
        now = utcnow()
        record = PipelineConfigRecord(
            id=str(uuid.uuid4()),
            name=config.name,
            namespace=config.namespace,
            layer=config.layer,
            description=config.description,
            version=1,
            yaml=yaml_text,
            config_hash=config.config_hash(),
            created_at=now,
            updated_at=now,
            created_by=created_by,
            updated_by=created_by,
        )
        await self._identity_free(config, None)
        async with self.sessions() as session:
            session.add(record)
            session.add(_version(record))
            try:
                await session.commit()
            except IntegrityError:  # created meanwhile by another request
                await session.rollback()
                await self._identity_free(config, None)
                raise
        return record

    async def find_by_identity(self, namespace: str, layer: str, name: str) -> PipelineConfigRecord | None:
        async with self.sessions() as session:
            return (
                await session.exec(
                    select(PipelineConfigRecord).where(
                        PipelineConfigRecord.namespace == namespace,
                        PipelineConfigRecord.layer == layer,
                        PipelineConfigRecord.name == name,
                    )
                )
            ).first()

    async def _identity_free(self, config: PipelineConfig, config_id: str | None) -> None:
        """A pipeline's identity is (namespace, layer, name): 409 CONFIG_EXISTS naming the config
        that has it (PUT adds a version to that one)."""
        existing = await self.find_by_identity(config.namespace, config.layer, config.name)
        if existing is not None and existing.id != config_id:
            raise AlreadyExistsError(
                f"pipeline {config.namespace}.{config.layer}.{config.name} already exists as config "
                f"{existing.id}; PUT /api/v1/configs/{existing.id} stores a new version of it",
                error_code="CONFIG_EXISTS",
                extra={"config_id": existing.id},
            )

    async def apply(self, yaml_text: str, *, by: str | None = None) -> tuple[PipelineConfigRecord, str]:
        """Create the pipeline, or add a version to the one with the same identity; unchanged YAML
        stores nothing. Returns (record, "created" | "updated" | "unchanged")."""
        config, _ = require_valid(yaml_text)
        existing = await self.find_by_identity(config.namespace, config.layer, config.name)
        if existing is None:
            return await self.create(yaml_text, created_by=by), "created"
        if existing.yaml == yaml_text:
            return existing, "unchanged"
        return await self.update(existing.id, yaml_text, updated_by=by), "updated"

    async def get(self, config_id: str) -> PipelineConfigRecord:
        record = await self.transactions.run(
            lambda session: session.get(PipelineConfigRecord, str(config_id))
        )
        if record is None:
            raise NotFoundError(f"config {config_id} not found", error_code="CONFIG_NOT_FOUND")
        return record

    async def current(self, config_id: str) -> ConfigText:
        """What a run starts from: the config's current version and its text. Every run reads
        it, so it is a plain row on the transaction's connection (one synchronous read, on
        SQLite one thread hand-off): loading the whole record through the ORM cost several times
        the read."""
        row = await self.transactions.run(
            lambda session: session.connection().execute(_CURRENT, {"id": str(config_id)}).first()
        )
        if row is None:
            raise NotFoundError(f"config {config_id} not found", error_code="CONFIG_NOT_FOUND")
        return ConfigText(*row)

    async def list(
        self,
        *,
        limit: int,
        offset: int,
        name: str | None = None,
        namespace: str | None = None,
        layer: str | None = None,
    ) -> Page[PipelineConfigRecord]:
        query = select(PipelineConfigRecord)
        if name:
            query = query.where(PipelineConfigRecord.name == name)
        if namespace:
            query = query.where(PipelineConfigRecord.namespace == namespace)
        if layer:
            query = query.where(PipelineConfigRecord.layer == layer)
        async with self.sessions() as session:
            total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
            rows = await session.exec(
                query.order_by(col(PipelineConfigRecord.updated_at).desc(), col(PipelineConfigRecord.id))
                .offset(offset)
                .limit(limit)
            )
            return Page(items=list(rows.all()), total=int(total), limit=limit, offset=offset)

    async def latest_for_pipeline(self, namespace: str, layer: str, name: str) -> PipelineConfigRecord:
        async with self.sessions() as session:
            row = (
                await session.exec(
                    select(PipelineConfigRecord)
                    .where(
                        PipelineConfigRecord.namespace == namespace,
                        PipelineConfigRecord.layer == layer,
                        PipelineConfigRecord.name == name,
                    )
                    .order_by(col(PipelineConfigRecord.updated_at).desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            raise NotFoundError(f"pipeline {namespace}.{layer}.{name} not found")
        return row

    async def update(
        self, config_id: str, yaml_text: str, *, updated_by: str | None = None
    ) -> PipelineConfigRecord:
        await self.get(config_id)  # 404 before the (slower) validation
        config = await self._checked(yaml_text)
        await self._identity_free(config, str(config_id))
        async with self.sessions() as session:
            record = await session.get(PipelineConfigRecord, str(config_id))
            if record is None:
                raise NotFoundError(f"config {config_id} not found", error_code="CONFIG_NOT_FOUND")
            record.name = config.name
            record.namespace = config.namespace
            record.layer = config.layer
            record.description = config.description
            record.yaml = yaml_text
            record.config_hash = config.config_hash()
            record.version += 1
            record.updated_at = utcnow()
            record.updated_by = updated_by
            session.add(record)
            session.add(_version(record))
            await session.commit()
            await session.refresh(record)
            return record

    async def delete(self, config_id: str) -> None:
        """Executions keep their own config snapshot, so they survive the config."""
        async with self.sessions() as session:
            record = await session.get(PipelineConfigRecord, str(config_id))
            if record is None:
                raise NotFoundError(f"config {config_id} not found", error_code="CONFIG_NOT_FOUND")
            await session.exec(
                delete(PipelineConfigVersion).where(PipelineConfigVersion.config_id == record.id)
            )  # type: ignore[call-overload]
            await session.delete(record)
            await session.commit()

    async def versions(self, config_id: str) -> list[PipelineConfigVersion]:
        await self.get(config_id)
        async with self.sessions() as session:
            rows = await session.exec(
                select(PipelineConfigVersion)
                .where(PipelineConfigVersion.config_id == str(config_id))
                .order_by(col(PipelineConfigVersion.version))
            )
            return list(rows.all())

    async def version(self, config_id: str, version: int) -> PipelineConfigVersion:
        async with self.sessions() as session:
            row = (
                await session.exec(
                    select(PipelineConfigVersion).where(
                        PipelineConfigVersion.config_id == str(config_id),
                        PipelineConfigVersion.version == version,
                    )
                )
            ).first()
        if row is None:
            raise NotFoundError(f"config {config_id} has no version {version}", error_code="CONFIG_NOT_FOUND")
        return row


def _version(record: PipelineConfigRecord) -> PipelineConfigVersion:
    return PipelineConfigVersion(
        config_id=record.id,
        version=record.version,
        yaml=record.yaml,
        config_hash=record.config_hash,
        created_at=record.updated_at,
        created_by=record.updated_by,
    )
