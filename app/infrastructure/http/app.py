"""The Litestar application, assembled in one place from a `Container`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

import app as app_package
from app.application.health import CheckReadiness
from app.application.ratelimit.headers import RATE_LIMIT_HEADER_NAMES
from app.domain.errors import DomainError
from app.infrastructure.container import Container
from app.infrastructure.http.controllers.operations import OperationsController
from app.infrastructure.http.errors import (
    handle_domain_error,
    handle_http_exception,
    handle_undecodable_body,
    make_unexpected_error_handler,
)
from app.infrastructure.http.middleware import RequestContextMiddleware


def build_http_app(container: Container, extra_route_handlers: Sequence[Any] = ()) -> Litestar:
    """`extra_route_handlers` lets tests mount probes (e.g. a route that raises) on the real app."""
    settings = container.settings

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await container.start()
        try:
            yield
        finally:
            await container.aclose()

    def provide_readiness() -> CheckReadiness:
        return container.readiness

    cors = (
        CORSConfig(
            allow_origins=settings.server.cors_allow_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "retry-after-ms",
                "x-should-retry",
                *RATE_LIMIT_HEADER_NAMES,
            ],
        )
        if settings.server.cors_allow_origins
        else None
    )
    exception_handlers: dict[Any, Any] = {
        DomainError: handle_domain_error,
        HTTPException: handle_http_exception,
        UnicodeDecodeError: handle_undecodable_body,
        Exception: make_unexpected_error_handler(container.metrics.unhandled_errors.inc),
    }
    application = Litestar(
        route_handlers=[OperationsController, *extra_route_handlers],
        dependencies={"readiness": Provide(provide_readiness, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        cors_config=cors,
        request_max_body_size=settings.server.request_max_body_bytes,
        state=State({"container": container, "metrics": container.metrics}),
        openapi_config=OpenAPIConfig(
            title="agent-api",
            version=app_package.__version__,
            description="OpenAI-compatible AI agent backend. See docs/api.md for compatibility notes.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/")],
        ),
        debug=False,
        logging_config=None,  # structlog is configured once, in bootstrap
    )
    # Outermost: sees every request, routed or not (see RequestContextMiddleware).
    application.asgi_handler = RequestContextMiddleware(application.asgi_handler, container.metrics)
    return application
