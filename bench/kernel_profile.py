"""Where the time of one threshold-method call goes: GPU time per kernel under filter variants.

For each (N, Q) and filter variant it times ``fused_topk_triton`` (median of CUDA events, as in
``bench/kernel.py``) and profiles a few calls with ``torch.profiler``: the sample (the running
kernel over every 16th tile), the scan, the re-scoring and everything else (torch ops, the small
kernels).  The difference between the median and the sum of kernel times is GPU idle time, mostly
the host preparing launches.  With ``--baseline FILE`` (e.g. ``git show REV:kernels/fused_topk.py >
/tmp/base.py``) every row also runs that copy of the kernels, side by side in the same process,
and checks that both return the same indices.

    PYTHONPATH=. python3 bench/kernel_profile.py --nq 10000000:128 10000000:1024 --kinds none pv all

Variants: ``none``; ``v`` (validity), ``b`` (bias), ``t`` (time window), ``pv`` (partition +
validity), ``all`` (pv + time + bias) as in ``bench/kernel.py``; ``pv64`` (64 partitions).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import sys
from types import ModuleType

import torch

from bench.kernel import make_corpus, make_filters

_KEEP = {
    "none": [],
    "v": ["valid"],
    "b": ["row_bias"],
    "t": ["row_time", "time_min", "time_max"],
    "pv": ["row_partition", "query_partition", "valid"],
    "pv64": ["row_partition", "query_partition", "valid"],
    "all": ["row_partition", "query_partition", "valid", "row_time", "time_min", "time_max", "row_bias"],
}


def variant(kind: str, n: int, q: int, dev: torch.device, seed: int) -> dict[str, torch.Tensor]:
    f = {key: v for key, v in make_filters("all", n, q, dev, seed).items() if key in _KEEP[kind]}
    if kind == "pv64":
        g = torch.Generator(device=dev).manual_seed(seed + 1)
        f["row_partition"] = torch.randint(0, 64, (n,), device=dev, generator=g, dtype=torch.int32)
        f["query_partition"] = torch.randint(0, 64, (q,), device=dev, generator=g, dtype=torch.int32)
    return f


def load_baseline(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_fused_topk", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def kernel_times(fn, calls: int = 5) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """GPU ms per call, by kernel name."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    out: dict[str, float] = {}
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0.0)
        if t:
            out[e.key] = out.get(e.key, 0.0) + t / calls / 1000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nq", nargs="+", default=["10000000:128", "10000000:1024"], help="N:Q pairs")
    ap.add_argument("--kinds", nargs="+", default=["none", "pv", "all"], choices=sorted(_KEEP))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--baseline", default=None, help="another copy of kernels/fused_topk.py to compare")
    ap.add_argument("--rep", type=int, default=300, help="do_bench rep (ms)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/kernel_profile.py needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton.testing

    from memsvc.kernels import Int8Corpus
    from memsvc.kernels.reference import check_args

    current = sys.modules["memsvc.kernels.fused_topk"]
    impls = [("current", current)] + ([("baseline", load_baseline(args.baseline))] if args.baseline else [])
    dev = torch.device("cuda")
    rows = []
    print(f"# {torch.cuda.get_device_name(dev)}; k={args.k}; ms per call (kernels: GPU time per call)")
    head = ("N", "Q", "filter", "impl", "total", "scan", "sample", "rescore", "other")
    print("{:>9} {:>5} {:6} {:8} {:>7} {:>6} {:>6} {:>7} {:>6}".format(*head))
    for nq in args.nq:
        n, q_n = (int(x) for x in nq.split(":"))
        c = make_corpus(n, 384, torch.float16, dev, 0)
        pre = Int8Corpus.from_corpus(c) if n >= current.INT8_MIN_ROWS else None
        g = torch.Generator(device=dev).manual_seed(5)
        q = torch.nn.functional.normalize(torch.randn(q_n, 384, device=dev, generator=g), dim=1).half()
        for kind in args.kinds:
            a = check_args(q, c, args.k, **variant(kind, n, q_n, dev, 3), prescreen=pre)
            first = None
            for label, mod in impls:
                cfg = mod.default_config(q_n, args.k, 384)

                def call(mod=mod, cfg=cfg, a=a):  # type: ignore[no-untyped-def]
                    return mod.fused_topk_triton(a, config=cfg)

                res = call()
                same = None if first is None else bool((res[1] == first[1]).all())
                first = first or res
                ms = float(triton.testing.do_bench(call, warmup=50, rep=args.rep, return_mode="median"))
                kt = kernel_times(call)
                scan = sum(v for key, v in kt.items() if "scan" in key)
                sample = sum(v for key, v in kt.items() if "_fused_topk_kernel" in key)
                rescore = sum(v for key, v in kt.items() if "rescore" in key)
                other = sum(kt.values()) - scan - sample - rescore
                row = dict(N=n, Q=q_n, k=args.k, filter=kind, impl=label, ms=ms, scan=scan, sample=sample)
                row.update(rescore=rescore, other=other, same_indices_as_current=same, kernels=kt)
                rows.append(row)
                print(
                    f"{n:>9} {q_n:>5} {kind:6} {label:8} {ms:7.3f} {scan:6.3f} {sample:6.3f} {rescore:7.3f} "
                    f"{other:6.3f}" + ("" if same is None else f"  same={same}"),
                    flush=True,
                )
    if args.json:
        meta = dict(
            device=torch.cuda.get_device_name(dev), date=_dt.datetime.now(_dt.UTC).isoformat(), argv=sys.argv
        )
        with open(args.json, "w") as fh:
            json.dump(dict(meta, rows=rows), fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
