"""Builds the agent's use cases over fakes, the way the composition root will over adapters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from app.application.agent.conversations import (
    CreateConversation,
    DeleteConversation,
    GetConversation,
    ListConversations,
    ListMessages,
    UpdateConversation,
)
from app.application.agent.events import AgentEvent
from app.application.agent.loop import AgentLoop
from app.application.agent.ports import AgentLimits, RunSignals
from app.application.agent.runs import CancelRun, PostMessage, RunStream, SubmitApprovals
from app.application.ports import UnitOfWork
from app.application.tools import ToolRunObserver
from app.domain.agent import Conversation
from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role
from tests.fakes import FakeClock, FakeUnitOfWork
from tests.fakes_agent import FakeToolRunner, ScriptedModel


def make_principal(allowed_tools: tuple[str, ...] | None = None, user_id: uuid.UUID | None = None) -> Principal:
    return Principal(
        user_id=user_id or uuid.uuid4(),
        email="someone@example.com",
        role=Role.USER,
        credential=CredentialKind.JWT,
        allowed_tools=allowed_tools,
    )


@dataclass
class Agent:
    uow: FakeUnitOfWork
    model: ScriptedModel
    tools: FakeToolRunner
    clock: FakeClock
    signals: RunSignals
    loop: AgentLoop
    create: CreateConversation
    list: ListConversations
    get: GetConversation
    update: UpdateConversation
    delete: DeleteConversation
    messages: ListMessages
    post: PostMessage
    approve: SubmitApprovals
    cancel: CancelRun

    async def conversation(self, principal: Principal, **kwargs: Any) -> Conversation:
        return await self.create(principal, **kwargs)


def build_agent(
    model: ScriptedModel,
    tools: FakeToolRunner | None = None,
    *,
    uow: FakeUnitOfWork | None = None,
    limits: AgentLimits | None = None,
    observer: ToolRunObserver | None = None,
) -> Agent:
    """`uow` shared between two builds stands for one database seen by two processes."""
    uow = uow or FakeUnitOfWork()
    tools = tools or FakeToolRunner()
    clock = FakeClock()
    signals = RunSignals()

    def factory() -> UnitOfWork:
        clock.advance(0.001)  # distinct, increasing timestamps
        return uow  # type: ignore[return-value] # the fake's repositories are concrete (tests inspect them)

    limits = limits or AgentLimits(default_model="fake")
    loop = AgentLoop(factory, model, tools, signals, clock, limits=limits, observer=observer)
    return Agent(
        uow=uow,
        model=model,
        tools=tools,
        clock=clock,
        signals=signals,
        loop=loop,
        create=CreateConversation(factory, tools, clock),
        list=ListConversations(factory),
        get=GetConversation(factory),
        update=UpdateConversation(factory, clock),
        delete=DeleteConversation(factory),
        messages=ListMessages(factory),
        post=PostMessage(factory, loop, model, clock),
        approve=SubmitApprovals(factory, loop, clock),
        cancel=CancelRun(factory, signals, clock),
    )


async def drain(stream: RunStream) -> list[AgentEvent]:
    return [event async for event in stream]


def types(events: list[AgentEvent]) -> list[str]:
    return [event.type for event in events]
