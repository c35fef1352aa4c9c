"""A long message's passages follow it (real PostgreSQL, real embedding model): an edit cuts them
again from the new text and a delete takes them with it, each change a history event; a passage is
never searchable without its message. Forgetting: test_passages_forgetting.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from memsvc.errors import NotFound
from memsvc.extraction.passages import plan_passages
from memsvc.models import Memory, MemorySource
from memsvc.schemas import AddRequest, Message, SearchRequest, UpdateRequest

from .test_passages import ANSWER

T0 = datetime(2023, 1, 10, 9, tzinfo=UTC)
PARAGRAPHS = ANSWER.split("\n\n")


def _ingest(service, ctx, user: str, lines: list[tuple[str, str]], at: datetime, session_id: str) -> None:  # type: ignore[no-untyped-def]
    request = AddRequest(
        user_id=user,
        session_id=session_id,
        messages=[
            Message(role=role, content=text, id=f"{session_id}-{i}", created_at=at + timedelta(minutes=i))
            for i, (role, text) in enumerate(lines)
        ],
    )
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error


def _chat(service, ctx, user: str, at: datetime = T0) -> tuple[Memory, list[Memory]]:  # type: ignore[no-untyped-def]
    _ingest(
        service,
        ctx,
        user,
        [
            ("user", "My budget tracker dashboard is slow. How can I speed it up before the launch?"),
            ("assistant", ANSWER),
            ("user", "Great, I will start with the database index and the Redis cache tomorrow morning."),
        ],
        at,
        "s1",
    )
    return _message(service, ctx, user)


def _rows(service, ctx, user: str) -> dict[uuid.UUID, Memory]:  # type: ignore[no-untyped-def]
    with service.db.session() as session:
        return {
            m.id: m
            for m in session.execute(
                select(Memory).where(Memory.tenant_id == ctx.tenant_id, Memory.user_id == user)
            ).scalars()
        }


def _message(service, ctx, user: str) -> tuple[Memory, list[Memory]]:  # type: ignore[no-untyped-def]
    """The long message's turn and its passages (by provenance), in order."""
    rows = _rows(service, ctx, user)
    turn = next(m for m in rows.values() if m.kind == "turn" and m.message_id == "s1-1")
    with service.db.session() as session:
        ids = set(
            session.execute(select(MemorySource.memory_id).where(MemorySource.turn_id == turn.id)).scalars()
        )
    parts = [m for m in rows.values() if m.kind == "passage" and m.id in ids]
    return turn, sorted(parts, key=lambda p: p.metadata_["passage"]["index"])


def _ops(service, ctx, memory_id: uuid.UUID) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.op for e in service.history(ctx, memory_id)]


def _assert_cut_from(service, ctx, turn: Memory, parts: list[Memory]) -> None:  # type: ignore[no-untyped-def]
    """The passages are exactly those ingest would cut from the turn's text, with its provenance."""
    planned = plan_passages(turn.content, service.ingestor.passages)
    assert [p.content for p in parts] == [p.text for p in planned]
    assert [p.metadata_["passage"] for p in parts] == [
        {"turn_id": str(turn.id), "index": i} for i in range(len(planned))
    ]
    for part in parts:
        assert (part.role, part.event_at, part.session_id, part.status) == (
            turn.role,
            turn.event_at,
            turn.session_id,
            turn.status,
        )
        assert service.get(ctx, part.id).source_message_ids == [turn.message_id]


