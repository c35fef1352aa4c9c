"""A standing instruction ("Always … when I ask about …") is remembered as a preference that the
requests it governs find, though they are worded nothing like it (real PostgreSQL, real model)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from memsvc.schemas import AddRequest, ContextRequest, Message, SearchRequest, UpdateRequest

START = datetime(2024, 3, 15, 9, tzinfo=UTC)
INSTRUCTION = "Always give step-by-step explanations with concrete examples when I ask about probability."

LINES = [
    ("user", "I'm revising for my statistics exam next week and want to get conditional probability right."),
    ("assistant", "Happy to help. Conditional probability is the chance of A given that B happened."),
    ("user", INSTRUCTION),
    ("assistant", "Understood, I will explain probability step by step with examples."),
    ("user", "My textbook asks for the odds of rolling two sixes with a pair of dice."),
    ("assistant", "Each die shows a six with chance 1/6, so two sixes come up with chance 1/36."),
    ("user", "The exam also has a question on drawing two aces from a deck without replacement."),
    ("assistant", "The first ace has chance 4/52, the second 3/51, so both have chance 1/221."),
    ("user", "My study group meets in the library on Thursday evenings to work through dice problems."),
]


def _ingest(service, ctx, user: str, lines: list[tuple[str, str]] = LINES) -> None:  # type: ignore[no-untyped-def]
    request = AddRequest(
        user_id=user,
        session_id="s1",
        messages=[
            Message(role=role, content=text, id=f"m{i}", created_at=START + timedelta(minutes=i))
            for i, (role, text) in enumerate(lines)
        ],
    )
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error


def _add_one_by_one(service, ctx, user: str, said: list[tuple[datetime, str]]) -> None:  # type: ignore[no-untyped-def]
    """Each message in an add of its own (ids t0, t1, ...)."""
    for i, (at, text) in enumerate(said):
        request = AddRequest(
            user_id=user, messages=[Message(role="user", content=text, id=f"t{i}", created_at=at)]
        )
        outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
        assert outcome.status == "succeeded", outcome.error


def _say_one_by_one(service, ctx, user: str, said: list[tuple[datetime, str]]):  # type: ignore[no-untyped-def]
    """`_add_one_by_one`, then the context block for a question no instruction is about, and the
    lines of its `## Instructions`."""
    _add_one_by_one(service, ctx, user, said)
    block = service.context(ctx, ContextRequest(query="What should I cook?", user_id=user, max_tokens=400))
    return block, block.context.split("## Instructions\n", 1)[1].split("\n\n", 1)[0].splitlines()


def _statuses(service, ctx, user: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The user's semantic memories: content -> status."""
    return {
        r.content: r.status
        for r in service.list(ctx, user, memory_type="semantic", limit=50, cursor=None).items
    }


def _search(service, ctx, user: str, query: str):  # type: ignore[no-untyped-def]
    return service.search(ctx, SearchRequest(query=query, user_id=user, limit=3))


def test_the_instruction_a_request_falls_under_is_among_its_first_results(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, user)
    request = "How likely is it that I draw a red card from a shuffled deck?"
    results = _search(service, ctx, user, request)
    instructions = [r for r in results if r.metadata.get("applies_to")]
    assert len(instructions) == 1, [(r.kind, r.content) for r in results]
    (found,) = instructions
    assert found.kind == "preference"
    assert found.content == (
        "When the user asks about probability: always give step-by-step explanations with concrete examples."
    )
    assert found.source_message_ids == ["m2"]  # exactly the message that gave it
    explained = service.search(ctx, SearchRequest(query=request, user_id=user, limit=3, explain=True))
    (lead,) = [r for r in explained if r.metadata.get("applies_to")]
    assert lead.metadata["explain"]["instruction"] == service.search_engine.config.instruction_boost
    episodic = service.search(ctx, SearchRequest(query=request, user_id=user, limit=3, types=["episodic"]))
    assert not [r for r in episodic if r.metadata.get("applies_to")]  # filters hold for it too

    # Without the boost the same request ranks the instruction below three messages about dice and
    # decks: the request is not worded like the instruction.
    engine = service.search_engine
    config = engine.config
    engine.config = replace(config, instruction_boost=0.0)
    try:
        unboosted = _search(service, ctx, user, request)
    finally:
        engine.config = config
    assert "m2" not in {m for r in unboosted for m in r.source_message_ids}


