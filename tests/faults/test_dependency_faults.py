"""Postgres and Redis failing under the real app. Each test names its pass criterion."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import AgentSettings, DatabaseSettings, LLMSettings, RedisSettings, Settings
from app.infrastructure.container import Container
from tests.conftest import AppFactory
from tests.e2e.agent.conftest import parse_sse
from tests.support.fake_upstream import FakeUpstream, UpstreamScript
from tests.support.identity import ADMIN_EMAIL, ADMIN_PASSWORD, admin_session, bearer, issue_key, with_admin
from tests.support.services import spawn_redis
from tests.support.tcp_proxy import TcpProxy
from tests.support.threaded_server import ThreadedServer

Client = AsyncTestClient[Litestar]


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials + '@' if credentials else ''}127.0.0.1:{port}").geturl()


@get("/_test/hold-connection", exclude_from_auth=True)
async def hold_connection(state: State) -> dict[str, bool]:
    """Takes a pooled connection inside the app and keeps it for 1.5 s."""
    container: Container = state.container
    async with container.engine.connect():
        await asyncio.sleep(1.5)
    return {"held": True}


async def test_pool_exhausted_is_a_503_within_the_pool_timeout(settings: Settings, app_factory: AppFactory) -> None:
    """Pass: with every pooled connection taken, a request that needs the database gets 503
    database_unavailable after about the pool timeout (0.5 s), not a hang and not a 500;
    a request that needs no database (a known JWT listing models) is unaffected."""
    database = settings.database.model_copy(update={"pool_size": 1, "max_overflow": 0, "pool_timeout_seconds": 0.5})
    server = ThreadedServer(
        app_factory(with_admin(settings.model_copy(update={"database": database})), [hold_connection])
    )
    server.start()
    try:
        await _pool_exhaustion(server.base_url)
    finally:
        server.stop()


async def _pool_exhaustion(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        login = await client.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        token = login.json()["access_token"]
        assert (await client.get("/v1/models", headers=bearer(token))).status_code == 200  # caches the caller
        holder = asyncio.ensure_future(client.get("/_test/hold-connection"))
        await asyncio.sleep(0.3)  # the only connection is now held
        started = time.monotonic()
        response = await client.get("/v1/api-keys", headers=bearer(token))
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert 0.4 <= elapsed < 1.2
        assert (await client.get("/v1/models", headers=bearer(token))).status_code == 200
        assert (await holder).json() == {"held": True}
        assert (await client.get("/v1/api-keys", headers=bearer(token))).status_code == 200


async def test_postgres_stopped_under_load_gives_503_not_500_and_recovers(
    settings: Settings, app_factory: AppFactory, database_url: str
) -> None:
    """Pass: while Postgres is cut abruptly under concurrent load, every answer is 200 or 503
    (never 500, never 401); requests that need no database (a cached API key calling the demo
    model) keep succeeding; after Postgres returns, database requests succeed again."""
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    database = DatabaseSettings(url=through(database_url, proxy.port), auto_migrate=False, connect_timeout_seconds=1)
    app = app_factory(with_admin(settings.model_copy(update={"database": database})))
    try:
        async with AsyncTestClient(app=app) as client:
            admin = (await admin_session(client))["access_token"]
            key = (await issue_key(client, admin))["key"]
            chat = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
            assert (await client.post("/v1/chat/completions", json=chat, headers=bearer(key))).status_code == 200

            async def one(i: int) -> tuple[str, int]:
                if i % 2:
                    response = await client.post("/v1/chat/completions", json=chat, headers=bearer(key))
                    return "chat", response.status_code
                return "keys", (await client.get("/v1/api-keys", headers=bearer(admin))).status_code

            proxy.stop()
            during = await asyncio.gather(*(one(i) for i in range(40)))
            counts = Counter(during)
            assert set(counts) <= {("chat", 200), ("keys", 503)}, counts
            assert counts[("chat", 200)] == 20
            proxy.start()
            deadline = time.monotonic() + 5
            while (await client.get("/v1/api-keys", headers=bearer(admin))).status_code != 200:
                assert time.monotonic() < deadline, "database requests did not recover within 5 s"
                await asyncio.sleep(0.1)
    finally:
        proxy.close()


def agent_models_file(path: Path, upstream: FakeUpstream) -> Path:
    """``slow``: the fake upstream (held, then streaming slowly); ``demo``: the demo provider."""
    path.write_text(
        yaml.safe_dump(
            {
                "upstreams": {
                    "fake": {"base_url": upstream.base_url, "api_key": "sk-up", "timeouts": {"backoff_base": 0.01}},
                    "demo": {"type": "demo"},
                },
                "models": [{"id": "slow", "upstream": "fake"}, {"id": "demo", "upstream": "demo"}],
            }
        )
    )
    return path


async def agent_invariant_violations(database_url: str, conversation_ids: list[str]) -> list[str]:
    """The agent's invariants over `conversation_ids`, read from Postgres directly (not through
    the app, not through the fault proxy). Returns what is wrong, one line per violation."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as db:
            runs = (
                await db.execute(
                    text("SELECT id, conversation_id, status FROM runs WHERE conversation_id = ANY(:ids)"),
                    {"ids": [uuid.UUID(c) for c in conversation_ids]},
                )
            ).all()
            messages = (
                await db.execute(
                    text(
                        "SELECT seq, conversation_id, run_id, role, tool_calls, tool_call_id FROM messages"
                        " WHERE conversation_id = ANY(:ids) ORDER BY seq"
                    ),
                    {"ids": [uuid.UUID(c) for c in conversation_ids]},
                )
            ).all()
    finally:
        await engine.dispose()
    status = {run.id: run.status for run in runs}
    problems = [f"run {run.id} is still running with no live driver" for run in runs if run.status == "running"]
    for message in messages:
        if message.run_id is None or message.role == "user":
            continue
        if message.run_id not in status:
            problems.append(f"message {message.seq} belongs to no run of its conversation")
        users = [
            m for m in messages if m.role == "user" and m.run_id == message.run_id and m.seq < message.seq
        ]  # every run here was started by a message (no approvals)
        if not users:
            problems.append(f"{message.role} message {message.seq} has no user message before it in its run")
        if message.role == "assistant" and message.tool_calls:
            answered = {
                m.tool_call_id for m in messages if m.role == "tool" and m.conversation_id == message.conversation_id
            }
            missing = [c["id"] for c in message.tool_calls if c["id"] not in answered]
            if missing and status.get(message.run_id) not in ("failed", "cancelled"):
                problems.append(
                    f"assistant message {message.seq} has unanswered tool calls {missing} and its run is"
                    f" {status.get(message.run_id)}"
                )
    return problems


