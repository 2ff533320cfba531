"""The OpenAI-compatible endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``.

Thin: parse and validate the body (400 with ``param``), take the caller from
``request.user`` (a `Principal`, set by the auth middleware), call one use case, render
JSON or the ``text/event-stream`` of chunks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.application.llm.types import ChatRequest
from app.application.llm.use_cases import GetModel, ListModels
from app.domain.errors import Unauthenticated
from app.domain.principal import Principal
from app.infrastructure.http.server_tools import answer_with_server_tools, server_tool_names
from app.infrastructure.observability.logging import get_logger

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
    )
    async def chat_completions(
        self, request: Request[Any, Any, Any], state: State, data: JSONBody[ChatCompletionBody]
    ) -> Response[Any]:
        """The server-tools mode (name-only ``tools`` entries; docs/api.md).

        Every other chat completion is served in front of the router by
        `ChatCompletionsEndpoint` (``http/chat_endpoint.py``, the hot path), which hands these
        requests over with their body; this route also documents the operation in OpenAPI.
        """
        principal = principal_of(request)
        names = server_tool_names([t.model_dump(exclude_unset=True) for t in data.tools]) if data.tools else []
        if not names:
            raise RuntimeError("plain chat completions are served by ChatCompletionsEndpoint, not this route")
        # Each model call of the agent loop is admitted against the caller's limits (GatewayAgentModel).
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
