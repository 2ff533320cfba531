"""`SingleFlight`: one load per key at a time, shared with every caller that arrives meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from app.application.single_flight import SingleFlight


class CountingLoad:
    """A load that takes 10 ms and answers with its own number (1 for the first run, ...)."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self) -> int:
        self.runs += 1
        mine = self.runs
        await asyncio.sleep(0.01)
        return mine


async def test_concurrent_callers_share_one_run_and_later_callers_run_again() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    load = CountingLoad()

    assert await asyncio.gather(*(flights.run("k", load) for _ in range(20))) == [1] * 20
    assert await flights.run("k", load) == 2  # the first run is over: a new one
    assert sorted(await asyncio.gather(flights.run("a", load), flights.run("b", load))) == [3, 4]  # keys apart


async def test_an_error_reaches_every_caller_and_is_not_kept() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    fail = True

    async def load() -> int:
        await asyncio.sleep(0.01)
        if fail:
            raise LookupError("down")
        return 7

    results = await asyncio.gather(*(flights.run("k", load) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    fail = False
    assert await flights.run("k", load) == 7


async def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def load() -> int:
        await asyncio.sleep(0.02)
        return 1

    first = asyncio.ensure_future(flights.run("k", load))
    second = asyncio.ensure_future(flights.run("k", load))
    await asyncio.sleep(0.005)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == 1


async def test_forget_makes_the_next_caller_load_again() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    load = CountingLoad()

    early = asyncio.ensure_future(flights.run("k", load))
    await asyncio.sleep(0)
    flights.forget()  # e.g. a write that the load in flight may not have seen
    assert await flights.run("k", load) == 2
    assert await early == 1
