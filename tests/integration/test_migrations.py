"""Migrations upgrade and downgrade cleanly, on a database of their own."""

from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url

from memsvc import migrate
from memsvc.database import libpq_url


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    name = "memsvc_migration_check"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)

    migrate.upgrade(url)
    tables = _tables(url)
    assert {
        "tenants",
        "api_keys",
        "memories",
        "memory_sources",
        "entities",
        "relations",
        "history",
        "jobs",
    } <= tables
    assert "procrastinate_jobs" in tables

    migrate.downgrade(url, "0001")
    assert "procrastinate_jobs" not in _tables(url)
    assert "memories" in _tables(url)

    migrate.downgrade(url, "base")
    assert _tables(url) == {"alembic_version"}
    with psycopg.connect(libpq_url(url)) as conn:
        functions = conn.execute(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'procrastinate%' OR proname LIKE 'memsvc%'"
        ).fetchall()
    assert functions == []

    migrate.upgrade(url)
    assert tables == _tables(url)
