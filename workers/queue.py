"""The Postgres job queue (procrastinate) behind ingest.

Jobs carry only our `jobs.id`; the request itself is in the `jobs` row, written before the job
is deferred, so nothing accepted is lost. Attempts retry with exponential backoff; the last
error is kept on the job (`GET /v1/jobs/{id}`). A request waiting on a job (`wait: true`) is
woken by the NOTIFY sent right after the job's commit (`JobListener`). A periodic task retries
the jobs of dead workers and re-defers jobs that were accepted while the queue could not take them;
every worker also retries, within a heartbeat, the jobs of processes of its machine that are gone
(`liveness`), without waiting for their heartbeat to time out.

procrastinate's worker stops for good when the database goes away; `SupervisedWorker` starts it
again, with backoff, for as long as it is meant to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import anyio.to_thread
import psycopg
from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy, SyncPsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from memsvc import logs, store
from memsvc.errors import NotReady
from memsvc.metrics import JOB_SECONDS, JOBS, WORKER_RESTARTS
from memsvc.schemas import JobOut
from memsvc.service import MemoryService
from memsvc.tenants import TenantContext
from memsvc.workers import liveness

log = logging.getLogger(__name__)

INGEST_QUEUE = "ingest"
MAX_ATTEMPTS = 5
RETRY = RetryStrategy(max_attempts=MAX_ATTEMPTS, exponential_wait=2)
# A job accepted this long ago that the queue does not hold is deferred again (its defer failed).
ORPHANED_AFTER_S = 10.0
RESTART_BACKOFF_MAX_S = 15.0
# A worker that ran this long before it stopped had started fine (a start takes a few seconds):
# it is restarted after the shortest delay, where one that keeps failing at start backs off.
RAN_FINE_AFTER_S = 15.0


# The procrastinate task that runs each kind of `jobs` row.
TASKS = {"ingest": "memsvc.ingest", "consolidate": "memsvc.consolidate"}


def _run_job(service: MemoryService, context: JobContext, kind: str, job_id: str) -> dict[str, Any]:
    """Run one attempt of a `jobs` row, recording its outcome on the row, in /metrics and the log."""
    memory_job = uuid.UUID(job_id)
    attempt = (context.job.attempts if context.job else 0) + 1
    token = logs.job_id.set(job_id)
    started = time.perf_counter()
    try:
        runner = liveness.this_process()
        queue_attempt = context.job.attempts if context.job else None
        service.mark_job_running(memory_job, None if runner is None else str(runner), queue_attempt)
        run = service.run_ingest_job if kind == "ingest" else service.run_consolidate_job
        outcome = run(memory_job)
    except NotReady:
        # The database is away: nothing was written and nothing can be recorded; the retry
        # (or, when the worker restarts, recovery of its stalled job) does the work.
        JOBS.labels(kind, "unavailable").inc()
        raise
    except Exception as exc:  # record every failure on the job, then let the queue retry it
        JOBS.labels(kind, "failed").inc()
        with contextlib.suppress(NotReady):
            service.mark_job_failed(memory_job, f"{type(exc).__name__}: {exc}", final=attempt >= MAX_ATTEMPTS)
        raise
    finally:
        elapsed = time.perf_counter() - started
        JOB_SECONDS.labels(kind).observe(elapsed)
        logs.job_id.reset(token)
    JOBS.labels(kind, outcome.status).inc()
    log.info(
        f"{kind} job %s", outcome.status, extra={"job_id": job_id, "attempt": attempt, "s": round(elapsed, 3)}
    )
    return {"status": outcome.status}


def build_app(service: MemoryService, connector: PsycopgConnector | SyncPsycopgConnector) -> App:
    """A procrastinate app whose tasks call `service`."""
    app = App(connector=connector)

    @app.task(name=TASKS["ingest"], queue=INGEST_QUEUE, retry=RETRY, pass_context=True)
    def ingest(context: JobContext, job_id: str) -> dict[str, Any]:
        return _run_job(service, context, "ingest", job_id)

    @app.periodic(cron="* * * * *", periodic_id="memsvc.recover")
    @app.task(name="memsvc.recover", queue=INGEST_QUEUE, queueing_lock="memsvc.recover")
    async def recover(timestamp: int) -> None:
        await recover_jobs(app, service)

    @app.task(name=TASKS["consolidate"], queue=INGEST_QUEUE, retry=RETRY, pass_context=True)
    def consolidate(context: JobContext, job_id: str) -> dict[str, Any]:
        """A `POST /v1/consolidate` job: a killed run is retried and ends where an uninterrupted
        one ends (memsvc.consolidation_store)."""
        return _run_job(service, context, "consolidate", job_id)

    # Nightly (MEMSVC_CONSOLIDATION_CRON) over every user; the queueing lock keeps one such task
    # queued, and each user's run lock keeps one run per user however many workers there are.
    @app.periodic(cron=service.settings.consolidation_cron, periodic_id="memsvc.consolidate_all")
    @app.task(name="memsvc.consolidate_all", queue=INGEST_QUEUE, queueing_lock="memsvc.consolidate_all")
    def consolidate_all(timestamp: int) -> None:
        report = service.consolidate(actor="consolidation:periodic")
        log.info("periodic consolidation", extra=report.totals() | {"s": round(report.seconds, 1)})

    return app


async def retry_jobs_of_gone_processes(app: App, service: MemoryService) -> None:
    """Retry the jobs that processes of this machine were running when they died (killed, out of
    memory): at once, where their heartbeat would tell only after `worker_stalled_after_s`."""
    machine = liveness.machine()
    if machine is None:
        return
    for job in await asyncio.to_thread(service.running_jobs_on, machine):
        if not liveness.is_gone(job.runner):
            continue
        log.warning("retrying job %s: its worker process (%s) is gone", job.id, job.runner)
        # Another worker of this machine may have retried it a moment ago.
        with contextlib.suppress(Exception):
            await app.job_manager.retry_job_by_id_async(job.queue_job, retry_at=datetime.now(UTC))


async def recover_jobs(app: App, service: MemoryService) -> None:
    """Retry jobs whose worker died mid-job, defer jobs accepted while the queue was away, and trim
    the change feed."""
    await retry_jobs_of_gone_processes(app, service)
    stalled_after = service.settings.worker_stalled_after_s
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
        log.warning("retrying job %s of a worker that stopped answering", job.id)
        # Another worker recovering at the same moment may have retried it first.
        with contextlib.suppress(Exception):
            await app.job_manager.retry_job(job)
    orphans = await asyncio.to_thread(service.orphaned_jobs, ORPHANED_AFTER_S)
    if orphans:
        log.warning("deferring %d accepted jobs the queue did not hold", len(orphans))
    for orphan in orphans:
        ingest = orphan.kind == "ingest" and orphan.user_id is not None
        user = (orphan.tenant_id, orphan.user_id or "") if ingest else None
        with contextlib.suppress(AlreadyEnqueued):
            await _task(app, orphan.kind, orphan.id, user).defer_async(job_id=str(orphan.id))
    await asyncio.to_thread(service.trim_change_feed)


def user_lock(tenant_id: uuid.UUID, user_id: str) -> str:
    """procrastinate's `lock` of a user's ingest jobs: jobs of one lock run one at a time, in the
    order they were deferred (a job waits while an earlier one of its lock is queued, running or
    waiting for a retry), however many workers and threads there are; other users run in parallel.
    A job whose defer failed and that recovery defers later takes its place after the user's jobs
    deferred in between."""
    return f"memsvc.ingest:{tenant_id}/{user_id}"


def _task(app: App, kind: str, job_id: uuid.UUID, user: tuple[uuid.UUID, str] | None = None) -> Any:
    # The job's id as queueing lock: a job is never queued twice at once.
    lock = user_lock(*user) if user is not None else None
    return app.configure_task(TASKS[kind], queueing_lock=str(job_id), lock=lock)


def bookkeeping_conninfo(conninfo: str) -> str:
    """`conninfo` for procrastinate's own connections, whose commits do not wait for the disk
    (`synchronous_commit` off): each step of a job (defer, fetch, finish) waited for a flush of the
    WAL, several ms each and most of the queue's share of an add. Safe because the `jobs` row, whose
    commits do wait, is the record: a defer lost in a database crash is deferred again by recovery,
    a lost fetch or finish leaves a job that is run again and finds itself done."""
    params = conninfo_to_dict(conninfo)
    params["options"] = f"{params.get('options') or ''} -c synchronous_commit=off".strip()
    return make_conninfo(**params)  # type: ignore[arg-type]


class SupervisedWorker:
    """procrastinate's worker, started again whenever it stops without being asked to (a lost
    database connection stops it for good), after a backoff that grows while it keeps failing.

    Each (re)start first recovers jobs: those of dead workers are retried and accepted jobs the
    queue does not hold are deferred, so nothing acknowledged stays behind after an outage."""

    def __init__(self, app: App, service: MemoryService, concurrency: int) -> None:
        self.app = app
        self.service = service
        self.concurrency = concurrency

    def options(self) -> dict[str, Any]:
        settings = self.service.settings
        return {
            "queues": [INGEST_QUEUE],
            "concurrency": self.concurrency,
            "delete_jobs": "successful",
            "fetch_job_polling_interval": 1.0,
            "update_heartbeat_interval": settings.worker_heartbeat_s,
            "stalled_worker_timeout": settings.worker_stalled_after_s,
            "shutdown_graceful_timeout": settings.shutdown_grace_s,
            "install_signal_handlers": False,
        }

    async def run(self) -> None:
        """Run until cancelled; a cancel lets running jobs finish (up to `shutdown_grace_s`)."""
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                async with self.app.open_async():
                    await recover_jobs(self.app, self.service)
                    watch = asyncio.create_task(self._watch_processes(), name="dead process watch")
                    try:
                        await self.app.run_worker_async(**self.options())
                    finally:
                        watch.cancel()
                log.warning("ingest worker stopped by itself")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever stopped it, the worker must come back
                log.warning("ingest worker failed: %s: %s", type(exc).__name__, exc)
            if time.monotonic() - started > RAN_FINE_AFTER_S:
                delay = 0.5  # it had been running fine: this is a new incident
            log.warning("restarting the ingest worker in %.1f s", delay)
            WORKER_RESTARTS.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF_MAX_S)

    async def _watch_processes(self) -> None:
        """Every heartbeat, retry the jobs of this machine's worker processes that died (one
        indexed query over running jobs); the minute's recovery does it for other machines."""
        while True:
            await asyncio.sleep(self.service.settings.worker_heartbeat_s)
            try:
                await retry_jobs_of_gone_processes(self.app, self.service)
            except Exception as exc:  # the database is away: the worker's own restart handles it
                log.debug("dead process watch: %s: %s", type(exc).__name__, exc)


