"""Conversations, messages and run use cases over fakes: ownership, validation, pagination,
the one-active-run rule, approval conflicts; and the transcript builder's guarantees."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from app.application.agent.executions import ListToolExecutions
from app.application.agent.runs import ApprovalDecision
from app.application.agent.transcript import UNANSWERED, TurnAccumulator, model_messages
from app.domain.agent import Message, MessageRole, MessageStatus, RunStatus, ToolCall
from app.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.fakes_agent import FakeTool, FakeToolRunner, Hang, ScriptedModel, check_transcript, text_turn, tool_turn
from tests.unit.agent_harness import build_agent, drain, make_principal


async def echo(arguments: dict[str, object]) -> object:
    return arguments


def gated_tools() -> FakeToolRunner:
    return FakeToolRunner(FakeTool("calculator", echo), FakeTool("http_get", echo, requires_approval=True))


async def test_conversations_belong_to_their_owner() -> None:
    agent = build_agent(ScriptedModel())
    me, other = make_principal(), make_principal()
    conversation = await agent.conversation(me, title="  Mine  ", metadata={"k": "v"})
    assert conversation.title == "Mine"
    assert (await agent.get(me, conversation.id)).metadata == {"k": "v"}
    for attempt in (
        agent.get(other, conversation.id),
        agent.update(other, conversation.id, title="x"),
        agent.delete(other, conversation.id),
        agent.messages(other, conversation.id),
        agent.post(other, conversation.id, "hi"),
        agent.cancel(other, conversation.id),
        agent.approve(other, conversation.id, []),
    ):
        with pytest.raises(NotFound):
            await attempt
    with pytest.raises(NotFound):
        await agent.get(me, uuid.uuid4())


async def test_create_validates_tools_model_and_sizes() -> None:
    agent = build_agent(ScriptedModel(), gated_tools())
    limited = make_principal(allowed_tools=("calculator",))
    with pytest.raises(Forbidden) as refused:
        await agent.create(limited, tools=["http_get"])
    assert refused.value.code == "tool_not_allowed"
    with pytest.raises(InvalidInput) as unknown:
        await agent.create(make_principal(), tools=["calculator", "teleport"])
    assert unknown.value.param == "tools"
    with pytest.raises(InvalidInput):
        await agent.create(limited, title="x" * 201)
    assert (await agent.create(limited, tools=["calculator", "calculator"])).tools == ["calculator"]


async def test_list_newest_first_with_cursor_and_status() -> None:
    agent = build_agent(ScriptedModel())
    me = make_principal()
    made = [await agent.conversation(me, title=str(i)) for i in range(5)]
    await agent.update(me, made[1].id, archived=True)
    await agent.conversation(make_principal())  # someone else's

    first = await agent.list(me, limit=2)
    assert [c.title for c in first.items] == ["4", "3"]
    assert first.next_cursor is not None
    second = await agent.list(me, limit=2, cursor=first.next_cursor)
    assert [c.title for c in second.items] == ["2", "1"]
    third = await agent.list(me, limit=2, cursor=second.next_cursor)
    assert [c.title for c in third.items] == ["0"]
    assert third.next_cursor is None
    assert [c.title for c in (await agent.list(me, status="archived")).items] == ["1"]
    assert [c.title for c in (await agent.list(me, status="active")).items] == ["4", "3", "2", "0"]
    with pytest.raises(InvalidInput):
        await agent.list(me, status="deleted")
    with pytest.raises(InvalidInput):
        await agent.list(me, cursor="garbage!")
    with pytest.raises(InvalidInput):
        await agent.list(me, limit=101)


async def test_messages_oldest_first_with_cursor() -> None:
    agent = build_agent(ScriptedModel(text_turn("one"), text_turn("two")))
    me = make_principal()
    conversation = await agent.conversation(me)
    await drain(await agent.post(me, conversation.id, "first"))
    await drain(await agent.post(me, conversation.id, "second"))

    page = await agent.messages(me, conversation.id, limit=3)
    assert [m.content for m in page.items] == ["first", "one", "second"]
    rest = await agent.messages(me, conversation.id, limit=3, cursor=page.next_cursor)
    assert [m.content for m in rest.items] == ["two"]
    assert rest.next_cursor is None


async def test_posting_while_a_run_is_active_is_a_conflict() -> None:
    agent = build_agent(ScriptedModel(Hang()))
    me = make_principal()
    conversation = await agent.conversation(me)
    stream = await agent.post(me, conversation.id, "first")
    with pytest.raises(Conflict) as busy:
        await agent.post(me, conversation.id, "second")
    assert busy.value.code == "run_in_progress"
    with pytest.raises(Conflict):
        await agent.delete(me, conversation.id)
    await stream.aclose()
    assert [m.content for m in agent.uow.messages.rows] == ["first"]


async def test_post_validates_input_and_model() -> None:
    agent = build_agent(ScriptedModel())
    me = make_principal()
    conversation = await agent.conversation(me)
    with pytest.raises(InvalidInput):
        await agent.post(me, conversation.id, "   ")
    with pytest.raises(InvalidInput):
        await agent.post(me, conversation.id, "hi", max_iterations=0)
    with pytest.raises(NotFound):
        await agent.post(me, conversation.id, "hi", model="no-such-model")
    restricted = dataclasses.replace(me, allowed_models=())
    with pytest.raises(Forbidden):
        await agent.post(restricted, conversation.id, "hi")
    assert agent.uow.runs.rows == {}


async def test_approvals_need_a_pending_run_and_a_decision_for_each_call() -> None:
    script = tool_turn(("call_1", "http_get", {"u": 1}), ("call_2", "http_get", {"u": 2}))
    agent = build_agent(ScriptedModel(script, text_turn("ok")), gated_tools())
    me = make_principal()
    conversation = await agent.conversation(me)
    with pytest.raises(Conflict) as nothing:
        await agent.approve(me, conversation.id, [ApprovalDecision("call_1", approve=True)])
    assert nothing.value.code == "not_pending_approval"

    await drain(await agent.post(me, conversation.id, "go"))
    with pytest.raises(InvalidInput):
        await agent.approve(me, conversation.id, [ApprovalDecision("call_1", approve=True)])
    with pytest.raises(InvalidInput):
        await agent.approve(me, conversation.id, [ApprovalDecision("call_9", approve=True)])
    decisions = [ApprovalDecision("call_1", approve=True), ApprovalDecision("call_2", approve=False)]

    first, second = await asyncio.gather(
        agent.approve(me, conversation.id, decisions),
        agent.approve(me, conversation.id, decisions),
        return_exceptions=True,
    )
    winners = [r for r in (first, second) if not isinstance(r, BaseException)]
    losers = [r for r in (first, second) if isinstance(r, Conflict)]
    assert len(winners) == 1
    assert [loser.code for loser in losers] == ["not_pending_approval"]
    await drain(winners[0])
    assert agent.tools.runs == [("http_get", {"u": 1})]


async def test_cancel_while_waiting_for_approval_answers_the_pending_calls() -> None:
    agent = build_agent(ScriptedModel(tool_turn(("call_1", "http_get", {})), text_turn("next")), gated_tools())
    me = make_principal()
    conversation = await agent.conversation(me)
    await drain(await agent.post(me, conversation.id, "go"))

    run = await agent.cancel(me, conversation.id)

    assert run.status is RunStatus.CANCELLED
    with pytest.raises(Conflict) as none:
        await agent.cancel(me, conversation.id)
    assert none.value.code == "no_active_run"
    await drain(await agent.post(me, conversation.id, "again"))  # transcript checked by the model
    assert agent.model.calls[1]["messages"][2]["content"].startswith("error: the run was cancelled")


def _message(role: MessageRole, **kwargs: object) -> Message:
    return Message(
        id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        role=role,
        status=MessageStatus.COMPLETE,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        content=kwargs.pop("content", None),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def test_transcript_is_valid_whatever_the_history_holds() -> None:
    calls = [ToolCall("a", "t", "{}"), ToolCall("b", "t", "{}")]
    history = [
        _message(MessageRole.USER, content="hi"),
        _message(MessageRole.TOOL, content="orphan", tool_call_id="zzz"),
        _message(MessageRole.ASSISTANT, tool_calls=calls),
        _message(MessageRole.TOOL, content="B", tool_call_id="b"),  # out of order
        _message(MessageRole.TOOL, content="B again", tool_call_id="b"),  # duplicate
        # no answer for "a": the process died
        _message(MessageRole.ASSISTANT, content=None),  # empty: dropped
        _message(MessageRole.USER, content="still there?"),
        _message(MessageRole.ASSISTANT, tool_calls=[ToolCall("a", "t", "{}")]),  # a reused id
    ]
    messages = model_messages("sys", history)
    check_transcript(messages)
    assert [(m["role"], m.get("tool_call_id"), m.get("content")) for m in messages] == [
        ("system", None, "sys"),
        ("user", None, "hi"),
        ("assistant", None, None),
        ("tool", "a", UNANSWERED),
        ("tool", "b", "B"),
        ("user", None, "still there?"),
    ]


def test_turn_accumulator_survives_server_quirks() -> None:
    turn = TurnAccumulator()
    # id and name repeated in every delta; no usage; a second call without an id.
    for piece in ('{"a"', ": 1}"):
        turn.feed(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {"index": 0, "id": "call_x", "function": {"name": "calc", "arguments": piece}}
                            ]
                        },
                    }
                ]
            }
        )
    turn.feed({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"name": "calc"}}]}}]})
    turn.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    calls = turn.tool_calls()
    assert [(c.id, c.name, c.arguments) for c in calls[:1]] == [("call_x", "calc", '{"a": 1}')]
    assert calls[1].id.startswith("call_")
    assert calls[1].id != "call_x"
    assert turn.finish_reason == "tool_calls"
    assert turn.usage_or_estimate([{"role": "user", "content": "x" * 40}]).prompt_tokens == 10


async def test_tool_execution_history_is_the_callers_newest_first() -> None:
    script = [tool_turn((f"call_{i}", "calculator", {"i": i})) for i in range(3)] + [text_turn("done")]
    agent = build_agent(ScriptedModel(*script), gated_tools())
    me = make_principal()
    conversation = await agent.conversation(me)
    await drain(await agent.post(me, conversation.id, "go"))
    history = ListToolExecutions(lambda: agent.uow)  # type: ignore[arg-type]

    first = await history(me, limit=2)
    rest = await history(me, limit=2, cursor=first.next_cursor)

    assert [e.tool_call_id for e in first.items + rest.items] == ["call_2", "call_1", "call_0"]
    assert rest.next_cursor is None
    assert (await history(make_principal())).items == []
    assert len((await history(me, conversation_id=conversation.id, limit=10)).items) == 3
