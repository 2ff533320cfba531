"""Helpers for the identity tests: accounts, tokens, keys and a query counter."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from litestar import Litestar, Request, get
from litestar.testing import AsyncTestClient
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import BootstrapSettings, Settings
from app.domain.principal import Principal

PASSWORD = "correct horse battery"
ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "admin password 123"

Client = AsyncTestClient[Litestar]


def with_admin(settings: Settings, **bootstrap: Any) -> Settings:
    """Settings whose start-up creates the admin (BOOTSTRAP_ADMIN_EMAIL / _PASSWORD)."""
    values: dict[str, Any] = {
        "bootstrap_admin_email": ADMIN_EMAIL,
        "bootstrap_admin_password": ADMIN_PASSWORD,
        **bootstrap,
    }
    return settings.model_copy(update={"bootstrap": BootstrapSettings(**values)})


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


async def register(client: Client, email: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/v1/auth/register", json={"email": email or new_email(), "password": password})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


async def login(client: Client, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def new_user_session(client: Client) -> dict[str, Any]:
    user = await register(client)
    return await login(client, user["email"])


async def admin_session(client: Client) -> dict[str, Any]:
    return await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def issue_key(client: Client, admin_token: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", json={"name": "test key", **fields}, headers=bearer(admin_token))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@get("/v1/test/whoami", include_in_schema=False)
async def whoami(request: Request[Principal, Any, Any]) -> dict[str, Any]:
    """A protected route that touches nothing but the principal (no database)."""
    principal = request.user
    return {
        "user_id": str(principal.user_id),
        "role": principal.role.value,
        "credential": principal.credential.value,
        "allowed_models": principal.allowed_models,
    }


def make_token(secret: str, claims: dict[str, Any], *, kid: str | None, algorithm: str = "HS256") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)


class QueryCounter:
    """Counts SQL statements sent through an engine (any thread)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        with self._lock:
            self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)


@contextmanager
def counting_queries(engine: AsyncEngine) -> Iterator[QueryCounter]:
    counter = QueryCounter()
    event.listen(engine.sync_engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", counter)
