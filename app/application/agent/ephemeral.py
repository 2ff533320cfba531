"""Runs that are not stored: the server-tools mode of ``/v1/chat/completions``.

There, the client sends the whole transcript and names built-in tools; the agent loop runs
them and the answer is the final assistant message. Nothing is kept, so the loop runs over
an in-memory store that lives as long as the request. The loop, its permissions, limits,
events and cancellation are exactly those of conversations.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from app.application.agent.loop import AgentLoop, RunContext
from app.application.agent.ports import AgentLimits, AgentModel, IdFactory, RunSignals, ToolRunner
from app.application.agent.runs import RunStream
from app.application.ports import AgentUnitOfWork, Clock
from app.application.tools.ports import ToolRunObserver
from app.domain.agent import (
    Conversation,
    ConversationKey,
    ConversationRepository,
    Message,
    MessageRepository,
    MessageRole,
    MessageStatus,
    Run,
    RunError,
    RunRepository,
    RunStatus,
    RunUsage,
    ToolCall,
    ToolExecution,
    ToolExecutionRepository,
)
from app.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.domain.principal import Principal


class InMemoryConversations:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Conversation] = {}

    async def add(self, conversation: Conversation) -> None:
        self.rows[conversation.id] = replace(conversation)

    async def get(self, conversation_id: uuid.UUID) -> Conversation | None:
        row = self.rows.get(conversation_id)
        return replace(row) if row else None

    async def list_for_user(
        self, user_id: uuid.UUID, *, archived: bool | None, limit: int, after: ConversationKey | None
    ) -> list[Conversation]:
        rows = [c for c in self.rows.values() if c.user_id == user_id and archived in (None, c.archived)]
        rows.sort(key=lambda c: (c.created_at, c.id), reverse=True)
        if after is not None:
            rows = [c for c in rows if (c.created_at, c.id) < (after.created_at, after.id)]
        return [replace(c) for c in rows[:limit]]

    async def update(self, conversation: Conversation) -> None:
        if conversation.id in self.rows:
            self.rows[conversation.id] = replace(conversation)

    async def delete(self, conversation_id: uuid.UUID) -> None:
        self.rows.pop(conversation_id, None)


class InMemoryMessages:
    def __init__(self) -> None:
        self.rows: list[Message] = []

    async def add(self, message: Message) -> None:
        self.rows.append(replace(message))

    async def list_for_conversation(
        self, conversation_id: uuid.UUID, *, limit: int | None = None, after: uuid.UUID | None = None
    ) -> list[Message]:
        rows = [m for m in self.rows if m.conversation_id == conversation_id]
        if after is not None:
            ids = [m.id for m in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        return [replace(m) for m in (rows if limit is None else rows[:limit])]

    async def get(self, message_id: uuid.UUID) -> Message | None:
        return next((replace(m) for m in self.rows if m.id == message_id), None)


class InMemoryRuns:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Run] = {}

    async def add(self, run: Run) -> None:
        if any(r.conversation_id == run.conversation_id and r.is_active for r in self.rows.values()):
            raise Conflict(
                "Another run of this conversation is in progress or waiting for approval.", code="run_in_progress"
            )
        self.rows[run.id] = replace(run, pending_approvals=list(run.pending_approvals))

    async def get(self, run_id: uuid.UUID) -> Run | None:
        row = self.rows.get(run_id)
        return replace(row, pending_approvals=list(row.pending_approvals)) if row else None

    async def get_active(self, conversation_id: uuid.UUID) -> Run | None:
        for run in self.rows.values():
            if run.conversation_id == conversation_id and run.is_active:
                return replace(run, pending_approvals=list(run.pending_approvals))
        return None

    async def save(self, run: Run, *, expected: Collection[RunStatus]) -> bool:
        stored = self.rows.get(run.id)
        if stored is None or stored.status not in expected:
            return False
        self.rows[run.id] = replace(run, pending_approvals=list(run.pending_approvals))
        return True

    async def heartbeat(self, run_id: uuid.UUID, at: datetime) -> bool:
        stored = self.rows.get(run_id)
        if stored is None or stored.status is not RunStatus.RUNNING:
            return False
        stored.updated_at = at
        return True

    async def fail_stale(self, older_than: datetime, error: RunError, at: datetime) -> list[uuid.UUID]:
        stale = [r for r in self.rows.values() if r.status is RunStatus.RUNNING and r.updated_at < older_than]
        for run in stale:
            run.status, run.error, run.updated_at, run.completed_at = RunStatus.FAILED, error, at, at
        return [run.id for run in stale]


class InMemoryToolExecutions:
    def __init__(self) -> None:
        self.rows: list[ToolExecution] = []

    async def add(self, execution: ToolExecution) -> None:
        self.rows.append(replace(execution))

    async def list_for_run(self, run_id: uuid.UUID) -> list[ToolExecution]:
        return [replace(e) for e in self.rows if e.run_id == run_id]

    async def list_for_user(
        self,
        user_id: uuid.UUID,
        *,
        conversation_id: uuid.UUID | None,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[ToolExecution]:
        rows = [e for e in self.rows if e.user_id == user_id and conversation_id in (None, e.conversation_id)]
        rows.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        if after is not None:
            rows = [e for e in rows if (e.created_at, e.id) < after]
        return [replace(e) for e in rows[:limit]]


class InMemoryUnitOfWork:
    """A unit of work over memory: writes are visible at once; commit and rollback do nothing."""

    conversations: ConversationRepository
    messages: MessageRepository
    runs: RunRepository
    tool_executions: ToolExecutionRepository

    def __init__(self) -> None:
        self.conversations = InMemoryConversations()
        self.messages = InMemoryMessages()
        self.runs = InMemoryRuns()
        self.tool_executions = InMemoryToolExecutions()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def commit(self) -> None:
        return None

    async def rollback(self) -> None:
        return None


def _text(content: Any) -> str | None:
    """Message content as text: a string, or the text parts of a content-part list."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    raise InvalidInput("A message's content must be a string or a list of parts.", param="messages")


