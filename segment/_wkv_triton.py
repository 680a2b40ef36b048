"""Fused Triton kernels for Bi-WKV (docs/rwkv-unet.md). Importing needs Triton.

T is cut into chunks of BT tokens; every (batch element, block of BC channels, chunk) is one
program. Three launches per pass: chunk summaries (tile reductions), the per-channel carries
across chunks (each thread walks its channel through the chunk summaries, one program per batch
element, channel block and direction), then the outputs, where each thread walks its channel
through the chunk token by token, right to left from one carry and left to right from the other.
The log-space state is that of docs/rwkv-unet.md, in base 2. There is no compile-time T.

A segment of tokens is summarised, as seen from its last token, by
(a, b, o, d): Σ 2^{k_i − dist_i·w − o} (v_i, 1) (k and w in base 2), the offset o and its
log-decay d = −n·w. Joining X₁ then X₂: o₁' = o₁ + d₂, o = max(o₁', o₂),
a = 2^{o₁'−o} a₁ + 2^{o₂−o} a₂, d = d₁ + d₂. The exclusive state of token t (tokens i < t,
decay |t−i|−1) is the summary of those tokens seen from t−1; one token more behind the viewer
is the join with n = 1 (``_absorb_fwd``).

Forward: the left state (tokens i < t), the right state (i > t) and token t (q = u + k_t) give
y_t and log₂ Z_t, both kept for the backward pass.

Backward (docs/rwkv-unet.md, with h_t = g_t/Z_t): the same two passes over keys −log₂ Z_t and values g_t and
g_t·y_t, plus first distance moments (m ← 2^{d₂}(m₁ + n₂ a₁) + m₂; one token: m ← 2^{−w}(m + a)),
give
∂v_i = Σ_t P_{t,i} g_t, ∂k_i = v_i ∂v_i − Σ_t P_{t,i} g_t y_t,
∂w = −Σ_i [v_i Σ_t (|t−i|−1) P_{t,i} g_t − Σ_t (|t−i|−1) P_{t,i} g_t y_t],
∂u = Σ_t P_{t,t} g_t (v_t − y_t); ∂w and ∂u are reduced in fp32 per (b, channel), then over b.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

NEG = tl.constexpr(-1.0e30)  # offset of an empty segment (finite: 2^(NEG − M) = 0 without NaN)
LOG2E = tl.constexpr(1.4426950408889634)  # keys, decays and offsets are kept in base 2 (ex2 is one instruction)
_ASM = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")  # PTX approximations (not in the interpreter)

#: tokens per chunk, channels per program, warps (the fastest measured on the H200)
CHUNK_T = 16
CHUNK_C = 32
CHUNK_WARPS = 1
#: channels per program and warps of the carry scans (one program per batch element and side,
#: one thread per channel), and the chunk summaries each thread loads at a time
CARRY_C = 32
CARRY_WARPS = 1
CARRY_UNROLL = 16


@triton.jit
def _join_fwd(a1, b1, o1, a2, b2, o2, d2):
    # X₁ then X₂, X₂ of log₂-decay d₂
    o1s = o1 + d2
    o = tl.maximum(o1s, o2)
    f1 = tl.exp2(o1s - o)
    f2 = tl.exp2(o2 - o)
    return a1 * f1 + a2 * f2, b1 * f1 + b2 * f2, o


@triton.jit
def _join_bwd(a1, c1, m1, n1, o1, a2, c2, m2, n2, o2, d2, x2):
    # a: Σ g·2^{..}, c: Σ g·y·2^{..}, m, n: first distance moments of a and c; X₂ holds x₂ tokens
    o1s = o1 + d2
    o = tl.maximum(o1s, o2)
    f1 = tl.exp2(o1s - o)
    f2 = tl.exp2(o2 - o)
    return (
        a1 * f1 + a2 * f2,
        c1 * f1 + c2 * f2,
        (m1 + x2 * a1) * f1 + m2 * f2,
        (n1 + x2 * c1) * f1 + n2 * f2,
        o,
    )


# ---------------------------------------------------------------------------------------------
# One program per (b, channel block, chunk of BT tokens), three launches (chunk summaries →
# per-channel carries across chunks → outputs). Chunk c covers tokens [s, s+BT), s = c·BT.
# Left summary SL_c: its tokens seen from its last one (distance s+BT−1−i); right summary SR_c:
# seen from its first one (distance i−s). Carries: CL_c = SL_0 ⋯ SL_{c−1} = L_s, the state of the
# tokens i < s seen from token s (decay |s−i|−1); CR_c = SR_{n−1} ⋯ SR_{c+1} = R_{s+BT−1}. The
# output kernels start from the carries and take in one token per step.


@triton.jit
def _tile(P, base, j, valid, cols, cmask, C, other):
    m = valid[:, None] & cmask[None, :]
    return tl.load(P + base + j[:, None] * C + cols[None, :], mask=m, other=other), m


@triton.jit
def _sums3(x, m, vv, S, plane, stride, cmask):
    # (Σ 2^{x−o} v, Σ 2^{x−o}, o) over the tile's tokens, o = max x
    x = tl.where(m, x, NEG)
    o = tl.max(x, axis=0)
    e = tl.where(m, tl.exp2(x - o[None, :]), 0.0)
    tl.store(S + plane, tl.sum(e * vv, axis=0), mask=cmask)
    tl.store(S + stride + plane, tl.sum(e, axis=0), mask=cmask)
    tl.store(S + 2 * stride + plane, o, mask=cmask)


@triton.jit
def _fwd_summary_kernel(W, K, V, SL, SR, T, C, NCH, BT: tl.constexpr, BC: tl.constexpr):
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    ch = tl.program_id(2)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0) * LOG2E
    p = tl.arange(0, BT)
    j = ch * BT + p
    base = pid_b.to(tl.int64) * T * C
    plane = pid_b.to(tl.int64) * NCH * C + ch * C + cols  # (B, NCH, C) index
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    pf = p.to(tl.float32)[:, None]
    kk, m = _tile(K, base, j, j < T, cols, cmask, C, 0.0)
    vv, _ = _tile(V, base, j, j < T, cols, cmask, C, 0.0)
    kk = kk * LOG2E
    _sums3(kk - (BT - 1 - pf) * w[None, :], m, vv, SL, plane, stride, cmask)
    _sums3(kk - pf * w[None, :], m, vv, SR, plane, stride, cmask)


@triton.jit
def _sums5(x, m, dist, eg_, egy_, S, plane, stride, cmask):
    # (Σ 2^{x−o} g, Σ 2^{x−o} g y, their first distance moments, o) over the tile's tokens
    x = tl.where(m, x, NEG)
    o = tl.max(x, axis=0)
    e = tl.where(m, tl.exp2(x - o[None, :]), 0.0)
    eg = e * eg_
    egy = e * egy_
    tl.store(S + plane, tl.sum(eg, axis=0), mask=cmask)
    tl.store(S + stride + plane, tl.sum(egy, axis=0), mask=cmask)
    tl.store(S + 2 * stride + plane, tl.sum(dist * eg, axis=0), mask=cmask)
    tl.store(S + 3 * stride + plane, tl.sum(dist * egy, axis=0), mask=cmask)
    tl.store(S + 4 * stride + plane, o, mask=cmask)


@triton.jit
def _bwd_summary_kernel(W, Y, LZ, G, SL, SR, T, C, NCH, BT: tl.constexpr, BC: tl.constexpr):
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    ch = tl.program_id(2)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0) * LOG2E
    p = tl.arange(0, BT)
    j = ch * BT + p
    base = pid_b.to(tl.int64) * T * C
    plane = pid_b.to(tl.int64) * NCH * C + ch * C + cols
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    pf = p.to(tl.float32)[:, None]
    gg, m = _tile(G, base, j, j < T, cols, cmask, C, 0.0)
    yy, _ = _tile(Y, base, j, j < T, cols, cmask, C, 0.0)
    lz, _ = _tile(LZ, base, j, j < T, cols, cmask, C, 0.0)
    gy = gg * yy
    _sums5(-lz - (BT - 1 - pf) * w[None, :], m, BT - 1 - pf, gg, gy, SL, plane, stride, cmask)
    _sums5(-lz - pf * w[None, :], m, pf, gg, gy, SR, plane, stride, cmask)


@triton.jit
def _fwd_carry_kernel(W, S, D, C, NCH, BT: tl.constexpr, BC: tl.constexpr, CB: tl.constexpr):
    # S, D: (side, field, B, NCH, C). Side 0: CL_{c+1} = CL_c ⋯ SL_c; side 1, chunks in reverse:
    # CR_{c−1} = CR_c ⋯ SR_c. One program per (b, channel block, side); each thread walks its
    # channel through the chunks, CB summaries loaded at a time.
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    side = tl.program_id(2)
    cmask = cols < C
    zc = cols * 0
    dd = tl.load(W + cols, mask=cmask, other=0.0) * (-BT * LOG2E)  # log₂-decay across one chunk
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    S += side * 3 * stride
    D += side * 3 * stride
    row0 = pid_b.to(tl.int64) * NCH * C + cols
    a = tl.zeros([BC], tl.float32)
    b = tl.zeros([BC], tl.float32)
    o = tl.full([BC], NEG, tl.float32)
    for c0 in range(0, NCH, CB):
        sa = ()
        sb = ()
        so = ()
        for i in tl.static_range(CB):
            r = c0 + i
            q = row0 + (r + side * (NCH - 1 - 2 * r)) * C  # chunk r, or NCH−1−r for side 1
            m = cmask & (zc + r < NCH)
            sa = sa + (tl.load(S + q, mask=m, other=0.0),)
            sb = sb + (tl.load(S + stride + q, mask=m, other=0.0),)
            so = so + (tl.load(S + 2 * stride + q, mask=m, other=NEG),)
        for i in tl.static_range(CB):
            r = c0 + i
            q = row0 + (r + side * (NCH - 1 - 2 * r)) * C
            m = cmask & (zc + r < NCH)
            tl.store(D + q, a, mask=m)
            tl.store(D + stride + q, b, mask=m)
            tl.store(D + 2 * stride + q, o, mask=m)
            a, b, o = _join_fwd(a, b, o, sa[i], sb[i], so[i], dd)


@triton.jit
def _bwd_carry_kernel(W, S, D, C, NCH, BT: tl.constexpr, BC: tl.constexpr, CB: tl.constexpr):
    # as _fwd_carry_kernel, with the five fields of the backward summaries
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    side = tl.program_id(2)
    cmask = cols < C
    zc = cols * 0
    dd = tl.load(W + cols, mask=cmask, other=0.0) * (-BT * LOG2E)
    nt = tl.zeros([BC], tl.float32) + BT  # tokens per chunk
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    S += side * 5 * stride
    D += side * 5 * stride
    row0 = pid_b.to(tl.int64) * NCH * C + cols
    a = tl.zeros([BC], tl.float32)
    c = tl.zeros([BC], tl.float32)
    mm = tl.zeros([BC], tl.float32)
    n = tl.zeros([BC], tl.float32)
    o = tl.full([BC], NEG, tl.float32)
    for c0 in range(0, NCH, CB):
        sa = ()
        sc = ()
        sm = ()
        sn = ()
        so = ()
        for i in tl.static_range(CB):
            r = c0 + i
            q = row0 + (r + side * (NCH - 1 - 2 * r)) * C
            m = cmask & (zc + r < NCH)
            sa = sa + (tl.load(S + q, mask=m, other=0.0),)
            sc = sc + (tl.load(S + stride + q, mask=m, other=0.0),)
            sm = sm + (tl.load(S + 2 * stride + q, mask=m, other=0.0),)
            sn = sn + (tl.load(S + 3 * stride + q, mask=m, other=0.0),)
            so = so + (tl.load(S + 4 * stride + q, mask=m, other=NEG),)
        for i in tl.static_range(CB):
            r = c0 + i
            q = row0 + (r + side * (NCH - 1 - 2 * r)) * C
            m = cmask & (zc + r < NCH)
            tl.store(D + q, a, mask=m)
            tl.store(D + stride + q, c, mask=m)
            tl.store(D + 2 * stride + q, mm, mask=m)
            tl.store(D + 3 * stride + q, n, mask=m)
            tl.store(D + 4 * stride + q, o, mask=m)
            a, c, mm, n, o = _join_bwd(a, c, mm, n, o, sa[i], sc[i], sm[i], sn[i], so[i], dd, nt)


# ---------------------------------------------------------------------------------------------
# output kernels as token loops: each thread walks its channel through the chunk, one token at a
# time (unrolled), right to left from the carry CR and then left to right from the carry CL. The
# chunk's rows are loaded once into tuples, and the right pass's states wait in tuples for the
# left (reloading the rows in the left pass instead saves no registers: the compiler hoists the
# loads). On the H200 (B=16, T=1024, C=576) tile scans of the chunk (tl.associative_scan over
# its tokens) took 0.147 / 0.265 ms for the forward / backward output kernel, these loops 0.092 /
# 0.159 in base e and 0.045 / 0.084 in base 2 (a single ex2 per exponential, no masks).


@triton.jit
def _lg2(x):
    if _ASM:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.log2(x)


@triton.jit
def _rcp(x):
    if _ASM:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return 1.0 / x


@triton.jit
def _load3(D, q1, stride, cmask):
    return (tl.load(D + q1, mask=cmask, other=0.0), tl.load(D + stride + q1, mask=cmask, other=0.0),
            tl.load(D + 2 * stride + q1, mask=cmask, other=NEG))


@triton.jit
def _load5(D, q1, stride, cmask):
    return (tl.load(D + q1, mask=cmask, other=0.0), tl.load(D + stride + q1, mask=cmask, other=0.0),
            tl.load(D + 2 * stride + q1, mask=cmask, other=0.0),
            tl.load(D + 3 * stride + q1, mask=cmask, other=0.0),
            tl.load(D + 4 * stride + q1, mask=cmask, other=NEG))


@triton.jit
def _absorb_fwd(a, b, o, x, vx, w):
    # one more token (key x, value vx) behind the viewer: every older token moves one step away.
    # A token outside the sequence has x = NEG: its weight is 0 once any real token is in, and
    # while none is, whatever it adds sits at offset NEG and never reaches an output.
    ow = o - w
    on = tl.maximum(ow, x)
    f1 = tl.exp2(ow - on)
    f2 = tl.exp2(x - on)
    return a * f1 + vx * f2, b * f1 + f2, on


@triton.jit
def _absorb_bwd(a, c, m, n, o, x, gx, gyx, w):
    # as _absorb_fwd for (a, c) with their first distance moments (m, n): d·e^{−dw} grows to
    # (d+1)·e^{−(d+1)w}, so m ← (m + a)·e^{−w}
    ow = o - w
    on = tl.maximum(ow, x)
    f1 = tl.exp2(ow - on)
    f2 = tl.exp2(x - on)
    return a * f1 + gx * f2, c * f1 + gyx * f2, (m + a) * f1, (n + c) * f1, on


@triton.jit
def _fwd_out_kernel(W, U, K, V, CL, CR, Y, LZ, T, C, NCH, BT: tl.constexpr, BC: tl.constexpr):
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    ch = tl.program_id(2)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0) * LOG2E
    u = tl.load(U + cols, mask=cmask, other=0.0) * LOG2E
    zc = cols * 0  # row tests as vectors: the interpreter refuses a mask mixing scalar and vector
    n_in = T - ch * BT  # rows of the chunk inside the sequence
    off = pid_b.to(tl.int64) * T * C + ch * BT * C
    q1 = pid_b.to(tl.int64) * NCH * C + ch * C + cols
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    ks = ()
    vs = ()
    for i in tl.static_range(BT):
        ok = cmask & (zc + i < n_in)
        ks = ks + (tl.load(K + off + i * C + cols, mask=ok, other=NEG) * LOG2E,)
        vs = vs + (tl.load(V + off + i * C + cols, mask=ok, other=0.0),)
    # right, t = s+BT−1 … s: R_t, then token t taken in (R_{t−1})
    ra, rb, ro = _load3(CR, q1, stride, cmask)
    ras = ()
    rbs = ()
    ros = ()
    for i in tl.static_range(BT):
        ras = ras + (ra,)
        rbs = rbs + (rb,)
        ros = ros + (ro,)
        ra, rb, ro = _absorb_fwd(ra, rb, ro, ks[BT - 1 - i], vs[BT - 1 - i], w)
    # left, t = s … s+BT−1: L_t with R_t and token t itself (q = u + k_t); then token t taken in
    la, lb, lo = _load3(CL, q1, stride, cmask)
    for i in tl.static_range(BT):
        ra = ras[BT - 1 - i]
        rb = rbs[BT - 1 - i]
        ro = ros[BT - 1 - i]
        q = u + ks[i]
        M = tl.maximum(tl.maximum(lo, ro), q)
        fl = tl.exp2(lo - M)
        fr = tl.exp2(ro - M)
        fq = tl.exp2(q - M)
        den = fl * lb + fr * rb + fq
        ok = cmask & (zc + i < n_in)
        tl.store(Y + off + i * C + cols, (fl * la + fr * ra + fq * vs[i]) * _rcp(den), mask=ok)
        tl.store(LZ + off + i * C + cols, M + _lg2(den), mask=ok)
        la, lb, lo = _absorb_fwd(la, lb, lo, ks[i], vs[i], w)


@triton.jit
def _bwd_rows(K, V, G, Y, LZ, off, ok, cols):
    # k (base 2), v, g, y and the key −log₂ Z of one token (keys NEG outside the sequence)
    return (tl.load(K + off + cols, mask=ok, other=NEG) * LOG2E, tl.load(V + off + cols, mask=ok, other=0.0),
            tl.load(G + off + cols, mask=ok, other=0.0), tl.load(Y + off + cols, mask=ok, other=0.0),
            -tl.load(LZ + off + cols, mask=ok, other=-NEG))


@triton.jit
def _bwd_out_kernel(W, U, K, V, Y, LZ, G, CL, CR, GK, GV, GWP, GUP, T, C, NCH,
                    BT: tl.constexpr, BC: tl.constexpr):
    pid_b = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    ch = tl.program_id(2)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0) * LOG2E
    u = tl.load(U + cols, mask=cmask, other=0.0) * LOG2E
    zc = cols * 0
    n_in = T - ch * BT
    off = pid_b.to(tl.int64) * T * C + ch * BT * C
    q1 = pid_b.to(tl.int64) * NCH * C + ch * C + cols
    stride = tl.num_programs(0).to(tl.int64) * NCH * C
    ks = ()
    vs = ()
    gs = ()
    ys = ()
    xs = ()
    for i in tl.static_range(BT):
        kt, vt, gt, yt, xt = _bwd_rows(K, V, G, Y, LZ, off + i * C, cmask & (zc + i < n_in), cols)
        ks = ks + (kt,)
        vs = vs + (vt,)
        gs = gs + (gt,)
        ys = ys + (yt,)
        xs = xs + (xt,)
    gw = tl.zeros([BC], tl.float32)
    gu = tl.zeros([BC], tl.float32)
    # right, t = s+BT−1 … s: keys −log₂ Z_i, values g_i and g_i·y_i of the tokens i > t
    ra, rc, rm, rn, ro = _load5(CR, q1, stride, cmask)
    gvr = ()
    gcr = ()
    for i in tl.static_range(BT):
        kt = ks[BT - 1 - i]
        vt = vs[BT - 1 - i]
        gt = gs[BT - 1 - i]
        er = tl.exp2(kt + ro)  # 0 outside the sequence (kt = NEG)
        gvr = gvr + (er * ra,)
        gcr = gcr + (er * rc,)
        gw += er * (vt * rm - rn)
        ra, rc, rm, rn, ro = _absorb_bwd(ra, rc, rm, rn, ro, xs[BT - 1 - i], gt, gt * ys[BT - 1 - i], w)
    # left, t = s … s+BT−1, with token t itself (P_tt = 2^{u + k_t − log₂ Z_t})
    la, lc, lm, ln, lo = _load5(CL, q1, stride, cmask)
    for i in tl.static_range(BT):
        kt = ks[i]
        vt = vs[i]
        gt = gs[i]
        yt = ys[i]
        el = tl.exp2(kt + lo)
        ps = tl.exp2(u + kt + xs[i])
        gv = gvr[BT - 1 - i] + el * la + ps * gt
        gc = gcr[BT - 1 - i] + el * lc + ps * gt * yt
        ok = cmask & (zc + i < n_in)
        tl.store(GV + off + i * C + cols, gv, mask=ok)
        tl.store(GK + off + i * C + cols, vt * gv - gc, mask=ok)
        gw += el * (vt * lm - ln)
        gu += ps * gt * (vt - yt)
        la, lc, lm, ln, lo = _absorb_bwd(la, lc, lm, ln, lo, xs[i], gt, gt * yt, w)
    tl.store(GWP + q1, -gw, mask=cmask)
    tl.store(GUP + q1, gu, mask=cmask)


def _tiles(bt, bc, num_warps, carry_bc, carry_warps):
    """The module defaults where an argument is None."""
    return bt or CHUNK_T, bc or CHUNK_C, num_warps or CHUNK_WARPS, carry_bc or CARRY_C, carry_warps or CARRY_WARPS


def wkv_forward(w, u, k, v, bt: int | None = None, bc: int | None = None, num_warps: int | None = None,
                carry_bc: int | None = None, carry_warps: int | None = None):
    """Chunk-parallel forward on contiguous fp32 tensors; returns (y, log₂ Z). Tiles default to
    the module's constants (chunk and carry tiles)."""
    bt, bc, num_warps, carry_bc, carry_warps = _tiles(bt, bc, num_warps, carry_bc, carry_warps)
    B, T, C = k.shape
    nch = triton.cdiv(T, bt)
    grid3 = (B, triton.cdiv(C, bc), nch)
    summ = torch.empty((2, 3, B, nch, C), device=k.device, dtype=torch.float32)  # (side, field, ...)
    carry = torch.empty_like(summ)
    y = torch.empty_like(k)
    lz = torch.empty_like(k)
    _fwd_summary_kernel[grid3](w, k, v, summ[0], summ[1], T, C, nch, BT=bt, BC=bc, num_warps=num_warps)
    _fwd_carry_kernel[(B, triton.cdiv(C, carry_bc), 2)](w, summ, carry, C, nch, BT=bt, BC=carry_bc,
                                                         CB=CARRY_UNROLL, num_warps=carry_warps)
    _fwd_out_kernel[grid3](w, u, k, v, carry[0], carry[1], y, lz, T, C, nch, BT=bt, BC=bc,
                           num_warps=num_warps)
    return y, lz


