"""The chat admission step (reservation size, scope checks before any charge, who is limited) and
the usage query's validation and visibility rules. Fakes only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.application.llm.limits import AdmitChatCompletion, completion_allowance, token_reservation, tokens_used
from app.application.llm.types import ChatRequest, ModelInfo, ModelTarget
from app.application.llm.use_cases import CreateChatCompletion
from app.application.ratelimit import CallerLimitDefaults, RateLimitDecision, RateLimitRefused, RateLimitRequest
from app.application.usage import GetUsage, UsageQuery, UsageTotals
from app.domain.errors import Forbidden, InvalidInput, NotFound
from app.domain.principal import CredentialKind, Limits, Principal
from app.domain.users import Role
from tests.fakes import FakeLLMClient, FakeUsageRecorder

DEFAULTS = CallerLimitDefaults(60, 100_000, 0, 10)


def model(*caps: int | None) -> ModelInfo:
    targets = tuple(ModelTarget(FakeLLMClient(), "up", f"u{i}", cap) for i, cap in enumerate(caps))
    return ModelInfo("m", "test", 0, targets)


def chat(**body: Any) -> ChatRequest:
    messages = [{"role": "user", "content": "x" * 40}]  # 10 tokens by the 4-characters rule
    return ChatRequest(model="m", body={"model": "m", "messages": messages, **body}, stream=bool(body.get("stream")))


@pytest.mark.parametrize(
    ("body", "caps", "expected"),
    [
        ({"max_tokens": 50}, (None,), 50),
        ({"max_tokens": 500}, (100,), 100),  # lowered to the cap, as the upstream body is
        ({"max_completion_tokens": 30, "max_tokens": 70}, (None,), 30),
        ({}, (100,), 100),  # no client value: the cap
        ({}, (100, 300), 300),  # the largest cap of the targets (a fallback may use it)
        ({}, (100, None), 4096),  # an uncapped target: the default
        ({"max_tokens": True}, (None,), 4096),  # not a number
    ],
)
def test_completion_allowance(body: dict[str, Any], caps: tuple[int | None, ...], expected: int) -> None:
    assert completion_allowance(body, model(*caps), 4096) == expected


def test_reservation_is_prompt_estimate_plus_allowance_times_n() -> None:
    assert token_reservation(chat(max_tokens=20), model(None), 4096) == 10 + 20
    assert token_reservation(chat(max_tokens=20, n=3), model(None), 4096) == 10 + 60


def test_tokens_used_reads_the_answers_usage() -> None:
    assert tokens_used({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == 7
    assert tokens_used({}) is None


class RecordingLimiter:
    def __init__(self, allowed: bool = True) -> None:
        self.allowed = allowed
        self.requests: list[RateLimitRequest] = []

    async def acquire(self, request: RateLimitRequest) -> RateLimitDecision:
        self.requests.append(request)
        return RateLimitDecision(self.allowed, code=None if self.allowed else "rate_limit_exceeded")

    async def settle(self, reservation: Any, used_tokens: int) -> None: ...

    async def release(self, lease: Any) -> None: ...

    async def finish(self, reservation: Any, used_tokens: int | None, lease: Any) -> None: ...

    async def renew(self, lease: Any) -> None: ...


def principal(kind: CredentialKind = CredentialKind.API_KEY, **fields: Any) -> Principal:
    key = uuid.uuid4() if kind is CredentialKind.API_KEY else None
    return Principal(uuid.uuid4(), "a@example.com", Role.USER, kind, api_key_id=key, **fields)


def admitter(limiter: RecordingLimiter) -> AdmitChatCompletion:
    use_case = CreateChatCompletion(_Catalog(), FakeUsageRecorder())
    return AdmitChatCompletion(use_case, limiter, api_keys=DEFAULTS, users=DEFAULTS, default_max_tokens=4096)


class _Catalog:
    def models(self) -> list[ModelInfo]:
        return [model(None)]

    def get(self, model_id: str) -> ModelInfo | None:
        return model(None) if model_id == "m" else None


async def test_one_admission_per_key_with_its_own_limits() -> None:
    limiter = RecordingLimiter()
    caller = principal(limits=Limits(rpm_limit=7, tpm_limit=None))
    await admitter(limiter)(caller, chat(max_tokens=5, stream=True))
    (request,) = limiter.requests
    assert request.subject == f"key:{caller.api_key_id}"
    assert request.policy.requests_per_window == 7
    assert request.policy.tokens_per_window == DEFAULTS.tokens_per_minute
    assert request.tokens == 15
    assert request.stream is True


async def test_jwt_callers_are_limited_per_user() -> None:
    limiter = RecordingLimiter()
    caller = principal(CredentialKind.JWT)
    await admitter(limiter)(caller, chat())
    assert limiter.requests[0].subject == f"user:{caller.user_id}"


async def test_scope_checks_come_before_the_limiter() -> None:
    limiter = RecordingLimiter()
    with pytest.raises(Forbidden):
        await admitter(limiter)(principal(allowed_models=("other",)), chat())
    with pytest.raises(NotFound):
        await admitter(limiter)(principal(), ChatRequest(model="nope", body={"model": "nope", "messages": []}))
    assert limiter.requests == []


async def test_a_refusal_is_raised() -> None:
    with pytest.raises(RateLimitRefused):
        await admitter(RecordingLimiter(allowed=False))(principal(), chat())


# -- usage ---------------------------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


class FakeUsageRepository:
    def __init__(self) -> None:
        self.queries: list[UsageQuery] = []

    async def totals(self, query: UsageQuery) -> list[UsageTotals]:
        self.queries.append(query)
        return [UsageTotals("m1", 2, 1, 3, 4, 7), UsageTotals("m2", 1, 0, 1, 1, 2)]


def usage() -> tuple[GetUsage, FakeUsageRepository]:
    repository = FakeUsageRepository()
    return GetUsage(repository, now=lambda: NOW), repository


async def test_usage_defaults_to_own_last_30_days_by_day_and_totals_the_groups() -> None:
    get_usage, repository = usage()
    caller = principal()
    report = await get_usage(caller)
    assert repository.queries == [UsageQuery(NOW - timedelta(days=30), NOW, "day", caller.user_id)]
    assert report.total == UsageTotals(None, 3, 1, 4, 5, 9)


async def test_admins_see_everyone_or_one_user_and_others_only_themselves() -> None:
    get_usage, repository = usage()
    admin = Principal(uuid.uuid4(), "root@example.com", Role.ADMIN, CredentialKind.JWT)
    someone = uuid.uuid4()
    await get_usage(admin)
    await get_usage(admin, user_id=str(someone))
    assert [q.user_id for q in repository.queries] == [None, someone]
    caller = principal()
    with pytest.raises(Forbidden):
        await get_usage(caller, user_id=str(someone))
    await get_usage(caller, user_id=str(caller.user_id))
    assert repository.queries[-1].user_id == caller.user_id


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("2026-05-01", datetime(2026, 5, 1, tzinfo=UTC)),
        ("2026-05-01T10:00:00", datetime(2026, 5, 1, 10, tzinfo=UTC)),
        ("2026-05-01T12:00:00+02:00", datetime(2026, 5, 1, 10, tzinfo=UTC)),
        ("2026-05-01T10:00:00Z", datetime(2026, 5, 1, 10, tzinfo=UTC)),
        (str(int(datetime(2026, 5, 1, tzinfo=UTC).timestamp())), datetime(2026, 5, 1, tzinfo=UTC)),
    ],
)
async def test_usage_start_formats(start: str, expected: datetime) -> None:
    get_usage, repository = usage()
    await get_usage(principal(), start=start)
    assert repository.queries[0].start == expected


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "hour"}, "group_by"),
        ({"start": "soon"}, "start"),
        ({"end": "2026-02-30"}, "end"),
        ({"start": "2026-06-01T12:00:00Z"}, "start"),  # not before end (now)
        ({"start": "2024-01-01"}, "start"),  # more than 366 days
        ({"user_id": "42"}, "user_id"),
    ],
)
async def test_usage_rejects_bad_parameters_naming_them(params: dict[str, str], param: str) -> None:
    get_usage, repository = usage()
    with pytest.raises(InvalidInput) as raised:
        await get_usage(principal(), **params)
    assert raised.value.param == param
    assert repository.queries == []
