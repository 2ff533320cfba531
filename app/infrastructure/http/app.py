"""The Litestar application, assembled in one place from a `Container`."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.middleware._internal.cors import CORSMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp

import app as app_package
from app.application.llm.limits import AdmitChatCompletion
from app.application.llm.types import UsageRecorder
from app.application.llm.use_cases import CreateChatCompletion, GetModel, ListModels
from app.application.ratelimit.headers import RATE_LIMIT_HEADER_NAMES
from app.application.tools import ExecuteToolBatch, ListTools
from app.application.usage import GetUsage
from app.domain.errors import DomainError
from app.infrastructure.container import Container
from app.infrastructure.http.auth import CredentialAuthenticationMiddleware
from app.infrastructure.http.chat_endpoint import PATH as CHAT_PATH
from app.infrastructure.http.chat_endpoint import ChatCompletionsEndpoint
from app.infrastructure.http.console import console_route_handlers
from app.infrastructure.http.controllers.conversations import ConversationsController, ToolExecutionsController
from app.infrastructure.http.controllers.identity import AdminUsersController, ApiKeyController, AuthController
from app.infrastructure.http.controllers.openai import OpenAIController
from app.infrastructure.http.controllers.operations import OperationsController
from app.infrastructure.http.controllers.tools import ToolsController
from app.infrastructure.http.controllers.usage import UsageController
from app.infrastructure.http.errors import (
    handle_domain_error,
    handle_http_exception,
    handle_undecodable_body,
    make_unexpected_error_handler,
)
from app.infrastructure.http.middleware import RequestContextMiddleware
from app.infrastructure.llm.usage_recorder import MeteredUsageRecorder
from app.infrastructure.persistence.usage_repository import SqlAlchemyUsageRepository


def tune_garbage_collector(young_threshold: int) -> tuple[int, int, int] | None:
    """Freeze the start-up objects and make young collections rarer; returns the old thresholds.

    - `gc.freeze`: the application's long-lived objects (routes, schemas, models, pools: about
      170,000) were traversed by every full collection, a pause of 60-135 ms measured in the
      middle of a burst of streams; frozen, the same collections take 7-12 ms. Reference
      counting still frees frozen objects; only cycles among them wait for the `gc.unfreeze`
      the shutdown calls (a test process starts many applications).
    - A young collection traverses every object still alive since the last one: under load
      that is the state of every request in flight, so at CPython's default of one collection
      per 700 allocations a burst of 150 streams spent a quarter of its CPU there. At 10,000:
      1.07-1.17 -> 0.73-0.83 ms of CPU per stream in the same bursts (docs/benchmarks.md);
      garbage in cycles waits a little longer (a few MB at most).

    ``young_threshold`` is ``GC_YOUNG_THRESHOLD``; 0 leaves the collector as it is (None is
    returned).
    """
    if young_threshold <= 0:
        return None
    gc.collect()
    gc.freeze()
    previous = gc.get_threshold()
    gc.set_threshold(young_threshold, previous[1], previous[2])
    return previous


def restore_garbage_collector(thresholds: tuple[int, int, int] | None) -> None:
    if thresholds is not None:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _provide(value: object) -> Provide:
    def provider() -> object:
        return value

    return Provide(provider, sync_to_thread=False)


def build_http_app(container: Container, extra_route_handlers: Sequence[Any] = ()) -> Litestar:
    """`extra_route_handlers` lets tests mount probes (e.g. a route that raises) on the real app."""
    settings = container.settings

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await container.start()
        thresholds = tune_garbage_collector(settings.server.gc_young_threshold)
        try:
            yield
        finally:
            restore_garbage_collector(thresholds)
            await container.aclose()

    # The Tools API's ExecuteTool records every attempt in tool_executions (the audit trail).
    execute_tool = container.agent.execute_tool
    recorder: UsageRecorder = MeteredUsageRecorder(container.usage_recorder, container.metrics)
    chat_completion = CreateChatCompletion(container.model_catalog, recorder)
    admit_chat = AdmitChatCompletion(
        chat_completion,
        container.rate_limits.api,
        api_keys=container.rate_limits.api_keys,
        users=container.rate_limits.users,
        default_max_tokens=settings.rate_limit.default_max_tokens,
    )
    # One instance of each per application; handlers receive them by name.
    provided: dict[str, object] = {
        "readiness": container.readiness,
        "identity": container.identity,
        "list_tools": ListTools(container.tools),
        "execute_tool": execute_tool,
        "execute_tool_batch": ExecuteToolBatch(execute_tool, concurrency=settings.tools.batch_concurrency),
        "list_models": ListModels(container.model_catalog),
        "get_model": GetModel(container.model_catalog),
        "get_usage": GetUsage(SqlAlchemyUsageRepository(container.session_factory)),
        "agent": container.agent,
    }

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
        route_handlers=[
            OperationsController,
            AuthController,
            ApiKeyController,
            AdminUsersController,
            ToolsController,
            OpenAIController,
            ConversationsController,
            ToolExecutionsController,
            UsageController,
            *console_route_handlers(),
            *extra_route_handlers,
        ],
        dependencies={name: _provide(value) for name, value in provided.items()},
        middleware=[
            DefineMiddleware(CredentialAuthenticationMiddleware, authenticator=container.identity.authenticator)
        ],
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
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="A JWT access token (POST /v1/auth/login) or an API key (sk-...).",
                    )
                }
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
        logging_config=None,  # structlog is configured once, in bootstrap
    )
    # The hot path, served in front of the router (http/chat_endpoint.py); it hands requests
    # with server tools back to the Litestar route. CORS, when configured, applies to it too.
    litestar_handler = application.asgi_handler
    chat_endpoint: ASGIApp = ChatCompletionsEndpoint(
        fallback=litestar_handler,
        authenticator=container.identity.authenticator,
        chat_completion=chat_completion,
        admit_chat=admit_chat,
        metrics=container.metrics,
        drain=container.drain,
        heartbeat_seconds=settings.llm.llm_heartbeat_seconds,
        max_body_bytes=settings.server.request_max_body_bytes,
    )
    if cors is not None:
        chat_endpoint = CORSMiddleware(app=chat_endpoint, config=cors)
    # Outermost: sees every request, routed or not (see RequestContextMiddleware).
    application.asgi_handler = RequestContextMiddleware(
        litestar_handler, container.metrics, container.drain, direct_routes={("POST", CHAT_PATH): chat_endpoint}
    )
    return application
