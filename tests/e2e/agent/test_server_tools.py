"""Server tools on /v1/chat/completions with the official `openai` SDK: a name-only tool runs
on the server through the agent loop; the answer is the final assistant message."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.agent.conftest import MODEL, AgentServer
from tests.support.fake_upstream import UpstreamScript

CALC = UpstreamScript(words=[], tool_calls=[("calculator", '{"expression": "6 * 7"}')])
ANSWER = UpstreamScript(words=["The", "answer", "is", "42."])
CALCULATOR: Any = [{"type": "function", "function": {"name": "calculator"}}]


def test_non_streaming(agent_server: AgentServer) -> None:
    agent_server.script(CALC, ANSWER)
    completion = agent_server.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "6 * 7?"}],
        tools=CALCULATOR,
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    [choice] = completion.choices
    assert choice.message.content == "The answer is 42."
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    first, second = (r.body for r in agent_server.upstream.requests)
    # The gateway filled in the schema, offered only the named tool, and ran it itself.
    [offered] = first["tools"]
    assert offered["function"]["name"] == "calculator"
    assert offered["function"]["parameters"]["type"] == "object"
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    tool = [m for m in second["messages"] if m["role"] == "tool"]
    assert json.loads(tool[0]["content"])["result"] == 42


def test_streaming(agent_server: AgentServer) -> None:
    agent_server.script(CALC, ANSWER)
    chunks = list(
        agent_server.openai().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "6 * 7?"}],
            tools=CALCULATOR,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "The answer is 42."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0


def test_a_call_for_a_tool_not_named_is_not_run(agent_server: AgentServer) -> None:
    sneaky = UpstreamScript(words=[], tool_calls=[("http_get", json.dumps({"url": agent_server.page_url}))])
    agent_server.script(sneaky, ANSWER)
    completion = agent_server.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=CALCULATOR
    )
    assert completion.choices[0].message.content == "The answer is 42."
    tool = [m for m in agent_server.upstream.requests[1].body["messages"] if m["role"] == "tool"]
    assert tool[0]["content"].startswith("not permitted: ")
    assert agent_server.listener.accepted == 0


def test_refusals(agent_server: AgentServer) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    http_get: Any = [{"type": "function", "function": {"name": "http_get"}}]
    with pytest.raises(openai.PermissionDeniedError) as gated:
        agent_server.openai().chat.completions.create(model=MODEL, messages=messages, tools=http_get)
    assert gated.value.code == "approval_required"
    with pytest.raises(openai.PermissionDeniedError) as not_allowed:
        agent_server.openai("calc-only").chat.completions.create(model=MODEL, messages=messages, tools=http_get)
    assert not_allowed.value.code == "tool_not_allowed"
    with pytest.raises(openai.BadRequestError) as unknown:
        agent_server.openai().chat.completions.create(
            model=MODEL, messages=messages, tools=[{"type": "function", "function": {"name": "no_such_tool"}}]
        )
    assert unknown.value.param == "tools"
    mixed = [*CALCULATOR, {"type": "function", "function": {"name": "mine", "parameters": {"type": "object"}}}]
    with httpx.Client(base_url=agent_server.base_url, headers=agent_server.headers()) as http:
        refused = http.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, "tools": mixed})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "tools"
    with pytest.raises(openai.NotFoundError):
        agent_server.openai().chat.completions.create(model="no-such-model", messages=messages, tools=CALCULATOR)
    assert agent_server.upstream.request_count == 0


def test_an_upstream_failure_before_anything_streamed_is_an_http_error(agent_server: AgentServer) -> None:
    agent_server.script(default=UpstreamScript(status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        agent_server.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=CALCULATOR, stream=True
        )
    assert caught.value.status_code == 502
    with pytest.raises(openai.InternalServerError) as caught:
        agent_server.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=CALCULATOR
        )
    assert caught.value.status_code == 502


def test_server_tools_requests_are_rate_limited_like_any_other(agent_server: AgentServer) -> None:
    """A key's request limit holds on the server-tools path too (each model call of the loop is
    admitted): with one request a minute the first call answers, the second is a 429 with
    Retry-After and never reaches the upstream."""
    agent_server.script(ANSWER)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "6 * 7?"}], "tools": CALCULATOR}
    with agent_server.http("one-per-minute") as http:
        first = http.post("/v1/chat/completions", json=body)
        assert first.status_code == 200, first.text
        calls = agent_server.upstream.request_count
        second = http.post("/v1/chat/completions", json=body)
    assert second.status_code == 429, second.text
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(second.headers["retry-after"]) >= 1
    assert agent_server.upstream.request_count == calls
