"""End-to-end throughput of the GPU read path's dense stage (query embedding + top-k + results),
served to concurrent clients in *other processes*.

The server process holds a `DenseRetriever` (dynamic batching) over a device-resident `VectorIndex`
of --rows vectors spread over --users partitions, behind a Unix socket with a small binary protocol
(asyncio: one event-loop thread, the batcher's thread; no thread per request). Client processes
(--procs of them) each keep their share of --clients requests in flight, one per virtual client, a
random question for a random user each; an answer carries the hits' rows and scores. Clients that
are threads of the server would take the GIL from it and measure themselves.

Also measured in the same process: the embedding rate alone at batch 256 (what the dense stage is
compared with), and the first traffic right after `warm_up` against the same traffic repeated (a
stall there means a kernel variant was compiled under load). The embedding model is
all-MiniLM-L6-v2's architecture and tokenizer with random weights (the same compute; the weights
cannot travel), built from --arch-dir (the model folder without model.safetensors).

    PYTHONPATH=. python3 bench/serve_gpu.py --arch-dir .whl/minilm_arch [--rows 1000000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

WORDS = (
    "when did caroline go to the support group what does melanie paint how long has jon been dancing "
    "where did they travel last summer which book did she read who adopted a dog why did he quit his job "
    "what are her plans for next month did they visit the museum how many kids does she have"
).split()

# request: u32 length of the rest, u32 request id, i32 partition (-1: none), utf-8 question
# answer: u32 length of the rest, u32 request id, u16 hits, hits x i64 row, hits x f32 score
_REQ = struct.Struct("<IIi")
_ANS = struct.Struct("<IIH")


def question(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "?"


# ----------------------------------------------------------------------------------------- server


class _Connection(asyncio.Protocol):
    """One client connection: requests go to the batcher as they are parsed; answers are encoded in
    the batcher's thread and written by the loop once per batch (one wake-up, not one per answer)."""

    def __init__(self, retriever: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.retriever = retriever
        self.loop = loop
        self.buf = b""
        self.out: list[bytes] = []
        self.lock = threading.Lock()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (length,) = struct.unpack_from("<I", buf, pos)
            if end - pos - 4 < length:
                break
            _, rid, part = _REQ.unpack_from(buf, pos)
            text = buf[pos + 12 : pos + 4 + length].decode()
            pos += 4 + length
            self.retriever.send(text, part if part >= 0 else None, partial(self._answer, rid))
        self.buf = buf[pos:]

    def _answer(self, rid: int, answer: Any, error: BaseException | None) -> None:
        if error is not None:
            raise error
        _, hits = answer
        n = len(hits)
        payload = _ANS.pack(6 + 12 * n, rid, n) + hits.rows.tobytes() + hits.scores.tobytes()
        with self.lock:
            self.out.append(payload)
            first = len(self.out) == 1
        if first:
            self.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self.lock:
            data, self.out = b"".join(self.out), []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def serve(retriever: Any, path: str) -> asyncio.AbstractEventLoop:
    """Serve on a Unix socket from an event loop in a background thread; returns that loop."""
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            loop.create_unix_server(lambda: _Connection(retriever, loop), path)  # type: ignore[arg-type]
        )
        ready.set()
        loop.run_forever()
        server.close()

    threading.Thread(target=run, name="serve-loop", daemon=True).start()
    ready.wait()
    return loop


# ----------------------------------------------------------------------------------------- client


async def _client(
    path: str, concurrency: int, users: int, start: float, seconds: float, seed: int
) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(path)
    pending: dict[int, asyncio.Future[int]] = {}
    loop = asyncio.get_running_loop()

    async def read_answers() -> None:
        while True:
            head = await reader.readexactly(4)
            (length,) = struct.unpack("<I", head)
            body = await reader.readexactly(length)
            rid, n = struct.unpack_from("<IH", body)
            fut = pending.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(n)

    reading = asyncio.ensure_future(read_answers())
    latencies: list[float] = []
    hits: list[int] = []
    next_id = [seed << 20]

    async def one(i: int) -> None:
        rng = random.Random(seed * 100_003 + i)
        await asyncio.sleep(max(0.0, start - time.time()))
        while time.time() < start + seconds:
            rid = next_id[0]
            next_id[0] += 1
            text = question(rng).encode()
            fut: asyncio.Future[int] = loop.create_future()
            pending[rid] = fut
            t0 = time.perf_counter()
            writer.write(_REQ.pack(8 + len(text), rid, rng.randrange(users)) + text)
            n = await fut
            if time.time() <= start + seconds:
                latencies.append(time.perf_counter() - t0)
                hits.append(n)

    await asyncio.gather(*(one(i) for i in range(concurrency)))
    reading.cancel()
    writer.close()
    return {"latencies_us": [round(x * 1e6) for x in latencies], "hits": int(sum(hits))}


def client_main(args: argparse.Namespace) -> None:
    result = asyncio.run(
        _client(args.client, args.concurrency, args.users, args.start, args.seconds, args.seed)
    )
    sys.stdout.write(json.dumps(result))


