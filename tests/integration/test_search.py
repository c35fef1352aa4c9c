"""Read-path behaviour that matters: time, supersession, dates, budgets, and the index backend."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memsvc.importers import locomo_batches
from memsvc.schemas import AddRequest, ContextRequest, Message, SearchRequest
from memsvc.search import count_tokens

LOCOMO = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo" / "conv-26.json"


def _ingest(service, ctx, request: AddRequest):  # type: ignore[no-untyped-def]
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error
    return outcome.result


def _say(user: str, text: str, when: datetime, message_id: str) -> AddRequest:
    return AddRequest(
        user_id=user,
        session_id=message_id,
        messages=[Message(role="user", name="Ann", content=text, id=message_id, created_at=when)],
    )


def _fact(service, ctx, user: str, needle: str):  # type: ignore[no-untyped-def]
    listing = service.list(ctx, user, memory_type="semantic", limit=100, cursor=None)
    return next(m for m in listing.items if needle in m.content)


def test_superseded_fact_loses_now_and_wins_as_of_the_past(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"mover-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, _say(user, "I live in Boston.", datetime(2022, 1, 10, tzinfo=UTC), "a1"))
    for i, text in enumerate(
        [
            "My sister Jo is a pilot.",
            "I adopted a dog called Rex.",
            "We love hiking on weekends.",
            "I bake bread on Sundays.",
        ]
    ):
        _ingest(service, ctx, _say(user, text, datetime(2023, 3, 1 + i, tzinfo=UTC), f"x{i}"))
    _ingest(service, ctx, _say(user, "I live in Denver now.", datetime(2024, 6, 1, tzinfo=UTC), "a2"))
    boston = _fact(service, ctx, user, "Boston")
    # Ingest closed Boston (a newer residence), with the new value as successor ("now" said, it is
    # its own plain statement).
    denver = next(
        m
        for m in service.list(ctx, user, memory_type="semantic", limit=100, cursor=None).items
        if m.content == "Ann lives in Denver now"
    )
    assert service.get(ctx, boston.id).status == "superseded"

    def order(**kw):  # type: ignore[no-untyped-def]
        results = service.search(
            ctx, SearchRequest(query="Where does Ann live?", user_id=user, types=["semantic"], **kw)
        )
        return [r.id for r in results]

    # Denver as said and any statement of it: the first of them ranks above Boston.
    denver_ids = {
        m.id
        for m in service.list(ctx, user, memory_type="semantic", limit=100, cursor=None).items
        if "Denver" in m.content
    }
    now = order()
    first_denver = min(now.index(i) for i in denver_ids if i in now)
    assert first_denver < now.index(boston.id)
    past = order(as_of=datetime(2023, 1, 1, tzinfo=UTC))
    assert past[0] == boston.id and not denver_ids & set(past)
    history = service.history(ctx, boston.id)
    assert [e.op for e in history] == ["create", "supersede"]
    assert history[1].after and history[1].after["superseded_by"] == str(denver.id)
    assert {r.user_id for r in service.search(ctx, SearchRequest(query="Boston", user_id=user))} == {user}
    # The context block says the old value ended: a model reading it sees one home town now.
    lines = service.context(
        ctx, ContextRequest(query="Where does Ann live?", user_id=user)
    ).context.splitlines()
    boston_lines = [line for line in lines if "Ann lives in Boston" in line]
    assert boston_lines and all("(until 2024-06-01)" in line for line in boston_lines)
    assert all("(until" not in line for line in lines if "Denver" in line)


def test_as_of_sees_a_fact_from_when_it_held_not_from_when_it_was_told(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"mover-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, _say(user, "I live in Lisbon.", datetime(2024, 1, 10, tzinfo=UTC), "b1"))
    # Said on 10 June of the week before: Boston holds from 3 June, Lisbon until then.
    _ingest(service, ctx, _say(user, "I moved to Boston last week.", datetime(2024, 6, 10, tzinfo=UTC), "b2"))

    def cities(as_of: datetime) -> list[str]:
        results = service.search(
            ctx, SearchRequest(query="Where does Ann live?", user_id=user, types=["semantic"], as_of=as_of)
        )
        return [c for r in results for c in ("Lisbon", "Boston") if c in r.content]

    assert set(cities(datetime(2024, 6, 5, tzinfo=UTC))) == {"Boston"}  # was: neither
    assert set(cities(datetime(2024, 6, 2, tzinfo=UTC))) == {"Lisbon"}
    assert set(cities(datetime(2024, 1, 9, tzinfo=UTC))) == set()


@pytest.mark.parametrize("arrival", ["newer first", "one batch"])
def test_the_turn_of_an_old_value_goes_out_of_date_whatever_order_it_arrives_in(  # type: ignore[no-untyped-def]
    service, tenant, arrival: str
) -> None:
    """Supersession ran before the batch's sources were written, so a batch older than what was
    stored closed its fact but left the turn that said it current, second for "Where …?"."""
    ctx, _ = tenant
    user = f"order-{uuid.uuid4().hex[:6]}"
    lisbon = Message(
        role="user",
        name="Pia",
        content="I live in Lisbon.",
        id="a",
        created_at=datetime(2025, 1, 10, tzinfo=UTC),
    )
    porto = Message(
        role="user",
        name="Pia",
        content="I moved to Porto.",
        id="b",
        created_at=datetime(2025, 6, 10, tzinfo=UTC),
    )
    batches = [[porto], [lisbon]] if arrival == "newer first" else [[lisbon, porto]]
    for messages in batches:
        _ingest(service, ctx, AddRequest(user_id=user, session_id="s", messages=messages))
    listing = service.list(ctx, user, memory_type=None, limit=100, cursor=None).items
    turn = next(m for m in listing if m.kind == "turn" and m.content == "I live in Lisbon.")
    fact = next(m for m in listing if m.content == "Pia lives in Lisbon")
    for old in (turn, fact):
        assert old.status == "superseded" and old.valid_to == datetime(2025, 6, 10, tzinfo=UTC), old
        assert [e.op for e in service.history(ctx, old.id)] == ["create", "supersede"]
    results = service.search(ctx, SearchRequest(query="Where does Pia live?", user_id=user))
    assert "Porto" in results[0].content
    assert all(r.status != "active" for r in results if "Lisbon" in r.content)


def test_a_value_that_comes_in_between_later_closes_the_older_turn_at_its_own_start(service, tenant) -> None:  # type: ignore[no-untyped-def]
    """Barista (January) came after nurse (September) and closed there; waitress (May), sent last,
    moves the barista fact's end to May, and the turn that said it moves with it."""
    ctx, _ = tenant
    user = f"order-{uuid.uuid4().hex[:6]}"
    said = [
        ("n", "I work as a nurse.", datetime(2024, 9, 1, tzinfo=UTC)),
        ("b", "I work as a barista.", datetime(2024, 1, 1, tzinfo=UTC)),
        ("w", "I work as a waitress.", datetime(2024, 5, 1, tzinfo=UTC)),
    ]
    for message_id, text, at in said:
        message = Message(role="user", name="Pia", content=text, id=message_id, created_at=at)
        _ingest(service, ctx, AddRequest(user_id=user, session_id="s", messages=[message]))
    listing = service.list(ctx, user, memory_type=None, limit=100, cursor=None).items
    barista = [m for m in listing if "barista" in m.content and m.kind in ("turn", "fact")]
    assert {m.kind for m in barista} == {"turn", "fact"}
    for old in barista:
        assert (old.status, old.valid_to) == ("superseded", datetime(2024, 5, 1, tzinfo=UTC)), old
    june = SearchRequest(query="Where does Pia work?", user_id=user, as_of=datetime(2024, 6, 1, tzinfo=UTC))
    assert not any("barista" in r.content for r in service.search(ctx, june))


