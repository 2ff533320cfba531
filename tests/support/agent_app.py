"""The real app with the agent end-to-end tests' tool registry, for a server in a process of
its own (``uvicorn --factory tests.support.agent_app:create_app``), and that registry.

The one test-only piece: `http_get` may reach a loopback listener under the name
``public.test`` (`HttpGetTool`'s `loopback_hosts_for_tests`, which no setting can enable).
Everything else is built exactly as production builds it, from the environment.
"""

from __future__ import annotations

from litestar import Litestar

from app.application.tools import ToolRegistry
from app.infrastructure.tools.calculator import CalculatorTool
from app.infrastructure.tools.current_time import CurrentTimeTool
from app.infrastructure.tools.http_get import HttpGetTool

TEST_HOST = "public.test"


async def loopback_resolver(host: str, port: int) -> list[str]:
    if host == TEST_HOST:
        return ["127.0.0.1"]
    raise OSError(f"unknown host {host}")


def tool_registry() -> ToolRegistry:
    return ToolRegistry(
        [
            CalculatorTool(),
            CurrentTimeTool(),
            HttpGetTool(timeout_seconds=3.0, resolver=loopback_resolver, loopback_hosts_for_tests=[TEST_HOST]),
        ]
    )


def create_app() -> Litestar:
    from app.bootstrap import build_container
    from app.config import load_settings
    from app.infrastructure.http.app import build_http_app
    from app.infrastructure.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.logging)
    return build_http_app(build_container(settings, tools=tool_registry()))
