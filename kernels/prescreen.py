"""An int8 copy of a corpus for the exact int8 pre-screen of the threshold scan.

The threshold method (``kernels/fused_topk.py``) only has to find every row scoring at least a bound.
Scoring an int8 copy instead of the 16-bit corpus halves the bytes read per row and runs on int8
tensor cores (twice the fp16 rate), and results stay exact: a row passes the int8 test whenever its
exact score could reach the bound, because the test subtracts a rigorous bound of the quantisation
error, and the rows that pass are scored again exactly (16-bit operands, fp32 sums).

Quantisation: each *column* j has a scale ``col_scale[j] = max_n |c[n, j]| / 127`` (embedding
dimensions differ in range; a scale per column keeps the integer dot product a single integer
matrix product, which a scale per row would not, see ``quantize_queries``).  For a query q (in fp32,
after rounding to the corpus dtype) the pre-screen computes ``u * (q8 . c8)`` with
``q' = q * col_scale``, ``u = max |q'| / 127`` over the batch and ``q8 = round(q' / u)``.  Then

    q . c - u (q8 . c8) = q . (c - c^) + (q' - u q8) . c8        (c^ = col_scale * c8)

so ``|error| <= |q| * err_max + |q' - u q8| * norm8_max`` (Cauchy-Schwarz), where ``err_max`` bounds
``|c - c^|`` and ``norm8_max`` bounds ``|c8|`` over the rows.  Both are kept as upper bounds while rows
are rewritten (they only grow), so they stay valid for any subset of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

QMAX = 127
# fp32 rounding in the error norms is ~1e-7 relative; this slack keeps the bounds upper bounds.
_NORM_SLACK = 1.0 + 1e-4
_CHUNK_ROWS = 1 << 18  # rows quantised per step (bounded fp32 temporaries)


@dataclass
class Int8Corpus:
    """``values`` [N, d] int8 and ``col_scale`` [d] fp32 of a corpus, with the error bounds above."""

    values: torch.Tensor
    col_scale: torch.Tensor
    err_max: float = 0.0
    norm8_max: float = 0.0

    @classmethod
    def from_corpus(cls, corpus: torch.Tensor, col_scale: torch.Tensor | None = None) -> Int8Corpus:
        """Quantise ``corpus`` [N, d]; ``col_scale`` defaults to each column's max |value| / 127."""
        n, d = corpus.shape
        if col_scale is None:
            col_max = torch.zeros(d, dtype=torch.float32, device=corpus.device)
            for s in range(0, n, _CHUNK_ROWS):
                col_max = torch.maximum(col_max, corpus[s : s + _CHUNK_ROWS].float().abs().amax(dim=0))
            # an all-zero column (or an empty corpus) gets the range of unit vectors, |x| <= 1
            col_scale = torch.where(col_max > 0, col_max, torch.ones_like(col_max)) / QMAX
        out = cls(torch.empty((n, d), dtype=torch.int8, device=corpus.device), col_scale.float().contiguous())
        out.set_rows(0, corpus)
        return out

    def set_rows(self, start: int, rows: torch.Tensor) -> None:
        """Quantise ``rows`` into ``values[start : start + len(rows)]`` and raise the bounds to cover them.

        Values beyond a column's range are clamped; the error bound records what that costs.
        """
        for s in range(0, rows.shape[0], _CHUNK_ROWS):
            chunk = rows[s : s + _CHUNK_ROWS].float()
            q8 = torch.clamp(torch.round(chunk / self.col_scale), -QMAX, QMAX)
            err = torch.linalg.vector_norm(chunk - q8 * self.col_scale, dim=1)
            norm8 = torch.linalg.vector_norm(q8, dim=1)
            self.values[start + s : start + s + chunk.shape[0]] = q8.to(torch.int8)
            if chunk.shape[0]:
                self.err_max = max(self.err_max, float(err.max()) * _NORM_SLACK)
                self.norm8_max = max(self.norm8_max, float(norm8.max()) * _NORM_SLACK)

    def grown(self, capacity: int) -> Int8Corpus:
        """A copy with room for ``capacity`` rows (the first rows and the bounds kept)."""
        values = torch.zeros((capacity, self.values.shape[1]), dtype=torch.int8, device=self.values.device)
        values[: self.values.shape[0]] = self.values
        return Int8Corpus(values, self.col_scale, self.err_max, self.norm8_max)

    def rows(self, start: int, end: int) -> Int8Corpus:
        """Rows [start, end) (a view; the bounds hold for any subset of rows)."""
        return Int8Corpus(self.values[start:end], self.col_scale, self.err_max, self.norm8_max)


@dataclass(frozen=True)
class QuantizedQueries:
    """A batch of queries for the int8 scan: ``q8`` [Q, d] int8, the unit ``u`` ([1] fp32: an int8
    dot product times ``u`` approximates the score) and ``margin`` [Q] fp32, a bound of the error."""

    q8: torch.Tensor
    unit: torch.Tensor
    margin: torch.Tensor


def quantize_queries(queries: torch.Tensor, corpus: Int8Corpus) -> QuantizedQueries:
    """Quantise exact-valued queries (fp32 copies of the 16-bit tensor-core operands) for ``corpus``.

    One unit for the whole batch (not one per query) so that the scan can fold a row's additive
    terms into one integer per row; all of it stays on the device (no host sync).
    """
    q = queries.float()
    scaled = q * corpus.col_scale
    unit = (scaled.abs().amax() / QMAX).clamp(min=1e-30).reshape(1)
    q8 = torch.clamp(torch.round(scaled / unit), -QMAX, QMAX)
    # |q' - u q8|, plus 2**-22 |q'| for the rounding of q' itself (q * col_scale in fp32)
    q_err = torch.linalg.vector_norm(scaled - q8 * unit, dim=1)
    q_err = q_err + torch.linalg.vector_norm(scaled, dim=1) * 2**-22
    margin = (torch.linalg.vector_norm(q, dim=1) * corpus.err_max + q_err * corpus.norm8_max) * _NORM_SLACK
    return QuantizedQueries(q8.to(torch.int8).contiguous(), unit, margin)
