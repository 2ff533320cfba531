"""`GET /v1/conversations/{id}` carries the conversation's `active_run` (an extension of the
contract's Conversation, docs/api.md): what a client that reloads needs to show a pending
approval with its real reason, or that a run is still going. Real server, fake upstream."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.e2e.agent.conftest import AgentServer
from tests.support.fake_upstream import UpstreamScript

ANSWER = UpstreamScript(words=["Done."])


def _conversation(agent_server: AgentServer, conversation: str, key: str = "all") -> dict[str, Any]:
    with agent_server.http(key) as http:
        response = http.get(f"/v1/conversations/{conversation}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_pending_approval_and_its_reason_are_on_the_conversation(agent_server: AgentServer) -> None:
    fetch = UpstreamScript(words=[], tool_calls=[("http_get", json.dumps({"url": agent_server.page_url}))])
    agent_server.script(fetch, ANSWER)
    conversation = agent_server.new_conversation(title="gated")
    assert _conversation(agent_server, conversation)["active_run"] is None  # no run yet

    with agent_server.http() as http:
        posted = http.post(f"/v1/conversations/{conversation}/messages", json={"content": "read the page"})
    assert posted.status_code == 200, posted.text
    run = posted.json()["run"]
    assert run["status"] == "requires_approval"

    seen = _conversation(agent_server, conversation)
    assert seen["id"] == conversation
    assert seen["title"] == "gated"  # the contract's fields are all still there
    active = seen["active_run"]
    assert active["id"] == run["id"]
    assert active["object"] == "conversation.run"
    assert active["status"] == "requires_approval"
    [pending] = active["pending_approvals"]
    assert pending == run["pending_approvals"][0]
    assert pending["name"] == "http_get"
    assert pending["arguments"] == {"url": agent_server.page_url}
    assert pending["reason"] == "the tool 'http_get' requires human approval"
    # Lists stay as they were (one query per item would be needed).
    with agent_server.http() as http:
        listed = http.get("/v1/conversations").json()["data"]
    assert "active_run" not in next(c for c in listed if c["id"] == conversation)

    with agent_server.http() as http:
        approved = http.post(
            f"/v1/conversations/{conversation}/approvals",
            json={"decisions": [{"tool_call_id": pending["tool_call_id"], "approve": True}]},
        )
    assert approved.status_code == 200, approved.text
    assert approved.json()["run"]["status"] == "completed"
    assert _conversation(agent_server, conversation)["active_run"] is None  # finished runs are not active


def test_a_running_run_is_the_active_run_until_it_ends(agent_server: AgentServer) -> None:
    release = threading.Event()
    agent_server.script(UpstreamScript(words=["Slow", "answer."], hold=release))
    conversation = agent_server.new_conversation()

    def post() -> Any:
        with agent_server.http(timeout=20) as http:
            return http.post(f"/v1/conversations/{conversation}/messages", json={"content": "hello"})

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post)
        try:
            assert agent_server.upstream.wait_for(lambda: agent_server.upstream.request_count == 1, timeout=10)
            active = _conversation(agent_server, conversation)["active_run"]
            assert active is not None
            assert active["status"] == "running"
            assert active["pending_approvals"] == []
        finally:
            release.set()
        response = pending.result(timeout=20)
    assert response.status_code == 200, response.text
    assert response.json()["run"]["id"] == active["id"]
    assert response.json()["run"]["status"] == "completed"
    assert _conversation(agent_server, conversation)["active_run"] is None


def test_another_users_conversation_stays_hidden(agent_server: AgentServer) -> None:
    conversation = agent_server.new_conversation()
    with agent_server.http("other") as http:
        response = http.get(f"/v1/conversations/{conversation}")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_active_run_is_in_the_openapi_schema(agent_server: AgentServer) -> None:
    with agent_server.http() as http:
        schema = http.get("/openapi.json").json()
    answer = schema["paths"]["/v1/conversations/{conversation_id}"]["get"]["responses"]["200"]
    reference = answer["content"]["application/json"]["schema"]["$ref"]
    components = schema["components"]["schemas"]
    conversation = components[reference.rsplit("/", 1)[-1]]
    assert {"id", "title", "status", "archived", "active_run"} <= set(conversation["properties"])
    run_schema = json.dumps(conversation["properties"]["active_run"])
    run = components[next(name for name in components if f'/{name}"' in run_schema)]
    assert {"id", "status", "pending_approvals"} <= set(run["properties"])
    approval_ref = run["properties"]["pending_approvals"]["items"]["$ref"]
    approval = components[approval_ref.rsplit("/", 1)[-1]]
    assert set(approval["properties"]) == {"tool_call_id", "name", "arguments", "reason"}
