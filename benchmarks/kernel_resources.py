"""Registers and spill stack of every Triton kernel, built for the H200 (sm_90) on any machine.

Run by hand: ``python benchmarks/kernel_resources.py [--variants ...] [--unroll]``. No GPU needed: each
kernel is compiled with the tiles its launcher picks for every depthwise layer of the variants
(bf16) and for the Bi-WKV default tile, and ``cuobjdump`` reads the binary. A kernel at 255
registers with a stack spills to local memory; the table prints the ratio to the 64 K registers
of an SM as the number of programs that fit at the launch's warps.

Read 2026-12-01 (Triton 3.9): unrolled over all K² taps (``--unroll``), the forward and ∂x
depthwise kernels spill: 5×5 mostly at 255 registers with 16–312 bytes of stack, 9×9 at 32
registers with 4.6–8.5 KB of stack per thread. Looped over the taps (the default) they hold
36–145 registers and no stack; the ∂w kernel (K passes, a (KP, BW, BC) accumulator) 96–140.
Bi-WKV at the default tiles: summaries 76 / 96, carries 108 / 139, outputs 106 / 211 registers
(forward / backward), no stack.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segment._triton_builds import compile_sm90, dwconv_builds, resources, wkv_builds

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported as benchmarks.*
from dwconv import layers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="rwkv_unet_t,rwkv_unet")
    ap.add_argument("--unroll", action="store_true", help="depthwise forward/∂x with the taps unrolled")
    a = ap.parse_args()
    seen = set()
    print(f"{'kernel':22s} {'config':48s} {'regs':>5s} {'stack B':>8s} {'programs/SM':>12s}")
    builds = [("Bi-WKV", b) for b in wkv_builds()]
    for name in a.variants.split(","):
        for _, C, _, W, K, S in layers(name):
            builds += [(f"C={C} W={W} K={K} S={S}", b)
                       for b in dwconv_builds(K, S, width=W, C=C, unroll=a.unroll)]
    for label, build in builds:
        fn, _, constexprs, warps = build
        key = (fn.__name__, tuple(sorted(constexprs.items())), warps)
        if key in seen:
            continue
        seen.add(key)
        use = resources(compile_sm90(build))
        fit = 65536 // max(1, use["registers"] * 32 * warps)
        tiles = ",".join(f"{k}={v}" for k, v in constexprs.items())
        print(f"{fn.__name__:22s} {label + ' ' + tiles:48.48s} {use['registers']:5d} {use['stack']:8d} {fit:12d}")


if __name__ == "__main__":
    main()
