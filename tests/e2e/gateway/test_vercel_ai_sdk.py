"""The Vercel AI SDK (`ai` + `@ai-sdk/openai`) under node: text with usage, parallel tool calls.

Installed with the openai npm package by `make test` (tests/node); skipped only without node.
"""

from __future__ import annotations

import shutil

import pytest

from tests.e2e.gateway.conftest import GatewayServer
from tests.e2e.gateway.test_node_sdk import NODE_DIR, _install, run_node_script
from tests.support.fake_upstream import UpstreamScript


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_vercel_ai_sdk_streams_text_and_tool_calls(gateway_server: GatewayServer) -> None:
    _install()
    assert (NODE_DIR / "node_modules" / "ai").is_dir(), "the npm packages are not installed (run `make test`)"
    calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Oslo"}')]
    gateway_server.upstream.reset(
        UpstreamScript(),
        UpstreamScript(),
        UpstreamScript(words=[], tool_calls=calls, repeat_tool_call_fields=True, vary_ids=True),
    )
    summary = run_node_script("vercel_ai_stream.mjs", gateway_server)
    assert summary["errors"] == []
    assert summary["answer"] == "Hello from the fake upstream."
    assert summary["usage"]["inputTokens"] == 11
    assert summary["usage"]["outputTokens"] == 7
    assert summary["finishReason"] == "tool-calls"
    assert [(c["name"], c["input"]) for c in summary["toolCalls"]] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert all(c["id"] for c in summary["toolCalls"])
