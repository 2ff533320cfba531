"""The agent loop with a scripted model and fake tools: every way a run can go and end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.application.agent.events import (
    ApprovalRequired,
    ErrorEvent,
    MessageCompleted,
    MessageDelta,
    ReasoningDelta,
    RunCompleted,
    ToolCallEvent,
    ToolResultEvent,
)
from app.application.agent.ports import AgentLimits
from app.application.agent.runs import ApprovalDecision
from app.domain.agent import MessageRole, MessageStatus, RunStatus, ToolExecutionStatus
from app.domain.errors import UpstreamError
from tests.fakes_agent import Fail, FakeTool, FakeToolRunner, Hang, ScriptedModel, chunk, text_turn, tool_turn
from tests.unit.agent_harness import build_agent, drain, make_principal, types


async def add(arguments: dict[str, Any]) -> Any:
    return arguments["a"] + arguments["b"]


async def fetch(arguments: dict[str, Any]) -> Any:
    return f"page at {arguments['url']}"


async def forever(arguments: dict[str, Any]) -> Any:
    await asyncio.Event().wait()


async def broken(arguments: dict[str, Any]) -> Any:
    raise ValueError("division by zero")


def tools(**extra: FakeTool) -> FakeToolRunner:
    return FakeToolRunner(
        FakeTool("calculator", add), FakeTool("http_get", fetch, requires_approval=True), *extra.values()
    )


async def test_plain_answer_streams_and_is_stored() -> None:
    agent = build_agent(ScriptedModel(text_turn("Hel", "lo!", usage=(12, 3))))
    me = make_principal()
    conversation = await agent.conversation(me, system_prompt="Be brief.")

    stream = await agent.post(me, conversation.id, "Hi")
    events = await drain(stream)

    assert types(events) == ["run.started", "message.delta", "message.delta", "message.completed", "run.completed"]
    assert "".join(e.delta for e in events if isinstance(e, MessageDelta)) == "Hello!"
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.run.status is RunStatus.COMPLETED
    assert final.run.iterations == 1
    assert final.run.usage.total_tokens == 15
    sent = agent.model.calls[0]["messages"]
    assert sent == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert agent.model.calls[0]["principal"] is me  # usage and limits are the caller's
    stored = agent.uow.messages.rows
    assert [(m.role, m.content, m.status) for m in stored] == [
        (MessageRole.USER, "Hi", MessageStatus.COMPLETE),
        (MessageRole.ASSISTANT, "Hello!", MessageStatus.COMPLETE),
    ]
    assert agent.uow.runs.rows[final.run.id].status is RunStatus.COMPLETED


async def test_reasoning_is_relayed() -> None:
    turn = [chunk({"reasoning_content": "thinking..."}), chunk({"content": "42"}), chunk(finish_reason="stop")]
    agent = build_agent(ScriptedModel(turn))
    me = make_principal()
    conversation = await agent.conversation(me)
    events = await drain(await agent.post(me, conversation.id, "?"))
    reasoning = [e for e in events if isinstance(e, ReasoningDelta)]
    assert [e.delta for e in reasoning] == ["thinking..."]
    deltas = [e for e in events if isinstance(e, MessageDelta)]
    assert reasoning[0].message_id == deltas[0].message_id


async def test_one_tool_round() -> None:
    model = ScriptedModel(tool_turn(("call_1", "calculator", {"a": 2, "b": 3})), text_turn("It is 5."))
    agent = build_agent(model, tools())
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "2+3?"))

    assert types(events) == [
        "run.started",
        "message.completed",  # the assistant's tool call
        "tool.call",
        "tool.result",
        "message.completed",  # the tool message
        "message.delta",
        "message.completed",
        "run.completed",
    ]
    call = next(e for e in events if isinstance(e, ToolCallEvent))
    assert (call.tool_call_id, call.name, call.arguments) == ("call_1", "calculator", {"a": 2, "b": 3})
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert (result.status, result.output, result.error) == ("success", 5, None)
    second = model.calls[1]["messages"]
    assert second[-2]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"a": 2, "b": 3}'}
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
    [execution] = agent.uow.tool_executions.rows
    assert (execution.name, execution.status, execution.output, execution.tool_call_id) == (
        "calculator",
        ToolExecutionStatus.SUCCESS,
        5,
        "call_1",
    )
    assert execution.run_id == events[-1].run.id  # type: ignore[union-attr]
    assert model.calls[0]["tools"][0]["function"]["name"] == "calculator"


async def test_parallel_tool_calls_run_concurrently_and_are_answered_in_order() -> None:
    b_started = asyncio.Event()

    async def waits_for_b(arguments: dict[str, Any]) -> Any:
        # Finishes only once B has started: a sequential runner would never get there.
        await asyncio.wait_for(b_started.wait(), timeout=5)
        return "a done"

    async def b(arguments: dict[str, Any]) -> Any:
        b_started.set()
        return "b done"

    runner = FakeToolRunner(FakeTool("a", waits_for_b), FakeTool("b", b))
    model = ScriptedModel(tool_turn(("call_a", "a", {}), ("call_b", "b", {})), text_turn("both done"))
    agent = build_agent(model, runner)
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "go"))

    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert {(r.tool_call_id, r.status, r.output) for r in results} == {
        ("call_a", "success", "a done"),
        ("call_b", "success", "b done"),
    }
    # B finished first, but the model gets the answers in the order of the calls.
    assert [r.tool_call_id for r in results] == ["call_b", "call_a"]
    answers = [m for m in model.calls[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in answers] == ["call_a", "call_b"]


async def test_tool_timeout_is_an_error_result_and_the_run_goes_on() -> None:
    model = ScriptedModel(tool_turn(("call_1", "slow", {})), text_turn("It timed out."))
    agent = build_agent(
        model,
        FakeToolRunner(FakeTool("slow", forever)),
        limits=AgentLimits(default_model="fake", tool_timeout_seconds=0.01),
    )
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "go"))

    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result.status == "error"
    assert result.error is not None
    assert "did not finish" in result.error
    assert model.calls[1]["messages"][-1]["content"].startswith("error: the tool did not finish")
    assert events[-1].run.status is RunStatus.COMPLETED  # type: ignore[union-attr]
    assert agent.uow.tool_executions.rows[0].error_code == "tool_timeout"


async def test_tool_error_is_fed_back() -> None:
    model = ScriptedModel(tool_turn(("call_1", "div", {})), text_turn("Sorry."))
    agent = build_agent(model, FakeToolRunner(FakeTool("div", broken)))
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "1/0"))

    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert (result.status, result.error) == ("error", "division by zero")
    assert model.calls[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "error: division by zero",
    }
    tool_message = agent.uow.messages.rows[2]
    assert (tool_message.role, tool_message.status) == (MessageRole.TOOL, MessageStatus.ERROR)


async def test_a_tool_the_caller_may_not_use_is_never_run() -> None:
    model = ScriptedModel(tool_turn(("call_1", "http_get", {"url": "http://x"})), text_turn("I cannot."))
    runner = tools()
    agent = build_agent(model, runner)
    me = make_principal(allowed_tools=("calculator",))
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "fetch it"))

    assert runner.runs == []
    assert [d["function"]["name"] for d in model.calls[0]["tools"]] == ["calculator"]
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result.status == "error"
    assert model.calls[1]["messages"][-1]["content"] == "not permitted: you may not use the tool 'http_get'"
    [attempt] = agent.uow.tool_executions.rows
    assert (attempt.name, attempt.status, attempt.arguments) == (
        "http_get",
        ToolExecutionStatus.NOT_PERMITTED,
        {"url": "http://x"},
    )
    assert events[-1].run.status is RunStatus.COMPLETED  # type: ignore[union-attr]


async def test_conversation_tool_list_narrows_what_is_offered_and_run() -> None:
    model = ScriptedModel(tool_turn(("call_1", "calculator", {"a": 1, "b": 1})), text_turn("no"))
    runner = FakeToolRunner(FakeTool("calculator", add), FakeTool("clock", add))
    agent = build_agent(model, runner)
    me = make_principal()
    conversation = await agent.conversation(me, tools=["clock"])

    await drain(await agent.post(me, conversation.id, "1+1"))

    assert [d["function"]["name"] for d in model.calls[0]["tools"]] == ["clock"]
    assert runner.runs == []
    assert agent.uow.tool_executions.rows[0].status is ToolExecutionStatus.NOT_PERMITTED


async def test_bad_arguments_and_unknown_tools_are_error_results() -> None:
    model = ScriptedModel(tool_turn(("call_1", "calculator", "{not json"), ("call_2", "nope", {})), text_turn("oops"))
    runner = tools()
    agent = build_agent(model, runner)
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "go"))

    results = {e.tool_call_id: e for e in events if isinstance(e, ToolResultEvent)}
    assert results["call_1"].error == "the arguments are not a JSON object"
    assert results["call_2"].error == "there is no tool named 'nope'"
    assert runner.runs == []
    call = next(e for e in events if isinstance(e, ToolCallEvent))
    assert call.arguments == "{not json"


async def test_iteration_cap() -> None:
    model = ScriptedModel(
        tool_turn(("call_1", "calculator", {"a": 1, "b": 1})), tool_turn(("call_2", "calculator", {"a": 2, "b": 2}))
    )
    runner = tools()
    agent = build_agent(model, runner)
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "loop", max_iterations=2))

    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.run.status is RunStatus.FAILED
    assert final.run.error is not None
    assert final.run.error.code == "max_iterations_reached"
    assert final.run.iterations == 2
    assert len(model.calls) == 2
    assert runner.runs == [("calculator", {"a": 1, "b": 1})]  # the last round was answered, not run
    last = agent.uow.messages.rows[-1]
    assert (last.tool_call_id, last.content) == (
        "call_2",
        "error: not run: The run reached its limit of 2 model calls.",
    )


async def test_token_budget() -> None:
    model = ScriptedModel(tool_turn(("call_1", "calculator", {"a": 1, "b": 1}), usage=(90, 20)))
    runner = tools()
    agent = build_agent(model, runner, limits=AgentLimits(default_model="fake", token_budget=100))
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "go"))

    assert model.calls[0]["max_tokens"] == 100
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.run.status is RunStatus.FAILED
    assert final.run.error is not None
    assert final.run.error.code == "token_budget_exceeded"
    assert final.run.usage.total_tokens == 110
    assert runner.runs == []


async def test_upstream_failure_mid_stream_keeps_the_partial_answer() -> None:
    model = ScriptedModel(Fail(UpstreamError("upstream went away"), before=[chunk({"content": "Half an ans"})]))
    agent = build_agent(model)
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "go"))

    assert types(events)[-3:] == ["message.completed", "error", "run.completed"]
    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert error.error is not None
    assert error.error.code == "upstream_error"
    partial = agent.uow.messages.rows[-1]
    assert (partial.content, partial.status) == ("Half an ans", MessageStatus.INCOMPLETE)
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.run.status is RunStatus.FAILED
    assert model.closed == 1


async def test_an_empty_answer_is_an_upstream_error() -> None:
    agent = build_agent(ScriptedModel([]))
    me = make_principal()
    conversation = await agent.conversation(me)
    events = await drain(await agent.post(me, conversation.id, "go"))
    assert types(events) == ["run.started", "error", "run.completed"]
    assert events[-1].run.status is RunStatus.FAILED  # type: ignore[union-attr]


# ------------------------------------------------------------------------- approvals


async def stop_for_approval(agent: Any, me: Any) -> Any:
    conversation = await agent.conversation(me)
    events = await drain(await agent.post(me, conversation.id, "fetch and add"))
    return conversation, events


def approval_script() -> list[Any]:
    return [
        tool_turn(
            ("call_get", "http_get", {"url": "https://example.com"}), ("call_add", "calculator", {"a": 1, "b": 2})
        ),
        text_turn("Done."),
    ]


async def test_approval_stop_then_approve_in_a_fresh_loop() -> None:
    first = build_agent(ScriptedModel(*approval_script()[:1]), tools())
    me = make_principal()
    conversation, events = await stop_for_approval(first, me)

    assert types(events)[-2:] == ["approval.required", "run.completed"]
    required = events[-2]
    assert isinstance(required, ApprovalRequired)
    assert [(a.tool_call_id, a.name, a.arguments) for a in required.approvals] == [
        ("call_get", "http_get", {"url": "https://example.com"})
    ]
    assert first.tools.runs == [("calculator", {"a": 1, "b": 2})]  # the ungated call ran
    stored = next(iter(first.uow.runs.rows.values()))
    assert stored.status is RunStatus.REQUIRES_APPROVAL
    assert stored.pending_approvals[0].arguments == {"url": "https://example.com"}

    # A new process: new loop, new signals, same database.
    second = build_agent(ScriptedModel(approval_script()[1]), tools(), uow=first.uow)
    stream = await second.approve(me, conversation.id, [ApprovalDecision("call_get", approve=True)])
    resumed = await drain(stream)

    assert second.tools.runs == [("http_get", {"url": "https://example.com"})]
    result = next(e for e in resumed if isinstance(e, ToolResultEvent))
    assert (result.tool_call_id, result.status, result.output) == ("call_get", "success", "page at https://example.com")
    final = resumed[-1]
    assert isinstance(final, RunCompleted)
    assert final.run.status is RunStatus.COMPLETED
    assert final.run.id == stored.id
    sent = second.model.calls[0]["messages"]
    answers = [m for m in sent if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in answers] == ["call_get", "call_add"]
    execution = next(e for e in second.uow.tool_executions.rows if e.name == "http_get")
    assert execution.approved_by == me.user_id


async def test_approval_reject_feeds_the_reason_to_the_model() -> None:
    agent = build_agent(ScriptedModel(*approval_script()), tools())
    me = make_principal()
    conversation, _ = await stop_for_approval(agent, me)

    stream = await agent.approve(me, conversation.id, [ApprovalDecision("call_get", approve=False, reason="too risky")])
    events = await drain(stream)

    assert ("http_get", {"url": "https://example.com"}) not in agent.tools.runs
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert (result.status, result.error) == ("rejected", "too risky")
    answer = next(m for m in agent.model.calls[1]["messages"] if m.get("tool_call_id") == "call_get")
    assert answer["content"] == "rejected: too risky"
    assert any(e.status is ToolExecutionStatus.REJECTED for e in agent.uow.tool_executions.rows)
    assert events[-1].run.status is RunStatus.COMPLETED  # type: ignore[union-attr]


async def test_an_approved_call_is_refused_if_the_approver_may_not_use_it() -> None:
    agent = build_agent(ScriptedModel(*approval_script()), tools())
    owner = make_principal()
    conversation, _ = await stop_for_approval(agent, owner)
    narrowed = make_principal(allowed_tools=("calculator",), user_id=owner.user_id)

    events = await drain(await agent.approve(narrowed, conversation.id, [ApprovalDecision("call_get", approve=True)]))

    assert ("http_get", {"url": "https://example.com"}) not in agent.tools.runs
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result.error == "you may not use the tool 'http_get'"


# ------------------------------------------------------------------------- cancellation


async def test_cancel_mid_stream_keeps_what_was_produced() -> None:
    model = ScriptedModel(Hang(before=[chunk({"content": "Once upon"})]))
    agent = build_agent(model)
    me = make_principal()
    conversation = await agent.conversation(me)
    stream = await agent.post(me, conversation.id, "tell me a story")

    events = []
    async for event in stream:
        events.append(event)
        if isinstance(event, MessageDelta):
            await agent.cancel(me, conversation.id)

    assert types(events) == ["run.started", "message.delta", "message.completed", "run.completed"]
    partial = events[2]
    assert isinstance(partial, MessageCompleted)
    assert (partial.message.content, partial.message.status) == ("Once upon", MessageStatus.INCOMPLETE)
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.run.status is RunStatus.CANCELLED
    assert agent.uow.runs.rows[final.run.id].status is RunStatus.CANCELLED
    assert model.closed == 1


async def test_cancel_mid_tool_stops_the_tool_and_keeps_the_transcript_valid() -> None:
    model = ScriptedModel(tool_turn(("call_1", "slow", {})), text_turn("Fresh start."))
    agent = build_agent(model, FakeToolRunner(FakeTool("slow", forever)))
    me = make_principal()
    conversation = await agent.conversation(me)
    stream = await agent.post(me, conversation.id, "go")

    async def cancel_once_the_tool_runs() -> None:
        await agent.tools.started.wait()
        await agent.cancel(me, conversation.id)

    canceller = asyncio.ensure_future(cancel_once_the_tool_runs())
    events = await drain(stream)
    await canceller

    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert (result.status, result.error) == ("error", "the run was cancelled before this tool call finished")
    assert events[-1].run.status is RunStatus.CANCELLED  # type: ignore[union-attr]
    tool_message = agent.uow.messages.rows[-1]
    assert (tool_message.tool_call_id, tool_message.status) == ("call_1", MessageStatus.INCOMPLETE)

    # The next run's transcript is valid (the ScriptedModel checks it).
    await drain(await agent.post(me, conversation.id, "again"))
    assert model.calls[1]["messages"][-2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "error: the run was cancelled before this tool call finished",
    }


async def test_consumer_going_away_cancels_and_stores_the_partial_answer() -> None:
    model = ScriptedModel(Hang(before=[chunk({"content": "Partial"})]))
    agent = build_agent(model)
    me = make_principal()
    conversation = await agent.conversation(me)
    stream = await agent.post(me, conversation.id, "go")

    async for event in stream:
        if isinstance(event, MessageDelta):
            break
    await stream.aclose()

    run = agent.uow.runs.rows[stream.run.id]
    assert run.status is RunStatus.CANCELLED
    assert [(m.content, m.status) for m in agent.uow.messages.rows][-1] == ("Partial", MessageStatus.INCOMPLETE)
    assert model.closed == 1


async def test_a_consumer_task_cancelled_mid_tool_cancels_the_run() -> None:
    model = ScriptedModel(tool_turn(("call_1", "slow", {})))
    agent = build_agent(model, FakeToolRunner(FakeTool("slow", forever)))
    me = make_principal()
    conversation = await agent.conversation(me)
    stream = await agent.post(me, conversation.id, "go")

    task = asyncio.ensure_future(drain(stream))
    await agent.tools.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    run = agent.uow.runs.rows[stream.run.id]
    assert run.status is RunStatus.CANCELLED
    last = agent.uow.messages.rows[-1]
    assert (last.tool_call_id, last.status) == ("call_1", MessageStatus.INCOMPLETE)


async def test_an_unread_stream_closed_frees_the_conversation() -> None:
    agent = build_agent(ScriptedModel(text_turn("hi")))
    me = make_principal()
    conversation = await agent.conversation(me)
    stream = await agent.post(me, conversation.id, "go")
    await stream.aclose()
    assert agent.uow.runs.rows[stream.run.id].status is RunStatus.CANCELLED
    assert json.dumps(agent.model.calls) == "[]"
    await drain(await agent.post(me, conversation.id, "again"))


async def test_a_cancellation_from_another_process_stops_a_waiting_run() -> None:
    model = ScriptedModel(Hang(before=[chunk({"content": "Thinking hard"})]))
    here = build_agent(model, limits=AgentLimits(default_model="fake", status_poll_seconds=0.01))
    elsewhere = build_agent(ScriptedModel(), uow=here.uow)  # same database, its own signals
    me = make_principal()
    conversation = await here.conversation(me)
    stream = await here.post(me, conversation.id, "go")

    events = []
    async for event in stream:
        events.append(event)
        if isinstance(event, MessageDelta):
            await elsewhere.cancel(me, conversation.id)

    assert types(events)[-2:] == ["message.completed", "run.completed"]
    assert events[-1].run.status is RunStatus.CANCELLED  # type: ignore[union-attr]
    assert here.uow.messages.rows[-1].status is MessageStatus.INCOMPLETE
    assert model.closed == 1


async def test_an_unexpected_model_failure_does_not_leak_its_details() -> None:
    agent = build_agent(ScriptedModel(Fail(RuntimeError("postgres://admin:secret@db"))))
    me = make_principal()
    conversation = await agent.conversation(me)
    events = await drain(await agent.post(me, conversation.id, "go"))
    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert error.json() == {"error": {"message": "The model call failed.", "code": "upstream_error", "param": None}}
    assert "secret" not in repr([e.json() for e in events])


async def test_an_internal_failure_ends_the_run_failed() -> None:
    class BrokenTools(FakeToolRunner):
        def definitions(self, principal: Any) -> list[dict[str, Any]]:
            raise RuntimeError("registry exploded")

    agent = build_agent(ScriptedModel(text_turn("never")), BrokenTools())
    me = make_principal()
    conversation = await agent.conversation(me)
    events = await drain(await agent.post(me, conversation.id, "go"))

    assert types(events) == ["run.started", "error", "run.completed"]
    assert events[1].json() == {
        "error": {"message": "The run failed unexpectedly.", "code": "internal_error", "param": None}
    }
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.run.status is RunStatus.FAILED
    assert agent.uow.runs.rows[final.run.id].status is RunStatus.FAILED


async def test_a_consumer_task_cancelled_mid_stream_closes_the_model_call() -> None:
    model = ScriptedModel(Hang(before=[chunk({"content": "Some"})]))
    agent = build_agent(model)
    me = make_principal()
    conversation = await agent.conversation(me)
    stream = await agent.post(me, conversation.id, "go")

    task = asyncio.ensure_future(drain(stream))
    await model.hanging.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert model.closed == 1
    assert agent.uow.runs.rows[stream.run.id].status is RunStatus.CANCELLED
    assert (agent.uow.messages.rows[-1].content, agent.uow.messages.rows[-1].status) == (
        "Some",
        MessageStatus.INCOMPLETE,
    )


async def test_collect_is_the_non_streaming_answer() -> None:
    model = ScriptedModel(tool_turn(("call_1", "calculator", {"a": 2, "b": 2})), text_turn("4"))
    agent = build_agent(model, tools())
    me = make_principal()
    conversation = await agent.conversation(me)

    result = await (await agent.post(me, conversation.id, "2+2")).collect()

    assert result.run.status is RunStatus.COMPLETED
    assert [(m.role.value, m.content) for m in result.messages] == [
        ("user", "2+2"),
        ("assistant", None),
        ("tool", "4"),
        ("assistant", "4"),
    ]
    assert [m.id for m in result.messages] == [m.id for m in agent.uow.messages.rows]


# ------------------------------------------------------------------------- the database going away mid-run


def outage_agent(settle_seconds: float = 300.0) -> Any:
    """A run whose tool takes the database away: storing the tool result, then the run's end, fails."""
    holder: dict[str, Any] = {}

    async def cut(arguments: dict[str, Any]) -> Any:
        holder["agent"].uow.unavailable = True
        return "done"

    model = ScriptedModel(tool_turn(("call_1", "cut", {})), text_turn("never"))
    limits = AgentLimits(default_model="fake", settle_seconds=settle_seconds, status_poll_seconds=0)
    agent = build_agent(model, FakeToolRunner(FakeTool("cut", cut)), limits=limits)
    holder["agent"] = agent
    return agent


