"""The `agent-api` command (also `python -m app`).

serve            run the HTTP server with WORKERS processes (development: embedded Postgres
                 when DATABASE_URL is unset, migrations applied first)
migrate          upgrade the database schema to head
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from app.config import Settings, first_error_line, load_settings

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


def cmd_serve(_: argparse.Namespace) -> int:
    import uvicorn

    settings = _load()
    with database_for(settings) as ready:
        if ready.auto_migrate:
            # Once, here, before the workers start (they would race each other otherwise).
            asyncio.run(_migrate(ready))
        host, port = ready.server.host, ready.server.port
        shown = f"[{host}]" if ":" in host else host
        print(f"agent-api: serving on http://{shown}:{port} (docs at /docs); Ctrl-C stops", flush=True)
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
            timeout_graceful_shutdown=int(ready.bootstrap.shutdown_drain_seconds) or None,
        )
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "serve": (cmd_serve, "run the HTTP server"),
    "migrate": (cmd_migrate, "upgrade the database schema to head"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-api", description="OpenAI-compatible AI agent backend.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
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
