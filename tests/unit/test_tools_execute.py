"""The registry, permissions, and the execute / batch use cases, with fake tools."""

from __future__ import annotations

import uuid

import pytest

from app.application.tools import (
    MAX_BATCH_CALLS,
    ExecuteTool,
    ExecuteToolBatch,
    ExecutionContext,
    ListTools,
    ToolCall,
    ToolError,
    ToolRegistrationError,
    ToolRegistry,
    describe_tool,
    openai_tool_definition,
)
from app.domain.errors import Forbidden, InvalidInput, NotFound
from tests.fakes import FakeTool, InMemoryToolExecutionRecorder
from tests.fakes import api_key_principal as principal


def test_registry_lists_sorted_and_filters_by_principal() -> None:
    registry = ToolRegistry([FakeTool("b"), FakeTool("a"), FakeTool("c")])
    assert [t.name for t in registry.all()] == ["a", "b", "c"]
    assert registry.get("b") is not None
    assert registry.get("z") is None
    assert [t.name for t in registry.visible_to(principal())] == ["a", "b", "c"]
    assert [t.name for t in registry.visible_to(principal(("c", "a", "zzz")))] == ["a", "c"]
    assert registry.visible_to(principal(())) == []


def test_registry_refuses_duplicates_and_bad_tools() -> None:
    registry = ToolRegistry([FakeTool("a")])
    with pytest.raises(ToolRegistrationError, match="already registered"):
        registry.register(FakeTool("a"))
    with pytest.raises(ToolRegistrationError, match="bad tool name"):
        registry.register(FakeTool("has space"))
    with pytest.raises(ToolRegistrationError, match="timeout_seconds"):
        registry.register(FakeTool("slow", timeout_seconds=0))
    with pytest.raises(ToolRegistrationError, match="object schema"):
        registry.register(FakeTool("s", parameters={"type": "string"}))
    with pytest.raises(ToolRegistrationError, match="unsupported JSON Schema keyword"):
        registry.register(FakeTool("s", parameters={"type": "object", "oneOf": []}))
    assert registry.names() == ["a"]


def test_descriptions_for_the_api_and_the_model() -> None:
    tool = FakeTool("a", requires_approval=True)
    assert describe_tool(tool) == {
        "name": "a",
        "description": "fake tool a",
        "parameters": tool.parameters,
        "requires_approval": True,
    }
    assert openai_tool_definition(tool)["function"]["name"] == "a"
    registry = ToolRegistry([tool, FakeTool("b")])
    assert [d["name"] for d in ListTools(registry)(principal(("b",)))] == ["b"]
    assert [d["function"]["name"] for d in registry.definitions_for(principal(("a",)))] == ["a"]


async def test_execute_runs_and_records() -> None:
    tool = FakeTool("echo", value={"x": 1})
    recorder = InMemoryToolExecutionRecorder()
    execute = ExecuteTool(ToolRegistry([tool]), recorder=recorder)
    caller = principal()
    context = ExecutionContext(conversation_id=uuid.uuid4())
    result = await execute(caller, "echo", {"text": "hi"}, call_id="c1", context=context)
    assert result.as_dict() == {
        "id": "c1",
        "name": "echo",
        "status": "success",
        "output": {"x": 1},
        "error": None,
        "duration_ms": result.duration_ms,
    }
    assert result.duration_ms >= 0
    assert tool.calls == [{"text": "hi"}]
    [record] = recorder.records
    assert (record.user_id, record.api_key_id, record.name, record.status) == (
        caller.user_id,
        caller.api_key_id,
        "echo",
        "success",
    )
    assert record.context is context
    assert result.as_model_content() == '{"x": 1}'


async def test_not_allowed_tool_is_refused_and_recorded_without_running() -> None:
    tool = FakeTool("secret")
    recorder = InMemoryToolExecutionRecorder()
    execute = ExecuteTool(ToolRegistry([tool]), recorder=recorder)
    with pytest.raises(Forbidden) as caught:
        await execute(principal(("other",)), "secret", {})
    assert caught.value.code == "tool_not_allowed"
    assert tool.calls == []
    assert [(r.status, r.error_code) for r in recorder.records] == [("error", "tool_not_allowed")]


async def test_unknown_tool_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        await ExecuteTool(ToolRegistry())(principal(), "nope", {})
    assert caught.value.code == "tool_not_found"


async def test_approval_gated_tool_is_refused_when_called_directly() -> None:
    tool = FakeTool("risky", requires_approval=True)
    execute = ExecuteTool(ToolRegistry([tool]))
    with pytest.raises(Forbidden) as caught:
        await execute(principal(), "risky", {})
    assert caught.value.code == "approval_required"
    assert tool.calls == []
    result = await execute(principal(), "risky", {}, approved=True)
    assert result.status == "success"
    assert tool.calls == [{}]


