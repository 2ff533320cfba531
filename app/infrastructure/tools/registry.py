"""Builds the tool registry from settings (called once by the composition root)."""

from __future__ import annotations

from app.application.tools import ToolRegistry
from app.config import ToolsSettings
from app.infrastructure.tools.calculator import CalculatorTool
from app.infrastructure.tools.current_time import CurrentTimeTool
from app.infrastructure.tools.http_get import HttpGetTool
from app.infrastructure.tools.plugins import load_plugin_tools
from app.infrastructure.tools.web_search import WebSearchTool


def build_tool_registry(settings: ToolsSettings) -> ToolRegistry:
    """The built-ins, `web_search` when a backend is configured, then the installed plugins.

    Built-ins are registered first, so a plugin cannot replace one (its duplicate is skipped).
    """
    registry = ToolRegistry(
        [
            CalculatorTool(),
            CurrentTimeTool(),
            HttpGetTool(
                max_bytes=settings.http_get_max_bytes,
                timeout_seconds=settings.http_get_timeout_seconds,
                max_redirects=settings.http_get_max_redirects,
            ),
        ]
    )
    if settings.web_search_url:
        api_key = settings.web_search_api_key.get_secret_value() if settings.web_search_api_key else None
        registry.register(
            WebSearchTool(settings.web_search_url, api_key=api_key, timeout_seconds=settings.web_search_timeout_seconds)
        )
    if settings.plugins_enabled:
        load_plugin_tools(registry)
    return registry
