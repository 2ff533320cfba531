"""Chat completion types and the ports the gateway needs (stdlib only).

Requests and answers stay OpenAI-shaped JSON objects (`dict`s): the gateway relays what the
upstream says and touches only the fields it must (id, model, tool-call deltas, usage). The
dataclasses here carry what the use cases decide on.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat completion request.

    `body` is the client's JSON object (standard fields already checked); it is what gets
    forwarded, with the model name, streaming options and caps rewritten per upstream.
    """

    model: str
    body: JSONObject
    stream: bool = False
    include_usage: bool = False
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> JSONObject:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_json(cls, raw: object) -> Usage | None:
        if not isinstance(raw, dict):
            return None
        prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        return cls(prompt_tokens=max(prompt, 0), completion_tokens=max(completion, 0))


class FunctionDeltaView(Protocol):
    @property
    def name(self) -> str | None: ...

    @property
    def arguments(self) -> str | None: ...


class ToolCallDeltaView(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def id(self) -> str | None: ...

    @property
    def type(self) -> str | None: ...

    @property
    def function(self) -> FunctionDeltaView | None: ...


class DeltaView(Protocol):
    @property
    def content(self) -> str | None: ...

    @property
    def tool_calls(self) -> Sequence[ToolCallDeltaView] | None: ...


class ChoiceView(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def delta(self) -> DeltaView: ...

    @property
    def finish_reason(self) -> str | None: ...


class ChunkView(Protocol):
    """The few fields of a well-formed stream chunk the gateway reads (typed: every field has
    the type the OpenAI format gives it; anything else makes the chunk take the general path)."""

    @property
    def id(self) -> str: ...

    @property
    def object(self) -> str: ...

    @property
    def created(self) -> int: ...

    @property
    def model(self) -> str: ...

    @property
    def choices(self) -> Sequence[ChoiceView]: ...

    @property
    def has_null_usage(self) -> bool:
        """The chunk carries ``"usage": null`` (OpenAI's way of saying "not in this chunk")."""
        ...


class UpstreamChunk:
    """One stream chunk as the upstream sent it: its JSON text (``raw``) and a typed view of the
    fields the gateway reads. The gateway relays ``raw`` itself, with at most its ``id``,
    ``model`` and ``created`` values substituted, unless something in it must change; only then
    is it decoded whole (`json`) and normalised (`ChunkNormaliser`).

    A plain class with slots: one is made per chunk, and a frozen dataclass costs twice as much
    to build (bench/relay_micro.py)."""

    __slots__ = ("decode", "raw", "view")

    def __init__(self, raw: bytes, view: ChunkView, decode: Callable[[bytes], Any]) -> None:
        self.raw = raw
        self.view = view
        self.decode = decode

    def __repr__(self) -> str:
        return f"UpstreamChunk({self.raw!r})"

    def json(self) -> JSONObject:
        decoded: JSONObject = self.decode(self.raw)
        return decoded


# What an upstream stream yields: chunks as they arrived (`UpstreamChunk`), or chunk objects
# (a provider that builds them, or a chunk the typed view could not read).
StreamItem = JSONObject | UpstreamChunk


class LLMClient(Protocol):
    """One upstream that speaks the OpenAI chat completions protocol.

    Both methods raise `UpstreamError` / `UpstreamTimeout` / `RateLimited` / `InvalidInput`.
    `stream` yields, per read from the upstream, the list of chunks that arrived together (so
    they are relayed in one write); anything it raises before its first chunk happened before
    a byte reached our client (so the caller may still fall back or answer with a status).
    """

    async def complete(self, body: JSONObject) -> JSONObject: ...

    def stream(self, body: JSONObject) -> AsyncIterator[list[StreamItem]]: ...


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """Where one public model name is served: an upstream, its model name there, its caps."""

    client: LLMClient
    upstream_model: str
    upstream_name: str
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A public model: its name, and the targets tried in order (primary, then fallbacks)."""

    id: str
    owned_by: str
    created: int
    targets: tuple[ModelTarget, ...]

    def as_json(self) -> JSONObject:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": self.owned_by}


class ModelCatalog(Protocol):
    """The public model names this deployment serves, in display order."""

    def models(self) -> list[ModelInfo]: ...

    def get(self, model_id: str) -> ModelInfo | None: ...


class UsageStatus:
    SUCCESS = "success"
    ERROR = "error"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One completion attempt as billed and audited (failed and disconnected ones too)."""

    user_id: uuid.UUID
    api_key_id: uuid.UUID | None
    model: str
    usage: Usage
    latency_ms: int
    ttft_ms: int | None
    status: str
    created_at: datetime
    request_id: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    error_code: str | None = None


class UsageRecorder(Protocol):
    """Takes usage records off the request path. `record` never blocks and never raises."""

    def record(self, record: UsageRecord) -> None: ...
