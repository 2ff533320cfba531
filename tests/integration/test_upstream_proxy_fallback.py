"""The native transport cannot speak to a proxy: when the environment sets one for an upstream,
that upstream falls back to httpx (``trust_env``), and its requests really go through the proxy.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.infrastructure.llm.openai_client import OpenAICompatibleClient, UpstreamPolicy
from app.infrastructure.llm.transports import HttpxTransport, NativeTransport, build_transport, proxy_for
from tests.support.raw_upstream import RawUpstream, ok

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_proxy_for_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy_for("https://api.openai.com/v1/chat/completions") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxy_for("https://api.openai.com/v1/chat/completions") == "http://proxy.internal:3128"
    assert proxy_for("http://vllm.internal:8000/v1/chat/completions") is None  # HTTPS_PROXY only
    monkeypatch.setenv("ALL_PROXY", "http://proxy.internal:3128")
    assert proxy_for("http://vllm.internal:8000/v1/chat/completions") == "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "vllm.internal,.corp.example")
    assert proxy_for("http://vllm.internal:8000/v1/chat/completions") is None
    assert proxy_for("https://llm.corp.example/v1/chat/completions") is None
    assert proxy_for("https://api.openai.com/v1/chat/completions") == "http://proxy.internal:3128"


def _kinds(url: str, kind: str) -> type:
    transport = build_transport(kind, url, {}, max_connections=4, connect_timeout=1, write_timeout=1, upstream="u")
    return type(transport)


async def test_native_falls_back_to_httpx_only_where_a_proxy_applies(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert _kinds("https://api.openai.com/v1/chat/completions", "native") is NativeTransport
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    with caplog.at_level(logging.INFO):
        assert _kinds("https://api.openai.com/v1/chat/completions", "native") is HttpxTransport
    assert caplog.text.count("upstream_proxy_fallback") == 1
    assert "proxy.internal" not in caplog.text  # the proxy URL may carry credentials
    assert _kinds("https://127.0.0.1:8443/v1/chat/completions", "native") is NativeTransport
    assert _kinds("https://api.openai.com/v1/chat/completions", "aiohttp") is HttpxTransport
    assert _kinds("https://user:secret@llm.example/v1/chat/completions", "native") is HttpxTransport
    with pytest.raises(ValueError, match="unknown upstream HTTP transport"):
        _kinds("https://api.openai.com/v1/chat/completions", "curl")


async def test_requests_of_a_proxied_upstream_go_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "via proxy"}, "finish_reason": "stop"}]}'  # noqa: E501

    async def proxy(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while data := await server.serve(reader, lambda head, body: ok(answer)):
            writer.write(data)
            await writer.drain()

    async with RawUpstream(proxy) as server:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
        llm = OpenAICompatibleClient("far", "http://llm.far.example/v1", "sk-x", UpstreamPolicy(transport="native"))
        try:
            reply = await llm.complete({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        finally:
            await llm.aclose()
    assert reply["choices"][0]["message"]["content"] == "via proxy"
    # A forward proxy gets the absolute URL of the upstream in the request line.
    assert server.requests[0][0].startswith(b"POST http://llm.far.example/v1/chat/completions HTTP/1.1")
