"""Rate-limit settings: defaults, environment names, and refusal of bad proxy lists."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import RateLimitFailurePolicy, RateLimitSettings


def test_defaults_fall_back_locally_for_the_api_and_close_for_auth() -> None:
    settings = RateLimitSettings()
    assert settings.api_failure_policy is RateLimitFailurePolicy.LOCAL
    assert settings.auth_failure_policy is RateLimitFailurePolicy.CLOSED
    assert settings.trusted_proxies == []


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_KEY_RPM", "5")
    monkeypatch.setenv("RATE_LIMIT_API_FAILURE_POLICY", "closed")
    monkeypatch.setenv("RATE_LIMIT_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.5")
    settings = RateLimitSettings()
    assert settings.key_rpm == 5
    assert settings.api_failure_policy is RateLimitFailurePolicy.CLOSED
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.5"]


@pytest.mark.parametrize("field", [{"trusted_proxies": ["10.0.0.0/8", "proxy.internal"]}, {"api_failure_policy": "x"}])
def test_bad_values_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RateLimitSettings(**field)  # type: ignore[arg-type]
