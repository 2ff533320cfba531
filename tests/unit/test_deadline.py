"""`LazyDeadline`: the timeout of each wait in a series, with one timer for the series."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.infrastructure.deadline import DeadlineExceeded, LazyDeadline


async def test_a_wait_that_outlives_its_expiry_raises_deadline_exceeded() -> None:
    deadline = LazyDeadline()
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceeded), deadline.waiting(0.05):
        await asyncio.sleep(1)
    assert asyncio.get_running_loop().time() - started < 0.5
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # taken back
    deadline.close()


async def test_many_short_waits_use_one_timer_and_never_time_out() -> None:
    deadline = LazyDeadline()
    loop = asyncio.get_running_loop()
    scheduled = 0
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        nonlocal scheduled
        if getattr(callback, "__self__", None) is deadline:  # the deadline's timer, not sleep's
            scheduled += 1
        return call_at(when, callback, *args, **kwargs)

    loop.call_at = counting_call_at  # type: ignore[method-assign, assignment]
    try:
        for _ in range(40):  # 40 waits of 5 ms, each allowed 30 ms: 200 ms in all
            with deadline.waiting(0.03):
                await asyncio.sleep(0.005)
    finally:
        loop.call_at = call_at  # type: ignore[method-assign]
        deadline.close()
    assert 1 <= scheduled <= 10  # re-armed only when it fired early, not once per wait (40)


async def test_the_deadline_never_cancels_outside_a_wait() -> None:
    deadline = LazyDeadline()
    with deadline.waiting(0.02):
        await asyncio.sleep(0)
    await asyncio.sleep(0.06)  # the timer fires while nobody waits: nothing is cancelled
    with deadline.waiting(1):  # and the next wait gets its own full allowance
        await asyncio.sleep(0.03)
    deadline.close()


async def test_a_shorter_wait_after_a_longer_one_is_enforced() -> None:
    deadline = LazyDeadline()
    with deadline.waiting(10):
        await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded), deadline.waiting(0.03):
        await asyncio.sleep(1)
    deadline.close()


async def test_another_cancellation_still_propagates() -> None:
    deadline = LazyDeadline()
    entered = asyncio.Event()

    async def waiter() -> None:
        with deadline.waiting(10):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(waiter())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.close()
