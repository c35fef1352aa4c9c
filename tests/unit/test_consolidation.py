"""Consolidation planning without a database: attributes, supersession, retention, merging,
summaries, and that each plan converges when applied in parts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from memsvc.consolidation import (
    EntityRow,
    EventRow,
    MergeRow,
    RetentionConfig,
    RetentionRow,
    Slot,
    SlotFact,
    Supersede,
    cancelled_plan,
    close_to_earlier,
    fact_slot,
    is_an_end,
    is_small_talk,
    job_employer,
    kin_named,
    merge_row,
    names_plan,
    people_by_first_name,
    plan_entity_merges,
    plan_forgetting,
    plan_merges,
    plan_summaries,
    plan_supersessions,
    retention,
    state_sentence,
    state_slot,
    supersession_keys,
    with_kin_statements,
    with_state_facts,
)
from memsvc.extraction.base import ExtractedFact

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Ann lives in Denver", ("residence", "denver")),
        ("Ann moved to Boston in February 2024", ("residence", "boston")),
        ("Ann is now living in New York", ("residence", "new york")),
        ("Ann and others relocated to Toronto", ("residence", "toronto")),
        ("Ann works as a nurse at Mercy Hospital", ("job", "nurse")),
        ("Ann just started a new job as a teacher", ("job", "teacher")),
        ("Ann works at Google", ("employer", "google")),
        ("Ann's dog is called Rex", ("pet", "rex")),
        ("Ann adopted a dog named Max last week", ("pet", "max")),
        ("Ann drives a Honda Civic", ("car", "honda civic")),
        ("Ann bought a Tesla Model 3", ("car", "tesla model 3")),
        ("Ann sold the Honda Civic and bought a Tesla Model 3 yesterday", ("car", "tesla model 3")),
        ("Ann sold the house and bought a boat", None),
        ("Ann started dating Alex", ("partner", "alex")),
        ("Ann's partner is Sam", ("partner", "sam")),
        ("Ann bought a book", None),
        ("Ann's friend lives in Denver", None),
        ("Ann will move to Paris next year", None),
        ("Ann wants to live in Paris", None),
        ("Bob lives in Denver", None),  # not about the subject given
        ("When Ann asks about Taxes: always give the year.", ("instruction: tax", "always give the year")),
        ("When Ann asks for  recipes: never use cups.", ("instruction: recip", "never use cups")),
        # The same requests however named: "my resume", "Ann's resume", "resumes".
        ("When Ann asks about my resume: use bullets.", ("instruction: resum", "use bullets")),
        ("When Ann asks about Ann's resume: use bullets.", ("instruction: resum", "use bullets")),
        ("When Ann asks about resumes: use bullets.", ("instruction: resum", "use bullets")),
        ("When Bob asks about taxes: always give the year.", None),
        # One for every request is about what its words name, whatever it says of it.
        (
            "When Ann asks about anything: always answer in Spanish.",
            ("instruction: anything: language", "always answer in spanish"),
        ),
        (
            "When Ann asks about anything: stop answering in Spanish.",
            ("instruction: anything: language", "stop answering in spanish"),
        ),
        # The language and the name are each one thing, whichever language or name it says.
        (
            "When Ann asks about anything: answer in English.",
            ("instruction: anything: language", "answer in english"),
        ),
        ("When Ann asks about anything: speak French.", ("instruction: anything: language", "speak french")),
        ("When Ann asks about anything: call Ann Annie.", ("instruction: anything: name", "call ann annie")),
        (
            "When the user asks about anything: don't call the user Annie.",
            ("instruction: anything: name", "don't call the user annie"),
        ),
        (
            "When the user asks about anything: call the user's dog Rex.",
            ("instruction: anything: call dog rex user", "call the user's dog rex"),
        ),
        (
            "When Ann asks about anything: always answer in English words of one syllable.",
            ("instruction: anything: language", "always answer in english words of one syllable"),
        ),
        (
            "When Ann asks about anything: never use emojis.",
            ("instruction: anything: emoji", "never use emojis"),
        ),
        # The shape of answers, one instruction at a time for each part of it.
        (
            "When Ann asks about anything: always answer with code first and explanation after.",
            ("instruction: anything: order", "always answer with code first and explanation after"),
        ),
        (
            "When Ann asks about anything: explain the approach first, then show the code.",
            ("instruction: anything: order", "explain the approach first, then show the code"),
        ),
        (
            "When Ann asks about anything: answer in full paragraphs.",
            ("instruction: anything: format", "answer in full paragraphs"),
        ),
        ("When Ann asks about anything: keep it short.", ("instruction: anything: length", "keep it short")),
        ("Ann just started a new job at Globex", ("employer", "globex")),
        ("Ann's girlfriend Mia", ("partner", "mia")),
        ("Ann's girlfriend loves hiking", None),
        ("Mia and Ann have been together for two years", ("partner", "mia")),
        ("Mia and Ann got married in June 2022", ("partner", "mia")),
        ("Mia and Ann are engaged", ("partner", "mia")),
        ("Mia and Ann are dating", ("partner", "mia")),
        ("Mia and Ann just got engaged", ("partner", "mia")),
        ("Mia and Ann are a couple", ("partner", "mia")),
        ("Mia and Ann got together for coffee", None),  # a meeting, not a couple
        ("Mia and Ann are going hiking together", None),
        ("Tom and Ann were together at the party", None),
        # The end of a value, with the value it names or none.
        ("Ann quit Ann's job at Acme", ("employer", "ended:acme")),
        ("Ann was laid off", ("employer", "ended:")),
        ("Ann no longer works at Acme", ("employer", "ended:acme")),
        ("Ann quit Acme", ("employer", "ended:acme")),
        ("Ann resigned from Acme Corp on 5 May 2023", ("employer", "ended:acme corp")),
        ("Ann is no longer working at Acme", ("employer", "ended:acme")),
        ("Ann quit smoking", ("state: smoke", "no")),  # a habit, not an employer
        ("Ann left the job fair early", None),
        ("Mia and Ann broke up", ("partner", "ended:mia")),
        ("Ann broke up with Tom last week", ("partner", "ended:tom")),
        ("Ann sold Ann's car", ("car", "ended:")),
        ("Ann sold Ann's old bike", None),
        ("Ann's dog Rex died", ("pet", "ended:rex")),
        # How long or how surely it holds is no part of the value ("lisbon these days" replaced "lisbon").
        ("Ann lives in Lisbon these days", ("residence", "lisbon")),
        ("Ann is based in Lisbon nowadays", ("residence", "lisbon")),
        ("Ann lives in Lisbon right now", ("residence", "lisbon")),
        ("Ann still lives in Lisbon", ("residence", "lisbon")),
        ("Ann works at Acme these days", ("employer", "acme")),
        ("Ann broke up the fight between the kids", None),  # a couple parts, a fight is broken up
        ("Ann separated the eggs", None),
        ("Tom and Ann separated the recycling", None),
        # A state that stopped: its words are the attribute.
        ("Ann is no longer vegetarian", ("state: vegetarian", "no")),
        ("Ann is not allergic to penicillin after all", ("state: allerg penicillin", "no")),
        ("Ann doesn't drink coffee anymore", ("state: coffe drink", "no")),
        ("Ann stopped drinking coffee last week", ("state: coffe drink", "no")),
        ("Ann quit smoking in 2023", ("state: smoke", "no")),
        ("Ann switched from Python to Rust", ("state: python", "no")),
        ("Ann cancelled Ann's trip to Japan", ("state: japan trip", "no")),
        ("Ann canceled the gym membership in the week of 29 April 2024", ("state: gym membership", "no")),
        ("Ann is vegetarian", None),  # a state only has the attribute once its stop is known
        ("Ann left Acme Corp in the week of 4 March 2024", ("departure", "acme corp")),
        ("Ann left the party early", None),
        ("Ann is seeing the doctor on 16 February 2024", None),  # no partner: not a name
        ("Ann is dating someone new, her name is Priya", ("partner", "priya")),
        ("Ann's ex-husband Leo is taking the kids", ("partner", "ended:leo")),
        ("Ann lives in St. Louis", ("residence", "st. louis")),  # was "st"
        ("Ann works at Mt. Sinai Hospital as a nurse", ("employer", "mt. sinai hospital")),
        ("Ann's favorite band is Arctic Monkeys now", ("favorite band", "arctic monkeys")),
        ("Ann's favourite food is really spicy ramen", ("favorite food", "spicy ramen")),
        ("Ann's favorite foods are pizza and sushi", None),  # a list grows; one value does not end it
        # As people say them (QA round 2, session 21).
        ("Ann and others live in New York", ("residence", "new york")),
        ("Ann and others are settled in São Paulo now", ("residence", "são paulo")),
        ("Ann lives in st. louis", ("residence", "st. louis")),
        ("Ann started at Google last month", ("employer", "google")),
        ("Ann joined the gym", None),
        ("Ann joined Stripe as a product manager", ("job", "product manager")),
        ("Ann joined the gym as a member", None),
        ("Ann started seeing a girl named Hana", ("partner", "hana")),
        ("Ann's gf is Sofia", ("partner", "sofia")),
        ("Ann and others split in May 2023", ("partner", "ended:")),
        ("Ann and others split the bill", None),
        ("Ann's fave color is green now", ("favorite color", "green")),
        ("Ann prefers tea over coffee in the mornings", ("prefers coffee or tea", "tea")),
        ("Ann prefers coffee over tea in the mornings now", ("prefers coffee or tea", "coffee")),
        ("Ann now prefers dark mode to light mode", ("prefers dark mode or light mode", "dark mode")),
        ("Ann prefers detailed proofs with diagrams", None),
        ("Ann is a teacher at Lincoln High", ("job", "teacher")),
        ("Ann is now a software engineer at Amazon", ("job", "software engineer")),
        ("Ann is a big fan at Anfield", None),
        ("Ann got promoted to vice principal", ("job", "vice principal")),
        # One amount of a kind at a time (QA round 3).
        ("Ann's rent is $1,650 a month", ("rent", "$1,650 a month")),
        ("Ann's landlord raised the rent to $1,820 starting on 1 April 2024", ("rent", "$1,820")),
        ("Ann raised Ann's budget to $8,000", ("budget", "$8,000")),
        ("Ann lives at 14 Birch Lane in Portland", ("residence", "14 birch lane")),
        # A death told by name ends the teller's pet of that name, if they have one.
        ("Tiger passed away on 3 June 2024", ("pet", "ended:tiger")),
        # One version of a tool at a time.
        ("Ann is on Python 3.11", ("version of python", "3.11")),
        ("Ann upgraded to Python 3.12 on 31 March 2024", ("version of python", "3.12")),
        ("Ann and others use Postgres 15 and FastAPI", ("version of postgres", "15")),
        ("Ann and others migrated from Postgres 15 to 16", ("version of postgres", "16")),
        ("Ann upgraded the app from React 17 to React 18", ("version of react", "18")),
        ("Ann has 2 kids", None),
        # A number that goes up or down is one at a time; what follows a choice is no part of it.
        ("Ann's test coverage is at 60% right now", ("test coverage", "60%")),
        ("Ann's test coverage went up to 85%", ("test coverage", "85%")),
        ("Ann prefers spaces over tabs now", ("prefers spaces or tabs", "spaces")),
        # Someone of the subject's, named, has one value at a time too, kept among the subject's facts.
        ("Ann's sister Emma lives in Chicago", ("sister emma: residence", "chicago")),
        ("Ann's sister Emma lives in Denver now", ("sister emma: residence", "denver")),
        ("Ann's brother Tom works as an electrician", ("brother tom: job", "electrician")),
        ("Ann's friend Jon is getting married", None),
        # A medicine at one dose at a time; a state taken back "after all" ends.
        ("Ann takes 10mg of lisinopril every morning", ("dose of lisinopril", "10mg")),
        ("Ann is on metformin 1000 mg now", ("dose of metformin", "1000mg")),
        ("Ann's doctor upped Ann's lisinopril to 20mg", ("dose of lisinopril", "20mg")),
        ("Ann's doctor lowered the dose of metformin to 500 mg", ("dose of metformin", "500mg")),
        ("Ann's doctor upped Ann's step goal to 9000", ("step goal", "9000")),
        # Typed in lower case, or with the time between the kind and its value (QA, session 26).
        ("Ann finally upgraded to python 3.12", ("version of python", "3.12")),
        ("Ann is on day 3 of Ann's diet", None),
        ("Ann's favorite band these days is the national", ("favorite band", "national")),
        ("Ann makes 95k now", ("salary", "95k")),
        ("Ann earns $60,000 a year", ("salary", "$60,000")),
        ("Ann makes 5 cookies a day", None),
        ("Ann just moved into a new place in cambridge, loving it", ("residence", "cambridge")),
        ("Ann retired on 26 April 2024", ("employer", "ended:")),
        ("Ann retired from Deloitte", ("employer", "ended:deloitte")),
        ("Ann retired the old laptop", None),
        ("Ann retired at 50 from teaching and now Ann works part-time at Google", None),
        ("Ann moved into a new place in March 2024, finally unpacked", None),
        ("Ann just moved into a new place in town", None),
        ("Ann makes 20 an hour at Ann's side gig", None),
        ("Ann earns $500 a month from Ann's Etsy shop", None),
        ("Ann makes 120k a year", ("salary", "120k")),
        # An age, a weight, a car traded for another: one at a time.
        ("Ann is 34", ("age", "34")),
        ("Ann is 34 years old", ("age", "34")),
        ("Ann just turned 35 on 10 April 2024", ("age", "35")),
        ("Ann is 5 minutes away", None),
        ("Ann weighs 80 kg", ("weight", "80 kg")),
        ("Ann is down to 76 kg now", ("weight", "76 kg")),
        ("Ann is down to 3 coffees a day", None),
        ("Ann traded the Civic for a Tesla Model 3", ("car", "tesla model 3")),
        # A taste disliked is the taste's stop: "Ann loves running now" states it again.
        ("Ann hates running", ("state: like run", "no")),
        ("Ann really dislikes cilantro on tacos", ("state: cilantro like taco", "no")),
        ("Ann hates it when people are late", None),
        ("Ann can't stand it anymore", None),
    ],
)
def test_fact_slot(content: str, expected: tuple[str, str] | None) -> None:
    slot = fact_slot(content, "Ann")
    assert (None if slot is None else (slot.attribute, slot.value)) == expected


def test_a_taste_is_stated_whole_and_as_the_subject_s_own() -> None:
    stop = fact_slot("Ann hates running", "Ann")
    assert stop is not None and stop.value == "no"
    for said, states in (
        ("Ann loves running now", True),
        ("Ann really enjoys running again", True),
        ("Ann loves running shoes", False),
        ("Ann loves running when it's sunny out", False),
        ("Ann's husband loves running", False),
    ):
        slot = state_slot(said, "Ann", stop.attribute)
        assert (slot is not None and slot.value == "yes") == states, said


def test_an_end_is_told_from_a_value() -> None:
    assert is_an_end("Rex died", "Ann", "pet") and is_an_end("Ann quit her job", "Ann", "employer")
    assert not is_an_end("Ann's pet is called Rex", "Ann", "pet")
    assert not is_an_end("Rex died", "Ann", None)


def test_someone_of_the_subject_s_named_on_their_own_is_the_subject_s_too() -> None:
    stored = [("Ann", "sister emma: residence"), ("Ann", "residence"), ("Ann", "instruction: anything")]
    assert kin_named(stored) == {"emma": ("Ann", "sister")}
    # Two people of that name: whose "Emma" is cannot be told.
    assert kin_named([*stored, ("Ann", "friend emma: job")]) == {}
    moved = ExtractedFact("Emma moved to Denver and works at Fiat", "event", "Emma", ("m2",), T0)
    out = with_kin_statements([moved], stored)
    assert [(f.content, f.subject, f.kind) for f in out[1:]] == [
        ("Ann's sister Emma moved to Denver and works at Fiat", "Ann", "fact"),
        ("Ann's sister Emma works at Fiat", "Ann", "fact"),
    ]
    assert fact_slot(out[1].content, "Ann") == Slot("sister emma: residence", "denver", "Denver")
    assert all(f.source_message_ids == ("m2",) and f.valid_from == T0 for f in out)
    # Known in the same batch; what is no value of an attribute, or about someone else, is left.
    said = ExtractedFact("User's sister Emma lives in Chicago", "fact", "user", ("m1",), T0)
    later = ExtractedFact("Emma lives in Denver now", "fact", "Emma", ("m3",), T0)
    assert [f.content for f in with_kin_statements([said, later])][2:] == [
        "User's sister Emma lives in Denver now"
    ]
    likes = ExtractedFact("Emma loves jazz", "fact", "Emma", ("m4",), T0)
    jon = ExtractedFact("Jon moved to Denver", "event", "Jon", ("m5",), T0)
    assert with_kin_statements([likes, jon], stored) == [likes, jon]


def test_an_instruction_has_no_plain_statement_and_the_next_one_supersedes_it() -> None:
    said = ExtractedFact(
        "When the user asks about taxes: always give the year.", "preference", "user", ("m1",), T0
    )
    assert with_state_facts([said]) == [said]
    slot = fact_slot(said.content, "user")
    assert slot is not None
    later = T0 + timedelta(days=3)
    facts = [
        SlotFact(uuid.UUID(int=i), "user", slot.attribute, value, at, at, "active", None, None, content)
        for i, (value, at, content) in enumerate(
            [
                ("always give the year", T0, said.content),
                (
                    "always give the year and the form",
                    later,
                    "When the user asks about taxes: always give the year and the form.",
                ),
            ]
        )
    ]
    assert plan_supersessions(facts) == [Supersede(uuid.UUID(int=0), uuid.UUID(int=1), later)]


def test_an_instruction_replaces_only_one_for_its_requests_on_the_same_thing() -> None:
    said = [
        ("When Ann asks about resumes: always use bullet points.", 0),
        ("When Ann asks about my resume: always use emojis.", 1),
        ("When Ann asks about resumes: use numbered lists instead of bullet points.", 2),
        ("When Ann asks about resume: stop using emojis.", 3),
    ]
    facts = []
    for i, (content, day) in enumerate(said):
        slot = fact_slot(content, "Ann")
        assert slot is not None and slot.attribute == "instruction: resum"
        at = T0 + timedelta(days=day)
        facts.append(
            SlotFact(
                uuid.UUID(int=i), "Ann", slot.attribute, slot.value, at, at, "active", None, None, content
            )
        )
    # Bullets by numbered lists, emojis by their stop; the lists and the stop stand together.
    assert plan_supersessions(facts) == [
        Supersede(uuid.UUID(int=0), uuid.UUID(int=2), T0 + timedelta(days=2)),
        Supersede(uuid.UUID(int=1), uuid.UUID(int=3), T0 + timedelta(days=3)),
    ]


def test_state_sentences_restate_changes_plainly() -> None:
    assert state_sentence("Ann", Slot("residence", "boston", "Boston")) == "Ann lives in Boston"
    job = state_sentence("Ann", Slot("job", "architect", "architect"))
    assert job == "Ann's job: Ann works as an architect"
    assert fact_slot(job, "Ann") == Slot("job", "architect", "architect")
    moved = ExtractedFact("Ann moved to Boston", "event", "Ann", ("m1",), T0)
    lives = ExtractedFact("Ann lives in Denver", "fact", "Ann", ("m2",), T0)
    out = with_state_facts([moved, lives])
    assert [f.content for f in out] == ["Ann moved to Boston", "Ann lives in Denver", "Ann lives in Boston"]
    assert out[2].source_message_ids == ("m1",) and out[2].valid_from == T0 and out[2].kind == "fact"
    # A value said plainly, but for a word that it holds now, is its own plain statement.
    for said in ("Ann lives in Portland now", "Ann now lives in Portland", "Ann currently lives in Portland"):
        now = ExtractedFact(said, "fact", "Ann", ("m6",), T0)
        assert with_state_facts([now]) == [now]
    # A partner named in a plan is one now: the plain statement takes the time it was said.
    trip = ExtractedFact(
        "Ann's boyfriend Jake and Ann are going to Italy in June 2024",
        "plan",
        "Ann",
        ("m7",),
        T0 + timedelta(days=150),
    )
    assert [(f.content, f.valid_from) for f in with_state_facts([trip])][1:] == [
        ("Ann's partner is Jake", None)
    ]
    # What someone of the subject's does is not the subject's: no job at Fiat for Fay.
    sister = ExtractedFact("Fay's sister lives in Rome and works at Fiat", "fact", "Fay", ("m3",), T0)
    assert with_state_facts([sister]) == [sister]
    quit_ = ExtractedFact("Fay quit Renault and started a new job at Fiat", "event", "Fay", ("m4",), T0)
    assert "Fay's employer: Fay works at Fiat" in [f.content for f in with_state_facts([quit_])]
    joined = ExtractedFact(
        "Fay quit Fay's job at Google and joined Stripe as a product manager", "event", "Fay", ("m5",), T0
    )
    assert [f.content for f in with_state_facts([joined])][1:] == [
        "Fay's job: Fay works as a product manager at Stripe",
        "Fay's employer: Fay works at Stripe",
    ]


def _slot_fact(value: str, day: int, **kw: object) -> SlotFact:
    return SlotFact(
        id=kw.get("id", uuid.uuid4()),  # type: ignore[arg-type]
        subject="Ann",
        attribute="residence",
        value=value,
        valid_from=T0 + timedelta(days=day),
        event_at=T0 + timedelta(days=day),
        status=kw.get("status", "active"),  # type: ignore[arg-type]
        superseded_by=kw.get("superseded_by"),  # type: ignore[arg-type]
        valid_to=kw.get("valid_to"),  # type: ignore[arg-type]
        content=kw.get("content", ""),  # type: ignore[arg-type]
    )


def test_of_a_value_said_and_stated_plainly_at_once_the_plain_statement_succeeds() -> None:
    denver = _slot_fact("denver", 0, content="Ann lives in Denver")
    # Whatever the ids, which differ between users: the plain statement is the successor.
    for _ in range(20):
        said = _slot_fact("boston", 100, content="Ann moved to Boston")
        plain = _slot_fact("boston", 100, content="Ann lives in Boston")
        plans = plan_supersessions([said, denver, plain])
        assert [(p.old_id, p.new_id) for p in plans] == [(denver.id, plain.id)]


def test_each_value_is_closed_by_the_next_different_one() -> None:
    denver, denver_again, boston, denver_back = (
        _slot_fact("denver", 0),
        _slot_fact("denver", 30),
        _slot_fact("boston", 100),
        _slot_fact("denver", 200),
    )
    # Given in any order, planned in time order.
    plans = {p.old_id: p for p in plan_supersessions([denver_back, boston, denver, denver_again])}
    assert plans[denver.id].new_id == boston.id and plans[denver.id].valid_to == boston.valid_from
    assert plans[denver_again.id].new_id == boston.id
    assert plans[boston.id].new_id == denver_back.id
    assert denver_back.id not in plans
    # Applied: nothing left to do.
    applied = [
        _slot_fact(
            f.value,
            (f.valid_from - T0).days,
            id=f.id,
            status="superseded" if f.id in plans else "active",
            superseded_by=plans[f.id].new_id if f.id in plans else None,
            valid_to=plans[f.id].valid_to if f.id in plans else None,
        )
        for f in (denver, denver_again, boston, denver_back)
    ]
    assert plan_supersessions(applied) == []


def test_a_job_said_with_its_employer_ends_when_another_employer_begins() -> None:
    assert job_employer("Ann works as a barista at Blue Bottle in Oakland", "Ann") == "Blue Bottle"
    assert job_employer("Ann works as a nurse for three years", "Ann") is None  # no name
    assert job_employer("Ann works at Google", "Ann") is None  # an employer, not a job
    said = ExtractedFact("Ann works as a barista at Blue Bottle", "fact", "Ann", ("m1",), T0)
    assert [f.content for f in with_state_facts([said])] == [
        "Ann works as a barista at Blue Bottle",
        "Ann's job: Ann works as a barista at Blue Bottle",  # names where, to end with it
        "Ann's employer: Ann works at Blue Bottle",
    ]
    assert supersession_keys({("Ann", "employer"), ("Bo", "car")}) == {
        ("Ann", "employer"),
        ("Ann", "job"),
        ("Ann", "departure"),
        ("Bo", "car"),
    }

    def fact(content: str, day: int) -> SlotFact:
        slot = fact_slot(content, "Ann")
        assert slot is not None
        at = T0 + timedelta(days=day)
        return SlotFact(
            uuid.uuid4(), "Ann", slot.attribute, slot.value, at, at, "active", None, None, content
        )

    barista = fact("Ann works as a barista at Blue Bottle", 0)
    microsoft = fact("Ann started a new job at Microsoft", 30)
    plans = plan_supersessions([barista, microsoft])
    assert [(p.old_id, p.new_id, p.valid_to) for p in plans] == [
        (barista.id, microsoft.id, microsoft.valid_from)
    ]
    # No employer named: another employer ends nothing.
    assert plan_supersessions([fact("Ann works as a nurse", 0), microsoft]) == []
    # The same employer again ends nothing; one that ends ("quit the job at Blue Bottle") does.
    assert plan_supersessions([barista, fact("Ann works at Blue Bottle", 10)]) == []
    quit_ = fact("Ann quit her job at Blue Bottle", 10)
    assert [p.new_id for p in plan_supersessions([barista, quit_])] == [quit_.id]
    # Leaving by name ends the employer named, and the job said with it; never anything else.
    works = fact("Ann works at Blue Bottle", 0)
    left, paris = fact("Ann left Blue Bottle", 10), fact("Ann left Paris", 5)
    plans = {p.old_id: p.new_id for p in plan_supersessions([works, barista, paris, left, microsoft])}
    assert plans == {works.id: left.id, barista.id: left.id}  # no departure is ever closed
    # A new job before the new employer: the job's own successor, the earlier of the two.
    chef = fact("Ann works as a chef at Nopa", 20)
    assert {p.old_id: p.new_id for p in plan_supersessions([barista, chef, microsoft])}[barista.id] == chef.id


def test_a_second_clause_states_its_own_value() -> None:
    said = ExtractedFact("Ann quit Acme and started a new job at Globex", "event", "Ann", ("m1",), T0)
    assert [f.content for f in with_state_facts([said])] == [
        "Ann quit Acme and started a new job at Globex",  # ends Acme (`fact_slot`)
        "Ann's employer: Ann works at Globex",
    ]
    plain = ExtractedFact("Ann likes cats and dogs", "preference", "Ann", ("m2",), T0)
    assert with_state_facts([plain]) == [plain]


def test_a_value_said_again_in_other_words_merges_but_not_with_its_plain_statement() -> None:
    far = np.asarray(
        [_unit([1, 0, 0]), _unit([0, 1, 0]), _unit([0, 0, 1]), _unit([1, 1, 0])], dtype=np.float32
    )
    texts = [
        ("Ann lives in Boston", 0),
        ("Ann lives in Boston now", 30),
        ("Ann moved to Boston", 30),  # a word of its own: another fact
        ("Ann's car: Ann drives a Honda Civic", 30),
    ]
    rows = [
        merge_row(uuid.uuid4(), "fact", "Ann", text, f"h{i}", None, T0 + timedelta(days=day), attribute)
        for i, ((text, day), attribute) in enumerate(
            zip(texts, ["residence", "residence", "residence", "car"], strict=True)
        )
    ]
    assert rows[0].value == ("residence", "boston") and rows[3].value == ("car", "honda civic")
    merges = plan_merges(rows, far, 0.95)
    assert [(m.survivor_id, m.duplicate_ids) for m in merges] == [(rows[0].id, (rows[1].id,))]
    # Said and stated plainly at one time (one message): two memories, as `with_state_facts` made them.
    said = merge_row(uuid.uuid4(), "fact", "Ann", "Ann drives a Honda Civic", "h9", None, T0, "car")
    plain = merge_row(
        uuid.uuid4(), "fact", "Ann", "Ann's car: Ann drives a Honda Civic", "h8", None, T0, "car"
    )
    assert plan_merges([said, plain], far[[0, 0]], 0.95) == []
    # A fact with a value never merges with one without, however close.
    loose = merge_row(
        uuid.uuid4(), "fact", "Ann", "Ann lives in Boston now", "h7", None, T0 + timedelta(days=1)
    )
    assert plan_merges([rows[0], loose], far[[0, 0]], 0.95) == []


def test_small_talk() -> None:
    assert is_small_talk("Thanks, Jon! Appreciate the kind words", ["Jon"])
    assert is_small_talk("Gina is awesome with Gina's store", ["Gina"])
    assert is_small_talk("Wow, congrats!")
    assert not is_small_talk("That's great! I painted a lake sunrise last year.")
    assert not is_small_talk("I went to a support group yesterday.")
    # "many" is an intensifier like "much": a duplicate that says "so many" is small talk as its
    # twin is (a run merging the two would otherwise keep the wording it then archives).
    assert is_small_talk("Tim has heard great things", ["Tim"])
    assert is_small_talk("Tim has heard so many great things", ["Tim"])
    # A statement after the thanks is not small talk; a greeting alone is.
    assert not is_small_talk("Thanks! I moved to Lisbon.")
    assert not is_small_talk("Good morning! I moved to Lisbon.")
    # Greetings, acknowledgements and emoji alone: they piled up as ordinary memories.
    for said in ("Hi!", "Hello there!", "Hey", "ok", "k", "hmm", "You're welcome!", "Good to know!", "👍"):
        assert is_small_talk(said), said
    assert not is_small_talk("Hi! I moved to Lisbon.")
    assert not is_small_talk("ok so my sister visits next week")
    assert is_small_talk("Good morning!") and is_small_talk("How are you?")
    assert is_small_talk("Thanks, I appreciate it!")


def test_retention_decays_with_time_and_less_with_importance_and_use() -> None:
    config = RetentionConfig()
    assert retention(0.5, 0, 0, config) == 1.0
    assert retention(0.5, 0, 180, config) == pytest.approx(np.exp(-1))
    assert retention(0.5, 0, 90, config) > retention(0.1, 0, 90, config)
    assert retention(0.5, 3, 90, config) > retention(0.5, 0, 90, config)


def _retention_row(content: str, day: int, **kw: object) -> RetentionRow:
    return RetentionRow(
        id=uuid.uuid4(),
        kind=kw.get("kind", "turn"),  # type: ignore[arg-type]
        content=content,
        importance=kw.get("importance", 0.5),  # type: ignore[arg-type]
        access_count=kw.get("access_count", 0),  # type: ignore[arg-type]
        last_used_at=T0 + timedelta(days=day),
        status=kw.get("status", "active"),  # type: ignore[arg-type]
        pinned=kw.get("pinned", False),  # type: ignore[arg-type]
        attribute=kw.get("attribute"),  # type: ignore[arg-type]
        archived_at=kw.get("archived_at"),  # type: ignore[arg-type]
        expires_at=kw.get("expires_at"),  # type: ignore[arg-type]
        in_exchange=kw.get("in_exchange", False),  # type: ignore[arg-type]
    )


def test_forgetting_rules() -> None:
    clock = T0 + timedelta(days=100)
    now = datetime(2026, 1, 1, tzinfo=UTC)  # long after: the user's clock decides, not the calendar
    thanks = _retention_row("Thanks so much!", 0)
    pinned = _retention_row("Thanks so much!", 0, pinned=True)
    useful = _retention_row("I went to a support group yesterday.", 0)
    fresh_thanks = _retention_row("Thanks so much!", 99)
    expired = _retention_row("The gate code is 4411.", 99, pinned=True, expires_at=now - timedelta(days=1))
    fact = _retention_row("Thanks so much!", 0, attribute="residence")
    answer = _retention_row("Yeah, awesome! Glad to be part of it.", 0, in_exchange=True)
    question = _retention_row("Wow, congrats! What game were you playing?", 0, in_exchange=True)
    lone_question = _retention_row("Wow, congrats! What game were you playing?", 0)
    old_archive = _retention_row("x", 0, status="archived", archived_at=now - timedelta(days=31))
    new_archive = _retention_row("x", 0, status="archived", archived_at=now - timedelta(days=29))
    plan = plan_forgetting(
        [
            thanks,
            pinned,
            useful,
            fresh_thanks,
            expired,
            fact,
            answer,
            question,
            lone_question,
            old_archive,
            new_archive,
        ],
        user_clock=clock,
        now=now,
        config=RetentionConfig(),
    )
    assert {i for i, _ in plan.archive} == {thanks.id, expired.id, lone_question.id}
    assert plan.purge == [old_archive.id]


def _unit(v: list[float]) -> list[float]:
    a = np.asarray(v, dtype=np.float32)
    return list(a / np.linalg.norm(a))


def test_merges_are_leader_clusters_stable_when_applied_in_parts() -> None:
    # A ~ B (0.97), B ~ C (0.97), A !~ C: C is not pulled in through B.
    vectors = np.asarray(
        [_unit([1, 0, 0]), _unit([1, 0.25, 0]), _unit([1, 0.5, 0.02]), _unit([0, 1, 0])], dtype=np.float32
    )
    rows = [MergeRow(uuid.uuid4(), "fact", "Ann", f"h{i}", None, T0 + timedelta(days=i)) for i in range(4)]
    a, b, c, d = rows
    assert float(vectors[0] @ vectors[2]) < 0.95 < float(vectors[1] @ vectors[2])
    merges = plan_merges(rows, vectors, 0.95)
    assert [(m.survivor_id, m.duplicate_ids) for m in merges] == [(a.id, (b.id,))]
    # After B is merged away, planning again finds nothing more.
    assert plan_merges([a, c, d], vectors[[0, 2, 3]], 0.95) == []
    # Same text merges whatever the vectors; other subjects or kinds never do.
    same = MergeRow(uuid.uuid4(), "fact", "Ann", "h3", None, T0 + timedelta(days=9))
    other = MergeRow(uuid.uuid4(), "fact", "Bob", "h0", None, T0 + timedelta(days=9))
    plan = plan_merges([*rows, same, other], np.vstack([vectors, vectors[[0, 0]]]), 0.95)
    assert {m.survivor_id: m.duplicate_ids for m in plan} == {a.id: (b.id,), d.id: (same.id,)}


def test_summaries_group_a_subjects_older_events_by_month() -> None:
    events = [EventRow(uuid.uuid4(), "Ann", f"Ann did thing {i}", T0 + timedelta(days=i)) for i in range(5)]
    recent = [
        EventRow(uuid.uuid4(), "Ann", "Ann did a recent thing", T0 + timedelta(days=90 + i)) for i in range(5)
    ]
    summaries = plan_summaries([*events, *recent], older_than=T0 + timedelta(days=60))
    assert len(summaries) == 1
    assert summaries[0].content.startswith("In January 2024, Ann: did thing 0; did thing 1")
    assert set(summaries[0].member_ids) == {e.id for e in events}


def _entities(*names: tuple[str, str]) -> tuple[list[EntityRow], np.ndarray]:
    rows = [
        EntityRow(uuid.uuid4(), name, kind, T0 + timedelta(days=i)) for i, (name, kind) in enumerate(names)
    ]
    vectors = np.eye(len(rows), dtype=np.float32)  # no two names alike in meaning
    return rows, vectors


def test_entities_merge_by_name_form_and_first_name_unless_ambiguous() -> None:
    rows, vectors = _entities(
        ("Jon Smith", "person"),
        ("Jon", "person"),
        ("jon smith.", "person"),
        ("The Rex's", "thing"),
        ("Rex", "thing"),
        ("Rex", "person"),
        ("Boston", "place"),
    )
    merges = {m.survivor_id: set(m.duplicate_ids) for m in plan_entity_merges(rows, vectors, 0.92)}
    assert merges == {rows[0].id: {rows[1].id, rows[2].id}, rows[3].id: {rows[4].id}}
    # Two full names share the first name: "Jon" is either, and stays apart.
    rows, vectors = _entities(("Jon Smith", "person"), ("Jon Brown", "person"), ("Jon", "person"))
    assert plan_entity_merges(rows, vectors, 0.92) == []
    # By meaning: the later joins the earlier; applied, nothing is left to plan.
    rows, _ = _entities(("NYC", "place"), ("New York City", "place"))
    close = np.asarray([[1.0, 0.0], [0.96, 0.28]], dtype=np.float32)
    [merge] = plan_entity_merges(rows, close, 0.92)
    assert merge.survivor_id == rows[0].id and merge.duplicate_ids == (rows[1].id,)
    assert plan_entity_merges(rows[:1], close[:1], 0.92) == []


def test_close_to_earlier_is_the_same_in_chunks_as_whole() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(11, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    whole = (vectors @ vectors.T) >= 0.3
    seen = list(close_to_earlier(vectors, 0.3, chunk=4))  # chunks of 4, 4 and 3 rows
    assert [p for p, _ in seen] == list(range(11))
    for position, close in seen:
        assert close.tolist() == whole[position, :position].tolist()  # earlier rows only


def test_close_facts_that_each_have_a_word_of_their_own_stay_two() -> None:
    # Vectors as close as can be; the texts decide: a word added merges, a word replaced does not.
    same = np.asarray([_unit([1, 0, 0])] * 3, dtype=np.float32)
    texts = [
        "Ann keeps a kayak in her shed",
        "Ann keeps a violin in her shed",
        "Ann keeps a red kayak in her shed",
    ]
    rows = [
        merge_row(uuid.uuid4(), "fact", "Ann", text, f"h{i}", None, T0 + timedelta(days=i))
        for i, text in enumerate(texts)
    ]
    kayak, violin, red_kayak = rows
    merges = plan_merges(rows, same, 0.95)
    assert [(m.survivor_id, m.duplicate_ids) for m in merges] == [(kayak.id, (red_kayak.id,))]
    assert violin.id not in {d for m in merges for d in (m.survivor_id, *m.duplicate_ids)}


@pytest.mark.parametrize(
    ("content", "attribute", "value"),
    [
        ("Ann is vegetarian", "state: vegetarian", "yes"),
        ("Ann is vegetarian again", "state: vegetarian", "yes"),
        ("Ann is back on coffee", "state: coffe drink", "yes"),  # the verb left unsaid
        ("Ann went back to coffee after a month", "state: coffe drink", "yes"),
        ("Ann is back on the road", "state: coffe drink", None),
        ("Ann is back on decaf coffee", "state: coffe drink", None),  # decaf did not stop
        ("Ann drinks coffee every morning", "state: coffe drink", "yes"),
        ("Ann loves jazz", "state: jazz like", "yes"),  # "loves" says what "likes" does
        ("Ann has a gym membership at FitLife", "state: gym membership", "yes"),
        ("Ann is no longer vegetarian", "state: vegetarian", "no"),
        ("Ann doesn't eat meat", "state: eat meat", None),  # a negation states no state
        ("Ann likes coffee shops", "state: coffe drink", None),
        ("Bob is vegetarian", "state: vegetarian", None),
    ],
)
def test_state_slot(content: str, attribute: str, value: str | None) -> None:
    slot = state_slot(content, "Ann", attribute)
    assert (slot.value if slot else None) == value


@pytest.mark.parametrize(
    ("content", "ends", "stays"),
    [
        (
            "Ann's Tokyo trip got cancelled",
            "Ann is going to Tokyo in June 2024",
            "Ann is going to Paris in June",
        ),
        (
            "Ann cancelled Ann's trip to Tokyo",
            "Ann is planning a trip to Tokyo",
            "Ann is planning a trip to Rome",
        ),
        ("Ann and others called off the wedding", "Ann and others are getting married in August", None),
        ("Ann's wedding was called off", "Ann is getting married in May", "Ann is going to Tokyo"),
        # Called off by a decision or a need ("We had to cancel Tokyo").
        ("Ann and others had to cancel Tokyo", "Ann and others are going to Tokyo in May", "Ann loves Rome"),
        ("Ann decided to cancel the Lisbon trip", "Ann is flying to Lisbon on Friday", None),
        ("Ann is cancelling the Tokyo trip", "Ann is going to Tokyo", None),
        ("Ann and others had to call off the wedding", "Ann is getting married in May", None),
        # Fallen through, scrapped ("is off" is not: "Ann's mood is off today").
        ("Ann's Berlin move fell through", "Ann is moving to Berlin in June", "Ann is moving to Paris"),
        # Moved by someone else for Ann.
        (
            "They moved Ann's dentist appointment to 4 April 2024",
            "Ann's dentist appointment is on 5 April 2024",
            "Ann is going to Tokyo in June",
        ),
        ("Ann's trip to Rome was scrapped", "Ann is flying to Rome on Friday", "Ann is flying to Oslo"),
        ("Ann's party is off", "Ann is hosting a party on 16 March 2024", "Ann is going to a concert"),
        # Taken back in the negative.
        (
            "Ann is not flying to Tokyo after all",
            "Ann is flying to Tokyo in June 2024",
            "Ann is flying to Rome",
        ),
        ("Ann and others are not going to Lisbon anymore", "Ann and others are going to Lisbon in May", None),
        ("Ann is no longer going to Rome", "Ann is going to Rome in May 2024", "Ann is going to Oslo"),
        # The subject's own wedding is not a friend's: only one that names them ends theirs.
        (
            "Ann's wedding got postponed to September",
            "Ann is getting married in May",
            "Ann's friend Jon is getting married",
        ),
        ("Ann's friend Jon's wedding was called off", "Ann's friend Jon is getting married in May", None),
    ],
)
def test_a_plan_called_off_is_the_one_that_names_it(content: str, ends: str, stays: str | None) -> None:
    words = cancelled_plan(content, "Ann")
    assert words is not None and names_plan(ends, words, "Ann")
    assert stays is None or not names_plan(stays, words, "Ann")


@pytest.mark.parametrize(
    "content",
    [
        "Ann loves Tokyo",
        "Ann cancelled",
        "Ann's trip was cancelled",
        "Bob's trip to Tokyo was cancelled",
        "Ann might cancel the Tokyo trip",  # not called off yet
        "Ann cancels the gym class on Mondays",
        "Ann's mood is off today",
        "They moved Bob's dentist appointment to Friday",
        "They moved to Boston",
    ],
)
def test_no_plan_is_called_off(content: str) -> None:
    assert cancelled_plan(content, "Ann") is None


def test_a_full_name_is_a_person_where_its_first_name_is_one() -> None:
    def row(name: str, kind: str) -> EntityRow:
        return EntityRow(uuid.uuid4(), name, kind, T0)

    rows = [
        row("Jon", "person"),
        row("Jon Smith", "other"),
        row("Star Wars", "other"),
        row("Jon Bay", "place"),
    ]
    assert [r.entity_type for r in people_by_first_name(rows)] == ["person", "person", "other", "place"]
    assert [r.entity_type for r in people_by_first_name(rows[1:])] == ["other", "other", "place"]


def test_a_speaker_named_in_lower_case_opens_its_facts_capitalised() -> None:
    from memsvc.consolidation import fact_slot

    assert fact_slot("User lives in Boston", "user") == fact_slot("User lives in Boston", "User")
    assert fact_slot("User lives in Boston", "user") is not None
    assert fact_slot("Userland lives in Boston", "user") is None
