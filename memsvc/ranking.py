"""Pure, DB-free ranking of memory candidates for search.

The search layer fetches *every* memory of the user (a LoCoMo conversation is ~400-700 turns, a few
thousand memories with facts) together with two raw signals per memory — the dense cosine of the
query against the memory's embedding and a lexical BM25 score — and hands them here as
:class:`Candidate` objects. This module turns those into an ordered list of :class:`RankedResult`:

1. **Query analysis** (:func:`analyze_query`): which known speakers the query names, and whether it
   asks *when* something happened.
2. **Fusion** (:func:`fuse_scores`): z-scored dense cosine plus max-normalised BM25 (a weighted sum;
   it beat reciprocal-rank fusion by 0.06-0.09 recall@10 on LoCoMo), plus additive boosts for turns
   by the named speaker and, for temporal questions, for memories that contain a time expression.
3. **Neighbour propagation** (:func:`propagate_neighbours`): a turn inherits a share of the score of
   the turn right after it — in dialogue the evidence is often a question ("What did you paint?")
   whose answer ("A sunrise") shares no words with the query.
   Then a memory of little importance (by consolidation's judgement: small talk, a remark about the
   other speaker) ranks lower, and the survivor of a merge scores at least what was merged into it.
4. **Final ordering** (:func:`build_results`): score order with a shorter-first tie-break, near
   duplicate / already-covered removal, and merging of adjacent turns that answer together (both
   scored near the top for the query, or a question and its answer) into one result (at most
   ``merge_max_turns`` turns, only while the context budget allows) so that a question/answer pair
   costs one result slot and an unrelated reply none.

Index text (measured, see the research report): turns are embedded and BM25-indexed **with the
previous turn of the same session as context** — ``"{prev_speaker}: {prev_text}\\n{speaker}: {text}"``
(:func:`turn_index_text`) — while the memory's content stays its own text. Use the same text for
the embedding and for the lexical index. The BM25 scorer used in the research lives here
(:class:`BM25Index`); Postgres ``ts_rank_cd`` has no IDF and no length saturation, so it is *not* a
drop-in replacement (see the class docstring).

Nothing here imports the database, FastAPI or the embedding model.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

try:  # Snowball English is what Postgres' `english` text-search config uses, so both stem alike.
    import snowballstemmer

    _SNOWBALL = snowballstemmer.stemmer("english")
except ImportError:  # pragma: no cover - exercised only where the optional package is missing
    _SNOWBALL = None

FloatArray = npt.NDArray[np.float64]
MemoryKind = Literal["turn", "passage", "fact", "digest", "entity"]

# --------------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One memory with its raw per-query signals.

    ``dense`` is the cosine similarity of the query embedding and the memory's embedding (of
    :func:`turn_index_text` for turns); ``lexical`` is the raw BM25 score (0 when no term matched).
    ``session``/``position`` place a turn in its conversation (position = index of the turn in its
    session) and drive neighbour propagation and merging; leave them ``None`` for facts/digests.
    """

    id: str
    content: str
    kind: MemoryKind = "turn"
    speaker: str | None = None
    event_time: datetime | None = None
    session: str | int | None = None
    position: int | None = None
    source_message_ids: tuple[str, ...] = ()
    dense: float = 0.0
    lexical: float = 0.0
    role: str | None = None  # a message's role ("user", "assistant"); None for facts and digests
    episode: str | None = None  # the session it came from, for any kind (``session``: turns only)
    # False for a long message whose passages stand for it: it still scores (and passes score to
    # the turn before it) but is never returned whole.
    returnable: bool = True
    # How much the memory is worth remembering, as consolidation's forgetting judges it
    # (`consolidation.judged_importance`: small talk 0.1, a turn 0.5); below 0.5 it ranks lower.
    importance: float = 0.5
    # The id of the memory this one was merged into (a consolidation run archived it): the
    # survivor stands for it, so it ranks at least where this one would (`pass_to_survivors`).
    merged_into: str | None = None
    # The id of the memory that replaced this one, where a question about now should find that
    # one first: it ranks above this one (`pass_to_successors`).
    superseded_by: str | None = None

    @property
    def words(self) -> int:
        """Context cost of returning this memory (whitespace words of its content)."""
        return _word_count(self.content)


