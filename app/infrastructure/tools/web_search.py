"""`web_search`: queries the operator-configured search backend (only registered when one is set).

The backend is a simple JSON endpoint: ``GET <url>?q=<query>&limit=<n>`` answering
``{"results": [{"title": ..., "url": ..., "snippet": ...}]}``. Its URL comes from the
operator's settings (trusted), never from the model, so no SSRF check applies to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from app.application.tools import ToolError, ToolOutput

MAX_RESULTS = 10
MAX_FIELD_CHARS = 1000
MAX_RESPONSE_BYTES = 1_000_000


class WebSearchTool:
    """Searches the web through the configured backend and returns titles, URLs and snippets."""

    name = "web_search"
    description = "Search the web. Returns up to `limit` results with title, url and snippet."
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 500, "description": "What to search for."},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS, "description": "Results (default 5)."},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    requires_approval = False

    def __init__(self, url: str, *, api_key: str | None = None, timeout_seconds: float = 10.0) -> None:
        self._url = url
        self._api_key = api_key
        self._timeout = timeout_seconds
        self.timeout_seconds = timeout_seconds + 1.0

    async def run(self, arguments: Mapping[str, Any]) -> ToolOutput:
        query = str(arguments["query"])
        limit = int(arguments.get("limit", 5))
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as client:
                response = await client.get(self._url, params={"q": query, "limit": limit}, headers=headers)
        except httpx.HTTPError as exc:
            raise ToolError(f"the search backend is unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ToolError(f"the search backend answered {response.status_code}")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise ToolError("the search backend answered too much")
        try:
            payload = response.json()
            items = payload["results"]
            if not isinstance(items, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ToolError("the search backend answered in an unexpected format") from None
        results = [
            {key: str(item.get(key, ""))[:MAX_FIELD_CHARS] for key in ("title", "url", "snippet")}
            for item in items[:limit]
            if isinstance(item, dict)
        ]
        return ToolOutput({"query": query, "results": results})
