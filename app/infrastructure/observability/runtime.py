"""Process-level gauges: queue depths, database pool use, event-loop lag.

Depths and pool use are read at scrape time (`Gauge.set_function`), so they cost nothing
between scrapes. Event-loop lag needs a clock: a small task sleeps `interval` seconds and
records how late it woke up (a blocked loop shows up here before it shows up in latency).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry, *, interval_seconds: float = 0.5) -> None:
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self.queue_depth = Gauge(
            "agent_api_queue_depth", "Items waiting in a background queue.", ("queue",), registry=registry
        )
        self.db_pool = Gauge(
            "agent_api_db_pool_connections",
            "Database pool connections by state (in_use, idle, capacity).",
            ("state",),
            registry=registry,
        )
        self.loop_lag = Gauge(
            "agent_api_event_loop_lag_seconds",
            "How late the event loop woke a timer, last sample.",
            registry=registry,
        )
        self.loop_lag_max = Gauge(
            "agent_api_event_loop_lag_max_seconds",
            "The largest event-loop lag seen since start.",
            registry=registry,
        )

    def watch_queue(self, name: str, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(name).set_function(lambda: float(depth()))

    def watch_pool(self, engine: AsyncEngine) -> None:
        pool = engine.sync_engine.pool
        if not isinstance(pool, QueuePool):
            return
        self.db_pool.labels("in_use").set_function(lambda: float(pool.checkedout()))
        self.db_pool.labels("idle").set_function(lambda: float(pool.checkedin()))
        self.db_pool.labels("capacity").set_function(lambda: float(pool.size() + max(pool._max_overflow, 0)))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sample_lag(), name="loop-lag")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        worst = 0.0
        while True:
            expected = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - expected)
            worst = max(worst, lag)
            self.loop_lag.set(lag)
            self.loop_lag_max.set(worst)
