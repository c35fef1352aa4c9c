"""The dense stage's entry points answer alike: batched or not, by Future, call or callback."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import numpy as np
import pytest

from memsvc.dense import DenseRetriever
from memsvc.vector_index import VectorIndex

TENANT = uuid.uuid4()
WORDS = ["kayak", "violin", "garden", "piano"]


class WordEmbedder:
    """A text's vector is the unit vector of the first of WORDS it contains."""

    model_name, dim = "words", len(WORDS)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            known = [i for i, w in enumerate(WORDS) if w in text]
            if not known:
                raise ValueError(f"no known word in {text!r}")
            out[row, known[0]] = 1.0
        return out


@pytest.mark.parametrize("batching", [True, False])
def test_send_submit_and_call_give_each_query_its_own_users_hits(batching: bool) -> None:
    ids = [uuid.UUID(int=i) for i in range(8)]
    owners = [(TENANT, "ann" if i < 4 else "bob") for i in range(8)]
    vectors = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]
    index = VectorIndex.from_arrays(ids, owners, vectors)
    dense = DenseRetriever(WordEmbedder(), index, k=2, batching=batching, max_wait_s=0.01)
    ann, bob = index.partition(TENANT, "ann"), index.partition(TENANT, "bob")
    got: dict[str, tuple[object, BaseException | None]] = {}
    done = threading.Event()

    def record(name: str):  # type: ignore[no-untyped-def]
        def callback(answer: object, error: BaseException | None) -> None:
            got[name] = (answer, error)
            if len(got) == 2:
                done.set()

        return callback

    dense.send("where is the kayak?", ann, record("ann"))
    dense.send("who plays piano?", bob, record("bob"))
    assert done.wait(5)
    (vector, hits), error = got["ann"]
    assert error is None and np.array_equal(vector, np.eye(4, dtype=np.float32)[0])
    assert hits[0].memory_id == ids[0] and hits[0].score == pytest.approx(1.0)
    (_, hits), _ = got["bob"]
    assert hits[0].memory_id == ids[7]
    assert dense.submit("my garden", ann).result(timeout=5)[1][0].memory_id == ids[2]
    assert dense("the violin", bob)[1][0].memory_id == ids[5]
    dense.close()


def test_an_error_reaches_the_callback() -> None:
    index = VectorIndex.from_arrays([uuid.UUID(int=1)], [(TENANT, "ann")], np.eye(4, dtype=np.float32)[:1])
    dense = DenseRetriever(WordEmbedder(), index, k=2)
    got: list[BaseException | None] = []
    done = threading.Event()

    def callback(answer: object, error: BaseException | None) -> None:
        got.append(error)
        done.set()

    dense.send("no known word here", index.partition(TENANT, "ann"), callback)
    assert done.wait(5)
    assert isinstance(got[0], ValueError) and "no known word" in str(got[0])
    dense.close()
