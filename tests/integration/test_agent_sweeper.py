"""Runs left `running` by a dead process: the live driver's heartbeat, and the start-up sweep
that ends only runs whose heartbeat stopped (never a live run, never one awaiting approval)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient

from app.application.agent.conversations import CreateConversation
from app.application.agent.loop import AgentLoop
from app.application.agent.ports import AgentLimits, RunSignals
from app.application.agent.runs import PostMessage
from app.application.agent.sweeper import SweepInterruptedRuns
from app.bootstrap import build_container
from app.config import Settings
from app.domain.agent import Conversation, Run, RunStatus
from app.infrastructure.container import Container
from tests.conftest import AppFactory
from tests.fakes_agent import FakeToolRunner, Hang, ScriptedModel, text_turn
from tests.integration.test_agent_persistence import UtcClock, new_user


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    built = build_container(settings)
    yield built
    await built.aclose()


async def stored_run(container: Container, user_id: uuid.UUID, status: RunStatus, age: timedelta) -> Run:
    when = datetime.now(UTC) - age
    conversation = Conversation(uuid.uuid4(), user_id, "t", None, None, None, {}, False, when, when)
    run = Run(uuid.uuid4(), conversation.id, user_id, "fake", status, 8, when, when)
    async with container.unit_of_work() as uow:
        await uow.conversations.add(conversation)
        await uow.runs.add(run)
        await uow.commit()
    return run


async def status_of(container: Container, run_id: uuid.UUID) -> Run:
    async with container.unit_of_work() as uow:
        run = await uow.runs.get(run_id)
    assert run is not None
    return run


async def test_start_up_ends_only_runs_whose_heartbeat_stopped(
    container: Container, settings: Settings, app_factory: AppFactory
) -> None:
    me = await new_user(container)
    dead = await stored_run(container, me.user_id, RunStatus.RUNNING, timedelta(minutes=10))
    alive = await stored_run(container, me.user_id, RunStatus.RUNNING, timedelta(seconds=3))
    waiting = await stored_run(container, me.user_id, RunStatus.REQUIRES_APPROVAL, timedelta(hours=5))

    async with AsyncTestClient(app=app_factory(settings)):  # start-up runs the sweep
        pass

    swept = await status_of(container, dead.id)
    assert swept.status is RunStatus.FAILED
    assert swept.error is not None
    assert swept.error.code == "interrupted"
    assert swept.completed_at is not None
    assert (await status_of(container, alive.id)).status is RunStatus.RUNNING
    assert (await status_of(container, waiting.id)).status is RunStatus.REQUIRES_APPROVAL
    # The conversation of the swept run is free again (one active run per conversation).
    async with container.unit_of_work() as uow:
        assert await uow.runs.get_active(dead.conversation_id) is None


async def test_a_live_run_keeps_its_heartbeat_fresh_and_is_never_swept(container: Container) -> None:
    me = await new_user(container)
    model = ScriptedModel(Hang(before=text_turn("thinking")[:2]))
    clock, signals = UtcClock(), RunSignals()
    limits = AgentLimits(default_model="fake", status_poll_seconds=0.05)
    loop = AgentLoop(container.unit_of_work, model, FakeToolRunner(), signals, clock, limits=limits)
    conversation = await CreateConversation(container.unit_of_work, FakeToolRunner(), clock)(me)
    stream = await PostMessage(container.unit_of_work, loop, model, clock)(me, conversation.id, "go")
    consumer = asyncio.ensure_future(stream.collect())
    await asyncio.wait_for(model.hanging.wait(), timeout=5)

    first = (await status_of(container, stream.run.id)).updated_at
    await asyncio.sleep(0.3)
    second = (await status_of(container, stream.run.id)).updated_at
    assert second > first, "the heartbeat did not advance while the run was driven"

    # A sweep with a threshold far above the heartbeat interval leaves it alone.
    swept = await SweepInterruptedRuns(container.unit_of_work, clock, stale_after_seconds=10)()
    assert stream.run.id not in swept
    assert (await status_of(container, stream.run.id)).status is RunStatus.RUNNING

    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