JOB_DONE_CHANNEL = store.JOB_DONE_CHANNEL  # NOTIFY'd with the job id after a job finishes
# A waiter looks at its job this often even when no notification came (one lost, a blip).
SAFETY_POLL_S = 1.0
RECENT_JOBS = 4096  # finished jobs the listener remembers (see JobListener.watch)


def _final(job: JobOut) -> bool:
    return job.status in ("succeeded", "failed")


def _look_intervals() -> Iterator[float]:
    """Pauses between looks at a job while no notification can come: 10 ms growing to 50 ms, no
    more (the add of an agent's loop waits on this)."""
    delay = 0.01
    while True:
        yield delay
        delay = min(delay * 1.5, 0.05)


class JobListener:
    """One `LISTEN memsvc_job_done` connection per API process, waking the requests that wait on
    the job each notification names.

    It reconnects (with backoff) whenever the connection fails, and on every (re)connect wakes every
    waiter, since a job may have finished while nobody listened; `listening` is false meanwhile, so
    waiters look at their jobs often instead of trusting notifications."""

    APPLICATION_NAME = "memsvc job listener"  # how its connection shows in pg_stat_activity

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._waiters: dict[uuid.UUID, list[Callable[[], None]]] = {}
        # Jobs whose notification came lately: a waiter that registers just after its job
        # finished is woken at once (the add route registers after deferring, see `wait_async`).
        self._recent: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="job listener", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait_listening(self, timeout_s: float) -> bool:
        """True once the listener is connected (within `timeout_s`)."""
        return self._listening.wait(timeout_s)

    @contextlib.contextmanager
    def watch(self, job_id: uuid.UUID, wake: Callable[[], None]) -> Iterator[None]:
        """Call `wake` (from the listener's thread) when `job_id` finishes or the listener
        reconnects; register before the first look at the job, so a completion between that look
        and the wait is not missed."""
        with self._lock:
            self._waiters.setdefault(job_id, []).append(wake)
            finished = job_id in self._recent
        if finished:
            wake()
        try:
            yield
        finally:
            with self._lock:
                waiters = self._waiters.get(job_id, [])
                if wake in waiters:
                    waiters.remove(wake)
                if not waiters:
                    self._waiters.pop(job_id, None)

    def _wake(self, job_id: uuid.UUID | None) -> None:
        with self._lock:
            if job_id is None:
                wakes = [w for ws in self._waiters.values() for w in ws]
            else:
                wakes = list(self._waiters.get(job_id, []))
                self._recent[job_id] = None
                if len(self._recent) > RECENT_JOBS:
                    self._recent.popitem(last=False)
        for wake in wakes:
            wake()

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.conninfo, autocommit=True, connect_timeout=5, application_name=self.APPLICATION_NAME
                ) as conn:
                    conn.execute(f"LISTEN {JOB_DONE_CHANNEL}")
                    self._listening.set()
                    self._wake(None)  # jobs that finished while nobody listened
                    delay = 0.2
                    idle_since = time.monotonic()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            idle_since = time.monotonic()
                            with contextlib.suppress(ValueError):
                                self._wake(uuid.UUID(notify.payload))
                        if time.monotonic() - idle_since > 10:
                            conn.execute("SELECT 1")  # a connection dropped silently fails here
                            idle_since = time.monotonic()
            except Exception as exc:  # whatever it was, requests must not wait on a dead listener
                if not self._stop.is_set():
                    log.warning("job listener lost its connection (%s); reconnecting in %.1f s", exc, delay)
            finally:
                self._listening.clear()
                self._wake(None)  # waiters fall back to looking often until it is back
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)


