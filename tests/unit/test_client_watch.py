"""`ClientWatch`: a disconnect cancels only an armed block, as `ClientGone`; nothing else is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.infrastructure.http.client_watch import ClientGone, ClientWatch


class Connection:
    """An ASGI ``receive`` whose next message is sent by the test (the body was already read)."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Any] = asyncio.Queue()

    async def receive(self) -> Any:
        return await self.messages.get()

    def disconnect(self) -> None:
        self.messages.put_nowait({"type": "http.disconnect"})


async def test_a_disconnect_cancels_the_armed_work_and_raises_client_gone() -> None:
    connection = Connection()
    work_cancelled = asyncio.Event()

    async def upstream_call() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            work_cancelled.set()
            raise

    async def handler() -> str:
        watch = ClientWatch(connection.receive)
        try:
            with watch.armed():
                await upstream_call()
        except ClientGone:
            return "gone"
        finally:
            watch.close()
        return "answered"

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    connection.disconnect()
    assert await asyncio.wait_for(task, 1) == "gone"
    assert work_cancelled.is_set()
    assert task.cancelling() == 0  # the cancellation was taken back: the handler goes on normally


async def test_a_disconnect_outside_an_armed_block_is_only_remembered() -> None:
    connection = Connection()

    async def handler() -> tuple[bool, str]:
        watch = ClientWatch(connection.receive)
        try:
            connection.disconnect()
            await asyncio.sleep(0.01)  # not armed: this is not cancelled
            noticed = watch.gone
            try:
                with watch.armed():
                    await asyncio.sleep(10)  # never reached
            except ClientGone:
                return noticed, "gone"
            return noticed, "ran"
        finally:
            watch.close()

    assert await asyncio.wait_for(handler(), 1) == (True, "gone")


async def test_another_cancellation_still_propagates() -> None:
    connection = Connection()
    started = asyncio.Event()

    async def handler() -> None:
        watch = ClientWatch(connection.receive)
        try:
            with watch.armed():
                started.set()
                await asyncio.sleep(10)
        finally:
            watch.close()

    task = asyncio.create_task(handler())
    await started.wait()
    task.cancel()  # e.g. the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_work_that_finishes_is_not_disturbed_and_the_watcher_is_cleaned_up() -> None:
    connection = Connection()
    before = len(asyncio.all_tasks())

    async def handler() -> int:
        watch = ClientWatch(connection.receive)
        try:
            with watch.armed():
                await asyncio.sleep(0)
                return 42
        finally:
            watch.close()

    assert await handler() == 42
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
