"""Bi-WKV: bidirectional linear attention of Vision-RWKV (docs/rwkv-unet.md).

Per batch element and channel, with w and u already divided by T::

    y_t = [ Σ_{i≠t} e^{k_i − (|t−i|−1)w} v_i + e^{u+k_t} v_t ]
          / [ Σ_{i≠t} e^{k_i − (|t−i|−1)w} + e^{u+k_t} ]

i.e. a per-channel softmax attention ``y_t = Σ_i P_{t,i} v_i`` with logits
``s_{t,i} = k_i − (|t−i|−1)w`` (i ≠ t) and ``s_{t,t} = u + k_t``.

Backends (``bi_wkv(..., backend=name)``):

- ``dense``: the O(T²C) softmax form, the oracle (docs/rwkv-unet.md).
- ``scan``: plain torch in chunks of a length fixed by T alone (dense inside a chunk, log-space
  summaries between chunks), every exponent max-shifted to ≤ 0 for any w (docs/rwkv-unet.md);
  free of data-dependent control flow, so ``torch.export`` and ONNX trace it.
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

#: tokens per chunk of the ``scan`` backend (:func:`chunk_len`): memory B·T·CHUNK·C against ⌈T/CHUNK⌉ loop steps
CHUNK = 16


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


def chunk_len(T: int) -> int:
    """Tokens per chunk of the ``scan`` backend: a function of the sequence length alone.

    Every exponent of :func:`wkv_scan` is shifted by a (detached) maximum over the terms it is
    summed with, so each one is ≤ 0 and each denominator ≥ 1 for any w, k and dtype: the chunk
    length bounds no exponent, only memory (B·T·L·C in-chunk logits) against the length of the
    chunk loop (⌈T/L⌉ steps). Independent of the data, so ``torch.export`` traces it."""
    return max(1, min(T, CHUNK))


def wkv_scan(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """O(T·L·C) Bi-WKV in chunks of L = :func:`chunk_len` tokens (docs/rwkv-unet.md), exact for any w.

    Inside a chunk the logits s_{p,q} = k_q − (|p−q|−1)w (q ≠ p), s_{p,p} = u + k_p are formed
    densely and shifted by their row maximum M_p. Each chunk c is summarised from both sides,
    seen from just after it (left summary, Σ_q e^{k_q − (L−1−q)w − o_c} (v_q, 1)) and from just
    before it (right summary, Σ_q e^{k_q − q·w − o'_c} (v_q, 1)), o_c and o'_c their maxima;
    summaries travel from chunk to chunk through the log-space recurrence of docs/rwkv-unet.md
    (a state (a, b, o) decays by L·w per chunk). Token p adds its left carry seen from p
    (offset o − p·w) and its right carry (o − (L−1−p)w), all shifted by the largest offset. All
    offsets are detached (softmax is shift-invariant), so gradients are those of the exact form.
    """
    B, T, C = k.shape
    L = chunk_len(T)
    nc = -(-T // L)
    Tp = nc * L
    dt = k.dtype
    neg = torch.finfo(dt).min / 4  # an absent token's logit: finite, so exp gives 0 without NaN gradients
    valid = None
    if Tp != T:
        valid = F.pad(torch.ones(T, dtype=torch.bool, device=k.device), (0, Tp - T)).view(1, nc, L, 1)
        k = F.pad(k, (0, 0, 0, Tp - T))
        v = F.pad(v, (0, 0, 0, Tp - T))
    k = k.view(B, nc, L, C)
    v = v.view(B, nc, L, C)
    if valid is not None:
        k = k.masked_fill(~valid, neg)
    pos = torch.arange(L, device=k.device, dtype=dt)
    dist = ((pos[:, None] - pos[None, :]).abs() - 1.0).view(1, 1, L, L, 1)  # (p, q)
    eye = torch.eye(L, dtype=torch.bool, device=k.device).view(1, 1, L, L, 1)
    s = torch.where(eye, (u + k)[:, :, None, :, :].expand(B, nc, L, L, C), k[:, :, None, :, :] - dist * w)
    if valid is not None:
        s = s.masked_fill(~valid.view(1, nc, 1, L, 1), neg)
    m = s.detach().amax(dim=3)  # (B, nc, L, C): row maxima
    e = torch.exp(s - m[:, :, :, None, :])
    num = (e * v[:, :, None, :, :]).sum(3)
    den = e.sum(3)
    if nc == 1:
        return (num / den).reshape(B, Tp, C)[:, :T]
    p = pos.view(1, 1, L, 1)
    kd, wd = k.detach(), w.detach()
    # chunk summaries: seen from just after the chunk (left) and from just before it (right)
    xl, xr = k - (L - 1 - p) * w, k - p * w
    ol, orr = (kd - (L - 1 - p) * wd).amax(2), (kd - p * wd).amax(2)  # (B, nc, C)
    el, er = torch.exp(xl - ol[:, :, None]), torch.exp(xr - orr[:, :, None])
    sl_num, sl_den = (el * v).sum(2), el.sum(2)
    sr_num, sr_den = (er * v).sum(2), er.sum(2)
    decay, decay_d = L * w, L * wd

    def carries(order, sums_num, sums_den, offs):
        a = torch.zeros_like(sums_num[:, 0])
        b = torch.zeros_like(a)
        o = torch.full_like(a, neg)
        out = [None] * nc
        for c in order:
            out[c] = (a, b, o)
            o_new = torch.maximum(o - decay_d, offs[:, c])
            f_old = torch.exp(o - decay - o_new)
            f_new = torch.exp(offs[:, c] - o_new)
            a = f_old * a + f_new * sums_num[:, c]
            b = f_old * b + f_new * sums_den[:, c]
            o = o_new
        return [torch.stack(x, 1).unsqueeze(2) for x in zip(*out, strict=True)]  # (B, nc, 1, C) each

    la, lb, lo = carries(range(nc), sl_num, sl_den, ol)
    ra, rb, ro = carries(range(nc - 1, -1, -1), sr_num, sr_den, orr)
    offl, offr = lo - p * wd, ro - (L - 1 - p) * wd  # carries seen from token p of the chunk
    top = torch.maximum(torch.maximum(offl, offr), m)
    fl = torch.exp(lo - p * w - top)
    fr = torch.exp(ro - (L - 1 - p) * w - top)
    fm = torch.exp(m - top)
    num = fm * num + fl * la + fr * ra
    den = fm * den + fl * lb + fr * rb
    return (num / den).reshape(B, Tp, C)[:, :T]


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

