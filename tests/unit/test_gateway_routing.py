"""Model routing from the models file and the env shorthand, and the demo provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.application.llm.types import LLMClient
from app.infrastructure.llm.demo import DemoLLMClient
from app.infrastructure.llm.openai_client import UpstreamPolicy
from app.infrastructure.llm.routing import ModelsConfigError, build_catalog, catalog_from_config
from tests.fakes import FakeLLMClient
from tests.support.chunks import stream_objects

made: list[tuple[str, str, str | None, UpstreamPolicy]] = []


def factory(name: str, base_url: str, api_key: str | None, policy: UpstreamPolicy) -> LLMClient:
    made.append((name, base_url, api_key, policy))
    return FakeLLMClient()


def test_no_upstream_means_the_demo_model_only() -> None:
    cat = build_catalog(models_config=None, base_url=None, api_key=None, models=[], policy=UpstreamPolicy())
    [model] = cat.models()
    assert model.id == "demo"
    assert model.owned_by == "agent-api-demo"
    assert isinstance(model.targets[0].client, DemoLLMClient)


def test_env_shorthand_serves_the_listed_models_from_one_upstream() -> None:
    made.clear()
    cat = build_catalog(
        models_config=None,
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-x",
        models=["a", "b"],
        policy=UpstreamPolicy(),
        client_factory=factory,
    )
    assert [m.id for m in cat.models()] == ["a", "b"]
    assert cat.get("demo") is None  # never the default once an upstream is configured
    assert made == [("default", "http://127.0.0.1:9/v1", "sk-x", UpstreamPolicy())]
    with pytest.raises(ModelsConfigError):
        build_catalog(models_config=None, base_url="http://x", api_key=None, models=[], policy=UpstreamPolicy())


def test_models_file_with_fallbacks_caps_and_per_upstream_timeouts(tmp_path: Path, monkeypatch: Any) -> None:
    made.clear()
    monkeypatch.setenv("PRIMARY_KEY", "sk-from-env")
    config = {
        "upstreams": {
            "primary": {
                "base_url": "https://api.example/v1",
                "api_key_env": "PRIMARY_KEY",
                "timeouts": {"idle_timeout": 5},
            },
            "backup": {"base_url": "http://127.0.0.1:8001/v1"},
        },
        "models": [
            {
                "id": "big",
                "upstream": "primary",
                "upstream_model": "big-2025",
                "max_tokens": 100,
                "fallbacks": ["small"],
            },
            {"id": "small", "upstream": "backup"},
        ],
    }
    path = tmp_path / "models.json"
    path.write_text(json.dumps(config))
    cat = build_catalog(
        models_config=str(path),
        base_url="http://ignored",
        api_key=None,
        models=[],
        policy=UpstreamPolicy(),
        client_factory=factory,
    )
    big = cat.get("big")
    assert big is not None
    assert [(t.upstream_name, t.upstream_model, t.max_tokens) for t in big.targets] == [
        ("primary", "big-2025", 100),
        ("backup", "small", None),
    ]
    assert made[0][2] == "sk-from-env"
    assert made[0][3].idle_timeout == 5


@pytest.mark.parametrize(
    "config",
    [
        {"upstreams": {}, "models": []},
        {"upstreams": {"u": {"base_url": "ftp://x"}}, "models": [{"id": "m", "upstream": "u"}]},
        {"upstreams": {}, "models": [{"id": "m", "upstream": "missing"}]},
        {"upstreams": {"u": {"base_url": "http://x"}}, "models": [{"id": "m", "upstream": "u", "fallbacks": ["zz"]}]},
        {
            "upstreams": {"u": {"base_url": "http://x", "api_key_env": "UNSET_VAR_FOR_TEST"}},
            "models": [{"id": "m", "upstream": "u"}],
        },
    ],
)
def test_bad_models_files_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ModelsConfigError):
        catalog_from_config(config, UpstreamPolicy(), client_factory=factory)


def tools(*names: str) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in names]


async def test_demo_is_deterministic_and_streams_word_by_word_with_usage() -> None:
    demo = DemoLLMClient()
    body = {"messages": [{"role": "user", "content": "tell me something"}]}
    first = await demo.complete(body)
    second = await demo.complete(body)
    assert first["choices"] == second["choices"]
    chunks = await stream_objects(demo, body)
    words = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(w for w in words if w) == first["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


async def test_demo_asks_for_calculator_and_current_time_when_offered() -> None:
    demo = DemoLLMClient()
    math = await demo.complete(
        {"messages": [{"role": "user", "content": "What is 12 * 7?"}], "tools": tools("calculator")}
    )
    call = math["choices"][0]["message"]["tool_calls"][0]
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == (
        "calculator",
        {"expression": "12 * 7"},
    )
    assert math["choices"][0]["finish_reason"] == "tool_calls"
    clock = await demo.complete(
        {"messages": [{"role": "user", "content": "What time is it in Europe/Paris?"}], "tools": tools("current_time")}
    )
    call = clock["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"timezone": "Europe/Paris"}
    plain = await demo.complete({"messages": [{"role": "user", "content": "What is 12 * 7?"}]})
    assert "tool_calls" not in plain["choices"][0]["message"]
    after = await demo.complete(
        {"messages": [{"role": "user", "content": "2+2"}, {"role": "tool", "tool_call_id": "c", "content": "4"}]}
    )
    assert after["choices"][0]["message"]["content"] == "The result is 4."
