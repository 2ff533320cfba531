"""The official `openai` npm package under node: one streaming call with (parallel) tool calls.

`make test` installs the package (tests/node, from its committed lock) when node is present;
only this test is skipped when node is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gateway.conftest import GatewayServer
from tests.support.fake_upstream import UpstreamScript

NODE_DIR = Path(__file__).resolve().parents[2] / "node"


def _node_ready() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "openai").is_dir()


def run_node_script(script: str, gateway_server: GatewayServer) -> dict[str, Any]:
    """Run a node script of tests/node against the gateway (as an OpenAI client with a real API
    key); its last stdout line is a JSON summary of what the SDK saw."""
    result = subprocess.run(
        ["node", script],
        cwd=NODE_DIR,
        env={
            **os.environ,
            "OPENAI_BASE_URL": f"{gateway_server.base_url}/v1",
            "OPENAI_API_KEY": gateway_server.api_key(),
            "MODEL": "fake-model",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def _install() -> None:
    npm = shutil.which("npm")
    if shutil.which("node") and npm and not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=False, timeout=180)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_sdk_streams_tool_calls(gateway_server: GatewayServer) -> None:
    _install()
    assert _node_ready(), "the openai npm package is not installed in tests/node (run `make test`)"
    calls = [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Oslo"}')]
    script = UpstreamScript(words=[], tool_calls=calls, repeat_tool_call_fields=True, vary_ids=True)
    gateway_server.upstream.reset(script)
    summary = run_node_script("stream_tool_call.mjs", gateway_server)
    assert len(summary["ids"]) == 1
    assert summary["finishReason"] == "tool_calls"
    assert summary["lastChoices"] == 0
    assert summary["usage"]["total_tokens"] == 18
    for index, city in (("0", "Paris"), ("1", "Oslo")):
        call = summary["calls"][index]
        assert call["id"]
        assert (call["type"], call["name"]) == ("function", "get_weather")
        assert "repeated" not in call
        assert json.loads(call["arguments"]) == {"city": city}
    assert [c["function"]["name"] for c in summary["finalToolCalls"]] == ["get_weather", "get_weather"]
    assert [json.loads(c["function"]["arguments"])["city"] for c in summary["finalToolCalls"]] == ["Paris", "Oslo"]
