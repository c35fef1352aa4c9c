"""The GPU read path's first stage: embed queries and take each one's dense top-k, in batches.

Concurrent searches are coalesced by `DynamicBatcher`: one embedding call and one
`kernels.fused_topk` launch over the device-resident `VectorIndex` serve the whole batch, each
query only within its own (tenant, user) partition. With batching off every request makes its
own two calls, which is what the batching is measured against (bench/serve_gpu.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from memsvc.batching import Callback, DynamicBatcher
from memsvc.embedding import Embedder
from memsvc.vector_index import DenseHits, VectorIndex

DenseQuery = tuple[str, int | None]  # query text, partition (None: the user has no rows yet)
DenseAnswer = tuple[np.ndarray, DenseHits]  # query vector, best-first hits


class DenseRetriever:
    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        *,
        k: int = 128,
        batching: bool = True,
        max_wait_s: float = 0.002,
        max_size: int = 256,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.k = k
        self._batcher = (
            DynamicBatcher(self.run_batch, max_wait_s=max_wait_s, max_size=max_size) if batching else None
        )

    def run_batch(self, items: Sequence[DenseQuery]) -> list[DenseAnswer]:
        vectors = self.embedder.embed([text for text, _ in items])
        hits = self.index.search(vectors, [partition for _, partition in items], self.k)
        return list(zip(vectors, hits, strict=True))

    def __call__(self, text: str, partition: int | None) -> DenseAnswer:
        if self._batcher is None:
            return self.run_batch([(text, partition)])[0]
        return self._batcher((text, partition))

    def submit(self, text: str, partition: int | None) -> Future[DenseAnswer]:
        """The answer as a future (an event loop can wait on it without a thread per request)."""
        if self._batcher is not None:
            return self._batcher.submit((text, partition))
        future: Future[DenseAnswer] = Future()
        future.set_result(self.run_batch([(text, partition)])[0])
        return future

    def send(self, text: str, partition: int | None, callback: Callback[DenseAnswer]) -> None:
        """The answer to `callback` (result, error), from the batcher's thread: the cheapest way for an
        event loop to take part in batches (no Future per request)."""
        if self._batcher is not None:
            self._batcher.send((text, partition), callback)
            return
        try:
            answer = self.run_batch([(text, partition)])[0]
        except Exception as exc:
            callback(None, exc)
        else:
            callback(answer, None)

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
