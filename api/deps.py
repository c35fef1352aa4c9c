"""Request dependencies: the service and the calling tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from memsvc.errors import Unauthorized
from memsvc.service import MemoryService
from memsvc.tenants import TenantContext

_bearer = HTTPBearer(auto_error=False, description="a memsvc API key: `memsvc keys create --tenant NAME`")


def get_service(request: Request) -> MemoryService:
    service: MemoryService = request.app.state.service
    return service


def get_tenant(
    service: Annotated[MemoryService, Depends(get_service)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantContext:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send 'Authorization: Bearer <api key>'")
    return service.authenticate(credentials.credentials)


Service = Annotated[MemoryService, Depends(get_service)]
Tenant = Annotated[TenantContext, Depends(get_tenant)]
