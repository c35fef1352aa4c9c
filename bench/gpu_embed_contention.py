"""Embedding calls of many ingest workers on one accelerator: a model per process, or one shared.

Ingest workers are processes; each job makes one embedding call of ~60 texts (a LoCoMo session's
lines, their sentences, a digest). With a model per process the GPU time-slices between the
processes' contexts; with `memsvc encoder` one process holds the model and joins the workers'
calls into large batches. This measures both with --procs client processes making job-sized calls
in a closed loop for --seconds (calls/s, texts/s, call latency), and, in this process, where one
call's time goes (tokenizing, the forward pass with its copy back) and the CPU time it takes, with
eager passes and with the CUDA graphs `warm_up` captures.

    PYTHONPATH=. python3 bench/gpu_embed_contention.py [--arch-dir .whl/minilm_arch] [--procs 1 16]
                                                      [--modes own shared] [--no-cuda-graphs]
                                                      [--json PATH]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, percentile, write_json


def job_calls() -> list[list[str]]:
    """One call per LoCoMo session: its lines, each line's sentences, a digest of its first lines
    (about the texts and lengths one ingest job embeds)."""
    import re

    from bench.retrieval import LOADERS, SPLIT

    calls = []
    for name in (*SPLIT["locomo"]["tune"], *SPLIT["locomo"]["report"]):
        for batch in LOADERS["locomo"](name).batches:
            lines = [f"{m.name}: {m.content}" for m in batch.messages]
            sentences = [
                s for m in batch.messages for s in re.split(r"(?<=[.!?])\s+", m.content) if len(s) > 20
            ]
            calls.append([*lines, *sentences, " ".join(lines[:5])])
    return calls


def _client(
    mode: str,
    model: str,
    device: str,
    address: str,
    calls: list[list[str]],
    start: float,
    seconds: float,
    out: Any,
    graphs: bool,
) -> None:
    from memsvc.embedding import get_embedder
    from memsvc.shared_encoder import RemoteEmbedder

    embedder = (
        RemoteEmbedder(address)
        if mode == "shared"
        else get_embedder(model, device=device, cuda_graphs=graphs)
    )
    if warm_up := getattr(embedder, "warm_up", None):
        warm_up()  # as a worker's service does at start
    embedder.embed(calls[0])
    latencies, texts, i = [], 0, 0
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < start + seconds:
        call = calls[i % len(calls)]
        # A text differs per call (its number): the embedder's cache must not answer it.
        call = [f"{t} #{i}" for t in call]
        t0 = time.perf_counter()
        embedder.embed(call)
        latencies.append(time.perf_counter() - t0)
        texts += len(call)
        i += 1
    out.put((latencies, texts))


def contention(
    mode: str, procs: int, model: str, device: str, calls: list[list[str]], seconds: float, graphs: bool
) -> dict[str, Any]:
    server = None
    address = str(Path(tempfile.mkdtemp(prefix="memsvc-enc-")) / "encoder.sock")
    if mode == "shared":
        from memsvc.embedding import get_embedder
        from memsvc.shared_encoder import EncoderServer

        shared = get_embedder(model, device=device, cuda_graphs=graphs)
        shared.warm_up()
        server = EncoderServer(shared, address)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 20 + procs  # every client loaded and warm by then
    workers = [
        ctx.Process(
            target=_client, args=(mode, model, device, address, calls[p::procs], start, seconds, out, graphs)
        )
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    results = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    if server is not None:
        server.close()
    latencies = [x for lat, _ in results for x in lat]
    texts = sum(n for _, n in results)
    return {
        "mode": mode,
        "cuda_graphs": graphs,
        "procs": procs,
        "calls_per_s": len(latencies) / seconds,
        "texts_per_s": texts / seconds,
        "call_p50_ms": 1000 * percentile(latencies, 50),
        "call_p95_ms": 1000 * percentile(latencies, 95),
    }


def breakdown(model: str, device: str, calls: list[list[str]], graphs: bool) -> dict[str, Any]:
    """Where one call's time goes in this process: tokenizing vs the forward pass (with its copy
    back), and the process's CPU time per call (a GPU worker's bound with a model each)."""
    import torch

    from memsvc.embedding import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(model, device=device, cuda_graphs=graphs)
    embedder.warm_up()
    sync = torch.cuda.synchronize if embedder.device.startswith("cuda") else (lambda: None)
    out: dict[str, Any] = {"cuda_graphs": embedder._graphs is not None}
    for label, texts in (("one job", calls[0]), ("16 jobs", [t for c in calls[:16] for t in c])):
        embedder._embed_torch(texts)
        tokenize, total, cpu = [], [], []
        for r in range(10):
            fresh = [f"{t} #{r}" for t in texts]
            sync()
            t0 = time.perf_counter()
            list(embedder._token_batches(fresh, 0.0))
            tokenize.append(time.perf_counter() - t0)
            t0, c0 = time.perf_counter(), time.process_time()
            embedder._embed_torch(fresh)
            sync()
            total.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out[label] = {
            "texts": len(texts),
            "tokenize_ms": 1000 * percentile(tokenize, 50),
            "call_ms": 1000 * percentile(total, 50),
            "call_cpu_ms": 1000 * percentile(cpu, 50),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--arch-dir", type=Path, help="random weights of this architecture (no real weights here)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--procs", type=int, nargs="*", default=[1, 16], help="none: the breakdown only")
    parser.add_argument("--modes", nargs="+", choices=("own", "shared"), default=["own", "shared"])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--cuda-graphs", action=argparse.BooleanOptionalAction, default=True, help="for the client runs"
    )
    parser.add_argument("--json")
    args = parser.parse_args()

    from memsvc.embedding import DEFAULT_MODEL

    model = DEFAULT_MODEL
    if args.arch_dir is not None:
        from bench.serve_gpu import random_weight_model

        model = str(random_weight_model(args.arch_dir))
    calls = job_calls()
    print(f"{len(calls)} job-sized calls, {sum(map(len, calls)) / len(calls):.1f} texts each")
    split = {}
    for graphs in (False, True):
        name = "graphs" if graphs else "eager"
        split[name] = breakdown(model, args.device, calls, graphs)
        for label, row in split[name].items():
            if isinstance(row, dict):
                print(
                    f"one process, {name} (graphs captured: {split[name]['cuda_graphs']}), {label} "
                    f"({row['texts']} texts): tokenize {row['tokenize_ms']:.2f} ms, call "
                    f"{row['call_ms']:.2f} ms, CPU {row['call_cpu_ms']:.2f} ms"
                )
    runs = []
    print(f"{'mode':8} {'procs':>5} {'calls/s':>9} {'texts/s':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for procs in args.procs:
        for mode in args.modes:
            row = contention(mode, procs, model, args.device, calls, args.seconds, args.cuda_graphs)
            runs.append(row)
            print(
                f"{mode:8} {procs:5d} {row['calls_per_s']:9.1f} {row['texts_per_s']:9.0f} "
                f"{row['call_p50_ms']:8.2f} {row['call_p95_ms']:8.2f}",
                flush=True,
            )
    path = write_json(
        "gpu_embed_contention", {"machine": machine(), "breakdown": split, "runs": runs}, args.json
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
