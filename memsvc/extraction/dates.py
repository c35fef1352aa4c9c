"""Relative-date resolution: "last Saturday" said on 8 May 2023 is 6 May 2023.

Finding date phrases is a cheap trigger regex, so sentences without one cost almost nothing
(dateparser's `search_dates` takes about a millisecond a sentence and misreads "may" the verb).
Resolving a found phrase is dateparser's job; it is cached per (phrase, base, tense).
dateparser gets a few chat phrases wrong or not at all ("last weekend", "two weekends ago",
"the week before", "this past Friday", "this Monday" in the past tense, "last May"): those are
done here with dateutil's weekday arithmetic.

Every resolved date is the *start* of the period it names, with its granularity: "next month"
said on 8 May 2023 is 1 June 2023 at month granularity; "last week" is the Monday of that week.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal

from dateparser.date import DateDataParser
from dateutil.easter import easter
from dateutil.relativedelta import FR, MO, SA, SU, TH, TU, WE, relativedelta

Granularity = Literal["day", "week", "month", "year"]
Prefer = Literal["past", "future"]

__all__ = [
    "Granularity",
    "ResolvedDate",
    "has_trigger",
    "main_date",
    "resolve_dates",
    "rewrite_relative",
    "tense_of",
    "valid_from",
]


@dataclass(frozen=True, slots=True)
class ResolvedDate:
    """A date phrase found in a text and what it means against the base time."""

    span: str  # the phrase as written ("last Saturday", "on Friday")
    start: int  # character offsets of `span` in the text
    end: int
    value: datetime  # start of the period named, in the base's timezone
    granularity: Granularity
    label: str  # "6 May 2023", "the week of 1 May 2023", "the weekend of 6 May 2023", "June 2023", "2022"
    relative: bool  # only meaningful against the base ("yesterday"); such spans get rewritten in facts
    approximate: bool = False  # "a few years ago"
    says: str | None = None  # what to put in place of the span, when not the label with a preposition

    @property
    def phrase(self) -> str:
        """The label with a preposition, to put in place of a relative span: "on 6 May 2023"."""
        if self.says is not None:
            return self.says
        if self.approximate:
            return f"around {self.label}"
        if self.granularity == "day" or self.label.startswith("the weekend"):
            return f"on {self.label}"
        return f"in {self.label}"


# -- finding candidate spans ------------------------------------------------------------------------

_NUM = (
    r"(?:\d{1,2}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty"
    r"|a\s+few|few|a\s+couple(?:\s+of)?|couple(?:\s+of)?|several)"
)
MONTH_NAMES = "january february march april may june july august september october november december"
WEEKDAY_NAMES = "monday tuesday wednesday thursday friday saturday sunday"
_WD = rf"(?:{'|'.join(WEEKDAY_NAMES.split())})"
_WD_ABBR = r"(?:mon|tues|tue|wed|thurs|thur|thu|fri|sat|sun)\b\.?"
_MONTH = rf"(?:{'|'.join(MONTH_NAMES.split())})"
_MON_ABBR = r"(?:jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\b\.?"
_ORD = r"\d{1,2}(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d{2}"
_PREP = r"(?:in|since|during|until|till|by|from|of|back\s+in|around|circa|early|late|mid-?)"
# "postponed to September": a month a thing was moved to ("to" alone is too often no date's).
_MOVED_TO = (
    r"(?:(?<=postponed\s)|(?<=rescheduled\s)|(?<=moved\s)|(?<=pushed\s)|(?<=pushed\sback\s)"
    r"|(?<=delayed\s)|(?<=slipped\s))to"
)
# Holidays of a fixed or computable day. "New Year" needs its "'s" ("a new year of school" is none).
_HOLIDAY = (
    r"(?:christmas(?:\s+(?:eve|day))?|xmas|new\s+year'?s'?(?:\s+(?:eve|day))?|nye|thanksgiving(?:\s+day)?"
    r"|easter(?:\s+sunday)?|halloween|valentine'?s'?\s+day|independence\s+day|(?:the\s+)?fourth\s+of\s+july)"
)
# A holiday is a date only with a word that points at one of them ("last Christmas", "at Easter",
# "before Thanksgiving"); "Christmas movies" or "Thanksgiving's always special" name none.
# "Christmas break", "Easter eggs": a thing named after the holiday, not its day.
_HOLIDAY_NOUN = (
    r"(?:resolutions?|trees?|movies?|films?|songs?|music|break|holidays?|vacation|season|week|weekend|time"
    r"|spirit|gifts?|presents?|cards?|decorations?|lights|dinner|lunch|part(?:y|ies)|markets?|shopping"
    r"|sales?|eggs?|bunny|costumes?)"
)
_HOLIDAY_MODE = (
    r"(?:this\s+past|this\s+coming|last|this|next|coming"
    r"|on|at|over|for|during|since|until|till|before|after|by)"
)

# One alternation, longest forms first; the group that matched says how to resolve the span.
_TRIGGER = re.compile(
    "|".join(
        [
            rf"(?P<ago>\b{_NUM}\s+(?:day|week|weekend|month|year)s?\s+ago\b)",
            # "born on Christmas Day" names a day of the year, not one Christmas; "Christmas Island",
            # "A Christmas Carol": a capitalised word after the holiday makes it a name.
            rf"(?P<holiday>(?<!\bborn\s)\b{_HOLIDAY_MODE}\s+{_HOLIDAY}(?:,?\s+{_YEAR})?\b"
            rf"(?!'s|\s+{_HOLIDAY_NOUN}\b|\s+(?-i:[A-Z][a-z])))",
            # Anchored ones ("the week before my birthday") are left alone: their anchor is unknown.
            r"(?P<before>\bthe\s+(?:day|week|weekend|month|year)\s+before\s+last\b"
            r"|\bthe\s+(?:day|week|weekend|month|year)\s+before\b(?=\s*(?:[.,;:!?)\-–—]|$|and\b|but\b|so\b)))",
            # "by the end of the month": its last day, said as "the end of March 2024".
            r"(?P<endof>\b(?:the\s+)?end\s+of\s+(?:the|this|next)\s+(?:week|month|year)\b)",
            r"(?P<deictic>\bthe\s+day\s+before\s+yesterday\b|\bthe\s+day\s+after\s+tomorrow\b|\byesterday\b"
            r"|\btoday\b|\btonight\b|\btomorrow\b|\blast\s+night\b|\bthis\s+(?:morning|afternoon|evening)\b)",
            r"(?P<rel>(?<!\bthe\s)\b(?:this\s+past|this\s+coming|the\s+past|the\s+coming|the\s+following|past|last"
            rf"|next|this|coming)\s+(?:weekend|week|month|year|{_WD}|{_WD_ABBR}|{_MONTH})\b)",
            rf"(?P<inn>\bin\s+{_NUM}\s+(?:day|week|month|year)s?\b)",
            r"(?P<wkend>\b(?:on|over|during|at)\s+the\s+weekend\b)",
            rf"(?P<dmy>\b(?:on\s+)?(?:the\s+)?{_ORD}(?:\s+of)?\s+(?:{_MONTH}|{_MON_ABBR})(?:,?\s+{_YEAR})?)",
            rf"(?P<mdy>\b(?:on\s+)?(?:{_MONTH}|{_MON_ABBR})\s+{_ORD}\b(?:,?\s+{_YEAR}\b)?)",
            # "from October 10" is a day, not "from October" and a stray 10.
            rf"(?P<my>\b(?:{_PREP}\s+)?{_MONTH},?\s+{_YEAR}\b|\b(?:{_PREP}|{_MOVED_TO})\s+{_MONTH}\b(?!\s+{_ORD}\b|['’]s))",
            # "on the 20th" is a day of the month meant; "the 20th century", "my 20th birthday" are none.
            r"(?P<nth>\bon\s+the\s+(?:[1-9]|[12]\d|3[01])(?:st|nd|rd|th)\b(?!\s+(?:of|century|anniversary|birthday)\b))",
            r"(?P<season>\b(?:this\s+past|this\s+coming|last|this|next|coming)\s+(?:spring|summer|fall|autumn|winter)\b)",
            rf"(?P<year>\b{_PREP}\s+{_YEAR}\b(?!s))",
            rf"(?P<wd>\b(?:on\s+)?{_WD}\b(?!s))",
        ]
    ),
    re.IGNORECASE,
)

# Words without which no span above can match: a set lookup on a sentence's words is ten times
# cheaper than running the alternation, and three sentences in four have none of them.
_TRIGGER_TEXT = (
    "yesterday today tonight tomorrow ago day days week weeks weekend weekends month months year years night "
    "morning afternoon evening monday tuesday wednesday thursday friday saturday sunday mon tue tues wed "
    "thu thur thurs fri sat sun january february march april may june july august september october "
    "november december jan feb mar apr jun jul aug sep sept oct nov dec christmas xmas nye thanksgiving "
    "easter halloween valentine valentines independence fourth st nd rd th spring summer fall autumn winter"
)
_TRIGGER_WORDS = frozenset(_TRIGGER_TEXT.split(" "))
_WORD = re.compile(r"[a-z]+|(?:19|20)\d\d")
# "may" the verb and "march" the verb are months only when capitalised.
_AMBIGUOUS_MONTH = re.compile(r"\b(?:may|march)\b")
_IS_ON = (
    r"(?:(?:'s|'re|\bis|\bare)\s+(?:now\s+)?|\b(?:starts?|begins?|ends?|opens?|closes?|expires?)\b"
    r"(?:\s+(?!on\b)[\w'-]+){0,3}?\s+)(?:due\s+)?"
)
_FUTURE = re.compile(
    r"\b(?:will|going to|gonna|plan|plans|planning|next|tomorrow|tonight|upcoming|coming up|can't wait"
    # A date one signed up for, a change starts on, or a thing one needs to do by is ahead.
    r"|signed up|registered|booked|enrolled|starting|effective|need to|needs to|have to|has to"
    r"|cannot wait|looking forward|hope to|hoping to|want to|wanna|intend|about to|soon)\b|'ll\b"
    r"|(?:'m|'re|\bam|\bare|\bis)\s+going\b"
    # A deadline or appointment one has is ahead: "I have a deadline of April 15", "I've got a
    # dentist appointment on the 3rd", "i have a concert on april 10" (were the days before they
    # were said).
    r"|\bdeadline\s+(?:is|of|on|by|for)\b"
    r"|\b(?:have|has|'ve|got)\s+(?:a|an|my|the)\s+(?:[\w-]+\s+){0,2}"
    r"(?:deadline|appointment|exam|interview|meeting|flight|surgery|concert|conference|game|match"
    r"|recital|wedding|party|trip|dinner|date|class|lesson|presentation|race|marathon|show|gig"
    r"|check-?up|procedure|hearing|vacation|reservation|call|visit|ceremony|tournament|event)\b"
    # A day a thing "is" on, in the present tense, is one to come: "my exam is on Friday", "the
    # wedding's this Saturday" (were both resolved to the days before they were said).
    # So is one it "is now on", or starts or ends on ("My flight is now on May 2nd", "I start my new
    # job on March 1st", "my lease ends on April 30").
    rf"|{_IS_ON}(?:(?:on|this|for|scheduled\s+for|set\s+for)\s+)?"
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)day\b"
    rf"|{_IS_ON}(?:on|for|scheduled\s+for|set\s+for)\s+the\s+\d{{1,2}}(?:st|nd|rd|th)\b"
    # ... and so is a date it "is on" ("my interview is on July 2nd", "rent is due on 1 June").
    rf"|{_IS_ON}(?:on|for|scheduled\s+for|set\s+for)\s+(?:the\s+)?"
    r"(?:(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?\b"
    r"|\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b)"
    # A thing moved to a day is moved to one to come: "the dentist moved my appointment to Thursday".
    r"|\b(?:moved|pushed(?:\s+back)?|postponed|rescheduled|delayed|bumped|slipped)\b[^.!?]{0,40}?\s(?:to|until|till)\s+"
    r"(?:next\s+|this\s+)?(?:(?:mon|tues|wednes|thurs|fri|satur|sun)day|the\s+\d{1,2}(?:st|nd|rd|th)"
    r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*)\b"
    # A month a thing "is in", or starts, ends or is due in, is one to come: "my exam is in April",
    # "my daughter starts kindergarten in September" (were the months before they were said).
    r"|(?:'s|\bis|\bare|\bstarts?|\bbegins?|\bends?|\bopens?|\bcloses?|\bexpires?)\b"
    r"(?:\s+[\w'-]+){0,3}?\s+in\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b"
    # An action in the present progressive with a date is one planned: "I'm hiking this weekend",
    # "we're hosting at Christmas" (a state is not: "I'm still enjoying the book I got on Friday").
    r"|(?:'m|'re|\bam|\bare)\s+(?!(?:feel|think|lov|enjoy|miss|remember|wonder|read|still|really|just)\w*\b)"
    r"[a-z]+ing\b",
    re.IGNORECASE,
)

_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_RD_WEEKDAYS = (MO, TU, WE, TH, FR, SA, SU)
_MONTHS = {m: i + 1 for i, m in enumerate(MONTH_NAMES.split())}
_VAGUE_NUM = re.compile(r"\b(?:a\s+few|few|several)\b", re.IGNORECASE)
_COUPLE = re.compile(r"\b(?:a\s+)?couple(?:\s+of)?\b", re.IGNORECASE)
_LEADING_PREP = re.compile(rf"^(?:{_PREP}|on|the|to)\s+", re.IGNORECASE)
_NUM_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
}  # fmt: skip


def has_trigger(text: str) -> bool:
    """Whether `text` has a word that a date phrase needs; cheap enough to run on every sentence."""
    return any(word in _TRIGGER_WORDS or word[0].isdigit() for word in _WORD.findall(text.lower()))


def tense_of(text: str) -> Prefer:
    """Whether a sentence talks about the future ("I'm going camping on Friday") or, by default, the past."""
    return "future" if _FUTURE.search(text) else "past"


def resolve_dates(text: str, base: datetime, *, prefer: Prefer | None = None) -> list[ResolvedDate]:
    """Find the date phrases in `text` and resolve each against `base` (the time the text was said).

    `prefer` says how to read phrases that could go either way ("on Friday", "in June"); by default it
    comes from the text's tense. Phrases that cannot be pinned down ("a while ago") are left out.
    """
    found: list[ResolvedDate] = []
    if not has_trigger(text):
        return found
    tense: Prefer | None = prefer
    for m in _TRIGGER.finditer(text):
        kind = m.lastgroup
        span = m.group(0)
        if kind is None or _rejects_month(span) or (kind == "wd" and _habitual_day(text, m.start(), m.end())):
            continue
        if kind in ("wd", "my", "holiday") and _EVERY.search(text, 0, m.start()):
            continue  # "every Monday", "each June": every one, not one
        if tense is None:
            tense = tense_of(text)
        try:
            resolved = _resolve(kind, span, base, tense)
        except (ValueError, OverflowError):  # "in two years" said in 9998: past the calendar
            continue
        if resolved is None:
            continue
        value, granularity, label, relative, approximate = resolved
        says = _holiday_phrase(span, label) if kind == "holiday" else None
        if kind == "my" and relative:  # a month without its year, said as said: "since March 2023"
            says = f"{span} {value.year}"
        if kind == "endof":
            says = f"the end of {_period_label(value, span.split()[-1])}"
        found.append(
            ResolvedDate(span, m.start(), m.end(), value, granularity, label, relative, approximate, says)
        )
    # Dates kept within the years a request may carry (2-9998), as the times it sends are.
    return [d for d in _ago_today(text, base, found) if 1 < d.value.year < 9999]


_AGO_TODAY = re.compile(r"(\w+)\s+(day|week|month|year)s?\s+ago\s+today$", re.IGNORECASE)


def _ago_today(text: str, base: datetime, found: list[ResolvedDate]) -> list[ResolvedDate]:
    """'A year ago today' is one day, not a year and today ("In 2023 on 1 March 2024 ...")."""
    for i, (ago, today) in enumerate(itertools.pairwise(found)):
        if today.span.lower() != "today" or text[ago.end : today.start].strip():
            continue
        whole = text[ago.start : today.end]
        match = _AGO_TODAY.search(whole)
        n = _count(match.group(1).lower()) if match else None
        if match is None or n is None:
            continue
        try:
            unit = match.group(2).lower()
            d = base.date() - relativedelta(
                years=n if unit == "year" else 0,
                months=n if unit == "month" else 0,
                weeks=n if unit == "week" else 0,
                days=n if unit == "day" else 0,
            )
        except (ValueError, OverflowError):
            continue
        merged = ResolvedDate(whole, ago.start, today.end, _at(base, d), "day", _day_label(d), True)
        return [*found[:i], merged, *_ago_today(text, base, found[i + 2 :])]
    return found


_EVERY = re.compile(r"\b(?:every|each|most)(?:\s+(?:other|single|second))?\s+(?:on\s+)?$", re.IGNORECASE)
# "Monday to Friday", "Mon-Fri": days of every week, not the dates of one.
_ANY_DAY = rf"(?:{_WD}|{_WD_ABBR})"
_TO = r"\s*(?:to|through|thru|till|until|-|–|—)\s*"
_RANGE_AFTER = re.compile(_TO + _ANY_DAY, re.IGNORECASE)  # right after the weekday: " to Friday"
_RANGE_BEFORE = re.compile(rf"{_ANY_DAY}{_TO}(?:on\s+)?$", re.IGNORECASE)  # up to it: "Monday to "


def _habitual_day(text: str, start: int, end: int) -> bool:
    """Whether the weekday at text[start:end] names no one day: an end of a range ("Monday to
    Friday"), a part of every one ("Tuesday mornings"), or one of three or more ("I can run
    Tuesday, Thursday and Saturday mornings" became three dates in the week before)."""
    return (
        _RANGE_AFTER.match(text, end) is not None
        or _RANGE_BEFORE.search(text, 0, start) is not None
        or _PARTS_OF_DAYS.match(text, end) is not None
        or len(set(_WEEKDAY_NAMES.findall(text.lower()))) >= 3
    )


_PARTS_OF_DAYS = re.compile(r"\s+(?:mornings|afternoons|evenings|nights)\b", re.IGNORECASE)
_WEEKDAY_NAMES = re.compile(r"\b(mon|tues|wednes|thurs|fri|satur|sun)days?\b")


def main_date(dates: list[ResolvedDate]) -> ResolvedDate | None:
    """The date a sentence is about: its first relative phrase, else its first date, else None.

    A relative phrase ("yesterday") is what the speaker dates the statement by; an absolute one in
    the same sentence is more often background ("I've painted since 2016, and yesterday I ...").
    """
    for d in dates:
        if d.relative:
            return d
    return dates[0] if dates else None


def valid_from(text: str, base: datetime) -> datetime | None:
    """When a sentence says its content happened: its main date phrase resolved against `base`, or None."""
    d = main_date(resolve_dates(text, base))
    return d.value if d else None


_PREPOSITION_BEFORE = re.compile(
    r"\b(?:to|until|till|by|from|since|before|after|for|on|in|of|between|around|through)\s+$", re.IGNORECASE
)
_YEAR_WRITTEN = re.compile(r"\b\d{4}\b|'\d\d\b")


def rewrite_relative(text: str, dates: list[ResolvedDate]) -> str:
    """Put absolute dates in place of relative phrases, so the text stays true when read later.

    "I went there yesterday" said on 8 May 2023 becomes "I went there on 7 May 2023".
    """
    out: list[str] = []
    pos = 0
    for d in dates:
        if not d.relative or d.start < pos:
            continue
        out.append(text[pos : d.start])
        phrase = d.phrase
        if _PREPOSITION_BEFORE.search(text, 0, d.start) and phrase.startswith(("on ", "in ")):
            phrase = phrase[3:]  # "moved it to Thursday": "to 21 March 2024", not "to on 21 March";
            # "a deadline of April 15": not "of on 15 April"
        out.append(phrase)
        pos = d.end
    out.append(text[pos:])
    return "".join(out)


# -- resolving one span -----------------------------------------------------------------------------

_Resolved = tuple[datetime, Granularity, str, bool, bool]


def _rejects_month(span: str) -> bool:
    # "I may go" is not May; a month in lower case is one after a preposition ("in march", "since
    # may") or before a day ("may 12"), where no verb stands.
    return any(
        not span[m.start()].isupper()
        and not _LEADING_PREP.match(span)
        and not re.match(r"\s+\d", span[m.end() :])
        for m in _AMBIGUOUS_MONTH.finditer(span.lower())
    )


def _resolve(kind: str, span: str, base: datetime, tense: Prefer) -> _Resolved | None:
    s = " ".join(span.lower().split())
    if kind == "holiday":
        return _holiday(s, base, tense)
    if kind == "nth":
        return _day_of_month(base, int(re.sub(r"\D", "", s)), tense)
    if kind == "endof":
        return _end_of(base, s.split()[-2] == "next", s.split()[-1])
    if kind == "season":
        words = s.split()
        return _season(base, words[-1], _MODES.get(" ".join(words[:-1]), "this"))
    if kind == "rel":
        return _resolve_rel(s, base, tense)
    if kind == "wkend":
        return _weekend(base, "this", tense, 1)
    if kind == "wd":
        return _weekday(base, s.removeprefix("on "), "bare", tense)
    if kind == "before":
        # Without an anchor, "the week before" is the one before the time of speaking.
        unit = s.split()[1]
        n = 2 if s.endswith("before last") else 1
        if unit == "weekend":
            return _weekend(base, "last", tense, n)
        if n == 2:
            return _via_dateparser(f"2 {unit}s ago", base, tense, relative=True, shift=True)
        if unit == "day":
            return _via_dateparser("yesterday", base, tense, relative=True, shift=True)
        return _via_dateparser(f"last {unit}", base, tense, relative=True, shift=True)
    if kind == "ago":
        approximate = bool(_VAGUE_NUM.search(s) or _COUPLE.search(s))
        phrase = _COUPLE.sub("2", _VAGUE_NUM.sub("3", s))
        if "weekend" in phrase:
            weekends = _count(phrase.split()[0])
            if weekends is None:
                return None
            return _weekend(base, "last", tense, weekends, approximate=approximate)
        return _via_dateparser(phrase, base, tense, relative=True, approximate=approximate, shift=True)
    if kind == "inn":
        approximate = bool(_VAGUE_NUM.search(s) or _COUPLE.search(s))
        phrase = _COUPLE.sub("2", _VAGUE_NUM.sub("3", s))
        return _via_dateparser(phrase, base, "future", relative=True, approximate=approximate, shift=True)
    if kind == "deictic":
        phrase = {"last night": "yesterday"}.get(s, s)
        if phrase.startswith("this "):
            phrase = "today"
        return _via_dateparser(phrase, base, tense, relative=True, shift=True, granularity="day")
    # Absolute dates: strip prepositions dateparser does not read ("since 2016", "back in May").
    phrase = s
    while True:
        stripped = _LEADING_PREP.sub("", phrase)
        if stripped == phrase:
            break
        phrase = stripped
    resolved = _via_dateparser(
        phrase, base, tense, relative=False, approximate=s.startswith(("early", "late", "mid"))
    )
    if resolved is not None and resolved[1] in ("day", "month") and not _YEAR_WRITTEN.search(s):
        # "on July 2nd" and "in June" mean a year, which the fact then says: "on 2 July 2024",
        # "in June 2024" (read months later, a bare month could be any year's).
        resolved = (*resolved[:3], True, resolved[4])
    return resolved


# The direction a modifier gives a day, weekend, month or holiday: "this past Friday" = "last
# Friday"; "this coming Friday", "the following week" = "next ...".
_MODES = {
    "last": "last", "past": "last", "this past": "last", "the past": "last",
    "next": "next", "coming": "next", "this coming": "next", "the coming": "next",
    "the following": "next", "this": "this",
}  # fmt: skip


def _resolve_rel(s: str, base: datetime, tense: Prefer) -> _Resolved | None:
    words = s.split()
    unit = words[-1].rstrip(".")
    modifier = " ".join(words[:-1])
    mode = _MODES.get(modifier, "this")
    if unit == "weekend":
        return _weekend(base, mode, tense, 1)
    if unit != "month" and unit[:3] in _WEEKDAYS:
        return _weekday(base, unit, mode, tense)
    if unit in _MONTHS:
        return _named_month(base, _MONTHS[unit], mode)
    return _via_dateparser(f"{mode} {unit}", base, tense, relative=True, shift=True)


def _end_of(base: datetime, next_one: bool, unit: str) -> _Resolved:
    """The last day of this (or the next) week, month or year."""
    day = base.date()
    if unit == "week":
        last = day + timedelta(days=6 - day.weekday() + (7 if next_one else 0))
    elif unit == "month":
        first_after = day.replace(day=1) + relativedelta(months=2 if next_one else 1)
        last = first_after - timedelta(days=1)
    else:
        last = date(day.year + (1 if next_one else 0), 12, 31)
    return _at(base, last), "day", _day_label(last), True, False


def _period_label(value: datetime, unit: str) -> str:
    """The week, month or year a day ends: "the week of 4 March 2024", "March 2024", "2024"."""
    if unit == "week":
        return f"the week of {_day_label(value.date() - timedelta(days=6))}"
    return f"{value:%B %Y}" if unit == "month" else str(value.year)


def _weekday(base: datetime, name: str, mode: str, tense: Prefer) -> _Resolved:
    wd = _RD_WEEKDAYS[_WEEKDAYS[name[:3]]]
    day = base.date()
    if mode == "last":
        d = day + relativedelta(days=-1, weekday=wd(-1))
    elif mode == "next":
        d = day + relativedelta(days=+1, weekday=wd(+1))
    elif mode == "this":
        # "this Monday" counts today; its direction is the sentence's tense, which dateparser ignores.
        d = day + relativedelta(weekday=wd(-1) if tense == "past" else wd(+1))
    else:
        d = day + (
            relativedelta(days=-1, weekday=wd(-1))
            if tense == "past"
            else relativedelta(days=+1, weekday=wd(+1))
        )
    return _at(base, d), "day", _day_label(d), True, False


def _weekend(base: datetime, mode: str, tense: Prefer, n: int, *, approximate: bool = False) -> _Resolved:
    """The Saturday of the weekend meant. "Last weekend" said on a weekend is the one before."""
    day = base.date()
    in_weekend = day.weekday() >= 5
    current = day - timedelta(days=day.weekday() - 5) if in_weekend else None
    previous = current - timedelta(days=7) if current else day + relativedelta(weekday=SA(-1))
    upcoming = current + timedelta(days=7) if current else day + relativedelta(weekday=SA(+1))
    if mode == "last":
        sat = previous - timedelta(days=7 * (n - 1))
    elif mode == "next":
        sat = upcoming
    else:
        sat = current or (previous if tense == "past" else upcoming)
    return _at(base, sat), "week", f"the weekend of {_day_label(sat)}", True, approximate


def _day_of_month(base: datetime, day_of_month: int, tense: Prefer) -> _Resolved | None:
    """ "On the 20th": the nearest 20th on the side of the sentence's tense (this month's if it is
    still to come, else next month's; said of the past, the last one)."""
    today = base.date()
    month = date(today.year, today.month, 1)
    step = relativedelta(months=1 if tense == "future" else -1)
    for _ in range(3):  # a 31st may skip a month
        with contextlib.suppress(ValueError):
            d = month.replace(day=day_of_month)
            if (d >= today) if tense == "future" else (d <= today):
                return _at(base, d), "day", _day_label(d), True, False
        month += step
    return None


# A season's first month (northern hemisphere); winter starts in the December before its year's end.
_SEASONS = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}


