"""Thin controllers of the conversations API, its WebSocket, and the tool execution history.

``/v1/conversations`` (CRUD, messages, approvals, cancel), ``WS /v1/conversations/{id}/ws``
and ``GET /v1/tool-executions``. Each parses the request, calls one use case of
`AgentServices` and renders: JSON, the agent SSE stream, or WebSocket messages
(`http/agent_stream.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any, Literal

from litestar import Controller, MediaType, Request, Response, WebSocket, delete, get, patch, post, websocket
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Stream
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.application.agent.conversations import ConversationWithRun
from app.application.agent.events import RunCompleted, message_json, run_json
from app.application.agent.runs import ApprovalDecision, RunResult, RunStream
from app.domain.agent import Conversation, ToolExecution
from app.domain.errors import DomainError, InvalidInput
from app.infrastructure.agent.services import AgentServices
from app.infrastructure.http.agent_stream import DONE_TYPE, SseRendering, unless_disconnected, ws_message
from app.infrastructure.http.auth import principal_of
from app.infrastructure.http.errors import error_body, status_for
from app.infrastructure.http.sse import SSE_HEADERS
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)

CLIENT_CLOSED_REQUEST = 499
MAX_DECISIONS = 64

# -- bodies ------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateConversationBody(_Body):
    title: str | None = Field(None, max_length=200)
    model: str | None = Field(None, min_length=1, max_length=200)
    system_prompt: str | None = None
    tools: list[str] | None = Field(None, max_length=128)
    metadata: dict[str, Any] | None = None


class UpdateConversationBody(_Body):
    title: str | None = Field(None, max_length=200)
    archived: bool | None = None


class PostMessageBody(_Body):
    content: str = Field(min_length=1)
    stream: bool = False
    model: str | None = Field(None, min_length=1, max_length=200)
    max_iterations: int | None = None


class DecisionBody(_Body):
    tool_call_id: str = Field(min_length=1, max_length=128)
    approve: bool
    reason: str | None = None


class ApprovalsBody(_Body):
    decisions: list[DecisionBody] = Field(min_length=1, max_length=MAX_DECISIONS)
    stream: bool = False


# -- documentation of answers (OpenAPI) -------------------------------------------------


class PendingApprovalDoc(BaseModel):
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    reason: str


class RunUsageDoc(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RunErrorDoc(BaseModel):
    code: str
    message: str


class RunDoc(BaseModel):
    """The contract's `Run`."""

    id: str
    object: Literal["conversation.run"] = "conversation.run"
    conversation_id: str
    status: Literal["running", "completed", "requires_approval", "failed", "cancelled"]
    model: str
    pending_approvals: list[PendingApprovalDoc]
    usage: RunUsageDoc
    iterations: int
    max_iterations: int
    error: RunErrorDoc | None
    created_at: str
    completed_at: str | None


class ConversationDoc(BaseModel):
    """The contract's `Conversation`. `GET /v1/conversations/{id}` adds `active_run` (an
    extension): the run that is running or waiting for approval, else null."""

    id: str
    object: Literal["conversation"] = "conversation"
    title: str | None
    model: str | None
    system_prompt: str | None
    tools: list[str] | None
    metadata: dict[str, Any]
    status: Literal["active", "archived"]
    archived: bool
    created_at: str
    updated_at: str
    active_run: RunDoc | None = None


# -- rendering ---------------------------------------------------------------------------


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "object": "conversation",
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "tools": conversation.tools,
        "metadata": conversation.metadata,
        "status": conversation.status,
        "archived": conversation.archived,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


def conversation_with_run_json(found: ConversationWithRun) -> dict[str, Any]:
    """`GET /v1/conversations/{id}`: the conversation plus ``active_run`` (docs/api.md)."""
    return {
        **conversation_json(found.conversation),
        "active_run": run_json(found.active_run) if found.active_run is not None else None,
    }


def tool_execution_json(execution: ToolExecution) -> dict[str, Any]:
    def ident(value: uuid.UUID | None) -> str | None:
        return str(value) if value is not None else None

    return {
        "id": str(execution.id),
        "object": "tool.execution",
        "name": execution.name,
        "arguments": execution.arguments,
        "status": execution.status.value,
        "output": execution.output,
        "error": execution.error,
        "error_code": execution.error_code,
        "duration_ms": execution.duration_ms,
        "conversation_id": ident(execution.conversation_id),
        "run_id": ident(execution.run_id),
        "tool_call_id": execution.tool_call_id,
        "approved_by": ident(execution.approved_by),
        "api_key_id": ident(execution.api_key_id),
        "created_at": execution.created_at.isoformat(),
    }


def run_result_json(result: RunResult) -> dict[str, Any]:
    return {"run": run_json(result.run), "messages": [message_json(m) for m in result.messages]}


def _page(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"object": "list", "data": items, "next_cursor": next_cursor}


