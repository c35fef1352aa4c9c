"""A user's memories held in memory for ranking: content, time, provenance, vectors and BM25.

The ranking recipe scores *every* memory of the user (z-scored dense similarity needs the whole
pool, BM25 its document frequencies), so each user's corpus is loaded from Postgres once (one
query; vectors come as binary halfvec) and then kept up to date from the change feed: a trigger on
`memories` appends every insert, edit and delete to `memory_changes`, and before each search the
corpus reads the feed past its watermark (one indexed range query) and re-reads only the rows it
names. A write committed before a search began is therefore always seen, also when another process
made it. At most one sync per user runs at a time (concurrent searches wait for it), and the cache
is bounded in bytes, evicting the least recently used users.

The watermark: sequence values are taken in one order and committed in another, so "the highest
seq seen" can pass a change that commits later. A seq `top` seen in a snapshot whose `xmax` was
`x` is settled once a later snapshot's `xmin` reaches `x`: every transaction that could own a seq
up to `top` has then ended, so a read of the feed past the old watermark saw all of them. Until
then the feed is re-read from the settled point and changes already applied are skipped by seq.
"""

from __future__ import annotations

import bisect
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from memsvc.consolidation import never_valid
from memsvc.ingest import is_instruction, turn_line
from memsvc.ranking import BM25Index, turn_index_text

DEFAULT_CACHE_MB = 1024
# A corpus whose watermark has not been confirmed current for this long is reloaded instead of
# synced: the feed is trimmed after an hour (MemoryService.trim_change_feed).
FEED_TRUST_S = 600.0
# More changes than this (or than a quarter of the user's rows) since the last sync: reload.
MAX_FEED_ROWS = 5000
MAX_INCREMENTAL = 1000
COMPACT_MIN_DEAD = 1024  # compaction drops dead slots once they are this many and a quarter of all
SETTLE_WAIT_S = 2.0  # the first load of a process waits this long at most for a settled watermark
ROW_OVERHEAD_BYTES = 1200  # a row's Python objects besides text and vector (tracemalloc: 3 KB a row in all)

Vector = npt.NDArray[np.float32]
SortKey = tuple[bool, str, bool, int, datetime, uuid.UUID]
_NO_METADATA: dict[str, Any] = {}


class CorpusRow(NamedTuple):
    """One memory as ranking sees it (the columns of `_COLUMNS`, in that order)."""

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
    entity_ids: tuple[uuid.UUID, ...]  # the entities it mentions
    importance: float = 0.5  # as stored; search ranks by consolidation's judgement of it
    utc_offset: int | None = None  # minutes east of UTC its time was given with (`local_time`)
    superseded_by: uuid.UUID | None = None  # the memory that replaced it (status "superseded")

    @property
    def key(self) -> str:
        """The id as text, as ranking passes it around."""
        return str(self.id)

    @property
    def never_valid(self) -> bool:
        """Valid at no time (`consolidation.never_valid`): never returned by search."""
        return never_valid(self.valid_from, self.valid_to)

    @property
    def line(self) -> str:
        """What the row costs in a context block: a turn carries its speaker."""
        return turn_line(self.speaker or "", self.content) if self.kind == "turn" else self.content

    def sort_key(self) -> SortKey:
        """The canonical order of a user's rows: session, position, time, id (nulls last), as
        `ORDER BY session_id COLLATE "C" NULLS LAST, position NULLS LAST, event_at, id`."""
        return (
            self.session_id is None,
            self.session_id or "",
            self.position is None,
            self.position or 0,
            self.event_at,
            self.id,
        )


def _is_preference(row: CorpusRow) -> bool:
    """A stated preference that is no standing instruction (instructions name their requests)."""
    return row.kind == "preference" and not is_instruction(row.kind, row.metadata)


def _is_instruction(row: CorpusRow) -> bool:
    return is_instruction(row.kind, row.metadata)


