"""The retrieval benchmark's metric (bench/retrieval.py): what a result covers, within what budget."""

from __future__ import annotations

import pytest

from bench.retrieval import (
    SPLIT,
    Conversation,
    Scores,
    beam_evidence,
    covered,
    covered_within,
    evidence_turns,
    half_of,
    session_hit,
)


def test_a_result_covers_its_provenance_only_up_to_five_messages() -> None:
    results = [
        (["a", "b", "c", "d", "e", "f"], 40),  # a digest of six messages covers nothing
        (["g", "h", "i", "j", "k"], 30),  # five is still precise
        (["l"], 5),
    ]
    assert covered(results, 1) == set()
    assert covered(results, 2) == {"g", "h", "i", "j", "k"}
    assert covered(results, 10) == {"g", "h", "i", "j", "k", "l"}


def test_recall_within_the_budget_takes_whole_results_in_order_up_to_the_first_that_overflows() -> None:
    results = [(["a"], 200), (["b"], 150), (["c"], 1), (["d"], 1)]
    # 200 + 150 = 350 fits exactly; "c" would make 351.
    assert covered_within(results, 350) == {"a", "b"}
    # A long first result spends the budget: nothing after it counts, even what would fit.
    assert covered_within([(["a"], 400), (["b"], 10)], 350) == set()
    # A broad result costs its words but covers nothing.
    assert covered_within([(list("abcdef"), 100), (["g"], 100)], 350) == {"g"}


def test_session_hit_needs_a_result_from_one_evidence_session_in_the_top_five() -> None:
    session_of = {"a": "s1", "b": "s1", "c": "s2", "d": "s3", "e": "s3"}
    evidence = {"c"}
    # A digest of all of s2 (any length) stands for s2.
    assert session_hit([(["c"], 10)], evidence, session_of)
    assert session_hit([(["d"], 1)] * 4 + [(["c"], 1)], evidence, session_of)
    assert not session_hit([(["d"], 1)] * 5 + [(["c"], 1)], evidence, session_of)
    # A result spanning two sessions stands for neither.
    assert not session_hit([(["c", "d"], 10)], evidence, session_of)
    assert not session_hit([(["a", "b"], 10)], evidence, session_of)


def test_scores_average_per_category_and_over_all() -> None:
    scores = Scores()
    session_of = {"a": "s1", "b": "s1", "c": "s2"}
    scores.add("x", {"a", "b"}, [(["a"], 10), (["c"], 500)], session_of)
    scores.add("y", {"c"}, [(["a"], 400), (["c"], 10)], session_of)
    out = scores.summary()
    assert out["categories"]["x"]["recall@10"] == pytest.approx(0.5)
    assert out["categories"]["y"]["recall@10"] == pytest.approx(1.0)
    assert out["recall@10"] == pytest.approx(0.75)
    assert out["categories"]["y"]["recall@350w"] == 0.0  # the 400-word result fills the budget
    assert out["categories"]["x"]["recall@350w"] == pytest.approx(0.5)
    assert out["session_hit@5"] == pytest.approx(1.0)
    assert out["words@10"] == pytest.approx(460)
    assert out["questions"] == 2


def test_evidence_ids_as_the_data_sets_write_them() -> None:
    assert evidence_turns(["D8:6; D9:17", "D:11:26"]) == {"D8:6", "D9:17", "D11:26"}
    assert beam_evidence({"first_event": [2], "second_event": [0, 4]}) == {"0", "2", "4"}
    assert beam_evidence([4, 60]) == {"4", "60"}
    assert beam_evidence(None) == set()


def test_the_split_is_disjoint_and_whole() -> None:
    for halves in SPLIT.values():
        assert not set(halves["tune"]) & set(halves["report"])
    assert len(SPLIT["locomo"]["tune"]) + len(SPLIT["locomo"]["report"]) == 8
    assert sorted(SPLIT["beam"]["tune"] + SPLIT["beam"]["report"], key=int) == [str(i) for i in range(1, 15)]


def test_each_conversation_is_reported_with_its_half() -> None:
    assert half_of(Conversation("beam", "3", [], [])) == "tune"
    assert half_of(Conversation("beam", "9", [], [])) == "report"
    assert half_of(Conversation("locomo", "conv-43", [], [])) == "report"
    with pytest.raises(StopIteration):
        half_of(Conversation("beam", "99", [], []))
