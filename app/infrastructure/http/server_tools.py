"""The server-tools mode of ``POST /v1/chat/completions``, rendered the OpenAI way.

A request whose ``tools`` entries are only names (``{"type": "function", "function":
{"name": "calculator"}}``) asks the server to run those built-in tools itself:
`RunServerTools` runs the agent loop over the client's transcript (stored nowhere) and the
answer is the final assistant message, as a ``chat.completion`` or as
``chat.completion.chunk`` events (the assistant's text as content deltas, reasoning as
``reasoning_content``), then ``data: [DONE]``.

As on the plain gateway path, the stream starts only once the run produced something: a
failure of the first model call is an ordinary HTTP error; later ones are in-band
``data: {"error": ...}`` followed by ``data: [DONE]``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import MediaType, Request, Response
from litestar.datastructures import State
from litestar.response import Stream

from app.application.agent.events import (
    AgentEvent,
    ErrorEvent,
    MessageCompleted,
    MessageDelta,
    ReasoningDelta,
    RunCompleted,
    RunStarted,
)
from app.application.agent.runs import RunStream
from app.application.llm.chunks import new_completion_id
from app.domain.agent import MessageRole, Run, RunStatus
from app.domain.errors import DomainError, InvalidInput
from app.domain.principal import Principal
from app.infrastructure.agent.services import AgentServices
from app.infrastructure.http.agent_stream import event_data, unless_disconnected
from app.infrastructure.http.errors import error_body, error_response, status_for
from app.infrastructure.http.sse import DONE, HEARTBEAT, PING, SSE_HEADERS, encode_data, with_heartbeat
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics

log = get_logger(__name__)

CLIENT_CLOSED_REQUEST = 499


def server_tool_names(tools: list[dict[str, Any]] | None) -> list[str]:
    """The names of the name-only entries of a request's ``tools`` (server tools).

    Refuses (400, param ``tools``) a request mixing them with client tools (with
    ``parameters``): the loop cannot hand a client tool's call back to the client mid-run.
    """
    server: list[str] = []
    client = 0
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and "parameters" not in function:
            server.append(str(function.get("name")))
        else:
            client += 1
    if server and client:
        raise InvalidInput(
            "Server tools (a name only) and client tools (with 'parameters') cannot be mixed in one request.",
            param="tools",
        )
    return server


def _final_answer(run: Run, content: str | None) -> tuple[str | None, str]:
    finish = "stop" if run.status is RunStatus.COMPLETED else "length"
    return content, finish


async def answer_with_server_tools(
    request: Request[Any, Any, Any],
    state: State,
    principal: Principal,
    *,
    model: str,
    messages: list[dict[str, Any]],
    tool_names: list[str],
    stream: bool,
    include_usage: bool,
) -> Response[Any]:
    """Run the loop with the named built-in tools; answer as OpenAI would."""
    agent: AgentServices = state.container.agent
    run_stream = await agent.run_server_tools(principal, model=model, messages=messages, tool_names=tool_names)
    if not stream:
        return await _complete(request, run_stream, model)
    return await _stream(request, state, run_stream, model, include_usage)


async def _complete(request: Request[Any, Any, Any], run_stream: RunStream, model: str) -> Response[Any]:
    async def read() -> tuple[Run | None, str | None, ErrorEvent | None]:
        run: Run | None = None
        content: str | None = None
        error: ErrorEvent | None = None
        try:
            async for event in run_stream:
                if isinstance(event, MessageCompleted) and event.message.role is MessageRole.ASSISTANT:
                    content = event.message.content
                elif isinstance(event, ErrorEvent):
                    error = event
                elif isinstance(event, RunCompleted):
                    run = event.run
        finally:
            await run_stream.aclose()
        return run, content, error

    outcome = await unless_disconnected(request.receive, read())
    if outcome is None:
        await run_stream.aclose()
        return Response(b"", status_code=CLIENT_CLOSED_REQUEST)
    run, content, error = outcome
    if error is not None:
        return _error(error)
    if run is None:  # cannot happen: run.completed always ends a run
        return error_response(500, "The server failed to handle the request.", code="internal_error")
    content, finish = _final_answer(run, content)
    return Response(
        {
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": run.usage.as_json(),
        },
        media_type=MediaType.JSON,
    )


def _error(error: ErrorEvent) -> Response[Any]:
    """A failed run's error as an HTTP error: a domain error goes through the one mapping
    (headers such as Retry-After included); an internal one (already logged) is a plain 500."""
    if error.error is not None:
        raise error.error
    return error_response(500, "The server failed to handle the request.", code="internal_error")


async def _stream(
    request: Request[Any, Any, Any], state: State, run_stream: RunStream, model: str, include_usage: bool
) -> Response[Any]:
    events = run_stream.__aiter__()

    async def first_meaningful() -> AgentEvent | None:
        async for event in events:
            if not isinstance(event, RunStarted):
                return event
        return None

    first = await unless_disconnected(request.receive, first_meaningful())
    if first is None:
        await run_stream.aclose()
        return Response(b"", status_code=CLIENT_CLOSED_REQUEST)
    if isinstance(first, ErrorEvent):
        await run_stream.aclose()
        return _error(first)

    async def rest() -> AsyncIterator[AgentEvent]:
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await run_stream.aclose()

    completion_id, created = new_completion_id(), int(time.time())
    metrics: Metrics = state.metrics
    heartbeat: float = state.container.settings.llm.llm_heartbeat_seconds

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return encode_data(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    async def body() -> AsyncIterator[bytes]:
        metrics.active_streams.inc()
        failed = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for item in with_heartbeat(rest(), heartbeat, drain=state.container.drain):
                if item is HEARTBEAT:
                    yield PING
                elif isinstance(item, MessageDelta):
                    yield chunk({"content": item.delta})
                elif isinstance(item, ReasoningDelta):
                    yield chunk({"reasoning_content": item.delta})
                elif isinstance(item, ErrorEvent):
                    failed = True  # in-band error, then [DONE] (the run's end is not a finish)
                    yield encode_data(event_data(item))
                elif isinstance(item, RunCompleted) and not failed:
                    _, finish = _final_answer(item.run, None)
                    yield chunk({}, finish)
                    if include_usage:
                        usage = {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": item.run.usage.as_json(),
                        }
                        yield encode_data(usage)
        except DomainError as exc:  # the shutdown deadline: in-band error, then [DONE]
            yield encode_data(error_body(status_for(exc), exc.message, code=exc.code))
        finally:
            metrics.active_streams.dec()
        yield DONE

    return Stream(body(), media_type="text/event-stream", headers=SSE_HEADERS)
