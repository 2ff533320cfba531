"""The agent loop: model call → tool calls (concurrently, each with a time limit) → results fed
back → repeat, until an answer without tool calls, the iteration cap, the token budget,
cancellation or an approval stop.

It is an async generator of typed events (`events.py`); the renderers (SSE, WebSocket,
non-streaming) only encode them. Every step is committed when it happens, in its own short
unit of work: nothing holds a transaction or a pooled connection while the model or a tool
is being waited on. The caller's tool permissions are checked at every call.

Stopping:
- in-process cancellation (`RunSignals`) stops the model stream and the tools in flight at
  once; a cancellation from another process is noticed at the next step (the run's status
  is compare-and-set on every write);
- a consumer that goes away (the generator is closed or its task cancelled) counts as a
  cancellation: what was produced is stored, the run ends ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.application.agent.events import (
    INTERNAL,
    INTERNAL_MESSAGE,
    AgentEvent,
    ApprovalRequired,
    ErrorEvent,
    MessageCompleted,
    MessageDelta,
    ReasoningDelta,
    RunCompleted,
    RunStarted,
    ToolCallEvent,
    ToolResultEvent,
)
from app.application.agent.ports import AgentLimits, AgentModel, IdFactory, RunSignals, ToolOutcome, ToolRunner
from app.application.agent.transcript import TurnAccumulator, model_messages
from app.application.ports import AgentUnitOfWorkFactory, Clock
from app.application.tools.ports import NoOpToolRunObserver, ToolRunObservation, ToolRunObserver
from app.domain.agent import (
    Conversation,
    Message,
    MessageRole,
    MessageStatus,
    PendingApproval,
    Run,
    RunError,
    RunStatus,
    ToolCall,
    ToolExecution,
    ToolExecutionStatus,
)
from app.domain.errors import DomainError, UpstreamError
from app.domain.principal import Principal

log = logging.getLogger(__name__)

_EVENT_STATUS = {
    ToolExecutionStatus.SUCCESS: "success",
    ToolExecutionStatus.ERROR: "error",
    ToolExecutionStatus.REJECTED: "rejected",
    ToolExecutionStatus.NOT_PERMITTED: "error",
}


@dataclass
class RunContext:
    """What one drive of the loop works on. `history` is the conversation, oldest first."""

    principal: Principal
    conversation: Conversation
    run: Run
    history: list[Message]


@dataclass(frozen=True, slots=True)
class Decision:
    """A human's decision on a pending call (the stored call, not what the client sent)."""

    approval: PendingApproval
    approve: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Result:
    """A tool call's result, before it is stored."""

    call: ToolCall
    arguments: Any
    status: ToolExecutionStatus
    output: Any
    error: str | None
    duration_ms: int
    error_code: str | None = None
    approved_by: uuid.UUID | None = None
    message_status: MessageStatus | None = None
    record: bool = True
    # The tool's code ran to this outcome (not refused, rejected or cancelled): for metrics.
    executed: bool = False

    def model_text(self) -> str:
        if self.status is ToolExecutionStatus.SUCCESS:
            return self.output if isinstance(self.output, str) else json.dumps(self.output, default=str)
        if self.status is ToolExecutionStatus.REJECTED:
            return f"rejected: {self.error}"
        if self.status is ToolExecutionStatus.NOT_PERMITTED:
            return f"not permitted: {self.error}"
        return f"error: {self.error}"


@dataclass
class _Live:
    """What is in flight, so an abandoned run can store what it produced."""

    message_id: uuid.UUID | None = None
    turn: TurnAccumulator | None = None
    in_flight: dict[asyncio.Task[ToolOutcome], ToolCall] = field(default_factory=dict)
    cancelled: bool = False


class _Cancelled:
    pass


_CANCELLED = _Cancelled()
_END = object()


