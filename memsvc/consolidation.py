"""Consolidation planning: which memories to supersede, merge, summarise and forget.

Pure functions from rows to decisions, with no database: `memsvc.consolidation_store` reads the
rows, applies the decisions in bounded transactions and records every change in history.

Every plan is a *desired state* computed from the current one, and every decision is stable
under its own application (a survivor is chosen by keys a merge does not change; a superseded
fact points at the next different value of its attribute whatever else was already closed), so
a run killed half-way and run again ends where an uninterrupted run ends.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import defaultdict
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from memsvc.extraction.base import (
    AGE,
    AMOUNT_KINDS,
    COUPLE,
    EVERY_REQUEST,
    INSTRUCTION_SENTENCE,
    KIN,
    PLAN_NOUNS,
    ExtractedFact,
    as_written,
    capitalised,
)
from memsvc.extraction.dates import MONTH_NAMES, WEEKDAY_NAMES
from memsvc.ranking import tokenize

# -- supersession -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """A value of one attribute of a subject: ("residence", "boston")."""

    attribute: str
    value: str  # the key values are compared by: lower case, no article
    text: str = ""  # as written ("Boston", "Honda Civic")


# What a pet is called: "a dog named Rex", "Ann's cat Tiger died".
_PET_WORDS = r"dog|cat|puppy|kitten|rabbit|bunny|parrot|hamster|pet"
_CAR_BRANDS = (
    "audi|bmw|chevrolet|chevy|ford|honda|hyundai|jeep|kia|mazda|mercedes|mini|nissan|porsche|"
    "subaru|tesla|toyota|volkswagen|vw|volvo|lexus|fiat|renault|peugeot|skoda|rivian"
)
# Where a job was joined, a name of one or more capitalised words: "joined Stripe as", "started
# at Blue Bottle as".
_JOINED_AS = r"(?:joined|started at)\s+(?P<e>(?-i:[A-Z])[\w&'.-]*(?:\s+(?-i:[A-Z])[\w&'.-]*)*)\s+as\b"
_NOW = r"(?:(?:now|just|recently|finally|officially|currently|also|still)\s+)*"
# Someone of the subject's, named: "'s sister Emma lives in Chicago" (after the subject).
_KIN_NAMED = re.compile(rf"^'s\s+(?P<kin>{KIN})\s+(?P<said>(?P<name>(?-i:[A-Z])[\w'-]+)\s+.+)", re.IGNORECASE)
# A tool's name: capitalised, or one typed in lower case that names nothing else ("python 3.12";
# "on day 3" names no tool).
_TOOL_NAME = (
    r"(?:(?-i:[A-Z])[\w.+#-]*|(?:python|node|nodejs|java|postgres|postgresql|mysql|react|vue|angular|django"
    r"|flask|rails|ruby|php|typescript|kotlin|swift|scala|ubuntu|debian|fedora|macos|ios|android|windows"
    r"|kubernetes|docker|terraform|elasticsearch|redis|mongodb|nextjs|next\.js|laravel|spring|dotnet"
    r"|\.net|golang|rust|gcc|clang|llvm|cuda|pytorch|tensorflow|numpy|pandas|iphone|pixel)(?![\w.+#-]))"
)
# A named tool, language or platform used at a version: "is on Python 3.11", "use Postgres 15 and
# FastAPI", "upgraded to Node 20", "migrated from Postgres 15 to 16", "runs React v18.2".
_VERSION_USED = re.compile(
    rf"^\s+(?:(?:is|are|has|have)\s+)*{_NOW}(?:"
    r"(?:on|using|uses|use|running|runs|run|upgraded\s+to|updated\s+to|migrated\s+to|moved\s+to|switched\s+to"
    rf"|upgraded|updated)\s+(?:the\s+)?(?!(?:{'|'.join(MONTH_NAMES.split())})\b)"
    rf"(?P<name>{_TOOL_NAME})\s+v?(?P<v>\d+(?:\.\d+){{0,2}})\b"
    rf"|(?:upgraded|updated|migrated|moved|switched)\s+(?:[\w-]+\s+){{0,2}}?from\s+(?P<from>{_TOOL_NAME})"
    r"\s+v?\d+(?:\.\d+){0,2}\s+to\s+(?:(?P=from)\s+)?v?(?P<to>\d+(?:\.\d+){0,2})\b)",
    re.IGNORECASE,
)
# A medicine taken at a dose: "takes 10mg of lisinopril", "is on lisinopril 20mg now", "'s doctor
# upped Ann's lisinopril to 20mg".
_UNIT = r"\d+(?:\.\d+)?\s?(?:mg|mcg|µg|g|ml|iu|units?)"
_DOSE = re.compile(
    r"^\s+(?:(?:is|are)\s+)?(?:now\s+|still\s+)?(?:takes|take|taking|on)\s+"
    rf"(?:(?P<n1>{_UNIT})\s+of\s+(?P<d1>[a-z][\w-]+)|(?P<d2>[a-z][\w-]+)\s+(?P<n2>{_UNIT}))\b"
    r"|^(?:'s\s+\w+\s+|\s+)(?:just\s+)?(?:upped|raised|increased|bumped|lowered|reduced|cut|changed)\s+"
    rf"(?:\S+'s\s+|the\s+)?(?:dose\s+of\s+|dosage\s+of\s+)?(?P<d3>[a-z][\w-]+)\s+(?:dose\s+|dosage\s+)?"
    rf"(?:up\s+|down\s+)?to\s+(?P<n3>{_UNIT})\b",
    re.IGNORECASE,
)
# Patterns over what follows the subject's name in an extracted fact ("Ann moved to Boston in
# February 2024" → " moved to Boston in February 2024"). One attribute per fact: first match wins.
_SLOT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (attribute, re.compile(pattern, re.IGNORECASE))
    for attribute, pattern in (
        (
            "residence",
            rf"^\s+(?:is\s+|are\s+|has\s+|have\s+|has been\s+|have been\s+)?{_NOW}(?:lives|live|living|moved"
            rf"|relocated|based|resides|settled|settling)\s+(?:back\s+)?(?:in|to|at)\s+(?P<v>.+)",
        ),
        ("residence", r"^'s\s+(?:new\s+)?(?:home|house|apartment|place)\s+is\s+in\s+(?P<v>.+)"),
        (
            # "just moved into a new place in cambridge", "moved into our new house in Leeds".
            "residence",
            # ("… in March", "… in town", "… in the same neighborhood" name no place).
            rf"^\s+(?:and others\s+)?{_NOW}moved\s+into\s+(?:a|an|the|our|my|\S+'s)\s+(?:new\s+)?"
            r"(?:place|apartment|flat|house|home|condo|studio)\s+in\s+"
            rf"(?!(?:{'|'.join(MONTH_NAMES.split())}|town|the|a|an|my|our|his|her|their|this|that|same)\b)(?P<v>.+)",
        ),
        (
            "job",
            rf"^\s+{_NOW}(?:works|is working|has been working|started working|got a (?:new )?job|took a "
            rf"(?:new )?job|started a (?:new )?job|is employed|began working)\s+as\s+(?:an?\s+)?(?P<v>.+)",
        ),
        ("job", r"^'s\s+(?:new\s+)?(?:job|position|role)\s+is\s+(?:an?\s+)?(?P<v>.+)"),
        # "Kim is a teacher at Lincoln High": a title at a named employer is a job.
        (
            "job",
            rf"^\s+{_NOW}(?:is|has been)\s+{_NOW}an?\s+"
            r"(?!(?:\w+\s+)?(?:fan|regular|member|guest|customer|visitor|tourist|patient)\b)"
            r"(?P<v>[a-z][\w-]*(?:\s+[a-z][\w-]*){0,2}\s+(?:at|for)\s+(?-i:[A-Z]).*)",
        ),
        # "Kim joined Stripe as a product manager": a title at a named employer joined.
        ("job", rf"^\s+{_NOW}{_JOINED_AS}\s+(?:an?\s+)?(?P<v>.+)"),
        # A promotion is the job now: "Kim got promoted to vice principal".
        ("job", rf"^\s+{_NOW}(?:got|was|has been|just got)\s+promoted\s+to\s+(?:be\s+)?(?:an?\s+)?(?P<v>.+)"),
        (
            "employer",
            rf"^\s+{_NOW}(?:works|is working|started working|joined|began working"
            rf"|(?:got|started|took|landed|accepted) a (?:new )?job)\s+(?:at|for|with)\s+(?P<v>.+)",
        ),
        # "Kim started at Globex", "accepted an offer from Globex": a name ("joined Strava" is none).
        (
            "employer",
            rf"^\s+{_NOW}(?:started at|accepted an? (?:job )?offer from)\s+(?P<v>(?-i:[A-Z])[\w&'.-]*"
            rf"(?:\s+(?-i:[A-Z])[\w&'.-]*)*)",
        ),
        (
            "pet",
            rf"^\s+{_NOW}(?:has|got|adopted|bought|rescued|brought home)\s+"
            rf"(?:an?\s+)?(?:new\s+)?"
            rf"(?:{_PET_WORDS})(?:\s+\w+)?\s+(?:named|called)\s+(?P<v>.+)",
        ),
        (
            "pet",
            r"^'s\s+(?:new\s+)?(?:dog|cat|puppy|kitten|rabbit|pet)(?:'s name)?\s+is\s+"
            r"(?:called\s+|named\s+)?(?P<v>.+)",
        ),
        ("car", rf"^\s+{_NOW}(?:drives|is driving)\s+(?:an?\s+)?(?:new\s+)?(?P<v>.+)"),
        (
            "car",
            rf"^\s+{_NOW}(?:bought|got|leased)\s+(?:an?\s+)?(?:new\s+)?(?:car,?\s+(?:an?\s+)?)?"
            rf"(?P<v>(?:{_CAR_BRANDS})\b.*)",
        ),
        ("car", r"^'s\s+(?:new\s+)?car\s+is\s+(?:an?\s+)?(?P<v>.+)"),
        (
            # "traded the Civic for a Tesla Model 3", "traded in my Honda for a Kia Niro".
            "car",
            rf"^\s+{_NOW}traded\s+(?:in\s+)?[^,.;]+?\s+for\s+(?:an?\s+)?(?:new\s+)?"
            rf"(?P<v>(?:{_CAR_BRANDS})\b.*)",
        ),
        ("age", rf"^\s+{_NOW}{AGE.replace('?P<age>', '?P<v>')}"),
        (
            # "makes 95k now", "earns $60,000 a year" (not "makes 5 cookies", nor "$500 a month from my
            # Etsy shop", "20 an hour at my side gig": a salary is a year's).
            "salary",
            rf"^\s+{_NOW}(?:makes|earns|is making|is earning|gets paid)\s+(?:about\s+|around\s+)?"
            r"(?P<v>[$£€]?\d[\d,.]*\s?(?:k|grand)\b|[$£€]\d[\d,.]*(?!\s*(?:k|grand)\b))"
            r"(?!\s+(?:a|an|per)\s+(?:month|week|day|hour)\b)"
            r"(?![^,.;]*\b(?:from|side|tutoring|freelanc\w*|extra|selling|on the side)\b)",
        ),
        (
            # "weighs 80 kg", then "is down to 76 kg now" ("'s weight is 84 kg" is an amount).
            "weight",
            rf"^\s+{_NOW}(?:weighs|(?:is|got|went|'s)\s+(?:down|up)\s+to|dropped\s+to|is\s+at)\s+"
            r"(?P<v>\d+(?:\.\d+)?\s?(?:kg|kgs|kilos|lbs?|pounds|stone))\b",
        ),
        (
            # "sold the Honda Civic and bought a Tesla Model 3": the car bought is the one now.
            "car",
            rf"^\s+{_NOW}(?:sold|traded in|got rid of)\s+[^,.;]+?\s+and\s+(?:then\s+)?"
            rf"(?:bought|got|leased)\s+(?:an?\s+)?(?:new\s+)?(?:car,?\s+(?:an?\s+)?)?"
            rf"(?P<v>(?:{_CAR_BRANDS})\b.*)",
        ),
        # A partner is someone named: "is seeing the doctor on Friday" or "is dating someone new"
        # names none ("someone new, her name is Priya" does).
        (
            "partner",
            rf"^\s+{_NOW}(?:is dating|started dating|has been dating|is seeing|started seeing|married|got "
            rf"married to|is married to|is engaged to|got engaged to|is in a relationship with)\s+"
            rf"(?:someone(?: new)?,?\s+(?:her|his|their) name is\s+"
            rf"|(?:a|this)\s+(?:girl|guy|woman|man|lady|someone)\s+(?:named|called)\s+)?(?P<v>(?-i:[A-Z]).+)",
        ),
        (
            "partner",
            r"^'s\s+(?:new\s+)?(?:partner|girlfriend|boyfriend|gf|bf|wife|husband|hubby|spouse|fiancee?)\s+is\s+"
            r"(?:called\s+|named\s+)?(?P<v>.+)",
        ),
    )
)
# "Sam's girlfriend Mia", without "is": a partner named on the way to saying something else ("Sam's
# husband Leo works in finance", "Sam's boyfriend Tom and Sam have a dog"). The plain statement
# ("Sam's partner is Leo") holds the partner (`with_state_facts`); the fact as said does not, so a
# new partner does not end what else it says.
_PARTNER_NAMED = re.compile(
    r"^'s\s+(?:new\s+)?(?:partner|girlfriend|boyfriend|gf|bf|wife|husband|hubby|spouse|fiancee?)\s+"
    r"(?P<v>(?-i:[A-Z])[\w'-]+)(?P<rest>.*)$",
    re.IGNORECASE,
)

# One amount of a kind at a time: "Jordan's rent is $1,650 a month", then "Jordan's landlord raised
# the rent to $1,820" or "Jordan's rent is now $1,820"; "Dan's weight is 84 kg", then "Dan is down
# to 81.5 kg" (the unit names the kind: the `weight` slot pattern).
_AMOUNT = re.compile(
    rf"^'s\s+(?:monthly\s+|annual\s+|yearly\s+|new\s+|current\s+)?(?P<what>{AMOUNT_KINDS})\s+"
    r"(?:is|(?:went|is|was)\s+(?:up|down)\s+to|(?:rose|grew|dropped|fell|increased|decreased|jumped|improved"
    r"|climbed)\s+to)\s+"
    r"(?:(?:now|currently|still|only|about|around|roughly|at)\s+)*(?P<v>.+)"
    rf"|^(?:'s\s+\w+\s+|\s+)(?:(?:just|finally)\s+)?(?:raised|increased|bumped|cut|lowered|reduced|dropped|changed|upped)"
    rf"\s+(?:(?:the|my|our|\S+'s)\s+)?(?P<what2>{AMOUNT_KINDS})\s+(?:up\s+|down\s+)?to\s+(?P<v2>.+)",
    re.IGNORECASE,
)
# "Ann's favorite band is Radiohead": one favourite of a kind at a time, the kind its attribute
# ("favorite foods are pizza and sushi" is a list, and lists grow).
_FAVOURITE = re.compile(
    r"^'s\s+(?:new\s+|current\s+|all-time\s+|absolute\s+)*(?:favou?rite|fave|fav)\s+"
    r"(?P<what>[a-z][\w' -]{0,40}?)\s+(?:(?:these days|nowadays|right now|at the moment|lately|now)\s+)?"
    r"is\s+(?:(?:now|really|definitely|probably|still|actually|totally|absolutely|honestly)\s+)*"
    r"(?P<v>.+)",
    re.IGNORECASE,
)
# What may follow the two things compared ("prefers spaces over tabs now"): no part of either.
_AFTER_THE_CHOICE = r"(?:in|on|at|for|when|during|these|now|nowadays|anymore|lately|every|most|because)"
_NOT_AFTER = rf"(?!{_AFTER_THE_CHOICE}\b)"
# "Nina prefers tea over coffee in the mornings", later "… coffee over tea … now": of the two
# things compared one is preferred at a time, the pair its attribute.
_PREFERS_OVER = re.compile(
    r"^\s+(?:(?:now|still|really|actually|definitely)\s+)*(?:prefers|would rather have)\s+"
    rf"(?P<v>[\w'-]+(?:\s+{_NOT_AFTER}[\w'-]+)?)\s+(?:over|to|rather than|instead of)\s+"
    rf"(?P<other>[\w'-]+(?:\s+{_NOT_AFTER}[\w'-]+)?)(?=$|[,.;]|\s+{_AFTER_THE_CHOICE}\b)",
    re.IGNORECASE,
)
# The value of an attribute that ends with nothing in its place ("Ann quit her job at Acme",
# "Ann sold her car", "Ann broke up with Tom"): `ENDED` + the value it names, or "" for whatever
# value held. Values never hold ":" (`_VALUE_END` cuts there), so the prefix is unambiguous.
ENDED = "ended:"
# What may follow "broke up" / "separated" that ends a couple, not a fight or the eggs.
_PARTED_END = r"(?=[,.;!?]|\s+(?:in|on|last|this|yesterday|today|recently|after|because|and|for good)\b|\s*$)"
_OWN = r"(?:(?:his|her|their|the|a|an|my|our)\s+|\S+'s\s+)"
_ENDING_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (attribute, re.compile(pattern, re.IGNORECASE))
    for attribute, pattern in (
        (
            "employer",
            rf"^\s+{_NOW}(?:quit|left|resigned from|lost|(?:was|got) (?:laid off|fired|let go) from)\s+"
            rf"{_OWN}?(?:(?:old|current|day)\s+)?job(?:\s+(?:at|with)\s+(?P<v>.+)|(?=[,.;!?]|\s+(?:in|on|last|this"
            rf"|yesterday|today|recently|after|because|to|and)\b|$))",
        ),
        (
            "employer",
            rf"^\s+{_NOW}(?:no longer works|doesn't work|does not work|stopped working"
            rf"|(?:is|'s) no longer working)\s+(?:at|for)\s+(?P<v>.+)",
        ),
        # "I quit Acme", "I resigned from Acme": a name left is an employer ("quit smoking" is none).
        (
            "employer",
            rf"^\s+{_NOW}(?:quit|resigned from)\s+(?P<v>(?-i:[A-Z])[\w&'’.-]*(?:\s+(?-i:[A-Z])[\w&'’.-]*)*)",
        ),
        ("employer", rf"^\s+{_NOW}(?:was|got) (?:laid off|fired|let go)(?:\s+(?:from|by)\s+(?P<v>.+))?$"),
        # "I retired last Friday", "retired from Deloitte" ("retired the old laptop" ends no job).
        (
            "employer",
            rf"^\s+{_NOW}(?:has\s+)?retired(?:\s+from\s+(?P<v>(?-i:[A-Z]).+)|(?=[,.;!?]|\s+(?:in|on|last|this"
            r"|yesterday|today|recently)\b|$))",
        ),
        (
            "partner",
            rf"^\s+{_NOW}(?:broke up|split up|split|separated|got divorced|(?:is|are) (?:getting )?divorced)"
            rf"(?:\s+(?:with|from)\s+(?P<v>.+)|{_PARTED_END})",
        ),
        ("partner", rf"^\s+{_NOW}divorced\s+(?P<v>.+)"),
        # "Ann's ex-husband Leo is taking the kids": Leo is no longer the partner.
        (
            "partner",
            r"^'s\s+ex[- ]?(?:husband|wife|boyfriend|girlfriend|partner|spouse|fiancee?)\s+"
            r"(?P<v>(?-i:[A-Z])[\w'-]+)(?:\s|$)",
        ),
        (
            "partner",
            rf"^\s+and\s+(?P<v>.+?)\s+(?:broke up|split up|split|separated|got divorced|are getting divorced)"
            rf"{_PARTED_END}",
        ),
        (
            "car",
            rf"^\s+{_NOW}(?:sold|totaled|totalled|wrecked|got rid of|gave away)\s+{_OWN}"
            rf"(?:(?:old|new)\s+)?(?:car\b|(?P<v>(?:{_CAR_BRANDS})\b.*))",
        ),
        (
            "pet",
            rf"^'s\s+(?:{_PET_WORDS})\s+(?P<v>(?-i:[A-Z])[\w'-]+)?\s*"
            r"(?:died|passed away|ran away)",
        ),
    )
)
_DIED_NAMED = re.compile(
    r"^(?P<v>(?-i:[A-Z])[\w'-]+)\s+(?:has\s+|just\s+)?(?:passed away|died(?!\s+down)|was put down|ran away)\b"
)
# "Tom and Ann broke up": the other one named first.
_PARTED = re.compile(
    rf"^(?P<v>.+?) and (?P<s>.+?) (?:broke up|split up|split|separated|got divorced|are getting divorced)"
    rf"{_PARTED_END}",
    re.IGNORECASE,
)
# A habit or state that stopped, with no value in its place ("Sam is no longer vegetarian", "Sam
# doesn't drink coffee anymore", "Sam stopped drinking coffee", "Sam switched from Python to Rust"):
# its attribute is `STOPPED` + the stemmed words of what stopped, its value "no". The subject's
# present-tense facts that hold those words take the attribute with the value "yes" (`state_slot`),
# so supersession closes them as it closes a city left, and "Sam is vegetarian again" closes the stop.
STOPPED = "state: "
_STOPPED_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"^\s+(?:is|are)\s+no longer\s+(?P<x>.+)",
        r"^\s+(?:is|are)\s+not\s+(?P<x>.+?)\s+(?:any\s?more|after\s+all)\b",
        r"^\s+no longer\s+(?P<x>.+)",
        r"^\s+(?:doesn't|does not|don't|do not)\s+(?P<x>.+?)\s+any\s?more\b",
        # "Sam can't handle spicy food anymore": a taste that ended ("Sam loves spicy food").
        r"^\s+(?:can't|cannot|can not)\s+(?:handle|stand|tolerate|take)\s+(?P<taste>.+?)\s+any\s?more\b",
        r"^\s+(?:can't|cannot|can not)\s+(?P<x>.+?)\s+any\s?more\b",
        # "Sam hates running", later "Sam loves running now": a taste is liked or not, one at a time.
        r"^\s+(?:(?:now|really|actually|honestly|kinda|kind of)\s+)*"
        r"(?:hates|dislikes|detests|despises|loathes)\s+(?P<taste>.+)",
        r"^\s+(?:has\s+)?(?:stopped|given up|gave up|quit)\s+(?:on\s+)?(?P<x>.+)",
        r"^\s+(?:has\s+)?switched\s+(?:away\s+)?from\s+(?P<x>.+?)\s+to\b",
        r"^\s+(?:has\s+)?(?:cancell?ed|called off)\s+(?P<x>.+)",
    )
)
# Where what stopped ends: punctuation, a time phrase, a reason.
_STATE_END = re.compile(
    r"[,.;:!?(]|\s+(?:because|when|after|before|since|last|this|yesterday|today|recently|any\s?more|again"
    r"|in\s+\d+|on\s+\d+|in\s+the\s+week|in\s+(?:january|february|march|april|may|june|july|august|september|october"
    r"|november|december))\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"\b(?:not|no|never|no longer)\b|n't\b", re.IGNORECASE)
_LIKE = {"love": "like", "enjoy": "like", "ador": "like"}  # stems that say the same of a taste


def _state_words(text: str) -> frozenset[str]:
    return frozenset(_LIKE.get(word, word) for word in tokenize(text))


def _stopped(rest: str, subject: str) -> str | None:
    """The attribute of the state a fact says stopped (`rest` follows its subject), if it says so."""
    for pattern in _STOPPED_PATTERNS:
        if match := pattern.match(rest):
            what = match.group("x") if "x" in pattern.groupindex else f"like {match.group('taste')}"
            said = _STATE_END.split(what, maxsplit=1)[0]
            # "Sam cancelled Sam's trip to Japan": what stopped is the trip, not Sam.
            words = sorted(w for w in _state_words(said) - _state_words(subject) if not w.isdigit())
            if words == ["like"]:  # "Sam hates it when people are late": a taste of nothing named
                return None
            attribute = STOPPED
            for word in words:  # whole words within the column's 64 characters
                if len(attribute) + len(word) + 1 > 64:
                    break
                attribute += word + " "
            return attribute.rstrip() if attribute != STOPPED else None
    return None


# A plan called off ("Sam cancelled Sam's trip to Tokyo", "Sam's wedding was called off", "Sam and
# others called off the wedding"): the subject's plans that name what was called off end with it.
_MOVED = r"(?:moved|pushed(?:\s+back)?|postponed|rescheduled|delayed|bumped)"
_A_DAY = rf"(?:{'|'.join(MONTH_NAMES.split())}|{'|'.join(WEEKDAY_NAMES.split())})\b"
_CANCELLED = re.compile(
    r"^(?:\s+and others)?\s+(?:(?:has|had|have|is|are)\s+)?(?:(?:had|have|has|decided|needed|chose) to\s+)?"
    r"(?:cancel(?:l?ed|ling)?|call(?:ed|ing)? off)\s+(?P<x>.+)"
    r"|^'s\s+(?P<y>.+?)\s+(?:(?:was|got|has been|had been|is|were|have been)\s+(?:cancell?ed|called off"
    r"|scrapped)|fell through|has fallen through)\b"
    # "Ann's party is off" ("Ann's mood is off today" calls nothing off).
    rf"|^'s\s+(?P<o>(?:[\w'-]+\s+){{0,3}}?(?:{PLAN_NOUNS}))\s+(?:is|are|was)\s+off\b"
    # "Ann is not flying to Tokyo after all", "Ann and others are no longer going to Lisbon".
    r"|^(?:\s+and others)?\s+(?:is|are|am)\s+(?:no longer\s+(?P<g>\w+ing\b.+)"
    r"|not\s+(?P<h>\w+ing\b.+?)\s+(?:after all|anymore|any more)\b)"
    # A plan moved to another time ends the plan at the time before; the moving fact, dated by the
    # new time, is the plan now ("Kim moved Kim's dentist appointment to 5 April 2024", "Kim's
    # interview got pushed to 12 April 2024"). What is moved is named ("moved to Boston" is no plan).
    rf"|^(?:\s+and others)?\s+(?:(?:has|had|have)\s+)?{_MOVED}\s+"
    r"(?P<m>(?:the|my|our|his|her|their|\S+'s)\s+.+?)\s+(?:back\s+)?(?:to|until|till)\b"
    rf"|^'s\s+(?P<n>.+?)\s+(?:(?:was|got|has been|is)\s+{_MOVED}|slipped)\b"
    # "Ann's surgery is now on 3 September 2025": the plan at its new time.
    rf"|^'s\s+(?P<w>.+?)\s+(?:is|are)\s+now\s+(?:on|scheduled\s+for|set\s+for)\s+(?=\d|{_A_DAY})",
    re.IGNORECASE,
)
# A plan someone else moved for the subject: "They moved Kim's appointment to Friday", "The clinic
# rescheduled Kim's appointment for Monday".
_MOVED_FOR = re.compile(
    rf"^(?:they|someone|somebody|the\s+\w+|(?-i:[A-Z])\w+)\s+(?:(?:has|had|have)\s+)?{_MOVED}\s+"
    r"(?P<s>.+?)'s\s+(?P<m>.+?)\s+(?:back\s+)?(?:to|until|till|for)\b",
    re.IGNORECASE,
)
# Words that say what kind of plan it was, not which one: "the Tokyo trip" is the plan that names Tokyo.
_PLAN_WORDS = frozenset(tokenize("trip plan plans vacation holiday visit journey flight tour"))
_SAME_PLAN = {"wed": "marri"}  # "called off the wedding" ends "getting married"


def _plan_words(text: str) -> frozenset[str]:
    return frozenset(_SAME_PLAN.get(word, word) for word in tokenize(text))


def cancelled_plan(content: str, subject: str | None) -> frozenset[str] | None:
    """The words a plan must hold to be the one a fact says was called off (or moved to another
    time), if it says so."""
    subject = as_written(subject, content)
    if not subject:
        return None
    text = content.replace("’", "'")
    if not content.startswith(subject):
        # "They moved Kim's dentist appointment to 4 April 2024": moved for the subject.
        by_others = _MOVED_FOR.match(text)
        if by_others is None or by_others.group("s") != subject:
            return None
        what = by_others.group("m")
    elif (match := _CANCELLED.match(text[len(subject) :])) is None:
        return None
    else:
        what = next(group for group in match.group("x", "y", "m", "n", "o", "g", "h", "w") if group)
    said = _STATE_END.split(what, maxsplit=1)[0]
    words = _plan_words(said) - _plan_words(subject) - _PLAN_WORDS
    return words or None


def names_plan(content: str, words: frozenset[str], subject: str | None) -> bool:
    """Whether a plan holds every word of one called off (`cancelled_plan`), and, where it is the
    plan of someone of the `subject`'s ("Ann's friend Jon is getting married"), names them too: "Ann's
    wedding got postponed" is not Jon's."""
    written = as_written(subject, content)
    theirs = (
        re.match(rf"{re.escape(written)}'s\s+(?P<who>(?:{KIN})\b(?:\s+[A-Z][\w'-]*)?)", content)
        if written
        else None
    )
    return words <= _plan_words(content) and (
        theirs is None or bool(_plan_words(theirs.group("who")) & words)
    )


