"""CPU µs of the client process per Redis call on the hot path (`python -m bench.redis_micro`).

The rate limiter's admission script (``EVALSHA`` of the real ``ACQUIRE``) and the revocation
``MGET``, through redis-py's asyncio client as production builds it (`create_redis`: blocking
pool, timeouts) and through `PipelinedRedis`, at concurrency 1 (one caller awaiting each
answer) and 16 (sixteen callers at once), on uvloop, against ``REDIS_URL`` (default the
local Redis). CPU is this process's ``time.process_time()`` (user + system), so the Redis
server's own work is not counted; each figure is the best and the median of ``--repeat``
rounds, the rounds alternating between the clients (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from pydantic import SecretStr

from app.config import RedisSettings
from app.infrastructure.ratelimit.redis_limiter import ACQUIRE, subject_keys
from app.infrastructure.redis_client import create_redis
from app.infrastructure.redis_pipeline import HotPathRedis, LuaScript, PipelinedRedis, RedisPyHotPath

SCRIPT = LuaScript(ACQUIRE)
WINDOW_US = 60_000_000


def acquire_call(client: HotPathRedis, prefix: str) -> Callable[[int], Awaitable[object]]:
    """One admission as the limiter sends it (a generous policy, so nothing is ever refused)."""

    async def call(i: int) -> object:
        keys = subject_keys(prefix, f"key:{i % 64}")
        return await client.evalsha(
            SCRIPT,
            [keys.requests, keys.tokens, keys.day, keys.leases],
            [WINDOW_US, 1_000_000, 1_000_000, 100, 0, 0, "", 120_000_000],
        )

    return call


def mget_call(client: HotPathRedis, prefix: str) -> Callable[[int], Awaitable[object]]:
    async def call(i: int) -> object:
        return await client.mget(
            [f"{prefix}dis:u:{i}", f"{prefix}ver:u:{i}", f"{prefix}rev:k:{i}", f"{prefix}ver:k:{i}"]
        )

    return call


async def measure(call: Callable[[int], Awaitable[object]], concurrency: int, calls: int) -> float:
    """CPU µs per call: `calls` calls made by `concurrency` callers, each awaiting its answer."""

    async def caller(offset: int) -> None:
        for i in range(offset, calls, concurrency):
            await call(i)

    await asyncio.gather(*(caller(k) for k in range(concurrency)))  # warm: connections, script cache
    started = time.process_time()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    return (time.process_time() - started) / calls * 1e6


async def run(url: str, calls: int, repeat: int) -> None:
    settings = RedisSettings(url=SecretStr(url), socket_timeout_seconds=1.0)
    redis_py = create_redis(settings)
    assert redis_py is not None
    pipelined = PipelinedRedis.from_url(url, timeout=1.0)
    prefix = f"bench-micro-{uuid.uuid4().hex[:8]}:"
    clients: dict[str, HotPathRedis] = {
        "redis-py (production pool)": RedisPyHotPath(redis_py),
        "PipelinedRedis": pipelined,
    }
    print("| call | client | c=1 µs CPU, best / median | c=16 µs CPU, best / median |")
    print("|---|---|---|---|")
    try:
        for label, make in (("EVALSHA (ACQUIRE)", acquire_call), ("MGET (4 keys)", mget_call)):
            # Rounds alternate between the clients, so a busy moment of the machine hits both.
            samples: dict[tuple[str, int], list[float]] = {}
            for _ in range(repeat):
                for concurrency in (1, 16):
                    for name, client in clients.items():
                        figure = await measure(make(client, prefix), concurrency, calls)
                        samples.setdefault((name, concurrency), []).append(figure)
            for name in clients:
                cells = [f"{min(samples[name, c]):.1f} / {statistics.median(samples[name, c]):.1f}" for c in (1, 16)]
                print(f"| {label} | {name} | {' | '.join(cells)} |")
    finally:
        keys = [key async for key in redis_py.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis_py.delete(*keys)
        await pipelined.aclose()
        await redis_py.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.redis_micro")
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()  # as in production
    except ImportError:
        pass
    asyncio.run(run(args.url, args.calls, args.repeat))


if __name__ == "__main__":
    main()
