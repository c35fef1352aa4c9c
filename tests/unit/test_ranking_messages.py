"""Ranking of user–assistant messages: roles, long messages returned through passages, and
questions about the order of things."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from memsvc.ranking import (
    PLACE_QUERY,
    Candidate,
    RankingConfig,
    analyze_query,
    query_focus,
    query_role,
    rank,
)


@pytest.mark.parametrize(
    ("query", "role"),
    [
        ("When does my first sprint end?", "user"),
        ("How many columns did I want to add?", "user"),
        ("What TTL did you suggest for the cache?", "assistant"),
        ("Remind me of the schema you gave me.", "assistant"),
        ("What would you suggest I use for login?", "user"),  # new advice about the user's own case
        ("What did Caroline paint?", None),
    ],
)
def test_query_role(query: str, role: str | None) -> None:
    assert query_role(query) == role


def _message(key: str, role: str, dense: float, session: str = "s1", **kw: object) -> Candidate:
    return Candidate(
        id=key,
        content=f"{key} text",
        kind=kw.pop("kind", "turn"),  # type: ignore[arg-type]
        speaker=role,
        role=role,
        episode=session,
        source_message_ids=(kw.pop("message", key),),  # type: ignore[arg-type]
        dense=dense,
        event_time=datetime(2024, 3, 15, tzinfo=UTC),
        **kw,  # type: ignore[arg-type]
    )


def test_role_boost_prefers_the_role_asked_about_only_where_both_speak() -> None:
    config = RankingConfig(role_boost=1.0, propagate_from_next=0.0)
    both = [_message("a", "assistant", 0.52), _message("u", "user", 0.50), _message("x", "user", 0.0)]
    assert [r.id for r in rank(both, "What did I decide?", config=config)][:2] == ["u", "a"]
    assert [r.id for r in rank(both, "What did you suggest?", config=config)][:2] == ["a", "u"]
    # Without the boost the closer message wins.
    plain = RankingConfig(role_boost=0.0, propagate_from_next=0.0)
    assert rank(both, "What did I decide?", config=plain)[0].id == "a"
    # A chat of people (every message a user's): a first-person question changes nothing.
    people = [_message("a", "user", 0.52), _message("u", "user", 0.50), _message("x", "user", 0.0)]
    assert [r.id for r in rank(people, "What did I decide?", config=config)][:2] == ["a", "u"]


def test_a_long_message_is_returned_through_its_passage_not_whole() -> None:
    config = RankingConfig(propagate_from_next=0.0)
    candidates = [
        _message("whole", "assistant", 0.9, returnable=False, message="m1"),
        _message("p1", "assistant", 0.8, kind="passage", message="m1"),
        _message("p2", "assistant", 0.7, kind="passage", message="m1"),
        _message("other", "user", 0.1),
    ]
    ids = [r.id for r in rank(candidates, "cache settings", config=config)]
    # One passage stands for the message; the whole message and the second passage add no evidence.
    assert ids == ["p1", "other"]


def test_an_order_question_gets_the_best_of_each_session_first() -> None:
    config = RankingConfig(propagate_from_next=0.0, merge_max_turns=1)
    candidates = [
        _message("a1", "user", 0.90, session="s1"),
        _message("a2", "user", 0.85, session="s1"),
        _message("a3", "user", 0.80, session="s1"),
        _message("b1", "user", 0.40, session="s2"),
        _message("c1", "user", 0.30, session="s3"),
    ]
    assert analyze_query("In what order did I bring up the features?").ordering
    ordered = [r.id for r in rank(candidates, "In what order did I bring up the features?", config=config)]
    assert ordered == ["a1", "b1", "c1", "a2", "a3"]
    plain = [r.id for r in rank(candidates, "Which features did I bring up?", config=config)]
    assert plain == ["a1", "a2", "a3", "b1", "c1"]


def test_an_order_question_about_what_i_brought_up_prefers_my_messages_more() -> None:
    config = RankingConfig(role_boost=1.0, order_role_boost=3.0, propagate_from_next=0.0)
    both = [_message("a", "assistant", 0.9), _message("u", "user", 0.5), _message("x", "user", 0.0)]
    # Another question: the boost of 1 does not lift the user's message over a much closer answer.
    assert rank(both, "What did I decide?", config=config)[0].id == "a"
    assert rank(both, "In what order did I bring these up?", config=config)[0].id == "u"


def _thread(*turns: tuple[str, str, float]) -> list[Candidate]:
    """Turns of one session at positions 0, 1, 2…: (id, role, dense)."""
    return [
        Candidate(
            id=key,
            content=f"{key} text",
            kind="turn",
            speaker=role,
            role=role,
            session="s1",
            position=position,
            episode="s1",
            source_message_ids=(key,),
            dense=dense,
            event_time=datetime(2024, 3, 15, tzinfo=UTC),
        )
        for position, (key, role, dense) in enumerate(turns)
    ]


def test_an_order_question_gets_my_messages_of_a_thread_together_without_the_answers_between() -> None:
    config = RankingConfig(propagate_from_next=0.0, role_boost=0.0, order_role_boost=0.0)
    candidates = _thread(
        ("u0", "user", 0.90),
        ("a1", "assistant", 0.10),
        ("u2", "user", 0.88),
        ("a3", "assistant", 0.12),
        ("u4", "user", 0.05),  # answers nothing: stays out
        ("x5", "user", 0.0),
    )
    question = "In what order did I bring up the features?"
    results = rank(candidates, question, config=config)
    assert [m.id for m in results[0].members] == ["u0", "u2"]
    assert results[0].source_message_ids == ("u0", "u2")
    # Another question keeps each message a result of its own.
    plain = rank(candidates, "Which features did I bring up?", config=config)
    assert [[m.id for m in r.members] for r in plain][:2] == [["u0"], ["u2"]]
    # Off, an order question does the same.
    off = rank(candidates, question, config=replace(config, order_joins_thread=False))
    assert [[m.id for m in r.members] for r in off][:2] == [["u0"], ["u2"]]


def test_a_thread_joins_only_the_same_speakers_turns() -> None:
    config = RankingConfig(propagate_from_next=0.0, role_boost=0.0, order_role_boost=0.0)
    # Two people: the turn two positions away is the other speaker's.
    candidates = _thread(("u0", "user", 0.90), ("u1", "user", 0.0), ("a2", "assistant", 0.88))
    results = rank(candidates, "In what order did we bring these up?", config=config)
    assert all(len(r.members) == 1 for r in results)


@pytest.mark.parametrize(
    ("query", "focus"),
    [
        (
            "Can you list the order in which I brought up different aspects of developing my budget "
            "tracker throughout our conversations, in order? Mention ONLY and ONLY three items.",
            "developing my budget tracker?",
        ),
        (
            "Can you give me a comprehensive summary of how my weather app has progressed over time?",
            "how my weather app has progressed?",
        ),
        (
            "How many columns did I want to add to the transactions table across my sessions?",
            "How many columns did I want to add to the transactions table?",
        ),
        (
            "Was the first half of September a good month for Nate? Answer yes or no.",
            "Was the first half of September a good month for Nate?",
        ),
        ("Could you show me how to implement a login feature?", "how to implement a login feature?"),
    ],
)
def test_query_focus_drops_the_words_that_frame_a_question(query: str, focus: str) -> None:
    assert query_focus(query) == focus


@pytest.mark.parametrize(
    "query",
    [
        "When did Caroline go to the support group?",  # nothing framed: left as it is, "?" too
        "How does Gina describe the studio that Jon has opened?",  # "describe" is the question here
        "What steps would you suggest I take?",  # "would you" mid-sentence asks for advice
        "Can you list them?",  # all framing: the words are kept
    ],
)
def test_query_focus_leaves_a_question_with_nothing_to_drop(query: str) -> None:
    assert query_focus(query) == query


@pytest.mark.parametrize(
    ("query", "asks"),
    [
        ("Where has Melanie camped?", True),
        ("Which European countries has Maria been to?", True),
        ("What states has Maria vacationed at?", True),
        ("What is something Andrew misses while working in the city?", False),  # names a place, asks none
        ("What did Caroline paint?", False),
    ],
)
def test_place_query(query: str, asks: bool) -> None:
    assert bool(PLACE_QUERY.search(query)) is asks
