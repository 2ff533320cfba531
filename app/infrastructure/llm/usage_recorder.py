"""`BatchingUsageRecorder`: writes usage records behind the request, in batches.

`record()` only appends the record to a bounded in-memory queue (never blocks, never raises,
no task or future per record: it runs once per chat completion). A background task drains
it: a batch is written when it reaches `batch_size` records or `flush_interval` seconds
after its first record, with its own database session (never the request's). On shutdown the
queue is drained. A full queue is counted and logged: the request itself is never refused
because its usage could not be queued.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

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
        self._max_queue = max_queue
        # Records stay here until the write that takes them, so a shutdown never loses one.
        self._queue: deque[UsageRecord] = deque()
        self._arrived = asyncio.Event()  # the queue went from empty to not empty
        self._full = asyncio.Event()  # the queue holds a whole batch
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._on_dropped = on_dropped or (lambda: None)
        self._on_written = on_written or (lambda _: None)
        self.dropped = 0
        self.written = 0

    def record(self, record: UsageRecord) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += 1
            self._on_dropped()
            log.warning("usage_queue_full", model=record.model, status=record.status)
            return
        queue.append(record)
        if len(queue) == 1:
            self._arrived.set()
        if len(queue) >= self._batch_size:
            self._full.set()

    @property
    def depth(self) -> int:
        """Records waiting to be written."""
        return len(self._queue)

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
        await self.flush()

    async def flush(self) -> None:
        """Writes whatever is queued now (tests and shutdown)."""
        while self._queue:
            await self._write(self._take(self._batch_size))

    def _take(self, limit: int) -> list[UsageRecord]:
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(limit, len(queue)))]
        if len(queue) < self._batch_size:
            self._full.clear()
        if not queue:
            self._arrived.clear()
        return batch

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            # A batch is due `flush_interval` after its first record, or as soon as it is full.
            if len(self._queue) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._full.wait()
            batch = self._take(self._batch_size)
            # Shielded: a shutdown does not cut a batch in half; aclose() waits for it.
            self._inflight = asyncio.ensure_future(self._write(batch))
            await asyncio.shield(self._inflight)

    async def _write(self, batch: list[UsageRecord]) -> None:
        if not batch:
            return
        rows = [
            (
                r.id,
                r.user_id,
                r.api_key_id,
                r.model,
                r.usage.prompt_tokens,
                r.usage.completion_tokens,
                r.usage.total_tokens,
                r.latency_ms,
                r.ttft_ms,
                r.status,
                r.error_code,
                r.request_id,
                r.created_at,
            )
            for r in batch
        ]
        try:
            async with self._session_factory() as session:
                await _insert(session, rows)
                await session.commit()
        except Exception as exc:  # noqa: BLE001 - a failed batch is logged and counted, never raised into requests
            self.dropped += len(batch)
            for _ in batch:
                self._on_dropped()
            log.error("usage_batch_write_failed", records=len(batch), error=type(exc).__name__)
            return
        self.written += len(batch)
        self._on_written(len(batch))


_COLUMNS = (
    "id",
    "user_id",
    "api_key_id",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_ms",
    "ttft_ms",
    "status",
    "error_code",
    "request_id",
    "created_at",
)


async def _insert(session: AsyncSession, rows: Sequence[tuple[object, ...]]) -> None:
    """One batch, with Postgres' binary COPY where the driver offers it (asyncpg): the rows are
    encoded in C, about half the CPU of an ORM bulk insert of the same batch, which runs on
    the event loop every request shares (docs/benchmarks.md). Else a plain bulk insert."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    copy = getattr(raw.driver_connection, "copy_records_to_table", None)
    if copy is not None:
        await copy(UsageRecordModel.__tablename__, records=rows, columns=_COLUMNS)
        return
    await session.execute(insert(UsageRecordModel), [dict(zip(_COLUMNS, row, strict=True)) for row in rows])


class MeteredUsageRecorder:
    """Counts tokens and latencies in Prometheus, then hands the record to the batching writer.

    The labelled children are looked up once per (model, status): `labels()` takes a lock and
    builds a key on every call, four times per completion otherwise.
    """

    MAX_CACHED_LABELS = 1024

    def __init__(self, inner: BatchingUsageRecorder, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def _children_of(self, model: str, status: str) -> tuple[Any, Any, Any, Any]:
        children = self._children.get((model, status))
        if children is None:
            m = self._metrics
            children = (
                m.tokens.labels(model, "prompt"),
                m.tokens.labels(model, "completion"),
                m.upstream_latency.labels(model, status),
                m.time_to_first_token.labels(model),
            )
            if len(self._children) < self.MAX_CACHED_LABELS:
                self._children[(model, status)] = children
        return children

    def record(self, record: UsageRecord) -> None:
        try:
            prompt, completion, latency, ttft = self._children_of(record.model, record.status)
            prompt.inc(record.usage.prompt_tokens)
            completion.inc(record.usage.completion_tokens)
            latency.observe(record.latency_ms / 1000)
            if record.ttft_ms is not None:
                ttft.observe(record.ttft_ms / 1000)
        finally:
            self._inner.record(record)
