"""Triton kernels of the depthwise convolution in ``segment.dwconv``. Importing needs Triton.

Tensors are channels-last (memory order b, h, w, c); the kernel is K×K (K odd), padding
p = K // 2, stride s ∈ {1, 2}; the weight comes transposed to (K·K, C) so that a tap's C
weights are contiguous. With OH = ⌊(H−1)/s⌋ + 1:

    y[b, oh, ow, c]  = Σ_{i,j} x[b, oh·s − p + i, ow·s − p + j, c] · w[c, i, j]
    ∂x[b, h, x, c]   = Σ_{i,j} ∂y[b, (h + p − i)/s, (x + p − j)/s, c] · w[c, i, j]   (integer quotients)
    ∂w[c, i, j]      = Σ_{b,oh,ow} ∂y[b, oh, ow, c] · x[b, oh·s − p + i, ow·s − p + j, c]

Row validity is computed per pixel (``+ 0 * cols``) rather than as a scalar: Triton 3.9's
interpreter refuses a mask that ANDs a scalar with a block; the compiler folds the zero.

One program of the forward and input-gradient kernels owns one output row segment of BW
pixels × BC channels and walks the K² taps, accumulating in fp32. The taps are looped over by
default: unrolled at compile time (``unroll=True``) these two kernels spill
(``benchmarks/kernel_resources.py``: 255 registers and a stack for 5×5, kilobytes of stack for
9×9), and on the H200 the looped form was as fast or faster where ``dwconv="auto"`` sends work
(9×9 of RWKV-UNet-T, bf16: forward 0.526 vs 0.542 ms, backward 1.82 vs 1.99 ms summed over
its layers; 5×5 forward 0.82 vs 0.76 ms, backward 3.84 vs 3.91 ms; ``benchmarks/dwconv.py``).

The weight gradient is reduced per program over a run of rows into a (programs, K², C) fp32
buffer, then summed:
deterministic, no atomics. Its program walks its rows once per kernel row i, loading each ∂y tile
once and the K shifted x windows of that row as one (K, BW, BC) gather (L1 serves the overlap),
so ∂y is read K times instead of K² (an earlier kernel with one pass per tap: 4.6 ms of a T step).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from segment.dwconv import out_size


@triton.jit
def _tap(acc, base, WT, pix, valid, c, cm, tap, C):
    """acc + src[pix, c] · w[tap, c]: one tap over a (pixels, channels) tile, masked by ``valid``."""
    m = valid[:, None] & cm[None, :]
    xv = tl.load(base + pix[:, None] * C + c[None, :], mask=m, other=0.0)
    wv = tl.load(WT + tap * C + c, mask=cm, other=0.0)
    return acc + xv.to(tl.float32) * wv.to(tl.float32)[None, :]


@triton.jit
def _fwd_row(acc, xb, WT, ih, iw0, owm, c, cm, i, H, W, C, K: tl.constexpr, UNROLL: tl.constexpr):
    """acc + the K taps of kernel row i; ih: its input row, per pixel (masks never mix a scalar
    with a block, see above)."""
    rv = (ih >= 0) & (ih < H)
    if UNROLL:
        for j in tl.static_range(K):
            iw = iw0 + j
            acc = _tap(acc, xb, WT, ih * W + iw, rv & (iw >= 0) & (iw < W) & owm, c, cm, i * K + j, C)
    else:
        for j in range(K):
            iw = iw0 + j
            acc = _tap(acc, xb, WT, ih * W + iw, rv & (iw >= 0) & (iw < W) & owm, c, cm, i * K + j, C)
    return acc


@triton.jit
def _fwd_kernel(X, WT, Y, H, W, C, OH, OW, K: tl.constexpr, S: tl.constexpr, BW: tl.constexpr,
                BC: tl.constexpr, UNROLL: tl.constexpr):
    row = tl.program_id(0)  # b·OH + oh
    ow = tl.program_id(1) * BW + tl.arange(0, BW)
    c = tl.program_id(2) * BC + tl.arange(0, BC)
    b = row // OH
    oh = row % OH
    cm = c < C
    owm = ow < OW
    P: tl.constexpr = K // 2
    xb = X + b.to(tl.int64) * H * W * C
    iw0 = ow * S - P
    acc = tl.zeros([BW, BC], tl.float32)
    if UNROLL:
        for i in tl.static_range(K):
            acc = _fwd_row(acc, xb, WT, oh * S - P + i + 0 * ow, iw0, owm, c, cm, i, H, W, C, K, UNROLL)
    else:
        for i in range(K):
            acc = _fwd_row(acc, xb, WT, oh * S - P + i + 0 * ow, iw0, owm, c, cm, i, H, W, C, K, UNROLL)
    yp = Y + row.to(tl.int64) * OW * C + ow[:, None] * C + c[None, :]
    tl.store(yp, acc.to(Y.dtype.element_ty), mask=owm[:, None] & cm[None, :])


@triton.jit
def _bwd_x_col(iw, iwm, j, OW, K: tl.constexpr, S: tl.constexpr):
    """Output column of tap j for the input columns iw, and whether it exists."""
    P: tl.constexpr = K // 2
    ows = iw + P - j
    ow = ows // S
    cv = (ows >= 0) & (ow < OW) & iwm
    if S > 1:
        cv = cv & (ows % S == 0)
    return ow, cv


@triton.jit
def _bwd_x_row(acc, gb, WT, ohs, iw, iwm, c, cm, i, OH, OW, C, K: tl.constexpr, S: tl.constexpr,
               UNROLL: tl.constexpr):
    """acc + the K taps of kernel row i; ohs = oh·s of that row, per pixel."""
    oh = ohs // S
    rv = (ohs >= 0) & (oh < OH)
    if S > 1:
        rv = rv & (ohs % S == 0)
    if UNROLL:
        for j in tl.static_range(K):
            ow, cv = _bwd_x_col(iw, iwm, j, OW, K, S)
            acc = _tap(acc, gb, WT, oh * OW + ow, rv & cv, c, cm, i * K + j, C)
    else:
        for j in range(K):
            ow, cv = _bwd_x_col(iw, iwm, j, OW, K, S)
            acc = _tap(acc, gb, WT, oh * OW + ow, rv & cv, c, cm, i * K + j, C)
    return acc


@triton.jit
def _bwd_x_kernel(GY, WT, GX, H, W, C, OH, OW, K: tl.constexpr, S: tl.constexpr, BW: tl.constexpr,
                  BC: tl.constexpr, UNROLL: tl.constexpr):
    row = tl.program_id(0)  # b·H + h
    iw = tl.program_id(1) * BW + tl.arange(0, BW)
    c = tl.program_id(2) * BC + tl.arange(0, BC)
    b = row // H
    ih = row % H
    cm = c < C
    iwm = iw < W
    P: tl.constexpr = K // 2
    gb = GY + b.to(tl.int64) * OH * OW * C
    acc = tl.zeros([BW, BC], tl.float32)
    if UNROLL:
        for i in tl.static_range(K):
            acc = _bwd_x_row(acc, gb, WT, ih + P - i + 0 * iw, iw, iwm, c, cm, i, OH, OW, C, K, S, UNROLL)
    else:
        for i in range(K):
            acc = _bwd_x_row(acc, gb, WT, ih + P - i + 0 * iw, iw, iwm, c, cm, i, OH, OW, C, K, S, UNROLL)
    xp = GX + row.to(tl.int64) * W * C + iw[:, None] * C + c[None, :]
    tl.store(xp, acc.to(GX.dtype.element_ty), mask=iwm[:, None] & cm[None, :])


@triton.jit
def _bwd_w_kernel(X, GY, PART, H, W, C, OH, OW, ROWS, ROWS_PER, K: tl.constexpr, S: tl.constexpr,
                  KP: tl.constexpr, BW: tl.constexpr, BC: tl.constexpr):
    pid = tl.program_id(0)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = c < C
    P: tl.constexpr = K // 2
    r0 = pid.to(tl.int64) * ROWS_PER
    cols = tl.arange(0, BW)
    jj = tl.arange(0, KP)  # the K taps of one kernel row, padded to a power of two
    jm = jj < K
    for i in tl.static_range(K):  # one pass over the rows per kernel row: ∂y read K times, not K²
        acc = tl.zeros([KP, BW, BC], tl.float32)
        for rr in range(0, ROWS_PER):  # output rows r = b·OH + oh
            r = r0 + rr
            b = r // OH
            oh = r % OH
            ih = oh * S - P + i + 0 * cols  # per pixel
            rv = (ih >= 0) & (ih < H) & (r + 0 * cols < ROWS)
            xb = X + b * H * W * C
            gb = GY + r * OW * C
            for cb in range(0, OW, BW):
                ow = cb + cols
                pv = rv & (ow < OW)
                gv = tl.load(gb + ow[:, None] * C + c[None, :], mask=pv[:, None] & cm[None, :], other=0.0)
                iw = ow[None, :] * S - P + jj[:, None]  # (KP, BW): the K shifted windows of the row
                xm = (pv[None, :] & (iw >= 0) & (iw < W) & jm[:, None])[:, :, None] & cm[None, None, :]
                xv = tl.load(xb + ((ih[None, :] * W + iw) * C)[:, :, None] + c[None, None, :], mask=xm,
                             other=0.0)
                acc += xv.to(tl.float32) * gv.to(tl.float32)[None, :, :]
        gw = tl.sum(acc, axis=1)  # (KP, BC)
        tl.store(PART + (pid * K * K + i * K + jj[:, None]) * C + c[None, :], gw,
                 mask=jm[:, None] & cm[None, :])


def _channel_tile(C: int, smallest: int = 8) -> int:
    """The widest channel tile of 64, 32, 16 that pads C by at most 1/8 (else the least padding):
    C = 96 takes 32 (three full tiles) rather than 64 (a third of the lanes idle)."""
    if C <= 64:
        return max(smallest, triton.next_power_of_2(C))
    padded = {bc: triton.cdiv(C, bc) * bc for bc in (64, 32, 16)}
    fits = [bc for bc, n in padded.items() if n * 8 <= C * 9]
    return fits[0] if fits else min(padded, key=lambda bc: (padded[bc], -bc))


def _tiles(width: int, C: int) -> tuple[int, int]:
    """(BW, BC) of the forward and ∂x kernels: 2 048-element tiles at most."""
    bc = _channel_tile(C)
    bw = min(max(8, 2048 // bc), 64, max(8, triton.next_power_of_2(width)))
    return bw, bc


def _w_tiles(width: int, C: int, K: int) -> tuple[int, int, int]:
    """(KP, BW, BC) of the ∂w kernel: a (KP, BW, BC) fp32 accumulator of 4 096 elements."""
    kp = triton.next_power_of_2(K)
    bc = _channel_tile(C, smallest=16)
    bw = max(1, min(4096 // (kp * bc), triton.next_power_of_2(width)))
    return kp, bw, bc


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _taps_by_channel(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, K, K) -> (K·K, C) contiguous: a tap's C weights side by side."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def forward(x: torch.Tensor, weight: torch.Tensor, stride: int, unroll: bool = False) -> torch.Tensor:
    """y = depthwise conv of x (B, C, H, W) with weight (C, 1, K, K); channels-last result.

    ``unroll``: the K² taps unrolled at compile time, or looped over (the default)."""
    B, C, H, W = x.shape
    K = weight.shape[-1]
    OH, OW = out_size(H, stride), out_size(W, stride)
    x = _nhwc(x)
    wt = _taps_by_channel(weight)
    y = torch.empty((B, C, OH, OW), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    bw, bc = _tiles(OW, C)
    grid = (B * OH, triton.cdiv(OW, bw), triton.cdiv(C, bc))
    _fwd_kernel[grid](x, wt, y, H, W, C, OH, OW, K=K, S=stride, BW=bw, BC=bc, UNROLL=unroll, num_warps=4)
    return y


def backward(gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int,
             programs: int = 1024, unroll: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂x, ∂w) of ``forward``; ∂w is reduced in fp32 and returned in the weight's dtype."""
    B, C, H, W = x.shape
    K = weight.shape[-1]
    OH, OW = gy.shape[-2:]
    x = _nhwc(x)
    gy = _nhwc(gy)
    wt = _taps_by_channel(weight)
    gx = torch.empty_like(x, memory_format=torch.channels_last)
    bw, bc = _tiles(W, C)
    _bwd_x_kernel[(B * H, triton.cdiv(W, bw), triton.cdiv(C, bc))](
        gy, wt, gx, H, W, C, OH, OW, K=K, S=stride, BW=bw, BC=bc, UNROLL=unroll, num_warps=4)
    kp, bw, bc = _w_tiles(OW, C, K)
    nc = triton.cdiv(C, bc)
    rows = B * OH
    per = triton.cdiv(rows, max(1, min(rows, programs // nc)))
    n = triton.cdiv(rows, per)
    part = torch.empty((n, K * K, C), device=x.device, dtype=torch.float32)
    _bwd_w_kernel[(n, nc)](x, gy, part, H, W, C, OH, OW, rows, per, K=K, S=stride, KP=kp, BW=bw,
                           BC=bc, num_warps=4)
    gw = part.sum(0).t().contiguous().reshape(C, 1, K, K).to(weight.dtype)
    return gx, gw
