"""/v1/users, /v1/graph and /v1/jobs."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api import problems
from api.deps import ReadTenant, Service, WriteTenant
from memsvc.schemas import GraphResponse, JobOut, ScopeId, Text

router = APIRouter(prefix="/v1", tags=["users"], responses=problems.responses(401, 403, 422, 503))


# `:path`, so a user id with `/` (sent as %2F, which the server decodes before routing) is one id.
@router.delete("/users/{user_id:path}", status_code=204)
def delete_user(
    user_id: Annotated[ScopeId, Path(min_length=1, max_length=255)], service: Service, tenant: WriteTenant
) -> Response:
    """Erase every memory, entity, relation, provenance link, history event and job of this user,
    in this tenant only."""
    service.delete_user(tenant, user_id)
    return Response(status_code=204)


@router.get("/graph", response_model=GraphResponse, tags=["graph"], responses=problems.responses(404))
def get_graph(
    service: Service,
    tenant: ReadTenant,
    user_id: Annotated[ScopeId, Query(min_length=1, max_length=255)],
    entity: Annotated[Text | None, Query(min_length=1, max_length=255)] = None,
    depth: Annotated[int, Query(ge=0, le=3)] = 1,
) -> GraphResponse:
    return service.graph(tenant, user_id, entity=entity, depth=depth)


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], responses=problems.responses(404))
def get_job(job_id: uuid.UUID, service: Service, tenant: ReadTenant) -> JobOut:
    return service.job(tenant, job_id)
