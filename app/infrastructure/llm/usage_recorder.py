"""`BatchingUsageRecorder`: writes usage records behind the request, in batches.

`record()` only puts the record on a bounded in-memory queue (never blocks, never raises).
A background task drains it: a batch is written when it reaches `batch_size` records or
`flush_interval` seconds after its first record, with its own database session (never the
request's). On shutdown the queue is drained. A full queue is counted and logged: the
request itself is never refused because its usage could not be queued.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.application.llm.types import UsageRecord
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.persistence.models import UsageRecordModel

log = get_logger(__name__)


class BatchingUsageRecorder:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue: int = 10_000,
        on_dropped: Callable[[], None] | None = None,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._gathering: list[UsageRecord] = []
        self._on_dropped = on_dropped or (lambda: None)
        self._on_written = on_written or (lambda _: None)
        self.dropped = 0
        self.written = 0

    def record(self, record: UsageRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            self._on_dropped()
            log.warning("usage_queue_full", model=record.model, status=record.status)

    @property
    def depth(self) -> int:
        """Records waiting to be written (queued, or gathered into the next batch)."""
        return self._queue.qsize() + len(self._gathering)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-recorder")

    async def aclose(self) -> None:
        """Stops the writer and flushes everything still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight is not None:
            await self._inflight
        gathering, self._gathering = self._gathering, []
        await self._write(gathering)
        while not self._queue.empty():
            await self._write(self._take(self._batch_size))

    async def flush(self) -> None:
        """Writes whatever is queued now (tests and shutdown)."""
        while not self._queue.empty():
            await self._write(self._take(self._batch_size))

    def _take(self, limit: int) -> list[UsageRecord]:
        batch: list[UsageRecord] = []
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Kept on the instance while it is being gathered, so that aclose() (which cancels
            # this task) writes the records already taken off the queue instead of losing them.
            self._gathering = batch = [await self._queue.get()]
            deadline = loop.time() + self._flush_interval
            while len(batch) < self._batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout=remaining))
                except TimeoutError:
                    break
            self._gathering = []
            # Shielded: a shutdown does not cut a batch in half; aclose() waits for it.
            self._inflight = asyncio.ensure_future(self._write(batch))
            await asyncio.shield(self._inflight)

    async def _write(self, batch: list[UsageRecord]) -> None:
        if not batch:
            return
        rows = [
            {
                "id": r.id,
                "user_id": r.user_id,
                "api_key_id": r.api_key_id,
                "model": r.model,
                "prompt_tokens": r.usage.prompt_tokens,
                "completion_tokens": r.usage.completion_tokens,
                "total_tokens": r.usage.total_tokens,
                "latency_ms": r.latency_ms,
                "ttft_ms": r.ttft_ms,
                "status": r.status,
                "error_code": r.error_code,
                "request_id": r.request_id,
                "created_at": r.created_at,
            }
            for r in batch
        ]
        try:
            async with self._session_factory() as session:
                await session.execute(insert(UsageRecordModel), rows)
                await session.commit()
        except Exception as exc:  # noqa: BLE001 - a failed batch is logged and counted, never raised into requests
            self.dropped += len(batch)
            for _ in batch:
                self._on_dropped()
            log.error("usage_batch_write_failed", records=len(batch), error=type(exc).__name__)
            return
        self.written += len(batch)
        self._on_written(len(batch))


class MeteredUsageRecorder:
    """Counts tokens and latencies in Prometheus, then hands the record to the batching writer."""

    def __init__(self, inner: BatchingUsageRecorder, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def record(self, record: UsageRecord) -> None:
        try:
            m = self._metrics
            m.tokens.labels(record.model, "prompt").inc(record.usage.prompt_tokens)
            m.tokens.labels(record.model, "completion").inc(record.usage.completion_tokens)
            m.upstream_latency.labels(record.model, record.status).observe(record.latency_ms / 1000)
            if record.ttft_ms is not None:
                m.time_to_first_token.labels(record.model).observe(record.ttft_ms / 1000)
        finally:
            self._inner.record(record)
