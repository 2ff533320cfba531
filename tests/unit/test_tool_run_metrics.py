"""Tool run metrics: every tool call outcome is observed exactly once, with the audit trail's
status, on every path (the Tools API's execute and batch, the agent loop, server tools), and the
Prometheus adapter counts and times them with bounded labels."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.application.agent.ephemeral import RunServerTools
from app.application.agent.ports import AgentLimits
from app.application.agent.runs import ApprovalDecision
from app.application.tools import (
    ExecuteTool,
    ExecuteToolBatch,
    ToolCall,
    ToolError,
    ToolRegistry,
    ToolRunObservation,
)
from app.domain.agent import ToolExecutionStatus
from app.domain.errors import Forbidden, InvalidInput, NotFound
from app.infrastructure.observability.metrics import UNKNOWN_TOOL, MeteredToolRuns, Metrics
from tests.fakes import FakeClock, FakeTool, InMemoryToolExecutionRecorder, RecordingToolRunObserver
from tests.fakes import api_key_principal as principal
from tests.fakes_agent import FakeTool as AgentTool
from tests.fakes_agent import FakeToolRunner, ScriptedModel, text_turn, tool_turn
from tests.unit.agent_harness import build_agent, drain, make_principal


def registry() -> ToolRegistry:
    return ToolRegistry(
        [
            FakeTool("echo", value="hi"),
            FakeTool("broken", error=ToolError("bad input")),
            FakeTool("gated", requires_approval=True),
        ]
    )


# ------------------------------------------------------------------------- the Tools API


async def test_execute_observes_each_attempt_with_the_recorded_status() -> None:
    observer, recorder = RecordingToolRunObserver(), InMemoryToolExecutionRecorder()
    execute = ExecuteTool(registry(), recorder=recorder, observer=observer)
    me = principal(allowed_tools=("echo", "broken", "gated", "missing"))

    assert (await execute(me, "echo", {})).status == "success"
    assert (await execute(me, "broken", {})).status == "error"
    with pytest.raises(Forbidden):
        await execute(principal(allowed_tools=("echo",)), "broken", {})
    with pytest.raises(Forbidden):
        await execute(me, "gated", {})
    with pytest.raises(NotFound):
        await execute(me, "missing", {})
    with pytest.raises(InvalidInput):
        await execute(me, "echo", {"text": 12})

    assert observer.pairs() == [
        ("echo", "success"),
        ("broken", "error"),
        ("broken", "not_permitted"),
        ("gated", "error"),
        ("missing", "error"),
        ("echo", "error"),
    ]
    assert [run.executed for run in observer.runs] == [True, True, False, False, False, False]
    assert [run.error_code for run in observer.runs][1:3] == ["tool_error", "tool_not_allowed"]
    assert len(recorder.records) == len(observer.runs)  # one observation per audit record


async def test_batch_observes_every_call_once() -> None:
    observer = RecordingToolRunObserver()
    batch = ExecuteToolBatch(ExecuteTool(registry(), observer=observer))
    calls = [ToolCall("echo", {}, "a"), ToolCall("broken", {}, "b"), ToolCall("nope", {}, "c"), ToolCall("echo", {})]

    results = await batch(principal(), calls)

    assert [r.status for r in results] == ["success", "error", "error", "success"]
    assert sorted(observer.pairs()) == [
        ("broken", "error"),
        ("echo", "success"),
        ("echo", "success"),
        ("nope", "error"),
    ]


async def test_a_broken_observer_does_not_fail_the_call() -> None:
    execute = ExecuteTool(registry(), observer=RecordingToolRunObserver(fail=True))
    assert (await execute(principal(), "echo", {})).status == "success"
    with pytest.raises(NotFound):  # the refusal is still the refusal, not the observer's error
        await execute(principal(), "missing", {})


# ------------------------------------------------------------------------- the agent loop


async def add(arguments: dict[str, Any]) -> Any:
    return arguments["a"] + arguments["b"]


async def fetch(arguments: dict[str, Any]) -> Any:
    return f"page at {arguments['url']}"


async def broken(arguments: dict[str, Any]) -> Any:
    raise ValueError("boom")


async def forever(arguments: dict[str, Any]) -> Any:
    await asyncio.Event().wait()


def agent_tools() -> FakeToolRunner:
    return FakeToolRunner(
        AgentTool("calculator", add),
        AgentTool("http_get", fetch, requires_approval=True),
        AgentTool("broken", broken),
        AgentTool("slow", forever),
    )


def recorded(agent: Any) -> list[tuple[str, str]]:
    return [(e.name, e.status.value) for e in agent.uow.tool_executions.rows]


async def test_the_loop_observes_every_recorded_outcome_once() -> None:
    model = ScriptedModel(
        tool_turn(
            ("c1", "calculator", {"a": 1, "b": 2}),
            ("c2", "broken", {}),
            ("c3", "nope", {}),
            ("c4", "calculator", "{not json"),
        ),
        tool_turn(("c5", "http_get", {"url": "x"})),
        text_turn("done"),
    )
    observer = RecordingToolRunObserver()
    agent = build_agent(model, agent_tools(), observer=observer)
    me = make_principal()
    conversation = await agent.conversation(me)

    await drain(await agent.post(me, conversation.id, "go"))
    # the approval-gated call waits; rejecting it is an outcome too
    await drain(await agent.approve(me, conversation.id, [ApprovalDecision("c5", approve=False, reason="no")]))

    assert sorted(observer.pairs()) == sorted(recorded(agent))
    assert sorted(observer.pairs()) == [
        ("broken", "error"),
        ("calculator", "error"),
        ("calculator", "success"),
        ("http_get", "rejected"),
        ("nope", "error"),
    ]
    # only the tools whose code ran are "executed" (refusals and the rejection are not)
    assert sorted((r.name, r.executed) for r in observer.runs) == [
        ("broken", True),
        ("calculator", False),
        ("calculator", True),
        ("http_get", False),
        ("nope", False),
    ]


async def test_the_loop_observes_not_permitted_and_approved_calls() -> None:
    model = ScriptedModel(
        tool_turn(("c1", "http_get", {"url": "x"}), ("c2", "calculator", {"a": 1, "b": 1})),
        text_turn("ok"),
        tool_turn(("c3", "http_get", {"url": "y"})),
        text_turn("no"),
    )
    observer = RecordingToolRunObserver()
    agent = build_agent(model, agent_tools(), observer=observer)
    me = make_principal()
    conversation = await agent.conversation(me)
    await drain(await agent.post(me, conversation.id, "go"))
    await drain(await agent.approve(me, conversation.id, [ApprovalDecision("c1", approve=True)]))

    narrow = make_principal(allowed_tools=("calculator",))
    other = await agent.conversation(narrow)
    await drain(await agent.post(narrow, other.id, "go"))

    assert observer.pairs() == [("calculator", "success"), ("http_get", "success"), ("http_get", "not_permitted")]
    assert observer.pairs() == recorded(agent)
    assert [run.executed for run in observer.runs] == [True, True, False]


async def test_a_cancelled_call_is_observed_as_an_error_not_executed() -> None:
    model = ScriptedModel(tool_turn(("c1", "slow", {})), text_turn("later"))
    observer = RecordingToolRunObserver()
    agent = build_agent(model, agent_tools(), observer=observer)
    me = make_principal()
    conversation = await agent.conversation(me)
    stream = await agent.post(me, conversation.id, "go")

    async def cancel_once_the_tool_runs() -> None:
        await agent.tools.started.wait()
        await agent.cancel(me, conversation.id)

    canceller = asyncio.ensure_future(cancel_once_the_tool_runs())
    await drain(stream)
    await canceller

    assert [(r.name, r.status, r.error_code, r.executed) for r in observer.runs] == [
        ("slow", ToolExecutionStatus.ERROR, "cancelled", False)
    ]
    assert observer.pairs() == recorded(agent)


async def test_a_broken_observer_does_not_break_the_run() -> None:
    model = ScriptedModel(tool_turn(("c1", "calculator", {"a": 2, "b": 3})), text_turn("5"))
    agent = build_agent(model, agent_tools(), observer=RecordingToolRunObserver(fail=True))
    me = make_principal()
    conversation = await agent.conversation(me)
    events = await drain(await agent.post(me, conversation.id, "2+3"))
    assert events[-1].run.status.value == "completed"  # type: ignore[union-attr]
    assert recorded(agent) == [("calculator", "success")]


async def test_server_tools_are_observed() -> None:
    model = ScriptedModel(tool_turn(("c1", "calculator", {"a": 2, "b": 3})), text_turn("5"))
    observer = RecordingToolRunObserver()
    use_case = RunServerTools(
        model, agent_tools(), FakeClock(), limits=AgentLimits(default_model="fake"), observer=observer
    )
    messages = [{"role": "user", "content": "2+3?"}]
    await drain(await use_case(make_principal(), model="fake", messages=messages, tool_names=["calculator"]))
    assert [(r.name, r.status.value, r.executed) for r in observer.runs] == [("calculator", "success", True)]


# ------------------------------------------------------------------------- the Prometheus adapter


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_metered_tool_runs_counts_by_tool_and_status_and_times_executed_runs() -> None:
    metrics = Metrics()
    metered = MeteredToolRuns(metrics, registry())

    def observation(name: str, status: ToolExecutionStatus, ms: int, executed: bool) -> ToolRunObservation:
        return ToolRunObservation(name, status, None, ms, executed)

    metered.observe(observation("echo", ToolExecutionStatus.SUCCESS, 250, True))
    metered.observe(observation("echo", ToolExecutionStatus.SUCCESS, 1500, True))
    metered.observe(observation("echo", ToolExecutionStatus.ERROR, 0, False))
    metered.observe(observation("gated", ToolExecutionStatus.REJECTED, 0, False))
    metered.observe(observation("made-up-by-a-model", ToolExecutionStatus.ERROR, 0, False))
    metered.observe(observation("another-invention", ToolExecutionStatus.ERROR, 0, False))

    runs = "agent_api_tool_runs_total"
    assert sample(metrics, runs, tool="echo", status="success") == 2
    assert sample(metrics, runs, tool="echo", status="error") == 1
    assert sample(metrics, runs, tool="gated", status="rejected") == 1
    assert sample(metrics, runs, tool=UNKNOWN_TOOL, status="error") == 2
    assert metrics.registry.get_sample_value(runs, {"tool": "made-up-by-a-model", "status": "error"}) is None

    duration = "agent_api_tool_run_duration_seconds"
    assert sample(metrics, f"{duration}_count", tool="echo", status="success") == 2
    assert sample(metrics, f"{duration}_sum", tool="echo", status="success") == pytest.approx(1.75)
    assert sample(metrics, f"{duration}_bucket", tool="echo", status="success", le="0.25") == 1
    assert sample(metrics, f"{duration}_count", tool="echo", status="error") == 0  # refused: not timed
    assert sample(metrics, f"{duration}_count", tool="gated", status="rejected") == 0
