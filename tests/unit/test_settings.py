"""Settings: outside development, weak secrets stop the service with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.config import (
    DEVELOPMENT_JWT_SECRET,
    DatabaseSettings,
    Environment,
    SecuritySettings,
    Settings,
    first_error_line,
    secret_problem,
)

STRONG = "q8Jf2kL0vZx7Rm3Tp9Wb4Nc6Yd1Hs5Ge-AaBbCcDd"
DB = DatabaseSettings(url="postgresql+asyncpg://u@127.0.0.1/db")


def production(jwt: str | None, pepper: str | None = STRONG) -> Settings:
    return Settings(
        app_env=Environment.PRODUCTION,
        database=DB,
        security=SecuritySettings(jwt_secret=jwt, api_key_pepper=pepper),
    )


def test_strong_secrets_are_accepted_in_production() -> None:
    settings = production(STRONG)
    assert settings.jwt_secret == STRONG
    assert settings.api_key_pepper == STRONG


@pytest.mark.parametrize(
    ("jwt", "expected"),
    [
        (None, "JWT_SECRET is missing"),
        ("", "JWT_SECRET is missing"),
        ("short-but-random-9f3k", "JWT_SECRET is too short (21 bytes)"),
        ("change-me-to-a-long-random-value-please-0123", "JWT_SECRET is a placeholder"),
        (DEVELOPMENT_JWT_SECRET, "JWT_SECRET is a placeholder"),
        ("a" * 40, "JWT_SECRET has too little variety"),
    ],
)
def test_weak_jwt_secret_is_refused_outside_development(jwt: str | None, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        production(jwt)
    line = first_error_line(info.value)
    assert expected in line
    assert "\n" not in line
    assert "APP_ENV=production" in line


def test_weak_pepper_is_refused_in_test_environment_too() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(
            app_env=Environment.TEST,
            database=DB,
            security=SecuritySettings(jwt_secret=STRONG, api_key_pepper="tooshort"),
        )
    assert "API_KEY_PEPPER is too short" in first_error_line(info.value)


def test_database_url_is_required_outside_development() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(
            app_env=Environment.PRODUCTION,
            database=DatabaseSettings(),
            security=SecuritySettings(jwt_secret=STRONG, api_key_pepper=STRONG),
        )
    assert "DATABASE_URL must be set" in first_error_line(info.value)


def test_development_runs_without_secrets_on_labelled_dev_values() -> None:
    settings = Settings(app_env=Environment.DEVELOPMENT, security=SecuritySettings())
    assert settings.jwt_secret == DEVELOPMENT_JWT_SECRET
    assert secret_problem(settings.jwt_secret) is not None  # never acceptable in production


def test_environment_variables_use_the_operator_contract_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://x@h/d")
    monkeypatch.setenv("REDIS_URL", "redis://h:1/0")
    monkeypatch.setenv("JWT_SECRET", STRONG)
    monkeypatch.setenv("API_KEY_PEPPER", STRONG[::-1])
    monkeypatch.setenv("LLM_MODELS", "gpt-4o, llama3 ")
    monkeypatch.setenv("ALLOW_REGISTRATION", "false")
    monkeypatch.setenv("SHUTDOWN_DRAIN_SECONDS", "10")
    settings = Settings()
    assert settings.app_env is Environment.TEST
    assert (settings.server.port, settings.server.workers) == (9123, 3)
    assert settings.database.url is not None
    assert settings.database.url.get_secret_value().endswith("/d")
    assert settings.redis.url is not None
    assert settings.llm.llm_models == ["gpt-4o", "llama3"]
    assert settings.bootstrap.allow_registration is False
    assert settings.bootstrap.shutdown_drain_seconds == 10
    assert STRONG not in repr(settings)  # secrets are masked in reprs (and so in logs)


def test_cli_refuses_to_start_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET", "API_KEY_PEPPER")}
    env.update(APP_ENV="production", DATABASE_URL="postgresql+asyncpg://u@127.0.0.1:1/db", JWT_SECRET="short")
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "JWT_SECRET is too short" in lines[0]


def test_the_upstream_http_transport_is_native_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.bootstrap import upstream_policy
    from app.config import LLMSettings

    monkeypatch.delenv("LLM_HTTP_TRANSPORT", raising=False)
    assert LLMSettings().llm_http_transport == "native"
    for kind in ("native", "aiohttp", "httpx"):
        monkeypatch.setenv("LLM_HTTP_TRANSPORT", kind)
        assert LLMSettings().llm_http_transport == kind
    assert upstream_policy(Settings(llm=LLMSettings(llm_http_transport="httpx"))).transport == "httpx"
    monkeypatch.setenv("LLM_HTTP_TRANSPORT", "curl")
    with pytest.raises(ValidationError):
        LLMSettings()
