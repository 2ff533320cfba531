"""The gateway's use cases with fake upstreams: scopes, routing, fallbacks, usage records."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.application.llm.types import ChatRequest, ModelInfo, ModelTarget
from app.application.llm.use_cases import CreateChatCompletion, GetModel, ListModels
from app.domain.errors import Forbidden, InvalidInput, NotFound, UpstreamError, UpstreamTimeout
from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role
from app.infrastructure.llm.routing import StaticModelCatalog
from tests.fakes import FakeLLMClient, FakeUsageRecorder

CHUNKS: list[dict[str, Any]] = [
    {"id": "u", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}]},
    {"id": "u", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "u", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
]


def principal(**scopes: Any) -> Principal:
    return Principal(uuid.uuid4(), "a@b.test", Role.USER, CredentialKind.API_KEY, api_key_id=uuid.uuid4(), **scopes)


def catalog(*models: tuple[str, list[FakeLLMClient]], max_tokens: int | None = None) -> StaticModelCatalog:
    return StaticModelCatalog(
        [
            ModelInfo(
                id=name,
                owned_by="t",
                created=1,
                targets=tuple(ModelTarget(c, f"up-{name}-{i}", f"u{i}", max_tokens) for i, c in enumerate(clients)),
            )
            for name, clients in models
        ]
    )


def request(model: str = "m", stream: bool = False, **body: Any) -> ChatRequest:
    return ChatRequest(
        model=model,
        body={"model": model, "messages": [{"role": "user", "content": "hello"}], **body},
        stream=stream,
        include_usage=bool(stream and body.get("stream_options")),
    )


def test_list_and_get_models_respect_allowed_models() -> None:
    cat = catalog(("a", [FakeLLMClient()]), ("b", [FakeLLMClient()]))
    assert [m.id for m in ListModels(cat)(principal(allowed_models=("b",)))] == ["b"]
    assert GetModel(cat)(principal(), "a").id == "a"
    with pytest.raises(NotFound):
        GetModel(cat)(principal(allowed_models=("b",)), "a")


async def test_unknown_model_is_404_and_forbidden_model_is_403_without_upstream_calls() -> None:
    client = FakeLLMClient(CHUNKS)
    use_case = CreateChatCompletion(catalog(("m", [client])), FakeUsageRecorder())
    with pytest.raises(NotFound):
        await use_case.complete(principal(), request("nope"))
    with pytest.raises(Forbidden) as forbidden:
        await use_case.stream(principal(allowed_models=()), request("m", stream=True))
    assert forbidden.value.code == "model_not_allowed"
    assert client.calls == []


async def test_server_tools_are_refused_clearly_and_scoped() -> None:
    client = FakeLLMClient(CHUNKS)
    use_case = CreateChatCompletion(catalog(("m", [client])), FakeUsageRecorder())
    server_tool = [{"type": "function", "function": {"name": "calculator"}}]
    with pytest.raises(Forbidden) as forbidden:
        await use_case.complete(principal(allowed_tools=()), request(tools=server_tool))
    assert forbidden.value.code == "tool_not_allowed"
    with pytest.raises(InvalidInput) as invalid:
        await use_case.complete(principal(), request(tools=server_tool))
    assert invalid.value.param == "tools"
    assert client.calls == []


async def test_stream_asks_usage_upstream_always_and_hides_it_unless_asked() -> None:
    client = FakeLLMClient(CHUNKS)
    recorder = FakeUsageRecorder()
    use_case = CreateChatCompletion(catalog(("m", [client])), recorder)
    stream = await use_case.stream(principal(), request(stream=True))
    chunks = [c async for c in stream]
    assert client.calls[0]["stream_options"] == {"include_usage": True}
    assert client.calls[0]["model"] == "up-m-0"
    assert all(c["choices"] for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    [record] = recorder.records
    assert (record.status, record.usage.total_tokens) == ("success", 4)
    assert record.ttft_ms is not None


async def test_stream_with_include_usage_ends_with_an_empty_choices_usage_chunk() -> None:
    use_case = CreateChatCompletion(catalog(("m", [FakeLLMClient(CHUNKS)])), FakeUsageRecorder())
    stream = await use_case.stream(principal(), request(stream=True, stream_options={"include_usage": True}))
    chunks = [c async for c in stream]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 4


async def test_fallbacks_are_tried_in_order_before_the_first_chunk() -> None:
    broken = FakeLLMClient(fail_with=UpstreamError("down"))
    slow = FakeLLMClient(fail_with=UpstreamTimeout("slow"))
    good = FakeLLMClient(CHUNKS)
    recorder = FakeUsageRecorder()
    use_case = CreateChatCompletion(catalog(("m", [broken, slow, good])), recorder)
    stream = await use_case.stream(principal(), request(stream=True))
    assert [c async for c in stream]
    assert (len(broken.calls), len(slow.calls), len(good.calls)) == (1, 1, 1)
    answer = await use_case.complete(principal(), request())
    assert answer["model"] == "m"


async def test_all_targets_failing_raises_the_last_error_and_records_it() -> None:
    recorder = FakeUsageRecorder()
    use_case = CreateChatCompletion(
        catalog(("m", [FakeLLMClient(fail_with=UpstreamError("a")), FakeLLMClient(fail_with=UpstreamTimeout("b"))])),
        recorder,
    )
    with pytest.raises(UpstreamTimeout):
        await use_case.complete(principal(), request())
    assert recorder.records[0].status == "error"
    assert recorder.records[0].error_code == "upstream_timeout"


async def test_max_tokens_are_capped_per_model() -> None:
    client = FakeLLMClient()
    use_case = CreateChatCompletion(catalog(("m", [client]), max_tokens=50), FakeUsageRecorder())
    await use_case.complete(principal(), request(max_tokens=5000))
    await use_case.complete(principal(), request())
    await use_case.complete(principal(), request(max_completion_tokens=10))
    assert client.calls[0]["max_tokens"] == 50
    assert client.calls[1]["max_tokens"] == 50
    assert client.calls[2]["max_completion_tokens"] == 10
    assert "stream_options" not in client.calls[0]


async def test_a_stream_abandoned_by_the_client_is_recorded_as_disconnected() -> None:
    client = FakeLLMClient(CHUNKS)
    recorder = FakeUsageRecorder()
    use_case = CreateChatCompletion(catalog(("m", [client])), recorder)
    stream = await use_case.stream(principal(), request(stream=True))
    iterator = stream.__aiter__()
    await iterator.__anext__()
    await iterator.aclose()  # type: ignore[attr-defined]
    assert recorder.records[0].status == "disconnected"
    assert client.closed


async def test_each_target_gets_its_own_body_and_the_clients_body_is_left_as_it_came() -> None:
    first, second = FakeLLMClient(fail_with=UpstreamError("down")), FakeLLMClient(CHUNKS)
    cat = StaticModelCatalog(
        [
            ModelInfo(
                "m",
                "t",
                1,
                (ModelTarget(first, "up-a", "a", max_tokens=10), ModelTarget(second, "up-b", "b", max_tokens=None)),
            )
        ]
    )
    options = {"include_usage": False}
    chat = request(stream=True, stream_options=options, max_tokens=50)
    original = {**chat.body, "messages": [dict(m) for m in chat.body["messages"]]}
    stream = await CreateChatCompletion(cat, FakeUsageRecorder()).stream(principal(), chat)
    [chunk async for chunk in stream]
    assert first.calls[0]["model"] == "up-a"
    assert first.calls[0]["max_tokens"] == 10  # lowered to this target's cap
    assert first.calls[0]["stream_options"] == {"include_usage": True}  # always asked, for billing
    assert second.calls[0]["model"] == "up-b"
    assert second.calls[0]["max_tokens"] == 50  # the client's value again: no cap here
    assert chat.body == original
    assert options == {"include_usage": False}  # the client's nested object was not changed in place
