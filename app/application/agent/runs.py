"""Use cases that start, resume and stop runs of the agent loop.

`PostMessage` and `SubmitApprovals` do their checks and the run's state change in one short
unit of work *before* returning (so a 404 / 409 is an ordinary error response), then hand
back a `RunStream`: the loop's events, to be read by one of the renderings (SSE, WebSocket,
non-streaming `collect()`). Whoever gets a `RunStream` must read it or `aclose()` it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

from app.application.agent.conversations import owned_conversation
from app.application.agent.events import AgentEvent, MessageCompleted, RunCompleted
from app.application.agent.loop import AgentLoop, Decision, RunContext
from app.application.agent.ports import AgentModel, IdFactory, RunSignals
from app.application.ports import AgentUnitOfWorkFactory, Clock
from app.domain.agent import (
    ACTIVE_RUN_STATUSES,
    MAX_MESSAGE_LENGTH,
    Message,
    MessageRole,
    MessageStatus,
    Run,
    RunStatus,
    RunUsage,
    ensure_no_active_run,
)
from app.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.domain.principal import Principal


@dataclass(frozen=True, slots=True)
class RunResult:
    """A run read to its end: the final run and the messages it stored (the user's first)."""

    run: Run
    messages: list[Message]


class RunStream:
    """The events of one run (or resumption), read once."""

    def __init__(self, loop: AgentLoop, ctx: RunContext, user_message: Message | None, decisions: Sequence[Decision]):
        self.run = ctx.run
        self.user_message = user_message
        self._loop, self._ctx = loop, ctx
        self._events: AsyncGenerator[AgentEvent, None] = loop.drive(ctx, decisions)
        self._started = False

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        self._started = True
        return self._events

    async def aclose(self) -> None:
        """Stop reading: a started run is cancelled keeping what it produced; an unread one is
        ended ``cancelled``."""
        if self._started:
            await self._events.aclose()
        else:
            self._started = True
            await self._events.aclose()
            await self._loop.cancel_unstarted(self._ctx)

    async def collect(self) -> RunResult:
        """The non-streaming rendering: read every event, return the run and the new messages."""
        messages = [self.user_message] if self.user_message is not None else []
        run = self.run
        try:
            async for event in self:
                if isinstance(event, MessageCompleted):
                    messages.append(event.message)
                elif isinstance(event, RunCompleted):
                    run = event.run
        finally:
            await self._events.aclose()
        return RunResult(run, messages)


class PostMessage:
    """Store the user's message and start a run (409 ``run_in_progress`` if one is active)."""

    def __init__(
        self,
        uow: AgentUnitOfWorkFactory,
        loop: AgentLoop,
        model: AgentModel,
        clock: Clock,
        new_id: IdFactory = uuid.uuid4,
    ) -> None:
        self._uow, self._loop, self._model, self._clock, self._new_id = uow, loop, model, clock, new_id

    async def __call__(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        content: str,
        *,
        model: str | None = None,
        max_iterations: int | None = None,
    ) -> RunStream:
        limits = self._loop.limits
        if not isinstance(content, str) or not content.strip():
            raise InvalidInput("content must be a non-empty string.", param="content")
        if len(content) > MAX_MESSAGE_LENGTH:
            raise InvalidInput(f"content must be at most {MAX_MESSAGE_LENGTH} characters.", param="content")
        iterations = limits.default_max_iterations if max_iterations is None else max_iterations
        if not 1 <= iterations <= limits.max_iterations_limit:
            raise InvalidInput(
                f"max_iterations must be between 1 and {limits.max_iterations_limit}.", param="max_iterations"
            )
        now = self._clock.now()
        async with self._uow() as uow:
            conversation = await owned_conversation(uow, principal, conversation_id)
            model_name = model or conversation.model or limits.default_model
            if not principal.may_use_model(model_name):
                raise Forbidden(f"You may not use the model {model_name!r}.", code="model_not_allowed", param="model")
            if not self._model.is_known(model_name):
                raise NotFound(f"The model {model_name!r} does not exist.", param="model")
            ensure_no_active_run(await uow.runs.get_active(conversation.id))
            run = Run(
                id=self._new_id(),
                conversation_id=conversation.id,
                user_id=principal.user_id,
                model=model_name,
                status=RunStatus.RUNNING,
                max_iterations=iterations,
                token_budget=limits.token_budget,
                usage=RunUsage(),
                created_at=now,
                updated_at=now,
            )
            await uow.runs.add(run)  # the database has the last word on "one active run"
            message = Message(
                id=self._new_id(),
                conversation_id=conversation.id,
                run_id=run.id,
                role=MessageRole.USER,
                content=content,
                status=MessageStatus.COMPLETE,
                created_at=now,
            )
            await uow.messages.add(message)
            conversation.updated_at = now
            await uow.conversations.update(conversation)
            history = await uow.messages.list_for_conversation(conversation.id)
            await uow.commit()
        ctx = RunContext(principal, conversation, run, history)
        return RunStream(self._loop, ctx, message, ())


MAX_REASON_LENGTH = 1000


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """What the client decided on one pending call."""

    tool_call_id: str
    approve: bool
    reason: str | None = None


class SubmitApprovals:
    """Decide on a run's pending calls and resume it.

    Works from the database alone (any process, after a restart). Taking the decision is a
    compare-and-set of the run from ``requires_approval`` to ``running``: of two concurrent
    submissions one wins, the other gets 409 ``not_pending_approval``. Approved calls run
    once, with the arguments stored when the run stopped; every pending call needs a decision.
    """

    def __init__(self, uow: AgentUnitOfWorkFactory, loop: AgentLoop, clock: Clock) -> None:
        self._uow, self._loop, self._clock = uow, loop, clock

    async def __call__(
        self, principal: Principal, conversation_id: uuid.UUID, decisions: Sequence[ApprovalDecision]
    ) -> RunStream:
        by_id: dict[str, ApprovalDecision] = {}
        for decision in decisions:
            if decision.reason is not None and len(decision.reason) > MAX_REASON_LENGTH:
                raise InvalidInput(f"A reason must be at most {MAX_REASON_LENGTH} characters.", param="decisions")
            if decision.tool_call_id in by_id:
                raise InvalidInput(f"Two decisions for {decision.tool_call_id!r}.", param="decisions")
            by_id[decision.tool_call_id] = decision
        async with self._uow() as uow:
            conversation = await owned_conversation(uow, principal, conversation_id)
            run = await uow.runs.get_active(conversation.id)
            if run is None or run.status is not RunStatus.REQUIRES_APPROVAL:
                raise Conflict("Nothing in this conversation waits for approval.", code="not_pending_approval")
            pending = {p.tool_call_id: p for p in run.pending_approvals}
            unknown = [call_id for call_id in by_id if call_id not in pending]
            if unknown:
                raise InvalidInput(f"{unknown[0]!r} is not a pending tool call of this run.", param="decisions")
            missing = [call_id for call_id in pending if call_id not in by_id]
            if missing:
                raise InvalidInput(f"No decision for the pending tool call {missing[0]!r}.", param="decisions")
            resolved = [
                Decision(p, by_id[p.tool_call_id].approve, by_id[p.tool_call_id].reason) for p in run.pending_approvals
            ]
            run.status, run.pending_approvals, run.updated_at = RunStatus.RUNNING, [], self._clock.now()
            if not await uow.runs.save(run, expected={RunStatus.REQUIRES_APPROVAL}):
                raise Conflict("Nothing in this conversation waits for approval.", code="not_pending_approval")
            history = await uow.messages.list_for_conversation(conversation.id)
            await uow.commit()
        ctx = RunContext(principal, conversation, run, history)
        return RunStream(self._loop, ctx, None, resolved)


class CancelRun:
    """Stop the conversation's active run: it ends ``cancelled`` at once in the database; the
    process driving it stops its model call and tools (at once when it is this process, at its
    next step otherwise). Pending approvals are answered "cancelled" so the history stays whole."""

    def __init__(
        self, uow: AgentUnitOfWorkFactory, signals: RunSignals, clock: Clock, new_id: IdFactory = uuid.uuid4
    ) -> None:
        self._uow, self._signals, self._clock, self._new_id = uow, signals, clock, new_id

    async def __call__(self, principal: Principal, conversation_id: uuid.UUID) -> Run:
        now = self._clock.now()
        async with self._uow() as uow:
            conversation = await owned_conversation(uow, principal, conversation_id)
            run = await uow.runs.get_active(conversation.id)
            if run is None:
                raise Conflict("This conversation has no active run.", code="no_active_run")
            pending = run.pending_approvals if run.status is RunStatus.REQUIRES_APPROVAL else []
            run.status, run.pending_approvals, run.updated_at, run.completed_at = RunStatus.CANCELLED, [], now, now
            if not await uow.runs.save(run, expected=ACTIVE_RUN_STATUSES):
                raise Conflict("This conversation has no active run.", code="no_active_run")
            for approval in pending:
                await uow.messages.add(
                    Message(
                        id=self._new_id(),
                        conversation_id=conversation.id,
                        run_id=run.id,
                        role=MessageRole.TOOL,
                        content="error: the run was cancelled before this call was approved",
                        tool_call_id=approval.tool_call_id,
                        name=approval.name,
                        status=MessageStatus.INCOMPLETE,
                        created_at=now,
                    )
                )
            await uow.commit()
        self._signals.cancel(run.id)
        return run