def never_valid(valid_from: datetime | None, valid_to: datetime | None) -> bool:
    """Valid at no time: a fact a correction replaced ("Sorry, I meant Tuesday."). It is kept for
    its history and the list of memories, but no search returns it and no supersession plans it."""
    return valid_to is not None and valid_from is not None and valid_to <= valid_from


def stored_slot(content: str, subject: str, attribute: str) -> Slot | None:
    """The value a stored fact gives its `attribute`; None if it no longer reads as one."""
    if attribute.startswith(STOPPED):
        return state_slot(content, subject, attribute)
    slot = fact_slot(content, subject)
    return slot if slot is not None and slot.attribute == attribute else None


def state_slot(content: str, subject: str, attribute: str) -> Slot | None:
    """The value a fact gives the stopped state `attribute` (see `STOPPED`): "no" where it says the
    state stopped, "yes" where it states it (holds its words, and no negation), None otherwise."""
    slot = fact_slot(content, subject)
    if slot is not None:
        return slot if slot.attribute == attribute else None
    subject = as_written(subject, content) or subject
    if not content.startswith(subject) or _NEGATED.search(content):
        return None
    words = frozenset(attribute[len(STOPPED) :].split())
    rest = content[len(subject) :]
    if "like" in words:
        # A taste is stated as itself, whole: "Sam loves running now" states the liking "Sam
        # hates running" stopped; "Sam loves running shoes", "loves mornings when it's sunny" or
        # "Sam's husband loves spicy food" state another.
        taste = _TASTE_STATED.match(rest)
        return (
            Slot(attribute, "yes", "yes")
            if taste and _state_words(taste.group("t")) | {"like"} == words
            else None
        )
    if words <= _state_words(rest):
        return Slot(attribute, "yes", "yes")
    # "Sam is back on coffee" resumes "Sam stopped drinking coffee": what it is back on is part of
    # what stopped, the verb left unsaid.
    resumed = _RESUMED.match(rest.replace("’", "'"))
    back = _state_words(_STATE_END.split(resumed.group("x"), maxsplit=1)[0]) if resumed else frozenset()
    return Slot(attribute, "yes", "yes") if back and back <= words else None


