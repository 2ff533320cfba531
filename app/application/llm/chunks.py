"""Rewriting upstream answers into exactly what strict OpenAI clients expect.

Real upstreams differ in small ways that break strict clients: ids that change between
chunks, `id` and `function.name` repeated in every tool-call delta, usage inside a chunk that
still has choices, no usage at all. The normaliser fixes those and leaves everything else as
the upstream sent it.

Most chunks of a stream need none of that: a content delta whose only differences from what
the client must see are the completion ``id`` and, for an aliased model, the ``model`` name.
Those are relayed as the bytes the upstream sent, with the two values substituted in place
(`ChunkNormaliser.relay`); only a chunk that needs more (usage, the first delta of a tool
call, a finish that flushes held-back calls, an odd shape) is decoded whole and rewritten.
Both paths give the same JSON (tests/unit/test_gateway_chunks.py checks them against each
other).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from app.application.llm.types import ChunkView, JSONObject, StreamItem, ToolCallDeltaView, UpstreamChunk, Usage


def new_completion_id() -> str:
    return f"chatcmpl-{os.urandom(16).hex()}"


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for upstreams that report none."""
    return (len(text) + 3) // 4 if text else 0


def prompt_text(body: JSONObject) -> str:
    parts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


class ChunkNormaliser:
    """Normalises one stream's chunks: same id and model on each, clean tool-call deltas, usage held back."""

    def __init__(self, completion_id: str, model: str, created: int) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = created
        self.usage: Usage | None = None
        self.finished_choices: set[int] = set()
        self.chunks = 0
        self.completion_chars = 0
        self._tool_calls_seen: set[tuple[int, int]] = set()
        self._pending: dict[tuple[int, int], dict[str, Any]] = {}
        # (the upstream's bytes before "choices", ours): see `_with_our_header`.
        self._header: tuple[bytes, bytes] | None = None

    def relay(self, item: StreamItem) -> bytes | JSONObject | None:
        """What to send for one upstream chunk: its JSON bytes as they arrived (``id`` and
        ``model`` substituted) when nothing else in it must change, else the normalised object,
        or None when nothing is left to send (e.g. a usage-only chunk)."""
        if isinstance(item, UpstreamChunk):
            raw = self._relayable(item.raw, item.view)
            if raw is not None:
                return raw
            item = item.json()
        return self.normalise(item)

    def _relayable(self, raw: bytes, view: ChunkView) -> bytes | None:
        """`raw` ready to send as it is, or None when the chunk needs the general path.

        Checks come first and change nothing; the accounting happens only once the chunk is
        known to be relayable (else `normalise` does it).
        """
        if not self._needs_no_rewrite(raw, view):
            return None
        try:
            raw = self._with_our_header(raw, view)
            if view.has_null_usage:
                raw = _without_null_usage(raw)
        except _NotRelayable:
            return None
        for choice in view.choices:
            if choice.finish_reason:
                self.finished_choices.add(choice.index)
            delta = choice.delta
            if delta.content is not None:
                self.completion_chars += len(delta.content)
            for call in delta.tool_calls or ():
                self.completion_chars += len(call.function.arguments or "") if call.function else 0
        self.chunks += 1
        return raw

    def _with_our_header(self, raw: bytes, view: ChunkView) -> bytes:
        """`raw` with our id, model and created. Upstreams write those members in the same
        bytes at the start of every chunk of a stream, so the rewritten start is worked out
        once and swapped in (the members are found again when the start differs)."""
        header = self._header
        if header is not None and raw.startswith(header[0]):
            return header[1] + raw[len(header[0]) :]
        if view.id == self.completion_id and view.model == self.model and view.created == self.created:
            return raw
        ours = raw
        if view.id != self.completion_id:
            ours = _substitute(ours, b'"id"', view.id, self.completion_id)
        if view.model != self.model:
            ours = _substitute(ours, b'"model"', view.model, self.model)
        if view.created != self.created:
            ours = _substitute_literal(ours, b'"created"', b"%d" % view.created, b"%d" % self.created)
        end = raw.find(b'"choices"')
        # The header: everything before "choices", if the members are all in it.
        if end > 0 and ours.endswith(raw[end:]):
            self._header = (raw[:end], ours[: len(ours) - len(raw) + end])
        return ours

    def _needs_no_rewrite(self, raw: bytes, view: ChunkView) -> bool:
        """Nothing but id, model, created and a null usage differs from what the client gets."""
        if not view.choices or view.object != "chat.completion.chunk":
            return False
        if b"\n" in raw or b"\r" in raw:  # pretty-printed JSON would break the SSE framing
            return False
        for choice in view.choices:
            finish = choice.finish_reason
            if finish == "" or not self._calls_relayable(choice.index, choice.delta.tool_calls):
                return False  # an empty finish reason is made null by the general path
            if finish and any(key[0] == choice.index for key in self._pending):
                return False  # held-back calls are flushed with the finish
        return True

    def _calls_relayable(self, choice_index: int, calls: Sequence[ToolCallDeltaView] | None) -> bool:
        """Only later deltas of known tool calls, carrying only their arguments, go as they are."""
        if calls is None:
            return True
        if not calls:
            return False  # an empty list is dropped by the general path
        for call in calls:
            function = call.function
            if (
                (choice_index, call.index) not in self._tool_calls_seen
                or call.id is not None
                or call.type is not None
                or function is None
                or function.name is not None
                or function.arguments is None
            ):
                return False
        return True

    def normalise(self, chunk: JSONObject) -> JSONObject | None:
        """The chunk to send on, or None when nothing is left to send (e.g. a usage-only chunk)."""
        usage = Usage.from_json(chunk.pop("usage", None))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return None
        chunk["id"] = self.completion_id
        chunk["object"] = "chat.completion.chunk"
        chunk["created"] = self.created
        chunk["model"] = self.model
        for position, choice in enumerate(choices):
            if isinstance(choice, dict):
                self._normalise_choice(position, choice)
        self.chunks += 1
        return chunk

    def _normalise_choice(self, position: int, choice: dict[str, Any]) -> None:
        index = choice.get("index")
        if not isinstance(index, int):
            index = position
            choice["index"] = index
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
            choice["delta"] = delta
        finish = choice.get("finish_reason")
        choice["finish_reason"] = finish if finish else None
        if finish:
            self.finished_choices.add(index)
        content = delta.get("content")
        if isinstance(content, str):
            self.completion_chars += len(content)
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            relayed = [
                out
                for call_position, call in enumerate(tool_calls)
                if isinstance(call, dict) and (out := self._normalise_tool_call(index, call_position, call)) is not None
            ]
            if finish:
                relayed.extend(self._flush_pending(index))
            if relayed:
                delta["tool_calls"] = relayed
            else:
                del delta["tool_calls"]
        elif finish and any(key[0] == index for key in self._pending):
            delta["tool_calls"] = self._flush_pending(index)

    def _normalise_tool_call(self, choice_index: int, position: int, call: dict[str, Any]) -> dict[str, Any] | None:
        """The delta to relay, or None while a tool call's first delta still lacks its name."""
        call_index = call.get("index")
        if not isinstance(call_index, int):
            call_index = position
        call["index"] = call_index
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
            call["function"] = function
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = ""
        self.completion_chars += len(arguments)
        key = (choice_index, call_index)
        if key in self._tool_calls_seen:
            # Later deltas carry only arguments: strict clients concatenate repeated names.
            call.pop("id", None)
            call.pop("type", None)
            function.pop("name", None)
            function["arguments"] = arguments
            return call
        pending = self._pending.get(key)
        if pending is not None:
            # Held back so far: the id (if any) and the arguments received before the name.
            call["id"] = call.get("id") or pending["id"]
            arguments = pending["arguments"] + arguments
        if not function.get("name"):
            # Strict clients need the name on the first delta: hold this one back until it comes.
            self._pending[key] = {"id": call.get("id"), "arguments": arguments}
            return None
        self._pending.pop(key, None)
        self._tool_calls_seen.add(key)
        # The first delta of a tool call: index, id, type and name, always.
        call["id"] = call.get("id") or new_tool_call_id()
        call["type"] = "function"
        function["arguments"] = arguments
        return call

    def _flush_pending(self, choice_index: int) -> list[dict[str, Any]]:
        """Tool calls whose name never came: sent (with an empty name) rather than lost."""
        flushed: list[dict[str, Any]] = []
        for key in sorted(k for k in self._pending if k[0] == choice_index):
            pending = self._pending.pop(key)
            self._tool_calls_seen.add(key)
            flushed.append(
                {
                    "index": key[1],
                    "id": pending["id"] or new_tool_call_id(),
                    "type": "function",
                    "function": {"name": "", "arguments": pending["arguments"]},
                }
            )
        return flushed

    def final_usage(self, prompt: str) -> Usage:
        """The upstream's usage, or an estimate when it reported none."""
        if self.usage is not None:
            return self.usage
        return Usage(
            prompt_tokens=estimate_tokens(prompt), completion_tokens=estimate_tokens("x" * self.completion_chars)
        )

    def usage_chunk(self, usage: Usage) -> JSONObject:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.as_json(),
        }


