"""Tests of kernels.fused_topk: the Triton kernel (CPU interpreter; compiled on CUDA) and the torch fallback.

The interpreted Triton checks run in ONE subprocess with ``TRITON_INTERPRET=1`` (triton reads the variable
when a kernel is decorated, so it cannot be flipped inside this process without leaking into other test
modules or into the compiled GPU tests).  The subprocess is this file run as a script with ``--worker``;
it rebuilds each case's inputs from its spec and returns the outputs, and the parent compares them with
the float64 reference.  Every case draws fresh random inputs from its own seed.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the --worker subprocess runs this file directly
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from memsvc.kernels import (  # noqa: E402
    Int8Corpus,
    fused_topk,
    plan_segments,
    segmented_topk,
    segmented_topk_torch,
    topk_reference_float64,
    topk_torch,
)
from memsvc.kernels.prescreen import quantize_queries  # noqa: E402

Case = dict[str, Any]
Inputs = dict[str, Any]

_DT = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# the threshold method with the int8 scan on tiny tiles
_I8 = dict(
    block_q=16,
    block_n=16,
    block_k=16,
    method="threshold",
    sample_step=2,
    int8_block_n=32,
    int8_num_stages=1,
    int8_min_rows=0,
)

# the segmented top-k on tiny tiles (a resident query block of 16, 16-row tiles, short buffers)
_SEG_TILES = dict(block_q=16, block_n=16, block_k=16, resident=True)

# Small shapes (the interpreter runs numpy op by op).  "cfg" = KernelConfig overrides for the Triton path,
# "splits" = number of N-splits; tiny tiles and CAPs force many tiles, splits and buffer flushes.
CASES: list[Case] = [
    dict(name="basic_fp16", Q=5, N=300, d=40, k=10, seed=1, cfg=dict(block_n=16, block_k=16), splits=3),
    dict(name="bf16_odd", Q=7, N=257, d=33, k=16, dtype="bf16", seed=2, cfg=dict(block_n=32, block_k=16)),
    dict(name="fp32_queries", Q=4, N=200, d=24, k=8, qdtype="fp32", seed=3, cfg=dict(block_n=16, block_k=16)),
    dict(
        name="k_gt_eligible", Q=3, N=40, d=16, k=32, valid_frac=0.25, seed=4, cfg=dict(block_n=16, block_k=16)
    ),
    dict(
        name="empty_partition",
        Q=6,
        N=150,
        d=16,
        k=10,
        partitions=3,
        empty_part=True,
        seed=5,
        cfg=dict(block_n=16, block_k=16),
        splits=2,
    ),
    dict(name="all_masked", Q=4, N=100, d=16, k=5, valid_frac=0.0, seed=6, cfg=dict(block_n=16, block_k=16)),
    dict(
        name="duplicates", Q=4, N=120, d=20, k=12, dup=4, seed=7, cfg=dict(block_n=16, block_k=16), splits=2
    ),
    dict(
        name="bias_time_int",
        Q=5,
        N=220,
        d=16,
        k=9,
        bias=True,
        time="int64",
        seed=8,
        cfg=dict(block_n=16, block_k=16),
        splits=2,
    ),
    dict(
        name="time_float_max_only",
        Q=3,
        N=150,
        d=16,
        k=7,
        time="float32",
        tmin=False,
        seed=9,
        cfg=dict(block_n=16, block_k=16),
    ),
    dict(
        name="all_filters",
        Q=9,
        N=333,
        d=48,
        k=11,
        partitions=2,
        valid_frac=0.8,
        bias=True,
        time="int64",
        seed=10,
        cfg=dict(block_n=32, block_k=32),
        splits=3,
    ),
    dict(name="k128", Q=3, N=400, d=16, k=128, seed=11, cfg=dict(block_n=16, block_k=16), splits=2),
    dict(name="k1", Q=4, N=90, d=16, k=1, seed=12, cfg=dict(block_n=16, block_k=16), splits=2),
    dict(
        name="many_flushes",
        Q=3,
        N=700,
        d=16,
        k=5,
        seed=13,
        cfg=dict(block_n=16, block_k=16, cap=64),
        splits=2,
        increasing=True,
    ),
    # query 1 = -query 0: if query 0's fast-growing buffer overflowed it would corrupt query 1's slots
    dict(
        name="buffer_overflow_guard",
        Q=2,
        N=500,
        d=16,
        k=5,
        seed=20,
        cfg=dict(block_n=16, block_k=16, cap=64),
        splits=1,
        increasing=True,
        opposed=True,
    ),
    dict(
        name="long_split_fast_path",
        Q=2,
        N=4000,
        d=16,
        k=3,
        seed=19,
        cfg=dict(block_n=16, block_k=16, cap=64),
        splits=1,
    ),
    dict(name="q_blocks_padding", Q=33, N=70, d=16, k=6, seed=14, cfg=dict(block_n=16, block_k=16)),
    dict(name="tiny_n", Q=2, N=5, d=16, k=4, seed=15, cfg=dict(block_n=16, block_k=16)),
    dict(
        name="negative_scores",
        Q=4,
        N=160,
        d=16,
        k=10,
        bias=True,
        bias_shift=-5.0,
        seed=16,
        cfg=dict(block_n=16, block_k=16),
    ),
    dict(
        name="prefix_dot",
        Q=6,
        N=260,
        d=32,
        k=20,
        seed=17,
        cfg=dict(block_n=32, block_k=16, prefix_dot=True),
        splits=2,
    ),
    dict(
        name="resident_4_chunks_masked",
        Q=18,
        N=300,
        d=60,
        k=12,
        partitions=2,
        bias=True,
        seed=22,
        cfg=dict(block_q=16, block_n=16, block_k=16, resident=True, cap=64),
        splits=2,
    ),
    dict(
        name="resident_fast_path",
        Q=3,
        N=3000,
        d=32,
        k=4,
        seed=23,
        cfg=dict(block_n=16, block_k=16, resident=True, cap=64),
        splits=1,
    ),
    dict(name="default_config", Q=20, N=300, d=64, k=10, partitions=2, seed=18),
    # The threshold method (many queries): a bound from a sample of tiles, then a scan that appends rows
    # above it.  Small sample steps so that tiny corpora still have a sample.
    dict(
        name="thr_basic",
        Q=5,
        N=600,
        d=40,
        k=5,
        seed=30,
        cfg=dict(block_n=16, block_k=16, method="threshold", sample_step=4),
        splits=3,
    ),
    dict(
        name="thr_all_filters",
        Q=9,
        N=801,
        d=48,
        k=6,
        partitions=2,
        valid_frac=0.8,
        bias=True,
        time="int64",
        seed=31,
        cfg=dict(
            block_n=16, block_k=16, method="threshold", sample_step=2, scan_block_n=32, scan_num_stages=2
        ),
        splits=2,
    ),
    dict(
        name="thr_bf16_odd_unguarded",
        Q=7,
        N=517,
        d=33,
        k=4,
        dtype="bf16",
        seed=32,
        cfg=dict(block_n=16, block_k=16, method="threshold", sample_step=2, guard=False),
    ),
    dict(
        name="thr_duplicates",
        Q=4,
        N=400,
        d=20,
        k=12,
        dup=4,
        seed=33,
        cfg=dict(block_n=16, block_k=16, method="threshold", sample_step=2),
        splits=2,
    ),
    # a list of 8 slots cannot hold ~k * 8 candidates: every query overflows and is answered again
    dict(
        name="thr_overflow_redo",
        Q=4,
        N=700,
        d=16,
        k=5,
        seed=34,
        cfg=dict(block_n=16, block_k=16, method="threshold", sample_step=8, candidate_cap=8),
    ),
    # too few eligible rows in the sample (and an empty partition): no bound, answered by the running path
    dict(
        name="thr_no_bound",
        Q=6,
        N=300,
        d=16,
        k=20,
        valid_frac=0.3,
        partitions=3,
        empty_part=True,
        seed=35,
        cfg=dict(block_n=16, block_k=16, method="threshold", sample_step=4),
    ),
    # half the queries have no bound (an empty partition): those are answered again, the others not
    dict(
        name="thr_partial_redo",
        Q=8,
        N=600,
        d=16,
        k=5,
        partitions=2,
        empty_part=True,
        seed=37,
        cfg=dict(block_n=16, block_k=16, method="threshold", sample_step=4),
    ),
    dict(name="thr_default_config", Q=70, N=2100, d=64, k=5, partitions=2, seed=36),
    # 3 queries in 4 have no bound: the running path answers every query
    dict(
        name="thr_mostly_unknown",
        Q=12,
        N=600,
        d=16,
        k=5,
        partitions=2,
        mostly_empty=True,
        seed=41,
        cfg=dict(block_n=16, block_k=16, method="threshold", sample_step=4),
    ),
    # several query blocks with partitions and every filter; a time bound above every row's time
    dict(
        name="thr_blocks_partitions_open_max",
        Q=60,
        N=900,
        d=24,
        k=4,
        partitions=2,
        valid_frac=0.9,
        bias=True,
        time="int64",
        open_max=True,
        seed=40,
        cfg=dict(block_q=16, block_n=16, block_k=16, method="threshold", sample_step=2),
        splits=2,
    ),
    # ---- the int8 pre-screen ("int8": an Int8Corpus of the corpus is passed): same results ----
    dict(name="i8_basic", Q=20, N=700, d=40, k=7, int8=True, seed=50, cfg=dict(_I8), splits=2),
    dict(
        name="i8_all_filters",
        Q=24,
        N=900,
        d=24,
        k=4,
        partitions=2,
        valid_frac=0.9,
        bias=True,
        time="int64",
        int8=True,
        seed=51,
        cfg=dict(_I8, int8_num_stages=2, int8_prefetch_rows=False),
        splits=2,
    ),
    # similar windows: the batch's loosest window in the row terms, each query's own when re-scoring
    dict(
        name="i8_similar_windows",
        Q=24,
        N=900,
        d=24,
        k=4,
        bias=True,
        time="similar",
        int8=True,
        seed=57,
        cfg=dict(_I8),
        splits=2,
    ),
    # narrow, different windows: each query block tests its own per score, so the short lists
    # (32 slots) do not overflow (they would with only the batch's window: redo counted)
    dict(
        name="i8_narrow_windows",
        Q=24,
        N=1500,
        d=24,
        k=4,
        time="int64",
        int8=True,
        seed=59,
        cfg=dict(_I8, candidate_cap=32),
        splits=2,
    ),
    # times from a handful of values: many rows exactly on a bound
    dict(
        name="i8_window_ties",
        Q=24,
        N=900,
        d=24,
        k=4,
        time="ties",
        valid_frac=0.9,
        int8=True,
        seed=60,
        cfg=dict(_I8),
        splits=2,
    ),
    # partition ids at the ends of int32 (packed with the row term into one int64 per row)
    dict(
        name="i8_extreme_partition_ids",
        Q=24,
        N=900,
        d=24,
        k=4,
        partitions=3,
        extreme_ids=True,
        valid_frac=0.8,
        bias=True,
        bias_shift=-0.3,
        int8=True,
        seed=58,
        cfg=dict(_I8),
        splits=2,
    ),
    dict(name="i8_duplicates", Q=8, N=600, d=20, k=12, dup=4, int8=True, seed=52, cfg=dict(_I8)),
    dict(name="i8_bf16_odd", Q=9, N=517, d=33, k=5, dtype="bf16", int8=True, seed=53, cfg=dict(_I8)),
    # lists of 8 slots overflow: every query is answered again by the running kernel
    dict(
        name="i8_overflow_redo",
        Q=6,
        N=700,
        d=16,
        k=5,
        int8=True,
        redo=6,
        seed=54,
        cfg=dict(_I8, sample_step=8, candidate_cap=8),
    ),
    # a few rows with a bias of 100 (a large row term) or 1e6 (beyond the int32 row terms: clamped)
    dict(
        name="i8_big_bias",
        Q=8,
        N=600,
        d=16,
        k=5,
        bias=True,
        spikes=3,
        spike=100.0,
        int8=True,
        seed=55,
        cfg=_I8,
    ),
    dict(
        name="i8_huge_bias",
        Q=8,
        N=600,
        d=16,
        k=5,
        bias=True,
        spikes=3,
        spike=1e6,
        int8=True,
        seed=57,
        cfg=_I8,
    ),
    # so many rows with a bias of 1e6 that every bound is one: thresholds beyond the integer range
    dict(
        name="i8_bound_beyond_range",
        Q=8,
        N=600,
        d=16,
        k=5,
        bias=True,
        spikes=80,
        spike=1e6,
        int8=True,
        redo=8,
        seed=58,
        cfg=_I8,
    ),
    # the public entry point with the default (H100) configuration
    dict(name="i8_default_config", Q=70, N=2100, d=64, k=5, partitions=2, valid_frac=0.9, int8=True, seed=56),
]


def make_inputs(case: Case, device: str = "cpu") -> Inputs:
    """Deterministic random inputs for a case (rows L2-normalised, no zeros)."""
    g = torch.Generator().manual_seed(int(case["seed"]))
    q_n, n, d = int(case["Q"]), int(case["N"]), int(case["d"])
    dt = _DT[case.get("dtype", "fp16")]
    qdt = _DT[case.get("qdtype", case.get("dtype", "fp16"))]
    corpus = torch.randn(n, d, generator=g)
    if case.get("dup"):
        base = torch.randn(max(1, n // int(case["dup"])), d, generator=g)
        corpus = base[torch.randint(0, base.shape[0], (n,), generator=g)]  # many exact duplicate rows
    if case.get("increasing"):
        # rows get steadily more similar to a common direction: thr keeps rising, buffers keep flushing
        direction = torch.randn(d, generator=g)
        corpus = corpus + torch.linspace(0, 6, n)[:, None] * direction[None, :]
    corpus = torch.nn.functional.normalize(corpus, dim=1)
    queries = torch.nn.functional.normalize(torch.randn(q_n, d, generator=g), dim=1)
    if case.get("increasing"):
        queries = torch.nn.functional.normalize(queries + 2 * direction[None, :], dim=1)
    if case.get("opposed"):
        queries[1::2] = -queries[0::2][: queries[1::2].shape[0]]
    kw: dict[str, torch.Tensor] = {}
    if case.get("partitions"):
        p = int(case["partitions"])
        kw["row_partition"] = torch.randint(0, p, (n,), generator=g, dtype=torch.int32)
        qp = torch.randint(0, p, (q_n,), generator=g, dtype=torch.int32)
        if case.get("empty_part"):
            qp[::2] = p + 1  # a partition with no rows at all
        if case.get("mostly_empty"):
            qp[torch.arange(q_n) % 4 != 0] = p + 1
        if case.get("extreme_ids"):
            ids = torch.tensor([-(2**31), 2**31 - 1, -1, 5], dtype=torch.int32)
            kw["row_partition"], qp = ids[kw["row_partition"].long()], ids[qp.long()]
        kw["query_partition"] = qp
    if "valid_frac" in case:
        kw["valid"] = torch.rand(n, generator=g) < float(case["valid_frac"])
    if case.get("bias"):
        kw["row_bias"] = (0.05 * torch.randn(n, generator=g) + float(case.get("bias_shift", 0.0))).float()
        if case.get("spikes"):
            kw["row_bias"][torch.randperm(n, generator=g)[: int(case["spikes"])]] = float(case["spike"])
    if case.get("time"):
        if case["time"] == "ties":
            rt = torch.randint(0, 10, (n,), generator=g, dtype=torch.int64)
            lo = torch.randint(3, 5, (q_n,), generator=g, dtype=torch.int64)
            hi = torch.randint(7, 9, (q_n,), generator=g, dtype=torch.int64)
        elif case["time"] == "similar":  # windows [lo, open) with lo within 5% of the range
            rt = torch.randint(1_600_000_000, 1_700_000_000, (n,), generator=g, dtype=torch.int64)
            lo = torch.randint(1_640_000_000, 1_645_000_000, (q_n,), generator=g, dtype=torch.int64)
            hi = torch.full_like(lo, 2**62)
        elif case["time"] == "int64":
            rt = torch.randint(1_600_000_000, 1_700_000_000, (n,), generator=g, dtype=torch.int64)
            lo = torch.randint(1_600_000_000, 1_650_000_000, (q_n,), generator=g, dtype=torch.int64)
            hi = lo + torch.randint(10_000_000, 60_000_000, (q_n,), generator=g, dtype=torch.int64)
        else:
            rt = torch.rand(n, generator=g) * 1000
            lo = torch.rand(q_n, generator=g) * 500
            hi = lo + 300 + torch.rand(q_n, generator=g) * 200
        kw["row_time"] = rt
        if case.get("tmin", True):
            kw["time_min"] = lo
        kw["time_max"] = (
            torch.full_like(hi, 2**40 if rt.dtype == torch.int64 else 1e9) if case.get("open_max") else hi
        )
    out: Inputs = {
        "queries": queries.to(qdt).to(device),
        "corpus": corpus.to(dt).to(device),
        "k": int(case["k"]),
    }
    out.update({key: v.to(device) for key, v in kw.items()})
    return out


def _tol(inp: Inputs) -> float:
    # fp16/bf16 products are exact in fp32; only the accumulation order differs (~1e-6).  fp32 queries
    # are rounded to the corpus dtype first: up to ~2^-11 * |q| * |row| on the dot product.
    # A large bias leaves fewer fp32 bits for the dot product (a score near |bias| rounds to 2**-23 |bias|).
    tol = 2e-3 if inp["queries"].dtype == torch.float32 else 1e-4
    if "row_bias" in inp:
        tol = max(tol, 2**-20 * float(inp["row_bias"].abs().max()))
    return tol


def _eligible_scores(inp: Inputs) -> torch.Tensor:
    """[Q, N] float64 scores with -inf where not eligible (the test's own reference matrix)."""
    q = inp["queries"].double().cpu()
    c = inp["corpus"].double().cpu()
    s = q @ c.T
    if "row_bias" in inp:
        s = s + inp["row_bias"].double().cpu()[None, :]
    m = torch.ones_like(s, dtype=torch.bool)
    if "row_partition" in inp:
        m &= inp["query_partition"].cpu()[:, None] == inp["row_partition"].cpu()[None, :]
    if "valid" in inp:
        m &= inp["valid"].cpu()[None, :]
    if "row_time" in inp:
        t = inp["row_time"].cpu()[None, :]
        if "time_min" in inp:
            m &= t >= inp["time_min"].cpu()[:, None]
        if "time_max" in inp:
            m &= t <= inp["time_max"].cpu()[:, None]
    return s.masked_fill(~m, float("-inf"))


def check_topk(inp: Inputs, scores: torch.Tensor, idx: torch.Tensor, label: str) -> None:
    """Compare (scores, idx) with the float64 reference; exact indices wherever scores are not near-ties."""
    k = int(inp["k"])
    q_n = inp["queries"].shape[0]
    assert scores.shape == (q_n, k) and idx.shape == (q_n, k), label
    assert scores.dtype == torch.float32 and idx.dtype == torch.int64, label
    scores, idx = scores.cpu(), idx.cpu()
    ref_s, ref_i = topk_reference_float64(**inp)
    ref_s, ref_i = ref_s.cpu(), ref_i.cpu()
    full = _eligible_scores(inp)
    tol = _tol(inp)
    n = full.shape[1]
    for qi in range(q_n):
        row = full[qi]
        n_elig = int((row > float("-inf")).sum())
        m = min(k, n_elig)
        where = f"{label} q={qi}"
        # filled slots, then exactly -inf / -1
        assert bool((idx[qi, m:] == -1).all()) and bool((scores[qi, m:] == float("-inf")).all()), where
        assert bool((ref_i[qi, m:] == -1).all()), where
        if m == 0:
            continue
        got_i, got_s = idx[qi, :m], scores[qi, :m]
        assert bool(((got_i >= 0) & (got_i < n)).all()), f"{where}: index out of range {got_i.tolist()}"
        assert len(set(got_i.tolist())) == m, f"{where}: repeated index"
        assert bool(torch.isfinite(got_s).all()), f"{where}: non-finite score"
        true_s = row[got_i]
        assert bool((true_s > float("-inf")).all()), f"{where}: returned an ineligible row"
        # each score belongs to its index, and the list matches the reference's scores slot by slot
        assert float((got_s.double() - true_s).abs().max()) <= tol, f"{where}: score/index mismatch"
        assert float((got_s.double() - ref_s[qi, :m]).abs().max()) <= tol, f"{where}: scores differ"
        # sorted: score descending; equal (bitwise) scores by ascending index
        assert bool((got_s[:-1] >= got_s[1:]).all()), f"{where}: not sorted"
        eq = got_s[:-1] == got_s[1:]
        assert bool((got_i[:-1][eq] < got_i[1:][eq]).all()), f"{where}: tie not broken by index"
        # exact index agreement outside clusters of near-tied reference scores
        order = torch.sort(row, descending=True, stable=True)
        srt = order.values[: min(n, m + 1)]
        srt_i = order.indices[: min(n, m + 1)]
        j = 0
        while j < m:
            e = j + 1  # cluster [j, e): consecutive reference scores within 2*tol
            while e < srt.shape[0] and srt[e] > float("-inf") and float(srt[e - 1] - srt[e]) <= 2 * tol:
                e += 1
            ref_set = srt_i[j:e].tolist()
            if e <= m:  # cluster fully inside the top-k: same rows in those slots
                exact_tie = bool((srt[j:e] == srt[j]).all())
                if exact_tie:  # bitwise-equal rows: exact order by index
                    assert got_i[j:e].tolist() == sorted(ref_set), f"{where}: tie order {got_i[j:e].tolist()}"
                else:
                    assert sorted(got_i[j:e].tolist()) == sorted(ref_set), f"{where}: slots {j}:{e}"
            else:  # cluster straddles the k boundary: any of its rows may fill the remaining slots
                lo = j
                while (
                    e < n
                    and order.values[e] > float("-inf")
                    and float(order.values[e - 1] - order.values[e]) <= 2 * tol
                ):
                    e += 1
                allowed = set(order.indices[lo:e].tolist())
                assert set(got_i[lo:m].tolist()) <= allowed, f"{where}: boundary slots"
            j = e


# --------------------------------------------------------------------------- segmented top-k

# Groups own row ranges (several per group, some empty; rows outside every group too); queries of no
# group (-1) get nothing.  "chunk": rows per work item (small: a group's ranges split into many items
# whose lists are merged); "cfg": KernelConfig overrides.
SEG_CASES: list[Case] = [
    dict(name="seg_basic", Q=9, N=700, d=40, k=7, groups=4, seed=70, chunk=64),
    dict(name="seg_valid_many_chunks", Q=12, N=900, d=24, k=5, groups=5, valid_frac=0.8, seed=71, chunk=32),
    dict(name="seg_k_gt_rows", Q=6, N=200, d=16, k=40, groups=6, valid_frac=0.5, seed=72, chunk=48),
    dict(name="seg_one_group_many_queries", Q=37, N=400, d=16, k=4, groups=1, seed=73, chunk=128),
    dict(name="seg_bf16_duplicates", Q=8, N=500, d=33, k=9, groups=3, dtype="bf16", dup=4, seed=74, chunk=96),
    dict(name="seg_k128", Q=5, N=600, d=16, k=128, groups=3, seed=75, chunk=4096, cfg=dict(block_n=32)),
]


def make_seg_inputs(case: Case, device: str = "cpu") -> tuple[Inputs, dict[str, Any]]:
    """Inputs as ``make_inputs`` (row_partition = each row's group, -5 outside every group) and the
    groups' ranges in CSR form with each query's group (-1 for a few: no group)."""
    g = torch.Generator().manual_seed(int(case["seed"]))
    inp = make_inputs({**case, "partitions": 0}, device)
    n, groups, q_n = int(case["N"]), int(case["groups"]), int(case["Q"])
    # cut [0, n) into pieces, each owned by a random group or by none (-5)
    cuts = sorted(set(torch.randint(1, n, (3 * groups,), generator=g).tolist()) | {0, n})
    owner = torch.randint(-1, groups, (len(cuts) - 1,), generator=g).tolist()
    if len(cuts) > 2:
        cuts.insert(2, cuts[1])  # an empty range
        owner.insert(1, 0)
    row_partition = torch.full((n,), -5, dtype=torch.int32)
    ranges: list[list[tuple[int, int]]] = [[] for _ in range(groups)]
    for (s, e), o in zip(itertools.pairwise(cuts), owner, strict=True):
        if o >= 0:
            ranges[o].append((s, e))
            row_partition[s:e] = o
    qg = torch.randint(-1, groups, (q_n,), generator=g)
    ptr = np.cumsum([0] + [len(r) for r in ranges])
    seg = dict(
        query_group=qg.numpy().astype(np.int64),
        range_ptr=ptr.astype(np.int64),
        range_start=np.array([s for r in ranges for s, _ in r], dtype=np.int64),
        range_end=np.array([e for r in ranges for _, e in r], dtype=np.int64),
    )
    inp["row_partition"] = row_partition.to(device)
    inp["query_partition"] = torch.where(qg >= 0, qg, -7).to(torch.int32).to(device)
    return inp, seg


def _seg_call(inp: Inputs, seg: dict[str, Any], fn: Any, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    args = {key: v for key, v in inp.items() if key not in ("row_partition", "query_partition")}
    return fn(args["queries"], args["corpus"], args["k"], **seg, valid=args.get("valid"), **kw)


@pytest.mark.parametrize("case", SEG_CASES, ids=[c["name"] for c in SEG_CASES])
def test_segmented_fallback(case: Case) -> None:
    inp, seg = make_seg_inputs(case)
    s, i = _seg_call(inp, seg, segmented_topk_torch)
    check_topk(inp, s, i, f"seg-torch/{case['name']}")


def test_segment_plan_covers_every_row_once() -> None:
    _, seg = make_seg_inputs(dict(SEG_CASES[1], Q=40))
    plan = plan_segments(**seg, block_q=4, chunk_rows=32)
    qg = seg["query_group"]
    for q in np.flatnonzero(qg >= 0):
        pos = int(np.flatnonzero(plan.order == q)[0])
        items = plan.work[(plan.work[:, 0] <= pos) & (pos < plan.work[:, 0] + plan.work[:, 1])]
        rows = sorted(r for _, _, s, e in items.tolist() for r in range(s, e))
        lo, hi = seg["range_ptr"][qg[q]], seg["range_ptr"][qg[q] + 1]
        want = sorted(
            r
            for s, e in zip(seg["range_start"][lo:hi], seg["range_end"][lo:hi], strict=True)
            for r in range(s, e)
        )
        assert rows == want
        assert (items[:, 3] - items[:, 2]).max(initial=0) <= 32
    assert set(plan.order.tolist()) == set(np.flatnonzero(qg >= 0).tolist())


# --------------------------------------------------------------------------- interpreted Triton (subprocess)


def _run_worker(cases_path: str, out_path: str) -> None:
    """Subprocess entry (TRITON_INTERPRET=1): run the Triton path on every case, save outputs or errors."""
    from memsvc.kernels.fused_topk import KernelConfig, fused_topk_triton, segmented_topk_triton
    from memsvc.kernels.reference import check_args

    assert os.environ.get("TRITON_INTERPRET") == "1"
    module = sys.modules["memsvc.kernels.fused_topk"]
    module.INT8_MIN_ROWS = 0  # a speed heuristic; the tests' corpora are tiny
    running = module._running_topk
    redone: list[int] = []  # queries answered again by the running kernel, per call

    def counting_running_topk(a: Any, *args: Any) -> Any:
        redone.append(int(a.queries.shape[0]))
        return running(a, *args)

    module._running_topk = counting_running_topk
    results: dict[str, Any] = {}
    for case in json.loads(Path(cases_path).read_text()):
        redone.clear()
        try:
            inp = make_inputs(case)
            pre = Int8Corpus.from_corpus(inp["corpus"]) if case.get("int8") else None
            a = check_args(**inp, prescreen=pre)
            cfg = KernelConfig(**case["cfg"]) if "cfg" in case else None
            if cfg is None:
                s, i = fused_topk(**inp, prescreen=pre)  # the public dispatch must pick the Triton path here
            else:
                s, i = fused_topk_triton(a, config=cfg, splits=case.get("splits"), poison=True)
            results[case["name"]] = (s, i, sum(redone))
        except Exception as e:  # reported by the parent test of that case
            results[case["name"]] = f"{type(e).__name__}: {e}"
    select_max = module.SEGMENTED_SELECT_MAX_COLS
    for case in SEG_CASES:
        for method in ("keys", "keys_topk", "running"):
            # keys_topk: the keys method with every row too wide for the select kernel (torch top-k)
            module.SEGMENTED_SELECT_MAX_COLS = 0 if method == "keys_topk" else select_max
            try:
                inp, seg = make_seg_inputs(case)
                s, i = _seg_call(
                    inp,
                    seg,
                    segmented_topk_triton,
                    config=KernelConfig(**{**_SEG_TILES, **case.get("cfg", {})}),
                    chunk_rows=case["chunk"],
                    poison=True,
                    method=method.removesuffix("_topk"),
                )
                results[f"{case['name']}:{method}"] = (s, i, 0)
            except Exception as e:
                results[f"{case['name']}:{method}"] = f"{type(e).__name__}: {e}"
    torch.save(results, out_path)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("triton")
    d = tmp_path_factory.mktemp("interp")
    cases_path, out_path = d / "cases.json", d / "out.pt"
    cases_path.write_text(json.dumps(CASES))
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(cases_path), str(out_path)],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(torch.load(out_path))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_triton_interpreted(case: Case, interpreted: dict[str, Any]) -> None:
    res = interpreted[case["name"]]
    assert not isinstance(res, str), res
    check_topk(make_inputs(case), res[0], res[1], f"triton/{case['name']}")
    if case.get("int8"):
        # the int8 scan answered the queries (no silent fallback), except where meant to overflow
        expected = case.get("redo", 0)
        assert expected == "any" or res[2] == expected, res[2]


@pytest.mark.parametrize("case", SEG_CASES, ids=[c["name"] for c in SEG_CASES])
@pytest.mark.parametrize("method", ["keys", "keys_topk", "running"])
def test_segmented_triton_interpreted(case: Case, method: str, interpreted: dict[str, Any]) -> None:
    res = interpreted[f"{case['name']}:{method}"]
    assert not isinstance(res, str), res
    inp, _ = make_seg_inputs(case)
    check_topk(inp, res[0], res[1], f"seg-triton-{method}/{case['name']}")


# --------------------------------------------------------------------------- torch fallback (in process)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fallback(case: Case) -> None:
    inp = make_inputs(case)
    s, i = topk_torch(**inp, chunk_elems=256)  # tiny chunks: many merges of the running top-k
    check_topk(inp, s, i, f"torch/{case['name']}")


def test_dispatch_cpu_uses_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    inp = make_inputs(CASES[0])
    s, i = fused_topk(**inp)
    s2, i2 = topk_torch(**inp)
    assert torch.equal(s, s2) and torch.equal(i, i2)


def test_public_name_is_the_function() -> None:
    import memsvc.kernels
    import memsvc.kernels.fused_topk  # the submodule shares the public function's name

    assert callable(memsvc.kernels.fused_topk) and memsvc.kernels.fused_topk.__module__ == "memsvc.kernels"
    from memsvc.kernels import fused_topk as f

    assert f is memsvc.kernels.fused_topk


def test_fallback_fp32_corpus() -> None:
    inp = make_inputs(dict(name="fp32", Q=3, N=90, d=16, k=7, dtype="fp32", seed=21))
    s, i = fused_topk(**inp)
    check_topk(inp, s, i, "torch/fp32_corpus")


def test_checker_catches_wrong_results() -> None:
    """The comparison must fail on a corrupted answer (guards against a vacuous checker)."""
    inp = make_inputs(CASES[0])
    s, i = topk_torch(**inp)
    bad_i = i.clone()
    bad_i[0, 0], bad_i[0, 1] = i[0, 1], i[0, 0]
    with pytest.raises(AssertionError):
        check_topk(inp, s, bad_i, "swapped")
    bad_s = s.clone()
    bad_s[1, 3] += 0.01
    with pytest.raises(AssertionError):
        check_topk(inp, bad_s, i, "score")
    short = i.clone()
    short[2, -1] = -1
    with pytest.raises(AssertionError):
        check_topk(inp, s, short, "missing")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=0),
        dict(k=129),
        dict(k=5, row_partition=torch.zeros(10, dtype=torch.int32)),
        dict(k=5, time_min=torch.zeros(2, dtype=torch.int64)),
        dict(k=5, valid=torch.ones(9, dtype=torch.bool)),
        dict(k=5, row_bias=torch.zeros(10, dtype=torch.float64)),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    q = torch.nn.functional.normalize(torch.randn(2, 8), dim=1).half()
    c = torch.nn.functional.normalize(torch.randn(10, 8), dim=1).half()
    with pytest.raises((ValueError, TypeError)):
        fused_topk(q, c, **kwargs)


