"""Use cases of the OpenAI-compatible gateway: list models, get one, create a chat completion."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from app.application.llm.chunks import ChunkNormaliser, new_completion_id, normalise_completion, prompt_text
from app.application.llm.types import (
    ChatRequest,
    JSONObject,
    ModelCatalog,
    ModelInfo,
    ModelTarget,
    StreamItem,
    UpstreamChunk,
    Usage,
    UsageRecord,
    UsageRecorder,
    UsageStatus,
)
from app.domain.errors import DomainError, Forbidden, InvalidInput, NotFound, RateLimited, UpstreamError
from app.domain.principal import Principal


class ListModels:
    """The models the caller may use (a key's `allowed_models` narrows the catalogue)."""

    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog

    def __call__(self, principal: Principal) -> list[ModelInfo]:
        return [m for m in self._catalog.models() if principal.may_use_model(m.id)]


class GetModel:
    """One model by name; a model the caller may not use is as unknown as a missing one (404)."""

    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog

    def __call__(self, principal: Principal, model_id: str) -> ModelInfo:
        model = self._catalog.get(model_id)
        if model is None or not principal.may_use_model(model_id):
            raise NotFound(f"The model '{model_id}' does not exist.", code="model_not_found", param="model")
        return model


def _upstream_body(request: ChatRequest, target: ModelTarget) -> JSONObject:
    # A shallow copy: only top-level members are replaced below, never changed in place, so the
    # client's body (the next target's starting point) stays as it came.
    body = dict(request.body)
    body["model"] = target.upstream_model
    if request.stream:
        body["stream"] = True
        # Usage is always asked for (billing); the client sees it only when it asked.
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    if target.max_tokens is not None:
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if isinstance(value, int) and value > target.max_tokens:
                body[key] = target.max_tokens
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = target.max_tokens
    return body


# What the gateway sends for one chunk: the upstream's JSON bytes (relayed as they came, with
# our id and model), or a chunk object to encode.
RelayedChunk = bytes | JSONObject


class ChatStream:
    """An open streaming completion: its first chunk already arrived, so the HTTP status is 200.

    `batches` yields, per upstream read, the chunks to send (then the usage chunk when the
    client asked for it); iterating the stream itself yields them one by one as objects (the
    agent loop reads them). Whatever happens (end, upstream failure, client gone) one usage
    record is written.
    """

    def __init__(
        self,
        *,
        first: list[RelayedChunk],
        first_items: list[StreamItem],
        rest: AsyncIterator[list[StreamItem]],
        normaliser: ChunkNormaliser,
        request: ChatRequest,
        finish: Callable[[str, Usage, str | None], None],
    ) -> None:
        self._first: list[RelayedChunk] | None = first
        self._first_items = first_items
        self._rest = rest
        self._normaliser = normaliser
        self._request = request
        self._finish = finish
        self._started = False

    @property
    def completion_id(self) -> str:
        return self._normaliser.completion_id

    @property
    def usage(self) -> Usage:
        """Tokens so far: the upstream's usage once reported, else an estimate of what was relayed."""
        return self._normaliser.final_usage(prompt_text(self._request.body))

    def batches(self) -> AsyncIterator[list[RelayedChunk]]:
        """The chunks to send, in lists of those that arrived together (one write each)."""
        return self._relayed(decoded=False)

    async def __aiter__(self) -> AsyncIterator[JSONObject]:
        # Closing this iterator closes the relay under it at once (and so the upstream request).
        async with contextlib.aclosing(self._relayed(decoded=True)) as batches:
            async for batch in batches:
                for chunk in batch:
                    yield chunk  # type: ignore[misc]  # decoded=True: objects only

    async def _relayed(self, *, decoded: bool) -> AsyncGenerator[list[RelayedChunk]]:
        self._started = True
        status, error_code = UsageStatus.DISCONNECTED, None
        relay = self._normaliser.relay
        try:
            first, self._first = self._first, None
            if first is not None:
                yield _decoded(first, self._first_items) if decoded else first
            async for items in self._rest:
                out = [chunk for item in items if (chunk := relay(item)) is not None]
                if out:
                    yield _decoded(out, items) if decoded else out
            usage = self._normaliser.final_usage(prompt_text(self._request.body))
            if self._request.include_usage:
                yield [self._normaliser.usage_chunk(usage)]
            status = UsageStatus.SUCCESS
        except DomainError as exc:
            status, error_code = UsageStatus.ERROR, exc.code
            raise
        finally:
            self._finish(status, self._normaliser.final_usage(prompt_text(self._request.body)), error_code)
            await _aclose(self._rest)

    async def aclose(self) -> None:
        """Ends a stream nobody iterated (its client left before the first byte was sent):
        the upstream request is closed and its usage recorded. A no-op once iteration began
        (iteration's own ending does both)."""
        if self._started:
            return
        self._started = True
        try:
            self._finish(UsageStatus.DISCONNECTED, self._normaliser.final_usage(prompt_text(self._request.body)), None)
        finally:
            await _aclose(self._rest)


def _decoded(chunks: list[RelayedChunk], items: list[StreamItem]) -> list[RelayedChunk]:
    """`chunks` as objects: relayed bytes decoded with their upstream chunk's own decoder."""
    if all(isinstance(chunk, dict) for chunk in chunks):
        return chunks
    decoder = next(item.decode for item in items if isinstance(item, UpstreamChunk))
    return [decoder(chunk) if isinstance(chunk, bytes) else chunk for chunk in chunks]


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class CreateChatCompletion:
    """Checks the caller's scopes, routes the request to the model's targets and records usage.

    Targets (the model's upstream, then its fallbacks) are tried in order while nothing has
    reached the client yet; once a stream has produced its first chunk it is never retried.
    """

    def __init__(
        self, catalog: ModelCatalog, recorder: UsageRecorder, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._catalog = catalog
        self._recorder = recorder
        self._clock = clock

    def authorize(self, principal: Principal, request: ChatRequest) -> ModelInfo:
        """Every check that needs no upstream: model exists and is allowed, tools are allowed."""
        model = self._catalog.get(request.model)
        if model is None:
            raise NotFound(f"The model '{request.model}' does not exist.", code="model_not_found", param="model")
        if not principal.may_use_model(request.model):
            raise Forbidden(
                f"This credential may not use the model '{request.model}'.", code="model_not_allowed", param="model"
            )
        for tool in request.body.get("tools") or []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and "parameters" not in function:
                name = str(function.get("name"))
                if not principal.may_use_tool(name):
                    raise Forbidden(
                        f"This credential may not use the tool '{name}'.", code="tool_not_allowed", param="tools"
                    )
                raise InvalidInput(
                    f"The tool '{name}' has no 'parameters': server-side tools are not available on this"
                    " endpoint yet; describe the function with a JSON Schema in 'parameters'.",
                    code="invalid_value",
                    param="tools",
                )
        return model

    async def complete(self, principal: Principal, request: ChatRequest) -> JSONObject:
        model = self.authorize(principal, request)
        started = self._clock()
        prompt = prompt_text(request.body)
        try:
            answer = await self._first_working(model, lambda t: t.client.complete(_upstream_body(request, t)))
        except DomainError as exc:
            self._record(principal, request, started, None, UsageStatus.ERROR, Usage(), exc.code)
            raise
        except asyncio.CancelledError:
            self._record(principal, request, started, None, UsageStatus.DISCONNECTED, Usage(), None)
            raise
        answer, usage = normalise_completion(answer, model=request.model, prompt=prompt)
        self._record(principal, request, started, None, UsageStatus.SUCCESS, usage, None)
        return answer

    async def stream(self, principal: Principal, request: ChatRequest) -> ChatStream:
        """Opens the stream and waits for its first chunk (errors before it are plain HTTP errors)."""
        model = self.authorize(principal, request)
        started = self._clock()
        normaliser = ChunkNormaliser(new_completion_id(), request.model, int(time.time()))

        async def open_target(
            target: ModelTarget,
        ) -> tuple[list[RelayedChunk], list[StreamItem], AsyncIterator[list[StreamItem]]]:
            iterator = target.client.stream(_upstream_body(request, target)).__aiter__()
            try:
                while True:
                    items = await iterator.__anext__()
                    first = [chunk for item in items if (chunk := normaliser.relay(item)) is not None]
                    if first:
                        return first, items, iterator
            except StopAsyncIteration:
                raise UpstreamError("The upstream model returned an empty answer.") from None
            except BaseException:
                await _aclose(iterator)
                raise

        try:
            first, first_items, rest = await self._first_working(model, open_target)
        except DomainError as exc:
            self._record(principal, request, started, None, UsageStatus.ERROR, Usage(), exc.code)
            raise
        except asyncio.CancelledError:
            self._record(principal, request, started, None, UsageStatus.DISCONNECTED, Usage(), None)
            raise
        ttft = self._clock()

        def finish(status: str, usage: Usage, error_code: str | None) -> None:
            self._record(principal, request, started, ttft, status, usage, error_code)

        return ChatStream(
            first=first, first_items=first_items, rest=rest, normaliser=normaliser, request=request, finish=finish
        )

    async def _first_working(self, model: ModelInfo, attempt: Callable[[ModelTarget], Any]) -> Any:
        last: DomainError | None = None
        for target in model.targets:
            try:
                return await attempt(target)
            except (UpstreamError, RateLimited) as exc:
                last = exc  # the next target is tried; nothing was sent to the client yet
        if last is None:
            raise UpstreamError(f"The model '{model.id}' has no upstream configured.")
        raise last

    def _record(  # noqa: PLR0917 - a private helper with one call shape
        self,
        principal: Principal,
        request: ChatRequest,
        started: float,
        first_token_at: float | None,
        status: str,
        usage: Usage,
        error_code: str | None,
    ) -> None:
        now = self._clock()
        self._recorder.record(
            UsageRecord(
                user_id=principal.user_id,
                api_key_id=principal.api_key_id,
                model=request.model,
                usage=usage,
                latency_ms=max(0, int((now - started) * 1000)),
                ttft_ms=None if first_token_at is None else max(0, int((first_token_at - started) * 1000)),
                status=status,
                created_at=datetime.now(UTC),
                request_id=request.request_id,
                error_code=error_code,
            )
        )
