"""Renderings of the agent loop's typed events: the SSE event stream, WebSocket messages,
and the non-streaming wait (which a client disconnect cancels).

The loop decides what happens; these only encode. SSE: ``id: <n>`` (increasing from 1),
``event: <type>``, ``data: <json>``; a ``: ping`` comment while idle; ``event: done`` /
``data: [DONE]`` always last. WebSocket: each event is one JSON object ``{"type": ..., **data}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from litestar.types import Receive

from app.application.agent.events import INTERNAL, INTERNAL_MESSAGE, AgentEvent, ErrorEvent
from app.application.agent.runs import RunStream
from app.domain.errors import DomainError
from app.infrastructure.http.errors import error_body, status_for
from app.infrastructure.http.sse import HEARTBEAT, PING, with_heartbeat
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.shutdown import Drain

log = get_logger(__name__)
T = TypeVar("T")

DONE_TYPE = "done"


def event_data(event: AgentEvent) -> dict[str, Any]:
    """The contract's ``data`` object of an event; an error gets the contract's error shape
    (``type`` from the one HTTP error mapping, nothing internal)."""
    if isinstance(event, ErrorEvent):
        error = event.error
        if error is None:
            return error_body(500, INTERNAL_MESSAGE, code=INTERNAL)
        return error_body(status_for(error), error.message, code=error.code, param=error.param)
    return event.json()


def encode_sse(seq: int, event_type: str, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {seq}\nevent: {event_type}\ndata: {payload}\n\n".encode()


def ws_message(event: AgentEvent) -> dict[str, Any]:
    """One WebSocket message: the event's data with its ``type``."""
    return {"type": event.type, **event_data(event)}


class _Events:
    """A `RunStream` as an async iterator whose ``aclose`` is the stream's own (which also
    ends a run whose events were never read)."""

    def __init__(self, stream: RunStream) -> None:
        self._stream = stream
        self._iterator: AsyncIterator[AgentEvent] | None = None

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> AgentEvent:
        if self._iterator is None:
            self._iterator = self._stream.__aiter__()
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        await self._stream.aclose()


class SseRendering:
    """The agent event stream of one run, as SSE bytes (`events()`).

    A client disconnect cancels the response task: the pending read is cancelled and the
    run's events closed in a task of their own (the loop stores what was produced and ends
    the run ``cancelled``). `close_if_unread` (run after the response) ends the run when the
    response never started to read it (the client left before the first byte).
    """

    def __init__(self, stream: RunStream, heartbeat_seconds: float, metrics: Metrics, drain: Drain) -> None:
        self._stream = stream
        self._heartbeat = heartbeat_seconds
        self._metrics = metrics
        self._drain = drain
        self._started = False

    async def events(self) -> AsyncIterator[bytes]:
        self._started = True
        seq = 0
        self._metrics.active_streams.inc()
        try:
            async for item in with_heartbeat(_Events(self._stream), self._heartbeat, drain=self._drain):
                if item is HEARTBEAT:
                    yield PING
                    continue
                event: AgentEvent = item  # type: ignore[assignment]
                seq += 1
                yield encode_sse(seq, event.type, event_data(event))
        except DomainError as exc:
            # The shutdown deadline: the run was closed (it is stored cancelled, its partial
            # answer incomplete); say why, then end the stream as always.
            seq += 1
            yield encode_sse(seq, "error", error_body(status_for(exc), exc.message, code=exc.code))
        finally:
            self._metrics.active_streams.dec()
        seq += 1
        yield encode_sse(seq, DONE_TYPE, "[DONE]")

    async def close_if_unread(self) -> None:
        if not self._started:
            await self._stream.aclose()


async def unless_disconnected(receive: Receive, work: Coroutine[Any, Any, T]) -> T | None:
    """Runs `work`; cancels it (and so the run it drives) if the client disconnects first.
    The body has been read, so the next ASGI message can only be ``http.disconnect``."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        watcher.cancel()
    if task.cancelled():
        log.info("client_disconnected_before_answer")
        return None
    return task.result()
