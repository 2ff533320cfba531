"""Readiness: required probes gate it, optional ones are reported, hung ones time out."""

from __future__ import annotations

from app.application.health import CheckReadiness
from tests.fakes import FakeProbe


async def test_ready_when_every_required_probe_answers() -> None:
    report = await CheckReadiness([FakeProbe("database"), FakeProbe("redis")])()
    assert report.ready
    assert report.checks == {"database": "ok", "redis": "ok"}


async def test_failing_required_probe_is_named() -> None:
    report = await CheckReadiness([FakeProbe("database", fail="refused"), FakeProbe("redis")])()
    assert not report.ready
    assert report.checks["database"].startswith("error: ConnectionRefusedError")
    assert report.checks["redis"] == "ok"


async def test_optional_probe_failure_does_not_unready() -> None:
    report = await CheckReadiness([FakeProbe("database"), FakeProbe("llm", required=False, fail="down")])()
    assert report.ready
    assert report.checks["llm"].startswith("error:")


async def test_hung_probe_times_out() -> None:
    report = await CheckReadiness([FakeProbe("redis", hang=True)], timeout_seconds=0.05)()
    assert not report.ready
    assert report.checks["redis"] == "error: no answer within 0.05s"


async def test_draining_is_not_ready() -> None:
    readiness = CheckReadiness([FakeProbe("database")])
    readiness.draining = True
    report = await readiness()
    assert not report.ready
    assert report.checks["shutdown"] == "draining"


async def test_probe_errors_never_leak_urls_or_passwords() -> None:
    report = await CheckReadiness([FakeProbe("database", fail="postgresql://u:hunter2@db/x")])()
    assert "hunter2" not in report.checks["database"]
