"""`agent-api create-admin`, `create-api-key`, and the development admin printed by `make run`."""

from __future__ import annotations

import asyncio
import json
import secrets
import stat
from pathlib import Path

import pytest

from app.bootstrap import build_container
from app.config import Settings, load_settings
from app.domain.users import Role
from app.infrastructure.cli import main as cli
from tests.support.identity import new_email


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> Settings:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "DATABASE_AUTO_MIGRATE": "false",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "API_KEY_PEPPER": secrets.token_urlsafe(48),
        "ARGON2_MEMORY_KIB": "64",
        "ARGON2_TIME_COST": "1",
        "LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return load_settings()


async def _authenticate(settings: Settings, key: str) -> tuple[str, Role]:
    container = build_container(settings)
    try:
        principal = await container.identity.authenticator.api_key(key)
        return principal.email, principal.role
    finally:
        await container.aclose()


async def _login(settings: Settings, email: str, password: str) -> Role:
    container = build_container(settings)
    try:
        return (await container.identity.login(email, password, "127.0.0.1")).user.role
    finally:
        await container.aclose()


def test_create_admin_then_a_key_for_it(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    email = new_email()
    assert cli.main(["create-admin", "--email", email, "--password", "first password"]) == 0
    assert "created" in capsys.readouterr().out
    assert asyncio.run(_login(cli_env, email, "first password")) is Role.ADMIN

    # Again: the account is kept, promoted and given the new password.
    assert cli.main(["create-admin", "--email", email.upper(), "--password", "second password"]) == 0
    assert "updated" in capsys.readouterr().out
    assert asyncio.run(_login(cli_env, email, "second password")) is Role.ADMIN

    assert cli.main(["create-api-key", "--email", email, "--name", "ops"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("sk-")
    assert asyncio.run(_authenticate(cli_env, key)) == (email, Role.ADMIN)


def test_cli_refuses_bad_input(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["create-admin", "--email", new_email(), "--password", "short"]) == 1
    assert "Password" in capsys.readouterr().err
    assert cli.main(["create-api-key", "--email", new_email()]) == 1
    assert "no user" in capsys.readouterr().err


def test_development_admin_is_remembered_and_printed(
    cli_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = tmp_path / ".local" / "dev-admin.json"
    monkeypatch.setattr(cli, "DEV_ADMIN_FILE", credentials)
    cli._print_dev_admin(cli_env, "http://127.0.0.1:8000")
    first = capsys.readouterr().out
    stored = json.loads(credentials.read_text())
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stored["password"] in first
    assert stored["email"] in first

    cli._print_dev_admin(cli_env, "http://127.0.0.1:8000")
    second = capsys.readouterr().out
    assert stored["password"] in second  # the same admin, shown again
    keys = [line.split()[-1] for line in (first + second).splitlines() if "API key:" in line]
    assert len(keys) == 2
    assert keys[0] != keys[1]  # a fresh key each start
    assert asyncio.run(_authenticate(cli_env, keys[1])) == (stored["email"], Role.ADMIN)
