"""Search latency through the REST API: p50/p95 at 10k memories for one user, on this machine.

Starts `memsvc serve` on a fresh embedded database, fills one user with at least --memories
memories (LoCoMo conversations, turn after turn, re-imported under new message ids until the
count is reached), then times POST /v1/search from a client process with the LoCoMo questions.

    python bench/search_latency.py [--memories 10000] [--queries 500] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from tqdm import tqdm

from bench._common import LOCOMO_DIR, machine, percentile, print_table, write_json


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEMSVC_DATA_DIR": str(data_dir), "MEMSVC_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    log = (data_dir / "server.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "memsvc.cli", "serve"], env=env, stdout=log, stderr=log)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--json")
    parser.add_argument("--data-dir", type=Path, help="keep the database here; a re-run skips the fill")
    args = parser.parse_args()

    from memsvc.importers import locomo_batches

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="memsvc-latency-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    filled = data_dir / "filled.json"
    server = start_server(data_dir, args.port)
    base = f"http://127.0.0.1:{args.port}"
    try:
        key_file = data_dir / "dev-api-key"
        deadline = time.monotonic() + 180
        while True:
            try:
                if key_file.exists() and httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit((data_dir / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key_file.read_text().strip()}"}, timeout=600
        )

        files = sorted(LOCOMO_DIR.glob("conv-*.json"))
        questions = [
            q["question"]
            for f in files
            for q in json.loads(f.read_text())["qa"]
            if q.get("category") in (1, 2, 3, 4)
        ]
        count, round_ = (json.loads(filled.read_text())["memories"], 0) if filled.exists() else (0, 0)
        with tqdm(total=args.memories, unit="memory", desc="fill", file=sys.stderr) as bar:
            while count < args.memories:
                for f in files:
                    for batch in locomo_batches(json.loads(f.read_text()), "bench-user"):
                        body = batch.model_dump(mode="json")
                        body["session_id"] = f"{f.stem}-{round_}-{body['session_id']}"
                        for m in body["messages"]:
                            m["id"] = f"{f.stem}-{round_}-{m['id']}"
                        body["wait"] = True
                        made = http.post("/v1/memories", json=body).json()["result"]["created"]
                        count += sum(made.values())
                        bar.update(sum(made.values()))
                        if count >= args.memories:
                            break
                    if count >= args.memories:
                        break
                round_ += 1
        filled.write_text(json.dumps({"memories": count}))

        for q in questions[:5]:  # warm the user's cache and the model
            http.post("/v1/search", json={"query": q, "user_id": "bench-user"})
        latencies = []
        for q in tqdm(questions[: args.queries], desc="search", unit="q", file=sys.stderr):
            t0 = time.perf_counter()
            response = http.post("/v1/search", json={"query": q, "user_id": "bench-user", "limit": 10})
            latencies.append((time.perf_counter() - t0) * 1000)
            response.raise_for_status()
    finally:
        server.terminate()
        server.wait(timeout=30)

    report = {
        "memories": count,
        "queries": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": sum(latencies) / len(latencies),
        "machine": machine(),
    }
    print_table(
        ["memories", "queries", "p50 ms", "p95 ms", "p99 ms"],
        [[count, len(latencies), report["p50_ms"], report["p95_ms"], report["p99_ms"]]],
    )
    print(f"wrote {write_json('search_latency', report, args.json)}")


if __name__ == "__main__":
    main()