async def unsettled_runs(client: httpx.AsyncClient) -> float:
    """``agent_api_agent_runs_unsettled`` from /metrics (which needs no database)."""
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("agent_api_agent_runs_unsettled "):
            return float(line.split()[1])
    raise AssertionError("agent_api_agent_runs_unsettled is not exported")


async def test_postgres_cut_during_conversation_runs_keeps_the_agent_invariants(
    settings: Settings, app_factory: AppFactory, database_url: str, tmp_path: Path
) -> None:
    """Pass: with conversation runs in flight (streaming and not, some in their tool phase) when
    Postgres is cut abruptly:
    - every answer during the cut is 200 (a run that started before it) or 503
      ``database_unavailable`` (never 500); a started run that cannot store its progress ends
      with an in-band ``error`` event (streaming) or a ``failed`` run whose error is
      ``database_unavailable`` (JSON), never a hang;
    - once Postgres is back, within 10 s: no run of these conversations is left ``running``
      (the driver stores the run's end as soon as the database answers again), every message a
      run stored comes after its run's user message, and every assistant tool call has its tool
      result unless its run ended ``failed``/``cancelled``;
    - a new run in each of those conversations succeeds (none is blocked by an orphaned run).
    """
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    upstream = FakeUpstream()
    hold = threading.Event()
    upstream.reset(UpstreamScript(words=["The", "answer", "is", "42."], chunk_delay=0.05, hold=hold))
    database = DatabaseSettings(
        url=through(database_url, proxy.port), auto_migrate=False, connect_timeout_seconds=1, pool_timeout_seconds=1
    )
    configured = settings.model_copy(
        update={
            "database": database,
            "llm": LLMSettings(models_config=str(agent_models_file(tmp_path / "models.yaml", upstream))),
            "agent": AgentSettings(default_model="demo", status_poll_seconds=0.2),
        }
    )
    # A real server in its own thread: the held runs must be in flight while the test goes on.
    server = ThreadedServer(app_factory(with_admin(configured)))
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            login = await client.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            headers = bearer(login.json()["access_token"])

            async def new_conversation(model: str) -> str:
                created = await client.post("/v1/conversations", json={"model": model}, headers=headers)
                assert created.status_code == 201, created.text
                return str(created.json()["id"])

            held = [await new_conversation("slow") for _ in range(6)]
            tooled = [await new_conversation("demo") for _ in range(4)]
            everything = held + tooled

            async def post(conversation: str, content: str, *, stream: bool) -> httpx.Response:
                body = {"content": content, "stream": stream}
                return await client.post(f"/v1/conversations/{conversation}/messages", json=body, headers=headers)

            # Runs waiting on the model (their first write after the answer will fail) ...
            in_flight = [asyncio.ensure_future(post(c, "tell me", stream=i % 2 == 0)) for i, c in enumerate(held)]
            assert await asyncio.to_thread(upstream.wait_for, lambda: upstream.request_count == len(held), 10)
            # ... and runs of the demo model calling the calculator, cut wherever they are.
            racing = [asyncio.ensure_future(post(c, "what is 6 * 7?", stream=i % 2 == 0)) for i, c in enumerate(tooled)]
            await asyncio.sleep(0.01)
            proxy.stop()
            during = [await post(c, "what is 1 + 1?", stream=False) for c in everything[:3]]
            hold.set()
            answers = [await task for task in in_flight + racing]

            for response in during:
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "database_unavailable"
            outcomes: Counter[str] = Counter()
            for response in answers:
                assert response.status_code in (200, 503), response.text
                if response.status_code == 503:
                    assert response.json()["error"]["code"] == "database_unavailable"
                    outcomes["503"] += 1
                elif response.headers["content-type"].startswith("text/event-stream"):
                    events = parse_sse(response.text)
                    assert events[-1]["event"] == "done", events
                    kinds = [e["event"] for e in events]
                    errors = [e["data"]["error"] for e in events if e["event"] == "error"]
                    assert all(error["code"] == "database_unavailable" for error in errors), errors
                    outcomes["stream-error" if errors else "stream-ok"] += 1
                    assert "run.completed" in kinds or errors, kinds
                else:
                    run = response.json()["run"]
                    assert run["status"] in ("completed", "failed"), run
                    if run["status"] == "failed":
                        assert run["error"]["code"] == "database_unavailable", run
                    outcomes[f"json-{run['status']}"] += 1
            # the held runs had started before the cut and answered after it: every one failed in-band
            assert outcomes["stream-error"] >= 3, outcomes
            assert outcomes["json-failed"] >= 3, outcomes
            assert outcomes["stream-ok"] + outcomes["json-completed"] <= len(tooled), outcomes

            assert await unsettled_runs(client) >= len(held)  # their ends wait for the database
            proxy.start()
            deadline = time.monotonic() + 10
            while problems := await agent_invariant_violations(database_url, everything):
                assert time.monotonic() < deadline, problems
                await asyncio.sleep(0.2)

            for conversation in everything:
                again = await post(conversation, "what is 6 * 7?", stream=False)
                assert again.status_code == 200, again.text
                assert again.json()["run"]["status"] == "completed", again.text
                assert "42" in again.json()["messages"][-1]["content"]
            assert await agent_invariant_violations(database_url, everything) == []
            assert await unsettled_runs(client) == 0
    finally:
        hold.set()
        server.stop()
        proxy.close()
        upstream.close()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