@dataclass(frozen=True, slots=True)
class RankingConfig:
    """Global ranking settings. Defaults are the LoCoMo-measured recipe (never per conversation).

    Sensitivity (tuned on 4 conversations, checked on the other 4): every weight below can move by
    ±40-50% for at most ±0.015 recall@10, so the defaults are round numbers, not a fitted optimum.
    """

    # Fusion: score = dense_weight * z(dense) + lexical_weight * lexical_scale * bm25 / max(bm25).
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    # A max-normalised BM25 of 1 is worth `lexical_scale` standard deviations of dense cosine.
    lexical_scale: float = 3.0
    # Added (in z units) to turns spoken by the single known speaker the query names (+0.015 R@10).
    speaker_boost: float = 1.0
    # Added to memories containing a time expression when the query asks "when…" (+0.02 on cat. 2).
    temporal_boost: float = 0.5
    # Added to the messages of the role a question asks about, where a user's memory holds both
    # roles: "my"/"I" questions ask what the user said, "you said/suggested" what the assistant did
    # (BEAM tune half: +0.013 recall@10 at 1.0, as at 2.0).
    role_boost: float = 1.0
    # The same for a question about the order of things: "the order in which I brought up…" asks
    # for the user's own messages, and the assistant's answers on the same topics crowd them out
    # (BEAM tune half: event ordering R@10 0.150 -> 0.203, all 0.6515 -> 0.6566; 2.0: 0.164, 5.0
    # as 3.0).
    order_role_boost: float = 3.0
    # A question about the order of things ("in what order did I…", "which came first") gets the
    # best result of each session first, then the rest by score: the events it asks about are
    # spread over time, and similarity alone fills the top with the one session most alike.
    order_spread: bool = True
    # A question about the order of things asks for the speaker's messages through a thread ("in
    # what order did I bring up…": evidence at positions 6, 10, 14, 16… of a user–assistant chat,
    # the answers between them): for it a turn also joins the result of the same speaker's turn
    # two positions away, the other speaker's message between them left out, when it answers the
    # query too (`merge_min_share`), under no word budget. BEAM tune half (issue 19): event
    # ordering R@10 0.329 -> 0.392, all 0.7069 -> 0.7140, words@10 +11 (under the adjacent merges'
    # budget: 0.357); for every question: 0.7131 with +51 words, summaries 0.273 -> 0.265. LoCoMo
    # tune half unchanged.
    order_joins_thread: bool = True
    # A long message's best passage scores at least what the whole message scores, when the
    # message is short enough for the encoder to read whole (at most this many words; 0: never):
    # its vector then holds all of it, where each passage holds a piece cut from its intent ("I'm
    # trying to add login to my budget tracker" in one, the code in the next). BEAM tune half
    # (issue 19): R@10 0.6901 -> 0.7046, recall within 350 words 0.610 -> 0.613; 150 / 200 / 300 /
    # no limit: 0.7000 / 0.7020 / 0.7046 / 0.7054, the last with temporal questions 0.964 ->
    # 0.893: an answer of 500 words is much text for BM25 and its vector is of its opening only.
    whole_message_max_words: int = 250
    # Share of the (non-negative) score of the *next* / *previous* turn a turn inherits (+0.025).
    propagate_from_next: float = 0.3
    propagate_from_prev: float = 0.0
    # Taken (in z units, times how far its importance is below 0.5, as a share of 0.5) from a
    # memory forgetting judges of little importance (small talk, a remark about the other speaker),
    # after propagation, so it still passes its score to the turn before it: such memories are
    # close to every question and a consolidation run archives them first; ranked below the
    # ordinary memories before a run as after it, the top 10 do not change when the run takes them
    # (issue 18). LoCoMo tune half: every weight from 3 to 20 leaves R@10 and words@10 as they were
    # after a run (0.7989; 323.3 at 3, 323.8 from 10) and costs 0.0034 R@10 before one (0: 0.8023);
    # 3, the least such weight, still let small talk into the top 10 of unseen conversations, which
    # a run then replaced with longer results. 10 takes 8 z from small talk, more than lies between
    # a question's first and tenth results (0.5-5.6 z in the questions traced in BENCHMARKS.md).
    low_importance_penalty: float = 10.0
    # Merge adjacent turns of one session into one result (<= 5 turns keeps the provenance precise).
    # (3 -> 4 and 15 -> 25 on LoCoMo's tune half: R@10 0.791 -> 0.799, words@10 312 -> 324; issue 19.)
    merge_max_turns: int = 4
    # Only turns ranked this high may be merged into an earlier result (deeper ones cost words).
    merge_depth: int = 40
    # A merge is allowed only while the first `budget_results` results hold <= this many words
    # (250 -> 330 on LoCoMo's tune half: R@10 0.786 -> 0.791, words@10 298 -> 312; issue 19).
    merge_word_budget: int = 450
    budget_results: int = 10
    # A turn joins its neighbour's result only if the two answer together: it scores at least this
    # share of the result's best turn (it answers the query too), or one asks and the other, right
    # after it, answers; not any reply that happens to rank high (issue 19). LoCoMo tune half:
    # R@10 0.790 -> 0.793 and words@10 325 -> 305 at 0.85; with fewer words merged, depth 25 -> 40
    # and budget 330 -> 450 then give R@10 0.798 with 324 words (0.7 / 0.8 / 0.9: 0.791 / 0.798 /
    # 0.795 at budget 450).
    merge_min_share: float = 0.85
    # Adjacent turns said further apart than this are not one exchange: a session sent with months
    # between its messages showed a change under the date of what came before it.
    merge_max_gap: timedelta = timedelta(hours=12)
    # Near-duplicate removal: drop a result whose token set overlaps a kept one at least this much.
    dedup_jaccard: float = 0.9
    # Drop a fact whose source turns are all already returned (and vice versa): it adds words only.
    dedup_covered: bool = True
    # Kinds never returned: digests/entities cover no turn under the precise-provenance rule.
    exclude_kinds: tuple[str, ...] = ("digest", "entity")
    max_results: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.merge_max_turns <= 5:
            raise ValueError("merge_max_turns must be within 1..5 (results of >5 turns cover nothing)")
        if self.max_results < 1:
            raise ValueError("max_results must be positive")


@dataclass(frozen=True, slots=True)
class QueryAnalysis:
    """What the ranker reads off the query text without an LLM."""

    text: str
    named_speakers: tuple[str, ...]
    names: tuple[str, ...]  # capitalised tokens that look like names (speakers included)
    temporal: bool  # the query asks for a time ("When did…", "What year…", "How long…")
    role: str | None = None  # whose messages the query asks about: "user", "assistant" or None
    ordering: bool = False  # the query asks in what order things happened


