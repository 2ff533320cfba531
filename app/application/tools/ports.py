"""The tool port, what a tool returns, and the optional execution recorder port.

This module is the stable surface for tool authors (built-ins and plugins alike): implement
`Tool`, return a `ToolOutput`, raise `ToolError` for a failure the caller should read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from app.domain.agent import ToolExecutionStatus

# A JSON value: what a tool may put in its output.
JsonValue = str | int | float | bool | None | list[Any] | dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The result of a successful run: any JSON value (text, a number, an object...)."""

    value: JsonValue

    def as_text(self) -> str:
        """The output as the content of a tool message for the model."""
        if isinstance(self.value, str):
            return self.value
        return json.dumps(self.value, ensure_ascii=False, default=str)


class ToolError(Exception):
    """A failure whose message is safe to show to the caller and the model.

    Any other exception a tool raises is reported as a generic "the tool failed" error: its
    text may carry internals (paths, addresses, secrets) and is only logged.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@runtime_checkable
class Tool(Protocol):
    """A server-side tool the agent (or a caller, directly) can run.

    `parameters` is the JSON Schema of `arguments` (an object schema); arguments are
    validated against it before `run` is called, so `run` may trust their shape.
    `timeout_seconds` bounds one run; `requires_approval` means a human must approve
    each call (direct execution through the API is refused).
    """

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> Mapping[str, Any]: ...

    @property
    def requires_approval(self) -> bool: ...

    @property
    def timeout_seconds(self) -> float: ...

    async def run(self, arguments: Mapping[str, Any]) -> ToolOutput: ...


@dataclass(frozen=True, slots=True)
class ExecutionContext:
    """Where a call comes from, for the audit trail (all optional for direct API calls)."""

    conversation_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    # The user who approved the call (approval-gated tools in the agent loop).
    approved_by: uuid.UUID | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolExecutionRecord:
    """One attempt to run a tool, refused or not: what the audit trail stores."""

    user_id: uuid.UUID
    api_key_id: uuid.UUID | None
    name: str
    arguments: Mapping[str, Any]
    status: str  # "success" | "error"
    output: JsonValue
    error: str | None
    error_code: str | None
    duration_ms: int
    started_at: datetime
    call_id: str | None
    context: ExecutionContext


class ToolExecutionRecorder(Protocol):
    """Stores tool execution records (the persistence adapter is built elsewhere)."""

    async def record(self, record: ToolExecutionRecord) -> None: ...


class NoOpToolExecutionRecorder:
    """The default recorder: records nothing (until a persistent one is wired in)."""

    async def record(self, record: ToolExecutionRecord) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ToolRunObservation:
    """How one tool call ended, for metrics: one per audit-trail outcome, on every path
    (``/v1/tools/execute``, ``/v1/tools/batch``, the agent loop of conversations, approvals,
    WebSocket runs and server tools on ``/v1/chat/completions``).

    `executed` is True when the tool's code ran to an outcome (success, tool error, timeout,
    crash); False for calls answered without running it (refused, rejected by a human,
    cancelled before it finished). Only executed calls have a meaningful `duration_ms`.
    """

    name: str
    status: ToolExecutionStatus
    error_code: str | None
    duration_ms: int
    executed: bool


class ToolRunObserver(Protocol):
    """Told about every tool call outcome (the metrics adapter counts them). Called on the
    event loop in the request path: it must be cheap and must not raise."""

    def observe(self, run: ToolRunObservation) -> None: ...


class NoOpToolRunObserver:
    def observe(self, run: ToolRunObservation) -> None:
        return None
