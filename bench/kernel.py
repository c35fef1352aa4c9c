"""Benchmark of kernels.fused_topk against ``torch.topk(q @ C.T, k)`` (run from the repo root).

    PYTHONPATH=. python bench/kernel.py --n 1000000 10000000 --q 1 16 128 1024 --k 10 100 --json out.json

For every (N, Q, k) it times, with CUDA events (``triton.testing.do_bench``, median):

* ``torch``: ``torch.topk(q @ C.T, k)`` on the same fp16 inputs (unfiltered; it materialises Q×N);
* ``fused`` for each filter set (``--filters``):
  - ``none``: no filter;
  - ``pv``: a partition filter (rows spread uniformly over 4 partitions, each query sees one: 1/4 of the
    rows) plus a ``valid`` mask with 10% of rows deleted;
  - ``all``: ``pv`` plus a per-query time window (row times uniform over [0, 1e9), window = the newest
    ~50%, with per-query jitter) plus a float32 recency bias per row.

It measures the device's copy bandwidth (device-to-device copy, bytes read + written) and fp16 matmul
rate once at the start and reports each time against the bandwidth floor (corpus bytes, plus filter
bytes, over bandwidth) and the arithmetic floor (2·Q·N·d over the matmul rate), both for the measured
ceilings and for the nominal 3000 GB/s and 694 TFLOP/s.  Exactness: for the first ``--check-q``
queries the fused result is compared with the torch fallback (same semantics, fp32): ``idx_agree`` is
the fraction of equal index slots, ``bad`` counts slots whose index differs while the reference score
there is not within 1e-4 of the fused one (a real error, not a near-tie swap); for unfiltered runs
``torch_overlap`` is the index-set overlap with ``torch.topk`` on fp16 scores (fp16 rounding creates
ties, so a little under 1 is expected).

``--prescreen none int8`` (the default: both, side by side) runs the many-query rows (Q >= 64, the
threshold method) without and with an int8 copy of the corpus (``kernels.Int8Corpus``, built once per
corpus as the GPU index keeps one): the scan then reads int8 rows on int8 tensor cores and re-scores
its candidates exactly.  ``--configs`` takes a JSON list of ``KernelConfig`` overrides to sweep
instead of the default heuristic.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import sys
import time
from typing import Any

import torch

NOMINAL_GBPS = 3000.0
NOMINAL_TFLOPS = 694.0


def _bench(fn: Any, warmup: int = 25, rep: int = 100) -> float:
    """Median time in ms: CUDA events via do_bench on a GPU; a wall clock for the CPU dry run."""
    if not torch.cuda.is_available():
        import statistics

        fn()
        ts = []
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def measure_copy_gbps(dev: torch.device) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    x = torch.randn(1 << 28, device=dev, dtype=torch.float32)  # 1 GiB
    y = torch.empty_like(x)
    ms = _bench(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / (ms * 1e-3) / 1e9


def measure_mm_tflops(dev: torch.device, dtype: torch.dtype) -> float:
    """Dense matmul rate (8192³, random data) in TFLOP/s."""
    a = torch.randn(8192, 8192, device=dev, dtype=dtype)
    b = torch.randn(8192, 8192, device=dev, dtype=dtype)
    ms = _bench(lambda: a @ b)
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def make_corpus(n: int, d: int, dtype: torch.dtype, dev: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator(device=dev).manual_seed(seed)
    out = torch.empty(n, d, dtype=dtype, device=dev)
    step = 1 << 20
    for s in range(0, n, step):  # chunked: an fp32 copy of 10M×384 would need 15 GB
        e = min(n, s + step)
        out[s:e] = torch.nn.functional.normalize(torch.randn(e - s, d, device=dev, generator=g), dim=1).to(
            dtype
        )
    return out


def make_filters(kind: str, n: int, q: int, dev: torch.device, seed: int) -> dict[str, torch.Tensor]:
    if kind == "none":
        return {}
    g = torch.Generator(device=dev).manual_seed(seed)
    f: dict[str, torch.Tensor] = {
        "row_partition": torch.randint(0, 4, (n,), device=dev, generator=g, dtype=torch.int32),
        "query_partition": torch.randint(0, 4, (q,), device=dev, generator=g, dtype=torch.int32),
        "valid": torch.rand(n, device=dev, generator=g) >= 0.10,
    }
    if kind == "all":
        f["row_time"] = torch.randint(0, 1_000_000_000, (n,), device=dev, generator=g, dtype=torch.int64)
        f["time_min"] = torch.randint(
            450_000_000, 550_000_000, (q,), device=dev, generator=g, dtype=torch.int64
        )
        f["time_max"] = torch.full((q,), 1_000_000_000, device=dev, dtype=torch.int64)
        f["row_bias"] = (0.01 * torch.rand(n, device=dev, generator=g)).float()
    elif kind != "pv":
        raise ValueError(f"unknown filter set {kind!r}")
    return f


def _precompile_job(job: tuple[int, int, str, str, int, str, str | None]) -> str:
    """Worker (spawned process): compile one kernel variant by running it once on tiny inputs.

    Tiny inputs keep every specialisation of the real run (Q, N % 16 == 0, strides, flags), so the
    timed run finds the compiled kernel in triton's on-disk cache.
    """
    q_n, k, fk, ps, d, dts, cfg_json = job
    from memsvc.kernels import Int8Corpus, fused_topk
    from memsvc.kernels.fused_topk import KernelConfig, fused_topk_triton
    from memsvc.kernels.reference import check_args

    sys.modules["memsvc.kernels.fused_topk"].INT8_MIN_ROWS = 0  # the int8 kernels too, on these tiny inputs

    t0 = time.perf_counter()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: dry run of this code
    dtype = torch.float16 if dts == "fp16" else torch.bfloat16
    n = 4096
    c = torch.nn.functional.normalize(torch.randn(n, d, device=dev), dim=1).to(dtype)
    q = torch.nn.functional.normalize(torch.randn(q_n, d, device=dev), dim=1).to(dtype)
    f = make_filters(fk, n, q_n, dev, seed=1)
    pre = Int8Corpus.from_corpus(c) if ps == "int8" else None
    label = f"Q={q_n} k={k} {fk} {ps} {cfg_json or 'default'}"
    try:
        if cfg_json is None:
            fused_topk(q, c, k, **f, prescreen=pre)
        else:
            a = check_args(q, c, k, **f, prescreen=pre)
            fused_topk_triton(a, config=KernelConfig(**json.loads(cfg_json)))
    except Exception as e:  # the timed run records the error of this variant
        return f"{label}: failed: {type(e).__name__}: {str(e)[:200]}"
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return f"{label}: {time.perf_counter() - t0:.1f}s"


def precompile(jobs: list[tuple[int, int, str, str, int, str, str | None]], procs: int) -> None:
    """Compile the variants in parallel processes (triton compiles one kernel at a time per process)."""
    import concurrent.futures
    import multiprocessing

    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as ex:
        for msg in ex.map(_precompile_job, jobs):
            print(f"# compiled {msg}", flush=True)
    print(f"# precompiled {len(jobs)} variants in {time.perf_counter() - t0:.0f} s", flush=True)


def filter_bytes(f: dict[str, torch.Tensor], n: int) -> int:
    per_row = sum(
        t.element_size() for key, t in f.items() if key in ("row_partition", "valid", "row_time", "row_bias")
    )
    return per_row * n


def exactness(
    fused: tuple[torch.Tensor, torch.Tensor],
    q: torch.Tensor,
    c: torch.Tensor,
    k: int,
    f: dict[str, torch.Tensor],
    check_q: int,
) -> dict[str, float]:
    from memsvc.kernels import topk_torch

    m = min(check_q, q.shape[0])
    sub = {key: (v[:m] if key in ("query_partition", "time_min", "time_max") else v) for key, v in f.items()}
    rs, ri = topk_torch(q[:m], c, k, **sub)
    fs, fi = fused[0][:m], fused[1][:m]
    same = fi == ri
    near = (fs - rs).abs() <= 1e-4
    both_empty = (fi == -1) & (ri == -1)
    bad = int((~same & ~(near & (fi >= 0) & (ri >= 0)) & ~both_empty).sum())
    finite = torch.isfinite(rs) & torch.isfinite(fs)
    err = float((fs - rs)[finite].abs().max()) if bool(finite.any()) else 0.0
    return {"idx_agree": float(same.float().mean()), "bad": bad, "max_score_err": err, "checked_q": m}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--q", type=int, nargs="+", default=[1, 16, 128, 1024])
    ap.add_argument("--k", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    ap.add_argument("--filters", nargs="+", default=["none", "pv", "all"], choices=["none", "pv", "all"])
    ap.add_argument(
        "--prescreen", nargs="+", default=["none", "int8"], choices=["none", "int8"], help="for Q >= 64"
    )
    ap.add_argument("--configs", type=str, default=None, help="JSON list of KernelConfig overrides to sweep")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch.topk baseline")
    ap.add_argument("--check-q", type=int, default=32, help="queries checked against the torch fallback")
    ap.add_argument("--rep", type=int, default=100, help="do_bench rep (ms)")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument(
        "--precompile", type=int, default=8, help="processes compiling variants up front (0: off)"
    )
    ap.add_argument("--precompile-only", action="store_true", help="compile the variants, measure nothing")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run (with TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/kernel.py needs a CUDA GPU (or --device cpu with TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    import triton

    from memsvc.kernels import Int8Corpus, fused_topk
    from memsvc.kernels.fused_topk import THRESHOLD_MIN_QUERIES, KernelConfig, fused_topk_triton
    from memsvc.kernels.reference import check_args

    def prescreens(q_n: int) -> list[str]:  # the int8 copy only serves the threshold method
        return [p for p in args.prescreen if p == "none" or q_n >= THRESHOLD_MIN_QUERIES]

    dev = torch.device(args.device)
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    on_gpu = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if on_gpu else "cpu"
    sms = torch.cuda.get_device_properties(dev).multi_processor_count if on_gpu else 0
    gbps = measure_copy_gbps(dev) if on_gpu else NOMINAL_GBPS
    tflops = measure_mm_tflops(dev, dtype) if on_gpu else NOMINAL_TFLOPS
    print(f"# {name}, {sms} SMs; torch {torch.__version__}, triton {triton.__version__}")
    print(
        f"# measured copy {gbps:.0f} GB/s, {args.dtype} matmul {tflops:.0f} TFLOP/s "
        f"(nominal {NOMINAL_GBPS:.0f} GB/s, {NOMINAL_TFLOPS:.0f} TFLOP/s)",
        flush=True,
    )
    sweep: list[tuple[str, KernelConfig | None]] = [("default", None)]
    if args.configs:
        sweep = [
            (json.dumps(cfg, separators=(",", ":")), KernelConfig(**cfg)) for cfg in json.loads(args.configs)
        ]

    if args.precompile > 0 and (on_gpu or os.environ.get("TRITON_INTERPRET") == "1"):
        cfg_jsons = [None] if not args.configs else [json.dumps(c) for c in json.loads(args.configs)]
        jobs = [
            (q_n, k, fk, ps, args.d, args.dtype, cj)
            for q_n in args.q
            for k in args.k
            for fk in args.filters
            for ps in prescreens(q_n)
            for cj in cfg_jsons
        ]
        precompile(jobs, args.precompile)
    if args.precompile_only:
        return 0
    rows: list[dict[str, Any]] = []

    def save(compiled: list[dict[str, Any]] | None = None) -> None:
        # rewritten after every row, so a run cut short still leaves its numbers
        if not args.json:
            return
        doc = {
            "device": name,
            "sms": sms,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "copy_GBps": gbps,
            "matmul_TFLOPs": tflops,
            "nominal_GBps": NOMINAL_GBPS,
            "nominal_TFLOPs": NOMINAL_TFLOPS,
            "argv": sys.argv,
            "default_configs": {str(qq): dataclasses.asdict(_default(qq, d)) for qq in args.q},
            "compiled": compiled or [],
            "rows": rows,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)

    d = args.d
    for n in args.n:
        corpus = make_corpus(n, d, dtype, dev, seed=n)
        pre = None
        if "int8" in args.prescreen and any(q_n >= THRESHOLD_MIN_QUERIES for q_n in args.q):
            # built once and timed by the wall clock: do_bench would build it again and again
            t0 = time.perf_counter()
            pre = Int8Corpus.from_corpus(corpus)
            if on_gpu:
                torch.cuda.synchronize()
            t_pre = (time.perf_counter() - t0) * 1e3
            print(f"# N={n}: int8 copy built in {t_pre:.0f} ms, err_max {pre.err_max:.4f}", flush=True)
        for q_n in args.q:
            g = torch.Generator(device=dev).manual_seed(1000 + q_n)
            queries = torch.nn.functional.normalize(torch.randn(q_n, d, device=dev, generator=g), dim=1).to(
                dtype
            )
            for k in args.k:
                t_torch: float | None = None
                torch_top: torch.Tensor | None = None
                if not args.no_torch:

                    def base(qq: torch.Tensor = queries, cc: torch.Tensor = corpus, kk: int = k) -> Any:
                        return torch.topk(qq @ cc.T, kk)

                    try:
                        t_torch = _bench(base, rep=args.rep)
                        torch_top = base().indices
                    except torch.OutOfMemoryError:
                        t_torch = None
                    if on_gpu:
                        torch.cuda.empty_cache()
                for fk in args.filters:
                    f = make_filters(fk, n, q_n, dev, seed=7 + q_n)
                    for (cfg_label, cfg), ps in [(sw, ps) for sw in sweep for ps in prescreens(q_n)]:
                        a = check_args(queries, corpus, k, **f, prescreen=pre if ps == "int8" else None)
                        label = cfg_label if ps == "none" else f"int8 {cfg_label}"
                        row: dict[str, Any] = {
                            "N": n,
                            "Q": q_n,
                            "k": k,
                            "d": d,
                            "dtype": args.dtype,
                            "filter": fk,
                            "prescreen": ps,
                            "config": label,
                        }
                        try:
                            if cfg is None:

                                def run(a: Any = a) -> Any:  # the public entry point
                                    return fused_topk(
                                        a.queries, a.corpus, a.k, **a.filters(), prescreen=a.prescreen
                                    )
                            else:

                                def run(a: Any = a, cfg: KernelConfig = cfg) -> Any:
                                    return fused_topk_triton(a, config=cfg)

                            out = run()
                            if on_gpu:
                                torch.cuda.synchronize()
                            t = _bench(run, rep=args.rep)
                        except Exception as e:  # record and go on (e.g. a config that does not compile)
                            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                            print(f"N={n} Q={q_n} k={k} {fk} {label}: {row['error']}", flush=True)
                            rows.append(row)
                            save()
                            continue
                        bytes_ = n * d * corpus.element_size() + filter_bytes(f, n)
                        flops = 2.0 * q_n * n * d
                        row.update(
                            {
                                "fused_ms": t,
                                "torch_ms": t_torch,
                                "speedup": (t_torch / t) if t_torch else None,
                                "bw_floor_ms": bytes_ / (gbps * 1e9) * 1e3,
                                "flop_floor_ms": flops / (tflops * 1e12) * 1e3,
                                "frac_bw": bytes_ / (gbps * 1e9) / (t * 1e-3),
                                "frac_flop": flops / (tflops * 1e12) / (t * 1e-3),
                                "frac_bw_nominal": bytes_ / (NOMINAL_GBPS * 1e9) / (t * 1e-3),
                                "frac_flop_nominal": flops / (NOMINAL_TFLOPS * 1e12) / (t * 1e-3),
                            }
                        )
                        row.update(exactness(out, queries, corpus, k, f, args.check_q))
                        if fk == "none" and torch_top is not None:
                            inter = [
                                len(set(a_.tolist()) & set(b_.tolist()))
                                for a_, b_ in zip(
                                    out[1][: args.check_q].cpu(), torch_top[: args.check_q].cpu(), strict=True
                                )
                            ]
                            row["torch_overlap"] = sum(inter) / (k * len(inter))
                        rows.append(row)
                        save()
                        print(
                            f"N={n} Q={q_n} k={k} {fk:4s} {label}: fused {t:.3f} ms, torch "
                            f"{t_torch if t_torch is None else round(t_torch, 3)} ms, "
                            f"bw {row['frac_bw']:.2f}, "
                            f"flop {row['frac_flop']:.2f}, agree {row['idx_agree']:.3f} bad {row['bad']}",
                            flush=True,
                        )
        if on_gpu:
            torch.cuda.empty_cache()

    kernels_info = _compiled_info()
    hdr = (
        f"{'N':>9} {'Q':>5} {'k':>4} {'filter':6} {'fused ms':>9} {'torch ms':>9} {'speedup':>7} "
        f"{'%bw':>5} {'%flop':>5} {'%bw3000':>7} {'%fl694':>6} {'agree':>6} {'bad':>4}  config"
    )
    print("\n" + hdr)
    for r in rows:
        if "error" in r:
            print(
                f"{r['N']:>9} {r['Q']:>5} {r['k']:>4} {r['filter']:6} ERROR {r['error'][:80]}  {r['config']}"
            )
            continue
        tt = f"{r['torch_ms']:.3f}" if r["torch_ms"] else "-"
        sp = f"{r['speedup']:.2f}" if r["speedup"] else "-"
        print(
            f"{r['N']:>9} {r['Q']:>5} {r['k']:>4} {r['filter']:6} {r['fused_ms']:>9.3f} {tt:>9} {sp:>7} "
            f"{100 * r['frac_bw']:>5.0f} {100 * r['frac_flop']:>5.0f} {100 * r['frac_bw_nominal']:>7.0f} "
            f"{100 * r['frac_flop_nominal']:>6.0f} {r['idx_agree']:>6.3f} {r['bad']:>4}  {r['config']}"
        )
    if args.json:
        save(kernels_info)
        print(f"# wrote {args.json}")
    return 0


def _default(q_n: int, d: int) -> Any:
    from memsvc.kernels.fused_topk import default_config

    return default_config(q_n, 10, d)


def _compiled_info() -> list[dict[str, Any]]:
    """Registers / spills / shared memory of the compiled variants (best effort across triton versions)."""
    from memsvc.kernels.fused_topk import _fused_topk_kernel

    out: list[dict[str, Any]] = []
    try:
        caches = getattr(_fused_topk_kernel, "device_caches", {})
        for entry in caches.values():
            cache = entry[0] if isinstance(entry, tuple) else entry
            for key, kern in cache.items():
                md = kern.metadata
                out.append(
                    {
                        "key": str(key)[-300:],
                        "n_regs": getattr(kern, "n_regs", None),
                        "n_spills": getattr(kern, "n_spills", None),
                        "shared": getattr(md, "shared", None),
                        "num_warps": getattr(md, "num_warps", None),
                        "num_stages": getattr(md, "num_stages", None),
                    }
                )
    except Exception as e:
        out.append({"error": repr(e)})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
