"""`last_used_at` of API keys, written behind the request through a bounded queue."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from app.application.ports import UnitOfWorkFactory
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)
BATCH_SIZE = 500


class BackgroundLastUsedWriter:
    """Records key use without touching the request path.

    Each key is queued at most once per interval (per process); a background task writes
    batches (one UPDATE per batch). A full queue drops the stamp, counts it and warns: a
    slightly stale `last_used_at` is better than a slow or failed request. `stop()` writes
    what is still queued.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        interval_seconds: float,
        queue_size: int,
        on_drop: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._interval = interval_seconds
        self._queue_size = queue_size
        self._on_drop = on_drop
        self._clock = clock
        self._queue: asyncio.Queue[tuple[uuid.UUID, datetime]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_queued: dict[uuid.UUID, float] = {}
        self._in_flight: dict[uuid.UUID, datetime] = {}

    @property
    def depth(self) -> int:
        """Last-used updates waiting to be written."""
        return self._queue.qsize() if self._queue is not None else 0

    def record(self, key_id: uuid.UUID, at: datetime) -> None:
        if self._queue is None:
            return
        now = self._clock()
        last = self._last_queued.get(key_id)
        if last is not None and now - last < self._interval:
            return
        try:
            self._queue.put_nowait((key_id, at))
        except asyncio.QueueFull:
            self._on_drop()
            log.warning("api_key_last_used_queue_full", queue_size=self._queue_size)
            return
        if len(self._last_queued) > 100_000:
            self._last_queued.clear()
        self._last_queued[key_id] = now

    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(maxsize=self._queue_size)
            self._task = asyncio.create_task(self._run(), name="api-key-last-used-writer")

    def _drain(self, into: dict[uuid.UUID, datetime]) -> None:
        assert self._queue is not None
        while len(into) < BATCH_SIZE:
            try:
                key_id, at = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            into[key_id] = max(at, into.get(key_id, at))

    async def _write(self, stamps: dict[uuid.UUID, datetime]) -> None:
        try:
            async with self._uow() as uow:
                await uow.api_keys.touch_last_used(stamps)
                await uow.commit()
        except Exception as exc:  # noqa: BLE001 - a failed stamp is logged, never raised into a request
            log.warning("api_key_last_used_write_failed", error=type(exc).__name__, keys=len(stamps))

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            key_id, at = await self._queue.get()
            self._in_flight = {key_id: at}
            self._drain(self._in_flight)
            await self._write(self._in_flight)
            self._in_flight = {}

    async def stop(self) -> None:
        """Write what is queued (and what was being written), then stop."""
        if self._task is None or self._queue is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        pending = dict(self._in_flight)
        while not self._queue.empty():
            self._drain(pending)
            if pending:
                await self._write(pending)
                pending = {}
        if pending:
            await self._write(pending)
        self._queue = None
