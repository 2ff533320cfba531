"""The gateway end to end with the official `openai` SDK (sync and async) on a real server.

The app runs in uvicorn on 127.0.0.1; the upstream is the fake OpenAI-compatible server.
Callers are posed through the one `gateway_server` fixture.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.e2e.gateway.conftest import UPSTREAM_KEY, GatewayServer
from tests.support.fake_upstream import UpstreamScript

HELLO: list[Any] = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def sse_lines(server: GatewayServer, body: dict[str, Any], scenario: str = "all") -> tuple[httpx.Response, list[str]]:
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST",
            f"{server.base_url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {server.api_key(scenario)}"},
        ) as response,
    ):
        lines = [line for line in response.iter_lines() if line]
    return response, lines


async def usage_rows(server: GatewayServer, expected: int, within: float = 3.0) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(server.database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        deadline = time.monotonic() + within
        while True:
            rows = await conn.fetch(
                "SELECT * FROM usage_records WHERE user_id = $1 ORDER BY created_at", server.user_id
            )
            if len(rows) >= expected or time.monotonic() > deadline:
                return list(rows)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def test_models_are_listed_and_filtered_by_allowed_models(gateway_server: GatewayServer) -> None:
    ids = [m.id for m in gateway_server.client().models.list()]
    assert ids == ["fake-model", "fallback-model", "capped-model", "demo", "org/slashed-model"]
    assert gateway_server.client().models.retrieve("org/slashed-model").id == "org/slashed-model"
    assert [m.id for m in gateway_server.client("demo-only").models.list()] == ["demo"]
    model = gateway_server.client().models.retrieve("fake-model")
    assert (model.id, model.object, model.owned_by) == ("fake-model", "model", "fake")
    with pytest.raises(openai.NotFoundError):
        gateway_server.client("demo-only").models.retrieve("fake-model")
    with pytest.raises(openai.NotFoundError):
        gateway_server.client().models.retrieve("no-such-model")


def test_readiness_reports_the_llm_without_requiring_it(gateway_server: GatewayServer) -> None:
    response = httpx.get(f"{gateway_server.base_url}/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["llm"] == "unchecked"


def test_non_streaming_completion_with_usage(gateway_server: GatewayServer) -> None:
    answer = gateway_server.client().chat.completions.create(model="fake-model", messages=HELLO, temperature=0.2)
    assert answer.object == "chat.completion"
    assert answer.model == "fake-model"
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.total_tokens == 18
    sent = gateway_server.upstream.requests[0]
    assert sent.body["model"] == "upstream-model-x"
    assert sent.body["temperature"] == 0.2
    assert "stream_options" not in sent.body
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    metrics = httpx.get(f"{gateway_server.base_url}/metrics").text
    assert 'agent_api_tokens_total{kind="prompt",model="fake-model"} 11.0' in metrics
    assert 'agent_api_upstream_request_duration_seconds_count{model="fake-model",status="success"} 1.0' in metrics
    assert UPSTREAM_KEY not in metrics


async def test_async_streaming_with_include_usage(gateway_server: GatewayServer) -> None:
    client = gateway_server.async_client()
    stream = await client.chat.completions.create(
        model="fake-model", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    await client.close()
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.total_tokens == 18
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_include_usage_hides_usage_but_asks_upstream(gateway_server: GatewayServer) -> None:
    response, lines = sse_lines(gateway_server, {"model": "fake-model", "messages": HELLO, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert gateway_server.upstream.requests[0].body["stream_options"] == {"include_usage": True}


def test_parallel_tool_calls_stream_with_strict_first_deltas(gateway_server: GatewayServer) -> None:
    gateway_server.upstream.reset(
        UpstreamScript(
            words=[],
            tool_calls=[("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Oslo"}')],
            repeat_tool_call_fields=True,
            vary_ids=True,
        )
    )
    stream = gateway_server.client().chat.completions.create(
        model="fake-model", messages=HELLO, tools=[WEATHER_TOOL], parallel_tool_calls=True, stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    firsts: set[int] = set()
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                if delta.index not in firsts:
                    firsts.add(delta.index)
                    assert delta.id
                    assert delta.type == "function"
                    assert delta.function is not None
                    assert delta.function.name == "get_weather"
                    calls[delta.index] = {"id": delta.id, "arguments": ""}
                else:
                    assert delta.id is None
                    assert delta.function is not None
                    assert delta.function.name is None
                assert delta.function is not None
                calls[delta.index]["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert [json.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert gateway_server.upstream.requests[0].body["tools"] == [WEATHER_TOOL]


def test_non_streaming_tool_calls_and_n(gateway_server: GatewayServer) -> None:
    gateway_server.upstream.reset(UpstreamScript(words=[], tool_calls=[("get_weather", '{"city": "Rome"}')]))
    answer = gateway_server.client().chat.completions.create(
        model="fake-model", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="auto", n=2
    )
    assert [c.index for c in answer.choices] == [0, 1]
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert answer.choices[0].finish_reason == "tool_calls"


async def test_n_streams_every_choice(gateway_server: GatewayServer) -> None:
    client = gateway_server.async_client()
    stream = await client.chat.completions.create(model="fake-model", messages=HELLO, stream=True, n=2)
    texts = {0: "", 1: ""}
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    await client.close()
    assert texts == {0: "Hello from the fake upstream.", 1: "Hello from the fake upstream."}


def test_demo_model_streams_a_calculator_tool_call(gateway_server: GatewayServer) -> None:
    calculator: Any = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
    stream = gateway_server.client().chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "what is 6 * 7?"}],
        tools=[calculator],
        stream=True,
    )
    names = [d.function.name for c in stream for d in (c.choices[0].delta.tool_calls or []) if c.choices and d.function]
    assert names[0] == "calculator"
    assert gateway_server.upstream.request_count == 0


def test_request_validation_errors_are_400_with_param(gateway_server: GatewayServer) -> None:
    client = gateway_server.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake-model", messages=HELLO, temperature=5)
    assert caught.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake-model", messages=[{"role": "wizard", "content": "x"}])  # type: ignore[misc,list-item]
    assert caught.value.param == "messages.0.role"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake-model", messages=[])
    assert caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            # A name-only (server) tool that names no tool of this server.
            model="fake-model",
            messages=HELLO,
            tools=[{"type": "function", "function": {"name": "no_such_tool"}}],
        )
    assert caught.value.param == "tools"
    response = httpx.post(
        f"{gateway_server.base_url}/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {gateway_server.api_key()}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    for body, param in (({"messages": HELLO}, "model"), ([1, 2], None)):
        response = httpx.post(
            f"{gateway_server.base_url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {gateway_server.api_key()}"},
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
    assert gateway_server.upstream.request_count == 0


def test_scopes_are_enforced_with_zero_upstream_calls(gateway_server: GatewayServer) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gateway_server.client("demo-only").chat.completions.create(model="fake-model", messages=HELLO, stream=True)
    assert caught.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gateway_server.client("no-tools").chat.completions.create(
            model="fake-model", messages=HELLO, tools=[{"type": "function", "function": {"name": "calculator"}}]
        )
    assert caught.value.code == "tool_not_allowed"
    with pytest.raises(openai.NotFoundError):
        gateway_server.client().chat.completions.create(model="no-such-model", messages=HELLO)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway_server.base_url}/v1", api_key="sk-nobody", max_retries=0).models.list()
    assert gateway_server.upstream.request_count == 0


def test_upstream_failures_are_502_and_504_without_leaks(gateway_server: GatewayServer) -> None:
    gateway_server.upstream.reset(UpstreamScript(status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        gateway_server.client().chat.completions.create(model="fake-model", messages=HELLO, stream=True)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    raw = caught.value.response.text
    assert UPSTREAM_KEY not in raw
    assert "sk-upstream-secret" not in raw
    assert gateway_server.upstream.request_count == 3  # retried before the first byte
    gateway_server.upstream.reset(UpstreamScript(first_byte_delay=3))
    with pytest.raises(openai.InternalServerError) as caught:
        gateway_server.client().chat.completions.create(model="fake-model", messages=HELLO)
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


def test_fallback_model_serves_when_its_upstream_is_down(gateway_server: GatewayServer) -> None:
    answer = gateway_server.client().chat.completions.create(model="fallback-model", messages=HELLO)
    assert answer.model == "fallback-model"
    assert gateway_server.upstream.request_count == 1


def test_per_model_max_tokens_cap(gateway_server: GatewayServer) -> None:
    gateway_server.client().chat.completions.create(model="capped-model", messages=HELLO, max_tokens=4000)
    assert gateway_server.upstream.requests[0].body["max_tokens"] == 50


def test_upstream_429_becomes_429_with_retry_after_and_the_sdk_retries(gateway_server: GatewayServer) -> None:
    limited = UpstreamScript(status=429, retry_after="1", retry_after_ms="30")
    gateway_server.upstream.reset(UpstreamScript(), limited, limited, limited)
    answer = gateway_server.client(max_retries=2).chat.completions.create(model="fake-model", messages=HELLO)
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert gateway_server.upstream.request_count == 4  # 3 tries by the gateway, then the SDK's retry
    gateway_server.upstream.reset(UpstreamScript(status=429, retry_after="1", retry_after_ms="30"))
    with pytest.raises(openai.RateLimitError) as caught:
        gateway_server.client().chat.completions.create(model="fake-model", messages=HELLO)
    assert caught.value.response.headers["retry-after"] == "1"


def test_mid_stream_failure_ends_with_an_error_event_and_done(gateway_server: GatewayServer) -> None:
    gateway_server.upstream.reset(UpstreamScript(abort_after_chunks=3))
    _, lines = sse_lines(gateway_server, {"model": "fake-model", "messages": HELLO, "stream": True})
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))
    assert error["error"]["code"] == "upstream_error"
    assert error["error"]["type"] == "upstream_error"
    assert gateway_server.upstream.request_count == 1  # never retried after the first byte
    gateway_server.upstream.reset(UpstreamScript(error_event_after_chunks=2))
    stream = gateway_server.client().chat.completions.create(model="fake-model", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError):
        list(stream)


def test_idle_stream_gets_heartbeat_comments(gateway_server: GatewayServer) -> None:
    gateway_server.upstream.reset(UpstreamScript(words=[], chunk_delay=0.45))
    _, lines = sse_lines(gateway_server, {"model": "fake-model", "messages": HELLO, "stream": True})
    assert ": ping" in lines
    assert lines[-1] == "data: [DONE]"


def test_client_disconnect_cancels_the_upstream_request_within_a_second(gateway_server: GatewayServer) -> None:
    gateway_server.upstream.reset(UpstreamScript(words=["w"] * 100, chunk_delay=0.1))
    stream = gateway_server.client().chat.completions.create(model="fake-model", messages=HELLO, stream=True)
    iterator = iter(stream)
    next(iterator)
    next(iterator)
    closed_at = time.monotonic()
    stream.close()
    upstream = gateway_server.upstream
    assert upstream.wait_for(lambda: upstream.disconnects == 1, timeout=1.0)
    assert time.monotonic() - closed_at < 1.0
    assert upstream.completed_streams == 0


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_before_the_first_byte_cancels_the_upstream(
    gateway_server: GatewayServer, stream: bool
) -> None:
    gateway_server.upstream.reset(UpstreamScript(first_byte_delay=1.2))
    with pytest.raises(openai.APITimeoutError):
        gateway_server.client(timeout=0.3).chat.completions.create(model="fake-model", messages=HELLO, stream=stream)
    upstream = gateway_server.upstream
    assert upstream.wait_for(lambda: upstream.disconnects == 1, timeout=0.8)


async def test_usage_records_are_written_for_success_error_and_disconnect(gateway_server: GatewayServer) -> None:
    client = gateway_server.async_client()
    await client.chat.completions.create(model="fake-model", messages=HELLO)
    gateway_server.upstream.reset(UpstreamScript(status=500))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="fake-model", messages=HELLO)
    gateway_server.upstream.reset(UpstreamScript(words=["w"] * 100, chunk_delay=0.1))
    stream = await client.chat.completions.create(model="fake-model", messages=HELLO, stream=True)
    await stream.__anext__()
    await stream.close()
    await client.close()
    rows = await usage_rows(gateway_server, 3)
    assert sorted(r["status"] for r in rows) == ["disconnected", "error", "success"]
    success = next(r for r in rows if r["status"] == "success")
    assert (success["prompt_tokens"], success["completion_tokens"], success["total_tokens"]) == (11, 7, 18)
    assert success["api_key_id"] == gateway_server.api_key_id
    assert success["model"] == "fake-model"
    assert success["request_id"]
    disconnected = next(r for r in rows if r["status"] == "disconnected")
    assert disconnected["ttft_ms"] is not None