_TASTE_STATED = re.compile(
    r"^\s+(?:(?:now|really|actually|still|honestly|totally|absolutely|truly|just)\s+)*"
    r"(?:loves|likes|enjoys|adores|is into|is a fan of)\s+(?P<t>.+?)"
    r"(?:\s+(?:now|again|these days|nowadays|after all|lately|anymore|a lot|so much))*\s*[.!]*$",
    re.IGNORECASE,
)
_RESUMED = re.compile(
    r"^\s+(?:(?:is|are|am|'s|'m)\s+)?(?:back\s+(?:on|to|into)|(?:has\s+)?(?:resumed|returned\s+to"
    r"|gone\s+back\s+to|went\s+back\s+to|got\s+back\s+(?:on|to|into)))\s+(?P<x>.+)",
    re.IGNORECASE,
)


# Where a value ends: a time phrase, a clause, punctuation.
_VALUE_END = re.compile(
    r"\s+(?:in|on|since|last|this|from|after|before|because|with|when|and|but|for|at|during|until|as"
    r"|now|again|yesterday|today|recently|a few|two|three|several|about|these days|nowadays|currently"
    r"|lately|right now|too|anymore|still|starting|beginning|effective)\b|,(?!\d{3}\b)|[;:!?(]"
    # A period ends a value, but not one of a title or an abbreviation ("St. Paul", "Mt. Sinai").
    r"|(?<!\b[Ss]t)(?<!\b[Mm]t)(?<!\b[Ff]t)(?<!\b[Dd]r)(?<!\b[Mm]r)(?<!\b[Mm]s)(?<!\bJr)(?<!\bSr)(?<!\b[Mm]rs)"
    r"(?<!\b[A-Z])\."  # nor of an initial ("J.P. Morgan")
)
_ARTICLE = re.compile(r"^(?:the|a|an|my|his|her|their|our)\s+", re.IGNORECASE)


