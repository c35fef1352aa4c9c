"""Pure-torch fused similarity + top-k: argument checks, the chunked fallback and a float64 reference.

Semantics shared with the Triton kernel (``kernels/fused_topk.py``):

* ``score = dot(q, row)`` with fp32 accumulation, plus ``row_bias[row]`` when given.  When the corpus
  is fp16/bf16 the queries are first rounded to the corpus dtype (the tensor cores need both operands
  in one 16-bit type), so the fallback rounds them the same way.
* A row is *eligible* for a query when its partition equals the query's partition (if partitions are
  given), ``valid[row]`` is True (if given) and ``time_min[q] <= row_time[row] <= time_max[q]`` (for
  whichever bounds are given).  A row whose score is ``-inf`` or NaN is never returned either.
* Results are sorted by score descending, ties broken by the smaller row index; missing slots are
  ``score = -inf`` and ``index = -1``.

Ties are made deterministic by packing (score, index) into one int64 *key* whose signed order is
(score descending, index ascending): the high 32 bits are the float's bits mapped to a monotone
signed integer, the low 32 bits are ``0xFFFFFFFF - index``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import torch

if TYPE_CHECKING:
    from memsvc.kernels.prescreen import Int8Corpus

KEY_EMPTY = -(2**63)  # int64 min: "no row" (sorts after every real key)
_LOW32 = 0xFFFFFFFF
MAX_K = 128


class TopkFilters(TypedDict):
    """The filter and bias keyword arguments of ``fused_topk`` / ``topk_torch``."""

    row_partition: torch.Tensor | None
    query_partition: torch.Tensor | None
    valid: torch.Tensor | None
    row_time: torch.Tensor | None
    time_min: torch.Tensor | None
    time_max: torch.Tensor | None
    row_bias: torch.Tensor | None


@dataclass(frozen=True)
class TopkArgs:
    """Checked, normalised arguments shared by the Triton path and the torch paths."""

    queries: torch.Tensor
    corpus: torch.Tensor
    k: int
    row_partition: torch.Tensor | None
    query_partition: torch.Tensor | None
    valid: torch.Tensor | None
    row_time: torch.Tensor | None
    time_min: torch.Tensor | None
    time_max: torch.Tensor | None
    row_bias: torch.Tensor | None
    prescreen: Int8Corpus | None = None  # an int8 copy of the corpus: a speed-up, same results

    def filters(self) -> TopkFilters:
        """The filter and bias terms, as keyword arguments for ``fused_topk`` / ``topk_torch``."""
        return TopkFilters(
            row_partition=self.row_partition,
            query_partition=self.query_partition,
            valid=self.valid,
            row_time=self.row_time,
            time_min=self.time_min,
            time_max=self.time_max,
            row_bias=self.row_bias,
        )


def check_args(
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
) -> TopkArgs:
    """Validate shapes, dtypes and devices; raise ``ValueError``/``TypeError`` on misuse."""
    if queries.dim() != 2 or corpus.dim() != 2:
        raise ValueError(
            f"queries and corpus must be 2-D, got {tuple(queries.shape)} and {tuple(corpus.shape)}"
        )
    q_n, d = queries.shape
    n, d2 = corpus.shape
    if d != d2:
        raise ValueError(f"dimension mismatch: queries d={d}, corpus d={d2}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an int in 1..{MAX_K}, got {k!r}")
    if n >= 2**31 - 1:
        raise ValueError("corpus has too many rows (indices are packed in 32 bits)")
    if not queries.dtype.is_floating_point or not corpus.dtype.is_floating_point:
        raise TypeError("queries and corpus must be floating point")
    dev = corpus.device
    if queries.device != dev:
        raise ValueError("queries and corpus must be on the same device")
    if (row_partition is None) != (query_partition is None):
        raise ValueError("row_partition and query_partition must be given together")

    def _vec(t: torch.Tensor | None, name: str, length: int) -> torch.Tensor | None:
        if t is None:
            return None
        if t.dim() != 1 or t.shape[0] != length:
            raise ValueError(f"{name} must have shape [{length}], got {tuple(t.shape)}")
        if t.device != dev:
            raise ValueError(f"{name} must be on {dev}, got {t.device}")
        return t.contiguous()

    row_partition = _vec(row_partition, "row_partition", n)
    query_partition = _vec(query_partition, "query_partition", q_n)
    if (row_partition is not None and query_partition is not None) and (
        row_partition.dtype != torch.int32 or query_partition.dtype != torch.int32
    ):
        raise TypeError("row_partition and query_partition must be int32")
    valid = _vec(valid, "valid", n)
    if valid is not None and valid.dtype != torch.bool:
        raise TypeError("valid must be a bool tensor")
    row_time = _vec(row_time, "row_time", n)
    time_min = _vec(time_min, "time_min", q_n)
    time_max = _vec(time_max, "time_max", q_n)
    if (time_min is not None or time_max is not None) and row_time is None:
        raise ValueError("time_min/time_max need row_time")
    for name, t in (("time_min", time_min), ("time_max", time_max)):
        if t is not None and row_time is not None and t.dtype != row_time.dtype:
            raise TypeError(f"{name} dtype {t.dtype} must equal row_time dtype {row_time.dtype}")
    if row_time is not None and time_min is None and time_max is None:
        row_time = None  # no bounds: the times cannot filter anything
    row_bias = _vec(row_bias, "row_bias", n)
    if row_bias is not None and row_bias.dtype != torch.float32:
        raise TypeError("row_bias must be float32")
    if prescreen is not None:
        v = prescreen.values
        if v.dtype != torch.int8 or tuple(v.shape) != (n, d) or v.device != dev:
            raise ValueError(f"prescreen must hold [{n}, {d}] int8 values on {dev}, got {tuple(v.shape)}")
        if d > 512:
            raise ValueError("the int8 prescreen supports d <= 512")
    return TopkArgs(
        queries.contiguous(),
        corpus.contiguous(),
        k,
        row_partition,
        query_partition,
        valid,
        row_time,
        time_min,
        time_max,
        row_bias,
        prescreen,
    )


def pack_keys(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pack float32 scores and row indices into int64 keys ordered by (score desc, index asc).

    Rows with score ``-inf``/NaN or a negative index become ``KEY_EMPTY``.
    """
    s = torch.where(scores == 0, torch.zeros_like(scores), scores)  # -0.0 and +0.0 must tie
    bits = s.view(torch.int32).to(torch.int64)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # monotone float -> signed int map
    key = (ordered << 32) | (_LOW32 - index.to(torch.int64))
    empty = ~(s > float("-inf")) | (index < 0)
    return torch.where(empty, torch.full_like(key, KEY_EMPTY), key)


