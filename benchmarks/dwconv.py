"""Depthwise convolutions of RWKV-UNet on the GPU: cuDNN (``F.conv2d``) vs the Triton kernels.

Run by hand: ``python benchmarks/dwconv.py [--variants ...] [--out FILE.json]``.

Every depthwise conv of a variant at 256×256, batch 16, bf16, channels-last (the training
setting of ``benchmarks/model.py``) is timed alone: forward, and forward + backward (∂x, ∂w).
Each timing replays a CUDA graph of the call, so it is GPU time alone (eager launches of these
small kernels are host-bound on the lent machine). The table sums the layers per variant and
gives the ratio torch / triton; the floor is the
bytes each pass must move (forward: read x, write y; backward: read x, ∂y, write ∂x) at the copy
bandwidth measured in the same run.

Status 2026-11-28: the table has not been produced with graph timing yet (no device time was
left). An earlier eager-timed run was host-bound (every Triton layer 0.13–0.19 ms forward, about
1.1 ms forward + backward, whatever its size), so it measured the launch path, not the kernels.
The GPU time of the kernels comes from the profile of a whole T training step
(``benchmarks/model.py --profile``): cuDNN's depthwise kernels 21.5 ms, the Triton ones 8.6 ms.
"""

from __future__ import annotations

import argparse
import json

import torch

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
            x.requires_grad_(True)
            w.requires_grad_(True)
            y = depthwise_conv2d(x, w, S, backend="torch")
            gy = torch.randn_like(y)
            nbytes = 2 * (x.numel() + y.numel())
            r = {"shape": [B, C, H, W, K, S], "floor_fwd_ms": nbytes / bw * 1e3,
                 "floor_fwd_bwd_ms": (nbytes + 2 * (2 * x.numel() + y.numel())) / bw * 1e3}
            for backend in ("torch", "triton"):
                def fwd(backend=backend, x=x, w=w, S=S):
                    with torch.no_grad():
                        return depthwise_conv2d(x, w, S, backend=backend)

                def fwd_bwd(backend=backend, x=x, w=w, S=S, gy=gy):
                    y = depthwise_conv2d(x, w, S, backend=backend)
                    return torch.autograd.grad(y, (x, w), gy)

                r[f"{backend}_fwd_ms"] = _bench(fwd)
                r[f"{backend}_fwd_bwd_ms"] = _bench(fwd_bwd)
            rows.append(r)
            print(name, json.dumps(r), flush=True)
        tot = {k: sum(r[k] for r in rows) for k in rows[0] if k.endswith("_ms")}
        tot["speedup_fwd"] = tot["torch_fwd_ms"] / tot["triton_fwd_ms"]
        tot["speedup_fwd_bwd"] = tot["torch_fwd_bwd_ms"] / tot["triton_fwd_bwd_ms"]
        out["variants"][name] = {"layers": rows, "total": tot}
    print(f"{'variant':14s} {'cuDNN fwd':>10s} {'triton fwd':>10s} {'ratio':>6s} {'cuDNN f+b':>10s} "
          f"{'triton f+b':>10s} {'ratio':>6s} {'floor f+b':>10s}  (ms, sum over layers)")
    for name, v in out["variants"].items():
        t = v["total"]
        print(f"{name:14s} {t['torch_fwd_ms']:10.3f} {t['triton_fwd_ms']:10.3f} {t['speedup_fwd']:6.2f} "
              f"{t['torch_fwd_bwd_ms']:10.3f} {t['triton_fwd_bwd_ms']:10.3f} {t['speedup_fwd_bwd']:6.2f} "
              f"{t['floor_fwd_bwd_ms']:10.3f}")
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
