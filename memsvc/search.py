"""The read path: find the memories that answer a query, and assemble them into a context block.

Every memory of the user takes part (`memsvc.corpus`): dense similarity to the query, BM25 over
the turn and the turn before it, the speaker the query names, time cues, and the user's graph
(entities the query names, spread to their neighbours by personalised PageRank). `rank_corpus`
picks the pool and the store-side bonuses, and `memsvc.ranking.rank` (the one recipe) fuses the
signals, passes score to the turn before an answer, removes near-duplicates and merges adjacent
turns into one result of at most a few turns, so provenance stays precise. Archived memories
count in the scoring until they are purged but are never returned, and what consolidation's
forgetting judges of little importance ranks lower: a consolidation run hides rows and moves little
else.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import lru_cache
from itertools import pairwise
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from memsvc.consolidation import in_exchange, is_small_talk, judged_importance
from memsvc.corpus import DEFAULT_CACHE_MB, CorpusCache, CorpusRow, UserCorpus
from memsvc.dense import DenseRetriever
from memsvc.embedding import Embedder
from memsvc.errors import InvalidInput
from memsvc.extraction.base import EVERY_REQUEST
from memsvc.ingest import APPLIES_TO_KEY, is_instruction
from memsvc.local_time import local_time, said_day
from memsvc.ranking import (
    PLACE_QUERY,
    SUMMARY_QUERY,
    Candidate,
    RankedResult,
    RankingConfig,
    analyze_query,
    fuse_scores,
    importance_deficit,
    pass_to_survivors,
    pass_whole_message,
    propagate_neighbours,
    query_focus,
    rank,
    tokenize,
)
from memsvc.schemas import ContextRequest, ContextResponse, MemoryOut, SearchRequest
from memsvc.tenants import TenantContext
from memsvc.vector_index import DenseHit

# Questions about how things were: superseded facts are not pushed down for these.
PAST_QUERY = re.compile(
    r"\b(used to|before|previously|formerly|originally|at first|back (then|in)|earlier|ago|last year"
    r"|in (19|20)\d\d|was|were|did)\b",
    re.IGNORECASE,
)
# Questions about what was said or done in the conversation ("What did you recommend…", "Have I
# ever…", "the order in which I brought up…", "a summary of how my project went"), not requests
# for new work, which may name the past too: "As I mentioned, …", "How should I apply what you
# suggested?", "What were the causes of the war?", "Can you summarize these methods?" are
# requests. A standing instruction governs how the next answer is given, and its vector (the
# requests it governs: "resume content style") is near every question on its topic without
# stating anything that happened. BEAM tune half (issue 19): R@10 0.7048 -> 0.7107
# (summarization 0.283 -> 0.303, temporal 0.964 -> 1.000, no ability lower; the same with any
# "how many…", "what is my…", "what were the…", "summary" or "<wh-word> … you suggested" counted);
# LoCoMo has no instructions.
RECALL_QUERY = re.compile(
    r"\b(did|have|had) (i|you|we)\b(?! (got|any)\b)|\bdo you remember\b|\bremind me\b"
    r"|\b(what|everything) (i|you|we) (discussed|talked about|covered|said|told me)\b"
    r"|\b(what|which) (was|were) (the|that|your) ([\w-]+ ){0,4}(you|i|we) (recommended|suggested|mentioned"
    r"|said|gave|shared|described)\b"
    r"|\bour (conversations?|discussions?|chats?|sessions?)\b"
    r"|\b(across|throughout|over) (my|our|the|all) (\w+ )?(sessions|conversations|discussions)\b"
    r"|\border in which\b|\bsummar(y|i[sz]e)\b[^?.!]*\b(how|what) (i|my|we|our)\b"
    r"|\bwhat (was|were) my\b|\bwhen (did|was) (my|i)\b"
    # "Could you tell me what Ann likes?" asks what is known, not for advice ("…what I should do",
    # "…what the best way is").
    r"|\btell me (what|where|when|who|which|whether|if) (?!(i|we) (should|could|can|might|need)\b)"
    r"(?!(is|are|was|were|would be) (the|a|an) )(?!the (best|right|easiest|simplest)\b)",
    re.IGNORECASE,
)
# A request for work from the assistant ("Can you walk me through…", "How should I format it?",
# "What would you suggest…", "I'm planning to…"), which the user's stated preferences govern; a
# question about people or the past ("What does Ann like?") is not one.
REQUEST_QUERY = re.compile(
    r"\b(can|could|would|will) you\b|\bwhat (would|do) you (suggest|recommend|think)\b"
    r"|\bhow (do|can|should|would|could|might) i\b|\bhelp me\b|\b(show|walk|tell|give) me\b"
    r"|\bwhere (do you think|should) i\b|\b(what|which \w+) should (i|we)\b|\bshould i\b|\bis it worth\b"
    r"|\bwhat(?:'s| is| are) (the )?(best|right|easiest|simplest) (ways?|approach(es)?|methods?)\b"
    r"|\bwhat(?:'s| is) a good\b|\bany (\w+ )?(ideas|tips|suggestions|advice|recommendations)\b"
    r"|\bi'?m (planning|looking|trying|about|going|working|applying|updating)\b|\bi'?d like\b|\bi need\b"
    r"|^((hi|hey|hello)\b\W*)?(please\W*)?(explain|show|help|suggest|recommend|write|create|give|list|draft"
    r"|rewrite|translate|make|plan|compare|outline|find)\b",
    re.IGNORECASE,
)
_RANKING_KIND = {"turn": "turn", "passage": "passage", "session": "digest"}  # semantic: "fact"
_MESSAGE_KINDS = ("turn", "passage")
CONTEXT_CANDIDATES = 30
# Words the first results of a summary request may hold: no limit that a chat's messages reach.
SUMMARY_WORD_BUDGET = 10**9
Slots = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Global settings of the read path (measured on LoCoMo; see BENCHMARKS.md)."""

    ranking: RankingConfig = field(default_factory=RankingConfig)
    # Memories mentioning an entity the query names, or one near it in the graph (in z units).
    graph_boost: float = 0.5
    graph_damping: float = 0.85
    # A superseded fact, for a question about the present, ranks this much lower (in z units).
    # 2 let a closed turn ("I live in Zagreb.") with the speaker's and a place's boosts and its
    # neighbour's share rank above the current fact ("Sam lives in Graz"), which gets neither
    # boost; tune halves (LoCoMo, BEAM) equal at 2, 3 and 4 (BENCHMARKS.md, session 21).
    superseded_penalty: float = 4.0
    # Rows that take part in the full ranking: the best by fused dense + BM25 (exact backend), or
    # the BM25 top added to the dense top-k (index backend). LoCoMo users (~1.5k rows) fit whole.
    pool_size: int = 400
    # Archived rows (until purged) still take part in the scoring (the cosine's statistics, the
    # pool, BM25's maximum, what a turn passes to the turn before it) but are never returned: a
    # consolidation run then only hides rows, and the others rank as they did (issue 18).
    archived_in_scoring: bool = True
    # Memories that mention a place (the graph's entity type), when the query asks where or which
    # cities, countries, places… (in z units). LoCoMo tune half (issue 19): R@10 0.7989 -> 0.8049,
    # multi-hop 0.529 -> 0.551 (0.5: 0.8006; 1.5, 2, 3: 0.8040); BEAM tune half unchanged.
    place_boost: float = 1.0
    # The user's standing instructions whose topics are nearest the query ("Always cite sources
    # when I ask about history" for "Who won at Austerlitz?"), at most `instruction_limit` of
    # them, rank this much higher (z units) when the topic's cosine to the query is at least
    # `instruction_min_cosine`: a request is rarely worded like the instruction that governs it.
    # BEAM tune half (issue 19), against no boost: R@10 0.6413 -> 0.6497, instruction following
    # 0.589 -> 0.679 with the nearest one at 0.3; boost 4 left it below turns that gain role and
    # neighbour boosts. The three nearest at 0.25 (session 13): instruction following 0.679 ->
    # 0.857, all 0.6741 -> 0.6839 (two at 0.25: 0.6799; three at 0.3: 0.6720); the topics of a
    # user's instructions are often near each other ("resume formatting", "resume design").
    instruction_boost: float = 8.0
    instruction_min_cosine: float = 0.25
    instruction_limit: int = 3
    # A request for work (`REQUEST_QUERY`) is governed by the user's stated preferences too ("User
    # prefers step-by-step explanations with concrete examples like coin tosses"): the
    # `preference_limit` nearest the request, each at cosine `preference_min_cosine` or more,
    # rank `preference_boost` higher. BEAM tune half (issue 19): preference following 0.857 ->
    # 0.929, all 0.7107 -> 0.7186 (0.15-0.25 alike; 0.3: 0.857). Below 0.15 the one more
    # preference found (cosine 0.08 to "how to find the probability of drawing a red card", 0.1
    # with its BM25 share) came with preferences unrelated to the request: MiniLM puts unrelated
    # texts at 0.1-0.13 ("Tom prefers minimal dependencies" for a book on the Roman empire), and
    # one common word ("work") lifted "prefers a formal tone for anything work related" for "How do
    # vaccines work?". LoCoMo asks no requests; boosted for every question, its tune R@10 fell
    # 0.8043 -> 0.7857. Boost 6: 0.929; 1-4: 0.857 (below the turns near the request).
    preference_limit: int = 3
    preference_min_cosine: float = 0.2
    preference_boost: float = 8.0


