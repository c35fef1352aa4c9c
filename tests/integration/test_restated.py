"""A fact said again is one memory citing every message that says it, not a pile of copies (real
PostgreSQL, real embedding model)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from memsvc.ingest import RESTATED_MAX_SOURCES
from memsvc.schemas import AddRequest, Message, SearchRequest

T0 = datetime(2024, 3, 1, 9, tzinfo=UTC)


def _add(service, ctx, user: str, said: list[tuple[str, str]], day: int) -> None:  # type: ignore[no-untyped-def]
    messages = [
        Message(
            role="user",
            name="Zoe",
            content=text,
            id=message_id,
            created_at=T0 + timedelta(days=day, minutes=i),
        )
        for i, (message_id, text) in enumerate(said)
    ]
    outcome = service.run_ingest_job(service.submit_ingest(ctx, AddRequest(user_id=user, messages=messages)))
    assert outcome.status == "succeeded", outcome.error


def _facts(service, ctx, user: str, words: str) -> list:  # type: ignore[no-untyped-def,type-arg]
    items = service.list(ctx, user, memory_type="semantic", limit=200, cursor=None).items
    return [m for m in items if words in m.content]


def test_a_fact_said_again_cites_every_message_that_says_it(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"rs-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("a", "I'm allergic to peanuts.")], 0)
    query = SearchRequest(query="What is Zoe allergic to?", user_id=user, limit=5)
    assert service.search(ctx, query)  # the corpus is cached before the later adds
    _add(
        service,
        ctx,
        user,
        [("b", "I'm allergic to peanuts."), ("c", "Just so you know, I'm allergic to peanuts.")],
        30,
    )
    (fact,) = _facts(service, ctx, user, "allergic to peanuts")
    assert fact.status == "active" and sorted(fact.source_message_ids) == ["a", "b", "c"]
    found = next(r for r in service.search(ctx, query) if r.id == fact.id)
    assert sorted(found.source_message_ids) == ["a", "b", "c"]


def test_past_the_messages_a_result_may_cite_a_new_memory_is_made(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"rs-{uuid.uuid4().hex[:6]}"
    for day in range(RESTATED_MAX_SOURCES + 1):
        _add(service, ctx, user, [(f"m{day}", "I love hiking.")], day)
    facts = _facts(service, ctx, user, "loves hiking")
    assert sorted(len(f.source_message_ids) for f in facts) == [1, RESTATED_MAX_SOURCES]


def test_a_value_said_again_after_another_is_a_new_memory(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"rs-{uuid.uuid4().hex[:6]}"
    for day, (message_id, text) in enumerate(
        [("a", "I live in Berlin."), ("b", "I live in Paris."), ("c", "I live in Berlin.")]
    ):
        _add(service, ctx, user, [(message_id, text)], day)
    berlin = sorted(_facts(service, ctx, user, "lives in Berlin"), key=lambda m: m.source_message_ids)
    assert [(m.source_message_ids, m.status) for m in berlin] == [(["a"], "superseded"), (["c"], "active")]


def test_a_fact_whose_first_message_is_deleted_is_dated_by_the_next(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"rs-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("d4", "I'm allergic to cats.")], 0)
    _add(service, ctx, user, [("d5", "I'm allergic to cats.")], 1)
    (fact,) = _facts(service, ctx, user, "allergic to cats")
    assert fact.valid_from == T0
    turn = next(
        m
        for m in service.list(ctx, user, memory_type="episodic", limit=50, cursor=None).items
        if m.kind == "turn" and m.source_message_ids == ["d4"]
    )
    service.delete(ctx, turn.id)
    (fact,) = _facts(service, ctx, user, "allergic to cats")
    # It was dated (and shown in the context as of) the day of the message that is gone.
    assert fact.source_message_ids == ["d5"]
    assert fact.valid_from == fact.event_at == T0 + timedelta(days=1)


def test_a_fact_said_again_in_older_history_sent_later_holds_from_then(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"rs-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, [("new", "I'm allergic to peanuts."), ("home", "I live in Berlin.")], 40)
    # Older history imported afterwards: a month before, the same words.
    _add(service, ctx, user, [("old", "I'm allergic to peanuts.")], 10)
    (fact,) = _facts(service, ctx, user, "allergic to peanuts")
    assert fact.valid_from == T0 + timedelta(days=10) and sorted(fact.source_message_ids) == ["new", "old"]
    change = service.history(ctx, fact.id)[-1]
    assert change.op == "update" and change.after == {"valid_from": (T0 + timedelta(days=10)).isoformat()}
    # Not past another value of its attribute: Berlin did not hold while Paris did.
    _add(service, ctx, user, [("paris", "I live in Paris.")], 20)
    _add(service, ctx, user, [("older", "I live in Berlin.")], 5)
    (berlin,) = [m for m in _facts(service, ctx, user, "lives in Berlin") if m.status == "active"]
    assert berlin.valid_from == T0 + timedelta(days=40, minutes=1)