class _NotRelayable(Exception):
    """The chunk's bytes cannot be changed in place: it takes the general path."""


def _plain_json_string(value: str) -> bytes:
    """``value`` as a JSON string literal, when it needs no escaping (ids and model names do not)."""
    if not value.isascii() or not value.isprintable() or '"' in value or "\\" in value:
        raise _NotRelayable
    return b'"' + value.encode() + b'"'


def _substitute(raw: bytes, key: bytes, old: str, new: str) -> bytes:
    """`raw` with the first ``key: old`` member's string value replaced by ``new``."""
    return _substitute_literal(raw, key, _plain_json_string(old), _plain_json_string(new))


def _substitute_literal(raw: bytes, key: bytes, old_literal: bytes, new_literal: bytes) -> bytes:
    """`raw` with the first ``key: old_literal`` member's value replaced (compact or ``": "``
    spacing, as JSON encoders write it)."""
    for separator in (b":", b": "):
        member = key + separator + old_literal
        at = raw.find(member)
        if at >= 0:
            start = at + len(key) + len(separator)
            end = start + len(old_literal)
            if raw[end : end + 1] not in (b",", b"}", b" "):
                continue  # a longer number that starts with the same digits
            return raw[:start] + new_literal + raw[end:]
    raise _NotRelayable