class SearchEngine:
    """Search over one user's memories. With a `DenseRetriever` (the GPU read path) the dense
    stage is its batched top-k over the device-resident index, and ranking runs on that pool plus
    the BM25 top and their neighbouring turns; without one, every row is scored on the CPU."""

    def __init__(
        self,
        embedder: Embedder,
        config: SearchConfig | None = None,
        dense: DenseRetriever | None = None,
        *,
        cache_bytes: int = DEFAULT_CACHE_MB * 2**20,
    ) -> None:
        self.embedder = embedder
        self.config = config or SearchConfig()
        self.corpora = CorpusCache(cache_bytes)
        self.dense = dense

    def search(
        self, session: Session, ctx: TenantContext, request: SearchRequest, *, keep_covered: bool = False
    ) -> list[MemoryOut]:
        """Best-first memories for `request.query`, each with the message ids it came from.

        A memory whose source turns an earlier result already returns is dropped (it adds words,
        not evidence) unless `keep_covered`: a context block wants a fact beside its turn."""
        return self._search(session, ctx, request, keep_covered)[0]

    def _search(
        self,
        session: Session,
        ctx: TenantContext,
        request: SearchRequest,
        keep_covered: bool,
        with_entities: bool = False,
        with_standing: bool = False,
    ) -> tuple[list[MemoryOut], list[tuple[str, list[str]]], set[uuid.UUID]]:
        """Results, and (`with_entities`) the entities they mention, read under one hold of the
        corpus; `with_standing`: the user's instructions for every request first, whatever the
        query, and the ids of the instructions that govern the request (those and the ones nearest
        it)."""
        # The query is embedded before the corpus is synced and held: a sync in flight for this
        # user (after a write) overlaps the embedding instead of adding to it.
        focus = query_focus(request.query)
        if self.dense is None:
            query_vector, hits = self.embedder.embed([focus])[0], None
        else:
            partition = self.dense.index.partition(ctx.tenant_id, request.user_id)
            query_vector, hits = self.dense(focus, partition)
        with self.corpora.reading(session, ctx.tenant_id, request.user_id) as corpus:
            if not len(corpus):
                return [], [], set()
            results, governing = _ranked(
                corpus, request, query_vector, self.config, dense_hits=hits, keep_covered=keep_covered
            )
            governs: set[uuid.UUID] = set()
            if with_standing:
                # A context block holds what is worth telling a model: not "thanks!" or "ok cool",
                # which only fill the budget left when little else matches.
                results = [item for item in results if not _small_talk(corpus, item)]
                standing = _standing_instructions(corpus, request)
                shown = {item.id for item in standing}
                results = [*standing, *(item for item in results if item.id not in shown)]
                governs = shown | {corpus.rows[slot].id for slot in governing}
            return results, related_entities(corpus, results) if with_entities else [], governs

    def context(self, session: Session, ctx: TenantContext, request: ContextRequest) -> ContextResponse:
        """A prompt-ready block under `max_tokens`: current facts, then events in time order, then
        the entities they mention; every line names the messages it came from."""
        search = SearchRequest(
            query=request.query, user_id=request.user_id, limit=CONTEXT_CANDIDATES, as_of=request.as_of
        )
        results, entities, governs = self._search(
            session, ctx, search, keep_covered=True, with_entities=True, with_standing=True
        )
        return assemble_context(results, request.max_tokens, entities, as_of=request.as_of, governs=governs)


