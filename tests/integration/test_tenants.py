"""API keys on the real database: scopes, listing, revocation, rotation, lookup, and the migration
that gave keys made before scopes all of them."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from memsvc import migrate
from memsvc.database import libpq_url
from memsvc.errors import Conflict, InvalidInput, NotFound, Unauthorized
from memsvc.models import ApiKey
from memsvc.tenants import (
    TenantContext,
    authenticate,
    create_api_key,
    find_api_key,
    get_or_create_tenant,
    hash_key,
    issue_api_key,
    list_api_keys,
    normalize_scopes,
    revoke_api_key,
    rotate_api_key,
    tenant_id_of,
)


def _tenant(database) -> uuid.UUID:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return get_or_create_tenant(session, f"keys-{uuid.uuid4().hex[:12]}")


def _auth(database, key: str) -> TenantContext:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return authenticate(session, key)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["read"], ["read"]),
        (["write"], ["write"]),
        (["write", "read", "write"], ["read", "write"]),
        (["admin"], ["read", "write", "admin"]),
        (["admin", "read"], ["read", "write", "admin"]),
    ],
)
def test_normalize_scopes(given: list[str], expected: list[str]) -> None:
    assert normalize_scopes(given) == expected


@pytest.mark.parametrize("given", [[], ["root"], ["read", "READ"]])
def test_normalize_scopes_rejects(given: list[str]) -> None:
    with pytest.raises(InvalidInput):
        normalize_scopes(given)


def test_context_allows() -> None:
    tenant_id = uuid.uuid4()
    read = TenantContext(tenant_id, uuid.uuid4(), frozenset({"read"}))
    assert read.allows("read") and not read.allows("write") and not read.allows("admin")
    write = TenantContext(tenant_id, uuid.uuid4(), frozenset({"write"}))
    assert write.allows("write") and not write.allows("read")
    assert all(TenantContext(tenant_id, None, frozenset({"admin"})).allows(s) for s in ("read", "write"))
    # Contexts made in-process (CLI import, workers) may do everything.
    assert all(TenantContext(tenant_id).allows(s) for s in ("read", "write", "admin"))


def test_keys_carry_their_scopes_and_default_to_read_write(database) -> None:  # type: ignore[no-untyped-def]
    name = f"scoped-{uuid.uuid4().hex[:8]}"
    with database.session() as session:
        default = create_api_key(session, name, "app")
        reader = create_api_key(session, name, "dashboard", scopes=["read"])
        admin = create_api_key(session, name, "ops", scopes=["admin"])
    assert _auth(database, default).scopes == {"read", "write"}
    assert _auth(database, reader).scopes == {"read"}
    assert _auth(database, admin).scopes == {"read", "write", "admin"}
    tenant_ids = {_auth(database, k).tenant_id for k in (default, reader, admin)}
    assert len(tenant_ids) == 1


def test_list_shows_everything_but_the_secret(database) -> None:  # type: ignore[no-untyped-def]
    tenant_id, other = _tenant(database), _tenant(database)
    with database.session() as session:
        first = issue_api_key(session, tenant_id, "first", ["read"])
        second = issue_api_key(session, tenant_id, "second", ["admin"])
        issue_api_key(session, other, "not mine")
    with database.session() as session:
        keys = sorted(list_api_keys(session, tenant_id), key=lambda k: k.name)
    assert [(k.id, k.name, k.scopes) for k in keys] == [
        (first.id, "first", ["read"]),
        (second.id, "second", ["read", "write", "admin"]),
    ]
    assert keys[0].prefix == first.key[:12] and keys[0].created_at is not None
    assert keys[0].last_used_at is None and keys[0].revoked_at is None
    dumped = str([k.model_dump() for k in keys])
    assert first.key not in dumped and hash_key(first.key) not in dumped
    assert "key" not in keys[0].model_dump()

    _auth(database, first.key)
    with database.session() as session:
        used = next(k for k in list_api_keys(session, tenant_id) if k.id == first.id)
    assert used.last_used_at is not None


def test_revoke_is_immediate_and_stays_in_its_tenant(database) -> None:  # type: ignore[no-untyped-def]
    tenant_id, other = _tenant(database), _tenant(database)
    with database.session() as session:
        created = issue_api_key(session, tenant_id, "doomed")
    assert _auth(database, created.key).key_id == created.id

    with database.session() as session, pytest.raises(NotFound):
        revoke_api_key(session, other, created.id)
    assert _auth(database, created.key).key_id == created.id

    with database.session() as session:
        revoked = revoke_api_key(session, tenant_id, created.id)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthorized):
        _auth(database, created.key)
    with database.session() as session:
        again = revoke_api_key(session, tenant_id, created.id)
    assert again.revoked_at == revoked.revoked_at
    with database.session() as session, pytest.raises(NotFound):
        revoke_api_key(session, tenant_id, uuid.uuid4())


def test_rotate_now_and_with_grace(database) -> None:  # type: ignore[no-untyped-def]
    tenant_id = _tenant(database)
    with database.session() as session:
        old = issue_api_key(session, tenant_id, "worker", ["read", "write"])
    with database.session() as session:
        new = rotate_api_key(session, tenant_id, old.id)
    assert (new.name, new.scopes) == ("worker", ["read", "write"]) and new.key != old.key
    assert _auth(database, new.key).key_id == new.id
    with pytest.raises(Unauthorized):
        _auth(database, old.key)
    with database.session() as session, pytest.raises(Conflict):
        rotate_api_key(session, tenant_id, old.id)

    with database.session() as session:
        newer = rotate_api_key(session, tenant_id, new.id, grace_seconds=3600)
    # In its grace period the old key still works, and cannot be rotated a second time.
    assert _auth(database, new.key).key_id == new.id
    assert _auth(database, newer.key).key_id == newer.id
    with database.session() as session, pytest.raises(Conflict):
        rotate_api_key(session, tenant_id, new.id)
    # Revoking ends the grace period at once.
    with database.session() as session:
        revoke_api_key(session, tenant_id, new.id)
    with pytest.raises(Unauthorized):
        _auth(database, new.key)

    with database.session() as session, pytest.raises(InvalidInput):
        rotate_api_key(session, tenant_id, newer.id, grace_seconds=-1)
    with database.session() as session, pytest.raises(NotFound):
        rotate_api_key(session, _tenant(database), newer.id)


def test_grace_period_ends(database) -> None:  # type: ignore[no-untyped-def]
    tenant_id = _tenant(database)
    with database.session() as session:
        old = issue_api_key(session, tenant_id, "short")
        rotate_api_key(session, tenant_id, old.id, grace_seconds=1)
    assert _auth(database, old.key).key_id == old.id
    time.sleep(1.2)
    with pytest.raises(Unauthorized):
        _auth(database, old.key)


def test_find_by_id_prefix_or_key(database) -> None:  # type: ignore[no-untyped-def]
    tenant_id = _tenant(database)
    with database.session() as session:
        created = issue_api_key(session, tenant_id, "findme")
        by_id = find_api_key(session, str(created.id))
        by_prefix = find_api_key(session, created.prefix)
        by_key = find_api_key(session, created.key)
        within = find_api_key(session, created.prefix, tenant_id)
    assert by_id == by_prefix == by_key == within == (tenant_id, created.id)
    with database.session() as session:
        with pytest.raises(NotFound):
            find_api_key(session, created.prefix, _tenant(database))
        with pytest.raises(NotFound):
            find_api_key(session, str(uuid.uuid4()))
        with pytest.raises(InvalidInput):
            find_api_key(session, "abc")
        # "msk_" alone would name every key.
        with pytest.raises(InvalidInput):
            find_api_key(session, "msk_")


def test_tenant_id_of(database) -> None:  # type: ignore[no-untyped-def]
    name = f"named-{uuid.uuid4().hex[:12]}"
    with database.session() as session:
        tenant_id = get_or_create_tenant(session, name)
    with database.session() as session:
        assert tenant_id_of(session, name) == tenant_id
        with pytest.raises(NotFound):
            tenant_id_of(session, f"missing-{uuid.uuid4().hex}")


def test_database_refuses_unknown_scopes(database) -> None:  # type: ignore[no-untyped-def]
    tenant_id = _tenant(database)
    with database.session() as session:
        created = issue_api_key(session, tenant_id)
    for bad in (["root"], []):
        with pytest.raises(IntegrityError), database.session() as session:
            session.execute(update(ApiKey).where(ApiKey.id == created.id).values(scopes=bad))


def test_keys_made_before_scopes_get_all_of_them(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url, "0002")
    tenant_id, key_id = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'old')", (tenant_id,))
        conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash) VALUES (%s, %s, '', 'old', 'h')",
            (key_id, tenant_id),
        )
    migrate.upgrade(url)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        scopes = conn.execute("SELECT scopes FROM api_keys WHERE id = %s", (key_id,)).fetchone()
        assert scopes == (["read", "write", "admin"],)
        # No default for new rows: whoever makes a key says what it may do.
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash) VALUES (%s, %s, '', 'x', 'y')",
                (uuid.uuid4(), tenant_id),
            )
    migrate.downgrade(url, "0002")
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'api_keys'"
        ).fetchall()
        assert ("scopes",) not in columns
