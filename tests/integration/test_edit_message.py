"""A message whose text is edited is read again: what it stated before is forgotten everywhere
(facts, graph, digest, what it had replaced), what it states now is stored as ingest stores it
(real PostgreSQL, real embedding model)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from memsvc.schemas import AddRequest, ContextRequest, Message, UpdateRequest

T0 = datetime(2024, 2, 1, 12, tzinfo=UTC)


def _add(service, ctx, user: str, said: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    messages = [
        Message(role="user", name="Ivo", content=text, id=message_id, created_at=T0 + timedelta(days=i))
        for i, (message_id, text) in enumerate(said)
    ]
    request = AddRequest(user_id=user, session_id="s1", messages=messages)
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error


def test_an_edited_message_states_what_it_says_now(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ed-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("a", "I live in Berlin."), ("b", "I live in Zagreb.")])
    listed = service.list(ctx, user, memory_type=None, limit=100, cursor=None).items
    turn = next(m for m in listed if m.kind == "turn" and m.source_message_ids == ["b"])
    assert any("Zagreb" in m.content for m in listed if m.type == "semantic")

    service.update(ctx, turn.id, UpdateRequest(content="I live in Split."))

    listed = service.list(ctx, user, memory_type=None, limit=100, cursor=None).items
    semantic = {m.content: m for m in listed if m.type == "semantic"}
    assert not any("Zagreb" in content for content in semantic)
    split = semantic["Ivo lives in Split"]
    assert split.status == "active" and split.source_message_ids == ["b"]
    berlin = semantic["Ivo lives in Berlin"]
    assert (berlin.status, berlin.valid_to) == ("superseded", T0 + timedelta(days=1))
    digest = next(m for m in listed if m.kind == "session")
    assert "Split" in digest.content and "Zagreb" not in digest.content
    graph = service.graph(ctx, user, entity=None, depth=1)
    names = {node.name for node in graph.entities}
    assert "Split" in names and "Zagreb" not in names
    block = service.context(ctx, ContextRequest(query="Where does Ivo live?", user_id=user)).context
    assert "Zagreb" not in block and "Ivo lives in Split" in block
    # What it said before is in the history of what was forgotten.
    ops = [e.op for e in service.history(ctx, turn.id)]
    assert ops == ["create", "update"]


def test_an_edit_that_takes_a_value_back_reopens_the_one_it_had_replaced(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ed-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("a", "I live in Berlin."), ("b", "I live in Zagreb.")])
    turn = next(
        m
        for m in service.list(ctx, user, memory_type=None, limit=100, cursor=None).items
        if m.kind == "turn" and m.source_message_ids == ["b"]
    )
    service.update(ctx, turn.id, UpdateRequest(content="I visited Zagreb for a weekend."))
    semantic = {
        m.content: m for m in service.list(ctx, user, memory_type="semantic", limit=100, cursor=None).items
    }
    assert semantic["Ivo lives in Berlin"].status == "active"
    assert "Ivo lives in Zagreb" not in semantic


def test_a_relation_cites_every_message_that_says_it_and_none_that_is_gone(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ed-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("d1", "I live in Zagreb.")])
    _add(service, ctx, user, [("d2", "I live in Zagreb.")])

    def lives_in() -> list[list[str]]:
        graph = service.graph(ctx, user, entity=None, depth=1)
        return [sorted(r.source_message_ids) for r in graph.relations if r.object == "Zagreb"]

    assert lives_in() == [["d1", "d2"]]
    turns = {
        m.source_message_ids[0]: m
        for m in service.list(ctx, user, memory_type="episodic", limit=100, cursor=None).items
        if m.kind == "turn"
    }
    service.update(ctx, turns["d1"].id, UpdateRequest(content="I love jazz."))
    assert lives_in() == [["d2"]]  # still said by d2, no longer by d1
    service.delete(ctx, turns["d2"].id)
    assert lives_in() == []
    assert "Zagreb" not in {e.name for e in service.graph(ctx, user, entity=None, depth=1).entities}


def test_what_an_edited_message_still_states_keeps_its_pin_and_metadata(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ed-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("z", "I live in Zagreb.")])
    (fact,) = [
        m
        for m in service.list(ctx, user, memory_type="semantic", limit=50, cursor=None).items
        if "Zagreb" in m.content
    ]
    service.update(ctx, fact.id, UpdateRequest(pinned=True, metadata={"verified": True}))
    turn = next(
        m
        for m in service.list(ctx, user, memory_type="episodic", limit=50, cursor=None).items
        if m.kind == "turn"
    )
    service.update(ctx, turn.id, UpdateRequest(content="I live in Zagreb!"))
    kept = service.get(ctx, fact.id)
    assert (kept.status, kept.pinned, kept.metadata) == ("active", True, {"verified": True})
    assert [e.op for e in service.history(ctx, fact.id)] == ["create", "update"]


def test_an_edit_that_changes_nothing_is_no_event(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ed-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("z", "I live in Zagreb.")])
    turn = next(
        m
        for m in service.list(ctx, user, memory_type="episodic", limit=50, cursor=None).items
        if m.kind == "turn"
    )
    service.update(ctx, turn.id, UpdateRequest(content="I live in Zagreb.", pinned=False))
    assert [e.op for e in service.history(ctx, turn.id)] == ["create"]


def test_an_entity_counts_the_messages_that_name_it_after_edits_and_deletes(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ed-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("a", "I love Riverside Park."), ("b", "We went to Riverside Park again.")])

    def park() -> tuple[int, list[str]]:
        node = next(
            e for e in service.graph(ctx, user, entity=None, depth=1).entities if "Riverside" in e.name
        )
        return node.mention_count, node.source_message_ids

    assert park() == (2, ["a", "b"])
    turns = {
        m.source_message_ids[0]: m
        for m in service.list(ctx, user, memory_type="episodic", limit=100, cursor=None).items
        if m.kind == "turn"
    }
    # Edited twice, still naming the park: still two messages (each edit had added one).
    for words in ("I really love Riverside Park.", "I adore Riverside Park."):
        service.update(ctx, turns["a"].id, UpdateRequest(content=words))
    assert park() == (2, ["a", "b"])
    service.delete(ctx, turns["b"].id)
    assert park() == (1, ["a"])
