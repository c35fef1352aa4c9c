"""A request waiting on a job (`wait: true`) is woken by the job's completion NOTIFY, and still
returns when the notification is lost or the listener's connection dies, on the real database."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from memsvc.schemas import AddRequest, JobOut


def _add(user_id: str, text: str) -> AddRequest:
    return AddRequest(user_id=user_id, messages=[{"role": "user", "content": text}])


@pytest.fixture
def queue(service, database) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A queue whose listener is connected; jobs are run by the test, not by a worker."""
    from memsvc.database import libpq_url
    from memsvc.workers.queue import ProcrastinateQueue

    q = ProcrastinateQueue(service, libpq_url(database.url), worker="none")
    q.listener.start()
    assert q.listener.wait_listening(10)
    yield q
    q.close()


class Waiter(threading.Thread):
    """`queue.wait` on a thread of its own, as a request thread runs it; records when it returned."""

    def __init__(self, queue: Any, ctx: Any, job_id: uuid.UUID, timeout_s: float, on_loop: bool) -> None:
        super().__init__(daemon=True)
        self.args_ = (queue, ctx, job_id, timeout_s)
        self.on_loop = on_loop
        self.job: JobOut | None = None
        self.returned_at = 0.0

    def run(self) -> None:
        queue, ctx, job_id, timeout_s = self.args_
        if self.on_loop:  # as the add route waits: on an event loop
            self.job = asyncio.run(queue.wait_async(ctx, job_id, timeout_s=timeout_s))
        else:
            self.job = queue.wait(ctx, job_id, timeout_s=timeout_s)
        self.returned_at = time.monotonic()


def _start_waiting(
    queue: Any, ctx: Any, job_id: uuid.UUID, timeout_s: float, on_loop: bool = False
) -> Waiter:
    waiter = Waiter(queue, ctx, job_id, timeout_s, on_loop)
    waiter.start()
    time.sleep(0.3)  # it has looked at the job once and sleeps until woken
    assert waiter.is_alive()
    return waiter


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "event loop"])
def test_a_waiter_is_woken_by_the_notification_long_before_its_safety_poll(  # type: ignore[no-untyped-def]
    service, queue, tenant, monkeypatch, on_loop
) -> None:
    from memsvc.workers import queue as queue_module

    monkeypatch.setattr(queue_module, "SAFETY_POLL_S", 30.0)  # only a notification can wake it in time
    ctx, _ = tenant
    job_id = service.submit_ingest(ctx, _add("notify", "I moved to Lisbon last month."))
    waiter = _start_waiting(queue, ctx, job_id, timeout_s=10, on_loop=on_loop)
    service.run_ingest_job(job_id)
    done_at = time.monotonic()
    waiter.join(10)
    assert waiter.job is not None and waiter.job.status == "succeeded"
    assert waiter.job.result is not None and waiter.job.result["memory_ids"]
    assert waiter.returned_at - done_at < 3  # far below the 30 s safety look and the 10 s timeout


def test_a_final_failure_wakes_the_waiter_too(service, queue, tenant, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from memsvc.workers import queue as queue_module

    monkeypatch.setattr(queue_module, "SAFETY_POLL_S", 30.0)
    ctx, _ = tenant
    job_id = service.submit_ingest(ctx, _add("notify-fail", "This one fails."))
    waiter = _start_waiting(queue, ctx, job_id, timeout_s=10)
    service.mark_job_failed(job_id, "RuntimeError: retried", final=False)  # a retry follows: keep waiting
    time.sleep(0.3)
    assert waiter.is_alive()
    service.mark_job_failed(job_id, "RuntimeError: for good", final=True)
    done_at = time.monotonic()
    waiter.join(10)
    assert waiter.job is not None and waiter.job.status == "failed"
    assert waiter.job.error == "RuntimeError: for good"
    assert waiter.returned_at - done_at < 3  # far below the 30 s safety look and the 10 s timeout


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "event loop"])
def test_a_waiter_returns_when_the_notification_is_lost(queue, tenant, service, sql, on_loop) -> None:  # type: ignore[no-untyped-def]
    from memsvc.workers.queue import SAFETY_POLL_S

    ctx, _ = tenant
    job_id = service.submit_ingest(ctx, _add("lost", "Nobody tells the waiter."))
    waiter = _start_waiting(queue, ctx, job_id, timeout_s=10, on_loop=on_loop)
    # Triggers do not fire for a replication session: the job finishes without a notification.
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")
        sql.execute("UPDATE jobs SET status = 'succeeded' WHERE id = %s", (job_id,))
    done_at = time.monotonic()
    waiter.join(10)
    assert waiter.job is not None and waiter.job.status == "succeeded"
    assert waiter.returned_at - done_at < SAFETY_POLL_S + 1.0


def test_the_listener_reconnects_after_its_connection_is_killed(  # type: ignore[no-untyped-def]
    service, queue, tenant, sql, monkeypatch
) -> None:
    from memsvc.workers import queue as queue_module

    monkeypatch.setattr(queue_module, "SAFETY_POLL_S", 30.0)
    ctx, _ = tenant
    killed = sql.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        (queue_module.JobListener.APPLICATION_NAME,),
    ).fetchone()
    assert killed is not None and killed[0] >= 1
    deadline = time.monotonic() + 10
    while queue.listener.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.listener.wait_listening(10)  # back, by itself
    job_id = service.submit_ingest(ctx, _add("heal", "Still heard after the blip."))
    waiter = _start_waiting(queue, ctx, job_id, timeout_s=10)
    service.run_ingest_job(job_id)
    done_at = time.monotonic()
    waiter.join(10)
    assert waiter.job is not None and waiter.job.status == "succeeded"
    assert waiter.returned_at - done_at < 3  # far below the 30 s safety look and the 10 s timeout


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "event loop"])
def test_without_a_listener_a_waiter_looks_often(service, database, tenant, on_loop) -> None:  # type: ignore[no-untyped-def]
    """`job_notify` off (or the listener away): the 50 ms looks of before notifications."""
    from memsvc.database import libpq_url
    from memsvc.workers.queue import ProcrastinateQueue

    ctx, _ = tenant
    q = ProcrastinateQueue(service, libpq_url(database.url), worker="none")
    try:
        assert not q.listener.listening
        job_id = service.submit_ingest(ctx, _add("polled", "Looked at every 50 ms."))
        waiter = _start_waiting(q, ctx, job_id, timeout_s=10, on_loop=on_loop)
        service.run_ingest_job(job_id)
        done_at = time.monotonic()
        waiter.join(10)
        assert waiter.job is not None and waiter.job.status == "succeeded"
        assert waiter.returned_at - done_at < 3  # far below the 10 s timeout
    finally:
        q.close()


def test_a_job_that_finished_just_before_the_wait_is_remembered(  # type: ignore[no-untyped-def]
    service, queue, tenant, monkeypatch
) -> None:
    """The add route starts waiting after deferring; the listener remembers what finished meanwhile,
    so the first wake-up (not a look 30 s later) answers."""
    from memsvc.workers import queue as queue_module

    monkeypatch.setattr(queue_module, "SAFETY_POLL_S", 30.0)
    ctx, _ = tenant
    job_id = service.submit_ingest(ctx, _add("early", "Done before anyone waited."))
    service.run_ingest_job(job_id)
    time.sleep(0.3)  # the notification has reached the listener
    started = time.monotonic()
    job = asyncio.run(queue.wait_async(ctx, job_id, timeout_s=10))
    assert job.status == "succeeded"
    assert time.monotonic() - started < 3
