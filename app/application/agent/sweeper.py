"""End the runs a dead process left ``running``."""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.application.ports import AgentUnitOfWorkFactory, Clock
from app.domain.agent import RunError

INTERRUPTED = RunError(
    "interrupted", "The server running this run stopped before it finished; post the message again to retry."
)


class SweepInterruptedRuns:
    """At start-up: a ``running`` run whose heartbeat (see `AgentLoop`) is older than
    `stale_after_seconds` has no live driver anywhere (its process crashed or was killed), so
    it is marked ``failed`` with code ``interrupted`` and its conversation is free again.

    Safe with many replicas: a live driver refreshes its run's heartbeat every few seconds,
    far inside the threshold, so one replica's start-up never ends another replica's run.
    What the run produced before the crash was stored as it happened and stays.
    """

    def __init__(self, uow: AgentUnitOfWorkFactory, clock: Clock, *, stale_after_seconds: float) -> None:
        self._uow, self._clock, self._stale_after = uow, clock, stale_after_seconds

    async def __call__(self) -> list[uuid.UUID]:
        now = self._clock.now()
        async with self._uow() as uow:
            swept = await uow.runs.fail_stale(now - timedelta(seconds=self._stale_after), INTERRUPTED, now)
            await uow.commit()
        return swept
