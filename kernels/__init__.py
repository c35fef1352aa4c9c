"""Fused similarity + top-k kernels (pure compute: they know nothing of memories).

``fused_topk`` runs the Triton kernel (``kernels/fused_topk.py``) when the tensors are on CUDA, or on
CPU tensors when ``TRITON_INTERPRET=1`` is set (the Triton interpreter, used by the tests); otherwise
it runs the chunked torch fallback (``kernels/reference.py``).  Both follow the same semantics, see
``kernels/reference.py``.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from memsvc.kernels.precompile import precompile
from memsvc.kernels.prescreen import Int8Corpus
from memsvc.kernels.reference import check_args, topk_reference_float64, topk_torch
from memsvc.kernels.segmented import plan_segments, segmented_topk, segmented_topk_torch

__all__ = [
    "Int8Corpus",
    "fused_topk",
    "plan_segments",
    "precompile",
    "segmented_topk",
    "segmented_topk_torch",
    "topk_reference_float64",
    "topk_torch",
    "triton_available",
]


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


if triton_available():
    # Import the submodule kernels/fused_topk.py *before* defining the function of the same name: the
    # first import of a submodule sets the package attribute to the module, which would otherwise
    # shadow the public function ``kernels.fused_topk`` for everyone importing it afterwards.
    import memsvc.kernels.fused_topk as _triton_module  # noqa: F401


def _use_triton(queries: torch.Tensor, corpus: torch.Tensor) -> bool:
    if corpus.dtype not in (torch.float16, torch.bfloat16) or not triton_available():
        return False
    if corpus.is_cuda:
        return True
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def fused_topk(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    *,
    row_partition: torch.Tensor | None = None,
    query_partition: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    row_time: torch.Tensor | None = None,
    time_min: torch.Tensor | None = None,
    time_max: torch.Tensor | None = None,
    row_bias: torch.Tensor | None = None,
    prescreen: Int8Corpus | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k rows of ``corpus`` by ``dot(query, row) + row_bias`` among the rows eligible for each query.

    Args:
        queries: [Q, d] fp16/bf16/fp32, rows L2-normalised by the caller.  With a 16-bit corpus they are
            rounded to the corpus dtype (tensor-core operands).
        corpus: [N, d] fp16 or bf16 (fp32 only on the torch fallback).
        k: 1..128.
        row_partition / query_partition: [N] / [Q] int32, both or neither; a query only sees rows of its
            own partition.
        valid: [N] bool; False rows are never returned.
        row_time: [N] int64 or float; time_min / time_max: [Q] of the same dtype, inclusive bounds.
        row_bias: [N] float32 added to the dot product.
        prescreen: an int8 copy of ``corpus`` (``Int8Corpus.from_corpus``): for many queries the Triton
            path then finds candidates on int8 tensor cores and scores them exactly; same results.

    Returns:
        ``(scores, indices)``: [Q, k] float32 and [Q, k] int64, best first, ties broken by the smaller
        index; slots beyond the number of eligible rows hold ``-inf`` and ``-1``.  Rows whose score is
        ``-inf`` or NaN are never returned.
    """
    a = check_args(
        queries,
        corpus,
        k,
        row_partition=row_partition,
        query_partition=query_partition,
        valid=valid,
        row_time=row_time,
        time_min=time_min,
        time_max=time_max,
        row_bias=row_bias,
        prescreen=prescreen,
    )
    if _use_triton(a.queries, a.corpus):
        from memsvc.kernels.fused_topk import fused_topk_triton  # lazy: triton is an optional dependency

        return fused_topk_triton(a)
    return topk_torch(a.queries, a.corpus, a.k, **a.filters())