def rank_corpus(
    corpus: UserCorpus,
    request: SearchRequest,
    query_vector: npt.NDArray[np.float32],
    config: SearchConfig,
    *,
    dense_hits: Sequence[DenseHit] | None = None,
    keep_covered: bool = False,
) -> list[MemoryOut]:
    """Rank a user's corpus for one query (the part of search after the I/O): the rows the request
    may see, the pool worth ranking, the graph and supersession bonuses, then `ranking.rank`."""
    return _ranked(corpus, request, query_vector, config, dense_hits=dense_hits, keep_covered=keep_covered)[0]


def _ranked(
    corpus: UserCorpus,
    request: SearchRequest,
    query_vector: npt.NDArray[np.float32],
    config: SearchConfig,
    *,
    dense_hits: Sequence[DenseHit] | None = None,
    keep_covered: bool = False,
) -> tuple[list[MemoryOut], dict[int, float]]:
    """`rank_corpus`'s results, and the slots of the instructions and preferences that governed
    the request (`_governing`)."""
    eligible = _eligible(corpus, request, with_archived=config.archived_in_scoring)
    if not len(eligible):
        return [], {}
    query_vector = query_vector.astype(np.float32)
    lexical_all = corpus.bm25.score(request.query)
    governing = _governing(corpus, eligible, request, query_vector, config)
    # A question about now wants current values: what replaced a memory ranks above it.
    about_now = request.as_of is None and not PAST_QUERY.search(request.query)
    if dense_hits is not None:
        pool, scored = _pool(corpus, eligible, dense_hits, lexical_all, config.pool_size)
        pool = _with_survivors(corpus, pool, list(governing), eligible if about_now else None)
        stats = corpus.dense_stats(query_vector)
        dense = _pool_dense(corpus, pool, scored, query_vector)
    else:
        # One pass over every slot reads the rows in place; gathering the eligible rows first
        # would copy them (77 MB at 50k memories) on every query.
        by_slot = _dot(corpus.vectors, query_vector)
        dense_all = by_slot[eligible]
        stats = (float(dense_all.mean()), float(dense_all.std()))
        pool = _with_survivors(
            corpus,
            _best_pool(corpus, eligible, dense_all, lexical_all[eligible], stats, config),
            list(governing),
            eligible if about_now else None,
        )
        dense = by_slot[pool]
    lexical = lexical_all[pool]
    rows = [corpus.rows[i] for i in pool]
    # A long message whose passages are in the pool is returned through them, never whole.
    # A summary request is answered from whole messages instead: it asks for their substance
    # (BEAM tune half: summarization R@10 0.151 -> 0.167, R@20 0.203 -> 0.302, at 2,801 words in
    # its top 10 instead of 520); a pointed question keeps the passage that answers it.
    whole = SUMMARY_QUERY.search(request.query) is not None
    cut = (
        set()
        if whole
        else {row.source_message_ids[0] for row in rows if row.kind == "passage" and row.source_message_ids}
    )
    speakers = corpus.speakers
    candidates = [
        Candidate(
            id=row.key,
            content=row.line,
            kind=_RANKING_KIND.get(row.kind, "fact"),  # type: ignore[arg-type]
            speaker=row.speaker if row.kind in _MESSAGE_KINDS else None,
            event_time=row.event_at,
            session=row.session_id if row.kind == "turn" else None,
            position=row.position if row.kind == "turn" else None,
            source_message_ids=row.source_message_ids,
            dense=float(d),
            lexical=float(lx),
            role=row.role if row.kind in _MESSAGE_KINDS else None,
            episode=row.session_id if row.kind != "session" else None,
            returnable=row.status != "archived"
            and (not row.never_valid or (request.as_of is not None and _called_off_plan(row)))
            and not (whole and row.kind == "passage")
            and not (row.kind == "turn" and row.source_message_ids and row.source_message_ids[0] in cut),
            importance=_importance(corpus, slot, speakers),
            merged_into=row.metadata.get("merged_into") if row.status == "archived" else None,
            superseded_by=str(row.superseded_by) if about_now and row.status == "superseded" else None,
        )
        for slot, row, d, lx in zip(pool, rows, dense, lexical, strict=True)
    ]
    named = analyze_query(request.query, speakers).named_speakers
    n = len(rows)
    bonuses = {"graph": _graph_bonus(corpus, rows, request.query, named, config), "superseded": np.zeros(n)}
    if about_now:
        bonuses["superseded"] = -config.superseded_penalty * np.fromiter(
            (row.status == "superseded" for row in rows), dtype=np.float64, count=n
        )
    bonuses["place"] = _place_bonus(corpus, rows, request.query, config)
    bonuses["instruction"] = np.zeros(n)
    for slot, boost in governing.items():
        bonuses["instruction"][pool.index(slot)] = boost
    bonus = sum(bonuses.values(), np.zeros(n))
    ranking = replace(
        config.ranking,
        max_results=request.limit,
        dedup_covered=config.ranking.dedup_covered and not keep_covered,
    )
    if whole:
        # A summary is of what was asked and what was answered: adjacent messages ranked within
        # the merge depth join one result whatever their words (BEAM tune half: summarization
        # R@10 0.157 -> 0.271, all 0.6712 -> 0.6839).
        ranking = replace(ranking, merge_word_budget=SUMMARY_WORD_BUDGET, merge_min_share=0.0)
    results = rank(candidates, request.query, speakers, ranking, dense_stats=stats, bonus=bonus)
    by_id = {row.key: row for row in rows}
    out = [_result_out(result, by_id, request.user_id) for result in results]
    if request.explain:
        signals = explain(results, candidates, request.query, speakers, ranking, stats, bonuses)
        for item, explained in zip(out, signals, strict=True):
            item.metadata = {**item.metadata, "explain": explained}
    return out, governing