@dataclass(frozen=True, slots=True)
class RankedResult:
    """One search result: one memory, or 2..merge_max_turns adjacent turns merged."""

    members: tuple[Candidate, ...]
    score: float

    @property
    def id(self) -> str:
        return self.members[0].id

    @property
    def content(self) -> str:
        return "\n".join(m.content for m in self.members)

    @property
    def source_message_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for m in self.members:
            for s in m.source_message_ids:
                seen[s] = None
        return tuple(seen)

    @property
    def words(self) -> int:
        return sum(m.words for m in self.members)


@lru_cache(maxsize=65_536)
def _word_count(text: str) -> int:
    return len(text.split())


# --------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9]+")


def _split(words: str) -> list[str]:
    return words.split()


# NLTK/Snowball English stop words (contractions split by the tokenizer: "don't" -> "don", "t").
STOP_WORDS: frozenset[str] = frozenset(
    _split(
        "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she "
        "her hers herself it its itself they them their theirs themselves what which who whom this that "
        "these those am is are was were be been being have has had having do does did doing a an the and "
        "but if or because as until while of at by for with about against between into through during "
        "before after above below to from up down in out on off over under again further then once here "
        "there when where why how all any both each few more most other some such no nor not only own "
        "same so than too very s t can will just don should now d ll m o re ve y ain aren couldn didn "
        "doesn hadn hasn haven isn ma mightn mustn needn shan shouldn wasn weren won wouldn"
    )
)


def _fallback_stem(word: str) -> str:
    """Crude suffix stripping used only when `snowballstemmer` is not installed."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    # The pure-Python Snowball stemmer costs ~0.4 ms a word; a conversation's vocabulary is a few
    # thousand words, so caching makes indexing ~100x and per-query dedup/BM25 effectively free.
    if _SNOWBALL is not None:
        return str(_SNOWBALL.stemWord(word))
    return _fallback_stem(word)


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric tokens, stop words removed, Snowball-stemmed (+0.04 R@10 vs none)."""
    return [_stem(t) for t in _TOKEN.findall(text.lower()) if t not in STOP_WORDS]


def turn_content(speaker: str, text: str, photo_caption: str | None = None) -> str:
    """A turn memory's content: ``"{speaker}: {text}"`` (+ the importer's photo caption).

    The speaker prefix costs one word per result but makes the turn self-contained for the LLM and
    lifts dense recall@10 from 0.33 to 0.45 (it anchors "Caroline" questions to her turns).
    """
    body = f"{text} [photo: {photo_caption}]" if photo_caption else text
    return f"{speaker}: {body}"


# The most words of the turn before that serve as a turn's context (BM25 text, exchange vector).
CONTEXT_MAX_WORDS = 100


def turn_index_text(content: str, previous_content: str | None) -> str:
    """Text to embed and to BM25-index for a turn: the previous turn of the session as context.

    Only the index text carries the context; the memory's content (what is returned and costs
    words) stays its own. Measured on LoCoMo: +0.05 recall@10 for BM25, +0.02 for fused dense.
    Of a long previous message (an assistant's answer) only its last `CONTEXT_MAX_WORDS` words
    are context: the whole of it would outweigh the turn's own words.
    """
    if not previous_content:
        return content
    words = previous_content.split()
    if len(words) > CONTEXT_MAX_WORDS:
        previous_content = " ".join(words[-CONTEXT_MAX_WORDS:])
    return f"{previous_content}\n{content}"