def wkv_backward(w, u, k, v, y, lz, g, bt: int | None = None, bc: int | None = None,
                 num_warps: int | None = None, carry_bc: int | None = None, carry_warps: int | None = None):
    """Chunk-parallel backward; returns (∂(w, u), ∂k, ∂v), ∂w and ∂u stacked as (2, C) and summed
    over the batch (one reduction of the per-chunk partials)."""
    bt, bc, num_warps, carry_bc, carry_warps = _tiles(bt, bc, num_warps, carry_bc, carry_warps)
    B, T, C = k.shape
    nch = triton.cdiv(T, bt)
    grid3 = (B, triton.cdiv(C, bc), nch)
    summ = torch.empty((2, 5, B, nch, C), device=k.device, dtype=torch.float32)
    carry = torch.empty_like(summ)
    gk = torch.empty_like(k)
    gv = torch.empty_like(k)
    part = torch.empty((2, B * nch, C), device=k.device, dtype=torch.float32)  # ∂w, ∂u per (b, chunk)
    _bwd_summary_kernel[grid3](w, y, lz, g, summ[0], summ[1], T, C, nch, BT=bt, BC=bc, num_warps=num_warps)
    _bwd_carry_kernel[(B, triton.cdiv(C, carry_bc), 2)](w, summ, carry, C, nch, BT=bt, BC=carry_bc,
                                                         CB=CARRY_UNROLL, num_warps=carry_warps)
    _bwd_out_kernel[grid3](w, u, k, v, y, lz, g, carry[0], carry[1], gk, gv, part[0], part[1], T, C, nch,
                           BT=bt, BC=bc, num_warps=num_warps)
    return part.sum(1), gk, gv


