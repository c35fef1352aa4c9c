"""Backpressure and the queue's health as readiness and /metrics read them, on the real database."""

from __future__ import annotations

import pytest

from memsvc.errors import Overloaded
from memsvc.schemas import AddRequest


def _add(user_id: str, text: str) -> AddRequest:
    return AddRequest(user_id=user_id, messages=[{"role": "user", "content": text}])


def test_a_full_backlog_refuses_adds_of_that_tenant_only(settings, database, embedder, tenant) -> None:  # type: ignore[no-untyped-def]
    from memsvc.service import MemoryService

    limited = MemoryService(
        settings.model_copy(update={"max_queued_jobs_per_tenant": 3}), database, embedder=embedder
    )
    ctx, _ = tenant
    jobs = [limited.submit_ingest(ctx, _add("u", f"note {i}")) for i in range(3)]
    with pytest.raises(Overloaded):
        limited.submit_ingest(ctx, _add("u", "one too many"))
    # Running one job frees a place.
    limited.run_ingest_job(jobs[0])
    limited.submit_ingest(ctx, _add("u", "now there is room"))


def test_queue_health_counts_open_jobs_and_their_age(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    before = service.queue_health()
    job = service.submit_ingest(ctx, _add("health", "I like tea."))
    during = service.queue_health()
    assert during.jobs_queued == before.jobs_queued + 1
    assert during.oldest_queued_s >= 0
    service.mark_job_running(job)
    assert service.queue_health().jobs_running == before.jobs_running + 1
    service.run_ingest_job(job)
    after = service.queue_health()
    assert (after.jobs_queued, after.jobs_running) == (before.jobs_queued, before.jobs_running)


def test_orphaned_jobs_are_those_the_queue_does_not_hold(service, database, tenant) -> None:  # type: ignore[no-untyped-def]
    from memsvc.database import libpq_url
    from memsvc.workers.queue import ProcrastinateQueue

    ctx, _ = tenant
    orphan = service.submit_ingest(ctx, _add("orphans", "never deferred"))
    deferred = service.submit_ingest(ctx, _add("orphans", "deferred"))
    queue = ProcrastinateQueue(service, libpq_url(database.url), worker="none")
    try:
        queue.defer_ingest(deferred)
        found = {job.id: job.kind for job in service.orphaned_jobs(older_than_s=0)}
        assert found.get(orphan) == "ingest" and deferred not in found
    finally:
        queue.close()
    service.run_ingest_job(orphan)
    assert orphan not in {job.id for job in service.orphaned_jobs(older_than_s=0)}


def test_the_queues_own_commits_do_not_wait_for_the_disk_and_keep_given_options(database) -> None:  # type: ignore[no-untyped-def]
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from memsvc.database import libpq_url
    from memsvc.workers.queue import bookkeeping_conninfo

    given = make_conninfo(libpq_url(database.url), options="-c lock_timeout=7s")
    with psycopg.connect(bookkeeping_conninfo(given)) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("7s",)
    # Everything else of the URL is kept as given.
    kept = conninfo_to_dict(bookkeeping_conninfo(given))
    assert {k: v for k, v in kept.items() if k != "options"} == {
        k: v for k, v in conninfo_to_dict(given).items() if k != "options"
    }


def test_a_commit_without_waiting_is_that_transactions_alone(database) -> None:  # type: ignore[no-untyped-def]
    """The job row of an add with wait: true and the running mark skip the disk wait; the pooled
    connection's next transaction (an ingest commit, say) must wait again."""
    from sqlalchemy import text

    from memsvc import store

    with database.session() as session:
        store.commit_without_waiting(session)
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
        backend = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    for _ in range(25):  # the pool hands that connection out again (it cycles through the idle ones)
        with database.session() as session:
            if session.execute(text("SELECT pg_backend_pid()")).scalar_one() == backend:
                assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
                return
    pytest.fail("the pool never handed the connection back")


def test_running_jobs_of_a_machine_are_of_the_attempt_their_runner_took(service, database, tenant) -> None:  # type: ignore[no-untyped-def]
    """A job retried and fetched by another worker, not yet marked by it, still names the dead
    runner: it is not that runner's job any more, and is not retried again under its new worker."""
    from sqlalchemy import text

    from memsvc.database import libpq_url
    from memsvc.workers.queue import TASKS, ProcrastinateQueue

    ctx, _ = tenant
    job = service.submit_ingest(ctx, _add("runners", "I like tea."))
    queue = ProcrastinateQueue(service, libpq_url(database.url), worker="none")
    try:
        # Due in an hour: the worker of the session's live server (an e2e test's) must not fetch it
        # before this test marks it running (it did, now and then, in CI).
        task = queue._defer_app.configure_task(
            TASKS["ingest"], queueing_lock=str(job), schedule_in={"hours": 1}
        )
        task.defer(job_id=str(job))
    finally:
        queue.close()

    def queue_job(sql: str) -> None:
        with database.session() as session:
            session.execute(text(sql), {"lock": str(job)})

    queue_job("UPDATE procrastinate_jobs SET status = 'doing' WHERE queueing_lock = :lock")
    service.mark_job_running(job, "host boot ns/4242/77", 0)
    assert [j.id for j in service.running_jobs_on("host boot ns")] == [job]
    assert service.running_jobs_on("another machine") == []
    queue_job("UPDATE procrastinate_jobs SET attempts = 1 WHERE queueing_lock = :lock")  # retried, refetched
    assert service.running_jobs_on("host boot ns") == []
    queue_job("DELETE FROM procrastinate_jobs WHERE queueing_lock = :lock")
    service.run_ingest_job(job)
