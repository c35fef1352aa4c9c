"""Ingest throughput through the job queue, with one or several worker processes.

Each conversation is one user; each of its sessions one job, deferred to procrastinate (with the
per-user lock the API uses) and run by `memsvc worker` processes on a new embedded database, as
`memsvc serve` and extra workers run them. The workers are started and warmed up (one small job
each) before the clock starts; the clock runs from the first defer to the last job's success.

Where the time goes comes from each job's own timings (embedding, extraction, database), summed
over jobs, and the workers' job timer: with W workers of concurrency C there are W x C job slots;
"job bookkeeping and commit" is the rest of the time inside jobs (marking them running, reading
the job, the commit), "queue and other" the slot time outside any job (fetching jobs, idle slots
while a user's next job waits for its previous one).

    python bench/ingest.py [--sets locomo beam] [--half tune|report|all] [--conversations conv-26]
                           [--workers 1 2] [--concurrency 1] [--json PATH]

Several users are needed for several workers to help (one user's jobs run one at a time, in order).
On a GPU, worker processes scale and threads in one process do not (BENCHMARKS.md, "Ingest at
hardware speed", which also says how the H200 runs were made).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench._common import ROOT, machine, print_table, write_json
from bench.retrieval import LOADERS, SPLIT

PARTS = ("embedding", "extraction", "database")
SUBMIT_THREADS = 8


class _NoEmbedder:
    """The bench process only accepts jobs; the workers embed."""

    model_name = "none"
    dim = 384

    def embed(self, texts: Any) -> Any:
        if texts:
            raise RuntimeError("the bench process does not embed")
        return np.zeros((0, self.dim), dtype=np.float32)


def _workers(
    url: str, count: int, concurrency: int, logs: Path, shared_encoder: bool
) -> list[subprocess.Popen[bytes]]:
    # A worker holds at most a session per job slot and a few for the queue: small pools let many
    # workers share the embedded server's 100 connections.
    env = {
        **os.environ,
        "MEMSVC_DATABASE_URL": url,
        "MEMSVC_LOG_LEVEL": "WARNING",
        "MEMSVC_DB_POOL_SIZE": str(concurrency + 1),
        # The workers' job timer (memsvc_job_seconds) summed over processes: see _job_seconds.
        "PROMETHEUS_MULTIPROC_DIR": str(_metrics_dir(logs)),
    }
    procs = []
    if shared_encoder:
        # One `memsvc encoder` holds the model; the workers send it their texts (BENCHMARKS.md).
        address = logs / "encoder.sock"
        out = (logs / "encoder.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "memsvc.cli", "encoder", "--address", str(address)],
                env=env,
                stdout=out,
                stderr=out,
                cwd=ROOT,
            )
        )
        deadline = time.monotonic() + 300
        while not address.exists():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"memsvc encoder did not start: see {logs / 'encoder.log'}")
            time.sleep(0.1)
        env["MEMSVC_ENCODER_ADDRESS"] = str(address)
    command = [sys.executable, "-m", "memsvc.cli", "worker", "--concurrency", str(concurrency)]
    for i in range(count):
        out = (logs / f"worker-{i}.log").open("wb")
        procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=ROOT))
    return procs


def _metrics_dir(logs: Path) -> Path:
    path = logs / "metrics"
    path.mkdir(exist_ok=True)
    return path


def _job_seconds(logs: Path) -> float:
    """Seconds all workers spent inside ingest jobs so far (from marking a job running to its
    commit), read from their multiprocess metrics: with the parts a job times itself, this splits
    a job slot's time into the job's parts, its bookkeeping and commit, and the queue."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_metrics_dir(logs)))
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "memsvc_job_seconds_sum" and sample.labels.get("kind") == "ingest"
    )


