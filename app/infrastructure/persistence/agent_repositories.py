"""SQLAlchemy implementations of the agent's repository protocols."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.agent import (
    Conversation,
    ConversationKey,
    Message,
    MessageRole,
    MessageStatus,
    PendingApproval,
    Run,
    RunError,
    RunStatus,
    RunUsage,
    ToolCall,
    ToolExecution,
    ToolExecutionStatus,
)
from app.domain.errors import Conflict
from app.infrastructure.persistence.agent_models import ConversationModel, MessageModel, RunModel, ToolExecutionModel

ONE_ACTIVE_RUN_INDEX = "ux_runs_one_active_per_conversation"


def _clean(value: Any) -> Any:
    """Postgres refuses NUL characters in text and JSONB; a model or a tool may produce them."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    return value


def _conversation(row: ConversationModel) -> Conversation:
    return Conversation(
        id=row.id,
        user_id=row.user_id,
        title=row.title,
        model=row.model,
        system_prompt=row.system_prompt,
        tools=list(row.tools) if row.tools is not None else None,
        metadata=dict(row.metadata_ or {}),
        archived=row.archived,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlAlchemyConversationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, conversation: Conversation) -> None:
        self._session.add(
            ConversationModel(
                id=conversation.id,
                user_id=conversation.user_id,
                title=conversation.title,
                model=conversation.model,
                system_prompt=conversation.system_prompt,
                tools=conversation.tools,
                metadata_=conversation.metadata,
                archived=conversation.archived,
                created_at=conversation.created_at,
                updated_at=conversation.updated_at,
            )
        )
        await self._session.flush()

    async def get(self, conversation_id: uuid.UUID) -> Conversation | None:
        row = await self._session.get(ConversationModel, conversation_id)
        return _conversation(row) if row else None

    async def list_for_user(
        self, user_id: uuid.UUID, *, archived: bool | None, limit: int, after: ConversationKey | None
    ) -> list[Conversation]:
        stmt = select(ConversationModel).where(ConversationModel.user_id == user_id)
        if archived is not None:
            stmt = stmt.where(ConversationModel.archived == archived)
        if after is not None:
            stmt = stmt.where(
                tuple_(ConversationModel.created_at, ConversationModel.id) < tuple_(after.created_at, after.id)
            )
        stmt = stmt.order_by(ConversationModel.created_at.desc(), ConversationModel.id.desc()).limit(limit)
        return [_conversation(row) for row in (await self._session.execute(stmt)).scalars()]

    async def update(self, conversation: Conversation) -> None:
        await self._session.execute(
            update(ConversationModel)
            .where(ConversationModel.id == conversation.id)
            .values(
                title=conversation.title,
                model=conversation.model,
                system_prompt=conversation.system_prompt,
                tools=conversation.tools,
                metadata_=conversation.metadata,
                archived=conversation.archived,
                updated_at=conversation.updated_at,
            )
        )

    async def delete(self, conversation_id: uuid.UUID) -> None:
        await self._session.execute(delete(ConversationModel).where(ConversationModel.id == conversation_id))


def _message(row: MessageModel) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        run_id=row.run_id,
        role=MessageRole(row.role),
        content=row.content,
        tool_calls=[ToolCall.from_json(raw) for raw in row.tool_calls] if row.tool_calls else None,
        tool_call_id=row.tool_call_id,
        name=row.name,
        status=MessageStatus(row.status),
        created_at=row.created_at,
    )


class SqlAlchemyMessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, message: Message) -> None:
        self._session.add(
            MessageModel(
                id=message.id,
                conversation_id=message.conversation_id,
                run_id=message.run_id,
                role=message.role.value,
                content=_clean(message.content),
                tool_calls=_clean([call.as_json() for call in message.tool_calls]) if message.tool_calls else None,
                tool_call_id=message.tool_call_id,
                name=message.name,
                status=message.status.value,
                created_at=message.created_at,
            )
        )
        await self._session.flush()

    async def list_for_conversation(
        self, conversation_id: uuid.UUID, *, limit: int | None = None, after: uuid.UUID | None = None
    ) -> list[Message]:
        stmt = select(MessageModel).where(MessageModel.conversation_id == conversation_id)
        if after is not None:
            after_seq = (
                select(MessageModel.seq)
                .where(MessageModel.id == after, MessageModel.conversation_id == conversation_id)
                .scalar_subquery()
            )
            stmt = stmt.where(MessageModel.seq > after_seq)
        stmt = stmt.order_by(MessageModel.seq)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [_message(row) for row in (await self._session.execute(stmt)).scalars()]

    async def get(self, message_id: uuid.UUID) -> Message | None:
        row = await self._session.get(MessageModel, message_id)
        return _message(row) if row else None


def _run(row: RunModel) -> Run:
    return Run(
        id=row.id,
        conversation_id=row.conversation_id,
        user_id=row.user_id,
        model=row.model,
        status=RunStatus(row.status),
        max_iterations=row.max_iterations,
        iterations=row.iterations,
        usage=RunUsage.from_json(row.usage),
        pending_approvals=[PendingApproval.from_json(raw) for raw in row.pending_approvals or []],
        error=RunError(str(row.error.get("code")), str(row.error.get("message"))) if row.error else None,
        token_budget=row.token_budget,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )


