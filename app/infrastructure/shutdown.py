"""Graceful shutdown: what happens between SIGTERM and the process exiting.

On SIGTERM (or SIGINT) the process enters *draining*:
- readiness turns 503 at once (`/ready` reports ``"shutdown": "draining"``), so load
  balancers and Kubernetes stop sending traffic;
- uvicorn stops accepting connections; a new request that still arrives on an open
  keep-alive connection is refused with 503 ``shutting_down`` (``/health`` keeps answering);
- running streams may go on until the drain deadline (``SHUTDOWN_DRAIN_SECONDS``); at the
  deadline `Drain.expired` is set, and stream relays watching it end with an error event and
  store what was produced (see `until_drained`);
- then the lifespan closes: queues (usage records, last-used) are flushed, pools closed.

uvicorn owns the signal handlers; we chain ours in front of its (main thread only), so both
run. The chained handler only flips flags and starts a timer: no I/O in a signal handler.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any, TypeVar

from app.application.health import CheckReadiness
from app.domain.errors import ServiceUnavailable
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")
HANDLED = (signal.SIGTERM, signal.SIGINT)


class Drain:
    """The process-wide draining state and its deadline."""

    def __init__(self, readiness: CheckReadiness, drain_seconds: float) -> None:
        self._readiness = readiness
        self.drain_seconds = drain_seconds
        self.draining = False
        self.expired = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Chain our handler in front of the current (uvicorn's) SIGTERM/SIGINT handlers."""
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread (tests run servers in threads)
        for sig in HANDLED:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in self._previous.items():
                if signal.getsignal(sig) == self._on_signal:
                    signal.signal(sig, handler)
        self._previous.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.begin()
        previous = self._previous.get(sig)
        if callable(previous):
            previous(sig, frame)

    def begin(self) -> None:
        """Enter draining (idempotent). Safe to call from a signal handler on the loop's thread."""
        if self.draining:
            return
        self.draining = True
        self._readiness.draining = True
        log.info("shutdown_draining", drain_seconds=self.drain_seconds)
        if self._loop is not None:
            self._timer = self._loop.call_later(self.drain_seconds, self.expired.set)
        else:
            self.expired.set()


async def until_drained(source: AsyncIterator[T], drain: Drain) -> AsyncIterator[T]:
    """Relay `source` until it ends or the drain deadline passes.

    At the deadline `source` is closed (which cancels its upstream call and lets it store
    what it produced) and `ServiceUnavailable("shutting_down")` is raised: every relay already
    renders a domain error as the stream's in-band error event, then ends it. However this
    relay ends (the deadline, the consumer going away, an error), the pending read is cancelled
    and `source` closed, so nothing keeps running behind a closed stream.
    """
    iterator = source.__aiter__()
    expired = asyncio.ensure_future(drain.expired.wait())
    following: asyncio.Future[T] | None = None
    try:
        while True:
            following = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({following, expired}, return_when=asyncio.FIRST_COMPLETED)
            if following not in done:
                raise ServiceUnavailable("The server is shutting down; the stream was ended.", code="shutting_down")
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            following = None
            yield item
    finally:
        expired.cancel()
        if following is not None and not following.done():
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            await closer()
