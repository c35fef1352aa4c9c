"""/v1/search and /v1/context: the read path."""

from __future__ import annotations

from fastapi import APIRouter

from memsvc.api import problems
from memsvc.api.deps import ReadTenant, Service
from memsvc.schemas import ContextRequest, ContextResponse, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"], responses=problems.responses(400, 401, 403, 422, 503))


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, service: Service, tenant: ReadTenant) -> SearchResponse:
    """Memories that answer `query`, best first, each with the message ids it came from."""
    return SearchResponse(results=service.search(tenant, body))


@router.post("/context", response_model=ContextResponse)
def context(body: ContextRequest, service: Service, tenant: ReadTenant) -> ContextResponse:
    """A ready block for an LLM prompt, within `max_tokens`."""
    return service.context(tenant, body)