def run_clients(path: str, users: int, clients: int, procs: int, seconds: float) -> dict[str, float]:
    """`clients` concurrent requests from `procs` client processes for `seconds`."""
    procs = max(1, min(procs, clients))
    start = time.time() + 1.5  # all connected and ready before the clock starts
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                path,
                "--concurrency",
                str(c),
                "--users",
                str(users),
                "--start",
                repr(start),
                "--seconds",
                str(seconds),
                "--seed",
                str(i + 1),
            ],
            stdout=subprocess.PIPE,
        )
        for i, c in enumerate(shares)
    ]
    outs = [json.loads(child.communicate()[0]) for child in children]
    flat = np.sort(np.concatenate([np.array(o["latencies_us"], dtype=np.float64) for o in outs])) / 1e3
    return {
        "queries": len(flat),
        "qps": len(flat) / seconds,
        "p50_ms": float(flat[len(flat) // 2]) if len(flat) else float("nan"),
        "p95_ms": float(flat[int(len(flat) * 0.95)]) if len(flat) else float("nan"),
        "max_ms": float(flat[-1]) if len(flat) else float("nan"),
        "hits_per_query": sum(o["hits"] for o in outs) / max(len(flat), 1),
    }


# ----------------------------------------------------------------------------------------- main


def random_weight_model(arch_dir: Path, target: Path | None = None) -> Path:
    """A sentence-transformers folder with the architecture and tokenizer of `arch_dir` (a model
    folder, its weights left behind), random weights; in `target`, else a new temporary folder."""
    import torch
    from transformers import AutoConfig, AutoModel

    target = target or Path(tempfile.mkdtemp(prefix="minilm-random-"))
    weights = shutil.ignore_patterns("*.safetensors", "*.bin", "onnx")
    shutil.copytree(arch_dir, target, ignore=weights, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(target)).save_pretrained(target)
    return target


def embedding_rate(embedder: Any, batch: int, repeats: int) -> float:
    """Texts per second of the embedding call alone at this batch size (random questions)."""
    rng = random.Random(7)
    batches = [[question(rng) for _ in range(batch)] for _ in range(repeats)]
    embedder.embed(batches[0])
    t0 = time.perf_counter()
    for texts in batches:
        embedder.embed(texts)
    return batch * repeats / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch-dir", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--procs", type=int, default=8, help="client processes")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--embed-repeats", type=int, default=40)
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json")
    # client process mode (internal)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    if args.arch_dir is None:
        parser.error("--arch-dir is required")

    import torch

    from memsvc.dense import DenseRetriever
    from memsvc.embedding import SentenceTransformerEmbedder
    from memsvc.vector_index import VectorIndex

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    embedder = SentenceTransformerEmbedder(
        str(random_weight_model(args.arch_dir)), device=device, batch_size=256, cuda_graphs=args.cuda_graphs
    )
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.rows, embedder.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tenant = uuid.uuid4()
    owners = rng.integers(0, args.users, size=args.rows)
    t0 = time.perf_counter()
    index = VectorIndex.from_arrays(
        [uuid.UUID(int=i) for i in range(args.rows)],
        [(tenant, str(u)) for u in owners],
        vectors,
        device=device,
    )
    print(f"index of {args.rows} rows built in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    index.warm_up(args.k)
    embedder.warm_up()  # as the service does at start: every padded batch shape once
    warm_s = time.perf_counter() - t0
    print(f"warm_up(k={args.k}) {warm_s:.1f} s", flush=True)
    rate = embedding_rate(embedder, 256, args.embed_repeats)
    print(f"embedding alone at batch 256: {rate:,.0f} texts/s", flush=True)

    users = len(index._partitions)
    results = []
    retriever = DenseRetriever(
        embedder, index, k=args.k, batching=True, max_wait_s=args.max_wait_ms / 1e3, max_size=256
    )
    path = os.path.join(tempfile.mkdtemp(prefix="serve-gpu-"), "sock")
    serve(retriever, path)
    # The first traffic right after warm_up, then the same again (steady state), then the others.
    plan = [("first", max(args.clients)), ("repeat", max(args.clients))] + [
        ("steady", c) for c in args.clients
    ]
    for label, clients in plan:
        batches0, items0 = retriever._batcher.batches, retriever._batcher.items
        r = run_clients(path, users, clients, args.procs, args.seconds)
        batches = retriever._batcher.batches - batches0
        r.update(
            label=label, clients=clients, mean_batch=(retriever._batcher.items - items0) / max(batches, 1)
        )
        r["of_embedding_rate"] = r["qps"] / rate
        results.append(r)
        print(
            f"{label:7s} clients={clients:4d}  {r['qps']:9.1f} q/s "
            f"({100 * r['of_embedding_rate']:5.1f}% of the embedding rate)  p50 {r['p50_ms']:7.2f} ms  "
            f"p95 {r['p95_ms']:7.2f} ms  max {r['max_ms']:8.1f} ms  mean batch {r['mean_batch']:.0f}",
            flush=True,
        )
    retriever.close()
    report = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "rows": args.rows,
        "users": args.users,
        "k": args.k,
        "procs": args.procs,
        "warm_up_s": warm_s,
        "cuda_graphs": embedder._graphs is not None,
        "embedding_texts_per_s_batch256": rate,
        "results": results,
        "torch": torch.__version__,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
