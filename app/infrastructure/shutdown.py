"""Graceful shutdown: what happens between SIGTERM and the process exiting.

On SIGTERM (or SIGINT) the process enters *draining*:
- readiness turns 503 at once (`/ready` reports ``"shutdown": "draining"``), so load
  balancers and Kubernetes stop sending traffic;
- uvicorn stops accepting connections; a new request that still arrives on an open
  keep-alive connection is refused with 503 ``shutting_down`` (``/health`` keeps answering);
- running streams may go on until the drain deadline (``SHUTDOWN_DRAIN_SECONDS``); at the
  deadline `Drain.expired` is set, and stream relays watching it end with an error event and
  store what was produced (see `batches_with_heartbeat` in ``http/sse.py``);
- then the lifespan closes: queues (usage records, last-used) are flushed, pools closed.

uvicorn owns the signal handlers; we chain ours in front of its (main thread only), so both
run. The chained handler only flips flags and starts a timer: no I/O in a signal handler.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from app.application.health import CheckReadiness
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)
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
        self._on_expiry: set[Callable[[], None]] = set()

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
            self._timer = self._loop.call_later(self.drain_seconds, self._expire)
        else:
            self._expire()

    def _expire(self) -> None:
        self.expired.set()
        for callback in list(self._on_expiry):
            callback()
        self._on_expiry.clear()

    def on_expiry(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls `callback` when the drain deadline passes (soon, if it has); returns its removal.

        Relays register one callback per stream instead of racing every item against
        `expired` (a task and an `asyncio.wait` per chunk)."""
        if self.expired.is_set():
            asyncio.get_running_loop().call_soon(callback)
            return _nothing
        self._on_expiry.add(callback)
        return lambda: self._on_expiry.discard(callback)


def _nothing() -> None:
    pass