def unpack_keys(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_keys`: float32 scores and int64 indices (``-inf``/``-1`` for empty)."""
    hi = key >> 32
    bits = (hi ^ ((hi >> 31) & 0x7FFFFFFF)).to(torch.int32)
    scores = bits.view(torch.float32)
    index = _LOW32 - (key & _LOW32)
    empty = key == KEY_EMPTY
    scores = torch.where(empty, torch.full_like(scores, float("-inf")), scores)
    index = torch.where(empty, torch.full_like(index, -1), index)
    return scores, index


def eligibility(a: TopkArgs, start: int, end: int) -> torch.Tensor | None:
    """[Q, end-start] bool mask of eligible (query, row) pairs for rows [start, end), or None (all)."""
    q_n = a.queries.shape[0]
    mask: torch.Tensor | None = None

    def _and(m: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return x if m is None else m & x

    if a.row_partition is not None and a.query_partition is not None:
        mask = _and(mask, a.query_partition[:, None] == a.row_partition[None, start:end])
    if a.valid is not None:
        mask = _and(mask, a.valid[None, start:end].expand(q_n, end - start))
    if a.row_time is not None:
        t = a.row_time[None, start:end]
        if a.time_min is not None:
            mask = _and(mask, t >= a.time_min[:, None])
        if a.time_max is not None:
            mask = _and(mask, t <= a.time_max[:, None])
    return mask


def _effective_queries(a: TopkArgs) -> torch.Tensor:
    # The Triton path feeds tensor cores with both operands in the corpus' 16-bit dtype.
    if a.corpus.dtype in (torch.float16, torch.bfloat16):
        return a.queries.to(a.corpus.dtype).float()
    return a.queries.float()


def topk_torch(
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
    chunk_elems: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch fallback with the same semantics as the Triton kernel.

    Works chunk by chunk over N (at most ``chunk_elems`` scores per chunk) and keeps a running top-k
    of packed keys, so it never materialises the whole Q×N score matrix.
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
    )
    q_n, n = a.queries.shape[0], a.corpus.shape[0]
    dev = a.corpus.device
    best = torch.full((q_n, k), KEY_EMPTY, dtype=torch.int64, device=dev)
    if q_n == 0 or n == 0:
        return unpack_keys(best)
    q32 = _effective_queries(a)
    chunk = max(256, chunk_elems // max(q_n, 1))
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        # fp32 matmul of upcast 16-bit values: exact products, fp32 accumulation (no TF32 by default).
        s = q32 @ a.corpus[start:end].float().T
        if a.row_bias is not None:
            s = s + a.row_bias[None, start:end]
        m = eligibility(a, start, end)
        if m is not None:
            s = s.masked_fill(~m, float("-inf"))
        idx = torch.arange(start, end, device=dev, dtype=torch.int64).expand(q_n, end - start)
        keys = pack_keys(s, idx)
        top = keys.topk(min(k, end - start), dim=1).values
        best = torch.cat([best, top], dim=1).topk(k, dim=1).values
    return unpack_keys(best)


def topk_reference_float64(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow exact reference for tests: scores computed in float64 (returned as float64).

    Uses the queries exactly as given (no rounding to the corpus dtype), a full Q×N matrix and a
    stable descending sort, so equal scores keep ascending index order.
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
    )
    q_n, n = a.queries.shape[0], a.corpus.shape[0]
    s = a.queries.double() @ a.corpus.double().T
    if a.row_bias is not None:
        s = s + a.row_bias.double()[None, :]
    m = eligibility(a, 0, n)
    if m is not None:
        s = s.masked_fill(~m, float("-inf"))
    s = torch.nan_to_num(s, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
    scores = torch.gather(s, 1, order)
    idx = order.to(torch.int64)
    out_s = torch.full((q_n, k), float("-inf"), dtype=torch.float64, device=s.device)
    out_i = torch.full((q_n, k), -1, dtype=torch.int64, device=s.device)
    kk = order.shape[1]
    ok = scores > float("-inf")
    out_s[:, :kk] = torch.where(ok, scores, out_s[:, :kk])
    out_i[:, :kk] = torch.where(ok, idx, out_i[:, :kk])
    return out_s, out_i
