"""/v1/keys: the caller tenant's API keys (admin scope). Another tenant's key is a 404."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from memsvc.api import problems
from memsvc.api.deps import AdminTenant, Service
from memsvc.schemas import ApiKeyCreated, ApiKeyList, CreateKeyRequest, RotateKeyRequest

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=problems.responses(401, 403, 422, 503))


@router.get("", response_model=ApiKeyList)
def list_keys(service: Service, tenant: AdminTenant) -> ApiKeyList:
    """Every key of the tenant, revoked ones too; never a secret or a hash."""
    return ApiKeyList(keys=service.list_keys(tenant))


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=problems.responses(400))
def create_key(service: Service, tenant: AdminTenant, body: CreateKeyRequest | None = None) -> ApiKeyCreated:
    """A new key; its secret (`key`) is in this answer only. Every field is optional, and so is
    the body (`curl -X POST` sends none)."""
    return service.create_key(tenant, body or CreateKeyRequest())


@router.post(
    "/{key_id}/rotate",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=problems.responses(400, 404, 409),
)
def rotate_key(
    key_id: uuid.UUID,
    service: Service,
    tenant: AdminTenant,
    body: RotateKeyRequest | None = None,
) -> ApiKeyCreated:
    """A new key with the same name and scopes; the old one stops after `grace_seconds` (0, or no
    body: now)."""
    return service.rotate_key(tenant, key_id, grace_seconds=body.grace_seconds if body else 0)


@router.delete("/{key_id}", status_code=204, responses=problems.responses(404))
def revoke_key(key_id: uuid.UUID, service: Service, tenant: AdminTenant) -> Response:
    """Revoke at once: the key gets 401 from its next request on."""
    service.revoke_key(tenant, key_id)
    return Response(status_code=204)
