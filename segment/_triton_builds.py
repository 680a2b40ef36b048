"""Every Triton kernel with the signature, tile sizes and warps its launcher uses, built ahead of
time for the H200 (sm_90) without a GPU.

The tests compile them all (the interpreter accepts code the compiler refuses), and
``benchmarks/kernel_resources.py`` reads registers and spill stack from the binaries (a kernel
that spills is slow before it runs). Importing needs Triton.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

Build = tuple[Callable, dict[str, str], dict[str, int], int]  # kernel, signature, constexprs, warps


def _sig(names: str, ptr: str) -> dict[str, str]:
    """``names``: pointer args in upper case, int32 args marked by a ``_`` prefix (dropped)."""
    return {n.lstrip("_"): ("i32" if n.startswith("_") else ptr) for n in names.split()}


def dwconv_builds(K: int, S: int, width: int, C: int, dtype: str = "bf16", unroll: bool = False) -> Iterator[Build]:
    """Forward, ∂x and ∂w kernels of a K×K, stride-S depthwise conv on rows of ``width`` pixels
    (``unroll``: the forward and ∂x taps unrolled, or looped as the launchers do by default)."""
    from segment import _dwconv_triton as D

    ptr = f"*{dtype}"
    bw, bc = D._tiles(width, C)
    tiles = {"K": K, "S": S, "BW": bw, "BC": bc, "UNROLL": unroll}
    yield D._fwd_kernel, _sig("X WT Y _H _W _C _OH _OW", ptr), tiles, 4
    yield D._bwd_x_kernel, _sig("GY WT GX _H _W _C _OH _OW", ptr), tiles, 4
    kp, bw, bc = D._w_tiles(width, C, K)
    yield (D._bwd_w_kernel, {**_sig("X GY", ptr), "PART": "*fp32", **_sig("_H _W _C _OH _OW _ROWS _ROWS_PER", "")},
           {"K": K, "S": S, "KP": kp, "BW": bw, "BC": bc}, 4)


def wkv_builds(bt: int | None = None, bc: int | None = None, warps: int | None = None) -> Iterator[Build]:
    """The six chunked Bi-WKV kernels, at the launchers' default tiles unless given."""
    from segment import _wkv_triton as W

    bt, bc, warps, cbc, cw = W._tiles(bt, bc, warps, None, None)
    tiles, f = {"BT": bt, "BC": bc}, "*fp32"
    carry = {"BT": bt, "BC": cbc, "CB": W.CARRY_UNROLL}
    yield W._fwd_summary_kernel, _sig("W K V SL SR _T _C _NCH", f), tiles, warps
    yield W._fwd_carry_kernel, _sig("W S D _C _NCH", f), carry, cw
    yield W._fwd_out_kernel, _sig("W U K V CL CR Y LZ _T _C _NCH", f), tiles, warps
    yield W._bwd_summary_kernel, _sig("W Y LZ G SL SR _T _C _NCH", f), tiles, warps
    yield W._bwd_carry_kernel, _sig("W S D _C _NCH", f), carry, cw
    yield (W._bwd_out_kernel, _sig("W U K V Y LZ G CL CR GK GV GWP GUP _T _C _NCH", f),
           tiles, warps)


def compile_sm90(build: Build) -> Any:
    """The compiled kernel (``.asm["cubin"]`` holds the sm_90 binary)."""
    fn, signature, constexprs, warps = build
    src = ASTSource(fn=fn, signature={**signature, **{k: "constexpr" for k in constexprs}}, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})


def resources(kernel: Any) -> dict[str, int]:
    """Registers per thread, spill stack [bytes per thread] and shared memory of a compiled kernel,
    read by the ``cuobjdump`` that ships with Triton."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(kernel.asm["cubin"])
        fh.flush()
        out = subprocess.run([tool, "-res-usage", fh.name], capture_output=True, text=True, check=True).stdout
    usage = dict(re.findall(r"(REG|STACK|SHARED):(\d+)", out))
    return {"registers": int(usage["REG"]), "stack": int(usage["STACK"]), "shared": int(usage["SHARED"])}
