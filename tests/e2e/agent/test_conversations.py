"""Conversations over HTTP, end to end: CRUD, pagination, ownership, runs with tools (SSE and
JSON), the WebSocket, the audit trail."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.agent.conftest import AgentServer, parse_sse
from tests.support.fake_upstream import UpstreamScript

CALC = UpstreamScript(words=[], tool_calls=[("calculator", '{"expression": "6 * 7"}')])
ANSWER = UpstreamScript(words=["The", "answer", "is", "42."])


def test_crud_pagination_and_ownership(agent_server: AgentServer) -> None:
    ids = [agent_server.new_conversation(title=f"chat {i}", metadata={"n": i}) for i in range(3)]
    with agent_server.http() as http, agent_server.http("other") as other:
        first = http.get("/v1/conversations", params={"limit": 2}).json()
        assert first["object"] == "list"
        assert [c["id"] for c in first["data"]] == [ids[2], ids[1]]  # newest first
        assert first["next_cursor"]
        second = http.get("/v1/conversations", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [c["id"] for c in second["data"]] == [ids[0]]
        assert second["next_cursor"] is None

        renamed = http.patch(f"/v1/conversations/{ids[0]}", json={"title": "renamed", "archived": True})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["title"] == "renamed"
        assert renamed.json()["status"] == "archived"
        archived = http.get("/v1/conversations", params={"status": "archived"}).json()["data"]
        assert [c["id"] for c in archived] == [ids[0]]
        active = http.get("/v1/conversations", params={"status": "active"}).json()["data"]
        assert ids[0] not in [c["id"] for c in active]
        one = http.get(f"/v1/conversations/{ids[1]}").json()
        assert one["title"] == "chat 1"
        assert one["metadata"] == {"n": 1}

        # Someone else's conversation is as absent as a missing one.
        for method, path, body in (
            ("GET", f"/v1/conversations/{ids[1]}", None),
            ("PATCH", f"/v1/conversations/{ids[1]}", {"title": "x"}),
            ("DELETE", f"/v1/conversations/{ids[1]}", None),
            ("GET", f"/v1/conversations/{ids[1]}/messages", None),
            ("POST", f"/v1/conversations/{ids[1]}/messages", {"content": "hi"}),
            ("POST", f"/v1/conversations/{ids[1]}/cancel", None),
        ):
            refused = other.request(method, path, json=body)
            assert refused.status_code == 404, (method, path, refused.text)
            assert refused.json()["error"]["type"] == "not_found_error"
        assert other.get("/v1/conversations").json()["data"] == []
        assert agent_server.upstream.request_count == 0

        assert http.delete(f"/v1/conversations/{ids[1]}").status_code == 204
        assert http.get(f"/v1/conversations/{ids[1]}").status_code == 404
        bad = http.get("/v1/conversations", params={"limit": 101})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "limit"
    anonymous = httpx.get(f"{agent_server.base_url}/v1/conversations")
    assert anonymous.status_code == 401


def _sse(agent_server: AgentServer, path: str, body: dict[str, Any], key: str = "all") -> list[dict[str, Any]]:
    with agent_server.http(key) as http:
        response = http.post(path, json={**body, "stream": True})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.text)


def test_a_message_runs_the_calculator_and_streams_events_in_order(agent_server: AgentServer) -> None:
    agent_server.script(CALC, ANSWER)
    conversation = agent_server.new_conversation()
    events = _sse(agent_server, f"/v1/conversations/{conversation}/messages", {"content": "what is 6 * 7?"})

    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    types = [e["event"] for e in events]
    assert types[0] == "run.started"
    assert types[-2:] == ["run.completed", "done"]
    assert events[-1]["data"] == "[DONE]"
    call = types.index("tool.call")
    result = types.index("tool.result")
    assert call < result < types.index("message.delta")  # the answer comes after the tool ran
    assert events[call]["data"]["name"] == "calculator"
    assert events[call]["data"]["arguments"] == {"expression": "6 * 7"}
    assert events[result]["data"]["status"] == "success"
    assert events[result]["data"]["output"]["result"] == 42
    completed = [e["data"] for e in events if e["event"] == "message.completed"]
    assert [m["role"] for m in completed] == ["assistant", "tool", "assistant"]
    assert completed[-1]["content"] == "The answer is 42."
    deltas = "".join(e["data"]["delta"] for e in events if e["event"] == "message.delta")
    assert deltas == "The answer is 42."
    run = events[-2]["data"]
    assert run["status"] == "completed"
    assert run["iterations"] == 2
    assert run["usage"]["total_tokens"] > 0

    # The model got the tool's result in its second call, as a tool message answering its call.
    second = agent_server.upstream.requests[1].body
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [completed[0]["tool_calls"][0]["id"]]
    assert json.loads(tool_messages[0]["content"])["result"] == 42
    assert [t["function"]["name"] for t in agent_server.upstream.requests[0].body["tools"]] == [
        "calculator",
        "current_time",
        "http_get",
    ]

    with agent_server.http() as http:
        messages = http.get(f"/v1/conversations/{conversation}/messages").json()["data"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert all(m["status"] == "complete" for m in messages)
        executions = http.get("/v1/tool-executions", params={"conversation_id": conversation}).json()["data"]
        assert [(e["name"], e["status"], e["output"]["result"]) for e in executions] == [("calculator", "success", 42)]


def test_parallel_tool_calls_non_streaming(agent_server: AgentServer) -> None:
    parallel = UpstreamScript(
        words=[],
        tool_calls=[("calculator", '{"expression": "2 ** 10"}'), ("current_time", '{"timezone": "UTC"}')],
    )
    agent_server.script(parallel, ANSWER)
    conversation = agent_server.new_conversation()
    with agent_server.http() as http:
        response = http.post(f"/v1/conversations/{conversation}/messages", json={"content": "two things"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["run"]["status"] == "completed"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "tool", "assistant"]
    calls = body["messages"][1]["tool_calls"]
    # The model's second call answers every call, in the order of the calls.
    tool_messages = [m for m in agent_server.upstream.requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [c["id"] for c in calls]
    assert json.loads(tool_messages[0]["content"])["result"] == 1024
    assert "UTC" in tool_messages[1]["content"]


def test_websocket_message_and_errors(agent_server: AgentServer) -> None:
    agent_server.script(CALC, ANSWER)
    conversation = agent_server.new_conversation()
    url = agent_server.base_url.replace("http://", "ws://") + f"/v1/conversations/{conversation}/ws"
    with connect(f"{url}?token={agent_server.keys['all']}", open_timeout=5) as ws:
        ws.send("not json")
        error = json.loads(ws.recv(timeout=5))
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        ws.send(json.dumps({"type": "message", "content": "what is 6 * 7?"}))
        received: list[dict[str, Any]] = []
        while not received or received[-1]["type"] != "done":
            received.append(json.loads(ws.recv(timeout=5)))
        types = [m["type"] for m in received]
        assert types[0] == "run.started"
        assert types[-2:] == ["run.completed", "done"]
        assert "tool.call" in types
        assert "tool.result" in types
        assert received[-2]["status"] == "completed"
        final = [m for m in received if m["type"] == "message.completed"][-1]
        assert final["role"] == "assistant"
        assert final["content"] == "The answer is 42."
        # Nothing waits for approval here: refused in-band, the socket stays usable.
        ws.send(json.dumps({"type": "approval", "decisions": [{"tool_call_id": "x", "approve": True}]}))
        refused = json.loads(ws.recv(timeout=5))
        assert refused["error"]["code"] == "not_pending_approval"
    # Without a valid credential the handshake itself is refused.
    for bad in (url, f"{url}?token=sk-not-a-key"):
        with pytest.raises(InvalidStatus) as refused_handshake:
            connect(bad, open_timeout=5)
        assert refused_handshake.value.response.status_code == 403
    # Header auth works too; someone else's conversation is refused.
    with connect(url, additional_headers=agent_server.headers("other"), open_timeout=5) as ws:
        refused = json.loads(ws.recv(timeout=5))
        assert refused["type"] == "error"
        assert refused["error"]["type"] == "not_found_error"


def test_tools_api_executions_are_recorded(agent_server: AgentServer) -> None:
    with agent_server.http() as http:
        ok = http.post("/v1/tools/execute", json={"name": "calculator", "arguments": {"expression": "1 + 2"}})
        assert ok.status_code == 200
        assert ok.json()["output"]["result"] == 3
        gated = http.post("/v1/tools/execute", json={"name": "http_get", "arguments": {"url": agent_server.page_url}})
        assert gated.status_code == 403
        assert gated.json()["error"]["code"] == "approval_required"
        page = http.get("/v1/tool-executions", params={"limit": 1}).json()
        assert [(e["name"], e["status"], e["error_code"]) for e in page["data"]] == [
            ("http_get", "error", "approval_required")
        ]
        rest = http.get("/v1/tool-executions", params={"cursor": page["next_cursor"]}).json()["data"]
        assert [(e["name"], e["status"], e["output"]["result"], e["conversation_id"]) for e in rest] == [
            ("calculator", "success", 3, None)
        ]
    with agent_server.http("no-tools") as http:
        refused = http.post("/v1/tools/execute", json={"name": "calculator", "arguments": {"expression": "1"}})
        assert refused.status_code == 403
    with agent_server.http() as http:
        statuses = [e["status"] for e in http.get("/v1/tool-executions").json()["data"]]
        assert statuses[0] == "not_permitted"
    assert agent_server.listener.accepted == 0


def test_idle_streams_get_pings_and_upstream_failures_are_error_events(agent_server: AgentServer) -> None:
    # The model takes a while to answer: the event stream sends ": ping" meanwhile (0.2 s in tests).
    agent_server.script(UpstreamScript(words=["late"], first_byte_delay=0.7))
    conversation = agent_server.new_conversation()
    with agent_server.http() as http:
        response = http.post(f"/v1/conversations/{conversation}/messages", json={"content": "hi", "stream": True})
    assert ": ping" in response.text
    assert [e["event"] for e in parse_sse(response.text)][-2:] == ["run.completed", "done"]

    agent_server.script(UpstreamScript(status=500), UpstreamScript(status=500), UpstreamScript(status=500))
    events = _sse(agent_server, f"/v1/conversations/{conversation}/messages", {"content": "again"})
    assert [e["event"] for e in events] == ["run.started", "error", "run.completed", "done"]
    error = events[1]["data"]["error"]
    assert error["type"] == "upstream_error"
    assert "sk-upstream" not in json.dumps(events)
    assert events[2]["data"]["status"] == "failed"
    assert events[2]["data"]["error"]["code"] == "upstream_error"


def test_the_agent_model_calls_count_against_the_keys_rate_limit(agent_server: AgentServer) -> None:
    """Every model call a run makes is admitted against the caller's limits like a chat
    completion: with one request a minute, the first run completes; the next run's model call is
    refused before anything reaches the upstream, and the run ends failed with
    rate_limit_exceeded (the agent reports a run's failure in the run, as for any other)."""
    agent_server.script(UpstreamScript(words=["first", "answer"]))
    conversation = agent_server.new_conversation("one-per-minute")
    with agent_server.http("one-per-minute") as http:
        first = http.post(f"/v1/conversations/{conversation}/messages", json={"content": "hello"})
        assert first.status_code == 200, first.text
        assert first.json()["run"]["status"] == "completed"
        calls = agent_server.upstream.request_count
        second = http.post(f"/v1/conversations/{conversation}/messages", json={"content": "again"})
    assert second.status_code == 200, second.text
    run = second.json()["run"]
    assert run["status"] == "failed"
    assert run["error"]["code"] == "rate_limit_exceeded"
    assert agent_server.upstream.request_count == calls, "a refused model call still went upstream"
