"""Stopping runs end to end: cancel, client disconnect (SSE and WebSocket), the iteration
cap, and the caller's tool permissions inside the loop."""

from __future__ import annotations

import json
import threading
from typing import Any

from websockets.sync.client import connect

from tests.e2e.agent.conftest import AgentServer, parse_sse, wait_until
from tests.support.fake_upstream import UpstreamScript

CALC = UpstreamScript(words=[], tool_calls=[("calculator", '{"expression": "1 + 1"}')])
SLOW = UpstreamScript(words=[f"w{i}" for i in range(60)], chunk_delay=0.1)


def _messages(agent_server: AgentServer, conversation: str) -> list[dict[str, Any]]:
    with agent_server.http() as http:
        data: list[dict[str, Any]] = http.get(f"/v1/conversations/{conversation}/messages").json()["data"]
    return data


def _read_until_delta(lines: Any) -> None:
    for line in lines:
        if line == "event: message.delta":
            return
    raise AssertionError("the stream ended before any delta")


def test_cancel_stops_the_run_and_keeps_what_was_produced(agent_server: AgentServer) -> None:
    agent_server.script(SLOW)
    conversation = agent_server.new_conversation()
    seen: list[str] = []
    streaming = threading.Event()

    def consume() -> None:
        with (
            agent_server.http() as http,
            http.stream(
                "POST", f"/v1/conversations/{conversation}/messages", json={"content": "talk", "stream": True}
            ) as response,
        ):
            for line in response.iter_lines():
                seen.append(line)
                if line == "event: message.delta":
                    streaming.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert streaming.wait(5)
    with agent_server.http() as http:
        cancelled = http.post(f"/v1/conversations/{conversation}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    reader.join(5)
    assert not reader.is_alive()
    events = parse_sse("\n".join(seen))
    assert [e["event"] for e in events][-2:] == ["run.completed", "done"]
    assert events[-2]["data"]["status"] == "cancelled"
    assert agent_server.upstream.wait_for(lambda: agent_server.upstream.disconnects >= 1)
    messages = _messages(agent_server, conversation)
    assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "incomplete")]
    assert messages[1]["content"].startswith("w0")
    with agent_server.http() as http:
        nothing = http.post(f"/v1/conversations/{conversation}/cancel")
        assert nothing.status_code == 409


def test_a_client_disconnect_cancels_the_run(agent_server: AgentServer) -> None:
    agent_server.script(SLOW)
    conversation = agent_server.new_conversation()
    with (
        agent_server.http() as http,
        http.stream(
            "POST", f"/v1/conversations/{conversation}/messages", json={"content": "talk", "stream": True}
        ) as response,
    ):
        _read_until_delta(response.iter_lines())
    # The client is gone: the upstream call is closed and the partial answer stored.
    assert agent_server.upstream.wait_for(lambda: agent_server.upstream.disconnects >= 1)
    assert wait_until(lambda: len(_messages(agent_server, conversation)) == 2)
    assistant = _messages(agent_server, conversation)[1]
    assert assistant["status"] == "incomplete"
    assert assistant["content"].startswith("w0")
    agent_server.script(UpstreamScript(words=["again"]))
    with agent_server.http() as http:  # the conversation is free again
        again = http.post(f"/v1/conversations/{conversation}/messages", json={"content": "hello"})
    assert again.status_code == 200
    assert again.json()["run"]["status"] == "completed"


def test_websocket_cancel_and_disconnect(agent_server: AgentServer) -> None:
    agent_server.script(SLOW, SLOW)
    conversation = agent_server.new_conversation()
    url = agent_server.base_url.replace("http://", "ws://") + f"/v1/conversations/{conversation}/ws"
    with connect(url, additional_headers=agent_server.headers(), open_timeout=5) as ws:
        ws.send(json.dumps({"type": "message", "content": "talk"}))
        while json.loads(ws.recv(timeout=5))["type"] != "message.delta":
            pass
        ws.send(json.dumps({"type": "cancel"}))
        received = [json.loads(ws.recv(timeout=5))]
        while received[-1]["type"] != "done":
            received.append(json.loads(ws.recv(timeout=5)))
        assert received[-2]["type"] == "run.completed"
        assert received[-2]["status"] == "cancelled"
        ws.send(json.dumps({"type": "message", "content": "talk again"}))
        while json.loads(ws.recv(timeout=5))["type"] != "message.delta":
            pass
    # Closing the socket mid-run cancels it; what was produced is kept.
    assert wait_until(lambda: len(_messages(agent_server, conversation)) == 4)
    assert [m["status"] for m in _messages(agent_server, conversation)] == [
        "complete",
        "incomplete",
        "complete",
        "incomplete",
    ]


def test_a_tool_outside_allowed_tools_is_refused_inside_the_loop(agent_server: AgentServer) -> None:
    asks = UpstreamScript(words=[], tool_calls=[("http_get", json.dumps({"url": agent_server.page_url}))])
    agent_server.script(asks, UpstreamScript(words=["ok"]))
    conversation = agent_server.new_conversation("calc-only")
    with agent_server.http("calc-only") as http:
        response = http.post(f"/v1/conversations/{conversation}/messages", json={"content": "fetch it"})
        assert response.status_code == 200, response.text
        body = response.json()
        executions = http.get("/v1/tool-executions", params={"conversation_id": conversation}).json()["data"]
    assert body["run"]["status"] == "completed"
    tool = next(m for m in body["messages"] if m["role"] == "tool")
    assert tool["content"].startswith("not permitted: ")
    assert [(e["name"], e["status"], e["error_code"]) for e in executions] == [
        ("http_get", "not_permitted", "tool_not_allowed")
    ]
    offered = [t["function"]["name"] for t in agent_server.upstream.requests[0].body["tools"]]
    assert offered == ["calculator", "current_time"]
    assert agent_server.listener.accepted == 0


def test_the_iteration_cap_ends_the_run(agent_server: AgentServer) -> None:
    agent_server.script(default=CALC)  # the model never stops asking for tools
    conversation = agent_server.new_conversation()
    with agent_server.http() as http:
        response = http.post(
            f"/v1/conversations/{conversation}/messages", json={"content": "loop", "max_iterations": 2}
        )
        assert response.status_code == 200, response.text
        too_many = http.post(f"/v1/conversations/{conversation}/messages", json={"content": "x", "max_iterations": 99})
        assert too_many.status_code == 400
        assert too_many.json()["error"]["param"] == "max_iterations"
    run = response.json()["run"]
    assert run["status"] == "failed"
    assert run["iterations"] == 2
    assert run["error"]["code"] == "max_iterations_reached"
    assert agent_server.upstream.request_count == 2
