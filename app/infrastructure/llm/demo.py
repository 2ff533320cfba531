"""The demo provider: a small deterministic `LLMClient` for offline use and tests.

It is what serves when no upstream is configured, under the public name ``demo``. It
streams its answer word by word, reports usage, and when the prompt asks for arithmetic or
the time and the request offers a ``calculator`` / ``current_time`` tool, it asks for that
tool (so the agent path can be seen without an API key). After a tool result it answers
with that result.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from app.application.llm.types import JSONObject, StreamItem

_ARITHMETIC = re.compile(
    r"(-?\d+(?:\.\d+)?\s*(?:[-+*/^%]|\*\*)\s*-?\d+(?:\.\d+)?(?:\s*(?:[-+*/^%]|\*\*)\s*-?\d+(?:\.\d+)?)*)"
)
_TIME_WORDS = re.compile(r"\b(time|clock|date|today|o'clock)\b", re.IGNORECASE)
_TIMEZONE = re.compile(r"\b([A-Z][a-z]+/[A-Z][A-Za-z_]+)\b")


def _words(text: str) -> int:
    return len(text.split())


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _choice_count(body: JSONObject) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 0 else 1


def _tool_names(body: JSONObject) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


class DemoLLMClient:
    """Deterministic offline model. Answers depend only on the request."""

    model_name = "demo"

    def __init__(self, word_delay_seconds: float = 0.0) -> None:
        self._delay = word_delay_seconds

    def _plan(self, body: JSONObject) -> tuple[str, list[dict[str, Any]]]:
        """The answer text, or the tool calls to ask for."""
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            return f"The result is {_text_of(last).strip() or 'empty'}.", []
        question = _text_of(last)
        tools = _tool_names(body)
        if body.get("tool_choice") != "none":
            arithmetic = _ARITHMETIC.search(question)
            if arithmetic and "calculator" in tools:
                expression = arithmetic.group(1).replace("^", "**").strip()
                return "", [_tool_call("calculator", {"expression": expression})]
            if _TIME_WORDS.search(question) and "current_time" in tools:
                zone = _TIMEZONE.search(question)
                return "", [_tool_call("current_time", {"timezone": zone.group(1) if zone else "UTC"})]
        if not question.strip():
            return "Hello! I am the demo model. Ask me anything.", []
        snippet = " ".join(question.split()[:12])
        return (
            f"This is the demo model (no upstream LLM is configured). You said: {snippet}",
            [],
        )

    def _usage(self, body: JSONObject, text: str, calls: list[dict[str, Any]]) -> dict[str, int]:
        prompt = sum(_words(_text_of(m)) for m in body.get("messages") or [] if isinstance(m, dict))
        completion = _words(text) + sum(1 + _words(c["function"]["arguments"]) for c in calls)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def complete(self, body: JSONObject) -> JSONObject:
        text, calls = self._plan(body)
        n = _choice_count(body)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        usage = self._usage(body, text, calls)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": i,
                    "message": json.loads(json.dumps(message)),
                    "finish_reason": "tool_calls" if calls else "stop",
                }
                for i in range(n)
            ],
            "usage": {
                **usage,
                "completion_tokens": usage["completion_tokens"] * n,
                "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"] * n,
            },
        }

    async def stream(self, body: JSONObject) -> AsyncIterator[list[StreamItem]]:
        async for chunk in self._chunks(body):
            yield [chunk]

    async def _chunks(self, body: JSONObject) -> AsyncIterator[JSONObject]:
        text, calls = self._plan(body)
        n = _choice_count(body)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> JSONObject:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_name,
                "choices": choices,
                **extra,
            }

        yield chunk(
            [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(n)]
        )
        words = text.split(" ") if text else []
        for position, word in enumerate(words):
            if self._delay:
                await asyncio.sleep(self._delay)
            piece = word if position == 0 else " " + word
            yield chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None} for i in range(n)])
        for call_index, call in enumerate(calls):
            first = {
                "index": call_index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            rest = {"index": call_index, "function": {"arguments": call["function"]["arguments"]}}
            for delta in (first, rest):
                yield chunk([{"index": i, "delta": {"tool_calls": [delta]}, "finish_reason": None} for i in range(n)])
        finish = "tool_calls" if calls else "stop"
        yield chunk([{"index": i, "delta": {}, "finish_reason": finish} for i in range(n)])
        usage = self._usage(body, text, calls)
        completion = usage["completion_tokens"] * n
        usage = {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": completion,
            "total_tokens": usage["prompt_tokens"] + completion,
        }
        yield chunk([], usage=usage)


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f"{name}:{json.dumps(arguments, sort_keys=True)}").hex[:24]
    return {"id": f"call_{digest}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
