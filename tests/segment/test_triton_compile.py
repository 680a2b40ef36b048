"""Every Triton kernel compiles to an sm_90 (H200) binary on a machine without a GPU.

The interpreter (``triton_interpreted.py``) checks what the kernels compute but runs them as
Python, which accepts code the compiler refuses (a constexpr assigned in a ``static_range`` loop
once passed the interpreter and failed on the GPU). Compiling through Triton's own toolchain,
with the tile sizes the launchers use, closes that gap.
"""

from __future__ import annotations

import pytest
from conftest import requires_triton


def _compile(fn, args: dict[str, str], constexprs: dict[str, int]) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {**args, **{k: "constexpr" for k in constexprs}}
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                            target=GPUTarget("cuda", 90, 32))
    assert kernel.asm["cubin"], fn.__name__


def _sig(names: str, ptr: str) -> dict[str, str]:
    """``names``: pointer args in upper case, int32 args in lower case (``_`` prefix dropped)."""
    return {n.lstrip("_"): ("i32" if n.startswith("_") else ptr) for n in names.split()}


@requires_triton
@pytest.mark.parametrize("K,S", [(5, 2), (9, 1)])
def test_depthwise_kernels_compile_for_sm90(K, S):
    from segment import _dwconv_triton as D

    bw, bc = D._tiles(32, 64)
    tiles = {"K": K, "S": S, "BW": bw, "BC": bc}
    _compile(D._fwd_kernel, _sig("X WT Y _H _W _C _OH _OW", "*bf16"), tiles)
    _compile(D._bwd_x_kernel, _sig("GY WT GX _H _W _C _OH _OW", "*bf16"), tiles)
    _compile(D._bwd_w_kernel, {**_sig("X GY", "*bf16"), "PART": "*fp32",
                               **_sig("_H _W _C _OH _OW _ROWS _ROWS_PER", "")}, tiles)


@requires_triton
def test_wkv_kernels_compile_for_sm90():
    from segment import _wkv_triton as W

    tiles = {"BT": W.CHUNK_T, "BC": W.CHUNK_C}
    f = "*fp32"
    _compile(W._fwd_summary_kernel, _sig("W K V SL SR _T _C _NCH", f), tiles)
    _compile(W._fwd_carry_kernel, _sig("W SL SR CL CR _C _NCH", f), {**tiles, "CB": 64})
    _compile(W._fwd_out_kernel, _sig("W U K V CL CR Y LZ _T _C _NCH", f), tiles)
    _compile(W._bwd_summary_kernel, _sig("W Y LZ G SL SR _T _C _NCH", f), tiles)
    _compile(W._bwd_carry_kernel, _sig("W SL SR CL CR _C _NCH", f), {**tiles, "CB": 64})
    _compile(W._bwd_out_kernel, _sig("W U K V Y LZ G CL CR GK GV GWP GUP _T _C _NCH", f), tiles)
