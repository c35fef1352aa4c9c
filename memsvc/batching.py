"""Dynamic batching: concurrent requests are coalesced into one call on the device.

The first request of a batch waits at most `max_wait_s` for company; a batch never exceeds
`max_size`. A request alone pays no more than the bounded wait. One worker thread runs the
batches, so the device sees one large call instead of many small ones.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class DynamicBatcher(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], Sequence[Out]],
        *,
        max_wait_s: float = 0.002,
        max_size: int = 256,
    ) -> None:
        self.run_batch = run_batch
        self.max_wait_s = max_wait_s
        self.max_size = max_size
        self._queue: queue.SimpleQueue[tuple[In, Future[Out]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.items = 0
        self._closed = False

    def submit(self, item: In) -> Future[Out]:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future[Out] = Future()
        self._queue.put((item, future))
        return future

    def __call__(self, item: In) -> Out:
        """Submit one item and wait for its result."""
        return self.submit(item).result()

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=5)
        # What was submitted while closing would wait forever: it fails instead.
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
            if entry is not None:
                entry[1].set_exception(RuntimeError("the batcher is closed"))

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_size:
                remaining = deadline - time.monotonic()
                try:
                    # Take whatever is already queued without waiting; then wait out the deadline.
                    entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    self._run(batch)
                    return
                batch.append(entry)
            self._run(batch)

    def _run(self, batch: list[tuple[In, Future[Out]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = self.run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # every waiting caller gets the error instead of hanging
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
