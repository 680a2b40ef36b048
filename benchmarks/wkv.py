"""Bi-WKV speed and memory: scan vs dense (CPU), triton vs scan vs the bandwidth floor (GPU).

Run by hand: ``python benchmarks/wkv.py [--device cpu|cuda] [--out FILE.json]``.

* CPU: forward and forward+backward time and peak memory of ``scan`` and ``dense`` at
  C = 576, B = 1, T = 1 024, 4 096, 16 384. Peak memory = the largest sum of live tensors the
  call creates (``segment.info`` tracker). Dense needs B·C·T² logits; where that does not fit
  in memory its peak is taken from a shape-only (``meta``) run and its time is not measured.
* GPU: B = 16, T = 1 024, C = 576 fp32 (the official setting): forward and forward+backward of
  ``triton`` (a few tile shapes), ``scan`` and ``dense``; a device-to-device copy gives the
  bandwidth; the floor is 8 fp32 tensors moved once (forward: read k, v, write y; backward:
  read k, v, ∂y, write ∂k, ∂v) at that bandwidth. The official CUDA kernel took 1.0 ms.

GPU, measured 2026-12-01 on one H200 (torch 2.11, Triton 3.6), kernel rows replayed from CUDA
graphs, copy bandwidth 4.22 TB/s, floor 0.0715 ms:

    B=16 T=1024 C=576 fp32                         fwd ms   bwd ms   fwd+bwd ms   × floor
    triton, chunks of 16, carries 32/1 (default)    0.080    0.147      0.227         3.17
    same, carries 64/2                              0.081    0.147      0.228
    chunks of 8                                     0.097    0.163      0.260
    chunks of 32 (backward output kernel spills)    0.087    0.210      0.296
    earlier the same day: halo rows, tile-scan
      carries, base e, single-exp absorbs           0.166    0.242      0.408
    tile scans in the output kernels (until then)   0.225    0.462      0.687          9.7
    bi_wkv(triton), custom op + autograd, eager     0.321      -        1.387
    scan (torch, autograd, eager)                   2.99       -        7.62
    dense                                           out of memory (B·C·T² logits)
    official CUDA kernel (issue 5)                                      1.0          14

Against the issue's own floor for the official kernel's bytes (about 0.09 ms) the default is
2.5×. Per kernel (ms, torch profiler): forward summaries 0.024, carries 0.008, outputs 0.045;
backward summaries 0.039, carries 0.013, outputs 0.087, the ∂w/∂u reduction 0.010. Under Nsight
Compute the summary kernels move 75 % of the DRAM peak, the output kernels 64–65 % (occupancy
23 % / 12 %; 106 and 211 registers per thread in Triton 3.9's sm_90 build), the carries 29–41 % (6.5 % occupancy: one warp
per 32 channels and direction). The eager bi_wkv line is host-bound (custom-op dispatch and
autograd); the training step replays it from a CUDA graph (``benchmarks/model.py``).

CPU, measured 2026-11-28 (2 shared cores, torch 2.13):

    CPU, B=1 C=576        scan fwd / fwd+bwd, peak      dense fwd / fwd+bwd, peak
    T=1 024               24 / 47 ms, 50 MiB             4.1 / 11.7 s, 4.6 / 6.9 GiB
    T=4 096               495 / 1 312 ms, 198 MiB        not run: 72 / 108 GiB (shapes)
    T=16 384              1.80 / 4.32 s, 792 MiB         not run: 1.15 / 1.73 TiB (shapes)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from segment.info import _PeakBytes
from segment.wkv import bi_wkv

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported as benchmarks.*
from _timing import best_time  # noqa: E402


def _inputs(B, T, C, device, seed=0, requires_grad=True):
    g = torch.Generator(device="cpu").manual_seed(seed)
    w = (torch.randn(C, generator=g) * 5 / T).to(device)
    u = (torch.randn(C, generator=g) / T).to(device)
    k = torch.randn(B, T, C, generator=g).to(device)
    v = torch.randn(B, T, C, generator=g).to(device)
    return [x.requires_grad_(requires_grad) for x in (w, u, k, v)]


def _peak(fn, known):
    mode = _PeakBytes(known)
    with mode:
        fn()
    return mode.peak


def cpu_table(sizes=(1024, 4096, 16384), C=576, mem_limit=8 * 2**30):
    rows = []
    for T in sizes:
        for backend in ("scan", "dense"):
            ins = _inputs(1, T, C, "cpu")

            def fwd(ins=ins, backend=backend):
                with torch.no_grad():
                    return bi_wkv(*ins, backend=backend)

            def fwd_bwd(ins=ins, backend=backend):
                y = bi_wkv(*ins, backend=backend)
                torch.autograd.grad(y, ins, torch.ones_like(y))

            predicted = 4 * C * T * T * 3  # dense: logits, softmax, einsum workspace (fp32)
            run = backend == "scan" or predicted < mem_limit
            if run:
                peak_f = _peak(fwd, ins)
                peak_fb = _peak(fwd_bwd, ins)
                t_f = best_time(fwd, 3)[0]
                t_fb = best_time(fwd_bwd, 3)[0]
            else:
                meta = [x.detach().to("meta").requires_grad_(True) for x in ins]
                peak_f = _peak(lambda m=meta: bi_wkv(*m, backend="dense").detach(), meta)
                peak_fb = _peak(
                    lambda m=meta: torch.autograd.grad(
                        y := bi_wkv(*m, backend="dense"), m, torch.ones_like(y)
                    ),
                    meta,
                )
                t_f = t_fb = None
            rows.append({"T": T, "C": C, "backend": backend, "fwd_s": t_f, "fwd_bwd_s": t_fb,
                         "peak_fwd_MiB": peak_f / 2**20, "peak_fwd_bwd_MiB": peak_fb / 2**20,
                         "measured": run})
            print(_fmt_cpu(rows[-1]), flush=True)
    return rows


def _fmt_cpu(r):
    f = "-" if r["fwd_s"] is None else f"{r['fwd_s'] * 1e3:9.1f}"
    fb = "-" if r["fwd_bwd_s"] is None else f"{r['fwd_bwd_s'] * 1e3:9.1f}"
    note = "" if r["measured"] else "  (not run: memory from shapes only)"
    return (f"T={r['T']:>6} C={r['C']} {r['backend']:>6}: fwd {f:>9} ms  fwd+bwd {fb:>9} ms  "
            f"peak fwd {r['peak_fwd_MiB']:10.1f} MiB  fwd+bwd {r['peak_fwd_bwd_MiB']:10.1f} MiB{note}")


def _bench_cuda(fn, reps=50, graph=True):
    """Median time [ms] of ``fn``: replayed from a CUDA graph (GPU time, no host launch cost), or
    launched eagerly (``graph=False``: the autograd rows, host dispatch included)."""
    import triton.testing

    if not graph:
        return triton.testing.do_bench(fn, warmup=25, rep=reps, return_mode="median")
    fn()
    return triton.testing.do_bench_cudagraph(fn, rep=reps, return_mode="median")


def _kernel_times(fn, reps=20) -> dict[str, float]:
    """Mean GPU time [ms] per call of each kernel that ``fn`` launches (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / 1e3 / reps for e in prof.key_averages() if e.device_time_total > 0}


