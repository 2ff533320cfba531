"""What the agent loop needs from the outside: a model that streams one turn, and tools.

These are deliberately narrow: the integrator adapts the gateway's `LLMClient` / model
catalog and the tools' registry / `ExecuteTool` to them in a few lines.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from app.domain.principal import Principal


class AgentModel(Protocol):
    """The upstream model, as the loop sees it."""

    def is_known(self, model: str) -> bool:
        """True when `model` is a model this deployment serves (an unknown one is a 404)."""
        ...

    def stream_turn(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        max_tokens: int | None,
        principal: Principal,
    ) -> AsyncIterator[dict[str, Any]]:
        """One streamed chat completion: yields OpenAI ``chat.completion.chunk`` objects.

        `principal` is who the run works for (usage records, limits). Raises the domain's
        `UpstreamError` / `UpstreamTimeout` / `RateLimited` on failure. Closing the iterator
        must cancel the upstream request.
        """
        ...


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """How one tool run ended. `status` is ``success`` or ``error``; `output` is any JSON value."""

    status: str
    output: Any
    error: str | None
    duration_ms: int
    error_code: str | None = None


class ToolRunner(Protocol):
    """The server-side tools, as the loop sees them."""

    def definitions(self, principal: Principal) -> list[dict[str, Any]]:
        """OpenAI tool schemas (``{"type": "function", "function": {name, description, parameters}}``)
        of the tools this principal may use."""
        ...

    def requires_approval(self, name: str) -> bool: ...

    async def run(self, name: str, arguments: dict[str, Any], principal: Principal) -> ToolOutcome:
        """Validate and run one call (the tool's own time limit applies). Never raises for a
        tool failure: that is an ``error`` outcome."""
        ...


@dataclass(frozen=True, slots=True)
class AgentLimits:
    """The loop's bounds (the integrator builds this from settings)."""

    default_model: str = "demo"
    default_max_iterations: int = 8
    max_iterations_limit: int = 32
    # Total tokens (prompt + completion, over every model call) one run may spend; None = unlimited.
    token_budget: int | None = None
    # Per model call, passed upstream as max_tokens; None = the upstream's default.
    max_tokens_per_turn: int | None = None
    # An outer bound on one tool run (tools have their own, usually shorter, time limits).
    tool_timeout_seconds: float = 120.0
    # How often a running run re-reads its status, so a cancellation made by another process
    # stops it within about this long even while it waits on the model or a tool; 0 = never.
    status_poll_seconds: float = 2.0
    # How long a driver keeps retrying to store its run's end when the database refused it
    # (an outage); after that the heartbeat-based sweep is the safety net.
    settle_seconds: float = 300.0


class RunSignals:
    """In-process cancellation signals of the runs this process is driving.

    `CancelRun` marks the run cancelled in the database (which every process notices at the
    loop's next step) and, when the run is driven here, stops it at once through this.
    """

    def __init__(self) -> None:
        self._events: dict[uuid.UUID, asyncio.Event] = {}

    def register(self, run_id: uuid.UUID) -> asyncio.Event:
        event = self._events.setdefault(run_id, asyncio.Event())
        return event

    def unregister(self, run_id: uuid.UUID) -> None:
        self._events.pop(run_id, None)

    def cancel(self, run_id: uuid.UUID) -> bool:
        event = self._events.get(run_id)
        if event is None:
            return False
        event.set()
        return True


IdFactory = Callable[[], uuid.UUID]
