"""`LazyDeadline`: a timeout for a long series of short waits, at the cost of one timer.

A stream waits many times (every read from the upstream, every idle gap before a heartbeat),
each bounded by a timeout that almost never fires. ``asyncio.timeout`` per wait builds a
context manager and schedules and cancels a timer each time: several per stream, a few
percent of a stream's CPU (docs/benchmarks.md). Here one timer serves the whole series: each
`waiting` block only records when it would expire; the timer, when it fires early because
the expiry moved on meanwhile, re-arms itself for the new expiry. A wait that really outlives
its expiry is cancelled as ``asyncio.timeout`` would, and `DeadlineExceeded` is raised in
its place. Outside a `waiting` block the deadline never cancels anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class DeadlineExceeded(TimeoutError):
    """The wait outlived its expiry."""


class LazyDeadline:
    """One per series of waits (e.g. per stream); not shared between concurrent waiters."""

    __slots__ = ("_cancelled", "_expires", "_loop", "_task", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None  # the task waiting right now, if any
        self._expires = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._cancelled = False

    @contextmanager
    def waiting(self, seconds: float) -> Iterator[None]:
        """The block (one wait) must end within ``seconds``, else `DeadlineExceeded`.

        The block must not swallow `CancelledError` itself.
        """
        loop = self._loop
        self._expires = expires = loop.time() + seconds
        if self._timer is None or self._timer_at > expires:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(expires, self._fire)
            self._timer_at = expires
        self._task = asyncio.current_task()
        try:
            yield
        except asyncio.CancelledError:
            if self._cancelled:
                self._cancelled = False
                if self._task is not None and self._task.uncancel() == 0:
                    raise DeadlineExceeded from None
            raise
        finally:
            self._task = None

    def _fire(self) -> None:
        self._timer = None
        task = self._task
        if task is None:  # nobody waits now: the next `waiting` arms a timer again
            return
        if self._loop.time() < self._expires:  # the expiry moved on since this timer was set
            self._timer = self._loop.call_at(self._expires, self._fire)
            self._timer_at = self._expires
            return
        self._cancelled = True
        task.cancel()

    def close(self) -> None:
        """Drop the timer (the series is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._task = None
