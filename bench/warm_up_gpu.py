"""The GPU encoder's start-up (`warm_up`) and each batch shape's first call after it (H200).

`warm_up` captures a CUDA graph per padded batch shape; capturing runs each shape eagerly too, so
since c18bb2d the eager pass over every shape runs only for a model without graphs. This compares
that with the code before (every shape eagerly, then the capture), on a random-weight MiniLM, and
times each shape's first three calls right after start, with new texts each call (the embedder's
text cache would answer repeats).

    python bench/warm_up_gpu.py --arch-dir .whl/minilm_arch [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, print_table
from bench.serve_gpu import random_weight_model

SHAPES = ((1, 5), (8, 40), (32, 100), (128, 20), (256, 150), (200, 220))  # (texts, words each)
WORDS = "we talked about the lake trip the dog the new job and the painting class".split()


def warm_up_before_c18bb2d(embedder: Any) -> None:
    """`warm_up` as it was: every shape eagerly, then the capture."""
    import torch

    from memsvc.embedding import CudaGraphEncoder

    shapes = embedder.padded_shapes()
    with torch.inference_mode():
        embedder._run_shapes(shapes)
        embedder._graphs = CudaGraphEncoder.capture(embedder._model, shapes)


def main() -> None:
    import torch

    from memsvc.embedding import SentenceTransformerEmbedder

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch-dir", type=Path, required=True, help="MiniLM's files without weights")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    model = str(random_weight_model(args.arch_dir, Path(tempfile.mkdtemp()) / "minilm"))
    SentenceTransformerEmbedder(model, device="cuda").warm_up()  # CUDA, cuBLAS and graph pool set up
    ways = {
        "capture only (now)": SentenceTransformerEmbedder.warm_up,
        "eager, then capture": warm_up_before_c18bb2d,
    }
    out: dict[str, Any] = {"machine": machine(), "start_s": {w: [] for w in ways}, "first_calls_ms": {}}
    for _ in range(args.reps):
        for way, warm in ways.items():
            embedder = SentenceTransformerEmbedder(model, device="cuda")
            embedder.embed(["loaded"])
            started = time.perf_counter()
            warm(embedder)
            out["start_s"][way].append(time.perf_counter() - started)
            assert embedder._graphs is not None
    for way, warm in ways.items():
        embedder = SentenceTransformerEmbedder(model, device="cuda")
        embedder.embed(["loaded"])
        warm(embedder)
        for texts, words in SHAPES:
            times = []
            for call in range(3):
                batch = [
                    f"{way} {call} {i} " + " ".join(WORDS[j % len(WORDS)] for j in range(words))
                    for i in range(texts)
                ]
                torch.cuda.synchronize()
                started = time.perf_counter()
                embedder.embed(batch)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - started) * 1000)
            out["first_calls_ms"].setdefault(way, []).append({"texts": texts, "words": words, "ms": times})
    print_table(
        ["warm_up", "seconds (each rep)"],
        [[w, ", ".join(f"{s:.2f}" for s in v)] for w, v in out["start_s"].items()],
    )
    print_table(
        ["warm_up", "texts x words", "1st call ms", "2nd", "3rd"],
        [
            [way, f"{r['texts']} x {r['words']}", *(f"{t:.2f}" for t in r["ms"])]
            for way, rows in out["first_calls_ms"].items()
            for r in rows
        ],
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
