"""Compile every kernel variant a searcher can launch, before traffic comes.

Triton compiles a kernel the first time it meets a new combination of compile-time constants and
argument specialisations (16-byte alignment of pointers, divisibility of integers); each takes
seconds, and a server that meets them under load stalls for that long.  ``precompile`` runs each
method and shape class of ``fused_topk`` (the running kernel for up to 16 and up to 63 queries, the
threshold method with its fp16 scan and, with ``prescreen``, its int8 scan) and the segmented
top-k once on random rows, with the filters an index passes (validity only).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from memsvc.kernels.prescreen import Int8Corpus
from memsvc.kernels.reference import check_args
from memsvc.kernels.segmented import segmented_topk

# Query counts that select each shape class and method of fused_topk (see fused_topk.default_config
# and THRESHOLD_MIN_QUERIES): Q <= 16, 17..63, >= 64.
SHAPE_CLASSES = (1, 32, 256)


def precompile(d: int, k: int, *, dtype: torch.dtype, device: torch.device, prescreen: bool = False) -> None:
    """Run every Triton variant that searches of width ``d`` and this ``k`` (over rows of ``dtype``
    on ``device``, filtered by validity) can use; nothing to do without CUDA."""
    from memsvc.kernels import fused_topk, triton_available

    if device.type != "cuda" or not triton_available() or dtype not in (torch.float16, torch.bfloat16):
        return
    from memsvc.kernels.fused_topk import default_config, fused_topk_triton

    g = torch.Generator(device=device).manual_seed(0)
    n = 1 << 16  # enough rows for the threshold method's sample to bound a top-128
    corpus = torch.nn.functional.normalize(torch.randn(n + 8, d, generator=g, device=device), dim=1).to(dtype)
    queries = torch.nn.functional.normalize(
        torch.randn(max(SHAPE_CLASSES), d, generator=g, device=device), dim=1
    )
    valid = torch.rand(n + 16, generator=g, device=device) < 0.95
    # Row views of a corpus start at any row: with 2·d bytes per row not a multiple of 16 a view's
    # pointer may be unaligned (another variant); validity masks are copied aligned by the index.
    for offset in (0,) if (d * corpus.element_size()) % 16 == 0 else (0, 1):
        rows = corpus[offset : offset + n]
        for q_n in SHAPE_CLASSES:
            fused_topk(queries[:q_n], rows, k, valid=valid[:n])
        if prescreen:  # the int8 scan, which fused_topk uses from INT8_MIN_ROWS rows only
            q = queries[: max(SHAPE_CLASSES)]
            a = check_args(q, rows, k, valid=valid[:n], prescreen=Int8Corpus.from_corpus(rows))
            fused_topk_triton(a, config=replace(default_config(q.shape[0], k, d), int8_min_rows=0))
    # the segmented top-k, both methods: two groups, one with two ranges (a merge of chunks)
    from memsvc.kernels.fused_topk import segmented_topk_triton

    seg = (
        np.array([0, 1, 0, -1], dtype=np.int64),
        np.array([0, 2, 3], dtype=np.int64),
        np.array([0, 20_000, 40_000], dtype=np.int64),
        np.array([10_000, 30_000, 60_000], dtype=np.int64),
    )
    segmented_topk(queries[:4].to(dtype), corpus[:n], k, *seg, valid=valid[:n])
    # ... and its keys method with rows narrow enough for each of the select kernel's two widths
    # (group 0's two ranges: 1,500 and 7,500 rows -> 1,536 and 7,552 columns of 64-row tiles)
    for span in (1_000, 5_000):
        narrow = (seg[0], seg[1], seg[2], seg[2] + np.array([span, span // 2, span]))
        segmented_topk(queries[:4].to(dtype), corpus[:n], k, *narrow, valid=valid[:n])
    segmented_topk_triton(queries[:4].to(dtype), corpus[:n], k, *seg, valid[:n], method="running")
    torch.cuda.synchronize(device)
