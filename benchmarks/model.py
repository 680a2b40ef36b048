"""RWKV-UNet training and inference throughput (img/s), each step of the speed-up measured.

Run by hand: ``python benchmarks/model.py [--device cuda|cpu] [--variants ...] [--steps ...]``.

GPU setting (the official anchor, one H200, 256×256, batch 16, AdamW, 2 classes, CE loss):
official training 128 / 151 / 212 img/s fp32, 149 / 186 / 251 img/s bf16 autocast, inference
(bf16) 596 / 776 / 1 089 img/s for B / S / T. Configurations: triton WKV, channels_last, depthwise
convs by cuDNN (``dwconv=cudnn``) or by the Triton kernels (the default); eager, or the whole
step (forward, backward, AdamW with ``capturable=True``) captured once in a CUDA graph and
replayed (``cudagraph``); ``--compile`` adds torch.compile runs. ``--configs`` filters by label.

Measured 2026-12-01 on one H200 (torch 2.11, Triton 3.6), every step in a CUDA graph, img/s,
official in brackets. Latest kernels (token-loop Bi-WKV, looped depthwise taps), one run of all
three variants; T again after the last WKV change (573):

    config (bf16)                                               T              S              B
    train cudagraph, dwconv=auto, fused AdamW                 577 (251)      430 (186)      327 (149)
    infer cudagraph, dwconv=auto                             1960 (1089)    1467 (776)     1122 (596)

Training bf16 over official: T 2.30×, S 2.31×, B 2.19×; inference T 1.80×, S 1.89×, B 1.88×.

Earlier the same day, previous kernels (tile-scan Bi-WKV, unrolled depthwise taps); one run for
T and B, S from two runs (marked *):

    config (bf16 unless fp32)                                   T              S              B
    train cudagraph, dwconv=cudnn (all cuDNN, baseline)       372            282*           222
    train cudagraph, Triton dwconv, fused AdamW               517            384*           285
    train cudagraph, dwconv=auto, fused AdamW                 553 (251)      406* (186)     306 (149)
    train fp32 cudagraph, dwconv=auto, fused AdamW            422 (212)       -             193 (128)
    infer cudagraph, dwconv=auto                             1864 (1089)      -            1047 (596)

Training bf16 over the all-cuDNN graph of the same run: T 1.49×, B 1.38×. fp32 over official:
T 1.99×, B 1.51×. ``dwconv=auto`` runs the 9×9 decoder convs through the Triton kernels and the 5×5
encoder convs through cuDNN, each the faster there (``benchmarks/dwconv.py``); fused AdamW is one
kernel per step instead of the foreach passes. The ∂w kernel reads ∂y once per kernel row (3.56
ms of a T step under the profiler, 4.6 ms before).

2026-11-28 (an earlier kernel set, foreach AdamW): cudagraph + Triton dwconv T 482, S 356,
B 260; cudagraph + cuDNN 432 / 326 / 250. Eager steps on that host were host-bound (T with cuDNN
310 against 410 in the first session; GPU time of a T step 32.7 ms, the eager step 50–70 ms).
First session, eager on a faster host, dwconv=cudnn: T 410, S 222, B 235.
torch.compile: not timed with the custom ops. A GPU run showed Dynamo tracing the import in the
Triton-availability check (a graph break at every fused op); the check is now a trace-time
constant, and the GPU test of a fullgraph compile through both custom ops passes.
Profile of one eager T step (``--profile rwkv_unet_t``, bf16, channels_last, Triton dwconv, CUDA
time under the profiler): 31.6 ms, of which ∂w 3.56 ms, ∂x 2.52 ms, forward 1.48 ms; BatchNorm
~4.1 ms in four kernels, LayerNorm ~2.6 ms, bilinear resizes ~1.5 ms, many unfused elementwise
kernels (casts, activations) ~5 ms. B: 58.2 ms, ∂w 6.97, ∂x 4.10, forward 2.78 ms.
CPU (2 shared cores): T at 128², batch 4, fp32 scan: 0.88 img/s (channels_last 0.66).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from segment.model import create_model

OFFICIAL = {  # img/s on one H200 (issue 5)
    "rwkv_unet": {"train_fp32": 128, "train_bf16": 149, "infer_bf16": 596},
    "rwkv_unet_s": {"train_fp32": 151, "train_bf16": 186, "infer_bf16": 776},
    "rwkv_unet_t": {"train_fp32": 212, "train_bf16": 251, "infer_bf16": 1089},
}


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def throughput(name, *, dev, size=256, batch=16, wkv="auto", dwconv="auto", amp=True, channels_last=False,
               compile_=False, compile_mode=None, train=True, warmup=5, steps=20, classes=2, graph=False, fused=False):
    """Images per second of ``steps`` training (or inference) steps after ``warmup``.

    ``graph``: capture the whole step (forward, backward, AdamW) in one CUDA graph after the
    warm-up and replay it; removes the per-kernel launch cost of the host. With ``compile_`` the
    compiled step is captured (inductor's kernels, fused norms and activations, in one graph).
    ``fused``: AdamW's single-kernel CUDA implementation instead of the default foreach one.
    """
    torch.manual_seed(0)
    model = create_model(name, num_classes=classes, wkv=wkv, dwconv=dwconv).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, classes, (batch, size, size), device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, capturable=graph,
                            fused=fused and dev.type == "cuda")
    fn = torch.compile(model, mode=compile_mode) if compile_ else model

    def step(zero=True):
        if train:
            if zero:
                opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=not graph):
                loss = F.cross_entropy(fn(x), y)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp,
                                                 cache_enabled=not graph):
                fn(x)

    model.train(train)
    t0 = time.perf_counter()
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            step(zero=False)
        g.replay()
        step = g.replay  # noqa: F811 (the captured step)
    else:
        for _ in range(warmup):
            step()
    _sync(dev)
    t_warm = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    return {"img_s": batch * steps / dt, "step_ms": dt / steps * 1e3, "warmup_s": t_warm, "peak_GiB": peak}


def gpu(variants, steps, compile_variants, out=None, configs=()):
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    rows = []

    def run(name, label, **kw):
        if configs and not any(c in label for c in configs):
            return None
        kw.setdefault("steps", steps)
        try:
            r = throughput(name, dev=dev, **kw)
        except Exception as e:  # a failed configuration is recorded, the others still run
            r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        r.update({"model": name, "config": label})
        rows.append(r)
        print(json.dumps(r), flush=True)
        if out:
            with open(out, "w") as f:
                json.dump(rows, f, indent=1)
        torch.cuda.empty_cache()
        return r

    for name in variants:  # eager steps first, so that every variant is measured
        run(name, "train bf16 triton channels_last dwconv=cudnn", wkv="triton", dwconv="torch",
            channels_last=True)
        run(name, "train bf16 triton channels_last", wkv="triton", dwconv="triton", channels_last=True)
        run(name, "train bf16 triton channels_last cudagraph dwconv=cudnn", wkv="triton", dwconv="torch",
            channels_last=True, graph=True)
        run(name, "train bf16 triton channels_last cudagraph", wkv="triton", dwconv="triton",
            channels_last=True, graph=True)
        run(name, "train bf16 triton channels_last cudagraph fused-adamw", wkv="triton", dwconv="triton",
            channels_last=True, graph=True, fused=True)
        run(name, "train bf16 triton channels_last cudagraph fused-adamw dwconv=auto", wkv="triton",
            dwconv="auto", channels_last=True, graph=True, fused=True)
        run(name, "train fp32 triton channels_last cudagraph fused-adamw dwconv=auto", wkv="triton",
            dwconv="auto", channels_last=True, amp=False, graph=True, fused=True)
        run(name, "infer bf16 triton channels_last cudagraph dwconv=auto", wkv="triton", dwconv="auto",
            channels_last=True, train=False, steps=steps * 2, graph=True)
    for name in variants:
        if name not in compile_variants:
            continue
        run(name, "train bf16 triton channels_last compile cudagraph fused-adamw dwconv=auto", wkv="triton",
            dwconv="auto", channels_last=True, compile_=True, graph=True, fused=True, warmup=4)
        run(name, "infer bf16 triton channels_last compile cudagraph dwconv=auto", wkv="triton",
            dwconv="auto", channels_last=True, train=False, compile_=True, graph=True, warmup=4,
            steps=steps * 2)
    return rows


def summary(rows):
    out = []
    for name, off in OFFICIAL.items():
        mine = [r for r in rows if r["model"] == name and "img_s" in r]
        if not mine:
            continue
        for kind, key in (("train bf16", "train_bf16"), ("train fp32", "train_fp32"), ("infer bf16", "infer_bf16")):
            cands = [r for r in mine if r["config"].startswith(kind)]
            if cands:
                best = max(cands, key=lambda r: r["img_s"])
                out.append(f"{name:12s} {kind}: best {best['img_s']:8.1f} img/s ({best['config']}), "
                           f"official {off[key]}, ratio {best['img_s'] / off[key]:.2f}")
    return out


def profile(name, dev, rows=30):
    """Top kernels of one bf16 channels_last training step (triton WKV) after three warm-up steps."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, wkv="triton").to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 256, 256, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (16, 256, 256), device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60))


def cpu(steps):
    dev = torch.device("cpu")
    rows = []
    for batch in (4,):
        r = throughput("rwkv_unet_t", dev=dev, size=128, batch=batch, wkv="scan", amp=False,
                       warmup=1, steps=steps)
        r.update({"model": "rwkv_unet_t", "config": f"train fp32 scan 128x128 batch {batch}",
                  "threads": torch.get_num_threads()})
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--variants", default="rwkv_unet_t,rwkv_unet_s,rwkv_unet")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile", default="", help="comma list of variants to also run compiled")
    ap.add_argument("--out", default=None)
    ap.add_argument("--configs", default="", help="comma list: run only configurations whose label contains one")
    ap.add_argument("--profile", default=None, help="print the top kernels of one step of this variant")
    a = ap.parse_args()
    if a.profile:
        profile(a.profile, torch.device(a.device))
        return
    if a.device == "cuda":
        rows = gpu(a.variants.split(","), a.steps, set(a.compile.split(",")), a.out,
                   tuple(c for c in a.configs.split(",") if c))
        for line in summary(rows):
            print(line)
    else:
        rows = cpu(a.steps)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
