"""The in-process limiter (clock injected), the GCRA arithmetic, headers, admission and policies."""

from __future__ import annotations

import asyncio
import uuid
from fractions import Fraction

import pytest

from app.application.ratelimit import (
    INSUFFICIENT_QUOTA,
    RATE_LIMIT_EXCEEDED,
    AuthLimitDefaults,
    CallerLimitDefaults,
    Lease,
    LimitKind,
    LimitPolicy,
    LimitState,
    RateLimitDecision,
    RateLimitRefused,
    RateLimitRequest,
    account_subject,
    admit,
    auth_policies,
    format_reset,
    gcra,
    policy_for_principal,
    rate_limit_headers,
)
from app.application.ratelimit.headers import RATE_LIMIT_HEADER_NAMES
from app.domain.principal import CredentialKind, Limits, Principal
from app.domain.users import Role
from app.infrastructure.ratelimit.in_process import InProcessRateLimiter

DAY = 86_400.0


class ManualClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def limiter(clock: ManualClock) -> InProcessRateLimiter:
    return InProcessRateLimiter(lease_ttl_seconds=30.0, clock=clock)


def rpm(limit: int, window: float = 60.0) -> LimitPolicy:
    return LimitPolicy(requests_per_window=limit, window_seconds=window)


# --- GCRA arithmetic ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3, 7, 10, 13, 60, 997])
def test_gcra_admits_exactly_the_limit_in_a_burst(limit: int) -> None:
    window, now, tat = Fraction(60_000_000), Fraction(1_800_000_000_000_000), Fraction(0)
    admitted = 0
    for _ in range(limit * 2):
        outcome = gcra.check(tat, now, limit, window, 1)
        if outcome.allowed:
            admitted += 1
            tat = outcome.tat
    assert admitted == limit


def test_gcra_refund_never_makes_the_bucket_more_than_full() -> None:
    now, window = Fraction(10**12), Fraction(60_000_000)
    tat = gcra.check(Fraction(0), now, 100, window, 30).tat
    assert gcra.adjust(tat, now, 100, window, -1000) == now
    assert gcra.adjust(tat, now, 100, window, 10) == tat + 10 * window / 100


# --- in-process limiter -------------------------------------------------------------------------


async def test_burst_admits_exactly_the_limit_then_refuses_with_retry_after(limiter: InProcessRateLimiter) -> None:
    decisions = [await limiter.acquire(RateLimitRequest("key:a", rpm(10))) for _ in range(25)]
    assert sum(d.allowed for d in decisions) == 10
    refused = decisions[10]
    assert refused.refused_by is LimitKind.REQUESTS
    assert refused.code == RATE_LIMIT_EXCEEDED
    assert refused.retry_after_seconds == pytest.approx(6.0)


async def test_waiting_retry_after_admits_and_not_a_moment_earlier(
    limiter: InProcessRateLimiter, clock: ManualClock
) -> None:
    request = RateLimitRequest("key:a", rpm(10))
    for _ in range(10):
        assert (await limiter.acquire(request)).allowed
    refused = await limiter.acquire(request)
    clock.advance(refused.retry_after_seconds - 0.001)
    assert not (await limiter.acquire(request)).allowed
    clock.advance(0.001)
    assert (await limiter.acquire(request)).allowed


async def test_remaining_drops_by_one_per_admitted_request_and_never_below_zero(
    limiter: InProcessRateLimiter,
) -> None:
    remaining = []
    for _ in range(13):
        decision = await limiter.acquire(RateLimitRequest("key:a", rpm(10)))
        assert decision.requests is not None
        remaining.append(decision.requests.remaining)
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0]


async def test_subjects_are_isolated(limiter: InProcessRateLimiter) -> None:
    for _ in range(5):
        await limiter.acquire(RateLimitRequest("key:a", rpm(5)))
    assert not (await limiter.acquire(RateLimitRequest("key:a", rpm(5)))).allowed
    assert all([(await limiter.acquire(RateLimitRequest("key:b", rpm(5)))).allowed for _ in range(5)])


async def test_tokens_are_reserved_and_settlement_refunds_what_was_not_used(limiter: InProcessRateLimiter) -> None:
    policy = LimitPolicy(tokens_per_window=1000)
    first = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=600))
    assert first.allowed
    assert first.tokens is not None
    assert (first.tokens.limit, first.tokens.remaining) == (1000, 400)
    assert first.tokens.reset_seconds == pytest.approx(36.0)
    refused = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=600))
    assert not refused.allowed
    assert refused.refused_by is LimitKind.TOKENS
    assert first.reservation is not None
    await limiter.settle(first.reservation, used_tokens=100)  # the answer was short
    again = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=600))
    assert again.allowed
    assert again.tokens is not None
    assert again.tokens.remaining == 300