def run_once(
    batches_by_user: dict[str, list[Any]], workers: int, concurrency: int, shared_encoder: bool = False
) -> dict[str, Any]:
    """Ingest every user's batches on a new database with `workers` worker processes."""
    from memsvc.cli import open_database
    from memsvc.config import Settings
    from memsvc.database import libpq_url
    from memsvc.schemas import AddRequest
    from memsvc.service import MemoryService
    from memsvc.tenants import TenantContext, get_or_create_tenant
    from memsvc.workers.queue import ProcrastinateQueue

    data_dir = Path(tempfile.mkdtemp(prefix="memsvc-bench-ingest-"))
    settings = Settings(data_dir=data_dir, search_backend="exact", db_pool_size=SUBMIT_THREADS + 2)
    database = open_database(settings)
    service = MemoryService(settings, database, embedder=_NoEmbedder())
    with database.session() as session:
        ctx = TenantContext(tenant_id=get_or_create_tenant(session, "bench"))
    url = libpq_url(database.url)
    queue = ProcrastinateQueue(service, url, worker="none")
    procs = _workers(url, workers, concurrency, data_dir, shared_encoder)
    try:
        # Warm-up: model load, first forward passes, the date parser's tables; not ingest.
        warm = []
        for i in range(workers * concurrency):
            request = AddRequest(
                user_id=f"warm-{i}",
                messages=[{"role": "user", "content": "Last Tuesday I went hiking near Lisbon with Ana."}],
            )
            warm.append(service.submit_ingest(ctx, request))
            queue.defer_ingest(warm[-1], (ctx.tenant_id, request.user_id))
        for job_id in warm:
            job = queue.wait(ctx, job_id, timeout_s=600)
            if job.status != "succeeded":
                raise SystemExit(f"warm-up job ended {job.status}: {job.error}")

        turns = sum(len(b.messages) for batches in batches_by_user.values() for b in batches)

        def submit(batch: Any) -> uuid.UUID:
            job_id = service.submit_ingest(ctx, batch)
            queue.defer_ingest(job_id, (ctx.tenant_id, batch.user_id))
            return job_id

        inside_before = _job_seconds(data_dir)
        started = time.perf_counter()
        # Round by round: every user's next session, side by side (as clients of several API
        # processes would), so that no user's sessions wait behind all of another's (the queue runs
        # the oldest runnable job first) and one user's jobs are deferred in their order.
        jobs: list[uuid.UUID] = []
        rounds = max(len(batches) for batches in batches_by_user.values())
        with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            for r in range(rounds):
                jobs += pool.map(submit, [b[r] for b in batches_by_user.values() if r < len(b)])
        seconds: dict[str, float] = defaultdict(float)
        created: dict[str, int] = defaultdict(int)
        for job_id in jobs:
            job = queue.wait(ctx, job_id, timeout_s=3600)
            if job.status != "succeeded" or job.result is None:
                raise SystemExit(f"job {job_id} ended {job.status}: {job.error}")
            for key, ms in job.result["timings_ms"].items():
                seconds[key] += ms / 1000
            for key, n in job.result["created"].items():
                created[key] += n
        wall = time.perf_counter() - started
        inside = _job_seconds(data_dir) - inside_before
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        queue.close()
        service.close()
    slots = workers * concurrency
    seconds["job bookkeeping and commit"] = max(0.0, inside - sum(seconds.values()))
    seconds["queue and other"] = max(0.0, wall * slots - inside)
    return {
        "workers": workers,
        "concurrency": concurrency,
        "users": len(batches_by_user),
        "jobs": len(jobs),
        "turns": turns,
        "wall_s": wall,
        "turns_per_s": turns / wall,
        "seconds": dict(seconds),
        "share_of_slot_time": {k: v / (wall * slots) for k, v in seconds.items()},
        "created": dict(created),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="+", choices=tuple(SPLIT), default=["locomo"])
    parser.add_argument("--half", choices=("tune", "report", "all"), default="tune")
    parser.add_argument("--conversations", nargs="*", help="names within the sets (default: the half's)")
    parser.add_argument("--workers", nargs="+", type=int, default=[1], help="worker processes, one run each")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once per worker")
    parser.add_argument("--copies", type=int, default=1, help="each conversation ingested as this many users")
    parser.add_argument(
        "--shared-encoder", action="store_true", help="workers embed through one `memsvc encoder`"
    )
    parser.add_argument("--json")
    args = parser.parse_args()

    report: dict[str, Any] = {"machine": machine(), "runs": {}, "load_before": os.getloadavg()}
    for set_name in args.sets:
        halves = ("tune", "report") if args.half == "all" else (args.half,)
        names = args.conversations or [c for h in halves for c in SPLIT[set_name][h]]
        names = [n for n in names if n in {c for h in SPLIT[set_name].values() for c in h}]
        conversations = [LOADERS[set_name](n) for n in names]
        batches = {
            f"{c.batches[0].user_id}/{k}": [
                b.model_copy(update={"user_id": f"{b.user_id}/{k}"}) for b in c.batches
            ]
            for c in conversations
            for k in range(args.copies)
        }
        words = sum(len(m.content.split()) for c in conversations for b in c.batches for m in b.messages)
        for workers in args.workers:
            load = os.getloadavg()
            run = run_once(batches, workers, args.concurrency, args.shared_encoder)
            run.update(
                conversations=names,
                copies=args.copies,
                shared_encoder=args.shared_encoder,
                words=words * args.copies,
                load_before=load,
                load_after=os.getloadavg(),
            )
            shared = "+encoder" if args.shared_encoder else ""
            report["runs"][f"{set_name}/{workers}x{args.concurrency}{shared}"] = run
            print(
                f"\n{set_name} {', '.join(names)} x {args.copies}: {workers} worker(s) x {args.concurrency}"
                f"{' (shared encoder)' if args.shared_encoder else ''}, "
                f"load {load[0]:.1f} -> {run['load_after'][0]:.1f}"
            )
            print_table(
                ["where", "job seconds", "% of slot time"],
                [
                    [part, s, 100 * run["share_of_slot_time"][part]]
                    for part, s in sorted(run["seconds"].items(), key=lambda kv: -kv[1])
                ],
            )
            print(
                f"{run['turns']} turns ({words} words) in {run['jobs']} jobs, {run['wall_s']:.2f} s: "
                f"{run['turns_per_s']:.1f} turns/s; made {run['created']}"
            )
    print(f"\nwrote {write_json('ingest', report, args.json)}")


if __name__ == "__main__":
    main()
