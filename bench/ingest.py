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
                           [--rounds 1] [--variant LABEL=CHECKOUT[,ENV=VALUE...] ...]

Old against new in one run: `git worktree add ../old <commit>`, then `--variant old=../old new=.
--rounds 2`: each round runs every variant's workers (that checkout's code, with those environment
variables on top) in turn, so both meet the same machine; the schema and the deferring side are
this checkout's.

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


class Variant:
    """Whose code the workers run (`python -m memsvc.cli` from a checkout's root) and with what
    environment variables on top of this process's."""

    def __init__(self, spec: str) -> None:
        label, _, rest = spec.partition("=")
        checkout, *env = rest.split(",") if rest else [str(ROOT)]
        self.label, self.root = label, Path(checkout).resolve()
        self.env = dict(item.split("=", 1) for item in env)
        if not (self.root / "memsvc" / "cli.py").exists():
            raise SystemExit(f"--variant {spec}: {self.root} is not a memsvc checkout")


CURRENT = Variant(f"current={ROOT}")


class _NoEmbedder:
    """The bench process only accepts jobs; the workers embed."""

    model_name = "none"
    dim = 384

    def embed(self, texts: Any) -> Any:
        if texts:
            raise RuntimeError("the bench process does not embed")
        return np.zeros((0, self.dim), dtype=np.float32)


def _workers(
    url: str, count: int, concurrency: int, logs: Path, shared_encoder: bool, variant: Variant = CURRENT
) -> list[subprocess.Popen[bytes]]:
    # A worker holds at most a session per job slot and a few for the queue: small pools let many
    # workers share the embedded server's 100 connections.
    env = {
        **os.environ,
        **variant.env,
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
                cwd=variant.root,
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
        procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=variant.root))
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
    MultiProcessCollector(registry, path=str(_metrics_dir(logs)))  # type: ignore[no-untyped-call]
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "memsvc_job_seconds_sum" and sample.labels.get("kind") == "ingest"
    )


def _cpu_seconds(procs: list[subprocess.Popen[bytes]], data_dir: Path) -> dict[str, float]:
    """CPU seconds used so far by the workers and by the database server (its postmaster and
    backends, found by the data folder on their command line). On a machine shared with other
    work, CPU seconds per turn say what a quiet machine's wall time would."""
    import psutil

    def used(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    workers = sum(used(psutil.Process(p.pid)) for p in procs if p.poll() is None)
    database = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        if "postgres" in (process.info["name"] or "") and str(data_dir) in " ".join(
            process.info["cmdline"] or ()
        ):
            database += used(process) + sum(used(child) for child in process.children())
    return {"workers": workers, "database server": database}


def run_once(
    batches_by_user: dict[str, list[Any]],
    workers: int,
    concurrency: int,
    shared_encoder: bool = False,
    variant: Variant = CURRENT,
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
    procs = _workers(url, workers, concurrency, data_dir, shared_encoder, variant)
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
        cpu_before = _cpu_seconds(procs, data_dir)
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
        cpu = {k: v - cpu_before[k] for k, v in _cpu_seconds(procs, data_dir).items()}
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
        "variant": {"label": variant.label, "checkout": str(variant.root), "env": variant.env},
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
        "cpu_s": cpu,
        "turns_per_cpu_s": turns / max(sum(cpu.values()), 1e-9),
    }


SURNAMES = ("Adler", "Brook", "Castro", "Dunn", "Ekwueme", "Fischer", "Garcia", "Hale", "Ito", "Jansen")


def copy_of(batch: Any, k: int) -> Any:
    """Copy `k` of a batch as another user whose speakers bear a surname: the same conversation in
    other words, so the embedder's cache of recent texts cannot answer one copy from another."""
    if k == 0:
        return batch
    surname = f"{SURNAMES[k % len(SURNAMES)]}{'' if k < len(SURNAMES) else k}"
    messages = [
        m.model_copy(update={"name": f"{m.name} {surname}" if m.name else surname}) for m in batch.messages
    ]
    return batch.model_copy(update={"user_id": f"{batch.user_id}/{k}", "messages": messages})


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
    parser.add_argument("--rounds", type=int, default=1, help="runs of every variant and worker count")
    parser.add_argument(
        "--variant",
        nargs="+",
        default=[f"current={ROOT}"],
        help="LABEL=CHECKOUT[,ENV=VALUE...]: the workers' code and environment (default: this checkout)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    variants = [Variant(spec) for spec in args.variant]

    report: dict[str, Any] = {"machine": machine(), "runs": {}, "load_before": os.getloadavg()}
    for set_name in args.sets:
        halves = ("tune", "report") if args.half == "all" else (args.half,)
        names = args.conversations or [c for h in halves for c in SPLIT[set_name][h]]
        names = [n for n in names if n in {c for h in SPLIT[set_name].values() for c in h}]
        conversations = [LOADERS[set_name](n) for n in names]
        if args.copies > 1 and any(not m.name for c in conversations for b in c.batches for m in b.messages):
            # A copy names its speakers; a conversation whose speakers have no name (BEAM's user and
            # assistant) would then be extracted as another, heavier one (4x the facts, seen).
            raise SystemExit(f"--copies needs named speakers; {set_name} has messages without a name")
        batches = {
            f"{c.batches[0].user_id}/{k}": [copy_of(b, k) for b in c.batches]
            for c in conversations
            for k in range(args.copies)
        }
        words = sum(len(m.content.split()) for c in conversations for b in c.batches for m in b.messages)
        for round_, workers, variant in [
            (r, w, v) for r in range(args.rounds) for w in args.workers for v in variants
        ]:
            load = os.getloadavg()
            run = run_once(batches, workers, args.concurrency, args.shared_encoder, variant)
            run.update(
                conversations=names,
                copies=args.copies,
                shared_encoder=args.shared_encoder,
                words=words * args.copies,
                load_before=load,
                load_after=os.getloadavg(),
            )
            shared = "+encoder" if args.shared_encoder else ""
            key = f"{set_name}/{workers}x{args.concurrency}{shared}"
            if len(variants) > 1 or args.rounds > 1:
                key += f"/{variant.label}/round{round_ + 1}"
            report["runs"][key] = run
            print(
                f"\n{set_name} {', '.join(names)} x {args.copies}: {variant.label}, "
                f"{workers} worker(s) x {args.concurrency}"
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
            print(
                f"CPU s: workers {run['cpu_s']['workers']:.2f}, database server "
                f"{run['cpu_s']['database server']:.2f}: {run['turns_per_cpu_s']:.1f} turns per CPU s"
            )
    print(f"\nwrote {write_json('ingest', report, args.json)}")


if __name__ == "__main__":
    main()