_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_DAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
ORDER_QUERY = re.compile(
    r"\b(in (what|which) order|the order|in order|order in which|which (came|happened|did \w+) first"
    r"|(came|happened) first|chronolog\w*|sequence of|timeline)\b",
    re.IGNORECASE,
)
# A request for a summary ("summarize how my resume developed", "an overview of my plans"), not
# a question that names one ("the monthly summary"): it asks for the substance of whole messages,
# not the one passage that answers a pointed question.
SUMMARY_QUERY = re.compile(r"\bsummari[sz](e|es|ed|ing)\b|\b(summary|overview|recap) of\b", re.IGNORECASE)
# Words that frame a question about the conversation rather than name its subject: the request
# ("can you list", "walk me through"), the conversation itself ("across our sessions", "the order
# in which I brought up different aspects of"), the answer's form ("in order", "Mention only three
# items", "Answer yes or no"), a summary's wrapper ("a comprehensive summary of", "over time").
# A mean-pooled encoder spreads a vector over every word, and in a long framed question ("Can you
# list the order in which I brought up different aspects of developing my budget tracker
# throughout our conversations, in order? Mention ONLY and ONLY three items.") the subject is a
# few words of thirty: the dense query is made from the question without them (`query_focus`).
_ASK = (
    r"(list|tell me|walk me through|give me|provide|remind me( of)?|summari[sz]e|describe|show me"
    r"|explain|recall)"
)
_FRAMING = (
    rf"(^|(?<=[.?!])\s+)(can|could|would|will) you( please)?( {_ASK})?\b",
    rf"^(please )?{_ASK}\b",
    r"\b(in )?the order in which\b",
    r"\bin (chronological |what )?order\b",
    r"\bI('ve| have)? (brought up|mentioned|discussed|raised|talked about|asked about)\b",
    r"\b(the )?(different|various) (aspects|concepts|topics|things|points) (of|related to|about|in)\b",
    r"\b(throughout|across|over|in|during|through|from) (all )?(of )?(our|my|the|these)"
    r" (previous |past |earlier |recent )?(conversations?|sessions?|discussions?|chats?|exchanges?)\b",
    r"\bacross my (questions|requests|messages)\b",
    r"(^|(?<=[.?!])\s+)(mention|answer|respond|reply)\b[^.?!]*\b(only|exactly|yes or no)\b[^.?!]*[.?!]?",
    r"\b(a |an )?(clear |comprehensive |brief |short |detailed |quick |full )?(summary|overview|recap) of\b",
    r"\bover time\b",
    r"\bso far\b",
)
FRAMING = re.compile("|".join(f"(?:{p})" for p in _FRAMING), re.IGNORECASE)
# A question whose answer is a place ("Where has Melanie camped?", "Which European countries has
# Maria been to?"): the memories that mention a place answer it, though a country's name is
# rarely near "countries" in meaning.
PLACE_QUERY = re.compile(
    r"\bwhere\b|\b(which|what)( \w+){0,2} (cit(y|ies)|countr(y|ies)|states?|places?|locations?|towns?|spots?"
    r"|destinations?)\b",
    re.IGNORECASE,
)
TEMPORAL_QUERY = re.compile(
    r"^\s*when\b|\bwhat (year|month|day|date|time|week|season)\b|\bhow long\b"
    r"|\bwhich (year|month|day|week)\b|\bhow many (years|months|weeks|days)\b",
    re.IGNORECASE,
)
TEMPORAL_EXPRESSION = re.compile(
    rf"\b(yesterday|today|tonight|tomorrow|ago|recently|lately|weekend|since"
    rf"|last (night|week|weekend|month|year|summer|winter|spring|fall|time|{_DAYS})"
    rf"|this (week|weekend|month|year|morning|past)|next (week|month|year|weekend)"
    rf"|{_MONTHS}|{_DAYS}|(19|20)\d\d|few (days|weeks|months|years)"
    rf"|(a|one|two|three|four|five|six|couple( of)?) (days?|weeks?|months?|years?))\b",
    re.IGNORECASE,
)
# A date a fact spells out ("7 May 2023", "May 2022", "2021"), unlike a turn's "yesterday".
ABSOLUTE_DATE = re.compile(
    rf"\b(?:\d{{1,2}} )?(?:{_MONTHS}) (?:19|20)\d\d\b|\b(?:19|20)\d\d\b", re.IGNORECASE
)
_NAME = re.compile(r"\b[A-Z][a-zA-Z'’-]+")
_NOT_NAMES = frozenset(
    _split(
        "When What Who Whom Where Why How Which Did Does Do Is Are Was Were Has Have Had Would Could Can "
        "Will Should The A An In On At For Of And But If I"
    )
)


@lru_cache(maxsize=65_536)
def has_temporal_expression(text: str) -> bool:
    """True if the text mentions a date or a relative time ("last week", "in May", "2022").

    Cached per text: memories repeat across queries; callers may also precompute it at ingest.
    """
    return TEMPORAL_EXPRESSION.search(text) is not None


# What the assistant said before ("what did you suggest", "the schema you gave me"), not a request
# for new advice ("what would you suggest?"), which asks about the user's own situation.
ASKS_ASSISTANT = re.compile(
    r"\b(did you|you (said|suggested|recommended|proposed|mentioned|explained|told|gave|provided|advised"
    r"|shared|showed|wrote)|your (suggestion|recommendation|advice|answer|explanation)s?)\b",
    re.IGNORECASE,
)
ASKS_USER = re.compile(r"\b(i|my|me|mine|myself|i'm|i've|i'd|i'll)\b", re.IGNORECASE)


def query_role(query: str) -> str | None:
    """Whose messages a question to an assistant asks about: what the assistant said ("what did
    you suggest…"), else what the user said ("when does my sprint end?"), else no one in particular."""
    if ASKS_ASSISTANT.search(query):
        return "assistant"
    if ASKS_USER.search(query.replace("’", "'")):
        return "user"
    return None


def query_focus(query: str) -> str:
    """The query without the words that frame it (`FRAMING`): the text its dense vector is made
    from. A question that is all framing keeps its words (two left at least); one with none is
    left as it is, punctuation too (the encoder's vectors depend on it)."""
    if not FRAMING.search(query):
        return query
    focus = " ".join(FRAMING.sub(" ", query).split())
    # Tidy what the cut leaves: no space before punctuation, no comma before the question mark.
    focus = re.sub(r",+(?=[?.!]|$)", "", re.sub(r"\s+(?=[?.!,])", "", focus)).strip(" ,")
    return focus if len(focus.split()) >= 2 else query


def analyze_query(query: str, speakers: Iterable[str] = ()) -> QueryAnalysis:
    """Detect named speakers (whole-word, case-insensitive, possessive ok) and temporal intent."""
    lowered = query.lower()
    named = tuple(
        s for s in dict.fromkeys(speakers) if s and re.search(rf"\b{re.escape(s.lower())}\b", lowered)
    )
    names = tuple(
        dict.fromkeys(
            n.rstrip("'’s") if n.endswith(("'s", "’s")) else n
            for n in _NAME.findall(query)
            if n not in _NOT_NAMES
        )
    )
    return QueryAnalysis(
        text=query,
        named_speakers=named,
        names=names,
        temporal=TEMPORAL_QUERY.search(query) is not None,
        role=query_role(query),
        ordering=ORDER_QUERY.search(query) is not None,
    )