class UserCorpus:
    """One user's memories indexed for ranking, updated in place from changed rows.

    Rows live in *slots*: a changed row takes a new slot and its old one is marked dead, so a slot
    number indexes `rows`, `vectors` and the BM25 ordinals alike and nothing is renumbered on a
    write; `order` holds the live slots in canonical order (what ranking iterates over), and
    compaction drops dead slots once they are a quarter of all. A turn is BM25-indexed with the
    turn before it in its session, so a write re-indexes the turn after each changed turn too.
    """

    def __init__(self) -> None:
        self.rows: list[CorpusRow] = []  # by slot, dead slots included
        self._keys: list[SortKey] = []
        self._indexed_after: list[uuid.UUID | None] = []  # the previous turn in a turn's BM25 text
        self._vectors: Vector = np.zeros((0, 0), dtype=np.float32)
        self._live = np.zeros(0, dtype=np.bool_)
        self._archived = np.zeros(0, dtype=np.bool_)
        self.bm25 = BM25Index()
        self.order: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._slot_of: dict[uuid.UUID, int] = {}
        self._session_turns: dict[str | None, list[int]] = {}  # turn slots of a session, in order
        self._speaker_turns: Counter[str] = Counter()
        # Live stated preferences, and live standing instructions (`ingest.is_instruction`).
        self._preferences: set[uuid.UUID] = set()
        self._instructions: set[uuid.UUID] = set()
        self._dead = 0
        self._archived_live = 0
        self._text_bytes = 0
        self._moments: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
        self._unarchived: npt.NDArray[np.int64] | None = None
        self.entities: dict[str, uuid.UUID] = {}  # normalised name or alias → entity
        self.entity_labels: dict[uuid.UUID, tuple[str, str]] = {}  # entity → (name, type)
        self.edges: list[tuple[uuid.UUID, uuid.UUID]] = []
        # Change-feed position (see the module docstring).
        self.watermark = 0
        self.applied: set[int] = set()  # seqs above the watermark already reflected here
        self.current_at = 0.0  # monotonic time the watermark was last known to be current

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def vectors(self) -> Vector:
        """Unit vectors by slot (rows of dead slots included; `order` says which are live)."""
        return self._vectors[: len(self.rows)]

    @property
    def speakers(self) -> tuple[str, ...]:
        """Names that speak in the user's turns."""
        return tuple(sorted(self._speaker_turns))

    def unarchived(self) -> npt.NDArray[np.int64]:
        """Live slots in canonical order, archived memories left out."""
        if not self._archived_live:
            return self.order
        if self._unarchived is None:
            self._unarchived = self.order[~self._archived[self.order]]
        return self._unarchived

    def row_index(self) -> dict[uuid.UUID, int]:
        """Memory id → slot, live rows only."""
        return self._slot_of

    def sort_key(self, slot: int) -> SortKey:
        return self._keys[slot]

    def is_live(self, slot: int) -> bool:
        return bool(self._live[slot])

    def previous_turn(self, slot: int) -> int | None:
        """The slot of the turn before this turn in its session, if any."""
        row = self.rows[slot]
        if row.kind != "turn":
            return None
        turns = self._session_turns.get(row.session_id, [])
        i = bisect.bisect_left(turns, self._keys[slot], key=self._keys.__getitem__)
        return turns[i - 1] if i > 0 else None

    def next_turn(self, slot: int) -> int | None:
        """The slot of the turn after this turn in its session, if any."""
        row = self.rows[slot]
        if row.kind != "turn":
            return None
        turns = self._session_turns.get(row.session_id, [])
        i = bisect.bisect_right(turns, self._keys[slot], key=self._keys.__getitem__)
        return turns[i] if i < len(turns) else None

    def preference_slots(self) -> list[int]:
        """Slots of the user's stated preferences, instructions not among them (a request scores
        each), in canonical order."""
        return sorted((self._slot_of[i] for i in self._preferences), key=self._keys.__getitem__)

    def instruction_slots(self) -> list[int]:
        """Slots of the user's standing instructions (fewer still: every search scores them), in
        canonical order."""
        return sorted((self._slot_of[i] for i in self._instructions), key=self._keys.__getitem__)

    def mentions_of(self, memory_id: uuid.UUID) -> tuple[uuid.UUID, ...]:
        slot = self._slot_of.get(memory_id)
        return self.rows[slot].entity_ids if slot is not None else ()

    def dense_stats(self, query_vector: Vector) -> tuple[float, float]:
        """Mean and standard deviation of the query's dot product over every row, from the rows'
        first and second moments: exact, without scoring each row (for a top-k-only dense stage)."""
        n = max(len(self), 1)
        if self._moments is None:
            v = self.vectors[self._live[: len(self.rows)]].astype(np.float64)
            self._moments = (v.sum(axis=0), v.T @ v)
        total, outer = self._moments
        q = query_vector.astype(np.float64)
        mean = float(q @ total) / n
        return mean, max(float(q @ outer @ q) / n - mean * mean, 0.0) ** 0.5

    def nbytes(self) -> int:
        """Estimated bytes this corpus holds (vectors, BM25, rows and their text)."""
        return (
            self._vectors.nbytes
            + self.bm25.nbytes()
            + self._text_bytes
            + len(self.rows) * ROW_OVERHEAD_BYTES
            + len(self.entity_labels) * 400
            + len(self.edges) * 100
        )

    # -- changing ---------------------------------------------------------------------------

    def load(self, rows: Sequence[CorpusRow], vectors: Vector) -> None:
        """Fill an empty corpus with rows already in canonical order (the bulk path of `apply`)."""
        assert not self.rows, "load() fills an empty corpus"
        n = len(rows)
        self._reserve(n, vectors.shape[1] if n else 0)
        self._vectors[:n] = vectors
        self.rows = list(rows)
        self._keys = [row.sort_key() for row in rows]
        self._indexed_after = [None] * n
        self._live[:n] = True
        self.order = np.arange(n, dtype=np.int64)
        previous: dict[str | None, int] = {}
        for slot, row in enumerate(rows):
            self._count(slot, row, +1)
            if row.kind == "turn":
                self._session_turns.setdefault(row.session_id, []).append(slot)
                before = previous.get(row.session_id)
                self._index(slot, before)
                previous[row.session_id] = slot
            else:
                self._index(slot, None)

    def apply(self, upserts: Sequence[tuple[CorpusRow, Vector]], removed: Iterable[uuid.UUID]) -> None:
        """Bring the corpus to the given current state of some rows: `upserts` are rows as they are
        now (new or changed), `removed` ids no longer belong to the user. The result is what a fresh
        `load` of all rows would build (a test checks this on random write sequences)."""
        changed = {row.id for row, _ in upserts} | set(removed)
        kills: list[int] = []
        sessions: set[str | None] = set()
        for memory_id in changed:
            slot = self._slot_of.get(memory_id)
            if slot is not None:
                kills.append(slot)
                if self.rows[slot].kind == "turn":
                    sessions.add(self.rows[slot].session_id)
                    self._session_remove(slot)
        first_new = len(self.rows)
        if upserts:
            self._reserve(first_new + len(upserts), upserts[0][1].shape[0])
        for row, vector in upserts:
            slot = self._append(row, vector)
            if row.kind == "turn":
                sessions.add(row.session_id)
                self._session_insert(slot)
        # A turn whose previous turn changed is indexed again (its BM25 text holds that turn).
        for session_id in sessions:
            turns = self._session_turns.get(session_id, [])
            for i, slot in enumerate(turns):
                if slot >= first_new:
                    continue
                before = self.rows[turns[i - 1]].id if i > 0 else None
                if before != self._indexed_after[slot] or before in changed:
                    kills.append(slot)
                    turns[i] = self._append(self.rows[slot], self._vectors[slot].copy())
        for slot in kills:
            self._kill(slot)
        new_slots = range(first_new, len(self.rows))
        for slot in new_slots:
            self._index(slot, self.previous_turn(slot))
        self._reorder(kills, list(new_slots))
        if self._dead >= COMPACT_MIN_DEAD and self._dead * 4 >= len(self.rows):
            self.compact()

    def set_graph(
        self,
        entities: Iterable[tuple[uuid.UUID, str, str, str, Sequence[str] | None]],
        edges: Iterable[tuple[uuid.UUID, uuid.UUID]],
    ) -> None:
        """Replace the user's graph: entities as (id, name, type, normalised name, aliases), and
        relation edges (subject, object)."""
        self.entities, self.entity_labels = {}, {}
        for entity_id, display, entity_type, name, aliases in entities:
            self.entities[name] = entity_id
            self.entity_labels[entity_id] = (display, entity_type)
            for alias in aliases or ():
                self.entities.setdefault(alias.lower(), entity_id)
        self.edges = list(edges)

    def compact(self) -> None:
        """Drop dead slots: live rows keep their relative order and get consecutive slots."""
        n = len(self.rows)
        keep = np.flatnonzero(self._live[:n]).astype(np.int64)
        new_of = np.full(n, -1, dtype=np.int64)
        new_of[keep] = np.arange(len(keep))
        kept = keep.tolist()
        self.rows = [self.rows[s] for s in kept]
        self._keys = [self._keys[s] for s in kept]
        self._indexed_after = [self._indexed_after[s] for s in kept]
        capacity = len(kept) + len(kept) // 4 + 16
        vectors = np.zeros((capacity, self._vectors.shape[1]), dtype=np.float32)
        vectors[: len(kept)] = self._vectors[keep]
        self._vectors = vectors
        self._live = np.zeros(capacity, dtype=np.bool_)
        self._live[: len(kept)] = True
        archived = np.zeros(capacity, dtype=np.bool_)
        archived[: len(kept)] = self._archived[keep]
        self._archived = archived
        self.bm25 = self.bm25.compacted(keep)
        self.order = new_of[self.order]
        self._unarchived = None
        self._session_turns = {k: [int(new_of[s]) for s in v] for k, v in self._session_turns.items()}
        self._slot_of = {row.id: i for i, row in enumerate(self.rows)}
        self._dead = 0

    # -- internals ----------------------------------------------------------------------------

    def _reserve(self, rows: int, dim: int) -> None:
        capacity, width = self._vectors.shape
        if rows <= capacity and (width == dim or rows == 0):
            return
        new_capacity = max(rows, capacity + capacity // 2, 16)
        vectors = np.zeros((new_capacity, dim), dtype=np.float32)
        if len(self.rows):
            vectors[: len(self.rows)] = self._vectors[: len(self.rows)]
        self._vectors = vectors
        for name in ("_live", "_archived"):
            grown = np.zeros(new_capacity, dtype=np.bool_)
            old = getattr(self, name)
            grown[: len(old)] = old
            setattr(self, name, grown)

    def _append(self, row: CorpusRow, vector: Vector) -> int:
        slot = len(self.rows)
        self._reserve(slot + 1, vector.shape[0])
        self._vectors[slot] = vector
        self.rows.append(row)
        self._keys.append(row.sort_key())
        self._indexed_after.append(None)
        self._live[slot] = True
        self._count(slot, row, +1)
        return slot

    def _kill(self, slot: int) -> None:
        if not self._live[slot]:
            return
        self._live[slot] = False
        self._count(slot, self.rows[slot], -1)
        self.bm25.remove(slot)
        self._dead += 1

    def _count(self, slot: int, row: CorpusRow, sign: int) -> None:
        """Keep the per-user tallies (ids, speakers, archived rows, text bytes, moments)."""
        if sign > 0:
            self._slot_of[row.id] = slot
        elif self._slot_of.get(row.id) == slot:
            del self._slot_of[row.id]
        for kept, holds in ((self._preferences, _is_preference), (self._instructions, _is_instruction)):
            if holds(row):
                if sign > 0:
                    kept.add(row.id)
                elif (live := self._slot_of.get(row.id)) is None or not holds(self.rows[live]):
                    kept.discard(row.id)
        if row.kind == "turn" and row.speaker:
            self._speaker_turns[row.speaker] += sign
            if self._speaker_turns[row.speaker] <= 0:
                del self._speaker_turns[row.speaker]
        if row.status == "archived":
            self._archived[slot] = sign > 0
            self._archived_live += sign
        self._text_bytes += sign * len(row.content)
        if self._moments is not None:
            v = self._vectors[slot].astype(np.float64)
            total, outer = self._moments
            total += sign * v
            outer += sign * np.outer(v, v)

    def _index(self, slot: int, previous: int | None) -> None:
        row = self.rows[slot]
        assert self.bm25.ordinals == slot, "BM25 ordinals follow slots"
        if row.kind == "turn":
            before = self.rows[previous] if previous is not None else None
            self.bm25.add(turn_index_text(row.line, before.line if before else None))
            self._indexed_after[slot] = before.id if before else None
        else:
            self.bm25.add(row.content)

    def _session_insert(self, slot: int) -> None:
        turns = self._session_turns.setdefault(self.rows[slot].session_id, [])
        bisect.insort(turns, slot, key=self._keys.__getitem__)

    def _session_remove(self, slot: int) -> None:
        session_id = self.rows[slot].session_id
        turns = self._session_turns[session_id]
        i = bisect.bisect_left(turns, self._keys[slot], key=self._keys.__getitem__)
        assert turns[i] == slot
        del turns[i]
        if not turns:
            del self._session_turns[session_id]

    def _reorder(self, kills: Sequence[int], added: Sequence[int]) -> None:
        """Take killed slots out of `order` and merge added ones in at their canonical place."""
        order = self.order
        if kills:
            order = order[self._live[order]]
        if added:
            added = sorted(added, key=self._keys.__getitem__)
            keys = self._keys
            at = [bisect.bisect_left(order, keys[s], key=lambda o: keys[int(o)]) for s in added]
            order = np.insert(order, at, np.asarray(added, dtype=np.int64))
        self.order = order
        self._unarchived = None


# Columns of a `CorpusRow`, then the vector in pgvector's binary form (2-byte dimension count,
# 2 unused bytes, big-endian float16s): ~4x fewer bytes than float4[] text, and no parsing.
_COLUMNS = """m.id, m.type, m.kind, m.content, m.speaker, m.role, m.agent_id, m.session_id, m.position,
    m.event_at, m.valid_from, m.valid_to, m.status, m.pinned, m.created_at, m.metadata, m.importance,
    m.utc_offset, m.superseded_by"""
_VECTOR = "halfvec_send(m.embedding)"
_SOURCES_OF = (
    "ARRAY(SELECT s.message_id FROM memory_sources s WHERE s.memory_id = m.id ORDER BY s.message_id)"
)
_MENTIONS_OF = (
    "ARRAY(SELECT e.entity_id FROM entity_mentions e WHERE e.memory_id = m.id ORDER BY e.entity_id)"
)
# A few changed rows: provenance and mentions by per-row subqueries. A whole user: the rows alone
# (a subquery per row cost 5x the scan), then provenance and mentions in one query each.
_ROWS = f"""SELECT {_COLUMNS}, {_SOURCES_OF}, {_MENTIONS_OF}, {_VECTOR} FROM memories m
    WHERE m.id = ANY(%(ids)s) AND m.tenant_id = %(t)s AND m.user_id = %(u)s"""
_LOAD = f"""SELECT {_COLUMNS}, NULL, NULL, {_VECTOR} FROM memories m
    WHERE m.tenant_id = %(t)s AND m.user_id = %(u)s
    ORDER BY m.session_id COLLATE "C" NULLS LAST, m.position NULLS LAST, m.event_at, m.id"""
_LOAD_SOURCES = """SELECT memory_id, message_id FROM memory_sources
    WHERE tenant_id = %(t)s AND user_id = %(u)s ORDER BY memory_id, message_id"""
_LOAD_MENTIONS = """SELECT em.memory_id, em.entity_id
    FROM entities e JOIN entity_mentions em ON em.entity_id = e.id
    WHERE e.tenant_id = %(t)s AND e.user_id = %(u)s ORDER BY em.memory_id, em.entity_id"""
_ENTITIES = """SELECT id, name, entity_type, normalized_name, aliases FROM entities
    WHERE tenant_id = %(t)s AND user_id = %(u)s ORDER BY id"""
_EDGES = """SELECT subject_id, object_id FROM relations WHERE tenant_id = %(t)s AND user_id = %(u)s
    ORDER BY id"""
# The tenant's changes past a watermark, with the owner of each row (NULL once deleted), and the
# snapshot the statement ran in (every part of one statement sees the same snapshot).
_FEED = """SELECT s.xmin, s.xmax, s.top, c.seq, c.memory_id, c.op, m.user_id
    FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
                 pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
                 (SELECT coalesce(max(seq), 0) FROM memory_changes) AS top) s
    LEFT JOIN memory_changes c ON c.seq > %(w)s AND c.tenant_id = %(t)s
    LEFT JOIN memories m ON m.id = c.memory_id
    ORDER BY c.seq LIMIT %(limit)s"""


@dataclass(frozen=True, slots=True)
class _Change:
    seq: int
    memory_id: uuid.UUID
    op: str
    user_id: str | None  # the row's owner now; None once it is deleted


@dataclass(slots=True)
class _FeedClock:
    """The process-wide settled watermark of the change feed (see the module docstring)."""

    settled: int | None = None
    pending: list[tuple[int, int]] = field(default_factory=list)  # (top seq, xmax) per snapshot
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, xmin: int, xmax: int, top: int) -> int | None:
        with self.lock:
            while self.pending and xmin >= self.pending[0][1]:
                settled = self.pending.pop(0)[0]
                self.settled = max(self.settled or 0, settled)
            if top > (self.settled if self.settled is not None else -1) and (
                not self.pending or self.pending[-1][0] < top
            ):
                self.pending.append((top, xmax))
                del self.pending[:-256]
            return self.settled


