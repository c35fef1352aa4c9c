"""A long message and its passages are forgotten as one (real PostgreSQL, real embedding model):
a use of a passage is a use of its message; they are archived, restored and purged together, each
change a history event with the run's id; a passage whose message is gone is forgotten too."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from memsvc import consolidation_store
from memsvc.errors import InvalidInput
from memsvc.models import Memory
from memsvc.schemas import SearchRequest, UpdateRequest

from .test_passages_follow import PARAGRAPHS, T0, _chat, _ingest, _message, _ops, _rows


def _forgotten(service, ctx, user: str, run: uuid.UUID) -> tuple[Memory, list[Memory], datetime]:  # type: ignore[no-untyped-def]
    """The chat, then the user back 600 days later (their clock) and a run: the unused exchange is
    forgotten. Returns the long message's turn, its passages and the run's time."""
    turn, parts = _chat(service, ctx, user)
    later = T0 + timedelta(days=600)
    _ingest(
        service, ctx, user, [("user", "I switched the dashboard to a new charting library.")], later, "s2"
    )
    now = later + timedelta(days=1)
    report = service.consolidate(ctx.tenant_id, user, now=now, run_id=run).totals()
    assert report["archived"] >= 1 + len(parts)
    return turn, parts, now


def test_passages_are_archived_and_restored_with_their_message(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pf-{uuid.uuid4().hex[:6]}"
    turn, parts, now = _forgotten(service, ctx, user, run := uuid.uuid4())
    rows = _rows(service, ctx, user)
    assert rows[turn.id].status == "archived"
    why = service.history(ctx, turn.id)[-1].after["why"]
    for part in parts:
        assert (rows[part.id].status, rows[part.id].archived_at) == ("archived", now)
        event = service.history(ctx, part.id)[-1]
        assert (event.op, event.run_id, event.after["why"]) == ("archive", run, why)
    hits = service.search(ctx, SearchRequest(query="What TTL did you suggest for caching?", user_id=user))
    assert not any(h.source_message_ids == ["s1-1"] for h in hits)

    # Restoring one passage brings its message back, and every passage with it.
    assert service.restore(ctx, parts[1].id).status == "active"
    rows = _rows(service, ctx, user)
    for memory_id in (turn.id, *(p.id for p in parts)):
        assert (rows[memory_id].status, rows[memory_id].archived_at) == ("active", None)
        assert _ops(service, ctx, memory_id)[-1] == "restore"
    hits = service.search(ctx, SearchRequest(query="What TTL did you suggest for caching?", user_id=user))
    assert hits[0].kind == "passage" and hits[0].source_message_ids == ["s1-1"]
    # The restore was a use of the message: the next run leaves it and its passages.
    service.consolidate(ctx.tenant_id, user, now=now)
    rows = _rows(service, ctx, user)
    assert {rows[m].status for m in (turn.id, *(p.id for p in parts))} == {"active"}


def test_restoring_a_message_restores_its_passages(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pr-{uuid.uuid4().hex[:6]}"
    turn, parts, _ = _forgotten(service, ctx, user, uuid.uuid4())
    assert service.restore(ctx, turn.id).status == "active"
    rows = _rows(service, ctx, user)
    assert {rows[p.id].status for p in parts} == {"active"}
    assert all(_ops(service, ctx, p.id)[-2:] == ["archive", "restore"] for p in parts)


def test_passages_are_purged_with_their_message(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pp-{uuid.uuid4().hex[:6]}"
    turn, parts, now = _forgotten(service, ctx, user, uuid.uuid4())
    service.consolidate(ctx.tenant_id, user, now=now + timedelta(days=20))
    assert {_rows(service, ctx, user)[p.id].status for p in parts} == {"archived"}
    # After the retention period the message and its passages go together; their history stays.
    service.consolidate(ctx.tenant_id, user, now=now + timedelta(days=31), run_id=(purge := uuid.uuid4()))
    rows = _rows(service, ctx, user)
    assert turn.id not in rows and not any(p.id in rows for p in parts)
    for memory_id in (turn.id, *(p.id for p in parts)):
        event = service.history(ctx, memory_id)[-1]
        assert (event.op, event.run_id) == ("purge", purge)


def test_a_use_of_a_passage_keeps_its_message(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    used, unused = f"pu-{uuid.uuid4().hex[:6]}", f"pn-{uuid.uuid4().hex[:6]}"
    later = T0 + timedelta(days=600)
    for user in (used, unused):
        _chat(service, ctx, user)
        _ingest(
            service, ctx, user, [("user", "I switched the dashboard to a new charting library.")], later, "s2"
        )
    # Search returns a long message through its passages: a passage's use is its message's.
    _, parts = _message(service, ctx, used)
    with service.db.session() as session:
        consolidation_store.record_uses(session, {parts[2].id: 1}, later - timedelta(days=5))
    for user in (used, unused):
        service.consolidate(ctx.tenant_id, user, now=later + timedelta(days=1))
    for user, status in ((used, "active"), (unused, "archived")):
        turn, parts = _message(service, ctx, user)
        assert {turn.status, *(p.status for p in parts)} == {status}


def test_a_passage_whose_message_is_gone_is_forgotten_and_cannot_be_restored(service, tenant, sql) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"po-{uuid.uuid4().hex[:6]}"
    turn, parts = _chat(service, ctx, user)
    # As a delete before passages followed their message left them (provenance's turn cleared).
    sql.execute("DELETE FROM memories WHERE id = %s", (turn.id,))
    service.consolidate(ctx.tenant_id, user, now=T0 + timedelta(days=1))
    rows = _rows(service, ctx, user)
    for part in parts:
        assert rows[part.id].status == "archived"
        assert service.history(ctx, part.id)[-1].after["why"] == "its message is gone"
    with pytest.raises(InvalidInput):
        service.restore(ctx, parts[0].id)
    service.consolidate(ctx.tenant_id, user, now=T0 + timedelta(days=40))
    assert not any(p.id in _rows(service, ctx, user) for p in parts)


def test_an_archived_message_edited_gets_archived_passages(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pa-{uuid.uuid4().hex[:6]}"
    turn, first, now = _forgotten(service, ctx, user, uuid.uuid4())
    service.update(ctx, turn.id, UpdateRequest(content="\n\n".join(PARAGRAPHS[2:])))
    turn, parts = _message(service, ctx, user)
    assert turn.status == "archived" and {p.id for p in parts} - {p.id for p in first}
    assert {(p.status, p.archived_at) for p in parts} == {("archived", now)}
    hits = service.search(ctx, SearchRequest(query="What TTL did you suggest for caching?", user_id=user))
    assert not any(h.source_message_ids == ["s1-1"] for h in hits)
