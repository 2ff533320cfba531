"""`GET /v1/usage`: token and request totals per day, model or API key, out of the usage records.

The aggregation runs in the database (`UsageRepository.totals`); this module validates the
query (400 with ``param``), decides whose usage the caller may see (their own; an admin
anyone's, or everyone's) and adds the grand total.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from app.domain.errors import Forbidden, InvalidInput
from app.domain.principal import Principal

GROUPS = ("day", "model", "api_key")
DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Half-open range ``[start, end)`` (UTC); ``user_id`` None means every user (admins only)."""

    start: datetime
    end: datetime
    group_by: str
    user_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Totals of one group (``key``: a UTC day ``YYYY-MM-DD``, a model, an API key id or None)."""

    key: str | None
    requests: int
    failed_requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    query: UsageQuery
    groups: list[UsageTotals]
    total: UsageTotals


class UsageRepository(Protocol):
    """Aggregates usage records in the store (one grouped query)."""

    async def totals(self, query: UsageQuery) -> list[UsageTotals]: ...


def parse_instant(value: str, param: str) -> datetime:
    """Unix seconds, an ISO 8601 date (midnight UTC) or date-time (naive = UTC)."""
    text = value.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"'{param}' must be Unix seconds or an ISO 8601 date or date-time.", code="invalid_value", param=param
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class GetUsage:
    """The caller's usage (an admin: anyone's with ``user_id``, else everyone's), grouped."""

    def __init__(self, repository: UsageRepository, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._repository = repository
        self._now = now

    async def __call__(
        self,
        principal: Principal,
        *,
        start: str | None = None,
        end: str | None = None,
        group_by: str | None = None,
        user_id: str | None = None,
    ) -> UsageReport:
        query = self.query(principal, start=start, end=end, group_by=group_by, user_id=user_id)
        groups = await self._repository.totals(query)
        total = UsageTotals(
            key=None,
            requests=sum(g.requests for g in groups),
            failed_requests=sum(g.failed_requests for g in groups),
            prompt_tokens=sum(g.prompt_tokens for g in groups),
            completion_tokens=sum(g.completion_tokens for g in groups),
            total_tokens=sum(g.total_tokens for g in groups),
        )
        return UsageReport(query, groups, total)

    def query(
        self,
        principal: Principal,
        *,
        start: str | None,
        end: str | None,
        group_by: str | None,
        user_id: str | None,
    ) -> UsageQuery:
        """Validates the parameters (400 with ``param``) and the caller's right to see them (403)."""
        group = (group_by or "day").strip()
        if group not in GROUPS:
            raise InvalidInput(
                "'group_by' must be one of: day, model, api_key.", code="invalid_value", param="group_by"
            )
        end_at = parse_instant(end, "end") if end else self._now()
        start_at = parse_instant(start, "start") if start else end_at - DEFAULT_RANGE
        if start_at >= end_at:
            raise InvalidInput("'start' must be before 'end'.", code="invalid_value", param="start")
        if end_at - start_at > MAX_RANGE:
            raise InvalidInput("The range may span at most 366 days.", code="invalid_value", param="start")
        subject: uuid.UUID | None = principal.user_id
        if user_id:
            try:
                subject = uuid.UUID(user_id)
            except ValueError:
                raise InvalidInput("'user_id' must be a UUID.", code="invalid_value", param="user_id") from None
            if subject != principal.user_id and not principal.is_admin:
                raise Forbidden("Only an admin may see another user's usage.", code="insufficient_role")
        elif principal.is_admin:
            subject = None  # an admin without user_id: everyone's usage
        return UsageQuery(start_at, end_at, group, subject)
