"""Bi-WKV: bidirectional linear attention of Vision-RWKV (docs/rwkv-unet.md).

Per batch element and channel, with w and u already divided by T::

    y_t = [ Σ_{i≠t} e^{k_i − (|t−i|−1)w} v_i + e^{u+k_t} v_t ]
          / [ Σ_{i≠t} e^{k_i − (|t−i|−1)w} + e^{u+k_t} ]

i.e. a per-channel softmax attention ``y_t = Σ_i P_{t,i} v_i`` with logits
``s_{t,i} = k_i − (|t−i|−1)w`` (i ≠ t) and ``s_{t,t} = u + k_t``.

Backends (``bi_wkv(..., backend=name)``):

- ``dense``: the O(T²C) softmax form, the oracle (docs/rwkv-unet.md).
- ``scan``: O(T·C) exclusive prefix/suffix sums in plain torch with max-shifted exponents,
  chunked so that every exponent stays within ±20 (+ the k range) for any w (docs/rwkv-unet.md).
- ``recurrent``: two token-by-token scans carrying a per-channel state (a, b, o): numerator,
  denominator, running log-offset (docs/rwkv-unet.md). ``step`` and ``combine`` are public.
- ``triton``: fused forward and backward kernels (docs/rwkv-unet.md), in ``segment._wkv_triton``; needs
  CUDA and Triton, else unavailable.

``auto`` picks ``triton`` for CUDA tensors when Triton imports, else ``scan``. fp16/bf16 inputs
are computed in fp32 and cast back. There is no limit on T.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from biorules.errors import InputError
from segment.backends import resolve, triton_kernels_available

BACKENDS = ("auto", "dense", "scan", "recurrent", "triton")

#: largest |w|·L allowed inside one chunk of the ``scan`` backend (docs/rwkv-unet.md: L·max|w'| ≤ 20)
CHUNK_DECAY = 20.0


def triton_available() -> bool:
    """True when the fused Triton kernels can be imported (Triton installed, CUDA present)."""
    return triton_kernels_available("_wkv_triton")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``auto`` to a concrete backend for tensors on ``device``; validate the name."""
    return resolve(backend, device, choices=BACKENDS, fallback="scan", what="Bi-WKV", module="_wkv_triton")