async def _answer(request: Request[Any, Any, Any], state: State, stream: RunStream, streaming: bool) -> Response[Any]:
    """The run's events as the agent SSE stream, or read to the end as ``{run, messages}``."""
    agent: AgentServices = state.container.agent
    if streaming:
        rendering = SseRendering(stream, agent.heartbeat_seconds, state.metrics, state.container.drain)
        return Stream(
            rendering.events(),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
            background=BackgroundTask(rendering.close_if_unread),
        )
    result = await unless_disconnected(request.receive, stream.collect())
    if result is None:
        await stream.aclose()  # ends the run even if it never started
        return Response(b"", status_code=CLIENT_CLOSED_REQUEST)
    return Response(run_result_json(result), media_type=MediaType.JSON)


def _decisions(bodies: list[DecisionBody]) -> list[ApprovalDecision]:
    return [ApprovalDecision(d.tool_call_id, d.approve, d.reason) for d in bodies]


# -- controllers -------------------------------------------------------------------------


class ConversationsController(Controller):
    """Conversations, their messages, runs and approvals (see docs/agent.md)."""

    path = "/v1/conversations"
    tags = ["conversations"]

    @post("/", status_code=201, summary="Create a conversation")
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CreateConversationBody],
        agent: NamedDependency[AgentServices],
    ) -> dict[str, Any]:
        conversation = await agent.create_conversation(
            principal_of(request),
            title=data.title,
            model=data.model,
            system_prompt=data.system_prompt,
            tools=data.tools,
            metadata=data.metadata,
        )
        return conversation_json(conversation)

    @get("/", summary="The caller's conversations, newest first")
    async def list_conversations(
        self,
        request: Request[Any, Any, Any],
        agent: NamedDependency[AgentServices],
        status: FromQuery[str | None] = None,
        limit: FromQuery[int] = 20,
        cursor: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        page = await agent.list_conversations(principal_of(request), status=status, limit=limit, cursor=cursor)
        return _page([conversation_json(c) for c in page.items], page.next_cursor)

    @get(
        "/{conversation_id:uuid}",
        summary="One conversation, with its active run",
        description="`active_run` (an extension of the contract's Conversation): the run that is running or "
        "waiting for approval, with its `pending_approvals`; null when none is.",
        responses={200: ResponseSpec(data_container=ConversationDoc, description="The conversation.")},
    )
    async def get_one(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        agent: NamedDependency[AgentServices],
    ) -> dict[str, Any]:
        return conversation_with_run_json(await agent.get_conversation_with_run(principal_of(request), conversation_id))

    @patch("/{conversation_id:uuid}", summary="Rename or (un)archive a conversation")
    async def update(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[UpdateConversationBody],
        agent: NamedDependency[AgentServices],
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "title" in data.model_fields_set:
            changes["title"] = data.title
        if "archived" in data.model_fields_set:
            if data.archived is None:
                raise InvalidInput("archived must be true or false.", param="archived")
            changes["archived"] = data.archived
        conversation = await agent.update_conversation(principal_of(request), conversation_id, **changes)
        return conversation_json(conversation)

    @delete("/{conversation_id:uuid}", status_code=204, summary="Delete a conversation")
    async def remove(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        agent: NamedDependency[AgentServices],
    ) -> None:
        await agent.delete_conversation(principal_of(request), conversation_id)

    @get("/{conversation_id:uuid}/messages", summary="A conversation's messages, oldest first")
    async def list_messages(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        agent: NamedDependency[AgentServices],
        limit: FromQuery[int] = 20,
        cursor: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        page = await agent.list_messages(principal_of(request), conversation_id, limit=limit, cursor=cursor)
        return _page([message_json(m) for m in page.items], page.next_cursor)

    @post(
        "/{conversation_id:uuid}/messages",
        status_code=200,
        summary="Post a message: runs the agent (JSON {run, messages}, or the agent event stream)",
    )
    async def post_message(
        self,
        request: Request[Any, Any, Any],
        state: State,
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[PostMessageBody],
        agent: NamedDependency[AgentServices],
    ) -> Response[Any]:
        stream = await agent.post_message(
            principal_of(request), conversation_id, data.content, model=data.model, max_iterations=data.max_iterations
        )
        return await _answer(request, state, stream, data.stream)

    @post(
        "/{conversation_id:uuid}/approvals",
        status_code=200,
        summary="Approve or reject the pending tool calls; resumes the run",
    )
    async def approvals(
        self,
        request: Request[Any, Any, Any],
        state: State,
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[ApprovalsBody],
        agent: NamedDependency[AgentServices],
    ) -> Response[Any]:
        stream = await agent.submit_approvals(principal_of(request), conversation_id, _decisions(data.decisions))
        return await _answer(request, state, stream, data.stream)

    @post("/{conversation_id:uuid}/cancel", status_code=200, summary="Stop the active run")
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        agent: NamedDependency[AgentServices],
    ) -> dict[str, Any]:
        return run_json(await agent.cancel_run(principal_of(request), conversation_id))

    @websocket("/{conversation_id:uuid}/ws")
    async def socket(
        self,
        socket: WebSocket[Any, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        agent: NamedDependency[AgentServices],
    ) -> None:
        await ConversationSocket(socket, conversation_id, agent).serve()


class ToolExecutionsController(Controller):
    path = "/v1/tool-executions"
    tags = ["tools"]

    @get("/", summary="The caller's tool runs, newest first (the audit trail)")
    async def list_executions(
        self,
        request: Request[Any, Any, Any],
        agent: NamedDependency[AgentServices],
        conversation_id: FromQuery[uuid.UUID | None] = None,
        limit: FromQuery[int] = 20,
        cursor: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        page = await agent.list_tool_executions(
            principal_of(request), conversation_id=conversation_id, limit=limit, cursor=cursor
        )
        return _page([tool_execution_json(e) for e in page.items], page.next_cursor)


# -- the WebSocket -----------------------------------------------------------------------


class _WsMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    content: str | None = None
    model: str | None = None
    max_iterations: int | None = None
    decisions: list[DecisionBody] | None = Field(None, max_length=MAX_DECISIONS)


def _ws_error(exc: DomainError) -> dict[str, Any]:
    return {"type": "error", **error_body(status_for(exc), exc.message, code=exc.code, param=exc.param)}


class ConversationSocket:
    """One client on ``WS /v1/conversations/{id}/ws``.

    Client messages: ``{"type": "message", "content"}``, ``{"type": "cancel"}``,
    ``{"type": "approval", "decisions": [...]}``. The server sends each agent event as
    ``{"type": <event>, **data}`` and ``{"type": "done"}`` after a run's last event; a refused
    client message gets ``{"type": "error", "error": {...}}`` and the socket stays open. The
    client going away cancels the run it is streaming (what was produced is stored).
    """

    def __init__(
        self, socket: WebSocket[Any, Any, Any], conversation_id: FromPath[uuid.UUID], agent: AgentServices
    ) -> None:
        self._socket = socket
        self._conversation_id = conversation_id
        self._agent = agent
        self._send_lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        principal = principal_of(self._socket)
        await self._socket.accept()
        try:
            # Checks the conversation is the caller's before anything else.
            await self._agent.get_conversation(principal, self._conversation_id)
        except DomainError as exc:
            await self._send(_ws_error(exc))
            await self._socket.close(code=1008)
            return
        try:
            while True:
                try:
                    text = await self._socket.receive_text()
                except WebSocketDisconnect:
                    break
                try:
                    await self._handle(text)
                except DomainError as exc:
                    await self._send(_ws_error(exc))
        finally:
            if self._pump is not None and not self._pump.done():
                self._pump.cancel()  # the client is gone: the run is cancelled, its output kept
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._pump

    async def _handle(self, text: str) -> None:
        try:
            message = _WsMessage.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            raise InvalidInput(
                "Send a JSON object: {type: message|cancel|approval, ...}.", code="invalid_json", param="type"
            ) from None
        principal = principal_of(self._socket)
        agent, conversation_id = self._agent, self._conversation_id
        if message.type == "message":
            if message.content is None:
                raise InvalidInput("content is required.", code="missing_field", param="content")
            stream = await agent.post_message(
                principal, conversation_id, message.content, model=message.model, max_iterations=message.max_iterations
            )
            await self._start(stream)
        elif message.type == "approval":
            if not message.decisions:
                raise InvalidInput("decisions is required.", code="missing_field", param="decisions")
            stream = await agent.submit_approvals(principal, conversation_id, _decisions(message.decisions))
            await self._start(stream)
        elif message.type == "cancel":
            run = await agent.cancel_run(principal, conversation_id)
            if self._pump is None or self._pump.done():
                # Nothing of this socket was streaming it (e.g. it waited for approval): say so here.
                await self._send(ws_message(RunCompleted(run)))
                await self._send({"type": DONE_TYPE})
        else:
            raise InvalidInput("type must be 'message', 'cancel' or 'approval'.", param="type")

    async def _start(self, stream: RunStream) -> None:
        previous = self._pump
        if previous is not None and not previous.done():
            # Its run has ended (a new one could start): let it send its last events first.
            await asyncio.gather(previous, return_exceptions=True)
        self._pump = asyncio.ensure_future(self._forward(stream))

    async def _forward(self, stream: RunStream) -> None:
        try:
            async for event in stream:
                await self._send(ws_message(event))
            await self._send({"type": DONE_TYPE})
        except Exception as exc:  # noqa: BLE001 - the socket went away mid-send
            log.info("agent_ws_send_failed", exc_type=type(exc).__name__)
        finally:
            await stream.aclose()

    async def _send(self, payload: dict[str, Any]) -> None:
        async with self._send_lock:
            await self._socket.send_json(payload)