def gpu_table(B=16, T=1024, C=576):
    import segment._wkv_triton as K

    dev = torch.device("cuda")
    res = {"B": B, "T": T, "C": C}
    n = B * T * C * 4
    src = torch.empty(256 * 2**20, device=dev, dtype=torch.uint8)
    dst = torch.empty_like(src)
    t_copy = _bench_cuda(lambda: dst.copy_(src))
    bw = 2 * src.numel() / (t_copy * 1e-3)
    res["copy_bandwidth_TBps"] = bw / 1e12
    res["floor_ms"] = 8 * n / bw * 1e3
    res["floor_ms_4p8TBps"] = 8 * n / 4.8e12 * 1e3
    w, u, k, v = _inputs(B, T, C, dev)
    g = torch.randn_like(k)
    rows = []
    # (BT, BC, warps, carry channels, carry warps). Registers per thread of the output kernels:
    # see kernel_resources.py.
    configs = [(16, 32, 1, 32, 1), (16, 32, 1, 64, 2), (16, 32, 1, 128, 4), (8, 32, 1, 32, 1), (32, 32, 1, 32, 1),
               (16, 64, 2, 32, 1)]
    for bt, bc, nw, cbc, cw in configs:
        args = [x.detach().float().contiguous() for x in (w, u, k, v)]
        label = f"triton BT={bt} BC={bc} warps={nw} carry={cbc}/{cw}"
        tiles = {"bt": bt, "bc": bc, "num_warps": nw, "carry_bc": cbc, "carry_warps": cw}
        try:
            y, lz = K.wkv_forward(*args, **tiles)
            tf = _bench_cuda(lambda a=args, t=tiles: K.wkv_forward(*a, **t))
            tb = _bench_cuda(lambda a=args, y=y, lz=lz, t=tiles: K.wkv_backward(*a, y, lz, g, **t))
            rows.append({"backend": label, "fwd_ms": tf, "bwd_ms": tb, "fwd_bwd_ms": tf + tb,
                         "kernels_ms": _kernel_times(lambda a=args, y=y, lz=lz, t=tiles: (
                             K.wkv_forward(*a, **t), K.wkv_backward(*a, y, lz, g, **t)))})
        except Exception as e:  # record and go on
            rows.append({"backend": label, "error": f"{type(e).__name__}: {str(e)[:200]}"})
        print(rows[-1], flush=True)
    for backend in ("triton", "scan", "dense"):
        def fwd(backend=backend):
            with torch.no_grad():
                return bi_wkv(w, u, k, v, backend=backend)

        def fwd_bwd(backend=backend):
            y = bi_wkv(w, u, k, v, backend=backend)
            return torch.autograd.grad(y, (w, u, k, v), g)

        try:
            tf, tfb = _bench_cuda(fwd, graph=False), _bench_cuda(fwd_bwd, graph=False)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fwd_bwd()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        except torch.OutOfMemoryError:
            tf = tfb = peak = None
        rows.append({"backend": backend + " (bi_wkv, autograd)", "fwd_ms": tf, "fwd_bwd_ms": tfb,
                     "peak_fwd_bwd_MiB": peak})
        print(rows[-1], flush=True)
    res["rows"] = rows
    tiled = [r for r in rows if r["backend"].startswith("triton BT") and "bwd_ms" in r]
    best = min(r["fwd_bwd_ms"] for r in tiled)
    res["best_triton_fwd_bwd_ms"] = best
    # forward and backward chunk their own summaries: each may take its fastest tile
    bf = min(tiled, key=lambda r: r["fwd_ms"])
    bb = min(tiled, key=lambda r: r["bwd_ms"])
    res["best_fwd"] = {"backend": bf["backend"], "ms": bf["fwd_ms"]}
    res["best_bwd"] = {"backend": bb["backend"], "ms": bb["bwd_ms"]}
    res["best_split_fwd_bwd_ms"] = bf["fwd_ms"] + bb["bwd_ms"]
    res["best_split_ratio_to_floor"] = res["best_split_fwd_bwd_ms"] / res["floor_ms"]
    res["ratio_to_floor"] = best / res["floor_ms"]
    res["ratio_to_stated_floor_0.09ms"] = best / 0.09
    res["speedup_vs_official_1.0ms"] = 1.0 / best
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--sizes", default="1024,4096,16384")
    a = ap.parse_args()
    if a.device == "cuda":
        res = {"gpu": gpu_table(), "device": torch.cuda.get_device_name()}
    else:
        res = {"cpu": cpu_table(tuple(int(s) for s in a.sizes.split(","))),
               "threads": torch.get_num_threads()}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