WorkerMode = Literal["inline", "process", "none"]


class ProcrastinateQueue:
    """Defers ingest jobs and, in `serve`, runs the ingest worker: `inline` on the server's event
    loop, `process` in a supervised child process (`memsvc worker`), `none` when workers run
    elsewhere."""

    def __init__(
        self, service: MemoryService, conninfo: str, *, worker: WorkerMode = "inline", concurrency: int = 1
    ) -> None:
        self.service = service
        self.conninfo = conninfo
        queue_conninfo = bookkeeping_conninfo(conninfo)
        # Pools open one connection and grow on demand (psycopg_pool keeps 4 open by default):
        # every worker process holds both, and a dozen workers filled PostgreSQL's 100 connections.
        self.app = build_app(
            service, PsycopgConnector(conninfo=queue_conninfo, min_size=1, max_size=max(4, concurrency + 2))
        )
        # Deferring happens from request threads: an app of its own on a synchronous connector.
        self._defer_app = build_app(
            service, SyncPsycopgConnector(conninfo=queue_conninfo, min_size=1, max_size=4)
        )
        self._defer_app.open()
        self.worker_mode = worker
        self.concurrency = concurrency
        self._worker: asyncio.Task[None] | None = None
        self._process: WorkerProcess | None = None
        self.listener = JobListener(conninfo)

    def defer_ingest(self, job_id: uuid.UUID, user: tuple[uuid.UUID, str] | None = None) -> None:
        """Queue an accepted ingest job; `user` = (tenant id, user id) keeps that user's jobs in
        the order they were deferred (`user_lock`)."""
        self._defer("ingest", job_id, user)

    def defer_consolidate(self, job_id: uuid.UUID) -> None:
        self._defer("consolidate", job_id)

    def _defer(self, kind: str, job_id: uuid.UUID, user: tuple[uuid.UUID, str] | None = None) -> None:
        try:
            with contextlib.suppress(AlreadyEnqueued):
                _task(self._defer_app, kind, job_id, user).defer(job_id=str(job_id))
        except Exception as exc:
            # The job row is stored: recovery defers it once the queue is back.
            log.warning("could not defer job %s (%s); recovery will", job_id, exc)

    def wait(self, ctx: TenantContext, job_id: uuid.UUID, timeout_s: float = 120.0) -> JobOut:
        """Return the job once it succeeds or fails for good (or `timeout_s` passes).

        Woken by the job's completion notification (`JobListener`); a look at the row every
        `SAFETY_POLL_S` covers a notification lost, and while the listener is not connected (a
        database restart, `job_notify` off) it looks every 50 ms as it did before notifications."""
        deadline = time.monotonic() + timeout_s
        finished = threading.Event()
        looks = _look_intervals()
        with self.listener.watch(job_id, finished.set):
            while True:
                job = self.service.job(ctx, job_id)
                remaining = deadline - time.monotonic()
                if _final(job) or remaining <= 0:
                    return job
                if self.listener.listening:
                    finished.wait(min(SAFETY_POLL_S, remaining))
                    finished.clear()
                else:
                    time.sleep(min(next(looks), remaining))

    async def wait_async(self, ctx: TenantContext, job_id: uuid.UUID, timeout_s: float = 120.0) -> JobOut:
        """`wait` on the event loop, for a job deferred a moment ago: a request waiting on its job
        holds no thread (40 waiting adds would otherwise take every thread of the server's pool,
        and searches would queue behind). While the listener is connected the first look is after
        the first wake-up: a job that finished before this call is one the listener remembers."""
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(finished.set)

        deadline = time.monotonic() + timeout_s
        looks = _look_intervals()
        look = not self.listener.listening
        with self.listener.watch(job_id, wake):
            while True:
                remaining = deadline - time.monotonic()
                if look:
                    job = await anyio.to_thread.run_sync(self.service.job, ctx, job_id)
                    remaining = deadline - time.monotonic()
                    if _final(job) or remaining <= 0:
                        return job
                look = True
                if self.listener.listening:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(finished.wait(), min(SAFETY_POLL_S, remaining))
                    finished.clear()
                else:
                    await asyncio.sleep(min(next(looks), remaining))

    async def start(self) -> None:
        """Listen for finished jobs (requests wait on them) and start the worker, if it runs here."""
        if self.service.settings.job_notify:
            self.listener.start()
        if self.worker_mode == "inline":
            supervised = SupervisedWorker(self.app, self.service, self.concurrency)
            self._worker = asyncio.create_task(supervised.run(), name="ingest worker")
        elif self.worker_mode == "process":
            grace_s = self.service.settings.shutdown_grace_s
            self._process = WorkerProcess(self.conninfo, self.concurrency, grace_s)
            await self._process.start()

    async def stop(self) -> None:
        """Let running jobs finish, then stop the worker."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._process is not None:
            await self._process.stop()
        self.close()

    def close(self) -> None:
        self.listener.stop()
        self._defer_app.close()

    def run_forever(self) -> None:
        """`memsvc worker`: a standalone worker; run as many as you like against one database.
        SIGTERM or SIGINT lets running jobs finish, then exits."""

        async def work() -> None:
            task = asyncio.create_task(SupervisedWorker(self.app, self.service, self.concurrency).run())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(work())
        self.close()


class WorkerProcess:
    """`serve`'s ingest worker as a child process (`memsvc worker`), started again whenever it exits.

    A process of its own gets its share of the CPU from the operating system, which a thread of
    the API process does not get against dozens of request threads under search load."""

    def __init__(self, conninfo: str, concurrency: int, grace_s: float) -> None:
        self.conninfo = conninfo
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "memsvc.cli", "worker", "--concurrency", str(self.concurrency)]

    def _env(self) -> dict[str, str]:
        # The parent resolved the database (and started the embedded one): the child joins it.
        return {**os.environ, "MEMSVC_DATABASE_URL": self.conninfo}

    async def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="worker process supervisor")

    async def _supervise(self) -> None:
        delay = 0.5
        while not self._stopping:
            started = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(*self._command(), env=self._env())
            log.info("ingest worker process %d started", self.process.pid)
            code = await self.process.wait()
            if self._stopping:
                return
            if time.monotonic() - started > RAN_FINE_AFTER_S:
                delay = 0.5  # it had started and run: a new incident, not a crash loop
            log.warning("ingest worker process exited with %s; restarting in %.1f s", code, delay)
            WORKER_RESTARTS.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF_MAX_S)

    async def stop(self) -> None:
        """SIGTERM (running jobs finish), then SIGKILL if it outlives the grace period."""
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), self.grace_s + 5)
            except TimeoutError:
                log.warning("ingest worker process %d did not stop in time; killing it", process.pid)
                process.kill()
                await process.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
