"""A device-resident copy of the memories' embeddings, kept in sync with Postgres.

At start it loads every active memory's embedding onto the device (a GPU when there is one),
grouped by (tenant, user) so a query of one user scans only that user's rows. Afterwards it
replays `memory_changes` (appended by a trigger on `memories`), polled every `max_lag_s` over one
connection, so inserts, edits, supersessions and deletions reach it within `max_lag_s`. Polled,
not woken by NOTIFY: PostgreSQL commits transactions that notify one at a time under one global
lock, which capped ingest on 16 cores and cut concurrent commits 3x on 2 (BENCHMARKS.md). Search
hydrates results from Postgres by id, so even a change not yet replayed can never surface a
deleted memory. Compaction reclaims deleted rows.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt
import torch

if TYPE_CHECKING:
    import psycopg

from memsvc.kernels import Int8Corpus, fused_topk, precompile, segmented_topk, topk_torch

log = logging.getLogger(__name__)

GAP_TIMEOUT_S = 5.0  # a seq missing this long belongs to a rolled-back transaction
COMPACT_FRACTION = 0.25  # rebuild when this share of rows is dead
SMALL_SCAN_ROWS = 65_536  # partitions up to this size are scanned with a plain matmul + top-k
REPLAY_ON_LOAD = 1000  # changes re-applied after a load, to cover transactions in flight during it


class DenseHit(NamedTuple):
    memory_id: uuid.UUID
    score: float  # the index's similarity: dot(query, row) over fp16 rows with fp32 sums


class DenseHits(Sequence[DenseHit]):
    """One query's hits, best first, kept as the arrays the device returned: a memory id becomes a
    `DenseHit` only when read (a batch of 256 queries at k = 128 holds 32k hits, and building them
    all as objects in the batcher's thread cost more than the search itself)."""

    __slots__ = ("_ids", "rows", "scores")

    def __init__(self, ids: list[uuid.UUID], rows: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]):
        self._ids = ids  # the index's id list at search time (appended to, never rewritten in place)
        self.rows = rows
        self.scores = scores

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> DenseHit: ...
    @overload
    def __getitem__(self, i: slice) -> list[DenseHit]: ...
    def __getitem__(self, i: int | slice) -> DenseHit | list[DenseHit]:
        if isinstance(i, slice):
            return [
                DenseHit(self._ids[r], s)
                for r, s in zip(self.rows[i].tolist(), self.scores[i].tolist(), strict=True)
            ]
        return DenseHit(self._ids[int(self.rows[i])], float(self.scores[i]))

    def __iter__(self):  # type: ignore[no-untyped-def]
        ids = self._ids
        return (DenseHit(ids[r], s) for r, s in zip(self.rows.tolist(), self.scores.tolist(), strict=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DenseHits({list(self)!r})"

    @property
    def memory_ids(self) -> list[uuid.UUID]:
        ids = self._ids
        return [ids[r] for r in self.rows.tolist()]


def _vector_from_text(text: str) -> np.ndarray:  # halfvec's text form: "[0.1,0.2,...]"
    return np.array(text[1:-1].split(","), dtype=np.float32)


class VectorIndex:
    """Embeddings of all active memories on `device`, searched with `kernels.fused_topk`."""

    def __init__(
        self,
        conninfo: str,
        dim: int,
        *,
        device: str = "cpu",
        max_lag_s: float = 0.05,
        int8_prescreen: bool = True,
    ) -> None:
        self.conninfo = conninfo
        self.dim = dim
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        # An int8 copy of the rows (half the fp16 bytes again) lets large query batches find their
        # candidates on int8 tensor cores; results stay exact (kernels/prescreen.py).  CUDA only.
        self.int8_prescreen = int8_prescreen and self.device.type == "cuda"
        self._int8: Int8Corpus | None = None
        self.max_lag_s = max_lag_s
        self._lock = threading.RLock()
        self._partitions: dict[tuple[uuid.UUID, str], int] = {}
        self._row_of: dict[uuid.UUID, int] = {}
        self._ids: list[uuid.UUID] = []
        self._segments: dict[int, list[tuple[int, int]]] = {}  # partition → row ranges [start, end)
        self._corpus = torch.empty((0, dim), dtype=self.dtype, device=self.device)
        self._partition_of_row = torch.empty(0, dtype=torch.int32, device=self.device)
        self._valid = torch.empty(0, dtype=torch.bool, device=self.device)
        self._size = 0
        self._dead = 0
        self._watermark = 0  # every change with seq <= watermark is applied
        self._applied_above: set[int] = set()
        self._gap_seen_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loading and syncing -----------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        ids: Sequence[uuid.UUID],
        partitions: Sequence[tuple[uuid.UUID, str]],
        vectors: np.ndarray,
        *,
        device: str = "cpu",
        int8_prescreen: bool = True,
    ) -> VectorIndex:
        """An index over given rows, not following any database (benchmarks, tests)."""
        index = cls("", vectors.shape[1], device=device, int8_prescreen=int8_prescreen)
        rows = sorted(zip(ids, partitions, vectors, strict=True), key=lambda r: r[1])
        index._rebuild([(i, p[0], p[1], v) for i, p, v in rows])
        return index

    def load(self) -> None:
        """(Re)build from the database: every active memory, grouped by (tenant, user)."""
        import psycopg  # only the database-following index needs a driver

        with psycopg.connect(self.conninfo) as conn:
            seq_row = conn.execute("SELECT coalesce(max(seq), 0) FROM memory_changes").fetchone()
            watermark = int(seq_row[0]) if seq_row else 0
            rows = conn.execute(
                "SELECT id, tenant_id, user_id, embedding::text FROM memories WHERE status = 'active'"
                " ORDER BY tenant_id, user_id"
            ).fetchall()
        with self._lock:
            self._rebuild([(r[0], r[1], r[2], _vector_from_text(r[3])) for r in rows])
            # Changes that commit out of order around our read are replayed; replaying is idempotent
            # (each change re-reads the row's current state).
            self._watermark = max(0, watermark - REPLAY_ON_LOAD)
            self._applied_above.clear()
        self.sync()

    def _rebuild(self, rows: Sequence[tuple[uuid.UUID, uuid.UUID, str, np.ndarray]]) -> None:
        partitions: dict[tuple[uuid.UUID, str], int] = {}
        part_ids = np.empty(len(rows), dtype=np.int32)
        for i, (_, tenant_id, user_id, _) in enumerate(rows):
            part_ids[i] = partitions.setdefault((tenant_id, user_id), len(partitions))
        matrix = np.stack([r[3] for r in rows]) if rows else np.zeros((0, self.dim), dtype=np.float32)
        capacity = max(1024, int(len(rows) * 1.25))
        self._corpus = torch.zeros((capacity, self.dim), dtype=self.dtype, device=self.device)
        self._corpus[: len(rows)] = torch.from_numpy(matrix).to(self.device, self.dtype)
        self._partition_of_row = torch.full((capacity,), -1, dtype=torch.int32, device=self.device)
        self._partition_of_row[: len(rows)] = torch.from_numpy(part_ids).to(self.device)
        self._valid = torch.zeros(capacity, dtype=torch.bool, device=self.device)
        self._valid[: len(rows)] = True
        self._int8 = Int8Corpus.from_corpus(self._corpus) if self.int8_prescreen else None
        self._ids = [r[0] for r in rows]
        self._row_of = {memory_id: i for i, memory_id in enumerate(self._ids)}
        self._partitions = partitions
        self._segments = {}
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or part_ids[i] != part_ids[start]:
                self._segments.setdefault(int(part_ids[start]), []).append((start, i))
                start = i
        self._size, self._dead = len(rows), 0

    def sync(self, conn: psycopg.Connection[Any] | None = None) -> int:
        """Apply every committed change not yet applied; returns how many were applied."""
        if conn is None:
            import psycopg

            with psycopg.connect(self.conninfo, autocommit=True) as own:
                return self.sync(own)
        changes = conn.execute(
            "SELECT seq, memory_id, op FROM memory_changes WHERE seq > %s ORDER BY seq",
            (self._watermark,),
        ).fetchall()
        fresh = [c for c in changes if c[0] not in self._applied_above]
        upserts = list({c[1] for c in fresh if c[2] != "D"})
        rows = (
            conn.execute(
                "SELECT id, tenant_id, user_id, embedding::text, status FROM memories WHERE id = ANY(%s)",
                (upserts,),
            ).fetchall()
            if upserts
            else []
        )
        current = {r[0]: r for r in rows}
        with self._lock:
            for _seq, memory_id, op in fresh:
                row = current.get(memory_id)
                if op == "D" or row is None or row[4] != "active":
                    self._remove(memory_id)
                else:
                    self._upsert(memory_id, row[1], row[2], _vector_from_text(row[3]))
            self._advance_watermark([c[0] for c in changes])
            if self._size and self._dead / self._size > COMPACT_FRACTION:
                self.compact()
        return len(fresh)

    def _advance_watermark(self, seen: list[int]) -> None:
        # Sequence values commit out of order: a gap may still fill. Advance only over
        # contiguous applied seqs, or over a gap that stayed open past GAP_TIMEOUT_S.
        self._applied_above.update(seen)
        now = time.monotonic()
        while True:
            nxt = self._watermark + 1
            if nxt in self._applied_above:
                self._applied_above.discard(nxt)
                self._watermark = nxt
            elif self._applied_above and now - self._gap_seen_at.setdefault(nxt, now) > GAP_TIMEOUT_S:
                self._gap_seen_at.pop(nxt, None)
                self._watermark = nxt
            else:
                break

    def _upsert(self, memory_id: uuid.UUID, tenant_id: uuid.UUID, user_id: str, vector: np.ndarray) -> None:
        tensor = torch.from_numpy(vector).to(self.device, self.dtype)
        row = self._row_of.get(memory_id)
        if row is not None:
            self._set_vector(row, tensor)
            self._valid[row] = True
            return
        if self._size == self._corpus.shape[0]:
            self._grow()
        row = self._size
        partition = self._partitions.setdefault((tenant_id, user_id), len(self._partitions))
        self._set_vector(row, tensor)
        self._partition_of_row[row] = partition
        self._valid[row] = True
        self._ids.append(memory_id)
        self._row_of[memory_id] = row
        ranges = self._segments.setdefault(partition, [])
        if ranges and ranges[-1][1] == row:
            ranges[-1] = (ranges[-1][0], row + 1)
        else:
            ranges.append((row, row + 1))
        self._size += 1

    def _set_vector(self, row: int, tensor: torch.Tensor) -> None:
        self._corpus[row] = tensor
        if self._int8 is not None:
            self._int8.set_rows(row, self._corpus[row : row + 1])

    def _remove(self, memory_id: uuid.UUID) -> None:
        row = self._row_of.pop(memory_id, None)
        if row is not None and bool(self._valid[row]):
            self._valid[row] = False
            self._dead += 1

    def _grow(self) -> None:
        capacity = self._corpus.shape[0] * 2
        corpus = torch.zeros((capacity, self.dim), dtype=self.dtype, device=self.device)
        corpus[: self._size] = self._corpus[: self._size]
        partition = torch.full((capacity,), -1, dtype=torch.int32, device=self.device)
        partition[: self._size] = self._partition_of_row[: self._size]
        valid = torch.zeros(capacity, dtype=torch.bool, device=self.device)
        valid[: self._size] = self._valid[: self._size]
        self._corpus, self._partition_of_row, self._valid = corpus, partition, valid
        if self._int8 is not None:
            self._int8 = self._int8.grown(capacity)

    def compact(self) -> None:
        """Drop dead rows and regroup rows by partition (one contiguous range per user again)."""
        with self._lock:
            live = [i for i in range(self._size) if bool(self._valid[i])]
            partition_key = {v: k for k, v in self._partitions.items()}
            rows = []
            for i in sorted(live, key=lambda i: int(self._partition_of_row[i])):
                tenant_id, user_id = partition_key[int(self._partition_of_row[i])]
                rows.append((self._ids[i], tenant_id, user_id, self._corpus[i].float().cpu().numpy()))
            self._rebuild(rows)

    def start(self) -> None:
        """Follow the change feed in a background thread, every `max_lag_s`."""
        self._thread = threading.Thread(target=self._follow, name="vector-index-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _follow(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    while not self._stop.is_set():
                        self.sync(conn)  # one indexed read when nothing changed
                        self._stop.wait(self.max_lag_s)
            except Exception as exc:  # the follower must outlive any error: a dead one freezes the index
                log.warning("vector index sync failed (%s: %s); reconnecting", type(exc).__name__, exc)
                self._stop.wait(1.0)

    # -- search ------------------------------------------------------------------------------

    def partition(self, tenant_id: uuid.UUID, user_id: str) -> int | None:
        return self._partitions.get((tenant_id, user_id))

    def search(self, queries: np.ndarray, partitions: Sequence[int | None], k: int) -> list[DenseHits]:
        """Top-`k` memories for each query vector, each query only within its own partition."""
        with self._lock:
            if not len(queries):
                return []
            known = [p if p is not None else -2 for p in partitions]
            q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device, self.dtype)
            k = max(1, min(k, 128))
            if len(set(known)) == 1:
                # One user: scan only that user's row ranges.
                ranges = self._segments.get(known[0], [])
                return self._search_ranges(q, ranges, k)
            # Many users: the segmented top-k reads only the rows of the users asked (a partition
            # filter over the whole index would read every row for every batch).
            group_of: dict[int, int] = {}
            starts: list[int] = []
            ends: list[int] = []
            ptr = [0]
            for p in known:
                if p not in group_of and p in self._segments:
                    group_of[p] = len(group_of)
                    for s, e in self._segments[p]:
                        starts.append(s)
                        ends.append(e)
                    ptr.append(len(starts))
            n = self._size
            scores, index = segmented_topk(
                q,
                self._corpus[:n],
                k,
                np.fromiter((group_of.get(p, -1) for p in known), dtype=np.int64, count=len(known)),
                np.array(ptr, dtype=np.int64),
                np.array(starts, dtype=np.int64),
                np.array(ends, dtype=np.int64),
                valid=self._valid[:n],
            )
            return self._hits(scores, index, offset_map=None)

    def _search_ranges(self, q: torch.Tensor, ranges: list[tuple[int, int]], k: int) -> list[DenseHits]:
        if not ranges:
            empty = np.zeros(0, dtype=np.int64)
            return [DenseHits(self._ids, empty, empty.astype(np.float32)) for _ in range(q.shape[0])]
        rows_total = sum(e - s for s, e in ranges)
        if len(ranges) == 1:  # one contiguous range: views, no copy
            start, end = ranges[0]
            corpus, valid = self._corpus[start:end], self._valid[start:end]
            offset_map = None
        else:
            offset_map = torch.cat([torch.arange(s, e, device=self.device) for s, e in ranges])
            corpus, valid = self._corpus[offset_map], self._valid[offset_map]
        if rows_total <= SMALL_SCAN_ROWS:
            # A small partition is one matrix product and a sort: cheaper than a kernel launch that is
            # built to stream millions of rows (same semantics: kernels.topk_torch is its reference).
            scores, index = topk_torch(q, corpus, k, valid=valid)
        else:
            # The int8 copy is a view of a contiguous range; split ranges (until the next compaction)
            # go without it: gathering it on every search would cost what it saves.
            prescreen = self._int8.rows(start, end) if self._int8 is not None and offset_map is None else None
            if valid.data_ptr() % 16:
                # Triton specialises pointers on 16-byte alignment: an aligned copy keeps every range
                # on the variant `warm_up` compiled.
                valid = valid.clone()
            scores, index = fused_topk(q, corpus, k, valid=valid, prescreen=prescreen)
        if offset_map is None:
            return self._hits(scores, index + start * (index >= 0), offset_map=None)
        return self._hits(scores, index, offset_map=offset_map)

    def warm_up(self, k: int) -> None:
        """Compile, before traffic comes, every kernel variant searches with this `k` can launch
        (`kernels.precompile`: the running kernel's shape classes, the threshold scans, the
        segmented top-k), and run the torch paths once (their first call sets up cuBLAS)."""
        k = max(1, min(k, 128))
        precompile(self.dim, k, dtype=self.dtype, device=self.device, prescreen=self.int8_prescreen)
        if self._size:
            q = torch.nn.functional.normalize(self._corpus[:1].float(), dim=1).cpu().numpy()
            first = int(self._partition_of_row[0])
            # The torch paths at every batch size up to 16 and then by powers of two: cuBLAS loads
            # a kernel the first time a shape picks it (seen: 17 ms for the first 7-query batch).
            for batch in (*range(1, 17), 32, 64, 128, 256):
                self.search(np.repeat(q, batch, axis=0), [first] * batch, k)
                self.search(np.repeat(q, batch, axis=0), ([first, -2] * batch)[:batch], k)

    def _hits(
        self, scores: torch.Tensor, index: torch.Tensor, offset_map: torch.Tensor | None
    ) -> list[DenseHits]:
        if offset_map is not None:
            index = torch.where(index >= 0, offset_map[index.clamp(min=0)], index)
        # One transfer: the scores' bits ride in an int64 beside the indices.
        both = torch.stack([index, scores.contiguous().view(torch.int32).to(torch.int64)]).cpu().numpy()
        rows_all, bits = both[0], both[1].astype(np.int32)
        scores_all = bits.view(np.float32)
        counts = (rows_all >= 0).sum(axis=1).tolist()  # filled slots come first
        ids = self._ids
        return [DenseHits(ids, rows_all[i, :c], scores_all[i, :c]) for i, c in enumerate(counts)]

    @property
    def size(self) -> int:
        return self._size - self._dead
