"""The caller's tool execution history (the audit trail behind ``GET /v1/tool-executions``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from app.application.agent.pagination import check_limit, decode_cursor, encode_cursor
from app.application.ports import AgentUnitOfWorkFactory
from app.domain.agent import Page, ToolExecution
from app.domain.errors import InvalidInput
from app.domain.principal import Principal


class ListToolExecutions:
    """The caller's tool runs, newest first, optionally for one conversation (someone else's
    conversation simply has none of the caller's runs)."""

    def __init__(self, uow: AgentUnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(
        self,
        principal: Principal,
        *,
        conversation_id: uuid.UUID | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page[ToolExecution]:
        check_limit(limit)
        after = None
        if cursor:
            created, ident = decode_cursor(cursor, 2)
            try:
                after = (datetime.fromisoformat(created), uuid.UUID(ident))
            except ValueError:
                raise InvalidInput("The cursor is not valid.", param="cursor") from None
        async with self._uow() as uow:
            rows = await uow.tool_executions.list_for_user(
                principal.user_id, conversation_id=conversation_id, limit=limit + 1, after=after
            )
        items = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].created_at.isoformat(), str(items[-1].id))
        return Page(items, next_cursor)