def test_bad_prescreen() -> None:
    q = torch.nn.functional.normalize(torch.randn(2, 8), dim=1).half()
    c = torch.nn.functional.normalize(torch.randn(10, 8), dim=1).half()
    with pytest.raises(ValueError, match="prescreen"):
        fused_topk(q, c, 3, prescreen=Int8Corpus.from_corpus(c[:9]))


def _random_rows(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    rows = torch.randn(n, d, generator=g)
    rows[:, 0] *= 8  # one dimension with a wider range than the others (a column scale of its own)
    return torch.nn.functional.normalize(rows, dim=1).half()


def test_int8_error_bound_holds() -> None:
    """|q . c - u (q8 . c8)| <= margin for every pair, in float64, for fresh random inputs; also for
    rows written later that exceed the column ranges (clamped) and for queries of very unequal norms."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    d = 96
    corpus = _random_rows(g, 500, d)
    pre = Int8Corpus.from_corpus(corpus)
    wider = (torch.nn.functional.normalize(torch.randn(50, d, generator=g), dim=1) * 3).half()
    pre = pre.grown(600)
    pre.set_rows(500, wider)  # beyond each column's range: clamped, the bound grows to cover it
    rows = torch.cat([corpus, wider, torch.zeros(50, d, dtype=torch.float16)])
    queries = _random_rows(g, 40, d).float()
    queries[::3] *= 0.01
    pq = quantize_queries(queries, pre.rows(0, 550))
    exact = queries.double() @ rows[:550].double().T
    approx = pq.unit.double() * (pq.q8.double() @ pre.values[:550].double().T)
    err = (exact - approx).abs()
    assert bool((err <= pq.margin.double()[:, None]).all()), float((err - pq.margin.double()[:, None]).max())
    # and the margin is not vacuous: within 20x of the largest error actually seen
    assert float(pq.margin.max()) < 20 * float(err.max())


def test_int8_corpus_rows_and_views() -> None:
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    corpus = _random_rows(g, 300, 32)
    pre = Int8Corpus.from_corpus(corpus)
    assert pre.values.dtype == torch.int8 and int(pre.values.abs().max()) == 127
    # from scratch and row by row give the same values
    again = Int8Corpus(torch.zeros_like(pre.values), pre.col_scale)
    for r in range(0, 300, 7):
        again.set_rows(r, corpus[r : r + 7])
    assert torch.equal(again.values, pre.values) and again.err_max == pytest.approx(pre.err_max)
    grown = pre.grown(400)
    assert grown.values.shape == (400, 32) and torch.equal(grown.values[:300], pre.values)
    view = pre.rows(100, 250)
    assert torch.equal(view.values, pre.values[100:250]) and view.err_max == pre.err_max


def test_int32_times_keep_every_comparison() -> None:
    pytest.importorskip("triton")
    from memsvc.kernels.fused_topk import _int32_times
    from memsvc.kernels.reference import check_args

    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    q, c = torch.randn(64, 8), torch.randn(50, 8).half()
    lo = 1_700_000_000
    rt = torch.randint(lo, lo + 3_000_000_000, (50,), generator=g)
    rt[0], rt[1] = lo, lo + 3_000_000_000  # the extremes
    edges = torch.tensor([lo - 10**12, lo - 1, lo, lo + 1, int(rt.max()), int(rt.max()) + 1, lo + 10**12])
    tmin = torch.cat([edges, rt[:25], torch.randint(lo - 10**10, lo + 10**10, (32,), generator=g)])
    tmax = tmin.flip(0)
    a = check_args(q, c, 5, row_time=rt, time_min=tmin, time_max=tmax)
    b = _int32_times(a)
    assert b.row_time is not None and b.row_time.dtype == torch.int32
    assert b.time_min is not None and b.time_max is not None
    assert torch.equal(a.row_time[None, :] >= a.time_min[:, None], b.row_time[None, :] >= b.time_min[:, None])
    assert torch.equal(a.row_time[None, :] <= a.time_max[:, None], b.row_time[None, :] <= b.time_max[:, None])
    wide = check_args(q, c, 5, row_time=torch.tensor([0, 2**33] * 25), time_max=tmax)
    assert _int32_times(wide) is wide  # a span over 2**32 keeps its 64-bit times


def test_key_packing_roundtrip() -> None:
    from memsvc.kernels.reference import pack_keys, unpack_keys

    s = torch.tensor([1.5, -0.0, 0.0, -2.0, float("-inf"), 3e-39, -3e-39, float("nan"), 7.0])
    i = torch.tensor([3, 9, 2, 0, 5, 1, 4, 6, -1])
    key = pack_keys(s, i)
    s2, i2 = unpack_keys(key)
    ok = torch.tensor([True, True, True, True, False, True, True, False, False])
    assert torch.equal(s2[ok], torch.where(s[ok] == 0, 0.0, s[ok])) and torch.equal(i2[ok], i[ok])
    assert bool((i2[~ok] == -1).all()) and bool((s2[~ok] == float("-inf")).all())
    order = key.argsort(descending=True)[: int(ok.sum())]
    assert i[order].tolist() == [3, 1, 2, 9, 4, 0]  # 7.0 has index -1: empty; +0/-0 tie -> index 2 first


# --------------------------------------------------------------------------- compiled kernel on a GPU

GPU_CASES: list[Case] = [
    dict(name="q1_k10", Q=1, N=300_000, d=384, k=10, seed=101),
    dict(name="q16_k100_filtered", Q=16, N=300_000, d=384, k=100, partitions=4, valid_frac=0.9, seed=102),
    dict(
        name="q128_k10_all_filters",
        Q=128,
        N=250_001,
        d=384,
        k=10,
        partitions=4,
        valid_frac=0.9,
        bias=True,
        time="int64",
        seed=103,
    ),
    dict(name="q300_k100", Q=300, N=200_003, d=384, k=100, seed=104),
    dict(
        name="q64_k128_bf16_dup", Q=64, N=100_000, d=384, k=128, dtype="bf16", dup=3, partitions=2, seed=105
    ),
    dict(name="q1024_k10_d100", Q=1024, N=50_000, d=100, k=10, bias=True, seed=106),
    dict(
        name="q512_k10_all_filters_open_max",
        Q=512,
        N=200_003,
        d=384,
        k=10,
        partitions=4,
        valid_frac=0.9,
        bias=True,
        time="int64",
        open_max=True,
        seed=107,
    ),
    dict(name="q256_k100_int8", Q=256, N=300_001, d=384, k=100, int8=True, seed=108),
    dict(
        name="q1024_k10_int8_all_filters",
        Q=1024,
        N=200_003,
        d=384,
        k=10,
        partitions=4,
        valid_frac=0.9,
        bias=True,
        time="int64",
        int8=True,
        seed=109,
    ),
    dict(
        name="q512_k10_int8_similar_windows",
        Q=512,
        N=300_000,
        d=384,
        k=10,
        partitions=4,
        valid_frac=0.9,
        bias=True,
        time="similar",
        int8=True,
        seed=111,
    ),
    dict(
        name="q128_k10_int8_bf16_dup", Q=128, N=100_000, d=384, k=10, dtype="bf16", dup=3, int8=True, seed=110
    ),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", GPU_CASES, ids=[c["name"] for c in GPU_CASES])
def test_gpu_compiled(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["memsvc.kernels.fused_topk"], "INT8_MIN_ROWS", 0)  # small corpora here
    inp = make_inputs(case, device="cuda")
    pre = Int8Corpus.from_corpus(inp["corpus"]) if case.get("int8") else None
    s, i = fused_topk(**inp, prescreen=pre)
    torch.cuda.synchronize()
    check_topk(inp, s, i, f"cuda/{case['name']}")
    s2, i2 = topk_torch(**inp)  # the fallback on the same GPU agrees too
    check_topk(inp, s2, i2, f"cuda-torch/{case['name']}")


SEG_GPU_CASES: list[Case] = [
    # many small groups (a batch of many users' queries), one group over several chunks, k = 10 / 128
    dict(name="seg_q256_k10", Q=256, N=300_000, d=384, k=10, groups=3000, valid_frac=0.95, seed=120),
    dict(name="seg_q256_k128", Q=256, N=300_000, d=384, k=128, groups=300, valid_frac=0.95, seed=121),
    dict(name="seg_q64_k10_few_big_groups", Q=64, N=200_000, d=384, k=10, groups=3, seed=122),
    dict(name="seg_q33_k16_bf16_dup", Q=33, N=100_000, d=384, k=16, groups=40, dtype="bf16", dup=3, seed=123),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", SEG_GPU_CASES, ids=[c["name"] for c in SEG_GPU_CASES])
def test_segmented_gpu_compiled(case: Case) -> None:
    from memsvc.kernels.fused_topk import segmented_topk_triton

    inp, seg = make_seg_inputs(case, device="cuda")
    s, i = _seg_call(inp, seg, segmented_topk)
    torch.cuda.synchronize()
    check_topk(inp, s, i, f"cuda-seg/{case['name']}")
    s, i = _seg_call(inp, seg, segmented_topk_triton, method="running")
    check_topk(inp, s, i, f"cuda-seg-running/{case['name']}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _run_worker(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit("usage: test_kernels.py --worker CASES.json OUT.pt")