def test_a_request_about_something_else_gets_no_instruction(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, user)
    results = _search(service, ctx, user, "Where does my study group meet?")
    assert not [r for r in results if r.metadata.get("applies_to")]
    assert "m8" in results[0].source_message_ids


def test_an_edited_instruction_keeps_the_vector_of_the_requests_it_governs(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, user)
    request = "How likely is it that I draw a red card from a shuffled deck?"
    (instruction,) = [r for r in _search(service, ctx, user, request) if r.metadata.get("applies_to")]
    reworded = "When the user asks about probability: always show each step and end with a worked example."
    service.update(ctx, instruction.id, UpdateRequest(content=reworded))
    (found,) = [r for r in _search(service, ctx, user, request) if r.metadata.get("applies_to")]
    assert (found.id, found.content) == (instruction.id, reworded)
    topic = service.embedder.embed(["probability"])[0]
    corpora = service.search_engine.corpora
    with service.db.session() as session, corpora.reading(session, ctx.tenant_id, user) as corpus:
        (slot,) = corpus.instruction_slots()
        assert float(corpus.vectors[slot] @ topic) > 0.99


def test_the_context_block_gives_the_instruction_its_own_section_first(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, user)
    block = service.context(
        ctx,
        ContextRequest(query="How likely is it that I draw a red card from a shuffled deck?", user_id=user),
    )
    sections = block.context.split("\n\n")
    assert sections[0].splitlines() == [
        "## Instructions",
        "- [2024-03-15] When the user asks about probability: always give step-by-step explanations"
        " with concrete examples. (src: m2)",
    ]
    assert block.items[0].metadata["applies_to"] == "probability"
    assert not any("When the user asks" in s for s in sections[1:])


