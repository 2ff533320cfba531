"""``agent_api_tool_runs_total`` and ``agent_api_tool_run_duration_seconds`` through the real
API (real Postgres and Redis, the demo model): every path that runs a tool moves the counter
of that tool and status by exactly the number of calls it ran."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from tests.conftest import AppFactory
from tests.support.identity import admin_session, bearer, with_admin

Client = AsyncTestClient[Litestar]
RUNS = "agent_api_tool_runs_total"
DURATION_COUNT = "agent_api_tool_run_duration_seconds_count"


@pytest.fixture
async def client(settings: Settings, app_factory: AppFactory) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app_factory(with_admin(settings))) as test_client:
        yield test_client


@pytest.fixture
async def headers(client: Client) -> dict[str, str]:
    return bearer((await admin_session(client))["access_token"])


async def samples(client: Client) -> dict[tuple[str, str, str], float]:
    """(sample name, tool, status) -> value, read from /metrics."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    values: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in (RUNS, DURATION_COUNT):
                values[(sample.name, sample.labels["tool"], sample.labels["status"])] = sample.value
    return values


def delta(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> dict[tuple[str, str, str], float]:
    """What changed (only the changed series, so an unexpected extra count shows up too)."""
    keys = set(before) | set(after)
    changes = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in keys}
    return {key: value for key, value in changes.items() if value}


async def test_tools_execute_counts_success_and_errors(client: Client, headers: dict[str, str]) -> None:
    before = await samples(client)
    ok = await client.post(
        "/v1/tools/execute", json={"name": "calculator", "arguments": {"expression": "6 * 7"}}, headers=headers
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "success"
    bad = await client.post(
        "/v1/tools/execute", json={"name": "calculator", "arguments": {"expression": "6 *"}}, headers=headers
    )
    assert bad.status_code == 200, bad.text
    assert bad.json()["status"] == "error"
    invalid = await client.post(
        "/v1/tools/execute", json={"name": "calculator", "arguments": {"expression": 12}}, headers=headers
    )
    assert invalid.status_code == 400, invalid.text
    unknown = await client.post("/v1/tools/execute", json={"name": "no_such_tool"}, headers=headers)
    assert unknown.status_code == 404, unknown.text

    assert delta(before, await samples(client)) == {
        (RUNS, "calculator", "success"): 1,
        (RUNS, "calculator", "error"): 2,  # the tool's own error, and the refused arguments
        (RUNS, "<unknown>", "error"): 1,  # an invented name does not become a label
        (DURATION_COUNT, "calculator", "success"): 1,
        (DURATION_COUNT, "calculator", "error"): 1,  # the refusal never ran: not timed
    }


async def test_tools_batch_counts_each_call(client: Client, headers: dict[str, str]) -> None:
    before = await samples(client)
    calls = [
        {"name": "calculator", "arguments": {"expression": "1 + 1"}},
        {"name": "calculator", "arguments": {"expression": "2 + 2"}},
        {"name": "calculator", "arguments": {"expression": "1 / 0"}},
        {"name": "current_time", "arguments": {"timezone": "UTC"}},
    ]
    response = await client.post("/v1/tools/batch", json={"calls": calls}, headers=headers)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["success", "success", "error", "success"]

    assert delta(before, await samples(client)) == {
        (RUNS, "calculator", "success"): 2,
        (RUNS, "calculator", "error"): 1,
        (RUNS, "current_time", "success"): 1,
        (DURATION_COUNT, "calculator", "success"): 2,
        (DURATION_COUNT, "calculator", "error"): 1,
        (DURATION_COUNT, "current_time", "success"): 1,
    }


async def test_conversation_runs_count_the_models_tool_calls(client: Client, headers: dict[str, str]) -> None:
    created = await client.post("/v1/conversations", json={"model": "demo"}, headers=headers)
    assert created.status_code == 201, created.text
    path = f"/v1/conversations/{created.json()['id']}/messages"
    before = await samples(client)

    plain = await client.post(path, json={"content": "what is 6 * 7?"}, headers=headers)
    assert plain.status_code == 200, plain.text
    assert plain.json()["run"]["status"] == "completed"
    assert [m["role"] for m in plain.json()["messages"]] == ["user", "assistant", "tool", "assistant"]
    streamed = await client.post(path, json={"content": "and 2 + 3?", "stream": True}, headers=headers)
    assert streamed.status_code == 200, streamed.text
    assert "event: tool.result" in streamed.text
    assert "event: run.completed" in streamed.text
    chatted = await client.post("/v1/conversations", json={"model": "demo"}, headers=headers)
    no_tool = await client.post(
        f"/v1/conversations/{chatted.json()['id']}/messages", json={"content": "hello"}, headers=headers
    )
    assert no_tool.status_code == 200, no_tool.text

    assert delta(before, await samples(client)) == {
        (RUNS, "calculator", "success"): 2,
        (DURATION_COUNT, "calculator", "success"): 2,
    }


async def test_server_tools_on_chat_completions_are_counted(client: Client, headers: dict[str, str]) -> None:
    before = await samples(client)
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "what is 7 * 8?"}],
        "tools": [{"type": "function", "function": {"name": "calculator"}}],
    }
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert "56" in response.json()["choices"][0]["message"]["content"]
    streamed = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
    assert streamed.status_code == 200, streamed.text
    assert streamed.text.rstrip().endswith("data: [DONE]")

    assert delta(before, await samples(client)) == {
        (RUNS, "calculator", "success"): 2,
        (DURATION_COUNT, "calculator", "success"): 2,
    }
