"""`memsvc keys create|list|revoke|rotate` as an operator runs them, against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from memsvc.errors import Unauthorized


def _memsvc(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMSVC_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "memsvc.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _create(database, tenant: str, name: str = "", scopes: tuple[str, ...] = ("read", "write")) -> str:  # type: ignore[no-untyped-def]
    from memsvc.tenants import create_api_key

    with database.session() as session:
        return create_api_key(session, tenant, name, scopes)


def test_keys_create_with_scopes_then_list(database_url: str, database, service) -> None:  # type: ignore[no-untyped-def]
    tenant = f"cli-keys-{uuid.uuid4().hex[:8]}"
    made = _memsvc(database_url, "keys", "create", "--tenant", tenant, "--name", "ops", "--scope", "admin")
    assert made.returncode == 0, made.stderr
    admin = made.stdout.strip()
    made = _memsvc(
        database_url,
        "keys",
        "create",
        "--tenant",
        tenant,
        "--name",
        "etl",
        "--scope",
        "write",
        "--scope",
        "read",
    )
    assert made.returncode == 0, made.stderr
    writer = made.stdout.strip()
    reader = _create(database, tenant, "dashboard", ("read",))
    assert service.authenticate(admin).scopes == {"read", "write", "admin"}
    assert service.authenticate(writer).scopes == {"read", "write"}

    listed = _memsvc(database_url, "keys", "list", "--tenant", tenant)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "PREFIX", "SCOPES", "CREATED", "LAST", "USED", "REVOKED"]
    by_name = {row.split()[1]: row.split() for row in rows}
    assert by_name.keys() == {"ops", "etl", "dashboard"}
    assert by_name["ops"][3] == "read,write,admin" and by_name["etl"][3] == "read,write"
    assert by_name["dashboard"][:4] == [
        str(service.authenticate(reader).key_id),
        "dashboard",
        reader[:12],
        "read",
    ]
    assert by_name["dashboard"][-1] == "-"  # not revoked
    # Never a secret: only the prefix of each key.
    assert not any(key in listed.stdout for key in (admin, writer, reader))

    bad = _memsvc(database_url, "keys", "create", "--tenant", tenant, "--scope", "root")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
    missing = _memsvc(database_url, "keys", "list", "--tenant", f"no-such-{uuid.uuid4().hex[:8]}")
    assert missing.returncode == 2 and "no tenant named" in missing.stderr


def test_keys_revoke_by_id_prefix_or_key(database_url: str, database, service) -> None:  # type: ignore[no-untyped-def]
    tenant = f"cli-revoke-{uuid.uuid4().hex[:8]}"
    keys = [_create(database, tenant) for _ in range(4)]
    ids = [service.authenticate(k).key_id for k in keys]
    targets = [[str(ids[0])], [keys[1][:12], "--tenant", tenant], [keys[2]]]
    for key, key_id, target in zip(keys[:3], ids[:3], targets, strict=True):
        done = _memsvc(database_url, "keys", "revoke", *target)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"revoked {key[:12]} ({key_id})"
        with pytest.raises(Unauthorized):
            service.authenticate(key)
    assert service.authenticate(keys[3]).key_id == ids[3]
    listed = _memsvc(database_url, "keys", "list", "--tenant", tenant).stdout
    revoked = {line.split()[0]: line.split()[-1] != "-" for line in listed.splitlines()[1:]}
    assert revoked == {str(i): n < 3 for n, i in enumerate(ids)}


def test_keys_revoke_unknown_or_elsewhere(database_url: str, database, service) -> None:  # type: ignore[no-untyped-def]
    key = _create(database, f"cli-revoke-{uuid.uuid4().hex[:8]}")
    other = f"cli-other-{uuid.uuid4().hex[:8]}"
    _create(database, other)
    elsewhere = _memsvc(database_url, "keys", "revoke", key[:12], "--tenant", other)
    assert elsewhere.returncode == 2 and "no API key" in elsewhere.stderr
    unknown = _memsvc(database_url, "keys", "revoke", str(uuid.uuid4()))
    assert unknown.returncode == 2 and "no API key" in unknown.stderr
    assert service.authenticate(key).tenant_id


def test_keys_rotate(database_url: str, database, service) -> None:  # type: ignore[no-untyped-def]
    old = _create(database, f"cli-rotate-{uuid.uuid4().hex[:8]}", "etl", ("write",))
    done = _memsvc(database_url, "keys", "rotate", old[:12])
    assert done.returncode == 0, done.stderr
    new = done.stdout.strip()
    assert new.startswith("msk_") and new != old
    assert service.authenticate(new).scopes == {"write"}
    with pytest.raises(Unauthorized):
        service.authenticate(old)


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "create", "--tenant", ""),
        ("keys", "create", "--tenant", "   "),
        ("keys", "list", "--tenant", "\t"),
        ("consolidate", "--tenant", "t", "--user", ""),
    ],
)
def test_a_blank_tenant_or_user_name_is_refused(database_url: str, database, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from memsvc.models import Tenant

    with database.session() as session:
        before = session.execute(select(func.count()).select_from(Tenant)).scalar_one()
    done = _memsvc(database_url, *args)
    assert done.returncode == 2 and "a name with something printable in it" in done.stderr, done.stderr
    with database.session() as session:
        assert session.execute(select(func.count()).select_from(Tenant)).scalar_one() == before