def _driver(session: Session) -> Any:
    """The psycopg connection under a session (binary results, no ORM overhead per row)."""
    return session.connection().connection.driver_connection


def _decode_vectors(blobs: Sequence[bytes]) -> Vector:
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    dim = int.from_bytes(blobs[0][:2], "big")
    raw = np.frombuffer(b"".join(blobs), dtype=">f2").reshape(len(blobs), dim + 2)
    return raw[:, 2:].astype(np.float32)


def _rows(
    records: Sequence[Sequence[Any]],
    sources: dict[uuid.UUID, tuple[str, ...]] | None = None,
    mentions: dict[uuid.UUID, tuple[uuid.UUID, ...]] | None = None,
) -> tuple[list[CorpusRow], Vector]:
    """Rows from `_ROWS` records, or from `_LOAD` records and the user's provenance and mentions."""
    if sources is None or mentions is None:
        rows = [
            CorpusRow._make((*r[:15], r[15] or _NO_METADATA, tuple(r[19]), tuple(r[20]), *r[16:19]))
            for r in records
        ]
    else:
        rows = [
            CorpusRow._make(
                (*r[:15], r[15] or _NO_METADATA, sources.get(r[0], ()), mentions.get(r[0], ()), *r[16:19])
            )
            for r in records
        ]
    return rows, _decode_vectors([r[21] for r in records])


