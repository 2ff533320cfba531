"""The outermost ASGI layer: request id, per-request log context, access log and metrics.

It wraps Litestar's whole ASGI handler (router and app-level exception handling), not a
route, so unknown routes (404) and wrong methods (405) get an ``X-Request-ID`` and are
counted like everything else.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Receive, Scope, Send

from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.shutdown import Drain

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
MAX_CACHED_LABELS = 1024
_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})

access_log = get_logger("agent_api.access")


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID when it is sane (short, no odd characters), else a new one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.match(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()  # as random as uuid4().hex, a fifth of its cost


# Liveness and readiness keep answering while draining (readiness then says 503 "draining").
_ALWAYS_SERVED = frozenset({"/health", "/ready"})
_SHUTTING_DOWN = json.dumps(
    {
        "error": {
            "message": "The server is shutting down; retry on another instance.",
            "type": "service_unavailable",
            "param": None,
            "code": "shutting_down",
        }
    }
).encode()


class RequestContextMiddleware:
    """`direct_routes` maps ``(method, path)`` to an ASGI app served instead of `app` (the hot
    path, `ChatCompletionsEndpoint`); a trailing slash of the path does not matter."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        drain: Drain | None = None,
        direct_routes: dict[tuple[str, str], ASGIApp] | None = None,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._drain = drain
        self._direct = dict(direct_routes or {})
        # The labelled children, looked up once per (route, method, status): `labels()` takes a
        # lock and builds a tuple key on every call. Routes are templates, so this stays small.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        encoded_id = request_id.encode("ascii")
        started = time.perf_counter()
        status_holder = [0]

        async def send_with_request_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                if message["type"] == "http.response.start":
                    status_holder[0] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, encoded_id))
                message["headers"] = headers
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            if self._drain is not None and self._drain.draining and scope.get("path") not in _ALWAYS_SERVED:
                await _refuse_while_draining(scope, send_with_request_id)
                return
            app = self._app
            if self._direct and scope["type"] == ScopeType.HTTP:
                path: str = scope["path"]
                app = self._direct.get((scope["method"], path.rstrip("/") if len(path) > 1 else path), app)
            await app(scope, receive, send_with_request_id)
        finally:
            self._record(scope, status_holder[0], time.perf_counter() - started)
            structlog.contextvars.reset_contextvars(**tokens)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = str(scope.get("path_template") or "unmatched")
        method = str(scope.get("method", "WS"))
        children = self._children.get((route, method, status))
        if children is None:
            children = (
                self._metrics.requests.labels(route, method, str(status)),
                self._metrics.request_latency.labels(route, method),
            )
            if len(self._children) < MAX_CACHED_LABELS:
                self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(elapsed)
        path: Any = scope.get("path", "")
        if path not in _QUIET_PATHS or status >= 400:
            access_log.info(
                "request",
                method=method,
                path=path,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )


async def _refuse_while_draining(scope: Scope, send: Send) -> None:
    """503 ``shutting_down`` for a request that arrives after SIGTERM (on an open connection)."""
    if scope["type"] == ScopeType.WEBSOCKET:
        await send({"type": "websocket.close", "code": 1012, "reason": "shutting down"})
        return
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
            (b"content-length", str(len(_SHUTTING_DOWN)).encode()),
        ],
    }
    await send(start)
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": _SHUTTING_DOWN, "more_body": False}
    await send(body)
