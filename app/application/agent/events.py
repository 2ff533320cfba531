"""The typed events of a run, in the order the loop yields them.

They mirror the contract's agent event table; the SSE, WebSocket and non-streaming
renderings encode them (and add the final ``done`` marker). `json()` gives each event's
``data`` object as the contract shapes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from app.domain.agent import Message, PendingApproval, Run
from app.domain.errors import DomainError


def message_json(message: Message) -> dict[str, Any]:
    """The contract's `Message` object."""
    return {
        "id": str(message.id),
        "conversation_id": str(message.conversation_id),
        "run_id": str(message.run_id) if message.run_id else None,
        "role": message.role.value,
        "content": message.content,
        "tool_calls": [call.as_json() for call in message.tool_calls] if message.tool_calls else None,
        "tool_call_id": message.tool_call_id,
        "name": message.name,
        "status": message.status.value,
        "created_at": message.created_at.isoformat(),
    }


def run_json(run: Run) -> dict[str, Any]:
    """The contract's `Run` object."""
    return {
        "id": str(run.id),
        "object": "conversation.run",
        "conversation_id": str(run.conversation_id),
        "status": run.status.value,
        "model": run.model,
        "pending_approvals": [p.as_json() for p in run.pending_approvals],
        "usage": run.usage.as_json(),
        "iterations": run.iterations,
        "max_iterations": run.max_iterations,
        "error": run.error.as_json() if run.error else None,
        "created_at": run.created_at.isoformat(),
        "completed_at": run.completed_at.isoformat() if run.completed_at else None,
    }


@dataclass(frozen=True, slots=True)
class RunStarted:
    type: ClassVar[str] = "run.started"
    run_id: uuid.UUID
    conversation_id: uuid.UUID

    def json(self) -> dict[str, Any]:
        return {"run_id": str(self.run_id), "conversation_id": str(self.conversation_id)}


@dataclass(frozen=True, slots=True)
class MessageDelta:
    type: ClassVar[str] = "message.delta"
    run_id: uuid.UUID
    message_id: uuid.UUID
    delta: str

    def json(self) -> dict[str, Any]:
        return {"run_id": str(self.run_id), "message_id": str(self.message_id), "delta": self.delta}


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    type: ClassVar[str] = "reasoning.delta"
    run_id: uuid.UUID
    message_id: uuid.UUID
    delta: str

    def json(self) -> dict[str, Any]:
        return {"run_id": str(self.run_id), "message_id": str(self.message_id), "delta": self.delta}


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    type: ClassVar[str] = "tool.call"
    run_id: uuid.UUID
    tool_call_id: str
    name: str
    # The parsed object when the model produced valid JSON, else its raw text.
    arguments: dict[str, Any] | str

    def json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "arguments": self.arguments,
        }


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    type: ClassVar[str] = "tool.result"
    run_id: uuid.UUID
    tool_call_id: str
    name: str
    # "success" | "error" | "rejected" (a refused call is an "error": "not permitted: ...").
    status: str
    output: Any
    error: str | None
    duration_ms: int

    def json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class ApprovalRequired:
    type: ClassVar[str] = "approval.required"
    run_id: uuid.UUID
    approvals: tuple[PendingApproval, ...]

    def json(self) -> dict[str, Any]:
        return {"run_id": str(self.run_id), "approvals": [a.as_json() for a in self.approvals]}


@dataclass(frozen=True, slots=True)
class MessageCompleted:
    type: ClassVar[str] = "message.completed"
    message: Message

    def json(self) -> dict[str, Any]:
        return message_json(self.message)


@dataclass(frozen=True, slots=True)
class RunCompleted:
    """Always the last event of a run, whatever its final status (``requires_approval`` too)."""

    type: ClassVar[str] = "run.completed"
    run: Run

    def json(self) -> dict[str, Any]:
        return run_json(self.run)


INTERNAL = "internal_error"
INTERNAL_MESSAGE = "The run failed unexpectedly."


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A failure after the stream began (the ``data`` is ``{"error": {...}}``).

    `error` is the domain error (the HTTP layer's one error mapping gives it its status and
    ``type``), or None for an unexpected failure (``server_error`` / ``internal_error``; the
    details are only logged)."""

    type: ClassVar[str] = "error"
    run_id: uuid.UUID
    error: DomainError | None

    def json(self) -> dict[str, Any]:
        if self.error is None:
            return {"error": {"message": INTERNAL_MESSAGE, "code": INTERNAL, "param": None}}
        return {"error": {"message": self.error.message, "code": self.error.code, "param": self.error.param}}


AgentEvent = (
    RunStarted
    | MessageDelta
    | ReasoningDelta
    | ToolCallEvent
    | ToolResultEvent
    | ApprovalRequired
    | MessageCompleted
    | RunCompleted
    | ErrorEvent
)
