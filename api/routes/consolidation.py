"""/v1/consolidate, and bringing an archived memory back."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from memsvc.api import problems
from memsvc.api.deps import Service, WriteTenant
from memsvc.schemas import ConsolidateRequest, JobOut, MemoryOut

router = APIRouter(prefix="/v1", tags=["consolidation"], responses=problems.responses(401, 403, 422, 503))


@router.post("/consolidate", status_code=202, response_model=JobOut, responses=problems.responses(400, 404))
def consolidate(
    service: Service, tenant: WriteTenant, request: Request, body: ConsolidateRequest | None = None
) -> JSONResponse:
    """Queue a consolidation run (supersede, merge, summarise, forget) of one user, or of every user
    of the tenant (no body, or no `user_id`); `GET /v1/jobs/{job_id}` follows it, and its result is
    the run's report. A user with no memories is a 404."""
    body = body or ConsolidateRequest()
    job_id = service.submit_consolidate(tenant, body)
    # The job as `GET /v1/jobs/{job_id}` answers it (its user, none for the tenant's run; its times).
    queued = service.job(tenant, job_id)
    request.app.state.queue.defer_consolidate(job_id)
    return JSONResponse(queued.model_dump(mode="json"), status_code=202)


@router.post(
    "/memories/{memory_id}/restore",
    response_model=MemoryOut,
    tags=["memories"],
    responses=problems.responses(404),
)
def restore_memory(memory_id: uuid.UUID, service: Service, tenant: WriteTenant) -> MemoryOut:
    """Bring an archived memory back into search (a restore counts as a use of it)."""
    return service.restore(tenant, memory_id)