@pytest.mark.skipif(not LOCOMO.exists(), reason="needs shared/data/locomo")
def test_date_question_finds_the_turn_that_states_the_date(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"locomo-{uuid.uuid4().hex[:6]}"
    for batch in list(locomo_batches(json.loads(LOCOMO.read_text()), user))[:3]:
        _ingest(service, ctx, batch)
    results = service.search(
        ctx, SearchRequest(query="When did Caroline go to the LGBTQ support group?", user_id=user, limit=3)
    )
    assert any("D1:3" in r.source_message_ids and len(r.source_message_ids) <= 3 for r in results)
    # "When did Melanie paint a sunrise?" — D1:12 says she painted it "last year".
    results = service.search(
        ctx, SearchRequest(query="When did Melanie paint a sunrise?", user_id=user, limit=5)
    )
    assert any("D1:12" in r.source_message_ids for r in results)


@pytest.mark.skipif(not LOCOMO.exists(), reason="needs shared/data/locomo")
@pytest.mark.parametrize("max_tokens", [50, 120, 400, 1000])
def test_context_never_exceeds_its_budget(service, tenant, max_tokens: int) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ctx-{uuid.uuid4().hex[:6]}"
    for batch in list(locomo_batches(json.loads(LOCOMO.read_text()), user))[:2]:
        _ingest(service, ctx, batch)
    response = service.context(
        ctx,
        ContextRequest(
            query="What is Caroline's identity and what does she plan?", user_id=user, max_tokens=max_tokens
        ),
    )
    assert count_tokens(response.context) <= max_tokens
    assert response.tokens == count_tokens(response.context)
    # The entities are those of the lines above, citing their messages (not of results left out).
    shown = {m for r in response.items for m in r.source_message_ids}
    for line in response.context.partition("## Related entities\n")[2].splitlines():
        assert set(line.rsplit(" (src: ", 1)[1].rstrip(")…").split(",")) <= shown, line
    if max_tokens >= 120:
        assert response.items and all(r.source_message_ids for r in response.items)
        # Facts first, then events oldest first; every line names its sources.
        lines = [line for line in response.context.splitlines() if line.startswith("- ")]
        assert all("(src: " in line for line in lines)
    if max_tokens >= 1000:
        headers = [line for line in response.context.splitlines() if line.startswith("## ")]
        assert headers == ["## Facts", "## Events (oldest first)", "## Related entities"]
        # Each entity cites messages that name it (a speaker's own turns do not, unless they do); a
        # shared photo's caption is part of its message ("a painting of a woman…").
        said = {
            t["dia_id"]: f"{t['text']} {t.get('blip_caption') or ''}".lower()
            for key, turns in json.loads(LOCOMO.read_text()).items()
            if key.startswith("session_") and isinstance(turns, list)
            for t in turns
        }
        entities = response.context.split("## Related entities\n")[1].splitlines()
        assert entities
        for line in entities:
            label, refs = line[2:].split(" (src: ")
            name = label.rsplit(" (", 1)[0].lower()
            assert all(name in said[ref] for ref in refs.rstrip(")…").split(",")), line


@pytest.mark.skipif(not LOCOMO.exists(), reason="needs shared/data/locomo")
def test_index_backend_agrees_with_exact_and_forgets_deletions(
    settings, database, embedder, service, tenant
) -> None:  # type: ignore[no-untyped-def]
    from memsvc.service import MemoryService

    ctx, _ = tenant
    user = f"index-{uuid.uuid4().hex[:6]}"
    for batch in list(locomo_batches(json.loads(LOCOMO.read_text()), user))[:3]:
        _ingest(service, ctx, batch)
    indexed = MemoryService(
        settings.model_copy(update={"search_backend": "index"}), database, embedder=embedder
    )
    try:
        assert indexed.index is not None and indexed.index.size > 0
        questions = [q["question"] for q in json.loads(LOCOMO.read_text())["qa"][:15]]
        agree = 0
        for q in questions:
            exact = [r.id for r in service.search(ctx, SearchRequest(query=q, user_id=user, limit=5))]
            via_index = [r.id for r in indexed.search(ctx, SearchRequest(query=q, user_id=user, limit=5))]
            agree += len(set(exact) & set(via_index))
        assert agree >= 0.8 * 5 * len(questions)

        top = indexed.search(ctx, SearchRequest(query=questions[0], user_id=user, limit=1))[0]
        for memory_id in top.metadata.get("memory_ids", [str(top.id)]):
            indexed.delete(ctx, uuid.UUID(memory_id))
        again = indexed.search(ctx, SearchRequest(query=questions[0], user_id=user, limit=20))
        assert str(top.id) not in {str(r.id) for r in again}
    finally:
        indexed.search_engine.dense.close()  # type: ignore[union-attr]
        indexed.index.stop()  # type: ignore[union-attr]


def test_an_excerpt_joins_an_answer_to_its_question_not_an_unrelated_reply(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"readme-{uuid.uuid4().hex[:6]}"
    at = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    lines = [  # the README's example, then a question and its answer
        ("Caroline", "I went to a LGBTQ support group yesterday and it was so powerful."),
        ("Melanie", "That's great! I painted a lake sunrise last year."),
        ("Caroline", "Which book are you reading at the moment?"),
        ("Melanie", "Charlotte's Web, with the kids."),
    ]
    _ingest(
        service,
        ctx,
        AddRequest(
            user_id=user,
            session_id="s1",
            messages=[
                Message(
                    role="user", name=name, content=text, id=f"m{i}", created_at=at.replace(minute=56 + i)
                )
                for i, (name, text) in enumerate(lines)
            ],
        ),
    )
    results = service.search(
        ctx, SearchRequest(query="When did Caroline go to the support group?", user_id=user, limit=5)
    )
    answer = next(r for r in results if "m0" in r.source_message_ids)
    assert answer.source_message_ids == ["m0"] and "painted" not in answer.content
    # A question and its answer come back together, whichever of the two the query matches.
    results = service.search(ctx, SearchRequest(query="What is Melanie reading?", user_id=user, limit=5))
    assert any(r.kind == "excerpt" and r.source_message_ids == ["m2", "m3"] for r in results)


def test_a_consolidation_run_hides_what_it_forgets_and_the_rest_ranks_as_before(service, tenant) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    ctx, _ = tenant
    user = f"forget-{uuid.uuid4().hex[:6]}"
    t0 = datetime(2024, 1, 10, 12, tzinfo=UTC)
    lines = [
        "I signed up for a pottery class downtown.",
        "Thanks, Jon! Appreciate the kind words.",
        "The pottery class meets on Thursdays.",
        "Wow, congrats!",
        "My first bowl from the class cracked in the kiln.",
    ]
    _ingest(
        service,
        ctx,
        AddRequest(
            user_id=user,
            session_id="s1",
            messages=[
                Message(
                    role="user", name="Ann", content=text, id=f"m{i}", created_at=t0 + timedelta(minutes=i)
                )
                for i, text in enumerate(lines)
            ],
        ),
    )
    _ingest(service, ctx, _say(user, "I moved my studio to the garage.", t0 + timedelta(days=90), "m9"))
    request = SearchRequest(
        query="thanks for the kind words about the pottery class", user_id=user, explain=True
    )

    def search() -> list:  # type: ignore[type-arg]
        # Through the engine, not the service: a search counts as a use, and a use keeps a memory.
        with service.db.session() as session:
            return service.search_engine.search(session, ctx, request)

    before = search()
    small_talk = {r.id for r in before if r.metadata["explain"]["importance"] < 0}
    by_content = {r.content: r for r in before}
    # Consolidation's judgement, at search time: the thanks and the congratulations rank lower
    # (0.8 x the penalty: importance 0.1 where an ordinary memory has 0.5), and nothing else does.
    assert small_talk == {by_content[lines[1]].id, by_content[lines[3]].id}
    penalty = service.search_engine.config.ranking.low_importance_penalty
    assert by_content[lines[1]].metadata["explain"]["importance"] == pytest.approx(-0.8 * penalty)
    assert before[0].content != lines[1]

    service.consolidate(ctx.tenant_id, user, now=t0 + timedelta(days=100))
    listing = service.list(ctx, user, memory_type=None, limit=100, cursor=None, status="archived")
    archived = {m.id for m in listing.items}
    assert archived & {r.id for r in before} == small_talk
    after = search()
    # The run only hides rows: they still count in the scoring, so what stays keeps its score.
    kept = [r for r in before if r.id not in small_talk]
    assert [r.id for r in after] == [r.id for r in kept]
    assert [r.score for r in after] == pytest.approx([r.score for r in kept])


def test_the_dense_query_is_the_question_without_its_framing(service, tenant, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"focus-{uuid.uuid4().hex[:6]}"
    _ingest(
        service,
        ctx,
        _say(user, "I set up the budget tracker's database today.", datetime(2024, 3, 1, tzinfo=UTC), "m0"),
    )
    engine = service.search_engine
    embedded: list[str] = []
    embed = engine.embedder.embed

    def recording(texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        embedded.extend(texts)
        return embed(texts, *args, **kwargs)

    monkeypatch.setattr(engine.embedder, "embed", recording)
    question = (
        "Can you list the order in which I brought up different aspects of my budget tracker "
        "throughout our conversations? Mention ONLY and ONLY three items."
    )
    results = service.search(ctx, SearchRequest(query=question, user_id=user))
    assert embedded == ["my budget tracker?"]
    assert results[0].source_message_ids == ["m0"]


def test_a_question_about_places_raises_the_memories_that_name_one(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"place-{uuid.uuid4().hex[:6]}"
    said = [
        "Last summer I took a trip to Lisbon with my sister.",
        "I have been baking sourdough bread every weekend and it is getting better.",
        "In April I finally visited Kyoto and saw the temples.",
    ]
    for i, text in enumerate(said):
        _ingest(service, ctx, _say(user, text, datetime(2024, 3, 1 + i, tzinfo=UTC), f"m{i}"))
    place_boost = service.search_engine.config.place_boost

    def place_part(query: str) -> dict[str, float]:
        results = service.search(
            ctx, SearchRequest(query=query, user_id=user, explain=True, types=["episodic"])
        )
        return {r.source_message_ids[0]: r.metadata["explain"]["place"] for r in results}

    assert place_part("Which cities has Ann been to?") == {"m0": place_boost, "m1": 0.0, "m2": place_boost}
    assert set(place_part("What does Ann bake?").values()) == {0.0}


def test_a_token_is_a_chinese_or_japanese_character_not_a_run_of_them() -> None:
    # A 15-character sentence was 1 token, so a small budget held several times its size.
    assert count_tokens("我们明天去北京看长城然后吃烤鸭") == 15
    assert count_tokens("東京タワーに行きました") == 11
    assert count_tokens("Hello, world!") == 4


def test_a_plan_is_held_from_when_it_was_made_not_from_its_date(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"plan-{uuid.uuid4().hex[:6]}"
    said = datetime(2024, 3, 1, 12, tzinfo=UTC)
    _ingest(service, ctx, _say(user, "I'm going to Tokyo in June.", said, "m0"))

    def plans(as_of: datetime) -> list[str]:
        query = SearchRequest(
            query="What are my travel plans?", user_id=user, types=["semantic"], as_of=as_of
        )
        return [r.content for r in service.search(ctx, query) if r.kind == "plan"]

    tokyo = ["Ann is going to Tokyo in June 2024"]
    assert plans(datetime(2024, 4, 1, tzinfo=UTC)) == tokyo  # made, not yet due
    assert plans(datetime(2024, 7, 1, tzinfo=UTC)) == tokyo
    assert plans(datetime(2024, 2, 1, tzinfo=UTC)) == []  # not yet said
    context = service.context(
        ctx,
        ContextRequest(
            query="What are my travel plans?", user_id=user, as_of=datetime(2024, 4, 1, tzinfo=UTC)
        ),
    )
    assert "Ann is going to Tokyo in June 2024" in context.context

    # Called off in April, before its time: it never happened, but it was the plan until then.
    _ingest(
        service, ctx, _say(user, "I cancelled my Tokyo trip.", datetime(2024, 4, 20, 12, tzinfo=UTC), "m1")
    )
    assert plans(datetime(2024, 4, 1, tzinfo=UTC)) == ["Ann is going to Tokyo in June 2024"]
    assert plans(datetime(2024, 5, 1, tzinfo=UTC)) == plans(datetime(2024, 7, 1, tzinfo=UTC)) == []
    now = service.search(
        ctx, SearchRequest(query="What are my travel plans?", user_id=user, types=["semantic"])
    )
    assert "Ann is going to Tokyo in June 2024" not in [r.content for r in now]


def test_a_context_block_leaves_small_talk_out_with_budget_to_spare(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"st-{uuid.uuid4().hex[:6]}"
    said = datetime(2024, 3, 1, 12, tzinfo=UTC)
    chat = [
        ("user", "I'm vegetarian, so food might be tricky in Japan."),
        ("assistant", "Kyoto has many temple restaurants that are fully vegetarian."),
        ("user", "thanks!"),
        ("user", "ok cool"),
        ("user", "Should I book the rail pass?"),
        ("assistant", "Yes, the rail pass pays off for your route."),
    ]
    messages = [
        Message(role=role, content=text, id=f"m{i}", created_at=said.replace(minute=i))
        for i, (role, text) in enumerate(chat)
    ]
    _ingest(service, ctx, AddRequest(messages=messages, user_id=user, session_id="s"))
    block = service.context(ctx, ContextRequest(query="What do I eat?", user_id=user, max_tokens=2000))
    assert "vegetarian" in block.context
    assert "thanks!" not in block.context and "ok cool" not in block.context
    # Search still finds them when asked for, below everything else.
    found = service.search(ctx, SearchRequest(query="thanks", user_id=user, limit=20))
    assert any(r.content == "thanks!" for r in found)


def test_what_replaced_a_memory_ranks_above_it_for_a_question_about_now(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"sv-{uuid.uuid4().hex[:6]}"
    said = datetime(2024, 3, 1, 12, tzinfo=UTC)
    for i, text in enumerate(
        [
            "Our backend is written in Flask.",
            "I'm on Python 3.11.",
            "We switched from Flask to FastAPI.",
            "I upgraded to Python 3.12 yesterday.",
        ]
    ):
        _ingest(service, ctx, _say(user, text, said.replace(day=1 + 10 * i), f"m{i}"))
    assert _fact(service, ctx, user, "Python 3.11").status == "superseded"

    def top(query: str, **past: datetime) -> str:
        return service.search(ctx, SearchRequest(query=query, user_id=user, limit=5, **past))[0].content

    # The old turn shares the question's words ("backend"); what replaced it comes first anyway.
    assert "FastAPI" in top("What web framework does our backend use?")
    assert "3.12" in top("What Python version am I on?")
    # Asked about the past, the old value answers.
    assert "3.11" in top("What Python version was I on?", as_of=said.replace(day=20))
