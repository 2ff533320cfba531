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
