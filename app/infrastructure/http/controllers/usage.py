"""``GET /v1/usage``: token and request totals (own; an admin anyone's or everyone's)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from pydantic import BaseModel

from app.application.usage import GetUsage, UsageTotals
from app.infrastructure.http.auth import principal_of

_GROUP_FIELD = {"day": "day", "model": "model", "api_key": "api_key_id"}


class UsageGroup(BaseModel):
    """One group's totals. Exactly one of `day` (UTC, `YYYY-MM-DD`), `model`, `api_key_id` is set,
    per `group_by` (`api_key_id` null: calls made with a JWT, not an API key)."""

    day: str | None = None
    model: str | None = None
    api_key_id: str | None = None
    requests: int
    failed_requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageTotal(BaseModel):
    requests: int
    failed_requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageResponse(BaseModel):
    object: Literal["usage"] = "usage"
    start: datetime
    end: datetime
    group_by: Literal["day", "model", "api_key"]
    user_id: str | None
    data: list[UsageGroup]
    total: UsageTotal


def _numbers(totals: UsageTotals) -> dict[str, int]:
    return {
        "requests": totals.requests,
        "failed_requests": totals.failed_requests,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "total_tokens": totals.total_tokens,
    }


class UsageController(Controller):
    path = "/v1/usage"
    tags = ["usage"]

    @get(
        "/",
        summary="Token and request totals",
        description=(
            "Totals of chat completion attempts (every status) in `[start, end)`, grouped by UTC day, model or"
            " API key, aggregated from the usage records. Your own usage; an admin sees everyone's, or one"
            " user's with `user_id`."
        ),
    )
    async def usage(  # noqa: PLR0917 - one parameter per query field
        self,
        request: Request[Any, Any, Any],
        get_usage: NamedDependency[GetUsage],
        start: Annotated[
            str | None,
            QueryParameter(
                description="Unix seconds or ISO 8601 (date or date-time; naive = UTC). Default: end - 30 days."
            ),
        ] = None,
        end: Annotated[str | None, QueryParameter(description="Exclusive; same formats. Default: now.")] = None,
        group_by: Annotated[str | None, QueryParameter(description="`day` (default), `model` or `api_key`.")] = None,
        user_id: Annotated[
            str | None, QueryParameter(description="Admin only (or your own id): one user's usage.")
        ] = None,
    ) -> UsageResponse:
        report = await get_usage(principal_of(request), start=start, end=end, group_by=group_by, user_id=user_id)
        query = report.query
        field = _GROUP_FIELD[query.group_by]
        return UsageResponse(
            start=query.start,
            end=query.end,
            group_by=query.group_by,
            user_id=None if query.user_id is None else str(query.user_id),
            data=[UsageGroup(**{field: g.key}, **_numbers(g)) for g in report.groups],
            total=UsageTotal(**_numbers(report.total)),
        )
