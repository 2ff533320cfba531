"""From stored messages to what the model is sent, and from streamed chunks to a turn.

`model_messages` guarantees the sequence is valid whatever the history holds (a crash
between an assistant's tool calls and their results, results stored out of order,
duplicates): every assistant tool call is followed by exactly one tool message, in the
order of the calls, and no tool message answers nothing.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.domain.agent import Message, MessageRole, RunUsage, ToolCall

MAX_CALL_ID_LENGTH = 128
UNANSWERED = "error: no result (the run stopped before this tool call finished)"


def model_messages(system_prompt: str | None, history: list[Message]) -> list[dict[str, Any]]:
    """The OpenAI `messages` for the next model call."""
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    results: dict[str, Message] = {}
    for message in history:
        if message.role is MessageRole.TOOL and message.tool_call_id and message.tool_call_id not in results:
            results[message.tool_call_id] = message
    answered: set[str] = set()
    for message in history:
        if message.role is MessageRole.USER:
            out.append({"role": "user", "content": message.content or ""})
        elif message.role is MessageRole.ASSISTANT:
            calls = [c for c in message.tool_calls or [] if c.id not in answered]
            if not calls and not message.content:
                continue
            entry: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if calls:
                entry["tool_calls"] = [c.as_json() for c in calls]
            out.append(entry)
            for call in calls:
                answered.add(call.id)
                result = results.get(call.id)
                content = result.content if result is not None else UNANSWERED
                out.append({"role": "tool", "tool_call_id": call.id, "content": content or ""})
        # Tool messages are placed right after the call they answer (above); orphans are dropped.
    return out


def estimate_tokens(text: str) -> int:
    """A rough count (4 characters a token) for upstreams that send no usage."""
    return math.ceil(len(text) / 4)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class TurnAccumulator:
    """Collects one streamed turn: content, reasoning, tool calls (by index), finish, usage."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: RunUsage | None = None
    chunks: int = 0

    def feed(self, chunk: dict[str, Any]) -> tuple[str, str]:
        """Take one chunk; return its (content, reasoning) text deltas."""
        self.chunks += 1
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int):
                self.usage = RunUsage(max(prompt, 0), max(completion, 0))
        content_delta, reasoning_delta = "", ""
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                text = delta.get("content")
                if isinstance(text, str) and text:
                    content_delta += text
                thought = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(thought, str) and thought:
                    reasoning_delta += thought
                for position, raw in enumerate(delta.get("tool_calls") or []):
                    if isinstance(raw, dict):
                        self._feed_call(raw, position)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if content_delta:
            self.content.append(content_delta)
        if reasoning_delta:
            self.reasoning.append(reasoning_delta)
        return content_delta, reasoning_delta

    def _feed_call(self, raw: dict[str, Any], position: int) -> None:
        index = raw.get("index")
        partial = self.calls.setdefault(index if isinstance(index, int) else position, _PartialCall())
        # Some servers repeat `id` and `function.name` in every delta: take the first.
        if isinstance(raw.get("id"), str) and raw["id"] and not partial.id:
            partial.id = raw["id"]
        function = raw.get("function") or {}
        if isinstance(function, dict):
            if isinstance(function.get("name"), str) and function["name"] and not partial.name:
                partial.name = function["name"]
            if isinstance(function.get("arguments"), str):
                partial.arguments.append(function["arguments"])

    @property
    def text(self) -> str:
        return "".join(self.content)

    def tool_calls(self) -> list[ToolCall]:
        """The completed calls in index order; missing or duplicate ids are replaced."""
        calls: list[ToolCall] = []
        seen: set[str] = set()
        for index in sorted(self.calls):
            partial = self.calls[index]
            usable = partial.id and len(partial.id) <= MAX_CALL_ID_LENGTH and partial.id not in seen
            call_id = partial.id if usable else f"call_{uuid.uuid4().hex[:24]}"
            seen.add(call_id)
            calls.append(ToolCall(id=call_id, name=partial.name, arguments="".join(partial.arguments)))
        return calls

    def usage_or_estimate(self, prompt: list[dict[str, Any]]) -> RunUsage:
        if self.usage is not None:
            return self.usage
        prompt_text = "".join(str(m.get("content") or "") + str(m.get("tool_calls") or "") for m in prompt)
        produced = self.text + "".join(self.reasoning) + "".join("".join(c.arguments) for c in self.calls.values())
        return RunUsage(estimate_tokens(prompt_text), estimate_tokens(produced))
