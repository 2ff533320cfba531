"""The server-tools mode: the agent loop over a client's transcript, stored nowhere."""

from __future__ import annotations

from typing import Any

import pytest

from app.application.agent.ephemeral import RunServerTools
from app.application.agent.events import MessageDelta, ToolResultEvent
from app.application.agent.ports import AgentLimits
from app.domain.agent import MessageRole, RunStatus
from app.domain.errors import Forbidden, InvalidInput, NotFound
from tests.fakes import FakeClock
from tests.fakes_agent import FakeTool, FakeToolRunner, ScriptedModel, text_turn, tool_turn
from tests.unit.agent_harness import drain, make_principal


async def add(arguments: dict[str, Any]) -> Any:
    return arguments["a"] + arguments["b"]


def runner() -> FakeToolRunner:
    return FakeToolRunner(FakeTool("calculator", add), FakeTool("http_get", add, requires_approval=True))


TRANSCRIPT: list[dict[str, Any]] = [
    {"role": "system", "content": "Be exact."},
    {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+3?"}]},
]


async def test_runs_the_named_tools_and_answers() -> None:
    model = ScriptedModel(tool_turn(("call_1", "calculator", {"a": 2, "b": 3})), text_turn("5"))
    tools = runner()
    use_case = RunServerTools(model, tools, FakeClock(), limits=AgentLimits(default_model="fake"))

    stream = await use_case(make_principal(), model="fake", messages=TRANSCRIPT, tool_names=["calculator"])
    events = await drain(stream)

    assert tools.runs == [("calculator", {"a": 2, "b": 3})]
    assert next(e for e in events if isinstance(e, ToolResultEvent)).output == 5
    assert "".join(e.delta for e in events if isinstance(e, MessageDelta)) == "5"
    assert events[-1].run.status is RunStatus.COMPLETED  # type: ignore[union-attr]
    first = model.calls[0]
    assert first["messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "What is 2+3?"},
    ]
    assert [d["function"]["name"] for d in first["tools"]] == ["calculator"]


async def test_collect_gives_the_final_answer() -> None:
    model = ScriptedModel(text_turn("Hi there"))
    use_case = RunServerTools(model, runner(), FakeClock())
    result = await (await use_case(make_principal(), model="fake", messages=TRANSCRIPT, tool_names=[])).collect()
    assert [(m.role, m.content) for m in result.messages] == [(MessageRole.ASSISTANT, "Hi there")]


async def test_refusals_before_anything_runs() -> None:
    model = ScriptedModel()
    use_case = RunServerTools(model, runner(), FakeClock())
    me = make_principal(allowed_tools=("calculator",))
    with pytest.raises(Forbidden) as gated:
        await use_case(make_principal(), model="fake", messages=TRANSCRIPT, tool_names=["http_get"])
    assert gated.value.code == "approval_required"
    with pytest.raises(Forbidden) as refused:
        await use_case(me, model="fake", messages=TRANSCRIPT, tool_names=["http_get"])
    assert refused.value.code == "tool_not_allowed"
    with pytest.raises(InvalidInput):
        await use_case(make_principal(), model="fake", messages=TRANSCRIPT, tool_names=["teleport"])
    with pytest.raises(NotFound):
        await use_case(me, model="nope", messages=TRANSCRIPT, tool_names=[])
    with pytest.raises(InvalidInput):
        await use_case(me, model="fake", messages=[{"role": "system", "content": "x"}], tool_names=[])
    assert model.calls == []


async def test_a_call_for_a_tool_not_named_is_not_run() -> None:
    """Prompt injection cannot widen the tool list: only the named tools run."""
    model = ScriptedModel(tool_turn(("call_1", "http_get", {"a": 1, "b": 1})), text_turn("ok"))
    tools = runner()
    use_case = RunServerTools(model, tools, FakeClock())
    events = await drain(await use_case(make_principal(), model="fake", messages=TRANSCRIPT, tool_names=["calculator"]))
    assert tools.runs == []
    assert next(e for e in events if isinstance(e, ToolResultEvent)).error == (
        "the tool 'http_get' is not available in this conversation"
    )
