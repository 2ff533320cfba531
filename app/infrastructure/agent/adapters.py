"""Adapters from the gateway and the tool registry to the agent loop's ports.

- `GatewayAgentModel` (`AgentModel`): one streamed model turn through the gateway's
  `CreateChatCompletion`, so the agent's model calls get the same model scopes, routing,
  fallbacks and usage records as ``/v1/chat/completions``.
- `RegistryToolRunner` (`ToolRunner`): the registry's definitions and `ExecuteTool`
  (validation, the tool's own time limit). Its `ExecuteTool` records nothing: the loop writes
  ``tool_executions`` itself, with the run, the conversation and who approved.
- `PersistentToolExecutionRecorder` (`ToolExecutionRecorder`): the Tools API's audit trail,
  stored in ``tool_executions`` like the loop's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import structlog

from app.application.agent.ports import ToolOutcome
from app.application.llm.limits import AdmitChatCompletion
from app.application.llm.types import ChatRequest, ModelCatalog
from app.application.llm.use_cases import CreateChatCompletion
from app.application.ports import AgentUnitOfWorkFactory
from app.application.tools import ExecuteTool, ToolExecutionRecord, ToolRegistry, execution_status
from app.domain.agent import ToolExecution
from app.domain.principal import Principal


class GatewayAgentModel:
    """The agent's model port over the gateway's streaming completion use case."""

    def __init__(
        self, chat: CreateChatCompletion, catalog: ModelCatalog, admit: AdmitChatCompletion | None = None
    ) -> None:
        self._chat = chat
        self._catalog = catalog
        # Rate limits: every model call of a run is admitted like a /v1/chat/completions stream
        # (one decision, a stream lease) and settled with the turn's real usage.
        self._admit = admit

    def is_known(self, model: str) -> bool:
        return self._catalog.get(model) is not None

    async def stream_turn(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        max_tokens: int | None,
        principal: Principal,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yields the turn's chunks; closing this generator closes the upstream request."""
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = tools
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        request = ChatRequest(
            model=model,
            body=body,
            stream=True,
            include_usage=True,
            request_id=request_id if isinstance(request_id, str) else None,
        )
        admission = await self._admit(principal, request) if self._admit is not None else None
        try:
            stream = await self._chat.stream(principal, request)
        except BaseException:
            if admission is not None:
                await admission.finish(used_tokens=0)  # nothing was produced: refund the reservation
            raise
        chunks = stream.__aiter__()
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            if admission is not None:
                await admission.finish(used_tokens=stream.usage.total_tokens)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()


class RegistryToolRunner:
    """The agent's tool port over the registry and `ExecuteTool`."""

    def __init__(self, registry: ToolRegistry, execute: ExecuteTool) -> None:
        self._registry = registry
        self._execute = execute

    def definitions(self, principal: Principal) -> list[dict[str, Any]]:
        return self._registry.definitions_for(principal)

    def requires_approval(self, name: str) -> bool:
        tool = self._registry.get(name)
        return bool(tool is not None and tool.requires_approval)

    async def run(self, name: str, arguments: dict[str, Any], principal: Principal) -> ToolOutcome:
        # The loop only runs an approval-gated tool after a human approved that call.
        result = await self._execute.attempt(principal, name, arguments, approved=True)
        return ToolOutcome(result.status, result.output, result.error, result.duration_ms, result.error_code)


class PersistentToolExecutionRecorder:
    """Stores the Tools API's attempts (refused ones too) in ``tool_executions``."""

    def __init__(self, uow: AgentUnitOfWorkFactory) -> None:
        self._uow = uow

    async def record(self, record: ToolExecutionRecord) -> None:
        status = execution_status(record.status, record.error_code)
        context = record.context
        execution = ToolExecution(
            id=uuid.uuid4(),
            user_id=record.user_id,
            name=record.name,
            arguments=dict(record.arguments),
            status=status,
            output=record.output,
            error=record.error,
            duration_ms=record.duration_ms,
            created_at=record.started_at,
            run_id=context.run_id,
            conversation_id=context.conversation_id,
            tool_call_id=record.call_id,
            approved_by=context.approved_by,
            api_key_id=record.api_key_id,
            error_code=record.error_code,
        )
        async with self._uow() as uow:
            await uow.tool_executions.add(execution)
            await uow.commit()
