"""Every Prometheus metric of memsvc, and the scrape that adds the queue's state read from the database.

`serve` runs its ingest worker in a child process: with `PROMETHEUS_MULTIPROC_DIR` set (by `serve`,
before anything imports prometheus_client) both processes write their samples there and a scrape
adds them up, so one `/metrics` covers the API and its worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from memsvc.store import QueueHealth

HTTP_REQUESTS = Counter("memsvc_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram("memsvc_http_request_seconds", "HTTP request latency", ["method", "route"])
JOBS = Counter("memsvc_jobs_total", "job attempts (ingest, consolidate) by outcome", ["kind", "outcome"])
JOB_SECONDS = Histogram(
    "memsvc_job_seconds",
    "time one job attempt took in the worker",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
WORKER_RESTARTS = Counter("memsvc_worker_restarts_total", "ingest workers started again after they stopped")


class QueueCollector(Collector):
    """Gauges read at scrape time: open jobs, backlog age, live workers, database reachability,
    and the GPU index's size where there is one."""

    def __init__(self, health: Callable[[], QueueHealth], index_rows: Callable[[], int | None]) -> None:
        self._health = health
        self._index_rows = index_rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("memsvc_database_up", "1 when the database answered this scrape")
        try:
            health = self._health()
        except Exception:  # a scrape reports the outage instead of failing
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("memsvc_jobs", "ingest jobs not finished, by state", labels=["state"])
        jobs.add_metric(["queued"], health.jobs_queued)
        jobs.add_metric(["running"], health.jobs_running)
        yield jobs
        yield GaugeMetricFamily(
            "memsvc_queue_oldest_job_seconds", "age of the oldest queued job", value=health.oldest_queued_s
        )
        yield GaugeMetricFamily(
            "memsvc_job_longest_running_seconds",
            "how long the longest-running job has run",
            value=health.longest_running_s,
        )
        yield GaugeMetricFamily(
            "memsvc_workers_alive", "workers with a recent heartbeat", value=health.live_workers
        )
        rows = self._index_rows()
        if rows is not None:
            yield GaugeMetricFamily("memsvc_index_rows", "vectors in the GPU index", value=rows)


def render(queue: QueueCollector) -> bytes:
    """The text exposition of every metric: this process's (or all processes' in multiprocess
    mode) plus the queue gauges."""
    registry = CollectorRegistry()
    registry.register(queue)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(registry)


__all__ = [
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "JOBS",
    "JOB_SECONDS",
    "WORKER_RESTARTS",
    "QueueCollector",
    "render",
]
