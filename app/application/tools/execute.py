"""Running tools: one call (`ExecuteTool`) and a batch (`ExecuteToolBatch`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.application.tools.ports import (
    ExecutionContext,
    JsonValue,
    NoOpToolExecutionRecorder,
    NoOpToolRunObserver,
    Tool,
    ToolError,
    ToolExecutionRecord,
    ToolExecutionRecorder,
    ToolOutput,
    ToolRunObservation,
    ToolRunObserver,
)
from app.application.tools.registry import ToolRegistry
from app.application.tools.schema import validate_arguments
from app.domain.agent import ToolExecutionStatus
from app.domain.errors import DomainError, Forbidden, InvalidInput, NotFound
from app.domain.principal import Principal

log = logging.getLogger(__name__)

MAX_BATCH_CALLS = 16
DEFAULT_BATCH_CONCURRENCY = 4

SUCCESS = "success"
ERROR = "error"

# Refusals that the audit trail (and the metrics) call "not permitted" rather than "error".
NOT_PERMITTED_CODES = frozenset({"tool_not_allowed"})


@dataclass(frozen=True, slots=True)
class ToolCallResult:
    """The outcome of one call, as the contract shapes it (`{name, status, output, error, duration_ms}`).

    `error_code` says why a call failed (``tool_not_allowed``, ``approval_required``,
    ``invalid_value``, ``tool_error``, ``tool_timeout``, ``tool_failed``...); `param` names the
    failing argument of a validation error.
    """

    name: str
    status: str
    output: JsonValue
    error: str | None
    duration_ms: int
    id: str | None = None
    error_code: str | None = None
    param: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS

    def as_model_content(self) -> str:
        """The content of the tool message fed back to the model for this call."""
        if self.ok:
            return ToolOutput(self.output).as_text()
        return f"error: {self.error}"

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }
        if self.id is not None:
            body = {"id": self.id, **body}
        return body


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One requested call (an item of a batch, or a model's tool call)."""

    name: str
    arguments: Mapping[str, Any]
    id: str | None = None


