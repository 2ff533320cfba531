"""Reading an upstream stream chunk only as far as the gateway must.

`read_chunk` decodes one SSE event's JSON into typed `msgspec` structs that name just the
fields the gateway looks at (id, object, created, model, and per choice its index, finish
reason, content and tool-call delta headers); msgspec skips every other field without
building it. The result is an `UpstreamChunk` carrying the original bytes, which the
normaliser relays as they are when nothing in them must change. A chunk whose fields do not
have the types the OpenAI format gives them (or that is not what the view expects: an error
object, usage numbers, a missing field) is decoded whole instead, as before; one that is not
JSON at all is None.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app.application.llm.types import StreamItem, UpstreamChunk


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int
    id: str | None = None
    type: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int
    delta: _Delta
    finish_reason: str | None


class _Chunk(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[_Choice]
    # Absent, or null (OpenAI sends ``"usage": null`` in every chunk but the last when usage
    # is asked for). A usage object does not fit: that chunk takes the general path.
    usage: msgspec.UnsetType | None = msgspec.UNSET

    @property
    def has_null_usage(self) -> bool:
        return self.usage is None


_view = msgspec.json.Decoder(_Chunk).decode
_whole = msgspec.json.Decoder().decode


def decode_whole(raw: bytes) -> Any:
    """The whole chunk as Python objects (raises `msgspec.DecodeError` if it is not JSON)."""
    return _whole(raw)


def read_chunk(raw: bytes) -> StreamItem | None:
    """An `UpstreamChunk` (raw bytes + typed view), the decoded object when the view does not
    fit, or None when the event's data is not a JSON object."""
    try:
        return UpstreamChunk(raw, _view(raw), _whole)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass
    try:
        whole = _whole(raw)
    except UnicodeDecodeError:  # bytes that are not UTF-8 inside a string: replaced, as a text decoder would
        try:
            whole = _whole(raw.decode("utf-8", errors="replace"))
        except (msgspec.DecodeError, RecursionError):
            return None
    except (msgspec.DecodeError, RecursionError):
        return None
    return whole if isinstance(whole, dict) else None
