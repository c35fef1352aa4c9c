"""Triton kernels: fused similarity (``tl.dot``) + filtered top-k, never writing the Q×N scores.

Two methods share the tiling below: a *running* top-k (one pass; used up to 63 queries) and, for many
queries, a *threshold* method (``_threshold_topk``): the running kernel over every 16th tile gives a
lower bound of each query's k-th best score, then ``_threshold_scan_kernel`` only appends the rows at
or above it, so the tensor cores are not kept waiting by sorting in the loop.  Given an int8 copy of
the corpus (``kernels/prescreen.py``), the scan reads that instead, on int8 tensor cores, with an
integer test that admits every row whose exact score could reach the bound, and ``_rescore_kernel``
scores the appended rows exactly.

Layout of the work
------------------
The grid is ``(ceil(Q / BQ), S)``: program ``(b, s)`` scores query block ``b`` against the contiguous
row range ``s`` of the corpus (``rows_per_split`` rows), tile by tile (``BN`` rows), with the tile's
scores computed by ``tl.dot`` over ``BK``-wide slices of ``d`` with fp32 accumulation.  Query blocks
are the fastest grid axis so that the programs streaming the same corpus rows run together and share
them through L2.  With ``resident`` (the default when ``d <= 4 * BK``) the query block is loaded once
and the d-slices are unrolled, so the tile loop is the innermost loop and Triton's software pipeliner
streams corpus tiles across iterations (cp.async, ``num_stages``); per-row filter vectors are loaded
one tile ahead by hand.

Running top-k per (query, split)
--------------------------------
Each (query, split) pair owns a small scratch buffer of ``CAP`` (score, index) slots in global memory
(it stays in L2).  Slots ``[0, K)`` hold the best K seen so far (sorted), the rest take new candidates.
A row is a *candidate* when it is eligible (filters are applied here, in the epilogue) and its score
beats ``thr``, the K-th best score of the buffer at the last flush.  Because a program visits rows in
increasing index order, a later row that only *ties* ``thr`` would lose the tie, so the strict ``>``
is exact.  Tiles without candidates cost the compare and one cross-warp reduction; when every query
has at most ``rounds`` candidates they are moved with row reductions; otherwise they are appended at
positions given by a prefix count along the row.  When some buffer could overflow on the next tile it
is *flushed*: sorted as packed int64 keys (a bitonic network), which leaves the best K in front, and
``thr`` is refreshed.  A final flush leaves each (query, split) top-K in slots ``[0, K)``; a torch
epilogue merges the ``S × K`` partial results.  Measurements: ``kernels/NOTES.md`` and BENCHMARKS.md.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from memsvc.kernels.prescreen import quantize_queries
from memsvc.kernels.reference import KEY_EMPTY, TopkArgs, pack_keys, unpack_keys


@triton.jit
def _pack(s, idx):
    # (score desc, index asc) as one signed int64; see kernels/reference.py for the mapping.
    s = tl.where(s == 0.0, 0.0, s)  # -0.0 and +0.0 must tie
    bits = s.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    key = (ordered.to(tl.int64) << 32) | (4294967295 - idx.to(tl.int64))
    empty = (idx < 0) | (s == float("-inf")) | (s != s)
    return tl.where(empty, -9223372036854775808, key)


@triton.jit
def _unpack(key):
    hi = (key >> 32).to(tl.int32)
    bits = hi ^ ((hi >> 31) & 0x7FFFFFFF)
    s = bits.to(tl.float32, bitcast=True)
    idx = (4294967295 - (key & 4294967295)).to(tl.int32)
    empty = key == -9223372036854775808
    s = tl.where(empty, float("-inf"), s)
    idx = tl.where(empty, -1, idx)
    return s, idx


@triton.jit
def _load_chunk(ptrs, kk, ks, D: tl.constexpr, BK: tl.constexpr):
    # one BK-wide slice of d (columns kk .. kk+BK) of a [rows, BK] pointer block
    if D % BK != 0:
        return tl.load(ptrs + kk, mask=((kk + ks) < D)[None, :], other=0.0)
    return tl.load(ptrs + kk)


@triton.jit
def _mma(a, b, acc, UPCAST: tl.constexpr):
    # acc += a @ b.T with fp32 accumulation (int32 for int8 operands)
    if UPCAST:
        # The CPU interpreter cannot multiply bf16 (and its int8 products would wrap); fp32 products
        # and sums of these values are exact (int8 sums over d <= 512 stay below 2**24).
        acc = tl.dot(a.to(tl.float32), tl.trans(b.to(tl.float32)), acc, input_precision="ieee")
    elif a.dtype == tl.int8:
        acc = tl.dot(a, tl.trans(b), acc, out_dtype=tl.int32)
    else:
        acc = tl.dot(a, tl.trans(b), acc)
    return acc


@triton.jit
def _load_query_block(q_ptrs, ks, D: tl.constexpr, BK: tl.constexpr, NCH: tl.constexpr):
    # the query block as up to 4 d-slices held for the whole tile loop (unused slices alias the first)
    a0 = _load_chunk(q_ptrs, 0, ks, D, BK)
    a1 = a0
    a2 = a0
    a3 = a0
    if NCH > 1:
        a1 = _load_chunk(q_ptrs, BK, ks, D, BK)
    if NCH > 2:
        a2 = _load_chunk(q_ptrs, 2 * BK, ks, D, BK)
    if NCH > 3:
        a3 = _load_chunk(q_ptrs, 3 * BK, ks, D, BK)
    return a0, a1, a2, a3


@triton.jit
def _resident_dot(
    a0,
    a1,
    a2,
    a3,
    c_ptrs,
    ks,
    acc,
    D: tl.constexpr,
    BK: tl.constexpr,
    NCH: tl.constexpr,
    UPCAST: tl.constexpr,
):
    # acc += (resident query block) @ (corpus tile).T, the d-slices unrolled (no inner loop)
    acc = _mma(a0, _load_chunk(c_ptrs, 0, ks, D, BK), acc, UPCAST)
    if NCH > 1:
        acc = _mma(a1, _load_chunk(c_ptrs, BK, ks, D, BK), acc, UPCAST)
    if NCH > 2:
        acc = _mma(a2, _load_chunk(c_ptrs, 2 * BK, ks, D, BK), acc, UPCAST)
    if NCH > 3:
        acc = _mma(a3, _load_chunk(c_ptrs, 3 * BK, ks, D, BK), acc, UPCAST)
    return acc


@triton.jit
def _max2(a0, a1, b0, b1):
    return tl.maximum(a0, b0), tl.maximum(a1, b1)


@triton.jit
def _cta_barrier(x, ASM: tl.constexpr):
    # bar.sync orders this program's global stores before its later loads (the candidate buffers are
    # written and read by different threads).  As inline asm: tl.debug_barrier() inside the tile loop
    # stops Triton's software pipeliner.  x (int32) only threads the asm into the dataflow.
    if ASM:
        x = tl.inline_asm_elementwise(
            "membar.cta;\n\tbar.sync 0;\n\tmov.b32 $0, $1;",
            "=r,r",
            [x],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )
    else:
        tl.debug_barrier()  # the interpreter runs programs one at a time; nothing to order
    return x


@triton.jit
def _indicator(NDIM: tl.constexpr, j: tl.constexpr):
    ar = tl.arange(0, 2)
    return tl.reshape(ar, [1] * (NDIM - j - 1) + [2] + [1] * j)


@triton.jit
def _cmp_swap(h, flip, i: tl.constexpr, NDIM: tl.constexpr):
    # Partner along hypercube axis NDIM-1-i: the pair's sum minus self.  Exact for ints (wrapping adds);
    # unlike tl.sort's xor_sum it is a built-in reduction, which the CPU interpreter runs vectorised.
    y = tl.sum(h, axis=NDIM - 1 - i, keep_dims=True) - h
    is_right = _indicator(NDIM, i)
    return tl.where((h > y) != (flip ^ is_right).to(tl.int1), y, h)


@triton.jit
def _bitonic_merge(h, stage: tl.constexpr, order: tl.constexpr, NDIM: tl.constexpr):
    # order 0: ascending, 1: descending, 2: alternating by `stage` (as in triton.language.standard)
    flip = _indicator(NDIM, stage) if order == 2 else order
    for i in tl.static_range(stage):
        h = _cmp_swap(h, flip, stage - 1 - i, NDIM)
    return h


@triton.jit
def _sort_desc(x, LOG_N: tl.constexpr, NDIM: tl.constexpr):
    """Bitonic sort of int64 keys along the last axis (2**LOG_N long); NDIM = log2(x.numel)."""
    h = tl.reshape(x, [2] * NDIM)
    for i in tl.static_range(1, LOG_N + 1):
        h = _bitonic_merge(h, i, 2 if i < LOG_N else 1, NDIM)
    return tl.reshape(h, x.shape)


@triton.jit
def _flush(
    ss_prog,
    si_prog,
    thr_prog,
    K: tl.constexpr,
    CAP: tl.constexpr,
    BQ: tl.constexpr,
    FQ: tl.constexpr,
    LOG_CAP: tl.constexpr,
    LOG_FQ: tl.constexpr,
):
    """Sort each query's CAP slots (best first) in place and store its K-th best score to thr."""
    cols = tl.arange(0, CAP)
    # Unrolled (few copies: FQ is chosen so that BQ // FQ <= 8): a nested runtime loop would stop
    # Triton's software pipeliner from pipelining the tile loop that contains this code.
    for j in tl.static_range(BQ // FQ):
        qi = j * FQ + tl.arange(0, FQ)
        offs = (qi * CAP)[:, None] + cols[None, :]
        # .cg: read what other threads of this program just stored (bypass L1).
        s = tl.load(ss_prog + offs, cache_modifier=".cg")
        i = tl.load(si_prog + offs, cache_modifier=".cg")
        key = _sort_desc(_pack(s, i), LOG_CAP, LOG_CAP + LOG_FQ)
        s2, i2 = _unpack(key)
        tl.store(ss_prog + offs, s2)
        tl.store(si_prog + offs, i2)
        kth = tl.sum(tl.where(cols[None, :] == K - 1, s2, 0.0), axis=1)
        tl.store(thr_prog + qi, kth)


@triton.jit
def _physical(rows, BN: tl.constexpr, TILE_STEP: tl.constexpr):
    # With TILE_STEP > 1 the kernel sees only every TILE_STEP-th tile of BN rows (a sample that
    # bounds the k-th best score from below, see fused_topk_triton): logical row -> corpus row.
    if TILE_STEP == 1:
        return rows
    return (rows // BN) * (BN * TILE_STEP) + rows % BN


# Q and N vary from call to call in a server; specialising on them (== 1, divisible by 16) would
# compile a new variant, tens of seconds each, for many of them.
@triton.jit(do_not_specialize=["Q", "N"])
def _fused_topk_kernel(
    q_ptr,
    c_ptr,
    ss_ptr,
    si_ptr,
    thr_ptr,
    rpart_ptr,
    qpart_ptr,
    valid_ptr,
    rtime_ptr,
    tmin_ptr,
    tmax_ptr,
    bias_ptr,
    work_ptr,
    Q,
    N,
    stride_q,
    stride_c,
    QP,
    rows_per_split,
    D: tl.constexpr,
    K: tl.constexpr,
    CAP: tl.constexpr,
    BQ: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    FQ: tl.constexpr,
    LOG_CAP: tl.constexpr,
    LOG_FQ: tl.constexpr,
    UPCAST: tl.constexpr,
    PREFIX_DOT: tl.constexpr,
    RESIDENT: tl.constexpr,
    NCH: tl.constexpr,
    ASM_BARRIER: tl.constexpr,
    ROUNDS: tl.constexpr,
    HAS_PART: tl.constexpr,
    HAS_VALID: tl.constexpr,
    HAS_TMIN: tl.constexpr,
    HAS_TMAX: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    TILE_STEP: tl.constexpr,
    SEGMENTED: tl.constexpr = False,
):
    if SEGMENTED:
        # One work item per program (kernels/segmented.py): queries [q0, q0 + qn) of one group
        # against the rows [n_start, n_end) of one of its row ranges; scratch [W, BQ, CAP].
        w = tl.program_id(0)
        q0 = tl.load(work_ptr + w * 4)
        qn = tl.load(work_ptr + w * 4 + 1)
        n_start = tl.load(work_ptr + w * 4 + 2)
        n_end = tl.load(work_ptr + w * 4 + 3)
        qs = q0 + tl.arange(0, BQ)
        qmask = tl.arange(0, BQ) < qn
        qs_c = tl.minimum(qs, q0 + qn - 1)
        prog = w.to(tl.int64) * BQ
    else:
        pid_q = tl.program_id(0)
        split = tl.program_id(1)
        q0 = pid_q * BQ
        qs = q0 + tl.arange(0, BQ)
        qmask = qs < Q
        qs_c = tl.minimum(qs, Q - 1)  # clamped rows: loads need no mask, results are masked by qmask
        n_start = split * rows_per_split
        n_end = tl.minimum(n_start + rows_per_split, N)
        # This program's scratch rows are contiguous (layout [S, QP, CAP], QP = query blocks * BQ), so
        # per-row offsets fit in int32 and the padding rows need no masks.
        prog = split.to(tl.int64) * QP + q0
    ss_prog = ss_ptr + prog * CAP
    si_prog = si_ptr + prog * CAP
    thr_prog = thr_ptr + prog
    roff = tl.arange(0, BQ) * CAP

    # Empty buffers (scratch comes from torch.empty).
    cols = tl.arange(0, CAP)
    for j in tl.static_range(BQ // FQ):
        ioffs = ((j * FQ + tl.arange(0, FQ)) * CAP)[:, None] + cols[None, :]
        tl.store(ss_prog + ioffs, tl.full([FQ, CAP], float("-inf"), tl.float32))
        tl.store(si_prog + ioffs, tl.full([FQ, CAP], -1, tl.int32))

    ks = tl.arange(0, BK)
    q_ptrs = q_ptr + qs_c.to(tl.int64)[:, None] * stride_q + ks[None, :]
    if HAS_PART:
        qp = tl.load(qpart_ptr + qs_c)
    if HAS_TMIN:
        tmin = tl.load(tmin_ptr + qs_c)
    if HAS_TMAX:
        tmax = tl.load(tmax_ptr + qs_c)
    if RESIDENT:
        # The query block stays on chip for the whole loop (up to 4 d-slices): only corpus tiles stream,
        # and with no inner loop the software pipeliner overlaps the next tile's loads with this one.
        a0, a1, a2, a3 = _load_query_block(q_ptrs, ks, D, BK, NCH)
    if PREFIX_DOT:
        # upper-triangular ones: (cand @ tri)[q, i] = #candidates in columns <= i (exact in fp32)
        tri = (tl.arange(0, BN)[:, None] <= tl.arange(0, BN)[None, :]).to(tl.float16)

    thr = tl.full([BQ], float("-inf"), tl.float32)
    cnt = tl.zeros([BQ], tl.int32)
    # Per-row filter vectors are loaded one tile ahead: the pipeliner only prefetches loads that feed
    # tl.dot, and a plain load in the epilogue would expose its latency on every tile.
    nxt = _physical(tl.minimum(n_start + tl.arange(0, BN), N - 1), BN, TILE_STEP)
    if HAS_BIAS:
        bias_n = tl.load(bias_ptr + nxt)
    if HAS_VALID:
        valid_n = tl.load(valid_ptr + nxt)
    if HAS_PART:
        rp_n = tl.load(rpart_ptr + nxt)
    if HAS_TMIN or HAS_TMAX:
        rt_n = tl.load(rtime_ptr + nxt)
    tl.debug_barrier()
    # One extra, empty tile at the end (all rows masked) runs the final flush through the same code
    # path as the in-loop flushes: a single inlined copy of the sort keeps compile time down.
    for n0 in range(n_start, n_end + BN, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < n_end
        rows_c = _physical(tl.minimum(rows, N - 1), BN, TILE_STEP)
        c_ptrs = c_ptr + rows_c.to(tl.int64)[:, None] * stride_c + ks[None, :]
        nxt = _physical(tl.minimum(rows + BN, N - 1), BN, TILE_STEP)
        if HAS_BIAS:
            bias_c = bias_n
            bias_n = tl.load(bias_ptr + nxt)
        if HAS_VALID:
            valid_c = valid_n
            valid_n = tl.load(valid_ptr + nxt)
        if HAS_PART:
            rp_c = rp_n
            rp_n = tl.load(rpart_ptr + nxt)
        if HAS_TMIN or HAS_TMAX:
            rt = rt_n
            rt_n = tl.load(rtime_ptr + nxt)
        acc = tl.zeros([BQ, BN], dtype=tl.float32)
        if RESIDENT:
            acc = _resident_dot(a0, a1, a2, a3, c_ptrs, ks, acc, D, BK, NCH, UPCAST)
        else:
            for kk in range(0, D, BK):
                acc = _mma(
                    _load_chunk(q_ptrs, kk, ks, D, BK), _load_chunk(c_ptrs, kk, ks, D, BK), acc, UPCAST
                )

        # ---- epilogue: bias, eligibility, candidates ----
        s = acc
        if HAS_BIAS:
            s = s + bias_c[None, :]
        elig = rmask[None, :] & qmask[:, None]
        if HAS_VALID:
            elig = elig & (valid_c != 0)[None, :]
        if HAS_PART:
            elig = elig & (rp_c[None, :] == qp[:, None])
        if HAS_TMIN or HAS_TMAX:
            if HAS_TMIN:
                elig = elig & (rt[None, :] >= tmin[:, None])
            if HAS_TMAX:
                elig = elig & (rt[None, :] <= tmax[:, None])
        cand = elig & (s > thr[:, None])
        ci = cand.to(tl.int32)
        n_c = tl.sum(ci, axis=1)
        # One cross-warp reduction per tile for both decisions: the most candidates any query has
        # here, and whether some buffer could overflow on the next tile (then flush after appending).
        most, over = tl.reduce((n_c, (cnt + n_c > CAP - BN).to(tl.int32)), 0, _max2)
        if most <= ROUNDS:
            if most > 0:
                # Common case once thr has risen: a few candidates per query; each round moves the
                # best remaining one of every query with row reductions (no prefix count, no layout
                # shuffle of the tile) and stores only [BQ] values.
                # Round 0 (the usual case: one candidate) needs no max: sum over the single hit.
                has = n_c > 0
                if most == 1:
                    tl.store(ss_prog + roff + cnt, tl.sum(tl.where(cand, s, 0.0), axis=1), mask=has)
                    tl.store(si_prog + roff + cnt, tl.sum(tl.where(cand, rows[None, :], 0), axis=1), mask=has)
                    cnt = cnt + has.to(tl.int32)
                else:
                    left = cand
                    for r in tl.static_range(ROUNDS):
                        m1 = tl.max(tl.where(left, s, float("-inf")), axis=1)
                        hit = left & (s == m1[:, None])
                        j1 = tl.min(tl.where(hit, rows[None, :], 2147483647), axis=1)
                        has = n_c > r
                        tl.store(ss_prog + roff + cnt, m1, mask=has)
                        tl.store(si_prog + roff + cnt, j1, mask=has)
                        cnt = cnt + has.to(tl.int32)
                        left = left & (rows[None, :] != j1[:, None])
        else:
            # inclusive prefix count of candidates along the row
            incl = tl.dot(cand.to(tl.float16), tri).to(tl.int32) if PREFIX_DOT else tl.cumsum(ci, axis=1)
            aoffs = (roff + cnt)[:, None] + (incl - ci)
            tl.store(ss_prog + aoffs, s, mask=cand)
            tl.store(si_prog + aoffs, rows[None, :] + tl.zeros([BQ, BN], tl.int32), mask=cand)
            cnt = cnt + n_c
        # Flush when the next tile might not fit, and always after the last (empty) tile.
        if (over > 0) | (n0 >= n_end):
            cnt = _cta_barrier(cnt, ASM_BARRIER)
            _flush(ss_prog, si_prog, thr_prog, K, CAP, BQ, FQ, LOG_CAP, LOG_FQ)
            cnt = _cta_barrier(tl.full([BQ], K, tl.int32), ASM_BARRIER)
            thr = tl.load(thr_prog + tl.arange(0, BQ), cache_modifier=".cg")


@triton.jit
def _collect(
    cnt_ptr,
    out_s_ptr,
    out_i_ptr,
    qs_c,
    out_off,
    rows,
    s,
    cand,
    thr,
    CAP: tl.constexpr,
    BQ: tl.constexpr,
    BN: tl.constexpr,
    GUARD: tl.constexpr,
    ONE_HIT: tl.constexpr,
    STORE_SCORE: tl.constexpr,
):
    """Append a tile's candidates to their queries' lists.  With ``GUARD`` a tile without candidates
    costs one block reduction.  With ``ONE_HIT`` too (the int8 scan: ``cand`` is ``s >= thr``, and
    only indices are stored), candidates are appended one per query at a time, with [BQ]-long row
    reductions and atomics instead of the predicated per-score ones of ``_append``: faster where most
    tiles hold a few candidates (the int8 scan, ~9 per tile), slower where most hold none (the fp16
    scan, ~1 per tile; measured on the H100)."""
    if GUARD and not ONE_HIT:
        if tl.max(tl.max(cand.to(tl.int32), axis=1), axis=0) > 0:
            _append(cnt_ptr, out_s_ptr, out_i_ptr, qs_c, out_off, rows, s, cand, CAP, BQ, BN, STORE_SCORE)
    elif GUARD:
        tl.static_assert(not STORE_SCORE, "the one-hit path stores indices only")
        # One reduction gives both a query's count of candidates (high bits) and, when it is one,
        # that candidate's column (low bits: a sum of distinct columns < 2**16 for BN <= 256).
        tot = tl.sum(tl.where(cand, (tl.arange(0, BN) + 65536)[None, :], 0), axis=1)
        n_c = tot >> 16
        most = tl.max(n_c, axis=0)
        if most == 1:
            has = n_c > 0
            pos = tl.atomic_add(cnt_ptr + qs_c, 1, mask=has, sem="relaxed")
            ok = has & (pos < CAP)
            slot = qs_c.to(tl.int64) * CAP + pos
            tl.store(out_i_ptr + slot, tl.min(rows, axis=0) + (tot & 65535), mask=ok)
        elif most > 1:
            # One candidate per query and round (the largest column left), by row reductions.  The
            # per-score atomics of _append would want the mask in another layout: a conversion
            # through shared memory, with barriers, that the compiler hoists out of this branch into
            # every tile.  The rounds test the scores again rather than keep the mask, which would
            # be packed into registers, also in every tile.
            cols = tl.arange(0, BN)[None, :]
            left = s
            for _ in range(most):
                col = tl.max(tl.where(left >= thr[:, None], cols, -1), axis=1)
                has = col >= 0
                pos = tl.atomic_add(cnt_ptr + qs_c, 1, mask=has, sem="relaxed")
                slot = qs_c.to(tl.int64) * CAP + pos
                tl.store(out_i_ptr + slot, tl.min(rows, axis=0) + col, mask=has & (pos < CAP))
                left = tl.where(cols == col[:, None], -2147483648, left)
    else:
        _append(cnt_ptr, out_s_ptr, out_i_ptr, qs_c, out_off, rows, s, cand, CAP, BQ, BN, STORE_SCORE)


@triton.jit
def _append(
    cnt_ptr,
    out_s_ptr,
    out_i_ptr,
    qs_c,
    out_off,
    rows,
    s,
    cand,
    CAP: tl.constexpr,
    BQ: tl.constexpr,
    BN: tl.constexpr,
    STORE_SCORE: tl.constexpr,
):
    # Each candidate takes the next slot of its query's list; slots past CAP are only counted.
    pos = tl.atomic_add(cnt_ptr + qs_c[:, None] + tl.zeros([BQ, BN], tl.int32), 1, mask=cand, sem="relaxed")
    ok = cand & (pos < CAP)
    if STORE_SCORE:
        tl.store(out_s_ptr + out_off + pos, s, mask=ok)
    tl.store(out_i_ptr + out_off + pos, rows[None, :] + tl.zeros([BQ, BN], tl.int32), mask=ok)


# The int8 scan's integer test: row terms lie in [-2**30, 2**30] (-2**30: not eligible) and thresholds
# within +-2**29 (else the query is answered by the running kernel), while |int8 dot| < 2**23 (d <= 512):
# no sum wraps around in int32, and a row term of -2**30 never reaches a threshold.
_INT_THR_LIMIT = tl.constexpr(2**29)
_INT_NEVER = tl.constexpr(2**31 - 1)


@triton.jit(do_not_specialize=["Q"])
def _thresholds_kernel(
    bound_ptr,
    margin_ptr,
    unit_ptr,
    thr_ptr,
    unknown_ptr,
    n_unknown_ptr,
    Q,
    INT8: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Each query's scan threshold from its sampled bound: the bound less a rounding margin (fp32
    sums in another order may differ in the last bits; the margin only adds candidates), as fp32
    (NaN: no bound), or with ``INT8`` less the quantisation margin too, in units of the int8
    product, rounded down with room for float64 rounding (``_INT_NEVER``: no bound, or one outside
    +-2**29, e.g. from absurd biases).  Marks and counts the queries without a bound."""
    qs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = qs < Q
    b = tl.load(bound_ptr + qs, mask=m, other=0.0)
    unknown = ~((b == b) & (tl.abs(b) < float("inf")))
    thr = b - (tl.abs(b) * 0.00001 + 0.000001)
    if INT8:
        ratio = (thr - tl.load(margin_ptr + qs, mask=m, other=0.0)).to(tl.float64)
        ratio = ratio / tl.load(unit_ptr).to(tl.float64)
        t = tl.math.floor(ratio - tl.abs(ratio) * 9.094947017729282e-13 - 2.0)  # 2**-40
        unknown = unknown | ~(tl.abs(t) <= _INT_THR_LIMIT)
        tl.store(thr_ptr + qs, tl.where(unknown, _INT_NEVER, tl.where(unknown, 0.0, t).to(tl.int32)), mask=m)
    else:
        tl.store(thr_ptr + qs, tl.where(unknown, float("nan"), thr), mask=m)
    tl.store(unknown_ptr + qs, unknown.to(tl.uint8), mask=m)
    tl.atomic_add(n_unknown_ptr, tl.sum((unknown & m).to(tl.int32), axis=0))


@triton.jit(do_not_specialize=["Q", "N"])
def _threshold_scan_kernel(
    q_ptr,
    c_ptr,
    thr_ptr,
    n_unknown_ptr,
    cnt_ptr,
    out_s_ptr,
    out_i_ptr,
    rpart_ptr,
    qpart_ptr,
    valid_ptr,
    rtime_ptr,
    tmin_ptr,
    tmax_ptr,
    bias_ptr,
    tinfo_ptr,
    Q,
    N,
    stride_q,
    stride_c,
    rows_per_split,
    D: tl.constexpr,
    CAP: tl.constexpr,
    BQ: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    UPCAST: tl.constexpr,
    NCH: tl.constexpr,
    GUARD: tl.constexpr,
    HAS_PART: tl.constexpr,
    HAS_VALID: tl.constexpr,
    HAS_TMIN: tl.constexpr,
    HAS_TMAX: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    INT8: tl.constexpr,
    PREFETCH_ROWS: tl.constexpr,
):
    """Append every eligible row scoring >= the query's threshold to the query's candidate list.

    With a threshold that already bounds the k-th best score from below, no running top-k is kept:
    the epilogue is a compare and a predicated atomic append, with no sorting and no barrier, so the
    tensor cores rarely wait.  A list that overflows CAP is detected by the caller (count > CAP).
    When most queries have no bound (``n_unknown_ptr[0] * 2 > Q``) it returns at once: the caller
    answers them all with the running kernel (decided on the device: no host sync).

    ``INT8``: queries and corpus are the int8 copies of ``kernels/prescreen.py``, ``thr_ptr`` holds
    integer thresholds (the bound less the quantisation margin, in units of the int8 product) and
    only indices are stored: the caller scores the appended rows again exactly, and applies each
    query's own time window then.  The per-score work is what limits this scan, so everything that
    depends on the row alone comes precomputed as one vector (``_int8_row_terms_kernel``): an int32
    term per row (``bias_ptr``), or with ``HAS_PART`` an int64 with the row's partition in the high
    half, and ``valid_ptr`` is unused.  The test is then an add, a select on the partition and a
    compare per score, integers only.  The row term admits the batch's loosest time window; a query
    block whose own windows are much narrower than that (``tinfo_ptr``: the rows' time range and the
    batch's window, fp32) tests them per score too, on fp32 times (``rtime_ptr``; rounding is
    monotonic, so no eligible row is lost), so its lists do not overflow.
    """
    if tl.load(n_unknown_ptr) * 2 > Q:
        return
    pid_q = tl.program_id(0)
    split = tl.program_id(1)
    qs = pid_q * BQ + tl.arange(0, BQ)
    qs_c = tl.minimum(qs, Q - 1)
    n_start = split * rows_per_split
    n_end = tl.minimum(n_start + rows_per_split, N)
    # Padding queries (and, in fp32, NaN: queries without a bound) take no candidates.
    thr = tl.where(qs < Q, tl.load(thr_ptr + qs_c), 2147483647 if INT8 else float("nan"))
    out_off = qs_c.to(tl.int64)[:, None] * CAP
    ks = tl.arange(0, BK)
    q_ptrs = q_ptr + qs_c.to(tl.int64)[:, None] * stride_q + ks[None, :]
    if HAS_PART:
        qp = tl.load(qpart_ptr + qs_c)
    if HAS_TMIN:
        tmin = tl.load(tmin_ptr + qs_c)
    if HAS_TMAX:
        tmax = tl.load(tmax_ptr + qs_c)
    if INT8 and (HAS_TMIN or HAS_TMAX):
        # Test the windows per score where the batch's window (in the row terms) is over 1.5 times
        # as wide as a query's own, both clamped to the rows' time range (padding queries repeat a
        # real one).
        rows_lo = tl.load(tinfo_ptr)
        rows_hi = tl.load(tinfo_ptr + 1)
        batch_w = tl.minimum(tl.load(tinfo_ptr + 3), rows_hi) - tl.maximum(tl.load(tinfo_ptr + 2), rows_lo)
        tmin = tmin.to(tl.float32) if HAS_TMIN else tl.full([BQ], float("-inf"), tl.float32)
        tmax = tmax.to(tl.float32) if HAS_TMAX else tl.full([BQ], float("inf"), tl.float32)
        own_w = tl.minimum(tmax, rows_hi) - tl.maximum(tmin, rows_lo)
        per_score_time = tl.max((batch_w > 1.5 * own_w).to(tl.int32), axis=0) > 0
    a0, a1, a2, a3 = _load_query_block(q_ptrs, ks, D, BK, NCH)
    if PREFETCH_ROWS:
        nxt = tl.minimum(n_start + tl.arange(0, BN), N - 1)
        if HAS_BIAS:
            bias_n = tl.load(bias_ptr + nxt)
        if HAS_VALID:
            valid_n = tl.load(valid_ptr + nxt)
        if HAS_PART and not INT8:
            rp_n = tl.load(rpart_ptr + nxt)
        if (HAS_TMIN or HAS_TMAX) and not INT8:
            rt_n = tl.load(rtime_ptr + nxt)
    for n0 in range(n_start, n_end, BN):
        rows = n0 + tl.arange(0, BN)
        rows_c = tl.minimum(rows, N - 1)
        c_ptrs = c_ptr + rows_c.to(tl.int64)[:, None] * stride_c + ks[None, :]
        # Row vectors one tile ahead (registers for two tiles' worth: the pipeliner only prefetches
        # the loads that feed tl.dot), or loaded before the tile's matrix product, which hides most
        # of their latency.
        if PREFETCH_ROWS:
            nxt = tl.minimum(rows + BN, N - 1)
            if HAS_BIAS:
                bias_c = bias_n
                bias_n = tl.load(bias_ptr + nxt)
            if HAS_VALID:
                valid_c = valid_n
                valid_n = tl.load(valid_ptr + nxt)
            if HAS_PART and not INT8:
                rp_c = rp_n
                rp_n = tl.load(rpart_ptr + nxt)
            if (HAS_TMIN or HAS_TMAX) and not INT8:
                rt = rt_n
                rt_n = tl.load(rtime_ptr + nxt)
        else:
            if HAS_BIAS:
                bias_c = tl.load(bias_ptr + rows_c)
            if HAS_VALID:
                valid_c = tl.load(valid_ptr + rows_c)
            if HAS_PART and not INT8:
                rp_c = tl.load(rpart_ptr + rows_c)
            if (HAS_TMIN or HAS_TMAX) and not INT8:
                rt = tl.load(rtime_ptr + rows_c)
        # What depends on the row alone folds into one additive term per row, computed on [BN]
        # vectors: the bias, or "never" for a row that is not eligible (fp32: -inf; int8: -2**30).
        ok_row = rows < n_end
        if INT8:
            if HAS_PART:  # int64: the term in the low half, the partition in the high half
                term = bias_c.to(tl.int32)
                rp_c = (bias_c >> 32).to(tl.int32)
            elif HAS_BIAS:
                term = bias_c
            else:
                term = 0
            radd = tl.where(ok_row, term, -1073741824)
            acc = tl.zeros([BQ, BN], dtype=tl.float32 if UPCAST else tl.int32)
            acc = _resident_dot(a0, a1, a2, a3, c_ptrs, ks, acc, D, BK, NCH, UPCAST)
            s = acc.to(tl.int32) + radd[None, :]
            if HAS_PART:  # a select, not a second predicate per score (predicates spill here)
                s = tl.where(rp_c[None, :] == qp[:, None], s, -1073741824)
            if HAS_TMIN or HAS_TMAX:  # noqa: SIM102 (constexpr first: per_score_time exists only then)
                if per_score_time:
                    rt = tl.load(rtime_ptr + rows_c)
                    in_window = (rt[None, :] >= tmin[:, None]) & (rt[None, :] <= tmax[:, None])
                    s = tl.where(in_window, s, -1073741824)
            cand = s >= thr[:, None]
        else:
            if HAS_VALID:
                ok_row = ok_row & (valid_c != 0)
            radd = tl.where(ok_row, bias_c if HAS_BIAS else 0.0, float("-inf"))
            acc = tl.zeros([BQ, BN], dtype=tl.float32)
            acc = _resident_dot(a0, a1, a2, a3, c_ptrs, ks, acc, D, BK, NCH, UPCAST)
            s = acc + radd[None, :]
            cand = s >= thr[:, None]
            if HAS_PART:
                cand = cand & (rp_c[None, :] == qp[:, None])
            if HAS_TMIN:
                cand = cand & (rt[None, :] >= tmin[:, None])
            if HAS_TMAX:
                cand = cand & (rt[None, :] <= tmax[:, None])
        # one-hit appends pay off where most tiles hold a few candidates: the int8 scan (see _collect)
        _collect(
            cnt_ptr,
            out_s_ptr,
            out_i_ptr,
            qs_c,
            out_off,
            rows,
            s,
            cand,
            thr,
            CAP,
            BQ,
            BN,
            GUARD,
            INT8,
            not INT8,
        )


@triton.jit(do_not_specialize=["N"])
def _int8_row_terms_kernel(
    valid_ptr,
    bias_ptr,
    inv_unit_ptr,
    rtime_ptr,
    tmin_ptr,
    tmax_ptr,
    rpart_ptr,
    out_ptr,
    rtime_f32_ptr,
    tinfo_ptr,
    N,
    HAS_VALID: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_TMIN: tl.constexpr,
    HAS_TMAX: tl.constexpr,
    HAS_PART: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The int8 scan's row vector: ``ceil(bias / unit)`` rounded up (an upper bound even after fp32
    rounding, clamped into int32 range), or -2**30 ("never") for a row that is not valid, whose bias
    is NaN or whose time lies outside the batch's loosest window (``tmin_ptr[0]``, ``tmax_ptr[0]``:
    the smallest lower and the largest upper bound); with ``HAS_PART``, as int64 with the row's
    partition in the high half.  With a time window also the rows' times in fp32 and, in ``tinfo_ptr``
    (fp32, set to [inf, -inf] by the caller), the rows' time range and the batch's window."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = rows < N
    ok = m
    if HAS_VALID:
        ok = ok & (tl.load(valid_ptr + rows, mask=m, other=0) != 0)
    if HAS_TMIN or HAS_TMAX:
        rt = tl.load(rtime_ptr + rows, mask=m, other=0)
        if HAS_TMIN:
            ok = ok & (rt >= tl.load(tmin_ptr))
        if HAS_TMAX:
            ok = ok & (rt <= tl.load(tmax_ptr))
        rt_f32 = rt.to(tl.float32)
        tl.store(rtime_f32_ptr + rows, rt_f32, mask=m)
        tl.atomic_min(tinfo_ptr, tl.min(tl.where(m, rt_f32, float("inf")), axis=0))
        tl.atomic_max(tinfo_ptr + 1, tl.max(tl.where(m, rt_f32, float("-inf")), axis=0))
        if tl.program_id(0) == 0:
            tl.store(tinfo_ptr + 2, tl.load(tmin_ptr).to(tl.float32) if HAS_TMIN else float("-inf"))
            tl.store(tinfo_ptr + 3, tl.load(tmax_ptr).to(tl.float32) if HAS_TMAX else float("inf"))
    if HAS_BIAS:
        x = tl.load(bias_ptr + rows, mask=m, other=0.0) * tl.load(inv_unit_ptr)
        x = x + tl.abs(x) * 0.00000095367431640625 + 2.0  # + 2**-20 |x| + 2
        x = tl.where(x >= -1073741824.0, tl.minimum(x, 1073741824.0), -1073741824.0)
        term = tl.where(ok, tl.math.ceil(x).to(tl.int32), -1073741824)
    else:
        term = tl.where(ok, 0, -1073741824)
    if HAS_PART:
        part = tl.load(rpart_ptr + rows, mask=m, other=0).to(tl.int64)
        tl.store(out_ptr + rows, (part << 32) | (term.to(tl.int64) & 0xFFFFFFFF), mask=m)
    else:
        tl.store(out_ptr + rows, term, mask=m)


@triton.jit(do_not_specialize=["Q"])
def _rescore_kernel(
    q_ptr,
    c_ptr,
    cnt_ptr,
    keys_ptr,
    out_i_ptr,
    bias_ptr,
    rtime_ptr,
    tmin_ptr,
    tmax_ptr,
    stride_q,
    stride_c,
    D: tl.constexpr,
    DP: tl.constexpr,
    CAP: tl.constexpr,
    BL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_TMIN: tl.constexpr,
    HAS_TMAX: tl.constexpr,
):
    """Exact scores (16-bit operands, fp32 sums, plus the bias) of the rows in slots
    [program_id(1) * BL, ...) of query program_id(0)'s candidate list, as packed keys (``_pack``),
    ready for a top-k: an empty key for a slot past the list's end or a row outside the query's own
    time window (the int8 scan tested the batch's loosest one)."""
    qi = tl.program_id(0)
    start = tl.program_id(1) * BL
    cnt = tl.minimum(tl.load(cnt_ptr + qi), CAP)
    slots = start + tl.arange(0, BL)
    base = qi.to(tl.int64) * CAP
    if start < cnt:
        ks = tl.arange(0, DP)
        q = tl.load(q_ptr + qi.to(tl.int64) * stride_q + ks, mask=ks < D, other=0.0).to(tl.float32)
        m = slots < cnt
        idx = tl.load(out_i_ptr + base + slots, mask=m, other=0)
        rows = tl.load(
            c_ptr + idx.to(tl.int64)[:, None] * stride_c + ks[None, :],
            mask=m[:, None] & (ks < D)[None, :],
            other=0.0,
        ).to(tl.float32)
        s = tl.sum(rows * q[None, :], axis=1)
        if HAS_BIAS:
            s = s + tl.load(bias_ptr + idx, mask=m, other=0.0)
        if HAS_TMIN or HAS_TMAX:
            rt = tl.load(rtime_ptr + idx, mask=m, other=0)
            if HAS_TMIN:
                s = tl.where(rt >= tl.load(tmin_ptr + qi), s, float("-inf"))
            if HAS_TMAX:
                s = tl.where(rt <= tl.load(tmax_ptr + qi), s, float("-inf"))
        keys = tl.where(m, _pack(s, idx), -9223372036854775808)
    else:
        keys = tl.full([BL], -9223372036854775808, tl.int64)
    tl.store(keys_ptr + base + slots, keys, mask=slots < CAP)


@dataclass(frozen=True)
class KernelConfig:
    """Tile shapes and launch parameters of the fused kernel."""

    block_q: int = 16
    block_n: int = 64
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 3
    ctas_per_sm: int = 2  # programs per SM the grid aims for (splits = SMs * this / query blocks)
    prefix_dot: bool = False  # prefix counts by tl.dot instead of tl.cumsum
    cap: int | None = None  # slots per (query, split); default next_pow2(k + 2 * block_n)
    maxnreg: int | None = None  # register cap per thread (more programs per SM, may spill)
    resident: bool = False  # keep the query block on chip (needs ceil(d / block_k) <= 4)
    rounds: int = 3  # tiles with at most this many candidates per query skip the prefix-count path
    # "running": one pass with a running top-k; "threshold": a sampled bound, then a scan that only
    # appends rows above it (see _threshold_topk); "auto": threshold from THRESHOLD_MIN_QUERIES queries
    method: str = "auto"
    sample_step: int = 16  # the bound's sample: every sample_step-th tile (~k * sample_step candidates)
    candidate_cap: int | None = None  # list slots per query; default next_pow2(2 * k * sample_step + 512)
    guard: bool = True  # skip the append code of tiles without candidates (one block reduction)
    scan_block_n: int | None = None  # tile rows of the threshold scan (default block_n)
    scan_num_stages: int | None = None  # pipeline stages of the threshold scan (default num_stages)
    # the int8 scan (with a prescreen), in place of the threshold scan
    int8_block_n: int = 64
    int8_num_stages: int = 2
    int8_ctas_per_sm: int = 2
    int8_num_warps: int | None = None  # default num_warps
    int8_maxnreg: int | None = None
    int8_list_factor: int = 8  # its error margin admits ~8x more rows than the fp16 scan: longer lists
    int8_min_rows: int | None = None  # use the prescreen from this many rows (default INT8_MIN_ROWS)
    int8_prefetch_rows: bool = True  # load the row vectors one tile ahead (else before each product)


THRESHOLD_MIN_QUERIES = 64
# Below this many rows the int8 path's fixed costs (query quantisation, longer candidate lists, the
# re-scoring) outweigh its faster scan: on the H100 it lost at N = 1M and won at N = 10M.
INT8_MIN_ROWS = 4_000_000


def default_config(q_n: int, k: int, d: int) -> KernelConfig:
    """Heuristic tile choice (tuned on an H100; see kernels/NOTES.md)."""
    if q_n <= 16:  # bandwidth-bound: one small query block, many N-splits
        return KernelConfig(
            block_q=16, block_n=64, block_k=128, num_warps=4, num_stages=3, ctas_per_sm=1, resident=True
        )
    # compute-bound: 128-query blocks reuse each corpus tile 128 times (wgmma); from 64 queries the
    # threshold method (a sampled bound, then a scan with 64-row tiles in 2 stages: 96 KB of queries +
    # 2 x 48 KB of corpus in shared memory).  The int8 scan (with a prescreen) runs two programs of
    # one warpgroup per SM, so that one's epilogue overlaps the other's matrix work (48 KB of queries
    # + 2 x 24 KB of corpus each), in about four waves, so that programs that take longer (more
    # candidates) are balanced by others.
    return KernelConfig(
        block_q=128,
        block_n=32,
        block_k=128,
        num_warps=8,
        num_stages=3,
        ctas_per_sm=1,
        resident=True,
        scan_block_n=64,
        scan_num_stages=2,
        int8_block_n=64,
        int8_num_stages=2,
        int8_ctas_per_sm=8,
        int8_num_warps=4,
    )


def _next_pow2(x: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def _sm_count(dev: torch.device) -> int:
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).multi_processor_count)
    return 2  # interpreter: a couple of "SMs" so that tests cover several splits


def fused_topk_triton(
    a: TopkArgs,
    *,
    config: KernelConfig | None = None,
    splits: int | None = None,
    poison: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the Triton kernels on checked arguments (``kernels.reference.check_args``).

    ``config`` overrides the tile heuristic and ``splits`` the number of N-splits (tests, benchmark);
    ``poison`` fills the scratch buffers with garbage first, so tests see any slot the kernel forgets.
    """
    q, c = a.queries, a.corpus
    if c.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError("the Triton path needs an fp16 or bf16 corpus")
    q_n, d = q.shape
    n = c.shape[0]
    if q_n == 0 or n == 0:
        return unpack_keys(torch.full((q_n, a.k), KEY_EMPTY, dtype=torch.int64, device=c.device))
    cfg = config or default_config(q_n, a.k, d)
    a = replace(a, queries=q.to(c.dtype).contiguous())  # tensor cores take both operands in one dtype
    method = cfg.method
    if method == "auto":
        method = "threshold" if q_n >= THRESHOLD_MIN_QUERIES else "running"
    if method == "threshold":
        return _threshold_topk(a, cfg, splits, poison)
    return _running_topk(a, cfg, splits, poison, n)


def _grid(
    q_n: int, n: int, cfg: KernelConfig, splits: int | None, dev: torch.device, block_n: int
) -> tuple[int, int, int]:
    """(query blocks, N-splits, rows per split), rows per split a multiple of the tile."""
    qblocks = triton.cdiv(q_n, cfg.block_q)
    if splits is None:
        splits = max(1, (_sm_count(dev) * cfg.ctas_per_sm) // qblocks)
    rows_per_split = triton.cdiv(triton.cdiv(n, splits), block_n) * block_n
    return qblocks, triton.cdiv(n, rows_per_split), rows_per_split


def _filter_args(a: TopkArgs, dummy: torch.Tensor) -> list[torch.Tensor]:
    return [
        a.row_partition if a.row_partition is not None else dummy,
        a.query_partition if a.query_partition is not None else dummy,
        a.valid.view(torch.uint8) if a.valid is not None else dummy,
        a.row_time if a.row_time is not None else dummy,
        a.time_min if a.time_min is not None else dummy,
        a.time_max if a.time_max is not None else dummy,
        a.row_bias if a.row_bias is not None else dummy,
    ]


def _filter_flags(a: TopkArgs) -> dict[str, bool]:
    return {
        "HAS_PART": a.row_partition is not None,
        "HAS_VALID": a.valid is not None,
        "HAS_TMIN": a.time_min is not None,
        "HAS_TMAX": a.time_max is not None,
        "HAS_BIAS": a.row_bias is not None,
    }


def _int8_row_terms(
    a: TopkArgs, inv_unit: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The int8 scan's row vector (``_int8_row_terms_kernel``; None without filters and bias) and,
    with a time window, the rows' times in fp32 and the time summary for the scan (else None)."""
    has_time = a.time_min is not None or a.time_max is not None
    if a.valid is None and a.row_bias is None and a.row_partition is None and not has_time:
        return None, None, None
    n = a.corpus.shape[0]
    dev = a.corpus.device
    out = torch.empty(n, dtype=torch.int64 if a.row_partition is not None else torch.int32, device=dev)
    rtime_f32 = tinfo = None
    if has_time:
        rtime_f32 = torch.empty(n, dtype=torch.float32, device=dev)
        tinfo = torch.full((4,), float("inf"), device=dev)
        tinfo[1].fill_(float("-inf"))
    block = 1024
    _int8_row_terms_kernel[(triton.cdiv(n, block),)](
        a.valid.view(torch.uint8) if a.valid is not None else out,
        a.row_bias if a.row_bias is not None else inv_unit,
        inv_unit,
        a.row_time if has_time else out,
        a.time_min.amin() if a.time_min is not None else out,
        a.time_max.amax() if a.time_max is not None else out,
        a.row_partition if a.row_partition is not None else out,
        out,
        rtime_f32 if rtime_f32 is not None else inv_unit,
        tinfo if tinfo is not None else inv_unit,
        n,
        HAS_VALID=a.valid is not None,
        HAS_BIAS=a.row_bias is not None,
        HAS_TMIN=a.time_min is not None,
        HAS_TMAX=a.time_max is not None,
        HAS_PART=a.row_partition is not None,
        BLOCK=block,
    )
    return out, rtime_f32, tinfo


def _int32_times(a: TopkArgs) -> TopkArgs:
    """int64 times as int32 offsets when the rows' times span less than 2**32 (a 32-bit compare per
    score instead of a 64-bit one); clamping the query bounds into that range keeps every comparison."""
    rt = a.row_time
    if rt is None or rt.dtype != torch.int64 or rt.numel() == 0:
        return a
    lo, hi = int(rt.min()), int(rt.max())
    if hi - lo > 2**32 - 3:
        return a
    base = lo - 1 + 2**31  # lo - 1 -> int32 min, hi + 1 -> at most int32 max

    def shift(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else (t.clamp(lo - 1, hi + 1) - base).to(torch.int32)

    return replace(a, row_time=shift(rt), time_min=shift(a.time_min), time_max=shift(a.time_max))


def _interpreting(dev: torch.device) -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") and dev.type == "cpu"


def _running_topk(
    a: TopkArgs, cfg: KernelConfig, splits: int | None, poison: bool, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k with a running top-k per (query, split), the S partial lists merged by torch."""
    q_n, k = a.queries.shape[0], a.k
    ss, si = _running_partials(a, cfg, splits, poison, n)
    # Merge the S partial top-k lists of each query (keys are unique, so topk order is exact).
    part_s = ss[:, :q_n, :k].permute(1, 0, 2).reshape(q_n, -1)
    part_i = si[:, :q_n, :k].permute(1, 0, 2).reshape(q_n, -1)
    return unpack_keys(pack_keys(part_s, part_i).topk(k, dim=1).values)


def _running_partials(
    a: TopkArgs,
    cfg: KernelConfig,
    splits: int | None,
    poison: bool,
    n: int,
    tile_step: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The running kernel: each (split, query)'s best K in slots [0, K) of ``ss``/``si`` ([S, QP, CAP]:
    scores, indices).  With ``tile_step`` > 1 only every ``tile_step``-th tile of ``block_n`` rows is
    scanned (``n`` = the rows it sees; indices are then positions in that sample)."""
    q, c, k = a.queries, a.corpus, a.k
    q_n, d = q.shape
    dev = c.device
    bq, bn = cfg.block_q, cfg.block_n
    bk = min(cfg.block_k, max(16, _next_pow2(d)))
    cap = cfg.cap or _next_pow2(k + 2 * bn)
    if cap < k + 2 * bn:
        raise ValueError(f"cap={cap} must be >= k + 2*block_n = {k + 2 * bn}")
    # flush sub-block: <= 4096 keys per sort (registers, and 32 KB of layout-conversion scratch in
    # shared memory), at most 8 unrolled sub-blocks (code size, compile time)
    fq = max(1, min(bq, 4096 // cap))
    while bq // fq > 8:
        fq *= 2
    resident = cfg.resident and triton.cdiv(d, bk) <= 4
    qblocks, s_n, rows_per_split = _grid(q_n, n, cfg, splits, dev, bn)
    qp = qblocks * bq
    ss = torch.empty((s_n, qp, cap), dtype=torch.float32, device=dev)
    si = torch.empty((s_n, qp, cap), dtype=torch.int32, device=dev)
    thr = torch.empty((s_n, qp), dtype=torch.float32, device=dev)
    if poison:
        ss.fill_(1e30)
        si.fill_(n + 7)
        thr.fill_(float("nan"))
    interpret = _interpreting(dev)
    _fused_topk_kernel[(qblocks, s_n)](
        q,
        c,
        ss,
        si,
        thr,
        *_filter_args(a, ss),
        thr,  # work table: unused here
        q_n,
        n,
        q.stride(0),
        c.stride(0),
        qp,
        rows_per_split,
        D=d,
        K=k,
        CAP=cap,
        BQ=bq,
        BN=bn,
        BK=bk,
        FQ=fq,
        LOG_CAP=cap.bit_length() - 1,
        LOG_FQ=fq.bit_length() - 1,
        UPCAST=interpret and c.dtype == torch.bfloat16,
        PREFIX_DOT=cfg.prefix_dot,
        RESIDENT=resident,
        NCH=triton.cdiv(d, bk),
        ASM_BARRIER=not interpret,
        ROUNDS=cfg.rounds,
        TILE_STEP=tile_step,
        **_filter_flags(a),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {}),
    )
    return ss, si


def _threshold_topk(
    a: TopkArgs, cfg: KernelConfig, splits: int | None, poison: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k in three steps, for many queries at once (the running top-k's bookkeeping would
    keep the tensor cores waiting):

    1. the running kernel over a sample (every ``sample_step``-th tile): the k-th best sampled score
       is a lower bound of the k-th best score over all rows, since those k rows are rows too;
    2. the threshold-scan kernel appends every eligible row scoring at least that bound (less a
       rounding margin) to its query's list: about ``k * sample_step`` rows, all of the top k among them
       (with ``a.prescreen``, from ``INT8_MIN_ROWS`` rows: on the int8 copy, less the quantisation
       margin too, ~8x as many rows, then scored again exactly by ``_rescore_kernel``);
    3. torch picks the best k of each list.  Queries whose sample held fewer than k eligible rows, or
       whose list overflowed, are answered by the running kernel over all rows (all queries are, when
       that is most of them).
    """
    q, c, k = a.queries, a.corpus, a.k
    q_n, d = q.shape
    n = c.shape[0]
    dev = c.device
    step = cfg.sample_step
    sample_rows = (n // (cfg.block_n * step)) * cfg.block_n
    if sample_rows < k:
        return _running_topk(a, cfg, splits, poison, n)
    # Only the k-th best sampled score is needed: no index, no tie order (a few torch ops fewer).
    ss, _ = _running_partials(a, cfg, splits, poison, sample_rows, tile_step=step)
    bound = ss[:, :q_n, :k].permute(1, 0, 2).reshape(q_n, -1).topk(k, dim=1).values[:, k - 1].contiguous()
    int8_min_rows = INT8_MIN_ROWS if cfg.int8_min_rows is None else cfg.int8_min_rows
    use_int8 = a.prescreen is not None and n >= int8_min_rows
    pq = quantize_queries(q, a.prescreen) if use_int8 and a.prescreen is not None else None
    # One small kernel for the thresholds, instead of ~25 torch ops (host time, at Q = 128 about as
    # long as the GPU work).  Mostly small partitions (many users' queries in one batch): a bound is
    # rarely known, so the scan returns at once and the running path answers every query; decided on
    # the device (n_unknown): a host sync here would leave the GPU idle while the scan is prepared.
    thr = torch.empty(q_n, dtype=torch.int32 if use_int8 else torch.float32, device=dev)
    unknown = torch.empty(q_n, dtype=torch.uint8, device=dev)
    n_unknown = torch.zeros(1, dtype=torch.int32, device=dev)
    block = 1024
    _thresholds_kernel[(triton.cdiv(q_n, block),)](
        bound,
        pq.margin if pq is not None else bound,
        pq.unit if pq is not None else bound,
        thr,
        unknown,
        n_unknown,
        q_n,
        INT8=use_int8,
        BLOCK=block,
    )
    unknown = unknown.view(torch.bool)
    list_factor = cfg.int8_list_factor if use_int8 else 1
    cap = cfg.candidate_cap or _next_pow2(2 * k * step * list_factor + 512)
    cnt = torch.zeros(q_n, dtype=torch.int32, device=dev)
    # the fp16 scan stores scores beside the indices; the int8 path's re-scoring writes packed keys
    out_s = torch.empty((q_n, cap), dtype=torch.int64 if use_int8 else torch.float32, device=dev)
    out_i = torch.empty((q_n, cap), dtype=torch.int32, device=dev)
    if poison:
        out_s.fill_(7 if use_int8 else 1e30)
        out_i.fill_(n + 7)
    bk = min(cfg.block_k, max(16, _next_pow2(d)))
    if triton.cdiv(d, bk) > 4:
        raise ValueError(f"d={d} needs block_k >= {triton.cdiv(d, 4)} for the threshold scan")
    flags = _filter_flags(a)
    if pq is not None and a.prescreen is not None:
        scan_q, scan_c, scan_thr, inv_unit = pq.q8, a.prescreen.values, thr, (1.0 / pq.unit).float()
        block_n, grid_cfg = cfg.int8_block_n, replace(cfg, ctas_per_sm=cfg.int8_ctas_per_sm)
        launch = {
            "num_warps": cfg.int8_num_warps or cfg.num_warps,
            "num_stages": cfg.int8_num_stages,
            **({"maxnreg": cfg.int8_maxnreg} if cfg.int8_maxnreg else {}),
        }
        terms, rtime_f32, tinfo = _int8_row_terms(a, inv_unit)
        # validity, bias, the batch's loosest time window and the partition reach the scan as one
        # row vector (in the bias slot); the time bounds only where a block needs them per score
        scan_flags = {**flags, "HAS_VALID": False, "HAS_BIAS": terms is not None}
        scan_filter_args = [
            out_s,
            a.query_partition if a.query_partition is not None else out_s,
            out_s,
            rtime_f32 if rtime_f32 is not None else out_s,
            a.time_min if a.time_min is not None else out_s,
            a.time_max if a.time_max is not None else out_s,
            terms if terms is not None else out_s,
            tinfo if tinfo is not None else out_s,
        ]
    else:
        scan_q, scan_c, scan_thr = q, c, thr
        block_n, grid_cfg = cfg.scan_block_n or cfg.block_n, cfg
        launch = {"num_warps": cfg.num_warps, "num_stages": cfg.scan_num_stages or cfg.num_stages}
        scan_flags, scan_filter_args = flags, [*_filter_args(_int32_times(a), out_s), out_s]
    qblocks, s_n, rows_per_split = _grid(q_n, n, grid_cfg, splits, dev, block_n)
    interpret = _interpreting(dev)
    _threshold_scan_kernel[(qblocks, s_n)](
        scan_q,
        scan_c,
        scan_thr,
        n_unknown,
        cnt,
        out_s,
        out_i,
        *scan_filter_args,
        q_n,
        n,
        scan_q.stride(0),
        scan_c.stride(0),
        rows_per_split,
        D=d,
        CAP=cap,
        BQ=cfg.block_q,
        BN=block_n,
        BK=bk,
        UPCAST=interpret and (use_int8 or c.dtype == torch.bfloat16),
        NCH=triton.cdiv(d, bk),
        GUARD=cfg.guard,
        **scan_flags,
        INT8=use_int8,
        PREFETCH_ROWS=cfg.int8_prefetch_rows or not use_int8,
        **launch,
    )
    if use_int8:
        rescore_block = 32
        _, _, _, rtime, tmin, tmax, bias = _filter_args(a, out_s)
        _rescore_kernel[(q_n, triton.cdiv(cap, rescore_block))](
            q,
            c,
            cnt,
            out_s,
            out_i,
            bias,
            rtime,
            tmin,
            tmax,
            q.stride(0),
            c.stride(0),
            D=d,
            DP=_next_pow2(d),
            CAP=cap,
            BL=rescore_block,
            HAS_BIAS=flags["HAS_BIAS"],
            HAS_TMIN=flags["HAS_TMIN"],
            HAS_TMAX=flags["HAS_TMAX"],
            num_warps=4,
        )
        keys = out_s
    else:
        filled = torch.arange(cap, device=dev)[None, :] < cnt.clamp(max=cap)[:, None].long()
        keys = torch.where(filled, pack_keys(out_s, out_i), KEY_EMPTY)
    scores, index = unpack_keys(keys.topk(k, dim=1).values)
    redo_mask = unknown | (cnt > cap)
    unknown_n, redo_n = torch.stack([n_unknown[0], redo_mask.sum(dtype=torch.int32)]).tolist()  # the one sync
    if unknown_n * 2 > q_n:  # the scan returned at once
        return _running_topk(a, cfg, splits, poison, n)
    if redo_n:
        redo = redo_mask.nonzero().flatten()
        sub = replace(
            a,
            queries=q[redo],
            query_partition=None if a.query_partition is None else a.query_partition[redo],
            time_min=None if a.time_min is None else a.time_min[redo],
            time_max=None if a.time_max is None else a.time_max[redo],
        )
        scores[redo], index[redo] = _running_topk(sub, cfg, splits, poison, n)
    return scores, index


def segmented_config(k: int) -> KernelConfig:
    """Tiles of the segmented top-k (kernels/segmented.py): one small query block (most groups have
    one query in a batch), the query block resident, corpus tiles streamed as in the Q <= 16 case."""
    return KernelConfig(block_q=16, block_n=64, block_k=128, num_warps=4, num_stages=2, resident=True)


# The keys method writes one int64 per (query, row of its group's chunks): up to this many a batch.
SEGMENTED_KEYS_MAX = 1 << 25


def segmented_topk_triton(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    query_group: np.ndarray,
    range_ptr: np.ndarray,
    range_start: np.ndarray,
    range_end: np.ndarray,
    valid: torch.Tensor | None,
    *,
    config: KernelConfig | None = None,
    chunk_rows: int | None = None,
    poison: bool = False,
    method: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``kernels.segmented.segmented_topk`` in one of two ways.  ``keys`` (the default where it fits):
    each query's scores over its group's tiles as packed keys in a [Q, tiles * block_n] buffer (one
    program per (tile, block of a group's queries)), then one program per query picks its best k
    from its row in registers (a torch top-k for rows wider than ``SEGMENTED_SELECT_MAX_COLS``): two
    launches and one small host-to-device copy, since at a few thousand rows a group the call's
    time is the host's.  ``running``: the running top-k kernel, one program per work item, for
    groups too large to write out."""
    from memsvc.kernels.segmented import CHUNK_ROWS, plan_segments

    cfg = config or segmented_config(k)
    q_n, d = queries.shape
    n = corpus.shape[0]
    dev = corpus.device
    bn = cfg.block_n
    if method in ("auto", "keys"):
        table = _segmented_table(query_group, range_ptr, range_start, range_end, cfg.block_q, bn)
        fits = q_n * table[3] * bn <= SEGMENTED_KEYS_MAX and table[3] < 2**31 and table[2] < 65536
        if method == "keys" or fits:
            return _segmented_keys(queries, corpus, k, table, valid, cfg, poison)
    plan = plan_segments(
        query_group,
        range_ptr,
        range_start,
        range_end,
        block_q=cfg.block_q,
        chunk_rows=chunk_rows or CHUNK_ROWS,
    )
    w_n, bq = len(plan.work), cfg.block_q
    if q_n == 0 or w_n == 0 or n == 0:
        return unpack_keys(torch.full((q_n, k), KEY_EMPTY, dtype=torch.int64, device=dev))
    bk = min(cfg.block_k, max(16, _next_pow2(d)))
    if triton.cdiv(d, bk) > 4:
        raise ValueError(f"d={d} needs block_k >= {triton.cdiv(d, 4)}")
    cap = cfg.cap or _next_pow2(k + 2 * bn)
    if cap < k + 2 * bn:
        raise ValueError(f"cap={cap} must be >= k + 2*block_n = {k + 2 * bn}")
    fq = max(1, min(bq, 4096 // cap))
    while bq // fq > 8:
        fq *= 2
    order, dest, work = _plan_tensors(plan, dev)
    q = queries.to(corpus.dtype).index_select(0, order).contiguous()
    ss = torch.empty((w_n, bq, cap), dtype=torch.float32, device=dev)
    si = torch.empty((w_n, bq, cap), dtype=torch.int32, device=dev)
    thr = torch.empty((w_n, bq), dtype=torch.float32, device=dev)
    if poison:
        ss.fill_(1e30)
        si.fill_(n + 7)
        thr.fill_(float("nan"))
    interpret = _interpreting(dev)
    a = TopkArgs(q, corpus, k, None, None, valid, None, None, None, None)
    _fused_topk_kernel[(w_n, 1)](
        q,
        corpus,
        ss,
        si,
        thr,
        *_filter_args(a, ss),
        work,
        q.shape[0],
        n,
        q.stride(0),
        corpus.stride(0),
        bq,
        0,
        D=d,
        K=k,
        CAP=cap,
        BQ=bq,
        BN=bn,
        BK=bk,
        FQ=fq,
        LOG_CAP=cap.bit_length() - 1,
        LOG_FQ=fq.bit_length() - 1,
        UPCAST=interpret and corpus.dtype == torch.bfloat16,
        PREFIX_DOT=cfg.prefix_dot,
        RESIDENT=cfg.resident and triton.cdiv(d, bk) <= 4,
        NCH=triton.cdiv(d, bk),
        ASM_BARRIER=not interpret,
        ROUNDS=cfg.rounds,
        TILE_STEP=1,
        **_filter_flags(a),
        SEGMENTED=True,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    # Each (item, query slot)'s best k go to row `query * chunks + chunk` of the merge buffer (the
    # padding slots to one spare row); a query's chunks are then merged by one top-k.
    merged = torch.full((q_n * plan.chunks + 1, k), KEY_EMPTY, dtype=torch.int64, device=dev)
    merged.index_copy_(0, dest, pack_keys(ss[:, :, :k], si[:, :, :k]).reshape(w_n * bq, k))
    keys = merged[: q_n * plan.chunks].view(q_n, plan.chunks * k)
    if plan.chunks > 1:
        keys = keys.topk(k, dim=1).values
    return unpack_keys(keys)


@triton.jit(do_not_specialize=["width", "off_order", "off_items", "off_ptr", "off_start", "off_end"])
def _segmented_keys_kernel(
    q_ptr,
    c_ptr,
    valid_ptr,
    table_ptr,
    keys_ptr,
    stride_q,
    stride_c,
    width,
    off_order,
    off_items,
    off_ptr,
    off_start,
    off_end,
    D: tl.constexpr,
    BQ: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    NCH: tl.constexpr,
    HAS_VALID: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Tile ``t`` of the rows of one group, against one block of that group's queries (item ``w``):
    the tile's scores as packed keys (``_pack``; empty where not eligible) in row ``query`` (the
    caller's order) and columns ``t * BN ..`` of a [Q, width] buffer.  A group's tiles are its ranges'
    tiles one after the other; the item table and the ranges are read from ``table_ptr`` (int32:
    each query's group, the queries in group order, the items' first query and count, and the
    groups' ranges in CSR form), so the host plans nothing per tile."""
    t = tl.program_id(0)
    w = tl.program_id(1)
    q0 = tl.load(table_ptr + off_items + 2 * w)
    qn = tl.load(table_ptr + off_items + 2 * w + 1)
    g = tl.load(table_ptr + tl.load(table_ptr + off_order + q0))
    lo = tl.load(table_ptr + off_ptr + g)
    hi = tl.load(table_ptr + off_ptr + g + 1)
    # the range holding the group's tile t (a group has few ranges)
    seen = tl.full([], 0, tl.int32)
    r0 = tl.full([], 0, tl.int32)
    r_end = tl.full([], 0, tl.int32)
    for r in range(lo, hi):
        s = tl.load(table_ptr + off_start + r)
        e = tl.load(table_ptr + off_end + r)
        nt = (tl.maximum(e - s, 0) + BN - 1) // BN
        here = (t >= seen) & (t < seen + nt)
        r0 = tl.where(here, s + (t - seen) * BN, r0)
        r_end = tl.where(here, e, r_end)
        seen += nt
    if r0 < r_end:
        rows = r0 + tl.arange(0, BN)
        rmask = rows < r_end
        slots = tl.arange(0, BQ)
        qmask = slots < qn
        qrow = tl.load(table_ptr + off_order + tl.minimum(q0 + slots, q0 + qn - 1))
        ks = tl.arange(0, BK)
        q_ptrs = q_ptr + qrow.to(tl.int64)[:, None] * stride_q + ks[None, :]
        a0, a1, a2, a3 = _load_query_block(q_ptrs, ks, D, BK, NCH)
        rows_c = tl.minimum(rows, r_end - 1)
        c_ptrs = c_ptr + rows_c.to(tl.int64)[:, None] * stride_c + ks[None, :]
        acc = tl.zeros([BQ, BN], dtype=tl.float32)
        acc = _resident_dot(a0, a1, a2, a3, c_ptrs, ks, acc, D, BK, NCH, UPCAST)
        ok = rmask
        if HAS_VALID:
            ok = ok & (tl.load(valid_ptr + rows_c) != 0)
        s = tl.where(ok[None, :], acc, float("-inf"))
        keys = _pack(s, rows[None, :] + tl.zeros([BQ, BN], tl.int32))
        offs = qrow.to(tl.int64)[:, None] * width + (t * BN + tl.arange(0, BN))[None, :]
        tl.store(keys_ptr + offs, keys, mask=qmask[:, None])


@triton.jit(do_not_specialize=["width", "K", "off_ptr", "off_start", "off_end"])
def _segmented_select_kernel(
    keys_ptr,
    table_ptr,
    out_s_ptr,
    out_i_ptr,
    width,
    K,
    off_ptr,
    off_start,
    off_end,
    BN: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The best ``K`` keys of one query's row of the keys buffer (only the columns its group's tiles
    wrote: the rest is never read), unpacked best first: ``K`` rounds of "the largest key below the
    last one" over the row held in registers (keys are distinct: each holds its row index)."""
    q = tl.program_id(0)
    g = tl.load(table_ptr + q)
    ncols = tl.full([], 0, tl.int32)
    if g >= 0:
        lo = tl.load(table_ptr + off_ptr + g)
        hi = tl.load(table_ptr + off_ptr + g + 1)
        for r in range(lo, hi):
            s = tl.load(table_ptr + off_start + r)
            e = tl.load(table_ptr + off_end + r)
            ncols += (tl.maximum(e - s, 0) + BN - 1) // BN * BN
    cols = tl.arange(0, BLOCK)
    empty: tl.constexpr = -9223372036854775808
    row = tl.load(keys_ptr + q.to(tl.int64) * width + cols, mask=cols < ncols, other=empty)
    for i in range(K):
        best = tl.max(row, axis=0)
        s, idx = _unpack(best)
        tl.store(out_s_ptr + q.to(tl.int64) * K + i, s)
        tl.store(out_i_ptr + q.to(tl.int64) * K + i, idx.to(tl.int64))
        row = tl.where(row == best, empty, row)


# Rows of the keys buffer up to this many columns are reduced to their top k by one program each
# (`_segmented_select_kernel`, the row in registers); wider rows by a torch top-k.
SEGMENTED_SELECT_MAX_COLS = 8192


def _segmented_table(
    query_group: np.ndarray,
    range_ptr: np.ndarray,
    range_start: np.ndarray,
    range_end: np.ndarray,
    block_q: int,
    block_n: int,
) -> tuple[np.ndarray, dict[str, int], int, int]:
    """The keys method's plan as one int32 host array: each query's group, the queries that have a
    group in group order, the items (first position in that order, count: blocks of at most
    ``block_q`` queries of one group) and the ranges; with its offsets, the items and the most tiles
    any group has.  A few numpy calls on arrays of the batch's size: the host's share of the call."""
    qg = np.asarray(query_group, dtype=np.int64)
    order = np.argsort(qg, kind="stable")
    order = order[int(np.count_nonzero(qg < 0)) :]
    sg = qg[order]
    m = len(order)
    new_group = np.empty(m, dtype=bool)
    if m:
        new_group[0] = True
        np.not_equal(sg[1:], sg[:-1], out=new_group[1:])
    if new_group.all():  # every group asked by one query (the usual batch): one item per query
        q0 = np.arange(m)
        qn = np.ones(m, dtype=np.int64)
    else:
        first = np.flatnonzero(new_group)
        nq = np.diff(np.append(first, m))
        pos = np.arange(m) - np.repeat(first, nq)
        q0 = np.flatnonzero(pos % block_q == 0)
        qn = np.minimum(block_q, np.repeat(nq, nq)[q0] - pos[q0])
    ptr = np.asarray(range_ptr, dtype=np.int64)
    starts = np.asarray(range_start, dtype=np.int64)
    ends = np.asarray(range_end, dtype=np.int64)
    tiles = np.cumsum((np.maximum(ends - starts, 0) + block_n - 1) // block_n)
    tiles = np.concatenate(([0], tiles))
    max_tiles = int((tiles[ptr[1:]] - tiles[ptr[:-1]]).max(initial=0))
    items = np.stack([q0, qn], axis=1).reshape(-1)
    parts = [qg, order, items, ptr, starts, ends]
    ends_of = np.cumsum([len(p) for p in parts])
    offsets = {name: int(ends_of[i]) for i, name in enumerate(("order", "items", "ptr", "start", "end"))}
    return np.concatenate(parts).astype(np.int32), offsets, len(q0), max_tiles


def _plan_tensors(plan: Any, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order, dest, work) of a segment plan on the device, from one host-to-device copy."""
    w_n, bq = plan.dest.shape
    host = np.concatenate([plan.order, plan.dest.reshape(-1), plan.work.reshape(-1).astype(np.int64)])
    table = torch.from_numpy(host).to(dev)
    m = len(plan.order)
    return table[:m], table[m : m + w_n * bq], table[m + w_n * bq :].to(torch.int32)


def _segmented_keys(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    table: tuple[np.ndarray, dict[str, int], int, int],
    valid: torch.Tensor | None,
    cfg: KernelConfig,
    poison: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    host, off, items, max_tiles = table
    q_n, d = queries.shape
    dev = corpus.device
    bq, bn = cfg.block_q, cfg.block_n
    width = max_tiles * bn
    if q_n == 0 or items == 0 or width == 0 or corpus.shape[0] == 0:
        return unpack_keys(torch.full((q_n, k), KEY_EMPTY, dtype=torch.int64, device=dev))
    bk = min(cfg.block_k, max(16, _next_pow2(d)))
    if triton.cdiv(d, bk) > 4:
        raise ValueError(f"d={d} needs block_k >= {triton.cdiv(d, 4)}")
    table_d = torch.from_numpy(host).to(dev)
    q = queries if queries.dtype == corpus.dtype else queries.to(corpus.dtype)
    select = width <= SEGMENTED_SELECT_MAX_COLS
    if select:
        # only the columns of a query's own tiles are read back: nothing to clear
        keys = torch.empty((q_n, width), dtype=torch.int64, device=dev)
        if poison:
            keys.fill_(0x7F00000000000001)  # larger than any real key: a stray read would win
    else:
        keys = torch.full((q_n, width), KEY_EMPTY, dtype=torch.int64, device=dev)
    _segmented_keys_kernel[(max_tiles, items)](
        q,
        corpus,
        valid.view(torch.uint8) if valid is not None else table_d,
        table_d,
        keys,
        q.stride(0),
        corpus.stride(0),
        width,
        off["order"],
        off["items"],
        off["ptr"],
        off["start"],
        off["end"],
        D=d,
        BQ=bq,
        BN=bn,
        BK=bk,
        NCH=triton.cdiv(d, bk),
        HAS_VALID=valid is not None,
        UPCAST=_interpreting(dev) and corpus.dtype == torch.bfloat16,
        num_warps=cfg.num_warps,
        num_stages=1,
    )
    if not select:
        return unpack_keys(keys.topk(k, dim=1).values)
    scores = torch.empty((q_n, k), dtype=torch.float32, device=dev)
    index = torch.empty((q_n, k), dtype=torch.int64, device=dev)
    block = 2048 if width <= 2048 else SEGMENTED_SELECT_MAX_COLS
    _segmented_select_kernel[(q_n,)](
        keys,
        table_d,
        scores,
        index,
        width,
        k,
        off["ptr"],
        off["start"],
        off["end"],
        BN=bn,
        BLOCK=block,
        num_warps=4 if block <= 2048 else 8,
    )
    return scores, index
