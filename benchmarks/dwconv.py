"""Depthwise convolutions of RWKV-UNet on the GPU: cuDNN (``F.conv2d``) vs the Triton kernels.

Run by hand: ``python benchmarks/dwconv.py [--variants ...] [--out FILE.json]``.

Every depthwise conv of a variant at 256×256, batch 16, bf16, channels-last (the training
setting of ``benchmarks/model.py``) is timed alone: the forward op, and the backward op (∂x and
∂w together), called directly; for Triton also with the forward and ∂x taps unrolled at
compile time instead of looped (``unroll=True``). Each timing replays a CUDA graph of the call, so it is GPU time
alone (eager launches of these small kernels are host-bound on the lent machine). The table sums
the layers of each kernel size; the floor is the bytes each op must move (forward: read x, write
y; backward: read x, ∂y, write ∂x) at the copy bandwidth measured in the same run.

Measured 2026-12-01 on one H200 (ms, sums over the layers of one forward/backward pass; the floor
is the bytes at the copy bandwidth of the run). Triton: taps looped (the default) / unrolled:

    layers                 cuDNN fwd  Triton fwd      floor  cuDNN bwd  Triton bwd      floor
    T, 11 encoder 5×5        0.500    0.819 / 0.764   0.143    2.238    3.837 / 3.911   0.245
    T, 4 decoder 9×9         3.454    0.526 / 0.542   0.025    6.413    1.821 / 1.994   0.038
    B, 16 encoder 5×5        0.793    1.426 / 1.363   0.254    3.258    6.031 / 6.134   0.420

cuDNN is 1.6–1.9× faster on the 5×5 layers, 3–6× slower on the 9×9 ones; hence the ``auto``
backend of ``segment.dwconv`` (Triton for K ≥ 7). On C = 3 (the stem) our kernel is 4–5× slower
(channel tile mostly idle). The B decoder layers were cut by the run's time limit. Both are far
from the floor. The unrolled forward and ∂x kernels spill registers (``kernel_resources.py``);
the looped ones do not, and are as fast or faster on the 9×9 layers that ``auto`` gives Triton.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

import segment.dwconv  # noqa: F401 (registers segment::dwconv2d*)
from segment import _dwconv_triton
from segment.blocks import ConvNormAct
from segment.dwconv import depthwise_conv2d
from segment.model import create_model


def layers(name: str, size: int = 256, batch: int = 16) -> list[tuple[int, int, int, int, int, int]]:
    """(B, C, H, W, K, stride) of every depthwise conv in one forward pass of ``name``."""
    model = create_model(name, num_classes=2, dwconv="torch").to("meta")
    seen = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append(
        (batch, *inp[0].shape[1:], m.conv.kernel_size[0], m.conv.stride[0])))
        for m in model.modules() if isinstance(m, ConvNormAct) and m.depthwise]
    with torch.no_grad():
        model(torch.empty(batch, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    return seen


def _bench(fn) -> float:
    """Median GPU time [ms] of ``fn`` replayed from a CUDA graph: the host's launch cost excluded."""
    import triton.testing

    fn()
    return triton.testing.do_bench_cudagraph(fn, rep=40, return_mode="median")


def run(variants: list[str]) -> dict:
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    src = torch.empty(256 * 2**20, device=dev, dtype=torch.uint8)
    dst = torch.empty_like(src)
    bw = 2 * src.numel() / (_bench(lambda: dst.copy_(src)) * 1e-3)
    out = {"copy_bandwidth_TBps": bw / 1e12, "variants": {}}
    for name in variants:
        rows = []
        for B, C, H, W, K, S in layers(name):
            x = torch.randn(B, C, H, W, device=dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
            w = (torch.randn(C, 1, K, K, device=dev) / K).to(torch.bfloat16)
            y = depthwise_conv2d(x, w, S, backend="torch")
            gy = torch.randn_like(y)
            nbytes = 2 * (x.numel() + y.numel())
            r = {"shape": [B, C, H, W, K, S], "floor_fwd_ms": nbytes / bw * 1e3,
                 "floor_bwd_ms": 2 * (2 * x.numel() + y.numel()) / bw * 1e3}
            calls = {  # the ops themselves, no autograd: what a training step runs
                "torch_fwd": lambda x=x, w=w, S=S, K=K, C=C: F.conv2d(x, w, None, S, K // 2, 1, C),
                "torch_bwd": lambda x=x, w=w, S=S, gy=gy, K=K, C=C: torch.ops.aten.convolution_backward(
                    gy, x, w, None, [S, S], [K // 2] * 2, [1, 1], False, [0, 0], C, [True, True, False]),
                "triton_fwd": lambda x=x, w=w, S=S: torch.ops.segment.dwconv2d(x, w, S),
                "triton_bwd": lambda x=x, w=w, S=S, gy=gy: torch.ops.segment.dwconv2d_backward(gy, x, w, S),
                # forward and ∂x with the taps unrolled (they spill; see kernel_resources.py)
                "triton_unrolled_fwd": lambda x=x, w=w, S=S: _dwconv_triton.forward(x, w, S, unroll=True),
                "triton_unrolled_bwd": lambda x=x, w=w, S=S, gy=gy: _dwconv_triton.backward(gy, x, w, S, unroll=True),
            }
            for key, fn in calls.items():
                try:
                    r[f"{key}_ms"] = _bench(fn)
                except Exception as e:  # recorded; the other layers still run
                    r[f"{key}_ms"] = float("nan")
                    r[f"{key}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            rows.append(r)
            print(name, json.dumps(r), flush=True)
        tot = {k: sum(r[k] for r in rows) for k in rows[0] if k.endswith("_ms")}
        tot["speedup_fwd"] = tot["torch_fwd_ms"] / tot["triton_fwd_ms"]
        tot["speedup_bwd"] = tot["torch_bwd_ms"] / tot["triton_bwd_ms"]
        tot["unrolled_over_looped_fwd"] = tot["triton_unrolled_fwd_ms"] / tot["triton_fwd_ms"]
        tot["unrolled_over_looped_bwd"] = tot["triton_unrolled_bwd_ms"] / tot["triton_bwd_ms"]
        out["variants"][name] = {"layers": rows, "total": tot}
    cols = ("torch_fwd", "triton_fwd", "triton_unrolled_fwd", "floor_fwd", "torch_bwd", "triton_bwd",
            "triton_unrolled_bwd", "floor_bwd")
    print(f"{'variant':14s} {'K':>2s} {'n':>3s} " + " ".join(f"{c:>15s}" for c in cols) + "  (ms, summed)")
    for name, v in out["variants"].items():
        for K in sorted({r["shape"][4] for r in v["layers"]}):
            sel = [r for r in v["layers"] if r["shape"][4] == K]
            print(f"{name:14s} {K:2d} {len(sel):3d} " + " ".join(f"{sum(r[c + '_ms'] for r in sel):15.3f}" for c in cols))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="rwkv_unet_t,rwkv_unet_s,rwkv_unet")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    res = run(a.variants.split(","))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