# A standing instruction as the extractors state it (`instruction_sentence`): the requests it
# governs are its attribute and the directive its value, so a newer instruction for the same
# requests supersedes the older one.
INSTRUCTION_ATTRIBUTE = "instruction: "
# What an instruction for every request says of what it is about (stemmed as `tokenize` stems).
_STANCE_WORDS = frozenset(
    tokenize("always never don't do not stop stopping no need needn't longer anymore any more please can")
)


# An instruction's language or the name it calls the user by is the thing it is about, whatever the
# language or name: "From now on, answer in English" replaces "Please always answer in Spanish".
_LANGUAGES = (
    "english|spanish|french|german|italian|portuguese|dutch|swedish|norwegian|danish|finnish|polish"
    "|czech|slovak|hungarian|romanian|bulgarian|croatian|serbian|russian|ukrainian|greek|turkish"
    "|arabic|hebrew|persian|farsi|hindi|bengali|urdu|punjabi|tamil|chinese|mandarin|cantonese"
    "|japanese|korean|vietnamese|thai|indonesian|malay|tagalog|filipino|swahili|catalan|basque|welsh"
    "|irish|icelandic|estonian|latvian|lithuanian|slovenian"
)
_IN_A_LANGUAGE = re.compile(rf"\b(?:in|speak|speaking|to)\s+(?:{_LANGUAGES})\b", re.IGNORECASE)
_NAMING_VERBS = r"(?:call|calling|address|addressing|refer to|referring to)"


def _instruction_about(directive: str, who: str) -> str:
    """What an instruction for every request is about: one replaces another about the same thing,
    whatever it says of it ("stop answering in Spanish" and "never use emojis" end "always answer
    in Spanish" and "always use emojis"; "always answer in Spanish" does not replace "never use
    emojis"). The language answers are in and the name the user is called by are one thing each."""
    if _IN_A_LANGUAGE.search(directive):
        return "language"
    naming = rf"^(?:(?:always|never|don't|do not|please|stop|you can stop)\s+)*{_NAMING_VERBS}\s+"
    if re.match(naming + re.escape(who) + r"(?![\w'’])", directive, re.IGNORECASE):
        return "name"
    for aspect, pattern in _ANSWER_ASPECTS:
        if pattern.search(directive):
            return aspect
    return " ".join(sorted(frozenset(tokenize(directive)) - _STANCE_WORDS))


# What an answer's shape is, one instruction at a time each: "answer in full paragraphs" ends
# "always answer in bullet points"; "explain the approach first, then show the code" ends "code
# first and explanation after".
_SEQUENCE = r"(?:first|then|before|after|last)"
_PART_OF_ANSWER = r"(?:code|explanation|explain|example|summary|steps)"
_ANSWER_ASPECTS = tuple(
    (aspect, re.compile(pattern, re.IGNORECASE))
    for aspect, pattern in (
        ("order", rf"\b{_SEQUENCE}\b.*\b{_PART_OF_ANSWER}\b|\b{_PART_OF_ANSWER}\b.*\b{_SEQUENCE}\b"),
        ("format", r"\b(?:bullet|bullets|bullet points?|lists?|numbered|paragraphs?|tables?|prose|markdown"
         r"|headings?|headers?)\b"),
        ("length", r"\b(?:short|shorter|brief|briefer|concise|succinct|terse|long|longer|detailed|verbose"
         r"|length|lengthy|\d+\s+words|one sentence|few sentences)\b"),
        ("emoji", r"\bemojis?\b"),
        ("tone", r"\b(?:formal|informal|casual|friendly|professional|tone)\b"),
    )
)  # fmt: skip


def instruction_topic(topic: str, who: str) -> str:
    """The requests an instruction governs as one key, however they were named: "my resume",
    "Ann's resume" and "resumes" are one topic (stemmed words, the asker's own name left out)."""
    asker = set(tokenize(who))
    return " ".join(w for w in tokenize(topic.replace("’", "'")) if w not in asker) or topic


# Verbs any directive may use: "use emojis" and "use numbered lists" are about different things.
_DIRECTIVE_VERBS = frozenset(
    tokenize("use give keep make write answer reply respond include add put show start end provide try be")
)


def _aspect(directive: str) -> frozenset[str]:
    """What a directive is about: its words once stances and common verbs are set aside."""
    return frozenset(tokenize(directive)) - _STANCE_WORDS - _DIRECTIVE_VERBS


