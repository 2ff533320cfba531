"""The revocation store's short reuse of reads (REVOCATION_CACHE_SECONDS) against a real Redis:
another instance's revocation is seen once the window has passed, this instance's own at once.
Reads go through the pipelined hot-path client, as production wires them; writes through redis-py."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from app.infrastructure.redis_pipeline import PipelinedRedis
from app.infrastructure.security.revocation import RedisRevocationStore


async def test_reads_are_reused_for_the_window_then_refreshed(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    reads = PipelinedRedis.from_url(redis_url, timeout=2.0)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    here = RedisRevocationStore(redis, key_prefix=prefix, session_marker_ttl_seconds=60, cache_seconds=0.3, reads=reads)
    elsewhere = RedisRevocationStore(redis, key_prefix=prefix, session_marker_ttl_seconds=60, reads=reads)
    user, key = uuid.uuid4(), uuid.uuid4()
    try:
        assert not (await here.state(user_id=user, api_key_id=key)).api_key_revoked
        await elsewhere.revoke_api_key(key)  # another instance: only Redis knows
        assert (await elsewhere.state(user_id=user, api_key_id=key)).api_key_revoked  # no reuse at 0 s
        assert not (await here.state(user_id=user, api_key_id=key)).api_key_revoked  # inside the window
        await asyncio.sleep(0.35)
        assert (await here.state(user_id=user, api_key_id=key)).api_key_revoked
    finally:
        await reads.aclose()
        await redis.aclose()


async def test_own_writes_drop_reused_reads_at_once(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    reads = PipelinedRedis.from_url(redis_url, timeout=2.0)
    store = RedisRevocationStore(
        redis,
        key_prefix=f"test-{uuid.uuid4().hex[:8]}:",
        session_marker_ttl_seconds=60,
        cache_seconds=1.0,
        reads=reads,
    )
    user, session = uuid.uuid4(), uuid.uuid4()
    try:
        assert not (await store.state(user_id=user, session_id=session)).session_revoked
        await store.revoke_sessions([session])
        assert (await store.state(user_id=user, session_id=session)).session_revoked
        before = (await store.state(user_id=user)).user_version
        await store.user_changed(user, disabled=True)
        after = await store.state(user_id=user)
        assert after.user_disabled
        assert after.user_version == before + 1
    finally:
        await reads.aclose()
        await redis.aclose()


async def test_a_burst_of_requests_shares_one_read(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = RedisRevocationStore(
        redis, key_prefix=f"test-{uuid.uuid4().hex[:8]}:", session_marker_ttl_seconds=60, cache_seconds=0.25
    )
    reads = 0
    read = store._read

    async def counted(*args: object) -> object:
        nonlocal reads
        reads += 1
        return await read(*args)  # type: ignore[arg-type]

    store._read = counted  # type: ignore[method-assign, assignment]
    user, key = uuid.uuid4(), uuid.uuid4()
    try:
        states = await asyncio.gather(*(store.state(user_id=user, api_key_id=key) for _ in range(150)))
        assert reads == 1
        assert all(not s.api_key_revoked for s in states)
        await store.revoke_api_key(key)  # our own write: the next burst reads again, and sees it
        states = await asyncio.gather(*(store.state(user_id=user, api_key_id=key) for _ in range(150)))
        assert reads == 2
        assert all(s.api_key_revoked for s in states)
    finally:
        await redis.aclose()


async def test_a_read_in_flight_during_an_own_write_is_not_reused(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = RedisRevocationStore(
        redis, key_prefix=f"test-{uuid.uuid4().hex[:8]}:", session_marker_ttl_seconds=60, cache_seconds=5.0
    )
    user, key = uuid.uuid4(), uuid.uuid4()
    try:
        early = asyncio.ensure_future(store.state(user_id=user, api_key_id=key))
        await asyncio.sleep(0)  # the read is on its way
        await store.revoke_api_key(key)
        await early  # may or may not have seen the revocation; either way it is not kept
        assert (await store.state(user_id=user, api_key_id=key)).api_key_revoked
    finally:
        await redis.aclose()