def explain(
    results: Sequence[RankedResult],
    candidates: Sequence[Candidate],
    query: str,
    speakers: Sequence[str],
    config: RankingConfig,
    dense_stats: tuple[float, float],
    bonuses: dict[str, npt.NDArray[np.float64]],
) -> list[dict[str, float]]:
    """Each result's score signal by signal, the parts adding up to the score: ranking's own fusion
    run once per signal with the other weights at zero, the search layer's `bonuses` (graph,
    supersession, place, governing instruction), what a long message passed to its best passage and
    what neighbouring turns passed on; plus the raw cosine and BM25. A merged result's breakdown is
    its best-scoring turn's."""
    analysis = analyze_query(query, speakers)
    zero = replace(
        config,
        dense_weight=0.0,
        lexical_weight=0.0,
        speaker_boost=0.0,
        temporal_boost=0.0,
        role_boost=0.0,
        order_role_boost=0.0,
        low_importance_penalty=0.0,
    )

    def only(alone: RankingConfig) -> npt.NDArray[np.float64]:
        return fuse_scores(candidates, analysis, alone, dense_stats=dense_stats)

    fused = fuse_scores(candidates, analysis, config, dense_stats=dense_stats)
    fused = fused + sum(bonuses.values(), np.zeros(len(candidates)))
    parts = {
        "dense": only(replace(zero, dense_weight=config.dense_weight)),
        "keyword": only(replace(zero, lexical_weight=config.lexical_weight)),
        "time": only(replace(zero, temporal_boost=config.temporal_boost)),
        "speaker": only(replace(zero, speaker_boost=config.speaker_boost)),
        "role": only(replace(zero, role_boost=config.role_boost, order_role_boost=config.order_role_boost)),
        **bonuses,
        "message": pass_whole_message(candidates, fused, config) - fused,
    }
    fused = fused + parts["message"]
    parts |= {
        "neighbours": propagate_neighbours(candidates, fused, config) - fused,
        "importance": -config.low_importance_penalty * importance_deficit(candidates),
    }
    before = fused + parts["neighbours"] + parts["importance"]
    parts["merged"] = pass_to_survivors(candidates, before) - before
    total = before + parts["merged"]
    index = {c.id: i for i, c in enumerate(candidates)}
    out = []
    for result in results:
        lead = max((index[m.id] for m in result.members), key=lambda i: float(total[i]))
        signals = {name: round(float(values[lead]), 4) for name, values in parts.items()}
        signals["cosine"] = round(candidates[lead].dense, 4)
        signals["bm25"] = round(candidates[lead].lexical, 4)
        out.append(signals)
    return out


