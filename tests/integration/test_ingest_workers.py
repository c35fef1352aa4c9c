"""Several workers on one database: one user's ingest jobs apply one at a time and in the order they
were accepted (even when the first one fails and waits for its retry), other users' jobs run beside
them, and a job run again changes nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from memsvc.database import libpq_url
from memsvc.extraction import make_extractor
from memsvc.extraction.base import Extraction, Turn
from memsvc.models import Memory
from memsvc.schemas import AddRequest
from memsvc.service import MemoryService
from memsvc.workers.queue import ProcrastinateQueue

JOBS = 8
TURNS_PER_JOB = 3
START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


class FailsOnce:
    """The rules extractor, except that the first batch holding `trigger` fails once (a transient
    error: the job is retried after a backoff, while the user's later jobs are already queued)."""

    name = "rules"

    def __init__(self, trigger: str) -> None:
        self.rules = make_extractor("rules")
        self.trigger = trigger
        self.failed = False

    def extract(self, turns: Sequence[Turn], *, known_people: Collection[str] = ()) -> Extraction:
        if not self.failed and any(t.message_id == self.trigger for t in turns):
            self.failed = True
            raise RuntimeError("transient extraction failure")
        return self.rules.extract(turns, known_people=known_people)


def _batch(user_id: str, job: int) -> AddRequest:
    return AddRequest(
        user_id=user_id,
        session_id="s1",
        messages=[
            {
                "role": "user",
                "name": "Ann",
                "id": f"m{job}-{i}",
                "content": f"Note {job}.{i}: I planted {job * 10 + i} tulips in the garden.",
                "created_at": (START + timedelta(minutes=job * TURNS_PER_JOB + i)).isoformat(),
            }
            for i in range(TURNS_PER_JOB)
        ],
    )


def _turn_order(database, tenant_id, user_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return list(
            session.execute(
                select(Memory.message_id)
                .where(Memory.tenant_id == tenant_id, Memory.user_id == user_id, Memory.kind == "turn")
                .order_by(Memory.position)
            ).scalars()
        )


def test_two_workers_apply_one_users_jobs_in_order(settings, database, embedder, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    extractor = FailsOnce(trigger="m0-0")
    service = MemoryService(settings, database, embedder=embedder, extractor=extractor)
    url = libpq_url(database.url)
    # Everything is queued before any worker starts, so the workers' four threads all find work at
    # once: without the per-user lock they take the user's jobs in parallel, in whatever order.
    deferrer = ProcrastinateQueue(service, url, worker="none")
    ordered: list = []
    others: list = []
    for job in range(JOBS):
        ordered.append(service.submit_ingest(ctx, _batch("ann", job)))
        deferrer.defer_ingest(ordered[-1], (ctx.tenant_id, "ann"))
        others.append(service.submit_ingest(ctx, _batch(f"other-{job}", 0)))
        deferrer.defer_ingest(others[-1], (ctx.tenant_id, f"other-{job}"))
    # The same messages again, accepted last: they must find everything already there.
    again = service.submit_ingest(ctx, _batch("ann", 0))
    deferrer.defer_ingest(again, (ctx.tenant_id, "ann"))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    workers = [ProcrastinateQueue(service, url, worker="inline", concurrency=2) for _ in range(2)]
    try:
        for worker in workers:
            asyncio.run_coroutine_threadsafe(worker.start(), loop).result()
        results = [deferrer.wait(ctx, job_id, timeout_s=180) for job_id in [*ordered, again]]
        # Other users' jobs may still be running when the last of ann's is done.
        other_results = [deferrer.wait(ctx, job_id, timeout_s=180) for job_id in others]
    finally:
        for worker in workers:
            asyncio.run_coroutine_threadsafe(worker.stop(), loop).result()
        deferrer.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    assert [r.status for r in results] == ["succeeded"] * (JOBS + 1)
    assert extractor.failed  # the first job did fail once, and was retried
    # Turns are numbered in their session as jobs apply: the numbering is the order they applied in.
    expected = [f"m{job}-{i}" for job in range(JOBS) for i in range(TURNS_PER_JOB)]
    assert _turn_order(database, ctx.tenant_id, "ann") == expected
    assert results[-1].result is not None
    assert results[-1].result["duplicates"] == TURNS_PER_JOB and not results[-1].result["created"]
    with database.session() as session:
        episode = session.execute(
            select(Memory.metadata_).where(
                Memory.tenant_id == ctx.tenant_id, Memory.user_id == "ann", Memory.kind == "session"
            )
        ).scalar_one()
    assert episode["turns"] == JOBS * TURNS_PER_JOB
    # Other users' jobs ran too (each its own single turn sequence).
    assert [r.status for r in other_results] == ["succeeded"] * JOBS
    for job in range(JOBS):
        assert _turn_order(database, ctx.tenant_id, f"other-{job}") == [f"m0-{i}" for i in range(3)]
    # Running a finished job again (a retry after a lost acknowledgement) makes nothing new.
    assert service.run_ingest_job(ordered[3]).status == "succeeded"
    assert _turn_order(database, ctx.tenant_id, "ann") == expected


def test_one_users_backlog_drains_without_waiting_for_polls(settings, database, embedder, tenant) -> None:  # type: ignore[no-untyped-def]
    """A worker running two jobs at once finds nothing it may run while a user's job runs (the next
    one waits on the user's lock); when that job ends it is woken at once (migration 0008), not at its
    next poll: a backlog of one user drained at one job per second before."""
    ctx, _ = tenant
    service = MemoryService(settings, database, embedder=embedder)
    url = libpq_url(database.url)
    deferrer = ProcrastinateQueue(service, url, worker="none")
    jobs = []
    for job in range(12):
        jobs.append(service.submit_ingest(ctx, _batch("bob", job)))
        deferrer.defer_ingest(jobs[-1], (ctx.tenant_id, "bob"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    worker = ProcrastinateQueue(service, url, worker="inline", concurrency=2)
    try:
        asyncio.run_coroutine_threadsafe(worker.start(), loop).result()
        started = time.monotonic()
        results = [deferrer.wait(ctx, job_id, timeout_s=120) for job_id in jobs]
        elapsed = time.monotonic() - started
    finally:
        asyncio.run_coroutine_threadsafe(worker.stop(), loop).result()
        deferrer.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    assert [r.status for r in results] == ["succeeded"] * 12
    # Each job takes tens of milliseconds; eleven waits for the 1 s poll took more than 11 s.
    assert elapsed < 6, elapsed
