"""The FastAPI application: routes, problem+json errors, metrics, and the queue it hands jobs to."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol
from uuid import UUID

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram

from api import problems
from api.routes import health, keys, memories, search, users
from memsvc.schemas import JobOut
from memsvc.service import MemoryService
from memsvc.tenants import TenantContext

REQUESTS = Counter("memsvc_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("memsvc_http_request_seconds", "HTTP request latency", ["method", "route"])


class JobQueue(Protocol):
    """What the API needs of the job queue (see `workers.queue`)."""

    def defer_ingest(self, job_id: UUID) -> None: ...

    def wait(self, ctx: TenantContext, job_id: UUID) -> JobOut: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_app(service: MemoryService, queue: JobQueue) -> FastAPI:
    """Build the app around a ready service and queue (the CLI's `serve` wires both)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await queue.start()
        try:
            yield
        finally:
            await queue.stop()

    app = FastAPI(
        title="memsvc",
        version="1.0",
        summary="Long-term memory for LLM agents on PostgreSQL + pgvector",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.queue = queue
    problems.install(app)
    for module in (memories, search, users, keys, health):
        app.include_router(module.router)

    @app.middleware("http")
    async def _metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        return response

    return app