def test_editing_a_long_message_cuts_its_passages_again(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pe-{uuid.uuid4().hex[:6]}"
    turn, first = _chat(service, ctx, user)
    assert len(first) >= 3
    ttl = next(p for p in first if "TTL of 300 seconds" in p.content)

    # One word changed: the passage that holds it is rewritten in place (same span, same id,
    # re-embedded); the others are untouched.
    edited = ANSWER.replace("TTL of 300 seconds", "TTL of 600 seconds")
    service.update(ctx, turn.id, UpdateRequest(content=edited))
    turn, parts = _message(service, ctx, user)
    _assert_cut_from(service, ctx, turn, parts)
    assert [p.id for p in parts] == [p.id for p in first]
    rewritten = next(p for p in parts if p.id == ttl.id)
    assert "TTL of 600 seconds" in rewritten.content
    assert rewritten.embedding is not None and list(rewritten.embedding) != list(ttl.embedding)
    events = service.history(ctx, ttl.id)
    assert [e.op for e in events] == ["create", "update"]
    assert "300" in events[1].before["content"] and "600" in events[1].after["content"]
    assert events[1].actor == ctx.actor
    for part in parts:
        if part.id != ttl.id:
            assert _ops(service, ctx, part.id) == ["create"]
    assert service.get(ctx, ttl.id).source_message_ids == ["s1-1"]
    top = service.search(
        ctx, SearchRequest(query="What TTL did you suggest for the monthly summary?", user_id=user)
    )
    assert top[0].kind == "passage" and "600 seconds" in top[0].content

    # The first two paragraphs dropped: passages are made for the new spans and the old ones
    # deleted, each in the history; the result is what ingest would have cut.
    shorter = "\n\n".join(PARAGRAPHS[2:]).replace("TTL of 300 seconds", "TTL of 600 seconds")
    service.update(ctx, turn.id, UpdateRequest(content=shorter))
    turn, parts = _message(service, ctx, user)
    _assert_cut_from(service, ctx, turn, parts)
    gone = {p.id for p in first} - {p.id for p in parts}
    assert gone
    for memory_id in gone:
        assert _ops(service, ctx, memory_id)[-1] == "delete"
        with pytest.raises(NotFound):
            service.get(ctx, memory_id)
    for part in parts:
        if part.id not in {p.id for p in first}:
            assert _ops(service, ctx, part.id) == ["create"]
        assert service.get(ctx, part.id).source_message_ids == ["s1-1"]
    assert not any("First, the database" in p.content for p in parts)

    # Short enough to stand whole: no passages; long again as first sent: the same passages
    # (the same derived ids) as ingest made.
    service.update(ctx, turn.id, UpdateRequest(content="Add an index on user_id and created_at."))
    assert _message(service, ctx, user)[1] == []
    service.update(ctx, turn.id, UpdateRequest(content=ANSWER))
    turn, parts = _message(service, ctx, user)
    _assert_cut_from(service, ctx, turn, parts)
    assert [p.id for p in parts] == [p.id for p in first]
    assert _ops(service, ctx, first[0].id) == ["create", "delete", "create"]


def test_a_metadata_or_pin_edit_leaves_the_passages_as_they_are(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pm-{uuid.uuid4().hex[:6]}"
    turn, first = _chat(service, ctx, user)
    service.update(ctx, turn.id, UpdateRequest(metadata={"topic": "dashboard"}, pinned=True))
    turn, parts = _message(service, ctx, user)
    assert turn.metadata_ == {"topic": "dashboard"} and turn.pinned
    assert [(p.id, p.content, p.metadata_, p.pinned, p.updated_at) for p in parts] == [
        (p.id, p.content, p.metadata_, p.pinned, p.updated_at) for p in first
    ]
    assert all(_ops(service, ctx, p.id) == ["create"] for p in parts)
    # An edit of a passage itself is an edit of that memory only.
    service.update(ctx, parts[0].id, UpdateRequest(content="Start with the database index."))
    assert service.get(ctx, turn.id).content == ANSWER
    assert len(_message(service, ctx, user)[1]) == len(first)


def test_deleting_a_message_deletes_its_passages(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pd-{uuid.uuid4().hex[:6]}"
    turn, parts = _chat(service, ctx, user)
    # A passage deleted alone leaves its message and the other passages.
    service.delete(ctx, parts[0].id)
    assert service.get(ctx, turn.id).status == "active"
    assert [p.id for p in _message(service, ctx, user)[1]] == [p.id for p in parts[1:]]

    service.delete(ctx, turn.id)
    rows = _rows(service, ctx, user)
    assert turn.id not in rows and not any(p.id in rows for p in parts)
    assert not any(m.kind == "passage" for m in rows.values())
    for part in parts[1:]:
        events = service.history(ctx, part.id)
        assert [e.op for e in events] == ["create", "delete"] and events[-1].actor == ctx.actor
    hits = service.search(ctx, SearchRequest(query="What TTL did you suggest for caching?", user_id=user))
    assert not any(h.source_message_ids == ["s1-1"] for h in hits)
