"""Dynamic batching: concurrent requests are coalesced into one call on the device.

The first request of a batch waits at most `max_wait_s` for company; a batch never exceeds
`max_size`. A request alone pays no more than the bounded wait. One worker thread runs the
batches, so the device sees one large call instead of many small ones (a second thread, starting
the next batch while one waits on the device, served fewer queries: BENCHMARKS.md).

Requests are handed over under one lock and taken a batch at a time, and an event loop can be
answered through a callback (`send`) instead of a `Future`: at ~20k requests/s a Future's
condition variable and a queue operation per request held the GIL longer than the batch's
embedding did (H200 profile, BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")
# Called once per request from the batcher's thread: (result, None) or (None, error).
Callback = Callable[[Out | None, BaseException | None], None]

log = logging.getLogger(__name__)


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
        self._pending: deque[tuple[In, Callback[Out]]] = deque()
        self._changed = threading.Condition(threading.Lock())
        self._closed = False
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True)
        self._thread.start()

    def send(self, item: In, callback: Callback[Out]) -> None:
        """Queue `item`; `callback` gets its result or error from the batcher's thread."""
        with self._changed:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append((item, callback))
            queued = len(self._pending)
            if queued == 1 or queued == self.max_size:  # the only moments the batcher waits for
                self._changed.notify()

    def submit(self, item: In) -> Future[Out]:
        future: Future[Out] = Future()

        def settle(result: Out | None, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]  # None only beside an error

        self.send(item, settle)
        return future

    def __call__(self, item: In) -> Out:
        """Submit one item and wait for its result."""
        return self.submit(item).result()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout=5)
        # What is still queued (the thread did not stop in time) fails instead of waiting forever.
        with self._changed:
            left, self._pending = list(self._pending), deque()
        self._answer(left, None, RuntimeError("the batcher is closed"))

    def _next_batch(self) -> list[tuple[In, Callback[Out]]] | None:
        with self._changed:
            while not self._pending:
                if self._closed:
                    return None
                self._changed.wait()
            deadline = time.monotonic() + self.max_wait_s
            while len(self._pending) < self.max_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            pending = self._pending
            batch = [pending.popleft() for _ in range(min(len(pending), self.max_size))]
            self.batches += 1
            self.items += len(batch)
            return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                results = self.run_batch([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(batch)} items"
                    )
            except BaseException as exc:  # every waiting caller gets the error instead of hanging
                self._answer(batch, None, exc)
            else:
                self._answer(batch, results, None)

    @staticmethod
    def _answer(
        batch: list[tuple[In, Callback[Out]]], results: Sequence[Out] | None, error: BaseException | None
    ) -> None:
        for i, (_, callback) in enumerate(batch):
            try:
                callback(None if results is None else results[i], error)
            except Exception:  # a caller's callback must not stop the batches of the others
                log.exception("a batched request's callback failed")
