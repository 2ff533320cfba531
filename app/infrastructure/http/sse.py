"""Server-Sent Events helpers for the HTTP layer: encoding and the idle heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Generic, TypeVar

import msgspec

from app.domain.errors import ServiceUnavailable
from app.infrastructure.deadline import DeadlineExceeded, LazyDeadline
from app.infrastructure.shutdown import Drain

T = TypeVar("T")

PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}

_cleanups: set[asyncio.Task[None]] = set()


_encode = msgspec.json.Encoder().encode


def encode_data(payload: Any) -> bytes:
    """One `data:` event: compact UTF-8 JSON (msgspec: several times faster than `json.dumps`)."""
    return b"data: " + _encode(payload) + b"\n\n"


class Heartbeat:
    """Marker yielded by `batches_with_heartbeat` when the source was idle for the interval."""


HEARTBEAT = Heartbeat()


class _End:
    """The source is exhausted (or failed: `error`)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


async def batches_with_heartbeat(
    source: AsyncIterator[T], interval: float, max_batch: int = 64, *, drain: Drain | None = None
) -> AsyncGenerator[list[T] | Heartbeat, None]:
    """The items of `source` in lists of whatever arrived together, with `HEARTBEAT` whenever it
    stays silent for `interval` seconds. An exception of the source is raised after the items
    before it.

    With a `drain`, its deadline (graceful shutdown) ends the relay: `source` is closed (which
    cancels its upstream call and lets it store what it produced), then
    `ServiceUnavailable("shutting_down")` is raised, which every relay renders as the stream's
    in-band error event before ending it.

    One reader task per stream advances the source (so waiting can time out without
    cancelling it) and buffers at most `max_batch` items: the consumer takes everything
    buffered at once, so several events of one upstream read become one write to the
    client instead of one each. When the consumer goes away (client disconnect: the response
    task is cancelled) the reader is cancelled and the source closed in a task of its own,
    so the upstream request is torn down even though the response's scope stays cancelled.
    """
    iterator = source.__aiter__()
    buffer = _Buffer(iterator, max_batch)
    reader = asyncio.ensure_future(buffer.fill())
    unsubscribe = drain.on_expiry(buffer.expire) if drain is not None else None
    idle = LazyDeadline()  # one timer for every wait of the stream, not one per wait
    finished = False
    try:
        while True:
            if buffer.expired:
                finished = True
                await _stop(reader, iterator)
                raise ServiceUnavailable("The server is shutting down; the stream was ended.", code="shutting_down")
            if not buffer.items:
                try:
                    with idle.waiting(interval):
                        await buffer.ready.wait()
                except DeadlineExceeded:
                    yield HEARTBEAT
                    continue
                if buffer.expired:
                    continue
            taken = buffer.take()
            end = taken[-1] if isinstance(taken[-1], _End) else None
            items: list[T] = [item for item in taken if not isinstance(item, _End)]
            if items:
                yield items
            if end is not None:
                finished = True
                if end.error is not None:
                    raise end.error
                return
    finally:
        idle.close()
        if unsubscribe is not None:
            unsubscribe()
        if not finished:
            task = asyncio.ensure_future(_stop(reader, iterator))
            _cleanups.add(task)
            task.add_done_callback(_cleanups.discard)


class _Buffer(Generic[T]):
    """What the reader task read from the source and the consumer has not taken yet."""

    def __init__(self, iterator: AsyncIterator[T], max_batch: int) -> None:
        self._iterator = iterator
        self._max_batch = max_batch
        self.items: list[T | _End] = []
        self.ready = asyncio.Event()  # there is something to take (or the drain expired)
        self._room = asyncio.Event()  # there is room for more
        self._room.set()
        self.expired = False

    async def fill(self) -> None:
        try:
            async for item in self._iterator:
                if len(self.items) >= self._max_batch:
                    self._room.clear()
                    await self._room.wait()
                self.items.append(item)
                self.ready.set()
            self.items.append(_End(None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, raised there in order
            self.items.append(_End(exc))
        self.ready.set()

    def take(self) -> list[T | _End]:
        taken, self.items = self.items, []
        self.ready.clear()
        self._room.set()
        return taken

    def expire(self) -> None:
        self.expired = True
        self.ready.set()


async def _stop(reader: asyncio.Future[None], iterator: AsyncIterator[Any]) -> None:
    reader.cancel()
    with contextlib.suppress(BaseException):
        await reader
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(BaseException):
            await aclose()


async def with_heartbeat(
    source: AsyncIterator[T], interval: float, *, drain: Drain | None = None
) -> AsyncGenerator[T | Heartbeat, None]:
    """The items of `source` one by one, with `HEARTBEAT` whenever it stays silent for `interval`
    seconds (for relays that render event by event, like the agent's); `drain` as for
    `batches_with_heartbeat`."""
    async with contextlib.aclosing(batches_with_heartbeat(source, interval, drain=drain)) as batches:
        async for batch in batches:
            if isinstance(batch, Heartbeat):
                yield batch
            else:
                for item in batch:
                    yield item
