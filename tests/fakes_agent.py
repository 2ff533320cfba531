"""Fakes of the agent's ports, for unit tests only (no I/O): in-memory repositories (used by
`tests.fakes.FakeUnitOfWork`), a scripted model and scripted tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from app.application.agent.ephemeral import (
    InMemoryConversations,
    InMemoryMessages,
    InMemoryRuns,
    InMemoryToolExecutions,
)
from app.application.agent.ports import ToolOutcome
from app.domain.principal import Principal

# The in-memory repositories are the ones ephemeral (server-tools) runs use in production.
InMemoryConversationRepository = InMemoryConversations
InMemoryMessageRepository = InMemoryMessages
InMemoryRunRepository = InMemoryRuns
InMemoryToolExecutionRepository = InMemoryToolExecutions


# ------------------------------------------------------------------------- the model


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
    }


def text_turn(*pieces: str, usage: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """An answer streamed in pieces, then ``stop`` (and a usage chunk when given)."""
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in pieces]
    chunks.append(chunk(finish_reason="stop"))
    if usage is not None:
        chunks.append(
            {"id": "chatcmpl-fake", "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}
        )
    return chunks


def tool_turn(
    *calls: tuple[str, str, dict[str, Any] | str], usage: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Tool calls (id, name, arguments), each streamed as OpenAI does: the first delta carries
    index, id, type and name, the arguments follow in two pieces."""
    chunks = [chunk({"role": "assistant", "content": None})]
    for index, (call_id, name, arguments) in enumerate(calls):
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        half = len(text) // 2
        first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        chunks.append(chunk({"tool_calls": [first]}))
        chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": text[:half]}}]}))
        chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": text[half:]}}]}))
    chunks.append(chunk(finish_reason="tool_calls"))
    if usage is not None:
        chunks.append(
            {"id": "chatcmpl-fake", "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}
        )
    return chunks


def check_transcript(messages: list[dict[str, Any]]) -> None:
    """The invariant: every assistant tool call is answered by exactly one tool message, right
    after it and in order; no tool message answers nothing."""
    i = 0
    while i < len(messages):
        message = messages[i]
        assert message["role"] != "tool", f"orphan tool message at {i}: {message}"
        calls = message.get("tool_calls") or []
        if message["role"] == "assistant" and calls:
            answers = messages[i + 1 : i + 1 + len(calls)]
            assert [a.get("role") for a in answers] == ["tool"] * len(calls), f"unanswered calls at {i}"
            assert [a["tool_call_id"] for a in answers] == [c["id"] for c in calls], f"answers out of order at {i}"
            i += len(calls)
        i += 1


@dataclass
class Hang:
    """A scripted turn step: stream these chunks, then wait forever (until cancelled)."""

    before: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Fail:
    """A scripted turn step: stream these chunks, then raise."""

    error: Exception
    before: list[dict[str, Any]] = field(default_factory=list)


Turn = list[dict[str, Any]] | Hang | Fail


class ScriptedModel:
    """An `AgentModel` that plays scripted turns in order and checks every transcript it gets."""

    def __init__(self, *turns: Turn, known: Collection[str] = ("fake",)) -> None:
        self.turns = list(turns)
        self.known = set(known)
        self.calls: list[dict[str, Any]] = []
        self.closed = 0
        self.hanging = asyncio.Event()

    def is_known(self, model: str) -> bool:
        return model in self.known

    def stream_turn(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        max_tokens: int | None,
        principal: Principal,
    ) -> AsyncIterator[dict[str, Any]]:
        check_transcript(messages)
        self.calls.append(
            {"model": model, "messages": messages, "tools": tools, "max_tokens": max_tokens, "principal": principal}
        )
        if not self.turns:
            raise AssertionError("the model was called more often than scripted")
        return self._play(self.turns.pop(0))

    async def _play(self, turn: Turn) -> AsyncIterator[dict[str, Any]]:
        try:
            if isinstance(turn, Hang):
                for item in turn.before:
                    yield item
                self.hanging.set()
                await asyncio.Event().wait()
            elif isinstance(turn, Fail):
                for item in turn.before:
                    yield item
                raise turn.error
            else:
                for item in turn:
                    yield item
        finally:
            self.closed += 1


# ------------------------------------------------------------------------- tools

ToolHandler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class FakeTool:
    name: str
    handler: ToolHandler
    requires_approval: bool = False


class FakeToolRunner:
    """A `ToolRunner` over handlers; records every run (name, arguments)."""

    def __init__(self, *tools: FakeTool) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.runs: list[tuple[str, dict[str, Any]]] = []
        self.started = asyncio.Event()

    def definitions(self, principal: Principal) -> list[dict[str, Any]]:
        return [
            {"type": "function", "function": {"name": name, "description": name, "parameters": {"type": "object"}}}
            for name in sorted(self.tools)
            if principal.may_use_tool(name)
        ]

    def requires_approval(self, name: str) -> bool:
        tool = self.tools.get(name)
        return tool is not None and tool.requires_approval

    async def run(self, name: str, arguments: dict[str, Any], principal: Principal) -> ToolOutcome:
        self.runs.append((name, arguments))
        self.started.set()
        tool = self.tools.get(name)
        if tool is None:
            return ToolOutcome("error", None, f"there is no tool named {name!r}", 0, "tool_not_found")
        try:
            output = await tool.handler(arguments)
        except ValueError as exc:
            return ToolOutcome("error", None, str(exc), 1, "tool_error")
        return ToolOutcome("success", output, None, 1)
