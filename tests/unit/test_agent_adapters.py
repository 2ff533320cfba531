"""The agent's adapters and renderings, with in-memory parts (no I/O): the tool runner over
the registry, the Tools API's audit recorder, the limits from settings, the SSE encoding."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from app.application.agent.ephemeral import InMemoryUnitOfWork
from app.application.agent.events import ErrorEvent, RunStarted
from app.application.health import CheckReadiness
from app.application.llm.types import ModelInfo
from app.application.tools import ExecuteTool, ToolOutput, ToolRegistry
from app.config import AgentSettings
from app.domain.agent import RunStatus, ToolExecutionStatus
from app.domain.errors import RateLimited
from app.infrastructure.agent.adapters import PersistentToolExecutionRecorder, RegistryToolRunner
from app.infrastructure.agent.services import agent_limits
from app.infrastructure.http.agent_stream import SseRendering, encode_sse, event_data, ws_message
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.shutdown import Drain
from tests.fakes_agent import Hang, ScriptedModel, text_turn
from tests.unit.agent_harness import build_agent, make_principal

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}


class Double:
    name = "double"
    description = "Twice n."
    parameters = SCHEMA
    requires_approval = False
    timeout_seconds = 1.0

    async def run(self, arguments: Mapping[str, Any]) -> ToolOutput:
        return ToolOutput(arguments["n"] * 2)


class Gated(Double):
    name = "gated"
    requires_approval = True


def registry() -> ToolRegistry:
    return ToolRegistry([Double(), Gated()])


async def test_tool_runner_lists_checks_and_runs() -> None:
    runner = RegistryToolRunner(registry(), ExecuteTool(registry()))
    principal = make_principal(allowed_tools=("double",))
    assert [d["function"]["name"] for d in runner.definitions(principal)] == ["double"]
    assert runner.requires_approval("gated")
    assert not runner.requires_approval("double")
    assert not runner.requires_approval("missing")

    done = await runner.run("double", {"n": 21}, principal)
    assert (done.status, done.output, done.error) == ("success", 42, None)
    invalid = await runner.run("double", {"n": "x"}, principal)
    assert invalid.status == "error"
    assert invalid.error_code == "invalid_value"
    refused = await runner.run("gated", {"n": 1}, principal)
    assert refused.error_code == "tool_not_allowed"
    # The loop only runs a gated call after approval: the runner runs it.
    approved = await runner.run("gated", {"n": 2}, make_principal())
    assert approved.output == 4


async def test_the_tools_api_recorder_stores_every_attempt() -> None:
    uow = InMemoryUnitOfWork()
    execute = ExecuteTool(registry(), recorder=PersistentToolExecutionRecorder(lambda: uow))
    principal = make_principal(allowed_tools=("double", "gated"))
    await execute.attempt(principal, "double", {"n": 5}, call_id="c1")
    await execute.attempt(principal, "gated", {"n": 5})
    await execute.attempt(make_principal(allowed_tools=()), "double", {"n": 5})
    rows = uow.tool_executions.rows  # type: ignore[attr-defined]
    assert [(r.name, r.status, r.output, r.error_code) for r in rows] == [
        ("double", ToolExecutionStatus.SUCCESS, 10, None),
        ("gated", ToolExecutionStatus.ERROR, None, "approval_required"),
        ("double", ToolExecutionStatus.NOT_PERMITTED, None, "tool_not_allowed"),
    ]
    assert rows[0].user_id == principal.user_id
    assert rows[0].tool_call_id == "c1"
    assert rows[0].arguments == {"n": 5}
    assert rows[0].run_id is None


class Catalog:
    def __init__(self, *names: str) -> None:
        self._models = [ModelInfo(name, "x", 0, ()) for name in names]

    def models(self) -> list[ModelInfo]:
        return self._models

    def get(self, model_id: str) -> ModelInfo | None:
        return next((m for m in self._models if m.id == model_id), None)


def test_limits_from_settings() -> None:
    limits = agent_limits(AgentSettings(max_iterations=3, token_budget=1000), Catalog("first", "second"))
    assert limits.default_model == "first"
    assert limits.default_max_iterations == 3
    assert limits.token_budget == 1000
    assert agent_limits(AgentSettings(default_model="second"), Catalog("first")).default_model == "second"


def test_sse_and_websocket_encoding() -> None:
    run_id, conversation_id = uuid.uuid4(), uuid.uuid4()
    started = RunStarted(run_id, conversation_id)
    encoded = encode_sse(3, started.type, event_data(started)).decode()
    head, data = encoded.removesuffix("\n\n").rsplit("\n", 1)
    assert head == "id: 3\nevent: run.started"
    assert json.loads(data.removeprefix("data: ")) == {"run_id": str(run_id), "conversation_id": str(conversation_id)}
    assert encode_sse(4, "done", "[DONE]") == b"id: 4\nevent: done\ndata: [DONE]\n\n"
    assert ws_message(started) == {"type": "run.started", **started.json()}

    limited = event_data(ErrorEvent(run_id, RateLimited("Slow down.", retry_after_seconds=1.0)))
    assert limited["error"]["type"] == "rate_limit_error"
    assert limited["error"]["code"] == "rate_limit_exceeded"
    internal = event_data(ErrorEvent(run_id, None))
    assert internal["error"]["type"] == "server_error"
    assert internal["error"]["code"] == "internal_error"


async def test_an_sse_response_that_never_started_still_ends_its_run() -> None:
    agent = build_agent(ScriptedModel(text_turn("hi")))
    principal = make_principal()
    conversation = await agent.conversation(principal)
    stream = await agent.post(principal, conversation.id, "hello")
    await SseRendering(stream, 15.0, Metrics(), idle_drain()).close_if_unread()  # the client left before the first byte
    assert (await agent.uow.runs.get(stream.run.id)).status is RunStatus.CANCELLED  # type: ignore[union-attr]
    assert agent.model.calls == []

    stream = await agent.post(principal, conversation.id, "again")  # the conversation is free
    rendering = SseRendering(stream, 15.0, Metrics(), idle_drain())
    body = b"".join([chunk async for chunk in rendering.events()])
    await rendering.close_if_unread()  # read to the end: nothing to do
    assert body.endswith(b"event: done\ndata: [DONE]\n\n")
    assert (await agent.uow.runs.get(stream.run.id)).status is RunStatus.COMPLETED  # type: ignore[union-attr]


def idle_drain() -> Drain:
    """A drain that is not draining (the process is not shutting down)."""
    return Drain(CheckReadiness([]), drain_seconds=25)


async def test_the_shutdown_deadline_ends_an_agent_stream_with_an_error_event() -> None:
    """At the drain deadline the run is closed (stored cancelled, partial answer incomplete) and
    the SSE stream ends with an `error` event (shutting_down), then `done`."""
    agent = build_agent(ScriptedModel(Hang(before=text_turn("Half an answer")[:2])))
    principal = make_principal()
    conversation = await agent.conversation(principal)
    stream = await agent.post(principal, conversation.id, "hello")
    drain = idle_drain()
    rendering = SseRendering(stream, 15.0, Metrics(), drain)
    chunks: list[bytes] = []
    async for chunk in rendering.events():
        chunks.append(chunk)
        if b"event: message.delta" in chunk:
            drain.begin()  # no event loop installed: the deadline is now
    body = b"".join(chunks)
    assert b"event: error" in body
    assert b'"code":"shutting_down"' in body
    assert body.endswith(b"event: done\ndata: [DONE]\n\n")
    run = await agent.uow.runs.get(stream.run.id)
    assert run is not None
    assert run.status is RunStatus.CANCELLED
    messages = await agent.uow.messages.list_for_conversation(conversation.id)
    assert [(m.content, m.status.value) for m in messages][-1] == ("Half an answer", "incomplete")
