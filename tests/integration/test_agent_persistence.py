"""The agent on real Postgres: repositories, the one-active-run rule under concurrency,
concurrent approvals (exactly one wins), and approval resumption from the database alone
(a second, fresh container: new engine, new loop, nothing shared in memory)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from app.application.agent.conversations import CreateConversation, ListConversations, ListMessages
from app.application.agent.events import AgentEvent, RunCompleted
from app.application.agent.loop import AgentLoop
from app.application.agent.ports import AgentLimits, RunSignals
from app.application.agent.runs import ApprovalDecision, CancelRun, PostMessage, SubmitApprovals
from app.bootstrap import build_container
from app.config import Settings
from app.domain.agent import (
    Conversation,
    ConversationKey,
    Message,
    MessageRole,
    MessageStatus,
    Run,
    RunStatus,
    ToolCall,
    ToolExecution,
    ToolExecutionStatus,
)
from app.domain.errors import Conflict
from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role, User
from app.infrastructure.container import Container
from tests.fakes_agent import FakeTool, FakeToolRunner, Hang, ScriptedModel, text_turn, tool_turn


class UtcClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    built = build_container(settings)
    yield built
    await built.aclose()


async def new_user(container: Container) -> Principal:
    now = datetime.now(UTC)
    user = User(uuid.uuid4(), f"{uuid.uuid4().hex[:10]}@example.com", None, Role.USER, True, "x", now, now)
    async with container.unit_of_work() as uow:
        await uow.users.add(user)
        await uow.commit()
    return Principal(user_id=user.id, email=user.email, role=Role.USER, credential=CredentialKind.JWT)


@dataclass
class Process:
    """What one server process would build over a container."""

    loop: AgentLoop
    create: CreateConversation
    post: PostMessage
    approve: SubmitApprovals
    cancel: CancelRun
    tools: FakeToolRunner


def process(container: Container, model: ScriptedModel, tools: FakeToolRunner) -> Process:
    clock, signals = UtcClock(), RunSignals()
    loop = AgentLoop(container.unit_of_work, model, tools, signals, clock, limits=AgentLimits(default_model="fake"))
    return Process(
        loop=loop,
        create=CreateConversation(container.unit_of_work, tools, clock),
        post=PostMessage(container.unit_of_work, loop, model, clock),
        approve=SubmitApprovals(container.unit_of_work, loop, clock),
        cancel=CancelRun(container.unit_of_work, signals, clock),
        tools=tools,
    )


async def fetch(arguments: dict[str, Any]) -> Any:
    return {"fetched": arguments["url"]}


def gated_tools() -> FakeToolRunner:
    return FakeToolRunner(FakeTool("http_get", fetch, requires_approval=True))


async def drain(stream: AsyncIterable[AgentEvent]) -> list[AgentEvent]:
    return [event async for event in stream]


async def test_repositories_round_trip(container: Container) -> None:
    me = await new_user(container)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    conversations = [
        Conversation(uuid.uuid4(), me.user_id, f"c{i}", None, None, ["calculator"] if i else None, {"i": i}, i == 1,
                     base + timedelta(minutes=i), base)
        for i in range(4)
    ]  # fmt: skip
    run = Run(uuid.uuid4(), conversations[0].id, me.user_id, "fake", RunStatus.RUNNING, 8, base, base)
    async with container.unit_of_work() as uow:
        for conversation in conversations:
            await uow.conversations.add(conversation)
        await uow.runs.add(run)
        for i in range(5):
            calls = [ToolCall("call_1", "calculator", '{"a": 1}')] if i == 1 else None
            await uow.messages.add(
                Message(uuid.uuid4(), conversations[0].id, MessageRole.USER if i != 1 else MessageRole.ASSISTANT,
                        f"m{i}", MessageStatus.COMPLETE, base, run.id, calls)
            )  # fmt: skip
        await uow.tool_executions.add(
            ToolExecution(uuid.uuid4(), me.user_id, "calculator", {"a": 1}, ToolExecutionStatus.SUCCESS, 2, None, 3,
                          base, run.id, conversations[0].id, "call_1")
        )  # fmt: skip
        await uow.commit()

    async with container.unit_of_work() as uow:
        newest = await uow.conversations.list_for_user(me.user_id, archived=None, limit=2, after=None)
        assert [c.title for c in newest] == ["c3", "c2"]
        key = ConversationKey(newest[-1].created_at, newest[-1].id)
        older = await uow.conversations.list_for_user(me.user_id, archived=None, limit=5, after=key)
        assert [c.title for c in older] == ["c1", "c0"]
        archived = await uow.conversations.list_for_user(me.user_id, archived=True, limit=5, after=None)
        assert [c.title for c in archived] == ["c1"]
        assert (await uow.conversations.get(conversations[2].id)) == conversations[2]

        messages = await uow.messages.list_for_conversation(conversations[0].id)
        assert [m.content for m in messages] == ["m0", "m1", "m2", "m3", "m4"]
        assert messages[1].tool_calls == [ToolCall("call_1", "calculator", '{"a": 1}')]
        page = await uow.messages.list_for_conversation(conversations[0].id, limit=2, after=messages[1].id)
        assert [m.content for m in page] == ["m2", "m3"]

        [execution] = await uow.tool_executions.list_for_run(run.id)
        assert (execution.arguments, execution.output, execution.status) == ({"a": 1}, 2, ToolExecutionStatus.SUCCESS)
        listed = await uow.tool_executions.list_for_user(me.user_id, conversation_id=None, limit=10, after=None)
        assert [e.id for e in listed] == [execution.id]

        stored = await uow.runs.get_active(conversations[0].id)
        assert stored is not None
        assert stored.id == run.id
        stored.status = RunStatus.COMPLETED
        assert await uow.runs.save(stored, expected={RunStatus.REQUIRES_APPROVAL}) is False
        assert await uow.runs.save(stored, expected={RunStatus.RUNNING}) is True
        await uow.commit()

    async with container.unit_of_work() as uow:
        assert await uow.runs.get_active(conversations[0].id) is None
        await uow.conversations.delete(conversations[0].id)
        await uow.commit()
    async with container.unit_of_work() as uow:
        assert await uow.messages.list_for_conversation(conversations[0].id) == []
        assert await uow.runs.get(run.id) is None
        # The audit trail outlives the conversation.
        [kept] = await uow.tool_executions.list_for_user(me.user_id, conversation_id=None, limit=10, after=None)
        assert (kept.conversation_id, kept.run_id) == (None, None)


async def test_one_active_run_per_conversation_under_concurrency(container: Container) -> None:
    me = await new_user(container)
    node = process(container, ScriptedModel(*[Hang() for _ in range(8)]), FakeToolRunner())
    conversation = await node.create(me)

    outcomes = await asyncio.gather(
        *(node.post(me, conversation.id, f"message {i}") for i in range(8)), return_exceptions=True
    )

    started = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(started) == 1
    assert all(isinstance(o, Conflict) and o.code == "run_in_progress" for o in refused), refused
    async with container.unit_of_work() as uow:
        count = await uow.session.execute(
            text("SELECT count(*) FROM runs WHERE conversation_id = :c AND status IN ('running', 'requires_approval')"),
            {"c": conversation.id},
        )
        assert count.scalar_one() == 1
        # Only the winner's message was stored: a refused post leaves nothing behind.
        assert len(await uow.messages.list_for_conversation(conversation.id)) == 1
    await started[0].aclose()


async def test_the_index_itself_refuses_a_second_active_run(container: Container) -> None:
    me = await new_user(container)
    node = process(container, ScriptedModel(), FakeToolRunner())
    conversation = await node.create(me)
    now = datetime.now(UTC)
    first = Run(uuid.uuid4(), conversation.id, me.user_id, "fake", RunStatus.REQUIRES_APPROVAL, 8, now, now)
    second = Run(uuid.uuid4(), conversation.id, me.user_id, "fake", RunStatus.RUNNING, 8, now, now)
    async with container.unit_of_work() as uow:
        await uow.runs.add(first)
        await uow.commit()
    with pytest.raises(Conflict) as refused:
        async with container.unit_of_work() as uow:
            await uow.runs.add(second)
    assert refused.value.code == "run_in_progress"


async def stop_for_approval(node: Process, me: Principal) -> tuple[Conversation, Run]:
    conversation = await node.create(me)
    events = await drain(await node.post(me, conversation.id, "fetch it"))
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.run.status is RunStatus.REQUIRES_APPROVAL
    return conversation, final.run


async def test_concurrent_approvals_exactly_one_wins(container: Container) -> None:
    me = await new_user(container)
    model = ScriptedModel(tool_turn(("call_1", "http_get", {"url": "https://example.com"})), text_turn("Here."))
    node = process(container, model, gated_tools())
    conversation, _ = await stop_for_approval(node, me)
    decision = [ApprovalDecision("call_1", approve=True)]

    outcomes = await asyncio.gather(
        *(node.approve(me, conversation.id, decision) for _ in range(4)), return_exceptions=True
    )

    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(o, Conflict) and o.code == "not_pending_approval" for o in losers), losers
    events = await drain(winners[0])
    assert events[-1].run.status is RunStatus.COMPLETED  # type: ignore[union-attr]
    assert node.tools.runs == [("http_get", {"url": "https://example.com"})]


async def test_approval_resumes_from_the_database_in_a_fresh_container(settings: Settings) -> None:
    # Process one: the run stops for approval; then the process is gone.
    first_container = build_container(settings)
    me = await new_user(first_container)
    first = process(
        first_container, ScriptedModel(tool_turn(("call_1", "http_get", {"url": "https://example.com"}))), gated_tools()
    )
    conversation, stopped = await stop_for_approval(first, me)
    await first_container.aclose()
    del first

    # Process two: a fresh container, loop, model and tools; nothing shared but the database.
    second_container = build_container(settings)
    try:
        second = process(second_container, ScriptedModel(text_turn("Fetched it.")), gated_tools())
        stream = await second.approve(me, conversation.id, [ApprovalDecision("call_1", approve=True)])
        events = await drain(stream)

        final = events[-1]
        assert isinstance(final, RunCompleted)
        assert (final.run.id, final.run.status, final.run.iterations) == (stopped.id, RunStatus.COMPLETED, 2)
        assert second.tools.runs == [("http_get", {"url": "https://example.com"})]
        page = await ListMessages(second_container.unit_of_work)(me, conversation.id, limit=100)
        assert [(m.role.value, m.status.value) for m in page.items] == [
            ("user", "complete"),
            ("assistant", "complete"),
            ("tool", "complete"),
            ("assistant", "complete"),
        ]
        assert page.items[2].content == '{"fetched": "https://example.com"}'
        async with second_container.unit_of_work() as uow:
            [execution] = await uow.tool_executions.list_for_run(stopped.id)
            stored = await uow.runs.get(stopped.id)
        assert (execution.status, execution.approved_by) == (ToolExecutionStatus.SUCCESS, me.user_id)
        assert stored is not None
        assert stored.status is RunStatus.COMPLETED
        assert stored.pending_approvals == []
        listed = await ListConversations(second_container.unit_of_work)(me)
        assert [c.id for c in listed.items] == [conversation.id]
    finally:
        await second_container.aclose()


async def test_every_step_is_committed_as_it_happens(container: Container) -> None:
    """While the model is still streaming, the user message and the running run are visible
    to any other connection (so nothing waits on an open transaction)."""
    me = await new_user(container)
    model = ScriptedModel(Hang())
    node = process(container, model, FakeToolRunner())
    conversation = await node.create(me)
    stream = await node.post(me, conversation.id, "hello")
    iterator = aiter(stream)
    await anext(iterator)  # run.started
    reading = asyncio.ensure_future(anext(iterator))
    await model.hanging.wait()

    async with container.unit_of_work() as uow:
        [message] = await uow.messages.list_for_conversation(conversation.id)
        active = await uow.runs.get_active(conversation.id)
    assert message.content == "hello"
    assert active is not None
    assert (active.status, active.iterations) == (RunStatus.RUNNING, 1)
    assert container.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    cancelled = await node.cancel(me, conversation.id)
    assert cancelled.status is RunStatus.CANCELLED
    rest = [await reading, *[event async for event in iterator]]
    assert rest[-1].run.status is RunStatus.CANCELLED  # type: ignore[union-attr]


async def test_a_client_going_away_mid_stream_is_stored_as_cancelled(container: Container) -> None:
    me = await new_user(container)
    model = ScriptedModel(Hang(before=text_turn("Half")[:2]))
    node = process(container, model, FakeToolRunner())
    conversation = await node.create(me)
    stream = await node.post(me, conversation.id, "go")

    async for event in stream:
        if event.type == "message.delta":
            break
    await stream.aclose()

    async with container.unit_of_work() as uow:
        run = await uow.runs.get(stream.run.id)
        messages = await uow.messages.list_for_conversation(conversation.id)
    assert run is not None
    assert run.status is RunStatus.CANCELLED
    assert [(m.content, m.status) for m in messages] == [
        ("go", MessageStatus.COMPLETE),
        ("Half", MessageStatus.INCOMPLETE),
    ]
    assert model.closed == 1
    # The conversation is free again.
    again = await process(container, ScriptedModel(text_turn("ok")), FakeToolRunner()).post(
        me, conversation.id, "again"
    )
    assert (await again.collect()).run.status is RunStatus.COMPLETED


async def test_nul_characters_from_a_model_or_a_tool_do_not_break_storage(container: Container) -> None:
    async def nul(arguments: dict[str, Any]) -> Any:
        return {"text": "a\x00b"}

    me = await new_user(container)
    model = ScriptedModel(tool_turn(("call_1", "nul", {"q": "x\u0000y"})), text_turn("bad\x00byte"))
    node = process(container, model, FakeToolRunner(FakeTool("nul", nul)))
    conversation = await node.create(me)

    result = await (await node.post(me, conversation.id, "go")).collect()

    assert result.run.status is RunStatus.COMPLETED
    async with container.unit_of_work() as uow:
        stored = await uow.messages.list_for_conversation(conversation.id)
        [execution] = await uow.tool_executions.list_for_run(result.run.id)
    assert stored[-1].content == "badbyte"
    assert execution.output == {"text": "ab"}