# --------------------------------------------------------------------------------------------------
# BM25
# --------------------------------------------------------------------------------------------------


class BM25Index:
    """In-memory Okapi BM25 over one user's memories (k1=1.2, b=0.3 measured best on LoCoMo).

    Low ``b`` (weak length normalisation) matters: +0.015 recall@10 over b=0.75, because long turns
    with the context prefix are not less relevant. Postgres ``ts_rank_cd`` has neither IDF nor term
    saturation nor length normalisation of this kind, so it ranks differently; to stay in Postgres,
    keep this scorer over the user's memories, cached per user and updated in place.

    Documents can be added and removed; IDF and the average length are computed at query time from
    the live documents, so an index that saw additions and removals scores exactly like one built
    from the surviving documents (a removed document keeps its ordinal and scores 0). Postings are
    compact typed arrays (4 + 2 bytes per entry) that score without a Python loop over documents.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.3) -> None:
        self.k1 = k1
        self.b = b
        self._terms: dict[str, int] = {}
        self._docs: list[array[int]] = []  # per term: the documents containing it, ascending
        self._counts: list[array[int]] = []  # per term: its count in each of those documents
        self._lengths: array[int] = array("i")  # tokens per document
        self._alive = bytearray()
        self._live = 0
        self._live_length = 0

    def __len__(self) -> int:
        """Live documents."""
        return self._live

    @property
    def ordinals(self) -> int:
        """Documents ever added (live or removed): the length of :meth:`score`'s output."""
        return len(self._lengths)

    def add(self, text: str) -> int:
        """Index one document; returns its ordinal (the position in :meth:`score`'s output)."""
        doc = len(self._lengths)
        toks = tokenize(text)
        terms, docs, counts = self._terms, self._docs, self._counts
        for term, count in Counter(toks).items():
            t = terms.get(term)
            if t is None:
                t = terms[term] = len(docs)
                docs.append(array("i"))
                counts.append(array("H"))
            docs[t].append(doc)
            counts[t].append(count)  # < 2**16: content is at most 32k characters
        self._lengths.append(len(toks))
        self._alive.append(1)
        self._live += 1
        self._live_length += len(toks)
        return doc

    def remove(self, doc: int) -> None:
        """Take a document out of scoring and of the statistics; its ordinal stays (scoring 0)."""
        if self._alive[doc]:
            self._alive[doc] = 0
            self._live -= 1
            self._live_length -= self._lengths[doc]

    @classmethod
    def build(cls, texts: Iterable[str], k1: float = 1.2, b: float = 0.3) -> BM25Index:
        index = cls(k1, b)
        for t in texts:
            index.add(t)
        return index

    def compacted(self, keep: npt.NDArray[np.int64]) -> BM25Index:
        """A copy holding only the documents `keep` (ascending ordinals), renumbered 0..len(keep)-1."""
        out = BM25Index(self.k1, self.b)
        new_of = np.full(len(self._lengths), -1, dtype=np.int64)
        new_of[keep] = np.arange(len(keep))
        for term, t in self._terms.items():
            docs = np.frombuffer(self._docs[t], dtype=np.int32)
            mapped = new_of[docs]
            live = mapped >= 0
            if not live.any():
                continue
            out._terms[term] = len(out._docs)
            out._docs.append(array("i", mapped[live].astype(np.int32).tobytes()))
            out._counts.append(array("H", np.frombuffer(self._counts[t], dtype=np.uint16)[live].tobytes()))
        lengths = np.frombuffer(self._lengths, dtype=np.int32)[keep]
        out._lengths = array("i", lengths.astype(np.int32).tobytes())
        out._alive = bytearray(np.frombuffer(self._alive, dtype=np.uint8)[keep].tobytes())
        out._live = int(np.count_nonzero(np.frombuffer(out._alive, dtype=np.uint8)))
        out._live_length = int(lengths[np.frombuffer(out._alive, dtype=np.uint8) > 0].sum())
        return out

    def nbytes(self) -> int:
        """Bytes held by the postings and per-document arrays (not counting the term strings)."""
        postings = sum(len(d) * 6 for d in self._docs)
        return postings + len(self._docs) * 160 + len(self._terms) * 100 + len(self._lengths) * 5

    def score(self, query: str) -> FloatArray:
        """BM25 score of every document ordinal for ``query`` (0 where no term matches or removed)."""
        n = self._live
        scores = np.zeros(len(self._lengths), dtype=np.float64)
        if n == 0:
            return scores
        lengths = np.frombuffer(self._lengths, dtype=np.int32).astype(np.float64)
        norm = self.k1 * (1.0 - self.b + self.b * lengths / (self._live_length / n or 1.0))
        removed = n < len(self._lengths)
        alive = np.frombuffer(self._alive, dtype=np.bool_) if removed else None
        for term, qcount in Counter(tokenize(query)).items():
            t = self._terms.get(term)
            if t is None:
                continue
            docs = np.frombuffer(self._docs[t], dtype=np.int32)
            df = int(np.count_nonzero(alive[docs])) if alive is not None else len(docs)
            if not df:
                continue
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            tf = np.frombuffer(self._counts[t], dtype=np.uint16).astype(np.float64)
            scores[docs] += qcount * idf * tf * (self.k1 + 1.0) / (tf + norm[docs])
        if alive is not None:
            scores[~alive] = 0.0
        return scores


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def fuse_scores(
    candidates: Sequence[Candidate],
    analysis: QueryAnalysis,
    config: RankingConfig,
    dense_stats: tuple[float, float] | None = None,
) -> FloatArray:
    """Weighted sum of z(dense) and max-normalised BM25, plus speaker and temporal boosts.

    z-scoring the cosine over the *whole* candidate set makes the weight independent of the
    embedding model's cosine range; that is why the caller should pass all of the user's memories
    (or at least a pool of several hundred), not a dense top-20.
    """
    n = len(candidates)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    dense = np.fromiter((c.dense for c in candidates), dtype=np.float64, count=n)
    lexical = np.fromiter((c.lexical for c in candidates), dtype=np.float64, count=n)
    # `dense_stats` (mean, std) over the whole pool, when the caller passes only part of it.
    mean, std = dense_stats if dense_stats is not None else (float(dense.mean()), float(dense.std()))
    dz = (dense - mean) / std if std > 1e-12 else np.zeros(n, dtype=np.float64)
    top = float(lexical.max())
    lz = lexical / top * config.lexical_scale if top > 0 else np.zeros(n, dtype=np.float64)
    scores: FloatArray = config.dense_weight * dz + config.lexical_weight * lz
    # Only a query naming exactly one speaker says whose turn to prefer ("What did Caroline
    # research?"); naming both ("How did Caroline and Melanie meet?") says nothing.
    if config.speaker_boost and len(analysis.named_speakers) == 1:
        who = analysis.named_speakers[0]
        scores += config.speaker_boost * np.fromiter(
            (c.speaker == who for c in candidates), dtype=np.float64, count=n
        )
    if config.temporal_boost and analysis.temporal:
        scores += config.temporal_boost * np.fromiter(
            (has_temporal_expression(c.content) for c in candidates), dtype=np.float64, count=n
        )
    role_boost = config.order_role_boost if analysis.ordering else config.role_boost
    if role_boost and analysis.role:
        roles = np.array([c.role or "" for c in candidates])
        # Only where both roles speak: in a chat of people (every message "user") it says nothing.
        if (roles == "user").any() and (roles == "assistant").any():
            scores += role_boost * (roles == analysis.role)
    return scores


