"""TEMPORARY test helper: puts a `Principal` on the request until the real auth middleware lands.

The gateway reads the caller from ``request.user`` (``scope["user"]``), which the auth
middleware (built on another branch) sets from an API key or a JWT. Until it is merged,
`PrincipalInjector` wraps the real app and sets ``scope["user"]`` from the header
``Authorization: Bearer test-principal-<scenario>`` (what the openai SDKs send when given
``api_key="test-principal-<scenario>"``). Any other request gets no principal (401).

Every gateway HTTP test goes through ONE fixture, ``gateway_server`` (tests/e2e/gateway/
conftest.py). The integrator replaces this module and that fixture's body with real users
and API keys; the tests keep calling ``gateway_server.client(scenario)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import uvicorn

from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role
from app.infrastructure.persistence.embedded import free_port

TOKEN_PREFIX = "test-principal-"


def scenarios(user_id: uuid.UUID, api_key_id: uuid.UUID) -> dict[str, Principal]:
    """The callers tests may pose as: ``Bearer test-principal-<name>``."""

    def principal(**scopes: Any) -> Principal:
        return Principal(
            user_id=user_id,
            email="gateway-tests@example.test",
            role=Role.USER,
            credential=CredentialKind.API_KEY,
            api_key_id=api_key_id,
            **scopes,
        )

    return {
        "all": principal(),
        "demo-only": principal(allowed_models=("demo",)),
        "no-models": principal(allowed_models=()),
        "no-tools": principal(allowed_tools=()),
    }


class PrincipalInjector:
    """ASGI wrapper: ``scope["user"] = Principal`` for a ``test-principal-<scenario>`` bearer token."""

    def __init__(self, app: Any, principals: dict[str, Principal]) -> None:
        self._app = app
        self._principals = principals

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    token = value.decode("latin-1").removeprefix("Bearer ").strip()
                    principal = self._principals.get(token.removeprefix(TOKEN_PREFIX))
                    if token.startswith(TOKEN_PREFIX) and principal is not None:
                        scope["user"] = principal
        await self._app(scope, receive, send)


@dataclass
class ThreadedServer:
    """A real uvicorn server on 127.0.0.1 in a thread (so real clients, e.g. the openai SDK, can call it)."""

    app: Any
    port: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on", loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="gateway-test-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