async def test_redis_hung_then_back(settings: Settings, app_factory: AppFactory) -> None:
    """Pass: with Redis frozen (SIGSTOP: connections open, no answers), readiness says so within
    its probe timeout, API-key requests still get answers (no 500, no hang beyond a few socket
    timeouts), and after SIGCONT readiness is back within 5 s."""
    redis = spawn_redis()
    try:
        redis_settings = RedisSettings(url=redis.url, socket_timeout_seconds=0.25)
        app = app_factory(with_admin(settings.model_copy(update={"redis": redis_settings})))
        async with AsyncTestClient(app=app) as client:
            admin = (await admin_session(client))["access_token"]
            key = (await issue_key(client, admin))["key"]
            chat = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
            assert (await client.post("/v1/chat/completions", json=chat, headers=bearer(key))).status_code == 200
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                ready = await client.get("/ready")
                assert ready.status_code == 503
                assert ready.json()["checks"]["redis"].startswith("error")
                statuses: list[Any] = []
                for _ in range(5):
                    response = await client.post("/v1/chat/completions", json=chat, headers=bearer(key))
                    statuses.append(response.status_code)
                assert all(status in (200, 503) for status in statuses), statuses
                assert 200 in statuses, "a cached key with the local fallback should still be served"
                assert time.monotonic() - started < 15
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
            deadline = time.monotonic() + 5
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, "readiness did not recover within 5 s of Redis returning"
                await asyncio.sleep(0.2)
    finally:
        redis.stop()
