"""Upstream connections are reused: after a stream's `[DONE]` and after a plain answer.

Against the benchmark's keep-alive mock upstream (bench/mock_upstream.py), in its own thread.
Before the fix, a stream ended at `[DONE]` was closed before its chunked terminator was read,
so every stream cost a new TCP connection to the upstream.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from app.infrastructure.llm.openai_client import OpenAICompatibleClient, UpstreamPolicy
from app.infrastructure.persistence.embedded import free_port
from bench import mock_upstream
from tests.support.chunks import stream_objects


class KeepAliveUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="keepalive-upstream", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await mock_upstream.handle(reader, writer)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@pytest.fixture
def upstream() -> Iterator[KeepAliveUpstream]:
    server = KeepAliveUpstream()
    yield server
    server.close()


BODY: dict[str, Any] = {"model": "bench-fast", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
async def test_streams_and_answers_reuse_one_connection(upstream: KeepAliveUpstream, transport: str) -> None:
    llm = OpenAICompatibleClient(
        "mock", f"http://127.0.0.1:{upstream.port}/v1", None, UpstreamPolicy(transport=transport)
    )
    try:
        for _ in range(3):
            chunks = await stream_objects(llm, {**BODY, "stream": True})
            assert chunks[-1]["usage"]["total_tokens"] == 32
            answer = await llm.complete(BODY)
            assert answer["choices"][0]["finish_reason"] == "stop"
    finally:
        await llm.aclose()
    assert upstream.connections == 1
