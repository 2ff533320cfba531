"""Thin controllers of /v1/tools: list, execute, batch."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from pydantic import BaseModel, ConfigDict, Field

from app.application.tools import MAX_BATCH_CALLS, ExecuteTool, ExecuteToolBatch, ListTools, ToolCall
from app.infrastructure.http.auth import principal_of


class ToolExecuteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolBatchCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=128)
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolBatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calls: list[ToolBatchCall] = Field(min_length=1, max_length=MAX_BATCH_CALLS)


class ToolsController(Controller):
    path = "/v1/tools"
    tags = ["tools"]

    @get("/", summary="The tools the caller may use")
    async def list_tools(
        self, request: Request[Any, Any, Any], list_tools: NamedDependency[ListTools]
    ) -> dict[str, Any]:
        return {"object": "list", "data": list_tools(principal_of(request))}

    @post("/execute", status_code=200, summary="Run one tool (schema-validated; approval-gated tools refused)")
    async def execute(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ToolExecuteBody],
        execute_tool: NamedDependency[ExecuteTool],
    ) -> dict[str, Any]:
        result = await execute_tool(principal_of(request), data.name, data.arguments)
        return result.as_dict()

    @post("/batch", status_code=200, summary="Run up to 16 tools; results in call order, each with its own status")
    async def batch(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ToolBatchBody],
        execute_tool_batch: NamedDependency[ExecuteToolBatch],
    ) -> dict[str, Any]:
        calls = [ToolCall(name=c.name, arguments=c.arguments, id=c.id) for c in data.calls]
        results = await execute_tool_batch(principal_of(request), calls)
        return {"results": [r.as_dict() for r in results]}
