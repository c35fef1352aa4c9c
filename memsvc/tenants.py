"""Tenants and their API keys. Keys are shown once and stored as SHA-256 only.

A key has scopes among `read`, `write` and `admin` (`admin` implies the other two); `write` does
not imply `read`, so an ingest-only pipeline can hold a key that reads nothing back. Revoking sets
`revoked_at` to now; rotating makes a key with the same name and scopes and sets the old key's
`revoked_at` to now plus an optional grace period, so a key works while `revoked_at` is unset or
still ahead.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import get_args

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from memsvc.errors import Conflict, InvalidInput, NotFound, Unauthorized
from memsvc.models import ApiKey, Tenant
from memsvc.schemas import ApiKeyCreated, ApiKeyOut, KeyScope

KEY_PREFIX = "msk_"
SCOPES: tuple[KeyScope, ...] = get_args(KeyScope)
DEFAULT_SCOPES: tuple[KeyScope, ...] = ("read", "write")
MAX_GRACE_SECONDS = 7 * 24 * 3600
# `last_used_at` is written at most this often per key: a write on every request would tax reads.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who is calling: every store operation is scoped by `tenant_id`.

    Contexts made in-process (the CLI's import, workers) have every scope; those from a key have
    the key's.
    """

    tenant_id: uuid.UUID
    key_id: uuid.UUID | None = None
    scopes: frozenset[str] = frozenset(SCOPES)

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}" if self.key_id else "system"

    def allows(self, scope: KeyScope) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def normalize_scopes(scopes: Iterable[str]) -> list[KeyScope]:
    """The scopes validated and in canonical order; `admin` brings `read` and `write` with it."""
    given = set(scopes)
    unknown = given - set(SCOPES)
    if unknown:
        raise InvalidInput(f"unknown scope(s) {', '.join(sorted(unknown))}: choose among {', '.join(SCOPES)}")
    if not given:
        raise InvalidInput("a key needs at least one scope")
    if "admin" in given:
        given = set(SCOPES)
    return [s for s in SCOPES if s in given]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> uuid.UUID:
    """The id of tenant `name`, creating it if needed."""
    stmt = insert(Tenant).values(id=uuid.uuid4(), name=name).on_conflict_do_nothing(index_elements=["name"])
    session.execute(stmt)
    return session.execute(select(Tenant.id).where(Tenant.name == name)).scalar_one()


def tenant_id_of(session: Session, name: str) -> uuid.UUID:
    """The id of the existing tenant `name`, or `NotFound`."""
    tenant_id = session.execute(select(Tenant.id).where(Tenant.name == name)).scalar_one_or_none()
    if tenant_id is None:
        raise NotFound(f"no tenant named {name!r}")
    return tenant_id


def _key_out(row: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=normalize_scopes(row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def issue_api_key(
    session: Session, tenant_id: uuid.UUID, name: str = "", scopes: Iterable[str] = DEFAULT_SCOPES
) -> ApiKeyCreated:
    """A new key of tenant `tenant_id`; its plaintext is in the answer and nowhere else, ever."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=name,
        prefix=key[:12],
        key_hash=hash_key(key),
        scopes=normalize_scopes(scopes),
    )
    session.add(row)
    session.flush()
    return ApiKeyCreated(**_key_out(row).model_dump(), key=key)


def create_api_key(
    session: Session, tenant_name: str, key_name: str = "", scopes: Iterable[str] = DEFAULT_SCOPES
) -> str:
    """Create a key for `tenant_name` (and the tenant if new); return the plaintext key, shown only now."""
    tenant_id = get_or_create_tenant(session, tenant_name)
    return issue_api_key(session, tenant_id, key_name, scopes).key


def list_api_keys(session: Session, tenant_id: uuid.UUID) -> list[ApiKeyOut]:
    """Every key of the tenant, revoked ones included, oldest first."""
    rows = session.execute(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at, ApiKey.id)
    ).scalars()
    return [_key_out(row) for row in rows]


def _key_of_tenant(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    # Another tenant's key is as unknown as a missing one: nothing crosses tenants, not even existence.
    row = session.execute(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return row


def revoke_api_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKeyOut:
    """Stop key `key_id` now (also one in a rotation's grace period); revoking twice changes nothing."""
    row = _key_of_tenant(session, tenant_id, key_id)
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(revoked_at=func.least(func.coalesce(ApiKey.revoked_at, func.now()), func.now()))
    )
    session.refresh(row)
    return _key_out(row)


def rotate_api_key(
    session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID, grace_seconds: int = 0
) -> ApiKeyCreated:
    """A new key with the same name and scopes; the old one stops after `grace_seconds` (0: now)."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise InvalidInput(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}")
    row = _key_of_tenant(session, tenant_id, key_id)
    if row.revoked_at is not None:
        raise Conflict(f"API key {key_id} is revoked or already being rotated")
    new = issue_api_key(session, tenant_id, row.name, row.scopes)
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(revoked_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, grace_seconds))
    )
    return new


def find_api_key(
    session: Session, id_or_prefix: str, tenant_id: uuid.UUID | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """(tenant id, key id) of the one key named by its id, its prefix (or a start of it) or the
    whole key, for operators at the command line; within `tenant_id` when given."""
    value = id_or_prefix.strip()
    query = select(ApiKey.tenant_id, ApiKey.id)
    try:
        query = query.where(ApiKey.id == uuid.UUID(value))
    except ValueError:
        if len(value) > 12:
            query = query.where(ApiKey.key_hash == hash_key(value))
        elif value.startswith(KEY_PREFIX) and len(value) > len(KEY_PREFIX):
            query = query.where(ApiKey.prefix.startswith(value, autoescape=True))
        else:
            raise InvalidInput(
                f"{value!r} is neither a key id nor a key prefix like 'msk_AbCd1234'"
            ) from None
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    rows = session.execute(query.limit(2)).all()
    if not rows:
        raise NotFound(f"no API key {value!r}")
    if len(rows) > 1:
        raise InvalidInput(f"{value!r} names more than one key: give its id or a longer prefix")
    return rows[0].tenant_id, rows[0].id


def authenticate(session: Session, key: str) -> TenantContext:
    """The tenant a bearer key belongs to, with the key's scopes, or `Unauthorized`."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        raise Unauthorized("malformed API key")
    row = session.execute(
        select(ApiKey.id, ApiKey.tenant_id, ApiKey.scopes, ApiKey.last_used_at).where(
            ApiKey.key_hash == hash_key(key),
            or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > func.now()),
        )
    ).first()
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    if row.last_used_at is None or row.last_used_at < datetime.now(UTC) - LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=func.now()))
    return TenantContext(tenant_id=row.tenant_id, key_id=row.id, scopes=frozenset(row.scopes))


def has_any_key(session: Session) -> bool:
    return session.execute(select(ApiKey.id).limit(1)).first() is not None
