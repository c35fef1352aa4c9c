"""End-to-end search throughput on the GPU read path: query embedding + fused top-k, with
concurrent clients, dynamic batching on and off.

Each client is a thread that sends one search at a time (a random question for a random user)
to a `DenseRetriever` over a device-resident `VectorIndex` of --rows vectors spread over --users
partitions. With batching on, concurrent requests share one embedding call and one top-k launch;
off, each request makes its own. The embedding model is all-MiniLM-L6-v2's architecture and
tokenizer with random weights (the same compute; the weights cannot travel), built from
--arch-dir (the model folder without model.safetensors).

    PYTHONPATH=. python3 bench/serve_gpu.py --arch-dir .whl/minilm_arch [--rows 1000000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from memsvc.dense import DenseRetriever
from memsvc.embedding import SentenceTransformerEmbedder
from memsvc.vector_index import VectorIndex

WORDS = (
    "when did caroline go to the support group what does melanie paint how long has jon been dancing "
    "where did they travel last summer which book did she read who adopted a dog why did he quit his job "
    "what are her plans for next month did they visit the museum how many kids does she have"
).split()


def random_weight_model(arch_dir: Path) -> Path:
    """A sentence-transformers folder with the architecture and tokenizer of `arch_dir`, random weights."""
    from transformers import AutoConfig, AutoModel

    target = Path(tempfile.mkdtemp(prefix="minilm-random-"))
    shutil.copytree(arch_dir, target, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(target)).save_pretrained(target)
    return target


def question(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "?"


def run_clients(retriever: DenseRetriever, users: int, clients: int, seconds: float) -> dict[str, float]:
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def client(i: int) -> None:
        rng = random.Random(i)
        while not stop.is_set():
            t0 = time.perf_counter()
            retriever(question(rng), rng.randrange(users))
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = sorted(x for per in latencies for x in per)
    return {
        "queries": len(flat),
        "qps": len(flat) / elapsed,
        "p50_ms": 1000 * flat[len(flat) // 2] if flat else float("nan"),
        "p95_ms": 1000 * flat[int(len(flat) * 0.95)] if flat else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json")
    args = parser.parse_args()

    embedder = SentenceTransformerEmbedder(
        str(random_weight_model(args.arch_dir)), device=args.device, batch_size=256
    )
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.rows, embedder.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tenant = uuid.uuid4()
    owners = rng.integers(0, args.users, size=args.rows)
    index = VectorIndex.from_arrays(
        [uuid.UUID(int=i) for i in range(args.rows)],
        [(tenant, str(u)) for u in owners],
        vectors,
        device=args.device,
    )
    partitions = [index.partition(tenant, str(u)) for u in range(args.users)]
    partitions = [p for p in partitions if p is not None]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"

    results = []
    for batching in (False, True):
        retriever = DenseRetriever(
            embedder, index, k=args.k, batching=batching, max_wait_s=0.002, max_size=256
        )
        index.warm_up(args.k)
        retriever.run_batch([("warm up the model", partitions[0])] * 8)
        for clients in args.clients:
            r = run_clients(retriever, len(partitions), clients, args.seconds)
            results.append({"batching": batching, "clients": clients, **r})
            print(
                f"batching={'on ' if batching else 'off'} clients={clients:4d}  {r['qps']:9.1f} q/s  "
                f"p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms",
                flush=True,
            )
        retriever.close()

    by = {(r["batching"], r["clients"]): r["qps"] for r in results}
    ratios = {c: by[(True, c)] / by[(False, c)] for c in args.clients}
    print("\nbatching on / off throughput:", ", ".join(f"{c} clients {x:.1f}x" for c, x in ratios.items()))
    report = {
        "device": device_name,
        "rows": args.rows,
        "users": args.users,
        "k": args.k,
        "results": results,
        "speedup_on_over_off": ratios,
        "torch": torch.__version__,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
