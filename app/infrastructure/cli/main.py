"""The `agent-api` command (also `python -m app`).

serve            run the HTTP server with WORKERS processes (development: embedded Postgres
                 when DATABASE_URL is unset, migrations applied first, and a local admin's
                 credentials plus a fresh API key printed)
migrate          upgrade the database schema to head
create-admin     create (or promote, re-activate and re-password) an admin account
create-api-key   issue an API key for an existing user and print it once
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from app.config import Settings, first_error_line, load_settings

if TYPE_CHECKING:
    from app.infrastructure.security.services import IdentityServices

PROJECT_DIR = Path(__file__).resolve().parents[3]


def _fail(message: str, code: int = 2) -> int:
    print(f"agent-api: {message}", file=sys.stderr)
    return code


def _load() -> Settings:
    from app.infrastructure.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.logging)
    return settings


@contextmanager
def database_for(settings: Settings) -> Iterator[Settings]:
    """Yield settings with a database URL: the configured one, or (development) an embedded Postgres."""
    if settings.database.url is not None:
        yield settings
        return
    if not settings.is_development:
        raise SystemExit(_fail("DATABASE_URL must be set outside development"))
    from app.infrastructure.persistence.embedded import EmbeddedPostgres

    local_dir = Path(os.environ.get("AGENT_API_LOCAL_DIR") or PROJECT_DIR / ".local")
    embedded = EmbeddedPostgres(local_dir / "postgres")
    print(f"agent-api: starting the embedded PostgreSQL ({embedded.bin_dir}) on 127.0.0.1:{embedded.port}", flush=True)
    url = embedded.start()
    os.environ["DATABASE_URL"] = url  # worker processes read their settings from the environment
    try:
        yield load_settings()
    finally:
        print("agent-api: stopping the embedded PostgreSQL", flush=True)
        embedded.stop()


async def _migrate(settings: Settings) -> str | None:
    from app.infrastructure.persistence import migrations
    from app.infrastructure.persistence.database import create_engine

    assert settings.database.url is not None
    engine = create_engine(settings.database, settings.database.url.get_secret_value())
    try:
        await migrations.upgrade(engine)
        return await migrations.current_revision(engine)
    finally:
        await engine.dispose()


def cmd_migrate(_: argparse.Namespace) -> int:
    settings = _load()
    with database_for(settings) as ready:
        revision = asyncio.run(_migrate(ready))
    print(f"agent-api: database schema at {revision}")
    return 0


@asynccontextmanager
async def _identity(settings: Settings) -> AsyncIterator[IdentityServices]:
    """The identity use cases on their own pool, for one command."""
    from app.infrastructure.container import build_identity
    from app.infrastructure.observability.metrics import Metrics
    from app.infrastructure.persistence.database import create_engine, create_session_factory
    from app.infrastructure.persistence.unit_of_work import SqlAlchemyUnitOfWork
    from app.infrastructure.redis_client import create_redis

    assert settings.database.url is not None
    engine = create_engine(settings.database, settings.database.url.get_secret_value())
    session_factory = create_session_factory(engine)
    redis = create_redis(settings.redis)
    try:
        yield build_identity(settings, lambda: SqlAlchemyUnitOfWork(session_factory), redis, Metrics())
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


async def _create_admin(settings: Settings, email: str, password: str, name: str | None) -> tuple[str, bool]:
    async with _identity(settings) as identity:
        user, created = await identity.ensure_admin(email, password, update_existing=True, name=name)
        return user.email, created


async def _create_api_key(settings: Settings, email: str, name: str) -> tuple[str, str]:
    from app.application.identity.api_keys import ApiKeySpec
    from app.domain.errors import NotFound
    from app.domain.principal import CredentialKind, Principal
    from app.domain.users import Role

    async with _identity(settings) as identity:
        user = await identity.find_user(email)
        if user is None:
            raise NotFound(f"no user with email {email!r}")
        # The operator at the console acts with admin rights; the key itself is the user's.
        operator = Principal(user_id=user.id, email=user.email, role=Role.ADMIN, credential=CredentialKind.JWT)
        key, secret = await identity.issue_api_key(operator, ApiKeySpec(name=name, user_id=user.id))
        return secret, f"sk-{key.prefix}"


def _domain_errors() -> tuple[type[Exception], ...]:
    from app.domain.errors import DomainError

    return (DomainError,)


def cmd_create_admin(args: argparse.Namespace) -> int:
    password = args.password or getpass.getpass("password for the admin: ")
    settings = _load()
    with database_for(settings) as ready:
        try:
            email, created = asyncio.run(_create_admin(ready, args.email, password, args.name))
        except _domain_errors() as exc:
            return _fail(str(exc), 1)
    print(f"agent-api: admin {email} {'created' if created else 'updated (promoted, active, new password)'}")
    return 0


def cmd_create_api_key(args: argparse.Namespace) -> int:
    settings = _load()
    with database_for(settings) as ready:
        try:
            secret, prefix = asyncio.run(_create_api_key(ready, args.email, args.name))
        except _domain_errors() as exc:
            return _fail(str(exc), 1)
    print(f"agent-api: API key {prefix}... for {args.email} (shown once, store it now):", file=sys.stderr)
    print(secret)
    return 0


DEV_ADMIN_FILE = PROJECT_DIR / ".local" / "dev-admin.json"
DEV_ADMIN_EMAIL = "admin@agent-api.local"


def _dev_admin_credentials() -> tuple[str, str]:
    """The local development admin, remembered in the git-ignored .local/ so it can be shown again."""
    if DEV_ADMIN_FILE.exists():
        stored = json.loads(DEV_ADMIN_FILE.read_text())
        return str(stored["email"]), str(stored["password"])
    DEV_ADMIN_FILE.parent.mkdir(parents=True, exist_ok=True)
    email, password = DEV_ADMIN_EMAIL, secrets.token_urlsafe(18)
    fd = os.open(DEV_ADMIN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"email": email, "password": password}, handle)
    return email, password


def _print_dev_admin(settings: Settings, base_url: str) -> None:
    """Development only: make sure the local admin exists and print its credentials and a fresh key."""
    email, password = _dev_admin_credentials()
    asyncio.run(_create_admin(settings, email, password, "Local admin"))
    secret, _ = asyncio.run(_create_api_key(settings, email, "make run"))
    print(
        "agent-api: development admin (kept in .local/dev-admin.json):\n"
        f"  email:    {email}\n  password: {password}\n  API key:  {secret}\n"
        f"  try: curl -H 'Authorization: Bearer {secret}' {base_url}/v1/auth/me",
        flush=True,
    )


def cmd_serve(_: argparse.Namespace) -> int:
    import uvicorn

    settings = _load()
    with database_for(settings) as ready:
        if ready.auto_migrate:
            # Once, here, before the workers start (they would race each other otherwise).
            asyncio.run(_migrate(ready))
        host, port = ready.server.host, ready.server.port
        shown = f"[{host}]" if ":" in host else host
        if ready.is_development and ready.auto_migrate:
            _print_dev_admin(ready, f"http://{shown}:{port}")
        print(f"agent-api: serving on http://{shown}:{port} (docs at /docs); Ctrl-C stops", flush=True)
        _keep_exit_status_on_sigterm()
        uvicorn.run(
            "app.bootstrap:create_app",
            factory=True,
            host=host,
            port=port,
            workers=ready.server.workers,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            # The app ends its streams at the drain deadline itself; uvicorn's own limit is a backstop.
            timeout_graceful_shutdown=int(ready.bootstrap.shutdown_drain_seconds) + 1,
        )
    return 0


def _keep_exit_status_on_sigterm() -> None:
    """After a graceful stop uvicorn re-raises the signal it caught, to the handler that was in
    place before it started. With the default SIGTERM handler that kills the process (exit 143)
    after a clean shutdown; this handler makes a drained SIGTERM end with exit status 0."""

    def stopped(_: int, __: object) -> None:
        return None

    signal.signal(signal.SIGTERM, stopped)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "serve": (cmd_serve, "run the HTTP server"),
    "migrate": (cmd_migrate, "upgrade the database schema to head"),
    "create-admin": (cmd_create_admin, "create (or promote) an admin account"),
    "create-api-key": (cmd_create_api_key, "issue an API key for a user and print it once"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-api", description="OpenAI-compatible AI agent backend.")
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {name: sub.add_parser(name, help=help_text) for name, (_, help_text) in COMMANDS.items()}
    parsers["create-admin"].add_argument("--email", required=True)
    parsers["create-admin"].add_argument("--password", help="prompted for when omitted")
    parsers["create-admin"].add_argument("--name")
    parsers["create-api-key"].add_argument("--email", required=True, help="the key's owner")
    parsers["create-api-key"].add_argument("--name", default="cli")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler, _ = COMMANDS[args.command]
    try:
        return handler(args)
    except ValidationError as exc:
        return _fail(first_error_line(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
