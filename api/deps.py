"""Request dependencies: the service and the calling tenant, with the scope a route needs.

Every route that reaches tenant data takes one of `ReadTenant`, `WriteTenant` or `AdminTenant`:
a valid key without that scope gets 403, no key or a revoked one 401.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from memsvc.errors import Forbidden, Unauthorized
from memsvc.schemas import KeyScope
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


def requires(scope: KeyScope) -> Callable[[TenantContext], TenantContext]:
    """A dependency: the calling tenant, if its key has `scope` (`admin` has every scope)."""

    def check(tenant: Annotated[TenantContext, Depends(get_tenant)]) -> TenantContext:
        if not tenant.allows(scope):
            raise Forbidden(f"this API key lacks the {scope!r} scope", scope=scope)
        return tenant

    check.__name__ = f"requires_{scope}"
    return check


Service = Annotated[MemoryService, Depends(get_service)]
ReadTenant = Annotated[TenantContext, Depends(requires("read"))]
WriteTenant = Annotated[TenantContext, Depends(requires("write"))]
AdminTenant = Annotated[TenantContext, Depends(requires("admin"))]