def propagate_neighbours(
    candidates: Sequence[Candidate], scores: FloatArray, config: RankingConfig
) -> FloatArray:
    """Add a share of the next (and previous) turn's non-negative score to each turn.

    Neighbours are turns of the same session at position ±1. Propagation reads the *input* scores
    only (one step, no cascade), so the order of candidates does not matter.
    """
    if not (config.propagate_from_next or config.propagate_from_prev):
        return scores
    where: dict[tuple[str | int, int], int] = {}
    for i, c in enumerate(candidates):
        if c.kind == "turn" and c.session is not None and c.position is not None:
            where[(c.session, c.position)] = i
    base = np.maximum(scores, 0.0)
    out = scores.copy()
    for (session, pos), i in where.items():
        nxt = where.get((session, pos + 1))
        prv = where.get((session, pos - 1))
        if nxt is not None:
            out[i] += config.propagate_from_next * base[nxt]
        if prv is not None:
            out[i] += config.propagate_from_prev * base[prv]
    return out


def pass_whole_message(
    candidates: Sequence[Candidate], scores: FloatArray, config: RankingConfig
) -> FloatArray:
    """Each long message's best-scoring passage raised to the score of the whole message (its
    turn), where the message has at most `whole_message_max_words` words."""
    best: dict[str, int] = {}  # message id -> its best-scoring passage
    for i, c in enumerate(candidates):
        if c.kind == "passage" and c.source_message_ids:
            message = c.source_message_ids[0]
            if message not in best or scores[i] > scores[best[message]]:
                best[message] = i
    if not best or not config.whole_message_max_words:
        return scores
    out = scores.copy()
    # Only the turns of messages that have passages count their words (it runs on every search).
    for i, c in enumerate(candidates):
        passage = best.get(c.source_message_ids[0]) if c.kind == "turn" and c.source_message_ids else None
        if passage is not None and c.words <= config.whole_message_max_words:
            out[passage] = max(out[passage], scores[i])
    return out


def _token_set(text: str) -> frozenset[str]:
    # Unstemmed: near-duplicate detection needs no stemming, and this runs for every kept result.
    return frozenset(_TOKEN.findall(text.lower()))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 1.0 if a == b else 0.0
    return len(a & b) / len(a | b)


