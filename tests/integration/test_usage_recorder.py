"""The batching usage recorder on the real database: batches, bounded queue, flush on shutdown."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.application.llm.types import Usage, UsageRecord
from app.config import DatabaseSettings
from app.infrastructure.llm.usage_recorder import BatchingUsageRecorder
from app.infrastructure.persistence.database import create_engine, create_session_factory
from app.infrastructure.persistence.models import UsageRecordModel


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=database_url), database_url)
    yield engine
    await engine.dispose()


async def make_user(engine: AsyncEngine) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO users (id, email, password_hash) VALUES (:id, :email, 'x')"),
            {"id": user_id, "email": f"usage-{user_id.hex[:8]}@example.test"},
        )
    return user_id


def record(user_id: uuid.UUID, status: str = "success") -> UsageRecord:
    return UsageRecord(
        user_id=user_id,
        api_key_id=uuid.uuid4(),
        model="m",
        usage=Usage(3, 4),
        latency_ms=12,
        ttft_ms=5,
        status=status,
        created_at=datetime.now(UTC),
        request_id="req-1",
    )


async def count(engine: AsyncEngine, user_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        stmt = select(func.count()).select_from(UsageRecordModel).where(UsageRecordModel.user_id == user_id)
        return int((await conn.execute(stmt)).scalar_one())


async def test_records_are_flushed_on_shutdown_and_a_full_queue_is_counted(engine: AsyncEngine) -> None:
    user_id = await make_user(engine)
    dropped: list[int] = []
    recorder = BatchingUsageRecorder(
        create_session_factory(engine),
        batch_size=2,
        flush_interval=60,
        max_queue=3,
        on_dropped=lambda: dropped.append(1),
    )
    for status in ("success", "error", "disconnected", "success"):
        recorder.record(record(user_id, status))  # never blocks, never raises
    assert recorder.dropped == 1
    assert dropped == [1]
    assert await count(engine, user_id) == 0  # behind the request, not in it
    recorder.start()
    await recorder.aclose()
    assert await count(engine, user_id) == 3
    assert recorder.written == 3


async def test_background_writer_flushes_partial_batches_after_the_interval(engine: AsyncEngine) -> None:
    user_id = await make_user(engine)
    recorder = BatchingUsageRecorder(create_session_factory(engine), batch_size=100, flush_interval=0.05)
    recorder.start()
    try:
        recorder.record(record(user_id))
        for _ in range(100):
            if await count(engine, user_id) == 1:
                break
            await asyncio.sleep(0.02)
        assert await count(engine, user_id) == 1
    finally:
        await recorder.aclose()


async def test_a_failed_batch_is_counted_not_raised(engine: AsyncEngine) -> None:
    recorder = BatchingUsageRecorder(create_session_factory(engine), batch_size=10, flush_interval=60)
    recorder.record(record(uuid.uuid4()))  # no such user: the foreign key refuses the row
    await recorder.flush()
    assert (recorder.dropped, recorder.written) == (1, 0)


async def test_a_record_the_writer_is_still_gathering_survives_shutdown(engine: AsyncEngine) -> None:
    """The writer has seen a record and waits up to the flush interval for more; closing it
    then must write that record, not drop it with the cancelled task."""
    user_id = await make_user(engine)
    recorder = BatchingUsageRecorder(create_session_factory(engine), batch_size=50, flush_interval=30.0, max_queue=10)
    recorder.start()
    recorder.record(record(user_id))
    await asyncio.sleep(0.05)  # the writer now waits for a fuller batch
    assert recorder.depth == 1
    await recorder.aclose()
    assert await count(engine, user_id) == 1
    assert recorder.written == 1
