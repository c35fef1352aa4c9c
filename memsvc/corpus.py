"""A user's memories held in memory for ranking: content, time, provenance, vectors and BM25.

The ranking recipe (`memsvc.ranking`) scores *every* memory of the user (z-scored dense
similarity needs the whole pool, BM25 needs its document frequencies), so each user's corpus
is loaded once from Postgres and cached. A cheap stamp query over the user's rows (their
count and the sum of their change times: every write sets `updated_at`) tells whether the
cache is stale; any change rebuilds it (~0.1 s for a LoCoMo-sized user, paid after writes only).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.orm import Session

from memsvc.ingest import turn_line
from memsvc.ranking import BM25Index, turn_index_text

MAX_CACHED_USERS = 256


@dataclass(frozen=True, slots=True)
class CorpusRow:
    id: uuid.UUID
    type: str
    kind: str
    content: str
    speaker: str | None
    role: str | None
    agent_id: str | None
    session_id: str | None
    position: int | None
    event_at: datetime
    valid_from: datetime | None
    valid_to: datetime | None
    status: str
    pinned: bool
    created_at: datetime
    metadata: dict[str, Any]
    source_message_ids: tuple[str, ...]
    key: str = ""  # the id as text, as ranking passes it around
    line: str = ""  # what the row costs in a context block: a turn carries its speaker


@dataclass(slots=True)
class UserCorpus:
    rows: list[CorpusRow] = field(default_factory=list)
    vectors: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    bm25: BM25Index = field(default_factory=BM25Index)
    speakers: tuple[str, ...] = ()
    mentions: dict[uuid.UUID, set[uuid.UUID]] = field(default_factory=dict)  # memory → entities
    entities: dict[str, uuid.UUID] = field(default_factory=dict)  # normalised name or alias → entity
    entity_labels: dict[uuid.UUID, tuple[str, str]] = field(default_factory=dict)  # entity → (name, type)
    edges: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    stamp: tuple[Any, ...] = ()
    _moments: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
    _row_index: dict[uuid.UUID, int] | None = None
    _previous: dict[int, int] | None = None
    _unarchived: list[int] | None = None

    def unarchived(self) -> list[int]:
        if self._unarchived is None:
            self._unarchived = [i for i, row in enumerate(self.rows) if row.status != "archived"]
        return self._unarchived

    def row_index(self) -> dict[uuid.UUID, int]:
        if self._row_index is None:
            self._row_index = {row.id: i for i, row in enumerate(self.rows)}
        return self._row_index

    def previous_turn(self) -> dict[int, int]:
        """Row of each turn → row of the turn before it in its session."""
        if self._previous is None:
            self._previous = {}
            last: dict[str | None, int] = {}
            for i, row in enumerate(self.rows):  # rows are in session order
                if row.kind == "turn":
                    if row.session_id in last:
                        self._previous[i] = last[row.session_id]
                    last[row.session_id] = i
        return self._previous

    def dense_stats(self, query_vector: npt.NDArray[np.float32]) -> tuple[float, float]:
        """Mean and standard deviation of the query's dot product over every row, from the rows'
        first and second moments: exact, without scoring each row (for a top-k-only dense stage)."""
        if self._moments is None:
            v = self.vectors.astype(np.float64)
            self._moments = (v.mean(axis=0), v.T @ v / max(len(v), 1))
        mean_vector, second = self._moments
        q = query_vector.astype(np.float64)
        mean = float(q @ mean_vector)
        return mean, max(float(q @ second @ q) - mean * mean, 0.0) ** 0.5


_STAMP = text(
    "SELECT count(*), sum(extract(epoch FROM updated_at)),"
    " (SELECT count(*) FROM entities WHERE tenant_id = :t AND user_id = :u)"
    " FROM memories WHERE tenant_id = :t AND user_id = :u"
)
_ROWS = text(
    "SELECT id, type, kind, content, speaker, role, agent_id, session_id, position, event_at, valid_from,"
    " valid_to, status, pinned, created_at, metadata, embedding::float4[] AS embedding"
    " FROM memories WHERE tenant_id = :t AND user_id = :u"
    " ORDER BY session_id NULLS LAST, position NULLS LAST, event_at, id"
)
_SOURCES = text(
    "SELECT memory_id, message_id FROM memory_sources WHERE tenant_id = :t AND user_id = :u"
    " ORDER BY message_id"
)
_MENTIONS = text("SELECT memory_id, entity_id FROM entity_mentions WHERE tenant_id = :t AND user_id = :u")
_ENTITIES = text(
    "SELECT id, name, entity_type, normalized_name, aliases FROM entities"
    " WHERE tenant_id = :t AND user_id = :u"
)
_EDGES = text("SELECT subject_id, object_id FROM relations WHERE tenant_id = :t AND user_id = :u")


def load_corpus(session: Session, tenant_id: uuid.UUID, user_id: str, stamp: tuple[Any, ...]) -> UserCorpus:
    """Read every memory of one user, with provenance, vectors and the graph, and index it."""
    params = {"t": tenant_id, "u": user_id}
    sources: dict[uuid.UUID, list[str]] = defaultdict(list)
    for memory_id, message_id in session.execute(_SOURCES, params):
        sources[memory_id].append(message_id)
    result = session.execute(_ROWS, params).mappings().all()
    rows, vectors = [], []
    for r in result:
        rows.append(
            CorpusRow(
                id=r["id"],
                type=r["type"],
                kind=r["kind"],
                content=r["content"],
                speaker=r["speaker"],
                role=r["role"],
                agent_id=r["agent_id"],
                session_id=r["session_id"],
                position=r["position"],
                event_at=r["event_at"],
                valid_from=r["valid_from"],
                valid_to=r["valid_to"],
                status=r["status"],
                pinned=r["pinned"],
                created_at=r["created_at"],
                metadata=r["metadata"] or {},
                source_message_ids=tuple(sources.get(r["id"], ())),
                key=str(r["id"]),
                line=turn_line(r["speaker"] or "", r["content"]) if r["kind"] == "turn" else r["content"],
            )
        )
        vectors.append(r["embedding"])
    corpus = UserCorpus(rows=rows, stamp=stamp)
    if rows:
        corpus.vectors = np.asarray(vectors, dtype=np.float32)
    # BM25 indexes a turn with the turn before it, like its embedding (rows are in session order).
    previous: dict[str | None, str] = {}
    for row in rows:
        if row.kind == "turn":
            corpus.bm25.add(turn_index_text(row.line, previous.get(row.session_id)))
            previous[row.session_id] = row.line
        else:
            corpus.bm25.add(row.content)
    corpus.speakers = tuple(dict.fromkeys(r.speaker for r in rows if r.kind == "turn" and r.speaker))
    for memory_id, entity_id in session.execute(_MENTIONS, params):
        corpus.mentions.setdefault(memory_id, set()).add(entity_id)
    for entity_id, display, entity_type, name, aliases in session.execute(_ENTITIES, params):
        corpus.entities[name] = entity_id
        corpus.entity_labels[entity_id] = (display, entity_type)
        for alias in aliases or ():
            corpus.entities.setdefault(alias.lower(), entity_id)
    corpus.edges = [(s, o) for s, o in session.execute(_EDGES, params)]
    return corpus


class CorpusCache:
    """Most recently used users' corpora, refreshed when their rows change."""

    def __init__(self, max_users: int = MAX_CACHED_USERS) -> None:
        self.max_users = max_users
        self._cache: OrderedDict[tuple[uuid.UUID, str], UserCorpus] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, tenant_id: uuid.UUID, user_id: str) -> UserCorpus:
        stamp = tuple(session.execute(_STAMP, {"t": tenant_id, "u": user_id}).one())
        key = (tenant_id, user_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.stamp == stamp:
                self._cache.move_to_end(key)
                return cached
        corpus = load_corpus(session, tenant_id, user_id, stamp)
        with self._lock:
            self._cache[key] = corpus
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_users:
                self._cache.popitem(last=False)
        return corpus
