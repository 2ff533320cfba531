"""`OpenAICompatibleClient` against a real HTTP upstream on loopback (the fake, in its own thread).

Every test runs on each of the three HTTP transports (native, httpx over aiohttp, httpcore):
they must behave alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.application.llm.types import StreamItem
from app.domain.errors import DomainError, InvalidInput, RateLimited, UpstreamError, UpstreamTimeout
from app.infrastructure.llm.openai_client import OpenAICompatibleClient, UpstreamPolicy
from app.infrastructure.persistence.embedded import free_port
from tests.support.chunks import stream_objects
from tests.support.fake_upstream import FakeUpstream, UpstreamScript

SECRET = "sk-upstream-secret"
FAST = UpstreamPolicy(
    first_byte_timeout=0.5, idle_timeout=0.5, total_timeout=5, max_retries=2, backoff_base=0.01, backoff_max=0.02
)
BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM_BODY: dict[str, Any] = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    yield server
    server.close()


@pytest.fixture(params=["native", "aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(upstream: FakeUpstream, transport: str) -> AsyncIterator[OpenAICompatibleClient]:
    upstream.reset()
    llm = OpenAICompatibleClient("fake", upstream.base_url, SECRET, dataclasses.replace(FAST, transport=transport))
    yield llm
    await llm.aclose()


async def collect(llm: OpenAICompatibleClient, body: dict[str, Any] = STREAM_BODY) -> list[dict[str, Any]]:
    return await stream_objects(llm, body)


def assert_no_leak(exc: DomainError) -> None:
    assert SECRET not in exc.message
    assert "exploded" not in exc.message
    assert "fake upstream failure" not in exc.message


async def test_stream_relays_chunks_and_sends_the_key(client: OpenAICompatibleClient, upstream: FakeUpstream) -> None:
    upstream.reset(UpstreamScript(crlf=True, words=["a", "b", "c"]))
    chunks = await collect(client)
    assert [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]][1:4] == ["a", " b", " c"]
    assert chunks[-1]["usage"]["total_tokens"] == 18
    assert upstream.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert upstream.requests[0].path == "/v1/chat/completions"


async def test_garbage_events_are_skipped_and_counted(client: OpenAICompatibleClient, upstream: FakeUpstream) -> None:
    upstream.reset(UpstreamScript(garbage_after_chunks=2))
    chunks = await collect(client)
    assert chunks[-1]["usage"]
    assert client.malformed_chunks == 1


async def test_5xx_and_429_are_retried_before_the_first_byte(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(), UpstreamScript(status=503), UpstreamScript(status=429, retry_after_ms="20"))
    assert await collect(client)
    assert upstream.request_count == 3


async def test_exhausted_5xx_is_an_upstream_error_without_leaks(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(status=500))
    with pytest.raises(UpstreamError) as caught:
        await client.complete(BODY)
    assert type(caught.value) is UpstreamError
    assert upstream.request_count == 3  # one try and two retries
    assert_no_leak(caught.value)


async def test_exhausted_429_is_rate_limited_with_the_upstreams_retry_after(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(status=429, retry_after="0"))
    with pytest.raises(RateLimited):
        await client.complete(BODY)
    assert upstream.request_count == 3


async def test_a_retry_after_longer_than_allowed_is_not_waited_for(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(status=429, retry_after="3600"))
    with pytest.raises(RateLimited):
        await client.complete(BODY)
    assert upstream.request_count == 1


async def test_connect_errors_are_retried_then_502(transport: str) -> None:
    policy = dataclasses.replace(FAST, transport=transport)
    llm = OpenAICompatibleClient("dead", f"http://127.0.0.1:{free_port()}/v1", SECRET, policy)
    try:
        with pytest.raises(UpstreamError) as caught:
            await llm.complete(BODY)
    finally:
        await llm.aclose()
    assert type(caught.value) is UpstreamError
    assert_no_leak(caught.value)


async def test_400_passes_the_reason_but_not_the_body(client: OpenAICompatibleClient, upstream: FakeUpstream) -> None:
    upstream.reset(
        UpstreamScript(
            status=400,
            error_body=b'{"error": {"message": "too long", "code": "context_length_exceeded", "param": "messages"}}',
        )
    )
    with pytest.raises(InvalidInput) as caught:
        await client.complete(BODY)
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")
    assert upstream.request_count == 1  # client errors are never retried


async def test_first_byte_timeout_is_504_and_not_retried(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(first_byte_delay=2))
    with pytest.raises(UpstreamTimeout):
        await collect(client)
    assert upstream.request_count == 1


async def test_idle_gap_timeout_mid_stream_is_504_and_never_retried(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(chunk_delay=2))
    seen: list[StreamItem] = []

    async def consume() -> None:
        async for batch in client.stream(STREAM_BODY):
            seen.extend(batch)

    with pytest.raises(UpstreamTimeout):
        await consume()
    assert len(seen) >= 1
    assert upstream.request_count == 1


async def test_mid_stream_abort_is_an_error_after_the_first_chunks_and_never_retried(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(abort_after_chunks=3))
    seen: list[StreamItem] = []

    async def consume() -> None:
        async for batch in client.stream(STREAM_BODY):
            seen.extend(batch)

    with pytest.raises(UpstreamError) as caught:
        await consume()
    assert len(seen) == 3
    assert upstream.request_count == 1
    assert_no_leak(caught.value)


async def test_in_band_error_event_is_an_upstream_error(client: OpenAICompatibleClient, upstream: FakeUpstream) -> None:
    upstream.reset(UpstreamScript(error_event_after_chunks=2))
    with pytest.raises(UpstreamError) as caught:
        await collect(client)
    assert_no_leak(caught.value)


@pytest.mark.parametrize("script", [UpstreamScript(empty_stream=True), UpstreamScript(no_done=True, no_finish=True)])
async def test_a_stream_without_finish_reason_and_done_is_an_error(
    client: OpenAICompatibleClient, upstream: FakeUpstream, script: UpstreamScript
) -> None:
    upstream.reset(script)
    with pytest.raises(UpstreamError):
        await collect(client)


async def test_a_stream_without_done_but_finished_is_accepted(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(no_done=True, no_usage=True))
    chunks = await collect(client)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_response_size_cap(upstream: FakeUpstream, transport: str) -> None:
    upstream.reset(UpstreamScript(words=["word"] * 500))
    policy = UpstreamPolicy(max_response_bytes=2048, transport=transport)
    llm = OpenAICompatibleClient("fake", upstream.base_url, SECRET, policy)
    try:
        with pytest.raises(UpstreamError):
            await collect(llm)
        with pytest.raises(InvalidInput):
            await llm.complete(
                {**BODY, "messages": [{"role": "user", "content": "x" * 5000}]} | {"pad": "y" * 4 * 1024 * 1024}
            )
    finally:
        await llm.aclose()


async def test_closing_the_stream_early_closes_the_upstream_connection(
    client: OpenAICompatibleClient, upstream: FakeUpstream
) -> None:
    upstream.reset(UpstreamScript(chunk_delay=0.2, words=["w"] * 20))
    stream = client.stream(STREAM_BODY)
    await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    assert await asyncio.to_thread(upstream.wait_for, lambda: upstream.disconnects == 1, 1.0)
