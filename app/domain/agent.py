"""The agent's domain: conversations, their messages, runs of the agent loop, tool executions.

A conversation is a stored thread owned by one user. Posting a message starts a *run*; a
conversation has at most one active run (``running`` or ``requires_approval``) at a time:
the repositories enforce it (in Postgres with a partial unique index), the use cases report
it as `Conflict(code="run_in_progress")`.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from app.domain.errors import Conflict

MAX_TITLE_LENGTH = 200
MAX_SYSTEM_PROMPT_LENGTH = 32_000
MAX_METADATA_KEYS = 16
MAX_MESSAGE_LENGTH = 100_000


class MessageRole(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class MessageStatus(enum.StrEnum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    ERROR = "error"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    REQUIRES_APPROVAL = "requires_approval"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_RUN_STATUSES


ACTIVE_RUN_STATUSES: frozenset[RunStatus] = frozenset({RunStatus.RUNNING, RunStatus.REQUIRES_APPROVAL})


class ToolExecutionStatus(enum.StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    REJECTED = "rejected"
    NOT_PERMITTED = "not_permitted"


@dataclass(slots=True)
class Conversation:
    id: uuid.UUID
    user_id: uuid.UUID
    title: str | None
    model: str | None
    system_prompt: str | None
    # None = every tool the caller may use; a list = only those (still subject to permissions).
    tools: list[str] | None
    metadata: dict[str, Any]
    archived: bool
    created_at: datetime
    updated_at: datetime

    @property
    def status(self) -> str:
        return "archived" if self.archived else "active"

    def offers_tool(self, name: str) -> bool:
        return self.tools is None or name in self.tools


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call as the model made it. `arguments` is the raw JSON text the model produced."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any] | None:
        """The arguments as an object, or None when the model produced something else."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ToolCall:
        function = raw.get("function") or {}
        return cls(id=str(raw["id"]), name=str(function.get("name", "")), arguments=str(function.get("arguments", "")))


@dataclass(slots=True)
class Message:
    id: uuid.UUID
    conversation_id: uuid.UUID
    role: MessageRole
    content: str | None
    status: MessageStatus
    created_at: datetime
    run_id: uuid.UUID | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """A tool call waiting for a human. `arguments` are the stored ones: what runs if approved."""

    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "arguments": self.arguments,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PendingApproval:
        return cls(
            tool_call_id=str(raw["tool_call_id"]),
            name=str(raw["name"]),
            arguments=dict(raw.get("arguments") or {}),
            reason=str(raw.get("reason") or ""),
        )


@dataclass(frozen=True, slots=True)
class RunUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, other: RunUsage) -> RunUsage:
        return RunUsage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)

    def as_json(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> RunUsage:
        raw = raw or {}
        return cls(int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0)))


@dataclass(frozen=True, slots=True)
class RunError:
    code: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(slots=True)
class Run:
    id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    model: str
    status: RunStatus
    max_iterations: int
    created_at: datetime
    updated_at: datetime
    iterations: int = 0
    usage: RunUsage = RunUsage()
    pending_approvals: list[PendingApproval] = field(default_factory=list)
    error: RunError | None = None
    # The run's total token budget (prompt + completion over all model calls); None = unlimited.
    token_budget: int | None = None
    completed_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.status.is_active


def ensure_no_active_run(active: Run | None) -> None:
    """The rule: at most one active run per conversation."""
    if active is not None and active.is_active:
        raise Conflict(
            "Another run of this conversation is in progress or waiting for approval.", code="run_in_progress"
        )


@dataclass(slots=True)
class ToolExecution:
    """One attempt to run a tool, refused or not: the audit trail."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    arguments: Any
    status: ToolExecutionStatus
    output: Any
    error: str | None
    duration_ms: int
    created_at: datetime
    run_id: uuid.UUID | None = None
    conversation_id: uuid.UUID | None = None
    tool_call_id: str | None = None
    approved_by: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    error_code: str | None = None


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a page of conversations (newest first) resumes: strictly older than this."""

    created_at: datetime
    id: uuid.UUID


class ConversationRepository(Protocol):
    async def add(self, conversation: Conversation) -> None: ...

    async def get(self, conversation_id: uuid.UUID) -> Conversation | None: ...

    async def list_for_user(
        self, user_id: uuid.UUID, *, archived: bool | None, limit: int, after: ConversationKey | None
    ) -> list[Conversation]:
        """Newest first (created_at, then id, descending)."""
        ...

    async def update(self, conversation: Conversation) -> None: ...

    async def delete(self, conversation_id: uuid.UUID) -> None: ...


class MessageRepository(Protocol):
    async def add(self, message: Message) -> None: ...

    async def list_for_conversation(
        self, conversation_id: uuid.UUID, *, limit: int | None = None, after: uuid.UUID | None = None
    ) -> list[Message]:
        """Oldest first, in the order they were stored; `after` is the id of the last message seen."""
        ...

    async def get(self, message_id: uuid.UUID) -> Message | None: ...


class RunRepository(Protocol):
    async def add(self, run: Run) -> None:
        """Raises `Conflict(run_in_progress)` when the conversation already has an active run."""
        ...

    async def get(self, run_id: uuid.UUID) -> Run | None: ...

    async def get_active(self, conversation_id: uuid.UUID) -> Run | None: ...

    async def save(self, run: Run, *, expected: Collection[RunStatus]) -> bool:
        """Store the run's mutable fields only if its stored status is one of `expected`.

        Returns False (and writes nothing) otherwise: the compare-and-set that makes
        concurrent approvals and cancellations safe.
        """
        ...

    async def heartbeat(self, run_id: uuid.UUID, at: datetime) -> bool:
        """Mark a ``running`` run as alive at `at`; False when it is no longer ``running``."""
        ...

    async def fail_stale(self, older_than: datetime, error: RunError, at: datetime) -> list[uuid.UUID]:
        """End every ``running`` run whose last heartbeat is before `older_than` as ``failed``
        with `error` (its driver died: a crash or a kill); returns their ids."""
        ...


class ToolExecutionRepository(Protocol):
    async def add(self, execution: ToolExecution) -> None: ...

    async def list_for_run(self, run_id: uuid.UUID) -> list[ToolExecution]: ...

    async def list_for_user(
        self,
        user_id: uuid.UUID,
        *,
        conversation_id: uuid.UUID | None,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[ToolExecution]:
        """Newest first."""
        ...
