"""The Postgres job queue (procrastinate) behind ingest.

Jobs carry only our `jobs.id`; the request itself is in the `jobs` row, written before the job
is deferred, so nothing accepted is lost. Attempts retry with exponential backoff; the last
error is kept on the job (`GET /v1/jobs/{id}`). A periodic task re-defers jobs that were
accepted while the queue could not take them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy, SyncPsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued

from memsvc.schemas import JobOut
from memsvc.service import MemoryService
from memsvc.tenants import TenantContext

log = logging.getLogger(__name__)

INGEST_QUEUE = "ingest"
MAX_ATTEMPTS = 5
RETRY = RetryStrategy(max_attempts=MAX_ATTEMPTS, exponential_wait=2)
STALE_QUEUED_S = 120.0


def build_app(service: MemoryService, connector: PsycopgConnector | SyncPsycopgConnector) -> App:
    """A procrastinate app whose tasks call `service`."""
    app = App(connector=connector)

    @app.task(name="memsvc.ingest", queue=INGEST_QUEUE, retry=RETRY, pass_context=True)
    def ingest(context: JobContext, job_id: str) -> dict[str, Any]:
        memory_job = uuid.UUID(job_id)
        service.mark_job_running(memory_job)
        attempt = (context.job.attempts if context.job else 0) + 1
        try:
            outcome = service.run_ingest_job(memory_job)
        except Exception as exc:  # record every failure on the job, then let the queue retry it
            service.mark_job_failed(memory_job, f"{type(exc).__name__}: {exc}", final=attempt >= MAX_ATTEMPTS)
            raise
        return {"status": outcome.status}

    @app.periodic(cron="* * * * *", periodic_id="memsvc.recover")
    @app.task(name="memsvc.recover", queue=INGEST_QUEUE, queueing_lock="memsvc.recover")
    async def recover(timestamp: int) -> None:
        await recover_jobs(app, service)

    return app


async def recover_jobs(app: App, service: MemoryService) -> None:
    """Retry jobs whose worker died mid-job, defer jobs accepted while the queue was away, and trim
    the change feed."""
    stalled_after = service.settings.worker_stalled_after_s
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
        log.warning("retrying job %s of a worker that stopped answering", job.id)
        await app.job_manager.retry_job(job)
    for job_id in await asyncio.to_thread(service.queued_jobs, STALE_QUEUED_S):
        await asyncio.to_thread(_defer, app, job_id)
    await asyncio.to_thread(service.trim_change_feed)


def _defer(app: App, job_id: uuid.UUID) -> None:
    with contextlib.suppress(AlreadyEnqueued):
        app.configure_task("memsvc.ingest", queueing_lock=str(job_id)).defer(job_id=str(job_id))


class ProcrastinateQueue:
    """Defers ingest jobs and, in `serve`, runs an in-process worker on the server's event loop."""

    def __init__(
        self, service: MemoryService, conninfo: str, *, run_worker: bool = True, concurrency: int = 1
    ) -> None:
        self.service = service
        self.app = build_app(service, PsycopgConnector(conninfo=conninfo))
        # Deferring happens from request threads: an app of its own on a synchronous connector.
        self._defer_app = build_app(service, SyncPsycopgConnector(conninfo=conninfo))
        self._defer_app.open()
        self.run_worker = run_worker
        self.concurrency = concurrency
        self._worker: asyncio.Task[None] | None = None

    def defer_ingest(self, job_id: uuid.UUID) -> None:
        _defer(self._defer_app, job_id)

    def wait(self, ctx: TenantContext, job_id: uuid.UUID, timeout_s: float = 120.0) -> JobOut:
        """Poll the job until it succeeds or fails for good (or `timeout_s` passes)."""
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            job = self.service.job(ctx, job_id)
            if job.status == "succeeded" or (job.status == "failed") or time.monotonic() > deadline:
                return job
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def _worker_options(self) -> dict[str, Any]:
        settings = self.service.settings
        return {
            "queues": [INGEST_QUEUE],
            "concurrency": self.concurrency,
            "delete_jobs": "successful",
            "fetch_job_polling_interval": 1.0,
            "update_heartbeat_interval": settings.worker_heartbeat_s,
            "stalled_worker_timeout": settings.worker_stalled_after_s,
        }

    async def start(self) -> None:
        if not self.run_worker:
            return
        await self.app.open_async()
        await recover_jobs(self.app, self.service)
        self._worker = asyncio.create_task(
            self.app.run_worker_async(install_signal_handlers=False, **self._worker_options())
        )

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            await self.app.close_async()
        self.close()

    def close(self) -> None:
        self._defer_app.close()

    def run_forever(self) -> None:
        """`memsvc worker`: a standalone worker; run as many as you like against one database."""

        async def work() -> None:
            async with self.app.open_async():
                await recover_jobs(self.app, self.service)
                await self.app.run_worker_async(**self._worker_options())

        asyncio.run(work())
