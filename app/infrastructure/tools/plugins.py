"""Third-party tools from the `agent_api.tools` entry point group.

A plugin distribution declares, in its pyproject.toml::

    [project.entry-points."agent_api.tools"]
    my_tool = "my_package:MyTool"

The object an entry point names may be a tool instance, a class (instantiated without
arguments) or a factory function returning a tool or a list of tools. Each is checked like
a built-in. Anything that fails (import error, bad shape, duplicate name) is logged and
skipped: a broken plugin never stops the service from starting.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from app.application.tools import Tool, ToolRegistrationError, ToolRegistry, check_tool
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)

ENTRY_POINT_GROUP = "agent_api.tools"


def _tools_from(obj: Any) -> list[Any]:
    if inspect.isclass(obj):
        return [obj()]
    if hasattr(obj, "run") and hasattr(obj, "name"):
        return [obj]
    if callable(obj):
        made = obj()
        if hasattr(made, "run") and hasattr(made, "name"):
            return [made]
        if isinstance(made, Iterable):
            return list(made)
    raise ToolRegistrationError(f"{obj!r} is neither a tool, a tool class nor a factory of tools")


def load_plugin_tools(registry: ToolRegistry, *, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register every tool the installed plugins provide; return the names registered."""
    registered: list[str] = []
    for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
        registered.extend(_load_one(registry, entry_point))
    return registered


def _load_one(registry: ToolRegistry, entry_point: EntryPoint) -> list[str]:
    source = f"{entry_point.name} = {entry_point.value}"
    try:
        candidates = _tools_from(entry_point.load())
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop start-up
        log.error("tool_plugin_failed", entry_point=source, error=f"{type(exc).__name__}: {exc}")
        return []
    names: list[str] = []
    for candidate in candidates:
        try:
            check_tool(candidate)
            tool: Tool = candidate
            registry.register(tool)
        except Exception as exc:  # noqa: BLE001 - same: log and skip
            log.error("tool_plugin_rejected", entry_point=source, error=f"{type(exc).__name__}: {exc}")
            continue
        names.append(tool.name)
        log.info("tool_plugin_loaded", entry_point=source, tool=tool.name)
    return names
