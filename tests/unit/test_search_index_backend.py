"""`search.rank_corpus` as production runs it with the index backend (`dense_hits` from a
`VectorIndex`): the dense signal of a row the index returned is the index's own score; rows it did not
return (the BM25 top, previous turns) are scored from the corpus's vectors."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pytest

from memsvc.corpus import UserCorpus
from memsvc.schemas import SearchRequest
from memsvc.search import SearchConfig, rank_corpus
from memsvc.vector_index import DenseHit, VectorIndex
from tests.unit.test_corpus import QUERIES, _row, _vector

TENANT = uuid.uuid4()


def _corpus(seed: int, n: int) -> tuple[UserCorpus, VectorIndex]:
    rng = random.Random(seed)
    rows = [_row(rng, status="active") for _ in range(n)]
    vectors = np.stack([_vector(rng) for _ in rows])
    ordered = sorted(range(n), key=lambda i: rows[i].sort_key())
    corpus = UserCorpus()
    corpus.load([rows[i] for i in ordered], vectors[ordered])
    index = VectorIndex.from_arrays([r.id for r in rows], [(TENANT, "u")] * n, vectors)
    return corpus, index


@pytest.mark.parametrize("seed", range(4))
def test_the_dense_signal_of_an_index_hit_is_the_index_score(seed: int) -> None:
    corpus, index = _corpus(seed, 60)
    rng = np.random.default_rng(seed)
    config = SearchConfig()
    partition = index.partition(TENANT, "u")
    for text in QUERIES:
        query = np.asarray(rng.standard_normal(corpus.vectors.shape[1]), dtype=np.float32)
        query /= np.linalg.norm(query)
        hits = index.search(query[None, :], [partition], 5)[0]
        assert len(hits) == 5
        # a record the copy cannot reproduce: if ranking recomputed the hits, cosine would not match
        shifted = {h.memory_id: h.score + 0.25 for h in hits}
        request = SearchRequest(query=text, user_id="u", limit=50, explain=True)
        out = rank_corpus(
            corpus, request, query, config, dense_hits=[DenseHit(m, s) for m, s in shifted.items()]
        )
        slot = corpus.row_index()
        checked = {"hit": 0, "copy": 0}
        for item in out:
            if item.kind == "excerpt":
                continue
            cosine = item.metadata["explain"]["cosine"]
            if item.id in shifted:
                assert cosine == pytest.approx(shifted[item.id], abs=1e-4)
                checked["hit"] += 1
            else:
                assert cosine == pytest.approx(float(corpus.vectors[slot[item.id]] @ query), abs=1e-4)
                checked["copy"] += 1
        assert checked["hit"] and checked["copy"], checked


def test_index_backend_with_every_row_returned_ranks_like_the_cpu_path() -> None:
    """With k >= the user's rows the pool is the same either way and so are the results, up to the
    dense statistics (the index path's are over every row, the CPU path's over eligible ones)."""
    corpus, index = _corpus(11, 40)
    config = SearchConfig()
    rng = np.random.default_rng(3)
    for text in QUERIES:
        query = np.asarray(rng.standard_normal(corpus.vectors.shape[1]), dtype=np.float32)
        query /= np.linalg.norm(query)
        hits = index.search(query[None, :], [index.partition(TENANT, "u")], 128)[0]
        assert len(hits) == 40
        request = SearchRequest(query=text, user_id="u", limit=20)
        on_index = rank_corpus(corpus, request, query, config, dense_hits=hits)
        on_cpu = rank_corpus(corpus, request, query, config)
        assert {r.id for r in on_index} == {r.id for r in on_cpu}
        assert [r.id for r in on_index][:3] == [r.id for r in on_cpu][:3]