def _season(base: datetime, name: str, mode: str) -> _Resolved:
    """ "Last summer": the last one over; "next summer": the next one to start; "this summer": the
    one under way or, if none, the one of this year to come (or, after it, just gone)."""
    today = base.date()
    starts = [date(y, _SEASONS[name], 1) for y in range(today.year - 2, today.year + 2)]
    ends = [s + relativedelta(months=3) for s in starts]
    if mode == "last":
        start = max(s for s, e in zip(starts, ends, strict=True) if e <= today)
    elif mode == "next":
        start = min(s for s in starts if s > today)
    else:
        current = [s for s, e in zip(starts, ends, strict=True) if s <= today < e]
        start = current[0] if current else min(starts, key=lambda s: abs((s - today).days))
    season = "fall" if name == "autumn" else name
    year = f"{start.year}/{start.year + 1 - 2000:02d}" if season == "winter" else str(start.year)
    return _at(base, start), "month", f"{season} {year}", True, False


_HOLIDAY_NAMES = (  # (words that start the name, how it is written, its day in a year)
    ("christmas eve", "Christmas Eve", lambda y: date(y, 12, 24)),
    ("christmas", "Christmas", lambda y: date(y, 12, 25)),
    ("xmas", "Christmas", lambda y: date(y, 12, 25)),
    ("new year", "New Year's Eve", lambda y: date(y, 12, 31)),  # only with "eve": see _holiday
    ("nye", "New Year's Eve", lambda y: date(y, 12, 31)),
    ("thanksgiving", "Thanksgiving", lambda y: date(y, 11, 1) + relativedelta(weekday=TH(+4))),
    ("easter", "Easter", easter),
    ("halloween", "Halloween", lambda y: date(y, 10, 31)),
    ("valentine", "Valentine's Day", lambda y: date(y, 2, 14)),
    ("independence", "Independence Day", lambda y: date(y, 7, 4)),
    ("fourth", "the Fourth of July", lambda y: date(y, 7, 4)),
)


