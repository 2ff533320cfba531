"""LangChain's `ChatOpenAI` against the gateway: invoke, stream with usage, and tool calls."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.e2e.gateway.conftest import GatewayServer
from tests.support.fake_upstream import UpstreamScript


def chat(server: GatewayServer, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="fake-model",
        base_url=f"{server.base_url}/v1",
        api_key=SecretStr(server.api_key()),
        max_retries=0,
        timeout=10,
        **options,
    )


def get_weather(city: str) -> str:
    """Weather in a city."""
    return f"sunny in {city}"


def test_langchain_invoke_and_stream_with_usage(gateway_server: GatewayServer) -> None:
    answer = chat(gateway_server).invoke("Say hello")
    assert answer.content == "Hello from the fake upstream."
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["total_tokens"] == 18
    merged: AIMessageChunk | None = None
    for chunk in chat(gateway_server, stream_usage=True).stream("Say hello"):
        assert isinstance(chunk, AIMessageChunk)
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert merged.content == "Hello from the fake upstream."
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["input_tokens"] == 11


def test_langchain_streams_parallel_tool_calls(gateway_server: GatewayServer) -> None:
    calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Oslo"}')]
    gateway_server.upstream.reset(UpstreamScript(words=[], tool_calls=calls, repeat_tool_call_fields=True))
    model = chat(gateway_server).bind_tools([get_weather])
    merged: Any = None
    for chunk in model.stream("Weather in Paris and Oslo?"):
        merged = chunk if merged is None else merged + chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert all(c["id"] for c in merged.tool_calls)
    assert merged.invalid_tool_calls == []