def fact_slot(content: str, subject: str | None) -> Slot | None:
    """The attribute of `subject` a fact states a value of, if it is one that has one current value
    (where they live, their job, employer, pet, car, partner, the instruction for some requests);
    None for anything else."""
    subject = as_written(subject, content)
    if not subject:
        return None
    instruction = INSTRUCTION_SENTENCE.match(content)
    if instruction and instruction.group("who") in (subject, "the user"):
        topic = " ".join(instruction.group("topic").lower().split())
        directive = instruction.group("directive")
        if topic == EVERY_REQUEST:
            topic = f"{EVERY_REQUEST}: {_instruction_about(directive, instruction.group('who'))}"
        else:
            topic = instruction_topic(topic, instruction.group("who"))
        return Slot((INSTRUCTION_ATTRIBUTE + topic)[:64], directive.lower(), directive)
    if (died := _DIED_NAMED.match(content)) and died.group("v") != subject:
        # "Tiger passed away", told by Mei: the end of Mei's pet of that name, if Mei has one.
        return Slot("pet", ENDED + died.group("v").lower(), died.group("v"))
    if (parted := _PARTED.match(content)) and parted.group("s") == subject:
        return Slot("partner", ENDED + parted.group("v").lower(), parted.group("v"))
    if (couple := COUPLE.match(content)) and couple.group("subject") == subject:
        return Slot("partner", couple.group("other").lower(), couple.group("other"))
    if not content.startswith(subject):
        return None
    rest = content[len(subject) :].replace("’", "'")
    if amount := _AMOUNT.match(rest):
        written = _value_text(amount.group("v") or amount.group("v2"))
        what = (amount.group("what") or amount.group("what2")).lower()
        return Slot(what, written.lower(), written) if written else None
    if prefers := _PREFERS_OVER.match(rest):
        chosen, other = (" ".join(prefers.group(g).lower().split()) for g in ("v", "other"))
        pair = " or ".join(sorted((chosen, other)))
        return Slot(f"prefers {pair}"[:64], chosen, prefers.group("v"))
    if favourite := _FAVOURITE.match(rest):
        written = _value_text(favourite.group("v"))
        what = " ".join(favourite.group("what").lower().split())
        return Slot(f"favorite {what}"[:64], written.lower(), written) if written else None
    if rest.startswith(" and others "):  # "we" in the speaker's words
        rest = rest[len(" and others") :]
    labelled = re.match(r"'s (?:job|car|employer|pet|partner): ", rest)  # a `state_sentence`
    if labelled and rest[labelled.end() :].startswith(subject):
        rest = rest[labelled.end() + len(subject) :]
    theirs = _KIN_NAMED.match(rest)
    kin_slot = fact_slot(theirs.group("said"), theirs.group("name")) if theirs else None
    if theirs and kin_slot and kin_slot.attribute in _STATE:
        # "Ann's sister Emma lives in Chicago", then "Ann's sister Emma moved to Denver": one
        # residence of Emma's at a time, kept among Ann's facts.
        who = f"{theirs.group('kin').lower()} {theirs.group('name').lower()}"
        return Slot(f"{who}: {kin_slot.attribute}"[:64], kin_slot.value, kin_slot.text)
    if dose := _DOSE.match(rest):
        medicine = dose.group("d1") or dose.group("d2") or dose.group("d3")
        taken = dose.group("n1") or dose.group("n2") or dose.group("n3")
        return Slot(f"dose of {medicine.lower()}"[:64], taken.lower().replace(" ", ""), taken)
    if version := _VERSION_USED.match(rest):
        # "Ann is on Python 3.11", then "Ann upgraded to Python 3.12": one version of a tool at a time.
        name, number = (
            version.group("name") or version.group("from"),
            version.group("v") or version.group("to"),
        )
        return Slot(f"version of {name.lower()}"[:64], number, f"{name} {number}")
    for attribute, pattern in _SLOT_PATTERNS:
        match = pattern.match(rest)
        if match is None:
            continue
        written = _value_text(match.group("v"))
        value = written.lower()
        if value and value not in ("there", "here", "it", "him", "her", "them", "home", "one"):
            return Slot(attribute, value, written)
    if (named := _PARTNER_NAMED.match(rest)) and not named.group("rest").strip(" .,!"):
        return Slot("partner", named.group("v").lower(), named.group("v"))
    for attribute, pattern in _ENDING_PATTERNS:
        if match := pattern.match(rest):
            written = _value_text(match.group("v") or "")
            return Slot(attribute, ENDED + written.lower(), written)
    if departed := _DEPARTED.match(rest):
        written = _value_text(departed.group("v"))
        return Slot(DEPARTURE, written.lower(), written)
    if stopped := _stopped(rest, subject):
        return Slot(stopped, "no", "no")
    return None


# What follows a job's title when the fact names where: "works as a barista at Blue Bottle" (a
# name: "works as a nurse for three years" names none).
_AT_EMPLOYER = r"\s+(?:at|for|with)\s+(?:the\s+)?(?P<e>(?-i:[A-Z]).+)"
_JOINED_EMPLOYER = re.compile(rf"\b{_JOINED_AS}")


def job_employer(content: str, subject: str | None) -> str | None:
    """The employer a job fact names ("Ann works as a barista at Blue Bottle" -> "Blue Bottle"):
    the job ends when another employer begins, and the employer is a value of its own."""
    slot = fact_slot(content, subject)
    if slot is None or slot.attribute != "job":
        return None
    at = re.search(rf"\b{re.escape(slot.text)}{_AT_EMPLOYER}", content)
    employer = _value_text(at.group("e")) if at else ""
    if not employer and (joined := _JOINED_EMPLOYER.search(content)):
        employer = joined.group("e")
    return employer or None


# "Ann left Acme": an event that ends the employer it names, if Acme is one ("Ann left Paris" ends
# nothing), and is never ended itself.
DEPARTURE = "departure"
_DEPARTED = re.compile(
    r"^\s+(?:just\s+|finally\s+|recently\s+)*left\s+(?P<v>(?-i:[A-Z])[\w&'.-]*(?:\s+(?-i:[A-Z])[\w&'.-]*)*)"
)
# Attributes one another's values end: a job said with its employer ends with that employer, and
# either with a departure from it.
_LINKED = {"job": ("employer", DEPARTURE), "employer": ("job", DEPARTURE), DEPARTURE: ("employer", "job")}


def supersession_keys(keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (subject, attribute) pairs whose facts supersession must read to plan `keys`."""
    keys = set(keys)
    return keys | {(subject, linked) for subject, a in keys for linked in _LINKED.get(a, ())}


def _value_text(said: str) -> str:
    written = _VALUE_END.split(said, maxsplit=1)[0]
    return " ".join(_ARTICLE.sub("", written.strip()).split()[:4])


def is_an_end(content: str, subject: str, attribute: str | None) -> bool:
    """Whether a stored fact states the end of a value ("Rex died", "Ann quit her job"): past news
    that keeps no message current once what else it said is replaced."""
    slot = stored_slot(content, subject, attribute) if attribute else None
    return slot is not None and slot.value.startswith(ENDED)


def _replaces(later: SlotFact, earlier: SlotFact) -> bool:
    """Whether `later` is a different value of the attribute than `earlier`: a new value, or the
    end of the one `earlier` states (an end that names another value ends that one, not this);
    pets are kept together, and end only."""
    if later.value.startswith(ENDED):
        return not earlier.value.startswith(ENDED) and later.value[len(ENDED) :] in ("", earlier.value)
    if later.attribute == "pet" or later.attribute.endswith(": pet"):
        # A new pet joins the ones one has ("we adopted a dog named Biscuit" beside the cat Miso):
        # only an end ("Miso died") closes one.
        return False
    if later.attribute.startswith(INSTRUCTION_ATTRIBUTE) and not later.attribute.startswith(
        INSTRUCTION_ATTRIBUTE + EVERY_REQUEST
    ):
        # Instructions for the same requests on different things both stand ("use numbered lists"
        # and "stop using emojis" for resume questions); one on the same thing replaces the other
        # ("use numbered lists instead of bullet points" after "always use bullet points").
        return later.value != earlier.value and bool(_aspect(later.value) & _aspect(earlier.value))
    return later.value != earlier.value


# Each names the attribute as questions do ("what is Ann's job?", "what car does Ann drive?").
_STATE = {
    "residence": "{s} lives in {v}",
    "job": "{s}'s job: {s} works as {a} {v}",
    "employer": "{s}'s employer: {s} works at {v}",
    "pet": "{s}'s pet is called {v}",
    "car": "{s}'s car: {s} drives {a} {v}",
    "partner": "{s}'s partner is {v}",
}


def state_sentence(subject: str, slot: Slot) -> str:
    """The fact as a plain statement of the attribute's value ("Ann moved to Boston in May" →
    "Ann lives in Boston"): it answers "where does Ann live?" in the question's own words, so the
    current value, not a stale one that happens to share them, ranks first."""
    article = "an" if slot.text[:1].lower() in "aeiou" else "a"
    # A speaker named "user" is written as a fact writes it: "User's job: User works as a nurse".
    sentence = _STATE[slot.attribute].format(s=capitalised(subject), v=slot.text, a=article)
    # A street address is lived at ("Ann lives at 220 Elm Street"), a place in.
    return sentence.replace(" lives in ", " lives at ", 1) if slot.text[:1].isdigit() else sentence


@dataclass(frozen=True, slots=True)
class SlotFact:
    """A stored fact with an attribute, as supersession sees it."""

    id: uuid.UUID
    subject: str
    attribute: str
    value: str
    valid_from: datetime
    event_at: datetime
    status: str
    superseded_by: uuid.UUID | None
    valid_to: datetime | None
    content: str = ""

    @property
    def plain(self) -> bool:
        """Whether this is the value's plain statement (`state_sentence`), not the words as said."""
        if self.attribute not in _STATE:
            return False  # an instruction has no plain statement: it is said plainly
        slot = Slot(self.attribute, self.value, self.value)
        return self.content.lower() == state_sentence(self.subject, slot).lower()


@dataclass(frozen=True, slots=True)
class Supersede:
    """Close `old_id` at `valid_to`; `new_id` is its successor (the next different value)."""

    old_id: uuid.UUID
    new_id: uuid.UUID
    valid_to: datetime


