"""Long messages become passages whose provenance is exactly that message; roles are kept and told
apart in search results and the context block (real PostgreSQL, real embedding model)."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from memsvc.models import Memory
from memsvc.schemas import AddRequest, ContextRequest, Message, SearchRequest

START = datetime(2024, 3, 15, 9, tzinfo=UTC)

ANSWER = "\n\n".join(
    [
        "Great question! There are several parts to a fast dashboard, so let me walk through them one "
        "at a time, starting with the database and ending with the deployment.",
        "First, the database. Add an index on the transactions table over user_id and created_at, "
        "because every dashboard query filters on the user and sorts by date. Without it PostgreSQL "
        "scans the whole table, and that grows with every expense your users record each month.",
        "Second, caching. Put the monthly summary in Redis with a TTL of 300 seconds, keyed by the "
        "user id and the month, and invalidate the key whenever a transaction of that month changes. "
        "That alone usually brings the dashboard API from about 800ms down to around 250ms.",
        "Third, the front end. Load the charts lazily after the summary numbers render, and keep the "
        "Matplotlib images small: a PNG of a few kilobytes per chart is plenty for a dashboard.",
        "Finally, deployment. Run Gunicorn with four workers behind Nginx, enable gzip for the JSON "
        "answers, and watch the response times in your logs after each release so that a slow query "
        "shows up before your users notice it.",
    ]
)


CHAT = [
    ("user", "My budget tracker dashboard is slow. How can I speed it up before the launch?"),
    ("assistant", ANSWER),
    ("user", "Thanks! I will start with the database index tomorrow."),
]


def _chat(user: str, lines: list[tuple[str, str]] = CHAT) -> AddRequest:
    return AddRequest(
        user_id=user,
        session_id="s1",
        messages=[
            Message(role=role, content=text, id=f"m{i}", created_at=START + timedelta(minutes=i))
            for i, (role, text) in enumerate(lines)
        ],
    )


def _ingest(service, ctx, request: AddRequest):  # type: ignore[no-untyped-def]
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result is not None
    return outcome.result


def test_a_long_answer_is_stored_as_passages_of_that_message(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pa-{uuid.uuid4().hex[:6]}"
    result = _ingest(service, ctx, _chat(user))
    assert result.created.get("passage", 0) >= 2
    items = service.list(ctx, user, memory_type="episodic", limit=100, cursor=None).items
    turns = {m.source_message_ids[0]: m for m in items if m.kind == "turn"}
    passages = sorted((m for m in items if m.kind == "passage"), key=lambda m: m.metadata["passage"]["index"])
    assert len(passages) == result.created["passage"]
    # Each passage: part of the answer, provenance exactly that message, its role and time kept.
    for passage in passages:
        assert passage.source_message_ids == ["m1"]
        assert passage.role == "assistant"
        assert passage.event_at == turns["m1"].event_at
        words, own = ANSWER.split(), passage.content.split()
        assert any(words[i : i + len(own)] == own for i in range(len(words)))
        assert passage.metadata["passage"]["turn_id"] == str(turns["m1"].id)
        assert len(passage.content.split()) < len(ANSWER.split())
    assert " ".join(" ".join(p.content.split()) for p in passages) == " ".join(ANSWER.split())
    # Short messages stay whole.
    assert not any(m.kind == "passage" and m.source_message_ids != ["m1"] for m in items)
    # Sending the same messages again makes nothing new.
    again = _ingest(service, ctx, _chat(user))
    assert again.duplicates == 3 and not again.memory_ids


def test_search_returns_the_passage_that_answers_not_the_whole_message(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pb-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, _chat(user))
    results = service.search(
        ctx, SearchRequest(query="What TTL did you suggest for caching the monthly summary?", user_id=user)
    )
    top = results[0]
    assert top.kind == "passage" and top.role == "assistant"
    assert "TTL of 300 seconds" in top.content
    assert top.source_message_ids == ["m1"]
    assert len(top.content.split()) < len(ANSWER.split()) / 2
    # The whole answer is never returned, and one passage stands for its message in search.
    assert not any(r.kind == "turn" and r.source_message_ids == ["m1"] for r in results)
    assert sum(r.source_message_ids == ["m1"] for r in results) == 1


def test_the_context_block_says_who_said_what(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pc-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, _chat(user))
    block = service.context(
        ctx, ContextRequest(query="How should I cache the dashboard summary?", user_id=user, max_tokens=400)
    )
    lines = block.context.splitlines()
    ttl = next(line for line in lines if "TTL of 300 seconds" in line)
    assert "] assistant: " in ttl and ttl.endswith("(src: m1)")
    assert any("] user: " in line and "(src: m0)" in line for line in lines)
    passage_items = [i for i in block.items if i.kind == "passage"]
    assert passage_items and all(i.role == "assistant" for i in passage_items)
    # The assistant's opening courtesy is left out of its line; the memory keeps it.
    opening = service.context(
        ctx, ContextRequest(query="What are the parts of a fast dashboard?", user_id=user, max_tokens=400)
    )
    line = next(line for line in opening.context.splitlines() if "There are several parts" in line)
    assert "] assistant: There are several parts" in line
    first = next(i for i in opening.items if "There are several parts" in i.content)
    assert first.content.startswith("Great question! ")


def test_a_context_block_writes_a_sentence_of_a_message_once(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pc-{uuid.uuid4().hex[:6]}"
    # One paragraph: its passages are cut between sentences, each repeating the end of the last.
    steps = " ".join(
        f"Step {n}: tune the marathon plan's {topic} carefully, week by week, and note how your legs feel."
        for n, topic in enumerate(
            ["long runs", "tempo runs", "rest days", "hill repeats", "easy runs", "strides", "tapering",
             "fuelling", "hydration", "sleep", "shoes", "race pace"],
            1,
        )
    )  # fmt: skip
    _ingest(
        service, ctx, _chat(user, [("user", "How should I train for the marathon?"), ("assistant", steps)])
    )
    block = service.context(
        ctx,
        ContextRequest(
            query="How should I tune my marathon plan week by week?", user_id=user, max_tokens=2000
        ),
    )
    passages = [i for i in block.items if i.kind == "passage"]
    assert len(passages) >= 2  # a context block keeps the passages that overlap
    said = [
        sentence
        for line in block.context.splitlines()
        if "(src: m1)" in line
        for sentence in re.split(r"(?<=[.!?])\s+", line.split("assistant: ", 1)[-1].rsplit(" (src:", 1)[0])
    ]
    assert len(said) == len(set(said))


def test_a_question_about_what_i_said_prefers_the_users_messages(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pd-{uuid.uuid4().hex[:6]}"
    lines = [
        ("user", "I prefer PostgreSQL for my budget tracker because it keeps things simple."),
        (
            "assistant",
            "PostgreSQL is a solid choice for a budget tracker, and SQLite keeps things simple too.",
        ),
    ]
    _ingest(
        service,
        ctx,
        AddRequest(
            user_id=user,
            messages=[
                # A day apart (two sessions), so they are not merged into one excerpt.
                Message(role=role, content=text, id=f"r{i}", created_at=START + timedelta(days=i))
                for i, (role, text) in enumerate(lines)
            ],
        ),
    )

    def ranked(query: str) -> dict[str, tuple[int, float]]:
        results = service.search(
            ctx, SearchRequest(query=query, user_id=user, explain=True, types=["episodic"])
        )
        return {
            r.source_message_ids[0]: (i, r.metadata["explain"]["role"])
            for i, r in enumerate(results)
            if r.kind == "turn"
        }

    mine = ranked("Which database do I prefer for my budget tracker?")
    assert mine["r0"][1] > 0 and mine["r1"][1] == 0 and mine["r0"][0] < mine["r1"][0]
    theirs = ranked("Which database did you recommend for the budget tracker?")
    assert theirs["r1"][1] > 0 and theirs["r0"][1] == 0


DENVER = "\n\n".join(
    [
        "I live in Denver.",
        "The mountains around the city are tall, and the air up there is thin and dry through most of "
        "the winter months, so a visitor should drink water often and walk slowly on the first day.",
        "The light rail runs from the airport to Union Station every fifteen minutes, and the ride takes "
        "about forty minutes, which is quicker than a taxi when the highway is busy at rush hour.",
        "The old brick warehouses along the river have become breweries, galleries and small restaurants, "
        "and on summer evenings the patios are full of people watching the sun go down behind the peaks.",
    ]
)


def _said(service, ctx, user: str, text: str, at: datetime, message_id: str) -> None:  # type: ignore[no-untyped-def]
    message = Message(role="user", name="Ann", content=text, id=message_id, created_at=at)
    _ingest(service, ctx, AddRequest(user_id=user, session_id=message_id, messages=[message]))


def _memories(service, ctx, user: str) -> list[Memory]:  # type: ignore[no-untyped-def]
    with service.db.session() as session:
        return list(
            session.execute(
                select(Memory).where(Memory.tenant_id == ctx.tenant_id, Memory.user_id == user)
            ).scalars()
        )


def test_the_passages_of_a_superseded_turn_are_closed_and_reopened_with_it(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ps-{uuid.uuid4().hex[:6]}"
    _said(service, ctx, user, DENVER, START, "m1")
    _said(service, ctx, user, "I moved to Boston.", START + timedelta(days=150), "m2")
    rows = _memories(service, ctx, user)
    turn = next(m for m in rows if m.kind == "turn" and m.message_id == "m1")
    passages = [m for m in rows if m.kind == "passage"]
    assert len(passages) >= 2
    # The turn went out of date with its fact; each passage of it with the same end and successor.
    assert turn.status == "superseded" and turn.valid_to is not None
    for p in passages:
        assert (p.status, p.superseded_by, p.valid_to) == ("superseded", turn.superseded_by, turn.valid_to)
        assert [e.op for e in service.history(ctx, p.id)] == ["create", "supersede"]
    # Search about the present no longer puts the old city's passage first; as of then it finds it.
    now = service.search(ctx, SearchRequest(query="Where does Ann live?", user_id=user, limit=3))
    assert "Boston" in now[0].content
    asked = {"query": "Where does Ann live?", "user_id": user, "types": ["episodic"]}
    then = service.search(ctx, SearchRequest(**asked, as_of=START + timedelta(days=30)))
    assert then[0].kind == "passage" and then[0].source_message_ids == ["m1"]
    assert service.search(ctx, SearchRequest(**asked))[0].source_message_ids == ["m2"]

    # Its successor deleted, the fact is closed by the words as said (the move), and so are the
    # turn and its passages; with that one deleted too, all hold again.
    by_content = {m.content: m for m in rows if m.type == "semantic"}
    service.delete(ctx, by_content["Ann lives in Boston"].id)
    after = {m.id: m for m in _memories(service, ctx, user)}
    moved = by_content["Ann moved to Boston"].id
    assert after[turn.id].superseded_by == moved
    assert all(after[p.id].superseded_by == moved and after[p.id].status == "superseded" for p in passages)
    service.delete(ctx, moved)
    after = {m.id: m for m in _memories(service, ctx, user)}
    for memory_id in (turn.id, *(p.id for p in passages)):
        assert (after[memory_id].status, after[memory_id].valid_to, after[memory_id].superseded_by) == (
            "active",
            None,
            None,
        )
        assert service.history(ctx, memory_id)[-1].op == "reopen"


def test_a_summary_request_gets_whole_messages(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pw-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, _chat(user))
    results = service.search(
        ctx, SearchRequest(query="Can you summarize how I should speed up my dashboard?", user_id=user)
    )
    (answer,) = [r for r in results if "m1" in r.source_message_ids]
    assert answer.kind in ("turn", "excerpt") and f"assistant: {ANSWER}" in answer.content  # whole
    assert not [r for r in results if r.kind == "passage"]
    # A question that only names a summary still gets the passage that answers it.
    pointed = service.search(ctx, SearchRequest(query="What TTL for the monthly summary?", user_id=user))
    assert pointed[0].kind == "passage" and "TTL of 300 seconds" in pointed[0].content


def test_a_summary_request_gets_what_was_asked_and_answered_together(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pw-{uuid.uuid4().hex[:6]}"
    long_answer = "\n\n".join(
        [ANSWER, ANSWER.replace("dashboard", "report page"), ANSWER.replace("Redis", "Memcached")]
    )
    lines = [
        ("user", "Here is where my dashboard stands before the launch, and I would like your plan for it."),
        ("assistant", long_answer),  # 570 words: past the words an ordinary result may merge
        ("user", "My sister is visiting next week, so I will be busy on the weekend."),
    ]
    _ingest(service, ctx, _chat(user, lines))
    results = service.search(
        ctx, SearchRequest(query="Can you summarize the plan for my dashboard launch?", user_id=user)
    )
    assert results[0].kind == "excerpt"
    assert results[0].source_message_ids[:2] == ["m0", "m1"], [
        (r.kind, r.source_message_ids) for r in results
    ]


def test_a_message_the_encoder_reads_whole_lifts_its_best_passage(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pw-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, _chat(user))
    assert len(ANSWER.split()) <= service.search_engine.config.ranking.whole_message_max_words
    # A question about the answer as a whole: each passage holds one of its parts.
    query = "How do I make my budget tracker dashboard faster, from the database to deployment?"

    def answer_passage() -> tuple[float, dict[str, float]]:
        results = service.search(ctx, SearchRequest(query=query, user_id=user, explain=True))
        (passage,) = [r for r in results if r.source_message_ids == ["m1"]]
        assert passage.kind == "passage"
        parts = passage.metadata["explain"]
        total = sum(v for k, v in parts.items() if k not in ("cosine", "bm25"))
        assert total == pytest.approx(passage.score, abs=2e-3)  # the parts add up to the score
        return passage.score, parts

    score, parts = answer_passage()
    assert parts["message"] > 0
    engine = service.search_engine
    default = engine.config
    engine.config = replace(default, ranking=replace(default.ranking, whole_message_max_words=0))
    try:
        alone, parts_alone = answer_passage()
    finally:
        engine.config = default
    assert parts_alone["message"] == 0 and alone == pytest.approx(score - parts["message"], abs=2e-3)


def _reply(topic: str) -> str:
    """A long answer (cut into passages) about `topic`."""
    return " ".join(
        f"Here is step {n} for the {topic}: keep the code in its own module, test it with a few "
        f"sample rows, and check the numbers by hand before you ship it."
        for n in range(1, 5)
    )


def test_an_order_question_gets_my_messages_of_a_thread_as_one_excerpt(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"pa-{uuid.uuid4().hex[:6]}"
    lines = [
        ("user", "For my budget tracker dashboard I want to add a monthly spending chart first."),
        ("assistant", _reply("monthly spending chart")),
        ("user", "For my budget tracker dashboard I also want to add a spending category pie chart."),
        ("assistant", _reply("category pie chart")),
        ("user", "For my budget tracker dashboard I then want to add a savings goal progress bar."),
        ("assistant", _reply("savings goal progress bar")),
    ]
    _ingest(service, ctx, _chat(user, lines))
    question = "In what order did I bring up the features of my budget tracker dashboard?"
    results = service.search(ctx, SearchRequest(query=question, user_id=user, limit=10))
    top = results[0]
    # The user's messages together, the answers between them left out and marked, each cited.
    assert top.kind == "excerpt"
    assert len(top.source_message_ids) >= 2
    assert set(top.source_message_ids) <= {"m0", "m2", "m4"}
    assert "\n…\n" in top.content
    assert "progress bar" in top.content or "pie chart" in top.content
    # Another question about the same messages keeps each of them a result of its own.
    plain = service.search(
        ctx, SearchRequest(query="Which dashboard features did I want?", user_id=user, limit=10)
    )
    assert all(len(r.source_message_ids) == 1 for r in plain)
