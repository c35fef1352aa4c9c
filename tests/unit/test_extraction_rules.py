"""RulesExtractor on real LoCoMo conversations and on small hand-made cases."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest

from memsvc.consolidation import Slot, fact_slot
from memsvc.extraction import ExtractedEntity, Extraction, RulesExtractor, Turn
from memsvc.extraction.rules import name_sources

_REPO = Path(__file__).resolve().parents[2]
_LOCOMO = next(
    (p for p in (_REPO / "shared/data/locomo", _REPO.parent / "shared/data/locomo") if p.is_dir()),
    None,
)
AT = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


@cache
def locomo_session(conv: str, n: int) -> tuple[Turn, ...]:
    """One LoCoMo session as ingest would hand it over: photo captions appended as "[photo: ...]"."""
    if _LOCOMO is None:
        pytest.skip("LoCoMo data (shared/data/locomo) not found")
    data = json.loads((_LOCOMO / f"{conv}.json").read_text())
    at = datetime.strptime(data[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)
    return tuple(
        Turn(
            t["dia_id"],
            "user",
            t["speaker"],
            t["text"] + (f" [photo: {t['blip_caption']}]" if t.get("blip_caption") else ""),
            at,
            f"{conv}-{n}",
        )
        for t in data[f"session_{n}"]
    )


@cache
def extracted(conv: str, n: int) -> Extraction:
    return RulesExtractor().extract(locomo_session(conv, n))


def facts_from(result: Extraction, message_id: str) -> list[str]:
    return [f.content for f in result.facts if message_id in f.source_message_ids]


def chat(*lines: tuple[str, str], at: datetime = AT) -> list[Turn]:
    return [Turn(f"m{i}", "user", speaker, text, at) for i, (speaker, text) in enumerate(lines, 1)]


# -- real conversations -----------------------------------------------------------------------------


def test_statement_becomes_a_third_person_fact_citing_exactly_its_turn() -> None:
    result = extracted("conv-26", 1)
    (fact,) = [f for f in result.facts if f.source_message_ids == ("D1:3",)]
    # "I went to a LGBTQ support group yesterday and it was so powerful." said by Caroline on 8 May 2023
    assert fact.content.startswith("Caroline went to a LGBTQ support group on 7 May 2023")
    assert fact.subject == "Caroline"
    assert fact.kind == "event"
    assert fact.valid_from == datetime(2023, 5, 7, tzinfo=UTC)


def test_questions_and_greetings_state_no_fact() -> None:
    result = extracted("conv-26", 1)
    # D1:1 "Hey Mel! Good to see you! How have you been?"; D1:10 "Wow, Caroline! What kinda jobs are
    # you thinkin' of? Anything that stands out?"
    assert facts_from(result, "D1:1") == []
    assert facts_from(result, "D1:10") == []
    solo = RulesExtractor().extract(
        chat(("Ann", "Did you go to the park yesterday?"), ("Bob", "Thanks, Ann!"))
    )
    assert solo.facts == []


def test_a_run_on_question_keeps_the_statement_it_opens_with() -> None:
    asked = RulesExtractor().extract(
        chat(
            (
                "user",
                "I'm learning probability, and I prefer step-by-step explanations with dice examples, "
                "so can you help me find the chance of rolling an even number?",
            ),
            (
                "user",
                "I'm kinda stuck with my essay, and I prefer Microsoft Word over Google Docs, any tips?",
            ),
            ("user", "I moved my app to Render, but I'm not sure how to set the port, can you help?"),
            ("user", "I got a raise in August, which Joshua told me to add to my resume, any tips?"),
            ("user", "Is it true that dice rolls are independent events?"),
            ("user", "Wow, that sounds great, what did you paint?"),
            ("user", "Well enough about me though, what have you been up to?"),
            ("user", "I was wondering about the exam, do you know when it starts?"),
            ("user", "I want to make sure I'm doing this right, can you check my proof?"),
        )
    )
    by_message = {
        m: [(f.kind, f.content) for f in asked.facts if m in f.source_message_ids]
        for m in ("m1", "m2", "m3", "m4")
    }
    assert ("preference", "User prefers step-by-step explanations with dice examples") in by_message["m1"]
    assert ("preference", "User prefers Microsoft Word over Google Docs") in by_message["m2"]
    assert not any("chance" in content or "rolling" in content for _, content in by_message["m1"])
    # What the speaker is unsure of leads into the question too.
    assert [content for _, content in by_message["m3"]] == ["User moved user's app to Render"]
    # A relative clause after a comma ("which Joshua told me…") is part of the statement.
    assert any("which Joshua told user to add" in content for _, content in by_message["m4"])
    # A question from its first word, or after a reaction or a lead-in, still states nothing.
    assert not [f for f in asked.facts if {"m5", "m6", "m7", "m8", "m9"} & set(f.source_message_ids)]


def test_relative_dates_resolve_against_the_session_time() -> None:
    result = extracted("conv-26", 2)  # 1:14 pm on 25 May 2023, a Thursday
    (race,) = [f for f in result.facts if "charity race" in f.content]
    assert race.source_message_ids == ("D2:1",)
    assert race.valid_from == datetime(2023, 5, 20, tzinfo=UTC)  # "last Saturday"
    assert "20 May 2023" in race.content
    (camping,) = [f for f in result.facts if "camping" in f.content]
    assert camping.kind == "plan"
    assert camping.valid_from == datetime(2023, 6, 1, tzinfo=UTC)  # "next month"
    assert "June 2023" in camping.content


def test_photo_caption_becomes_a_shared_photo_event() -> None:
    result = extracted("conv-26", 1)
    photos = [f for f in result.facts if "shared a photo" in f.content]
    assert any(
        f.content == "Caroline shared a photo of a dog walking past a wall with a painting of a woman"
        and f.source_message_ids == ("D1:5",)
        and f.kind == "event"
        for f in photos
    )


def test_provenance_is_precise_on_whole_sessions() -> None:
    for conv, n in (("conv-26", 1), ("conv-26", 2), ("conv-30", 1), ("conv-41", 3)):
        session = locomo_session(conv, n)
        ids = {t.message_id for t in session}
        result = extracted(conv, n)
        assert len(result.facts) >= len(session) // 3, "a session yields a fair number of facts"
        for f in result.facts:
            assert 1 <= len(f.source_message_ids) <= 3
            assert set(f.source_message_ids) <= ids
            assert f.content and not f.content.lower().startswith(("i ", "i'm ", "my "))
        ends = {name for r in result.relations for name in (r.subject, r.object)}
        for e in result.entities:
            assert e.source_message_ids or e.name in ends
            assert set(e.source_message_ids) <= ids
        names = {e.name for e in result.entities}
        for r in result.relations:
            assert r.subject in names and r.object in names
            assert 1 <= len(r.source_message_ids) <= 3


def test_an_entity_s_sources_are_exactly_the_messages_that_name_it() -> None:
    for conv, n in (("conv-26", 1), ("conv-30", 1), ("conv-41", 3)):
        session = locomo_session(conv, n)
        for e in extracted(conv, n).entities:
            spelled = [x.lower() for x in (e.name, *e.aliases)]
            naming = tuple(
                t.message_id
                for t in session
                if any(
                    re.search(rf"(?<!\w){re.escape(x)}(?!\w)", t.text.lower().replace("’", "'"))
                    for x in spelled
                )
            )
            assert e.source_message_ids == naming, e.name
    # Caroline's facts come from her own turns, which do not name her: only the turns that do.
    entities = {e.name: e for e in extracted("conv-26", 1).entities}
    assert entities["Caroline"].source_message_ids == ("D1:2", "D1:4", "D1:10", "D1:16", "D1:18")
    assert entities["Melanie"].source_message_ids == ("D1:13", "D1:15")


def test_a_speaker_named_nowhere_is_kept_for_its_relations_without_sources() -> None:
    result = RulesExtractor().extract(chat(("Ann", "I visited Riverside Park yesterday."), ("Bob", "Nice!")))
    entities = {e.name: e for e in result.entities}
    assert entities["Ann"].source_message_ids == ()
    assert entities["Riverside Park"].source_message_ids == ("m1",)
    assert ("Ann", "visited", "Riverside Park") in {
        (r.subject, r.predicate, r.object) for r in result.relations
    }
    assert "Bob" not in entities  # named nowhere and in no relation


def test_a_speaker_without_a_name_has_relations_as_a_named_one_does() -> None:
    # The facts of a speaker named "user" open "User …": their relations were read for "user …".
    result = RulesExtractor().extract(
        [
            Turn("m1", "user", "user", "I work at Google in Madrid.", AT),
            Turn("m2", "user", "user", "I moved to Lisbon last year.", AT),
        ]
    )
    relations = {(r.subject, r.predicate, r.object) for r in result.relations}
    assert {("user", "works_at", "Google"), ("user", "moved_to", "Lisbon")} <= relations


def test_she_or_he_after_someone_of_the_speaker_s_is_them() -> None:
    said = "My sister Lena is a doctor. She lives in Rome. She's 40. He said hi."
    facts = [f.content for f in RulesExtractor().extract(chat(("Ann", said))).facts]
    assert "Ann's sister Lena lives in Rome" in facts and "Ann's sister Lena is 40" in facts
    assert not any("said hi" in f for f in facts)  # "He" is not a sister
    # In the speaker's next message, after a reply, too.
    apart = RulesExtractor().extract(
        chat(("Ann", "My sister Lena is a doctor."), ("Bob", "Nice!"), ("Ann", "She moved to Berlin."))
    )
    assert "Ann's sister Lena moved to Berlin" in [f.content for f in apart.facts]
    # Someone the speaker has, named ("a dog named Rex"), too; someone they met is not theirs.
    pets = "I have a dog named Rex. He is 3. I met a guy named Tom. He is funny."
    facts = [f.content for f in RulesExtractor().extract(chat(("Ann", pets))).facts]
    assert "Ann's dog Rex is 3" in facts and not any("funny" in f for f in facts)
    # Two of them named: "She" is not told apart.
    two = "My brother Tom and my sister Ana came. She stayed."
    assert not any("stayed" in f.content for f in RulesExtractor().extract(chat(("Ann", two))).facts)


def test_a_known_person_said_with_a_full_name_is_news_and_a_change_of_state_no_thing() -> None:
    result = RulesExtractor().extract(
        chat(("Ann", "My friend Jon is great."), ("Ann", "Jon Smith just got promoted."))
    )
    assert [f.content for f in result.facts if f.source_message_ids == ("m2",)] == [
        "Jon Smith just got promoted"
    ]
    assert "promoted" not in {e.name for e in result.entities}  # "got promoted" got no thing
    assert ("Ann", "got", "bike") in {
        (r.subject, r.predicate, r.object)
        for r in RulesExtractor().extract(chat(("Ann", "I got a new bike and got sick."))).relations
    }


def test_a_birthday_is_every_year_s_and_a_party_on_it_a_plan() -> None:
    result = RulesExtractor().extract(
        chat(("Ann", "My birthday is on October 3rd."), ("Ann", "My birthday party is on October 3rd."))
    )
    assert [(f.content, f.kind) for f in result.facts] == [
        ("Ann's birthday is on October 3rd", "fact"),
        ("Ann's birthday party is on 3 October 2023", "plan"),
    ]


def test_a_habit_said_with_we_after_when_it_recurs_is_a_fact() -> None:
    result = RulesExtractor().extract(chat(("Ann", "Every June we rent a cabin at Lake Tahoe.")))
    assert [f.content for f in result.facts] == ["Every June Ann and others rent a cabin at Lake Tahoe"]


def test_a_reply_about_that_and_nothing_more_states_no_fact() -> None:
    said = [
        "That is great, I love it!",
        "I think that's a great idea.",
        "Sounds good, I'll try that tomorrow.",
        "I love that song by Adele.",
    ]
    facts = [f.content for f in RulesExtractor().extract(chat(*(("Ann", s) for s in said))).facts]
    assert facts == ["Ann loves that song by Adele"]


def test_name_sources_corrects_any_extractor_s_sources() -> None:
    turns = chat(
        ("Ann", "The Dr. Smith's clinic opened."),
        ("Bob", "Smithson is not him."),
        ("Ann", "I told DR SMITH about Lisbon!"),
        ("Bob", "When do you fly?"),
    )
    given = [
        ExtractedEntity("Dr. Smith", "person", ("m2", "m4")),  # as an LLM might cite: the wrong turns
        ExtractedEntity("Lisboa", "place", ("m1",), aliases=("Lisbon",)),
        ExtractedEntity("Tokyo", "place", ("m4",)),
    ]
    fixed = {e.name: e.source_message_ids for e in name_sources(given, turns)}
    assert fixed == {"Dr. Smith": ("m1", "m3"), "Lisboa": ("m3",), "Tokyo": ()}


def test_relation_and_entities_from_a_real_turn() -> None:
    result = extracted("conv-26", 1)
    assert any(
        (r.subject, r.predicate, r.object, r.source_message_ids)
        == ("Caroline", "went_to", "LGBTQ support group", ("D1:3",))
        for r in result.relations
    )
    entities = {e.name: e for e in result.entities}
    assert entities["Caroline"].type == "person"
    assert entities["LGBTQ support group"].source_message_ids == ("D1:3",)
    # "Mel" is how Caroline greets Melanie, but merging them is left to ingest's embedding step.
    assert "Mel" in entities and "Melanie" in entities
    assert entities["Mel"].source_message_ids == ("D1:1", "D1:17")


def test_subjectless_answers_get_the_speaker_as_subject() -> None:
    result = extracted("conv-26", 2)
    # D2:8 "Researching adoption agencies — it's been a dream to have a family ..."
    assert any(c.startswith("Caroline is researching adoption agencies") for c in facts_from(result, "D2:8"))
    # D2:9 "Wow, Caroline! That's awesome! Taking in kids in need - you're so kind." is a reaction
    # by Melanie, not news about Melanie.
    assert not any(c.startswith("Melanie is taking") for c in facts_from(result, "D2:9"))


def test_is_deterministic() -> None:
    session = locomo_session("conv-26", 2)
    assert RulesExtractor().extract(session) == RulesExtractor().extract(session)


# -- hand-made cases --------------------------------------------------------------------------------


def test_first_person_is_rewritten_with_verb_agreement() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Caroline", "I'm a counselor and I have two kids."),
            ("Melanie", "I am so tired, my husband took me to the beach and I love it there."),
            ("Caroline", "I've been painting a lot lately."),
            ("Melanie", "I cannot stand jazz concerts anymore."),
        )
    )
    contents = [f.content for f in result.facts]
    assert "Melanie cannot stand jazz concerts anymore" in contents  # a modal, not "cannots"
    assert "Caroline is a counselor" in contents
    assert "Caroline has two kids" in contents
    assert "Melanie is so tired, Melanie's husband took Melanie to the beach" in contents
    assert "Melanie loves it there" in contents
    assert "Caroline has been painting a lot lately" in contents


def test_kinds() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "I love hiking in the mountains."),
            ("Bob", "I'm going to visit Paris next month."),
            ("Ann", "I adopted a puppy last week."),
            ("Bob", "I work as a nurse at the city hospital."),
        )
    )
    kinds = {f.source_message_ids[0]: f.kind for f in result.facts}
    assert kinds == {"m1": "preference", "m2": "plan", "m3": "event", "m4": "fact"}
    plan = next(f for f in result.facts if f.kind == "plan")
    assert plan.content == "Bob is going to visit Paris in June 2023"
    assert plan.valid_from == datetime(2023, 6, 1, tzinfo=UTC)
    fact = next(f for f in result.facts if f.kind == "fact")
    assert fact.valid_from == AT  # no date in the text: the turn's time


def test_you_is_resolved_only_between_two_people() -> None:
    two = RulesExtractor().extract(
        chat(("Ann", "Hi Bob!"), ("Bob", "You're a nurse at the city hospital, Ann!"))
    )
    assert [(f.content, f.subject) for f in two.facts] == [("Ann is a nurse at the city hospital", "Ann")]
    three = RulesExtractor().extract(
        chat(("Ann", "Hi all!"), ("Bob", "You're a nurse at the city hospital!"), ("Cy", "Hello."))
    )
    assert three.facts == []


def test_compliments_thanks_and_promises_to_stay_in_touch_are_not_facts() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "I hiked to Whispering Falls last week."),
            ("Bob", "Your hikes sound like a blast! You're so talented at finding trails."),
            ("Ann", "Thanks! I'm glad it all worked out. I'll keep you posted."),
            ("Bob", "You must be so proud. I'm proud of what you did."),
        )
    )
    assert [f.source_message_ids for f in result.facts] == [("m1",)]


def test_yes_answer_cites_the_question_too() -> None:
    result = RulesExtractor().extract(
        chat(("Melanie", "Did you finish the painting of the lake?"), ("Caroline", "Yes, I did!"))
    )
    (fact,) = result.facts
    assert fact.content == "Caroline finished the painting of the lake"
    assert fact.source_message_ids == ("m1", "m2")
    assert fact.subject == "Caroline"
    no = RulesExtractor().extract(chat(("Ann", "Have you been to Rome?"), ("Bob", "No, never.")))
    assert [f.content for f in no.facts] == ["Bob has not been to Rome"]


def test_entity_variants_merge_with_exact_provenance() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "I visited Riverside Park yesterday."),
            ("Bob", "Nice, how was it?"),
            ("Ann", "The Riverside Park's trails are lovely, I went to riverside park twice."),
        )
    )
    parks = [e for e in result.entities if e.name.lower() == "riverside park"]
    assert len(parks) == 1
    (park,) = parks
    assert park.name == "Riverside Park"
    assert park.type == "place"
    assert park.source_message_ids == ("m1", "m3")  # not m2, which does not mention it
    assert any(r.predicate == "visited" and r.object == "Riverside Park" for r in result.relations)


def test_named_people_and_pets() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "My sister Jolene bought a house in Tampa."),
            ("Bob", "Cool! Jolene is lucky."),
            ("Ann", "We have a dog named Oliver."),
        )
    )
    entities = {e.name: e for e in result.entities}
    assert entities["Jolene"].type == "person"
    assert entities["Jolene"].source_message_ids == ("m1", "m2")
    assert entities["Tampa"].type == "place"
    assert entities["Oliver"].type == "other"
    triples = {(r.subject, r.predicate, r.object) for r in result.relations}
    assert ("Ann", "has_sister", "Jolene") in triples
    assert ("Ann", "has_dog", "Oliver") in triples


def test_someone_named_is_one_entity_and_belongs_to_whoever_has_them() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "I have a dog named Rex."),
            ("Bob", "Cute!"),
            ("Ann", "My sister Lena has a son named Max."),
        )
    )
    names = {e.name for e in result.entities}
    assert "Rex" in names and not any("named" in name for name in names)
    triples = {(r.subject, r.predicate, r.object) for r in result.relations}
    assert ("Ann", "has_dog", "Rex") in triples
    assert not any(r.object.startswith("dog") for r in result.relations)
    assert ("Ann", "has_sister", "Lena") in triples
    assert ("Lena", "has_son", "Max") in triples and ("Ann", "has_son", "Max") not in triples


def test_where_one_works_or_teaches_is_an_employer_and_home_is_none() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "I work at Amazon."),
            ("Ann", "Amazon is in Seattle."),
            ("Bob", "I teach at Lincoln High."),
            ("Ann", "I work at home most days and run every morning."),
            ("Bob", "I joined Vercel as a staff engineer."),
        )
    )
    entities = {e.name: e.type for e in result.entities}
    assert entities["Amazon"] == "organization" and entities["Lincoln High"] == "organization"
    assert entities["Vercel"] == "organization"
    triples = {(r.subject, r.predicate, r.object) for r in result.relations}
    assert ("Ann", "works_at", "Amazon") in triples and ("Bob", "works_at", "Lincoln High") in triples
    assert not any(r.object.startswith(("home", "morning")) for r in result.relations)


def test_names_with_letters_beyond_ascii_are_names() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Zoë", "My sister Anaïs lives in Kraków."),
            ("Łukasz", "Nice! I visited Łódź with Émile last week."),
            ("Zoë", "We have a cat named Škoda."),
        )
    )
    entities = {e.name: e for e in result.entities}
    assert entities["Anaïs"].type == "person" and entities["Anaïs"].source_message_ids == ("m1",)
    assert entities["Kraków"].type == "place"
    assert {"Zoë", "Łukasz", "Łódź", "Émile", "Škoda"} <= set(entities)
    triples = {(r.subject, r.predicate, r.object) for r in result.relations}
    assert ("Zoë", "has_sister", "Anaïs") in triples
    assert ("Zoë", "has_cat", "Škoda") in triples
    assert any(
        r.subject == "Łukasz" and r.predicate == "visited" and r.object == "Łódź" for r in result.relations
    )


def test_system_and_unnamed_assistant_turns_are_not_facts() -> None:
    turns = [
        Turn("s", "system", "system", "You are a helpful assistant.", AT),
        Turn("u", "user", "user", "I moved to Berlin last year.", AT),
        Turn("a", "assistant", "assistant", "I am happy to help you settle in.", AT),
    ]
    result = RulesExtractor().extract(turns)
    assert [(f.content, f.source_message_ids) for f in result.facts] == [
        ("User moved to Berlin in 2022", ("u",))
    ]
    assert RulesExtractor().extract([]).facts == []


def test_words_opening_markdown_lines_are_not_names() -> None:
    """An assistant's lists and headings capitalise their first words; those are not entities, and
    a name inside such a line still is."""
    answer = (
        "## Plan for the interview\n"
        "1. Research the company before Monday.\n"
        "- **Focus**: on what you did at Acme.\n"
        "* Ensure you ask Priya about the team.\n"
        "> If in doubt, be brief."
    )
    turns = [
        Turn("m1", "user", "Sam", "How do I prepare for the interview?", AT),
        Turn("m2", "assistant", "assistant", answer, AT),
    ]
    names = {e.name for e in RulesExtractor().extract(turns).entities}
    assert {"Acme", "Priya"} <= names
    assert not names & {"Plan", "Research", "Focus", "Ensure", "If"}


def test_a_standing_instruction_is_a_preference_found_by_the_requests_it_governs() -> None:
    turns = [
        Turn("m1", "user", "user", "Always include version numbers when I ask about libraries used.", AT),
        Turn("m2", "user", "Ann", "When I ask about taxes, please always give the year. Thanks!", AT),
        Turn("m3", "user", "Ann", "Never use jargon whenever I ask for explanations!", AT),
    ]
    result = RulesExtractor().extract(turns)
    instructions = {f.source_message_ids: f for f in result.facts if f.applies_to}
    assert set(instructions) == {("m1",), ("m2",), ("m3",)}
    first, taxes, jargon = instructions[("m1",)], instructions[("m2",)], instructions[("m3",)]
    assert first.content == "When the user asks about libraries used: always include version numbers."
    assert (first.kind, first.applies_to, first.subject) == ("preference", "libraries used", "user")
    assert (taxes.content, taxes.applies_to) == ("When Ann asks about taxes: always give the year.", "taxes")
    assert jargon.content == "When Ann asks for explanations: never use jargon."
    assert jargon.applies_to == "explanations"
    assert all(f.importance > 0.5 for f in instructions.values())


def test_always_without_a_request_it_governs_is_no_instruction() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "Always happy to help!"),
            ("Bob", "I always go hiking when I ask for a break."),
            ("Ann", "Always rooting for you."),
        )
    )
    assert not [f for f in result.facts if f.applies_to]
    assert not [f for f in result.facts if f.kind == "preference" and "asks about" in f.content]


def test_a_label_before_a_statement_is_not_part_of_the_fact() -> None:
    # "Big news: Sam got a new job as …" was not read as a job: a slot's fact opens with its subject.
    result = RulesExtractor().extract(
        chat(
            ("Sam", "Big news: I got a new job as a software engineer at Acme Corp!"),
            ("Sam", "Wow, update: we moved to Porto."),
            ("Sam", "My favorite foods: pizza, pasta and sushi."),
        )
    )
    assert facts_from(result, "m1") == ["Sam got a new job as a software engineer at Acme Corp"]
    assert facts_from(result, "m2")[0].startswith("Sam and others moved to Porto")
    assert facts_from(result, "m3") == ["Sam's favorite foods: pizza, pasta and sushi"]


def test_her_name_after_an_animal_of_the_speaker_s_names_it() -> None:
    said = RulesExtractor().extract(
        chat(
            ("Sam", "I adopted a cat. Her name is Pepper and she's 2."),
            ("Sam", "We just got a new puppy! His name is Biscuit."),
            ("Sam", "I got a new car. Her name is Betty."),
            ("Sam", "My sister adopted a cat. Her name is Pepper."),
        )
    )
    assert facts_from(said, "m4") == ["Sam's sister adopted a cat"]  # whose name is said is unclear
    assert facts_from(said, "m1") == ["Sam adopted a cat", "Sam's cat's name is Pepper, and she's 2"]
    assert fact_slot(facts_from(said, "m1")[1], "Sam") == Slot("pet", "pepper", "Pepper")
    assert facts_from(said, "m2")[1] == "Sam's puppy's name is Biscuit"
    assert facts_from(said, "m3") == ["Sam got a new car"]  # a car is no one to name


def test_an_age_said_with_a_number_alone_is_a_fact() -> None:
    result = RulesExtractor().extract(
        chat(("Sam", "I'm 34."), ("Sam", "I just turned 35!"), ("Sam", "It is 5."), ("Sam", "We are 4."))
    )
    assert [facts_from(result, m) for m in ("m1", "m2", "m3", "m4")] == [
        ["Sam is 34"],
        ["Sam just turned 35"],
        [],
        [],
    ]


def test_an_amount_the_user_states_without_my_is_theirs() -> None:
    turns = [
        *chat(
            ("Sam", "Rent went up to 1650."),
            ("Sam", "Progress: test coverage is now 85%."),
            ("Sam", "Salary is now $65k."),
            ("Sam", "Rent is crazy in NYC, 3000 for a studio."),
        ),
        Turn("a", "assistant", "Bot", "Uptime is 99.9% for most providers.", AT),
    ]
    result = RulesExtractor().extract(turns)
    assert [facts_from(result, m) for m in ("m1", "m2", "m3", "m4", "a")] == [
        ["Sam's rent went up to 1650"],
        ["Sam's test coverage is now 85%"],
        ["Sam's salary is now $65k"],
        [],
        [],
    ]


@pytest.mark.parametrize(
    "said",
    ["Wait, I moved to Rome.", "Guess what, I moved to Rome!", "Give me a minute, I moved to Rome.",
     "Hold on - I moved to Rome.", "Listen, I moved to Rome."],
)  # fmt: skip
def test_an_opener_set_off_by_punctuation_is_not_part_of_the_fact(said: str) -> None:
    # "Give me a minute, I moved to Rome." stated nothing; "Wait, …" kept "Wait," in the fact.
    assert [f.content for f in RulesExtractor().extract(chat(("Ann", said))).facts] == ["Ann moved to Rome"]


@pytest.mark.parametrize(
    ("said", "fact", "entity", "entity_type"),
    [
        ("Mia and I have been together for two years.", "Mia and Ann have been together for two years",
         "Mia", "person"),
        ("Mia and I got married last June.", "Mia and Ann got married in June 2022", "Mia", "person"),
        ("Tom and I are going hiking on Friday.", "Tom and Ann are going hiking on 12 May 2023",
         "Tom", "person"),
        ("Me and Tom play chess.", "Ann and Tom play chess", "Tom", "person"),
        ("I've been dating Mia since March.", "Ann has been dating Mia since March 2023", "Mia", "person"),
        ("I live with Mia in a small flat.", "Ann lives with Mia in a small flat", "Mia", "person"),
        ("I code in Python every day.", "Ann codes in Python every day", "Python", "thing"),
        ("I write code in Rust at work.", "Ann writes code in Rust at work", "Rust", "thing"),
    ],
)  # fmt: skip
def test_a_name_beside_the_speaker_is_a_person_and_a_language_no_place(
    said: str, fact: str, entity: str, entity_type: str
) -> None:
    result = RulesExtractor().extract(chat(("Ann", said)))
    assert [f.content for f in result.facts] == [fact]
    assert [(e.name, e.type) for e in result.entities if e.name != "Ann"] == [(entity, entity_type)]


@pytest.mark.parametrize(
    ("said", "fact", "entities"),
    [
        ("I volunteer at St. Luke's Hospital every Monday.",
         "Ann volunteers at St. Luke's Hospital every Monday", [("St. Luke's Hospital", "place")]),
        ("We hiked Mt. Rainier last summer.", "Ann and others hiked Mt. Rainier in summer 2022",
         [("Mt. Rainier", "place")]),
        ("I met Mr. Johnson at the U.S. embassy.", "Ann met Mr. Johnson at the U.S. embassy",
         [("Mr. Johnson", "person")]),
        ("Dr. Patel said my knee is fine.", "Dr. Patel said Ann's knee is fine", [("Dr. Patel", "person")]),
    ],
)  # fmt: skip
def test_a_title_is_part_of_the_name_and_ends_no_sentence(
    said: str, fact: str, entities: list[tuple[str, str]]
) -> None:
    result = RulesExtractor().extract(chat(("Ann", said)))
    assert [f.content for f in result.facts] == [fact]
    assert [(e.name, e.type) for e in result.entities if e.name != "Ann"] == entities


@pytest.mark.parametrize(
    ("said", "fact"),
    [
        ("Please always answer in Spanish.", "When Ann asks about anything: always answer in Spanish."),
        ("From now on, keep your answers short.", "When Ann asks about anything: keep your answers short."),
        ("Call me Annie from now on.", "When Ann asks about anything: call Ann Annie."),
        # What to call someone stands until taken back, with no "from now on" ("Call Ann Ann" was a fact).
        ("Call me Annie.", "When Ann asks about anything: call Ann Annie."),
        ("You can call me Annie.", "When Ann asks about anything: call Ann Annie."),
        ("My friends call me Annie.", "Ann's friends call Ann Annie"),
        ("Never mention my ex.", "When Ann asks about anything: never mention Ann's ex."),
        ("Always happy to help!", None),
        ("Use bullet points.", None),  # a request of the moment, not standing
        ("I always use a standing desk.", "Ann always uses a standing desk"),
        # Taken back: an order of its own, which replaces the one it takes back.
        ("Please stop answering in Spanish.", "When Ann asks about anything: stop answering in Spanish."),
        (
            "You don't need to answer in Spanish anymore.",
            "When Ann asks about anything: you don't need to answer in Spanish anymore.",
        ),
        ("You can stop using emojis.", "When Ann asks about anything: you can stop using emojis."),
        (
            "Please don't answer in Spanish anymore.",
            "When Ann asks about anything: don't answer in Spanish anymore.",
        ),
        (
            "OK, you can stop answering in Spanish now.",
            "When Ann asks about anything: you can stop answering in Spanish.",
        ),
        (
            "Actually, you don't need to answer in Spanish anymore.",
            "When Ann asks about anything: you don't need to answer in Spanish anymore.",
        ),
        ("Stop worrying about it.", None),
        ("Don't worry about it.", None),
        # Its requests named at its end: for those requests only.
        (
            "Stop using bullet points for my resume questions.",
            "When Ann asks about resume: stop using bullet points.",
        ),
        # Named first, then any order to answer so (a change of an instruction).
        (
            "Actually, when I ask about resumes, use numbered lists instead of bullet points.",
            "When Ann asks about resumes: use numbered lists instead of bullet points.",
        ),
        ("When I ask about dinner, I like quick ideas.", "When Ann asks about dinner, Ann likes quick ideas"),
        # The requests are the speaker's: "my resume" is Ann's, not the reader's.
        (
            "When I ask about my resume, always use bullet points.",
            "When Ann asks about Ann's resume: always use bullet points.",
        ),
        (
            "When I ask for code, use Python unless I say otherwise.",
            "When Ann asks for code: use Python unless Ann says otherwise.",
        ),
        # How answers are at all is standing; an order asked as a question is an order.
        ("keep your answers short", "When Ann asks about anything: keep your answers short."),
        ("please be more concise", "When Ann asks about anything: be more concise."),
        ("hey can you call me Sam from now on?", "When Ann asks about anything: call Ann Sam."),
        ("Could you always answer in Spanish?", "When Ann asks about anything: always answer in Spanish."),
        ("Can you use Python for this?", None),
        ("Can you help me with my resume?", None),
        # Asked once: for a day, a taxi, an email, today.
        ("can you call me tomorrow?", None),
        ("Can you call me a taxi?", None),
        ("be more concise in this email", None),
        ("keep your answers short today, I'm on my phone", None),
    ],
)
def test_an_instruction_without_requests_named_governs_every_request(said: str, fact: str | None) -> None:
    result = RulesExtractor().extract(chat(("Ann", said)))
    assert [f.content for f in result.facts] == ([fact] if fact else [])
    if fact and fact.startswith("When Ann asks about ") and ":" in fact:
        topic = fact[len("When Ann asks about ") : fact.index(":")]
        assert result.facts[0].kind == "preference" and result.facts[0].applies_to == topic


@pytest.mark.parametrize(
    ("said", "fact"),
    [
        ("Yesterday, we went hiking.", "On 7 May 2023, Ann and others went hiking"),
        ("On Friday we went hiking.", "On 5 May 2023 Ann and others went hiking"),
        ("Then we went hiking.", "Then Ann and others went hiking"),
        # "our" before any "we" is the speaker's, after it theirs.
        (
            "Our Berlin move fell through, we're staying in Paris.",
            "Ann's Berlin move fell through, Ann and others are staying in Paris",
        ),
        ("Then we sold our old car.", "Then Ann and others sold their old car"),
    ],
)
def test_we_after_a_time_or_a_link_word_is_the_speaker(said: str, fact: str) -> None:
    # Only after when or what came before: "we" anywhere in a clause cost LoCoMo's tune half
    # 0.0079 R@10 on conv-41 (facts said of the speaker with others, beside their turns).
    assert [f.content for f in RulesExtractor().extract(chat(("Ann", said))).facts] == [fact]


@pytest.mark.parametrize(
    ("said", "relation"),
    [
        ("I've been dating Mia since March.", ("Ann", "dating", "Mia")),
        ("Mia and I have been together for two years.", ("Ann", "together_with", "Mia")),
        ("Tom and I got married last June.", ("Ann", "married", "Tom")),
        ("I'm engaged to Sam!", ("Ann", "engaged_to", "Sam")),
        ("Mia and I just got engaged!", ("Ann", "engaged_to", "Mia")),
        ("Mia and I have been married for ten years.", ("Ann", "married", "Mia")),
        ("Tom and I are going hiking.", None),
        ("Tom and I got together for coffee.", None),
    ],
)
def test_a_partner_is_a_relation_in_the_graph(said: str, relation: tuple[str, str, str] | None) -> None:
    result = RulesExtractor().extract(chat(("Ann", said)))
    assert [(r.subject, r.predicate, r.object) for r in result.relations] == ([relation] if relation else [])
    if relation:
        assert (relation[2], "person") in [(e.name, e.type) for e in result.entities]


@pytest.mark.parametrize(
    ("said", "facts"),
    [
        # Someone of the speaker's, named, is one subject with the speaker.
        (
            "My girlfriend Anna and I have been together for two years.",
            ["Ann's girlfriend Anna and Ann have been together for two years"],
        ),
        ("My best friend Tom and I went hiking.", ["Ann's best friend Tom and Ann went hiking"]),
        ("My trip to Paris and I loved it.", ["Ann's trip to Paris", "Ann loved it"]),
        # After a comma "and I" opens a clause of the speaker's own.
        ("My new job is great and I love it.", ["Ann's new job is great, and Ann loves it"]),
        # A lead-in is no part of the fact.
        ("Just so you know, I'm allergic to peanuts.", ["Ann is allergic to peanuts"]),
        ("Just so you know, Zoe has a peanut allergy.", ["Zoe has a peanut allergy"]),
        ("FYI, I moved to Porto.", ["Ann moved to Porto"]),
    ],
)
def test_subjects_beside_the_speaker_and_lead_ins(said: str, facts: list[str]) -> None:
    assert [f.content for f in RulesExtractor().extract(chat(("Ann", said))).facts] == facts


@pytest.mark.parametrize(
    ("said", "facts"),
    [
        ("The Tokyo trip got cancelled.", ["Ann's Tokyo trip got cancelled"]),
        ("The wedding was called off.", ["Ann's wedding was called off"]),
        ("The Berlin move fell through.", ["Ann's Berlin move fell through"]),
        ("The deal fell through.", []),  # no plan named
        ("The game got cancelled last night.", []),  # not said to be the speaker's
    ],
)
def test_a_plan_called_off_is_the_speakers(said: str, facts: list[str]) -> None:
    assert [f.content for f in RulesExtractor().extract(chat(("Ann", said))).facts] == facts


def test_an_o_or_d_apostrophe_is_part_of_a_name() -> None:
    # "O'Brien" was "Brien" (an "other"), "D'Souza" "Souza", "O’Connor" "Connor".
    result = RulesExtractor().extract(
        chat(
            ("Maeve", "I met Liam O’Connor at O'Hare."),
            ("Maeve", "My boss Conor O'Brien gave me the D'Souza account."),
        )
    )
    names = {e.name for e in result.entities}
    assert {"Liam O'Connor", "O'Hare", "Conor O'Brien", "D'Souza"} <= names
    assert not names & {"Brien", "Souza", "Connor", "Hare"}
    assert ("Maeve", "met", "Liam O'Connor") in {(r.subject, r.predicate, r.object) for r in result.relations}


@pytest.mark.parametrize(
    ("said", "facts"),
    [
        # "me" is no English pronoun here: it was "Hola, Lucía llamo Lucía y vivo en Sevilla".
        ("Hola, me llamo Lucía y vivo en Sevilla.", []),
        ("Ayer fui al médico porque me duele la rodilla.", []),
        ("Ich wohne in Berlin und arbeite bei Siemens.", []),
        ("Me llamo Lucía.", []),  # was "Lucía llamo Lucía"
        ("Je m'appelle Lucía et je suis étudiante.", []),
        # English with foreign names or words in it is read as before.
        ("I visited La Paz with my sister.", ["Lucía visited La Paz with Lucía's sister"]),
        ("Got promoted today!", ["Lucía got promoted on 8 May 2023"]),
    ],
)
def test_a_sentence_in_another_language_states_no_fact(said: str, facts: list[str]) -> None:
    assert [f.content for f in RulesExtractor().extract(chat(("Lucía", said))).facts] == facts


def test_a_sentence_opening_with_inverted_marks_opens_at_its_first_word() -> None:
    said = "¡Encantado de conocerte! ¿Qué tal? Vivo en Madrid con mi hermana Carmen."
    names = {e.name for e in RulesExtractor().extract(chat(("Lucía", said))).entities}
    assert {"Madrid", "Carmen"} <= names and not names & {"Encantado", "Qué"}


def test_a_block_of_code_states_nothing_and_names_nothing() -> None:
    said = (
        "I'm getting this error in my Flask app:\n\n```\nTraceback (most recent call last):\n"
        '  File "/home/sam/app.py", line 12, in <module>\n    db = Proxy(Config.DATABASE_URL)\n'
        "TypeError: Either str or None expected, got Optional[int]\n```\n\n"
        "My colleague Priya uses Django."
    )
    result = RulesExtractor().extract(chat(("Sam", said)))
    names = {e.name for e in result.entities}
    assert {"Priya", "Django", "Flask"} <= names  # the prose around it is read as before
    assert not names & {"Proxy", "Config", "Either", "None", "Optional", "/home/sam/app.py"}
    assert not any("Traceback" in f.content or "Proxy" in f.content for f in result.facts)


@pytest.mark.parametrize(
    "said",
    [
        "I'm connecting with postgres://admin:hunter2@localhost:5432/app but it fails.",
        "My PIN is 4821.",
        "My API key is sk-abcdefghijklmnop1234, I rotate it monthly.",
        "My password is hunter2 and I keep forgetting it.",
    ],
)
def test_a_sentence_holding_a_credential_states_no_fact(said: str) -> None:
    facts = [f.content for f in RulesExtractor().extract(chat(("Ann", said))).facts]
    assert facts == []
    # The rest of the message still does.
    facts = [f.content for f in RulesExtractor().extract(chat(("Ann", f"I moved to Lisbon. {said}"))).facts]
    assert facts == ["Ann moved to Lisbon"]


@pytest.mark.parametrize(
    ("said", "fact"),
    [
        ("i dont eat meat anymore btw", "Tom doesn't eat meat anymore"),  # was "Tom donts eat meat"
        ("im moving to Denver next month", "Tom is moving to Denver in April 2024"),
        ("I hate crowded places tbh.", "Tom hates crowded places"),
        ("Oh and I'm allergic to shellfish, just fyi.", "Tom is allergic to shellfish"),
        (
            "My son Leo turns 5 next week, any gift ideas?",
            "Tom's son Leo turns 5 in the week of 4 March 2024",
        ),
        ("I feel ill today.", "Tom feels ill on 1 March 2024"),  # "ill" is a word, not "I'll"
    ],
)
def test_chat_shorthand_is_read_as_meant(said: str, fact: str) -> None:
    turn = Turn(
        message_id="m1", role="user", speaker="Tom", text=said, event_at=datetime(2024, 3, 1, 10, tzinfo=UTC)
    )
    assert [f.content for f in RulesExtractor().extract([turn]).facts] == [fact]


def test_x_and_i_is_the_speaker_s_news_even_when_x_is_known() -> None:
    turns = [
        Turn(
            message_id=f"m{i}",
            role="user",
            speaker="Lena",
            text=t,
            event_at=datetime(2024, 3, 1, 10, i, tzinfo=UTC),
        )
        for i, t in enumerate(["My girlfriend is Mia.", "Mia and I broke up.", "Mia is moving to Rome."])
    ]
    facts = [(f.subject, f.content) for f in RulesExtractor().extract(turns).facts]
    # The breakup was Mia's (so it ended Mia's partner, not Lena's) once Mia was a known name.
    assert ("Lena", "Mia and Lena broke up") in facts and ("Mia", "Mia is moving to Rome") in facts


def test_a_relation_ends_at_its_object_s_name_and_someone_is_no_one() -> None:
    def relations(said: str) -> list[tuple[str, str, str]]:
        turn = Turn(
            message_id="m1", role="user", speaker="Lena", text=said, event_at=datetime(2024, 3, 1, tzinfo=UTC)
        )
        result = RulesExtractor().extract([turn])
        assert not {e.name for e in result.entities} & {"Priya now", "someone new", "Boston now"}
        return [(r.subject, r.predicate, r.object) for r in result.relations]

    assert relations("I'm dating Priya now.") == [("Lena", "dating", "Priya")]
    assert relations("I moved to Boston now.") == [("Lena", "moved_to", "Boston")]
    assert relations("i'm dating someone new, her name is Priya") == []


@pytest.mark.parametrize(
    ("said", "facts"),
    [
        ("I co-own a bakery with my brother.", ["Eli co-owns a bakery with Eli's brother"]),  # "coes-own"
        ("I re-watch Friends every winter.", ["Eli re-watches Friends every winter"]),  # "res-watch"
        # A greeting for a day is no state of the speaker ("Eli is happy new year eve").
        (
            "Happy new year eve! I'm starting a new job next month at Sony.",
            ["Eli is starting a new job in June 2024 at Sony"],
        ),
        ("lol same, I love that", []),  # "Same, Eli loves that"
        ("I'm happy with my new job at Google.", ["Eli is happy with Eli's new job at Google"]),
    ],
)
def test_hyphenated_verbs_greetings_and_agreement(said: str, facts: list[str]) -> None:
    turn = Turn(
        message_id="m1", role="user", speaker="Eli", text=said, event_at=datetime(2024, 5, 15, tzinfo=UTC)
    )
    result = RulesExtractor().extract([turn])
    assert [f.content for f in result.facts] == facts
    assert "job" not in {e.name for e in result.entities}  # "a new job" names no thing


@pytest.mark.parametrize(
    ("said", "facts"),
    [
        # Two statements of the speaker's are two facts, each agreeing ("Kim drink 3 coffees a day").
        ("I'm vegetarian and I drink 3 coffees a day.", ["Kim is vegetarian", "Kim drinks 3 coffees a day"]),
        ("my teammates and I were thrilled", ["Kim's teammates and Kim were thrilled"]),
        # How one feels this moment, and what one wonders, are nothing to remember.
        ("i'm good thanks, bit tired tbh", []),
        ("I'm so bored lol", []),
        ("I'm not sure what to do about my landlord", []),
        ("I'm wondering if I should quit my job", []),
        ("I'm busy with the move to Rome.", ["Kim is busy with the move to Rome"]),
        # A day of the month written without its year is said with it.
        ("My exam is on July 2nd.", ["Kim's exam is on 2 July 2024"]),
        # A sentence adverb before the statement (it stated nothing).
        ("sadly our dog Rex died yesterday", ["Kim's dog Rex died on 9 January 2024"]),
        ("Unfortunately I lost my job at Acme.", ["Kim lost Kim's job at Acme"]),
        # Saying who one is states nothing ("Lucía is Lucía, Lucía works as a nurse").
        ("I'm Kim, I work as a nurse at Hospital La Fe.", ["Kim works as a nurse at Hospital La Fe"]),
        ("Bad news, my left knee hurts again.", ["Kim's left knee hurts again"]),
        # A date one signed up for, or needs to meet, is ahead; a weekly routine is no date.
        (
            "I signed up for the Riverside Half Marathon on June 9.",
            ["Kim signed up for the Riverside Half Marathon on 9 June 2024"],
        ),
        (
            "I can run Tuesday, Thursday and Saturday mornings.",
            ["Kim can run Tuesday, Thursday and Saturday mornings"],
        ),
        # The speaker's second verb agrees too, but not one after "to".
        ("I live in Austin and work at Dell.", ["Kim lives in Austin and works at Dell"]),
        ("I want to travel and see Rome.", ["Kim wants to travel and see Rome"]),
        # A favourite said without "my" is the speaker's (it stated nothing).
        ("Favorite movie is Dune tbh", ["Kim's favorite movie is Dune"]),
    ],
)
def test_statements_as_people_chat(said: str, facts: list[str]) -> None:
    turn = Turn(
        message_id="m1", role="user", speaker="Kim", text=said, event_at=datetime(2024, 1, 10, tzinfo=UTC)
    )
    assert [f.content for f in RulesExtractor().extract([turn]).facts] == facts


def test_new_york_is_one_place() -> None:
    turn = Turn(
        message_id="m1",
        role="user",
        speaker="Kim",
        text="I live in New York",
        event_at=datetime(2024, 1, 10, tzinfo=UTC),
    )
    result = RulesExtractor().extract([turn])
    assert "York" not in {e.name for e in result.entities}  # "New" was skipped as an adjective
    assert [(r.predicate, r.object) for r in result.relations] == [("lives_in", "New York")]


def test_a_question_asked_mid_sentence_without_its_mark_states_nothing() -> None:
    said = RulesExtractor().extract(
        chat(
            (
                "user",
                "I'm trying to keep my app small, so I prefer minimal dependencies, how can I keep my Flask "
                "app lean while adding every feature, considering the deadline.",
            ),
            ("user", "I told her what happened, and how we fixed it."),
            ("user", "I finished the wireframe, and what a relief that was."),
        )
    )
    facts = [(f.kind, f.content) for f in said.facts if f.source_message_ids == ("m1",)]
    assert ("preference", "User prefers minimal dependencies") in facts
    assert not [c for _, c in facts if "how can" in c or "Flask" in c], facts
    more = RulesExtractor().extract(
        chat(
            ("user", "I have a deadline of April 15 for my taxes, is it too late to open an IRA"),
            ("user", "I'm vegan, which restaurants in Leeds would you recommend?"),
            ("user", "I prefer cooking with cast iron, what's the best way to season a new pan"),
            ("user", "My daughter Zoe starts kindergarten in September, any tips"),
            ("user", "I'm allergic to peanuts, so please keep that in mind."),
        )
    )
    assert facts_from(more, "m1") == ["User has a deadline of 15 April 2024 for user's taxes"]
    assert facts_from(more, "m2") == ["User is vegan"]
    assert facts_from(more, "m3") == ["User prefers cooking with cast iron"]
    assert facts_from(more, "m4") == ["User's daughter Zoe starts kindergarten in September 2023"]
    assert facts_from(more, "m5") == ["User is allergic to peanuts"]
    # No auxiliary before its subject: a statement that goes on with a wh-word keeps it.
    assert facts_from(said, "m2") == ["User told her what happened, and how user and others fixed it"]
    assert any("wireframe" in c for c in facts_from(said, "m3"))


def test_a_deadline_one_has_is_ahead_and_reads_without_a_second_preposition() -> None:
    # Said on 8 May 2023: the next 15 April, and "of 15 April", not "of on 15 April".
    said = RulesExtractor().extract(
        chat(
            ("user", "I have a deadline of April 15 for the MVP."),
            ("user", "I have a dentist appointment on April 15."),
            ("user", "I had a meeting on March 3 with Bob."),
            ("user", "i have a concert on april 10"),
        )
    )
    assert facts_from(said, "m1") == ["User has a deadline of 15 April 2024 for the MVP"]
    assert facts_from(said, "m2") == ["User has a dentist appointment on 15 April 2024"]
    assert facts_from(said, "m3") == ["User had a meeting on 3 March 2023 with Bob"]
    assert [(f.kind, f.content) for f in said.facts if f.source_message_ids == ("m4",)] == [
        ("plan", "User has a concert on 10 April 2024")
    ]


@pytest.mark.parametrize(
    "said",
    [
        "how do i make sourdough starter",
        "what should i cook for dinner tonight",
        "can you help me write an email to my landlord",
        "should i buy a heat pump or a furnace",
        "ok so which gym should I join",
        "what's a good gift for my wife",
    ],
)
def test_a_question_typed_without_its_mark_states_nothing(said: str) -> None:
    assert RulesExtractor().extract(chat(("user", said))).facts == []


def test_a_statement_that_opens_with_a_wh_word_is_no_question() -> None:
    said = RulesExtractor().extract(
        chat(("Sam", "What I love is hiking."), ("Sam", "When I was 10 we moved."))
    )
    assert facts_from(said, "m1") == ["What Sam loves is hiking"]
    assert facts_from(said, "m2")


def test_what_an_unmarked_question_frames_or_is_followed_by_is_stated() -> None:
    said = RulesExtractor().extract(
        chat(
            ("user", "what should i cook tonight, i'm allergic to peanuts"),
            ("user", "can you recommend a restaurant near me, i live in brooklyn and i'm vegan"),
            ("user", "how lucky am I, I got engaged last night!"),
            ("user", "Did I tell you I'm pregnant"),
            ("user", "is it normal that my 3 year old son Leo still naps"),
            ("user", "Did you know I got a dog. His name is Max."),
        )
    )
    assert [facts_from(said, f"m{i}") for i in range(1, 7)] == [
        ["User is allergic to peanuts"],
        ["User lives in brooklyn", "User is vegan"],
        ["User got engaged on 7 May 2023"],
        ["User is pregnant"],
        ["User's 3 year old son Leo still naps"],
        ["User got a dog", "User's dog's name is Max"],
    ]


def test_am_without_i_is_the_speaker() -> None:
    said = RulesExtractor().extract(
        chat(("user", "am moving to Denver in June"), ("user", "am i the only one who hates mornings"))
    )
    assert [(f.kind, f.content) for f in said.facts] == [("plan", "User is moving to Denver in June 2023")]


def test_what_one_asks_to_be_remembered_is_stated() -> None:
    said = RulesExtractor().extract(
        chat(
            ("Sam", "remember that i'm colorblind"),
            ("Sam", "please remember I'm allergic to cats"),
            ("Sam", "Can you keep in mind that my son is 4?"),
            ("Sam", "remember to buy milk"),
        )
    )
    assert [facts_from(said, m) for m in ("m1", "m2", "m3", "m4")] == [
        ["Sam is colorblind"],
        ["Sam is allergic to cats"],
        ["Sam's son is 4"],
        [],
    ]


def test_initials_and_a_lower_case_title_end_no_sentence() -> None:
    said = RulesExtractor().extract(
        chat(("Sam", "i work for J.P. Morgan in NYC"), ("Sam", "my therapist is dr. klein"))
    )
    assert facts_from(said, "m1") == ["Sam works for J.P. Morgan in NYC"]
    assert facts_from(said, "m2") == ["Sam's therapist is dr. klein"]
    assert fact_slot("Sam works for J.P. Morgan in NYC", "Sam") == Slot(
        "employer", "j.p. morgan", "J.P. Morgan"
    )


def test_what_one_would_rather_and_what_one_eats_are_preferences() -> None:
    said = RulesExtractor().extract(
        chat(
            ("user", "I'd rather not cook anything that takes more than 30 minutes on weeknights."),
            ("user", "I'd prefer to avoid flying."),
            ("user", "I'm vegetarian."),
            ("user", "I don't eat meat."),
        )
    )
    assert [(f.kind, f.content) for f in said.facts] == [
        ("preference", "User would rather not cook anything that takes more than 30 minutes on weeknights"),
        ("preference", "User would prefer to avoid flying"),
        ("preference", "User is vegetarian"),
        ("preference", "User doesn't eat meat"),
    ]


def test_a_present_verb_ending_in_ed_is_written_in_the_third_person() -> None:
    said = chat(("Ann", "My surgery is soon, so I need to walk less."), ("Ann", "I feed the cats daily."))
    facts = {f.content: f.kind for f in RulesExtractor().extract(said).facts}
    assert facts["Ann needs to walk less"] == "fact" and facts["Ann feeds the cats daily"] == "fact"


def test_an_acronym_before_a_name_is_part_of_it() -> None:
    result = RulesExtractor().extract(chat(("Bot", "Consider the JR Pass for trains; AWS Lambda works too.")))
    names = {e.name for e in result.entities}
    assert {"JR Pass", "AWS Lambda"} <= names and not {"Pass", "Lambda"} & names


def test_a_name_after_an_opening_preposition_is_what_the_preposition_says() -> None:
    said = "Osaka and Kyoto are lovely. In Kyoto, eat at temples. In Summary, go in May."
    entities = {e.name: e.type for e in RulesExtractor().extract(chat(("Bot", said))).entities}
    assert entities["Kyoto"] == "place" and "In Kyoto" not in entities
    assert "Summary" not in entities  # at a sentence's start, a name no other sentence knows is none


def test_people_of_ones_work_and_home_are_someone_of_the_speakers() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "My manager is Dana. My teammate Priya owns the billing service. My roommate Leo cooks.")
        )
    )
    triples = {(r.subject, r.predicate, r.object) for r in result.relations}
    assert {
        ("Ann", "has_manager", "Dana"),
        ("Ann", "has_teammate", "Priya"),
        ("Ann", "has_roommate", "Leo"),
    } <= triples
    assert {e.name: e.type for e in result.entities}["Dana"] == "person"
    assert "Ann's teammate Priya owns the billing service" in [f.content for f in result.facts]


def test_names_with_inner_capitals_are_whole_and_inline_code_names_nothing() -> None:
    result = RulesExtractor().extract(
        chat(
            ("Ann", "I work as a backend engineer at Stripe."),
            ("Bot", "Run the checks on GitHub Actions, and set `pool_pre_ping=True` with PostgreSQL."),
            ("Ann", "I don`t use McDonald's wifi."),
        )
    )
    entities = {e.name: e.type for e in result.entities}
    assert {"GitHub Actions", "PostgreSQL", "McDonald"} <= set(entities)
    assert not {"Actions", "True", "Hub", "Donald"} & set(entities)
    assert entities["Stripe"] == "organization"
    assert "Ann doesn't use McDonald's wifi" in [f.content for f in result.facts]


def test_a_label_before_a_statement_and_an_intention_about_it_alone_state_nothing_more() -> None:
    said = chat(
        ("Ann", "Hi! Some context about my project: I'm building an invoicing API."),
        ("Ann", "Our test coverage is at 60% right now and I want to get it up."),
        ("Ann", "I need to fix the roof. I need to fix it."),
    )
    facts = [f.content for f in RulesExtractor().extract(said).facts]
    assert "Ann is building an invoicing API" in facts and not any("context" in f for f in facts)
    assert not any(f.endswith(("get it up", "fix it")) for f in facts)
    assert "Ann needs to fix the roof" in facts
    # With its day it says when.
    dated = RulesExtractor().extract(
        [Turn("m1", "user", "Ann", "I'll do it tomorrow.", datetime(2024, 3, 6, tzinfo=UTC))]
    )
    assert [f.content for f in dated.facts] == ["Ann will do it on 7 March 2024"]


def test_a_statement_before_a_colon_is_no_label() -> None:
    said = chat(
        ("Ann", "My writing is going well: I'm in the middle of a fantasy novel. I will enjoy writing them.")
    )
    facts = [f.content for f in RulesExtractor().extract(said).facts]
    assert any(f.startswith("Ann's writing is going well") for f in facts)
    assert "Ann will enjoy writing them" in facts  # a taste, not an intention about "it"


def test_turns_out_is_the_news_of_learning_and_no_part_of_the_fact() -> None:
    said = chat(("Ann", "turns out I'm not allergic to penicillin after all!"))
    assert [f.content for f in RulesExtractor().extract(said).facts] == [
        "Ann is not allergic to penicillin after all"
    ]