class AgentLoop:
    """Drives runs. One instance per process (it holds only collaborators)."""

    def __init__(
        self,
        uow_factory: AgentUnitOfWorkFactory,
        model: AgentModel,
        tools: ToolRunner,
        signals: RunSignals,
        clock: Clock,
        *,
        limits: AgentLimits | None = None,
        new_id: IdFactory = uuid.uuid4,
        observer: ToolRunObserver | None = None,
    ) -> None:
        """`observer` hears of every recorded tool call outcome (the metrics adapter)."""
        self._uow = uow_factory
        self._model = model
        self._tools = tools
        self._signals = signals
        self._clock = clock
        self.limits = limits or AgentLimits()
        self._new_id = new_id
        self._observer = observer or NoOpToolRunObserver()
        # Runs whose end could not be stored (the database was down): retried in the background.
        self._settling: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- the loop

    async def drive(self, ctx: RunContext, decisions: Sequence[Decision] = ()) -> AsyncGenerator[AgentEvent, None]:
        """Run (or resume, with `decisions`) the loop; yield its events, `RunCompleted` last."""
        run = ctx.run
        cancel = self._signals.register(run.id)
        waiter: asyncio.Future[Any] = asyncio.ensure_future(cancel.wait())
        watcher = asyncio.ensure_future(self._watch_status(run.id, cancel))
        live = _Live()
        try:
            yield RunStarted(run.id, ctx.conversation.id)
            if decisions:
                async with contextlib.aclosing(self._resolve(ctx, decisions, live, waiter)) as resolving:
                    async for event in resolving:
                        yield event
            while not live.cancelled:
                ending: list[AgentEvent] = []
                async with contextlib.aclosing(self._iteration(ctx, live, waiter, ending)) as iteration:
                    async for event in iteration:
                        yield event
                for event in ending:
                    yield event
                if ending:
                    return
            yield RunCompleted(await self._finish(ctx, RunStatus.CANCELLED))
        except (GeneratorExit, asyncio.CancelledError):
            # The consumer went away: store what was produced, then let the closing go on.
            await asyncio.shield(self._abandon(ctx, live))
            raise
        except Exception as exc:
            log.exception("agent_run_failed", extra={"run_id": str(run.id)})
            error = exc if isinstance(exc, DomainError) else None
            yield ErrorEvent(run.id, error)
            stored_error = RunError(error.code, error.message) if error else RunError(INTERNAL, INTERNAL_MESSAGE)
            yield RunCompleted(await self._finish_or_settle(ctx, RunStatus.FAILED, stored_error))
        finally:
            waiter.cancel()
            watcher.cancel()
            for task in live.in_flight:
                task.cancel()
            self._signals.unregister(run.id)

    async def _iteration(
        self, ctx: RunContext, live: _Live, waiter: asyncio.Future[Any], ending: list[AgentEvent]
    ) -> AsyncGenerator[AgentEvent, None]:
        """One model call and the tool calls it asks for. Appends the run's last events to
        `ending` when the run stops here; sets `live.cancelled` when it was cancelled."""
        run = ctx.run
        stop = self._limit_reached(run)
        if stop is not None:
            ending.append(RunCompleted(await self._finish(ctx, RunStatus.FAILED, stop)))
            return
        run.iterations += 1
        if not await self._save_progress(ctx):
            live.cancelled = True
            return
        async with contextlib.aclosing(self._model_turn(ctx, live, waiter, ending)) as turn:
            async for event in turn:
                yield event
        if ending:
            return
        calls = ctx.history[-1].tool_calls or []
        if not calls:
            ending.append(RunCompleted(await self._finish(ctx, RunStatus.COMPLETED)))
            return
        async with contextlib.aclosing(self._tool_phase(ctx, calls, live, waiter, ending)) as tools:
            async for event in tools:
                yield event

    async def _tool_phase(
        self,
        ctx: RunContext,
        calls: list[ToolCall],
        live: _Live,
        waiter: asyncio.Future[Any],
        ending: list[AgentEvent],
    ) -> AsyncGenerator[AgentEvent, None]:
        """Answer every call of one assistant message: refuse, run, or set aside for approval."""
        run = ctx.run
        for call in calls:
            parsed = call.parsed_arguments()
            yield ToolCallEvent(run.id, call.id, call.name, parsed if parsed is not None else call.arguments)
        stop = self._limit_reached(run)
        if stop is not None:
            # Asked for at the last allowed step: answered (so the transcript stays valid), not run.
            reason = f"not run: {stop.message}"
            for event in await self._answer_unrun(ctx, calls, reason, cancelled=False):
                yield event
            ending.append(RunCompleted(await self._finish(ctx, RunStatus.FAILED, stop)))
            return
        if not await self._save_progress(ctx):  # cancelled elsewhere meanwhile: run nothing
            live.cancelled = True
            for event in await self._answer_unrun(ctx, calls, "", cancelled=True):
                yield event
            return
        refusals, pending, runnable = self._sort_calls(ctx, calls)
        for refusal in refusals:
            for event in await self._store_result(ctx, refusal):
                yield event
        async with contextlib.aclosing(self._run_calls(ctx, runnable, live, waiter)) as running:
            async for event in running:
                yield event
        if pending and not live.cancelled:
            stopped = await self._finish(ctx, RunStatus.REQUIRES_APPROVAL, pending=pending)
            if stopped.status is RunStatus.REQUIRES_APPROVAL:
                ending.append(ApprovalRequired(run.id, tuple(pending)))
            ending.append(RunCompleted(stopped))

    async def _watch_status(self, run_id: uuid.UUID, cancel: asyncio.Event) -> None:
        """The run's heartbeat: every tick, mark it alive; signal `cancel` once the stored run
        stops being ``running`` (cancelled elsewhere). A run whose heartbeat stops (its process
        died) is ended by `SweepInterruptedRuns` at the next start-up."""
        interval = self.limits.status_poll_seconds
        if interval <= 0:
            return
        while not cancel.is_set():
            await asyncio.sleep(interval)
            try:
                async with self._uow() as uow:
                    alive = await uow.runs.heartbeat(run_id, self._clock.now())
                    await uow.commit()
            except Exception:  # noqa: BLE001 - a database blip: try again at the next tick
                log.warning("agent_run_status_poll_failed", extra={"run_id": str(run_id)})
                continue
            if not alive:
                cancel.set()

    def _limit_reached(self, run: Run) -> RunError | None:
        if run.iterations >= run.max_iterations:
            return RunError("max_iterations_reached", f"The run reached its limit of {run.max_iterations} model calls.")
        if run.token_budget is not None and run.usage.total_tokens >= run.token_budget:
            return RunError("token_budget_exceeded", f"The run spent its budget of {run.token_budget} tokens.")
        return None

    # ---------------------------------------------------------------- one model call

    async def _model_turn(
        self, ctx: RunContext, live: _Live, waiter: asyncio.Future[Any], ending: list[AgentEvent]
    ) -> AsyncGenerator[AgentEvent, None]:
        """Stream one model call; store the assistant message. Appends the run's final
        events to `ending` when the turn ends the run."""
        run = ctx.run
        messages = model_messages(ctx.conversation.system_prompt, ctx.history)
        tools = self._offered_tools(ctx)
        message_id = self._new_id()
        turn = TurnAccumulator()
        live.message_id, live.turn = message_id, turn
        failure: DomainError | None = None
        stream: AsyncIterator[dict[str, Any]] | None = None
        try:
            stream = self._model.stream_turn(
                run.model, messages, tools, max_tokens=self._max_tokens(run), principal=ctx.principal
            )
            while True:
                chunk = await self._next_chunk(stream, waiter)
                if chunk is _END:
                    break
                if isinstance(chunk, _Cancelled):
                    live.cancelled = True
                    break
                assert isinstance(chunk, dict)
                content, reasoning = turn.feed(chunk)
                if reasoning:
                    yield ReasoningDelta(run.id, message_id, reasoning)
                if content:
                    yield MessageDelta(run.id, message_id, content)
        except DomainError as exc:
            failure = exc
        except Exception:
            log.exception("agent_model_call_failed", extra={"run_id": str(run.id)})
            failure = UpstreamError("The model call failed.")
        finally:
            if stream is not None:
                await _aclose(stream)
        live.turn = None
        run.usage = run.usage.plus(turn.usage_or_estimate(messages))
        calls = turn.tool_calls()
        if failure is None and not live.cancelled and turn.finish_reason is None and not turn.text and not calls:
            failure = UpstreamError("The model returned an empty answer.")
        if failure is not None or live.cancelled:
            ending.extend(await self._end_in_turn(ctx, message_id, turn, failure))
            return
        message = Message(
            id=message_id,
            conversation_id=ctx.conversation.id,
            run_id=run.id,
            role=MessageRole.ASSISTANT,
            content=turn.text or None,
            tool_calls=calls or None,
            status=MessageStatus.COMPLETE,
            created_at=self._clock.now(),
        )
        await self._store_messages(ctx, [message])
        yield MessageCompleted(message)

    async def _end_in_turn(
        self, ctx: RunContext, message_id: uuid.UUID, turn: TurnAccumulator, failure: DomainError | None
    ) -> list[AgentEvent]:
        """The model call failed or the run was cancelled during it: keep what was produced."""
        events: list[AgentEvent] = []
        partial = await self._store_partial(ctx, message_id, turn)
        if partial is not None:
            events.append(MessageCompleted(partial))
        if failure is None:
            events.append(RunCompleted(await self._finish(ctx, RunStatus.CANCELLED)))
            return events
        events.append(ErrorEvent(ctx.run.id, failure))
        error = RunError(failure.code, failure.message)
        events.append(RunCompleted(await self._finish(ctx, RunStatus.FAILED, error)))
        return events

    async def _next_chunk(self, stream: AsyncIterator[dict[str, Any]], waiter: asyncio.Future[Any]) -> object:
        """The next chunk, `_END`, or `_CANCELLED` when the run is cancelled meanwhile."""
        if waiter.done():
            return _CANCELLED
        step: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(anext(stream))
        try:
            await asyncio.wait({step, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Our consumer is gone: stop the pending read so the model stream is closed now.
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
            raise
        if step.done():
            try:
                return step.result()
            except StopAsyncIteration:
                return _END
        step.cancel()
        with contextlib.suppress(BaseException):
            await step
        return _CANCELLED

    def _max_tokens(self, run: Run) -> int | None:
        cap = self.limits.max_tokens_per_turn
        if run.token_budget is None:
            return cap
        remaining = max(run.token_budget - run.usage.total_tokens, 1)
        return min(cap, remaining) if cap is not None else remaining

    def _offered_tools(self, ctx: RunContext) -> list[dict[str, Any]]:
        return [
            d
            for d in self._tools.definitions(ctx.principal)
            if ctx.conversation.offers_tool(_tool_name(d)) and ctx.principal.may_use_tool(_tool_name(d))
        ]

    # ---------------------------------------------------------------- tools

    def _sort_calls(
        self, ctx: RunContext, calls: list[ToolCall]
    ) -> tuple[list[_Result], list[PendingApproval], list[tuple[ToolCall, dict[str, Any], uuid.UUID | None]]]:
        """Split calls into refusals, calls that wait for a human, and calls to run now."""
        refusals: list[_Result] = []
        pending: list[PendingApproval] = []
        runnable: list[tuple[ToolCall, dict[str, Any], uuid.UUID | None]] = []
        for call in calls:
            refusal = self._refusal(ctx, call)
            if refusal is not None:
                refusals.append(refusal)
            elif self._tools.requires_approval(call.name):
                reason = f"the tool {call.name!r} requires human approval"
                pending.append(PendingApproval(call.id, call.name, call.parsed_arguments() or {}, reason))
            else:
                runnable.append((call, call.parsed_arguments() or {}, None))
        return refusals, pending, runnable

    def _refusal(self, ctx: RunContext, call: ToolCall) -> _Result | None:
        """Why a call must not run (not permitted, unknown, bad arguments), or None."""
        principal = ctx.principal
        if not principal.may_use_tool(call.name):
            return _Result(
                call, _arguments_for_record(call), ToolExecutionStatus.NOT_PERMITTED, None,
                f"you may not use the tool {call.name!r}", 0, "tool_not_allowed",
            )  # fmt: skip
        if not ctx.conversation.offers_tool(call.name):
            return _Result(
                call, _arguments_for_record(call), ToolExecutionStatus.NOT_PERMITTED, None,
                f"the tool {call.name!r} is not available in this conversation", 0, "tool_not_allowed",
            )  # fmt: skip
        if call.name not in {_tool_name(d) for d in self._tools.definitions(principal)}:
            return _Result(
                call, _arguments_for_record(call), ToolExecutionStatus.ERROR, None,
                f"there is no tool named {call.name!r}", 0, "tool_not_found",
            )  # fmt: skip
        if call.parsed_arguments() is None:
            return _Result(
                call, call.arguments, ToolExecutionStatus.ERROR, None,
                "the arguments are not a JSON object", 0, "invalid_value",
            )  # fmt: skip
        return None

    async def _resolve(
        self, ctx: RunContext, decisions: Sequence[Decision], live: _Live, waiter: asyncio.Future[Any]
    ) -> AsyncGenerator[AgentEvent, None]:
        """Answer the calls a human decided on: rejected ones at once, approved ones by running
        them (once, with the stored arguments, permissions checked again)."""
        approved: list[tuple[ToolCall, dict[str, Any], uuid.UUID | None]] = []
        for decision in decisions:
            pending = decision.approval
            call = ToolCall(pending.tool_call_id, pending.name, json.dumps(pending.arguments))
            if not decision.approve:
                reason = decision.reason or "the user rejected this call"
                result = _Result(call, pending.arguments, ToolExecutionStatus.REJECTED, None, reason, 0)
                for event in await self._store_result(ctx, result):
                    yield event
                continue
            refusal = self._refusal(ctx, call)
            if refusal is not None:
                for event in await self._store_result(ctx, refusal):
                    yield event
                continue
            approved.append((call, pending.arguments, ctx.principal.user_id))
        async with contextlib.aclosing(self._run_calls(ctx, approved, live, waiter)) as running:
            async for event in running:
                yield event

    async def _run_calls(
        self,
        ctx: RunContext,
        calls: list[tuple[ToolCall, dict[str, Any], uuid.UUID | None]],
        live: _Live,
        waiter: asyncio.Future[Any],
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run calls concurrently; store and report each result as it arrives."""
        if not calls:
            return
        meta: dict[asyncio.Task[ToolOutcome], tuple[ToolCall, dict[str, Any], uuid.UUID | None]] = {}
        for call, arguments, approved_by in calls:
            task = asyncio.ensure_future(self._run_one(ctx.principal, call.name, arguments))
            meta[task] = (call, arguments, approved_by)
            live.in_flight[task] = call
        remaining = set(meta)
        while remaining and not waiter.done():
            await asyncio.wait({*remaining, waiter}, return_when=asyncio.FIRST_COMPLETED)
            for task in [t for t in remaining if t.done()]:
                remaining.discard(task)
                live.in_flight.pop(task, None)
                call, arguments, approved_by = meta[task]
                outcome = task.result()
                status = ToolExecutionStatus.SUCCESS if outcome.status == "success" else ToolExecutionStatus.ERROR
                result = _Result(
                    call, arguments, status, outcome.output, outcome.error, outcome.duration_ms,
                    outcome.error_code, approved_by, executed=True,
                )  # fmt: skip
                for event in await self._store_result(ctx, result):
                    yield event
        if remaining:  # cancelled while tools were running
            live.cancelled = True
            for task in remaining:
                task.cancel()
            await asyncio.gather(*remaining, return_exceptions=True)
            for task in remaining:
                live.in_flight.pop(task, None)
                call, arguments, approved_by = meta[task]
                for event in await self._store_result(ctx, _cancelled_result(call, arguments, approved_by)):
                    yield event

    async def _run_one(self, principal: Principal, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        started = time.monotonic()
        limit = self.limits.tool_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                return await self._tools.run(name, arguments, principal)
        except TimeoutError:
            return ToolOutcome(
                "error", None, f"the tool did not finish within {limit:g} seconds", _ms_since(started), "tool_timeout"
            )
        except Exception:
            log.exception("agent_tool_failed", extra={"tool": name})
            return ToolOutcome("error", None, "the tool failed unexpectedly", _ms_since(started), "tool_failed")

    # ---------------------------------------------------------------- persistence (one short unit of work each)

    async def _store_messages(self, ctx: RunContext, messages: list[Message]) -> None:
        async with self._uow() as uow:
            for message in messages:
                await uow.messages.add(message)
            await uow.commit()
        ctx.history.extend(messages)

    async def _store_result(self, ctx: RunContext, result: _Result) -> list[AgentEvent]:
        """Store a tool message (and its execution record) and return the events reporting it.

        A recorded outcome is observed first: the call happened even if storing it fails."""
        if result.record:
            self._observe(result)
        now = self._clock.now()
        message_status = result.message_status or (
            MessageStatus.ERROR if result.status is ToolExecutionStatus.ERROR else MessageStatus.COMPLETE
        )
        message = Message(
            id=self._new_id(),
            conversation_id=ctx.conversation.id,
            run_id=ctx.run.id,
            role=MessageRole.TOOL,
            content=result.model_text(),
            tool_call_id=result.call.id,
            name=result.call.name,
            status=message_status,
            created_at=now,
        )
        async with self._uow() as uow:
            await uow.messages.add(message)
            if result.record:
                await uow.tool_executions.add(
                    ToolExecution(
                        id=self._new_id(),
                        user_id=ctx.principal.user_id,
                        api_key_id=ctx.principal.api_key_id,
                        run_id=ctx.run.id,
                        conversation_id=ctx.conversation.id,
                        tool_call_id=result.call.id,
                        name=result.call.name,
                        arguments=result.arguments,
                        status=result.status,
                        output=result.output,
                        error=result.error,
                        error_code=result.error_code,
                        duration_ms=result.duration_ms,
                        approved_by=result.approved_by,
                        created_at=now,
                    )
                )
            await uow.commit()
        ctx.history.append(message)
        return [
            ToolResultEvent(
                ctx.run.id, result.call.id, result.call.name, _EVENT_STATUS[result.status],
                result.output, result.error, result.duration_ms,
            ),
            MessageCompleted(message),
        ]  # fmt: skip

    def _observe(self, result: _Result) -> None:
        observation = ToolRunObservation(
            result.call.name, result.status, result.error_code, result.duration_ms, result.executed
        )
        try:
            self._observer.observe(observation)
        except Exception:
            log.exception("tool_run_not_observed", extra={"tool": result.call.name})

    async def _answer_unrun(
        self, ctx: RunContext, calls: list[ToolCall], reason: str, *, cancelled: bool
    ) -> list[AgentEvent]:
        """Answer calls that will not run, so the transcript stays valid (nothing is recorded
        in the audit trail: they were never attempted)."""
        events: list[AgentEvent] = []
        for call in calls:
            if cancelled:
                result = dataclasses.replace(_cancelled_result(call, call.arguments, None), record=False)
            else:
                result = _Result(call, call.arguments, ToolExecutionStatus.ERROR, None, reason, 0, record=False)
            events.extend(await self._store_result(ctx, result))
        return events

    async def _store_partial(self, ctx: RunContext, message_id: uuid.UUID, turn: TurnAccumulator) -> Message | None:
        """What the model produced before a failure or cancellation, as an incomplete message.
        Unfinished tool calls are dropped: they were never run and cannot be answered."""
        if not turn.text:
            return None
        message = Message(
            id=message_id,
            conversation_id=ctx.conversation.id,
            run_id=ctx.run.id,
            role=MessageRole.ASSISTANT,
            content=turn.text,
            status=MessageStatus.INCOMPLETE,
            created_at=self._clock.now(),
        )
        await self._store_messages(ctx, [message])
        return message

    async def _save_progress(self, ctx: RunContext) -> bool:
        """Store iterations and usage; False when the run is no longer running (cancelled elsewhere)."""
        ctx.run.updated_at = self._clock.now()
        async with self._uow() as uow:
            saved = await uow.runs.save(ctx.run, expected={RunStatus.RUNNING})
            await uow.commit()
        return saved

    async def _finish(
        self,
        ctx: RunContext,
        status: RunStatus,
        error: RunError | None = None,
        pending: Sequence[PendingApproval] = (),
    ) -> Run:
        """Move the run to its next status (compare-and-set from ``running``). If it was cancelled
        elsewhere meanwhile, it stays cancelled (with this drive's usage) and that is returned."""
        run = ctx.run
        now = self._clock.now()
        run.status, run.error, run.pending_approvals, run.updated_at = status, error, list(pending), now
        run.completed_at = None if status.is_active else now
        expected: Collection[RunStatus] = {RunStatus.RUNNING}
        if status is RunStatus.CANCELLED:
            expected = {RunStatus.RUNNING, RunStatus.CANCELLED}
        async with self._uow() as uow:
            if not await uow.runs.save(run, expected=expected):
                run.status, run.error, run.pending_approvals = RunStatus.CANCELLED, None, []
                run.completed_at = now
                await uow.runs.save(run, expected={RunStatus.CANCELLED})
            await uow.commit()
        log.info(
            "agent_run_%s",
            run.status.value,
            extra={
                "run_id": str(run.id),
                "conversation_id": str(run.conversation_id),
                "iterations": run.iterations,
                "total_tokens": run.usage.total_tokens,
                "error_code": run.error.code if run.error else None,
            },
        )
        return run

    async def _abandon(self, ctx: RunContext, live: _Live) -> None:
        """The consumer went away mid-run: keep what was produced, end the run ``cancelled``."""
        try:
            tasks = list(live.in_flight)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                call = live.in_flight.pop(task)
                await self._store_result(ctx, _cancelled_result(call, call.parsed_arguments() or {}, None))
            if live.turn is not None and live.message_id is not None:
                await self._store_partial(ctx, live.message_id, live.turn)
            if ctx.run.status is RunStatus.RUNNING:
                await self._finish(ctx, RunStatus.CANCELLED)
        except Exception:
            log.exception("agent_run_abandon_failed", extra={"run_id": str(ctx.run.id)})
            self._settle_later(ctx, RunStatus.CANCELLED, None)

    async def cancel_unstarted(self, ctx: RunContext) -> None:
        """A run whose events were never read: end it ``cancelled`` so the conversation is free."""
        await self._finish_or_settle(ctx, RunStatus.CANCELLED)

    # ---------------------------------------------------------------- a run's end the database refused

    async def _finish_or_settle(self, ctx: RunContext, status: RunStatus, error: RunError | None = None) -> Run:
        """`_finish`; when the database refuses (it is down), the run would stay ``running`` with
        no driver and block its conversation, so its end is retried in the background."""
        try:
            return await self._finish(ctx, status, error)
        except Exception:  # noqa: BLE001 - the database refused: retried in the background
            log.warning("agent_run_end_not_stored", extra={"run_id": str(ctx.run.id), "status": status.value})
            self._settle_later(ctx, status, error)
            return ctx.run

    def _settle_later(self, ctx: RunContext, status: RunStatus, error: RunError | None) -> None:
        task = asyncio.get_running_loop().create_task(self._settle(ctx, status, error))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, ctx: RunContext, status: RunStatus, error: RunError | None) -> None:
        """Store the run's end once the database answers again: back-off from 0.2 s to 5 s, for
        at most `limits.settle_seconds`. After that (or if this process dies first), the run's
        heartbeat is stale and `SweepInterruptedRuns` ends it. `_finish` is a compare-and-set
        from ``running``: a run swept or cancelled meanwhile is left as it is."""
        delay, deadline = 0.2, time.monotonic() + self.limits.settle_seconds
        while True:
            await asyncio.sleep(delay)
            try:
                await self._finish(ctx, status, error)
            except Exception:  # noqa: BLE001 - still down: try again later
                if time.monotonic() >= deadline:
                    log.error("agent_run_end_given_up", extra={"run_id": str(ctx.run.id)})
                    return
                delay = min(delay * 2, 5.0)
                continue
            log.info("agent_run_end_stored_late", extra={"run_id": str(ctx.run.id), "status": status.value})
            return

    @property
    def settling(self) -> int:
        """How many runs' ends wait for the database (a gauge for operators)."""
        return len(self._settling)

    async def aclose(self) -> None:
        """At shutdown: stop retrying (the start-up sweep of the next process ends those runs)."""
        tasks = list(self._settling)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _tool_name(definition: dict[str, Any]) -> str:
    function = definition.get("function") or {}
    return str(function.get("name", "")) if isinstance(function, dict) else ""


def _arguments_for_record(call: ToolCall) -> Any:
    parsed = call.parsed_arguments()
    return parsed if parsed is not None else call.arguments


def _cancelled_result(call: ToolCall, arguments: Any, approved_by: uuid.UUID | None) -> _Result:
    return _Result(
        call, arguments, ToolExecutionStatus.ERROR, None, "the run was cancelled before this tool call finished", 0,
        "cancelled", approved_by,
        message_status=MessageStatus.INCOMPLETE,
    )  # fmt: skip


def _ms_since(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))


async def _aclose(stream: AsyncIterator[dict[str, Any]]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
