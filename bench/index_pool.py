"""How much of the index backend's ranking pool the GPU index scores itself.

With `MEMSVC_SEARCH_BACKEND=index` ranking looks at the dense top-k (k = 128, scored by the index),
the BM25 top 400 (positive scores only) and the turn before each of those; every pool row the index
did not return needs a dense score from elsewhere: the cached corpus's copy of the vectors, or a
second device call per request. This counts those rows on LoCoMo conversations (turns only, MiniLM
on the CPU, memsvc's BM25) and times scoring the whole pool from the copy.

    python bench/index_pool.py [--conversations 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.retrieval import load
from memsvc.embedding import get_embedder
from memsvc.ranking import BM25Index

K, POOL = 128, 400


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=2, help="LoCoMo conversations (tune half first)")
    args = parser.parse_args()
    embedder = get_embedder(device="cpu", threads=2)
    conversations = load(["locomo"], "all")[: args.conversations]
    pool_sizes, not_scored, seconds = [], [], []
    for conv in conversations:
        texts = [m.content for b in conv.batches for m in b.messages]
        vectors = embedder.embed(texts).astype(np.float32)
        bm25 = BM25Index()
        for text in texts:
            bm25.add(text)
        questions = [q.text for q in conv.questions]
        for question, qv in zip(questions, embedder.embed(questions).astype(np.float32), strict=True):
            hits = set(np.argsort(-(vectors @ qv))[:K].tolist())
            lexical = bm25.score(question)
            chosen = hits | {int(i) for i in np.argsort(-lexical, kind="stable")[:POOL] if lexical[i] > 0}
            chosen |= {i - 1 for i in chosen if i > 0}  # the turn before (turns are in order)
            pool = np.array(sorted(chosen))
            pool_sizes.append(len(pool))
            not_scored.append(len(chosen - hits))
            t0 = time.perf_counter()
            np.einsum("ij,j->i", vectors[pool], qv)
            seconds.append(time.perf_counter() - t0)
    a, b = np.array(pool_sizes), np.array(not_scored)
    print(
        f"conversations {len(conversations)}; questions {len(a)}; pool rows median {np.median(a):.0f} "
        f"mean {a.mean():.0f}; rows the index did not score: median {np.median(b):.0f} mean {b.mean():.0f} "
        f"({100 * b.sum() / a.sum():.0f}% of pool rows); questions with any {100 * (b > 0).mean():.0f}%"
    )
    print(
        f"scoring the whole pool from the copy: median {1e6 * np.median(seconds):.0f} us, "
        f"p95 {1e6 * np.percentile(seconds, 95):.0f} us"
    )


if __name__ == "__main__":
    main()
