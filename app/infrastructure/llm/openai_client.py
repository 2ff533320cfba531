"""`OpenAICompatibleClient`: the production `LLMClient` for any OpenAI-compatible upstream.

One pooled HTTP client per upstream (`app.infrastructure.llm.transports`: the native HTTP/1.1
client by default, or httpx over aiohttp or httpcore). Timeouts on connect, first byte, the idle gap
between chunks and the whole call. Connect errors, 429 and 5xx are retried with jittered
backoff (honouring the upstream's ``Retry-After``) and only before the first chunk was
produced, so never after anything reached our client. Failures become domain errors whose
messages never contain the upstream's key or raw body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from app.application.llm.types import JSONObject, StreamItem, UpstreamChunk
from app.domain.errors import InvalidInput, RateLimited, UpstreamError, UpstreamTimeout
from app.infrastructure.deadline import DeadlineExceeded, LazyDeadline
from app.infrastructure.llm.chunk_view import read_chunk
from app.infrastructure.llm.sse import SSEParser, SSETooLarge
from app.infrastructure.llm.transports import (
    TransportConnectError,
    TransportError,
    TransportTimeoutError,
    UpstreamResponse,
    build_transport,
)
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)

_PASS_THROUGH_CODES = frozenset({"context_length_exceeded", "invalid_value", "missing_field", "model_not_found"})


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    connect_timeout: float = 5.0
    first_byte_timeout: float = 60.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
    max_retries: int = 2
    backoff_base: float = 0.25
    backoff_max: float = 4.0
    # A Retry-After longer than this is not waited for: the 429 goes to the client instead.
    max_retry_wait: float = 10.0
    max_request_bytes: int = 4 * 1024 * 1024
    max_response_bytes: int = 16 * 1024 * 1024
    max_connections: int = 1000
    # "native" (app.infrastructure.llm.http1), "aiohttp" (httpx over aiohttp's pool) or "httpx" (httpcore).
    transport: str = "native"


def _retry_after_seconds(response: UpstreamResponse) -> float | None:
    raw_ms = response.header("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            return max(float(raw_ms) / 1000.0, 0.0)
    raw = response.header("retry-after")
    if raw:
        with contextlib.suppress(ValueError):
            return max(float(raw), 0.0)
    return None


class _Retry(Exception):
    def __init__(self, error: Exception, wait: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


class OpenAICompatibleClient:
    """Speaks ``POST {base_url}/chat/completions`` to one upstream (OpenAI, vLLM, Ollama, LiteLLM...)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        policy: UpstreamPolicy | None = None,
        *,
        on_malformed_chunk: Callable[[str], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or UpstreamPolicy()
        self._url = base_url.rstrip("/") + "/chat/completions"
        headers = {"Accept": "application/json, text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        p = self.policy
        self._transport = build_transport(
            p.transport,
            self._url,
            headers,
            max_connections=p.max_connections,
            connect_timeout=p.connect_timeout,
            write_timeout=p.idle_timeout,
            upstream=name,
        )
        self._read_errors = self._transport.read_errors
        self._secret = api_key or ""
        self._on_malformed = on_malformed_chunk or (lambda _: None)
        self._on_retry = on_retry or (lambda _: None)
        self.malformed_chunks = 0

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- the LLMClient port -------------------------------------------------------------

    async def complete(self, body: JSONObject) -> JSONObject:
        deadline = time.monotonic() + self.policy.total_timeout
        response = await self._open(body, deadline)
        try:
            raw = bytearray()
            async for piece in self._pieces(response, deadline, first=True):
                raw += piece
                if len(raw) > self.policy.max_response_bytes:
                    raise UpstreamError("The upstream model's answer is larger than allowed.")
        finally:
            await response.aclose()
        try:
            answer = _json_decode(raw)
        except ValueError:
            raise UpstreamError("The upstream model returned an answer that is not JSON.") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamError("The upstream model returned an answer without choices.")
        return answer

    async def stream(self, body: JSONObject) -> AsyncIterator[list[StreamItem]]:
        deadline = time.monotonic() + self.policy.total_timeout
        response = await self._open(body, deadline)
        parser = SSEParser(max_event_bytes=min(self.policy.max_response_bytes, 4 * 1024 * 1024))
        received = 0
        done = finished = False
        pieces = self._pieces(response, deadline, first=True)
        try:
            async for piece in pieces:
                received += len(piece)
                if received > self.policy.max_response_bytes:
                    raise UpstreamError("The upstream model's answer is larger than allowed.")
                try:
                    events = parser.feed_data(piece)
                except SSETooLarge:
                    raise UpstreamError("The upstream model sent an event larger than allowed.") from None
                # Everything one read brought is handed on together: one write to the client.
                batch: list[StreamItem] = []
                try:
                    done = self._collect(events, batch)
                finally:
                    if batch:  # what came before an error event is still relayed
                        yield batch
                finished = finished or any(map(_has_finish_reason, batch))
                if done:
                    break
            if not done:
                batch = []
                done = self._collect([event.raw for event in parser.close()], batch)
                finished = finished or any(map(_has_finish_reason, batch))
                if batch:
                    yield batch
            if not done and not finished:
                raise UpstreamError("The upstream model's stream ended before the answer was complete.")
            if done:
                await _drain(pieces)
        finally:
            await pieces.aclose()
            await response.aclose()

    # -- internals ------------------------------------------------------------------------

    def _collect(self, events: list[bytes], batch: list[StreamItem]) -> bool:
        """Appends the chunks of `events` (their data) to `batch`; True at ``[DONE]``. An error
        event raises with the chunks before it already in `batch`."""
        for data in events:
            if data == b"[DONE]" or data.strip() == b"[DONE]":
                return True
            item = self._read(data)
            if item is not None:
                batch.append(item)
        return False

    def _read(self, raw: bytes) -> StreamItem | None:
        """One event's chunk (see `chunk_view`); None for one that is not a JSON object (skipped
        and counted); an error object ends the stream."""
        item = read_chunk(raw)
        if item is None:
            self.malformed_chunks += 1
            self._on_malformed(self.name)
            log.warning("upstream_malformed_chunk", upstream=self.name, size=len(raw))
            return None
        if isinstance(item, dict) and "error" in item and "choices" not in item:
            log.warning("upstream_stream_error", upstream=self.name, code=_error_field(item, "code"))
            raise UpstreamError("The upstream model failed while answering.")
        return item

    async def _pieces(self, response: UpstreamResponse, deadline: float, *, first: bool) -> AsyncGenerator[bytes, None]:
        """The body, with the first-byte, idle-gap and total timeouts applied to every read
        (one `LazyDeadline` for them all: a stream reads many times)."""
        read = response.read
        read_errors = self._read_errors
        waiting_first = first
        timeout = LazyDeadline()
        try:
            while True:
                budget = self.policy.first_byte_timeout if waiting_first else self.policy.idle_timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamTimeout("The upstream model did not finish in time.")
                try:
                    with timeout.waiting(min(budget, remaining)):
                        piece = await read()
                except DeadlineExceeded:
                    raise UpstreamTimeout("The upstream model stopped answering (timeout).") from None
                except read_errors as exc:
                    log.warning("upstream_read_failed", upstream=self.name, error=type(exc).__name__)
                    raise UpstreamError("The upstream model's connection broke while answering.") from None
                if not piece:
                    return
                waiting_first = False
                yield piece
        finally:
            timeout.close()

    async def _open(self, body: JSONObject, deadline: float) -> UpstreamResponse:
        payload = _json_encode(body)
        if len(payload) > self.policy.max_request_bytes:
            raise InvalidInput("The request is larger than the upstream accepts.", code="request_too_large")
        attempt = 0
        while True:
            try:
                return await self._attempt(payload, deadline)
            except _Retry as retry:
                if attempt >= self.policy.max_retries:
                    raise retry.error from None
                backoff = random.uniform(0, min(self.policy.backoff_max, self.policy.backoff_base * 2**attempt))  # noqa: S311
                wait = max(retry.wait, backoff) if retry.wait is not None else backoff
                if wait > self.policy.max_retry_wait or time.monotonic() + wait >= deadline:
                    raise retry.error from None
                attempt += 1
                self._on_retry(self.name)
                log.info("upstream_retry", upstream=self.name, attempt=attempt, wait_s=round(wait, 3))
                await asyncio.sleep(wait)

    async def _attempt(self, payload: bytes, deadline: float) -> UpstreamResponse:
        timeout = min(self.policy.first_byte_timeout, max(deadline - time.monotonic(), 0.001))
        try:
            # asyncio.timeout, not wait_for: no task per request.
            async with asyncio.timeout(timeout):
                response = await self._transport.post(payload)
        except TimeoutError:
            raise UpstreamTimeout("The upstream model did not answer in time.") from None
        except TransportConnectError as exc:
            log.warning("upstream_connect_failed", upstream=self.name, error=exc.kind)
            raise _Retry(UpstreamError("The upstream model is unreachable."), None) from None
        except TransportTimeoutError:
            raise UpstreamTimeout("The upstream model did not answer in time.") from None
        except TransportError as exc:
            log.warning("upstream_request_failed", upstream=self.name, error=exc.kind)
            raise _Retry(UpstreamError("The upstream model's connection failed."), None) from None
        if response.status_code < 400:
            return response
        try:
            error = await self._error_of(response)
        finally:
            await response.aclose()
        raise error

    async def _error_of(self, response: UpstreamResponse) -> Exception:
        status = response.status_code
        detail: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.policy.idle_timeout):
                raw = await self._read_capped(response, 64 * 1024)
            parsed = json.loads(raw)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                detail = parsed["error"]
        log.warning("upstream_error_status", upstream=self.name, status=status, code=_error_field(detail, "code"))
        if status == 429:
            wait = _retry_after_seconds(response)
            return _Retry(
                RateLimited("The upstream model is rate limited; retry shortly.", retry_after_seconds=wait or 1.0),
                wait,
            )
        if status >= 500:
            return _Retry(
                UpstreamError(f"The upstream model failed (status {status})."), _retry_after_seconds(response)
            )
        if status in (400, 404, 413, 422):
            code = _error_field(detail, "code")
            message = _error_field(detail, "message")
            if self._secret and len(self._secret) >= 8:
                message = message.replace(self._secret, "[redacted]")
            return InvalidInput(
                # The upstream's own explanation is what the caller needs (e.g. context length);
                # cut short, and only its message field, never the raw body.
                f"The upstream model rejected the request: {message[:300]}"
                if message
                else f"The upstream model rejected the request (status {status}).",
                code=code if code in _PASS_THROUGH_CODES else "invalid_value",
                param=_error_field(detail, "param") or None,
            )
        return UpstreamError(f"The upstream model refused the request (status {status}).")

    @staticmethod
    async def _read_capped(response: UpstreamResponse, cap: int) -> bytes:
        data = bytearray()
        while piece := await response.read():
            data += piece
            if len(data) >= cap:
                break
        return bytes(data)


_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode
# After `[DONE]` the rest of the body (normally just the chunked terminator) is read, so the
# connection goes back to the pool instead of being closed; bounded in size and time.
_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0


async def _drain(pieces: AsyncIterator[bytes]) -> None:
    drained = 0
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for piece in pieces:
                drained += len(piece)
                if drained > _DRAIN_BYTES:
                    return


def _error_field(detail: dict[str, Any], key: str) -> str:
    value = detail.get(key)
    return value if isinstance(value, str) else ""


def _has_finish_reason(item: StreamItem) -> bool:
    if isinstance(item, UpstreamChunk):
        for choice in item.view.choices:  # noqa: SIM110 - a loop, not any(<generator>): runs per chunk
            if choice.finish_reason:
                return True
        return False
    choices = item.get("choices")
    return isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices)
