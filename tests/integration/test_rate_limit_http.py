"""A refused request becomes the contract's 429 (every x-ratelimit-* header, Retry-After,
retry-after-ms, x-should-retry for quota); a closed limiter without Redis becomes 503."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State
from litestar.params import FromQuery
from litestar.testing import AsyncTestClient

from app.application.ratelimit import (
    LimitPolicy,
    RateLimitRequest,
    admit,
)
from app.config import Settings
from app.infrastructure.container import Container
from tests.conftest import AppFactory


def limited_route(policy: LimitPolicy, tokens: int = 0) -> object:
    @get("/test/limited", exclude_from_auth=True)
    async def handler(subject: FromQuery[str], state: State) -> dict[str, str]:
        container: Container = state.container
        admission = await admit(container.rate_limits.api, RateLimitRequest(subject, policy, tokens=tokens))
        await admission.finish(used_tokens=tokens)
        return admission.headers

    return handler


async def test_refusals_carry_the_contract_headers(settings: Settings, app_factory: AppFactory) -> None:
    app = app_factory(settings, [limited_route(LimitPolicy(requests_per_window=2, tokens_per_window=100), tokens=10)])
    async with AsyncTestClient(app=app) as client:
        for remaining in ("1", "0"):
            ok = await client.get("/test/limited", params={"subject": "key:http-a"})
            assert ok.status_code == 200
            assert ok.json()["x-ratelimit-remaining-requests"] == remaining
        refused = await client.get("/test/limited", params={"subject": "key:http-a"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.headers["x-ratelimit-limit-requests"] == "2"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-limit-tokens"] == "100"
        assert refused.headers["x-ratelimit-remaining-tokens"] == "80"
        assert int(refused.headers["Retry-After"]) >= 1
        assert int(refused.headers["retry-after-ms"]) > 0
        assert "x-should-retry" not in refused.headers
        other = await client.get("/test/limited", params={"subject": "key:http-b"})
        assert other.status_code == 200


async def test_an_exhausted_budget_says_do_not_retry(settings: Settings, app_factory: AppFactory) -> None:
    app = app_factory(settings, [limited_route(LimitPolicy(daily_token_budget=15), tokens=10)])
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/test/limited", params={"subject": "key:http-q"})).status_code == 200
        refused = await client.get("/test/limited", params={"subject": "key:http-q"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert refused.headers["x-should-retry"] == "false"