def plan_supersessions(facts: Iterable[SlotFact]) -> list[Supersede]:
    """For every (subject, attribute), each value is closed by the next *different* value in time
    (restating the same value closes nothing). Returns only what differs from the stored state.

    A new value is stored as said and as its plain statement at the same instant; of facts that
    tie in time the plain statement comes first, then by content, so the successor is the same
    for every user with the same story (ids differ between users and would pick at random)."""
    groups: dict[tuple[str, str], list[SlotFact]] = defaultdict(list)
    for fact in facts:
        groups[(fact.subject.lower(), fact.attribute)].append(fact)

    def order(f: SlotFact) -> tuple[Any, ...]:
        return (f.valid_from, f.event_at, not f.plain, f.content, str(f.id))

    for group in groups.values():
        group.sort(key=order)
    out = []
    for (subject, attribute), group in groups.items():
        if attribute == DEPARTURE:
            continue  # an event: it ends an employer, nothing ends it
        # An employer also ends with a departure that names it ("Ann left Acme"), and a job said
        # with its employer with either ("works as a barista at Blue Bottle", then "started a new
        # job at Microsoft", "quit the job at Blue Bottle" or "left Blue Bottle").
        departures = groups.get((subject, DEPARTURE), [])
        employers = groups.get((subject, "employer"), []) if attribute == "job" else []
        for i, fact in enumerate(group):
            ends = [g for g in group[i + 1 :] if _replaces(g, fact)][:1]
            employer = fact.value if attribute == "employer" else None
            if attribute == "job" and (employers or departures):
                employer = (job_employer(fact.content, fact.subject) or "").lower() or None
            if employer is not None:
                at = replace(fact, attribute="employer", value=employer)
                later = [g for g in (*employers, *departures) if order(g) > order(fact)]
                ends += [g for g in later if g.attribute == DEPARTURE and g.value == employer][:1]
                ends += [g for g in later if g.attribute == "employer" and _replaces(g, at)][:1]
            if not ends:
                continue
            successor = min(ends, key=order)
            valid_to = max(successor.valid_from, fact.valid_from)
            if (
                fact.status == "superseded"
                and fact.superseded_by == successor.id
                and fact.valid_to == valid_to
            ):
                continue
            out.append(Supersede(fact.id, successor.id, valid_to))
    return out


def with_state_facts(facts: Sequence[ExtractedFact]) -> list[ExtractedFact]:
    """The extracted facts, each one that changes an attribute followed by its plain statement
    (`state_sentence`), from the same messages and valid from the same time."""
    out = list(facts)
    seen = {f.content.lower() for f in facts}
    for fact in facts:
        for clause in _clauses(fact.content, fact.subject):
            slot = fact_slot(clause, fact.subject) or _partner_named(clause, fact.subject)
            if slot is None or slot.attribute not in _STATE or slot.value.startswith(ENDED):
                continue
            plain = [state_sentence(fact.subject, slot)]
            if slot.attribute == "pet":
                # "has a dog named Rex and a cat named Luna": Luna is a pet too, and stays one
                # when Rex dies and the fact that names both is closed.
                plain += [
                    state_sentence(fact.subject, Slot("pet", n.lower(), n))
                    for n in _MORE_PETS.findall(clause)
                ]
            if (employer := job_employer(clause, fact.subject)) is not None:
                # The job names where, so that it ends with that employer as the fact said does.
                plain = [
                    f"{plain[0]} at {employer}",
                    state_sentence(fact.subject, Slot("employer", employer.lower(), employer)),
                ]
            for sentence in plain:
                # "Ann lives in Portland now" is its own plain statement: a second would be a duplicate.
                if _without_now(sentence) == _without_now(clause):
                    continue
                if sentence.lower() not in seen:
                    seen.add(sentence.lower())
                    # A partner named in a plan ("my boyfriend Jake and I are going to Italy in
                    # June") is one now, not from the trip's date.
                    now = fact.kind == "plan" and slot.attribute == "partner"
                    out.append(
                        replace(
                            fact, content=sentence, kind="fact", valid_from=None if now else fact.valid_from
                        )
                    )
    return out


# An attribute of someone of a subject's, named (`fact_slot`): "sister emma: residence".
_KIN_ATTRIBUTE = re.compile(rf"^(?P<kin>{KIN}) (?P<name>[^:]+): ", re.IGNORECASE)


