"""Readiness: is every required dependency answering?"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from app.application.ports import DependencyProbe


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    ready: bool
    checks: dict[str, str]


class CheckReadiness:
    """Runs every probe concurrently, each bounded by `timeout_seconds`.

    A failing required probe makes the service not ready; an optional one (the LLM) is
    reported but does not take the replica out of rotation. `draining` (set on SIGTERM)
    makes the service not ready whatever the probes say.
    """

    def __init__(self, probes: Sequence[DependencyProbe], *, timeout_seconds: float = 2.0) -> None:
        self._probes = list(probes)
        self._timeout = timeout_seconds
        self.draining = False

    async def _run(self, probe: DependencyProbe) -> tuple[str, str, bool]:
        try:
            status = await asyncio.wait_for(probe.check(), timeout=self._timeout)
        except TimeoutError:
            return probe.name, f"error: no answer within {self._timeout:g}s", False
        except Exception as exc:  # noqa: BLE001 - any failure of a probe is a "not ok"
            return probe.name, f"error: {_describe(exc)}", False
        return probe.name, status, True

    async def __call__(self) -> ReadinessReport:
        results = await asyncio.gather(*(self._run(p) for p in self._probes))
        required = {p.name: p.required for p in self._probes}
        checks = {name: status for name, status, _ in results}
        ready = not self.draining and all(ok or not required[name] for name, _, ok in results)
        if self.draining:
            checks["shutdown"] = "draining"
        return ReadinessReport(ready=ready, checks=checks)


def _describe(exc: BaseException) -> str:
    """A one-line description of a failure, never a traceback, URL or credential."""
    text = type(exc).__name__
    message = str(exc).splitlines()[0] if str(exc) else ""
    if message and "://" not in message and "password" not in message.lower():
        text = f"{text}: {message[:160]}"
    return text
