"""Fused Triton kernels for Bi-WKV (spec ``rwkv-unet.md`` §5.2c). Importing needs Triton.

T is cut into chunks of BT tokens; every (batch element, block of BC channels, chunk) is one
program. Three launches per pass: chunk summaries, the per-channel carries across chunks (a
blocked scan over the summaries), then the outputs, where each chunk scans its own tokens and
joins the carries. The log-space state is that of §5.2d. There is no compile-time T.

A segment of tokens is summarised, as seen from just after its last token, by
(a, b, o, d): Σ e^{k_i − dist_i·w − o} (v_i, 1), the offset o and its log-decay d = −n·w.
Joining X₁ then X₂: o₁' = o₁ + d₂, o = max(o₁', o₂), a = e^{o₁'−o} a₁ + e^{o₂−o} a₂, d = d₁ + d₂.
Exclusive states (tokens i < t) come from scanning the token sequence shifted by one.

Forward: the left state (tokens i < t), the right state (i > t) and token t (q = u + k_t) give
y_t and log Z_t, both kept for the backward pass.

Backward (§5.1, with h_t = g_t/Z_t): the same two passes over keys −log Z_t and values g_t and
g_t·y_t, plus first distance moments (m ← e^{d₂}(m₁ + n₂ a₁) + m₂), give
∂v_i = Σ_t P_{t,i} g_t, ∂k_i = v_i ∂v_i − Σ_t P_{t,i} g_t y_t,
∂w = −Σ_i [v_i Σ_t (|t−i|−1) P_{t,i} g_t − Σ_t (|t−i|−1) P_{t,i} g_t y_t],
∂u = Σ_t P_{t,t} g_t (v_t − y_t); ∂w and ∂u are reduced in fp32 per (b, channel), then over b.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

NEG = tl.constexpr(-1.0e30)  # offset of an empty segment (finite: exp(NEG − M) = 0 without NaN)

#: tokens per chunk, channels per program, warps (the fastest measured on the H200)
CHUNK_T = 16
CHUNK_C = 32
CHUNK_WARPS = 2


@triton.jit
def _join_fwd(a1, b1, o1, d1, a2, b2, o2, d2):
    o1s = o1 + d2
    o = tl.maximum(o1s, o2)
    f1 = tl.exp(o1s - o)
    f2 = tl.exp(o2 - o)
    return a1 * f1 + a2 * f2, b1 * f1 + b2 * f2, o, d1 + d2


@triton.jit
def _join_bwd(a1, c1, m1, n1, o1, d1, x1, a2, c2, m2, n2, o2, d2, x2):
    # a: Σ g·e^{..}, c: Σ g·y·e^{..}, m, n: first distance moments of a and c, x: token count
    o1s = o1 + d2
    o = tl.maximum(o1s, o2)
    f1 = tl.exp(o1s - o)
    f2 = tl.exp(o2 - o)
    return (
        a1 * f1 + a2 * f2,
        c1 * f1 + c2 * f2,
        (m1 + x2 * a1) * f1 + m2 * f2,
        (n1 + x2 * c1) * f1 + n2 * f2,
        o,
        d1 + d2,
        x1 + x2,
    )


@triton.jit
def _last_row(x, is_last):
    return tl.sum(tl.where(is_last, x, 0.0), axis=0)


# ---------------------------------------------------------------------------------------------
# chunk-parallel version: one program per (b, channel block, chunk of BT tokens), three launches
# (chunk summaries → per-channel carries across chunks → outputs). Chunk c covers tokens
# [s, s+BT), s = c·BT. Left summary SL_c: tokens [s−1, s+BT−1) seen from s+BT−1; right summary
# SR_c: tokens [s+1, s+BT+1) seen from s. Carries: CL_c = SL_0 ⋯ SL_{c−1} (tokens ≤ s−2 seen
# from s−1), CR_c = SR_{n−1} ⋯ SR_{c+1} (tokens ≥ s+BT+1 seen from s+BT). In the chunk, the
# token sequence shifted by ∓1 is scanned forwards / in reverse and joined with the carry.


@triton.jit
def _tile(P, base, j, valid, cols, cmask, C, other):
    m = valid[:, None] & cmask[None, :]
    return tl.load(P + base + j[:, None] * C + cols[None, :], mask=m, other=other), m


@triton.jit
def _fwd_summary_kernel(W, K, V, SL, SR, T, C, NCH, BT: tl.constexpr, BC: tl.constexpr):
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    ch = tl.program_id(2)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0)
    p = tl.arange(0, BT)
    s = ch * BT
    base = pid_b.to(tl.int64) * T * C
    plane = pid_b.to(tl.int64) * NCH * C + ch * C + cols  # (B, NCH, C) index
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    pf = p.to(tl.float32)[:, None]
    # left: tokens j = s−1+p, distance BT−1−p from the viewer
    j = s - 1 + p
    kk, m = _tile(K, base, j, (j >= 0) & (s + p < T), cols, cmask, C, 0.0)
    vv, _ = _tile(V, base, j, (j >= 0) & (s + p < T), cols, cmask, C, 0.0)
    x = tl.where(m, kk - (BT - 1 - pf) * w[None, :], NEG)
    o = tl.max(x, axis=0)
    e = tl.where(m, tl.exp(x - o[None, :]), 0.0)
    tl.store(SL + plane, tl.sum(e * vv, axis=0), mask=cmask)
    tl.store(SL + stride + plane, tl.sum(e, axis=0), mask=cmask)
    tl.store(SL + 2 * stride + plane, o, mask=cmask)
    # right: tokens j = s+1+p, distance p from the viewer
    j = s + 1 + p
    kk, m = _tile(K, base, j, j < T, cols, cmask, C, 0.0)
    vv, _ = _tile(V, base, j, j < T, cols, cmask, C, 0.0)
    x = tl.where(m, kk - pf * w[None, :], NEG)
    o = tl.max(x, axis=0)
    e = tl.where(m, tl.exp(x - o[None, :]), 0.0)
    tl.store(SR + plane, tl.sum(e * vv, axis=0), mask=cmask)
    tl.store(SR + stride + plane, tl.sum(e, axis=0), mask=cmask)
    tl.store(SR + 2 * stride + plane, o, mask=cmask)


@triton.jit
def _fwd_carry_kernel(W, SL, SR, CL, CR, C, NCH, BT: tl.constexpr, BC: tl.constexpr, CB: tl.constexpr):
    # CL_{c+1} = SL_0 ⋯ SL_c and CR_{c−1} = SR_{n−1} ⋯ SR_c, scanned CB chunks at a time
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0)
    rows = tl.arange(0, CB)
    is_last = (rows == CB - 1)[:, None]
    dd = tl.zeros([CB, BC], tl.float32) - BT * w[None, :]
    row0 = pid_b.to(tl.int64) * NCH * C
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    for side in tl.static_range(2):
        if side == 0:
            S = SL
            D = CL
        else:
            S = SR
            D = CR
        first = row0 + (0 if side == 0 else NCH - 1) * C + cols
        tl.store(D + first, tl.zeros([BC], tl.float32), mask=cmask)
        tl.store(D + stride + first, tl.zeros([BC], tl.float32), mask=cmask)
        tl.store(D + 2 * stride + first, tl.full([BC], NEG, tl.float32), mask=cmask)
        ca = tl.zeros([BC], tl.float32)
        cb = tl.zeros([BC], tl.float32)
        co = tl.full([BC], NEG, tl.float32)
        for blk in range(0, tl.cdiv(NCH, CB)):
            r = blk * CB + rows
            if side == 0:
                c = r
                dst = c + 1
            else:
                c = NCH - 1 - r
                dst = c - 1
            m = (r < NCH)[:, None] & cmask[None, :]
            q = row0 + c[:, None] * C + cols[None, :]
            sa, sb, so, sd = tl.associative_scan(
                (tl.load(S + q, mask=m, other=0.0), tl.load(S + stride + q, mask=m, other=0.0),
                 tl.load(S + 2 * stride + q, mask=m, other=NEG), dd), 0, _join_fwd)
            la, lb, lo, _ = _join_fwd(ca[None, :], cb[None, :], co[None, :], dd, sa, sb, so, sd)
            dm = m & ((dst >= 0) & (dst < NCH))[:, None]
            qd = row0 + dst[:, None] * C + cols[None, :]
            tl.store(D + qd, la, mask=dm)
            tl.store(D + stride + qd, lb, mask=dm)
            tl.store(D + 2 * stride + qd, lo, mask=dm)
            ca = _last_row(la, is_last)
            cb = _last_row(lb, is_last)
            co = _last_row(lo, is_last)


@triton.jit
def _fwd_out_kernel(W, U, K, V, CL, CR, Y, LZ, T, C, NCH, BT: tl.constexpr, BC: tl.constexpr):
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    ch = tl.program_id(2)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0)
    u = tl.load(U + cols, mask=cmask, other=0.0)
    p = tl.arange(0, BT)
    s = ch * BT
    t = s + p
    tv = t < T
    base = pid_b.to(tl.int64) * T * C
    q1 = pid_b.to(tl.int64) * NCH * C + ch * C + cols
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    zero = tl.zeros([BT, BC], tl.float32)
    ed = zero - w[None, :]
    # left: exclusive prefix from the sequence shifted right by one, joined after the carry
    kk, m = _tile(K, base, t - 1, tv & (t >= 1), cols, cmask, C, 0.0)
    vv, _ = _tile(V, base, t - 1, tv & (t >= 1), cols, cmask, C, 0.0)
    sa, sb, so, sd = tl.associative_scan(
        (tl.where(m, vv, 0.0), tl.where(m, 1.0, 0.0), tl.where(m, kk, NEG), ed), 0, _join_fwd)
    la, lb, lo, _ = _join_fwd(tl.load(CL + q1, mask=cmask, other=0.0)[None, :],
                              tl.load(CL + stride + q1, mask=cmask, other=0.0)[None, :],
                              tl.load(CL + 2 * stride + q1, mask=cmask, other=NEG)[None, :],
                              zero, sa, sb, so, sd)
    # right: exclusive suffix from the sequence shifted left by one, scanned in reverse
    kk, m = _tile(K, base, t + 1, tv & (t + 1 < T), cols, cmask, C, 0.0)
    vv, _ = _tile(V, base, t + 1, tv & (t + 1 < T), cols, cmask, C, 0.0)
    sa, sb, so, sd = tl.associative_scan(
        (tl.where(m, vv, 0.0), tl.where(m, 1.0, 0.0), tl.where(m, kk, NEG), ed), 0, _join_fwd,
        reverse=True)
    ra, rb, ro, _ = _join_fwd(tl.load(CR + q1, mask=cmask, other=0.0)[None, :],
                              tl.load(CR + stride + q1, mask=cmask, other=0.0)[None, :],
                              tl.load(CR + 2 * stride + q1, mask=cmask, other=NEG)[None, :],
                              zero, sa, sb, so, sd)
    kt, tm = _tile(K, base, t, tv, cols, cmask, C, 0.0)
    vt, _ = _tile(V, base, t, tv, cols, cmask, C, 0.0)
    q = u[None, :] + kt
    M = tl.maximum(tl.maximum(lo, ro), q)
    fl = tl.exp(lo - M)
    fr = tl.exp(ro - M)
    fq = tl.exp(q - M)
    den = fl * lb + fr * rb + fq
    off = base + t[:, None] * C + cols[None, :]
    tl.store(Y + off, (fl * la + fr * ra + fq * vt) / den, mask=tm)
    tl.store(LZ + off, M + tl.log(den), mask=tm)


@triton.jit
def _bwd_summary_kernel(W, Y, LZ, G, SL, SR, T, C, NCH, BT: tl.constexpr, BC: tl.constexpr):
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    ch = tl.program_id(2)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0)
    p = tl.arange(0, BT)
    s = ch * BT
    base = pid_b.to(tl.int64) * T * C
    plane = pid_b.to(tl.int64) * NCH * C + ch * C + cols
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    pf = p.to(tl.float32)[:, None]
    for side in tl.static_range(2):
        if side == 0:
            j = s - 1 + p
            valid = (j >= 0) & (s + p < T)
            dist = BT - 1 - pf
            S = SL
        else:
            j = s + 1 + p
            valid = j < T
            dist = pf
            S = SR
        gg, m = _tile(G, base, j, valid, cols, cmask, C, 0.0)
        yy, _ = _tile(Y, base, j, valid, cols, cmask, C, 0.0)
        lz, _ = _tile(LZ, base, j, valid, cols, cmask, C, 0.0)
        x = tl.where(m, -lz - dist * w[None, :], NEG)
        o = tl.max(x, axis=0)
        e = tl.where(m, tl.exp(x - o[None, :]), 0.0)
        eg = e * gg
        egy = eg * yy
        tl.store(S + plane, tl.sum(eg, axis=0), mask=cmask)
        tl.store(S + stride + plane, tl.sum(egy, axis=0), mask=cmask)
        tl.store(S + 2 * stride + plane, tl.sum(dist * eg, axis=0), mask=cmask)
        tl.store(S + 3 * stride + plane, tl.sum(dist * egy, axis=0), mask=cmask)
        tl.store(S + 4 * stride + plane, o, mask=cmask)


@triton.jit
def _bwd_carry_kernel(W, SL, SR, CL, CR, C, NCH, BT: tl.constexpr, BC: tl.constexpr, CB: tl.constexpr):
    # as _fwd_carry_kernel, with the five fields of the backward summaries
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0)
    rows = tl.arange(0, CB)
    is_last = (rows == CB - 1)[:, None]
    zero = tl.zeros([CB, BC], tl.float32)
    dd = zero - BT * w[None, :]
    nn = zero + BT
    row0 = pid_b.to(tl.int64) * NCH * C
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    for side in tl.static_range(2):
        if side == 0:
            S = SL
            D = CL
        else:
            S = SR
            D = CR
        first = row0 + (0 if side == 0 else NCH - 1) * C + cols
        for f in tl.static_range(4):
            tl.store(D + f * stride + first, tl.zeros([BC], tl.float32), mask=cmask)
        tl.store(D + 4 * stride + first, tl.full([BC], NEG, tl.float32), mask=cmask)
        ca = tl.zeros([BC], tl.float32)
        cc = tl.zeros([BC], tl.float32)
        cm = tl.zeros([BC], tl.float32)
        cn = tl.zeros([BC], tl.float32)
        co = tl.full([BC], NEG, tl.float32)
        for blk in range(0, tl.cdiv(NCH, CB)):
            r = blk * CB + rows
            if side == 0:
                c = r
                dst = c + 1
            else:
                c = NCH - 1 - r
                dst = c - 1
            m = (r < NCH)[:, None] & cmask[None, :]
            q = row0 + c[:, None] * C + cols[None, :]
            sa, sc, sm, sn, so, sd, sx = tl.associative_scan(
                (tl.load(S + q, mask=m, other=0.0), tl.load(S + stride + q, mask=m, other=0.0),
                 tl.load(S + 2 * stride + q, mask=m, other=0.0),
                 tl.load(S + 3 * stride + q, mask=m, other=0.0),
                 tl.load(S + 4 * stride + q, mask=m, other=NEG), dd, nn), 0, _join_bwd)
            la, lc, lm, ln, lo, _, _ = _join_bwd(ca[None, :], cc[None, :], cm[None, :], cn[None, :],
                                                 co[None, :], zero, zero,
                                                 sa, sc, sm, sn, so, sd, sx)
            dm = m & ((dst >= 0) & (dst < NCH))[:, None]
            qd = row0 + dst[:, None] * C + cols[None, :]
            tl.store(D + qd, la, mask=dm)
            tl.store(D + stride + qd, lc, mask=dm)
            tl.store(D + 2 * stride + qd, lm, mask=dm)
            tl.store(D + 3 * stride + qd, ln, mask=dm)
            tl.store(D + 4 * stride + qd, lo, mask=dm)
            ca = _last_row(la, is_last)
            cc = _last_row(lc, is_last)
            cm = _last_row(lm, is_last)
            cn = _last_row(ln, is_last)
            co = _last_row(lo, is_last)


@triton.jit
def _load_carry5(D, q1, stride, cmask):
    return (tl.load(D + q1, mask=cmask, other=0.0)[None, :],
            tl.load(D + stride + q1, mask=cmask, other=0.0)[None, :],
            tl.load(D + 2 * stride + q1, mask=cmask, other=0.0)[None, :],
            tl.load(D + 3 * stride + q1, mask=cmask, other=0.0)[None, :],
            tl.load(D + 4 * stride + q1, mask=cmask, other=NEG)[None, :])


@triton.jit
def _bwd_out_kernel(W, U, K, V, Y, LZ, G, CL, CR, GK, GV, GWP, GUP, T, C, NCH,
                    BT: tl.constexpr, BC: tl.constexpr):
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    ch = tl.program_id(2)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0)
    u = tl.load(U + cols, mask=cmask, other=0.0)
    p = tl.arange(0, BT)
    s = ch * BT
    t = s + p
    tv = t < T
    base = pid_b.to(tl.int64) * T * C
    q1 = pid_b.to(tl.int64) * NCH * C + ch * C + cols
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    zero = tl.zeros([BT, BC], tl.float32)
    ed = zero - w[None, :]
    one = zero + 1.0
    # left
    gg, m = _tile(G, base, t - 1, tv & (t >= 1), cols, cmask, C, 0.0)
    yy, _ = _tile(Y, base, t - 1, tv & (t >= 1), cols, cmask, C, 0.0)
    lz, _ = _tile(LZ, base, t - 1, tv & (t >= 1), cols, cmask, C, 0.0)
    sa, sc, sm, sn, so, sd, sx = tl.associative_scan(
        (gg, gg * yy, zero, zero, tl.where(m, -lz, NEG), ed, one), 0, _join_bwd)
    c0, c1, c2, c3, c4 = _load_carry5(CL, q1, stride, cmask)
    la, lc, lm, ln, lo, _, _ = _join_bwd(c0, c1, c2, c3, c4, zero, zero, sa, sc, sm, sn, so, sd, sx)
    # right
    gg, m = _tile(G, base, t + 1, tv & (t + 1 < T), cols, cmask, C, 0.0)
    yy, _ = _tile(Y, base, t + 1, tv & (t + 1 < T), cols, cmask, C, 0.0)
    lz, _ = _tile(LZ, base, t + 1, tv & (t + 1 < T), cols, cmask, C, 0.0)
    sa, sc, sm, sn, so, sd, sx = tl.associative_scan(
        (gg, gg * yy, zero, zero, tl.where(m, -lz, NEG), ed, one), 0, _join_bwd, reverse=True)
    c0, c1, c2, c3, c4 = _load_carry5(CR, q1, stride, cmask)
    ra, rc, rm, rn, ro, _, _ = _join_bwd(c0, c1, c2, c3, c4, zero, zero, sa, sc, sm, sn, so, sd, sx)
    # token t itself
    kt, tm = _tile(K, base, t, tv, cols, cmask, C, 0.0)
    vt, _ = _tile(V, base, t, tv, cols, cmask, C, 0.0)
    gt, _ = _tile(G, base, t, tv, cols, cmask, C, 0.0)
    yt, _ = _tile(Y, base, t, tv, cols, cmask, C, 0.0)
    lzt, _ = _tile(LZ, base, t, tv, cols, cmask, C, 0.0)
    el = tl.where(tm, tl.exp(kt + lo), 0.0)
    er = tl.where(tm, tl.exp(kt + ro), 0.0)
    ps = tl.where(tm, tl.exp(u[None, :] + kt - lzt), 0.0)
    gv = el * la + er * ra + ps * gt
    gc = el * lc + er * rc + ps * gt * yt
    off = base + t[:, None] * C + cols[None, :]
    tl.store(GV + off, gv, mask=tm)
    tl.store(GK + off, vt * gv - gc, mask=tm)
    gw = tl.sum(el * (vt * lm - ln) + er * (vt * rm - rn), axis=0)
    gu = tl.sum(ps * gt * (vt - yt), axis=0)
    tl.store(GWP + q1, -gw, mask=cmask)
    tl.store(GUP + q1, gu, mask=cmask)


def _carry_block(nch: int) -> int:
    return min(64, max(16, triton.next_power_of_2(nch)))


def _grid(B: int, C: int, bc: int) -> tuple[int, int]:
    return (B, triton.cdiv(C, bc))


def wkv_forward(w, u, k, v, bt: int | None = None, bc: int | None = None, num_warps: int | None = None,
                carry_warps: int = 4):
    """Chunk-parallel forward on contiguous fp32 tensors; returns (y, log Z). Tiles default to
    the module's CHUNK_T, CHUNK_C, CHUNK_WARPS; ``carry_warps`` is the carry scan's."""
    bt, bc, num_warps = bt or CHUNK_T, bc or CHUNK_C, num_warps or CHUNK_WARPS
    B, T, C = k.shape
    nch = triton.cdiv(T, bt)
    grid3 = (B, triton.cdiv(C, bc), nch)
    sl = torch.empty((3, B, nch, C), device=k.device, dtype=torch.float32)
    sr = torch.empty_like(sl)
    cl = torch.empty_like(sl)
    cr = torch.empty_like(sl)
    y = torch.empty_like(k)
    lz = torch.empty_like(k)
    _fwd_summary_kernel[grid3](w, k, v, sl, sr, T, C, nch, BT=bt, BC=bc, num_warps=num_warps)
    _fwd_carry_kernel[_grid(B, C, bc)](w, sl, sr, cl, cr, C, nch, BT=bt, BC=bc, CB=_carry_block(nch),
                                       num_warps=carry_warps)
    _fwd_out_kernel[grid3](w, u, k, v, cl, cr, y, lz, T, C, nch, BT=bt, BC=bc, num_warps=num_warps)
    return y, lz


def wkv_backward(w, u, k, v, y, lz, g, bt: int | None = None, bc: int | None = None,
                 num_warps: int | None = None, carry_warps: int = 4):
    """Chunk-parallel backward; returns (∂w, ∂u, ∂k, ∂v), ∂w and ∂u summed over the batch."""
    bt, bc, num_warps = bt or CHUNK_T, bc or CHUNK_C, num_warps or CHUNK_WARPS
    B, T, C = k.shape
    nch = triton.cdiv(T, bt)
    grid3 = (B, triton.cdiv(C, bc), nch)
    sl = torch.empty((5, B, nch, C), device=k.device, dtype=torch.float32)
    sr = torch.empty_like(sl)
    cl = torch.empty_like(sl)
    cr = torch.empty_like(sl)
    gk = torch.empty_like(k)
    gv = torch.empty_like(k)
    gwp = torch.empty((B, nch, C), device=k.device, dtype=torch.float32)
    gup = torch.empty_like(gwp)
    _bwd_summary_kernel[grid3](w, y, lz, g, sl, sr, T, C, nch, BT=bt, BC=bc, num_warps=num_warps)
    _bwd_carry_kernel[_grid(B, C, bc)](w, sl, sr, cl, cr, C, nch, BT=bt, BC=bc, CB=_carry_block(nch),
                                       num_warps=carry_warps)
    _bwd_out_kernel[grid3](w, u, k, v, y, lz, g, cl, cr, gk, gv, gwp, gup, T, C, nch,
                           BT=bt, BC=bc, num_warps=num_warps)
    return gwp.sum((0, 1)), gup.sum((0, 1)), gk, gv


@torch.library.custom_op("segment::bi_wkv", mutates_args=())
def _bi_wkv_op(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return wkv_forward(w, u, k, v)


@_bi_wkv_op.register_fake
def _(w, u, k, v):
    return torch.empty_like(k), torch.empty_like(k)


@torch.library.custom_op("segment::bi_wkv_backward", mutates_args=())
def _bi_wkv_backward_op(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, y: torch.Tensor,
                        lz: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return wkv_backward(w, u, k, v, y, lz, g)


@_bi_wkv_backward_op.register_fake
def _(w, u, k, v, y, lz, g):
    return torch.empty_like(w), torch.empty_like(u), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs, *output)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, gy, _glz):
    return _bi_wkv_backward_op(*ctx.saved_tensors, gy.contiguous())


_bi_wkv_op.register_autograd(_backward, setup_context=_setup)


def wkv_triton(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bi-WKV through the fused kernels (k, v: (B, T, C) on CUDA; w, u: (C,), already / T).

    Computed in fp32 (inputs are cast), returned in fp32; ``segment::bi_wkv`` is a custom op, so
    ``torch.compile`` keeps it whole.
    """
    y, _ = _bi_wkv_op(*(x.float().contiguous() for x in (w, u, k, v)))
    return y
