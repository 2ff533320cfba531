"""The tool registry: which tools exist in this process, and which a principal may see."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.application.tools.ports import Tool
from app.application.tools.schema import SchemaError, check_schema
from app.domain.principal import Principal

# The OpenAI function-name rule, so every tool can be offered to a model as is.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TIMEOUT_SECONDS = 600.0


class ToolRegistrationError(ValueError):
    """A tool cannot be registered (bad name, duplicate, bad schema or shape)."""


def check_tool(tool: Any) -> None:
    """Refuse anything that does not behave as a `Tool` (plugins are checked with this)."""
    for attribute in ("name", "description", "parameters", "requires_approval", "timeout_seconds", "run"):
        if not hasattr(tool, attribute):
            raise ToolRegistrationError(f"{tool!r} has no {attribute!r}")
    name = tool.name
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolRegistrationError(f"bad tool name {name!r}: letters, digits, _ and -, at most 64")
    if not isinstance(tool.description, str):
        raise ToolRegistrationError(f"tool {name}: description must be a string")
    if not isinstance(tool.requires_approval, bool):
        raise ToolRegistrationError(f"tool {name}: requires_approval must be a bool")
    timeout = tool.timeout_seconds
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise ToolRegistrationError(f"tool {name}: timeout_seconds must be in (0, {MAX_TIMEOUT_SECONDS:g}]")
    if not inspect.iscoroutinefunction(tool.run):
        raise ToolRegistrationError(f"tool {name}: run must be an async function")
    parameters = tool.parameters
    if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
        raise ToolRegistrationError(f"tool {name}: parameters must be an object schema")
    try:
        check_schema(parameters)
    except SchemaError as exc:
        raise ToolRegistrationError(f"tool {name}: {exc}") from None


class ToolRegistry:
    """Tools by name (`register`, `get`, `all`, `visible_to`).

    Built once at start-up (built-ins, then plugins); read-only afterwards.
    """

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        check_tool(tool)
        if tool.name in self._tools:
            raise ToolRegistrationError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def all(self) -> list[Tool]:
        return [self._tools[name] for name in self.names()]

    def visible_to(self, principal: Principal) -> list[Tool]:
        """The tools this caller may use: what is listed and what is offered to a model."""
        return [self._tools[name] for name in principal.visible_tools(self.names())]

    def definitions_for(self, principal: Principal) -> list[dict[str, Any]]:
        """The OpenAI `tools[]` the agent loop offers to the model for this caller."""
        return [openai_tool_definition(tool) for tool in self.visible_to(principal)]


class ListTools:
    """`GET /v1/tools`: the descriptions of the tools the caller may use (sorted by name)."""

    def __init__(self, registry: ToolRegistry) -> None:
        self._registry = registry

    def __call__(self, principal: Principal) -> list[dict[str, Any]]:
        return [describe_tool(tool) for tool in self._registry.visible_to(principal)]


def describe_tool(tool: Tool) -> dict[str, Any]:
    """The public description of a tool (an item of `GET /v1/tools`)."""
    return {
        "name": tool.name,
        "description": tool.description,
        "parameters": dict(tool.parameters),
        "requires_approval": tool.requires_approval,
    }


def openai_tool_definition(tool: Tool) -> dict[str, Any]:
    """The tool as an OpenAI `tools[]` entry (what the agent loop offers to the model)."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)},
    }
