"""Chunk normalisation: what strict OpenAI clients need, whatever the upstream's quirks."""

from __future__ import annotations

from typing import Any

from app.application.llm.chunks import ChunkNormaliser, normalise_completion
from app.application.llm.types import Usage


def tool_delta(**call: Any) -> dict[str, Any]:
    return {"id": "up-1", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


def test_every_chunk_gets_the_same_id_model_and_object() -> None:
    normaliser = ChunkNormaliser("chatcmpl-ours", "public-model", 123)
    a = normaliser.normalise({"id": "x1", "model": "up", "choices": [{"index": 0, "delta": {"content": "a"}}]})
    b = normaliser.normalise({"id": "x2", "model": "up", "choices": [{"index": 0, "delta": {"content": "b"}}]})
    assert a is not None
    assert b is not None
    assert {a["id"], b["id"]} == {"chatcmpl-ours"}
    assert {a["model"], b["model"]} == {"public-model"}
    assert a["object"] == "chat.completion.chunk"
    assert a["choices"][0]["finish_reason"] is None


def test_repeated_tool_call_id_and_name_are_kept_only_on_the_first_delta() -> None:
    normaliser = ChunkNormaliser("c", "m", 1)
    first = normaliser.normalise(
        tool_delta(index=0, id="call_1", type="function", function={"name": "f", "arguments": "{"})
    )
    later = normaliser.normalise(
        tool_delta(index=0, id="call_1", type="function", function={"name": "f", "arguments": "}"})
    )
    assert first is not None
    assert later is not None
    assert first["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": "{"},
    }
    assert later["choices"][0]["delta"]["tool_calls"][0] == {"index": 0, "function": {"arguments": "}"}}


def test_first_tool_delta_without_id_or_type_gets_them() -> None:
    normaliser = ChunkNormaliser("c", "m", 1)
    chunk = normaliser.normalise(tool_delta(function={"name": "calc"}))
    assert chunk is not None
    call = chunk["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == 0
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"] == {"name": "calc", "arguments": ""}


def test_a_first_tool_delta_without_name_is_held_back_until_the_name_comes() -> None:
    normaliser = ChunkNormaliser("c", "m", 1)
    held = normaliser.normalise(tool_delta(index=0, id="call_9", function={"arguments": '{"a"'}))
    assert held is not None
    assert "tool_calls" not in held["choices"][0]["delta"]
    first = normaliser.normalise(tool_delta(index=0, function={"name": "f", "arguments": ": 1}"}))
    assert first is not None
    assert first["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]


def test_a_tool_call_whose_name_never_comes_is_flushed_at_finish() -> None:
    normaliser = ChunkNormaliser("c", "m", 1)
    normaliser.normalise(tool_delta(index=0, function={"arguments": "{}"}))
    last = normaliser.normalise({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    assert last is not None
    [call] = last["choices"][0]["delta"]["tool_calls"]
    assert (call["index"], call["type"], call["function"]) == (0, "function", {"name": "", "arguments": "{}"})
    assert call["id"].startswith("call_")


def test_parallel_tool_calls_each_get_their_first_delta() -> None:
    normaliser = ChunkNormaliser("c", "m", 1)
    chunk = normaliser.normalise(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "a", "function": {"name": "f"}},
                            {"index": 1, "id": "b", "function": {"name": "g"}},
                        ]
                    },
                }
            ]
        }
    )
    assert chunk is not None
    assert [c["id"] for c in chunk["choices"][0]["delta"]["tool_calls"]] == ["a", "b"]


def test_usage_is_held_back_and_usage_only_chunks_are_dropped() -> None:
    normaliser = ChunkNormaliser("c", "m", 1)
    with_choices = normaliser.normalise(
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }
    )
    assert with_choices is not None
    assert "usage" not in with_choices
    assert normaliser.normalise({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 5}}) is None
    usage = normaliser.final_usage("prompt")
    assert usage == Usage(4, 5)
    assert normaliser.usage_chunk(usage) == {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9},
    }
    assert normaliser.finished_choices == {0}


def test_missing_usage_is_estimated_from_text() -> None:
    normaliser = ChunkNormaliser("c", "m", 1)
    normaliser.normalise({"choices": [{"index": 0, "delta": {"content": "x" * 40}}]})
    usage = normaliser.final_usage("y" * 20)
    assert usage == Usage(prompt_tokens=5, completion_tokens=10)


def test_non_streaming_answer_is_normalised() -> None:
    answer, usage = normalise_completion(
        {
            "id": "up",
            "model": "upstream",
            "choices": [{"message": {"content": "hi", "tool_calls": [{"function": {}}]}}],
        },
        model="public",
        prompt="hello",
    )
    assert answer["model"] == "public"
    assert answer["object"] == "chat.completion"
    message = answer["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["tool_calls"][0]["type"] == "function"
    assert message["tool_calls"][0]["id"].startswith("call_")
    assert answer["usage"] == usage.as_json()