class SqlAlchemyRunRepository:
    """Runs. The partial unique index ``ux_runs_one_active_per_conversation`` is the final word
    on "one active run per conversation"; `save` is a compare-and-set on the status."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, run: Run) -> None:
        self._session.add(
            RunModel(
                id=run.id,
                conversation_id=run.conversation_id,
                user_id=run.user_id,
                model=run.model,
                status=run.status.value,
                pending_approvals=[p.as_json() for p in run.pending_approvals],
                usage=run.usage.as_json(),
                iterations=run.iterations,
                max_iterations=run.max_iterations,
                token_budget=run.token_budget,
                error=run.error.as_json() if run.error else None,
                created_at=run.created_at,
                updated_at=run.updated_at,
                completed_at=run.completed_at,
            )
        )
        try:
            await self._session.flush()
        except IntegrityError as exc:
            if ONE_ACTIVE_RUN_INDEX in str(exc.orig):
                raise Conflict(
                    "Another run of this conversation is in progress or waiting for approval.",
                    code="run_in_progress",
                ) from None
            raise

    async def get(self, run_id: uuid.UUID) -> Run | None:
        row = await self._session.get(RunModel, run_id, populate_existing=True)
        return _run(row) if row else None

    async def get_active(self, conversation_id: uuid.UUID) -> Run | None:
        stmt = select(RunModel).where(
            RunModel.conversation_id == conversation_id,
            RunModel.status.in_([RunStatus.RUNNING.value, RunStatus.REQUIRES_APPROVAL.value]),
        )
        row = (await self._session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()
        return _run(row) if row else None

    async def save(self, run: Run, *, expected: Collection[RunStatus]) -> bool:
        stmt = (
            update(RunModel)
            .where(RunModel.id == run.id, RunModel.status.in_([status.value for status in expected]))
            .values(
                status=run.status.value,
                pending_approvals=[p.as_json() for p in run.pending_approvals],
                usage=run.usage.as_json(),
                iterations=run.iterations,
                error=run.error.as_json() if run.error else None,
                updated_at=run.updated_at,
                completed_at=run.completed_at,
            )
            .execution_options(synchronize_session=False)
        )
        result = await self._session.execute(stmt)
        assert isinstance(result, CursorResult)
        return bool(result.rowcount == 1)

    async def heartbeat(self, run_id: uuid.UUID, at: datetime) -> bool:
        stmt = (
            update(RunModel)
            .where(RunModel.id == run_id, RunModel.status == RunStatus.RUNNING.value)
            .values(updated_at=at)
            .execution_options(synchronize_session=False)
        )
        result = await self._session.execute(stmt)
        assert isinstance(result, CursorResult)
        return bool(result.rowcount == 1)

    async def fail_stale(self, older_than: datetime, error: RunError, at: datetime) -> list[uuid.UUID]:
        stmt = (
            update(RunModel)
            .where(RunModel.status == RunStatus.RUNNING.value, RunModel.updated_at < older_than)
            .values(status=RunStatus.FAILED.value, error=error.as_json(), updated_at=at, completed_at=at)
            .returning(RunModel.id)
            .execution_options(synchronize_session=False)
        )
        return list((await self._session.execute(stmt)).scalars())


def _execution(row: ToolExecutionModel) -> ToolExecution:
    return ToolExecution(
        id=row.id,
        user_id=row.user_id,
        api_key_id=row.api_key_id,
        run_id=row.run_id,
        conversation_id=row.conversation_id,
        tool_call_id=row.tool_call_id,
        name=row.name,
        arguments=row.arguments,
        status=ToolExecutionStatus(row.status),
        output=row.output,
        error=row.error,
        error_code=row.error_code,
        duration_ms=row.duration_ms,
        approved_by=row.approved_by,
        created_at=row.created_at,
    )


class SqlAlchemyToolExecutionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, execution: ToolExecution) -> None:
        self._session.add(
            ToolExecutionModel(
                id=execution.id,
                user_id=execution.user_id,
                api_key_id=execution.api_key_id,
                run_id=execution.run_id,
                conversation_id=execution.conversation_id,
                tool_call_id=execution.tool_call_id,
                name=execution.name,
                arguments=_clean(execution.arguments),
                status=execution.status.value,
                output=_clean(execution.output),
                error=_clean(execution.error),
                error_code=execution.error_code,
                duration_ms=execution.duration_ms,
                approved_by=execution.approved_by,
                created_at=execution.created_at,
            )
        )
        await self._session.flush()

    async def list_for_run(self, run_id: uuid.UUID) -> list[ToolExecution]:
        stmt = (
            select(ToolExecutionModel)
            .where(ToolExecutionModel.run_id == run_id)
            .order_by(ToolExecutionModel.created_at, ToolExecutionModel.id)
        )
        return [_execution(row) for row in (await self._session.execute(stmt)).scalars()]

    async def list_for_user(
        self,
        user_id: uuid.UUID,
        *,
        conversation_id: uuid.UUID | None,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[ToolExecution]:
        stmt = select(ToolExecutionModel).where(ToolExecutionModel.user_id == user_id)
        if conversation_id is not None:
            stmt = stmt.where(ToolExecutionModel.conversation_id == conversation_id)
        if after is not None:
            stmt = stmt.where(tuple_(ToolExecutionModel.created_at, ToolExecutionModel.id) < tuple_(*after))
        stmt = stmt.order_by(ToolExecutionModel.created_at.desc(), ToolExecutionModel.id.desc()).limit(limit)
        return [_execution(row) for row in (await self._session.execute(stmt)).scalars()]
