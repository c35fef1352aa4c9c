"""The passage planner: long messages become passages that cover every word, in order, within size."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest

from memsvc.extraction.passages import PassageConfig, plan_passages


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(["alpha", "beta", "gamma", "delta", "flask", "route", "token"]) for _ in range(n)]
    return "The " + " ".join(words) + "."


def _message(rng: random.Random) -> str:
    paragraphs = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if kind < 0.2:
            lines = [f"    x{i} = call({i})" for i in range(rng.randint(2, 40))]
            paragraphs.append("```python\n" + "\n".join(lines) + "\n```")
        elif kind < 0.4:
            paragraphs.append("\n".join(f"- item {_sentence(rng, rng.randint(2, 12))}" for _ in range(5)))
        else:
            paragraphs.append(" ".join(_sentence(rng, rng.randint(3, 40)) for _ in range(rng.randint(1, 6))))
    return "\n\n".join(paragraphs)


def test_a_short_message_stays_whole() -> None:
    assert plan_passages("I moved to Lisbon last month.", PassageConfig(max_words=20, overlap_words=0)) == []
    assert plan_passages(" ".join(["word"] * 20), PassageConfig(max_words=20, overlap_words=0)) == []


@pytest.mark.parametrize(("max_words", "overlap"), [(20, 0), (60, 0), (100, 0), (100, 30), (150, 20)])
def test_passages_cover_every_word_in_order_within_size(max_words: int, overlap: int) -> None:
    rng = random.Random(max_words * 100 + overlap)
    config = PassageConfig(max_words=max_words, overlap_words=overlap)
    for _ in range(200):
        text = _message(rng)
        words = text.split()
        passages = plan_passages(text, config)
        if len(words) <= max_words:
            assert passages == []
            continue
        if not passages:  # one passage and a small tail: the message stands whole
            assert len(words) <= max_words + max_words // 4
            continue
        assert len(passages) >= 2
        covered: set[int] = set()
        for i, passage in enumerate(passages):
            assert passage.index == i
            # The text is exactly the message's words start..end, in order.
            assert passage.text.split() == words[passage.start_word : passage.end_word]
            # At most max_words, except a last piece too small to stand alone joining the one before.
            assert passage.words <= max_words + max_words // 4
            covered.update(range(passage.start_word, passage.end_word))
        assert covered == set(range(len(words)))
        starts = [p.start_word for p in passages]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        for before, after in pairwise(passages):
            shared = before.end_word - after.start_word
            assert 0 <= shared <= overlap


def test_cuts_fall_between_sentences_and_paragraphs() -> None:
    first = "Flask handles the routes. " * 6  # 24 words, 6 sentences
    second = "Postgres stores the rows. " * 6
    passages = plan_passages(
        first.strip() + "\n\n" + second.strip(), PassageConfig(max_words=30, overlap_words=0)
    )
    assert [p.text for p in passages] == [first.strip(), second.strip()]
    long_paragraph = " ".join(f"Sentence number {i} ends here." for i in range(20))  # 100 words
    for passage in plan_passages(long_paragraph, PassageConfig(max_words=30, overlap_words=0)):
        assert passage.text.startswith("Sentence number") and passage.text.endswith("ends here.")


def test_a_code_block_is_cut_only_between_its_lines() -> None:
    code = "```python\n" + "\n".join(f"value_{i} = compute(alpha, beta, {i})" for i in range(30)) + "\n```"
    passages = plan_passages("Here is the code:\n\n" + code, PassageConfig(max_words=40, overlap_words=0))
    lines = set(code.split("\n"))
    for passage in passages:
        for line in passage.text.split("\n"):
            assert line in lines or line == "Here is the code:"


def test_overlap_repeats_the_end_of_the_previous_passage() -> None:
    text = " ".join(f"Step {i} is done now." for i in range(40))  # 200 words, 5-word sentences
    passages = plan_passages(text, PassageConfig(max_words=50, overlap_words=10))
    for before, after in pairwise(passages):
        assert after.start_word == before.end_word - 10
    assert passages[-1].end_word == 200


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        PassageConfig(max_words=5, overlap_words=0)
    with pytest.raises(ValueError):
        PassageConfig(max_words=100, overlap_words=60)


def test_settings_name_the_variables_when_the_overlap_does_not_fit() -> None:
    from pydantic import ValidationError

    from memsvc.config import Settings

    with pytest.raises(ValidationError, match="MEMSVC_PASSAGE_OVERLAP_WORDS"):
        Settings(passage_max_words=30)
    assert Settings(passage_max_words=30, passage_overlap_words=0).passage_overlap_words == 0