def bi_wkv(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Bi-WKV of keys ``k`` and values ``v`` (B, T, C) with per-channel w, u (C,) (docs/rwkv-unet.md).

    ``w`` and ``u`` are already divided by T. Returns y of shape (B, T, C) in the dtype of ``v``;
    half-precision inputs are computed in fp32. Differentiable in all four inputs.
    """
    if k.dim() != 3 or k.shape != v.shape:
        raise InputError(f"bi_wkv: k and v must both be (B, T, C), got {tuple(k.shape)} and {tuple(v.shape)}")
    C = k.shape[-1]
    if w.shape != (C,) or u.shape != (C,):
        raise InputError(f"bi_wkv: w and u must be ({C},), got {tuple(w.shape)} and {tuple(u.shape)}")
    name = resolve_backend(backend, k.device)
    out_dtype = v.dtype
    if out_dtype in (torch.float16, torch.bfloat16):
        w, u, k, v = w.float(), u.float(), k.float(), v.float()
    else:
        dt = torch.promote_types(torch.promote_types(w.dtype, u.dtype), torch.promote_types(k.dtype, v.dtype))
        w, u, k, v = w.to(dt), u.to(dt), k.to(dt), v.to(dt)
    if name == "dense":
        y = wkv_dense(w, u, k, v)
    elif name == "scan":
        y = wkv_scan(w, u, k, v)
    elif name == "recurrent":
        y = wkv_recurrent(w, u, k, v)
    else:
        if not (k.is_cuda and triton_available()):
            raise InputError("bi_wkv: backend 'triton' needs CUDA tensors and an importable Triton")
        from segment._wkv_triton import wkv_triton

        y = wkv_triton(w, u, k, v)
    return y.to(out_dtype)


# ---------------------------------------------------------------------------------------------
# dense oracle (docs/rwkv-unet.md)


def wkv_dense(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """O(T²C) oracle: softmax over i of s_{t,i} = k_i − (|t−i|−1)w, s_{t,t} = u + k_t (docs/rwkv-unet.md)."""
    B, T, C = k.shape
    pos = torch.arange(T, device=k.device, dtype=k.dtype)
    dist = (pos[:, None] - pos[None, :]).abs() - 1.0  # (T, T)
    kt = k.transpose(1, 2)  # (B, C, T)
    logits = kt[:, :, None, :] - dist * w[None, :, None, None]  # (B, C, T_t, T_i)
    eye = torch.eye(T, dtype=torch.bool, device=k.device)
    diag = (u[None, :, None] + kt)[:, :, :, None]  # (B, C, T, 1)
    logits = torch.where(eye, diag, logits)
    p = torch.softmax(logits, dim=-1)
    y = torch.einsum("bcti,bci->bct", p, v.transpose(1, 2))
    return y.transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# linear-time scan (docs/rwkv-unet.md)


def _excl_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Exclusive prefix sum along ``dim`` by shifting a cumsum (never cumsum minus self)."""
    c = torch.cumsum(x, dim=dim)
    c = c.narrow(dim, 0, x.shape[dim] - 1)
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [1, 0]
    return F.pad(c, pad)


def _chunk_len(w: torch.Tensor, T: int) -> int:
    if w.device.type == "meta":  # shapes only (segment.info): one chunk
        return T
    wmax = float(w.detach().abs().max()) if w.numel() else 0.0
    if wmax * T <= CHUNK_DECAY:
        return T
    L = max(1, int(CHUNK_DECAY // wmax))
    nc = -(-T // L)
    return -(-T // nc)  # balanced chunks, still ≤ L


def wkv_scan(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """O(T·C) Bi-WKV from exclusive prefix and suffix sums (docs/rwkv-unet.md), exact for any w.

    Inside a chunk of L tokens (L·|w| ≤ 20, L = T when possible), with m the chunk max of k
    (detached; softmax is shift-invariant), α_p = e^{k_p−m+p·w}, β_p = e^{k_p−m−p·w}::

        num_t = e^{−(p−1)w} Σ_{q<p} α_q v_q + e^{(p+1)w} Σ_{q>p} β_q v_q + e^{u+k_t−m} v_t

    and likewise the denominator with v = 1. Chunks exchange (numerator, denominator, log-offset)
    summaries through the log-space recurrence of docs/rwkv-unet.md, so no exponent exceeds the chunk bound.
    """
    B, T, C = k.shape
    L = _chunk_len(w, T)
    nc = -(-T // L)
    Tp = nc * L
    dt = k.dtype
    if Tp != T:
        mask = torch.ones(T, dtype=dt, device=k.device)
        mask = F.pad(mask, (0, Tp - T)).view(1, nc, L, 1)
        k = F.pad(k, (0, 0, 0, Tp - T))
        v = F.pad(v, (0, 0, 0, Tp - T))
    else:
        mask = None
    k = k.view(B, nc, L, C)
    v = v.view(B, nc, L, C)
    kd = k.detach()
    if mask is not None:
        kd = kd.masked_fill(mask == 0, float("-inf"))
    m = kd.amax(dim=2, keepdim=True)  # (B, nc, 1, C), detached chunk offsets
    p = torch.arange(L, device=k.device, dtype=dt).view(1, 1, L, 1)
    km = k - m
    # left (prefix) part inside the chunk
    alpha = torch.exp(km + p * w)
    beta = torch.exp(km - p * w)
    if mask is not None:
        alpha = alpha * mask
        beta = beta * mask
    fl = torch.exp(-(p - 1) * w)
    fr = torch.exp((p + 1) * w)
    a_num = _excl_cumsum(alpha * v, 2)
    a_den = _excl_cumsum(alpha, 2)
    r_num = torch.flip(_excl_cumsum(torch.flip(beta * v, (2,)), 2), (2,))
    r_den = torch.flip(_excl_cumsum(torch.flip(beta, (2,)), 2), (2,))
    e_self = torch.exp(u + km)
    if L == 1:  # no neighbours inside a chunk; e^{±w} alone could overflow
        num, den = e_self * v, e_self
    else:
        num = fl * a_num + fr * r_num + e_self * v
        den = fl * a_den + fr * r_den + e_self
    if nc == 1:
        y = num / den
        return y.view(B, T, C)
    # chunk summaries, offset m: seen from just after the chunk (left) / just before it (right)
    wL = torch.exp(km - (L - 1 - p) * w)
    wR = torch.exp(km - p * w)
    if mask is not None:
        wL = wL * mask
        wR = wR * mask
    sl_num, sl_den = (wL * v).sum(2), wL.sum(2)  # (B, nc, C)
    sr_num, sr_den = (wR * v).sum(2), wR.sum(2)
    mc = m.squeeze(2)  # (B, nc, C)
    decay = L * w  # per chunk
    decay_d = decay.detach()
    neg = torch.finfo(dt).min / 4
    # left carries: state covering chunks < c, seen from the first token of chunk c
    la, lb, lo = [], [], []
    a = torch.zeros_like(sl_num[:, 0])
    b = torch.zeros_like(a)
    o = torch.full_like(a, neg)
    for c in range(nc):
        la.append(a)
        lb.append(b)
        lo.append(o)
        o_new = torch.maximum(o - decay_d, mc[:, c])
        f_old = torch.exp(o - decay - o_new)
        f_new = torch.exp(mc[:, c] - o_new)
        a = f_old * a + f_new * sl_num[:, c]
        b = f_old * b + f_new * sl_den[:, c]
        o = o_new
    ra, rb, ro = [None] * nc, [None] * nc, [None] * nc
    a = torch.zeros_like(a)
    b = torch.zeros_like(a)
    o = torch.full_like(a, neg)
    for c in range(nc - 1, -1, -1):
        ra[c], rb[c], ro[c] = a, b, o
        o_new = torch.maximum(o - decay_d, mc[:, c])
        f_old = torch.exp(o - decay - o_new)
        f_new = torch.exp(mc[:, c] - o_new)
        a = f_old * a + f_new * sr_num[:, c]
        b = f_old * b + f_new * sr_den[:, c]
        o = o_new
    la, lb, lo = (torch.stack(x, 1).unsqueeze(2) for x in (la, lb, lo))  # (B, nc, 1, C)
    ra, rb, ro = (torch.stack(x, 1).unsqueeze(2) for x in (ra, rb, ro))
    wd = w.detach()
    offL = lo - p * wd  # carry seen from token p of the chunk
    offR = ro - (L - 1 - p) * wd
    M = torch.maximum(torch.maximum(offL, offR), m.expand_as(offL))
    fL = torch.exp(lo - p * w - M)
    fR = torch.exp(ro - (L - 1 - p) * w - M)
    fM = torch.exp(m - M)
    num = fM * num + fL * la + fR * ra
    den = fM * den + fL * lb + fR * rb
    y = (num / den).reshape(B, Tp, C)
    return y[:, :T]


# ---------------------------------------------------------------------------------------------
# recurrent state (docs/rwkv-unet.md)


class WKVState(NamedTuple):
    """Per-channel scan state: value = e^{o}·(a, b).

    a: numerator Σ e^{k_i − d_i·w − o} v_i; b: denominator (same weights);
    o: log-offset, the running max of k_i − d_i·w (d_i = distance − 1). o is bookkeeping,
    detached and kept in float64 so that n steps of o ← o − w do not drift in fp32.
    """

    a: torch.Tensor
    b: torch.Tensor
    o: torch.Tensor


_NEG = -1e300  # an empty state's offset: finite, so that exp(o − M) is 0 without NaN gradients


def initial_state(like: torch.Tensor) -> WKVState:
    """Empty state (a = b = 0, o = −∞ as a large finite number) shaped and typed like ``like``."""
    z = torch.zeros_like(like)
    return WKVState(z, z, torch.full(like.shape, _NEG, dtype=torch.float64, device=like.device))


def _exp_shifted(x: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """e^{x − off} with the difference taken in float64 and the gradient of x kept (off constant)."""
    d = (x.detach().double() - off).to(x.dtype)
    return torch.exp(d + (x - x.detach()))


def step(state: WKVState, k_t: torch.Tensor, v_t: torch.Tensor, w: torch.Tensor) -> WKVState:
    """Absorb token t (docs/rwkv-unet.md): o* = max(o − w, k_t), a ← e^{o−w−o*} a + e^{k_t−o*} v_t, b likewise."""
    a, b, o = state
    w_o = o - w.detach().double()
    o_new = torch.maximum(w_o, k_t.detach().double())
    f_old = _exp_shifted(-w.expand_as(a), o_new - o)  # e^{o − w − o*}
    f_new = _exp_shifted(k_t, o_new)
    return WKVState(f_old * a + f_new * v_t, f_old * b + f_new, o_new)


def combine(L: WKVState, R: WKVState, k_t: torch.Tensor, v_t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Output at t from the left state (i < t), the right state (i > t) and token t (docs/rwkv-unet.md).

    With q = u + k_t and M = max(oᴸ, oᴿ, q):
    y_t = (e^{oᴸ−M} aᴸ + e^{oᴿ−M} aᴿ + e^{q−M} v_t) / (e^{oᴸ−M} bᴸ + e^{oᴿ−M} bᴿ + e^{q−M}).
    """
    q = u + k_t
    M = torch.maximum(torch.maximum(L.o, R.o), q.detach().double())
    dt = v_t.dtype
    fl, fr = torch.exp((L.o - M).to(dt)), torch.exp((R.o - M).to(dt))
    fq = _exp_shifted(q, M)
    return (fl * L.a + fr * R.a + fq * v_t) / (fl * L.b + fr * R.b + fq)


def wkv_recurrent(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bi-WKV as two token-by-token scans with O(C) state per direction (docs/rwkv-unet.md)."""
    B, T, C = k.shape
    left: list[WKVState] = []
    s = initial_state(k[:, 0])
    for t in range(T):
        left.append(s)
        s = step(s, k[:, t], v[:, t], w)
    out: list[torch.Tensor] = [None] * T  # type: ignore[list-item]
    s = initial_state(k[:, 0])
    for t in range(T - 1, -1, -1):
        out[t] = combine(left[t], s, k[:, t], v[:, t], u)
        s = step(s, k[:, t], v[:, t], w)
    return torch.stack(out, dim=1)


def wkv_flops(T: int, C: int) -> int:
    """MACs the paper's convention charges a Bi-WKV call: 8 per token-channel (docs/rwkv-unet.md)."""
    return 8 * T * C


__all__ = [
    "BACKENDS",
    "WKVState",
    "bi_wkv",
    "combine",
    "initial_state",
    "resolve_backend",
    "step",
    "triton_available",
    "wkv_dense",
    "wkv_flops",
    "wkv_recurrent",
    "wkv_scan",
]

