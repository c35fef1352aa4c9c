from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from memsvc.batching import DynamicBatcher


def test_concurrent_requests_are_coalesced_and_answered_in_order() -> None:
    sizes: list[int] = []

    def square_all(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.01)  # the device call: while it runs, more requests queue up
        return [i * i for i in items]

    batcher = DynamicBatcher(square_all, max_wait_s=0.005, max_size=64)
    results: dict[int, int] = {}

    def client(i: int) -> None:
        results[i] = batcher(i)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: i * i for i in range(200)}
    assert sum(sizes) == 200
    assert max(sizes) <= 64
    assert len(sizes) < 50  # coalesced, not one call per request


def test_single_request_waits_no_longer_than_the_bound() -> None:
    batcher = DynamicBatcher(lambda items: list(items), max_wait_s=0.02, max_size=8)
    started = time.perf_counter()
    assert batcher("x") == "x"
    elapsed = time.perf_counter() - started
    batcher.close()
    assert elapsed < 0.02 + 0.2  # bounded wait plus scheduling slack


def test_errors_reach_every_caller() -> None:
    def fail(items: Sequence[int]) -> list[int]:
        raise ValueError("device fell over")

    batcher = DynamicBatcher(fail, max_wait_s=0.001)
    with pytest.raises(ValueError, match="device fell over"):
        batcher(1)
    batcher.close()


def test_a_closed_batcher_refuses_work_instead_of_leaving_it_waiting() -> None:
    batcher: DynamicBatcher[int, int] = DynamicBatcher(lambda items: [i * 2 for i in items])
    assert batcher(21) == 42
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)


def test_callbacks_get_each_result_and_a_failing_callback_spares_the_others() -> None:
    sizes: list[int] = []

    def double_all(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return [2 * i for i in items]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(double_all, max_wait_s=0.05, max_size=16)
    got: dict[int, tuple[int | None, BaseException | None]] = {}
    done = threading.Event()

    def record(i: int, result: int | None, error: BaseException | None) -> None:
        if i == 3:
            raise KeyError("a caller's bug")
        got[i] = (result, error)
        if len(got) == 39:
            done.set()

    for i in range(40):
        batcher.send(i, lambda r, e, i=i: record(i, r, e))
    assert done.wait(5)
    assert got == {i: (2 * i, None) for i in range(40) if i != 3}
    assert sum(sizes) == 40 and max(sizes) <= 16
    # The batcher still serves after the failed callback.
    assert batcher(5) == 10
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.send(1, lambda r, e: None)


def test_a_full_batch_goes_without_waiting_out_the_bound() -> None:
    batcher = DynamicBatcher(lambda items: list(items), max_wait_s=5.0, max_size=4)
    futures = [batcher.submit(i) for i in range(4)]
    started = time.perf_counter()
    assert [f.result(timeout=2) for f in futures] == [0, 1, 2, 3]
    assert time.perf_counter() - started < 1.0
    batcher.close()
