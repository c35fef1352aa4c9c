"""Ingest on real conversation text: every memory type, time, provenance, entity merging,
idempotency, and the LLM extractor through the whole pipeline."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import REAL, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY

from memsvc.importers import locomo_batches
from memsvc.ingest import digest_turns, session_vector, turn_line
from memsvc.models import Entity, EntityMention, HistoryEvent, Memory, MemorySource, Relation
from memsvc.schemas import AddRequest, Message
from tests.unit.fake_openai import FakeOpenAI, Reply

LOCOMO = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo" / "conv-26.json"
pytestmark = pytest.mark.skipif(not LOCOMO.exists(), reason="needs shared/data/locomo")


def _ingest(service, ctx, request: AddRequest):  # type: ignore[no-untyped-def]
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error
    return outcome.result


def _memories(service, ctx, user: str, **where):  # type: ignore[no-untyped-def]
    with service.db.session() as session:
        stmt = select(Memory).where(Memory.tenant_id == ctx.tenant_id, Memory.user_id == user)
        for key, value in where.items():
            stmt = stmt.where(getattr(Memory, key) == value)
        memories = list(session.execute(stmt).scalars())
        sources = {
            m.id: sorted(
                session.execute(
                    select(MemorySource.message_id).where(MemorySource.memory_id == m.id)
                ).scalars()
            )
            for m in memories
        }
    return memories, sources


@pytest.fixture
def conversation(service, tenant):  # type: ignore[no-untyped-def]
    """The first two sessions of LoCoMo conv-26, ingested session by session."""
    ctx, _ = tenant
    user = f"caroline-{uuid.uuid4().hex[:6]}"
    batches = list(locomo_batches(json.loads(LOCOMO.read_text()), user))[:2]
    results = [_ingest(service, ctx, b) for b in batches]
    return ctx, user, batches, results


def test_every_turn_is_an_episodic_memory_with_its_time_and_speaker(service, conversation) -> None:  # type: ignore[no-untyped-def]
    ctx, user, batches, _ = conversation
    turns, sources = _memories(service, ctx, user, kind="turn")
    messages = {m.id: (m, b.session_id) for b in batches for m in b.messages}
    assert len(turns) == len(messages)
    for turn in turns:
        message, session_id = messages[turn.message_id]
        assert turn.type == "episodic" and turn.content == message.content and turn.speaker == message.name
        assert turn.event_at == message.created_at and turn.session_id == session_id
        assert sources[turn.id] == [message.id]
    # Positions follow the conversation within each session.
    first = sorted((t for t in turns if t.session_id == "session_1"), key=lambda t: t.position)
    assert [t.message_id for t in first] == [m.id for m in batches[0].messages]


def test_each_session_is_an_episode_with_its_time_span(service, conversation) -> None:  # type: ignore[no-untyped-def]
    ctx, user, batches, _ = conversation
    sessions, sources = _memories(service, ctx, user, kind="session")
    assert len(sessions) == 2
    for episode in sessions:
        batch = next(b for b in batches if b.session_id == episode.session_id)
        assert episode.event_at == batch.messages[0].created_at
        assert episode.event_end_at == batch.messages[-1].created_at
        assert sources[episode.id] == sorted(m.id for m in batch.messages)
        assert 0 < len(episode.content) < sum(len(m.content) for m in batch.messages)


def _session_vectors(service, ctx, user: str) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    with service.db.session() as session:
        rows = session.execute(
            select(Memory.session_id, cast(Memory.embedding, ARRAY(REAL))).where(
                Memory.tenant_id == ctx.tenant_id, Memory.user_id == user, Memory.kind == "session"
            )
        ).all()
    return {session_id: np.asarray(vector, dtype=np.float32) for session_id, vector in rows}


def _quoted_turns_vector(service, messages: list[Message]) -> np.ndarray:  # type: ignore[no-untyped-def]
    items = [(m.name or m.role, m.content) for m in messages]
    lines = [turn_line(*items[i]) for i in digest_turns(items)]
    return session_vector(lines, dict(zip(lines, service.embedder.embed(lines), strict=True)))


def test_a_session_episode_is_embedded_as_the_turns_its_digest_quotes(service, tenant) -> None:  # type: ignore[no-untyped-def]
    """The digest itself is not encoded: its vector is the length-weighted mean of the whole lines
    of the turns it quotes, also when those turns came in an earlier batch of the session."""
    ctx, _ = tenant
    user = f"caroline-{uuid.uuid4().hex[:6]}"
    session_1, session_2 = list(locomo_batches(json.loads(LOCOMO.read_text()), user))[:2]
    half = len(session_1.messages) // 2
    for batch in (
        session_1.model_copy(update={"messages": session_1.messages[:half]}),
        session_1.model_copy(update={"messages": session_1.messages[half:]}),
        session_2,
    ):
        _ingest(service, ctx, batch)
    stored = _session_vectors(service, ctx, user)
    for batch in (session_1, session_2):
        expected = _quoted_turns_vector(service, batch.messages)
        digest_alone = service.embedder.embed(
            [_memories(service, ctx, user, session_id=batch.session_id, kind="session")[0][0].content]
        )[0]
        # halfvec storage keeps ~3 decimals; encoding the digest text gives another vector.
        assert float(stored[batch.session_id] @ expected) > 0.999
        assert float(stored[batch.session_id] @ digest_alone) < 0.99


def test_deleting_a_fact_takes_its_relation_and_lone_entities_out_of_the_graph(service, tenant) -> None:  # type: ignore[no-untyped-def]
    """The relation kept the deleted fact's sentence (its foreign key only unlinked it)."""
    ctx, _ = tenant
    user = f"grapher-{uuid.uuid4().hex[:6]}"
    said = [
        ("I moved to Lisbon with my dog Rex.", "g1"),
        ("My sister Jo lives in Lisbon too.", "g2"),
    ]
    for text, mid in said:
        when = datetime(2025, 1, 10, tzinfo=UTC)
        message = Message(role="user", name="Ann", content=text, id=mid, created_at=when)
        _ingest(service, ctx, AddRequest(user_id=user, session_id="s", messages=[message]))
    graph = service.graph(ctx, user, entity=None, depth=1)
    dog = next(r for r in graph.relations if r.object == "Rex")
    with service.db.session() as session:
        fact_id = session.execute(select(Relation.memory_id).where(Relation.id == dog.id)).scalar_one()
    stated = {r.id for r in graph.relations if r.fact == dog.fact}
    service.delete(ctx, fact_id)
    after = service.graph(ctx, user, entity=None, depth=1)
    assert not {r.id for r in after.relations} & stated
    assert all(dog.fact != r.fact for r in after.relations)
    assert "Rex" in {e.name for e in after.entities}  # the turn that said it still names Rex
    # The first message deleted, and with it everything only it stated: Rex goes; what the
    # second names stays.
    listing = service.list(ctx, user, memory_type=None, limit=100, cursor=None).items
    service.delete(ctx, next(m.id for m in listing if m.kind == "turn" and m.source_message_ids == ["g1"]))
    left = service.list(ctx, user, memory_type=None, limit=100, cursor=None).items
    assert not [m for m in left if m.source_message_ids == ["g1"]]
    names = {e.name for e in service.graph(ctx, user, entity=None, depth=1).entities}
    assert "Rex" not in names and {"Lisbon", "Jo"} <= names


