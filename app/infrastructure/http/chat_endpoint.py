"""``POST /v1/chat/completions`` as a raw ASGI endpoint: the gateway's hot path.

Every chat completion request is the gateway's hot path, so it is served in front of
Litestar's router: no routing, dependency injection, signature model or response objects
per request (about a third of the gateway's CPU per request, docs/benchmarks.md). The rules
are the same ones the rest of the API follows, through the same functions:

- the caller is authenticated by `authenticate_credential` (the auth middleware's function);
- errors are rendered by the one mapping in `http/errors.py` (domain errors, validation
  with ``param``, bad JSON, 413, 500 with nothing internal);
- the body is validated by the same `ChatCompletionBody` that documents the operation in
  OpenAPI (the Litestar route in `controllers/openai.py`);
- admission, settlement and leases go through `AdmitChatCompletion` and `chat_limits`.

A request with server tools (name-only ``tools`` entries) runs the agent loop, which is
not a hot path: it is handed to the Litestar route with its body replayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from pydantic import ValidationError

from app.application.identity.auth import Authenticator
from app.application.llm.limits import AdmitChatCompletion
from app.application.llm.types import ChatRequest
from app.application.llm.use_cases import ChatStream, CreateChatCompletion
from app.application.ratelimit import Admission
from app.domain.errors import DomainError, InvalidInput
from app.domain.principal import Principal
from app.infrastructure.http.auth import API_KEY_HEADER, authenticate_credential, credential_from_headers
from app.infrastructure.http.chat_limits import AdmittedStream, finish_admission, open_admitted, settle_answer
from app.infrastructure.http.client_watch import ClientGone, ClientWatch
from app.infrastructure.http.controllers.openai import CLIENT_CLOSED_REQUEST, ChatCompletionBody, chat_request_from
from app.infrastructure.http.errors import (
    domain_error_response_parts,
    error_body,
    status_for,
    validation_error_parts,
)
from app.infrastructure.http.server_tools import server_tool_names
from app.infrastructure.http.sse import DONE, PING, SSE_HEADERS, Heartbeat, batches_with_heartbeat, encode_data
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.shutdown import Drain

log = get_logger(__name__)

PATH = "/v1/chat/completions"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
_AUTHORIZATION = b"authorization"
_API_KEY = API_KEY_HEADER.encode()
_CONTENT_LENGTH = b"content-length"
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *((name.lower().encode(), value.encode()) for name, value in SSE_HEADERS.items()),
]


class BodyTooLarge(Exception):
    pass


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def send_json(send: Send, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    body = _encode(payload)
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [_JSON, (_CONTENT_LENGTH, str(len(body)).encode()), *_encoded(headers or {})],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_domain_error(send: Send, exc: DomainError, headers: dict[str, str] | None = None) -> None:
    status, payload, merged = domain_error_response_parts(exc, headers)
    await send_json(send, status, payload, merged)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refused (413) past `limit` bytes, declared or sent."""
    for name, value in scope["headers"]:
        if name == _CONTENT_LENGTH and value.isdigit() and int(value) > limit:
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def validate(raw: Any) -> ChatCompletionBody:
    """`ChatCompletionBody`, or `InvalidInput` naming the first failing field as Litestar does."""
    try:
        return ChatCompletionBody.model_validate(raw)
    except ValidationError as exc:
        details = [
            {"key": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        param, message, code = validation_error_parts(details, "The request body is not valid.")
        raise InvalidInput(message, code=code, param=param) from None


async def relay_chunks(stream: ChatStream, metrics: Metrics, drain: Drain, heartbeat: float) -> AsyncIterator[bytes]:
    """The SSE bytes of an open stream: whatever arrived together in one write (chunks relayed
    as the upstream's bytes where they need no change), ``: ping`` while idle, an in-band
    error if it fails after it began, always ``data: [DONE]`` last."""
    metrics.active_streams.inc()
    try:
        async for reads in batches_with_heartbeat(stream.batches(), heartbeat, drain=drain):
            if isinstance(reads, Heartbeat):
                yield PING
                continue
            parts: list[bytes] = []
            for chunks in reads:
                for chunk in chunks:
                    if isinstance(chunk, bytes):
                        parts += (b"data: ", chunk, b"\n\n")
                    else:
                        parts.append(encode_data(chunk))
            yield b"".join(parts)
    except DomainError as exc:
        log.warning("chat_stream_failed", code=exc.code)
        yield encode_data(error_body(status_for(exc), exc.message, code=exc.code, param=exc.param))
    except Exception as exc:  # the stream has begun: the error goes in-band
        log.exception("chat_stream_crashed", exc_type=type(exc).__name__)
        yield encode_data(error_body(500, "The server failed while streaming.", code="internal_error"))
    finally:
        metrics.active_streams.dec()
    yield DONE


class ChatCompletionsEndpoint:
    """``POST /v1/chat/completions`` (see the module docstring); `fallback` is Litestar's app."""

    def __init__(
        self,
        *,
        fallback: ASGIApp,
        authenticator: Authenticator,
        chat_completion: CreateChatCompletion,
        admit_chat: AdmitChatCompletion,
        metrics: Metrics,
        drain: Drain,
        heartbeat_seconds: float,
        max_body_bytes: int,
    ) -> None:
        self._fallback = fallback
        self._authenticator = authenticator
        self._chat_completion = chat_completion
        self._admit_chat = admit_chat
        self._metrics = metrics
        self._drain = drain
        self._heartbeat = heartbeat_seconds
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["path_template"] = PATH  # the route label of metrics and the access log
        try:
            await self._serve(scope, receive, send)
        except DomainError as exc:
            await send_domain_error(send, exc)
        except BodyTooLarge:
            payload = error_body(413, "The request body is larger than the server accepts.", code="request_too_large")
            await send_json(send, 413, payload)
        except ClientGone:  # before the answer began: nobody listens; 499 is what the access log shows
            log.info("client_disconnected_before_answer")
            await send_json(send, CLIENT_CLOSED_REQUEST, {})
        except Exception as exc:
            log.exception("unhandled_exception", exc_type=type(exc).__name__)
            self._metrics.unhandled_errors.inc()
            await send_json(
                send, 500, error_body(500, "The server failed to handle the request.", code="internal_error")
            )

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = api_key = None
        for name, value in scope["headers"]:
            if name == _AUTHORIZATION:
                authorization = value.decode("latin-1")
            elif name == _API_KEY:
                api_key = value.decode("latin-1")
        principal = await authenticate_credential(self._authenticator, credential_from_headers(authorization, api_key))
        scope["user"] = principal
        body = await read_body(scope, receive, self._max_body)
        try:
            raw = _decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            # msgspec raises UnicodeDecodeError for bytes that are not UTF-8 inside a string, and
            # RecursionError for nesting deeper than it decodes: the client's fault, never a 500.
            raise InvalidInput("The request body is not valid JSON.", code="invalid_json") from None
        data = validate(raw)
        if data.tools and server_tool_names([t.model_dump(exclude_unset=True) for t in data.tools]):
            await self._fallback(scope, _replaying(body, receive), send)
            return
        chat = chat_request_from(data, raw, scope.get("state", {}).get("request_id"))
        # Rate limits: 404/403 first, then one admission (429 / 503) before anything goes upstream.
        admission = await self._admit_chat(principal, chat)
        watch = ClientWatch(receive)  # a disconnect from here on cancels the upstream request
        try:
            if chat.stream:
                await self._stream(principal, chat, admission, watch, send)
            else:
                await self._answer(principal, chat, admission, watch, send)
        finally:
            watch.close()

    async def _answer(
        self, principal: Principal, chat: ChatRequest, admission: Admission, watch: ClientWatch, send: Send
    ) -> None:
        try:
            with watch.armed():
                answer = await settle_answer(admission, chat, self._chat_completion.complete(principal, chat))
            await send_json(send, 200, answer, admission.headers)
        finally:
            # After the response is written: the settlement's round trip is not in its latency.
            await finish_admission(admission)

    async def _stream(
        self, principal: Principal, chat: ChatRequest, admission: Admission, watch: ClientWatch, send: Send
    ) -> None:
        # Waiting for the upstream's first chunk: a disconnect now cancels it too.
        with watch.armed():
            stream = await open_admitted(admission, chat, self._chat_completion.stream(principal, chat))
        relay = AdmittedStream(admission, stream, relay_chunks(stream, self._metrics, self._drain, self._heartbeat))
        start: Message = {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_SSE_HEADERS, *_encoded(admission.headers)],
        }
        try:
            await send(start)
            # A client that leaves cancels the relay (and so the upstream request) at once.
            ended = False
            with watch.armed():
                async for chunk in relay.body:
                    # `data: [DONE]` (always last) goes with the end of the response: one write.
                    ended = chunk is DONE
                    await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientGone:
            pass
        finally:
            await relay.close()


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for an app that reads the body again: the body once, then the real messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Any:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
