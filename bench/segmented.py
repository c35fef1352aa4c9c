"""Segmented top-k against the partition-filtered scan, for a batch of many users' queries.

An index of --rows rows (d = 384, fp16, rows grouped by user as `VectorIndex` keeps them, 1% dead)
over --users users; a batch of --batch queries of random users. Timed per call by the wall clock
(host planning and transfers included), median of --reps after warm-up:

* ``filtered``: `fused_topk` over every row with a partition filter and the int8 copy (what
  `VectorIndex.search` ran for a multi-user batch before the segmented top-k);
* ``segmented``: `segmented_topk` over the ranges of the users asked (tile configurations too);
* ``index.search``: `VectorIndex.search` end to end (range tables, kernel, hits), same batch.

Results are checked against each other (indices equal, scores within 1e-4).

    PYTHONPATH=. python3 bench/segmented.py [--rows 10000000] [--users 10000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from memsvc.kernels import Int8Corpus, fused_topk, segmented_topk
from memsvc.kernels.fused_topk import segmented_config, segmented_topk_triton
from memsvc.vector_index import VectorIndex

fused_topk_module = sys.modules["memsvc.kernels.fused_topk"]  # its module, not the function


def timed(fn: Any, reps: int) -> tuple[float, Any]:
    out = fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 128])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--configs", nargs="*", help="tile configurations to time (default: all)")
    parser.add_argument("--json")
    args = parser.parse_args()
    dev = torch.device("cuda")
    d, n = 384, args.rows
    rng = np.random.default_rng(0)
    counts = rng.multinomial(n, np.ones(args.users) / args.users)
    ends = np.cumsum(counts)
    starts = ends - counts
    corpus = torch.empty((n, d), dtype=torch.float16, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    for s in range(0, n, 1 << 20):
        e = min(n, s + (1 << 20))
        corpus[s:e] = torch.nn.functional.normalize(
            torch.randn(e - s, d, generator=g, device=dev), dim=1
        ).half()
    row_partition = torch.repeat_interleave(
        torch.arange(args.users, dtype=torch.int32, device=dev), torch.from_numpy(counts).to(dev)
    )
    valid = torch.rand(n, generator=g, device=dev) >= 0.01
    int8 = Int8Corpus.from_corpus(corpus)
    # the index over the same rows (ids are never read here: a range stands in for the id list)
    tenant = uuid.uuid4()
    index = VectorIndex("", d, device="cuda")
    index._corpus, index._valid, index._partition_of_row, index._int8 = corpus, valid, row_partition, int8
    index._size = n
    index._ids = range(n)  # type: ignore[assignment]
    index._partitions = {(tenant, str(u)): u for u in range(args.users)}
    index._segments = {u: [(int(starts[u]), int(ends[u]))] for u in range(args.users)}

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "rows": n,
        "users": args.users,
        "batch": args.batch,
        "runs": [],
    }

    def one_k(k: int) -> None:
        users = rng.choice(args.users, size=args.batch, replace=False)
        q = torch.nn.functional.normalize(torch.randn(args.batch, d, generator=g, device=dev), dim=1)
        qp = torch.from_numpy(users.astype(np.int32)).to(dev)
        ptr = np.arange(args.batch + 1, dtype=np.int64)
        st, en = starts[users].astype(np.int64), ends[users].astype(np.int64)
        qg = np.arange(args.batch, dtype=np.int64)

        def filtered() -> Any:
            return fused_topk(
                q, corpus, k, row_partition=row_partition, query_partition=qp, valid=valid, prescreen=int8
            )

        def segmented(cfg: Any = None, method: str = "auto") -> Any:
            if cfg is None:
                return segmented_topk(q, corpus, k, qg, ptr, st, en, valid=valid)
            return segmented_topk_triton(q, corpus, k, qg, ptr, st, en, valid, config=cfg, method=method)

        qn = q.cpu().numpy()
        parts = [int(u) for u in users]
        t_filtered, (fs, fi) = timed(filtered, max(3, args.reps // 4))
        t_seg, (ss, si) = timed(segmented, args.reps)
        t_search, hits = timed(lambda: index.search(qn, parts, k), args.reps)
        same = bool(torch.equal(fi, si)) and float((fs - ss).abs().nan_to_num(0).max()) <= 1e-4
        hit_rows = np.stack([h.rows for h in hits]) if all(len(h) == k for h in hits) else None
        same_search = hit_rows is not None and np.array_equal(hit_rows, si.cpu().numpy())
        configs = {}
        base = segmented_config(k)
        for name, (cfg, method) in {
            "running_bn64_s2": (base, "running"),
            "keys_bn32": (replace(base, block_n=32), "keys"),
            "keys_bn128": (replace(base, block_n=128), "keys"),
            "keys_bn64_w8": (replace(base, num_warps=8), "keys"),
            "keys_torch_topk": (base, "keys_topk"),
        }.items():
            if args.configs is not None and name not in args.configs:
                continue
            # keys_topk: the keys buffer reduced by a torch top-k instead of the select kernel
            select_max = fused_topk_module.SEGMENTED_SELECT_MAX_COLS
            fused_topk_module.SEGMENTED_SELECT_MAX_COLS = 0 if method == "keys_topk" else select_max
            method = method.removesuffix("_topk")
            try:
                configs[name] = timed(lambda cfg=cfg, method=method: segmented(cfg, method), args.reps)[0]
            except Exception as exc:  # a configuration that does not fit (shared memory) is reported
                configs[name] = f"{type(exc).__name__}: {str(exc)[:100]}"
            finally:
                fused_topk_module.SEGMENTED_SELECT_MAX_COLS = select_max
        rows_read = int((en - st).sum())
        run = {
            "k": k,
            "filtered_ms": t_filtered,
            "segmented_ms": t_seg,
            "speedup": t_filtered / t_seg,
            "index_search_ms": t_search,
            "same_results": same,
            "index_search_same": same_search,
            "rows_of_batch_users": rows_read,
            "segmented_GBps_of_those_rows": rows_read * d * 2 / (t_seg / 1e3) / 1e9,
            "configs_ms": configs,
        }
        report["runs"].append(run)
        print(
            f"k={k:3d}: filtered {t_filtered:8.3f} ms  segmented {t_seg:7.3f} ms  ({run['speedup']:.1f}x)  "
            f"index.search {t_search:7.3f} ms  same={same}/{same_search}  configs {configs}",
            flush=True,
        )

    for k in args.k:
        one_k(k)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
