"""/v1/memories: add, list, get, update, delete, history."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from memsvc.api import problems
from memsvc.api.deps import ReadTenant, Service, WriteTenant
from memsvc.errors import InvalidInput
from memsvc.schemas import (
    AddRequest,
    AddResponse,
    AddResult,
    HistoryResponse,
    MemoryList,
    MemoryOut,
    ScopeId,
    Text,
    UpdateRequest,
    UtcDatetime,
)

router = APIRouter(prefix="/v1/memories", tags=["memories"], responses=problems.responses(401, 403, 422, 503))


@router.post(
    "",
    status_code=202,
    response_model=AddResponse,
    responses={
        201: {"model": AddResponse, "description": "ingested (with wait: true)"},
        **problems.responses(400, 429),
    },
)
async def add_memories(
    body: AddRequest, service: Service, tenant: WriteTenant, request: Request
) -> JSONResponse:
    """Accept a conversation batch for ingest; with `wait: true`, answer once it is stored."""
    queue = request.app.state.queue

    def submit() -> uuid.UUID:
        job_id = service.submit_ingest(tenant, body)
        queue.defer_ingest(job_id, (tenant.tenant_id, body.user_id))  # one user's adds apply in order
        return job_id

    job_id = await run_in_threadpool(submit)
    if not body.wait:
        return JSONResponse(
            AddResponse(job_id=job_id, status="queued").model_dump(mode="json"), status_code=202
        )
    # Waits on the event loop: no thread is held while the job runs.
    job = await queue.wait_async(tenant, job_id)
    if job.status == "succeeded":
        # The agent's next call is a search: this process's cache of the user takes the write now.
        await run_in_threadpool(service.catch_up, tenant, body.user_id)
    result = AddResult.model_validate(job.result) if job.result else None
    response = AddResponse(job_id=job_id, status=job.status, result=result, error=job.error)
    return JSONResponse(
        response.model_dump(mode="json"), status_code=201 if job.status == "succeeded" else 202
    )


@router.get("", response_model=MemoryList)
def list_memories(
    service: Service,
    tenant: ReadTenant,
    user_id: Annotated[ScopeId, Query(min_length=1, max_length=255)],
    type: Annotated[Literal["episodic", "semantic"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Text | None = None,
    status: Annotated[Literal["active", "superseded", "archived"] | None, Query()] = None,
    since: Annotated[UtcDatetime | None, Query(description="happened at or after (event time)")] = None,
    until: Annotated[UtcDatetime | None, Query(description="happened before (event time)")] = None,
    session_id: Annotated[
        ScopeId | None, Query(min_length=1, max_length=255, description="only this session's memories")
    ] = None,
) -> MemoryList:
    """A user's memories, newest stored first; filter by type, status, session and when they
    happened."""
    if since is not None and until is not None and since > until:
        # Swapped bounds would answer an empty page, which reads as "nothing happened then".
        raise InvalidInput(
            "since is later than until: [since, until) holds nothing",
            errors=[{"loc": ["query", "until"], "msg": "must not be before since", "type": "value_error"}],
        )
    return service.list(
        tenant,
        user_id,
        memory_type=type,
        limit=limit,
        cursor=cursor,
        status=status,
        since=since,
        until=until,
        session_id=session_id,
    )


@router.get("/{memory_id}", response_model=MemoryOut, responses=problems.responses(404))
def get_memory(memory_id: uuid.UUID, service: Service, tenant: ReadTenant) -> MemoryOut:
    return service.get(tenant, memory_id)


@router.patch("/{memory_id}", response_model=MemoryOut, responses=problems.responses(400, 404))
def update_memory(
    memory_id: uuid.UUID, body: UpdateRequest, service: Service, tenant: WriteTenant
) -> MemoryOut:
    return service.update(tenant, memory_id, body)


@router.delete("/{memory_id}", status_code=204, responses=problems.responses(404))
def delete_memory(memory_id: uuid.UUID, service: Service, tenant: WriteTenant) -> Response:
    service.delete(tenant, memory_id)
    return Response(status_code=204)


@router.get("/{memory_id}/history", response_model=HistoryResponse, responses=problems.responses(404))
def memory_history(memory_id: uuid.UUID, service: Service, tenant: ReadTenant) -> HistoryResponse:
    return HistoryResponse(events=service.history(tenant, memory_id))
