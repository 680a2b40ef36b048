"""Every Triton kernel compiles to an sm_90 (H200) binary on a machine without a GPU.

The interpreter (``triton_interpreted.py``) checks what the kernels compute but runs them as
Python, which accepts code the compiler refuses (a constexpr assigned in a ``static_range`` loop
once passed the interpreter and failed on the GPU). Compiling through Triton's own toolchain,
with the tile sizes and warps the launchers use, closes that gap.
"""

from __future__ import annotations

import pytest
from conftest import requires_triton


@requires_triton
@pytest.mark.parametrize("K,S", [(5, 2), (9, 1)])
@pytest.mark.parametrize("unroll", [True, False])
def test_depthwise_kernels_compile_for_sm90(K, S, unroll):
    from segment._triton_builds import compile_sm90, dwconv_builds

    for build in dwconv_builds(K, S, width=32, C=64, unroll=unroll):
        assert compile_sm90(build).asm["cubin"], build[0].__name__


@requires_triton
def test_wkv_kernels_compile_for_sm90():
    from segment._triton_builds import compile_sm90, wkv_builds

    for build in wkv_builds():
        assert compile_sm90(build).asm["cubin"], build[0].__name__


@requires_triton
def test_resources_are_read_from_the_binary():
    """Registers and spill stack of the sm_90 build (benchmarks/kernel_resources.py prints them
    for every kernel): a 2-warp summary kernel holds its tile in registers without spilling."""
    from segment._triton_builds import compile_sm90, resources, wkv_builds

    use = resources(compile_sm90(next(wkv_builds())))
    assert 16 <= use["registers"] <= 255 and use["stack"] == 0, use