def test_a_newer_instruction_for_the_same_requests_supersedes_the_older(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    said = [
        ("m0", START, "Always give amounts in grams when I ask about recipes."),
        ("m1", START + timedelta(days=30), "When I ask about recipes, always give amounts in cups."),
    ]
    for message_id, at, text in said:
        request = AddRequest(
            user_id=user,
            session_id=message_id,
            messages=[Message(role="user", content=text, id=message_id, created_at=at)],
        )
        outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
        assert outcome.status == "succeeded", outcome.error
    query = "Can you give me a recipe for pancakes?"
    now = next(r for r in _search(service, ctx, user, query) if r.metadata.get("applies_to"))
    assert (now.source_message_ids, now.status) == (["m1"], "active")
    stored = service.list(ctx, user, memory_type="semantic", limit=50, cursor=None).items
    older = [r for r in stored if r.source_message_ids == ["m0"] and r.kind == "preference"]
    assert [(r.status, r.valid_to) for r in older] == [("superseded", START + timedelta(days=30))]
    block = service.context(ctx, ContextRequest(query=query, user_id=user)).context
    assert (
        "## Instructions\n- [2024-04-14] When the user asks about recipes: always give amounts in cups."
        in block
    )
    assert "grams" not in block.split("## Facts")[0]  # the replaced one is no standing instruction
    between = START + timedelta(days=10)
    past = service.search(ctx, SearchRequest(query=query, user_id=user, limit=3, as_of=between))
    (then,) = [r for r in past if r.metadata.get("applies_to")]
    assert then.source_message_ids == ["m0"]
    # The block as of then: the instruction in force then stands, and nothing tells what came after.
    then_block = service.context(ctx, ContextRequest(query=query, user_id=user, as_of=between)).context
    assert (
        "## Instructions\n- [2024-03-15] When the user asks about recipes: always give amounts in grams."
        in then_block
    )
    assert "2024-04-14" not in then_block and "until" not in then_block


def test_a_batch_tagged_applies_to_makes_no_instruction(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    request = AddRequest(
        user_id=user,
        session_id="s1",
        metadata={"applies_to": "music", "source": "import"},
        messages=[
            Message(role="user", content="I love jazz and I prefer vinyl records.", id="m0", created_at=START)
        ],
    )
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error
    stored = service.list(ctx, user, memory_type="semantic", limit=50, cursor=None).items
    assert stored and all(r.metadata.get("source") == "import" for r in stored)
    assert not [r for r in stored if "applies_to" in r.metadata]
    # Not a request ("What music should I…?" is one: the user's preferences would govern it).
    query = SearchRequest(query="What music do I like?", user_id=user, explain=True)
    explained = service.search(ctx, query)
    assert explained and all(r.metadata["explain"]["instruction"] == 0 for r in explained)


def test_every_instruction_near_a_request_is_found_up_to_the_limit(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    said = [
        "Always use numbered bullet points when I ask about resume formatting.",
        "Always highlight quantified achievements when I ask about resume content.",
        "Always give amounts in grams when I ask about recipes.",
    ]
    _ingest(service, ctx, user, [("user", text) for text in said])
    query = "How should I improve my resume?"

    def governing() -> set[str]:
        results = service.search(ctx, SearchRequest(query=query, user_id=user, limit=3, explain=True))
        return {r.source_message_ids[0] for r in results if r.metadata["explain"].get("instruction")}

    # Both resume instructions may govern the request (their topics are near each other), the
    # recipe one does not.
    assert governing() == {"m0", "m1"}
    engine = service.search_engine
    config = engine.config
    engine.config = replace(config, instruction_limit=1)
    try:
        assert len(governing()) == 1
    finally:
        engine.config = config


def test_an_instruction_for_every_request_is_in_every_context_block(service, tenant) -> None:  # type: ignore[no-untyped-def]
    """ "Please always answer in Spanish" names no requests: it governs all of them, so a context
    block carries it whatever the question, from the time it was given; "Always happy to help!"
    orders nothing."""
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    lines = [
        *LINES,
        ("user", "Please always answer in Spanish."),
        ("assistant", "Always happy to help!"),
        ("user", "Never mention my ex, please."),
    ]
    _ingest(service, ctx, user, lines)
    for query in ("What should I cook for dinner tonight?", "When does my study group meet?"):
        block = service.context(ctx, ContextRequest(query=query, user_id=user, max_tokens=400)).context
        instructions = block.split("## Instructions\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert instructions[:2] == [
            "- [2024-03-15] When the user asks about anything: always answer in Spanish. (src: m9)",
            "- [2024-03-15] When the user asks about anything: never mention the user's ex. (src: m11)",
        ], block
        assert not any("happy" in line.lower() for line in instructions)
    before = ContextRequest(query="What should I cook?", user_id=user, max_tokens=400, as_of=START)
    assert "answer in Spanish" not in service.context(ctx, before).context


def test_an_instruction_taken_back_leaves_the_instructions(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    said = [
        (START, "Please always answer in Spanish."),
        (START + timedelta(minutes=1), "Never use emojis."),
        (START + timedelta(days=3), "Please stop answering in Spanish."),
    ]
    block, instructions = _say_one_by_one(service, ctx, user, said)
    assert instructions == [
        "- [2024-03-15] When the user asks about anything: never use emojis. (src: t1)",
        "- [2024-03-18] When the user asks about anything: stop answering in Spanish. (src: t2)",
    ]
    # The order taken back is history, with when it ended.
    assert "always answer in Spanish. (until 2024-03-18)" in block.context.split("## Instructions", 1)[1]
    earlier = ContextRequest(query="What should I cook?", user_id=user, as_of=START + timedelta(days=1))
    assert "always answer in Spanish" in service.context(ctx, earlier).context.split("## Facts")[0]


def test_an_instruction_in_another_language_or_name_replaces_the_one_before(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    said = [
        (START, "Please always answer in Spanish."),
        (START + timedelta(minutes=1), "Call me Annie from now on."),
        (START + timedelta(minutes=2), "Never use emojis."),
        (START + timedelta(days=2), "From now on, answer in English."),
        (START + timedelta(days=3), "Actually, please call me Ann from now on."),
    ]
    _, instructions = _say_one_by_one(service, ctx, user, said)
    assert instructions == [
        "- [2024-03-15] When the user asks about anything: never use emojis. (src: t2)",
        "- [2024-03-17] When the user asks about anything: answer in English. (src: t3)",
        "- [2024-03-18] When the user asks about anything: call the user Ann. (src: t4)",
    ]


def test_an_instruction_on_the_same_part_of_an_answer_replaces_the_one_before(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"ia-{uuid.uuid4().hex[:6]}"
    said = [
        (START, "From now on, always answer with code first and explanation after."),
        (START + timedelta(minutes=1), "Always answer in bullet points."),
        (START + timedelta(minutes=2), "Never use emojis."),
        (START + timedelta(days=2), "Actually, from now on explain the approach first, then show the code."),
        (START + timedelta(days=3), "Answer in full paragraphs from now on."),
    ]
    _, instructions = _say_one_by_one(service, ctx, user, said)
    assert instructions == [
        "- [2024-03-15] When the user asks about anything: never use emojis. (src: t2)",
        "- [2024-03-17] When the user asks about anything: explain the approach first, then show the code."
        " (src: t3)",
        "- [2024-03-18] When the user asks about anything: answer in full paragraphs. (src: t4)",
    ]


def test_a_question_about_what_was_said_is_not_governed_by_an_instruction(service, tenant) -> None:  # type: ignore[no-untyped-def]
    # "What did you tell me…" asks what happened; the instruction governs how the next answer is
    # given and states nothing that happened, so it takes no result slot.
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, user)
    recall = "What did you tell me about the odds of drawing two aces from a deck?"
    request = "How likely is it that I draw two aces from a deck?"
    for query, governed in ((recall, False), (request, True)):
        explained = service.search(ctx, SearchRequest(query=query, user_id=user, limit=10, explain=True))
        boosts = [r.metadata["explain"]["instruction"] for r in explained]
        expected = service.search_engine.config.instruction_boost if governed else 0
        assert max(boosts) == expected, query
    assert {"m6", "m7"} & set(_search(service, ctx, user, recall)[0].source_message_ids)


PREFERENCE_LINES = [
    ("user", "I'm learning to cook this year and try a new dinner every week."),
    ("assistant", "That's a great habit."),
    ("user", "I prefer vegetarian recipes that take under 30 minutes."),
    ("assistant", "Noted: quick vegetarian dishes."),
    ("user", "My partner and I moved to Leeds in March."),
    ("assistant", "Leeds has a lively food scene."),
    ("user", "My friend Ann likes hiking in the Alps every summer."),
    ("assistant", "The Alps are lovely in summer."),
    ("user", "For my code I prefer minimal dependencies."),
]


def test_a_stated_preference_governs_the_requests_it_bears_on(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _ingest(service, ctx, user, PREFERENCE_LINES)
    request = "Can you suggest a quick recipe for dinner tonight?"
    explained = service.search(ctx, SearchRequest(query=request, user_id=user, limit=3, explain=True))
    preferences = [r for r in explained if r.kind == "preference"]
    assert [r.source_message_ids for r in preferences] == [["m2"]], [(r.kind, r.content) for r in explained]
    assert preferences[0].metadata["explain"]["instruction"] == service.search_engine.config.preference_boost

    # A request no preference bears on gets none (MiniLM puts unrelated texts at cosine ~0.1),
    # nor does a friend's preference govern the user's requests.
    for request in ("Can you recommend a good book about the Roman empire?", "Can you plan a hiking trip?"):
        explained = service.search(ctx, SearchRequest(query=request, user_id=user, limit=10, explain=True))
        assert not [r.content for r in explained if r.metadata["explain"].get("instruction")], request

    # Not a request for work: a question about what was said, or one about someone.
    for question in ("What did I say about recipes?", "What does Ann like to do in summer?"):
        explained = service.search(ctx, SearchRequest(query=question, user_id=user, limit=10, explain=True))
        assert not [r for r in explained if r.metadata["explain"].get("instruction")], question


def test_a_preference_turned_round_replaces_the_old_one_for_requests(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _add_one_by_one(
        service,
        ctx,
        user,
        [
            (START, "I prefer tea over coffee in the mornings."),
            (START + timedelta(days=60), "I prefer coffee over tea in the mornings now."),
        ],
    )
    stored = _statuses(service, ctx, user)
    assert stored == {
        "User prefers tea over coffee in the mornings": "superseded",
        "User prefers coffee over tea in the mornings now": "active",
    }, stored
    explained = service.search(
        ctx,
        SearchRequest(
            query="What would you suggest I drink in the morning?", user_id=user, limit=5, explain=True
        ),
    )
    governing = [r.content for r in explained if r.metadata["explain"]["instruction"]]
    assert governing == ["User prefers coffee over tea in the mornings now"], governing


def test_an_instruction_for_other_requests_is_listed_with_the_facts_not_as_one_to_follow(
    service, tenant
) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _add_one_by_one(
        service,
        ctx,
        user,
        [
            (START, "Please always answer in Spanish."),
            (START + timedelta(minutes=1), "Never suggest recipes with mushrooms when I ask about dinner."),
            (START + timedelta(minutes=2), "Always include code comments when I ask about Python scripts."),
            (START + timedelta(minutes=3), "I love cooking Thai food on weekends."),
        ],
    )
    block = service.context(
        ctx, ContextRequest(query="Can you suggest a quick dinner recipe?", user_id=user, max_tokens=400)
    )
    instructions, facts = (
        block.context.split(f"## {header}\n", 1)[1].split("\n\n", 1)[0]
        for header in ("Instructions", "Facts")
    )
    assert "always answer in Spanish" in instructions  # every request's
    assert "never suggest recipes with mushrooms" in instructions  # this request's
    # Among the candidates of a small memory, but for other requests: a fact about the user.
    assert "code comments" not in instructions and "code comments" in facts


def test_an_instruction_taken_back_for_its_requests_however_named_is_replaced(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _add_one_by_one(
        service,
        ctx,
        user,
        [
            (START, "When I ask about resumes, use numbered lists."),
            (START + timedelta(days=1), "Also, always use emojis when I ask about my resume."),
            (START + timedelta(days=2), "Stop using emojis for my resume questions."),
        ],
    )
    stored = _statuses(service, ctx, user)
    assert stored == {
        "When the user asks about resumes: use numbered lists.": "active",  # another thing
        "When the user asks about the user's resume: always use emojis.": "superseded",
        "When the user asks about resume: stop using emojis.": "active",
    }
    block = service.context(ctx, ContextRequest(query="Can you improve my resume?", user_id=user))
    instructions = block.context.split("## Facts", 1)[0]
    assert "stop using emojis" in instructions and "always use emojis" not in instructions


def test_a_changed_instruction_replaces_the_old_one_for_its_requests(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"in-{uuid.uuid4().hex[:6]}"
    _add_one_by_one(
        service,
        ctx,
        user,
        [
            (START, "When I ask about resumes, always use bullet points."),
            (
                START + timedelta(days=5),
                "Actually, when I ask about resumes, use numbered lists instead of bullet points.",
            ),
            (START + timedelta(days=6), "Stop using emojis for my resume questions."),
        ],
    )
    stored = _statuses(service, ctx, user)
    assert stored["When the user asks about resumes: always use bullet points."] == "superseded"
    assert (
        stored["When the user asks about resumes: use numbered lists instead of bullet points."] == "active"
    )
    # Named at its end, it is for those requests, not every one.
    block = service.context(
        ctx, ContextRequest(query="What should I cook tonight?", user_id=user, max_tokens=400)
    )
    assert "emojis" not in block.context.split("## Facts", 1)[0]