def test_a_deleted_message_stays_gone_when_the_conversation_is_sent_again(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"resend-{uuid.uuid4().hex[:6]}"
    when = datetime(2025, 1, 10, tzinfo=UTC)
    request = AddRequest(
        user_id=user,
        session_id="s",
        messages=[
            Message(
                role="user",
                name="Ann",
                content="My locker is number 4411, keep it secret.",
                id="r1",
                created_at=when,
            ),
            Message(role="user", name="Ann", content="I play the cello.", id="r2", created_at=when),
        ],
    )
    _ingest(service, ctx, request)
    [turn], _ = _memories(
        service, ctx, user, kind="turn", content="My locker is number 4411, keep it secret."
    )
    facts, _ = _memories(service, ctx, user, type="semantic")
    pin = [f for f in facts if "4411" in f.content]
    assert pin and any("cello" in f.content for f in facts)
    service.delete(ctx, turn.id)
    # What only that message stated goes with it, each with its event; the cello stays.
    facts, _ = _memories(service, ctx, user, type="semantic")
    assert not any("4411" in f.content for f in facts) and any("cello" in f.content for f in facts)
    assert all([e.op for e in service.history(ctx, f.id)] == ["create", "delete"] for f in pin)
    again = _ingest(service, ctx, request)
    assert again.duplicates == 2 and not again.created and again.notes
    assert (
        _memories(service, ctx, user, kind="turn", content="My locker is number 4411, keep it secret.")[0]
        == []
    )


def test_deleting_a_turn_takes_it_out_of_its_session_digest(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"forget-{uuid.uuid4().hex[:6]}"
    said = ["My PIN is 4411, please remember it for me.", "I play the cello in an orchestra.", "Thanks!"]
    for i, text in enumerate(said):
        when = datetime(2025, 1, 10, 9, i, tzinfo=UTC)
        message = Message(role="user", name="Pia", content=text, id=f"f{i}", created_at=when)
        _ingest(service, ctx, AddRequest(user_id=user, session_id="one", messages=[message]))
    [episode], sources = _memories(service, ctx, user, kind="session")
    assert "4411" in episode.content and sorted(sources[episode.id]) == ["f0", "f1", "f2"]
    turns = {t.content: t for t in _memories(service, ctx, user, kind="turn")[0]}
    service.delete(ctx, turns[said[0]].id)
    [episode], sources = _memories(service, ctx, user, kind="session")
    assert "4411" not in episode.content and "cello" in episode.content
    # Its history keeps what was done and when, not what it said (the PIN was in both events).
    events = service.history(ctx, turns[said[0]].id)
    assert [e.op for e in events] == ["create", "delete"] and "4411" not in repr(events)
    with service.db.session() as session:
        kept = session.execute(
            select(HistoryEvent.before, HistoryEvent.after).where(HistoryEvent.user_id == user)
        )
        assert "4411" not in repr(kept.all())
    assert sorted(sources[episode.id]) == ["f1", "f2"]
    # Its span is the turns it has: it starts when the first one left was said.
    assert episode.event_at == episode.valid_from == datetime(2025, 1, 10, 9, 1, tzinfo=UTC)
    assert episode.event_end_at == datetime(2025, 1, 10, 9, 2, tzinfo=UTC)
    assert service.graph(ctx, user, entity=None, depth=1).entities  # "Pia", the cello, ...
    for text in said[1:]:
        service.delete(ctx, turns[text].id)
    assert _memories(service, ctx, user, kind="session")[0] == []  # no turn left, no episode
    assert [e.op for e in service.history(ctx, episode.id)] == ["create", "delete"]
    # Nothing left of the user: no graph either (the speaker's own entity is named by no mention).
    graph = service.graph(ctx, user, entity=None, depth=1)
    assert (graph.entities, graph.relations) == ([], [])


def test_a_session_starts_at_its_earliest_turn_whatever_order_they_came_in(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"late-{uuid.uuid4().hex[:6]}"
    tokyo = timezone(timedelta(hours=9))
    for i, minute in ((1, 5), (0, 1)):  # the earlier message, from Tokyo, is sent last
        when = datetime(2025, 1, 10, 9, minute, tzinfo=tokyo if i == 0 else UTC)
        message = Message(role="user", name="Pia", content=f"Message {i}.", id=f"l{i}", created_at=when)
        _ingest(service, ctx, AddRequest(user_id=user, session_id="one", messages=[message]))
    [episode], _ = _memories(service, ctx, user, kind="session")
    assert episode.event_at == datetime(2025, 1, 10, 9, 1, tzinfo=tokyo)
    assert episode.utc_offset == 9 * 60 and episode.event_end_at == datetime(2025, 1, 10, 9, 5, tzinfo=UTC)


def test_a_reply_said_twice_without_ids_is_two_turns_and_a_resend_is_none(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"twice-{uuid.uuid4().hex[:6]}"
    said = [("user", "Yes."), ("assistant", "Shall I book the table for two?"), ("user", "Yes.")]
    request = AddRequest(user_id=user, messages=[Message(role=r, content=c) for r, c in said])
    first = _ingest(service, ctx, request)
    assert first.created["turn"] == 3 and first.duplicates == 0
    turns, _ = _memories(service, ctx, user, kind="turn")
    assert sorted(t.content for t in turns) == ["Shall I book the table for two?", "Yes.", "Yes."]
    [episode], sources = _memories(service, ctx, user, kind="session")
    assert len(sources[episode.id]) == 3  # the digest's turns are the stored ones
    assert episode.id in first.memory_ids and {t.id for t in turns} <= set(first.memory_ids)
    again = _ingest(service, ctx, request)
    assert again.duplicates == 3 and not again.memory_ids


def test_a_message_sent_twice_in_one_add_is_one_message(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"twice-{uuid.uuid4().hex[:6]}"
    bought = Message(role="user", name="Ann", id="d2", content="I bought a red car.")
    request = AddRequest(
        user_id=user, session_id="s", messages=[bought, bought, Message(role="assistant", content="Nice!")]
    )
    result = _ingest(service, ctx, request)
    assert result.created["turn"] == 2 and result.duplicates == 1
    assert len(result.memory_ids) == len(set(result.memory_ids))
    [episode], _ = _memories(service, ctx, user, kind="session")
    assert episode.content.count("red car") == 1  # quoted it twice


def test_a_session_episode_has_a_create_event_once(service, tenant) -> None:  # type: ignore[no-untyped-def]
    """Its history was empty, and GET /v1/memories/{id}/history answered 404 for a stored memory;
    rebuilds as the session's turns arrive are derived from them, not events."""
    ctx, _ = tenant
    user = f"episode-{uuid.uuid4().hex[:6]}"
    for i, text in enumerate(["I bought a kayak.", "It is bright red.", "I paddle on Sundays."]):
        when = datetime(2025, 1, 10, 9, i, tzinfo=UTC)
        message = Message(role="user", name="Pia", content=text, id=f"e{i}", created_at=when)
        _ingest(service, ctx, AddRequest(user_id=user, session_id="one", messages=[message]))
    [episode], _ = _memories(service, ctx, user, kind="session")
    events = service.history(ctx, episode.id)
    assert [e.op for e in events] == ["create"] and events[0].after["kind"] == "session"


def test_facts_are_self_contained_with_resolved_dates_and_exact_provenance(service, conversation) -> None:  # type: ignore[no-untyped-def]
    ctx, user, _, _ = conversation
    facts, sources = _memories(service, ctx, user, type="semantic")
    assert len(facts) > 10
    assert all(1 <= len(sources[f.id]) <= 3 for f in facts)  # never a whole session
    # D1:3, said 8 May 2023: "I went to a LGBTQ support group yesterday ..."
    support = [f for f in facts if "support group" in f.content and sources[f.id] == ["D1:3"]]
    assert support, [f.content for f in facts if "D1:3" in sources[f.id]]
    fact = support[0]
    assert fact.content.startswith("Caroline") and " I " not in f" {fact.content} "
    assert fact.kind == "event" and fact.subject == "Caroline"
    assert fact.valid_from is not None and fact.valid_from.date() == datetime(2023, 5, 7, tzinfo=UTC).date()


def test_graph_has_entities_and_relations_with_provenance(service, conversation) -> None:  # type: ignore[no-untyped-def]
    ctx, user, _, _ = conversation
    with service.db.session() as session:
        entities = {
            e.name: e
            for e in session.execute(
                select(Entity).where(Entity.tenant_id == ctx.tenant_id, Entity.user_id == user)
            ).scalars()
        }
        relations = list(
            session.execute(
                select(Relation).where(Relation.tenant_id == ctx.tenant_id, Relation.user_id == user)
            ).scalars()
        )
        caroline_mentions = session.execute(
            select(func.count())
            .select_from(EntityMention)
            .where(EntityMention.entity_id == entities["Caroline"].id)
        ).scalar_one()
    assert entities["Caroline"].entity_type == "person" and entities["Melanie"].entity_type == "person"
    assert caroline_mentions > 5
    went = [r for r in relations if r.predicate == "went_to" and "D1:3" in r.source_message_ids]
    assert went and went[0].subject_id == entities["Caroline"].id
    graph = service.graph(ctx, user, entity="Caroline", depth=1)
    assert any(r.predicate == "went_to" for r in graph.relations)


def test_re_sending_creates_nothing(service, conversation) -> None:  # type: ignore[no-untyped-def]
    ctx, user, batches, _ = conversation
    with service.db.session() as session:
        before = session.execute(
            select(func.count()).select_from(Memory).where(Memory.user_id == user)
        ).scalar_one()
    again = _ingest(service, ctx, batches[0])
    assert again.duplicates == len(batches[0].messages) and again.created == {}
    # Without client ids, the same content at the same time is recognised too.
    no_ids = AddRequest(
        user_id=user,
        session_id="extra",
        messages=[
            Message(
                role="user",
                name="Caroline",
                content="I adopted a cat.",
                created_at=datetime(2023, 6, 1, tzinfo=UTC),
            )
        ],
    )
    first, second = _ingest(service, ctx, no_ids), _ingest(service, ctx, no_ids)
    assert first.created["turn"] == 1 and second.duplicates == 1 and second.created == {}
    with service.db.session() as session:
        after = session.execute(
            select(func.count()).select_from(Memory).where(Memory.user_id == user)
        ).scalar_one()
    assert after == before + sum(
        first.created.get(k, 0) for k in ("turn", "fact", "event", "plan", "preference", "session")
    )


def test_entities_merge_across_mentions_and_spellings(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = "merge"
    at = datetime(2024, 3, 1, tzinfo=UTC)
    for i, text in enumerate(
        [
            "I visited Riverside Park today.",
            "I went to the Riverside Park again.",
            "My kids love Riverside Park.",
        ]
    ):
        _ingest(
            service,
            ctx,
            AddRequest(
                user_id=user,
                messages=[Message(role="user", name="Ann", content=text, id=f"p{i}", created_at=at)],
            ),
        )
    with service.db.session() as session:
        parks = list(
            session.execute(
                select(Entity).where(
                    Entity.tenant_id == ctx.tenant_id,
                    Entity.user_id == user,
                    Entity.normalized_name.like("%riverside%"),
                )
            ).scalars()
        )
        assert len(parks) == 1
        mentions = session.execute(
            select(func.count()).select_from(EntityMention).where(EntityMention.entity_id == parks[0].id)
        ).scalar_one()
    assert (mentions, parks[0].mention_count) == (3, 3)


def test_llm_extractor_through_the_pipeline_and_its_fallback(settings, database, embedder, tenant) -> None:  # type: ignore[no-untyped-def]
    from memsvc.service import MemoryService

    ctx, _ = tenant
    request = AddRequest(
        user_id="llm-user",
        messages=[
            Message(
                role="user",
                name="Bo",
                id="b1",
                content="I started learning the cello in March.",
                created_at=datetime(2024, 4, 2, tzinfo=UTC),
            )
        ],
    )
    answer = {
        "facts": [
            {
                "content": "Bo started learning the cello in March 2024",
                "kind": "event",
                "subject": "Bo",
                "source_message_ids": ["b1"],
                "valid_from": "2024-03-01",
                "confidence": 0.9,
                "importance": 0.6,
            }
        ],
        "entities": [
            {"name": "Bo", "type": "person", "source_message_ids": ["b1"], "aliases": []},
            {"name": "cello", "type": "thing", "source_message_ids": ["b1"], "aliases": []},
        ],
        "relations": [
            {
                "subject": "Bo",
                "predicate": "learns",
                "object": "cello",
                "fact": "Bo started learning the cello in March 2024",
                "source_message_ids": ["b1"],
                "valid_from": "2024-03-01",
            }
        ],
    }
    with FakeOpenAI() as server:
        server.script(Reply(content=answer))
        llm = settings.model_copy(
            update={
                "extractor": "llm",
                "llm_base_url": server.base_url,
                "llm_model": "m",
                "llm_timeout_s": 2.0,
            }
        )
        service = MemoryService(llm, database, embedder=embedder)
        result = _ingest(service, ctx, request)
        assert result.extractor == "llm" and result.created["event"] == 1 and result.created["relation"] == 1
        facts, sources = _memories(service, ctx, "llm-user", type="semantic")
        assert [f.content for f in facts] == ["Bo started learning the cello in March 2024"]
        assert sources[facts[0].id] == ["b1"]

        server.script(Reply(content="this is not json"))
        fallback = _ingest(service, ctx, request.model_copy(update={"user_id": "llm-fallback"}))
        assert fallback.extractor == "llm→rules" and fallback.notes and fallback.created["turn"] == 1


def test_a_relation_ends_when_the_fact_it_was_read_from_is_replaced(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"moves-{uuid.uuid4().hex[:6]}"
    for i, (text, month) in enumerate([("I live in Chicago.", 1), ("I live in Boston.", 6)]):
        when = datetime(2024, month, 1, 10, tzinfo=UTC)
        message = Message(role="user", name="Ann", content=text, id=f"r{i}", created_at=when)
        _ingest(service, ctx, AddRequest(user_id=user, messages=[message]))
    lives = {
        r.object: r
        for r in service.graph(ctx, user, entity="Ann", depth=1).relations
        if r.predicate == "lives_in"
    }
    assert lives["Chicago"].valid_to == datetime(2024, 6, 1, 10, tzinfo=UTC)  # was open: two homes now
    assert lives["Boston"].valid_to is None
    # The move deleted, Chicago holds again, and so does its relation.
    turn = next(t for t in _memories(service, ctx, user, kind="turn")[0] if t.message_id == "r1")
    service.delete(ctx, turn.id)
    lives = {r.object: r for r in service.graph(ctx, user, entity="Ann", depth=1).relations}
    assert lives["Chicago"].valid_to is None and "Boston" not in lives


def test_a_known_id_with_other_words_keeps_the_stored_message_and_says_so(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"same-id-{uuid.uuid4().hex[:6]}"
    for text in ("I live in Paris.", "I live in Rome."):
        message = Message(role="user", name="Ann", content=text, id="m1")
        result = _ingest(service, ctx, AddRequest(user_id=user, messages=[message]))
    assert result.duplicates == 1 and not result.memory_ids
    assert any("other text" in note and "m1" in note and "PATCH" in note for note in result.notes)
    [turn], _ = _memories(service, ctx, user, kind="turn")
    assert turn.content == "I live in Paris."


def test_a_known_id_sent_in_another_session_stays_in_its_own_and_the_add_says_so(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"moved-id-{uuid.uuid4().hex[:6]}"
    message = Message(role="user", name="Ann", content="I live in Paris.", id="m1")
    for session_id in ("a", "b"):
        result = _ingest(service, ctx, AddRequest(user_id=user, session_id=session_id, messages=[message]))
    assert result.duplicates == 1 and not result.memory_ids
    assert any("another session" in note and "m1" in note for note in result.notes), result.notes
    [turn], _ = _memories(service, ctx, user, kind="turn")
    assert turn.session_id == "a"
    again = _ingest(service, ctx, AddRequest(user_id=user, session_id="a", messages=[message]))
    assert again.duplicates == 1 and not again.notes  # a plain re-send says nothing


def test_a_metadata_filter_matches_a_key_present_with_that_value(service, tenant) -> None:  # type: ignore[no-untyped-def]
    from memsvc.schemas import SearchRequest

    ctx, _ = tenant
    user = f"meta-{uuid.uuid4().hex[:6]}"
    for i, metadata in enumerate(({"topic": "travel", "n": 1}, {"topic": None, "n": True}, {})):
        message = Message(role="user", name="Ann", content=f"I visited Lisbon, trip {i}.", id=f"t{i}")
        _ingest(service, ctx, AddRequest(user_id=user, messages=[message], metadata=metadata or None))

    def found(metadata: dict[str, object]) -> set[str]:
        request = SearchRequest(
            query="Lisbon", user_id=user, limit=50, filters={"metadata": metadata, "kind": "turn"}
        )
        return {r.source_message_ids[0] for r in service.search(ctx, request)}

    assert found({"topic": "travel"}) == {"t0"}
    assert found({"topic": None}) == {"t1"}  # a stored null, not a missing key
    assert found({"missing": None}) == set()  # matched every memory
    # JSON's true is not 1 (in Python it is), nor 1 true; 1 is 1.0.
    assert found({"n": True}) == {"t1"}
    assert found({"n": 1}) == found({"n": 1.0}) == {"t0"}


def test_news_of_a_person_known_from_an_earlier_add_is_stored(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"kp-{uuid.uuid4().hex[:6]}"
    said = ["My friend Jon is a pilot.", "My boss Mark Lee is strict.", "Jon is getting married in May."]
    for day, text in enumerate(said):
        message = Message(
            role="user",
            name="Ann",
            content=text,
            id=f"m{day}",
            created_at=datetime(2024, 3, 10 + day, tzinfo=UTC),
        )
        _ingest(service, ctx, AddRequest(user_id=user, messages=[message]))
    _ingest(
        service,
        ctx,
        AddRequest(
            user_id=user,
            messages=[Message(role="user", name="Ann", content="Mark is moving to London in July.", id="m3")],
        ),
    )
    memories, sources = _memories(service, ctx, user, type="semantic")
    stated = {m.content: sources[m.id] for m in memories}
    # A name opening a sentence counts as one when the user's graph knows the person (by first name).
    assert stated["Jon is getting married in May 2024"] == ["m2"]
    assert any(content.startswith("Mark is moving to London") for content in stated)
