"""Request dependencies: the service and the calling tenant, with the scope a route needs.

Every route that reaches tenant data takes one of `ReadTenant`, `WriteTenant` or `AdminTenant`:
a valid key without that scope gets 403, no key or a revoked one 401.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from memsvc.errors import Forbidden, MemsvcError, Unauthorized
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


def _with_scope(tenant: TenantContext, scope: KeyScope) -> TenantContext:
    if not tenant.allows(scope):
        raise Forbidden(f"this API key lacks the {scope!r} scope", scope=scope)
    return tenant


# Each `requires` dependency and the scope it checks, for `refusal`.
_SCOPE_CHECKS: dict[Callable[..., Any], KeyScope] = {}


def requires(scope: KeyScope) -> Callable[[TenantContext], TenantContext]:
    """A dependency: the calling tenant, if its key has `scope` (`admin` has every scope)."""

    def check(tenant: Annotated[TenantContext, Depends(get_tenant)]) -> TenantContext:
        return _with_scope(tenant, scope)

    check.__name__ = f"requires_{scope}"
    _SCOPE_CHECKS[check] = scope
    return check


def _required_scope(dependant: Any) -> KeyScope | None:
    """The scope a route's dependencies check (see `requires`), if any."""
    for dependency in getattr(dependant, "dependencies", ()):
        scope = _SCOPE_CHECKS.get(dependency.call) or _required_scope(dependency)
        if scope is not None:
            return scope
    return None


async def refusal(request: Request) -> MemsvcError | None:
    """The 401 or 403 this request's route would answer, for an error found before its dependencies
    ran: FastAPI reads the JSON body first, and a caller without a valid key must learn that, not
    how its body failed to parse."""
    route = request.scope.get("route")
    scope = _required_scope(getattr(route, "dependant", None))
    if scope is None:
        return None
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("send 'Authorization: Bearer <api key>'")
        _with_scope(await run_in_threadpool(get_service(request).authenticate, key.strip()), scope)
    except MemsvcError as exc:  # also a database that is down: the 503 the route would give
        return exc
    return None


Service = Annotated[MemoryService, Depends(get_service)]
ReadTenant = Annotated[TenantContext, Depends(requires("read"))]
WriteTenant = Annotated[TenantContext, Depends(requires("write"))]
AdminTenant = Annotated[TenantContext, Depends(requires("admin"))]
