"""web_search: present only with a configured backend; talks to it as a JSON endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from pydantic import SecretStr

from app.application.tools import ToolError
from app.config import ToolsSettings
from app.infrastructure.tools.registry import build_tool_registry
from tests.support.http_listener import CountingHTTPServer, reply


@pytest.fixture
def backend() -> Iterator[CountingHTTPServer]:
    srv = CountingHTTPServer().start()
    seen: list[str] = []

    def search(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Authorization", ""))
        results = [{"title": f"r{i}", "url": f"https://example.com/{i}", "snippet": "s", "extra": 1} for i in range(8)]
        reply(handler, 200, json.dumps({"results": results}).encode(), "application/json")

    srv.routes["/search"] = search
    srv.routes["/broken"] = lambda h: reply(h, 500, b"oops")
    srv.seen_auth = seen  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def test_web_search_is_absent_without_a_backend() -> None:
    registry = build_tool_registry(ToolsSettings(plugins_enabled=False))
    assert registry.names() == ["calculator", "current_time", "http_get"]
    assert [t.name for t in registry.all() if t.requires_approval] == ["http_get"]


async def test_web_search_queries_the_backend(backend: CountingHTTPServer) -> None:
    settings = ToolsSettings(
        plugins_enabled=False,
        web_search_url=f"http://127.0.0.1:{backend.port}/search",
        web_search_api_key=SecretStr("search-key-123"),
    )
    tool = build_tool_registry(settings).get("web_search")
    assert tool is not None
    output = await tool.run({"query": "agent api", "limit": 2})
    assert output.value == {
        "query": "agent api",
        "results": [
            {"title": "r0", "url": "https://example.com/0", "snippet": "s"},
            {"title": "r1", "url": "https://example.com/1", "snippet": "s"},
        ],
    }
    path, _host = backend.requests[0]
    assert path == "/search?q=agent+api&limit=2"
    assert backend.seen_auth == ["Bearer search-key-123"]  # type: ignore[attr-defined]


async def test_a_failing_backend_is_a_tool_error(backend: CountingHTTPServer) -> None:
    settings = ToolsSettings(plugins_enabled=False, web_search_url=f"http://127.0.0.1:{backend.port}/broken")
    tool = build_tool_registry(settings).get("web_search")
    assert tool is not None
    with pytest.raises(ToolError, match="answered 500"):
        await tool.run({"query": "x"})
