"""Backfilling passages for messages stored without them: the same passages ingest makes,
idempotent, resumable after a stop, closed with a closed turn, scoped to a user (real PostgreSQL,
real embedding model), and the CLI command that runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from memsvc.extraction import RulesExtractor
from memsvc.extraction.passages import PassageConfig
from memsvc.ingest import Ingestor
from memsvc.models import HistoryEvent, Memory, MemorySource
from memsvc.passages_store import backfill_passages
from memsvc.schemas import AddRequest, Message, SearchRequest
from memsvc.tenants import TenantContext, get_or_create_tenant
from tests.integration.test_passages import ANSWER, DENVER

START = datetime(2024, 3, 15, 9, tzinfo=UTC)
NONE = PassageConfig(max_words=100_000)  # how messages were stored before passages existed


def _store(
    database, embedder, ctx, user: str, texts: list[str], config: PassageConfig = NONE, first: int = 0
) -> None:  # type: ignore[no-untyped-def]
    request = AddRequest(
        user_id=user,
        messages=[
            Message(
                role="user", name="Ann", content=t, id=f"m{i}", created_at=START + timedelta(days=150 * i)
            )
            for i, t in enumerate(texts, first)
        ],
    )
    with database.session() as session:
        Ingestor(embedder, RulesExtractor(), config).ingest(session, ctx.tenant_id, request, START, "test")


def _passages(database, ctx, user: str) -> list[Memory]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return list(
            session.execute(
                select(Memory)
                .where(Memory.tenant_id == ctx.tenant_id, Memory.user_id == user, Memory.kind == "passage")
                .order_by(Memory.content)
            ).scalars()
        )


def test_backfill_stores_what_ingest_would_have_and_only_once(database, embedder, service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    old, new, other = (f"bf-{uuid.uuid4().hex[:6]}" for _ in range(3))
    texts = [ANSWER, "Thanks, that helps.", DENVER]
    _store(database, embedder, ctx, old, texts)
    _store(database, embedder, ctx, other, texts)
    _store(database, embedder, ctx, new, texts, PassageConfig())  # stored as ingest does today
    assert not _passages(database, ctx, old)
    expected = _passages(database, ctx, new)
    assert len(expected) >= 4

    seen: list[int] = []
    report = backfill_passages(
        database, embedder, tenant_id=ctx.tenant_id, user_id=old, on_total=seen.append, on_batch=seen.append
    )
    assert seen == [2, 2]  # two long messages to look at, one batch
    assert (report.messages_seen, report.messages_cut, report.passages) == (2, 2, len(expected))
    made = _passages(database, ctx, old)
    with database.session() as session:
        turn_of = {
            m.message_id: m.id
            for m in session.execute(
                select(Memory).where(
                    Memory.tenant_id == ctx.tenant_id, Memory.user_id == old, Memory.kind == "turn"
                )
            ).scalars()
        }
        provenance = {
            s.memory_id: (s.message_id, s.turn_id)
            for s in session.execute(
                select(MemorySource).where(MemorySource.memory_id.in_([m.id for m in made]))
            ).scalars()
        }
        events = session.execute(
            select(HistoryEvent.op).where(HistoryEvent.memory_id.in_([m.id for m in made]))
        ).scalars()
        assert list(events) == ["create"] * len(made)
    for got, want in zip(made, expected, strict=True):
        assert (got.content, got.role, got.speaker, got.event_at, got.position) == (
            want.content,
            want.role,
            want.speaker,
            want.event_at,
            want.position,
        )
        assert got.metadata_["passage"]["index"] == want.metadata_["passage"]["index"]
        message_id = provenance[got.id][0]
        assert provenance[got.id] == (message_id, turn_of[message_id])
        assert got.metadata_["passage"]["turn_id"] == str(turn_of[message_id])
        assert got.embedding is not None
    # Only that user: the other one is left as it was.
    assert not _passages(database, ctx, other)
    # Run again: nothing left to do.
    again = backfill_passages(database, embedder, tenant_id=ctx.tenant_id, user_id=old)
    assert (again.messages_seen, again.passages) == (0, 0)
    assert len(_passages(database, ctx, old)) == len(expected)
    # Search now answers with a passage of the long message, not the whole of it.
    hits = service.search(
        ctx, SearchRequest(query="How long does the light rail from the airport take?", user_id=old, limit=3)
    )
    assert hits[0].kind == "passage" and "light rail" in hits[0].content


def test_a_stopped_backfill_resumes_and_a_closed_turn_gets_closed_passages(
    database, embedder, tenant
) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"bf-{uuid.uuid4().hex[:6]}"
    # Denver is superseded by the move (at ingest), and its turn with it.
    _store(database, embedder, ctx, user, [DENVER])
    _store(database, embedder, ctx, user, ["I moved to Boston.", ANSWER], first=1)

    class Stop(Exception):
        pass

    def stop(_: int) -> None:
        raise Stop

    with pytest.raises(Stop):  # killed after its first batch committed
        backfill_passages(
            database, embedder, tenant_id=ctx.tenant_id, user_id=user, batch_size=1, on_batch=stop
        )
    first = _passages(database, ctx, user)
    assert first
    rest = backfill_passages(database, embedder, tenant_id=ctx.tenant_id, user_id=user, batch_size=1)
    assert rest.messages_seen == 1 and rest.passages > 0
    every = _passages(database, ctx, user)
    assert len(every) == len(first) + rest.passages
    with database.session() as session:
        turn = session.execute(
            select(Memory).where(
                Memory.tenant_id == ctx.tenant_id, Memory.user_id == user, Memory.message_id == "m0"
            )
        ).scalar_one()
    assert turn.status == "superseded"
    denver = [p for p in every if p.metadata_["passage"]["turn_id"] == str(turn.id)]
    assert denver and all(
        (p.status, p.valid_to, p.superseded_by) == ("superseded", turn.valid_to, turn.superseded_by)
        for p in denver
    )
    assert all(p.status == "active" for p in every if p not in denver)


def test_cli_backfills_a_tenants_users_with_progress(database_url: str, database, embedder) -> None:  # type: ignore[no-untyped-def]
    name = f"bf-{uuid.uuid4().hex[:8]}"
    with database.session() as session:
        ctx = TenantContext(tenant_id=get_or_create_tenant(session, name))
    _store(database, embedder, ctx, "u1", [ANSWER])
    _store(database, embedder, ctx, "u2", [DENVER])
    env = {**os.environ, "MEMSVC_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}

    def memsvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "memsvc.cli", "backfill-passages", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = memsvc("--tenant", name, "--user", "u1")
    assert done.returncode == 0, done.stderr
    assert "given passages: 1" in done.stdout and "backfill passages" in done.stderr  # the progress bar
    assert _passages(database, ctx, "u1") and not _passages(database, ctx, "u2")
    done = memsvc("--tenant", name)
    assert done.returncode == 0, done.stderr
    assert "long messages without passages: 1;" in done.stdout
    assert _passages(database, ctx, "u2")
    assert memsvc("--user", "u1").returncode != 0  # a user id needs its tenant
