"""Behaviour of the pure ranking recipe (memsvc.ranking): fast, no DB, no model."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from memsvc.ranking import (
    BM25Index,
    Candidate,
    RankingConfig,
    analyze_query,
    build_results,
    fuse_scores,
    has_temporal_expression,
    importance_deficit,
    pass_to_successors,
    pass_to_survivors,
    pass_whole_message,
    propagate_neighbours,
    rank,
    tokenize,
    turn_index_text,
)


def turn(
    pos: int, text: str, speaker: str = "Caroline", dense: float = 0.0, lexical: float = 0.0, session: int = 1
) -> Candidate:
    mid = f"D{session}:{pos}"
    return Candidate(
        id=mid,
        content=f"{speaker}: {text}",
        kind="turn",
        speaker=speaker,
        session=session,
        position=pos,
        source_message_ids=(mid,),
        dense=dense,
        lexical=lexical,
    )


NO_EXTRAS = RankingConfig(speaker_boost=0.0, temporal_boost=0.0, propagate_from_next=0.0, merge_max_turns=1)


def test_temporal_intent_detection() -> None:
    assert analyze_query("When did Caroline go to the LGBTQ support group?").temporal
    assert analyze_query("What year did Melanie start painting?").temporal
    assert analyze_query("How long has Jon had his dance studio?").temporal
    assert not analyze_query("What did Caroline research?").temporal
    assert not analyze_query("Where does Melanie go when she is stressed?").temporal  # 'when' not leading


def test_named_speakers_whole_word_and_possessive() -> None:
    a = analyze_query("What is Caroline's identity?", ["Caroline", "Melanie"])
    assert a.named_speakers == ("Caroline",)
    assert "Caroline" in a.names
    assert analyze_query("What did Carolineville do?", ["Caroline"]).named_speakers == ()
    assert analyze_query("How did Caroline and Melanie meet?", ["Caroline", "Melanie"]).named_speakers == (
        "Caroline",
        "Melanie",
    )


def test_temporal_expressions() -> None:
    assert has_temporal_expression("I went to a support group yesterday")
    assert has_temporal_expression("We moved here in May 2021")
    assert has_temporal_expression("two weeks ago I started")
    assert not has_temporal_expression("I love painting sunsets")


def test_tokenize_stems_and_drops_stop_words() -> None:
    assert tokenize("The paintings were painted") == ["paint", "paint"]


def test_bm25_prefers_rare_terms_and_scores_zero_without_match() -> None:
    idx = BM25Index.build(["pottery class today", "I like my class", "class class class", "nothing here"])
    s = idx.score("pottery class")
    assert int(np.argmax(s)) == 0
    assert s[3] == 0.0
    assert len(idx) == 4


def test_turn_index_text_prepends_previous_turn_only() -> None:
    assert turn_index_text("Mel: A sunrise", "Caroline: What did you paint?") == (
        "Caroline: What did you paint?\nMel: A sunrise"
    )
    assert turn_index_text("Mel: Hi", None) == "Mel: Hi"


def test_fusion_weighted_sum_lets_lexical_overrule_small_dense_lead() -> None:
    cands = [
        turn(0, "a", dense=0.50),
        turn(1, "b", dense=0.48, lexical=5.0),
        turn(2, "c", dense=0.10),
        turn(3, "d", dense=0.12),
    ]
    order = [r.id for r in rank(cands, "q", config=NO_EXTRAS)]
    assert order[:2] == ["D1:1", "D1:0"]
    dense_only = RankingConfig(
        lexical_weight=0.0, speaker_boost=0.0, temporal_boost=0.0, propagate_from_next=0.0, merge_max_turns=1
    )
    assert [r.id for r in rank(cands, "q", config=dense_only)][:2] == ["D1:0", "D1:1"]


def test_speaker_boost_only_when_exactly_one_speaker_named() -> None:
    cands = [
        turn(0, "x", speaker="Melanie", dense=0.5),
        turn(5, "y", speaker="Caroline", dense=0.45),
        turn(9, "z", speaker="Melanie", dense=0.0),
    ]
    cfg = RankingConfig(propagate_from_next=0.0, merge_max_turns=1, temporal_boost=0.0)
    one = fuse_scores(cands, analyze_query("What did Caroline do?", ["Caroline", "Melanie"]), cfg)
    assert one[1] > one[0]
    both = fuse_scores(cands, analyze_query("Did Caroline meet Melanie?", ["Caroline", "Melanie"]), cfg)
    assert both[0] > both[1]


def test_temporal_boost_applies_only_to_temporal_queries() -> None:
    cands = [
        turn(0, "I painted a lake", dense=0.5),
        turn(5, "I painted it last year", dense=0.45),
        turn(9, "hm", dense=0.0),
    ]
    cfg = RankingConfig(speaker_boost=0.0, propagate_from_next=0.0, merge_max_turns=1)
    assert (
        fuse_scores(cands, analyze_query("When did she paint?"), cfg)[1]
        > fuse_scores(cands, analyze_query("When did she paint?"), cfg)[0]
    )
    plain = fuse_scores(cands, analyze_query("What did she paint?"), cfg)
    assert plain[0] > plain[1]


def test_neighbour_propagation_lifts_the_question_before_a_strong_answer() -> None:
    cands = [turn(0, "q", dense=0.0), turn(1, "a", dense=0.0), turn(2, "other", session=2, dense=0.0)]
    base = np.array([0.1, 2.0, 0.5])
    out = propagate_neighbours(cands, base, RankingConfig(propagate_from_next=0.3))
    assert out[0] == pytest.approx(0.1 + 0.3 * 2.0)
    assert out[1] == pytest.approx(2.0)  # nothing after it in session 1
    assert out[2] == pytest.approx(0.5)  # other session: no neighbour
    prev = propagate_neighbours(cands, base, RankingConfig(propagate_from_next=0.0, propagate_from_prev=0.5))
    assert prev[1] == pytest.approx(2.0 + 0.5 * 0.1)
    negative = propagate_neighbours(cands, np.array([0.0, -3.0, 0.0]), RankingConfig(propagate_from_next=0.3))
    assert negative[0] == 0.0  # negative scores do not propagate


def test_adjacent_turns_merge_into_one_result_within_limits() -> None:
    cands = [turn(i, f"w{i}") for i in range(6)] + [turn(0, "far", session=9)]
    scores = np.array([5.0, 4.9, 4.8, 4.7, 0.0, 0.0, 4.0])
    res = build_results(cands, scores, RankingConfig(merge_max_turns=3, merge_depth=5))
    assert [r.source_message_ids for r in res] == [
        ("D1:0", "D1:1", "D1:2"),
        ("D1:3",),  # group full: a new result
        ("D9:0",),
        ("D1:4",),  # ranked below merge_depth: not merged
        ("D1:5",),
    ]
    # (Turns scoring 0 beside a 4.7 answer only merge when any adjacent turn may: merge_min_share 0.)
    deep = build_results(cands, scores, RankingConfig(merge_max_turns=3, merge_depth=15, merge_min_share=0.0))
    assert build_results(cands, scores, RankingConfig(merge_max_turns=3, merge_depth=15))[1].members == (
        cands[3],
    )
    assert deep[1].source_message_ids == ("D1:3", "D1:4", "D1:5")
    assert res[0].content == "Caroline: w0\nCaroline: w1\nCaroline: w2"
    no_budget = build_results(cands, scores, RankingConfig(merge_max_turns=3, merge_word_budget=2))
    assert [len(r.members) for r in no_budget[:4]] == [1, 1, 1, 1]
    with pytest.raises(ValueError):
        RankingConfig(merge_max_turns=6)


def test_only_turns_that_answer_together_merge() -> None:
    cands = [
        turn(0, "I went to a support group yesterday.", speaker="Caroline"),
        turn(1, "That's great! I painted a lake sunrise last year.", speaker="Melanie"),
        turn(2, "Which book are you reading?", speaker="Caroline"),
        turn(3, "Charlotte's Web.", speaker="Melanie"),
        turn(4, "And which one is next?", speaker="Melanie"),
        turn(5, "The Hobbit, I think.", speaker="Melanie"),
    ]
    config = RankingConfig(merge_min_share=0.85)

    def results(scores: list[float]) -> list[tuple[str, ...]]:
        return [r.source_message_ids for r in build_results(cands, np.array(scores), config)]

    # A reply that scores far below the answer it follows is its own result, not glued onto it.
    assert results([5.0, 2.0, 0.0, 0.0, -1.0, -1.0])[:2] == [("D1:0",), ("D1:1",)]
    # Two turns that both answer the query merge.
    assert results([5.0, 4.5, 0.0, 0.0, -1.0, -1.0])[0] == ("D1:0", "D1:1")
    # A question and the other speaker's answer right after it merge whichever scores higher...
    assert results([0.0, 0.0, 1.0, 5.0, -1.0, -1.0])[0] == ("D1:2", "D1:3")
    assert results([0.0, 0.0, 5.0, 1.0, -1.0, -1.0])[0] == ("D1:2", "D1:3")
    # ...but not a low-scoring turn after an answer, nor a speaker answering their own question.
    after = results([0.0, 0.0, 0.0, 5.0, 1.0, -1.0])
    assert after[0] == ("D1:2", "D1:3") and ("D1:4",) in after
    assert results([-1.0, -1.0, -1.0, -1.0, 5.0, 1.0])[0] == ("D1:4",)
    # A question ending in a shared photo's caption still asks.
    photo = [
        *cands[:2],
        turn(2, "Look! What is this? [photo: a dog on a beach]", speaker="Caroline"),
        cands[3],
    ]
    merged = build_results(photo, np.array([0.0, 0.0, 1.0, 5.0]), config)
    assert merged[0].source_message_ids == ("D1:2", "D1:3")
    # At a share of 0 every adjacent turn ranked high enough merges, as before.
    everything = build_results(
        cands, np.array([5.0, 2.0, 0.0, 0.0, -1.0, -1.0]), RankingConfig(merge_min_share=0.0)
    )
    assert everything[0].source_message_ids[:2] == ("D1:0", "D1:1")


def test_dedup_drops_near_duplicates_and_covered_facts_and_excluded_kinds() -> None:
    fact = Candidate(
        id="f1",
        content="Caroline went to a support group",
        kind="fact",
        speaker="Caroline",
        source_message_ids=("D1:0",),
    )
    digest = Candidate(id="s1", content="Session 1: they talked", kind="digest")
    cands = [
        turn(0, "I went to a support group"),
        fact,
        turn(4, "I went to a support group"),
        turn(8, "something else"),
        digest,
    ]
    scores = np.array([3.0, 2.9, 2.8, 1.0, 10.0])
    ids = [r.id for r in build_results(cands, scores, RankingConfig(merge_max_turns=1))]
    assert ids == ["D1:0", "D1:8"]  # digest excluded, fact covered, D1:4 near-duplicate
    keep = RankingConfig(merge_max_turns=1, dedup_jaccard=1.0, dedup_covered=False, exclude_kinds=())
    assert [r.id for r in build_results(cands, scores, keep)] == ["s1", "D1:0", "f1", "D1:4", "D1:8"]


def test_a_fact_is_not_covered_by_another_fact_from_its_message() -> None:
    # "I'm vegetarian and I love spicy food": the two facts state different things; only the
    # message's own words (its turn) hold both.
    spicy = Candidate(id="f1", content="Priya loves spicy food", kind="fact", source_message_ids=("D1:0",))
    vegetarian = Candidate(id="f2", content="Priya is vegetarian", kind="fact", source_message_ids=("D1:0",))
    cands = [spicy, vegetarian, turn(0, "I'm vegetarian and I love spicy food"), turn(8, "something else")]
    scores = np.array([9.0, 3.0, 2.0, 1.0])
    # The turn's message is returned by the facts before it (dropped, as before); the second fact
    # is kept: the first does not state it.
    assert [r.id for r in build_results(cands, scores, RankingConfig())] == ["f1", "f2", "D1:8"]
    # A returned turn covers both facts.
    worded = np.array([2.0, 1.5, 9.0, 1.0])
    assert [r.id for r in build_results(cands, worded, RankingConfig())] == ["D1:0", "D1:8"]


def test_a_when_question_keeps_the_date_a_covered_fact_spells_out_beside_its_turn() -> None:
    dated = Candidate(
        id="f1",
        content="Caroline went to a LGBTQ support group on 7 May 2023",
        kind="fact",
        source_message_ids=("D1:3",),
    )
    undated = Candidate(id="f2", content="Caroline felt powerful", kind="fact", source_message_ids=("D1:3",))
    cands = [turn(3, "I went to a LGBTQ support group yesterday"), dated, undated, turn(9, "something else")]
    scores = np.array([3.0, 2.9, 2.8, 1.0])
    when = build_results(cands, scores, RankingConfig(), temporal=True)
    # One slot: the fact joins its turn's result (the date is the answer); the undated fact does not.
    assert [[m.id for m in r.members] for r in when] == [["f1", "D1:3"], ["D1:9"]]
    assert when[0].source_message_ids == ("D1:3",)
    # Not a "when" question: the covered fact only adds words and is dropped as before.
    assert [r.id for r in build_results(cands, scores, RankingConfig())] == ["D1:3", "D1:9"]
    # A turn that already says the date needs no fact beside it.
    said = [turn(3, "I went to a LGBTQ support group on 7 May 2023"), dated]
    assert [
        len(r.members) for r in build_results(said, np.array([3.0, 2.9]), RankingConfig(), temporal=True)
    ] == [1]
    # Through the recipe: "When did…" is a temporal query.
    ranked = rank(
        cands, "When did Caroline go to the support group?", config=RankingConfig(propagate_from_next=0.0)
    )
    assert "7 May 2023" in ranked[0].content


def test_ties_prefer_shorter_memories() -> None:
    cands = [turn(0, "a long long long turn with many words"), turn(5, "short")]
    res = build_results(cands, np.array([1.0, 1.0]), NO_EXTRAS)
    assert res[0].id == "D1:5"


def test_rank_handles_empty_and_constant_inputs() -> None:
    assert rank([], "anything") == []
    same = [turn(i * 3, f"t{i}", dense=0.3) for i in range(3)]
    assert len(rank(same, "q", config=NO_EXTRAS)) == 3


def test_rank_adds_the_search_layers_bonus_before_propagation() -> None:
    cands = [turn(0, "question", dense=0.1), turn(1, "answer", dense=0.2), turn(5, "other", dense=0.3)]
    plain = [r.id for r in rank(cands, "q", config=NO_EXTRAS)]
    assert plain[0] == "D1:5"
    bonus = np.array([0.0, 10.0, 0.0])
    boosted = rank(
        cands,
        "q",
        config=RankingConfig(speaker_boost=0.0, temporal_boost=0.0, merge_max_turns=1),
        bonus=bonus,
    )
    assert [r.id for r in boosted][:2] == ["D1:1", "D1:0"]  # the question inherits 0.3 of the answer's bonus
    # Given dense statistics of a larger pool, z-scores use them instead of the candidates' own.
    stats = rank(cands, "q", config=NO_EXTRAS, dense_stats=(0.0, 0.1))
    assert stats[0].score == pytest.approx((0.3 - 0.0) / 0.1)


def test_bm25_removal_scores_like_an_index_built_without_the_document() -> None:
    texts = ["pottery class today", "I like my class", "class class class", "nothing here", "pottery again"]
    idx = BM25Index.build(texts)
    idx.remove(2)
    idx.remove(2)  # idempotent
    survivors = [0, 1, 3, 4]
    fresh = BM25Index.build([texts[i] for i in survivors])
    for q in ("pottery class", "class", "here nothing", "absent"):
        s = idx.score(q)
        assert s[2] == 0.0
        assert s[survivors].tolist() == fresh.score(q).tolist()
    assert len(idx) == 4 and idx.ordinals == 5
    compact = idx.compacted(np.array(survivors, dtype=np.int64))
    assert compact.ordinals == 4 and len(compact) == 4
    for q in ("pottery class", "class"):
        assert compact.score(q).tolist() == fresh.score(q).tolist()


def test_importance_below_an_ordinary_memorys_ranks_lower_and_still_lifts_the_turn_before() -> None:
    config = RankingConfig(speaker_boost=0.0, temporal_boost=0.0, merge_max_turns=1)
    before = turn(0, "Let's meet for the dance festival.", dense=0.3)
    thanks = replace(turn(1, "Thanks, glad to be part of it!", dense=0.5), importance=0.1)
    other = turn(5, "I rehearsed the routine twice.", dense=0.4)
    remark = replace(turn(7, "Gina shared a photo of a stage.", dense=0.45), importance=0.3)
    cands = [before, thanks, other, remark]
    assert importance_deficit(cands).tolist() == pytest.approx([0.0, 0.8, 0.0, 0.4])
    plain = rank(cands, "q", config=replace(config, low_importance_penalty=0.0))
    assert [r.id for r in plain][:2] == ["D1:1", "D1:7"]
    demoted = rank(cands, "q", config=config)  # the default penalty, as search runs it
    # Both rank below every ordinary memory, the less important one last.
    assert [r.id for r in demoted] == ["D1:5", "D1:0", "D1:7", "D1:1"]
    # The small talk is ranked lower by 0.8 x the penalty, after it passed its score to the turn
    # before it: that turn scores as it did without the penalty.
    by_id = {r.id: r.score for r in demoted}
    plain_by_id = {r.id: r.score for r in plain}
    assert by_id["D1:1"] == pytest.approx(plain_by_id["D1:1"] - 0.8 * config.low_importance_penalty)
    assert by_id["D1:7"] == pytest.approx(plain_by_id["D1:7"] - 0.4 * config.low_importance_penalty)
    assert by_id["D1:0"] == pytest.approx(plain_by_id["D1:0"])


def test_a_merged_memory_passes_its_score_to_its_survivor_and_is_never_returned() -> None:
    survivor = Candidate(
        id="s", content="Ann has a kitten", kind="fact", source_message_ids=("m1",), dense=0.1
    )
    merged = Candidate(
        id="m",
        content="Ann has a kitten named Miso",
        kind="fact",
        source_message_ids=("m2",),
        dense=0.6,
        returnable=False,
        merged_into="s",
    )
    other = Candidate(
        id="o", content="Ann lives in Boston", kind="fact", source_message_ids=("m3",), dense=0.3
    )
    cands = [survivor, merged, other]
    scores = np.array([0.1, 0.6, 0.3])
    assert pass_to_survivors(cands, scores).tolist() == [0.6, 0.6, 0.3]
    assert scores.tolist() == [0.1, 0.6, 0.3]  # the input is left as it was
    results = rank(cands, "q", config=NO_EXTRAS)
    assert [r.id for r in results] == ["s", "o"]
    # A survivor that scores higher keeps its own score.
    assert pass_to_survivors(cands, np.array([0.9, 0.6, 0.3])).tolist() == [0.9, 0.6, 0.3]


def test_a_message_short_enough_to_read_whole_lifts_its_best_passage_to_its_own_score() -> None:
    def message(mid: str, words: int, passages: list[float], whole: float) -> list[Candidate]:
        text = " ".join(["word"] * words)
        cut = [
            Candidate(
                id=f"{mid}/{i}", content=f"part {i}", kind="passage", source_message_ids=(mid,), dense=d
            )
            for i, d in enumerate(passages)
        ]
        turn_row = Candidate(
            id=mid, content=text, kind="turn", source_message_ids=(mid,), dense=whole, returnable=False
        )
        return [*cut, turn_row]

    config = RankingConfig(whole_message_max_words=250)
    # A 200-word message: its best passage (0.3) rises to the whole message's 0.9; the other
    # passage, the turn and a 400-word message's passages keep their own scores.
    cands = [*message("m1", 200, [0.1, 0.3], 0.9), *message("m2", 400, [0.5], 0.8)]
    scores = np.array([c.dense for c in cands])
    assert pass_whole_message(cands, scores, config).tolist() == [0.1, 0.9, 0.9, 0.5, 0.8]
    assert scores.tolist() == [0.1, 0.3, 0.9, 0.5, 0.8]  # the input is left as it was
    # A passage that scores above its message keeps its own score; 0 words turns the rule off.
    higher = np.array([0.1, 0.95, 0.9, 0.5, 0.8])
    assert pass_whole_message(cands, higher, config).tolist() == higher.tolist()
    off = replace(config, whole_message_max_words=0)
    assert pass_whole_message(cands, scores, off).tolist() == scores.tolist()
    # In the ranking, m1's passage now comes before m2's, and no turn is returned whole.
    assert [r.id for r in rank(cands, "q", config=NO_EXTRAS)][:2] == ["m1/1", "m2/0"]
    without = replace(NO_EXTRAS, whole_message_max_words=0)
    assert [r.id for r in rank(cands, "q", config=without)][:2] == ["m2/0", "m1/1"]


def test_the_top_results_do_not_depend_on_how_many_were_asked_for() -> None:
    # A turn that answers with the best one but ranks below the last result asked for still joins
    # it: asking for 2 results gives the same first result as asking for 5.
    config = RankingConfig(speaker_boost=0.0, temporal_boost=0.0, propagate_from_next=0.0)
    best = turn(0, "We went to the lake on Sunday.", dense=1.0)
    answer = turn(1, "The lake was calm and cold.", speaker="Melanie", dense=0.95)
    facts = [
        Candidate(
            id=f"f{i}",
            content=f"Caroline likes colour {c}",
            kind="fact",
            source_message_ids=(f"m{i}",),
            dense=d,
        )
        for i, (c, d) in enumerate((("red", 0.99), ("blue", 0.98), ("green", 0.97)))
    ]
    filler = [
        Candidate(
            id=f"x{i}", content=f"Filler memory {i} on topic {i}", kind="fact", source_message_ids=(f"n{i}",)
        )
        for i in range(20)
    ]
    cands = [best, answer, *facts, *filler]
    two = rank(cands, "q", config=replace(config, max_results=2))
    five = rank(cands, "q", config=replace(config, max_results=5))
    assert [m.id for m in two[0].members] == ["D1:0", "D1:1"]
    assert [[m.id for m in r.members] for r in two] == [[m.id for m in r.members] for r in five[:2]]


def test_a_memory_that_replaced_another_ranks_above_it_along_a_chain() -> None:
    boston = Candidate(id="b", content="Ann lives in Boston", kind="fact", superseded_by="d")
    denver = Candidate(id="d", content="Ann lives in Denver", kind="fact", superseded_by="a")
    austin = Candidate(id="a", content="Ann lives in Austin", kind="fact")
    other = Candidate(id="o", content="Ann likes tea", kind="fact")
    scores = np.array([0.9, 0.5, 0.1, 0.7])
    out = pass_to_successors([boston, denver, austin, other], scores)
    assert out[2] > out[1] > out[0] == 0.9 and out[3] == 0.7
    assert scores.tolist() == [0.9, 0.5, 0.1, 0.7]  # the input is left as it was
    # A successor outside the candidates changes nothing.
    assert pass_to_successors([boston, other], np.array([0.9, 0.7])).tolist() == [0.9, 0.7]


def test_turns_said_far_apart_are_not_one_exchange() -> None:
    said = datetime(2024, 1, 5, 9, tzinfo=UTC)
    cands = [
        replace(turn(0, "I'm vegetarian.", speaker="Ann"), event_time=said),
        replace(
            turn(1, "I started eating meat again.", speaker="Ann"), event_time=said + timedelta(days=120)
        ),
        replace(
            turn(2, "Nice, what did you have?", speaker="Bob"),
            event_time=said + timedelta(days=120, minutes=1),
        ),
    ]
    results = build_results(cands, np.array([5.0, 4.9, 4.8]), RankingConfig())
    assert [r.source_message_ids for r in results] == [("D1:0",), ("D1:1", "D1:2")]
