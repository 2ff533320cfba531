"""`SingleFlight`: concurrent requests for the same thing share one load of it.

When a cached answer expires (an identity after its TTL, a revocation state after its reuse
window) under load, every request in flight misses it at once. Without this, a burst of 150
requests sent 150 identical database queries (measured: 250-350 ms of one core spent before
the first of them was answered); with it, one query, and the other 149 wait for its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """Runs `work` once per key at a time; callers arriving meanwhile get the same result
    (or the same exception). A caller that is cancelled does not cancel the others' load."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[T]] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(work())
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(running)

    def forget(self) -> None:
        """Loads in flight are not joined any more (their answer may predate a change)."""
        self._running.clear()

    def _finished(self, key: K, done: asyncio.Future[T]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved here: every caller may have gone (clients disconnected)