def _dot(vectors: npt.NDArray[np.float32], query: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Each row's dot product with the query. Not BLAS: its matrix-vector product rounds a row
    differently by where the row sits in the matrix, and a corpus updated in place must score
    exactly like a fresh one (einsum's loop is the same for every row; ~1.2x BLAS's time)."""
    return np.einsum("ij,j->i", vectors, query)  # type: ignore[no-any-return]


def _graph_bonus(
    corpus: UserCorpus, rows: Sequence[CorpusRow], query: str, speakers: Sequence[str], config: SearchConfig
) -> npt.NDArray[np.float64]:
    """Personalised PageRank from the entities the query names (speakers aside: the speaker
    boost covers them), turned into a bonus for the memories that mention those entities."""
    bonus = np.zeros(len(rows), dtype=np.float64)
    if not config.graph_boost or not corpus.entities:
        return bonus
    seeds = _named_entities(query, corpus, {s.lower() for s in speakers})
    if not seeds:
        return bonus
    graph = nx.Graph()
    graph.add_nodes_from(seeds)
    graph.add_edges_from(corpus.edges)
    weights = nx.pagerank(graph, alpha=config.graph_damping, personalization=dict.fromkeys(seeds, 1.0))
    top = max(weights.values())
    for i, row in enumerate(rows):
        if row.entity_ids:
            bonus[i] = config.graph_boost * max(weights.get(e, 0.0) for e in row.entity_ids) / top
    return bonus


def _place_bonus(
    corpus: UserCorpus, rows: Sequence[CorpusRow], query: str, config: SearchConfig
) -> npt.NDArray[np.float64]:
    """`SearchConfig.place_boost` for the memories that mention a place, when the query asks for
    one (`ranking.PLACE_QUERY`)."""
    if not config.place_boost or not PLACE_QUERY.search(query):
        return np.zeros(len(rows), dtype=np.float64)
    labels = corpus.entity_labels
    return config.place_boost * np.fromiter(
        (any(e in labels and labels[e][1] == "place" for e in row.entity_ids) for row in rows),
        dtype=np.float64,
        count=len(rows),
    )


def _with_previous_turns(corpus: UserCorpus, chosen: set[int], eligible: Slots) -> list[int]:
    """Add the turn before each chosen turn (it may inherit an answer's score); eligible rows only,
    in canonical order."""
    for slot in list(chosen):
        previous = corpus.previous_turn(slot)
        if previous is not None:
            chosen.add(previous)
    allowed = np.zeros(len(corpus.rows), dtype=np.bool_)
    allowed[eligible] = True
    return sorted((slot for slot in chosen if allowed[slot]), key=corpus.sort_key)


def _pool(
    corpus: UserCorpus, eligible: Slots, hits: Sequence[DenseHit], lexical: np.ndarray, size: int
) -> tuple[list[int], dict[int, float]]:
    """The rows ranking looks at when the dense stage gave only a top-k: those hits, the BM25 top,
    and the turns before them; and the index's score of each hit, by slot."""
    row_of = corpus.row_index()
    scored = {row_of[h.memory_id]: h.score for h in hits if h.memory_id in row_of}
    chosen = set(scored)
    order = corpus.order
    best = order[np.argsort(-lexical[order], kind="stable")[:size]]
    chosen.update(int(i) for i in best if lexical[i] > 0)
    return _with_previous_turns(corpus, chosen, eligible), scored


def _pool_dense(
    corpus: UserCorpus, pool: list[int], scored: dict[int, float], query: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """The dense score of each pool row: the index's own score for the rows it returned; the rows it
    did not score (the BM25 top and previous turns, half a LoCoMo pool: see BENCHMARKS.md) from
    the corpus's vectors, which is why the corpus keeps them with the index backend too."""
    dense = np.fromiter((scored.get(slot, np.nan) for slot in pool), dtype=np.float32, count=len(pool))
    rest = np.flatnonzero(np.isnan(dense))
    if len(rest):
        dense[rest] = _dot(corpus.vectors[np.asarray(pool)[rest]], query)
    return dense


def _best_pool(
    corpus: UserCorpus,
    eligible: Slots,
    dense: np.ndarray,
    lexical: np.ndarray,
    stats: tuple[float, float],
    config: SearchConfig,
) -> list[int]:
    """For a large user, rank only the rows whose fused dense + BM25 score is in the best
    `pool_size` (boosts and propagation then move results within that pool): the Python part of
    ranking stays the same size however many memories the user has."""
    if len(eligible) <= config.pool_size:
        return eligible.tolist()  # type: ignore[no-any-return]
    mean, std = stats
    top = float(lexical.max())
    score = (dense - mean) / (std or 1.0) + (config.ranking.lexical_scale * lexical / top if top > 0 else 0.0)
    best = np.argpartition(-score, config.pool_size)[: config.pool_size]
    chosen = {int(eligible[i]) for i in best}
    chosen.add(int(eligible[int(np.argmax(lexical))]))  # keeps the BM25 normalisation of the full pool
    return _with_previous_turns(corpus, chosen, eligible)


def _named_entities(query: str, corpus: UserCorpus, speakers: set[str]) -> list[uuid.UUID]:
    """Entities whose (normalised) name or alias appears in the query as whole words."""
    words = " " + " ".join(re.findall(r"[a-z0-9']+", query.lower())) + " "
    stems = set(tokenize(query))
    seeds = []
    for name, entity_id in corpus.entities.items():
        if name in speakers or len(name) < 3:
            continue
        if f" {name} " in words or (" " not in name and name in stems):
            seeds.append(entity_id)
    return list(dict.fromkeys(seeds))


def _with_survivors(
    corpus: UserCorpus, pool: list[int], governing: Sequence[int] = (), successors_of: Slots | None = None
) -> list[int]:
    """The pool with the memory each archived row of it was merged into (which now stands for
    it), the `governing` instructions and preferences, and, given the eligible rows
    (`successors_of`), the eligible memory that replaced each superseded row of it, in canonical
    order."""
    slot_of = corpus.row_index()
    extra = set(governing)
    successors = []
    for slot in pool:
        row = corpus.rows[slot]
        into = row.metadata.get("merged_into") if row.status == "archived" else None
        survivor = slot_of.get(uuid.UUID(into)) if isinstance(into, str) else None
        if survivor is not None and corpus.rows[survivor].status != "archived":
            extra.add(survivor)
        if successors_of is not None and row.status == "superseded" and row.superseded_by in slot_of:
            successors.append(slot_of[row.superseded_by])
    if successors and successors_of is not None:  # the few looked up among the eligible, not a set of all
        found = np.asarray(successors, dtype=np.int64)
        extra.update(found[np.isin(found, successors_of)].tolist())
    if not extra.difference(pool):
        return pool
    return sorted(extra.union(pool), key=corpus.sort_key)


def _governing(
    corpus: UserCorpus,
    eligible: Slots,
    request: SearchRequest,
    query_vector: npt.NDArray[np.float32],
    config: SearchConfig,
) -> dict[int, float]:
    """The slots of the instructions and preferences that govern the request, each with its boost:
    none for a question about what was said; for a request for work, the user's stated preferences
    nearest it too."""
    governing: dict[int, float] = {}
    if not RECALL_QUERY.search(request.query):
        current = request.as_of is None
        if REQUEST_QUERY.search(request.query):
            for slot in _governing_preferences(corpus, eligible, query_vector, config, current=current):
                governing[slot] = config.preference_boost
        for slot in _governing_instructions(corpus, eligible, query_vector, config, current=current):
            governing[slot] = config.instruction_boost
    return governing


def _governing_instructions(
    corpus: UserCorpus,
    eligible: Slots,
    query_vector: npt.NDArray[np.float32],
    config: SearchConfig,
    *,
    current: bool,
) -> list[int]:
    """The slots of the searchable standing instructions whose topics are nearest the query, at
    most `SearchConfig.instruction_limit`, each near enough (`instruction_min_cosine`)."""
    if not config.instruction_boost:
        return []
    live = _live_instructions(corpus, current)
    limit, min_cosine = config.instruction_limit, config.instruction_min_cosine
    return _nearest(corpus, eligible, live, query_vector, limit, min_cosine)


def _governing_preferences(
    corpus: UserCorpus,
    eligible: Slots,
    query_vector: npt.NDArray[np.float32],
    config: SearchConfig,
    *,
    current: bool,
) -> list[int]:
    """The slots of the speakers' own stated preferences (not instructions, which name their
    requests; not "Lena's friend Ann likes hiking") nearest a request, at most
    `SearchConfig.preference_limit`, each near enough (`preference_min_cosine`)."""
    if not config.preference_boost or not config.preference_limit:
        return []
    someone_of = tuple(f"{name.lower()}'s " for name in corpus.speakers)  # "Lena's friend Ann likes…"
    own = [s for s in corpus.preference_slots() if not corpus.rows[s].content.lower().startswith(someone_of)]
    live = _live(corpus, own, current)
    limit, min_cosine = config.preference_limit, config.preference_min_cosine
    return _nearest(corpus, eligible, live, query_vector, limit, min_cosine)


def _nearest(
    corpus: UserCorpus,
    eligible: Slots,
    candidates: Slots,
    query_vector: npt.NDArray[np.float32],
    limit: int,
    min_cosine: float,
) -> list[int]:
    """Of the candidate slots the request may see, the `limit` nearest the query, each at least
    `min_cosine` from it."""
    # isin, not intersect1d: a handful of candidates against up to every slot (no sort of those).
    slots = candidates[np.isin(candidates, eligible)] if len(candidates) else candidates
    if not len(slots):
        return []
    cosines = _dot(corpus.vectors[slots], query_vector)
    nearest = np.argsort(-cosines, kind="stable")[:limit]
    return [int(slots[i]) for i in nearest if cosines[i] >= min_cosine]


def _live_instructions(corpus: UserCorpus, current: bool) -> Slots:
    """The slots of the user's standing instructions that may govern a request."""
    return _live(corpus, corpus.instruction_slots(), current)


def _live(corpus: UserCorpus, slots: list[int], current: bool) -> Slots:
    """Of these slots, those that may govern a request: now, the ones no newer memory for the same
    thing has superseded; `as_of` a past time, the one in force then too (the as-of filter of
    `_eligible` tells)."""
    statuses = ("active",) if current else ("active", "superseded")
    return np.asarray([s for s in slots if corpus.rows[s].status in statuses], dtype=np.int64)


def _standing_instructions(corpus: UserCorpus, request: SearchRequest) -> list[MemoryOut]:
    """The user's instructions for every request ("Always answer in Spanish"), oldest first, as
    they stood at `as_of` (or now): every context block carries them, whatever it is about."""
    live = np.asarray(
        [
            slot
            for slot in _live_instructions(corpus, request.as_of is None).tolist()
            if not corpus.rows[slot].never_valid
            and corpus.rows[slot].metadata.get(APPLIES_TO_KEY) == EVERY_REQUEST
        ],
        dtype=np.int64,
    )
    if not len(live):  # most users: no list of every eligible row to read
        return []
    rows = [corpus.rows[slot] for slot in live[np.isin(live, _eligible(corpus, request))].tolist()]
    rows.sort(key=lambda row: row.event_at)
    return [_row_out(row, request.user_id, 0.0, row.source_message_ids) for row in rows]


def _small_talk(corpus: UserCorpus, item: MemoryOut) -> bool:
    """Whether a result is one row that search ranks lower as small talk (`_importance`)."""
    slot = corpus.row_index().get(item.id)
    return slot is not None and _importance(corpus, slot, corpus.speakers) < corpus.rows[slot].importance


def _importance(corpus: UserCorpus, slot: int, speakers: tuple[str, ...]) -> float:
    """The row's importance as consolidation's forgetting judges it (`judged_importance`), with
    the turns around it from the corpus. Pinned rows, digests and summaries are never forgotten:
    they keep what is stored."""
    row = corpus.rows[slot]
    if row.pinned or row.kind in ("session", "summary") or not _chatter(row.content, speakers):
        return row.importance
    exchange = False
    if row.kind == "turn":
        previous = corpus.previous_turn(slot)
        before = corpus.rows[previous].content if previous is not None else None
        exchange = in_exchange(row.content, before, corpus.next_turn(slot) is not None)
    return judged_importance(row.content, row.importance, speakers, exchange=exchange)


@lru_cache(maxsize=65_536)
def _chatter(content: str, speakers: tuple[str, ...]) -> bool:
    # Cached: a pool's few hundred rows are judged on every query, and most repeat across queries.
    return is_small_talk(content, speakers)


def _eligible(corpus: UserCorpus, request: SearchRequest, *, with_archived: bool = False) -> Slots:
    """Rows the request may see, in canonical order: types, filters, and the world as of `as_of`;
    archived rows only `with_archived` (to score, never to return)."""
    filters = request.filters or {}
    for key in ("agent_id", "session_id", "kind"):
        if key in filters and not isinstance(filters[key], str):
            raise InvalidInput(f"filters.{key} must be a string")
    metadata = filters.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInput("filters.metadata must be an object")
    if (
        not filters
        and request.as_of is None
        and set(request.types or ()) in (set(), {"episodic", "semantic"})
    ):
        return corpus.order if with_archived else corpus.unarchived()
    types = set(request.types or ("episodic", "semantic"))
    as_of = request.as_of
    out = []
    for i in corpus.order.tolist():
        row = corpus.rows[i]
        if row.type not in types or (row.status == "archived" and not with_archived):
            continue
        if any(
            key in filters and getattr(row, key) != filters[key] for key in ("agent_id", "session_id", "kind")
        ):
            continue
        # Each key present with that value: `{"topic": null}` is a stored null, not a missing key.
        if metadata and any(
            k not in row.metadata or not _same_json(row.metadata[k], v) for k, v in metadata.items()
        ):
            continue
        if as_of is not None and not _held_at(row, as_of):
            continue
        out.append(i)
    return np.asarray(out, dtype=np.int64)


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: `true` is not `1` (a Python bool is an int), `1` is `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _held_at(row: CorpusRow, as_of: datetime) -> bool:
    """Whether a row is part of the world as of `as_of`: a fact that held then, whenever it was told
    ("I moved to Boston last week", said on 10 June, holds from 3 June: a search as of 5 June finds
    it, and the old city it closed on 3 June no longer), a plan made by then; a message said by then,
    until it went out of date with its fact."""
    if row.valid_to is not None and row.valid_to <= as_of:
        return False
    if row.type == "semantic":
        held_from = row.valid_from or row.event_at
        # A plan is held from when it was made ("I'm going to Tokyo in June", said in March, is
        # the plan by April), not from the date it is for.
        return (min(held_from, row.event_at) if row.kind == "plan" else held_from) <= as_of
    return row.event_at <= as_of and (row.valid_from is None or row.valid_from <= as_of)


def _called_off_plan(row: CorpusRow) -> bool:
    """A plan called off before its time: it never happened (no search about now returns it), but
    it was the plan from when it was made until it was called off, and a search as of a time
    between finds it. A corrected plan (its validity ending where it began) was never the plan."""
    return (
        row.kind == "plan"
        and row.valid_from is not None
        and row.valid_to is not None
        and row.valid_to < row.valid_from
    )


def _result_out(result: RankedResult, rows: dict[str, CorpusRow], user_id: str) -> MemoryOut:
    members = [rows[m.id] for m in result.members]
    first = members[0]
    if len(members) == 1:
        return _row_out(first, user_id, result.score, result.source_message_ids)
    # Turns merged into one excerpt: one slot, provenance still exact. Where a turn was left out
    # between two (a question about the order of things joins a speaker's turns across the
    # replies), "…" says so.
    lines = [members[0].line]
    for before, member in pairwise(members):
        if (
            before.position is not None
            and member.position is not None
            and member.position > before.position + 1
        ):
            lines.append("…")
        lines.append(member.line)
    content = "\n".join(lines)
    metadata = {"memory_ids": [str(m.id) for m in members]}
    return _row_out(first, user_id, result.score, result.source_message_ids, content, "excerpt", metadata)


def _row_out(
    first: CorpusRow,
    user_id: str,
    score: float,
    source_message_ids: Sequence[str],
    content: str | None = None,
    kind: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> MemoryOut:
    """A result: `first`'s row, or (with `content`, `kind`, `metadata`) an excerpt it opens."""
    whole = content is None
    return MemoryOut(
        id=first.id,
        type=first.type,
        kind=first.kind if whole else kind,
        content=first.content if whole else content,
        score=score,
        user_id=user_id,
        agent_id=first.agent_id,
        session_id=first.session_id,
        speaker=first.speaker if whole else None,
        role=first.role if whole else None,
        created_at=first.created_at,
        event_at=local_time(first.event_at, first.utc_offset),
        valid_from=first.valid_from,
        valid_to=first.valid_to,
        status=first.status,
        pinned=first.pinned,
        source_message_ids=list(source_message_ids),
        metadata=first.metadata if whole else metadata or {},
    )


# Chinese, Japanese and Korean characters are about a token each (a run of them is no one word).
_CJK = "\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Tokens as LLM tokenizers roughly count them (words and punctuation), without a model."""
    return len(_TOKEN.findall(text))


# An assistant's opening courtesies ("Certainly!", "Great question!") tell a model nothing: a
# context line leaves them out (the memory keeps its words).
_PLEASANTRIES = re.compile(
    r"(^|assistant: )(?:(?:(?:certainly|sure|of course|absolutely|definitely|no problem|great|excellent"
    r"|(?:great|good|excellent) (?:question|idea|choice))"
    r"|(?:(?:great|good|nice) (?:job|work)|well done|i'?d be (?:happy|glad) to help|i'?m (?:happy|glad) to"
    r" help|happy to help)[^.!?\n/]{0,50})[.!]+\s+)+",
    re.IGNORECASE,
)

# Nor does an assistant's saying it is an AI ("I am an AI language model, so I can't book anything,
# but I can suggest…"): the sentence goes, or its part before "but".
_AI_DISCLAIMER = re.compile(
    r"(^|(?<=[.!?]\s)|assistant: )(?:as an ai\b|i(?:'m| am) (?:just |only )?an ai\b)[^.!?\n]*?"
    r"(?:,?\s+but\s+(?P<next>\w)|[.!?]+(?:\s+|$))",
    re.IGNORECASE,
)


def _without_courtesies(body: str) -> str:
    body = _PLEASANTRIES.sub(r"\1", body)
    return _AI_DISCLAIMER.sub(lambda m: m.group(1) + (m.group("next") or "").upper(), body)


# A passage repeats the last sentences of the one before it (so an answer cut in two is whole in
# one); in a context block that holds both, a sentence of a message is written once.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _line(item: MemoryOut, as_of: datetime | None = None, written: set[str] | None = None) -> str:
    """`written` (a passage's): the sentences of its message that lines before it hold."""
    # Days on the speaker's calendar: `event_at` comes in the speaker's offset.
    zone = item.event_at.tzinfo if item.event_at else None
    day = _shown_day(item)
    stamp = f"[{day.isoformat()}] " if day else ""
    who = _who(item) if item.kind in _MESSAGE_KINDS else ""
    body = item.content.replace("\n", " / ")
    if item.role == "assistant" or item.kind == "excerpt":
        body = _without_courtesies(body)
    if written is not None:
        sentences = _SENTENCE_END.split(body)
        body = " ".join(s for s in sentences if s not in written) or body
    # A fact a newer one replaced says so, or a model reads two current home towns; as of a past
    # time, only an end that had come by then.
    # An event happened when it did: a later value ("adopted Biscuit" after "Milo passed away")
    # ends the state it left, not the event, so it gets no "(until …)".
    ended = item.valid_to if item.type == "semantic" and item.kind != "event" else None
    if ended and as_of is not None and ended > as_of:
        ended = None
    until = f" (until {said_day(ended, zone).isoformat()})" if ended else ""
    return f"- {stamp}{who}{body}{until} (src: {_refs(item.source_message_ids)})"


def _in_force(item: MemoryOut, as_of: datetime | None) -> bool:
    """Whether a result held now (its status), or at `as_of` (its validity)."""
    if as_of is None:
        return item.status == "active"
    starts = item.valid_from or item.event_at
    return (starts is None or starts <= as_of) and (item.valid_to is None or as_of < item.valid_to)


def _shown_day(item: MemoryOut) -> date | None:
    """A line's day: a fact's from when it holds (a day said, or the moment it was stated), any
    other memory's from when it happened."""
    if item.type == "semantic" and item.valid_from and item.valid_from != item.event_at:
        return said_day(item.valid_from, item.event_at.tzinfo if item.event_at else None)
    return item.event_at.date() if item.event_at else None


def _who(item: MemoryOut) -> str:
    """Who said a message: its speaker, with the role where the name alone does not tell ("Ava
    (assistant)"); a message without a name is its role ("user", "assistant")."""
    if not item.speaker:
        return f"{item.role}: " if item.role else ""
    if item.role and item.role != "user" and item.speaker != item.role:
        return f"{item.speaker} ({item.role}): "
    return f"{item.speaker}: "


def _refs(message_ids: Sequence[str]) -> str:
    return ",".join(message_ids[:5]) + ("…" if len(message_ids) > 5 else "")


def related_entities(corpus: UserCorpus, results: Sequence[MemoryOut]) -> list[tuple[str, list[str]]]:
    """Entities the results mention, most mentioned first, as (label, message ids mentioning it):
    of an excerpt, only its turns that name the entity."""
    sources: dict[uuid.UUID, dict[str, None]] = {}
    slot_of = corpus.row_index()
    for item in results:
        memory_ids = [uuid.UUID(m) for m in item.metadata.get("memory_ids", [])] or [item.id]
        for memory_id in memory_ids:
            slot = slot_of.get(memory_id)
            said = corpus.rows[slot].source_message_ids if slot is not None else item.source_message_ids
            for entity_id in corpus.mentions_of(memory_id):
                sources.setdefault(entity_id, {}).update(dict.fromkeys(said))
    ranked = sorted(sources.items(), key=lambda kv: -len(kv[1]))
    out = []
    for entity_id, messages in ranked:
        name, entity_type = corpus.entity_labels.get(entity_id, ("", ""))
        if name:
            out.append((f"{name} ({entity_type})", list(messages)))
    return out


_STATE_LABEL = re.compile(r"^[^:]{1,60}?'s \w+: ")  # "Ann's job: " (`consolidation.state_sentence`)
_FACT_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


_FOR_NOW = frozenset({"now", "currently", "nowadays", "still"})  # "Ann works at Microsoft now" says no more


def _fact_words(content: str) -> frozenset[str]:
    return frozenset(_FACT_WORD.findall(_STATE_LABEL.sub("", content).lower())) - _FOR_NOW


def assemble_context(
    results: Sequence[MemoryOut],
    max_tokens: int,
    entities: Sequence[tuple[str, list[str]]] = (),
    *,
    as_of: datetime | None = None,
    governs: Collection[uuid.UUID] | None = None,
) -> ContextResponse:
    """Fill the budget best-first, then lay out the user's standing instructions, facts, events
    in time order, and the entities they mention with whatever budget is left. `as_of` a past
    time, the block is the world as it stood then: the instructions in force then stand, and no
    line tells when a fact stopped holding after it. Given the ids of the instructions that
    `governs` the request, one for other requests ("When the user asks about resumes: …" beside a
    dinner recipe) is listed with the facts, not as an instruction to follow."""
    header_instructions, header_facts, header_events = (
        "## Instructions",
        "## Facts",
        "## Events (oldest first)",
    )
    headers = count_tokens(header_instructions) + count_tokens(header_facts) + count_tokens(header_events)
    budget = max_tokens - headers - 3
    chosen: list[tuple[MemoryOut, str]] = []
    used = 0
    written: dict[str, set[str]] = {}  # message id -> its sentences the lines hold
    stated: list[tuple[frozenset[str], frozenset[str]]] = []  # (sources, words) of the facts chosen
    for item in results:
        if item.type == "semantic":
            # "Ann's employer: Ann works at Stripe" says nothing "Ann works as an engineer at
            # Stripe", from the same message, has not said: one line is enough.
            sources, words = frozenset(item.source_message_ids), _fact_words(item.content)
            if any(sources == s and words <= w for s, w in stated):
                continue
            stated.append((sources, words))
        passage = item.kind == "passage" and bool(item.source_message_ids)
        said = written.setdefault(item.source_message_ids[0], set()) if passage else None
        line = _line(item, as_of, said)
        cost = count_tokens(line) + 1
        if used + cost > budget:
            continue
        chosen.append((item, line))
        used += cost
        if said is not None:
            said.update(_SENTENCE_END.split(item.content.replace("\n", " / ")))

    def standing(item: MemoryOut) -> bool:
        # An instruction a newer one replaced is history, a fact like any other.
        return (
            is_instruction(item.kind or "", item.metadata)
            and _in_force(item, as_of)
            and (governs is None or item.id in governs)
        )

    instructions = [(i, line) for i, line in chosen if standing(i)]
    facts = [(i, line) for i, line in chosen if i.type == "semantic" and not standing(i)]
    events = sorted(
        ((i, line) for i, line in chosen if i.type != "semantic"),
        key=lambda pair: pair[0].event_at or pair[0].created_at or datetime.min.replace(tzinfo=UTC),
    )
    sections = []
    if instructions:
        sections.append("\n".join([header_instructions, *(line for _, line in instructions)]))
    if facts:
        sections.append("\n".join([header_facts, *(line for _, line in facts)]))
    if events:
        sections.append("\n".join([header_events, *(line for _, line in events)]))
    header_entities = "## Related entities"
    left = max_tokens - sum(count_tokens(section) for section in sections) - count_tokens(header_entities)
    entity_lines = []
    # Only what the lines above name: an entity of a result the budget left out would stand alone.
    shown = {m for item, _ in chosen for m in item.source_message_ids}
    for label, messages in entities:
        named = [m for m in messages if m in shown]
        if not named:
            continue
        line = f"- {label} (src: {_refs(named)})"
        if count_tokens(line) <= left:
            entity_lines.append(line)
            left -= count_tokens(line)
    if entity_lines:
        sections.append("\n".join([header_entities, *entity_lines]))
    context = "\n\n".join(sections)
    return ContextResponse(
        context=context, items=[i for i, _ in instructions + facts + events], tokens=count_tokens(context)
    )
