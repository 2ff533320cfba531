"""Operational endpoints at the root: /health, /ready, /metrics, /openapi.json."""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app.application.health import CheckReadiness
from app.infrastructure.observability.metrics import Metrics


class HealthStatus(BaseModel):
    status: str


class ReadinessStatus(BaseModel):
    status: str
    checks: dict[str, str]


class OperationsController(Controller):
    path = "/"
    tags = ["operations"]

    @get("/health", summary="Liveness", description="200 while the process lives.", cache=False)
    async def health(self) -> HealthStatus:
        return HealthStatus(status="ok")

    @get(
        "/ready",
        summary="Readiness",
        description="200 when every required dependency answers; 503 naming the failing one otherwise.",
        responses={},
    )
    async def ready(self, readiness: NamedDependency[CheckReadiness]) -> Response[ReadinessStatus]:
        report = await readiness()
        return Response(
            ReadinessStatus(status="ready" if report.ready else "not_ready", checks=report.checks),
            status_code=200 if report.ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain", include_in_schema=False)
    async def metrics(self, state: State) -> Response[bytes]:
        metrics: Metrics = state.metrics
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @get("/openapi.json", include_in_schema=False, media_type=MediaType.JSON)
    async def openapi_json(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        schema: dict[str, Any] = request.app.openapi_schema.to_schema()
        return schema
