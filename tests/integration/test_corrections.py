"""Corrections at ingest on the real Postgres: "Sorry, I meant Tuesday." replaces the facts of the
message it corrects, whether that message came in the same add or an earlier one, with provenance
in both messages and every change in the history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from memsvc.models import Memory, MemorySource
from memsvc.schemas import AddRequest, ContextRequest, Message, SearchRequest, UpdateRequest

T0 = datetime(2024, 1, 10, 12, tzinfo=UTC)  # a Wednesday


def _add(
    service, ctx, user: str, said: list[tuple[str, str]], minute: int = 0, session_id: str = "s1"
) -> None:  # type: ignore[no-untyped-def]
    messages = [
        Message(
            role="user",
            name=name,
            content=text,
            id=f"{user}-{minute + i}",
            created_at=T0 + timedelta(minutes=minute + i),
        )
        for i, (name, text) in enumerate(said)
    ]
    outcome = service.run_ingest_job(
        service.submit_ingest(ctx, AddRequest(messages=messages, user_id=user, session_id=session_id))
    )
    assert outcome.status == "succeeded", outcome.error


def _facts(service, ctx, user: str) -> dict[str, Memory]:  # type: ignore[no-untyped-def]
    with service.db.session() as session:
        rows = session.execute(
            select(Memory).where(
                Memory.tenant_id == ctx.tenant_id, Memory.user_id == user, Memory.type == "semantic"
            )
        ).scalars()
        return {m.content: m for m in rows}


def _sources(service, memory_id: uuid.UUID) -> set[str]:  # type: ignore[no-untyped-def]
    with service.db.session() as session:
        return set(
            session.execute(
                select(MemorySource.message_id).where(MemorySource.memory_id == memory_id)
            ).scalars()
        )


def _user() -> str:
    return f"ann-{uuid.uuid4().hex[:8]}"


def test_a_correction_in_a_later_add_replaces_the_fact_it_corrects(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, [("Ann", "My exam is on Monday.")])
    _add(service, ctx, user, [("Ann", "Sorry, I meant Tuesday.")], minute=1)
    facts = _facts(service, ctx, user)
    monday, tuesday = facts["Ann's exam is on 15 January 2024"], facts["Ann's exam is on 16 January 2024"]
    assert monday.status == "superseded" and monday.superseded_by == tuesday.id
    assert monday.valid_to == monday.valid_from  # never true: no search, now or as of then, returns it
    assert tuesday.status == "active"
    # Stated by the correction and the message it corrects: exactly those two.
    assert _sources(service, tuesday.id) == {f"{user}-0", f"{user}-1"}
    assert not any("meant" in content for content in facts)
    assert [e.op for e in service.history(ctx, monday.id)] == ["create", "supersede"]
    # The current answer is Tuesday.
    results = service.search(ctx, SearchRequest(query="When is Ann's exam?", user_id=user, limit=5))
    first_fact = next(r for r in results if r.type == "semantic")
    assert first_fact.content == tuesday.content
    assert not any("15 January" in r.content for r in results)
    then = SearchRequest(query="When is Ann's exam?", user_id=user, as_of=T0 + timedelta(days=6))
    assert not any("15 January" in r.content for r in service.search(ctx, then))
    context = service.context(ctx, ContextRequest(query="When is Ann's exam?", user_id=user)).context
    assert "16 January 2024" in context and "15 January 2024" not in context
    assert "Ann: Sorry, I meant Tuesday." in context  # what was said stays as said


def test_a_correction_in_the_same_add_and_a_second_one_later(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(
        service,
        ctx,
        user,
        [("Ann", "I moved to Lisbon last week."), ("Ann", "Actually, I meant Porto, not Lisbon.")],
    )
    facts = _facts(service, ctx, user)
    assert facts["Ann lives in Porto"].status == "active"
    assert facts["Ann lives in Lisbon"].status == "superseded"
    assert facts["Ann moved to Lisbon in the week of 1 January 2024"].status == "superseded"
    porto = facts["Ann moved to Porto in the week of 1 January 2024"]
    assert porto.status == "active" and _sources(service, porto.id) == {f"{user}-0", f"{user}-1"}

    _add(service, ctx, user, [("Ann", "Sorry, I meant Braga, not Porto.")], minute=2)
    facts = _facts(service, ctx, user)
    braga = facts["Ann moved to Braga in the week of 1 January 2024"]
    assert braga.status == "active" and _sources(service, braga.id) == {f"{user}-0", f"{user}-2"}
    assert facts["Ann lives in Braga"].status == "active"
    assert all(m.status == "superseded" for c, m in facts.items() if "Lisbon" in c or "Porto" in c)
    assert [e.op for e in service.history(ctx, porto.id)] == ["create", "supersede"]


def test_an_unclear_correction_or_another_speakers_message_changes_nothing(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    # Two names it could replace: which one was meant is not known.
    _add(service, ctx, user, [("Ann", "I met Sarah in Paris."), ("Ann", "Sorry, I meant Rome.")])
    # Bob's party is not Ann's to correct.
    _add(
        service, ctx, user, [("Bob", "My party is on Friday."), ("Ann", "Sorry, I meant Saturday.")], minute=2
    )
    facts = _facts(service, ctx, user)
    assert facts["Ann met Sarah in Paris"].status == "active"
    assert facts["Bob's party is on 12 January 2024"].status == "active"
    assert all(m.status == "active" for m in facts.values())
    assert not any("Rome" in c or "Saturday" in c or "13 January" in c for c in facts)


def test_a_corrected_fact_stays_closed_when_its_successor_goes_or_the_value_changes(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, [("Ann", "I live in Lisbon.")])
    _add(service, ctx, user, [("Ann", "Sorry, I meant Porto.")], minute=1)
    lisbon = _facts(service, ctx, user)["Ann lives in Lisbon"]
    _add(service, ctx, user, [("Ann", "I moved to Braga.")], minute=60 * 24 * 30)
    facts = _facts(service, ctx, user)
    assert facts["Ann lives in Porto"].status == "superseded"  # a real change: valid until the move
    assert facts["Ann lives in Porto"].superseded_by == facts["Ann lives in Braga"].id
    assert facts["Ann lives in Lisbon"].valid_to == lisbon.valid_from  # never true, whatever came later
    service.delete(ctx, facts["Ann lives in Porto"].id)
    service.delete(ctx, facts["Ann lives in Braga"].id)
    service.delete(ctx, facts["Ann moved to Braga"].id)
    after = _facts(service, ctx, user)["Ann lives in Lisbon"]
    assert after.status == "superseded" and after.valid_to == after.valid_from


def test_deleting_the_corrected_message_leaves_the_fact_citing_the_correction_only(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, [("Ann", "My exam is on Monday.")])
    _add(service, ctx, user, [("Ann", "Sorry, I meant Tuesday.")], minute=1)
    tuesday = _facts(service, ctx, user)["Ann's exam is on 16 January 2024"]
    query = SearchRequest(query="When is Ann's exam?", user_id=user, limit=5)
    assert service.search(ctx, query)  # the corpus is cached before the delete
    first = next(
        r
        for r in service.list(ctx, user, memory_type="episodic", limit=10, cursor=None).items
        if r.source_message_ids == [f"{user}-0"] and r.kind == "turn"
    )
    service.delete(ctx, first.id)
    # The fact still holds (the correction states it), and no longer names a message that is gone.
    assert _sources(service, tuesday.id) == {f"{user}-1"}
    assert service.get(ctx, tuesday.id).source_message_ids == [f"{user}-1"]
    found = next(r for r in service.search(ctx, query) if r.id == tuesday.id)
    assert found.source_message_ids == [f"{user}-1"]
    context = service.context(ctx, ContextRequest(query="When is Ann's exam?", user_id=user)).context
    assert f"{user}-0" not in context and f"(src: {user}-1)" in context


def test_deleting_the_correction_brings_back_what_it_corrected(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, [("Ann", "My exam is on Monday."), ("Ann", "Sorry, I meant Tuesday.")])
    facts = _facts(service, ctx, user)
    tuesday = facts["Ann's exam is on 16 January 2024"]
    assert tuesday.metadata_["corrects"] == [f"{user}-0"]
    correction = next(
        r
        for r in service.list(ctx, user, memory_type="episodic", limit=10, cursor=None).items
        if r.source_message_ids == [f"{user}-1"] and r.kind == "turn"
    )
    service.delete(ctx, correction.id)
    facts = _facts(service, ctx, user)
    # The message it corrected never said Tuesday: that fact goes, and Monday holds again.
    assert "Ann's exam is on 16 January 2024" not in facts
    monday = facts["Ann's exam is on 15 January 2024"]
    assert (monday.status, monday.valid_to) == ("active", None)
    results = service.search(ctx, SearchRequest(query="When is Ann's exam?", user_id=user, limit=5))
    assert any("15 January" in r.content for r in results) and not any(
        "16 January" in r.content for r in results
    )


def test_a_correction_deleted_after_what_it_corrected_deletes_its_fact_once(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, [("Ann", "My exam is on Monday."), ("Ann", "Sorry, I meant Tuesday.")])
    tuesday = _facts(service, ctx, user)["Ann's exam is on 16 January 2024"]
    turns = {
        r.source_message_ids[0]: r
        for r in service.list(ctx, user, memory_type="episodic", limit=10, cursor=None).items
        if r.kind == "turn"
    }
    service.delete(ctx, turns[f"{user}-0"].id)  # Tuesday now cites the correction alone
    service.delete(ctx, turns[f"{user}-1"].id)
    assert [e.op for e in service.history(ctx, tuesday.id)] == ["create", "delete"]


def test_a_correction_edited_to_another_value_corrects_to_that_value(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, [("Ann", "My exam is on Monday."), ("Ann", "Sorry, I meant Tuesday.")])
    correction = next(
        r
        for r in service.list(ctx, user, memory_type="episodic", limit=10, cursor=None).items
        if r.source_message_ids == [f"{user}-1"] and r.kind == "turn"
    )
    service.update(ctx, correction.id, UpdateRequest(content="Sorry, I meant Wednesday."))
    facts = _facts(service, ctx, user)
    assert "Ann's exam is on 16 January 2024" not in facts  # Tuesday was never said now
    wednesday = facts["Ann's exam is on 17 January 2024"]
    assert (wednesday.status, wednesday.valid_to) == ("active", None)
    assert wednesday.metadata_["corrects"] == [f"{user}-0"]
    assert _sources(service, wednesday.id) == {f"{user}-0", f"{user}-1"}
    monday = facts["Ann's exam is on 15 January 2024"]
    assert monday.status == "superseded" and monday.valid_to == monday.valid_from
    results = service.search(ctx, SearchRequest(query="When is Ann's exam?", user_id=user, limit=5))
    assert any("17 January" in r.content for r in results)
    assert not any("15 January" in r.content or "16 January" in r.content for r in results)

    # Edited to no correction at all: Monday holds again.
    service.update(ctx, correction.id, UpdateRequest(content="Wish me luck!"))
    facts = _facts(service, ctx, user)
    assert "Ann's exam is on 17 January 2024" not in facts
    monday = facts["Ann's exam is on 15 January 2024"]
    assert (monday.status, monday.valid_to) == ("active", None)


def test_the_corrected_message_ranks_below_what_the_correction_says_until_it_goes(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, [("Ann", "My team dinner is on Monday."), ("Ann", "sorry, I meant Tuesday")])

    def ranked() -> list[str]:
        results = service.search(
            ctx, SearchRequest(query="When is Ann's team dinner?", user_id=user, limit=5)
        )
        return [r.content for r in results]

    turns = {
        r.source_message_ids[0]: r
        for r in service.list(ctx, user, memory_type="episodic", limit=10, cursor=None).items
        if r.kind == "turn"
    }
    said = turns[f"{user}-0"]
    assert (said.status, said.valid_to) == ("superseded", T0 + timedelta(minutes=1))  # until corrected
    order = ranked()
    tuesday = next(i for i, c in enumerate(order) if "16 January 2024" in c)
    monday = next((i for i, c in enumerate(order) if "on Monday" in c), len(order))
    assert tuesday < monday, order  # the Monday turn had ranked first (QA, session 21)
    service.delete(ctx, turns[f"{user}-1"].id)  # the correction goes: the message holds again
    again = next(
        r
        for r in service.list(ctx, user, memory_type="episodic", limit=10, cursor=None).items
        if r.id == said.id
    )
    assert (again.status, again.valid_to) == ("active", None)