def _holiday_words(s: str) -> tuple[str, str]:
    """('last', 'christmas') of 'last christmas'; ('on', 'fourth of july') of 'on the fourth of july'."""
    words = s.split()
    mode_words = 2 if words[:2] in (["this", "past"], ["this", "coming"]) else 1
    return " ".join(words[:mode_words]), " ".join(words[mode_words:]).removeprefix("the ")


def _holiday(s: str, base: datetime, tense: Prefer) -> _Resolved | None:
    """'last Christmas' said on 8 May 2023 is Christmas 2022 (25 December); 'at Easter' takes the
    sentence's tense, 'this Christmas' is the one of the base's year."""
    mode, name = _holiday_words(s)
    holiday = next((h for h in _HOLIDAY_NAMES if name.startswith(h[0])), None)
    if holiday is None:
        return None
    start, written, day_in = holiday
    if start == "new year" and not name.endswith("eve"):
        written, day_in = "New Year's Day", lambda y: date(y, 1, 1)
    today = base.date()
    written_year = re.search(r"\b((?:19|20)\d{2})$", name)
    if written_year:  # "on Christmas 2019": the year said is the year meant
        d = day_in(int(written_year.group(1)))
    else:
        wanted = _MODES.get(mode, tense)  # "at Christmas": the sentence's tense says which
        d = day_in(today.year)
        if wanted in ("last", "past") and (d > today or (wanted == "last" and d == today)):
            d = day_in(today.year - 1)
        elif wanted in ("next", "future") and (d < today or (wanted == "next" and d == today)):
            d = day_in(today.year + 1)
    return _at(base, d), "day", f"{written} {d.year}", True, False


