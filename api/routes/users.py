"""/v1/users, /v1/graph, /v1/jobs and /v1/history."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from memsvc.api import problems
from memsvc.api.deps import ReadTenant, Service, WriteTenant
from memsvc.schemas import (
    GraphResponse,
    HistoryPage,
    JobList,
    JobOut,
    JobStatus,
    Prose,
    ScopeId,
    Text,
    UserList,
)

router = APIRouter(prefix="/v1", tags=["users"], responses=problems.responses(401, 403, 422, 503))


@router.get("/users", response_model=UserList)
def list_users(
    service: Service,
    tenant: ReadTenant,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Text | None = None,
) -> UserList:
    """The tenant's user ids that have memories, in id order, with their memory counts."""
    return service.users(tenant, limit=limit, cursor=cursor)


@router.get("/history", response_model=HistoryPage, tags=["memories"])
def user_history(
    service: Service,
    tenant: ReadTenant,
    user_id: Annotated[ScopeId, Query(min_length=1, max_length=255)],
    run_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Text | None = None,
) -> HistoryPage:
    """A user's history events across memories, newest first; `run_id`: one consolidation run's."""
    return service.user_history(tenant, user_id, run_id=run_id, limit=limit, cursor=cursor)


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
    # NFC as stored entity names are, so a decomposed "Zürich" finds the entity.
    entity: Annotated[Prose | None, Query(min_length=1, max_length=255)] = None,
    depth: Annotated[int, Query(ge=0, le=3)] = 1,
) -> GraphResponse:
    return service.graph(tenant, user_id, entity=entity, depth=depth)


@router.get("/jobs", response_model=JobList, tags=["jobs"])
def list_jobs(
    service: Service,
    tenant: ReadTenant,
    user_id: Annotated[ScopeId | None, Query(min_length=1, max_length=255)] = None,
    status: JobStatus | None = None,
    kind: Literal["ingest", "consolidate"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Text | None = None,
) -> JobList:
    """The tenant's jobs, newest first (consolidation runs are jobs of kind `consolidate`)."""
    return service.jobs(tenant, user_id=user_id, status=status, kind=kind, limit=limit, cursor=cursor)


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], responses=problems.responses(404))
def get_job(job_id: uuid.UUID, service: Service, tenant: ReadTenant) -> JobOut:
    return service.job(tenant, job_id)
