"""Ingest throughput: one LoCoMo conversation end to end through the job queue.

Every session becomes a job (deferred to procrastinate, run by an in-process worker as `memsvc
serve` runs it); the clock runs from the first defer to the last job's success. Where the time
went comes from each job's own timings (extraction, embedding, database); the rest is queue
overhead.

    python bench/ingest.py [--conversation conv-26] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm

from bench._common import LOCOMO_DIR, fresh_service, machine, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversation", default="conv-26")
    parser.add_argument("--extractor", default="rules", choices=["rules"])
    parser.add_argument("--json")
    args = parser.parse_args()

    from memsvc.database import libpq_url
    from memsvc.importers import locomo_batches
    from memsvc.workers.queue import ProcrastinateQueue

    service, ctx = fresh_service(extractor=args.extractor)
    service.embedder.embed(["warm up"])  # model load and first-call costs are not ingest
    queue = ProcrastinateQueue(service, libpq_url(service.db.url), run_worker=True)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(queue.start(), loop).result()

    data = json.loads((LOCOMO_DIR / f"{args.conversation}.json").read_text())
    batches = list(locomo_batches(data, args.conversation))
    turns = sum(len(b.messages) for b in batches)
    started = time.perf_counter()
    job_ids = []
    for batch in batches:
        job_id = service.submit_ingest(ctx, batch)
        queue.defer_ingest(job_id)
        job_ids.append(job_id)
    timings: dict[str, float] = {}
    created: dict[str, int] = {}
    with tqdm(total=turns, unit="turn", desc="ingest", file=sys.stderr) as bar:
        for job_id, batch in zip(job_ids, batches, strict=True):
            job = queue.wait(ctx, job_id, timeout_s=600)
            if job.status != "succeeded" or job.result is None:
                raise SystemExit(f"job {job_id} ended {job.status}: {job.error}")
            for key, ms in job.result["timings_ms"].items():
                timings[key] = timings.get(key, 0.0) + ms / 1000
            for key, n in job.result["created"].items():
                created[key] = created.get(key, 0) + n
            bar.update(len(batch.messages))
    wall = time.perf_counter() - started
    asyncio.run_coroutine_threadsafe(queue.stop(), loop).result()

    timings["queue and other"] = max(0.0, wall - sum(timings.values()))
    rows = [
        [part, seconds, 100 * seconds / wall]
        for part, seconds in sorted(timings.items(), key=lambda kv: -kv[1])
    ]
    print_table(["where", "seconds", "% of wall"], rows)
    print(
        f"\n{turns} turns in {wall:.2f} s: {turns / wall:.1f} turns/s ({len(batches)} jobs); made {created}"
    )
    report = {
        "conversation": args.conversation,
        "extractor": args.extractor,
        "turns": turns,
        "jobs": len(batches),
        "wall_s": wall,
        "turns_per_s": turns / wall,
        "seconds": timings,
        "created": created,
        "embedding_threads": service.settings.embedding_threads,
        "machine": machine(),
    }
    print(f"wrote {write_json('ingest', report, args.json)}")


if __name__ == "__main__":
    main()