def _holiday_phrase(span: str, label: str) -> str:
    """The holiday stays in the text, with its year ("last Christmas" becomes "Christmas 2022",
    "before Easter" "before Easter 2023"): a question names the holiday, not its date."""
    mode, _ = _holiday_words(" ".join(span.lower().split()))
    return label if mode in _MODES else f"{span.split()[0]} {label}"


def _named_month(base: datetime, month: int, mode: str) -> _Resolved:
    year = base.year
    if mode == "last" and month >= base.month:
        year -= 1
    elif mode == "next" and month <= base.month:
        year += 1
    d = date(year, month, 1)
    return _at(base, d), "month", f"{d:%B %Y}", True, False


def _count(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return _NUM_WORDS.get(word)


def _via_dateparser(
    phrase: str,
    base: datetime,
    tense: Prefer,
    *,
    relative: bool,
    approximate: bool = False,
    shift: bool = False,
    granularity: Granularity | None = None,
) -> _Resolved | None:
    """Resolve with dateparser, then round down to the start of the period named.

    `shift` marks phrases that mean a fixed calendar offset from the base ("2 weeks ago", "next
    month"): dateparser reads them once against a reference day and the offset is cached, since
    every session brings a new base and parsing costs about a millisecond.
    """
    if shift:
        offset = _offset(phrase, tense)
        if offset is None:
            return None
        delta, parsed_granularity = offset
        d = base.date() + delta
    else:
        parsed = _dateparse(phrase, _naive(base), tense)
        if parsed is None:
            return None
        d, parsed_granularity = parsed[0].date(), parsed[1]
    granularity = granularity or parsed_granularity
    if tense == "future" and not relative and granularity in ("day", "month") and d.year == base.year + 1:
        # "in January" said on 20 January is later this month, "on March 1st" said on 1 March today:
        # dateparser's future starts tomorrow, or next month.
        now = base.date()
        this_one = (d.month, d.day) == (now.month, now.day) if granularity == "day" else d.month == now.month
        if this_one and not _YEAR_WRITTEN.search(phrase):
            d = d.replace(year=base.year)
    if granularity == "week":
        d -= timedelta(days=d.weekday())
        label = f"the week of {_day_label(d)}"
    elif granularity == "month":
        d = d.replace(day=1)
        label = f"{d:%B %Y}"
    elif granularity == "year":
        d = d.replace(month=1, day=1)
        label = str(d.year)
    else:
        label = _day_label(d)
    return _at(base, d), granularity, label, relative, approximate


_REFERENCE = datetime(2001, 6, 13, 12, 0)  # a mid-month, mid-week day


@lru_cache(maxsize=1024)
def _offset(phrase: str, tense: Prefer) -> tuple[relativedelta, Granularity] | None:
    parsed = _dateparse(phrase, _REFERENCE, tense)
    if parsed is None:
        return None
    value, granularity = parsed
    ref, d = _REFERENCE.date(), value.date()
    if granularity == "month":
        return relativedelta(months=(d.year - ref.year) * 12 + d.month - ref.month), granularity
    if granularity == "year":
        return relativedelta(years=d.year - ref.year), granularity
    return relativedelta(days=(d - ref).days), granularity


@lru_cache(maxsize=64)
def _parser(base: datetime, tense: Prefer) -> DateDataParser:
    # Building a parser is cheap, but its settings are fixed at construction, hence one per (base, tense).
    return DateDataParser(
        languages=["en"],
        settings={"RELATIVE_BASE": base, "PREFER_DATES_FROM": tense, "RETURN_TIME_AS_PERIOD": False},
    )


@lru_cache(maxsize=8192)
def _dateparse(phrase: str, base: datetime, tense: Prefer) -> tuple[datetime, Granularity] | None:
    data = _parser(base, tense).get_date_data(phrase)
    value = data.date_obj
    if not isinstance(value, datetime):
        return None
    period = data.period
    granularity: Granularity = period if period in ("day", "week", "month", "year") else "day"
    return value, granularity


def _naive(base: datetime) -> datetime:
    # dateparser works in naive local time; the base's own wall clock is what "yesterday" refers to.
    return base.replace(tzinfo=None, microsecond=0)


def _at(base: datetime, d: date) -> datetime:
    """The speaker's calendar day `d` as stored: its midnight in UTC. At midnight in the speaker's
    time zone, a day said east of UTC ("yesterday", 08:00 in Tokyo on 10 May) was stored on the day
    before in UTC, and every date shown with the fact (`[2024-05-08] … on 9 May 2024`) was a day off."""
    return datetime.combine(d, time(0), tzinfo=UTC if base.tzinfo is not None else None)


def _day_label(d: date) -> str:
    return f"{d.day} {d:%B %Y}"
