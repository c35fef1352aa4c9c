"""The FastAPI application: routes, problem+json errors, metrics, and the queue it hands jobs to."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol
from uuid import UUID

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memsvc import __version__, logs
from memsvc.api import problems
from memsvc.api.routes import consolidation, docs, health, keys, memories, search, ui, users
from memsvc.config import Settings
from memsvc.metrics import HTTP_REQUESTS, HTTP_SECONDS
from memsvc.schemas import MAX_JSON_BYTES, JobOut
from memsvc.service import MemoryService
from memsvc.tenants import TenantContext

log = logging.getLogger("memsvc.api")


class JobQueue(Protocol):
    """What the API needs of the job queue (see `workers.queue`)."""

    def defer_ingest(self, job_id: UUID, user: tuple[UUID, str] | None = None) -> None: ...

    async def wait_async(self, ctx: TenantContext, job_id: UUID) -> JobOut: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# Bytes one character may take in a JSON body: an emoji written as an escaped surrogate pair
# ("\ud83d\ude00", as Python's `json` and `requests` send it by default) takes 12.
JSON_BYTES_PER_CHARACTER = 12


def largest_body(settings: Settings) -> int:
    """The most bytes a valid request can hold, written compactly but every character escaped: an
    add of the most messages, each of the most characters, with room for each message's name and
    id, and for the add's metadata (at most 64 KiB as compact UTF-8 JSON, three times that escaped)."""
    per_message = (settings.max_content_chars + 2 * 255) * JSON_BYTES_PER_CHARACTER + 1024
    return settings.max_messages_per_request * per_message + 3 * MAX_JSON_BYTES + 2**16


class BodyLimit:
    """A body larger than any valid request is a 413: one declared so before a byte of it is read
    (it was read, parsed and then refused: a 100 MB query held ~500 MB of the server's memory),
    one sent without a length (chunked) as soon as it passes the limit, so that neither is held
    whole."""

    def __init__(self, app: ASGIApp, service: MemoryService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = largest_body(self.service.settings)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is None:
            # No length given: read the body here, up to the limit, and hand it on whole.
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    await self._refuse(
                        f"the body passed {limit} bytes, the most a request may hold", scope, send
                    )
                    return
                if not message.get("more_body", False):
                    break
            receive = _replay(b"".join(chunks), receive)
        elif declared.isdigit() and int(declared) > limit:
            await self._refuse(
                f"the body is {int(declared)} bytes; a request may hold at most {limit}", scope, send
            )
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(detail: str, scope: Scope, send: Send) -> None:
        answer = problems.problem(413, "payload too large", detail, code="payload_too_large")

        async def nothing_more() -> Message:
            return {"type": "http.disconnect"}

        await answer(scope, nothing_more, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` as the whole request, then whatever the connection says."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


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
        version=__version__,
        docs_url=None,  # api/routes/docs.py serves it with the assets shipped in the package
        redoc_url=None,
        summary="Long-term memory for LLM agents on PostgreSQL + pgvector",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.queue = queue
    problems.install(app)
    app.add_middleware(BodyLimit, service=service)
    for module in (memories, search, users, keys, health, ui, consolidation, docs):
        app.include_router(module.router)

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """A request id on the response and on every log line of the request, one access-log line,
        and the request's latency and status in /metrics."""
        given = request.headers.get("x-request-id", "")[:64]
        rid = given if given and given.isprintable() else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as exc:  # answered here, so that the connection stays open
            # Past this point Starlette would answer the 500 and re-raise, and the server would
            # close the client's keep-alive connection under it.
            response = problems.internal_error(exc)
        finally:
            logs.request_id.reset(token)
        elapsed = time.perf_counter() - started
        route = getattr(request.scope.get("route"), "path", "unmatched")
        HTTP_SECONDS.labels(request.method, route).observe(elapsed)
        HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        response.headers["X-Request-ID"] = rid
        log.info(
            "%s %s %d",
            request.method,
            route,
            response.status_code,
            extra={
                "request_id": rid,
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "ms": round(elapsed * 1000, 2),
            },
        )
        return response

    return app
