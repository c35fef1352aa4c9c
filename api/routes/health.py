"""Liveness, readiness and Prometheus metrics (no auth: for orchestrators and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from memsvc import metrics
from memsvc.api.deps import Service

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down: the body names it"}})
def readyz(service: Service) -> JSONResponse:
    """200 when the database answers, the model embeds and a worker is alive and not stuck."""
    checks = service.ready()
    ok = all(v == "ok" for v in checks.values())
    headers = None if ok else {"Retry-After": "2"}
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503, headers=headers
    )


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus_metrics(service: Service) -> Response:
    collector = metrics.QueueCollector(
        service.queue_health, lambda: service.index.size if service.index is not None else None
    )
    return Response(metrics.render(collector), media_type=CONTENT_TYPE_LATEST)
