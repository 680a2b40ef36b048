"""RWKV-UNet training and inference throughput (img/s), each step of the speed-up measured.

Run by hand: ``python benchmarks/model.py [--device cuda|cpu] [--variants ...] [--steps ...]``.

GPU setting (the official anchor, one H200, 256×256, batch 16, AdamW, 2 classes, CE loss):
official training 128 / 151 / 212 img/s fp32, 149 / 186 / 251 img/s bf16 autocast, inference
(bf16) 596 / 776 / 1 089 img/s for B / S / T. Configurations: triton WKV, channels_last, depthwise
convs by cuDNN (``dwconv=cudnn``) or by the Triton kernels (the default); eager, or the whole
step (forward, backward, AdamW with ``capturable=True``) captured once in a CUDA graph and
replayed (``cudagraph``); ``--compile`` adds torch.compile runs. ``--configs`` filters by label.

Measured 2026-11-28 (second session) on one H200 (torch 2.11, Triton 3.6), img/s, official in
brackets. The lent host was slower than in the first session (eager T with cuDNN 310 against
410), so eager steps were host-bound: the GPU time of a T step under the profiler is 32.7 ms,
the eager step 50–70 ms. The CUDA graph removes the host from the step.

    config (bf16 unless fp32)                     T              S              B
    train eager, dwconv=cudnn                   310            198             -
    train eager, Triton dwconv                  318            170             -
    train cudagraph, dwconv=cudnn               432            326            250
    train cudagraph, Triton dwconv              482 (251)      356 (186)      260 (149)
    train fp32 cudagraph, Triton dwconv         381 (212)      264 (151)       -
    infer cudagraph, Triton dwconv             1783 (1089)    1325 (776)       -

Best training bf16 over official: T 1.92×, S 1.91×, B 1.74× (target 2×, not reached).
First session, eager on a faster host, dwconv=cudnn: T 410, S 222 (eager, no channels_last),
B 235; torch.compile (T, with graph breaks at the then autograd.Function WKV) 379, inference
compiled 1804. torch.compile with the custom ops has not been measured: its one run failed on a
stride mismatch of ∂w between the op's fake and real kernels, fixed since.
Profile of one T step (``--profile rwkv_unet_t``, bf16, channels_last, CUDA time under the
profiler): with cuDNN depthwise 52.8 ms, of which the grouped depthwise kernels 21.5 ms (∂w
13.6 ms); with the Triton depthwise kernels 32.7 ms, of which ∂w 4.6 ms, ∂x 2.5 ms, forward
1.5 ms; next come BatchNorm (~4.1 ms in four kernels), LayerNorm (~2.7 ms) and bilinear resizes
(~1.5 ms), unfused.
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
               compile_=False, compile_mode=None, train=True, warmup=5, steps=20, classes=2, graph=False):
    """Images per second of ``steps`` training (or inference) steps after ``warmup``.

    ``graph``: capture the whole step (forward, backward, AdamW) in one CUDA graph after the
    warm-up and replay it; removes the per-kernel launch cost of the host.
    """
    torch.manual_seed(0)
    model = create_model(name, num_classes=classes, wkv=wkv, dwconv=dwconv).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, classes, (batch, size, size), device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, capturable=graph)
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
        run(name, "train fp32 triton channels_last cudagraph", wkv="triton", dwconv="triton",
            channels_last=True, amp=False, graph=True)
        run(name, "infer bf16 triton channels_last cudagraph", wkv="triton", dwconv="triton",
            channels_last=True, train=False, steps=steps * 2, graph=True)
    for name in variants:
        if name not in compile_variants:
            continue
        for mode in (None, "reduce-overhead"):
            label = "" if mode is None else f" {mode}"
            run(name, f"train bf16 triton channels_last compile{label}", wkv="triton", dwconv="triton",
                channels_last=True, compile_=True, compile_mode=mode, warmup=4)
        run(name, "infer bf16 triton channels_last compile reduce-overhead", wkv="triton", dwconv="triton",
            channels_last=True, train=False, compile_=True, compile_mode="reduce-overhead", warmup=4,
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


def profile(name, dev, rows=18):
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