def kin_named(keys: Iterable[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Each name someone of a subject's is known by, lower-case, with (that subject, the kin word),
    from (subject, attribute) pairs: Ann's "sister emma: residence" gives {"emma": ("Ann",
    "sister")}. A name that two people's, or two kin of one, share is left out: whose it is cannot
    be told."""
    owners: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for subject, attribute in keys:
        if said := _KIN_ATTRIBUTE.match(attribute):
            owners[said.group("name").lower()].add((subject, said.group("kin").lower()))
    return {name: next(iter(found)) for name, found in owners.items() if len(found) == 1}


def with_kin_statements(
    facts: Sequence[ExtractedFact], stored_keys: Iterable[tuple[str, str]] = ()
) -> list[ExtractedFact]:
    """The extracted facts, each that gives someone of a subject's, named on their own, a value
    ("Emma moved to Denver", Emma being Ann's sister) followed by the same said as the subject's
    ("Ann's sister Emma moved to Denver"): that replaces what the subject's facts said of them
    ("Ann's sister Emma lives in Chicago"), which is kept among the subject's (`fact_slot`).
    `stored_keys`: the (subject, attribute) pairs of the user's stored facts about such people."""
    said = [
        (f.subject, slot.attribute) for f in facts if f.subject and (slot := fact_slot(f.content, f.subject))
    ]
    kin = kin_named([*stored_keys, *said])
    out = list(facts)
    seen = {f.content.lower() for f in facts}
    for fact in facts:
        owner = kin.get((fact.subject or "").lower())
        if owner is None or owner[0] == fact.subject:
            continue
        whose, kin_word = owner
        for clause in _clauses(fact.content, fact.subject):
            slot = fact_slot(clause, fact.subject)
            if slot is None or slot.attribute not in _STATE or not clause.startswith(f"{fact.subject} "):
                continue
            sentence = f"{capitalised(whose)}'s {kin_word} {clause}"
            if sentence.lower() not in seen:
                seen.add(sentence.lower())
                out.append(replace(fact, content=sentence, subject=whose, kind="fact"))
    return out


# Further pets named after the first: "… a dog named Rex and a cat named Luna".
_MORE_PETS = re.compile(
    rf"\b(?:and|,)\s+(?:a|an|our|my|\S+'s)\s+(?:{_PET_WORDS})"
    r"\s+(?:named|called)\s+((?-i:[A-Z])[\w'-]+)",
    re.IGNORECASE,
)


# Words that say a value holds now, and nothing more ("Ann now lives in Portland these days").
_HOLDS_NOW = re.compile(
    r"\b(?:now|currently|nowadays|these days|at the moment|at present|still)\b", re.IGNORECASE
)


def _without_now(text: str) -> str:
    return " ".join(_HOLDS_NOW.sub(" ", text.replace(",", " ")).lower().rstrip(" .!").split())


# Where a fact goes on to a second thing its subject did: "Ann quit Acme and started a new job at
# Globex" holds "Ann started a new job at Globex" too.
_AND_THEN = re.compile(r",?\s+and\s+(?:then\s+|now\s+|also\s+|just\s+)?(?=[a-z]+(?:ed|ing)?\s)")


def _partner_named(content: str, subject: str | None) -> Slot | None:
    """The partner a fact names on the way (`_PARTNER_NAMED`), for its plain statement."""
    subject = as_written(subject, content)
    if not subject or not content.startswith(subject):
        return None
    named = _PARTNER_NAMED.match(content[len(subject) :].replace("’", "'"))
    return Slot("partner", named.group("v").lower(), named.group("v")) if named else None


def _clauses(content: str, subject: str | None) -> list[str]:
    """The fact, then each further clause of it as its subject's own statement."""
    subject = as_written(subject, content)
    # Only where the subject does the first thing: in "Fay's sister lives in Rome and works at
    # Fiat" the sister works there, not Fay.
    if not subject or not content.startswith(f"{subject} "):
        return [content]
    clauses = [f"{subject} {rest}" for rest in _AND_THEN.split(content)[1:]]
    # "Priya moved, Priya now lives at 220 Elm Street": a statement after a comma, said again.
    again = re.finditer(rf",\s+{re.escape(subject)} ", content)
    clauses += [content[m.end() - len(subject) - 1 :] for m in again]
    return [content, *clauses]


# -- forgetting ---------------------------------------------------------------------------------

_SMALL_TALK = re.compile(
    r"\b(thanks?|thank you|thx|appreciate[sd]?|awesome|great|amazing|cool|nice|wow|lol|haha|congrats"
    r"|congratulations|good luck|take care|you too|bye|see you|no problem|glad|happy for you|sounds good"
    r"|love (it|that)|so proud|proud of you|sweet|kind words|that's (great|awesome|amazing|cool)"
    r"|good (morning|afternoon|evening|night)|how are you|how's it going|hi|hello|hey|ok|okay|k|hmm+"
    r"|you'?re welcome|good to know|got it|please do|will do|yes please|good idea|sure thing)\b",
    re.IGNORECASE,
)
# A word the speaker says of themselves: with any other word beside the thanks, a statement
# ("Thanks! I moved to Lisbon." was small talk, its turn ranked below every ordinary memory).
_FIRST_PERSON = frozenset("i i'm i've i'll i'd me my mine we we're we've we'll our us".split())
_FUNCTION_WORDS = frozenset(
    """a an the and or but so to of in on at for with is are was were be been am i you he she it we
    they me him her us them my your his its our their this that these those do does did have has had
    just really so very too yeah yes oh hey hi hello well what how all much many such again always what's
    it's that's i'm you're i've you've we're it was thank thanks appreciate words kind awesome great
    amazing cool nice wow lol haha congrats congratulations luck take care bye see no problem glad
    happy proud sweet love sounds good totally definitely sure same morning afternoon evening night
    how's going""".split()
)


def is_small_talk(content: str, names: Iterable[str] = ()) -> bool:
    """Thanks, compliments, greetings and acknowledgements with (almost) nothing else in them, or no
    word at all ("👍"): nothing to remember."""
    if not re.search(r"[^\W_]", content):
        return bool(content.strip())
    if not _SMALL_TALK.search(content):
        return False
    skip = _FUNCTION_WORDS | {n.lower() for n in names}
    said = re.findall(r"[a-z']+", content.lower().replace("’", "'"))
    words = [w for w in said if w not in skip and len(w) > 2]
    return len(words) <= 2 and not (words and _FIRST_PERSON.intersection(said))


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Forgetting. Retention R = exp(-t / S) (Ebbinghaus): t is the time since the memory was last
    used (made, or returned by a search), measured on the user's own clock (their latest activity),
    so a user away for a year comes back to the memory they left; stability S grows with importance
    and with each use: S = stability_days × (importance / 0.5)² × (1 + ln(1 + uses))."""

    stability_days: float = 180.0
    archive_below: float = 0.05  # R below this: archived (out of search, readable, restorable)
    purge_after_days: float = 30.0  # archived this long (wall clock): deleted with its vectors
    small_talk_importance: float = 0.1


@dataclass(frozen=True, slots=True)
class RetentionRow:
    id: uuid.UUID
    kind: str
    content: str
    importance: float
    access_count: int
    last_used_at: datetime  # last access, else when it was made (event time)
    status: str
    pinned: bool
    attribute: str | None
    archived_at: datetime | None
    expires_at: datetime | None
    # Half of a question and its answer: the turn right after a question ("Glad to be part of it."
    # is an answer), or a question with a turn after it ("Wow, congrats! What game were you
    # playing?" names what the answer is about). Search returns the two as one excerpt.
    in_exchange: bool = False
    # A passage's message (its turn); None for a passage whose message was deleted before passages
    # followed it, and for every other memory.
    turn_id: uuid.UUID | None = None


def retention(importance: float, uses: int, days: float, config: RetentionConfig) -> float:
    """R = exp(-t / S), see `RetentionConfig`."""
    stability = config.stability_days * (max(importance, 0.01) / 0.5) ** 2 * (1 + math.log1p(max(uses, 0)))
    return math.exp(-max(days, 0.0) / stability)


def in_exchange(content: str, previous: str | None, has_next: bool) -> bool:
    """Whether a turn is half of a question and its answer: the turn right after a question, or a
    question with a turn after it (see `RetentionRow.in_exchange`)."""
    return (previous is not None and "?" in previous) or ("?" in content and has_next)


def low_importance(content: str, speakers: Iterable[str] = (), *, exchange: bool = False) -> bool:
    """The one judgement of what is not worth remembering: small talk (`is_small_talk`) that is
    not half of a question and its answer. Forgetting gives it `small_talk_importance`; search
    ranks it lower (`RankingConfig.low_importance_penalty`), before a run as after it."""
    return not exchange and is_small_talk(content, speakers)


def judged_importance(
    content: str,
    importance: float,
    speakers: Iterable[str] = (),
    *,
    exchange: bool = False,
    config: RetentionConfig | None = None,
) -> float:
    """The importance forgetting goes by: `small_talk_importance` for small talk outside a question
    and its answer (`low_importance`), else the stored one. Search ranks by the same judgement."""
    if low_importance(content, speakers, exchange=exchange):
        return (config or RetentionConfig()).small_talk_importance
    return importance


def importance_of(row: RetentionRow, speakers: Iterable[str], config: RetentionConfig) -> float:
    return judged_importance(row.content, row.importance, speakers, exchange=row.in_exchange, config=config)


@dataclass(frozen=True, slots=True)
class ForgetPlan:
    archive: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (id, why)
    purge: list[uuid.UUID] = field(default_factory=list)


def plan_forgetting(
    rows: Sequence[RetentionRow],
    *,
    user_clock: datetime,
    now: datetime,
    config: RetentionConfig,
    speakers: Iterable[str] = (),
) -> ForgetPlan:
    """Which memories to archive and which archived ones to delete for good.

    Pinned memories are never forgotten by retention; a memory whose TTL (`expires_at`) has passed
    is archived whatever its retention (an explicit expiry wins over a pin). Session digests and
    facts with an attribute (where someone lives, their job: their history answers `as_of`
    questions) are kept; superseded facts too.

    A long message and its passages are one: a use of a passage is a use of the message (search
    returns the passages, never the whole message), and passages are archived and purged with their
    message, never alone; a passage whose message is gone is archived (then purged as usual)."""
    plan = ForgetPlan()
    names = list(speakers)
    purge_before = now - timedelta(days=config.purge_after_days)
    parts: dict[uuid.UUID, list[RetentionRow]] = defaultdict(list)
    for row in rows:
        if row.kind == "passage" and row.turn_id is not None:
            parts[row.turn_id].append(row)
    for row in rows:
        if row.kind == "passage":
            continue
        if parts.get(row.id):
            members = parts[row.id]
            row = replace(
                row,
                access_count=row.access_count + sum(p.access_count for p in members),
                last_used_at=max(row.last_used_at, *(p.last_used_at for p in members)),
            )
        if row.status == "archived":
            if row.archived_at is not None and row.archived_at <= purge_before:
                plan.purge.append(row.id)
            continue
        if row.expires_at is not None and row.expires_at <= now:
            plan.archive.append((row.id, "expired"))
            continue
        if row.pinned or row.kind in ("session", "summary") or row.attribute or row.status != "active":
            continue
        days = (user_clock - row.last_used_at).total_seconds() / 86400
        score = retention(importance_of(row, names, config), row.access_count, days, config)
        if score < config.archive_below:
            plan.archive.append((row.id, f"retention {score:.3f}"))
    _passages_follow(plan, rows, purge_before)
    return plan


def _passages_follow(plan: ForgetPlan, rows: Sequence[RetentionRow], purge_before: datetime) -> None:
    """Add to `plan` the passages that follow their message (see `plan_forgetting`)."""
    by_id = {r.id: r for r in rows}
    why = dict(plan.archive)
    purged = set(plan.purge)
    for row in rows:
        if row.kind != "passage":
            continue
        turn = by_id.get(row.turn_id) if row.turn_id is not None else None
        if turn is None:
            if row.status != "archived":
                plan.archive.append((row.id, "its message is gone"))
            elif row.archived_at is not None and row.archived_at <= purge_before:
                plan.purge.append(row.id)
        elif turn.id in purged:
            plan.purge.append(row.id)
        elif row.status == "active" and (turn.id in why or turn.status == "archived"):
            plan.archive.append((row.id, why.get(turn.id, "its message is archived")))


# -- merging ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MergeRow:
    id: uuid.UUID
    kind: str
    subject: str | None
    content_hash: str
    must_match: str | None  # rows merge only with rows of the same value: an event's day
    event_at: datetime
    # Stemmed content words: close vectors merge only when one's words hold the other's, since a
    # fact that replaces a word ("keeps a kayak in her shed" / "keeps a violin ...") reads ≥ 0.95.
    words: frozenset[str] = frozenset()
    # The attribute and value a fact states ("residence", "boston"): facts of one value said at
    # different times merge when one's words hold the other's, however far apart their vectors
    # ("Ann lives in Boston" and "Ann lives in Boston now"); a fact with a value never merges with
    # one without.
    value: tuple[str, str] | None = None
    # Memories a person took back out of this one (restored after a run merged them): kept apart.
    apart: frozenset[uuid.UUID] = frozenset()

    def may_join(self, other: MergeRow) -> bool:
        return other.id not in self.apart and self.id not in other.apart


def merge_row(
    memory_id: uuid.UUID,
    kind: str,
    subject: str | None,
    content: str,
    content_hash: str,
    valid_from: datetime | None,
    event_at: datetime,
    attribute: str | None = None,
    apart: Iterable[uuid.UUID] = (),
) -> MergeRow:
    """A memory as merge planning reads it: an event merges only with events of its day, a fact
    with an `attribute` only with facts of the same value, none with one it is kept `apart` from."""
    day = (valid_from or event_at).date().isoformat() if kind == "event" else None
    slot = stored_slot(content, subject or "", attribute) if attribute else None
    value = (slot.attribute, slot.value) if slot is not None else None
    words = frozenset(tokenize(content))
    return MergeRow(memory_id, kind, subject, content_hash, day, event_at, words, value, frozenset(apart))


@dataclass(frozen=True, slots=True)
class Merge:
    """`duplicate_ids` become part of `survivor_id`."""

    survivor_id: uuid.UUID
    duplicate_ids: tuple[uuid.UUID, ...]


def close_to_earlier(
    vectors: npt.NDArray[np.float32], threshold: float, chunk: int = 512
) -> Iterator[tuple[int, npt.NDArray[np.bool_]]]:
    """For each row of `vectors` (unit length) in order: its position, and which of the rows before
    it have a cosine ≥ `threshold` with it. The leader clustering of memories and of entities walks
    these; the products are taken a chunk of rows at a time, so memory stays chunk × n."""
    for start in range(0, len(vectors), chunk):
        close = (vectors[start : start + chunk] @ vectors[: start + chunk].T) >= threshold
        for offset in range(min(chunk, len(vectors) - start)):
            yield start + offset, close[offset, : start + offset]


def plan_merges(rows: Sequence[MergeRow], vectors: npt.NDArray[np.float32], threshold: float) -> list[Merge]:
    """Near-duplicate semantic memories (same subject and kind, cosine ≥ `threshold` or the same
    text, the same `must_match`: two events of different days stay two) merge into the earliest.
    Close vectors are not enough when each text has a word the other lacks: that is another fact.
    Facts of an attribute's value are near when they state the same value (`MergeRow.value`).

    Greedy leader clustering in (event time, id) order: a row joins the first earlier leader it
    is close to, else leads. Merging changes neither order nor vectors of leaders, so planning
    again after a partial run gives the remaining merges and the same clusters."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i].event_at, str(rows[i].id)))
    by_subject: dict[str | None, list[int]] = defaultdict(list)
    for i in order:
        by_subject[(rows[i].subject or "").lower()].append(i)
    clusters: dict[int, list[int]] = {}
    for members in by_subject.values():
        is_leader = np.zeros(len(members), dtype=np.bool_)
        leader_hash: dict[str, int] = {}
        leaders_of_value: dict[tuple[str, str], list[int]] = defaultdict(list)
        for position, close in close_to_earlier(vectors[members], threshold):
            i = members[position]
            row = rows[i]
            leader = leader_hash.get(row.content_hash)
            if leader is not None and not row.may_join(rows[members[leader]]):
                leader = None
            if leader is None:
                if row.value is None:
                    near = np.flatnonzero(close & is_leader[:position]).tolist()
                else:
                    near = leaders_of_value[row.value]
                for lp in near:
                    other = rows[members[lp]]
                    if (
                        other.kind == row.kind
                        and other.must_match == row.must_match
                        and other.value == row.value
                        # A value said again, not a fact beside its plain statement (`with_state_facts`).
                        and (row.value is None or other.event_at != row.event_at)
                        and (other.words <= row.words or row.words <= other.words)
                        and row.may_join(other)
                    ):
                        leader = lp
                        break
            if leader is None:
                is_leader[position] = True
                leader_hash.setdefault(row.content_hash, position)
                if row.value is not None:
                    leaders_of_value[row.value].append(position)
                clusters[i] = []
            else:
                clusters[members[leader]].append(i)
    return [
        Merge(rows[leader].id, tuple(rows[d].id for d in duplicates))
        for leader, duplicates in clusters.items()
        if duplicates
    ]


def merged_fields(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a survivor becomes: earliest `valid_from`, summed uses, the latest use, the highest
    importance (rows[0] is the survivor)."""
    return {
        "valid_from": min((r["valid_from"] for r in rows if r["valid_from"] is not None), default=None),
        "access_count": sum(int(r["access_count"] or 0) for r in rows),
        "last_accessed_at": max(
            (r["last_accessed_at"] for r in rows if r["last_accessed_at"] is not None), default=None
        ),
        "importance": max(float(r["importance"]) for r in rows),
    }


# -- entities -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntityRow:
    """A graph node as entity merging sees it: what a merge leaves unchanged on a survivor."""

    id: uuid.UUID
    name: str
    entity_type: str
    created_at: datetime
    aliases: tuple[str, ...] = ()


def entity_key(name: str) -> str:
    """A name without case, punctuation, leading articles or possessive ("The Rex's" → "rex")."""
    words = re.sub(r"[^\w\s]", " ", name.lower().replace("’", "'").replace("'s ", " ")).split()
    if words and words[-1] == "s" and len(words) > 1:  # "Rex's" split at the apostrophe
        words = words[:-1]
    while words and words[0] in ("the", "a", "an", "my", "our", "his", "her", "their"):
        words = words[1:]
    return " ".join(words)


def full_name_of_a_person(key: str, entity_type: str, first_names: Container[str]) -> bool:
    """Whether a name of no type in particular ("Jon Smith", read where nothing said who) is a
    person's full name: its first name is a person's ("Jon"), so the two can merge."""
    words = key.split()
    return entity_type == "other" and len(words) > 1 and words[0] in first_names


def people_by_first_name(rows: Sequence[EntityRow]) -> list[EntityRow]:
    """The rows, each full name of a person (`full_name_of_a_person`) typed a person."""
    first = {key for row in rows if row.entity_type == "person" and " " not in (key := entity_key(row.name))}
    return [
        replace(row, entity_type="person")
        if full_name_of_a_person(entity_key(row.name), row.entity_type, first)
        else row
        for row in rows
    ]


def plan_entity_merges(
    rows: Sequence[EntityRow], vectors: npt.NDArray[np.float32], threshold: float
) -> list[Merge]:
    """Near-duplicate entities of one user merge into the earliest: nodes of one type whose names
    differ only in case, punctuation, articles or a possessive, or mean the same (cosine of the
    names' vectors ≥ `threshold`), or, for people, one known by the first name of the other ("Jon"
    and "Jon Smith") unless that first name belongs to two full names (names or aliases).

    Leader clustering in (created_at, id) order, comparing a row with leaders only, by a leader's
    own name and vector, which a merge does not change (and the names a merge removes stay as
    aliases): planning again after a partial run gives the remaining merges."""
    rows = people_by_first_name(rows)
    order = sorted(range(len(rows)), key=lambda i: (rows[i].created_at, str(rows[i].id)))
    by_type: dict[str, list[int]] = defaultdict(list)
    for i in order:
        by_type[rows[i].entity_type].append(i)
    full_names: dict[str, set[str]] = defaultdict(set)  # people: first name → full names
    for row in rows:
        if row.entity_type == "person":
            for name in (row.name, *row.aliases):
                words = entity_key(name).split()
                if len(words) > 1:
                    full_names[words[0]].add(" ".join(words))
    clusters: dict[int, list[int]] = {}
    for members in by_type.values():
        keys = [entity_key(rows[i].name) for i in members]
        is_leader = np.zeros(len(members), dtype=np.bool_)
        leader_of_key: dict[str, int] = {}
        by_first: dict[str, list[int]] = defaultdict(list)  # people: first name → leaders
        for position, close in close_to_earlier(vectors[members], threshold):
            key = keys[position]
            if not key:
                continue
            leader = leader_of_key.get(key)
            if leader is None:
                near = np.flatnonzero(close & is_leader[:position])
                leader = int(near[0]) if len(near) else None
            words = key.split()
            person = rows[members[position]].entity_type == "person"
            if leader is None and person and len(full_names.get(words[0], ())) == 1:
                candidates = by_first.get(words[0], [])
                candidates = [c for c in candidates if (len(keys[c].split()) > 1) != (len(words) > 1)]
                if len(candidates) == 1:
                    leader = candidates[0]
            if leader is None:
                is_leader[position] = True
                leader_of_key[key] = position
                by_first[key.split()[0]].append(position)
                clusters[members[position]] = []
            else:
                clusters[members[leader]].append(members[position])
    return [
        Merge(rows[leader].id, tuple(rows[d].id for d in duplicates))
        for leader, duplicates in clusters.items()
        if duplicates
    ]


# -- summaries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRow:
    id: uuid.UUID
    subject: str
    content: str
    event_at: datetime


@dataclass(frozen=True, slots=True)
class Summary:
    """An extractive summary of a subject's events of one month."""

    key: str  # stable: subject and month
    subject: str
    content: str
    member_ids: tuple[uuid.UUID, ...]
    event_at: datetime


def plan_summaries(
    events: Sequence[EventRow], *, older_than: datetime, min_events: int = 4, max_sentences: int = 8
) -> list[Summary]:
    """A subject's events of a month older than `older_than`, when there are at least `min_events`,
    get one summary: "In May 2023, Caroline: went to …; painted …" (their own sentences, oldest first)."""
    groups: dict[tuple[str, str], list[EventRow]] = defaultdict(list)
    for event in events:
        if event.event_at < older_than:
            groups[(event.subject, event.event_at.strftime("%Y-%m"))].append(event)
    out = []
    for (subject, month), members in sorted(groups.items()):
        if len(members) < min_events:
            continue
        members.sort(key=lambda e: (e.event_at, str(e.id)))
        when = members[0].event_at.strftime("%B %Y")
        clauses = []
        for event in members[:max_sentences]:
            text = event.content
            if text.startswith(subject):
                text = text[len(subject) :].strip()
            clauses.append(text.rstrip("."))
        content = f"In {when}, {subject}: " + "; ".join(clauses) + "."
        out.append(
            Summary(f"{subject}/{month}", subject, content, tuple(e.id for e in members), members[0].event_at)
        )
    return out


@dataclass(frozen=True, slots=True)
class ConsolidationConfig:
    """What a run does; every threshold is global (chosen by measurement, BENCHMARKS.md)."""

    merge_cosine: float = 0.95
    # No two different things merged among 56 labelled name pairs (the closest at 0.909), and no
    # pair that is one thing above 0.80: cosine on names separates nothing below (BENCHMARKS.md).
    entity_merge_cosine: float = 0.95
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    summaries: bool = False
    summary_min_age_days: float = 30.0
    batch_size: int = 200  # changes per transaction


__all__ = [
    "ConsolidationConfig",
    "EntityRow",
    "EventRow",
    "ForgetPlan",
    "Merge",
    "MergeRow",
    "RetentionConfig",
    "RetentionRow",
    "Slot",
    "SlotFact",
    "Summary",
    "Supersede",
    "close_to_earlier",
    "entity_key",
    "fact_slot",
    "full_name_of_a_person",
    "in_exchange",
    "is_small_talk",
    "judged_importance",
    "low_importance",
    "merge_row",
    "merged_fields",
    "plan_entity_merges",
    "plan_forgetting",
    "plan_merges",
    "plan_summaries",
    "plan_supersessions",
    "retention",
    "state_sentence",
    "supersession_keys",
    "with_state_facts",
]
