"""Migrations upgrade and downgrade cleanly, on a database of their own."""

from __future__ import annotations

import psycopg

from memsvc import migrate
from memsvc.database import libpq_url
from memsvc.models import EMBEDDING_DIM


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    url = empty_database_url
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


def _keys_after_upgrade(url: str, revision: str, stored: list[tuple[str, str]]) -> dict[str, str]:
    """The `attribute` of each of Ann's facts (content, attribute) stored at `revision`, once the
    database is upgraded to the head."""
    migrate.upgrade(url, revision)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        tenant = conn.execute(
            "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 't') RETURNING id"
        ).fetchone()
        assert tenant is not None
        for content, attribute in stored:
            conn.execute(
                "INSERT INTO memories (id, tenant_id, user_id, type, kind, content, content_hash,"
                " event_at, embedding, subject, attribute, importance, confidence, access_count, pinned,"
                " status, metadata) VALUES (gen_random_uuid(), %s, 'u', 'semantic', 'fact', %s, md5(%s),"
                " now(), array_fill(0.1, ARRAY[%s])::halfvec, 'Ann', %s, 0.5, 0.9, 0, false, 'active', '{}')",
                (tenant[0], content, content, EMBEDDING_DIM, attribute),
            )
    migrate.upgrade(url)
    with psycopg.connect(libpq_url(url)) as conn:
        return dict(conn.execute("SELECT content, attribute FROM memories").fetchall())


def test_instructions_stored_before_0011_are_keyed_by_topic_however_named(
    empty_database_url: str,
) -> None:
    stored = [
        ("When Ann asks about my resume: always use emojis.", "instruction: my resume"),
        ("When Ann asks about anything: answer in Spanish.", "instruction: anything: language"),
        ("Ann lives in Boston", "residence"),
    ]
    assert _keys_after_upgrade(empty_database_url, "0010", stored) == {
        "When Ann asks about my resume: always use emojis.": "instruction: resum",
        "When Ann asks about anything: answer in Spanish.": "instruction: anything: language",
        "Ann lives in Boston": "residence",
    }


def test_instructions_for_every_request_stored_before_0012_are_keyed_by_what_they_shape(
    empty_database_url: str,
) -> None:
    stored = [
        (
            "When Ann asks about anything: always answer in bullet points.",
            "instruction: anything: answer bullet point",
        ),
        ("When Ann asks about anything: answer in Spanish.", "instruction: anything: language"),
        ("When Ann asks about anything: mention the weather.", "instruction: anything: mention weather"),
    ]
    assert _keys_after_upgrade(empty_database_url, "0011", stored) == {
        "When Ann asks about anything: always answer in bullet points.": "instruction: anything: format",
        "When Ann asks about anything: answer in Spanish.": "instruction: anything: language",
        "When Ann asks about anything: mention the weather.": "instruction: anything: mention weather",
    }