async def test_a_run_whose_end_the_database_refused_is_ended_once_it_is_back() -> None:
    """Regression: the run stayed ``running`` with no driver (its conversation blocked, 409
    run_in_progress) until a restart's sweep, after a database outage mid-run."""
    agent = outage_agent()
    me = make_principal()
    conversation = await agent.conversation(me)

    events = await drain(await agent.post(me, conversation.id, "go"))

    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert error.error is not None
    assert error.error.code == "database_unavailable"
    assert events[-1].run.status is RunStatus.FAILED  # type: ignore[union-attr]
    [stored] = agent.uow.runs.rows.values()
    assert stored.status is RunStatus.RUNNING  # not stored yet: the database is down
    assert agent.loop.settling == 1

    agent.uow.unavailable = False
    for _ in range(100):
        if agent.loop.settling == 0:
            break
        await asyncio.sleep(0.05)
    [stored] = agent.uow.runs.rows.values()
    assert stored.status is RunStatus.FAILED
    assert stored.error is not None
    assert stored.error.code == "database_unavailable"
    # the conversation is free again
    agent.model.turns.append(text_turn("back"))
    again = await drain(await agent.post(me, conversation.id, "again"))
    assert again[-1].run.status is RunStatus.COMPLETED  # type: ignore[union-attr]


async def test_retrying_a_runs_end_gives_up_after_settle_seconds_and_aclose_stops_it() -> None:
    agent = outage_agent(settle_seconds=0.3)
    me = make_principal()
    conversation = await agent.conversation(me)
    await drain(await agent.post(me, conversation.id, "go"))
    assert agent.loop.settling == 1
    await asyncio.sleep(1.0)  # 0.2 + 0.4 (> 0.3 s): given up, left to the start-up sweep
    assert agent.loop.settling == 0
    assert next(iter(agent.uow.runs.rows.values())).status is RunStatus.RUNNING

    other = outage_agent()
    conversation = await other.conversation(me)
    await drain(await other.post(me, conversation.id, "go"))
    assert other.loop.settling == 1
    await other.loop.aclose()
    assert other.loop.settling == 0
