"""/v1/users, /v1/graph and /v1/jobs."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.deps import ReadTenant, Service, WriteTenant
from memsvc.schemas import GraphResponse, JobOut

router = APIRouter(prefix="/v1", tags=["users"])


@router.delete("/users/{user_id}", status_code=204)
def delete_user(
    user_id: Annotated[str, Path(min_length=1, max_length=255)], service: Service, tenant: WriteTenant
) -> Response:
    """Erase every memory, entity, relation, provenance link, history event and job of this user,
    in this tenant only."""
    service.delete_user(tenant, user_id)
    return Response(status_code=204)


@router.get("/graph", response_model=GraphResponse, tags=["graph"])
def get_graph(
    service: Service,
    tenant: ReadTenant,
    user_id: Annotated[str, Query(min_length=1, max_length=255)],
    entity: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    depth: Annotated[int, Query(ge=0, le=3)] = 1,
) -> GraphResponse:
    return service.graph(tenant, user_id, entity=entity, depth=depth)


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
def get_job(job_id: uuid.UUID, service: Service, tenant: ReadTenant) -> JobOut:
    return service.job(tenant, job_id)
