"""The OpenAI-compatible endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``.

Thin: parse and validate the body (400 with ``param``), take the caller from
``request.user`` (a `Principal`, set by the auth middleware), call one use case, render
JSON or the ``text/event-stream`` of chunks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.application.llm.limits import AdmitChatCompletion
from app.application.llm.types import ChatRequest
from app.application.llm.use_cases import CreateChatCompletion, GetModel, ListModels
from app.domain.errors import DomainError, Unauthenticated
from app.domain.principal import Principal
from app.infrastructure.http.agent_stream import unless_disconnected
from app.infrastructure.http.chat_limits import AdmittedStream, open_admitted, release_unsent_stream, settle_answer
from app.infrastructure.http.errors import error_body, status_for
from app.infrastructure.http.server_tools import answer_with_server_tools, server_tool_names
from app.infrastructure.http.sse import DONE, PING, SSE_HEADERS, Heartbeat, batches_with_heartbeat, encode_data
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.shutdown import until_drained

log = get_logger(__name__)
T = TypeVar("T")

# -- request validation (the standard fields; anything else is forwarded untouched) --------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class FunctionSpec(_Open):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Open):
    type: Literal["function"]
    function: FunctionSpec


class StreamOptions(_Open):
    include_usage: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]


class ChatCompletionBody(_Open):
    """The standard fields of a chat completion request, checked before anything goes upstream."""

    model: Annotated[str, Field(min_length=1, max_length=200)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: Annotated[int, Field(ge=1, le=16)] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    response_format: ResponseFormat | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    metadata: dict[str, str] | None = None

    @field_validator("tools")
    @classmethod
    def _unique_tool_names(cls, tools: list[ToolSpec] | None) -> list[ToolSpec] | None:
        if tools:
            names = [t.function.name for t in tools]
            if len(names) != len(set(names)):
                raise ValueError("tool names must be unique")
        return tools


def chat_request_from(body: ChatCompletionBody, raw: dict[str, Any], request_id: str | None) -> ChatRequest:
    forwarded = {k: v for k, v in raw.items() if k != "metadata"}
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    return ChatRequest(
        model=body.model,
        body=forwarded,
        stream=bool(body.stream),
        include_usage=include_usage,
        request_id=request_id,
    )


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    message: dict[str, Any]
    finish_reason: str | None


class ChatCompletionDoc(BaseModel):
    """The non-streaming answer (OpenAI's `chat.completion`). With `stream: true` the answer is
    `text/event-stream`: `data: <chat.completion.chunk>` events, then `data: [DONE]`."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


CLIENT_CLOSED_REQUEST = 499


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        raise Unauthenticated("A valid API key or access token is required.", code="invalid_api_key")
    return user


class OpenAIController(Controller):
    """OpenAI-compatible API (see docs/api.md for the compatibility notes)."""

    path = "/v1"
    tags = ["openai"]

    @get("/models", summary="List models", description="The models the caller may use.")
    async def list_models(self, request: Request[Any, Any, Any], list_models: NamedDependency[ListModels]) -> ModelList:
        models = list_models(principal_of(request))
        return ModelList(data=[ModelObject(**m.as_json()) for m in models])

    @get("/models/{model_id:path}", summary="Retrieve a model", description="One model, or 404.")
    async def get_model(
        self, request: Request[Any, Any, Any], model_id: FromPath[str], get_model: NamedDependency[GetModel]
    ) -> ModelObject:
        return ModelObject(**get_model(principal_of(request), model_id.lstrip("/")).as_json())

    @post(
        "/chat/completions",
        summary="Create a chat completion",
        description="OpenAI-compatible; `stream: true` answers with text/event-stream chunks.",
        status_code=200,
        responses={200: ResponseSpec(data_container=ChatCompletionDoc, description="The completion (JSON or SSE).")},
        after_response=release_unsent_stream,
    )
    async def chat_completions(
        self,
        request: Request[Any, Any, Any],
        state: State,
        chat_completion: NamedDependency[CreateChatCompletion],
        admit_chat: NamedDependency[AdmitChatCompletion],
        data: JSONBody[ChatCompletionBody],
    ) -> Response[Any]:
        principal = principal_of(request)
        if data.tools and (names := server_tool_names([t.model_dump(exclude_unset=True) for t in data.tools])):
            # Server tools (name-only entries): the agent loop runs them (docs/api.md); each of its
            # model calls is admitted against the caller's rate limits (GatewayAgentModel).
            return await answer_with_server_tools(
                request,
                state,
                principal,
                model=data.model,
                messages=[m.model_dump(exclude_unset=True) for m in data.messages],
                tool_names=names,
                stream=bool(data.stream),
                include_usage=bool(data.stream and data.stream_options and data.stream_options.include_usage),
            )
        # `data` (validated by Litestar, which documents it in OpenAPI) decides; the client's
        # own JSON, unknown fields included, is what gets forwarded.
        chat = chat_request_from(data, await request.json(), request.scope.get("state", {}).get("request_id"))
        # Rate limits: 404/403 first, then one admission (429 / 503) before anything goes upstream.
        admission = await admit_chat(principal, chat)
        if not chat.stream:
            async with admission:
                work = settle_answer(admission, chat, chat_completion.complete(principal, chat))
                answer = await unless_disconnected(request, work)
            if answer is None:
                # Nobody is listening any more; 499 is what the access log will show.
                return Response(b"", status_code=CLIENT_CLOSED_REQUEST)
            return Response(answer, media_type=MediaType.JSON, headers=admission.headers)
        # Waiting for the upstream's first chunk: a disconnect now cancels it too.
        opening = open_admitted(admission, chat, chat_completion.stream(principal, chat))
        stream = await unless_disconnected(request, opening)
        if stream is None:
            await admission.finish()  # no-op unless the opening never got to run
            return Response(b"", status_code=CLIENT_CLOSED_REQUEST)
        metrics: Metrics = state.metrics
        heartbeat: float = state.container.settings.llm.llm_heartbeat_seconds

        async def events() -> Any:
            metrics.active_streams.inc()
            try:
                # Whatever arrived together goes out in one write (one ASGI message).
                source = until_drained(stream.__aiter__(), state.container.drain)
                async for batch in batches_with_heartbeat(source, heartbeat):
                    yield PING if isinstance(batch, Heartbeat) else b"".join(map(encode_data, batch))
            except DomainError as exc:
                log.warning("chat_stream_failed", code=exc.code)
                yield encode_data(error_body(status_for(exc), exc.message, code=exc.code, param=exc.param))
            except Exception as exc:  # the stream has begun: the error goes in-band
                log.exception("chat_stream_crashed", exc_type=type(exc).__name__)
                yield encode_data(error_body(500, "The server failed while streaming.", code="internal_error"))
            finally:
                metrics.active_streams.dec()
            yield DONE

        body = AdmittedStream(admission, stream, events()).attach(request)
        return Stream(body.body, media_type="text/event-stream", headers={**SSE_HEADERS, **admission.headers})
