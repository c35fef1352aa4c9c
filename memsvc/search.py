"""The read path: find the memories that answer a query, and assemble them into a context block.

Candidates come from Postgres: dense similarity (pgvector, cosine) and full-text relevance
over the user's memories, scoped by tenant, user, type, status and time. `memsvc.ranking`
fuses the signals; provenance is attached to what is returned.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from memsvc import store
from memsvc.embedding import Embedder
from memsvc.errors import InvalidInput
from memsvc.models import TSV_CONFIG, Memory
from memsvc.schemas import ContextRequest, ContextResponse, MemoryOut, SearchRequest
from memsvc.tenants import TenantContext

CANDIDATES = 50  # per signal; fusion picks the final `limit` from their union
RRF_K = 60.0


def _scope(ctx: TenantContext, request: SearchRequest | ContextRequest) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [
        Memory.tenant_id == ctx.tenant_id,
        Memory.user_id == request.user_id,
    ]
    types = getattr(request, "types", None)
    if types:
        memory_types = [t for t in types if t in ("episodic", "semantic")]
        clauses.append(Memory.type.in_(memory_types or ["-"]))
    as_of: datetime | None = request.as_of
    if as_of is None:
        clauses.append(Memory.status == "active")
    else:
        # The world as it was: what had been said by then and was still valid then.
        clauses += [
            Memory.event_at <= as_of,
            Memory.status != "archived",
            or_(Memory.valid_to.is_(None), Memory.valid_to > as_of),
        ]
    filters: dict[str, Any] = getattr(request, "filters", None) or {}
    for key in ("agent_id", "session_id", "kind"):
        if key in filters:
            value = filters[key]
            if not isinstance(value, str):
                raise InvalidInput(f"filters.{key} must be a string")
            clauses.append(getattr(Memory, key) == value)
    if "metadata" in filters:
        if not isinstance(filters["metadata"], dict):
            raise InvalidInput("filters.metadata must be an object")
        clauses.append(Memory.metadata_.contains(filters["metadata"]))
    return clauses


class SearchEngine:
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def search(self, session: Session, ctx: TenantContext, request: SearchRequest) -> list[MemoryOut]:
        """Best-first memories for `request.query`, each with its `source_message_ids`."""
        vector = self.embedder.embed([request.query])[0]
        scope = and_(*_scope(ctx, request))
        distance = Memory.embedding.cosine_distance(vector)
        dense = session.execute(
            select(Memory, (1 - distance).label("similarity"))
            .where(scope)
            .order_by(distance)
            .limit(CANDIDATES)
        ).all()
        query = func.websearch_to_tsquery(TSV_CONFIG, request.query)
        rank = func.ts_rank_cd(Memory.tsv, query)
        lexical = session.execute(
            select(Memory, rank.label("rank"))
            .where(scope, Memory.tsv.op("@@")(query))
            .order_by(rank.desc())
            .limit(CANDIDATES)
        ).all()
        fused = _rrf([[row.Memory for row in dense], [row.Memory for row in lexical]])
        top = fused[: request.limit]
        sources = store.sources_of(session, [m.id for m, _ in top])
        return [store.memory_out(m, sources.get(m.id, []), score) for m, score in top]

    def context(self, session: Session, ctx: TenantContext, request: ContextRequest) -> ContextResponse:
        """A prompt-ready block under `max_tokens`: current facts, then events in time order, each
        line tagged with its date, speaker and the ids of the messages it came from."""
        results = self.search(
            session,
            ctx,
            SearchRequest(query=request.query, user_id=request.user_id, limit=30, as_of=request.as_of),
        )
        return assemble_context(results, request.max_tokens)


_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Tokens as LLM tokenizers roughly count them (words and punctuation), without a model."""
    return len(_TOKEN.findall(text))


def _line(item: MemoryOut) -> str:
    when = item.valid_from or item.event_at or item.created_at
    date = f"[{when.date().isoformat()}] " if when else ""
    who = f"{item.speaker}: " if item.type == "episodic" and item.kind == "turn" and item.speaker else ""
    refs = ",".join(item.source_message_ids[:5]) + ("…" if len(item.source_message_ids) > 5 else "")
    return f"- {date}{who}{item.content} (src: {refs})"


def assemble_context(results: Sequence[MemoryOut], max_tokens: int) -> ContextResponse:
    """Fill the budget best-first, then lay out facts first and events in time order."""
    header_facts, header_events = "## Facts", "## Events (oldest first)"
    budget = max_tokens - count_tokens(header_facts) - count_tokens(header_events) - 2
    chosen: list[tuple[MemoryOut, str]] = []
    used = 0
    for item in results:
        if item.type == "episodic" and item.kind == "session":
            continue  # a digest repeats turns; the turns themselves are better evidence
        line = _line(item)
        cost = count_tokens(line) + 1
        if used + cost > budget:
            continue
        chosen.append((item, line))
        used += cost
    facts = [(i, line) for i, line in chosen if i.type == "semantic"]
    events = sorted(
        ((i, line) for i, line in chosen if i.type != "semantic"),
        key=lambda pair: pair[0].event_at or pair[0].created_at or datetime.min.replace(tzinfo=UTC),
    )
    sections = []
    if facts:
        sections.append("\n".join([header_facts, *(line for _, line in facts)]))
    if events:
        sections.append("\n".join([header_events, *(line for _, line in events)]))
    context = "\n\n".join(sections)
    return ContextResponse(
        context=context, items=[i for i, _ in facts + events], tokens=count_tokens(context)
    )


def _rrf(rankings: Sequence[Sequence[Memory]]) -> list[tuple[Memory, float]]:
    scores: dict[uuid.UUID, float] = {}
    by_id: dict[uuid.UUID, Memory] = {}
    for ranking in rankings:
        for rank, memory in enumerate(ranking):
            by_id[memory.id] = memory
            scores[memory.id] = scores.get(memory.id, 0.0) + 1.0 / (RRF_K + rank + 1)
    order = sorted(scores, key=lambda i: -scores[i])
    return [(by_id[i], scores[i]) for i in order]
