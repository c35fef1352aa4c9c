"""Corrections: "Sorry, I meant Tuesday." changes what its speaker said a moment before.

A correction opens with an apology or a "correction"/"actually" and names the new value, with "I
meant" / "make that" or with the value it replaces ("Porto, not Lisbon"). The message it corrects
is the speaker's latest in the session, among the last few messages, that holds the value named
as replaced, or else exactly one phrase of the new value's kind (a date, a time, a weekday, a
number, a name): with two candidates it is not known which was meant, and nothing is changed.
The corrected message reads as if it had been said so; the facts read from it cite both messages
and replace the ones read from the original (`Correction.replaces`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from memsvc.extraction.base import Turn

# A correction follows what it corrects closely: it looks back this many messages of its session.
LOOKBACK_MESSAGES = 4

_OPENER = (
    r"(?:(?:sorry|oops|whoops|my bad|correction|actually|wait(?:,?\s+no)?|no\s+wait|oh\s+no|typo|i'm sorry)"
    r"\b[\s,:;!.…-]*)+"
)
_SAYS = (
    r"(?:i meant(?: to say)?|i mean|make that|that should be|it should be|should be|it's|it is|that's"
    r"|she's|he's|they're|it was)\s+"
)
_CORRECTION = re.compile(
    rf"^\s*{_OPENER}(?P<says>{_SAYS})?(?:on\s+|at\s+|in\s+|the\s+)?(?P<new>[^,;.!?]+?)"
    r"(?:\s*[,.]?\s*(?:and\s+)?not\s+(?:on\s+|at\s+|in\s+|the\s+)?(?P<old>[^,;.!?]+?))?\s*[.!…]*\s*$",
    re.IGNORECASE,
)
# What may end a correction and is no part of it: "actually it's Friday, sorry", "Square, not
# Stripe lol", "I meant Lola, Luna is my sister's cat" (after "I meant", a clause saying why).
_TAIL = re.compile(r"(?:[\s,.]+(?:sorry|my bad|lol|lmao|haha+|oops|typo)\b)+[\s.!…]*$", re.IGNORECASE)
_REASON = re.compile(r"^(?P<head>\s*\S.*?\bi\s+meant\s+[^,;.!?]+?)\s*,\s+(?!not\b)[^,;!?]+[.!…]*\s*$", re.I)

_MONTH = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november|december"
    r"|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
# "I" is no name, wherever it stands.
_NAME = re.compile(r"\b(?!I\b|I['’])[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*){0,2}\b")
# Kinds of value, the most specific first ("14 May" is a date before "14" is a number).
_KINDS: tuple[re.Pattern[str], ...] = (
    re.compile(rf"\b(?:{_DAY}\s+(?:of\s+)?{_MONTH}|{_MONTH}\s+{_DAY})(?![\w:])", re.IGNORECASE),
    re.compile(r"\b(?:\d{1,2}(?::\d{2})?\s*(?:am|pm|a\.m\.|p\.m\.)|\d{1,2}:\d{2}|noon|midnight)(?!\w)", re.I),
    re.compile(r"\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b", re.IGNORECASE),
    re.compile(r"(?<![\w:.,])\d+(?:[.,]\d+)?(?![\w:])"),
    _NAME,
)
_AMOUNT = re.compile(r"\d+(?:[.,]\d+)?\s*(?P<unit>[a-z%]+)", re.IGNORECASE)
_SENTENCE_START = re.compile(r"(?:^|[.!?…]\s+|\n)\W*$")


@dataclass(frozen=True, slots=True)
class Correction:
    """The message `corrected` as it should have been said (its own id, speaker and time), and the
    messages whose facts the corrected ones replace: the original and earlier corrections of it."""

    corrected: Turn
    replaces: tuple[str, ...]

    @property
    def original(self) -> str:
        """The message corrected, which the corrected facts cite with the correction."""
        return self.corrected.message_id


class Corrections:
    """The messages of each session as corrected so far, fed in time order; `apply` turns a
    correction into the message it corrects, rewritten."""

    def __init__(self, earlier: Iterable[Turn] = ()) -> None:
        self._sessions: dict[str | None, list[tuple[Turn, tuple[str, ...]]]] = {}
        for turn in earlier:
            self.apply(turn)

    def apply(self, turn: Turn) -> Correction | None:
        """Read one message: the correction it makes (the corrected message then stands for the
        original in what later corrections see), or None (it is then one of the messages seen)."""
        messages = self._sessions.setdefault(turn.session_id, [])
        said = _TAIL.sub("", turn.text)
        m = _CORRECTION.match(said) or ((r := _REASON.match(said)) and _CORRECTION.match(r.group("head")))
        if m is None or not (m.group("says") or m.group("old")):
            messages.append((turn, (turn.message_id,)))
            return None
        new, old = m.group("new").strip(), (m.group("old") or "").strip()
        for at in range(len(messages) - 1, max(len(messages) - LOOKBACK_MESSAGES, 0) - 1, -1):
            target, chain = messages[at]
            if target.speaker != turn.speaker:
                continue
            text = _replaced(target.text, new, old)
            if text is None:
                continue
            chain = (*chain, turn.message_id)
            corrected = replace(target, text=text)
            messages[at] = (corrected, chain)
            return Correction(corrected, chain[:-1])
        # Worded as a correction but of nothing it can find: kept as said.
        messages.append((turn, (turn.message_id,)))
        return None


def _kind_of(value: str) -> re.Pattern[str] | None:
    return next((pattern for pattern in _KINDS if pattern.fullmatch(value)), None)


def _replaced(text: str, new: str, old: str) -> str | None:
    """`text` with `old` (or its one phrase of `new`'s kind) replaced by `new`; None if unclear."""
    if old:
        spans = [m.span() for m in re.finditer(rf"(?<!\w){re.escape(old)}(?!\w)", text, re.IGNORECASE)]
    else:
        pattern = _kind_of(new)
        if pattern is None and (amount := _AMOUNT.fullmatch(new)):
            # "I meant 6 nodes": the number of nodes said before ("runs on 4 nodes").
            unit = re.escape(amount.group("unit").lower().removesuffix("s"))
            pattern = re.compile(rf"(?<![\w.,])\d+(?:[.,]\d+)?\s*{unit}s?\b", re.IGNORECASE)
        if pattern is None:
            return None
        spans = [
            m.span()
            for m in pattern.finditer(text)
            # A capitalised word opening a sentence ("My", "The") is not a name.
            if pattern is not _NAME or not _SENTENCE_START.search(text[: m.start()])
        ]
        if len(spans) != 1 or text[spans[0][0] : spans[0][1]].lower() == new.lower():
            return None
    if not spans:
        return None
    # "July 3rd, not the 2nd" of "on July 2nd": the month said again replaces the one there.
    lead = new.rsplit(None, 1)[0] if " " in new.strip() else ""
    for start, end in reversed(spans):
        if lead and text[:start].lower().endswith(lead.lower() + " "):
            start -= len(lead) + 1
        text = text[:start] + new + text[end:]
    return text


def corrections_in(turns: Sequence[Turn], earlier: Iterable[Turn] = ()) -> dict[str, Correction]:
    """Each correction among `turns` (by its message id), `earlier` being the messages before them."""
    state = Corrections(earlier)
    found = {}
    for turn in turns:
        if (correction := state.apply(turn)) is not None:
            found[turn.message_id] = correction
    return found