class RunServerTools:
    """The server-tools mode of ``/v1/chat/completions``: the agent loop over the client's
    transcript, with the built-in tools it names, stored nowhere.

    A tool the caller may not use is 403 ``tool_not_allowed``, one that needs approval 403
    ``approval_required`` (approvals live in conversations), an unknown one 400. Read the
    returned `RunStream` (events) or `collect()` it; the final assistant message is the answer.
    """

    def __init__(
        self,
        model: AgentModel,
        tools: ToolRunner,
        clock: Clock,
        *,
        limits: AgentLimits | None = None,
        new_id: IdFactory = uuid.uuid4,
        observer: ToolRunObserver | None = None,
    ) -> None:
        self._model, self._tools, self._clock, self._new_id = model, tools, clock, new_id
        self._limits = limits or AgentLimits()
        self._observer = observer

    async def __call__(
        self,
        principal: Principal,
        *,
        model: str,
        messages: Sequence[dict[str, Any]],
        tool_names: Sequence[str],
        max_iterations: int | None = None,
        signals: RunSignals | None = None,
    ) -> RunStream:
        if not principal.may_use_model(model):
            raise Forbidden(f"You may not use the model {model!r}.", code="model_not_allowed", param="model")
        if not self._model.is_known(model):
            raise NotFound(f"The model {model!r} does not exist.", param="model")
        known = {str(d.get("function", {}).get("name")) for d in self._tools.definitions(principal)}
        for name in tool_names:
            if not principal.may_use_tool(name):
                raise Forbidden(f"You may not use the tool {name!r}.", code="tool_not_allowed", param="tools")
            if name not in known:
                raise InvalidInput(f"Unknown tool {name!r}.", param="tools")
            if self._tools.requires_approval(name):
                raise Forbidden(
                    f"The tool {name!r} requires human approval: use a conversation.",
                    code="approval_required",
                    param="tools",
                )
        uow = InMemoryUnitOfWork()

        def factory() -> AgentUnitOfWork:
            return uow

        now = self._clock.now()
        system, history = self._history(messages, now)
        conversation = Conversation(
            self._new_id(), principal.user_id, None, model, system, list(tool_names), {}, False, now, now
        )
        limits = self._limits
        loop = AgentLoop(
            factory, self._model, self._tools, signals or RunSignals(), self._clock, limits=limits,
            observer=self._observer,
        )  # fmt: skip
        iterations = limits.default_max_iterations if max_iterations is None else max_iterations
        if not 1 <= iterations <= limits.max_iterations_limit:
            raise InvalidInput(
                f"max_iterations must be between 1 and {limits.max_iterations_limit}.", param="max_iterations"
            )
        run = Run(
            self._new_id(), conversation.id, principal.user_id, model, RunStatus.RUNNING, iterations, now, now,
            usage=RunUsage(), token_budget=limits.token_budget,
        )  # fmt: skip
        for message in history:
            message.conversation_id = conversation.id
        await uow.conversations.add(conversation)
        await uow.runs.add(run)
        for message in history:
            await uow.messages.add(message)
        return RunStream(loop, RunContext(principal, conversation, run, history), None, ())

    def _history(self, messages: Sequence[dict[str, Any]], now: datetime) -> tuple[str | None, list[Message]]:
        system: list[str] = []
        history: list[Message] = []
        placeholder = uuid.UUID(int=0)
        for raw in messages:
            role = raw.get("role") if isinstance(raw, dict) else None
            content = _text(raw.get("content")) if isinstance(raw, dict) else None
            if role in ("system", "developer"):
                system.append(content or "")
                continue
            if role not in ("user", "assistant", "tool"):
                raise InvalidInput(f"Unsupported message role {role!r}.", param="messages")
            calls = None
            if role == "assistant" and raw.get("tool_calls"):
                try:
                    calls = [ToolCall.from_json(call) for call in raw["tool_calls"]]
                except (KeyError, TypeError, AttributeError):
                    raise InvalidInput("A tool call is malformed.", param="messages") from None
            history.append(
                Message(
                    id=self._new_id(),
                    conversation_id=placeholder,
                    role=MessageRole(role),
                    content=content,
                    status=MessageStatus.COMPLETE,
                    created_at=now,
                    tool_calls=calls,
                    tool_call_id=str(raw["tool_call_id"]) if role == "tool" and raw.get("tool_call_id") else None,
                )
            )
        if not any(m.role is MessageRole.USER for m in history):
            raise InvalidInput("At least one user message is required.", param="messages")
        return ("\n\n".join(system) if system else None), history