async def test_settlement_above_the_estimate_charges_the_difference(limiter: InProcessRateLimiter) -> None:
    policy = LimitPolicy(tokens_per_window=1000)
    first = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=100))
    assert first.reservation is not None
    await limiter.settle(first.reservation, used_tokens=950)
    assert not (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=100))).allowed


async def test_a_request_larger_than_the_tpm_passes_only_on_a_full_bucket(
    limiter: InProcessRateLimiter, clock: ManualClock
) -> None:
    policy = LimitPolicy(tokens_per_window=1000)
    assert (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=5000))).allowed
    refused = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=5000))
    assert refused.retry_after_seconds == pytest.approx(60.0)
    clock.advance(60)
    assert (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=5000))).allowed


async def test_daily_budget_gives_insufficient_quota_until_the_next_utc_day(
    limiter: InProcessRateLimiter, clock: ManualClock
) -> None:
    clock.now = 20_000 * DAY + 3600  # 01:00 UTC
    policy = LimitPolicy(daily_token_budget=1000)
    first = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=800))
    assert first.allowed
    refused = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=300))
    assert refused.code == INSUFFICIENT_QUOTA
    assert refused.refused_by is LimitKind.DAILY_TOKENS
    assert refused.retry_after_seconds == pytest.approx(23 * 3600)
    assert not refused.should_retry
    assert first.reservation is not None
    await limiter.settle(first.reservation, used_tokens=500)  # refund 300 to today's budget
    assert (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=500))).allowed
    assert not (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=1))).allowed
    clock.advance(23 * 3600)
    assert (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=1000))).allowed


async def test_budget_refusal_wins_over_a_rate_refusal(limiter: InProcessRateLimiter) -> None:
    policy = LimitPolicy(requests_per_window=1, daily_token_budget=10)
    assert (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=10))).allowed
    refused = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=10))
    assert refused.code == INSUFFICIENT_QUOTA


async def test_refused_requests_charge_nothing(limiter: InProcessRateLimiter) -> None:
    policy = LimitPolicy(requests_per_window=100, tokens_per_window=100)
    assert (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=100))).allowed
    for _ in range(50):
        assert not (await limiter.acquire(RateLimitRequest("key:a", policy, tokens=100))).allowed
    decision = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=0))
    assert decision.requests is not None
    assert decision.requests.remaining == 98  # only the two admitted ones count


async def test_concurrency_leases_are_released_and_expire_after_their_ttl(
    limiter: InProcessRateLimiter, clock: ManualClock
) -> None:
    policy = LimitPolicy(max_concurrent_streams=2)
    first = await limiter.acquire(RateLimitRequest("key:a", policy, stream=True))
    second = await limiter.acquire(RateLimitRequest("key:a", policy, stream=True))
    refused = await limiter.acquire(RateLimitRequest("key:a", policy, stream=True))
    assert refused.refused_by is LimitKind.CONCURRENCY
    assert first.lease is not None
    assert second.lease is not None
    await limiter.release(first.lease)
    await limiter.release(first.lease)  # idempotent
    assert limiter.active_leases("key:a") == 1
    assert (await limiter.acquire(RateLimitRequest("key:a", policy, stream=True))).allowed
    clock.advance(29)
    await limiter.renew(second.lease)
    clock.advance(2)  # the third (crashed, never released) lease expired; the renewed one lives
    assert limiter.active_leases("key:a") == 1
    clock.advance(30)
    assert limiter.active_leases("key:a") == 0


async def test_idle_subjects_are_swept(clock: ManualClock) -> None:
    limiter = InProcessRateLimiter(clock=clock, sweep_every=10)
    for i in range(9):
        await limiter.acquire(RateLimitRequest(f"key:{i}", rpm(10)))
    assert len(limiter) == 9
    clock.advance(DAY)
    await limiter.acquire(RateLimitRequest("key:last", rpm(10)))
    assert len(limiter) == 1


# --- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0ms"), (0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (59.999, "59.999s"), (360, "6m0s"), (3725, "1h2m5s")],
)
def test_reset_durations_read_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_headers_of_an_admitted_request() -> None:
    decision = RateLimitDecision(True, requests=LimitState(60, 59, 1.0), tokens=LimitState(1000, 900, 6.0))
    assert rate_limit_headers(decision) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "6s",
    }
    assert set(rate_limit_headers(decision)) == set(RATE_LIMIT_HEADER_NAMES)  # all exposed to browsers by CORS


def test_headers_of_refusals() -> None:
    rate = RateLimitDecision(False, LimitKind.REQUESTS, RATE_LIMIT_EXCEEDED, 0.25, requests=LimitState(10, 0, 5.9))
    headers = rate_limit_headers(rate)
    assert headers["Retry-After"] == "1"
    assert headers["retry-after-ms"] == "250"
    assert "x-should-retry" not in headers
    assert "x-ratelimit-limit-tokens" not in headers
    quota = RateLimitDecision(False, LimitKind.DAILY_TOKENS, INSUFFICIENT_QUOTA, 7200.2)
    headers = rate_limit_headers(quota)
    assert headers == {"Retry-After": "7201", "retry-after-ms": "7200200", "x-should-retry": "false"}


