"""The consolidation benchmark's trace of what a run changed in each question's top 10."""

from __future__ import annotations

from bench.consolidation import changed_top10


def test_only_questions_whose_top_10_moved_are_listed_with_their_word_change() -> None:
    same = ("same question", [("a", "fact", 5, "Ann keeps a kayak"), ("b", "turn", 9, "Thanks!")])
    before = [
        same,
        ("junk left", [("c", "turn", 7, "This is a great healthy habit!"), ("d", "fact", 4, "Jo runs")]),
        ("reordered", [("e", "fact", 3, "x"), ("f", "fact", 4, "y")]),
    ]
    after = [
        same,
        ("junk left", [("d", "fact", 4, "Jo runs"), ("g", "excerpt", 56, "Deborah: Yoga ...")]),
        ("reordered", [("f", "fact", 4, "y"), ("e", "fact", 3, "x")]),
    ]
    [moved] = changed_top10(before, after)
    assert moved["question"] == "junk left" and moved["words"] == 49
    assert moved["left"] == [("turn", 7, "This is a great healthy habit!")]
    assert moved["came"] == [("excerpt", 56, "Deborah: Yoga ...")]
