"""Chunk normalisation: what strict OpenAI clients need, whatever the upstream's quirks."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from app.application.llm import chunks as chunks_module
from app.application.llm.chunks import ChunkNormaliser, normalise_completion
from app.application.llm.types import UpstreamChunk, Usage
from app.infrastructure.llm.chunk_view import read_chunk


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


# -- relaying the upstream's bytes: the same JSON as the general path ----------------------------


def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "up-7", "object": "chat.completion.chunk", "created": 1700000000, "model": "up-model",
            "choices": choices, **extra}  # fmt: skip


def content(text: str, finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "delta": {"content": text}, "finish_reason": finish}


def calls(*deltas: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": {"tool_calls": list(deltas)}, "finish_reason": finish}


STREAMS: dict[str, list[dict[str, Any]]] = {
    "content": [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        chunk([content("Hello")], usage=None),
        chunk([content(' "quoted" \\ and ünïcode ✓')], system_fingerprint="fp_1"),
        chunk([content("", "stop")]),
        chunk([], usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    ],
    "ids and times that change between chunks": [
        chunk([content("a")]),
        {**chunk([content("b")]), "id": "up-8", "created": 1700000001},
        {**chunk([content("c", "stop")]), "model": "other-model"},
    ],
    "tool calls, later deltas with arguments only": [
        chunk([calls({"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}})]),
        chunk([calls({"index": 0, "function": {"arguments": '{"x":'}})]),
        chunk([calls({"index": 0, "function": {"arguments": "1}"}})]),
        chunk([calls({"index": 0, "id": "call_a", "function": {"name": "f", "arguments": ""}})]),  # repeats id, name
        chunk([calls(finish="tool_calls")]),
    ],
    "a tool call whose name comes late, flushed at finish": [
        chunk([calls({"index": 0, "id": "call_b", "function": {"arguments": "{"}})]),
        chunk([calls({"index": 1, "function": {"arguments": "}"}})]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    ],
    "odd shapes": [
        chunk([{"index": 0, "delta": {"content": "no finish key"}}]),
        chunk([{"delta": {"content": "no index"}, "finish_reason": None}]),
        chunk([content("empty finish", "")]),
        {k: v for k, v in chunk([content("no object")]).items() if k != "object"},
        chunk([content("x")], usage={"prompt_tokens": 1, "completion_tokens": 1}),
        chunk([content("two"), content("choices", index=1)]),
        chunk([{"index": 0, "delta": {"reasoning_content": "thinking", "content": None}, "finish_reason": None}]),
    ],
}


def encodings(obj: dict[str, Any]) -> dict[str, bytes]:
    return {
        "compact": json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(),
        "spaced": json.dumps(obj).encode(),
        "pretty": json.dumps(obj, indent=2).encode(),
    }


@pytest.mark.parametrize("spelling", ["compact", "spaced", "pretty"])
@pytest.mark.parametrize(("name", "model"), [(n, m) for n in STREAMS for m in ("up-model", "public-alias")])
def test_relayed_bytes_are_the_json_the_general_path_gives(
    name: str, model: str, spelling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunks_module, "new_tool_call_id", lambda: "call_generated")  # same on both paths
    general = ChunkNormaliser("chatcmpl-ours", model, 1700000000)
    relayed = ChunkNormaliser("chatcmpl-ours", model, 1700000000)
    as_bytes = 0
    for upstream in STREAMS[name]:
        expected = general.normalise(copy.deepcopy(upstream))
        item = read_chunk(encodings(upstream)[spelling])
        assert item is not None
        got = relayed.relay(item)
        if isinstance(got, bytes):
            as_bytes += 1
            assert b"\n" not in got
            got = json.loads(got)
        assert got == expected
    assert relayed.final_usage("prompt") == general.final_usage("prompt")
    assert relayed.finished_choices == general.finished_choices
    assert relayed.chunks == general.chunks
    if spelling != "pretty" and name in ("content", "tool calls, later deltas with arguments only"):
        assert as_bytes >= 2  # the plain chunks were relayed as bytes, not re-encoded


def test_plain_content_chunks_are_relayed_as_the_upstreams_bytes() -> None:
    normaliser = ChunkNormaliser("chatcmpl-ours", "public", 1700000000)
    raw = encodings(chunk([content("Hello")], usage=None))["compact"]
    item = read_chunk(raw)
    assert isinstance(item, UpstreamChunk)
    out = normaliser.relay(item)
    assert out == (
        b'{"id":"chatcmpl-ours","object":"chat.completion.chunk","created":1700000000,"model":"public",'
        b'"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}'
    )
