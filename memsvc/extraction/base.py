"""What an extractor sees and what it returns.

Extractors are pure: they turn a batch of conversation turns into facts, entities and
relations, each pointing at the exact messages that state it. They touch neither the
database nor the embedding model, so ingest can run them anywhere and test them alone.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

FactKind = Literal["fact", "preference", "plan", "event"]
EntityType = Literal["person", "place", "organization", "thing", "event", "other"]


# A credential in a sentence ("connect with postgres://admin:hunter2@db:5432", "my PIN is 4821", an
# API key): the message keeps it, but no fact quotes it into every context that fact reaches.
SECRET = re.compile(
    r"\b[a-z][a-z0-9+.-]*://[^\s/:@]+:[^\s/@]+@"
    r"|\b(?:password|passwd|passcode|pin(?: code| number)?|api[ _-]?key|secret[ _-]?key|access[ _-]?token"
    r"|auth[ _-]?token|bearer token|private key)\s*(?:is|was|:|=)\s*[\"'`]?[\w!@#$%^&*+/=.-]{3,}"
    r"|\b(?:sk-[\w-]{16,}|sk_(?:live|test)_\w{16,}|gh[pousr]_\w{20,}|AKIA[0-9A-Z]{16}|xox[abpr]-[\w-]{10,}"
    r"|AIza[\w-]{30,}|msk_[\w-]{16,})"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation, as ingest hands it to an extractor."""

    message_id: str
    role: str  # "user", "assistant", "system", "tool"
    speaker: str  # the name to use in third-person sentences ("Caroline"); the role when no name was given
    text: str
    event_at: datetime  # timezone-aware; relative dates in the text resolve against it
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class ExtractedFact:
    """A self-contained sentence, speaker name resolved: "Caroline went to an LGBTQ support group"."""

    content: str
    kind: FactKind
    subject: str  # the entity the fact is about, usually a person's name
    source_message_ids: tuple[str, ...]  # exactly the turns that state it, never a whole session
    valid_from: datetime | None = (
        None  # when it became true / happened, resolved from the text or the turn time
    )
    confidence: float = 0.7
    importance: float = 0.5
    # A standing instruction ("Always cite sources when I ask about history") applies to requests
    # about this ("history"): its vector is this text's, so the requests it governs find it.
    applies_to: str | None = None
    # Read from a correction ("Sorry, I meant Tuesday."): the messages it corrects, which it cites
    # though they did not say it (ingest sets it, and keeps it under `CORRECTS_KEY` in metadata).
    corrects: tuple[str, ...] = ()


CORRECTS_KEY = "corrects"


def instruction_sentence(who: str, asks: str, topic: str, directive: str) -> str:
    """How every extractor states a standing instruction: "When the user asks about taxes: always
    give the year." (`asks` is "about" or "for"); `INSTRUCTION_SENTENCE` reads it back."""
    return f"When {who} asks {asks} {topic}: {directive[0].lower()}{directive[1:]}."


def capitalised(text: str) -> str:
    """`text` opening with a capital letter, as a sentence does ("user" → "User")."""
    return text[:1].upper() + text[1:]


def as_written(subject: str | None, content: str) -> str | None:
    """The subject as the fact writes it at its start: a speaker named "user" opens a sentence as
    "User" ("User lives in Boston"), and the fact is still theirs."""
    if not subject or content.startswith(subject):
        return subject
    opening = capitalised(subject)
    return opening if content.startswith(opening) else subject


# Someone (or a pet) of a speaker's: "my sister", "Ann's boss", "my dog Rex".
KIN = (
    r"friend|best friend|sister|brother|mom|mother|dad|father|husband|wife|partner|son|daughter|boyfriend"
    r"|girlfriend|cousin|aunt|uncle|grandma|grandmother|grandpa|grandfather|boss|colleague|coworker"
    r"|co-worker|teammate|manager|roommate|flatmate|landlord|landlady|classmate|cofounder|co-founder|coach"
    r"|tutor|therapist|neighbor|neighbour|mentor|teacher|dog|cat|puppy|kitten|pet|bunny|rabbit|horse|turtle"
    r"|bird|hamster|fish|snake"
)

# What a plan is called when it is called off ("The party is off", "the Tokyo trip got cancelled").
PLAN_NOUNS = (
    r"trip|wedding|party|vacation|holiday|flight|visit|meeting|appointment|concert|dinner|reservation"
    r"|tour|interview|class|lesson|surgery|ceremony|celebration|move|plans?"
)

# Amounts one has one of at a time ("rent", "salary", "test coverage"): a new one replaces the old.
AMOUNT_KINDS = (
    r"rent|salary|income|pay|budget|weight|mortgage|deadline|commute|bedtime|daily step goal|step goal"
    r"|credit score|savings goal|goal weight|target weight|phone number|email address|address"
    r"|test coverage|code coverage|uptime|error rate|headcount|team size"
)

# One's age said as a number alone, after the subject: "is 34", "just turned 35 today" (not "is 5
# minutes away").
AGE = (
    r"(?:is|turned|has turned)\s+(?P<age>\d{1,3})(?:\s+(?:years?\s+old|yo))?"
    r"(?=\s*$|\s*[,.;!?]|\s+(?:on|in|today|yesterday|this|last|now)\b)"
)

# The topic of a standing instruction for every request ("Always answer in Spanish"): the
# context block carries it whatever the question.
EVERY_REQUEST = "anything"

INSTRUCTION_SENTENCE = re.compile(
    r"^When (?P<who>.+?) asks (?:about|for) (?P<topic>[^:]+): (?P<directive>.+?)\.?$"
)

# A couple as a fact states it ("Mia and Ann have been together", "… just got engaged", "… are a
# couple"): the one named first is the partner of the rest. Ingest's graph reads the relation from
# it (`rules`), supersession the partner (`consolidation.fact_slot`). "got together" is a meeting.
COUPLE = re.compile(
    r"^(?P<other>(?-i:[A-Z])[\w'-]+) and (?P<subject>.+?) "
    r"(?:have been|are|(?:just )?got(?= engaged\b| married\b)) "
    r"(?P<state>together|dating|engaged|married|a couple)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ExtractedEntity:
    name: str  # canonical surface form ("Caroline", "LGBTQ support group")
    type: EntityType
    source_message_ids: tuple[str, ...]
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExtractedRelation:
    subject: str  # entity name, as in ExtractedEntity.name
    predicate: str  # short snake_case verb phrase: "went_to", "works_at", "likes"
    object: str  # entity name
    fact: str  # the sentence that states it
    source_message_ids: tuple[str, ...]
    valid_from: datetime | None = None


@dataclass(slots=True)
class Extraction:
    facts: list[ExtractedFact] = field(default_factory=list)
    entities: list[ExtractedEntity] = field(default_factory=list)
    relations: list[ExtractedRelation] = field(default_factory=list)
    extractor: str = ""  # which extractor produced this ("rules", "llm", "llm→rules")
    notes: list[str] = field(default_factory=list)  # e.g. why the LLM extractor fell back


class Extractor(Protocol):
    """Turns a batch of turns (in time order, usually one session) into semantic and graph memories."""

    name: str

    def extract(self, turns: Sequence[Turn], *, known_people: Collection[str] = ()) -> Extraction:
        """`known_people`: the names of people the user's memories know already (the graph's), so
        that "Jon is getting married" said in a later add is news of Jon."""
        ...
