"""`SqlAlchemyUsageRepository`: usage totals aggregated in Postgres from ``usage_records``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.application.usage import UsageQuery, UsageTotals
from app.domain.errors import ServiceUnavailable
from app.infrastructure.persistence.models import UsageRecordModel as Record
from app.infrastructure.persistence.unit_of_work import is_connectivity_error


def _group_key(group_by: str) -> Any:
    if group_by == "model":
        return Record.model
    if group_by == "api_key":
        return Record.api_key_id
    # The UTC calendar day, whatever the session's time zone.
    return func.to_char(func.timezone("UTC", Record.created_at), "YYYY-MM-DD")


class SqlAlchemyUsageRepository:
    """One grouped ``SELECT`` per report (index ``(user_id, created_at)`` serves the own-usage case).

    Read-only, in a session of its own; a database outage is ``ServiceUnavailable`` (503).
    """

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory

    async def totals(self, query: UsageQuery) -> list[UsageTotals]:
        key = _group_key(query.group_by).label("key")
        statement = (
            select(
                key,
                func.count().label("requests"),
                func.count().filter(Record.status != "success").label("failed"),
                func.coalesce(func.sum(Record.prompt_tokens), 0).label("prompt"),
                func.coalesce(func.sum(Record.completion_tokens), 0).label("completion"),
                func.coalesce(func.sum(Record.total_tokens), 0).label("total"),
            )
            .where(Record.created_at >= query.start, Record.created_at < query.end)
            .group_by(key)
            .order_by(key)
        )
        if query.user_id is not None:
            statement = statement.where(Record.user_id == query.user_id)
        try:
            async with self._session_factory() as session:
                rows = (await session.execute(statement)).all()
        except Exception as exc:
            if is_connectivity_error(exc):
                raise ServiceUnavailable(
                    "The database is unavailable; try again shortly.", code="database_unavailable"
                ) from exc
            raise
        return [
            UsageTotals(
                key=None if row.key is None else str(row.key),
                requests=int(row.requests),
                failed_requests=int(row.failed),
                prompt_tokens=int(row.prompt),
                completion_tokens=int(row.completion),
                total_tokens=int(row.total),
            )
            for row in rows
        ]
