"""Server-Sent Events helpers for the HTTP layer: encoding and the idle heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

import msgspec

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
    source: AsyncIterator[T], interval: float, max_batch: int = 64
) -> AsyncGenerator[list[T] | Heartbeat, None]:
    """The items of `source` in lists of whatever arrived together, with `HEARTBEAT` whenever it
    stays silent for `interval` seconds. An exception of the source is raised after the items
    before it.

    One reader task per stream advances the source (so waiting can time out without
    cancelling it) and buffers at most `max_batch` items: the consumer takes everything
    buffered at once, so several events of one upstream read become one write to the
    client instead of one each. When the consumer goes away (client disconnect: the response
    task is cancelled) the reader is cancelled and the source closed in a task of its own,
    so the upstream request is torn down even though the response's scope stays cancelled.
    """
    iterator = source.__aiter__()
    buffer: list[T | _End] = []
    ready = asyncio.Event()  # the buffer has something
    room = asyncio.Event()  # the buffer has room
    room.set()

    async def read() -> None:
        try:
            async for item in iterator:
                if len(buffer) >= max_batch:
                    room.clear()
                    await room.wait()
                buffer.append(item)
                ready.set()
            buffer.append(_End(None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, raised there in order
            buffer.append(_End(exc))
        ready.set()

    reader = asyncio.ensure_future(read())
    finished = False
    try:
        while True:
            if not buffer:
                try:
                    async with asyncio.timeout(interval):
                        await ready.wait()
                except TimeoutError:
                    yield HEARTBEAT
                    continue
            taken, buffer[:] = list(buffer), []
            ready.clear()
            room.set()
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
        if not finished:
            task = asyncio.ensure_future(_stop(reader, iterator))
            _cleanups.add(task)
            task.add_done_callback(_cleanups.discard)


async def _stop(reader: asyncio.Future[None], iterator: AsyncIterator[Any]) -> None:
    reader.cancel()
    with contextlib.suppress(BaseException):
        await reader
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(BaseException):
            await aclose()


async def with_heartbeat(source: AsyncIterator[T], interval: float) -> AsyncGenerator[T | Heartbeat, None]:
    """The items of `source` one by one, with `HEARTBEAT` whenever it stays silent for `interval`
    seconds (for relays that render event by event, like the agent's)."""
    async with contextlib.aclosing(batches_with_heartbeat(source, interval)) as batches:
        async for batch in batches:
            if isinstance(batch, Heartbeat):
                yield batch
            else:
                for item in batch:
                    yield item
