"""Which message a correction ("Sorry, I meant Tuesday.") corrects, and how it then reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from memsvc.extraction.base import Turn
from memsvc.extraction.corrections import LOOKBACK_MESSAGES, corrections_in
from memsvc.extraction.rules import RulesExtractor

AT = datetime(2024, 5, 6, 10, tzinfo=UTC)


def _turns(*said: str | tuple[str, str], session: str = "s") -> list[Turn]:
    out = []
    for i, item in enumerate(said):
        speaker, text = item if isinstance(item, tuple) else ("Ann", item)
        out.append(Turn(f"m{i}", "user", speaker, text, AT, session))
    return out


@pytest.mark.parametrize(
    ("original", "correction", "corrected"),
    [
        ("My exam is on Monday.", "Sorry, I meant Tuesday.", "My exam is on Tuesday."),
        ("I moved to Lisbon.", "Actually, I meant Porto, not Lisbon.", "I moved to Porto."),
        ("Last week I moved to Lisbon.", "Sorry, I meant Porto.", "Last week I moved to Porto."),
        ("My sister is 12 years old.", "Oops, she's 13.", "My sister is 13 years old."),
        ("The meeting is at 3pm.", "Correction: 4pm, not 3pm.", "The meeting is at 4pm."),
        ("My flight is on 12 May.", "Sorry, I meant 14 May.", "My flight is on 14 May."),
        ("I met Sarah in Paris.", "Sorry, I meant Rome, not Paris.", "I met Sarah in Rome."),
        # As people type them (QA, session 21: each was kept as said, the old value current).
        (
            "My flight to Rome is on Thursday.",
            "actually it's Friday, sorry",
            "My flight to Rome is on Friday.",
        ),
        ("I work at Stripe.", "wait no, Square. not Stripe lol", "I work at Square."),
        ("My cat's name is Luna.", "oops, I meant Lola, Luna is my sister's cat", "My cat's name is Lola."),
        (
            "My sister's wedding is on July 2nd.",
            "actually it's July 3rd, not the 2nd",
            "My sister's wedding is on July 3rd.",
        ),
        # A number with its unit replaces the number of that unit.
        (
            "Our staging cluster runs on 4 nodes.",
            "Sorry, I meant 6 nodes.",
            "Our staging cluster runs on 6 nodes.",
        ),
    ],
)
def test_a_correction_rewrites_what_it_corrects(original: str, correction: str, corrected: str) -> None:
    found = corrections_in(_turns(original, correction))
    assert list(found) == ["m1"]
    assert found["m1"].corrected.text == corrected
    assert found["m1"].original == "m0" and found["m1"].replaces == ("m0",)


@pytest.mark.parametrize(
    "said",
    [
        ("I met Sarah in Paris.", "Sorry, I meant Rome."),  # two names: which one is not known
        ("My exam is on Monday.", "Sorry, I meant Tuesday's fine."),  # not a value
        ("I'm sorry to hear that.", "I'm sorry, it's not my fault."),
        ("Actually, it's fine.",),
        ("My exam is on Monday.", "No, wait, that is fine."),
        ("My exam is on Monday.", "Sorry, I meant Monday."),  # nothing changes
        (("Bob", "My party is on Friday."), "Sorry, I meant Saturday."),  # not the speaker's own
        ("I ran 5 km and swam 2 km.", "Sorry, I meant 7 km."),  # two of that unit
        ("I have 2 cats.", "Sorry, I meant 3 dogs."),  # no number of that unit
    ],
)
def test_what_corrects_nothing_changes_nothing(said: tuple[str | tuple[str, str], ...]) -> None:
    assert corrections_in(_turns(*said)) == {}


def test_a_correction_looks_back_only_a_few_messages_of_its_session() -> None:
    filler = [("Bob", "Nice.")] * LOOKBACK_MESSAGES
    assert corrections_in(_turns("My exam is on Monday.", *filler, "Sorry, I meant Tuesday.")) == {}
    later = Turn("x", "user", "Ann", "Sorry, I meant Tuesday.", AT, "b")
    other_session = [*_turns("My exam is on Monday.", session="a"), later]
    assert corrections_in(other_session) == {}


def test_a_second_correction_corrects_the_corrected_message_and_replaces_both() -> None:
    earlier = _turns("My exam is on Monday.", "Sorry, I meant Tuesday.")
    later = [Turn("m2", "user", "Ann", "Actually, Wednesday, not Tuesday.", AT, "s")]
    found = corrections_in(later, earlier)
    assert found["m2"].corrected.text == "My exam is on Wednesday."
    assert found["m2"].original == "m0" and found["m2"].replaces == ("m0", "m1")


def test_i_meant_is_past_tense_in_the_third_person() -> None:
    facts = RulesExtractor().extract(_turns("I meant to call my sister yesterday.")).facts
    assert [f.content for f in facts] == ["Ann meant to call Ann's sister on 5 May 2024"]