async def test_invalid_arguments_fail_before_the_tool_runs() -> None:
    tool = FakeTool("echo")
    execute = ExecuteTool(ToolRegistry([tool]))
    with pytest.raises(InvalidInput) as caught:
        await execute(principal(), "echo", {"text": 5})
    assert caught.value.param == "arguments.text"
    with pytest.raises(InvalidInput) as caught:
        await execute(principal(), "echo", "not an object")
    assert caught.value.param == "arguments"
    assert tool.calls == []


async def test_tool_failures_become_error_results() -> None:
    registry = ToolRegistry(
        [
            FakeTool("told", error=ToolError("the page is gone")),
            FakeTool("crashed", error=RuntimeError("/secret/path/db password=hunter2")),
            FakeTool("stuck", block=True, timeout_seconds=0.01),
        ]
    )
    execute = ExecuteTool(registry)
    told = await execute(principal(), "told", {})
    assert (told.status, told.error, told.error_code) == ("error", "the page is gone", "tool_error")
    crashed = await execute(principal(), "crashed", {})
    assert (crashed.status, crashed.error_code) == ("error", "tool_failed")
    assert crashed.error is not None
    assert "hunter2" not in crashed.error
    assert "/secret" not in crashed.error
    stuck = await execute(principal(), "stuck", {})
    assert (stuck.status, stuck.error_code) == ("error", "tool_timeout")


async def test_attempt_turns_refusals_into_results() -> None:
    execute = ExecuteTool(ToolRegistry([FakeTool("a")]))
    result = await execute.attempt(principal(()), "a", {}, call_id="x")
    assert (result.id, result.status, result.error_code) == ("x", "error", "tool_not_allowed")
    assert result.as_model_content() == "error: you may not use the tool 'a'"
    ok = await execute.attempt(principal(), "a", {"text": "t"})
    assert ok.as_model_content() == "ok"


async def test_batch_keeps_call_order_and_isolates_failures() -> None:
    registry = ToolRegistry(
        [
            FakeTool("ok", value="fine"),
            FakeTool("boom", error=RuntimeError("x")),
            FakeTool("risky", requires_approval=True),
            FakeTool("hidden"),
        ]
    )
    recorder = InMemoryToolExecutionRecorder()
    batch = ExecuteToolBatch(ExecuteTool(registry, recorder=recorder))
    caller = principal(("ok", "boom", "risky", "missing"))
    results = await batch(
        caller,
        [
            ToolCall("ok", {}, id="1"),
            ToolCall("boom", {}, id="2"),
            ToolCall("risky", {}, id="3"),
            ToolCall("hidden", {}, id="4"),
            ToolCall("missing", {}, id="5"),
            ToolCall("ok", {"text": 1}, id="6"),
            ToolCall("ok", {"text": "b"}, id="7"),
        ],
    )
    assert [(r.id, r.name, r.status, r.error_code) for r in results] == [
        ("1", "ok", "success", None),
        ("2", "boom", "error", "tool_failed"),
        ("3", "risky", "error", "approval_required"),
        ("4", "hidden", "error", "tool_not_allowed"),
        ("5", "missing", "error", "tool_not_found"),
        ("6", "ok", "error", "invalid_value"),
        ("7", "ok", "success", None),
    ]
    assert results[5].param == "arguments.text"
    assert len(recorder.records) == 7


async def test_batch_concurrency_is_bounded() -> None:
    tool = FakeTool("t")
    batch = ExecuteToolBatch(ExecuteTool(ToolRegistry([tool])), concurrency=3)
    results = await batch(principal(), [ToolCall("t", {}) for _ in range(10)])
    assert all(r.ok for r in results)
    assert tool.max_in_flight == 3


async def test_batch_size_is_bounded() -> None:
    batch = ExecuteToolBatch(ExecuteTool(ToolRegistry([FakeTool("t")])))
    with pytest.raises(InvalidInput) as caught:
        await batch(principal(), [ToolCall("t", {})] * (MAX_BATCH_CALLS + 1))
    assert caught.value.param == "calls"
    with pytest.raises(InvalidInput):
        await batch(principal(), [])
    assert len(await batch(principal(), [ToolCall("t", {})] * MAX_BATCH_CALLS)) == MAX_BATCH_CALLS


async def test_a_failing_recorder_does_not_fail_the_call() -> None:
    class BrokenRecorder:
        async def record(self, record: object) -> None:
            raise RuntimeError("db down")

    result = await ExecuteTool(ToolRegistry([FakeTool("a")]), recorder=BrokenRecorder())(principal(), "a", {})
    assert result.ok
