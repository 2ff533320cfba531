"""`ClientWatch`: notices a client that left, with one task per request.

A chat completion spends most of its life waiting on the upstream. If the client goes away
meanwhile, the contract says the upstream request is cancelled at once, so something must
watch the connection while the handler waits. `unless_disconnected` (agent_stream.py) runs
the work in a task of its own beside a watcher task and an `asyncio.wait` on both: four
tasks per streamed completion (opening, then relay). On the gateway's hot path this module
does the same with one: a watcher that cancels the *request's own task* when the client
leaves while the watch is armed, the way `asyncio.timeout` cancels the task it runs in.
Outside an armed block, a disconnect is only remembered (``gone``); the handler decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from litestar.types import Receive


class ClientGone(Exception):
    """The client disconnected while the watch was armed (the work was cancelled)."""


class ClientWatch:
    """Watches one ASGI request's connection; create it once the body has been read (the next
    message can then only be ``http.disconnect``, which uvicorn also sends once the response is
    complete), and `close` it when the request ends."""

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - ASGI apps always run in a task
            raise RuntimeError("ClientWatch needs a running task")
        self._task = task
        self._armed = False
        self._cancelled = False
        self.gone = False
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._armed and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    @contextmanager
    def armed(self) -> Iterator[None]:
        """While the block runs, a disconnect cancels it and `ClientGone` is raised instead.

        Any other cancellation (server shutdown) still propagates as `CancelledError`.
        The block must not swallow `CancelledError` itself.
        """
        if self.gone:
            raise ClientGone
        self._armed = True
        try:
            yield
        except asyncio.CancelledError:
            if self._cancelled and self._task.uncancel() == 0:
                raise ClientGone from None
            raise
        finally:
            self._armed = False

    def close(self) -> None:
        if not self._watcher.done():
            self._watcher.cancel()