_NULL_USAGE = (b',"usage":null', b'"usage":null,', b', "usage": null', b'"usage": null, ')
_NULL_USAGE_LAST = b',"usage":null}'


def _without_null_usage(raw: bytes) -> bytes:
    """`raw` without its ``"usage": null`` member (the general path drops it too)."""
    if raw.endswith(_NULL_USAGE_LAST):  # where OpenAI writes it
        return raw[: -len(_NULL_USAGE_LAST)] + b"}"
    for member in _NULL_USAGE:
        at = raw.find(member)
        if at >= 0:
            return raw[:at] + raw[at + len(member) :]
    raise _NotRelayable


def normalise_completion(answer: JSONObject, *, model: str, prompt: str) -> tuple[JSONObject, Usage]:
    """A non-streaming answer with our model name, typed tool calls and a usage object."""
    answer.setdefault("id", new_completion_id())
    answer["object"] = "chat.completion"
    answer["model"] = model
    completion_chars = 0
    choices = answer.get("choices")
    if not isinstance(choices, list):
        choices = []
        answer["choices"] = choices
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        choice.setdefault("index", position)
        message = choice.get("message")
        if not isinstance(message, dict):
            continue
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        if isinstance(message.get("content"), str):
            completion_chars += len(message["content"])
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                call["id"] = call.get("id") or new_tool_call_id()
                call["type"] = "function"
    usage = Usage.from_json(answer.get("usage")) or Usage(
        prompt_tokens=estimate_tokens(prompt), completion_tokens=estimate_tokens("x" * completion_chars)
    )
    answer["usage"] = {**(answer.get("usage") or {}), **usage.as_json()}
    return answer, usage