class ExecuteTool:
    """Checks, validates and runs one tool call for a principal.

    Order: the principal may use the tool (else `Forbidden(tool_not_allowed)`), the tool exists
    (else `NotFound(tool_not_found)`), it does not need approval unless `approved` (else
    `Forbidden(approval_required)`), the arguments match its schema (else
    `InvalidInput(param=...)`). Then it runs under its own timeout; whatever it raises becomes a
    result with status ``error`` and a safe message (never an exception out of here).

    Every attempt, refused or run, goes to the recorder (a no-op until persistence is wired)
    and to the observer (metrics), each with the audit trail's status (`execution_status`).
    `__call__` raises the refusals (the direct API); `attempt` turns them into error results
    too (batches and the agent loop, where one call must not fail the others).
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        recorder: ToolExecutionRecorder | None = None,
        observer: ToolRunObserver | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._recorder = recorder or NoOpToolExecutionRecorder()
        self._observer = observer or NoOpToolRunObserver()
        self._monotonic = monotonic
        self._now = now

    def check(self, principal: Principal, name: str, arguments: Any, *, approved: bool = False) -> Tool:
        """The refusals, without running: raises a `DomainError` or returns the tool."""
        if not principal.may_use_tool(name):
            raise Forbidden(f"you may not use the tool {name!r}", code="tool_not_allowed", param="name")
        tool = self._registry.get(name)
        if tool is None:
            raise NotFound(f"there is no tool named {name!r}", code="tool_not_found", param="name")
        if tool.requires_approval and not approved:
            raise Forbidden(
                f"the tool {name!r} requires human approval; it can only run inside a conversation",
                code="approval_required",
                param="name",
            )
        if not isinstance(arguments, Mapping):
            raise InvalidInput("arguments must be an object", param="arguments")
        validate_arguments(tool.parameters, arguments)
        return tool

    async def __call__(
        self,
        principal: Principal,
        name: str,
        arguments: Any,
        *,
        approved: bool = False,
        call_id: str | None = None,
        context: ExecutionContext | None = None,
    ) -> ToolCallResult:
        started_at, start = self._now(), self._monotonic()
        try:
            tool = self.check(principal, name, arguments, approved=approved)
        except DomainError as exc:
            refusal = _refusal(name, exc, call_id, 0)
            self._observe(refusal, executed=False)
            await self._record(
                principal, name=name, arguments=arguments, result=refusal, started_at=started_at, context=context
            )
            raise
        result = await self._run(tool, arguments, call_id, start)
        self._observe(result, executed=True)
        await self._record(
            principal, name=name, arguments=arguments, result=result, started_at=started_at, context=context
        )
        return result

    async def attempt(
        self,
        principal: Principal,
        name: str,
        arguments: Any,
        *,
        approved: bool = False,
        call_id: str | None = None,
        context: ExecutionContext | None = None,
    ) -> ToolCallResult:
        """Like calling the use case, but a refusal is an error result instead of an exception."""
        try:
            return await self(principal, name, arguments, approved=approved, call_id=call_id, context=context)
        except DomainError as exc:
            return _refusal(name, exc, call_id, 0)

    async def _run(self, tool: Tool, arguments: Mapping[str, Any], call_id: str | None, start: float) -> ToolCallResult:
        def done(status: str, output: JsonValue, error: str | None, code: str | None) -> ToolCallResult:
            elapsed = max(0, round((self._monotonic() - start) * 1000))
            return ToolCallResult(tool.name, status, output, error, elapsed, call_id, code)

        try:
            async with asyncio.timeout(tool.timeout_seconds):
                output: object = await tool.run(arguments)
        except ToolError as exc:
            return done(ERROR, None, exc.message, "tool_error")
        except TimeoutError:
            return done(ERROR, None, f"the tool did not finish within {tool.timeout_seconds:g} seconds", "tool_timeout")
        except Exception:
            log.exception("tool_failed", extra={"tool": tool.name})
            return done(ERROR, None, "the tool failed unexpectedly", "tool_failed")
        if not isinstance(output, ToolOutput):
            log.error("tool_returned_no_tool_output", extra={"tool": tool.name})
            return done(ERROR, None, "the tool failed unexpectedly", "tool_failed")
        return done(SUCCESS, output.value, None, None)

    def _observe(self, result: ToolCallResult, *, executed: bool) -> None:
        observation = ToolRunObservation(
            result.name, execution_status(result.status, result.error_code), result.error_code,
            result.duration_ms, executed,
        )  # fmt: skip
        try:
            self._observer.observe(observation)
        except Exception:
            log.exception("tool_run_not_observed", extra={"tool": result.name})

    async def _record(
        self,
        principal: Principal,
        *,
        name: str,
        arguments: Any,
        result: ToolCallResult,
        started_at: datetime,
        context: ExecutionContext | None,
    ) -> None:
        record = ToolExecutionRecord(
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
            name=name,
            arguments=arguments if isinstance(arguments, Mapping) else {},
            status=result.status,
            output=result.output,
            error=result.error,
            error_code=result.error_code,
            duration_ms=result.duration_ms,
            started_at=started_at,
            call_id=result.id,
            context=context or ExecutionContext(),
        )
        try:
            await self._recorder.record(record)
        except Exception:
            # The call has happened; failing the response now would misreport it.
            log.exception("tool_execution_not_recorded", extra={"tool": name})


def execution_status(status: str, error_code: str | None) -> ToolExecutionStatus:
    """The audit trail's status of a call outcome (``success`` / ``error`` and its code)."""
    if status == SUCCESS:
        return ToolExecutionStatus.SUCCESS
    if error_code in NOT_PERMITTED_CODES:
        return ToolExecutionStatus.NOT_PERMITTED
    return ToolExecutionStatus.ERROR


def _refusal(name: str, exc: DomainError, call_id: str | None, duration_ms: int) -> ToolCallResult:
    return ToolCallResult(name, ERROR, None, exc.message, duration_ms, call_id, exc.code, exc.param)


class ExecuteToolBatch:
    """Runs up to 16 calls with bounded concurrency; results in call order, each with its own status.

    A refused, invalid or failing call is an error result; it never fails the batch. Only the
    batch itself can be refused (empty, or more than `MAX_BATCH_CALLS` calls).
    """

    def __init__(self, execute: ExecuteTool, *, concurrency: int = DEFAULT_BATCH_CONCURRENCY) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._execute = execute
        self._concurrency = concurrency

    async def __call__(
        self, principal: Principal, calls: Sequence[ToolCall], *, context: ExecutionContext | None = None
    ) -> list[ToolCallResult]:
        if not calls:
            raise InvalidInput("calls must not be empty", param="calls")
        if len(calls) > MAX_BATCH_CALLS:
            raise InvalidInput(f"at most {MAX_BATCH_CALLS} calls per batch", param="calls")
        gate = asyncio.Semaphore(self._concurrency)

        async def one(call: ToolCall) -> ToolCallResult:
            async with gate:
                return await self._execute.attempt(
                    principal, call.name, call.arguments, call_id=call.id, context=context
                )

        return list(await asyncio.gather(*(one(call) for call in calls)))
