"""Segmented top-k: each query is scored only against the row ranges of its own group.

A batch of queries from many groups (many users of an index whose rows are grouped by user) scanned
with a group filter reads every row of the corpus for every batch; here the work is cut into items
of (a block of queries of one group, a chunk of one of that group's row ranges), so the bytes read
follow the rows of the groups in the batch.  Each item runs the running top-k kernel of
``kernels/fused_topk.py`` (``SEGMENTED``: the program reads its queries and rows from a work table)
and leaves its best k in scratch; the lists of a query's chunks are merged by one torch top-k.

The plan (which item scans what) is made on the host with numpy from the ranges, and travels to the
device as one small tensor.  Semantics are those of ``fused_topk`` with ``row_partition`` equal to
each row's group: exact, ties broken by the smaller row index, ``-inf`` / ``-1`` for missing slots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from memsvc.kernels.reference import KEY_EMPTY, MAX_K, pack_keys, topk_torch, unpack_keys

Ints = npt.NDArray[np.int64]

# Rows per work item: a chunk of one range.  Large enough that a program streams several tiles
# after its pipeline fills; ranges of large groups split into several items (more programs).
CHUNK_ROWS = 8192


@dataclass(frozen=True)
class SegmentPlan:
    """Work items of one batch: ``work`` [W, 4] int32 (first query in group order, queries, first
    row, end row), ``dest`` [W, block_q] int64 (row of the merge buffer each output goes to:
    ``query * chunks + chunk``, or the spare row ``q_n * chunks``), ``order`` (the queries that have
    rows, in group order) and ``chunks``: the most chunks any group has."""

    work: npt.NDArray[np.int32]
    dest: Ints
    order: Ints
    chunks: int


def plan_segments(
    query_group: Ints,
    range_ptr: Ints,
    range_start: Ints,
    range_end: Ints,
    *,
    block_q: int,
    chunk_rows: int = CHUNK_ROWS,
) -> SegmentPlan:
    """The work items for queries in groups (``query_group[q]``: a group, or -1 for none) whose
    row ranges are ``range_start[range_ptr[g]:range_ptr[g + 1]]`` .. ``range_end[...]``."""
    q_n = len(query_group)
    groups = len(range_ptr) - 1
    qg = np.asarray(query_group, dtype=np.int64)
    order = np.flatnonzero(qg >= 0)
    order = order[np.argsort(qg[order], kind="stable")]
    nq = np.bincount(qg[order], minlength=groups).astype(np.int64)
    q_first = np.concatenate(([0], np.cumsum(nq)[:-1])) if groups else np.zeros(0, np.int64)
    blocks = ((nq + block_q - 1) // block_q).astype(np.int64)
    # chunks of each range (ranges of a group are consecutive in the CSR arrays)
    starts = np.asarray(range_start, dtype=np.int64)
    ends = np.asarray(range_end, dtype=np.int64)
    lengths = np.maximum(ends - starts, 0)
    per_range = ((lengths + chunk_rows - 1) // chunk_rows).astype(np.int64)
    range_group = np.repeat(
        np.arange(groups), np.diff(np.asarray(range_ptr, dtype=np.int64)).astype(np.int64)
    )
    chunk_range = np.repeat(np.arange(len(starts)), per_range)
    first_chunk_of_range = np.concatenate(([0], np.cumsum(per_range)[:-1])) if len(starts) else per_range
    within = np.arange(len(chunk_range)) - first_chunk_of_range[chunk_range]
    c_start = starts[chunk_range] + within * chunk_rows
    c_end = np.minimum(c_start + chunk_rows, ends[chunk_range])
    c_group = range_group[chunk_range]
    per_group = np.bincount(c_group, minlength=groups)
    first_chunk_of_group = np.concatenate(([0], np.cumsum(per_group)[:-1])) if groups else per_group
    c_index = np.arange(len(c_group)) - first_chunk_of_group[c_group]  # chunk number within its group
    chunks = int(per_group.max()) if len(per_group) else 0
    # one item per (chunk, query block of the chunk's group)
    reps = blocks[c_group]
    w_chunk = np.repeat(np.arange(len(c_group)), reps)
    w_first = np.concatenate(([0], np.cumsum(reps)[:-1])) if len(reps) else reps
    w_block = np.arange(len(w_chunk)) - w_first[w_chunk]
    g = c_group[w_chunk]
    q0 = q_first[g] + w_block * block_q
    qn = np.minimum(block_q, nq[g] - w_block * block_q)
    work = np.stack([q0, qn, c_start[w_chunk], c_end[w_chunk]], axis=1).astype(np.int32)
    slot = np.arange(block_q)[None, :]
    pos = np.minimum(q0[:, None] + slot, max(len(order) - 1, 0))
    dest = np.where(
        slot < qn[:, None],
        order[pos] * max(chunks, 1) + c_index[w_chunk][:, None] if len(order) else 0,
        q_n * max(chunks, 1),
    )
    return SegmentPlan(work=work, dest=dest.astype(np.int64), order=order, chunks=max(chunks, 1))


def _use_triton(corpus: torch.Tensor) -> bool:
    from memsvc.kernels import triton_available

    if corpus.dtype not in (torch.float16, torch.bfloat16) or not triton_available():
        return False
    return corpus.is_cuda or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def segmented_topk(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    query_group: Ints,
    range_ptr: Ints,
    range_start: Ints,
    range_end: Ints,
    *,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k rows of ``corpus`` by ``dot(query, row)`` for each query, among the valid rows of its
    group's ranges only (host arrays: ``query_group`` [Q], -1 for a query without rows, and the
    groups' ranges in CSR form, see ``plan_segments``).  Returns ``(scores, indices)`` as
    ``fused_topk`` does: [Q, k] float32 and int64, best first."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be in 1..{MAX_K}, got {k}")
    if queries.dim() != 2 or corpus.dim() != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError("queries [Q, d] and corpus [N, d] must share d")
    if len(query_group) != queries.shape[0]:
        raise ValueError("query_group must have one entry per query")
    if valid is not None and (valid.dtype != torch.bool or valid.shape != (corpus.shape[0],)):
        raise ValueError("valid must be a bool tensor of one entry per row")
    if _use_triton(corpus):
        from memsvc.kernels.fused_topk import segmented_topk_triton

        return segmented_topk_triton(
            queries, corpus, k, query_group, range_ptr, range_start, range_end, valid
        )
    return segmented_topk_torch(queries, corpus, k, query_group, range_ptr, range_start, range_end, valid)


def segmented_topk_torch(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    query_group: Ints,
    range_ptr: Ints,
    range_start: Ints,
    range_end: Ints,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch fallback: one matrix product and top-k per group over its gathered rows."""
    q_n, dev = queries.shape[0], corpus.device
    keys = torch.full((q_n, k), KEY_EMPTY, dtype=torch.int64, device=dev)
    qg = np.asarray(query_group, dtype=np.int64)
    for g in np.unique(qg[qg >= 0]).tolist():
        lo, hi = int(range_ptr[g]), int(range_ptr[g + 1])
        pieces = [
            torch.arange(int(s), int(e), device=dev)
            for s, e in zip(range_start[lo:hi], range_end[lo:hi], strict=True)
            if e > s
        ]
        qi = torch.from_numpy(np.flatnonzero(qg == g)).to(dev)
        if not pieces:
            continue
        rows = torch.cat(pieces)
        s, i = topk_torch(queries[qi], corpus[rows], k, valid=None if valid is None else valid[rows])
        keys[qi] = pack_keys(s, torch.where(i >= 0, rows[i.clamp(min=0)], -1))
    return unpack_keys(keys)