def _grouped(pairs: Iterable[tuple[uuid.UUID, Any]]) -> dict[uuid.UUID, tuple[Any, ...]]:
    """(key, value) pairs sorted by key, as key → tuple of its values in order."""
    out: dict[uuid.UUID, list[Any]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return {key: tuple(values) for key, values in out.items()}


class _Entry:
    """A cached user: the corpus, the lock that lets one sync run at a time, and a read/write lock
    that keeps ranking off a corpus while a sync changes it."""

    def __init__(self) -> None:
        self.corpus: UserCorpus | None = None
        self.sync_lock = threading.Lock()
        self.synced_at = -1.0  # monotonic start of the last finished sync
        self.nbytes = 0
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class CorpusCache:
    """Users' corpora, kept current from the change feed, least recently used evicted past
    `max_bytes`."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_MB * 2**20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[uuid.UUID, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = _FeedClock()
        self.loads = 0  # full loads (cold, evicted, or too far behind)
        self.syncs = 0  # incremental syncs that applied at least one change

    @contextmanager
    def reading(self, session: Session, tenant_id: uuid.UUID, user_id: str) -> Iterator[UserCorpus]:
        """The user's corpus as of now (every write committed before this call is in it), held
        against changes until the block ends."""
        asked = time.monotonic()
        key = (tenant_id, user_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            self._entries.move_to_end(key)
        with entry.sync_lock:
            # A sync that started after we asked has seen everything we must see.
            if entry.synced_at < asked:
                self._sync(session, entry, tenant_id, user_id)
        self._evict(keep=key)
        with entry.reading():
            assert entry.corpus is not None
            yield entry.corpus

    def refresh(self, session: Session, tenant_id: uuid.UUID, user_id: str) -> None:
        """Bring a cached user's corpus up to date now, e.g. right after a write this process
        acknowledged, so that the search which follows finds nothing left to apply. A user not
        cached is left to load on their first search."""
        asked = time.monotonic()
        with self._lock:
            entry = self._entries.get((tenant_id, user_id))
        if entry is None or entry.corpus is None:
            return
        with entry.sync_lock:
            if entry.synced_at < asked:
                self._sync(session, entry, tenant_id, user_id)

    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, keep: tuple[uuid.UUID, str]) -> None:
        with self._lock:
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                key, entry = next(iter(self._entries.items()))
                if key == keep:
                    break
                del self._entries[key]
                total -= entry.nbytes

    def _feed(self, conn: Any, tenant_id: uuid.UUID, watermark: int) -> tuple[list[_Change], int, int]:
        """Changes of the tenant past `watermark`; also the settled watermark and the top seq."""
        records = conn.execute(
            _FEED, {"w": watermark, "t": tenant_id, "limit": MAX_FEED_ROWS + 1}, binary=True
        ).fetchall()
        xmin, xmax, top = records[0][:3]
        settled = self._clock.observe(xmin, xmax, top)
        if settled is None:  # the first read of this process: wait for a snapshot to settle
            deadline = time.monotonic() + SETTLE_WAIT_S
            while settled is None and time.monotonic() < deadline:
                time.sleep(0.005)
                xmin, xmax, _ = conn.execute(_FEED, {"w": 2**62, "t": tenant_id, "limit": 1}).fetchone()[:3]
                settled = self._clock.observe(xmin, xmax, top)
        changes = [_Change(r[3], r[4], r[5], r[6]) for r in records if r[3] is not None]
        return changes, settled or 0, top

    def _sync(self, session: Session, entry: _Entry, tenant_id: uuid.UUID, user_id: str) -> None:
        started = time.monotonic()
        conn = _driver(session)
        corpus = entry.corpus
        if corpus is None or started - corpus.current_at > FEED_TRUST_S:
            self._load(conn, entry, tenant_id, user_id, started)
            return
        changes, settled, top = self._feed(conn, tenant_id, corpus.watermark)
        mine = [
            c
            for c in changes
            if c.seq not in corpus.applied and (c.user_id == user_id or c.memory_id in corpus.row_index())
        ]
        if len(changes) > MAX_FEED_ROWS or len(mine) > max(MAX_INCREMENTAL, len(corpus) // 4):
            self._load(conn, entry, tenant_id, user_id, started)
            return
        if mine:
            params = {"t": tenant_id, "u": user_id}
            ids = list(dict.fromkeys(c.memory_id for c in mine))
            rows, vectors = _rows(conn.execute(_ROWS, {**params, "ids": ids}, binary=True).fetchall())
            gone = set(ids) - {row.id for row in rows}
            entities = conn.execute(_ENTITIES, params, binary=True).fetchall()
            edges = conn.execute(_EDGES, params, binary=True).fetchall()
            with entry.writing():
                corpus.apply(list(zip(rows, vectors, strict=True)), gone)
                corpus.set_graph(entities, edges)
            corpus.applied.update(c.seq for c in mine)
            self.syncs += 1
        self._advance(corpus, settled, top, started)
        entry.nbytes = corpus.nbytes()
        entry.synced_at = started

    def _load(self, conn: Any, entry: _Entry, tenant_id: uuid.UUID, user_id: str, started: float) -> None:
        # The feed first: whatever it shows committed is in the rows read after it.
        changes, settled, top = self._feed(conn, tenant_id, self._clock.settled or 0)
        params = {"t": tenant_id, "u": user_id}
        records = conn.execute(_LOAD, params, binary=True).fetchall()
        sources = _grouped(conn.execute(_LOAD_SOURCES, params, binary=True).fetchall())
        mentions = _grouped(conn.execute(_LOAD_MENTIONS, params, binary=True).fetchall())
        rows, vectors = _rows(records, sources, mentions)
        corpus = UserCorpus()
        corpus.load(rows, vectors)
        corpus.set_graph(
            conn.execute(_ENTITIES, params, binary=True).fetchall(),
            conn.execute(_EDGES, params, binary=True).fetchall(),
        )
        corpus.watermark = settled
        corpus.applied = {c.seq for c in changes if c.seq > settled}
        self._advance(corpus, settled, top, started)
        corpus.current_at = started
        with entry.writing():
            entry.corpus = corpus
        entry.nbytes = corpus.nbytes()
        entry.synced_at = started
        self.loads += 1

    @staticmethod
    def _advance(corpus: UserCorpus, settled: int, top: int, started: float) -> None:
        # A watermark that moves (or has nothing to pass) is not stuck behind the feed's trimming.
        if settled > corpus.watermark or settled >= top:
            corpus.current_at = started
        if settled > corpus.watermark:
            corpus.watermark = settled
            corpus.applied = {s for s in corpus.applied if s > settled}


__all__ = ["CorpusCache", "CorpusRow", "UserCorpus"]
