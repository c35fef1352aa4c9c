"""Tenants and their API keys. Keys are shown once and stored as SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from memsvc.errors import Unauthorized
from memsvc.models import ApiKey, Tenant

KEY_PREFIX = "msk_"


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who is calling: every store operation is scoped by `tenant_id`."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID | None = None

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}" if self.key_id else "system"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> uuid.UUID:
    """The id of tenant `name`, creating it if needed."""
    stmt = insert(Tenant).values(id=uuid.uuid4(), name=name).on_conflict_do_nothing(index_elements=["name"])
    session.execute(stmt)
    return session.execute(select(Tenant.id).where(Tenant.name == name)).scalar_one()


def create_api_key(session: Session, tenant_name: str, key_name: str = "") -> str:
    """Create a key for `tenant_name` (and the tenant if new); return the plaintext key, shown only now."""
    tenant_id = get_or_create_tenant(session, tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant_id, name=key_name, prefix=key[:12], key_hash=hash_key(key)))
    return key


def authenticate(session: Session, key: str) -> TenantContext:
    """The tenant a bearer key belongs to, or `Unauthorized`."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        raise Unauthorized("malformed API key")
    row = session.execute(
        select(ApiKey.id, ApiKey.tenant_id).where(
            ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return TenantContext(tenant_id=row.tenant_id, key_id=row.id)


def has_any_key(session: Session) -> bool:
    return session.execute(select(ApiKey.id).limit(1)).first() is not None