@torch.library.custom_op("segment::bi_wkv", mutates_args=())
def _bi_wkv_op(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return wkv_forward(w, u, k, v)


@_bi_wkv_op.register_fake
def _(w, u, k, v):
    return torch.empty_like(k), torch.empty_like(k)


@torch.library.custom_op("segment::bi_wkv_backward", mutates_args=())
def _bi_wkv_backward_op(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, y: torch.Tensor,
                        lz: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return wkv_backward(w, u, k, v, y, lz, g)


@_bi_wkv_backward_op.register_fake
def _(w, u, k, v, y, lz, g):
    return w.new_empty((2, w.shape[0])), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs, *output)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, gy, _glz):
    gwu, gk, gv = _bi_wkv_backward_op(*ctx.saved_tensors, gy.contiguous())
    return gwu[0], gwu[1], gk, gv


_bi_wkv_op.register_autograd(_backward, setup_context=_setup)


def wkv_triton(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bi-WKV through the fused kernels (k, v: (B, T, C) on CUDA; w, u: (C,), already / T).

    Computed in fp32 (inputs are cast), returned in fp32; ``segment::bi_wkv`` is a custom op, so
    ``torch.compile`` keeps it whole.
    """
    y, _ = _bi_wkv_op(*(x.float().contiguous() for x in (w, u, k, v)))
    return y
