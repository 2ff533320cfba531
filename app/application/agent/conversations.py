"""Use cases over conversations and their messages (everything but runs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.application.agent.pagination import check_limit, decode_cursor, encode_cursor
from app.application.agent.ports import IdFactory, ToolRunner
from app.application.ports import AgentUnitOfWork, AgentUnitOfWorkFactory, Clock
from app.domain.agent import (
    MAX_METADATA_KEYS,
    MAX_SYSTEM_PROMPT_LENGTH,
    MAX_TITLE_LENGTH,
    Conversation,
    ConversationKey,
    Message,
    Page,
    Run,
    RunStatus,
)
from app.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.domain.principal import Principal

CONVERSATION_STATUSES = ("active", "archived")


async def owned_conversation(uow: AgentUnitOfWork, principal: Principal, conversation_id: uuid.UUID) -> Conversation:
    """The caller's conversation; someone else's is as absent as a missing one."""
    conversation = await uow.conversations.get(conversation_id)
    if conversation is None or conversation.user_id != principal.user_id:
        raise NotFound("No such conversation.")
    return conversation


def _check_title(title: str | None) -> str | None:
    if title is None:
        return None
    title = title.strip()
    if len(title) > MAX_TITLE_LENGTH:
        raise InvalidInput(f"title must be at most {MAX_TITLE_LENGTH} characters.", param="title")
    return title or None


class CreateConversation:
    """Start a stored thread. The tools it names must exist and be usable by the caller."""

    def __init__(
        self, uow: AgentUnitOfWorkFactory, tools: ToolRunner, clock: Clock, new_id: IdFactory = uuid.uuid4
    ) -> None:
        self._uow, self._tools, self._clock, self._new_id = uow, tools, clock, new_id

    async def __call__(
        self,
        principal: Principal,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        tools: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        if system_prompt is not None and len(system_prompt) > MAX_SYSTEM_PROMPT_LENGTH:
            raise InvalidInput(
                f"system_prompt must be at most {MAX_SYSTEM_PROMPT_LENGTH} characters.", param="system_prompt"
            )
        if metadata is not None and len(metadata) > MAX_METADATA_KEYS:
            raise InvalidInput(f"metadata may hold at most {MAX_METADATA_KEYS} keys.", param="metadata")
        if model is not None and not principal.may_use_model(model):
            raise Forbidden(f"You may not use the model {model!r}.", code="model_not_allowed", param="model")
        if tools is not None:
            tools = list(dict.fromkeys(tools))
            for name in tools:
                if not principal.may_use_tool(name):
                    raise Forbidden(f"You may not use the tool {name!r}.", code="tool_not_allowed", param="tools")
            known = {str(d.get("function", {}).get("name")) for d in self._tools.definitions(principal)}
            unknown = [name for name in tools if name not in known]
            if unknown:
                raise InvalidInput(f"Unknown tool {unknown[0]!r}.", param="tools")
        now = self._clock.now()
        conversation = Conversation(
            id=self._new_id(),
            user_id=principal.user_id,
            title=_check_title(title),
            model=model,
            system_prompt=system_prompt,
            tools=tools,
            metadata=dict(metadata or {}),
            archived=False,
            created_at=now,
            updated_at=now,
        )
        async with self._uow() as uow:
            await uow.conversations.add(conversation)
            await uow.commit()
        return conversation


class ListConversations:
    """The caller's conversations, newest first; `status` is ``active``, ``archived`` or None (all)."""

    def __init__(self, uow: AgentUnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(
        self, principal: Principal, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> Page[Conversation]:
        check_limit(limit)
        if status is not None and status not in CONVERSATION_STATUSES:
            raise InvalidInput("status must be 'active' or 'archived'.", param="status")
        after = None
        if cursor:
            created, ident = decode_cursor(cursor, 2)
            try:
                after = ConversationKey(datetime.fromisoformat(created), uuid.UUID(ident))
            except ValueError:
                raise InvalidInput("The cursor is not valid.", param="cursor") from None
        archived = None if status is None else status == "archived"
        async with self._uow() as uow:
            rows = await uow.conversations.list_for_user(
                principal.user_id, archived=archived, limit=limit + 1, after=after
            )
        items = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(last.created_at.isoformat(), str(last.id))
        return Page(items, next_cursor)


class GetConversation:
    """One of the caller's conversations."""

    def __init__(self, uow: AgentUnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal, conversation_id: uuid.UUID) -> Conversation:
        async with self._uow() as uow:
            return await owned_conversation(uow, principal, conversation_id)


@dataclass(frozen=True, slots=True)
class ConversationWithRun:
    """A conversation and its active run (``running`` or ``requires_approval``), if any."""

    conversation: Conversation
    active_run: Run | None


class GetConversationWithRun:
    """One of the caller's conversations with its active run: a client that reloads sees what
    the run waits for (the pending approvals with their reasons) without replaying the stream."""

    def __init__(self, uow: AgentUnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal, conversation_id: uuid.UUID) -> ConversationWithRun:
        async with self._uow() as uow:
            conversation = await owned_conversation(uow, principal, conversation_id)
            active = await uow.runs.get_active(conversation.id)
        return ConversationWithRun(conversation, active)


_UNSET: Any = object()


class UpdateConversation:
    """Rename or (un)archive a conversation. Arguments left out are left alone."""

    def __init__(self, uow: AgentUnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        *,
        title: str | None = _UNSET,
        archived: bool = _UNSET,
    ) -> Conversation:
        async with self._uow() as uow:
            conversation = await owned_conversation(uow, principal, conversation_id)
            if title is not _UNSET:
                conversation.title = _check_title(title)
            if archived is not _UNSET:
                conversation.archived = bool(archived)
            conversation.updated_at = self._clock.now()
            await uow.conversations.update(conversation)
            await uow.commit()
        return conversation


class DeleteConversation:
    """Delete a conversation with its messages and runs. Refused (409 ``run_in_progress``)
    while a run is executing: cancel it first. A run waiting for approval is discarded."""

    def __init__(self, uow: AgentUnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal, conversation_id: uuid.UUID) -> None:
        async with self._uow() as uow:
            conversation = await owned_conversation(uow, principal, conversation_id)
            active = await uow.runs.get_active(conversation.id)
            if active is not None and active.status is RunStatus.RUNNING:
                raise Conflict("A run of this conversation is in progress; cancel it first.", code="run_in_progress")
            await uow.conversations.delete(conversation.id)
            await uow.commit()


class ListMessages:
    """A conversation's messages, oldest first."""

    def __init__(self, uow: AgentUnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(
        self, principal: Principal, conversation_id: uuid.UUID, *, limit: int = 20, cursor: str | None = None
    ) -> Page[Message]:
        check_limit(limit)
        after = None
        if cursor:
            (ident,) = decode_cursor(cursor, 1)
            try:
                after = uuid.UUID(ident)
            except ValueError:
                raise InvalidInput("The cursor is not valid.", param="cursor") from None
        async with self._uow() as uow:
            conversation = await owned_conversation(uow, principal, conversation_id)
            rows = await uow.messages.list_for_conversation(conversation.id, limit=limit + 1, after=after)
        items = rows[:limit]
        next_cursor = encode_cursor(str(items[-1].id)) if len(rows) > limit else None
        return Page(items, next_cursor)