# --- admission --------------------------------------------------------------------------------


async def test_admit_raises_a_429_error_carrying_its_headers(limiter: InProcessRateLimiter) -> None:
    await admit(limiter, RateLimitRequest("key:a", rpm(1)))
    with pytest.raises(RateLimitRefused) as refused:
        await admit(limiter, RateLimitRequest("key:a", rpm(1)))
    assert refused.value.code == RATE_LIMIT_EXCEEDED
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.retry_after_seconds == pytest.approx(60.0)


async def test_admission_settles_once_and_releases_on_every_ending(limiter: InProcessRateLimiter) -> None:
    policy = LimitPolicy(tokens_per_window=1000, max_concurrent_streams=5)

    async def stream(ending: str) -> None:
        admission = await admit(limiter, RateLimitRequest("key:a", policy, tokens=100, stream=True))
        async with admission:
            admission.add_usage(10)
            if ending == "error":
                raise RuntimeError("upstream failed")
            if ending == "disconnect":
                await asyncio.sleep(3600)

    await stream("ok")
    with pytest.raises(RuntimeError):
        await stream("error")
    task = asyncio.create_task(stream("disconnect"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.active_leases("key:a") == 0
    # three admissions of 100, each settled at 10: 30 tokens charged
    decision = await limiter.acquire(RateLimitRequest("key:a", policy, tokens=0))
    assert decision.tokens is not None
    assert decision.tokens.remaining == 970


async def test_finish_without_reported_usage_keeps_the_reservation(limiter: InProcessRateLimiter) -> None:
    policy = LimitPolicy(tokens_per_window=1000)
    admission = await admit(limiter, RateLimitRequest("key:a", policy, tokens=100))
    await admission.finish()
    await admission.finish(used_tokens=0)  # a second ending changes nothing
    assert admission.finished
    decision = await limiter.acquire(RateLimitRequest("key:a", policy))
    assert decision.tokens is not None
    assert decision.tokens.remaining == 900


async def test_a_kept_lease_is_renewed_every_third_of_its_ttl_until_finished() -> None:
    limiter = InProcessRateLimiter(lease_ttl_seconds=0.15)
    renewed: list[float] = []
    real_renew = limiter.renew

    async def counting_renew(lease: Lease) -> None:
        renewed.append(asyncio.get_running_loop().time())
        await real_renew(lease)

    limiter.renew = counting_renew  # type: ignore[method-assign]
    admission = await admit(limiter, RateLimitRequest("key:a", LimitPolicy(max_concurrent_streams=1), stream=True))
    admission.keep_lease()
    admission.keep_lease()  # a second call does not start a second timer
    await asyncio.sleep(0.23)  # renewals due at 0.05 s intervals: about four
    assert 3 <= len(renewed) <= 5
    assert limiter.active_leases("key:a") == 1  # renewed: alive past its 0.15 s TTL
    await admission.finish()
    count = len(renewed)
    await asyncio.sleep(0.12)
    assert len(renewed) == count  # no renewal after the end
    assert limiter.active_leases("key:a") == 0


# --- who is limited -----------------------------------------------------------------------------

KEY_DEFAULTS = CallerLimitDefaults(60, 100_000, 0, 10)
USER_DEFAULTS = CallerLimitDefaults(30, 50_000, 1_000_000, 2)


def principal(kind: CredentialKind, limits: Limits | None = None) -> Principal:
    return Principal(
        user_id=uuid.uuid4(),
        email="a@example.org",
        role=Role.USER,
        credential=kind,
        api_key_id=uuid.uuid4() if kind is CredentialKind.API_KEY else None,
        limits=limits or Limits(),
    )


def test_api_keys_are_limited_by_their_own_limits_else_the_defaults() -> None:
    caller = principal(CredentialKind.API_KEY, Limits(rpm_limit=5, tpm_limit=None, daily_token_budget=700))
    subject, policy = policy_for_principal(caller, api_keys=KEY_DEFAULTS, users=USER_DEFAULTS)
    assert subject == f"key:{caller.api_key_id}"
    assert policy == LimitPolicy(5, 100_000, 700, 10)


def test_jwt_callers_are_limited_per_user() -> None:
    caller = principal(CredentialKind.JWT)
    subject, policy = policy_for_principal(caller, api_keys=KEY_DEFAULTS, users=USER_DEFAULTS)
    assert subject == f"user:{caller.user_id}"
    assert policy == LimitPolicy(30, 50_000, 1_000_000, 2)


def test_account_subjects_hide_the_address_and_ignore_case() -> None:
    subject = account_subject(" Alice@Example.org ")
    assert subject == account_subject("alice@example.org")
    assert "alice" not in subject
    per_ip, per_account = auth_policies(AuthLimitDefaults(30, 0))
    assert per_ip.rpm == 30
    assert per_account.rpm == 0
