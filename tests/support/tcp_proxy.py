"""A small TCP proxy between the app and a dependency, which a test can cut and restore.

Stopping it closes the listener and aborts every open connection, which the app sees exactly
as it would see the dependency going down; starting it again brings the dependency "back".
It runs its own event loop in a thread, so it keeps relaying while the test's loop is busy
(Litestar's AsyncTestClient blocks the calling loop while the app runs in its portal).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from app.infrastructure.persistence.embedded import free_port

T = TypeVar("T")


@dataclass
class Faults:
    """What the proxy does to the dependency's answers (applied to new connections).

    first_byte_delay: hold the answer's first bytes this long (a slow dependency);
    stall_after_bytes: relay this many bytes of the answer, then nothing (a hung stream);
    reset_after_bytes: relay this many bytes, then reset both sides (a dropped connection);
    garbage: answer with these bytes instead of the dependency's, then close.
    """

    first_byte_delay: float = 0.0
    stall_after_bytes: int | None = None
    reset_after_bytes: int | None = None
    garbage: bytes | None = None


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = listen_port or free_port()
        self.connections_seen = 0
        self.faults = Faults()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self._call(self._cancel_handlers())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _cancel_handlers(self) -> None:
        """Stalled connections sleep; end them before the loop stops (no pending-task noise)."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_seen += 1
        faults = self.faults
        if faults.garbage is not None:
            with contextlib.suppress(Exception):
                await reader.read(65536)
                writer.write(faults.garbage)
                await writer.drain()
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        async def answer(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            """The dependency's answer, with the faults applied."""
            sent = 0
            first = True
            limit = faults.stall_after_bytes if faults.stall_after_bytes is not None else faults.reset_after_bytes
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if first and faults.first_byte_delay:
                        await asyncio.sleep(faults.first_byte_delay)
                    first = False
                    limit = (
                        faults.stall_after_bytes if faults.stall_after_bytes is not None else faults.reset_after_bytes
                    )
                    if limit is not None and sent + len(data) >= limit:
                        dst.write(data[: max(limit - sent, 0)])
                        await dst.drain()
                        if faults.reset_after_bytes is not None:
                            break
                        await asyncio.sleep(3600)  # stalled: the connection stays open, silent
                    dst.write(data)
                    await dst.drain()
                    sent += len(data)
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), answer(up_reader, writer), return_exceptions=True)
        self._writers.difference_update((writer, up_writer))