def build_results(
    candidates: Sequence[Candidate],
    scores: FloatArray,
    config: RankingConfig,
    *,
    temporal: bool = False,
    spread: bool = False,
    thread: bool = False,
) -> list[RankedResult]:
    """Order by score (ties: fewer words first), drop duplicates, merge adjacent turns.

    Walking the candidates best first, a turn adjacent (same session, position ±1) to a turn already
    in a result joins that result instead of taking a new slot — if the two answer together (it
    scores at least ``merge_min_share`` of the result's best turn, or they are a question and its
    answer), it is ranked within ``merge_depth``, the result stays within ``merge_max_turns``
    turns, and the first ``budget_results`` results hold at most ``merge_word_budget`` words after
    adding it. A result
    whose source turns are all returned already, or whose tokens nearly equal a kept result's, is
    dropped; but for a `temporal` query a fact with a date its turns do not spell out ("on 7 May
    2023" for "yesterday") joins the result of those turns instead: the date is the answer. With
    `thread`, a turn may also join the same speaker's turn two positions away (`_same_thread`),
    whatever the words; `spread` puts the best result of each session first.
    """
    n = len(candidates)
    word_counts = np.fromiter((c.words for c in candidates), dtype=np.int64, count=n)
    # Score descending, then shorter first (cheaper context for the same evidence).
    order = [int(i) for i in np.lexsort((word_counts, -scores))]
    groups: list[list[int]] = []
    group_of: dict[int, int] = {}
    slot: dict[tuple[str | int, int], int] = {}
    # Message id -> the group that returns it: `covered_by` any result, `worded_by` one that holds
    # the message's words (a turn, a passage). A fact is dropped only when its message's words are
    # returned: another fact from the same message ("Priya loves spicy food" beside "Priya is
    # vegetarian") states something else.
    covered_by: dict[str, int] = {}
    worded_by: dict[str, int] = {}
    kept_tokens: list[frozenset[str]] = []
    used_words = 0
    for rank, i in enumerate(order):
        c = candidates[i]
        if c.kind in config.exclude_kinds or not c.returnable:
            continue
        key = (c.session, c.position) if c.session is not None and c.position is not None else None
        if key is not None and config.merge_max_turns > 1 and rank < config.merge_depth:
            target = None
            for neighbour in ((key[0], key[1] - 1), (key[0], key[1] + 1)):
                j = slot.get(neighbour)
                if (
                    j is not None
                    and candidates[j].kind == "turn"
                    and c.kind == "turn"
                    and _answer_together(
                        c, candidates[j], float(scores[i]), float(scores[groups[group_of[j]][0]]), config
                    )
                ):
                    target = group_of[j]
                    break
            across = False
            if target is None and thread and c.kind == "turn":
                for neighbour in ((key[0], key[1] - 2), (key[0], key[1] + 2)):
                    j = slot.get(neighbour)
                    if (
                        j is not None
                        and (key[0], (key[1] + neighbour[1]) // 2) not in slot
                        and _same_thread(
                            c, candidates[j], float(scores[i]), float(scores[groups[group_of[j]][0]]), config
                        )
                    ):
                        target, across = group_of[j], True
                        break
            if (
                target is not None
                and sum(candidates[m].kind == "turn" for m in groups[target]) < config.merge_max_turns
                and (
                    across
                    or target >= config.budget_results
                    or used_words + c.words <= config.merge_word_budget
                )
            ):
                groups[target].append(i)
                group_of[i] = target
                slot[key] = i
                covered_by.update(dict.fromkeys(c.source_message_ids, target))
                worded_by.update(dict.fromkeys(c.source_message_ids, target))
                if target < config.budget_results:
                    used_words += c.words
                continue
        by = worded_by if c.kind == "fact" else covered_by
        if config.dedup_covered and c.source_message_ids and by.keys() >= set(c.source_message_ids):
            if temporal and c.kind == "fact":
                owners = {worded_by[s] for s in c.source_message_ids}
                date = ABSOLUTE_DATE.search(c.content)
                if date and len(owners) == 1:
                    owner = owners.pop()
                    if all(date.group(0) not in candidates[m].content for m in groups[owner]):
                        groups[owner].append(i)
                        group_of[i] = owner
                        if owner < config.budget_results:
                            used_words += c.words
            continue
        tokens = _token_set(c.content)
        near = config.dedup_jaccard
        if near < 1.0 and any(_jaccard(tokens, t) >= near for t in kept_tokens):
            continue
        if len(groups) >= config.max_results:
            # Full: no new result, but a turn ranked within `merge_depth` may still join one, so
            # the results' shape does not depend on how many were asked for.
            if rank >= config.merge_depth:
                break
            continue
        group_of[i] = len(groups)
        groups.append([i])
        kept_tokens.append(tokens)
        covered_by.update(dict.fromkeys(c.source_message_ids, len(groups) - 1))
        if c.kind in ("turn", "passage"):
            worded_by.update(dict.fromkeys(c.source_message_ids, len(groups) - 1))
        if key is not None:
            slot[key] = i
        if len(groups) <= config.budget_results:
            used_words += c.words
    if spread:
        groups = _best_of_each_episode_first(groups, candidates)
    results = []
    for g in groups:
        members = sorted(g, key=lambda i: candidates[i].position or 0)
        results.append(RankedResult(members=tuple(candidates[i] for i in members), score=float(scores[g[0]])))
    return results


_CAPTION = re.compile(r"\s*\[photo: [^\]]*\]\s*$")


def _asks(text: str) -> bool:
    """A turn that ends in a question (a shared photo's caption after it aside)."""
    return _CAPTION.sub("", text).rstrip().endswith("?")


def _answer_together(
    turn: Candidate, neighbour: Candidate, score: float, lead: float, config: RankingConfig
) -> bool:
    """Whether `turn` may join the result of the adjacent `neighbour`, whose best turn scores
    `lead`: it answers the query too (scores at least `merge_min_share` of `lead`), or one of the
    two asks and the other speaker answers right after it, and they were said within
    `merge_max_gap` of each other."""
    if _said_apart(turn, neighbour, config):
        return False
    if score >= config.merge_min_share * lead:
        return True
    if turn.position is None or neighbour.position is None:
        return False
    question, answer = (neighbour, turn) if neighbour.position < turn.position else (turn, neighbour)
    return question.speaker != answer.speaker and _asks(question.content)


def _same_thread(turn: Candidate, other: Candidate, score: float, lead: float, config: RankingConfig) -> bool:
    """Whether `turn` may join the result of `other`, a turn of the same speaker two positions
    away whose result's best turn scores `lead`: it answers the query too, said within
    `merge_max_gap`."""
    return (
        other.kind == "turn"
        and other.speaker == turn.speaker
        and score >= config.merge_min_share * lead
        and not _said_apart(turn, other, config)
    )


def _said_apart(a: Candidate, b: Candidate, config: RankingConfig) -> bool:
    """Two turns said further apart than `merge_max_gap`: not one exchange."""
    return bool(a.event_time and b.event_time and abs(a.event_time - b.event_time) > config.merge_max_gap)


def rank(
    candidates: Sequence[Candidate],
    query: str,
    speakers: Iterable[str] = (),
    config: RankingConfig | None = None,
    *,
    dense_stats: tuple[float, float] | None = None,
    bonus: FloatArray | None = None,
) -> list[RankedResult]:
    """The recipe search runs: analyse the query, fuse signals, add the caller's per-candidate
    `bonus`, give a long message's best passage the whole message's score, propagate to
    neighbours, rank memories of little importance lower, give each merge survivor the best score
    of what was merged into it, order and merge.

    ``speakers`` are the known participant names of the user's conversations (for the speaker
    boost). ``dense_stats`` is the (mean, std) of the dense scores over the whole pool when the
    candidates are only part of it. ``bonus`` holds what the search layer knows from the user's
    store and this module does not (graph proximity, supersession), in z units. Excluded kinds
    (digests, entities) still count in the score statistics but are never returned.
    """
    config = config or RankingConfig()
    analysis = analyze_query(query, speakers)
    scores = fuse_scores(candidates, analysis, config, dense_stats=dense_stats)
    if bonus is not None:
        scores = scores + bonus
    scores = pass_whole_message(candidates, scores, config)
    scores = propagate_neighbours(candidates, scores, config)
    if config.low_importance_penalty:
        scores = scores - config.low_importance_penalty * importance_deficit(candidates)
    scores = pass_to_survivors(candidates, scores)
    scores = pass_to_successors(candidates, scores)
    ordering = analysis.ordering
    return build_results(
        candidates,
        scores,
        config,
        temporal=analysis.temporal,
        spread=config.order_spread and ordering,
        thread=config.order_joins_thread and ordering,
    )


def pass_to_survivors(candidates: Sequence[Candidate], scores: FloatArray) -> FloatArray:
    """Each survivor of a merge scores at least what the memories merged into it score: it is
    them now (their wording, their provenance), so a run that merges moves no result down."""
    if not any(c.merged_into for c in candidates):
        return scores
    index = {c.id: i for i, c in enumerate(candidates)}
    out = scores
    for i, c in enumerate(candidates):
        j = index.get(c.merged_into) if c.merged_into is not None else None
        if j is not None and scores[i] > out[j]:
            out = out.copy() if out is scores else out
            out[j] = scores[i]
    return out


def pass_to_successors(candidates: Sequence[Candidate], scores: FloatArray) -> FloatArray:
    """Each memory that replaced another ranks above it: "We switched from Flask to FastAPI" above
    "Our backend is written in Flask" for "What framework does our backend use?", whose words only
    the old one shares. Along a chain (Boston, then Denver, then Austin) the latest ends on top."""
    if not any(c.superseded_by for c in candidates):
        return scores
    index = {c.id: i for i, c in enumerate(candidates)}
    steps = [(i, index[c.superseded_by]) for i, c in enumerate(candidates) if c.superseded_by in index]
    out = scores.copy()
    for _ in range(len(steps)):  # a chain of n replacements settles in n passes
        raised = False
        for old, new in steps:
            if out[old] >= out[new]:
                out[new] = out[old] + 1e-3
                raised = True
        if not raised:
            break
    return out


def importance_deficit(candidates: Sequence[Candidate]) -> FloatArray:
    """How far each candidate's importance is below an ordinary memory's (0.5), as a share of it."""
    importance = np.fromiter((c.importance for c in candidates), dtype=np.float64, count=len(candidates))
    return np.clip((0.5 - importance) / 0.5, 0.0, 1.0)


def _best_of_each_episode_first(groups: list[list[int]], candidates: Sequence[Candidate]) -> list[list[int]]:
    """The results reordered: the best of each session first (in score order), then the others."""
    seen: set[str] = set()
    first: list[list[int]] = []
    rest: list[list[int]] = []
    for group in groups:
        episode = candidates[group[0]].episode
        if episode is not None and episode not in seen:
            seen.add(episode)
            first.append(group)
        else:
            rest.append(group)
    return first + rest


__all__ = [
    "CONTEXT_MAX_WORDS",
    "STOP_WORDS",
    "SUMMARY_QUERY",
    "TEMPORAL_EXPRESSION",
    "TEMPORAL_QUERY",
    "BM25Index",
    "Candidate",
    "QueryAnalysis",
    "RankedResult",
    "RankingConfig",
    "analyze_query",
    "build_results",
    "fuse_scores",
    "has_temporal_expression",
    "importance_deficit",
    "pass_to_survivors",
    "pass_whole_message",
    "propagate_neighbours",
    "query_role",
    "rank",
    "tokenize",
    "turn_content",
    "turn_index_text",
]
